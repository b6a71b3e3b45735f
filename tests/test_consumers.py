"""The room socket, driven through the full stack (origin check, auth, routing)."""

import asyncio
import json
import logging
from unittest import mock

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import OperationalError

from rooms import consumers, events, fragments, metrics, outbox
from rooms.clock import ManualClock
from rooms.models import Message, post_message
from rooms.testing import RoomSocket, communicator_for

pytestmark = pytest.mark.django_db(transaction=True)

store = database_sync_to_async(post_message)


@database_sync_to_async
def stored_bodies(room) -> list[str]:
    return list(Message.objects.filter(room=room).order_by("seq").values_list("body", flat=True))


def store_unpublished(room, author, body):
    """Store a message whose live event is lost on the way (as when Redis drops it)."""
    with mock.patch("rooms.events.publish_message"):
        return post_message(room, author, body)


def bodies(fragment) -> list[str]:
    return [p.get_text() for p in fragment.target("messages").select(".message .body")]


# Connecting


async def test_connect_anonymous_to_public_room(room_socket, room):
    socket = await room_socket(room)
    await socket.assert_nothing_received()


async def test_connect_unknown_room_closes_with_application_code(ws_application, room):
    room.slug = "no-such-room"
    communicator = WebsocketCommunicator(
        ws_application, room.socket_path(), headers=[(b"origin", b"http://testserver")]
    )
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_output())["code"] == consumers.CLOSE_UNKNOWN_ROOM


async def test_connect_foreign_origin_is_refused(ws_application, room):
    communicator = WebsocketCommunicator(
        ws_application, room.socket_path(), headers=[(b"origin", b"http://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected


async def test_disconnect_leaves_no_hub_state_or_groups(room_socket, room, fanout_hub):
    socket = await room_socket(room)
    await socket.disconnect()
    assert (fanout_hub.groups, fanout_hub.seqs, fanout_hub.socket_keys) == ({}, {}, {})
    assert fanout_hub.tracker.entries == {}
    assert fanout_hub.layer.groups == {}


# Posting


async def test_post_reaches_every_socket_in_the_room(room_socket, room, alice, bob):
    sender = await room_socket(room, user=alice)
    reader = await room_socket(room, user=bob)
    await sender.post("hello")
    fragment = await reader.receive_fragment()
    assert fragment.target("messages").swap == "beforeend"
    assert bodies(fragment) == ["hello"]


async def test_a_frame_makes_no_extra_thread_hop_before_its_handler(room_socket, room, alice):
    # Channels' dispatch hops to the shared database thread before every handler; ours
    # leaves that to database_sync_to_async, so posts do not queue behind each other's hop.
    sender = await room_socket(room, user=alice)
    with mock.patch("channels.consumer.aclose_old_connections") as hop:
        await sender.post("hello")
        await sender.receive_fragment()
    assert hop.call_count == 0
    assert await stored_bodies(room) == ["hello"]


async def test_post_from_the_several_lines_composer_keeps_its_line_breaks(room_socket, room, alice):
    sender = await room_socket(room, user=alice)
    await sender.post_lines("first line\nsecond line")
    swap = await sender.receive_swap("messages")
    assert swap.select(".body")[0].get_text() == "first line\nsecond line"


async def test_post_from_the_several_lines_composer_resets_that_composer_only(
    room_socket, room, alice
):
    sender = await room_socket(room, user=alice)
    await sender.post_lines("two\nlines")
    reset = await sender.receive_swap("lines-input")
    assert reset.element.name == "textarea" and reset.element.get_text() == ""
    await sender.post("one line")
    assert (await sender.receive_swap("message-input")).element.get("value") is None


async def test_post_from_the_one_line_composer_leaves_the_several_lines_draft(
    room_socket, room, alice
):
    sender = await room_socket(room, user=alice)
    await sender.post("one line")
    fragment = await sender.receive_fragment()
    while not fragment.has_target("message-input"):
        fragment = await sender.receive_fragment()
    assert not fragment.has_target("lines-input")


async def test_post_moves_the_page_sync_point(room_socket, room, alice):
    reader = await room_socket(room)
    sender = await room_socket(room, user=alice)
    await sender.post("hello")
    fragment = await reader.receive_fragment()
    assert fragment.target("last-seq").element["value"] == "1"


async def test_post_is_stored(room_socket, room, alice):
    sender = await room_socket(room, user=alice)
    await sender.post("hello")
    await sender.receive_fragment()
    assert await stored_bodies(room) == ["hello"]


async def test_post_clears_the_senders_input(room_socket, room, alice):
    sender = await room_socket(room, user=alice)
    await sender.post("hello")
    fragments = [await sender.receive_fragment(), await sender.receive_fragment()]
    reset = next(f for f in fragments if f.has_target("message-input"))
    assert reset.target("message-input").element.get("value") is None
    assert reset.target("message-input").element.has_attr("autofocus")
    assert reset.target("message-error").text() == ""


async def test_post_reaches_sender_too(room_socket, room, alice):
    sender = await room_socket(room, user=alice)
    await sender.post("hello")
    fragments = [await sender.receive_fragment(), await sender.receive_fragment()]
    pushed = next(f for f in fragments if f.has_target("messages"))
    assert bodies(pushed) == ["hello"]


async def test_post_does_not_reach_other_rooms(room_socket, room, make_room, alice):
    other = await database_sync_to_async(make_room)("Other")
    elsewhere = await room_socket(other)
    sender = await room_socket(room, user=alice)
    await sender.post("hello")
    await sender.receive_fragment()
    await elsewhere.assert_nothing_received()


async def test_post_is_escaped(room_socket, room, alice):
    reader = await room_socket(room)
    sender = await room_socket(room, user=alice)
    await sender.post("<script>alert(1)</script>")
    fragment = await reader.receive_fragment()
    assert fragment.select("script") == []
    assert bodies(fragment) == ["<script>alert(1)</script>"]


async def test_post_push_matches_page_render(room_socket, room, alice, client):
    reader = await room_socket(room)
    sender = await room_socket(room, user=alice)
    await sender.post("same source")
    pushed = (await reader.receive_fragment()).target("messages").select("article")[0]
    page = await database_sync_to_async(client.get)(room.get_absolute_url())
    from bs4 import BeautifulSoup

    rendered = BeautifulSoup(page.content, "html.parser").select_one("#messages article")
    assert pushed == rendered


# Refusals and bad input: an error next to the form, nothing stored, the socket usable


async def test_post_anonymous_is_refused(room_socket, room):
    socket = await room_socket(room)
    await socket.post("hello")
    fragment = await socket.receive_fragment()
    assert fragment.target("message-error").text() == "Log in to post messages."
    assert await stored_bodies(room) == []


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("not json", "Could not read that: the frame is not JSON."),
        ("[1, 2]", "Could not read that: the frame is not a JSON object of form fields."),
        ('"text"', "Could not read that: the frame is not a JSON object of form fields."),
        ("{}", "Write a message before sending."),
        ('{"message": "   "}', "Write a message before sending."),
        ('{"message": ""}', "Write a message before sending."),
        ('{"message": 42}', "A message must be text."),
        ('{"message": ["a"]}', "A message must be text."),
        ('{"message": "a\\u0000b"}', "Null characters are not allowed."),
        (
            json.dumps({"message": "x" * 4001}),
            "Messages can be at most 4000 characters (this one has 4001).",
        ),
        ("x" * 40_000, f"That frame is too large (more than {consumers.MAX_FRAME_BYTES} bytes)."),
        ("[" * 20_000, "Could not read that: the frame is not JSON."),
        (
            '{"message": "a\\ud800b"}',
            "That message holds characters that are not valid text (a lone surrogate).",
        ),
    ],
    ids=[
        "not-json",
        "array",
        "string",
        "no-message",
        "blank",
        "empty",
        "number",
        "list",
        "nul",
        "over-limit",
        "huge-frame",
        "nested-too-deep",
        "lone-surrogate",
    ],
)
async def test_bad_frame_shows_error_and_stores_nothing(room_socket, room, alice, frame, error):
    socket = await room_socket(room, user=alice)
    await socket.send_text(frame)
    fragment = await socket.receive_fragment()
    assert fragment.target("message-error").text() == error
    assert await stored_bodies(room) == []


async def test_binary_frame_shows_error(room_socket, room, alice):
    socket = await room_socket(room, user=alice)
    await socket.send_bytes(b'{"message": "hi"}')
    fragment = await socket.receive_fragment()
    assert (
        fragment.target("message-error").text()
        == "Binary frames are not accepted: send the form as text."
    )
    assert await stored_bodies(room) == []


async def test_bad_frame_broadcasts_nothing(room_socket, room, alice):
    reader = await room_socket(room)
    sender = await room_socket(room, user=alice)
    await sender.send_text("not json")
    await reader.assert_nothing_received()


async def test_message_at_the_limit_is_accepted(room_socket, room, alice):
    socket = await room_socket(room, user=alice)
    await socket.post("x" * 4000)
    await socket.receive_fragment()
    assert await stored_bodies(room) == ["x" * 4000]


async def test_socket_usable_after_bad_frame(room_socket, room, alice):
    socket = await room_socket(room, user=alice)
    await socket.send_text("not json")
    await socket.receive_fragment()
    await socket.post("still here")
    await socket.receive_fragment()
    assert await stored_bodies(room) == ["still here"]


async def test_bad_sync_report_shows_error(room_socket, room):
    socket = await room_socket(room, last_seq=None)
    await socket.send_text('{"last_seq": "minus one"}')
    fragment = await socket.receive_fragment()
    assert fragment.target("message-error").text() == "Could not sync this page: reload it."


# Nothing lost: catch-up on (re)connect and after a gap


async def test_connect_sends_what_the_page_missed(room_socket, room, alice):
    for body in ("a", "b", "c"):
        await store(room, alice, body)
    socket = await room_socket(room, last_seq=1)
    fragment = await socket.receive_fragment()
    assert bodies(fragment) == ["b", "c"]
    assert fragment.target("last-seq").element["value"] == "3"


async def test_connect_up_to_date_page_gets_nothing(room_socket, room, alice):
    await store(room, alice, "a")
    socket = await room_socket(room, last_seq=1)
    await socket.assert_nothing_received()


async def test_reconnect_sees_each_missed_message_once(room_socket, room, alice):
    sender = await room_socket(room, user=alice)
    page = await room_socket(room)
    await sender.post("before")
    last_seq = int((await page.receive_fragment()).target("last-seq").element["value"])
    await page.disconnect()
    for body in ("while", "offline"):
        await sender.post(body)
    page = await room_socket(room, last_seq=last_seq)
    assert bodies(await page.receive_fragment()) == ["while", "offline"]
    await sender.post("after")
    assert bodies(await page.receive_fragment()) == ["after"]
    await page.assert_nothing_received()


async def test_events_before_sync_report_are_delivered_once(room_socket, room, alice):
    page = await room_socket(room, last_seq=None)
    sender = await room_socket(room, user=alice)
    await sender.post("early")
    await sender.receive_fragment()
    await sender.receive_fragment()
    await page.sync(0)
    assert bodies(await page.receive_fragment()) == ["early"]
    await page.assert_nothing_received()


async def test_far_behind_page_gets_latest_history_instead(room_socket, room, alice, settings):
    settings.ROOMCAST_CATCHUP_LIMIT = 2
    for body in ("a", "b", "c", "d"):
        await store(room, alice, body)
    socket = await room_socket(room, last_seq=0)
    fragment = await socket.receive_fragment()
    assert fragment.target("messages").swap == "true"
    assert bodies(fragment) == ["a", "b", "c", "d"]


async def test_page_ahead_of_room_gets_latest_history(room_socket, room, alice):
    await store(room, alice, "a")
    socket = await room_socket(room, last_seq=99)
    fragment = await socket.receive_fragment()
    assert fragment.target("messages").swap == "true"
    assert fragment.target("last-seq").element["value"] == "1"


async def test_gap_in_sequence_is_filled_from_database(room_socket, room, alice, bob):
    sender = await room_socket(room, user=alice)
    page = await room_socket(room)
    await sender.post("one")
    await page.receive_fragment()
    await database_sync_to_async(store_unpublished)(room, bob, "lost on the way")
    await sender.post("three")
    # The hub fills the gap once for the process: one frame brings both, in order.
    assert bodies(await page.receive_fragment()) == ["lost on the way", "three"]
    await page.assert_nothing_received()


async def test_gap_on_first_event_catches_socket_up(room_socket, room, alice, bob):
    page = await room_socket(room)
    await database_sync_to_async(store_unpublished)(room, bob, "lost on the way")
    sender = await room_socket(room, user=alice, last_seq=1)
    await sender.post("two")
    received = [await page.receive_fragment(), await page.receive_fragment()]
    assert [b for f in received for b in bodies(f)] == ["lost on the way", "two"]
    await page.assert_nothing_received()


# Outages and odd input: answered, never 1011


async def test_post_while_the_database_is_down_says_not_saved(room_socket, room, alice):
    socket = await room_socket(room, user=alice)
    with mock.patch.object(consumers, "post_as", side_effect=OperationalError("db is down")):
        await socket.post("hello")
        fragment = await socket.receive_fragment()
    assert fragment.target("message-error").text() == consumers.NOT_SAVED
    assert await stored_bodies(room) == []


async def test_socket_stays_usable_after_the_database_returns(room_socket, room, alice):
    socket = await room_socket(room, user=alice)
    with mock.patch.object(consumers, "post_as", side_effect=OperationalError("db is down")):
        await socket.post("lost")
        await socket.receive_fragment()
    await socket.post("saved")
    swap = await socket.receive_swap("messages")
    assert [p.get_text() for p in swap.select(".message .body")] == ["saved"]


async def test_anonymous_save_asks_to_log_in(room_socket, room, alice):
    message = await store(room, alice, "mine")
    socket = await room_socket(room, last_seq=message.seq)
    await socket.save(message.pk, "not yours")
    fragment = await socket.receive_fragment()
    assert fragment.targets() == ["message-error"]
    assert fragment.target("message-error").text() == consumers.LOG_IN_TO_EDIT
    await socket.assert_nothing_received()


async def test_unknown_socket_path_is_closed_with_4404(ws_application):
    communicator = WebsocketCommunicator(
        ws_application, "/ws/no/such/path/", headers=[(b"origin", b"http://testserver")]
    )
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_output())["code"] == consumers.CLOSE_NOT_FOUND


# Revocation: every socket kind of the user closes with the reason


async def test_revoked_user_room_socket_shows_reason_and_closes(room_socket, room, alice):
    page = await room_socket(room, user=alice)
    await events.apublish(*revoked(alice))
    assert page_notice(await page.receive_fragment()) == "You signed out in another tab."
    assert await page.receive_close() == consumers.CLOSE_REVOKED


async def test_revoked_user_other_pages_close(user_socket, ws_application, alice):
    elsewhere = await user_socket(alice)
    dashboard = RoomSocket(await communicator_for(ws_application, "/ws/dashboard/", alice))
    await dashboard.connect(last_seq=None)
    await events.apublish(*revoked(alice))
    for socket in (elsewhere, dashboard):
        while socket.connected:
            message = await socket._next(2)
            socket._note_close(message)
        assert socket.close_code == consumers.CLOSE_REVOKED


async def test_revoking_one_user_leaves_others_open(room_socket, room, alice, bob):
    page = await room_socket(room, user=bob)
    await events.apublish(*revoked(alice))
    await page.assert_nothing_received()
    assert page.connected


def revoked(user) -> tuple[str, dict]:
    event = events.user_revoked_event(user.pk, "You signed out in another tab.")
    return event["group"], event


def page_notice(fragment) -> str:
    return fragment.target("toasts").text()


# Socket logs and metrics


async def test_open_and_close_are_logged_with_fields(room_socket, room, alice, caplog):
    caplog.set_level(logging.INFO, logger="rooms.sockets")
    page = await room_socket(room, user=alice)
    await page.disconnect()
    opened, closed = [r for r in caplog.records if r.name == "rooms.sockets"]
    assert (opened.kind, opened.room, opened.user) == ("room", room.slug, alice.pk)
    assert (closed.room, closed.user, closed.code) == (room.slug, alice.pk, 1000)
    assert closed.duration >= 0


async def test_frames_sent_are_counted(room_socket, room, alice):
    before = metrics.FRAMES_SENT.labels("room")._value.get()
    reader = await room_socket(room)
    sender = await room_socket(room, user=alice)
    await sender.post("counted")
    await reader.receive_swap("messages")
    outbox.flush_counts()  # (the hub does this every heartbeat)
    assert metrics.FRAMES_SENT.labels("room")._value.get() > before


# Batched frames


async def test_events_waiting_for_a_socket_leave_as_one_frame(room_socket, room, alice):
    page = await room_socket(room, last_seq=None)
    for body in ("one", "two", "three"):
        await store(room, alice, body)
    await page.sync(0)  # the catch-up, then everything else waiting, in one frame
    fragment = await page.receive_fragment()
    assert bodies_in_all_swaps(fragment) == ["one", "two", "three"]
    await page.assert_nothing_received()


def bodies_in_all_swaps(fragment) -> list[str]:
    return [p.get_text() for p in fragment.select("#messages .message .body")]


# The hub's periodic work, on a clock the test moves


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.mark.parametrize("live_clock", [ManualClock()])
async def test_access_recheck_closes_a_member_whose_removal_was_lost(
    room_socket, make_room, alice, bob, live_clock, settings
):
    secret = await database_sync_to_async(make_room)("Secret", is_private=True, owner=alice)
    await database_sync_to_async(secret.members.add)(bob)
    owner = await room_socket(secret, user=alice)
    member = await room_socket(secret, user=bob)
    await database_sync_to_async(secret.members.remove)(bob)  # no event reaches anyone
    await settle()
    live_clock.advance(settings.ROOMCAST_ACCESS_RECHECK)
    assert (await member.receive_fragment()).target("room").text().startswith("You were removed")
    assert await member.receive_close() == consumers.CLOSE_FORBIDDEN
    await owner.assert_nothing_received()


@pytest.mark.parametrize("live_clock", [ManualClock()])
async def test_connection_status_is_rendered_once_per_beat_for_every_socket(
    room_socket, room, live_clock, settings, monkeypatch
):
    renders = []

    def connection_status() -> str:
        renders.append(1)
        return '<div id="connection" hx-swap-oob="true">live</div>'

    monkeypatch.setattr(fragments, "connection_status", connection_status, raising=False)
    pages = [await room_socket(room, last_seq=None) for _ in range(3)]
    await settle()
    live_clock.advance(settings.ROOMCAST_LIVE_BEAT)
    for page in pages:
        assert (await page.receive_swap("connection")).text() == "live"
    assert len(renders) == 1
