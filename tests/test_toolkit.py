"""The test toolkit itself (rooms.testing): what it sends, what it decodes, what it captures,
and what its failures say."""

import json

import pytest
from bs4 import BeautifulSoup
from channels.db import database_sync_to_async
from django.urls import reverse

from rooms import events, fragments, live
from rooms.consumers import CLOSE_FORBIDDEN
from rooms.fragments import Viewer
from rooms.models import post_message
from rooms.testing import Fragment, RoomSocket, capture_broadcasts, htmx_frame, render_event

pytestmark = pytest.mark.django_db(transaction=True)


# Fragments


def test_fragment_decodes_targets_and_swap_styles():
    fragment = Fragment('<div id="a" hx-swap-oob="beforeend">x</div>\n<p id="b">y</p>')
    assert fragment.targets() == ["a", "b"]
    assert [fragment.target("a").swap, fragment.target("b").swap] == ["beforeend", "true"]
    assert fragment.target("b").text() == "y"


def test_a_missing_target_says_which_targets_came():
    fragment = Fragment('<p id="b">y</p>')
    with pytest.raises(AssertionError, match=r"expected a swap targeting #a, got targets \['b'\]"):
        fragment.target("a")


# What the toolkit sends


def test_htmx_frame_is_what_the_ws_extension_sends():
    assert json.loads(htmx_frame("message-form", action="post", message="hi")) == {
        "action": "post",
        "message": "hi",
        "HEADERS": {
            "HX-Request": "true",
            "HX-Trigger": "message-form",
            "HX-Trigger-Name": None,
            "HX-Target": "message-form",
            "HX-Current-URL": "http://testserver/",
        },
    }


class Recorder:
    """A stand-in for WebsocketCommunicator that keeps what is sent."""

    def __init__(self):
        self.sent = []

    async def send_to(self, text_data=None, bytes_data=None):
        self.sent.append(json.loads(text_data))


def fields_of(element) -> set[str]:
    return {field["name"] for field in element.select("input[name]")}


async def test_the_toolkit_sends_the_fields_of_the_page_forms(client, room, alice):
    """What each helper sends matches the elements of the page (and of go_live) it stands for."""
    await database_sync_to_async(client.force_login)(alice)
    response = await database_sync_to_async(client.get)(room.get_absolute_url())
    page = BeautifulSoup(response.content, "html.parser")
    live_page = Fragment(fragments.go_live(can_post=True))
    socket = RoomSocket(Recorder())
    await socket.sync(3, live=False)
    await socket.post("hi")
    await socket.type()
    sync, post, typing = socket.communicator.sent
    assert set(sync) - {"HEADERS"} == fields_of(page.select_one("#sync"))
    assert (sync["live"], sync["HEADERS"]["HX-Trigger"]) == ("0", "sync")
    assert set(post) - {"HEADERS"} == fields_of(live_page.target("message-form").element)
    signal = live_page.target("typing-signal").element
    assert typing["HEADERS"]["HX-Trigger"] == signal["id"]
    assert set(typing) - {"HEADERS"} == set(json.loads(signal["hx-vals"]))


# Sockets


async def test_receive_fragment_says_when_nothing_came(room_socket, room):
    socket = await room_socket(room, last_seq=None)
    await socket.receive_fragment(skip=())  # an anonymous socket gets the presence list
    with pytest.raises(AssertionError, match=r"^expected a fragment within 0.1s, got nothing$"):
        await socket.receive_fragment(timeout=0.1)


async def test_receive_fragment_says_what_it_passed_over(room_socket, room):
    socket = await room_socket(room, last_seq=None)
    with pytest.raises(
        AssertionError,
        match=r"got nothing \(passed over \d frames swapping only \['presence', 'connection'\]\)",
    ):
        await socket.receive_fragment(timeout=0.1)


async def test_receive_fragment_says_when_the_socket_closed(room_socket, make_room, alice, bob):
    secret = await database_sync_to_async(make_room)("Secret", owner=alice, is_private=True)
    socket = await room_socket(secret, user=bob, last_seq=None)
    closed = r"^expected a fragment, got the socket closed \(code 4403\)$"
    with pytest.raises(AssertionError, match=closed):
        await socket.receive_fragment()
    assert socket.close_code == CLOSE_FORBIDDEN


async def watcher_and_poster(room_socket, room, alice):
    """An anonymous watcher, and alice's socket once the watcher has seen her arrive (her
    arrival in the presence list could otherwise share the frame of what she posts)."""
    watcher = await room_socket(room)
    poster = await room_socket(room, user=alice)
    while "alice" not in (await watcher.receive_swap("presence")).text():
        pass
    return watcher, poster


async def test_receive_close_says_what_came_instead(room_socket, room, alice):
    socket, poster = await watcher_and_poster(room_socket, room, alice)
    await poster.post("still open")
    with pytest.raises(
        AssertionError,
        match=r"expected the socket to close, got a fragment targeting \['messages', 'last-seq'\]",
    ):
        await socket.receive_close()


async def test_assert_nothing_received_says_what_came(room_socket, room, alice):
    socket, poster = await watcher_and_poster(room_socket, room, alice)
    await poster.post("surprise")
    with pytest.raises(AssertionError) as failure:
        await socket.assert_nothing_received(timeout=1)
    message = str(failure.value)
    assert message.startswith("expected nothing more, got a fragment targeting ['messages',")
    assert '<p class="body" dir="auto">surprise</p>' in message


async def test_assert_nothing_received_passes_over_presence(room_socket, room, alice):
    watcher = await room_socket(room)
    await room_socket(room, user=alice)  # alice arrives: the watcher's presence list changes
    await watcher.assert_nothing_received(timeout=0.3)


async def test_sync_with_live_false_brings_the_page_live(room_socket, room, alice):
    socket = await room_socket(room, user=alice, last_seq=None)
    await socket.sync(0, live=False)
    fragment = await socket.receive_fragment()
    assert fragment.targets() == [
        "message-form",
        "lines-form",
        "typing-signal",
        "poller",
        "live-flag",
    ]


# Capturing broadcasts


def test_capture_records_what_an_http_post_publishes(client, room, alice):
    client.force_login(alice)
    with capture_broadcasts() as captured:
        client.post(reverse("room_post", args=[room.slug]), {"message": "over HTTP"})
    swap = captured.one(events.MESSAGE, room).fragment().target("messages")
    assert swap.swap == "beforeend"
    assert swap.select(".body")[0].get_text() == "over HTTP"


@pytest.mark.django_db  # inside a transaction that never commits
def test_capture_runs_the_blocks_on_commit_callbacks_in_a_transaction(client, room, alice):
    client.force_login(alice)
    with capture_broadcasts(room) as captured:
        client.post(reverse("room_post", args=[room.slug]), {"message": "uncommitted"})
    fragment = captured.one(events.MESSAGE).fragment()
    assert fragment.target("messages").select(".body")[0].get_text() == "uncommitted"


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


def test_capture_keeps_only_its_targets(room, alice, bob):
    with capture_broadcasts(room) as to_room, capture_broadcasts(bob) as to_bob:
        post_message(room, alice, "hi @bob")
    assert to_room.summary() == [f"room.message -> room-{room.pk}"]
    # The mention itself, then the inbox item and the bell it leaves (rooms.notifications).
    assert (
        to_bob.summary()
        == [f"user.mention -> user-{bob.pk}"] + [f"live.fragment -> user-{bob.pk}"] * 2
    )


def test_capture_only_records_its_block(room, alice):
    post_message(room, alice, "before")
    with capture_broadcasts() as captured:
        pass
    post_message(room, alice, "after")
    assert captured == []


def test_capture_records_live_pushes(room):
    with capture_broadcasts() as captured:
        live.push(live.SITE, "base.html#notice_toast", {"text": "Back in 5 minutes"})
    toast = captured.one(events.FRAGMENT, live.SITE).fragment().target("toasts")
    assert (toast.swap, toast.text()) == ("beforeend", "Back in 5 minutes")


def test_one_says_what_was_captured_instead(room, alice):
    with capture_broadcasts() as captured:
        post_message(room, alice, "hello")
    listed = rf"captured: \['room.message -> room-{room.pk}'\]$"
    expected = rf"^expected 1 user.mention broadcast, got 0; {listed}"
    with pytest.raises(AssertionError, match=expected):
        captured.one(events.MENTION)


def test_one_names_the_group_it_expected(room, alice):
    with capture_broadcasts() as captured:
        pass
    expected = rf"^expected 1 room.message broadcast to user-{alice.pk}, got 0; captured: nothing$"
    with pytest.raises(AssertionError, match=expected):
        captured.one(events.MESSAGE, alice)


def test_fragment_says_when_an_event_is_not_one_frame(room, alice):
    event = events.member_removed_event(room.pk, alice.pk)
    with capture_broadcasts() as captured:
        events.publish(event["group"], event)
    with pytest.raises(
        AssertionError,
        match=rf"expected room.member_removed to room-{room.pk} to render as 1 frame for "
        r"Viewer\(user_id=None, moderator=False, time_zone='UTC'\), got 0: \[\]",
    ):
        captured.one().fragment()


async def test_capture_works_in_async_code(room_socket, room, alice):
    socket = await room_socket(room)
    with capture_broadcasts() as captured:
        await database_sync_to_async(post_message)(room, alice, "async")
        await socket.receive_fragment()  # the socket still got it
    assert captured.summary() == [f"room.message -> room-{room.pk}"]


async def test_async_capture_sees_what_the_hub_publishes(room_socket, room, alice, bob):
    watcher = await room_socket(room, user=bob)
    async with capture_broadcasts(room) as captured:
        typist = await room_socket(room, user=alice)  # presence, from the hub
        await typist.type()  # typing, from the hub
        await watcher.receive_swap("typing")
    group = f"room-{room.pk}"
    assert captured.summary() == [f"room.presence -> {group}", f"room.typing -> {group}"]
    here = captured.one(events.PRESENCE).fragment().target("presence")
    assert [li.get_text() for li in here.select("li")] == ["alice", "bob"]


def test_broadcasts_fixture_captures_the_whole_test(broadcasts, room, alice):
    post_message(room, alice, "one")
    post_message(room, alice, "two")
    frames = broadcasts.to(room).of_type(events.MESSAGE).fragments()
    assert [f.target("last-seq").element["value"] for f in frames] == ["1", "2"]


# Rendering an event as a socket does


def test_a_mention_toasts_on_other_pages_only(room, bob):
    message = {**fragments.SAMPLE_MESSAGE, "body": "hi @bob"}
    event = events.mention_event(bob.pk, room.title, room.slug, message)
    viewer = Viewer(user_id=bob.pk)
    assert render_event(event, viewer, room) == []  # the message itself shows it here
    [toast] = render_event(event, viewer)
    assert Fragment(toast).target("toasts").select("a")[0]["href"] == room.get_absolute_url()
