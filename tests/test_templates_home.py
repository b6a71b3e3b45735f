"""The home page (rooms with their last message) and the dashboard, as rendered (issue 13)."""

import pytest
from bs4 import BeautifulSoup

from rooms import fragments
from rooms.fragments import SAMPLE_ROOM
from rooms.models import Message

pytestmark = pytest.mark.django_db


def home(client) -> BeautifulSoup:
    return BeautifulSoup(client.get("/").content, "html.parser")


def test_home_lists_the_most_recently_active_room_first(client, make_room, alice, bob):
    make_room("Alpha", messages=[(bob, "old news")])
    make_room("Beta", messages=[(alice, "newer")])
    make_room("Empty")
    titles = [a.get_text() for a in home(client).select("#room-list .room-title")]
    assert titles == ["Beta", "Alpha", "Empty"]


def test_home_shows_each_rooms_last_message_and_time(client, make_room, bob):
    room = make_room("Alpha", messages=[(bob, "first"), (bob, "second")])
    item = home(client).select_one(f"#room-{room.pk}")
    assert item.select_one(".last").get_text(" ", strip=True) == "bob: second"
    stamp = Message.objects.get(room=room, body="second").created
    assert item.select_one("time")["datetime"] == stamp.isoformat()


def test_home_shows_no_messages_yet_for_an_empty_room(client, make_room):
    room = make_room("Empty")
    assert home(client).select_one(f"#room-{room.pk} .last").get_text() == "No messages yet"


def test_home_shows_a_deleted_last_message_as_deleted(client, make_room, bob):
    room = make_room("Alpha", messages=[(bob, "secret")])
    Message.objects.filter(room=room).update(deleted=True)
    item = home(client).select_one(f"#room-{room.pk}")
    assert "secret" not in item.get_text()
    assert item.select_one(".last em").get_text() == "deleted message"


def test_home_shows_unread_counts_when_signed_in(client, make_room, alice, bob):
    room = make_room("Alpha", messages=[(bob, "one"), (bob, "two")])
    client.force_login(alice)
    assert home(client).select_one(f"#unread-{room.pk}").get_text() == "2"


def test_home_shows_no_unread_badge_signed_out(client, make_room, bob):
    make_room("Alpha", messages=[(bob, "one")])
    assert home(client).select(".badge") == []


def test_room_list_item_moves_the_room_first():
    roots = BeautifulSoup(fragments.room_list_item(SAMPLE_ROOM, 2), "html.parser").find_all(
        recursive=False
    )
    assert [(r["id"], r["hx-swap-oob"]) for r in roots] == [
        ("room-3", "delete"),
        ("room-list", "afterbegin"),
        ("unread-3", "true"),  # the reader's count, swapped into the entry just inserted
    ]
    item = roots[1].select_one("li#room-3")
    assert item.select_one(".room-title").get_text() == "Lobby"
    assert roots[2].get_text() == "2"
    assert item.select_one(".last").get_text(" ", strip=True) == "alice: Release at five, @bob?"


def test_header_is_the_same_signed_in_and_out(client, alice):
    """Same elements and classes (the CSS gives it one height)."""
    out = home(client).select_one(".site-header")
    client.force_login(alice)
    signed_in = home(client).select_one(".site-header")
    assert [e.name for e in out.nav.find_all(recursive=False)] == ["a", "a", "a"]
    # Signed in: the dashboard, the inbox bell, the profile link and the log-out form.
    assert [e.name for e in signed_in.nav.find_all(recursive=False)] == ["a", "a", "a", "form"]
    assert signed_in.select_one("a.who")["href"] == "/accounts/profile/"


@pytest.mark.parametrize(("online", "text"), [(0, "0 people online"), (1, "1 person online"),
                                               (2, "2 people online")])  # fmt: skip
def test_dashboard_says_person_or_people(online, text):
    from rooms import dashboard

    html = dashboard.render(dashboard.context([], online=online))
    totals = BeautifulSoup(html, "html.parser").select(".totals li")
    assert totals[1].get_text(" ", strip=True) == text
