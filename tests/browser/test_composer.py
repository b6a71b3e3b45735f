"""Several lines in one message (issue 13): the several-lines composer, in Chromium."""

import pytest
from playwright.sync_api import expect

from tests.browser.test_page import SIZES, message, no_horizontal_overflow, open_room, post

pytestmark = pytest.mark.browser


def open_lines(page):
    page.locator("details.lines summary").click()
    expect(page.locator("#lines-input")).to_be_visible()
    return page.locator("#lines-input")


@pytest.mark.parametrize("size", SIZES)
def test_enter_in_the_several_lines_composer_adds_a_line_and_sends_nothing(
    sign_in, live_site, size
):
    alice = open_room(sign_in("alice", size), live_site)
    lines = open_lines(alice)
    lines.type("first line")
    lines.press("Enter")
    lines.type("second line")
    expect(lines).to_have_value("first line\nsecond line")
    expect(message(alice, "first line")).to_have_count(0)


@pytest.mark.parametrize("size", SIZES)
def test_send_posts_the_lines_as_one_message_shown_with_its_line_break(sign_in, live_site, size):
    alice = open_room(sign_in("alice", size), live_site)
    bob = open_room(sign_in("bob", size), live_site)
    lines = open_lines(alice)
    lines.fill("first line\nsecond line")
    alice.locator("#lines-form button[type=submit]").click()
    expect(lines).to_have_value("", timeout=5_000)  # the form reset: stored
    for page in (alice, bob):
        body = message(page, "second line").locator(".body")
        expect(body).to_have_count(1)
        assert body.inner_text() == "first line\nsecond line"
        # Shown on two lines: taller than a message of one line.
        one_line = message(page, "history line 39").locator(".body").bounding_box()["height"]
        assert body.bounding_box()["height"] > 1.5 * one_line
    assert no_horizontal_overflow(alice)


def test_the_one_line_composer_is_hidden_while_several_lines_are_open(sign_in, live_site):
    alice = open_room(sign_in("alice", "desktop"), live_site)
    open_lines(alice)
    expect(alice.locator("#message-input")).to_be_hidden()
    alice.locator("details.lines summary").click()
    expect(alice.locator("#message-input")).to_be_visible()
    expect(alice.locator("#lines-input")).to_be_hidden()


def test_a_post_from_one_composer_keeps_the_others_draft(sign_in, live_site):
    alice = open_room(sign_in("alice", "desktop"), live_site)
    lines = open_lines(alice)
    lines.fill("a draft\nof two lines")
    alice.locator("details.lines summary").click()  # back to one line
    post(alice, "a quick one")
    expect(message(alice, "a quick one")).to_have_count(1)
    expect(alice.locator("#lines-input")).to_have_value("a draft\nof two lines")
