"""The first, full-page render of each page, parsed as HTML."""

import pytest
from bs4 import BeautifulSoup

from rooms.models import Room

pytestmark = pytest.mark.django_db


def parse(response) -> BeautifulSoup:
    return BeautifulSoup(response.content, "html.parser")


def test_room_list_shows_rooms(client, make_room):
    make_room("Lobby")
    make_room("Random")
    page = parse(client.get("/"))
    assert [a.get_text() for a in page.select("#room-list a")] == ["Lobby", "Random"]


def test_room_list_offers_create_to_signed_in_user(client, alice):
    client.force_login(alice)
    page = parse(client.get("/"))
    assert page.select_one("a[href='/rooms/new/']") is not None


def test_room_list_hides_create_from_anonymous(client):
    page = parse(client.get("/"))
    assert page.select_one("a[href='/rooms/new/']") is None


def test_room_create_redirects_to_new_room(client, alice):
    client.force_login(alice)
    response = client.post("/rooms/new/", {"title": "Design review"})
    room = Room.objects.get(title="Design review")
    assert response.status_code == 302
    assert response["Location"] == "/rooms/design-review/"
    assert room.owner == alice


def test_room_create_requires_login(client):
    response = client.post("/rooms/new/", {"title": "Nope"})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert not Room.objects.exists()


def test_room_create_rejects_blank_title(client, alice):
    client.force_login(alice)
    page = parse(client.post("/rooms/new/", {"title": ""}))
    assert "This field is required." in page.select_one("main form").get_text()
    assert not Room.objects.exists()


def test_room_slug_is_unique(make_room):
    assert [make_room("Lobby").slug, make_room("Lobby").slug] == ["lobby", "lobby-2"]


def test_room_detail_shows_latest_fifty_oldest_first(client, make_room, alice):
    room = make_room("Busy", messages=[(alice, f"m{i}") for i in range(1, 56)])
    page = parse(client.get(room.get_absolute_url()))
    bodies = [p.get_text() for p in page.select("#messages .message .body")]
    assert bodies == [f"m{i}" for i in range(6, 56)]


def test_room_detail_sync_point_is_last_shown_message(client, make_room, alice):
    room = make_room("Busy", messages=[(alice, "a"), (alice, "b")])
    page = parse(client.get(room.get_absolute_url()))
    assert page.select_one("#sync #last-seq")["value"] == "2"


def test_room_detail_opens_room_socket(client, room):
    page = parse(client.get(room.get_absolute_url()))
    socket = page.select_one("#room")
    assert socket["hx-ext"] == "ws"
    assert socket["ws-connect"] == "/ws/rooms/lobby/"


def test_room_detail_sync_form_sends_on_socket_open(client, room):
    page = parse(client.get(room.get_absolute_url()))
    sync = page.select_one("form#sync")
    assert sync.has_attr("ws-send")
    assert sync["hx-trigger"] == "htmx:wsOpen from:#room"


def test_room_detail_message_form_for_signed_in_user(client, room, alice):
    client.force_login(alice)
    page = parse(client.get(room.get_absolute_url()))
    form = page.select_one("form#message-form")
    assert form.select_one("input#message-input")["name"] == "message"
    assert form.select_one("input#message-input")["maxlength"] == "4000"


def test_room_detail_anonymous_sees_login_link_instead_of_form(client, room):
    page = parse(client.get(room.get_absolute_url()))
    assert page.select_one("form#message-form") is None
    assert page.select_one(".sign-in a")["href"] == "/accounts/login/?next=/rooms/lobby/"


def test_room_detail_escapes_message_text(client, make_room, alice):
    room = make_room("X", messages=[(alice, "<script>alert(1)</script>")])
    page = parse(client.get(room.get_absolute_url()))
    assert page.select_one("#messages script") is None
    assert page.select_one("#messages .body").get_text() == "<script>alert(1)</script>"


def test_room_detail_unknown_room_is_404(client):
    assert client.get("/rooms/no-such-room/").status_code == 404


def test_room_detail_loads_only_htmx_scripts(client, room):
    page = parse(client.get(room.get_absolute_url()))
    sources = [s.get("src") for s in page.select("script")]
    assert sources == [
        "/static/django_htmx/htmx-2.min.js",
        "/static/django_htmx/ext/hx-ws-2.min.js",
    ]


def test_room_detail_has_no_inline_script(client, room):
    page = parse(client.get(room.get_absolute_url()))
    assert all(script.get("src") for script in page.select("script"))


def test_signup_creates_user_and_signs_in(client):
    response = client.post(
        "/accounts/signup/",
        {"username": "carol", "password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"},
    )
    assert response.status_code == 302
    page = parse(client.get("/"))
    assert page.select_one(".who").get_text() == "carol"


def test_login_page_renders_form(client):
    page = parse(client.get("/accounts/login/"))
    assert page.select_one("form input[name=username]") is not None


def test_process_stats_are_off_by_default(client):
    assert client.get("/dev/stats/").status_code == 404


def test_process_stats_report_sockets_and_memory(client, settings):
    settings.ROOMCAST_STATS = True
    stats = client.get("/dev/stats/").json()
    assert stats["sockets"] == 0 and stats["rss_kib"] > 0


def test_no_template_comment_leaks_into_a_page(client, room, alice):
    client.force_login(alice)
    for url in ("/", room.get_absolute_url(), "/dashboard/"):
        assert "{#" not in parse(client.get(url)).get_text(), url
