"""The fragment catalog at /dev/fragments/ (DEBUG only): every live partial, rendered with
sample data through its real function, with its template, target and swap, so template
authors see each one and where it lands."""

import textwrap

from bs4 import BeautifulSoup
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from rooms import fragments
from rooms.checks import check_fragment, root_elements, swap_of


def fragment_catalog(request: HttpRequest) -> HttpResponse:
    """The catalog page; a 404 unless settings.DEBUG (the route itself always exists)."""
    if not settings.DEBUG:
        raise Http404("The fragment catalog is shown in development (DJANGO_DEBUG=1) only.")
    entries = [catalog_entry(fragment) for fragment in fragments.LIVE_FRAGMENTS]
    return render(request, "dev/fragments.html", {"entries": entries})


def catalog_entry(fragment: fragments.LiveFragment) -> dict:
    """What the catalog shows of one fragment; a fragment that fails shows why, not a 500."""
    problems = [error.msg for error in check_fragment(fragment)]
    try:
        html = fragment.render()
    except Exception:  # the check's message says what went wrong
        html = ""
    swaps = [{"id": el.get("id", ""), "swap": swap_of(el)} for el in root_elements(html)]
    return {
        "fragment": fragment,
        "preview": preview(html),
        "source": textwrap.dedent(html.strip("\n")).strip(),
        "swaps": swaps,
        "problems": problems,
    }


def preview(html: str) -> str:
    """The fragment as shown in the catalog: as rendered, but with no autofocus, which would
    scroll the page to the first editor in the list (the source shows it as it is)."""
    soup = BeautifulSoup(html, "html.parser")
    for element in soup.select("[autofocus]"):
        del element["autofocus"]
    return str(soup)
