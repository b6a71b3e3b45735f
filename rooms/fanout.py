"""The fan-out hub: hands each group event to every local socket in the group.

There is one hub per process (per event loop). Sockets do not join channel-layer groups
themselves: the hub subscribes its single channel to each group that has a local socket
(a room, or one user's pages), so a group event crosses the layer once per process. For
each event the hub calls every socket's `deliver(event, cache)`; the socket renders its
fragment through `cache`, keyed by its viewer variant, so a fragment is rendered once per
event per variant and every other socket only sends the same text.

The hub also keeps what a room needs between events: the last sequence number it fanned
out (a gap is filled from the database once per process, not once per socket), who is
typing (with each typist's expiry timer), and the presence entries of its own sockets,
which it refreshes every heartbeat and re-publishes when the room's list changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Protocol

from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Q

from rooms import events, presence
from rooms.models import Message, Room

logger = logging.getLogger(__name__)


class Socket(Protocol):
    """What the hub needs of a connected socket (a consumer)."""

    async def deliver(self, event: dict, cache: dict) -> None:
        """Take one group event; render through `cache` (shared by the event's sockets)."""


@dataclass
class RoomState:
    """What the hub remembers about one room with local sockets."""

    last_seq: int | None = None
    # user id -> (username, the timer that clears them)
    typists: dict[int, tuple[str, asyncio.TimerHandle]] = field(default_factory=dict)
    # presence entries of this process's sockets: connection id -> username
    entries: dict[str, str] = field(default_factory=dict)
    # the presence list last published or seen
    names: list[str] | None = None


class Hub:
    """One process's registry of sockets by group, fed by one channel-layer channel."""

    def __init__(self, layer_alias: str = DEFAULT_CHANNEL_LAYER, layer=None, store=None) -> None:
        # `layer` (and `store`) give this hub its own instances: two hubs in one process
        # then behave like two server processes (the Redis tests do this).
        self.layer_alias = layer_alias
        self._own_layer = layer
        self._own_store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reset()

    def _reset(self) -> None:
        self.groups: dict[str, set[Socket]] = {}
        self.rooms: dict[str, RoomState] = {}
        self.user_sockets: dict[int, set[str]] = {}
        self.layer = None
        self.store = None
        self.channel_name: str | None = None
        self._subscribed: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._timer_tasks: set[asyncio.Task] = set()
        self._outbox: asyncio.Queue | None = None
        self._publisher: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def _bind_loop(self) -> None:
        # asyncio objects belong to one loop; a hub reused on a new loop (tests) starts afresh.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._reset()
        if self.layer is None:
            self.layer = self._own_layer or get_channel_layer(self.layer_alias)
            self.store = self._own_store or presence.get_store()

    # Membership -------------------------------------------------------------------------

    def sockets(self, group: str) -> set[Socket]:
        """The local sockets of a group."""
        return set(self.groups.get(group, ()))

    async def join(self, group: str, socket: Socket) -> None:
        """Register a socket in a group; the group's events reach it from now on."""
        self._bind_loop()
        self.groups.setdefault(group, set()).add(socket)
        if group in self._subscribed:
            return
        async with self._lock:
            await self._start()
            if group in self.groups and group not in self._subscribed:
                await self.layer.group_add(group, self.channel_name)
                self._subscribed.add(group)

    async def leave(self, group: str, socket: Socket) -> None:
        """Unregister a socket; the last one out unsubscribes the hub from the group."""
        self._bind_loop()
        members = self.groups.get(group)
        if members is not None:
            members.discard(socket)
            if not members:
                del self.groups[group]
                self._forget_room(group)
        async with self._lock:
            if group not in self.groups and group in self._subscribed:
                self._subscribed.discard(group)
                await self.layer.group_discard(group, self.channel_name)
            if not self.groups:
                await self._stop()

    async def publish(self, event: dict) -> None:
        """Send an event to its group through this hub's layer."""
        self._bind_loop()
        await self.layer.group_send(event["group"], event)

    def publish_soon(self, group: str, event: dict) -> bool:
        """From another thread: publish on this hub's loop, in order, without waiting.

        A consumer's database thread then goes on to its next write while the loop fans
        out. Returns False (the caller publishes itself) when no loop of ours is running.
        """
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return False
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                return False  # called on the loop itself: async code awaits apublish
        loop.call_soon_threadsafe(self._enqueue, group, event)
        return True

    def _enqueue(self, group: str, event: dict) -> None:
        if self._publisher is None or self._publisher.done():
            self._outbox = asyncio.Queue()
            self._publisher = asyncio.create_task(self._publish_queued(), name="roomcast-pub")
        self._outbox.put_nowait((group, event))

    async def _publish_queued(self) -> None:
        while True:
            group, event = await self._outbox.get()
            try:
                await events.apublish(group, event)
            except Exception:
                logger.exception("could not publish %s to %s", event.get("type"), group)

    async def _start(self) -> None:
        if self._tasks:
            return
        self.channel_name = await self.layer.new_channel("roomcast-hub.")
        self._tasks = [
            asyncio.create_task(self._run(), name="roomcast-hub"),
            asyncio.create_task(self._heartbeat(), name="roomcast-hub-heartbeat"),
            asyncio.create_task(self._resync(), name="roomcast-hub-resync"),
        ]

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
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

    # Fan-out ----------------------------------------------------------------------------

    async def dispatch(self, event: dict) -> None:
        """Fan one group event out to the group's local sockets."""
        group = event.get("group")
        if group not in self.groups:
            return
        kind = event.get("type")
        if kind in (events.MESSAGE, events.MESSAGE_CHANGED):
            await self._sequenced(group, event)
        elif kind == events.TYPING:
            await self._typing(group, event)
        else:
            if kind == events.PRESENCE:
                self._room(group).names = event["names"]
            await self.deliver(group, event)

    async def deliver(self, group: str, event: dict) -> None:
        """Hand `event` to every local socket of `group`, sharing one render cache."""
        cache: dict = {}
        for socket in list(self.groups.get(group, ())):
            try:
                await socket.deliver(event, cache)
            except Exception:
                logger.exception("socket %r failed to take %r", socket, event.get("type"))

    async def _sequenced(self, group: str, event: dict) -> None:
        """A numbered room event: fill any gap from the database, then fan out in order."""
        state = self._room(group)
        seq = event["seq"]
        if state.last_seq is not None and seq <= state.last_seq:
            return  # fanned out already (a duplicate, or filled in from a gap)
        if state.last_seq is not None and seq > state.last_seq + 1:
            await self._fill(group, event["room"], seq)
        else:
            state.last_seq = seq
            await self.deliver(group, event)
        if event["type"] == events.MESSAGE:
            # Posting ends the author's typing at once.
            self._stop_typing(group, event["message"]["author_id"])

    async def _fill(self, group: str, room_id: int, upto_seq: int) -> None:
        """Deliver everything after the last event fanned out, up to `upto_seq`, as one batch."""
        state = self._room(group)
        after = state.last_seq
        state.last_seq = upto_seq
        messages = await fetch_changes(room_id, after, upto_seq)
        await self.deliver(group, events.batch_event(room_id, after, upto_seq, messages))

    async def _resync(self) -> None:
        """Compare each local room's sequence with the database, every resync interval.

        Writes whose events never arrived (a process without a shared layer, such as a
        management command on the in-memory layer, or events Redis dropped while it was
        down) are found here even in a room where nothing else happens, and filled in.
        """
        while True:
            await asyncio.sleep(settings.ROOMCAST_RESYNC_INTERVAL)
            groups = {g: int(g.removeprefix("room-")) for g in self.groups if g.startswith("room-")}
            if not groups:
                continue
            try:
                stored = await fetch_last_seqs(list(groups.values()))
            except Exception:
                logger.warning("could not read room sequences", exc_info=True)
                continue
            for group, room_id in groups.items():
                state = self._room(group)
                seq = stored.get(room_id, 0)
                if state.last_seq is None:
                    state.last_seq = seq  # the baseline: sockets synced from the database
                elif seq > state.last_seq:
                    await self._fill(group, room_id, seq)

    # Typing ----------------------------------------------------------------------------

    async def _typing(self, group: str, event: dict) -> None:
        state = self._room(group)
        user_id = event["user"]
        previous = state.typists.pop(user_id, None)
        if previous is not None:
            previous[1].cancel()
        if event["typing"]:
            timer = asyncio.get_running_loop().call_later(
                settings.ROOMCAST_TYPING_TIMEOUT, self._stop_typing, group, user_id
            )
            state.typists[user_id] = (event["name"], timer)
        if previous is None and not event["typing"]:
            return
        await self._deliver_typists(group)

    def _stop_typing(self, group: str, user_id: int) -> None:
        state = self.rooms.get(group)
        if state is None or user_id not in state.typists:
            return
        state.typists.pop(user_id)[1].cancel()
        task = asyncio.get_running_loop().create_task(self._deliver_typists(group))
        self._timer_tasks.add(task)
        task.add_done_callback(self._timer_tasks.discard)

    async def _deliver_typists(self, group: str) -> None:
        state = self.rooms.get(group)
        typists = [(uid, name) for uid, (name, _) in state.typists.items()] if state else []
        await self.deliver(group, events.typists_event(group, typists))

    # Presence --------------------------------------------------------------------------

    async def enter(self, room_id: int, conn_id: str, name: str) -> bool:
        """Count a signed-in socket as present in the room, and tell the room if that changes.

        Returns whether the room was told (the new socket then hears it too).
        """
        self._bind_loop()
        group = events.room_group(room_id)
        self._room(group).entries[conn_id] = name
        key = presence.presence_key(room_id)
        await self._guard(self.store.touch(key, {conn_id: name}, self.ttl))
        return await self._publish_presence(room_id)

    async def exit(self, room_id: int, conn_id: str) -> None:
        """Stop counting a socket as present."""
        self._bind_loop()
        state = self.rooms.get(events.room_group(room_id))
        if state is not None:
            state.entries.pop(conn_id, None)
        await self._guard(self.store.remove(presence.presence_key(room_id), conn_id))
        await self._publish_presence(room_id)

    async def open_socket(self, user_id: int, conn_id: str) -> int:
        """Count an open socket of a user (across processes); return how many they have."""
        self._bind_loop()
        self.user_sockets.setdefault(user_id, set()).add(conn_id)
        key = presence.sockets_key(user_id)
        await self._guard(self.store.touch(key, {conn_id: "open"}, self.ttl))
        return len(await self._guard(self.store.values(key)) or [conn_id])

    async def close_socket(self, user_id: int, conn_id: str) -> None:
        self._bind_loop()
        conns = self.user_sockets.get(user_id)
        if conns is not None:
            conns.discard(conn_id)
            if not conns:
                del self.user_sockets[user_id]
        await self._guard(self.store.remove(presence.sockets_key(user_id), conn_id))

    async def hit(self, key: str, window: float) -> int:
        """Count one event for a rate limit shared by every process (0 if the store is down)."""
        self._bind_loop()
        return await self._guard(self.store.hit(key, window)) or 0

    async def present(self, room_id: int) -> list[str]:
        """Who is in the room now, across processes."""
        self._bind_loop()
        names = await self._guard(self.store.names(room_id))
        if names is None:  # the store is unreachable: fall back to what we last knew
            state = self.rooms.get(events.room_group(room_id))
            return (state.names if state else None) or []
        return names

    async def first_in(self, key: str, seconds: float) -> bool:
        """A throttle shared by every process: True once per `seconds` per key."""
        self._bind_loop()
        allowed = await self._guard(self.store.first_in(key, seconds))
        return True if allowed is None else allowed

    @property
    def ttl(self) -> float:
        return settings.ROOMCAST_PRESENCE_TTL

    async def _publish_presence(self, room_id: int) -> bool:
        group = events.room_group(room_id)
        names = await self._guard(self.store.names(room_id))
        state = self.rooms.get(group)
        if names is None or state is None or names == state.names:
            return False
        state.names = names
        await self._guard(self.publish(events.presence_event(room_id, names)))
        return True

    async def _heartbeat(self) -> None:
        """Keep this process's presence entries alive, and publish lists that changed.

        Every process does this for its own rooms, so entries of a process that died drop
        out of every room that still has a socket somewhere, within TTL + one heartbeat.
        """
        while True:
            await asyncio.sleep(settings.ROOMCAST_PRESENCE_HEARTBEAT)
            for group, state in list(self.rooms.items()):
                room_id = int(group.removeprefix("room-"))
                if state.entries:
                    key = presence.presence_key(room_id)
                    await self._guard(self.store.touch(key, dict(state.entries), self.ttl))
                await self._publish_presence(room_id)
            for user_id, conns in list(self.user_sockets.items()):
                entries = dict.fromkeys(conns, "open")
                await self._guard(
                    self.store.touch(presence.sockets_key(user_id), entries, self.ttl)
                )
            # Re-joining refreshes group membership on layers that expire it.
            for group in list(self._subscribed):
                await self._guard(self.layer.group_add(group, self.channel_name))

    async def _guard(self, awaitable):
        """Await a store or layer call; if the service is down, log it and return None."""
        try:
            return await awaitable
        except Exception:
            logger.warning("presence store or layer unavailable", exc_info=True)
            return None

    # Room state ------------------------------------------------------------------------

    def _room(self, group: str) -> RoomState:
        return self.rooms.setdefault(group, RoomState())

    def _forget_room(self, group: str) -> None:
        state = self.rooms.pop(group, None)
        if state is not None:
            for _, timer in state.typists.values():
                timer.cancel()


@database_sync_to_async
def fetch_changes(room_id: int, after_seq: int, upto_seq: int) -> list[dict]:
    """Messages created or changed in (after_seq, upto_seq], as event values, in order."""
    window = Q(seq__gt=after_seq, seq__lte=upto_seq) | Q(
        changed_seq__gt=after_seq, changed_seq__lte=upto_seq
    )
    rows = Message.objects.filter(window, room_id=room_id).select_related("author").order_by("seq")
    return [message.as_event() for message in rows]


@database_sync_to_async
def fetch_last_seqs(room_ids: list[int]) -> dict[int, int]:
    """Each room's last sequence number, as stored."""
    return dict(Room.objects.filter(pk__in=room_ids).values_list("pk", "last_seq"))


hub = Hub()
events.set_handoff(hub.publish_soon)
