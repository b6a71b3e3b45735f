"""Unread counts on the room list, and @mentions that reach every page of the mentioned user."""

import pytest
from bs4 import BeautifulSoup
from channels.db import database_sync_to_async
from django.urls import reverse

from rooms import events, fragments
from rooms.models import post_message
from rooms.testing import Fragment

pytestmark = pytest.mark.django_db(transaction=True)

post = database_sync_to_async(post_message)


def unread_on_list(client, room) -> str:
    page = BeautifulSoup(client.get(reverse("room_list")).content, "html.parser")
    (count,) = page.select(f"#unread-{room.pk}")
    return count.get_text()


# Unread counts


def test_room_list_counts_others_messages(client, room, alice, bob):
    post_message(room, bob, "one")
    post_message(room, bob, "two")
    post_message(room, alice, "mine")
    client.force_login(alice)
    assert unread_on_list(client, room) == "2"


def test_visiting_the_room_marks_it_read(client, room, alice, bob):
    post_message(room, bob, "one")
    client.force_login(alice)
    client.get(room.get_absolute_url())
    assert unread_on_list(client, room) == "0"


def test_anonymous_visitors_see_no_counts(client, room, bob):
    post_message(room, bob, "one")
    page = BeautifulSoup(client.get(reverse("room_list")).content, "html.parser")
    assert page.select(".badge") == []


async def test_unread_count_goes_up_live(user_socket, room, alice, bob):
    room_list = await user_socket(alice, unread=True)
    await room_list.receive_swap("room-list")  # the whole list: the socket hears its rooms
    await post(room, bob, "news")
    badge = await room_list.receive_swap(f"unread-{room.pk}")
    assert badge.text() == "1"


async def test_own_messages_do_not_count(user_socket, room, alice):
    room_list = await user_socket(alice, unread=True)
    await room_list.receive_swap("room-list")
    await post(room, alice, "mine")
    # The room moves first on her home page (issue 13), its count stays at nothing.
    assert (await room_list.receive_swap(f"unread-{room.pk}")).text() == "0"


async def test_reading_the_room_elsewhere_resets_the_count(
    user_socket, room_socket, room, alice, bob
):
    room_list = await user_socket(alice, unread=True)
    await room_list.receive_swap("room-list")
    message = await post(room, bob, "news")
    await room_list.receive_swap(f"unread-{room.pk}")
    await room_socket(room, user=alice, last_seq=message.seq - 1)  # alice opens the room
    badge = await room_list.receive_swap(f"unread-{room.pk}")
    assert badge.text() == "0"


# Mentions


def test_mentions_are_highlighted(client, room, alice, bob):
    post_message(room, alice, "hey @bob, look <here>")
    page = BeautifulSoup(client.get(room.get_absolute_url()).content, "html.parser")
    body = page.select_one("#messages .message .body")
    assert [m.get_text() for m in body.select("mark.mention")] == ["@bob"]
    assert body.get_text() == "hey @bob, look <here>"


async def test_a_mention_reaches_the_users_other_pages(user_socket, room, alice, bob):
    bobs_page = await user_socket(bob)
    await post(room, alice, "ping @bob")
    toast = (await bobs_page.receive_fragment()).target("toasts")
    assert toast.swap == "beforeend"
    assert "alice mentioned you in Lobby" in toast.text()
    assert toast.select("a")[0]["href"] == room.get_absolute_url()


async def test_a_mention_reaches_a_page_in_another_room(room_socket, make_room, room, alice, bob):
    elsewhere = await database_sync_to_async(make_room)("Elsewhere")
    bob_elsewhere = await room_socket(elsewhere, user=bob)
    await post(room, alice, "ping @bob")
    toast = (await bob_elsewhere.receive_fragment()).target("toasts")
    assert "ping @bob" in toast.text()


async def test_no_toast_in_the_room_of_the_message(room_socket, room, alice, bob):
    bob_here = await room_socket(room, user=bob)
    await post(room, alice, "ping @bob")
    # The message, and the stored notification's inbox item and bell (in one frame or
    # several, with the connection status perhaps among them): no toast.
    targets: list[str] = []
    while not {"messages", "inbox", "bell"} <= set(targets):
        targets += (await bob_here.receive_fragment()).targets()
    assert sorted(t for t in targets if t != "connection") == [
        "bell",
        "inbox",
        "last-seq",
        "messages",
    ]
    await bob_here.assert_nothing_received()


async def test_mentioning_yourself_sends_no_toast(user_socket, room, alice):
    page = await user_socket(alice)
    await post(room, alice, "note to @alice")
    await page.assert_nothing_received()


async def test_no_toast_for_a_private_room_the_user_cannot_read(user_socket, make_room, alice, bob):
    secret = await database_sync_to_async(make_room)("Secret", owner=alice, is_private=True)
    page = await user_socket(bob)
    await post(secret, alice, "@bob must not know")
    await page.assert_nothing_received()


def test_toast_text_is_escaped(alice, bob, room):
    message = post_message(room, alice, "@bob <img src=x>").as_event()
    html = fragments.mention_toast(events.mention_event(bob.pk, "<b>Lobby</b>", room.slug, message))
    toast = Fragment(html).target("toasts")
    assert toast.select("img") == [] and toast.select("b") == []
    assert "<b>Lobby</b>" in toast.text()
