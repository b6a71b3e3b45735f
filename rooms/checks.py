"""System check: every live fragment renders, and its root elements carry the ids and swaps
its out-of-band swaps need (the htmx ws extension swaps each top-level element by its id, and
silently drops one whose id is empty or matches nothing)."""

from __future__ import annotations

from bs4 import BeautifulSoup, Tag
from django.core import checks
from django.template import TemplateDoesNotExist, TemplateSyntaxError
from django.template.loader import get_template

from rooms import fragments

# The swap styles htmx 2 knows; "true" (or no attribute) means outerHTML.
SWAP_STYLES = {
    "true", "outerHTML", "innerHTML", "textContent", "beforebegin", "afterbegin", "beforeend",
    "afterend", "delete", "none",
}  # fmt: skip


def root_elements(html: str) -> list[Tag]:
    """The top-level elements of a pushed frame: what the ws extension swaps, one by one."""
    return [el for el in BeautifulSoup(html, "html.parser").find_all(recursive=False) if el.name]


def swap_of(element: Tag) -> str:
    """An element's out-of-band swap; the ws extension treats a bare element as "true"."""
    return str(element.get("hx-swap-oob") or "true")


@checks.register(checks.Tags.templates)
def check_live_fragments(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every fragment of rooms.fragments.LIVE_FRAGMENTS, checked from its sample render."""
    errors = []
    for fragment in fragments.LIVE_FRAGMENTS:
        errors += check_fragment(fragment)
    return errors


def check_fragment(fragment: fragments.LiveFragment) -> list[checks.CheckMessage]:
    """The problems of one live fragment, each an Error naming it."""
    where = f"live fragment {fragment.name!r} ({fragment.template})"
    try:
        get_template(fragment.template)
        html = fragment.render()
    except (TemplateDoesNotExist, TemplateSyntaxError) as error:
        return [checks.Error(f"{where}: no such template or partial ({error})", id="rooms.E001")]
    except Exception as error:  # a stale sample or a broken function: say so, don't crash
        return [
            checks.Error(
                f"{where}: its sample does not render ({type(error).__name__}: {error})",
                hint="Fix its function in rooms/fragments.py, or its sample in LIVE_FRAGMENTS.",
                id="rooms.E005",
            )
        ]
    roots = root_elements(html)
    problems: list[checks.CheckMessage] = [
        checks.Error(
            f"{where}: its root element <{el.name}> has no id, so the ws extension cannot swap it",
            hint="Give every top-level element of a pushed fragment an id.",
            id="rooms.E002",
        )
        for el in roots
        if not el.get("id")
    ]
    problems += [
        checks.Error(
            f"{where}: #{el.get('id')} has hx-swap-oob={swap_of(el)!r}, not a swap htmx knows",
            hint=f"One of {sorted(SWAP_STYLES)}, optionally followed by ':selector'.",
            id="rooms.E006",
        )
        for el in roots
        if el.get("id") and swap_of(el).split(":")[0] not in SWAP_STYLES
    ]
    target = next((el for el in roots if el.get("id") == fragment.target), None)
    if target is None:
        problems.append(
            checks.Error(
                f"{where}: no root element has id {fragment.target!r}, the target of its swap",
                hint=f"Its root elements have ids {[el.get('id', '') for el in roots]}.",
                id="rooms.E003",
            )
        )
    elif swap_of(target) != fragment.swap:
        problems.append(
            checks.Error(
                f"{where}: #{fragment.target} swaps {swap_of(target)!r}, not {fragment.swap!r}",
                hint="Change the partial's hx-swap-oob, or the registry's swap.",
                id="rooms.E004",
            )
        )
    return problems
