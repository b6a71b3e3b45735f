"""The system check on live fragments (rooms/checks.py), from the registry in rooms/fragments.py."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.template.loader import render_to_string

from rooms import checks, fragments
from rooms.fragments import ROOM_PAGE, LiveFragment


def registry_of(monkeypatch, *entries: LiveFragment) -> None:
    monkeypatch.setattr(fragments, "LIVE_FRAGMENTS", entries)


def pushing(html: str, name: str = "bad", target: str = "x", swap: str = "true") -> LiveFragment:
    """A registry entry whose function renders `html` (from a template that exists)."""
    return LiveFragment(name, f"{ROOM_PAGE}#typing", target, swap, "", lambda: html)


def test_every_live_fragment_passes_the_check():
    assert checks.check_live_fragments() == []


def test_manage_py_check_passes():
    call_command("check")


def test_the_registry_covers_every_pushed_partial():
    names = {f.template.split("#")[1] for f in fragments.LIVE_FRAGMENTS}
    assert names == {
        "new_messages", "changed_messages", "catch_up", "message_history_oob", "message",
        "message_editor", "message_form_reset", "lines_form_reset", "message_error_oob",
        "go_live", "presence", "typing", "removed", "unread", "mention_toast", "notice_toast",
        "dashboard_body", "room_list", "room_list_item", "room_list_entry", "room_list_gone",
        "connection", "bell", "inbox_new", "export_control",
    }  # fmt: skip


def test_the_registry_renders_through_the_real_functions(monkeypatch):
    """A fragment function that breaks its partial's ids fails the check: the samples call it."""
    monkeypatch.setattr(fragments, "typing", lambda names: "<p>typing…</p>")
    [error] = [e for e in checks.check_live_fragments() if e.id == "rooms.E002"]
    assert error.msg.startswith("live fragment 'typing' (rooms/room_detail.html#typing): ")


def test_check_names_a_fragment_whose_partial_does_not_exist(monkeypatch):
    template = f"{ROOM_PAGE}#no_such_partial"
    ghost = LiveFragment("ghost", template, "x", "true", "", lambda: render_to_string(template))
    registry_of(monkeypatch, ghost)
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E001"
    assert error.msg.startswith(f"live fragment 'ghost' ({template}): no such template or partial")


def test_check_names_a_registry_entry_with_a_stale_template_name(monkeypatch):
    """The function renders fine, but the registry names a partial that is gone."""
    stale = LiveFragment("stale", f"{ROOM_PAGE}#old_name", "typing", "true", "",
                         lambda: fragments.typing([]))  # fmt: skip
    registry_of(monkeypatch, stale)
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E001" and "live fragment 'stale'" in error.msg


def test_check_names_a_fragment_whose_root_lacks_its_target_id(monkeypatch):
    # The presence entry, as if someone dropped id="presence" from its partial.
    lost = LiveFragment("presence", f"{ROOM_PAGE}#presence", "presence", "true", "",
                        lambda: fragments.typing([]))  # fmt: skip
    registry_of(monkeypatch, lost)
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E003"
    assert error.msg == (
        "live fragment 'presence' (rooms/room_detail.html#presence): "
        "no root element has id 'presence', the target of its swap"
    )
    assert error.hint == "Its root elements have ids ['typing']."


def test_check_names_a_root_element_without_any_id(monkeypatch):
    registry_of(monkeypatch, pushing('<div id="x">ok</div><div>hi</div>', name="anonymous div"))
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E002"
    assert "'anonymous div'" in error.msg and "its root element <div> has no id" in error.msg


def test_check_names_a_root_element_with_an_empty_id(monkeypatch):
    registry_of(monkeypatch, pushing('<div id="x">ok</div><p id="">hi</p>'))
    assert [e.id for e in checks.check_live_fragments()] == ["rooms.E002"]


def test_check_names_a_target_with_the_wrong_swap(monkeypatch):
    html = '<div id="x" hx-swap-oob="afterend">hi</div>'
    registry_of(monkeypatch, pushing(html, swap="beforeend"))
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E004" and "#x swaps 'afterend', not 'beforeend'" in error.msg


def test_check_names_a_swap_htmx_does_not_know(monkeypatch):
    html = '<div id="x">ok</div><div id="y" hx-swap-oob="beforeEnd">hi</div>'
    registry_of(monkeypatch, pushing(html))
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E006" and "#y has hx-swap-oob='beforeEnd'" in error.msg


def test_check_accepts_a_swap_with_a_selector(monkeypatch):
    html = '<div id="x">ok</div><div id="y" hx-swap-oob="beforeend:#messages">hi</div>'
    registry_of(monkeypatch, pushing(html))
    assert checks.check_live_fragments() == []


def test_check_names_a_fragment_whose_sample_fails(monkeypatch):
    def broken():
        raise KeyError("room_title")

    registry_of(monkeypatch, LiveFragment("toast", f"{ROOM_PAGE}#typing", "x", "true", "", broken))
    [error] = checks.check_live_fragments()
    assert error.id == "rooms.E005"
    assert "live fragment 'toast'" in error.msg and "KeyError: 'room_title'" in error.msg


def test_manage_py_check_fails_naming_a_broken_fragment(monkeypatch):
    registry_of(monkeypatch, pushing("<div>no id</div>", name="ghost"))
    with pytest.raises(SystemCheckError, match="live fragment 'ghost'"):
        call_command("check")
