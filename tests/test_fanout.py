"""The fan-out hub: one subscription per group, one render per variant, events in order,
typing state with expiry, and presence that survives a crashed process."""

import asyncio
from unittest import mock

import pytest
from channels.db import database_sync_to_async

from rooms import events, fragments, presence
from rooms.fanout import Hub
from rooms.models import post_message
from rooms.testing import Fragment

pytestmark = pytest.mark.django_db(transaction=True)


class FakeSocket:
    """Records the events the hub delivers; renders through the shared cache by `variant`."""

    renders: list = []

    def __init__(self, variant=None):
        self.variant = variant
        self.events: list[dict] = []
        self.texts: list[str] = []

    async def deliver(self, event: dict, cache: dict) -> None:
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
    """Wait until `condition()` holds (the hub works in a task of its own)."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


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
    await fanout_hub.dispatch(event(other, 1))
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
    await fanout_hub.dispatch(event(room, 1))
    assert FakeSocket.renders == [(events.MESSAGE, None)]
    assert all(socket.texts == sockets[0].texts for socket in sockets)


async def test_hub_renders_once_per_viewer_variant(fanout_hub, room):
    for variant in ("author", "reader", "reader", "moderator", "reader"):
        await fanout_hub.join(group(room), FakeSocket(variant))
    await fanout_hub.dispatch(event(room, 1))
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
        await fanout_hub.dispatch(event(room, seq))
    assert socket.seqs() == [1, 2, 3]


async def test_hub_drops_a_duplicate_event(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    for seq in (1, 2, 2, 1):
        await fanout_hub.dispatch(event(room, seq))
    assert socket.seqs() == [1, 2]


async def test_hub_fills_a_gap_from_the_database(fanout_hub, room, alice):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    with mock.patch("rooms.events.publish_message"):  # the layer carries none of them
        stored = [await database_sync_to_async(post_message)(room, alice, b) for b in "abc"]
    await fanout_hub.dispatch(events.message_event(room.pk, stored[0].as_event()))
    await fanout_hub.dispatch(events.message_event(room.pk, stored[2].as_event()))
    batch = socket.events[1]
    assert (batch["type"], batch["after"], batch["seq"]) == (events.BATCH, 1, 3)
    assert [m["body"] for m in batch["messages"]] == ["b", "c"]


# Typing


async def test_typing_is_delivered_with_the_typist(fanout_hub, room, alice):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    await fanout_hub.dispatch(events.typing_event(room.pk, alice.pk, "alice", True))
    assert socket.typists() == [["alice"]]


async def test_typing_expires_by_itself(fanout_hub, room, alice, settings):
    settings.ROOMCAST_TYPING_TIMEOUT = 0.05
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    await fanout_hub.dispatch(events.typing_event(room.pk, alice.pk, "alice", True))
    await eventually(lambda: len(socket.typists()) == 2)
    assert socket.typists() == [["alice"], []]


async def test_typing_ends_when_the_typist_posts(fanout_hub, room, alice):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    await fanout_hub.dispatch(events.typing_event(room.pk, alice.pk, "alice", True))
    await fanout_hub.dispatch(event(room, 1, author_id=alice.pk))
    await eventually(lambda: len(socket.typists()) == 2)
    assert socket.typists() == [["alice"], []]


async def test_typing_again_keeps_one_entry(fanout_hub, room, alice, bob):
    socket = FakeSocket()
    await fanout_hub.join(group(room), socket)
    for user in (alice, bob, alice):
        await fanout_hub.dispatch(events.typing_event(room.pk, user.pk, user.username, True))
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


async def test_a_crashed_process_drops_out_of_presence(fanout_hub, room, settings):
    settings.ROOMCAST_PRESENCE_TTL = 0.2
    settings.ROOMCAST_PRESENCE_HEARTBEAT = 0.05
    survivor = FakeSocket()
    await fanout_hub.join(group(room), survivor)
    await fanout_hub.enter(room.pk, "alive", "alice")
    # Another process put bob in the room, then died: nobody refreshes or removes his entry.
    await presence.MemoryStore().touch(
        presence.presence_key(room.pk), {"dead-process-tab": "bob"}, ttl=0.2
    )
    assert await fanout_hub.present(room.pk) == ["alice", "bob"]
    # The survivor's heartbeat keeps alice, notices bob's expiry and tells the room.
    await eventually(lambda: survivor.events and survivor.events[-1].get("names") == ["alice"])


async def test_heartbeat_keeps_live_entries_past_the_ttl(fanout_hub, room, settings):
    settings.ROOMCAST_PRESENCE_TTL = 0.2
    settings.ROOMCAST_PRESENCE_HEARTBEAT = 0.05
    await fanout_hub.join(group(room), FakeSocket())
    await fanout_hub.enter(room.pk, "tab", "alice")
    await asyncio.sleep(0.5)
    assert await fanout_hub.present(room.pk) == ["alice"]


async def test_two_hubs_share_presence(room):
    first, second = Hub(), Hub()
    await first.enter(room.pk, "tab-a", "alice")
    await second.enter(room.pk, "tab-b", "bob")
    assert await first.present(room.pk) == ["alice", "bob"]


def test_presence_fragment_lists_names_escaped():
    swap = Fragment(fragments.presence(["alice", "<b>x</b>"])).target("presence")
    assert [li.get_text() for li in swap.select("li")] == ["alice", "<b>x</b>"]
    assert swap.select("li b") == []
