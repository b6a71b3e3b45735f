"""Views: the first, full-page render of each page."""

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from rooms import fragments
from rooms.forms import RoomForm, SignupForm
from rooms.models import Room


def room_list(request: HttpRequest) -> HttpResponse:
    """The rooms this visitor may see."""
    rooms = [room for room in Room.objects.all() if room.can_read(request.user)]
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


def room_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """A room with its latest messages; the page then goes live over its socket."""
    room = get_object_or_404(Room, slug=slug)
    messages = [fragments.message_context(m.as_event()) for m in room.latest_messages()]
    context = {
        "room": room,
        "messages": messages,
        # The page's sync point is the last message it shows, not the room's counter, so
        # a message stored while this page renders is sent when the socket connects.
        "last_seq": messages[-1]["seq"] if messages else 0,
        "can_post": room.can_post(request.user),
        "max_length": settings.ROOMCAST_MESSAGE_MAX_LENGTH,
        "ws_url": room.socket_path(),
    }
    return render(request, "rooms/room_detail.html", context)


def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and sign in."""
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("room_list")
    return render(request, "registration/signup.html", {"form": form})
