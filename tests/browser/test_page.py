"""The chat page people would choose (issue 13), tried in Chromium at 1280x800 and 390x844."""

import os
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from rooms import fragments

pytestmark = pytest.mark.browser

ROOT_DIR = Path(__file__).resolve().parents[2]
SIZES = ["desktop", "phone"]


def open_room(page, live_site, slug: str = "history"):
    page.goto(f"{live_site.base}/rooms/{slug}/")
    # The socket is up once its first sync has swapped in the live form.
    expect(page.locator("#message-form[ws-send]")).to_have_count(1, timeout=10_000)
    return page


def post(page, text: str, wait: bool = True) -> None:
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")
    if wait:  # the server's form reset (a blank input) says it was stored
        expect(page.locator("#message-input")).to_have_value("", timeout=5_000)


def message(page, text: str):
    return page.locator("#messages .message", has_text=text)


def box(locator) -> dict:
    return locator.bounding_box()


def in_scroller(page, locator) -> bool:
    """Whether `locator` is wholly inside the visible part of the message scroller."""
    inner, outer = box(locator), box(page.locator("#scroller"))
    return (
        inner["y"] >= outer["y"] - 1
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 1
    )


def scroll_up(page, pixels: int = 800) -> None:
    page.locator("#scroller").hover()
    page.mouse.wheel(0, -pixels)
    page.wait_for_function(f"document.querySelector('#scroller').scrollTop <= -{pixels // 2}")


def no_horizontal_overflow(page) -> bool:
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


# The newest message in view --------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_room_opens_at_the_newest_message(sign_in, live_site, size):
    alice = open_room(sign_in("alice", size), live_site)
    assert in_scroller(alice, message(alice, "history line 39"))
    assert not in_scroller(alice, message(alice, "history line 10"))
    expect(alice.locator(".jump")).to_be_hidden()


@pytest.mark.parametrize("size", SIZES)
def test_new_messages_are_followed_at_the_bottom_by_every_reader(sign_in, live_site, size):
    alice = open_room(sign_in("alice", size), live_site)
    bob = open_room(sign_in("bob", size), live_site)
    carol = open_room(sign_in("carol", size), live_site)
    post(bob, "a new line from bob")
    for page in (alice, bob, carol):
        expect(message(page, "a new line from bob")).to_have_count(1, timeout=5_000)
        page.wait_for_timeout(100)  # one frame for layout after the swap
        assert in_scroller(page, message(page, "a new line from bob")), page
        expect(page.locator(".jump")).to_be_hidden()


@pytest.mark.parametrize("size", SIZES)
def test_a_reader_who_scrolled_up_stays_put_and_is_offered_the_jump(sign_in, live_site, size):
    alice = open_room(sign_in("alice", size), live_site)
    bob = open_room(sign_in("bob", size), live_site)
    scroll_up(alice)
    expect(alice.locator(".jump")).to_be_visible()
    expect(alice.locator(".jump")).to_have_text("Jump to newest ↓", use_inner_text=True)
    anchor = alice.locator("#messages .message").nth(30)
    before = box(anchor)["y"]
    post(bob, "posted while alice reads back")
    expect(message(alice, "posted while alice reads back")).to_have_count(1, timeout=5_000)
    alice.wait_for_timeout(100)
    assert abs(box(anchor)["y"] - before) <= 1  # her place did not move
    assert not in_scroller(alice, message(alice, "posted while alice reads back"))
    expect(alice.locator(".jump")).to_have_text("New messages ↓", use_inner_text=True)
    alice.locator(".jump").click()
    expect(alice.locator(".jump")).to_be_hidden()
    assert in_scroller(alice, message(alice, "posted while alice reads back"))


@pytest.mark.parametrize("size", SIZES)
def test_the_composer_is_always_in_the_window(sign_in, live_site, size):
    alice = open_room(sign_in("alice", size), live_site)
    expect(alice.locator("#message-input")).to_be_in_viewport(ratio=1)
    expect(alice.locator("#message-form button")).to_be_in_viewport(ratio=1)
    scroll_up(alice)
    assert alice.evaluate("window.scrollY") == 0  # only the message list scrolls
    expect(alice.locator("#message-input")).to_be_in_viewport(ratio=1)


def test_an_empty_room_says_so(sign_in, live_site):
    live_site.shell("from rooms.models import Room; Room.objects.create(title='Quiet')")
    alice = open_room(sign_in("alice"), live_site, "quiet")
    expect(alice.locator(".no-messages")).to_have_text("No messages yet. Say hello!")
    post(alice, "first!")
    expect(message(alice, "first!")).to_have_count(1, timeout=5_000)
    expect(alice.locator(".no-messages")).to_be_hidden()


# Layout ---------------------------------------------------------------------------------


def test_desktop_shows_the_rooms_and_unread_counts_beside_the_conversation(sign_in, live_site):
    alice = open_room(sign_in("alice"), live_site, "lobby")
    sidebar = alice.locator("nav.sidebar")
    expect(sidebar).to_be_visible()
    expect(sidebar.locator("li.current a")).to_have_text("Lobby")
    expect(sidebar.locator("li", has_text="Random").locator(".badge")).to_have_text("1")
    assert box(sidebar)["x"] + box(sidebar)["width"] <= box(alice.locator("#scroller"))["x"]
    assert box(alice.locator("#scroller"))["width"] >= 700  # not a 520 px column any more


@pytest.mark.parametrize("path", ["/", "/rooms/history/", "/rooms/lobby/", "/dashboard/",
                                  "/accounts/profile/"])  # fmt: skip
def test_phone_pages_do_not_scroll_sideways(sign_in, live_site, path):
    bob = sign_in("bob", "phone")
    bob.goto(f"{live_site.base}{path}")
    bob.wait_for_load_state("networkidle")
    assert no_horizontal_overflow(bob)


def test_on_a_phone_who_is_here_does_not_push_the_messages_down(sign_in, live_site):
    alice = open_room(sign_in("alice", "phone"), live_site)
    open_room(sign_in("bob", "phone"), live_site)
    open_room(sign_in("carol", "phone"), live_site)
    expect(alice.locator("#presence li")).to_have_count(3, timeout=5_000)
    expect(alice.locator("nav.sidebar")).to_be_hidden()
    presence = box(alice.locator("#presence"))
    assert presence["height"] <= 40
    assert box(alice.locator("#scroller"))["y"] < 200  # the conversation starts near the top


def test_the_header_has_one_height_signed_in_and_out(browser, sign_in, live_site):
    alice = sign_in("alice")
    signed_in = box(alice.locator(".site-header"))["height"]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    anonymous = context.new_page()
    anonymous.goto(f"{live_site.base}/")
    assert box(anonymous.locator(".site-header"))["height"] == signed_in
    context.close()


# Messages read like a conversation --------------------------------------------------------


def test_links_open_safely_and_text_keeps_its_direction(sign_in, live_site):
    alice = open_room(sign_in("alice"), live_site)
    bob = open_room(sign_in("bob"), live_site)
    post(alice, "spec at https://example.com/a?b=1&c=2. ok?")
    post(alice, "مرحبا بالجميع")
    link = message(bob, "spec at").locator(".body a")
    expect(link).to_have_attribute("href", "https://example.com/a?b=1&c=2", timeout=5_000)
    expect(link).to_have_attribute("rel", "noopener nofollow ugc")
    expect(message(bob, "spec at").locator(".body")).to_have_text(
        "spec at https://example.com/a?b=1&c=2. ok?"
    )
    arabic = message(bob, "مرحبا").locator(".body")
    expect(arabic).to_have_attribute("dir", "auto", timeout=5_000)
    assert arabic.evaluate("el => el.matches(':dir(rtl)')")
    assert not message(bob, "spec at").locator(".body").evaluate("el => el.matches(':dir(rtl)')")


def test_consecutive_messages_of_one_author_are_grouped(sign_in, live_site):
    # Stored as actions.post_message stores it: line 40 continues line 39, both alice's.
    live_site.shell(
        "from rooms.models import Room, Message, post_message\n"
        "from django.contrib.auth import get_user_model\n"
        "room = Room.objects.get(slug='history')\n"
        "m = post_message(room, get_user_model().objects.get(username='alice'), 'and more')\n"
        "Message.objects.filter(pk=m.pk).update(continues=True)"
    )
    alice = open_room(sign_in("alice"), live_site)
    first, second = message(alice, "history line 39"), message(alice, "and more")
    expect(first.locator("header")).to_be_visible()
    expect(first.locator(".avatar")).to_have_text("AL")
    expect(second.locator("header")).to_be_hidden()
    expect(second.locator(".avatar")).to_be_hidden()
    gap = box(second)["y"] - (box(first)["y"] + box(first)["height"])
    assert gap < 4


def test_a_day_line_separates_the_days(sign_in, live_site):
    live_site.shell(
        "from datetime import timedelta\n"
        "from rooms.models import Message\n"
        "for m in Message.objects.filter(room__slug='history', seq__lte=20):\n"
        "    Message.objects.filter(pk=m.pk).update(created=m.created - timedelta(days=1))"
    )
    alice = open_room(sign_in("alice"), live_site)
    days = alice.locator("#messages .message > .day:visible")
    # The history shows its latest 50: lines 0-19 yesterday, then today from line 20 on.
    expect(days).to_have_count(2)
    expect(message(alice, "history line 20").locator(".day")).to_be_visible()
    expect(message(alice, "history line 21").locator(".day")).to_be_hidden()


def test_edit_and_delete_show_on_hover_and_an_edit_can_be_cancelled(sign_in, live_site):
    alice = open_room(sign_in("alice"), live_site)
    mine = message(alice, "history line 39")
    actions = mine.locator(".actions")
    assert actions.evaluate("el => getComputedStyle(el).opacity") == "0"
    mine.hover()
    assert actions.evaluate("el => getComputedStyle(el).opacity") == "1"
    actions.get_by_role("button", name="Edit message").click()
    editor = alice.locator("#messages .message.editing")
    expect(editor.locator("input[name=message]")).to_have_value("history line 39")
    editor.get_by_role("button", name="Cancel").click()
    expect(message(alice, "history line 39").locator(".body")).to_have_text("history line 39")
    expect(alice.locator("#messages .message.editing")).to_have_count(0)


def test_times_are_in_the_readers_time_zone_with_the_date(sign_in, live_site):
    alice = sign_in("alice")
    alice.goto(f"{live_site.base}/accounts/profile/")
    alice.get_by_label("Time zone").select_option("Asia/Tokyo")
    alice.get_by_role("button", name="Save").click()
    expect(alice.locator(".saved")).to_have_text("Your settings are saved.")
    open_room(alice, live_site)
    time = message(alice, "history line 39").locator("header time")
    stamp = datetime.fromisoformat(time.get_attribute("datetime"))
    tokyo = stamp.astimezone(ZoneInfo("Asia/Tokyo"))
    assert stamp.utcoffset().total_seconds() == 9 * 3600
    expect(time).to_have_text(tokyo.strftime("%H:%M"))
    day = alice.locator("#messages .message > .day:visible time").last
    expect(day).to_have_attribute("datetime", tokyo.strftime("%Y-%m-%d"))


# The connection state and duplicate posts --------------------------------------------------


def advance_indicator(page, ms: int) -> None:
    """Move the connection indicator's CSS animations to `ms` after their start (no waiting)."""
    page.evaluate(
        "ms => document.querySelector('#connection').getAnimations({subtree: true})"
        ".forEach(a => { a.currentTime = ms; })",
        ms,
    )


def test_the_connection_indicator_turns_reconnecting_then_offline_unless_renewed(
    sign_in, live_site
):
    alice = sign_in("alice")
    alice.goto(f"{live_site.base}/rooms/history/")
    indicator = alice.locator("#connection")
    # The server's push, as the socket would deliver it (htmx swaps it out of band).
    html = fragments.connection_status()
    alice.evaluate("html => htmx.swap('#connection', html, {swapStyle: 'none'})", html)
    expect(indicator).to_have_text("live", use_inner_text=True)
    advance_indicator(alice, 11_000)
    expect(indicator).to_have_text("live", use_inner_text=True)
    advance_indicator(alice, 13_000)
    expect(indicator).to_have_text("reconnecting…", use_inner_text=True)
    advance_indicator(alice, 31_000)
    expect(indicator).to_have_text("offline", use_inner_text=True)
    # A new push (the next beat, or a sync after reconnecting) says "live" again.
    alice.evaluate("html => htmx.swap('#connection', html, {swapStyle: 'none'})", html)
    expect(indicator).to_have_text("live", use_inner_text=True)


def test_the_connection_indicator_follows_the_server_stopping_and_starting(sign_in, live_site):
    alice = open_room(sign_in("alice"), live_site)
    indicator = alice.locator("#connection")
    expect(indicator).to_have_text("live", timeout=10_000, use_inner_text=True)
    alice.wait_for_timeout(13_000)
    expect(indicator).to_have_text("live", use_inner_text=True)  # the beat keeps it live
    live_site.stop()
    expect(indicator).to_have_text("reconnecting…", timeout=15_000, use_inner_text=True)
    live_site.resume()
    expect(indicator).to_have_text("live", timeout=40_000, use_inner_text=True)


def test_repeated_sends_while_offline_store_one_message(sign_in, live_site):
    alice = open_room(sign_in("alice"), live_site)
    live_site.stop()
    alice.wait_for_timeout(500)  # the page sees the socket close
    for _ in range(3):
        post(alice, "sent three times while offline", wait=False)
    live_site.resume()
    expect(message(alice, "sent three times while offline")).not_to_have_count(0, timeout=40_000)
    alice.wait_for_timeout(2_000)  # any copies would arrive meanwhile
    expect(message(alice, "sent three times while offline")).to_have_count(1)
    stored = live_site.shell(
        "from rooms.models import Message\n"
        "print(Message.objects.filter(body='sent three times while offline').count())"
    )
    assert stored == "1"


def test_each_composed_message_carries_a_new_client_key(sign_in, live_site):
    alice = open_room(sign_in("alice"), live_site)
    first = alice.locator("#client-key").get_attribute("value")
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    post(alice, "one")
    expect(alice.locator("#client-key")).not_to_have_attribute("value", first, timeout=5_000)
    assert re.fullmatch(r"[0-9a-f]{32}", alice.locator("#client-key").get_attribute("value"))


# The home page ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_home_lists_rooms_most_recent_first_with_last_message_and_unread(sign_in, live_site, size):
    bob = open_room(sign_in("bob"), live_site, "random")
    post(bob, "fresh news in random")
    expect(message(bob, "fresh news in random")).to_have_count(1, timeout=5_000)
    alice = sign_in("alice", size)
    first = alice.locator("#room-list .room-item").first
    expect(first.locator(".room-title")).to_have_text("Random")
    expect(first.locator(".last")).to_have_text("bob: fresh news in random")
    expect(first.locator(".badge")).to_have_text("2")
    assert no_horizontal_overflow(alice)


def test_room_list_item_moves_a_room_to_the_top(sign_in, live_site):
    """The push the home page gets when a room has news (the coordinator wires the event)."""
    alice = sign_in("alice")
    titles = alice.locator("#room-list .room-title")
    expect(titles.first).to_have_text("History")
    room = {"id": int(live_site.shell(
        "from rooms.models import Room; print(Room.objects.get(slug='lobby').pk)"
    )), "title": "Lobby", "url": "/rooms/lobby/", "is_private": False,
        "last": {"author": "bob", "body": "news", "deleted": False, "created": 1.8e9}}  # fmt: skip
    html = fragments.room_list_item(room, 3)
    alice.evaluate("html => htmx.swap('body', html, {swapStyle: 'none'})", html)
    expect(titles.first).to_have_text("Lobby")
    expect(alice.locator("#room-list .room-item", has_text="Lobby")).to_have_count(1)
    expect(alice.locator("#room-list .room-item").first.locator(".badge")).to_have_text("3")


# Screenshots --------------------------------------------------------------------------------


def show_live(page) -> None:
    """The indicator as the server's beat keeps it; on a branch without the beat (the core
    helper's), the picture gets the push the beat would send."""
    indicator = page.locator("#connection .is-live")
    try:
        expect(indicator).to_be_visible(timeout=7_000)
    except AssertionError:
        html = fragments.connection_status()
        page.evaluate("html => htmx.swap('#connection', html, {swapStyle: 'none'})", html)
        expect(indicator).to_be_visible()


def test_screenshots_of_the_room(sign_in, live_site, tmp_path):
    """ROOMCAST_SCREENSHOT_DIR=docs make test ... renews the README's pictures."""
    out = Path(os.environ.get("ROOMCAST_SCREENSHOT_DIR") or tmp_path)
    out = out if out.is_absolute() else ROOT_DIR / out
    alice = open_room(sign_in("alice"), live_site, "lobby")
    bob = open_room(sign_in("bob"), live_site, "lobby")
    phone = open_room(sign_in("carol", "phone"), live_site, "lobby")
    post(bob, "Release notes are in https://example.com/notes, @alice")
    post(bob, "Shout if anything looks off.")
    post(alice, "Thanks! Reviewing now.")
    post(phone, "Looks good on my phone too.")
    expect(message(alice, "on my phone too")).to_have_count(1, timeout=5_000)
    for page in (alice, phone):
        show_live(page)
    bob.wait_for_timeout(2_100)  # bob's typing throttle window (2 s) passes
    bob.type("#message-input", "One more", delay=20)
    expect(alice.locator("#typing")).to_have_text("bob is typing…", timeout=5_000)
    alice.screenshot(path=str(out / "screenshot.png"))
    expect(phone.locator("#typing")).to_have_text("bob is typing…", timeout=5_000)
    phone.screenshot(path=str(out / "screenshot-phone.png"))
    # The home page's pictures: tests/browser/test_home_live.py, once its list is live.
    names = ["screenshot.png", "screenshot-phone.png"]
    assert all((out / name).stat().st_size > 0 for name in names)


def test_phone_shows_everyone_here_by_name(sign_in, live_site):
    carol = open_room(sign_in("carol", "phone"), live_site, "lobby")
    open_room(sign_in("alice"), live_site, "lobby")
    open_room(sign_in("bob"), live_site, "lobby")
    names = carol.locator("#presence li")
    expect(names).to_have_count(3, timeout=10_000)
    for name in ("alice", "bob", "carol"):
        item = carol.locator("#presence li", has_text=name)
        # Wholly visible: not cut to an ellipsis by the row's other controls.
        assert item.evaluate("el => el.scrollWidth <= el.clientWidth")
        assert box(item)["x"] + box(item)["width"] <= 390
