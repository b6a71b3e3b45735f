"""System check: every live fragment renders, and its root elements carry the ids its
out-of-band swaps need (the htmx ws extension swaps each top-level element by its id)."""

from bs4 import BeautifulSoup
from django.core import checks
from django.template import TemplateDoesNotExist, TemplateSyntaxError

from rooms import fragments


@checks.register(checks.Tags.templates)
def check_live_fragments(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors = []
    for fragment in fragments.live_fragments():
        errors += check_fragment(fragment)
    return errors


def check_fragment(fragment: fragments.LiveFragment) -> list[checks.CheckMessage]:
    """The problems of one live fragment, each an Error naming it."""
    where = f"live fragment {fragment.name!r} ({fragment.template})"
    try:
        html = fragment.render()
    except (TemplateDoesNotExist, TemplateSyntaxError) as error:
        return [checks.Error(f"{where}: no such template or partial ({error})", id="rooms.E001")]
    roots = [el for el in BeautifulSoup(html, "html.parser").find_all(recursive=False) if el.name]
    problems = [
        checks.Error(
            f"{where}: its root element <{el.name}> has no id, so the ws extension cannot swap it",
            hint="Give every top-level element of a pushed fragment an id.",
            id="rooms.E002",
        )
        for el in roots
        if not el.get("id")
    ]
    target = next((el for el in roots if el.get("id") == fragment.target), None)
    if target is None:
        problems.append(
            checks.Error(
                f"{where}: no root element has id {fragment.target!r}, the target of its swap",
                hint=f"Its root elements have ids {[el.get('id') for el in roots]}.",
                id="rooms.E003",
            )
        )
    elif (target.get("hx-swap-oob") or "true") != fragment.swap:
        problems.append(
            checks.Error(
                f"{where}: #{fragment.target} swaps {target.get('hx-swap-oob')!r}, "
                f"not {fragment.swap!r}",
                id="rooms.E004",
            )
        )
    return problems
