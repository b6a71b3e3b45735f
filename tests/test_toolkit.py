"""The test toolkit itself (rooms.testing): what it decodes, what it captures, and what its
failures say."""

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from rooms import events
from rooms.fragments import Viewer
from rooms.models import post_message
from rooms.testing import Fragment, capture_broadcasts, htmx_frame

pytestmark = pytest.mark.django_db(transaction=True)


# Fragments


def test_fragment_decodes_targets_and_swap_styles():
    fragment = Fragment('<div id="a" hx-swap-oob="beforeend">x</div><p id="b">y</p>')
    assert fragment.targets() == ["a", "b"]
    assert [fragment.target("a").swap, fragment.target("b").swap] == ["beforeend", "true"]


def test_a_missing_target_says_which_targets_came():
    fragment = Fragment('<p id="b">y</p>')
    with pytest.raises(AssertionError, match=r"expected a swap targeting #a, got targets \['b'\]"):
        fragment.target("a")


def test_htmx_frame_is_what_the_ws_extension_sends():
    frame = htmx_frame("message-form", action="post", message="hi")
    assert '"action": "post", "message": "hi", "HEADERS": {"HX-Request": "true"' in frame


# Sockets


async def test_receive_fragment_says_when_nothing_came(room_socket, room):
    socket = await room_socket(room)
    with pytest.raises(AssertionError, match=r"expected a fragment within 0.1s, got nothing"):
        await socket.receive_fragment(timeout=0.1)


async def test_assert_nothing_received_says_what_came(room_socket, room, alice):
    socket = await room_socket(room, user=alice)
    await socket.post("surprise")
    with pytest.raises(AssertionError, match="expected nothing more, got .*surprise"):
        await socket.assert_nothing_received(timeout=1)


# Capturing broadcasts


def test_capture_records_what_an_http_post_publishes(client, room, alice):
    client.force_login(alice)
    with capture_broadcasts() as captured:
        client.post(reverse("room_post", args=[room.slug]), {"message": "over HTTP"})
    swap = captured.one(events.MESSAGE, room).fragment().target("messages")
    assert swap.swap == "beforeend"
    assert swap.select(".body")[0].get_text() == "over HTTP"


def test_capture_renders_per_viewer(room, alice):
    with capture_broadcasts() as captured:
        post_message(room, alice, "mine")
    broadcast = captured.one(events.MESSAGE, room)
    as_author = broadcast.fragment(Viewer(user_id=alice.pk))
    assert as_author.select(".actions input[name=action]")[0]["value"] == "edit"
    assert broadcast.fragment().select(".actions") == []


def test_capture_records_member_removal(client, make_room, alice, bob):
    secret = make_room("Secret", owner=alice, is_private=True)
    secret.members.add(bob)
    client.force_login(alice)
    with capture_broadcasts() as captured:
        client.post(reverse("room_member_remove", args=[secret.slug, bob.pk]))
    removal = captured.one(events.MEMBER_REMOVED, secret)
    assert removal.fragments(Viewer(user_id=alice.pk), secret) == []  # the owner's page stays
    notice = removal.fragment(Viewer(user_id=bob.pk), secret).target("room")
    assert "You were removed from Secret" in notice.text()


def test_capture_records_the_read_marker_of_a_page_load(client, room, alice, bob):
    post_message(room, bob, "unread")
    client.force_login(alice)
    with capture_broadcasts() as captured:
        client.get(room.get_absolute_url())
    assert captured.one(events.READ, alice).event["seq"] == 1


def test_capture_only_records_its_block(room, alice):
    post_message(room, alice, "before")
    with capture_broadcasts() as captured:
        pass
    assert captured == []


def test_one_says_what_was_captured_instead(room, alice):
    with capture_broadcasts() as captured:
        post_message(room, alice, "hello")
    with pytest.raises(AssertionError, match=r"expected 1 broadcast user.mention, got 0: "):
        captured.one(events.MENTION)


async def test_capture_works_in_async_code(room_socket, room, alice):
    socket = await room_socket(room)
    with capture_broadcasts() as captured:
        await database_sync_to_async(post_message)(room, alice, "async")
        await socket.receive_fragment()  # the socket still got it
    assert captured.summary() == [f"room.message -> room-{room.pk}"]


def test_broadcasts_fixture_captures_the_whole_test(broadcasts, room, alice):
    post_message(room, alice, "one")
    post_message(room, alice, "two")
    assert len(broadcasts.to(room).of_type(events.MESSAGE)) == 2
