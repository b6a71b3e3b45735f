"""The fan-out hub: one subscription per room, one render per event, in-order delivery."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from rooms import events, fanout
from rooms.models import post_message

pytestmark = pytest.mark.django_db(transaction=True)


class FakeSocket:
    """Records what the hub offers it."""

    def __init__(self, variant=None):
        self.variant = variant
        self.offers: list[tuple[int, str]] = []

    async def offer(self, seq: int, text: str) -> None:
        self.offers.append((seq, text))


def message(seq: int, body: str = "hi") -> dict:
    return {"id": seq, "seq": seq, "author": "alice", "body": body, "created": 0.0}


def event(room, seq: int, body: str = "hi") -> dict:
    return events.message_event(room.pk, message(seq, body))


@pytest.fixture
def count_renders(monkeypatch):
    calls = []
    original = fanout.render_message

    def counting(message, variant):
        calls.append((message["seq"], variant))
        return original(message, variant)

    monkeypatch.setattr(fanout, "render_message", counting)
    return calls


async def test_hub_subscribes_once_per_room(fanout_hub, room):
    for socket in (FakeSocket(), FakeSocket(), FakeSocket()):
        await fanout_hub.join(room.pk, socket)
    assert fanout_hub.layer.groups[events.room_group(room.pk)].keys() == {fanout_hub.channel_name}


async def test_hub_unsubscribes_when_last_socket_leaves(fanout_hub, room):
    first, second = FakeSocket(), FakeSocket()
    await fanout_hub.join(room.pk, first)
    await fanout_hub.join(room.pk, second)
    await fanout_hub.leave(room.pk, first)
    assert events.room_group(room.pk) in fanout_hub.layer.groups
    await fanout_hub.leave(room.pk, second)
    assert fanout_hub.layer.groups == {}


async def test_hub_renders_once_per_event_for_many_sockets(fanout_hub, room, count_renders):
    sockets = [FakeSocket() for _ in range(50)]
    for socket in sockets:
        await fanout_hub.join(room.pk, socket)
    await fanout_hub.dispatch(event(room, 1))
    assert count_renders == [(1, None)]
    assert all(socket.offers == sockets[0].offers for socket in sockets)


async def test_hub_renders_once_per_viewer_variant(fanout_hub, room, count_renders):
    for variant in ("member", "member", "owner", None):
        await fanout_hub.join(room.pk, FakeSocket(variant))
    await fanout_hub.dispatch(event(room, 1))
    assert sorted(count_renders, key=str) == sorted(
        [(1, "member"), (1, "owner"), (1, None)], key=str
    )


async def test_hub_offers_each_event_in_order(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(room.pk, socket)
    for seq in (1, 2, 3):
        await fanout_hub.dispatch(event(room, seq))
    assert [seq for seq, _ in socket.offers] == [1, 2, 3]


async def test_hub_drops_a_duplicate_event(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(room.pk, socket)
    for seq in (1, 2, 2, 1):
        await fanout_hub.dispatch(event(room, seq))
    assert [seq for seq, _ in socket.offers] == [1, 2]


async def test_hub_fills_a_gap_from_the_database(fanout_hub, room, alice):
    socket = FakeSocket()
    await fanout_hub.join(room.pk, socket)
    stored = [await database_sync_to_async(post_message)(room, alice, b) for b in "abc"]
    await fanout_hub.dispatch(events.message_event(room.pk, stored[0].as_event()))
    await fanout_hub.dispatch(events.message_event(room.pk, stored[2].as_event()))
    assert [seq for seq, _ in socket.offers] == [1, 2, 3]
    assert ">b</p>" in socket.offers[1][1]


async def test_hub_ignores_rooms_without_local_sockets(fanout_hub, room, make_room):
    other = await database_sync_to_async(make_room)("Other")
    socket = FakeSocket()
    await fanout_hub.join(room.pk, socket)
    await fanout_hub.dispatch(event(other, 1))
    assert socket.offers == []


async def test_hub_ignores_unknown_event_types(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(room.pk, socket)
    await fanout_hub.dispatch({"type": "room.unknown", "room": room.pk})
    assert socket.offers == []


async def test_hub_delivers_group_events_from_the_layer(fanout_hub, room):
    socket = FakeSocket()
    await fanout_hub.join(room.pk, socket)
    await events.apublish(events.room_group(room.pk), event(room, 1, "via the layer"))
    for _ in range(100):
        if socket.offers:
            break
        await asyncio.sleep(0.01)
    assert "via the layer" in socket.offers[0][1]
