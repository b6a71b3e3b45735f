"""The fragment catalog at /dev/fragments/ (DEBUG only): every live partial, rendered with
sample data, with its template, target and swap, so template authors see each one and
where it lands."""

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from rooms import fragments


def fragment_catalog(request: HttpRequest) -> HttpResponse:
    if not settings.DEBUG:
        raise Http404("The fragment catalog is shown in development (DJANGO_DEBUG=1) only.")
    entries = [{"fragment": f, "html": f.render()} for f in fragments.live_fragments()]
    return render(request, "dev/fragments.html", {"entries": entries})
