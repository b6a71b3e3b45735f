"""The fan-out hub: turns one room event into HTML for every local socket in the room.

There is one hub per process (per event loop). Sockets do not join channel-layer groups
themselves: the hub subscribes its single channel to the group of each room that has a
local socket, so a group event crosses the layer once per process. The hub renders the
fragment once per event (once per viewer variant, where a fragment differs by viewer) and
hands the same text to every socket, which costs one send each. Nothing here touches the
database or a thread per socket per event; the database is read only to fill a gap in a
room's sequence, once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from rooms import events, fragments
from rooms.models import Message

logger = logging.getLogger(__name__)


class Socket(Protocol):
    """What the hub needs of a connected socket (a `RoomConsumer`)."""

    variant: Hashable

    async def offer(self, seq: int, text: str) -> None:
        """Take the fragment for the room event numbered `seq`."""


@dataclass
class RoomState:
    """The local sockets of one room, and the last event the hub fanned out to them."""

    sockets: set[Socket] = field(default_factory=set)
    last_seq: int | None = None


class Hub:
    """One process's registry of room sockets, fed by one channel-layer channel."""

    def __init__(self, layer_alias: str = DEFAULT_CHANNEL_LAYER, layer=None) -> None:
        # `layer` gives this hub a layer instance of its own: two hubs in one process
        # then behave like two server processes (the Redis tests do this).
        self.layer_alias = layer_alias
        self._own_layer = layer
        self.handlers: dict[str, Callable] = {events.MESSAGE: self.room_message}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reset()

    def _reset(self) -> None:
        self.rooms: dict[int, RoomState] = {}
        self.layer = None
        self.channel_name: str | None = None
        self._subscribed: set[int] = set()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def _bind_loop(self) -> None:
        # asyncio objects belong to one loop; a hub reused on a new loop (tests) starts afresh.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._reset()

    def sockets(self, room_id: int) -> set[Socket]:
        """The local sockets of a room."""
        state = self.rooms.get(room_id)
        return set(state.sockets) if state else set()

    async def join(self, room_id: int, socket: Socket) -> None:
        """Register a socket in a room; events for the room reach it from now on."""
        self._bind_loop()
        self.rooms.setdefault(room_id, RoomState()).sockets.add(socket)
        if room_id in self._subscribed:
            return
        async with self._lock:
            await self._start()
            if room_id in self.rooms and room_id not in self._subscribed:
                await self.layer.group_add(events.room_group(room_id), self.channel_name)
                self._subscribed.add(room_id)

    async def leave(self, room_id: int, socket: Socket) -> None:
        """Unregister a socket; the last one out unsubscribes the hub from the room."""
        self._bind_loop()
        state = self.rooms.get(room_id)
        if state is not None:
            state.sockets.discard(socket)
            if not state.sockets:
                del self.rooms[room_id]
        async with self._lock:
            if room_id not in self.rooms and room_id in self._subscribed:
                self._subscribed.discard(room_id)
                await self.layer.group_discard(events.room_group(room_id), self.channel_name)
            if not self.rooms:
                await self._stop()

    async def _start(self) -> None:
        if self._task is not None:
            return
        self.layer = self._own_layer or get_channel_layer(self.layer_alias)
        self.channel_name = await self.layer.new_channel("roomcast-hub.")
        self._task = asyncio.create_task(self._run(), name="roomcast-hub")

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        """Read the hub's channel forever and fan out each event."""
        while True:
            try:
                event = await self.layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The layer is unreachable (Redis restarting): wait and read again. Events
                # lost meanwhile show up as a gap in the room's sequence and are caught up.
                logger.exception("fan-out hub could not read its channel")
                await asyncio.sleep(1)
                continue
            try:
                await self.dispatch(event)
            except Exception:
                logger.exception("fan-out of %r failed", event.get("type"))

    async def dispatch(self, event: dict) -> None:
        """Hand one group event to its handler."""
        handler = self.handlers.get(event.get("type"))
        if handler is None:
            logger.warning("fan-out hub ignores event type %r", event.get("type"))
            return
        await handler(event)

    async def room_message(self, event: dict) -> None:
        """A new message: fill any gap from the database, then fan out in order."""
        state = self.rooms.get(event["room"])
        if state is None:
            return
        seq = event["seq"]
        messages = [event["message"]]
        if state.last_seq is not None:
            if seq <= state.last_seq:
                return  # fanned out already (a duplicate, or filled in from a gap)
            if seq > state.last_seq + 1:
                missed = await fetch_messages(event["room"], state.last_seq, seq - 1)
                messages = missed + messages
        state.last_seq = seq
        for message in messages:
            await self.fan_out(state, message["seq"], lambda v, m=message: render_message(m, v))

    async def fan_out(self, state: RoomState, seq: int, render: Callable[[Hashable], str]) -> None:
        """Render once per viewer variant and offer the text to every socket."""
        texts: dict[Hashable, str] = {}
        for socket in list(state.sockets):
            text = texts.get(socket.variant)
            if text is None:
                text = texts[socket.variant] = render(socket.variant)
            await socket.offer(seq, text)


def render_message(message: dict, variant: Hashable) -> str:
    """The push for one new message (the same for every viewer, for now)."""
    return fragments.new_messages([message])


@database_sync_to_async
def fetch_messages(room_id: int, after_seq: int, upto_seq: int) -> list[dict]:
    """Stored messages with after_seq < seq <= upto_seq, as event values, in order."""
    rows = (
        Message.objects.filter(room_id=room_id, seq__gt=after_seq, seq__lte=upto_seq)
        .select_related("author")
        .order_by("seq")
    )
    return [message.as_event() for message in rows]


hub = Hub()
