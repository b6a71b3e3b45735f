"""The fragment catalog at /dev/fragments/ and the system check on live fragments."""

import pytest
from bs4 import BeautifulSoup
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from rooms import checks, fragments
from rooms.fragments import LiveFragment

pytestmark = pytest.mark.django_db


def entry(name: str) -> LiveFragment:
    return next(f for f in fragments.live_fragments() if f.name == name)


# The catalog


def test_catalog_is_not_served_in_production(client):
    assert client.get("/dev/fragments/").status_code == 404


def test_catalog_lists_every_live_fragment_with_template_target_and_swap(client, settings):
    settings.DEBUG = True
    page = BeautifulSoup(client.get("/dev/fragments/").content, "html.parser")
    sections = page.select(".catalog-entry")
    assert [s.h2.get_text() for s in sections] == [f.name for f in fragments.live_fragments()]
    new_messages = sections[0]
    assert new_messages.select_one(".template").get_text() == "rooms/room_detail.html#new_messages"
    assert new_messages.select_one(".target").get_text() == "#messages"
    assert new_messages.select_one(".swap").get_text() == 'hx-swap-oob="beforeend"'


def test_catalog_shows_each_fragment_rendered_and_as_source(client, settings):
    settings.DEBUG = True
    page = BeautifulSoup(client.get("/dev/fragments/").content, "html.parser")
    typing = next(s for s in page.select(".catalog-entry") if s.h2.get_text() == "typing")
    assert typing.select_one(".preview #typing").get_text() == "alice is typing…"
    assert '<p id="typing"' in typing.select_one("pre.source").get_text()


# The system check


def test_every_live_fragment_passes_the_check():
    assert checks.check_live_fragments() == []


def test_check_passes_through_manage_py():
    call_command("check")


def test_check_names_a_fragment_whose_partial_does_not_exist(monkeypatch):
    broken = LiveFragment("ghost", "rooms/room_detail.html#no_such_partial", "x", "true", "", {})
    monkeypatch.setattr(fragments, "live_fragments", lambda: [broken])
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E001"
    assert "live fragment 'ghost' (rooms/room_detail.html#no_such_partial)" in error.msg


def test_check_names_a_fragment_whose_root_lacks_an_id(monkeypatch):
    presence = entry("presence")
    # The presence partial without the id its swap needs: as if someone dropped id="presence".
    lost_id = LiveFragment("presence", "rooms/room_detail.html#typing", "presence", "true", "",
                           {"typists": [], "oob": True})  # fmt: skip
    monkeypatch.setattr(fragments, "live_fragments", lambda: [presence, lost_id])
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E003"
    assert "no root element has id 'presence'" in error.msg


class Pushes(LiveFragment):
    """A live fragment whose template renders `html` (its context)."""

    def render(self) -> str:
        return self.context["html"]


def test_check_names_a_root_element_without_any_id(monkeypatch):
    bad = Pushes("anonymous div", "bad.html#push", "x", "true", "", {"html": "<div>hi</div>"})
    monkeypatch.setattr(fragments, "live_fragments", lambda: [bad])
    errors = checks.check_live_fragments()
    assert [e.id for e in errors] == ["rooms.E002", "rooms.E003"]
    assert "its root element <div> has no id" in errors[0].msg


def test_check_names_a_target_with_the_wrong_swap(monkeypatch):
    html = '<div id="x" hx-swap-oob="afterend">hi</div>'
    bad = Pushes("wrong swap", "bad.html#push", "x", "beforeend", "", {"html": html})
    monkeypatch.setattr(fragments, "live_fragments", lambda: [bad])
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E004" and "swaps 'afterend', not 'beforeend'" in error.msg


def test_manage_py_check_fails_on_a_broken_fragment(monkeypatch):
    broken = LiveFragment("ghost", "rooms/room_detail.html#no_such_partial", "x", "true", "", {})
    monkeypatch.setattr(fragments, "live_fragments", lambda: [broken])
    with pytest.raises(SystemCheckError, match="live fragment 'ghost'"):
        call_command("check")
