"""Each socket's outbox: a bounded queue drained by the socket's own writer task.

The fan-out hands a socket an event by `Outbox.put()` (O(1), never awaits), so a slow or
stalled socket cannot slow the others. The writer joins everything waiting into ONE
WebSocket frame (the htmx ws extension swaps every top-level element of a frame), so
under light load an event leaves at once, and under heavy load frames carry more events.

Room events are numbered (the room's sequence). The writer sends them in order, skips
what the page has, and asks its owner to catch up from the database when the page lacks
something: after the page's sync report, after a gap, after a hint that the room moved
on, and after an overflow (the queue is dropped, the database is the source of truth).
The page's sequence number (`seq`) advances only after the frame was written.

The writer task is supervised: if it fails, the failure is logged with the socket and
its room, and the socket is closed (1011), so the browser reconnects and catches up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from rooms import metrics
from rooms.clock import Clock, system

logger = logging.getLogger(__name__)

# What an outbox holds: (first seq, last seq, text) for numbered room events; (None,
# None, text) for the rest. A text may be a coroutine function that makes it (a shared
# database read, awaited by the writer, never by the fan-out).
Deferred = Callable[[], Awaitable[str]]
Entry = tuple[int | None, int | None, "str | Deferred"]

# Per-frame counts kept as plain integers and added to the Prometheus counters by
# `flush_counts()` (every heartbeat): a counter's lock per frame per socket measurably
# slowed the fan-out.
frames_sent: dict[str, int] = {}
events_delivered = [0]


def flush_counts() -> None:
    """Add the frames and events counted since the last flush to the Prometheus metrics."""
    for kind, count in list(frames_sent.items()):
        if count:
            metrics.FRAMES_SENT.labels(kind).inc(count)
            frames_sent[kind] -= count
    if events_delivered[0]:
        count = events_delivered[0]
        metrics.EVENTS_DELIVERED.inc(count)
        events_delivered[0] -= count


# After this many catch-ups that do not close a gap, the writer gives up (and the socket
# is closed so that the page reconnects): the database never had what the event claimed.
MAX_FRUITLESS_CATCH_UPS = 3


class Owner(Protocol):
    """What an outbox needs of its socket."""

    label: str  # the socket, for logs
    room_label: str  # its room (or "-"), for logs

    async def write(self, text: str) -> None:
        """Send one WebSocket frame."""

    async def catch_up(self, after_seq: int, at_least: int) -> tuple[str, int]:
        """What the page lacks after `after_seq`, rendered, and the seq it brings it to,
        from a read that saw at least the room's events up to `at_least`."""

    def snapshot(self) -> str:
        """Fragments of the room's current state (who is here), after entries were dropped."""

    def written(self, seq: int) -> None:
        """The page now shows numbered events up to `seq`."""

    def too_slow(self) -> None:
        """The socket overflowed again and again: close it."""


# An owner may also have `write_now(text) -> bool` (send one frame without awaiting, and
# say whether it did) and `sends_at_once` (its server's send never waits: daphne). Then,
# while its writer is idle, what is put waits in the outbox and the outbox joins the
# process's ready set; once per loop turn, after the fan-out has handed out every event
# that arrived, `ReadySet.flush` writes each ready outbox's entries as one frame: no task
# wake-up per socket per event, and events that arrived together leave together. Whatever
# needs more (a catch-up, a sync, a gap, a deferred text) is left to the writer task.


class ReadySet:
    """The outboxes that have something to write at the end of this loop turn.

    Holds each outbox once (bounded by the number of sockets). A failure writing one is
    logged with its socket and room and closes that socket; the others are still written.

    Under light load a flush runs on the next loop turn, so an event leaves at once. Under
    load, the next flush waits a share of what the last one cost (at most `max_delay`), and
    the events that arrive meanwhile leave in the same frames: each socket pays one frame
    for several events. A flush's cost is the time from its start until every frame it
    started was written, directly (daphne) or by the sockets' writer tasks (servers whose
    send awaits). Load means a flush is asked for before that cost has passed again since
    the last one ended, or while its writers are still at work. The wait is a share of what
    one flush already costs every socket, so it adds little latency exactly when it saves
    most work.
    """

    def __init__(
        self,
        clock: Clock = system,
        min_cost: float = 0.002,
        share: float = 0.5,
        max_delay: float = 0.02,
    ) -> None:
        self.boxes: list[Outbox] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending = False
        self.clock = clock
        self.min_cost = min_cost  # a flush cheaper than this never delays the next
        self.share = share  # the next flush waits this share of the last flush's cost
        self.max_delay = max_delay  # and never longer than this (0: never waits)
        self.cost = 0.0  # how long the last finished flush took
        self.started = 0.0  # when the last flush started
        self.ended = float("-inf")  # when its last frame was written
        self.writing = 0  # writer tasks the last flush woke that have not finished
        self.generation = 0  # counts flushes; a writer reports for the flush that woke it
        self.delayed = 0  # flushes that waited

    def add(self, box: Outbox) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # a new loop (tests): what the old one held is gone
            self.boxes, self.loop, self.pending, self.writing = [], loop, False, 0
            self.cost, self.ended = 0.0, float("-inf")
        self.boxes.append(box)
        if not self.pending:
            self.pending = True
            wait = self.delay()
            if wait > 0:
                self.delayed += 1
                self.clock.call_later(wait, self.flush)
            else:
                loop.call_soon(self.flush)

    def delay(self) -> float:
        """How long the next flush waits: 0 under light load, a share of the last flush's
        cost while flushes follow each other."""
        now = self.clock.now()
        if self.writing:
            cost = now - self.started  # still at work: it has cost this much so far
        elif now - self.ended < self.cost:
            cost = self.cost
        else:
            return 0.0
        if cost < self.min_cost:
            return 0.0
        return min(cost * self.share, self.max_delay)

    def flush(self) -> None:
        now = self.clock.now()
        if self.writing:
            self._finished(now)  # its writers are still at work: count it finished here
        self.pending = False
        self.generation += 1
        boxes, self.boxes = self.boxes, []
        # Outboxes their writers drained meanwhile send nothing: the last cost then stands.
        busy = any(box.entries for box in boxes)
        if busy:
            self.started = now
        woken = 0
        for box in boxes:
            try:
                if box.write_waiting():
                    box.woken_by = self.generation
                    woken += 1
            except Exception as error:  # logged and the socket closed, as a failed writer
                box._ready = False
                failed(box.owner, "roomcast-write", error, getattr(box.owner, "fail", None))
        self.writing = woken
        if busy and not woken:
            self._finished(self.clock.now())

    def written(self, generation: int) -> None:
        """A writer woken by flush `generation` has written its frame."""
        if generation == self.generation and self.writing:
            self.writing -= 1
            if not self.writing:
                self._finished(self.clock.now())

    def _finished(self, now: float) -> None:
        # A small flush (one socket's frame) between large ones halves the remembered cost
        # rather than erasing it: the load it measures is the loop's, not that socket's.
        self.writing = 0
        self.ended = now
        self.cost = max(now - self.started, self.cost * 0.5)


ready_set = ReadySet()


class Outbox:
    """A socket's bounded queue of fragments and the state of what its page shows."""

    def __init__(
        self, owner: Owner, limit: int, max_overflows: int = 3, ready: ReadySet | None = None
    ) -> None:
        self.owner = owner
        self.ready = ready or ready_set
        self.limit = limit
        self.max_overflows = max_overflows
        self.entries: deque[Entry] = deque()
        # Numbered events that arrived before the page said what it shows.
        self.held: list[Entry] = []
        self.seq: int | None = None  # the last room event the page shows (None: unknown yet)
        self.hinted = 0  # the room has events up to here (a resync hint)
        self.stale = False  # the page may lack events after `seq`: catch up first
        self.lost = False  # entries were dropped: catch up, and re-send the room's state
        self.overflows = 0  # overflows since the last frame written
        self._sync_to: int | None = None
        self._wake = asyncio.Event()
        self._idle = False  # the writer waits for work (nothing of ours is in flight)
        self._write_now: Callable[[str], bool] | None = None  # set when the writer starts
        self._ready = False  # in the ready set, to be written at the end of this loop turn
        self.woken_by = 0  # the ready set's flush that woke the writer (0: none)
        self.task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.entries) + len(self.held)

    # The fan-out side (never awaits) -------------------------------------------------------

    def put(self, first: int | None, last: int | None, text: str | Deferred) -> None:
        """Queue a fragment; numbered ones wait until the page has said what it shows."""
        if len(self.entries) + len(self.held) >= self.limit:
            self._overflow()
            return
        if first is not None and self.seq is None:
            self.held.append((first, last, text))
            return
        self.entries.append((first, last, text))
        if self._idle:
            if not self._ready:
                self._ready = True
                self.ready.add(self)
        else:
            self._wake.set()

    def write_waiting(self) -> bool:
        """Write what waits as one frame without awaiting (the writer is idle and nothing
        needs the database first); otherwise wake the writer, which does it all. True if
        the writer was woken."""
        self._ready = False
        seq = self.seq
        if (
            not self.entries
            or self._write_now is None
            or not self._idle
            or seq is None
            or self.lost
            or self.stale
            or self._sync_to is not None
            or self.hinted > seq
        ):
            if self.entries:
                self._wake.set()
                return True
            return False
        parts: list[str] = []
        events = 0
        for first, last, item in self.entries:
            if not isinstance(item, str):
                self._wake.set()  # a deferred text: the writer awaits it
                return True
            if first is None or last is None:
                parts.append(item)
                continue
            if last <= seq:
                continue  # the page has it
            if first != seq + 1:
                self._wake.set()  # a gap: the writer catches up from the database
                return True
            seq = last
            events += 1
            parts.append(item)
        if parts and not self._write_now("".join(parts)):
            self._wake.set()
            return True
        self.entries.clear()
        if parts:
            events_delivered[0] += events
            self.overflows = 0
        if seq != self.seq:
            self.seq = seq
            self.owner.written(seq)
        return False

    def sync(self, after_seq: int) -> None:
        """The page shows the room's events up to `after_seq`: send what it lacks."""
        self._sync_to = after_seq
        self._wake.set()

    def hint(self, seq: int) -> None:
        """The room has events up to `seq` (stored, maybe never published): fetch them."""
        if seq > self.hinted:
            self.hinted = seq
            self._wake.set()

    def _overflow(self) -> None:
        metrics.OUTBOX_OVERFLOWS.inc()
        self.entries.clear()
        self.held.clear()
        self.lost = True
        self.overflows += 1
        if self.overflows > self.max_overflows:
            self.owner.too_slow()
        else:
            self._wake.set()

    # The writer side ------------------------------------------------------------------------

    def start(self, name: str) -> asyncio.Task[None]:
        """Start the writer task, supervised by this outbox's owner."""
        direct = getattr(self.owner, "write_now", None)
        if getattr(self.owner, "sends_at_once", True):
            self._write_now = direct
        self.task = asyncio.create_task(self.run(), name=name)
        supervise(self.task, self.owner, on_failure=getattr(self.owner, "fail", None))
        return self.task

    async def stop(self) -> None:
        """Cancel the writer and wait for it to end."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if asyncio.current_task() is task:
                    raise

    async def run(self) -> None:
        """Drain the queue, one frame per wake-up, until cancelled."""
        try:
            while True:
                self._idle = True
                await self._wake.wait()
                self._idle = False
                self._wake.clear()
                await self.drain()
                if self.woken_by:
                    generation, self.woken_by = self.woken_by, 0
                    self.ready.written(generation)
        finally:
            self._idle = False

    async def drain(self) -> None:
        """Write everything waiting as one frame (catching up from the database first if
        the page lacks something), then advance the page's sequence number."""
        synced = self.seq is None and self._sync_to is not None
        if synced:
            self.seq, self._sync_to = self._sync_to, None
            self.entries.extendleft(reversed(self.held))
            self.held = []
            self.stale = True
        parts: list[str] = []
        seq = self.seq
        if self.lost:
            self.lost = False
            parts.append(self.owner.snapshot())
            self.stale = self.stale or seq is not None
        if seq is not None and self.hinted > seq:
            self.stale = True
        fruitless = 0
        events = 0
        needed = self.hinted
        while True:
            if self.stale and seq is not None:
                self.stale = False
                before = seq
                text, seq = await self.owner.catch_up(seq, needed)
                if text:
                    parts.append(text)
                    events += 1
                fruitless = fruitless + 1 if seq == before else 0
            gap = False
            while self.entries:
                first, last, item = self.entries.popleft()
                if first is None or last is None:
                    parts.append(item if isinstance(item, str) else await item())
                    continue
                if seq is None:  # the page has not synced: keep it for after the sync
                    self.held.append((first, last, item))
                    continue
                if last <= seq:
                    continue  # the page has it (caught up meanwhile, or a duplicate)
                if first != seq + 1:
                    self.entries.appendleft((first, last, item))
                    needed = max(needed, first - 1)
                    gap = True
                    break
                seq = last
                events += 1
                parts.append(item if isinstance(item, str) else await item())
            if not gap:
                break
            if fruitless >= MAX_FRUITLESS_CATCH_UPS:
                raise RuntimeError(f"room events after seq {seq} are not in the database")
            self.stale = True
        if parts:
            await self.owner.write("".join(parts))
            events_delivered[0] += events
            self.overflows = 0
        if seq is not None and (synced or seq != self.seq):
            self.seq = seq
            self.owner.written(seq)


def supervise(
    task: asyncio.Task[Any], owner: Any, on_failure: Callable[[], None] | None = None
) -> None:
    """Give a task an owner: when it fails, log it with the socket and room, then call
    `on_failure` (which closes the socket). Cancellation is an ordinary end."""

    def done(finished: asyncio.Task[Any]) -> None:
        if finished.cancelled():
            return
        error = finished.exception()
        if error is not None:
            failed(owner, finished.get_name(), error, on_failure)

    task.add_done_callback(done)


def failed(
    owner: Any, what: str, error: BaseException, on_failure: Callable[[], None] | None
) -> None:
    """Log a failure with the socket and room it served, then call `on_failure`."""
    socket = getattr(owner, "label", repr(owner))
    room = getattr(owner, "room_label", "-")
    logger.error(
        "live task %s failed (socket %s, room %s)",
        what,
        socket,
        room,
        exc_info=error,
        extra={"socket": socket, "room": room, "task": what},
    )
    if on_failure is not None:
        on_failure()
