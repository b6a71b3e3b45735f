"""The live home page (issue 13): the room list's socket (`/ws/me/?unread=1`) moves a room with
news first, shows its last message, time and the reader's unread count, lists rooms the user
may now see, and drops rooms they may no longer see."""

import asyncio
import threading
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from rooms import actions, consumers, events, fragments
from rooms.consumers import UserConsumer
from rooms.models import Profile, Room, post_message
from rooms.testing import capture_broadcasts

pytestmark = pytest.mark.django_db(transaction=True)

post = database_sync_to_async(post_message)
create_room = database_sync_to_async(actions.create_room)
add_member = database_sync_to_async(actions.add_member)
remove_member = database_sync_to_async(actions.remove_member)
mark_read = database_sync_to_async(actions.mark_read)


@pytest.fixture
def home_socket(user_socket, fanout_hub):
    """Open a user's socket and wait until it hears its groups: the home page's
    (`unread`) once it sent the whole list, which it sends after joining them."""

    async def open_home(user, unread=True):
        socket = await user_socket(user, unread=unread)
        if unread:
            assert (await socket.receive_fragment()).target("room-list").swap == "true"
            return socket
        for _ in range(400):  # the handshake is accepted before the socket joins its groups
            if all(s.opened_at for s in fanout_hub.sockets(events.user_group(user.pk))):
                return socket
            await asyncio.sleep(0.005)
        raise AssertionError("the socket did not join its groups")

    return open_home


async def entry_and_badge(socket, room):
    """The next pushed entry of `room` (moved first) and the badge that follows it."""
    while not (frame := await socket.receive_fragment()).has_target(f"room-{room.pk}"):
        pass  # a frame of something else (the inbox, the bell)
    (item,) = frame.target("room-list").select(f"li#room-{room.pk}")
    return item, frame.target(f"unread-{room.pk}")


# The whole list when the socket opens ---------------------------------------------------


async def test_the_home_socket_sends_the_list_as_it_is_when_it_opens(
    user_socket, make_room, alice, bob
):
    """A page whose socket reopens gets what it missed while it was away."""
    quiet = await database_sync_to_async(make_room)("Quiet", messages=[(bob, "old")])
    busy = await database_sync_to_async(make_room)("Busy", messages=[(bob, "new")])
    socket = await user_socket(alice, unread=True)
    listing = (await socket.receive_fragment()).target("room-list")
    items = listing.select(".room-item")
    assert [i["id"] for i in items] == [f"room-{busy.pk}", f"room-{quiet.pk}"]
    assert items[0].select_one(".last").get_text(" ", strip=True) == "bob: new"
    assert items[0].select_one(f"#unread-{busy.pk}").get_text() == "1"


async def test_a_page_without_the_room_list_is_sent_no_list(home_socket, room, alice):
    other_page = await home_socket(alice, unread=False)
    await other_page.assert_nothing_received()


# A message moves its room first ----------------------------------------------------------


async def test_a_message_moves_its_room_first_with_the_message(home_socket, room, alice, bob):
    home = await home_socket(alice)
    await post(room, bob, "fresh news")
    frame = await home.receive_fragment()
    assert [(s.id, s.swap) for s in frame.swaps] == [
        (f"room-{room.pk}", "delete"),
        ("room-list", "afterbegin"),
        (f"unread-{room.pk}", "true"),
    ]
    (item,) = frame.target("room-list").select(f"li#room-{room.pk}")
    assert item.select_one(".last").get_text(" ", strip=True) == "bob: fresh news"


async def test_a_message_from_someone_else_counts_as_unread(home_socket, room, alice, bob):
    home = await home_socket(alice)
    await post(room, bob, "one")
    await entry_and_badge(home, room)
    await post(room, bob, "two")
    _, badge = await entry_and_badge(home, room)
    assert badge.text() == "2"


async def test_the_readers_own_message_moves_the_room_without_counting(home_socket, room, alice):
    home = await home_socket(alice)
    await post(room, alice, "mine")
    item, badge = await entry_and_badge(home, room)
    assert item.select_one(".last").get_text(" ", strip=True) == "alice: mine"
    assert badge.text() == "0"


async def test_the_entry_shows_the_time_in_the_readers_time_zone(home_socket, room, alice, bob):
    await database_sync_to_async(Profile.objects.create)(user=alice, time_zone="Asia/Tokyo")
    home = await home_socket(alice)
    message = await post(room, bob, "late")
    item, _ = await entry_and_badge(home, room)
    tokyo = message.created.astimezone(fragments.zone("Asia/Tokyo"))
    assert item.select_one("time").get_text() == f"{tokyo.day} {tokyo:%b, %H:%M}"


async def test_the_entry_is_rendered_once_per_event_for_readers_in_one_time_zone(
    home_socket, room, alice, bob, carol
):
    homes = [await home_socket(alice), await home_socket(carol)]
    with mock.patch.object(fragments, "room_list_item", wraps=fragments.room_list_item) as rendered:
        await post(room, bob, "news")
        for home in homes:
            await home.receive_swap("room-list")
    assert rendered.call_count == 1


async def test_the_badge_is_rendered_once_per_event_for_readers_with_one_count(
    home_socket, room, alice, carol, bob
):
    homes = [await home_socket(alice), await home_socket(carol)]
    with mock.patch.object(fragments, "unread_badge", wraps=fragments.unread_badge) as rendered:
        await post(room, bob, "news")
        for home in homes:
            assert (await home.receive_swap(f"unread-{room.pk}")).text() == "1"
    assert rendered.call_count == 1


def test_delivering_a_message_to_the_room_list_queries_nothing(
    django_assert_num_queries, room, alice, bob
):
    socket = UserConsumer()
    socket.user, socket.unread, socket.lists_rooms = alice, {room.pk: 0}, True
    socket.listed = {room.pk: {"id": room.pk, "title": room.title, "url": "/", "is_private": False}}
    socket.outbox.put = mock.Mock()
    message = post_message(room, bob, "news")
    with django_assert_num_queries(0):
        socket.deliver(events.message_event(room.pk, message.as_event()), {})
    assert socket.outbox.put.call_count == 2  # the entry, then the badge


async def test_a_page_without_the_room_list_gets_no_entries(home_socket, room, alice, bob):
    other_page = await home_socket(alice, unread=False)
    await post(room, bob, "news")
    await other_page.assert_nothing_received()


async def test_deleting_the_last_message_changes_the_entry_where_it_stands(
    home_socket, room, alice, bob
):
    home = await home_socket(alice)
    message = await post(room, bob, "oops, wrong room")
    await entry_and_badge(home, room)
    await database_sync_to_async(actions.delete_message)(room, bob, message.pk)
    frame = await home.receive_fragment()
    entry = frame.target(f"room-{room.pk}")
    assert entry.swap == "true"
    assert "oops" not in entry.text()
    assert entry.element.select_one(".last em").get_text() == "deleted message"
    # The count is read again (a deleted message is not unread), and the entry's badge waits.
    assert [s.text() for s in frame.swaps if s.id == f"unread-{room.pk}"] == ["0", "0"]


async def test_editing_an_earlier_message_leaves_the_entry_alone(home_socket, room, alice, bob):
    home = await home_socket(alice)
    earlier = await post(room, bob, "first")
    await entry_and_badge(home, room)
    await post(room, bob, "second")
    await entry_and_badge(home, room)
    await database_sync_to_async(actions.edit_message)(room, bob, earlier.pk, "first!")
    await home.assert_nothing_received()


# New rooms appear for those who may see them ----------------------------------------------


def test_creating_a_public_room_lists_it_on_every_page(alice):
    with capture_broadcasts() as captured:
        room = actions.create_room(alice, "Garden")
    event = captured.one(events.ROOM_VISIBLE).event
    assert (event["group"], event["room"]["id"], event["room"]["title"]) == (
        events.SITE_GROUP,
        room.pk,
        "Garden",
    )


def test_creating_a_private_room_lists_it_for_its_owner_only(alice):
    with capture_broadcasts() as captured:
        actions.create_room(alice, "Secret", is_private=True)
    assert captured.of_type(events.ROOM_VISIBLE).summary() == [
        f"{events.ROOM_VISIBLE} -> {events.user_group(alice.pk)}"
    ]


async def test_a_room_someone_creates_appears_on_the_home_page(home_socket, alice, bob):
    home = await home_socket(alice)
    room = await create_room(bob, "Garden")
    item, badge = await entry_and_badge(home, room)
    assert item.select_one(".room-title").get_text() == "Garden"
    assert item.select_one(".last").get_text() == "No messages yet"
    assert badge.text() == "0"


async def test_a_new_room_on_the_home_page_stays_live(home_socket, alice, bob):
    home = await home_socket(alice)
    room = await create_room(bob, "Garden")
    await entry_and_badge(home, room)
    await asyncio.sleep(0.05)  # the socket joins the new room's group
    await post(room, bob, "first")
    item, badge = await entry_and_badge(home, room)
    assert item.select_one(".last").get_text(" ", strip=True) == "bob: first"
    assert badge.text() == "1"


async def test_a_private_room_someone_creates_is_not_listed_for_others(home_socket, alice, bob):
    home = await home_socket(alice)
    await create_room(bob, "Secret", is_private=True)
    await home.assert_nothing_received()


async def test_a_private_room_appears_for_its_owner(home_socket, alice):
    home = await home_socket(alice)
    room = await create_room(alice, "Secret", is_private=True)
    item, _ = await entry_and_badge(home, room)
    assert item.select_one(".room-title.is-private").get_text() == "Secret"


async def test_a_new_member_sees_the_room_with_its_last_message_and_unread_count(
    home_socket, make_room, alice, bob
):
    room = await database_sync_to_async(make_room)(
        "Plans", is_private=True, owner=bob, messages=[(bob, "one"), (bob, "two")]
    )
    home = await home_socket(alice)
    await add_member(room, bob, alice)
    item, badge = await entry_and_badge(home, room)
    assert item.select_one(".last").get_text(" ", strip=True) == "bob: two"
    assert badge.text() == "2"


async def test_a_new_members_home_page_stays_live_in_the_room(home_socket, make_room, alice, bob):
    room = await database_sync_to_async(make_room)("Plans", is_private=True, owner=bob)
    home = await home_socket(alice)
    await add_member(room, bob, alice)
    await entry_and_badge(home, room)
    await asyncio.sleep(0.05)  # the socket joins the room's group
    await post(room, bob, "welcome")
    _, badge = await entry_and_badge(home, room)
    assert badge.text() == "1"


async def test_a_non_member_never_gets_a_private_rooms_entry(
    home_socket, make_room, alice, bob, carol
):
    room = await database_sync_to_async(make_room)("Plans", is_private=True, owner=bob)
    home = await home_socket(alice)
    await add_member(room, bob, carol)
    await post(room, bob, "members only")
    await home.assert_nothing_received()


async def test_a_private_rooms_entry_naming_someone_else_is_dropped(
    home_socket, fanout_hub, make_room, alice, bob
):
    """Fail closed: even an event that reached the wrong user's group lists nothing."""
    room = await database_sync_to_async(make_room)("Plans", is_private=True, owner=bob)
    home = await home_socket(alice)
    item = {"id": room.pk, "title": "Plans", "url": "/rooms/plans/", "is_private": True,
            "last": None}  # fmt: skip
    await fanout_hub.publish(events.room_visible_event(events.user_group(alice.pk), item, bob.pk))
    await home.assert_nothing_received()


# Rooms the user may no longer see leave ---------------------------------------------------


async def test_a_removed_member_loses_the_room_from_the_home_page(
    home_socket, make_room, alice, bob
):
    room = await database_sync_to_async(make_room)("Plans", is_private=True, owner=bob)
    await database_sync_to_async(room.members.add)(alice)
    home = await home_socket(alice)
    await remove_member(room, bob, alice)
    gone = await home.receive_swap(f"room-{room.pk}")
    assert gone.swap == "delete"


async def test_a_removed_member_hears_nothing_more_of_the_room(home_socket, make_room, alice, bob):
    room = await database_sync_to_async(make_room)("Plans", is_private=True, owner=bob)
    await database_sync_to_async(room.members.add)(alice)
    home = await home_socket(alice)
    await remove_member(room, bob, alice)
    await home.receive_swap(f"room-{room.pk}")
    await asyncio.sleep(0.05)  # the socket leaves the room's group
    await post(room, bob, "after you left")
    await home.assert_nothing_received(skip=("inbox", "bell", "connection"))


async def test_an_access_recheck_that_leaves_the_user_out_drops_the_room(
    home_socket, fanout_hub, make_room, alice, bob
):
    room = await database_sync_to_async(make_room)("Plans", is_private=True, owner=bob)
    await database_sync_to_async(room.members.add)(alice)
    home = await home_socket(alice)
    await fanout_hub.publish(events.access_event(room.pk, [bob.pk]))
    assert (await home.receive_swap(f"room-{room.pk}")).swap == "delete"


# Unread counts read in another tab ------------------------------------------------------------


async def test_reading_the_room_in_another_tab_clears_the_count(
    home_socket, room_socket, room, alice, bob
):
    home = await home_socket(alice)
    message = await post(room, bob, "news")
    await entry_and_badge(home, room)
    await room_socket(room, user=alice, last_seq=message.seq - 1)  # alice reads it elsewhere
    assert (await home.receive_swap(f"unread-{room.pk}")).text() == "0"


async def test_a_message_in_a_room_open_in_another_tab_does_not_count(
    home_socket, room_socket, room, alice, bob
):
    """Her room tab shows it and marks it read within seconds: no count meanwhile."""
    home = await home_socket(alice)
    await room_socket(room, user=alice)
    await post(room, bob, "seen at once")
    item, badge = await entry_and_badge(home, room)
    assert item.select_one(".last").get_text(" ", strip=True) == "bob: seen at once"
    assert badge.text() == "0"


async def test_a_message_that_crosses_a_read_is_still_counted(home_socket, room, alice, bob):
    """alice reads up to bob's first message in another tab while his second one arrives:
    the count read for the first read must not lose the second."""
    home = await home_socket(alice)
    first = await post(room, bob, "one")
    await entry_and_badge(home, room)
    release, reading = threading.Event(), threading.Event()
    real = consumers.unread_snapshot

    def slow_snapshot(user, room_id):
        counted = real(user, room_id)  # read before bob's second message is stored
        reading.set()
        release.wait(5)
        return counted

    with mock.patch.object(consumers, "unread_snapshot", slow_snapshot):
        await mark_read(alice, room, first.seq)
        # Plain threads: the socket's read holds the database thread until released.
        await asyncio.to_thread(reading.wait, 5)
        await sync_to_async(post_message, thread_sensitive=False)(room, bob, "two")
        await asyncio.sleep(0.05)  # the message reaches the socket while the count is read
        release.set()
        badges = []  # every swap of the badge, in the order the page applies them
        while True:
            try:
                frame = await home.receive_fragment(timeout=0.5)
            except AssertionError:
                break
            badges += [s.text() for s in frame.swaps if s.id == f"unread-{room.pk}"]
    assert badges[-1] == "1"


async def test_a_read_room_counts_again_from_the_next_message(home_socket, room, alice, bob):
    home = await home_socket(alice)
    first = await post(room, bob, "one")
    await entry_and_badge(home, room)
    await mark_read(alice, room, first.seq)
    assert (await home.receive_swap(f"unread-{room.pk}")).text() == "0"
    await post(room, bob, "two")
    _, badge = await entry_and_badge(home, room)
    assert badge.text() == "1"


def test_rooms_made_by_the_system_are_listed_on_every_page():
    with capture_broadcasts() as captured:
        actions.create_room(actions.SYSTEM, "Announcements")
    assert captured.one(events.ROOM_VISIBLE).group == events.SITE_GROUP
    assert Room.objects.get(title="Announcements").owner is None


# The sidebar beside a conversation --------------------------------------------------------


async def open_sidebar(ws_application, user, room):
    """The socket a room page's sidebar opens (after its counts, which come once it hears
    its rooms)."""
    from rooms.testing import RoomSocket, communicator_for

    path = f"/ws/me/?unread=1&beside={room.pk}"
    socket = await RoomSocket(await communicator_for(ws_application, path, user)).connect(None)
    await socket.receive_swap(f"unread-{room.pk}")
    return socket


async def test_the_sidebar_counts_another_rooms_messages(
    ws_application, make_room, room, alice, bob
):
    other = await database_sync_to_async(make_room)("Random")
    sidebar = await open_sidebar(ws_application, alice, room)
    await post(other, bob, "over here")
    frame = await sidebar.receive_fragment()
    assert frame.targets() == [f"unread-{other.pk}"]  # a count, no home page entry
    assert frame.target(f"unread-{other.pk}").text() == "1"
    await sidebar.disconnect()


async def test_the_sidebar_does_not_count_the_room_beside_it(ws_application, room, alice, bob):
    sidebar = await open_sidebar(ws_application, alice, room)
    await post(room, bob, "read right here")
    await sidebar.assert_nothing_received()
    await sidebar.disconnect()


async def test_the_sidebar_brings_no_toasts(ws_application, make_room, room, alice, bob):
    """The room page's own socket shows mentions: the sidebar's must not show them again."""
    other = await database_sync_to_async(make_room)("Random")
    sidebar = await open_sidebar(ws_application, alice, room)
    await post(other, bob, "hey @alice")
    frames = [await sidebar.receive_fragment()]
    with pytest.raises(AssertionError):
        frames.append(await sidebar.receive_fragment(timeout=0.3))
    assert [target for f in frames for target in f.targets()] == [f"unread-{other.pk}"]
    await sidebar.disconnect()


def test_the_room_pages_sidebar_opens_the_users_socket_beside_its_room(client, room, alice):
    from bs4 import BeautifulSoup

    client.force_login(alice)
    page = BeautifulSoup(client.get(room.get_absolute_url()).content, "html.parser")
    live = page.select_one("nav.sidebar #sidebar-live")
    assert live["ws-connect"] == f"/ws/me/?unread=1&beside={room.pk}"


# The connection status beat -----------------------------------------------------------------


async def test_the_home_socket_says_live_with_the_list(user_socket, alice):
    socket = await user_socket(alice, unread=True)
    frame = await socket.receive_fragment()
    assert frame.target("connection").element["class"] == ["connection", "live"]


async def test_the_home_socket_gets_the_connection_beat(home_socket, fanout_hub, alice):
    socket = await home_socket(alice)
    await fanout_hub.beat()
    assert (await socket.receive_fragment(skip=())).target("connection").element["class"] == [
        "connection",
        "live",
    ]


async def test_a_user_socket_on_a_page_without_the_list_gets_no_beat(
    home_socket, fanout_hub, alice
):
    socket = await home_socket(alice, unread=False)
    await fanout_hub.beat()
    await socket.assert_nothing_received(skip=())


async def test_the_sidebar_socket_gets_no_beat(ws_application, fanout_hub, room, alice):
    sidebar = await open_sidebar(ws_application, alice, room)
    await fanout_hub.beat()
    await sidebar.assert_nothing_received(skip=())


def test_the_home_page_shows_the_connection_status(client, alice):
    from bs4 import BeautifulSoup

    client.force_login(alice)
    page = BeautifulSoup(client.get("/").content.decode(), "html.parser")
    assert page.select_one(".list-head #connection")["role"] == "status"
