"""The fan-out hub: one subscription per group, one render per variant, events in order,
typing state with expiry, presence that survives a crashed process, and background loops
that survive their errors. Time is a ManualClock: nothing here sleeps to wait for it."""

import asyncio
from unittest import mock

import pytest
from channels.db import database_sync_to_async

from rooms import events, fragments, presence, sequence
from rooms.clock import ManualClock
from rooms.fanout import Hub
from rooms.models import post_message as room_post
from rooms.testing import Fragment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def live_clock():
    return ManualClock()


class FakeSocket:
    """Records the events the hub delivers; renders through the shared cache by `variant`."""

    renders: list = []
    label = "fake"
    room_label = "-"

    def __init__(self, variant=None):
        self.variant = variant
        self.events: list[dict] = []
        self.texts: list[str] = []
        self.failed = False

    def fail(self) -> None:
        self.failed = True

    def deliver(self, event: dict, cache: dict) -> None:
        self.events.append(event)
        key = (event["type"], self.variant)
        if key not in cache:
            FakeSocket.renders.append(key)
            cache[key] = f"{event['type']} for {self.variant}"
        self.texts.append(cache[key])

    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events if "seq" in e]

    def typists(self) -> list[list[str]]:
        return [[n for _, n in e["typists"]] for e in self.events if e["type"] == events.TYPISTS]


def message(seq: int, body: str = "hi", author_id: int | None = None) -> dict:
    return {
        "id": seq,
        "seq": seq,
        "changed_seq": 0,
        "author": "alice",
        "author_id": author_id,
        "body": body,
        "edited": False,
        "deleted": False,
        "created": 0.0,
    }


def event(room, seq: int, body: str = "hi", author_id: int | None = None) -> dict:
    return events.message_event(room.pk, message(seq, body, author_id))


def group(room) -> str:
    return events.room_group(room.pk)


@pytest.fixture(autouse=True)
def fresh_renders():
    FakeSocket.renders = []


async def eventually(condition, timeout: float = 2.0) -> None:
    """Wait until `condition()` holds (the hub works in tasks of its own)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


# Groups


async def test_hub_subscribes_once_per_group(fanout_hub, room):
    for socket in (FakeSocket(), FakeSocket(), FakeSocket()):
        await fanout_hub.join(group(room), socket)
    assert fanout_hub.layer.groups[group(room)].keys() == {fanout_hub.channel_name}


async def test_hub_unsubscribes_when_last_socket_leaves(fanout_hub, room):
    first, second = FakeSocket(), FakeSocket()
    await fanout_hub.join(group(room), first)
    await fanout_hub.join(group(room), second)
    await fanout_hub.leave(group(room), first)
    assert group(room) in fanout_hub.layer.groups
    await fanout_hub.leave(group(room), second)
    assert fanout_hub.layer.groups == {}


async def test_hub_ignores_groups_without_local_sockets(fanout_hub, room, make_room):
    other = await database_sync_to_async(make_room)("Other")
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    fanout_hub.dispatch(event(other, 1))
    assert socket.events == []


async def test_hub_delivers_group_events_from_the_layer(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    await events.apublish(group(room), event(room, 1, "via the layer"))
    await eventually(lambda: socket.events)
    assert socket.events[0]["message"]["body"] == "via the layer"


# Rendering once


async def test_hub_shares_one_render_among_many_sockets(fanout_hub, room):
    sockets = [FakeSocket() for _ in range(50)]
    for socket in sockets:
        await fanout_hub.join(group(room), socket)
    fanout_hub.dispatch(event(room, 1))
    assert FakeSocket.renders == [(events.MESSAGE, None)]
    assert all(socket.texts == sockets[0].texts for socket in sockets)


async def test_hub_renders_once_per_viewer_variant(fanout_hub, room):
    for variant in ("author", "reader", "reader", "moderator", "reader"):
        await fanout_hub.join(group(room), FakeSocket(variant))
    fanout_hub.dispatch(event(room, 1))
    assert sorted(FakeSocket.renders) == [
        (events.MESSAGE, "author"),
        (events.MESSAGE, "moderator"),
        (events.MESSAGE, "reader"),
    ]


# Order


async def test_hub_delivers_each_event_in_order(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    for seq in (1, 2, 3):
        fanout_hub.dispatch(event(room, seq))
    assert socket.seqs() == [1, 2, 3]


async def test_hub_drops_a_duplicate_event(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    for seq in (1, 2, 2, 1):
        fanout_hub.dispatch(event(room, seq))
    assert socket.seqs() == [1, 2]


async def test_hub_delivers_past_a_gap_for_sockets_to_catch_up(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    for seq in (1, 3):
        fanout_hub.dispatch(event(room, seq))
    assert socket.seqs() == [1, 3]


async def test_a_socket_that_fails_to_take_an_event_is_closed_alone(fanout_hub, room, caplog):
    class Broken(FakeSocket):
        def deliver(self, event, cache):
            raise KeyError("a rendering bug")

    broken, healthy = Broken(), FakeSocket()
    for socket in (broken, healthy):
        await fanout_hub.join(group(room), socket)
    fanout_hub.dispatch(event(room, 1))
    assert (broken.failed, healthy.failed, healthy.seqs()) == (True, False, [1])
    assert "could not take room.message" in caplog.text


# Typing


async def test_typing_is_delivered_with_the_typist(fanout_hub, room, alice):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    fanout_hub.dispatch(events.typing_event(room.pk, alice.pk, "alice", True))
    assert socket.typists() == [["alice"]]


async def test_typing_expires_by_itself(fanout_hub, room, alice, live_clock, settings):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    fanout_hub.dispatch(events.typing_event(room.pk, alice.pk, "alice", True))
    live_clock.advance(settings.ROOMCAST_TYPING_TIMEOUT - 0.1)
    assert socket.typists() == [["alice"]]
    live_clock.advance(0.2)
    assert socket.typists() == [["alice"], []]


async def test_typing_ends_when_the_typist_posts(fanout_hub, room, alice):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    fanout_hub.dispatch(events.typing_event(room.pk, alice.pk, "alice", True))
    fanout_hub.dispatch(event(room, 1, author_id=alice.pk))
    assert socket.typists() == [["alice"], []]


async def test_typing_again_keeps_one_entry(fanout_hub, room, alice, bob):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    for user in (alice, bob, alice):
        fanout_hub.dispatch(events.typing_event(room.pk, user.pk, user.username, True))
    assert sorted(socket.typists()[-1]) == ["alice", "bob"]


# Presence


async def test_entering_publishes_presence(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    await fanout_hub.enter(room.pk, "tab-1", "alice")
    await eventually(lambda: socket.events)
    assert socket.events[-1]["names"] == ["alice"]


async def test_three_tabs_count_once(fanout_hub, room):
    for tab in ("tab-1", "tab-2", "tab-3"):
        await fanout_hub.enter(room.pk, tab, "alice")
    assert await fanout_hub.present(room.pk) == ["alice"]


async def test_a_user_leaves_when_the_last_tab_closes(fanout_hub, room):
    for tab in ("tab-1", "tab-2"):
        await fanout_hub.enter(room.pk, tab, "alice")
    await fanout_hub.exit(room.pk, "tab-1")
    assert await fanout_hub.present(room.pk) == ["alice"]
    await fanout_hub.exit(room.pk, "tab-2")
    assert await fanout_hub.present(room.pk) == []


async def settle() -> None:
    """Let the hub's tasks run until they wait (on the clock, or the layer)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def heartbeats(clock: ManualClock, hub: Hub, count: int, period: float) -> None:
    """Move the clock `count` heartbeats on, letting each heartbeat run."""
    for _ in range(count):
        await settle()
        clock.advance(period)
        await settle()


async def test_a_crashed_process_drops_out_of_presence(fanout_hub, room, live_clock, settings):
    survivor = FakeSocket()
    await fanout_hub.join(group(room), survivor)
    await fanout_hub.enter(room.pk, "alive", "alice")
    # Another process put bob in the room, then died: nobody refreshes or removes his entry.
    await presence.MemoryStore(live_clock).touch(
        presence.presence_key(room.pk), {"dead-process-tab": "bob"}, ttl=5
    )
    assert await fanout_hub.present(room.pk) == ["alice", "bob"]
    # The survivor's heartbeat keeps alice, notices bob's expiry and tells the room.
    await heartbeats(live_clock, fanout_hub, 2, settings.ROOMCAST_PRESENCE_HEARTBEAT)
    await eventually(lambda: survivor.events and survivor.events[-1].get("names") == ["alice"])


async def test_heartbeat_keeps_live_entries_past_the_ttl(fanout_hub, room, live_clock, settings):
    await fanout_hub.join(group(room), FakeSocket())
    await fanout_hub.enter(room.pk, "tab", "alice")
    beats = int(settings.ROOMCAST_PRESENCE_TTL / settings.ROOMCAST_PRESENCE_HEARTBEAT) * 2
    await heartbeats(live_clock, fanout_hub, beats, settings.ROOMCAST_PRESENCE_HEARTBEAT)
    assert await fanout_hub.present(room.pk) == ["alice"]


async def test_an_entry_nobody_refreshes_expires(fanout_hub, room, live_clock, settings):
    await fanout_hub.enter(room.pk, "tab", "alice")
    live_clock.advance(settings.ROOMCAST_PRESENCE_TTL + 0.1)  # no hub task refreshes it
    assert await fanout_hub.present(room.pk) == []


# Background loops


async def test_resync_tells_sockets_of_a_write_without_an_event(fanout_hub, room, alice):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    fanout_hub.dispatch(event(room, 1))
    with mock.patch("rooms.events.publish_message"):
        await database_sync_to_async(room_post)(room, alice, "a")
        await database_sync_to_async(room_post)(room, alice, "b")
    await fanout_hub.resync()
    hint = socket.events[-1]
    assert (hint["type"], hint["seq"]) == (events.BEHIND, 2)


async def test_resync_loop_survives_an_exception(fanout_hub, room, live_clock, settings, caplog):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    real = sequence.fetch_last_seqs
    calls = []

    async def flaky(room_ids):
        calls.append(room_ids)
        if len(calls) == 1:
            raise ValueError("a bug in the first resync")
        return {room.pk: 7}

    with mock.patch.object(sequence, "fetch_last_seqs", flaky):
        for expected in (1, 2):
            await settle()
            live_clock.advance(settings.ROOMCAST_RESYNC_INTERVAL)
            await eventually(lambda expected=expected: len(calls) == expected)
        await eventually(lambda: socket.events)
    assert real is not flaky and socket.events[-1]["seq"] == 7
    assert "resync failed" in caplog.text


async def test_access_recheck_lists_who_may_read_a_private_room(fanout_hub, make_room, alice, bob):
    private = await database_sync_to_async(make_room)("Secret", is_private=True, owner=alice)
    await database_sync_to_async(private.members.add)(bob)
    socket = FakeSocket()
    await fanout_hub.join(group(private), socket)
    await fanout_hub.recheck_access()
    assert socket.events[-1]["allowed"] == sorted([alice.pk, bob.pk])


async def test_two_hubs_share_presence(room):
    first, second = Hub(), Hub()
    await first.enter(room.pk, "tab-a", "alice")
    await second.enter(room.pk, "tab-b", "bob")
    assert await first.present(room.pk) == ["alice", "bob"]


def test_presence_fragment_lists_names_escaped():
    swap = Fragment(fragments.presence(["alice", "<b>x</b>"])).target("presence")
    assert [li.get_text() for li in swap.select("li")] == ["alice", "<b>x</b>"]
    assert swap.select("li b") == []
