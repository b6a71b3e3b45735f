"""The live home page (issue 13), in Chromium at 1280x800 and 390x844: a room with news moves
first with its last message and unread count, new rooms appear for those who may see them,
and reading a room in another tab clears its count."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ROOT_DIR = Path(__file__).resolve().parents[2]
SIZES = ["desktop", "phone"]


def open_live(page, url: str, socket_path: str):
    """Open `url` and wait for the first frame of its socket at `socket_path` (the home page's
    list, the sidebar's counts), which the socket sends once it has joined its rooms: every
    change from then on reaches the page."""
    frames: list[str] = []

    def watch(socket) -> None:
        if socket_path in socket.url:
            socket.on("framereceived", lambda payload: frames.append(str(payload)))

    page.on("websocket", watch)
    page.goto(url)
    for _ in range(200):
        if frames:
            break
        page.wait_for_timeout(50)
    else:
        raise AssertionError(f"{socket_path} sent nothing within 10 s")
    page.remove_listener("websocket", watch)
    return page


def open_home(page, live_site):
    return open_live(page, f"{live_site.base}/", "/ws/me/?unread=1")


def open_room(page, live_site, slug: str):
    page.goto(f"{live_site.base}/rooms/{slug}/")
    expect(page.locator("#message-form[ws-send]")).to_have_count(1, timeout=10_000)
    return page


def post(page, text: str) -> None:
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")
    expect(page.locator("#message-input")).to_have_value("", timeout=5_000)


def entry(page, title: str):
    return page.locator("#room-list .room-item", has_text=title)


def first_entry(page):
    return page.locator("#room-list .room-item").first


def no_horizontal_overflow(page) -> bool:
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


@pytest.mark.parametrize("size", SIZES)
def test_a_new_message_moves_its_room_first_with_preview_and_count(sign_in, live_site, size):
    alice = open_home(sign_in("alice", size), live_site)
    expect(first_entry(alice).locator(".room-title")).to_have_text("History")
    random_before = entry(alice, "Random").locator(".badge").inner_text()
    bob = open_room(sign_in("bob"), live_site, "random")
    post(bob, "lunch at noon?")
    expect(first_entry(alice).locator(".room-title")).to_have_text("Random", timeout=5_000)
    expect(first_entry(alice).locator(".last")).to_have_text("bob: lunch at noon?")
    expect(first_entry(alice).locator(".badge")).to_have_text(str(int(random_before) + 1))
    expect(entry(alice, "Random")).to_have_count(1)  # moved, not copied
    expect(first_entry(alice).locator("time")).to_be_visible()
    post(bob, "or one?")
    expect(first_entry(alice).locator(".badge")).to_have_text(str(int(random_before) + 2))
    assert no_horizontal_overflow(alice)


@pytest.mark.parametrize("size", SIZES)
def test_a_room_bob_creates_appears_on_alices_home_page(sign_in, live_site, size):
    alice = open_home(sign_in("alice", size), live_site)
    bob = sign_in("bob")
    bob.goto(f"{live_site.base}/rooms/new/")
    bob.fill("input[name=title]", "Garden club")
    bob.click("main form.stacked button[type=submit]")  # not the header's Log out
    expect(first_entry(alice).locator(".room-title")).to_have_text("Garden club", timeout=5_000)
    expect(first_entry(alice).locator(".last")).to_have_text("No messages yet")
    first_entry(alice).locator(".room-title").click()
    expect(alice.locator("#room-title")).to_have_text("Garden club")


@pytest.mark.parametrize("size", SIZES)
def test_a_private_room_alice_is_added_to_appears_on_her_home_page(sign_in, live_site, size):
    alice = open_home(sign_in("alice", size), live_site)
    bob = sign_in("bob")
    bob.goto(f"{live_site.base}/rooms/new/")
    bob.fill("input[name=title]", "Plans")
    bob.check("input[name=is_private]")
    bob.click("main form.stacked button[type=submit]")  # not the header's Log out
    expect(bob.locator("#room-title")).to_contain_text("Plans")
    # Posted once the socket is up (its first sync swaps the form: typing before it is lost).
    expect(bob.locator("#message-form[ws-send]")).to_have_count(1, timeout=10_000)
    post(bob, "secret plans")
    alice.wait_for_timeout(500)
    expect(entry(alice, "Plans")).to_have_count(0)  # not a member yet: never listed
    bob.locator("details.members summary").click()
    bob.fill(".member-form input[name=username]", "alice")
    bob.click(".member-form button[type=submit]")
    expect(first_entry(alice).locator(".room-title")).to_have_text("Plans", timeout=5_000)
    expect(first_entry(alice).locator(".last")).to_have_text("bob: secret plans")
    expect(first_entry(alice).locator(".badge")).to_have_text("1")
    post(open_room(bob, live_site, "plans"), "welcome, alice")
    expect(first_entry(alice).locator(".badge")).to_have_text("2", timeout=5_000)


@pytest.mark.parametrize("size", SIZES)
def test_reading_in_another_tab_clears_the_count(sign_in, live_site, size):
    home = open_home(sign_in("alice", size), live_site)
    room_tab = home.context.new_page()
    open_room(room_tab, live_site, "random")
    expect(entry(home, "Random").locator(".badge")).to_have_text("0", timeout=10_000)
    bob = open_room(sign_in("bob"), live_site, "random")
    post(bob, "are you there?")
    expect(room_tab.locator("#messages .message", has_text="are you there?")).to_have_count(1)
    # The room tab shows it, so it is read: the home tab never counts it (the entry and its
    # badge come in one frame), and the read marker (written every 5 s) agrees.
    expect(first_entry(home).locator(".last")).to_have_text("bob: are you there?")
    assert first_entry(home).locator(".badge").inner_text() == "0"
    home.wait_for_timeout(6_000)  # ROOMCAST_READ_MARK_INTERVAL passes: user.read, a recount
    expect(first_entry(home).locator(".badge")).to_have_text("0")
    expect(first_entry(home).locator(".badge")).to_be_hidden()
    home.reload()
    expect(entry(home, "Random").locator(".badge")).to_have_text("0")


@pytest.mark.parametrize("size", SIZES)
def test_reading_in_another_tab_after_the_message_clears_the_count(sign_in, live_site, size):
    home = open_home(sign_in("alice", size), live_site)
    bob = open_room(sign_in("bob"), live_site, "random")
    post(bob, "did you see this?")
    badge = first_entry(home).locator(".badge")
    expect(badge).not_to_have_text("0", timeout=5_000)
    open_room(home.context.new_page(), live_site, "random")  # alice reads it in a new tab
    expect(badge).to_have_text("0", timeout=5_000)
    expect(badge).to_be_hidden()


def test_a_deleted_last_message_leaves_the_home_page(sign_in, live_site):
    alice = open_home(sign_in("alice", "phone"), live_site)
    before = entry(alice, "Random").locator(".badge").inner_text()
    bob = open_room(sign_in("bob"), live_site, "random")
    post(bob, "wrong window, sorry")
    expect(first_entry(alice).locator(".last")).to_have_text("bob: wrong window, sorry")
    mine = bob.locator("#messages .message", has_text="wrong window, sorry")
    mine.hover()
    mine.get_by_role("button", name="Delete message").click()
    expect(first_entry(alice).locator(".last")).to_have_text("bob: deleted message", timeout=5_000)
    expect(first_entry(alice).locator(".room-title")).to_have_text("Random")  # stays in place
    expect(first_entry(alice).locator(".badge")).to_have_text(before)  # deleted: not unread


def test_the_sidebar_beside_a_conversation_counts_other_rooms_live(sign_in, live_site):
    alice = open_live(sign_in("alice"), f"{live_site.base}/rooms/lobby/", "beside=")
    expect(alice.locator("#message-form[ws-send]")).to_have_count(1, timeout=10_000)
    random = alice.locator("nav.sidebar li", has_text="Random").locator(".badge")
    before = int(random.inner_text())
    bob = open_room(sign_in("bob"), live_site, "random")
    post(bob, "over in random")
    expect(random).to_have_text(str(before + 1), timeout=5_000)
    post(open_room(bob, live_site, "lobby"), "and in the lobby")
    expect(alice.locator("#messages .message", has_text="and in the lobby")).to_have_count(1)
    alice.wait_for_timeout(500)
    expect(alice.locator("nav.sidebar li.current .badge")).to_have_text("0")  # read here
    expect(alice.locator("#toasts .toast")).to_have_count(0)


def test_screenshots_of_the_live_home_page(sign_in, live_site, tmp_path):
    """ROOMCAST_SCREENSHOT_DIR=docs make test ... renews the README's home page pictures."""
    out = Path(os.environ.get("ROOMCAST_SCREENSHOT_DIR") or tmp_path)
    out = out if out.is_absolute() else ROOT_DIR / out
    alice = open_home(sign_in("alice"), live_site)
    phone = open_home(sign_in("alice", "phone"), live_site)
    bob = open_room(sign_in("bob"), live_site, "random")
    post(bob, "Lunch at noon? The new place on the corner has a terrace.")
    for page in (alice, phone):
        expect(first_entry(page)).to_contain_text("Lunch at noon", timeout=5_000)
        expect(first_entry(page).locator(".badge")).to_be_visible()
        expect(page.locator("#connection .is-live")).to_be_visible()
    alice.screenshot(path=str(out / "screenshot-home.png"))
    phone.screenshot(path=str(out / "screenshot-home-phone.png"))
    assert (out / "screenshot-home.png").stat().st_size > 0


@pytest.mark.parametrize("size", SIZES)
def test_the_home_page_says_when_it_is_live(sign_in, live_site, size):
    alice = open_home(sign_in("alice", size), live_site)
    expect(alice.locator("#connection .is-live")).to_be_visible(timeout=10_000)
    expect(alice.locator("#connection .connecting")).to_be_hidden()


@pytest.mark.parametrize("size", SIZES)
def test_the_home_page_survives_the_server_stopping_and_starting(sign_in, live_site, size):
    alice = open_home(sign_in("alice", size), live_site)
    indicator = alice.locator("#connection")
    expect(indicator).to_have_text("live", timeout=10_000, use_inner_text=True)
    live_site.stop()
    expect(indicator).to_have_text("reconnecting…", timeout=15_000, use_inner_text=True)
    # Posted while the server is down: the reconnected page gets it with the whole list.
    live_site.shell(
        "from rooms.models import Room, post_message\n"
        "from django.contrib.auth import get_user_model\n"
        "post_message(Room.objects.get(slug='random'), "
        "get_user_model().objects.get(username='bob'), 'while you were away')"
    )
    live_site.resume()
    expect(indicator).to_have_text("live", timeout=40_000, use_inner_text=True)
    expect(first_entry(alice)).to_contain_text("while you were away", timeout=10_000)
    expect(entry(alice, "while you were away")).to_have_count(1)
