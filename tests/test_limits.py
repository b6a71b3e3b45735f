"""Floods and long-lived sockets: rate limits, the cap on open sockets, group expiry."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from rooms import consumers
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
    assert (await second.receive_fragment()).has_target("messages")


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
