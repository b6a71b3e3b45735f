"""Floods and long-lived sockets: rate limits, the cap on open sockets, group expiry."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from rooms import consumers, limits, presence
from rooms.clock import ManualClock
from rooms.limits import Limits
from rooms.models import Message
from rooms.testing import Fragment, communicator_for

pytestmark = pytest.mark.django_db(transaction=True)

SLOW_DOWN = consumers.SLOW_DOWN


@pytest.fixture
def limit_three(settings):
    settings.ROOMCAST_POST_RATE_LIMIT = 3
    settings.ROOMCAST_POST_RATE_WINDOW = 60


@database_sync_to_async
def stored_count(room) -> int:
    return Message.objects.filter(room=room).count()


async def post_and_read(socket, body: str) -> Fragment:
    await socket.post(body)
    return await socket.receive_fragment()


async def test_posting_too_fast_says_slow_down(limit_three, room_socket, room, alice):
    socket = await room_socket(room, user=alice)
    for n in range(3):
        await socket.post(f"m{n}")
    await socket.post("one too many")
    frames = [await socket.receive_fragment() for _ in range(7)]
    errors = [f.target("message-error").text() for f in frames if f.has_target("message-error")]
    assert errors[-1] == SLOW_DOWN
    assert await stored_count(room) == 3


async def test_the_limit_counts_every_socket_of_the_user(limit_three, room_socket, room, alice):
    tabs = [await room_socket(room, user=alice) for _ in range(3)]
    for n, tab in enumerate(tabs):
        await tab.post(f"tab {n}")
    fourth = await room_socket(room, user=alice)
    await fourth.post("from a fourth tab")
    while True:
        fragment = await fourth.receive_fragment()
        if fragment.has_target("message-error") and fragment.target("message-error").text():
            break
    assert fragment.target("message-error").text() == SLOW_DOWN
    assert await stored_count(room) == 3


async def test_one_users_flood_does_not_limit_others(limit_three, room_socket, room, alice, bob):
    flooder = await room_socket(room, user=alice)
    calm = await room_socket(room, user=bob)
    for n in range(5):
        await flooder.post(f"flood {n}")
    await calm.post("my turn")
    bodies = []
    while "my turn" not in bodies:
        fragment = await calm.receive_fragment()
        assert (
            not fragment.has_target("message-error") or not fragment.target("message-error").text()
        )
        if fragment.has_target("messages"):
            bodies += [p.get_text() for p in fragment.target("messages").select(".body")]


def test_http_posting_too_fast_says_slow_down(limit_three, client, room, alice):
    client.force_login(alice)
    url = reverse("room_post", args=[room.slug])
    for n in range(3):
        client.post(url, {"message": f"m{n}"})
    response = client.post(url, {"message": "one too many"})
    assert response.status_code == 429
    assert Fragment(response.content.decode()).select("#message-error")[0].get_text() == SLOW_DOWN
    assert Message.objects.count() == 3


async def test_too_many_open_sockets_are_refused(
    room_socket, ws_application, room, alice, settings
):
    settings.ROOMCAST_MAX_SOCKETS_PER_USER = 2
    for _ in range(2):
        await room_socket(room, user=alice)
    communicator = await communicator_for(ws_application, room.socket_path(), alice)
    await communicator.connect()
    error = Fragment((await communicator.receive_output())["text"]).target("message-error")
    assert error.text() == consumers.TOO_MANY_SOCKETS
    assert (await communicator.receive_output())["code"] == consumers.CLOSE_TOO_MANY_SOCKETS


async def test_closing_a_socket_frees_its_place(room_socket, room, alice, settings):
    settings.ROOMCAST_MAX_SOCKETS_PER_USER = 1
    first = await room_socket(room, user=alice)
    await first.disconnect()
    second = await room_socket(room, user=alice)
    await second.post("still allowed")
    swap = await second.receive_swap("messages")
    assert swap.select(".body")[0].get_text() == "still allowed"


async def test_sockets_keep_receiving_after_group_expiry(room_socket, room, alice, settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"group_expiry": 1},
        }
    }
    settings.ROOMCAST_PRESENCE_HEARTBEAT = 0.2  # the hub re-joins its groups every heartbeat
    reader = await room_socket(room)
    sender = await room_socket(room, user=alice)
    await asyncio.sleep(1.5)  # longer than the layer's group expiry
    await sender.post("still here")
    assert (await reader.receive_fragment()).target("messages").select(".body")[
        0
    ].get_text() == "still here"


# Frame budgets: every inbound frame counts


@pytest.fixture
def small_budget(settings):
    settings.ROOMCAST_FRAME_BURST = 5
    settings.ROOMCAST_FRAME_RATE = 1


async def test_a_flood_of_frames_is_told_why_and_closed(small_budget, room_socket, room):
    flooder = await room_socket(room, last_seq=None)
    for _ in range(6):
        await flooder.send_text("not json")
    frames = []
    while True:
        message = await flooder.communicator.receive_output(timeout=2)
        if message["type"] == "websocket.close":
            break
        frames.append(Fragment(message["text"]))
    assert message["code"] == consumers.CLOSE_FLOOD
    assert frames[-1].target("message-error").text() == limits.FLOOD


@pytest.mark.parametrize(
    "frame",
    ['{"action": "typing"}', '{"action": "sync", "last_seq": "0"}', '{"action": "nope"}', "[["],
    ids=["typing", "sync", "unknown", "invalid-json"],
)
async def test_every_frame_kind_counts_against_the_budget(
    small_budget, room_socket, room, alice, frame
):
    socket = await room_socket(room, user=alice, last_seq=None)
    for _ in range(6):
        await socket.send_text(frame)
    while True:
        message = await socket.communicator.receive_output(timeout=2)
        if message["type"] == "websocket.close":
            break
    assert message["code"] == consumers.CLOSE_FLOOD


@pytest.mark.parametrize("live_clock", [ManualClock()])
async def test_the_budget_refills_with_time(small_budget, room_socket, room, live_clock):
    socket = await room_socket(room, last_seq=None)
    errors = []
    for _ in range(5):
        await socket.send_text('{"action": "nope"}')
        errors.append(await socket.receive_fragment())
    live_clock.advance(2)  # two more frames' worth
    for _ in range(2):
        await socket.send_text('{"action": "nope"}')
        errors.append(await socket.receive_fragment())
    texts = {e.target("message-error").text() for e in errors}
    assert texts == {"Unknown action: reload the page."}
    await socket.assert_nothing_received()
    assert socket.connected


async def test_a_flood_on_one_socket_leaves_another_room_served(
    small_budget, room_socket, room, make_room, alice
):
    other = await database_sync_to_async(make_room)("Other")
    flooder = await room_socket(room)
    calm = await room_socket(other, user=alice)
    for _ in range(50):
        await flooder.send_text("x" * 1000)
    await calm.post("still served")
    fragment = await calm.receive_swap("messages")
    assert [p.get_text() for p in fragment.select(".body")] == ["still served"]


# Frame size in bytes


def test_frame_size_is_measured_in_bytes_not_characters():
    assert limits.frame_too_large("é" * 20_000, 32 * 1024)  # 40,000 bytes, 20,000 characters
    assert not limits.frame_too_large("e" * 20_000, 32 * 1024)


async def test_a_frame_over_the_byte_limit_is_refused(room_socket, room, alice):
    socket = await room_socket(room, user=alice)
    await socket.send_text(json.dumps({"message": "€" * 11_000}, ensure_ascii=False))
    fragment = await socket.receive_fragment()
    assert fragment.target("message-error").text() == (
        f"That frame is too large (more than {consumers.MAX_FRAME_BYTES} bytes)."
    )
    assert await stored_count(room) == 0


# Anonymous sockets per client address


async def test_anonymous_sockets_per_address_are_capped(
    room_socket, ws_application, room, settings
):
    settings.ROOMCAST_MAX_ANONYMOUS_SOCKETS_PER_ADDRESS = 2
    for _ in range(2):
        await room_socket(room)
    communicator = await communicator_for(ws_application, room.socket_path())
    await communicator.connect()
    error = Fragment((await communicator.receive_output())["text"]).target("message-error")
    assert error.text() == limits.TOO_MANY_ANONYMOUS
    assert (await communicator.receive_output())["code"] == consumers.CLOSE_TOO_MANY_SOCKETS


# Failing closed while the store is away


class AwayStore(presence.MemoryStore):
    """A store whose service is down: every call raises a connection error."""

    def __getattribute__(self, name):
        if name in ("touch", "remove", "values", "names", "hit", "first_in"):
            raise ConnectionError("Redis is away")
        return super().__getattribute__(name)


async def test_rate_limit_holds_locally_while_the_store_is_away(limit_three):
    clock = ManualClock()
    rate = Limits(AwayStore(clock), clock)
    allowed = [await rate.write_allowed(7) for _ in range(5)]
    assert allowed == [True, True, True, False, False]


async def test_typing_throttle_holds_locally_while_the_store_is_away():
    clock = ManualClock()
    throttle = Limits(AwayStore(clock), clock)
    assert [await throttle.first_in("typing:1:1", 2.0) for _ in range(2)] == [True, False]


async def test_socket_cap_holds_locally_while_the_store_is_away():
    clock = ManualClock()
    caps = Limits(AwayStore(clock), clock)
    opened = [await caps.open_socket("sockets:1", f"tab-{n}", 2) for n in range(3)]
    assert opened == [True, True, False]
