"""Presence and typing, seen through room sockets, on a clock the tests move by hand."""

import pytest
from channels.db import database_sync_to_async

from rooms import events
from rooms.clock import ManualClock

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def live_clock():
    return ManualClock()


async def present(socket) -> list[str]:
    """The names in the next presence list the socket receives."""
    fragment = await socket.receive_fragment(skip=())
    return [li.get_text() for li in fragment.target("presence").select("li:not(.empty)")]


async def typing_text(socket) -> str:
    fragment = await socket.receive_fragment()  # passes over presence and connection
    return fragment.target("typing").text()


# Presence


async def test_a_new_socket_gets_the_presence_list(room_socket, room, alice):
    socket = await room_socket(room, user=alice, last_seq=None)
    assert await present(socket) == ["alice"]


async def test_others_see_a_user_arrive(room_socket, room, alice, bob):
    watcher = await room_socket(room, user=bob, last_seq=None)
    assert await present(watcher) == ["bob"]
    await room_socket(room, user=alice)
    assert await present(watcher) == ["alice", "bob"]


async def test_anonymous_readers_are_not_listed(room_socket, room, bob):
    watcher = await room_socket(room, user=bob, last_seq=None)
    await present(watcher)
    await room_socket(room)
    await watcher.assert_nothing_received(skip=())


async def test_a_user_with_three_tabs_is_listed_once(room_socket, room, alice, bob):
    watcher = await room_socket(room, user=bob, last_seq=None)
    await present(watcher)
    for _ in range(3):
        await room_socket(room, user=alice)
    assert await present(watcher) == ["alice", "bob"]
    await watcher.assert_nothing_received(skip=())


async def test_a_user_leaves_when_their_last_tab_closes(room_socket, room, alice, bob):
    watcher = await room_socket(room, user=bob, last_seq=None)
    await present(watcher)
    tabs = [await room_socket(room, user=alice) for _ in range(2)]
    assert await present(watcher) == ["alice", "bob"]
    await tabs[0].disconnect()
    await watcher.assert_nothing_received(skip=())
    await tabs[1].disconnect()
    assert await present(watcher) == ["bob"]


# Typing


async def test_typing_shows_to_the_others(room_socket, room, alice, bob):
    typist = await room_socket(room, user=alice)
    reader = await room_socket(room, user=bob)
    await typist.type()
    assert await typing_text(reader) == "alice is typing…"


async def test_typing_is_never_shown_to_the_typist(room_socket, room, alice):
    typist = await room_socket(room, user=alice)
    await typist.type()
    await typist.assert_nothing_received()


async def test_typing_is_published_once_per_throttle_window(
    room_socket, room, alice, bob, broadcasts, live_clock, settings
):
    first_tab = await room_socket(room, user=alice)
    second_tab = await room_socket(room, user=alice)
    reader = await room_socket(room, user=bob)
    await first_tab.type()
    assert await typing_text(reader) == "alice is typing…"
    live_clock.advance(settings.ROOMCAST_TYPING_THROTTLE - 0.5)
    await first_tab.type()
    await second_tab.type()
    await reader.assert_nothing_received()
    assert len(broadcasts.of_type(events.TYPING)) == 1


async def test_typing_is_published_again_after_the_throttle_window(
    room_socket, room, alice, bob, broadcasts, live_clock, settings
):
    typist = await room_socket(room, user=alice)
    reader = await room_socket(room, user=bob)
    await typist.type()
    await typing_text(reader)
    live_clock.advance(settings.ROOMCAST_TYPING_THROTTLE + 0.1)
    await typist.type()
    await reader.assert_nothing_received()  # still typing: the list did not change
    assert len(broadcasts.of_type(events.TYPING)) == 2


async def test_typing_stays_until_the_timeout(room_socket, room, alice, bob, live_clock, settings):
    typist = await room_socket(room, user=alice)
    reader = await room_socket(room, user=bob)
    await typist.type()
    await typing_text(reader)
    live_clock.advance(settings.ROOMCAST_TYPING_TIMEOUT - 0.1)
    await reader.assert_nothing_received()


async def test_typing_disappears_by_itself(room_socket, room, alice, bob, live_clock, settings):
    typist = await room_socket(room, user=alice)
    reader = await room_socket(room, user=bob)
    await typist.type()
    assert await typing_text(reader) == "alice is typing…"
    live_clock.advance(settings.ROOMCAST_TYPING_TIMEOUT + 0.1)
    assert await typing_text(reader) == ""


async def test_typing_disappears_when_the_message_is_posted(room_socket, room, alice, bob):
    typist = await room_socket(room, user=alice)
    reader = await room_socket(room, user=bob)
    await typist.type()
    await typing_text(reader)
    await typist.post("done typing")
    # The message and the cleared list leave together (one frame) or one after the other.
    assert (await reader.receive_swap("typing")).text() == ""


async def test_two_typists_are_listed_together(room_socket, room, alice, bob, make_user):
    carol = await database_sync_to_async(make_user)("carol")
    reader = await room_socket(room, user=carol)
    for user in (alice, bob):
        await (await room_socket(room, user=user)).type()
    await typing_text(reader)
    assert await typing_text(reader) == "alice, bob are typing…"


async def test_the_live_page_signals_typing_without_form_fields(room_socket, room, alice):
    socket = await room_socket(room, user=alice, last_seq=None)
    await socket.send_form("sync", action="sync", last_seq="0", live="0")
    signal = (await socket.receive_fragment()).target("typing-signal").element
    # Outside the form, so the ws extension sends only hx-vals (it cannot apply hx-params).
    assert signal.find_parent("form") is None and not signal.has_attr("hx-params")
    assert (signal["hx-trigger"], signal["hx-vals"]) == (
        "input changed throttle:2s from:#room",
        '{"action": "typing"}',
    )
