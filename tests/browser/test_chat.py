"""Two people chat in two real browsers: live messages, presence, typing, a server restart."""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ROOT_DIR = Path(__file__).resolve().parents[2]


def open_room(page, live_site, slug: str = "lobby"):
    page.goto(f"{live_site.base}/rooms/{slug}/")
    # The socket is up once its first sync has swapped in the live form.
    expect(page.locator("#message-form[ws-send]")).to_have_count(1, timeout=10_000)
    return page


def post(page, text: str) -> None:
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")


def bodies(page) -> list[str]:
    return page.locator("#messages .message .body").all_inner_texts()


def test_two_users_chat_live(sign_in, live_site):
    alice = open_room(sign_in("alice"), live_site)
    bob = open_room(sign_in("bob"), live_site)
    post(alice, "hello bob <b>not bold</b>")
    expect(bob.locator("#messages .message .body").last).to_have_text(
        "hello bob <b>not bold</b>", timeout=5_000
    )
    post(bob, "hi @alice")
    expect(alice.locator("#messages .message .body").last).to_have_text("hi @alice")
    expect(alice.locator("#messages .message mark.mention").last).to_have_text("@alice")
    expect(alice.locator("#message-input")).to_have_value("")


def test_presence_and_typing_show(sign_in, live_site):
    alice = open_room(sign_in("alice"), live_site)
    bob = open_room(sign_in("bob"), live_site)
    expect(alice.locator("#presence li")).to_have_text(["alice", "bob"], timeout=5_000)
    bob.type("#message-input", "typing away", delay=20)
    expect(alice.locator("#typing")).to_have_text("bob is typing…", timeout=5_000)
    expect(bob.locator("#typing")).to_have_text("")  # never shown to the typist
    bob.press("#message-input", "Enter")
    expect(alice.locator("#typing")).to_have_text("", timeout=5_000)
    bob.close()
    expect(alice.locator("#presence li")).to_have_text(["alice"], timeout=10_000)


def test_a_server_restart_loses_nothing(sign_in, live_site):
    alice = open_room(sign_in("alice"), live_site)
    bob = open_room(sign_in("bob"), live_site)
    post(alice, "before the restart")
    expect(bob.locator("#messages .message .body").last).to_have_text("before the restart")

    def while_down():
        for n in range(3):
            live_site.manage("announce", "lobby", f"while the server was down {n}")

    live_site.restart(while_down)
    expected = [f"while the server was down {n}" for n in range(3)]
    for page in (alice, bob):
        # The ws extension reconnects (close code 1006) and the page catches up.
        expect(page.locator("#messages .message .body").last).to_have_text(
            expected[-1], timeout=30_000
        )
    post(bob, "after the restart")
    expect(alice.locator("#messages .message .body").last).to_have_text("after the restart")
    for page in (alice, bob):
        shown = bodies(page)
        assert shown[-5:] == ["before the restart", *expected, "after the restart"]
        assert len(shown) == len(set(page.locator("#messages .message").evaluate_all(
            "els => els.map(e => e.id)"
        )))  # fmt: skip


def test_the_page_loads_no_script_but_htmx_and_its_ws_extension(sign_in, live_site):
    page = sign_in("alice")
    scripts = []
    page.on("request", lambda r: r.resource_type == "script" and scripts.append(r.url))
    open_room(page, live_site)
    sources = page.locator("script").evaluate_all("els => els.map(e => e.getAttribute('src'))")
    fetched = sorted(re.sub(r".*/", "", url) for url in scripts)
    assert fetched == ["htmx-2.min.js", "hx-ws-2.min.js"]
    assert sorted(re.sub(r".*/", "", src or "(inline)") for src in sources) == fetched


def test_screenshot_of_a_chat(sign_in, live_site, tmp_path):
    """ROOMCAST_SCREENSHOT=docs/screenshot.png make test ... renews the README's picture."""
    alice = open_room(sign_in("alice"), live_site)
    bob = open_room(sign_in("bob"), live_site)
    post(bob, "Release notes are in the doc, @alice")
    post(alice, "Thanks! Reviewing now.")
    bob.wait_for_timeout(2_100)  # let bob's typing throttle window (2 s) pass since his post
    bob.type("#message-input", "One more", delay=20)
    expect(alice.locator("#typing")).to_have_text("bob is typing…", timeout=5_000)
    path = os.environ.get("ROOMCAST_SCREENSHOT") or tmp_path / "chat.png"
    alice.screenshot(path=str(ROOT_DIR / path))
    assert (ROOT_DIR / path).stat().st_size > 0
