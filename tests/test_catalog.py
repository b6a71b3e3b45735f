"""The fragment catalog at /dev/fragments/ (rooms/catalog.py)."""

import pytest
from bs4 import BeautifulSoup

from rooms import fragments
from rooms.fragments import ROOM_PAGE, LiveFragment

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(client, settings):
    """The catalog page, parsed, as served in development."""
    settings.DEBUG = True
    response = client.get("/dev/fragments/")
    assert response.status_code == 200
    return BeautifulSoup(response.content, "html.parser")


def entry(page, name: str):
    return next(s for s in page.select(".catalog-entry") if s.h2.get_text() == name)


def test_catalog_is_not_served_in_production(client):
    response = client.get("/dev/fragments/")
    assert response.status_code == 404
    assert b"Live fragments" not in response.content


def test_catalog_lists_every_live_fragment_with_template_target_and_swap(catalog):
    sections = catalog.select(".catalog-entry")
    assert [s.h2.get_text() for s in sections] == [f.name for f in fragments.LIVE_FRAGMENTS]
    new_messages = sections[0]
    assert new_messages.select_one(".template").get_text() == "rooms/room_detail.html#new_messages"
    assert new_messages.select_one(".target").get_text() == "#messages"
    assert new_messages.select_one(".swap").get_text() == 'hx-swap-oob="beforeend"'
    every_swap = [li.get_text(" ", strip=True) for li in new_messages.select(".swaps li")]
    assert every_swap == ["#messages beforeend", "#last-seq true"]


def test_catalog_shows_each_fragment_rendered_and_as_source(catalog):
    typing = entry(catalog, "typing")
    assert typing.select_one(".preview #typing").get_text() == "alice is typing…"
    assert typing.select_one("pre.source").get_text().startswith('<p id="typing" class="typing"')


def test_catalog_renders_through_the_fragment_functions(catalog):
    toast = entry(catalog, "mention_toast").select_one(".preview #toasts .toast")
    assert toast.get_text(" ", strip=True).startswith("alice mentioned you in Lobby")
    assert toast.a["href"] == "/rooms/lobby/"


def test_catalog_index_links_to_every_entry(catalog):
    ids = {s["id"] for s in catalog.select(".catalog-entry")}
    assert {a["href"] for a in catalog.select(".catalog-index a")} == {f"#{i}" for i in ids}
    assert len(ids) == len(fragments.LIVE_FRAGMENTS)


def test_catalog_has_no_script_and_no_inline_style(catalog):
    assert catalog.select("script") == []
    assert catalog.select("[style]") == []
    assert catalog.select("style") == []
    sheets = [link["href"] for link in catalog.select("link[rel=stylesheet]")]
    assert sheets == ["/static/roomcast.css", "/static/dev.css"]


def test_catalog_shows_a_broken_fragment_and_why(client, settings, monkeypatch):
    settings.DEBUG = True

    def broken():
        raise KeyError("room_title")

    ghost = LiveFragment("ghost", f"{ROOM_PAGE}#typing", "x", "true", "", broken)
    monkeypatch.setattr(fragments, "LIVE_FRAGMENTS", (*fragments.LIVE_FRAGMENTS[:1], ghost))
    page = BeautifulSoup(client.get("/dev/fragments/").content, "html.parser")
    problems = entry(page, "ghost").select(".problems li")
    assert "KeyError: 'room_title'" in problems[0].get_text()
    assert entry(page, "new_messages").select(".problems") == []


def test_catalog_previews_do_not_steal_focus(catalog):
    """An autofocus in a preview would scroll the page down to it on load."""
    assert catalog.select(".preview [autofocus]") == []
    assert "autofocus" in entry(catalog, "message_editor").select_one("pre.source").get_text()
