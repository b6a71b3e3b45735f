"""The fragment catalog at /dev/fragments/ (DEBUG only): every live partial, rendered."""

from django.http import Http404


def fragment_catalog(request):
    raise Http404("The fragment catalog is not built yet.")
