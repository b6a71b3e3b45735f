"""A socket's outbox: batched frames, order, catch-up over gaps and overflows, the bound,
and a supervised writer (no database or network: a fake owner records what it is asked)."""

import asyncio
import logging

import pytest
from django.db import DatabaseError

from rooms import metrics
from rooms.clock import ManualClock
from rooms.outbox import Outbox, ReadySet


class FakeOwner:
    """A socket as the outbox sees it; the database holds the room's events up to `stored`."""

    label = "sock-1"
    room_label = "lobby"

    def __init__(self, stored: int = 0):
        self.stored = stored
        self.frames: list[str] = []
        self.catch_ups: list[tuple[int, int]] = []
        self.written_seqs: list[int] = []
        self.slow = self.failed = False
        self.broken_write = self.broken_catch_up = False

    async def write(self, text: str) -> None:
        if self.broken_write:
            raise ConnectionResetError("the client went away")
        self.frames.append(text)

    async def catch_up(self, after_seq: int, at_least: int) -> tuple[str, int]:
        self.catch_ups.append((after_seq, at_least))
        if self.broken_catch_up:
            raise DatabaseError("the database is away")
        if self.stored <= after_seq:
            return "", after_seq
        return f"[{after_seq + 1}-{self.stored}]", self.stored

    def snapshot(self) -> str:
        return "[state]"

    def written(self, seq: int) -> None:
        self.written_seqs.append(seq)

    def too_slow(self) -> None:
        self.slow = True

    def fail(self) -> None:
        self.failed = True


def outbox(owner: FakeOwner, limit: int = 100, max_overflows: int = 3) -> Outbox:
    return Outbox(owner, limit, max_overflows)


async def eventually(condition) -> None:
    async with asyncio.timeout(2):
        while not condition():
            await asyncio.sleep(0)


async def test_outbox_joins_waiting_events_into_one_frame():
    owner = FakeOwner()
    box = outbox(owner)
    box.sync(0)
    for seq, text in ((1, "a"), (2, "b"), (3, "c")):
        box.put(seq, seq, text)
    box.put(None, None, "x")
    await box.drain()
    assert (owner.frames, box.seq) == (["abcx"], 3)


async def test_outbox_writer_sends_a_lone_event_at_once():
    owner = FakeOwner()
    box = outbox(owner)
    box.sync(0)
    box.start("writer")
    box.put(1, 1, "a")
    await eventually(lambda: owner.frames)
    assert owner.frames == ["a"]
    await box.stop()


async def test_outbox_holds_numbered_events_until_the_page_syncs():
    owner = FakeOwner()
    box = outbox(owner)
    box.put(1, 1, "a")
    box.put(None, None, "presence")
    await box.drain()
    assert owner.frames == ["presence"]
    box.sync(0)
    await box.drain()
    assert owner.frames == ["presence", "a"]


async def test_outbox_skips_what_the_page_shows():
    owner = FakeOwner(stored=2)
    box = outbox(owner)
    box.sync(2)
    for seq in (1, 2, 3):
        box.put(seq, seq, str(seq))
    await box.drain()
    assert owner.frames == ["3"]


async def test_outbox_sync_catches_up_from_the_database_first():
    owner = FakeOwner(stored=4)
    box = outbox(owner)
    box.put(4, 4, "4")  # arrived before the page's report: in the catch-up already
    box.put(5, 5, "5")
    box.sync(2)
    await box.drain()
    assert (owner.frames, owner.catch_ups, box.seq) == (["[3-4]5"], [(2, 0)], 5)


async def test_outbox_fills_a_gap_from_the_database():
    owner = FakeOwner()
    box = outbox(owner)
    box.sync(0)
    await box.drain()
    owner.stored = 3
    box.put(1, 1, "1")
    box.put(3, 3, "3")  # 2 never arrived
    await box.drain()
    assert (owner.frames, owner.catch_ups[-1], box.seq) == (["1[2-3]"], (1, 2), 3)


async def test_outbox_catches_up_when_hinted_the_room_moved_on():
    owner = FakeOwner()
    box = outbox(owner)
    box.sync(0)
    await box.drain()
    owner.stored = 2
    box.hint(2)
    await box.drain()
    assert (owner.frames, box.seq) == (["[1-2]"], 2)


async def test_outbox_sequence_advances_only_after_the_frame_was_written():
    owner = FakeOwner()
    box = outbox(owner)
    box.sync(0)
    await box.drain()
    owner.broken_write = True
    box.put(1, 1, "1")
    with pytest.raises(ConnectionResetError):
        await box.drain()
    assert (box.seq, owner.written_seqs) == (0, [0])


async def test_outbox_overflow_drops_entries_and_catches_up():
    owner = FakeOwner()
    box = outbox(owner, limit=3)
    box.sync(0)
    await box.drain()
    before = metrics.OUTBOX_OVERFLOWS._value.get()
    for seq in range(1, 6):
        box.put(seq, seq, str(seq))
    owner.stored = 5
    assert len(box) == 1  # dropped at the bound, then one more
    await box.drain()
    assert owner.frames == ["[state][1-5]"]
    assert metrics.OUTBOX_OVERFLOWS._value.get() - before == 1


async def test_outbox_closes_a_socket_that_keeps_overflowing():
    owner = FakeOwner()
    box = outbox(owner, limit=2, max_overflows=2)
    box.sync(0)
    for seq in range(1, 10):  # the writer never gets to run
        box.put(seq, seq, str(seq))
    assert owner.slow


async def test_outbox_that_drains_between_overflows_stays_open():
    owner = FakeOwner()
    box = outbox(owner, limit=2, max_overflows=1)
    box.sync(0)
    for burst in range(3):
        for seq in range(3 * burst + 1, 3 * burst + 4):
            box.put(seq, seq, str(seq))
        owner.stored = 3 * burst + 3
        await box.drain()
    assert not owner.slow and box.seq == 9


async def test_a_failed_writer_is_logged_and_closes_its_socket(caplog):
    owner = FakeOwner(stored=3)
    owner.broken_catch_up = True
    box = outbox(owner)
    box.start("roomcast-writer-test")
    with caplog.at_level(logging.ERROR):
        box.sync(0)
        await eventually(lambda: owner.failed)
    record = next(r for r in caplog.records if "failed" in r.getMessage())
    assert (record.socket, record.room) == ("sock-1", "lobby")
    assert "roomcast-writer-test failed (socket sock-1, room lobby)" in record.getMessage()


async def test_a_stopped_writer_is_not_a_failure():
    owner = FakeOwner()
    box = outbox(owner)
    box.start("writer")
    await box.stop()
    assert not owner.failed


class DirectOwner(FakeOwner):
    """A socket whose server's send never waits (daphne): written from the ready set."""

    def __init__(self, stored: int = 0):
        super().__init__(stored)
        self.direct: list[str] = []

    def write_now(self, text: str) -> bool:
        if self.broken_write:
            raise ConnectionResetError("the client went away")
        self.direct.append(text)
        return True


async def started(owner: FakeOwner) -> Outbox:
    """A synced outbox whose writer has caught up and waits for work."""
    box = outbox(owner)
    box.sync(0)
    box.start("writer")
    await eventually(lambda: box._idle and box.seq == 0)
    return box


async def test_outbox_idle_writer_lets_events_leave_at_the_end_of_the_loop_turn():
    owner = DirectOwner()
    box = await started(owner)
    box.put(1, 1, "a")
    assert owner.direct == []  # nothing written inside the fan-out's loop over sockets
    await asyncio.sleep(0)
    assert (owner.direct, box.seq, owner.written_seqs[-1], len(box)) == (["a"], 1, 1, 0)
    await box.stop()


async def test_outbox_events_of_one_loop_turn_leave_as_one_frame():
    owner = DirectOwner()
    box = await started(owner)
    box.put(1, 1, "a")
    box.put(None, None, "x")
    box.put(2, 2, "b")
    await asyncio.sleep(0)
    assert (owner.direct, box.seq, owner.frames) == (["axb"], 2, [])
    await box.stop()


async def test_outbox_event_after_a_gap_is_left_to_the_writer_to_catch_up():
    owner = DirectOwner()
    box = await started(owner)
    owner.stored = 2
    box.put(2, 2, "2")  # 1 never arrived: the writer fills the gap from the database
    await eventually(lambda: owner.frames)
    assert (owner.direct, owner.frames, box.seq) == ([], ["[1-2]"], 2)
    await box.stop()


async def test_outbox_sync_during_the_loop_turn_is_left_to_the_writer():
    owner = DirectOwner(stored=1)
    box = outbox(owner)
    box.start("writer")
    await eventually(lambda: box._idle)
    box.put(None, None, "x")
    box.sync(0)  # the writer catches up first, then sends what waits
    await eventually(lambda: box.seq == 1)
    assert (owner.direct, owner.frames) == ([], ["[1-1]x"])
    await box.stop()


async def test_outbox_failed_direct_write_is_logged_keeps_the_sequence_and_closes(caplog):
    owner = DirectOwner()
    box = await started(owner)
    owner.broken_write = True
    with caplog.at_level(logging.ERROR):
        box.put(1, 1, "a")
        await asyncio.sleep(0)
    record = next(r for r in caplog.records if "failed" in r.getMessage())
    assert (record.socket, record.room, box.seq, owner.failed) == ("sock-1", "lobby", 0, True)
    await box.stop()


async def test_outbox_stopped_writer_writes_nothing_directly():
    owner = DirectOwner()
    box = await started(owner)
    await box.stop()
    box.put(1, 1, "a")
    await asyncio.sleep(0)
    assert (owner.direct, len(box)) == ([], 1)


async def test_outbox_of_a_server_whose_send_waits_uses_its_writer():
    owner = DirectOwner()
    owner.sends_at_once = False
    box = await started(owner)
    box.put(1, 1, "a")
    await eventually(lambda: owner.frames)
    assert (owner.direct, owner.frames) == ([], ["a"])
    await box.stop()


# Batching under load: the ready set's wait (on a manual clock)


class CostlyOwner(DirectOwner):
    """Writing a frame takes `cost` seconds, as the sends to a large room's sockets do."""

    def __init__(self, clock: ManualClock, cost: float):
        super().__init__()
        self.clock, self.cost = clock, cost
        self.sends_at_once = True  # False: a server whose send awaits (the writer sends)

    def write_now(self, text: str) -> bool:
        self.clock.advance(self.cost)
        return super().write_now(text)

    async def write(self, text: str) -> None:
        self.clock.advance(self.cost)
        await super().write(text)


async def costly(cost: float, max_delay: float = 0.02, at_once: bool = True):
    clock = ManualClock()
    ready = ReadySet(clock=clock, max_delay=max_delay)
    owner = CostlyOwner(clock, cost)
    owner.sends_at_once = at_once
    box = Outbox(owner, 100, ready=ready)
    box.sync(0)
    box.start("writer")
    await eventually(lambda: box._idle and box.seq == 0)
    return clock, ready, owner, box


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_ready_set_light_load_sends_at_the_end_of_the_loop_turn():
    clock, ready, owner, box = await costly(0.010)
    box.put(1, 1, "a")
    await asyncio.sleep(0)
    assert (owner.direct, ready.delayed) == (["a"], 0)
    await box.stop()


async def test_ready_set_under_load_holds_the_next_flush_for_half_the_last_cost():
    clock, ready, owner, box = await costly(0.010)
    box.put(1, 1, "a")
    await asyncio.sleep(0)  # a flush that cost 10 ms
    box.put(2, 2, "b")  # arrives at once after it: load
    await turns()
    assert (owner.direct, ready.delayed) == (["a"], 1)
    clock.advance(0.005)
    assert owner.direct == ["a", "b"]
    await box.stop()


async def test_ready_set_events_arriving_during_the_wait_leave_as_one_frame():
    clock, ready, owner, box = await costly(0.010)
    box.put(1, 1, "a")
    await asyncio.sleep(0)
    box.put(2, 2, "b")
    clock.advance(0.002)
    box.put(3, 3, "c")
    clock.advance(0.003)
    assert (owner.direct, box.seq) == (["a", "bc"], 3)
    await box.stop()


async def test_ready_set_does_not_wait_once_the_last_cost_has_passed_idle():
    clock, ready, owner, box = await costly(0.010)
    box.put(1, 1, "a")
    await asyncio.sleep(0)
    clock.advance(0.010)  # the loop was idle as long as the flush took: light load again
    box.put(2, 2, "b")
    await asyncio.sleep(0)
    assert (owner.direct, ready.delayed) == (["a", "b"], 0)
    await box.stop()


async def test_ready_set_cheap_flushes_never_wait():
    clock, ready, owner, box = await costly(0.001)
    box.put(1, 1, "a")
    await asyncio.sleep(0)
    box.put(2, 2, "b")
    await asyncio.sleep(0)
    assert (owner.direct, ready.delayed) == (["a", "b"], 0)
    await box.stop()


async def test_ready_set_wait_is_capped_by_the_setting():
    clock, ready, owner, box = await costly(1.0, max_delay=0.02)
    box.put(1, 1, "a")
    await asyncio.sleep(0)
    box.put(2, 2, "b")
    clock.advance(0.02)
    assert owner.direct == ["a", "b"]
    await box.stop()


async def test_ready_set_max_delay_zero_never_waits():
    clock, ready, owner, box = await costly(0.010, max_delay=0)
    box.put(1, 1, "a")
    await asyncio.sleep(0)
    box.put(2, 2, "b")
    await asyncio.sleep(0)
    assert (owner.direct, ready.delayed) == (["a", "b"], 0)
    await box.stop()


async def test_ready_set_counts_the_writers_time_under_servers_whose_send_waits():
    clock, ready, owner, box = await costly(0.010, at_once=False)
    box.put(1, 1, "a")
    await eventually(lambda: owner.frames == ["a"] and box._idle)
    assert ready.cost == pytest.approx(0.010)
    box.put(2, 2, "b")
    await turns()
    assert (owner.frames, ready.delayed) == (["a"], 1)
    clock.advance(0.005)
    await eventually(lambda: owner.frames == ["a", "b"])
    await box.stop()
