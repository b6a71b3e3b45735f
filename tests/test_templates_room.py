"""The room page and its message fragments, as rendered (issue 13): parsed HTML, exact values."""

from datetime import UTC, datetime

import pytest
from bs4 import BeautifulSoup
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rooms import fragments
from rooms.fragments import SAMPLE_MESSAGE, Viewer
from rooms.models import Message, Profile
from rooms.templatetags.roomcast import message_text

pytestmark = pytest.mark.django_db

# 2023-11-14 22:13:20 UTC: a Tuesday in UTC, already Wednesday in Tokyo.
CREATED = 1_700_000_000.0


def soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def article(message: dict, viewer: Viewer | None = None):
    return soup(fragments.message(message, viewer or Viewer())).article


def page(client, room):
    return soup(client.get(room.get_absolute_url()).content.decode())


# Message text: links, mentions, direction ---------------------------------------------------


def test_message_url_becomes_a_safe_link():
    body = article({**SAMPLE_MESSAGE, "body": "see https://example.com/a?b=1&c=2."}).select_one(
        ".body"
    )
    [link] = body.select("a")
    assert link["href"] == "https://example.com/a?b=1&c=2"
    assert link["rel"] == ["noopener", "nofollow", "ugc"]
    assert link.get_text() == "https://example.com/a?b=1&c=2"
    assert body.get_text() == "see https://example.com/a?b=1&c=2."


def test_message_link_cannot_break_out_of_its_attribute():
    body = article({**SAMPLE_MESSAGE, "body": 'https://x.test/"onmouseover="alert(1)'}).select_one(
        ".body"
    )
    [link] = body.select("a")
    assert link["href"] == "https://x.test/"
    assert link.attrs.keys() == {"href", "rel", "target"}
    assert body.get_text() == 'https://x.test/"onmouseover="alert(1)'


def test_message_only_http_urls_become_links():
    body = article({**SAMPLE_MESSAGE, "body": "javascript:alert(1) ftp://x.test"}).select_one(
        ".body"
    )
    assert body.select("a") == []


def test_message_text_is_escaped_before_links_and_mentions():
    body = article({**SAMPLE_MESSAGE, "body": "<b>hi</b> @bob"}).select_one(".body")
    assert body.select("b") == []
    assert body.get_text() == "<b>hi</b> @bob"
    assert [m.get_text() for m in body.select("mark.mention")] == ["@bob"]


def test_message_mention_inside_a_url_stays_part_of_the_link():
    body = article({**SAMPLE_MESSAGE, "body": "https://x.test/@bob ok"}).select_one(".body")
    assert body.select("mark") == []
    assert body.a["href"] == "https://x.test/@bob"


def test_message_text_has_dir_auto():
    assert article(SAMPLE_MESSAGE).select_one(".body")["dir"] == "auto"


# Avatars, grouping, day lines, times -------------------------------------------------------


def test_message_avatar_has_initials_and_a_colour_from_the_username():
    first = article(SAMPLE_MESSAGE).select_one(".avatar")
    again = article({**SAMPLE_MESSAGE, "id": 8}).select_one(".avatar")
    other = article({**SAMPLE_MESSAGE, "author": "bob"}).select_one(".avatar")
    assert first.get_text() == "AL"
    assert first["class"] == again["class"]
    assert first["class"] != other["class"]
    assert first["aria-hidden"] == "true"


def test_message_that_continues_is_marked_for_grouping():
    assert "continues" in article({**SAMPLE_MESSAGE, "continues": True})["class"]
    assert "continues" not in article(SAMPLE_MESSAGE)["class"]


def test_message_time_and_weekday_are_in_the_viewers_time_zone():
    message = {**SAMPLE_MESSAGE, "created": CREATED}
    utc = article(message, Viewer(time_zone="UTC"))
    tokyo = article(message, Viewer(time_zone="Asia/Tokyo"))
    assert utc.select_one("header time").get_text() == "22:13"
    assert tokyo.select_one("header time").get_text() == "07:13"
    assert tokyo.select_one("header time")["datetime"] == "2023-11-15T07:13:20+09:00"
    assert "wd-2" in utc["class"] and "wd-3" in tokyo["class"]
    assert utc.select_one(".day").get_text() == "Tuesday 14 November 2023"
    assert tokyo.select_one(".day").get_text() == "Wednesday 15 November 2023"


def test_message_time_title_has_the_date_and_zone():
    title = article(SAMPLE_MESSAGE, Viewer(time_zone="Europe/Paris")).select_one("header time")
    assert title["title"] == "Tuesday 14 November 2023, 23:13 CET"


def test_viewer_with_an_unknown_time_zone_sees_utc():
    assert article(SAMPLE_MESSAGE, Viewer(time_zone="Mars/Olympus")).select_one(
        "header time"
    ).get_text() == "22:13"  # fmt: skip


def test_message_variant_includes_the_time_zone():
    """The render cache is keyed by it: readers in two zones get two renders."""
    paris = Viewer(user_id=2, time_zone="Europe/Paris")
    tokyo = Viewer(user_id=2, time_zone="Asia/Tokyo")
    assert paris.message_variant(SAMPLE_MESSAGE) == ("reader", "Europe/Paris")
    assert paris.message_variant(SAMPLE_MESSAGE) != tokyo.message_variant(SAMPLE_MESSAGE)
    assert Viewer(user_id=1).message_variant(SAMPLE_MESSAGE) == ("author", "UTC")


def test_new_messages_push_is_in_the_viewers_time_zone():
    html = fragments.new_messages([SAMPLE_MESSAGE], Viewer(time_zone="Asia/Tokyo"), 12)
    assert soup(html).select_one("#message-7 header time").get_text() == "07:13"


def test_new_messages_push_marks_last_seq_arrived():
    """The jump link's CSS reads it to say "New messages"."""
    html = fragments.new_messages([SAMPLE_MESSAGE], Viewer(), 12)
    assert soup(html).select_one("#last-seq")["class"] == ["arrived"]


def test_edit_and_delete_buttons_are_labelled():
    buttons = article(SAMPLE_MESSAGE, Viewer(user_id=1)).select(".actions button")
    assert [b["aria-label"] for b in buttons] == ["Edit message", "Delete message"]


def test_message_editor_has_a_cancel_button():
    editor = soup(fragments.message_editor(SAMPLE_MESSAGE)).article
    assert [b.get_text() for b in editor.select("button")] == ["Save", "Cancel"]
    cancel = editor.select("form")[1]
    assert cancel.select_one("input[name=action]")["value"] == "cancel"


# The composer and the connection state -------------------------------------------------------


def test_form_reset_carries_a_new_client_key():
    first = soup(fragments.message_form_reset()).select_one("#client-key")
    second = soup(fragments.message_form_reset()).select_one("#client-key")
    assert first["name"] == "client_key" and first["hx-swap-oob"] == "true"
    assert len(first["value"]) == 32 and first["value"] != second["value"]


def test_go_live_form_carries_a_client_key():
    form = soup(fragments.go_live(can_post=True)).select_one("#message-form")
    assert len(form.select_one("input[name=client_key]")["value"]) == 32


def test_connection_status_push_is_live():
    status = soup(fragments.connection_status()).select_one("#connection")
    assert status["class"] == ["connection", "live"]
    assert status["hx-swap-oob"] == "true"
    assert status["role"] == "status"


# The page, first render ---------------------------------------------------------------------


def test_room_page_says_connecting_before_the_socket(client, room):
    status = page(client, room).select_one("#connection")
    assert status["class"] == ["connection"]
    assert status.select_one(".connecting").get_text() == "connecting…"


def test_room_page_composer_has_a_client_key(client, room, alice):
    client.force_login(alice)
    key = page(client, room).select_one("#message-form input[name=client_key]")
    assert len(key["value"]) == 32


def test_room_page_has_a_several_lines_composer_in_a_closed_details(client, room, alice):
    client.force_login(alice)
    details = page(client, room).select_one(".composer details.lines")
    assert details.get("open") is None
    assert details.summary.get_text() == "Several lines"
    form = details.select_one("#lines-form")
    assert form.select_one("textarea#lines-input")["name"] == "message"
    assert form.select_one("input[name=composer]")["value"] == "lines"


def test_the_two_composers_have_different_client_keys(client, room, alice):
    client.force_login(alice)
    html = page(client, room)
    one = html.select_one("#message-form input[name=client_key]")["value"]
    lines = html.select_one("#lines-form input[name=client_key]")["value"]
    assert len(lines) == 32 and lines != one


def test_going_live_swaps_in_the_several_lines_composer_over_the_socket():
    form = soup(fragments.go_live(True)).select_one("#lines-form")
    assert form.has_attr("ws-send") and form["hx-swap-oob"] == "true"


def test_room_page_client_key_comes_from_the_view_when_it_gives_one():
    from django.template.loader import render_to_string

    html = render_to_string(
        "rooms/room_detail.html#message_form", {"client_key": "k" * 32, "room_slug": "lobby"}
    )
    assert soup(html).select_one("input[name=client_key]")["value"] == "k" * 32


def test_empty_room_says_no_messages_yet(client, room):
    assert page(client, room).select_one(".no-messages").get_text() == "No messages yet. Say hello!"


def test_room_page_shows_times_in_the_readers_time_zone(client, room, alice):
    Message.objects.create(room=room, seq=1, author=alice, body="hi")
    Message.objects.filter(room=room).update(created=datetime.fromtimestamp(CREATED, UTC))
    Profile.objects.create(user=alice, time_zone="Asia/Tokyo")
    client.force_login(alice)
    assert page(client, room).select_one("#messages header time").get_text() == "07:13"


def test_room_page_newest_anchor_is_the_scrollers_first_child(client, room):
    """column-reverse: the first child is the bottom one, where the jump link goes."""
    scroller = page(client, room).select_one("#scroller")
    assert scroller.find(recursive=False)["id"] == "newest"
    assert page(client, room).select_one(".jump")["href"] == "#newest"


def test_sidebar_lists_rooms_with_unread_counts(client, make_room, room, alice, bob):
    other = make_room("Random", messages=[(bob, "one"), (bob, "two")])
    client.force_login(alice)
    sidebar = page(client, room).select_one("nav.sidebar")
    assert [a.get_text() for a in sidebar.select(".room-nav a")] == ["Lobby", "Random"]
    assert sidebar.select_one(f"#unread-{other.pk}").get_text() == "2"
    assert sidebar.select_one("li.current a")["aria-current"] == "page"


def test_member_field_is_labelled_and_styled(client, make_room, alice):
    secret = make_room("Secret", owner=alice, is_private=True)
    client.force_login(alice)
    form = page(client, secret).select_one("form.member-form")
    field = form.select_one("input[name=username]")
    assert form.select_one(f"label[for={field['id']}]").get_text() == "Username"


def test_time_zone_of_reads_the_profile_and_defaults_to_utc(alice, bob):
    from django.contrib.auth.models import AnonymousUser

    Profile.objects.create(user=alice, time_zone="Europe/Paris")
    assert fragments.time_zone_of(alice) == "Europe/Paris"
    assert fragments.time_zone_of(bob) == "UTC"
    assert fragments.time_zone_of(AnonymousUser()) == "UTC"
    assert not Profile.objects.filter(user=bob).exists()  # reading never creates one


def test_room_page_links_back_to_all_rooms(client, room):
    assert page(client, room).select_one(".room-head a.back")["href"] == "/"


# Control characters other than newline are left out: an HTML parser rewrites CR and FF (as
# browsers do) and BeautifulSoup a lone tab node, which is not the filter's doing.
TEXT = st.characters(blacklist_categories=("Cc", "Cs")) | st.just("\n")


@given(
    body=st.text(TEXT, max_size=200)
    | st.builds(
        lambda a, b: f"{a}https://{b}", st.text(TEXT, max_size=40), st.text(TEXT, max_size=80)
    )
)
@settings(max_examples=300, deadline=None)
def test_message_text_keeps_any_text_and_adds_only_safe_links_and_marks(body):
    assume(not body.isspace())  # the parser drops whitespace-only text nodes
    paragraph = soup(f"<p>{message_text(body)}</p>").p
    assert paragraph.get_text() == body
    for element in paragraph.find_all(True):
        if element.name == "a":
            assert element.attrs.keys() == {"href", "rel", "target"}
            assert element["href"].startswith(("http://", "https://"))
            assert element["href"] == element.get_text()
        else:
            assert (element.name, element["class"]) == ("mark", ["mention"])


def test_message_text_link_ending_in_an_ampersand_keeps_it_whole():
    """The URL is found before escaping, so an entity is never split at its ';'."""
    paragraph = soup(f"<p>{message_text('see http://a.example/?q=1&')}</p>").p
    assert paragraph.get_text() == "see http://a.example/?q=1&"
    assert paragraph.a["href"] == "http://a.example/?q=1&"
