"""The fan-out hub: hands each group event to the outbox of every local socket.

There is one hub per process (per event loop). Sockets do not join channel-layer groups
themselves: the hub subscribes its single channel to each group that has a local socket
(a room, one user's pages, the site), so a group event crosses the layer once per process.
For each event the hub calls every socket's `deliver(event, cache)`, which never awaits:
the socket renders through `cache` (shared by the event's sockets, keyed by viewer
variant, so a fragment is rendered once per variant) and puts the text in its own
bounded outbox (rooms/outbox.py), whose writer task sends it. No database query and no
socket write happens on the hub's task, so one slow socket or query never stalls a room.

The hub's background loops, each on the injected clock and each surviving its errors:
the heartbeat (presence entries and socket counts kept alive), the resync (rooms whose
stored sequence moved on without an event: sockets are told to catch up), the access
re-check (sockets of users no longer allowed in a private room are closed) and the live
beat (the connection status every page shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError

from rooms import clock as clocks
from rooms import events, fragments, outbox, presence, sequence
from rooms.clock import Clock
from rooms.limits import Limits
from rooms.outbox import supervise
from rooms.typing import Typing

logger = logging.getLogger(__name__)

# Events waiting to be published from database threads (publish_soon). Past this, the
# event is dropped with a warning: the write is stored, and the resync brings it.
PUBLISH_QUEUE_LIMIT = 10_000


class Socket(Protocol):
    """What the hub needs of a connected socket (a consumer)."""

    label: str
    room_label: str

    def deliver(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        """Take one group event (never awaits); render through `cache`."""

    def fail(self) -> None:
        """Something went wrong serving this socket: close it (the page reconnects)."""


class Hub:
    """One process's registry of sockets by group, fed by one channel-layer channel."""

    def __init__(
        self,
        layer_alias: str = DEFAULT_CHANNEL_LAYER,
        layer: Any = None,
        store: presence.Store | None = None,
        clock: Clock | None = None,
    ) -> None:
        # `layer` (and `store`) give this hub its own instances: two hubs in one process
        # then behave like two server processes (the Redis tests do this).
        self.layer_alias = layer_alias
        self._own_layer = layer
        self._own_store = store
        self.clock: Clock = clock or clocks.system
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reset()

    def _reset(self) -> None:
        self.groups: dict[str, set[Socket]] = {}
        self.seqs: dict[str, int] = {}  # the last sequence number fanned out, per room
        self.typing = Typing(self.clock, lambda: settings.ROOMCAST_TYPING_TIMEOUT, self._typed)
        self.socket_keys: dict[str, set[str]] = {}  # open-socket counters of local sockets
        self.layer: Any = None
        self.store: presence.Store | None = None
        self.tracker: presence.Tracker | None = None
        self.limits: Limits | None = None
        self.catch_ups = sequence.CatchUps(self.clock)
        self.channel_name: str | None = None
        self._subscribed: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def _bind_loop(self) -> None:
        # asyncio objects belong to one loop; a hub reused on a new loop (tests) starts afresh.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._reset()
        if self.layer is None:
            self.layer = self._own_layer or get_channel_layer(self.layer_alias)
            self.store = self._own_store or presence.get_store(self.clock)
            # Late-bound, so that a test capturing Hub.publish sees presence too.
            self.tracker = presence.Tracker(self.store, lambda event: self.publish(event))
            self.limits = Limits(self.store, self.clock)

    def bound(self) -> None:
        """Make sure the hub's services exist on the running loop."""
        self._bind_loop()

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
                with contextlib.suppress(*presence.STORE_ERRORS):
                    await self.layer.group_discard(group, self.channel_name)
            if not self.groups:
                await self._stop()

    # Publishing -------------------------------------------------------------------------

    async def publish(self, event: dict[str, Any]) -> None:
        """Send an event to its group through this hub's layer."""
        self._bind_loop()
        await self.layer.group_send(event["group"], event)

    def publish_soon(self, group: str, event: dict[str, Any]) -> bool:
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

    def _enqueue(self, group: str, event: dict[str, Any]) -> None:
        if self._publisher is None or self._publisher.done():
            self._outbox = asyncio.Queue(PUBLISH_QUEUE_LIMIT)
            self._publisher = asyncio.create_task(self._publish_queued(), name="roomcast-pub")
            supervise(self._publisher, self)
        assert self._outbox is not None
        try:
            self._outbox.put_nowait((group, event))
        except asyncio.QueueFull:
            logger.warning("publish queue full: %s to %s left to the resync", event["type"], group)

    async def _publish_queued(self) -> None:
        assert self._outbox is not None
        while True:
            group, event = await self._outbox.get()
            try:
                await events.apublish(group, event)
            except presence.STORE_ERRORS:
                # Redis is away: the write is stored; sockets catch up by sequence number.
                logger.warning("could not publish %s to %s", event.get("type"), group)

    # Tasks ------------------------------------------------------------------------------

    label = "hub"
    room_label = "-"

    async def _start(self) -> None:
        if self._tasks:
            return
        self.channel_name = await self.layer.new_channel("roomcast-hub.")
        loops: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("roomcast-hub", self._run),
            ("roomcast-hub-heartbeat", self._every(self._heartbeat, "ROOMCAST_PRESENCE_HEARTBEAT")),
            ("roomcast-hub-resync", self._every(self.resync, "ROOMCAST_RESYNC_INTERVAL")),
            ("roomcast-hub-access", self._every(self.recheck_access, "ROOMCAST_ACCESS_RECHECK")),
            ("roomcast-hub-beat", self._every(self.beat, "ROOMCAST_LIVE_BEAT")),
        ]
        for name, loop in loops:
            task = asyncio.create_task(loop(), name=name)
            supervise(task, self)
            self._tasks.append(task)

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _every(
        self, step: Callable[[], Coroutine[Any, Any, None]], setting: str
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """A loop running `step` every `setting` seconds; an error is logged, not fatal."""

        async def loop() -> None:
            while True:
                await self.clock.sleep(float(getattr(settings, setting)))
                try:
                    await step()
                except DatabaseError:
                    logger.warning("%s: the database is unavailable", step.__name__, exc_info=True)
                except Exception:
                    # A supervisor loop: log the bug loudly and keep serving every room.
                    logger.exception("%s failed; it runs again next interval", step.__name__)

        return loop

    async def _run(self) -> None:
        """Read the hub's channel forever and fan out each event."""
        while True:
            try:
                event = await self.layer.receive(self.channel_name)
            except presence.STORE_ERRORS:
                # The layer is unreachable (Redis restarting): wait and read again. Events
                # lost meanwhile show up as a gap in the room's sequence and are caught up.
                logger.warning("fan-out hub could not read its channel", exc_info=True)
                await self.clock.sleep(1)
                continue
            try:
                self.dispatch(event)
            except Exception:
                # A malformed event (a bug where it was made): log it loudly, keep reading.
                logger.exception("could not fan out %r", event.get("type"))

    # Fan-out ----------------------------------------------------------------------------

    def dispatch(self, event: dict[str, Any]) -> None:
        """Fan one group event out to the group's local sockets (never awaits)."""
        group = event.get("group")
        if group not in self.groups:
            return
        kind = event.get("type")
        if kind in (events.MESSAGE, events.MESSAGE_CHANGED):
            seq = event["seq"]
            if seq <= self.seqs.get(group, 0):
                return  # fanned out already (a duplicate)
            self.seqs[group] = seq
            self.deliver(group, event)
            if kind == events.MESSAGE and self.typing.stop(group, event["message"]["author_id"]):
                self._typed(group)  # posting ends the author's typing at once
        elif kind == events.TYPING:
            if self.typing.update(group, event["user"], event["name"], event["typing"]):
                self._typed(group)
        else:
            if kind == events.PRESENCE and self.tracker is not None:
                self.tracker.seen(event["room"], event["names"])
            self.deliver(group, event)

    def deliver(self, group: str, event: dict[str, Any]) -> None:
        """Hand `event` to every local socket of `group`, sharing one render cache.

        A socket that fails to take it (a bug in its rendering) is logged and closed;
        the others still get the event.
        """
        cache: dict[Any, Any] = {}
        for socket in list(self.groups.get(group, ())):
            try:
                socket.deliver(event, cache)
            except Exception:
                logger.exception(
                    "socket %s could not take %s (room %s)",
                    socket.label,
                    event.get("type"),
                    socket.room_label,
                    extra={"socket": socket.label, "room": socket.room_label},
                )
                socket.fail()

    def _typed(self, group: str) -> None:
        self.deliver(group, events.typists_event(group, self.typing.typists(group)))

    # Background loops ------------------------------------------------------------------

    def room_ids(self) -> dict[str, int]:
        return {g: int(g.removeprefix("room-")) for g in self.groups if g.startswith("room-")}

    async def resync(self) -> None:
        """Compare each local room's sequence with the database, once.

        Writes whose events never arrived (a process without a shared layer, such as a
        management command on the in-memory layer, or events Redis dropped while it was
        down) are found here even in a room where nothing else happens: the room's sockets
        are told the stored number and catch up (one shared query per range).
        """
        rooms = self.room_ids()
        if not rooms:
            return
        stored = await sequence.fetch_last_seqs(list(rooms.values()))
        for group, room_id in rooms.items():
            seq = stored.get(room_id, 0)
            if group in self.groups and seq > self.seqs.get(group, 0):
                self.seqs[group] = seq
                self.deliver(group, events.behind_event(room_id, seq))

    async def recheck_access(self) -> None:
        """Who may still read each local private room (two queries for all rooms): the
        sockets of anyone no longer allowed are told and closed, even if the event that
        removed them was lost."""
        rooms = self.room_ids()
        if not rooms:
            return
        allowed = await sequence.fetch_allowed_users(list(rooms.values()))
        for group, room_id in rooms.items():
            users = allowed.get(room_id)
            if users is not None and group in self.groups:
                self.deliver(group, events.access_event(room_id, sorted(users)))

    async def beat(self) -> None:
        """Re-send the connection status to every local socket (rendered once)."""
        if not self.groups:
            return
        html = fragments.connection_status()
        for socket in {s for members in self.groups.values() for s in members}:
            beat = getattr(socket, "beat", None)
            if beat is not None:
                beat(html)

    async def _heartbeat(self) -> None:
        """Keep this process's presence entries and socket counts alive, and publish
        presence lists that changed.

        Every process does this for its own rooms, so entries of a process that died drop
        out of every room that still has a socket somewhere, within TTL + one heartbeat.
        """
        assert self.tracker is not None and self.limits is not None
        outbox.flush_counts()
        await self.tracker.refresh(list(self.room_ids().values()))
        await self.limits.refresh_sockets(self.socket_keys)
        # Re-joining refreshes group membership on layers that expire it.
        for group in list(self._subscribed):
            await presence.guarded(self.layer.group_add(group, self.channel_name), "re-join")

    # Presence and limits (the socket's view) ------------------------------------------

    async def enter(self, room_id: int, conn_id: str, name: str) -> bool:
        """Count a signed-in socket as present in the room, and tell the room if that changes.

        Returns whether the room was told (the new socket then hears it too).
        """
        self._bind_loop()
        assert self.tracker is not None
        return await self.tracker.enter(room_id, conn_id, name)

    async def exit(self, room_id: int, conn_id: str) -> None:
        """Stop counting a socket as present."""
        self._bind_loop()
        assert self.tracker is not None
        await self.tracker.exit(room_id, conn_id)

    async def present(self, room_id: int) -> list[str]:
        """Who is in the room now, across processes."""
        self._bind_loop()
        assert self.tracker is not None
        return await self.tracker.present(room_id)

    def names(self, room_id: int) -> list[str] | None:
        """The presence list this process last saw for the room (no I/O)."""
        return self.tracker.names.get(room_id) if self.tracker is not None else None

    async def open_socket(self, key: str, conn_id: str, cap: int) -> bool:
        """Count an open socket under `key` across processes; False if over `cap`."""
        self._bind_loop()
        assert self.limits is not None
        if not await self.limits.open_socket(key, conn_id, cap):
            return False
        self.socket_keys.setdefault(key, set()).add(conn_id)
        return True

    async def close_socket(self, key: str, conn_id: str) -> None:
        self._bind_loop()
        assert self.limits is not None
        conns = self.socket_keys.get(key)
        if conns is not None:
            conns.discard(conn_id)
            if not conns:
                del self.socket_keys[key]
        await self.limits.close_socket(key, conn_id)

    async def hit(self, key: str, window: float) -> int:
        """Count one event for a rate limit shared by every process (local if Redis is away)."""
        self._bind_loop()
        assert self.limits is not None
        return await self.limits.hit(key, window)

    async def first_in(self, key: str, seconds: float) -> bool:
        """A throttle shared by every process: True once per `seconds` per key."""
        self._bind_loop()
        assert self.limits is not None
        return await self.limits.first_in(key, seconds)

    # Room state ------------------------------------------------------------------------

    def _forget_room(self, group: str) -> None:
        self.seqs.pop(group, None)
        self.typing.forget(group)
        if group.startswith("room-") and self.tracker is not None:
            self.tracker.forget(int(group.removeprefix("room-")))


hub = Hub()
events.set_handoff(hub.publish_soon)
