"""Views: the first, full-page render of each page, and the forms that work without a socket.

Every write goes through rooms.actions, which holds its permission check.
"""

import logging
import uuid

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from redis.exceptions import RedisError

from rooms import actions, dashboard, fragments, presence
from rooms.consumers import SLOW_DOWN
from rooms.forms import MemberForm, MessageForm, RoomForm, SignupForm, SyncForm
from rooms.models import Room, latest_seq, missed_changes, unread_counts, visible_rooms

logger = logging.getLogger(__name__)


def room_list(request: HttpRequest) -> HttpResponse:
    """The rooms this visitor may see, with the signed-in user's unread counts."""
    rooms = list(visible_rooms(request.user))
    unread = unread_counts(request.user, rooms)
    for room in rooms:
        room.unread = unread.get(room.pk, 0)  # type: ignore[attr-defined]
    return render(request, "rooms/room_list.html", {"rooms": rooms})


@login_required
def room_create(request: HttpRequest) -> HttpResponse:
    """Create a room, owned by its creator."""
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        room = actions.create_room(
            request.user, form.cleaned_data["title"], form.cleaned_data["is_private"]
        )
        return redirect(room)
    return render(request, "rooms/room_form.html", {"form": form})


def readable_room(request: HttpRequest, slug: str) -> Room:
    """The room, or a 404 for a room that does not exist or that this visitor may not see."""
    room = get_object_or_404(Room, slug=slug)
    try:
        actions.require_reader(room, request.user)
    except actions.Forbidden:
        raise Http404("No such room.") from None  # a private room is not even admitted to exist
    return room


def viewer_for(request: HttpRequest, room: Room) -> fragments.Viewer:
    user = request.user
    return fragments.Viewer(
        user_id=user.pk,
        moderator=room.is_moderator(user),
        time_zone=fragments.time_zone_of(user),
    )


def present_names(room: Room) -> list[str]:
    """Who is in the room now, from the presence store the sockets keep ([] if it is away)."""

    async def read() -> list[str]:
        store = presence.get_store()
        try:
            return await store.names(room.pk)
        finally:
            await store.close()

    try:
        return async_to_sync(read)()
    except (RedisError, OSError):
        logger.warning("presence store unavailable for room %s", room.slug, exc_info=True)
        return []


def room_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """A room with its latest messages; the page then goes live over its socket."""
    room = readable_room(request, slug)
    return render_room(request, room, MemberForm())


def render_room(
    request: HttpRequest, room: Room, member_form: MemberForm, status: int = 200, error: str = ""
) -> HttpResponse:
    user = request.user
    viewer = viewer_for(request, room)
    messages = [m.as_event() for m in room.latest_messages()]
    # The page's sync point comes from the rows it shows, not the room's counter, so a
    # message stored while this page renders is sent when the socket connects.
    last_seq = latest_seq(messages)
    actions.mark_read(user, room, last_seq)
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
        # Without a socket the page still lists who is here (sockets keep the store).
        "present": present_names(room),
        # The composer's idempotency key: one composed message is stored once.
        "client_key": uuid.uuid4().hex,
    }
    return render(request, "rooms/room_detail.html", context, status=status)


def over_rate_limit(request: HttpRequest) -> bool:
    """Count one write against the user's limit (shared with their sockets through the
    store). While the store is away the limit still holds, counted in this process."""
    key, window = f"posts:{request.user.pk}", settings.ROOMCAST_POST_RATE_WINDOW

    async def hit() -> int:
        store = presence.get_store()
        try:
            return await store.hit(key, window)
        finally:
            await store.close()

    try:
        count = async_to_sync(hit)()
    except (RedisError, OSError):
        logger.warning("rate limit store unavailable: counting in this process", exc_info=True)
        count = async_to_sync(presence.MemoryStore().hit)(key, window)
    return count > settings.ROOMCAST_POST_RATE_LIMIT


@login_required
@require_POST
def room_post(request: HttpRequest, slug: str) -> HttpResponse:
    """Post a message without the socket (a plain form POST); redirects back to the room."""
    room = readable_room(request, slug)
    if not room.can_post(request.user):
        raise PermissionDenied("You may not post in this room.")
    form = MessageForm(request.POST)
    if not form.is_valid():
        field = "message" if "message" in form.errors else "client_key"
        error = str(form.errors[field][0])
        return render_room(request, room, MemberForm(), status=400, error=error)
    if over_rate_limit(request):
        return render_room(request, room, MemberForm(), status=429, error=SLOW_DOWN)
    try:
        actions.post_message(
            room, request.user, form.cleaned_data["message"], form.cleaned_data["client_key"]
        )
    except actions.ActionError as refusal:
        return render_room(request, room, MemberForm(), status=400, error=str(refusal))
    return redirect(room)


# Edit and delete without a socket: each answers with the partial the socket would send.


def fragment_response(request: HttpRequest, html: str, status: int = 200) -> HttpResponse:
    """A fragment for htmx; a refusal is swapped too (htmx swaps 2xx answers only), so it
    is 200 for htmx requests and `status` for anything else."""
    from_htmx = request.headers.get("HX-Request") == "true"
    return HttpResponse(html, status=200 if from_htmx else status)


def refusal(request: HttpRequest, text: str, status: int = 400) -> HttpResponse:
    return fragment_response(request, fragments.message_error(text), status)


@login_required
@require_GET
def message_show(request: HttpRequest, slug: str, message_id: int) -> HttpResponse:
    """One message as it stands (Cancel on an edit form puts it back)."""
    room = readable_room(request, slug)
    try:
        message = actions.find_message(room, message_id)
    except actions.ActionError as error:
        return refusal(request, str(error), status=404)
    return HttpResponse(fragments.message(message.as_event(), viewer_for(request, room)))


@login_required
@require_http_methods(["GET", "POST"])
def message_edit(request: HttpRequest, slug: str, message_id: int) -> HttpResponse:
    """GET: the message's edit form. POST (`message`): store the edit, answer the message."""
    room = readable_room(request, slug)
    try:
        if request.method == "GET":
            message = actions.message_for_edit(room, request.user, message_id)
            return HttpResponse(fragments.message_editor(message.as_event()))
        form = MessageForm(request.POST)
        if not form.is_valid():
            return refusal(request, str(form.errors["message"][0]))
        if over_rate_limit(request):
            return refusal(request, SLOW_DOWN, status=429)
        message = actions.edit_message(room, request.user, message_id, form.cleaned_data["message"])
    except actions.Forbidden:
        raise Http404("No such room.") from None
    except actions.ActionError as error:
        return refusal(request, str(error))
    return HttpResponse(fragments.message(message.as_event(), viewer_for(request, room)))


@login_required
@require_POST
def message_delete(request: HttpRequest, slug: str, message_id: int) -> HttpResponse:
    """Delete a message (its author or the room's owner); answer its tombstone."""
    room = readable_room(request, slug)
    if over_rate_limit(request):
        return refusal(request, SLOW_DOWN, status=429)
    try:
        message = actions.delete_message(room, request.user, message_id)
    except actions.Forbidden:
        raise Http404("No such room.") from None
    except actions.ActionError as error:
        return refusal(request, str(error))
    return HttpResponse(fragments.message(message.as_event(), viewer_for(request, room)))


@require_GET
def room_updates(request: HttpRequest, slug: str) -> HttpResponse:
    """What changed after `last_seq`, for a page polling without a socket (204: nothing)."""
    room = readable_room(request, slug)
    form = SyncForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("last_seq must be a whole number.")
    after = form.cleaned_data["last_seq"]
    viewer = viewer_for(request, room)
    missed, latest, last_seq = missed_changes(room.pk, after)
    html = fragments.catch_up_or_history(after, missed, latest, viewer, last_seq)
    if not html:
        return HttpResponse(status=204)
    actions.mark_read(request.user, room, last_seq)
    return HttpResponse(html)


def owned_private_room(request: HttpRequest, slug: str) -> Room:
    room = readable_room(request, slug)
    try:
        actions.require_member_manager(room, request.user)
    except actions.ActionError as error:
        raise PermissionDenied(str(error)) from None
    return room


@login_required
@require_POST
def room_member_add(request: HttpRequest, slug: str) -> HttpResponse:
    """The owner adds a member to a private room by username."""
    room = owned_private_room(request, slug)
    form = MemberForm(request.POST)
    if form.is_valid():
        try:
            actions.add_member(room, request.user, form.cleaned_data["username"])
        except actions.ActionError as error:
            form.add_error("username", str(error))
    if not form.is_valid():
        return render_room(request, room, form, status=400)
    return redirect(room)


@login_required
@require_POST
def room_member_remove(request: HttpRequest, slug: str, user_id: int) -> HttpResponse:
    """The owner removes a member; the member's open pages of the room close at once."""
    room = owned_private_room(request, slug)
    member = get_object_or_404(room.members, pk=user_id)
    actions.remove_member(room, request.user, member)
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
