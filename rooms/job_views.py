"""Pages and forms of background work: a room's export control and download, the inbox."""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from rooms import digest, exports, notifications
from rooms.models import Profile, Room

CONTROL = exports.CONTROL


def signed_in(request: HttpRequest) -> User:
    """The user of a view behind login_required."""
    return cast(User, request.user)


def readable_room(request: HttpRequest, slug: str) -> Room:
    """The room, or a 404 for one that does not exist or that this user may not read."""
    room = get_object_or_404(Room, slug=slug)
    if not room.can_read(signed_in(request)):
        raise Http404("No such room.")
    return room


@login_required
@require_http_methods(["GET", "POST"])
def export_control(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the user's export control for the room. POST: ask for an export.

    Asking again while one runs shows the running one; it does not start a second.
    """
    room = readable_room(request, slug)
    context: dict[str, Any] = {"room": room}
    if request.method == "POST":
        fmt = request.POST.get("format", "")
        if fmt not in dict(exports.Export.FORMATS):
            context["error"] = "Choose Markdown or JSON."
            context["export"] = exports.latest(room, signed_in(request))
            # htmx swaps only successful answers: the error is shown with a 200.
            status = 200 if request.headers.get("HX-Request") else 400
            return render(request, CONTROL, context, status=status)
        export, _ = exports.request_export(room, signed_in(request), fmt)
        if not request.headers.get("HX-Request"):
            return redirect(room)
        context["export"] = export
    else:
        context["export"] = exports.latest(room, signed_in(request))
    return render(request, CONTROL, context)


@login_required
@require_GET
def export_download(request: HttpRequest, export_id: str) -> HttpResponseBase:
    """The finished file, for the user who asked for it only (everyone else: 404)."""
    export = exports.Export.objects.filter(pk=export_id, user=signed_in(request)).first()
    if export is None or export.state not in (exports.Export.DONE, exports.Export.EXPIRED):
        raise Http404("No such export.")
    if not export.is_downloadable(timezone.now()) or not export.path.exists():
        return HttpResponse("This export has expired. Ask for a new one.", status=410)
    content_type = "text/markdown" if export.format == "md" else "application/json"
    response = FileResponse(
        open(export.path, "rb"),  # noqa: SIM115 (FileResponse closes it)
        as_attachment=True,
        filename=export.filename,
        content_type=f"{content_type}; charset=utf-8",
    )
    response["Cache-Control"] = "private, no-store"
    return response


@require_http_methods(["GET", "POST"])
def digest_unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """The digest email's unsubscribe link: GET asks to confirm, POST turns digests off.

    A GET changes nothing (mail scanners follow links); the signed token names the user, so
    no login is needed.
    """
    user_id = digest.user_of_token(token)
    if user_id is None:
        raise Http404("No such link.")
    profile = Profile.for_user(get_object_or_404(get_user_model(), pk=user_id))
    done = False
    if request.method == "POST":
        Profile.objects.filter(pk=profile.pk).update(email_digest=False)
        done = True
    return render(request, "rooms/unsubscribe.html", {"done": done})


@login_required
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    """The user's notifications, newest first; the ones shown are marked read."""
    shown = list(
        notifications.Notification.objects.filter(user=signed_in(request))[
            : notifications.INBOX_LENGTH
        ]
    )
    response = render(request, "rooms/notifications.html", {"notifications": shown})
    user_id = signed_in(request).pk
    notifications.mark_read(user_id, [n.pk for n in shown if n.read_at is None])
    return response
