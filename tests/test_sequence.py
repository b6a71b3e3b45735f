"""Catch-up shared by the sockets that need the same range, bounded in concurrency, read
again after a failure, and access re-checked at every catch-up."""

import asyncio
from unittest import mock

import pytest
from channels.db import database_sync_to_async
from django.db import DatabaseError

from rooms import consumers, sequence
from rooms.clock import ManualClock
from rooms.models import Message, post_message
from rooms.sequence import SharedReads

pytestmark = pytest.mark.django_db(transaction=True)


def counting_read(result="rows", gate: asyncio.Event | None = None):
    calls = []

    async def read():
        calls.append(1)
        if gate is not None:
            await gate.wait()
        return result

    return read, calls


async def test_shared_reads_read_once_for_many_callers():
    shared = SharedReads(limit=4)
    read, calls = counting_read()
    results = await asyncio.gather(*(shared.get("k", read) for _ in range(1000)))
    assert (len(calls), set(results)) == (1, {"rows"})


async def test_shared_reads_run_at_most_limit_at_once():
    shared, gate, running, peak = SharedReads(limit=2), asyncio.Event(), [0], [0]

    async def read():
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await gate.wait()
        running[0] -= 1
        return "rows"

    waiting = [asyncio.ensure_future(shared.get(key, read)) for key in range(10)]
    for _ in range(10):
        await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*waiting)
    assert peak[0] == 2


async def test_a_failed_read_is_read_again():
    shared, attempts = SharedReads(limit=1, keep=60), []

    async def read():
        attempts.append(1)
        if len(attempts) == 1:
            raise DatabaseError("away")
        return "rows"

    with pytest.raises(DatabaseError):
        await shared.get("k", read)
    assert await shared.get("k", read) == "rows"
    assert len(attempts) == 2


async def test_a_finished_read_is_kept_for_a_moment():
    clock = ManualClock()
    shared = SharedReads(limit=1, clock=clock, keep=1.0)
    read, calls = counting_read()
    await shared.get("k", read)
    clock.advance(0.5)
    await shared.get("k", read)
    clock.advance(0.6)
    await shared.get("k", read)
    assert len(calls) == 2


async def test_a_kept_read_too_old_for_the_caller_is_read_again():
    shared = SharedReads(limit=1, keep=60)
    read, calls = counting_read(result=3)
    await shared.get("k", read)
    await shared.get("k", read, usable=lambda last_seq: last_seq >= 5)
    assert len(calls) == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_read_for_others():
    shared, gate = SharedReads(limit=1), asyncio.Event()
    read, calls = counting_read(gate=gate)
    leaver = asyncio.ensure_future(shared.get("k", read))
    stayer = asyncio.ensure_future(shared.get("k", read))
    await asyncio.sleep(0)
    leaver.cancel()
    gate.set()
    assert (await stayer, len(calls)) == ("rows", 1)


def test_allowed_users_of_a_private_room_are_its_owner_and_members(make_room, alice, bob):
    secret = make_room("Secret", is_private=True, owner=alice)
    secret.members.add(bob)
    public = make_room("Open")
    allowed = sequence.allowed_users([secret.pk, public.pk, 999_999])
    assert allowed == {
        secret.pk: frozenset({alice.pk, bob.pk}),
        public.pk: None,
        999_999: frozenset(),
    }


# Through sockets


def bodies(fragment) -> list[str]:
    return [p.get_text() for p in fragment.select("#messages .message .body")]


async def test_reconnect_storm_catches_up_with_one_read_per_range(
    room_socket, room, alice, fanout_hub, settings
):
    settings.ROOMCAST_MAX_ANONYMOUS_SOCKETS_PER_ADDRESS = 2000
    for n in range(5):
        await database_sync_to_async(post_message)(room, alice, f"m{n}")
    pages = [await room_socket(room, last_seq=None) for _ in range(1000)]
    reads_before = fanout_hub.catch_ups.shared.reads
    for n, page in enumerate(pages):
        await page.sync(2 if n % 2 else 4)  # two ranges: pages that saw 2 and pages that saw 4
    got = [bodies(await page.receive_fragment(timeout=20)) for page in pages]
    assert got == [["m2", "m3", "m4"] if n % 2 else ["m4"] for n in range(1000)]
    # Two ranges: two reads (a third only if the storm outlived a kept read's second).
    reads = fanout_hub.catch_ups.shared.reads - reads_before
    print(f"1000 sockets reconnecting over 2 ranges: {reads} catch-up reads")
    assert reads <= 4


async def test_a_database_error_in_one_catch_up_closes_that_socket_only(
    room_socket, room, alice, caplog
):
    for n in range(3):
        await database_sync_to_async(post_message)(room, alice, f"m{n}")
    real = sequence.read_catch_up

    def failing_for_seq_one(room_id, after_seq):
        if after_seq == 1:
            raise DatabaseError("the database went away")
        return real(room_id, after_seq)

    doomed = await room_socket(room, last_seq=None)
    healthy = await room_socket(room, last_seq=None)
    for page in (doomed, healthy):
        await page.receive_fragment(skip=())  # who is here
    with mock.patch.object(sequence, "read_catch_up", failing_for_seq_one):
        await doomed.sync(1)
        await healthy.sync(2)
        assert bodies(await healthy.receive_fragment()) == ["m2"]
        assert await doomed.receive_close() == consumers.CLOSE_INTERNAL
    sender = await room_socket(room, user=alice)
    await sender.post("after")
    assert bodies(await healthy.receive_fragment()) == ["after"]
    assert "failed (socket" in caplog.text


async def test_a_catch_up_refuses_a_member_removed_meanwhile(room_socket, make_room, alice, bob):
    secret = await database_sync_to_async(make_room)("Secret", is_private=True, owner=alice)
    await database_sync_to_async(secret.members.add)(bob)
    page = await room_socket(secret, user=bob, last_seq=None)
    # Removed without an event reaching this process (a lost member_removed).
    await database_sync_to_async(secret.members.remove)(bob)
    await page.sync(0)
    assert page.close_code is None
    removed = await page.receive_fragment()
    assert removed.has_target("room")
    assert await page.receive_close() == consumers.CLOSE_FORBIDDEN


async def test_stored_messages_are_unchanged_by_a_failed_catch_up(room, alice):
    await database_sync_to_async(post_message)(room, alice, "kept")
    assert await database_sync_to_async(Message.objects.count)() == 1
