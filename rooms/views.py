"""Views: the first, full-page render of each page, and the owner's member forms."""

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from rooms import dashboard, events, fragments
from rooms.consumers import SLOW_DOWN
from rooms.forms import MemberForm, MessageForm, RoomForm, SignupForm, SyncForm
from rooms.models import (
    Room,
    latest_seq,
    mark_read,
    missed_changes,
    post_message,
    unread_counts,
    visible_rooms,
)
from rooms.presence import hit_from_sync_code


def room_list(request: HttpRequest) -> HttpResponse:
    """The rooms this visitor may see, with the signed-in user's unread counts."""
    rooms = list(visible_rooms(request.user))
    unread = unread_counts(request.user, rooms)
    for room in rooms:
        room.unread = unread.get(room.pk, 0)
    return render(request, "rooms/room_list.html", {"rooms": rooms})


@login_required
def room_create(request: HttpRequest) -> HttpResponse:
    """Create a room, owned by its creator."""
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        room = form.save(commit=False)
        room.owner = request.user
        room.save()
        return redirect(room)
    return render(request, "rooms/room_form.html", {"form": form})


def readable_room(request: HttpRequest, slug: str) -> Room:
    """The room, or a 404 for a room that does not exist or that this visitor may not see."""
    room = get_object_or_404(Room, slug=slug)
    if not room.can_read(request.user):
        raise Http404("No such room.")  # a private room is not even admitted to exist
    return room


def room_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """A room with its latest messages; the page then goes live over its socket."""
    room = readable_room(request, slug)
    return render_room(request, room, MemberForm())


def render_room(
    request: HttpRequest, room: Room, member_form: MemberForm, status: int = 200, error: str = ""
) -> HttpResponse:
    user = request.user
    viewer = fragments.Viewer(user_id=user.pk, moderator=room.is_moderator(user))
    messages = [m.as_event() for m in room.latest_messages()]
    # The page's sync point comes from the rows it shows, not the room's counter, so a
    # message stored while this page renders is sent when the socket connects.
    last_seq = latest_seq(messages)
    mark_read(user, room, last_seq)
    is_owner = room.is_moderator(user)
    context = {
        "room": room,
        "room_slug": room.slug,
        "error": error,
        "messages": [fragments.message_context(m, viewer) for m in messages],
        "last_seq": last_seq,
        "can_post": room.can_post(user),
        "max_length": settings.ROOMCAST_MESSAGE_MAX_LENGTH,
        "is_owner": is_owner,
        "members": room.members.order_by("username") if is_owner else [],
        "member_form": member_form,
    }
    return render(request, "rooms/room_detail.html", context, status=status)


@login_required
@require_POST
def room_post(request: HttpRequest, slug: str) -> HttpResponse:
    """Post a message without the socket (a plain form POST); redirects back to the room."""
    room = readable_room(request, slug)
    if not room.can_post(request.user):
        raise PermissionDenied("You may not post in this room.")
    form = MessageForm(request.POST)
    if not form.is_valid():
        return render_room(request, room, MemberForm(), status=400, error=form.errors["message"][0])
    window = settings.ROOMCAST_POST_RATE_WINDOW
    if hit_from_sync_code(f"posts:{request.user.pk}", window) > settings.ROOMCAST_POST_RATE_LIMIT:
        return render_room(request, room, MemberForm(), status=429, error=SLOW_DOWN)
    post_message(room, request.user, form.cleaned_data["message"])
    return redirect(room)


@require_GET
def room_updates(request: HttpRequest, slug: str) -> HttpResponse:
    """What changed after `last_seq`, for a page polling without a socket (204: nothing)."""
    room = readable_room(request, slug)
    form = SyncForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("last_seq must be a whole number.")
    after = form.cleaned_data["last_seq"]
    viewer = fragments.Viewer(user_id=request.user.pk, moderator=room.is_moderator(request.user))
    missed, latest, last_seq = missed_changes(room.pk, after)
    html = fragments.catch_up_or_history(after, missed, latest, viewer, last_seq)
    if not html:
        return HttpResponse(status=204)
    mark_read(request.user, room, last_seq)
    return HttpResponse(html)


def owned_private_room(request: HttpRequest, slug: str) -> Room:
    room = readable_room(request, slug)
    if not room.is_private or not room.is_moderator(request.user):
        raise PermissionDenied("Only the owner of a private room manages its members.")
    return room


@login_required
@require_POST
def room_member_add(request: HttpRequest, slug: str) -> HttpResponse:
    """The owner adds a member to a private room by username."""
    room = owned_private_room(request, slug)
    form = MemberForm(request.POST)
    if not form.is_valid():
        return render_room(request, room, form, status=400)
    room.members.add(form.cleaned_data["username"])
    return redirect(room)


@login_required
@require_POST
def room_member_remove(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    """The owner removes a member; the member's open pages of the room close at once."""
    room = owned_private_room(request, slug)
    member = get_object_or_404(room.members, pk=user_id)
    with transaction.atomic():
        room.members.remove(member)
        event = events.member_removed_event(room.pk, member.pk)
        transaction.on_commit(lambda: events.publish(event["group"], event), robust=True)
    return redirect(room)


def dashboard_page(request: HttpRequest) -> HttpResponse:
    """The live dashboard: public rooms, who is online, messages per minute."""
    return render(request, "rooms/dashboard.html", dashboard.page_context())


def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and sign in."""
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("room_list")
    return render(request, "registration/signup.html", {"form": form})
