"""Pages that work without a WebSocket: a plain form POST, and polling for what is new."""

import pytest
from asgiref.sync import async_to_sync
from bs4 import BeautifulSoup
from django.test import Client
from django.urls import reverse

from rooms import presence
from rooms.models import Message, post_message
from rooms.testing import Fragment

pytestmark = pytest.mark.django_db(transaction=True)


def parse(response) -> BeautifulSoup:
    return BeautifulSoup(response.content, "html.parser")


def test_the_first_render_posts_as_a_plain_form(client, room, alice):
    client.force_login(alice)
    form = parse(client.get(room.get_absolute_url())).select_one("form#message-form")
    assert (form["method"], form["action"]) == ("post", reverse("room_post", args=[room.slug]))
    assert not form.has_attr("ws-send")


def test_the_first_render_polls_for_updates(client, room):
    poller = parse(client.get(room.get_absolute_url())).select_one("#poller")
    assert poller["hx-get"] == reverse("room_updates", args=[room.slug])
    assert (poller["hx-trigger"], poller["hx-include"]) == ("every 5s", "#last-seq")


def test_plain_post_stores_and_redirects_back(client, room, alice):
    client.force_login(alice)
    response = client.post(reverse("room_post", args=[room.slug]), {"message": "no socket"})
    assert (response.status_code, response["Location"]) == (302, room.get_absolute_url())
    assert Message.objects.get(room=room).body == "no socket"


def test_plain_post_of_a_blank_message_shows_the_error(client, room, alice):
    client.force_login(alice)
    response = client.post(reverse("room_post", args=[room.slug]), {"message": "  "})
    assert response.status_code == 400
    assert (
        parse(response).select_one("#message-error").get_text() == "Write a message before sending."
    )
    assert not Message.objects.exists()


def test_plain_post_needs_a_signed_in_user(client, room):
    response = client.post(reverse("room_post", args=[room.slug]), {"message": "hi"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not Message.objects.exists()


def test_plain_post_needs_csrf(room, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("room_post", args=[room.slug]), {"message": "hi"})
    assert response.status_code == 403


async def test_plain_post_is_broadcast_to_sockets(async_client, room_socket, room, alice):
    page = await room_socket(room)
    await async_client.aforce_login(alice)
    await async_client.post(reverse("room_post", args=[room.slug]), {"message": "via HTTP"})
    fragment = await page.receive_fragment()
    assert fragment.target("messages").select(".body")[0].get_text() == "via HTTP"


def test_polling_returns_what_is_new(client, room, alice):
    post_message(room, alice, "seen")
    post_message(room, alice, "new")
    response = client.get(reverse("room_updates", args=[room.slug]), {"last_seq": "1"})
    fragment = Fragment(response.content.decode())
    assert [p.get_text() for p in fragment.target("messages").select(".body")] == ["new"]
    assert fragment.target("last-seq").element["value"] == "2"


def test_polling_with_nothing_new_returns_no_content(client, room, alice):
    post_message(room, alice, "seen")
    response = client.get(reverse("room_updates", args=[room.slug]), {"last_seq": "1"})
    assert response.status_code == 204


def test_polling_with_a_bad_last_seq_is_refused(client, room):
    response = client.get(reverse("room_updates", args=[room.slug]), {"last_seq": "x"})
    assert response.status_code == 400


def test_polling_a_private_room_is_not_found(client, make_room, alice):
    secret = make_room("Secret", owner=alice, is_private=True)
    response = client.get(reverse("room_updates", args=[secret.slug]), {"last_seq": "0"})
    assert response.status_code == 404


async def test_first_sync_makes_the_page_live(room_socket, room, alice):
    socket = await room_socket(room, user=alice, last_seq=None)
    await socket.send_form("sync", action="sync", last_seq="0", live="0")
    fragment = await socket.receive_fragment()
    assert fragment.target("message-form").element.has_attr("ws-send")
    assert not fragment.target("poller").element.has_attr("hx-get")
    assert fragment.target("live-flag").element["value"] == "1"


async def test_a_live_page_reconnecting_keeps_its_form(room_socket, room, alice):
    socket = await room_socket(room, user=alice, last_seq=None)
    await socket.send_form("sync", action="sync", last_seq="0", live="1")
    await socket.assert_nothing_received()


# The composer's idempotency key


def test_the_room_page_gets_a_fresh_client_key(client, room, alice):
    client.force_login(alice)
    keys = [client.get(room.get_absolute_url()).context["client_key"] for _ in range(2)]
    assert [len(key) for key in keys] == [32, 32]
    assert all(c in "0123456789abcdef" for c in keys[0])
    assert keys[0] != keys[1]


def test_plain_post_sent_twice_with_one_key_is_stored_once(client, room, alice):
    client.force_login(alice)
    url = reverse("room_post", args=[room.slug])
    for _ in range(3):
        response = client.post(url, {"message": "once", "client_key": "a" * 32})
        assert response.status_code == 302
    assert list(Message.objects.values_list("body", flat=True)) == ["once"]


def test_plain_post_with_an_overlong_key_is_refused(client, room, alice):
    client.force_login(alice)
    url = reverse("room_post", args=[room.slug])
    response = client.post(url, {"message": "hi", "client_key": "a" * 65})
    assert response.status_code == 400
    error = parse(response).select_one("#message-error").get_text()
    assert error == "Could not send that message: reload the page."
    assert not Message.objects.exists()


# Presence without a socket


def test_the_first_render_lists_who_is_present(client, room):
    async_to_sync(presence.MemoryStore().touch)(
        presence.presence_key(room.pk), {"c1": "bob", "c2": "alice", "c3": "bob"}, 60
    )
    page = parse(client.get(room.get_absolute_url()))
    assert [li.get_text() for li in page.select("#presence li")] == ["alice", "bob"]


def test_the_first_render_says_nobody_when_nobody_is_present(client, room):
    page = parse(client.get(room.get_absolute_url()))
    assert [li.get_text() for li in page.select("#presence li")] == ["Nobody signed in"]


def test_polling_shows_times_in_the_readers_time_zone(client, room, alice):
    from datetime import UTC, datetime

    from rooms.models import Profile

    message = post_message(room, alice, "when?")
    Message.objects.filter(pk=message.pk).update(created=datetime(2023, 11, 14, 22, 13, tzinfo=UTC))
    Profile.objects.create(user=alice, time_zone="Asia/Tokyo")
    client.force_login(alice)
    response = client.get(reverse("room_updates", args=[room.slug]), {"last_seq": 0})
    article = Fragment(response.content.decode()).target("messages").select("article")[0]
    assert article.select("header time")[0].get_text() == "07:13"  # 22:13 UTC, in Tokyo
