"""Live fragments: each one is a `{% partialdef %}` of the page that shows it.

The page views and the live path render the same partials, so one definition serves the
first render and every push. Each pushed fragment's root carries the id and the
`hx-swap-oob` it needs, in the template. Where a fragment differs by viewer (edit and
delete buttons, who is typing), it is rendered once per *variant*, not once per socket.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import timezone

from rooms import events

ROOM_PAGE = "rooms/room_detail.html"
ROOM_LIST = "rooms/room_list.html"
BASE = "base.html"


def zone(name: str | None) -> tzinfo:
    """The time zone called `name`; UTC for a name that is empty or unknown."""
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def time_zone_of(user: Any) -> str:
    """The time zone name a user reads times in: their profile's; "UTC" for anonymous users
    and users without a profile. One query; never writes."""
    if user is None or not user.is_authenticated:
        return "UTC"
    from rooms.models import Profile  # rooms.models imports this module's neighbours

    name = Profile.objects.filter(user=user).values_list("time_zone", flat=True).first()
    return name or "UTC"


@dataclass(frozen=True)
class Viewer:
    """Who a fragment is rendered for: enough to pick their variant, nothing more."""

    user_id: int | None = None
    moderator: bool = False
    # The reader's own time zone (Profile.time_zone): times and day separators use it.
    time_zone: str = "UTC"

    def role(self, message: dict) -> str:
        """Which buttons this viewer gets on `message`: author, moderator or reader."""
        if message["deleted"] or self.user_id is None:
            return "reader"
        if message["author_id"] == self.user_id:
            return "author"
        return "moderator" if self.moderator else "reader"

    def message_variant(self, message: dict) -> tuple[str, str]:
        """What a rendered `message` depends on for this viewer: the key of render caches."""
        return (self.role(message), self.time_zone)

    def render(self, template: str, context: dict[str, Any]) -> str:
        """Render a partial with this viewer's time zone active (the `date` filter uses it)."""
        with timezone.override(zone(self.time_zone)):
            return render_to_string(template, context)


VARIANT_ACTIONS = {
    "author": {"can_edit": True, "can_delete": True},
    "moderator": {"can_edit": False, "can_delete": True},
    "reader": {"can_edit": False, "can_delete": False},
}


def message_context(message: dict, viewer: Viewer) -> dict:
    """Template values for one message, from the plain values an event carries."""
    return {
        **message,
        "created": datetime.fromtimestamp(message["created"], UTC),
        "continues": message.get("continues", False),
        **VARIANT_ACTIONS[viewer.role(message)],
    }


def new_messages(messages: list[dict], viewer: Viewer, last_seq: int) -> str:
    """Messages appended to `#messages`, and the page's new last sequence number."""
    return viewer.render(
        f"{ROOM_PAGE}#new_messages",
        {"messages": [message_context(m, viewer) for m in messages], "last_seq": last_seq},
    )


def changed_messages(messages: list[dict], viewer: Viewer, last_seq: int) -> str:
    """Messages replaced in place (edited, or turned into tombstones)."""
    return viewer.render(
        f"{ROOM_PAGE}#changed_messages",
        {"messages": [message_context(m, viewer) for m in messages], "last_seq": last_seq},
    )


def catch_up(after_seq: int, messages: list[dict], viewer: Viewer, last_seq: int) -> str:
    """What a page that shows events up to `after_seq` lacks: changes, then new messages."""
    changed = [m for m in messages if m["seq"] <= after_seq]
    new = [m for m in messages if m["seq"] > after_seq]
    return viewer.render(
        f"{ROOM_PAGE}#catch_up",
        {
            "changed": [message_context(m, viewer) for m in changed],
            "messages": [message_context(m, viewer) for m in new],
            "last_seq": last_seq,
        },
    )


def message_history(messages: list[dict], viewer: Viewer, last_seq: int) -> str:
    """The whole `#messages` list, replacing what the page shows."""
    return viewer.render(
        f"{ROOM_PAGE}#message_history_oob",
        {"messages": [message_context(m, viewer) for m in messages], "last_seq": last_seq},
    )


def message(message: dict, viewer: Viewer) -> str:
    """One message, replaced where it stands (an edit form put back)."""
    return viewer.render(
        f"{ROOM_PAGE}#message", {"message": message_context(message, viewer), "oob": True}
    )


def message_editor(message: dict, viewer: Viewer | None = None) -> str:
    """The edit form that replaces one message, for its author's page only."""
    viewer = viewer or Viewer(user_id=message["author_id"])
    return viewer.render(
        f"{ROOM_PAGE}#message_editor",
        {
            "message": message_context(message, viewer),
            "max_length": settings.ROOMCAST_MESSAGE_MAX_LENGTH,
        },
    )


def new_client_key() -> str:
    """A fresh idempotency key for the composer: one per composed message."""
    return uuid.uuid4().hex


def message_form_reset(lines: bool = False) -> str:
    """A blank, focused message input, a new idempotency key and no error: what the
    sender sees after posting (`lines`: from the several-lines composer, which is reset
    instead of the one-line one)."""
    return render_to_string(
        f"{ROOM_PAGE}#{'lines_form_reset' if lines else 'message_form_reset'}",
        {
            "max_length": settings.ROOMCAST_MESSAGE_MAX_LENGTH,
            "client_key": new_client_key(),
            "lines_client_key": new_client_key(),
        },
    )


def go_live(can_post: bool) -> str:
    """Sent on a socket's first sync: the form posts over the socket and polling stops."""
    return render_to_string(
        f"{ROOM_PAGE}#go_live",
        {
            "can_post": can_post,
            "max_length": settings.ROOMCAST_MESSAGE_MAX_LENGTH,
            "client_key": new_client_key(),
        },
    )


def connection_status() -> str:
    """The page's connection indicator, freshly "live": its CSS animation turns it to
    "reconnecting" and then "offline" unless it is sent again in time (every beat)."""
    return render_to_string(f"{ROOM_PAGE}#connection", {"live": True, "oob": True})


def catch_up_or_history(after_seq: int, missed, latest, viewer: Viewer, last_seq: int) -> str:
    """What a page behind by some events gets: the changes, or the latest history when
    it is too far behind (see models.missed_changes); "" when nothing changed."""
    if latest is not None:
        return message_history(latest, viewer, last_seq)
    if missed:
        return catch_up(after_seq, missed, viewer, last_seq)
    return ""


def message_error(error: str) -> str:
    """An error shown next to the message form."""
    return render_to_string(f"{ROOM_PAGE}#message_error_oob", {"error": error})


def presence(names: list[str]) -> str:
    """Who is in the room now."""
    return render_to_string(f"{ROOM_PAGE}#presence", {"present": names, "oob": True})


def typing(names: list[str]) -> str:
    """Who is typing, as one viewer sees it (never themselves)."""
    return render_to_string(f"{ROOM_PAGE}#typing", {"typists": names, "oob": True})


def removed_from_room(room_title: str) -> str:
    """Replaces the whole live section of a room page whose viewer was removed."""
    return render_to_string(f"{ROOM_PAGE}#removed", {"room_title": room_title})


def unread_badge(room_id: int, count: int) -> str:
    """A room's unread count on the room list."""
    return render_to_string(
        f"{ROOM_LIST}#unread", {"room_id": room_id, "count": count, "oob": True}
    )


def room_list_item(room: dict, unread: int | None = None, viewer: Viewer | None = None) -> str:
    """A room's entry on the home page, moved to the top of the list (or added there).

    `room` is rooms.templatetags.roomcast.room_item()'s plain values: id, title, url,
    is_private, and last (author, body, deleted, created as a timestamp) or None. The entry
    is the same for every reader in one time zone (render it once per event); with `unread`,
    the reader's badge follows it (`unread_badge`, the part that differs per reader)."""
    last = room.get("last")
    if last:
        last = {**last, "created": datetime.fromtimestamp(last["created"], UTC)}
    html = (viewer or Viewer()).render(
        f"{ROOM_LIST}#room_list_item", {"room": {**room, "last": last}}
    )
    return html if unread is None else html + unread_badge(room["id"], unread)


def room_list_entry(room: dict, viewer: Viewer | None = None) -> str:
    """A room's entry replaced where it stands (its last message was edited or deleted),
    with a blank badge like room_list_item's: the reader's own follows it."""
    last = room.get("last")
    if last:
        last = {**last, "created": datetime.fromtimestamp(last["created"], UTC)}
    return (viewer or Viewer()).render(
        f"{ROOM_LIST}#room_list_entry", {"room": {**room, "last": last}, "entry_oob": True}
    )


def room_list(rooms: list[dict], unread: dict[int, int], viewer: Viewer) -> str:
    """The whole home page list (`rooms` as room_list_item takes them, in order), with the
    reader's unread counts: what the page's socket sends when it (re)opens."""
    items = []
    for room in rooms:
        last = room.get("last")
        if last:
            last = {**last, "created": datetime.fromtimestamp(last["created"], UTC)}
        items.append({**room, "last": last, "unread": unread.get(room["id"], 0)})
    return viewer.render(f"{ROOM_LIST}#room_list", {"items": items, "oob": True})


def room_list_gone(room_id: int) -> str:
    """Takes a room off the home page of a reader who may no longer see it."""
    return render_to_string(f"{ROOM_LIST}#room_list_gone", {"room_id": room_id})


def mention_toast(event: dict) -> str:
    """A toast on every page of a user who was @mentioned."""
    message = event["message"]
    return render_to_string(
        f"{BASE}#mention_toast",
        {
            "room_title": event["room_title"],
            "room_slug": event["room_slug"],
            "message": {**message, "created": datetime.fromtimestamp(message["created"], UTC)},
        },
    )


# The registry of live fragments ----------------------------------------------------------
# Every partial pushed over a socket: where it lands, when, and a sample rendered through the
# same function the live path calls. The system check (rooms/checks.py), the fragment catalog
# (/dev/fragments/) and docs/templates.md all work from this one list.


@dataclass(frozen=True)
class LiveFragment:
    """One pushed partial, as a template author needs to know it."""

    name: str
    template: str  # "file.html#partial"
    target: str  # the id of the element its push always swaps
    swap: str  # that element's hx-swap-oob ("true" replaces it)
    pushed_when: str
    sample: Callable[[], str]  # renders it with sample data, through its real function

    def render(self) -> str:
        return self.sample()


# A message as events carry it (Message.as_event()), written by user 1, alice.
SAMPLE_MESSAGE = {
    "id": 7,
    "seq": 12,
    "changed_seq": 0,
    "author": "alice",
    "author_id": 1,
    "body": "Release at five, @bob?",
    "edited": False,
    "deleted": False,
    "created": 1_700_000_000.0,
    "continues": False,
}
SAMPLE_EDITED = {**SAMPLE_MESSAGE, "seq": 11, "id": 6, "changed_seq": 13, "edited": True,
                 "body": "Draft notes: https://example.com/notes."}  # fmt: skip
SAMPLE_DELETED = {**SAMPLE_MESSAGE, "changed_seq": 14, "deleted": True, "body": ""}
SAMPLE_AUTHOR = Viewer(user_id=1)
SAMPLE_ROOM: dict[str, Any] = {
    "id": 3,
    "title": "Lobby",
    "url": "/rooms/lobby/",
    "is_private": False,
    "last": {"id": 7, "author": "alice", "body": "Release at five, @bob?", "deleted": False,
             "created": 1_700_000_000.0},
}  # fmt: skip


def _sample_notice() -> str:
    from rooms import live  # rooms.live imports the models: not at this module's import

    event = live.fragment_event(live.SITE, f"{BASE}#notice_toast", {"text": "Back in 5 minutes"})
    return event["html"]


def _sample_bell() -> str:
    return render_to_string("rooms/notifications.html#bell", {"notifications_unread": 3})


def _sample_inbox_new() -> str:
    from django.utils import timezone

    from rooms.notifications import Notification

    notification = Notification(
        pk=9, kind="mention", text="alice mentioned you in Lobby", url="/rooms/lobby/",
        created=timezone.now(),
    )  # fmt: skip
    return render_to_string("rooms/notifications.html#inbox_new", {"notification": notification})


def _sample_export_control() -> str:
    from django.utils import timezone

    from rooms.exports import CONTROL, Export
    from rooms.models import Room

    room = Room(pk=1, slug="lobby", title="Lobby")
    export = Export(room=room, state="running", done=5, total=10, expires_at=timezone.now())
    return render_to_string(CONTROL, {"room": room, "export": export})


def _sample_dashboard() -> str:
    from rooms import dashboard

    per_minute = [0] * 50 + [1, 3, 2, 0, 4, 6, 2, 1, 0, 3]
    lobby = dashboard.RoomFigures(3, "Lobby", "/rooms/lobby/", 2, per_minute)
    return dashboard.render(dashboard.context([lobby], online=2))


LIVE_FRAGMENTS: tuple[LiveFragment, ...] = (
    LiveFragment(
        "new_messages", f"{ROOM_PAGE}#new_messages", "messages", "beforeend",
        "a message is posted: to every page of the room (here as its author sees it)",
        lambda: new_messages([SAMPLE_MESSAGE], SAMPLE_AUTHOR, 12),
    ),
    LiveFragment(
        "changed_messages", f"{ROOM_PAGE}#changed_messages", "message-6", "true",
        "a message is edited",
        lambda: changed_messages([SAMPLE_EDITED], SAMPLE_AUTHOR, 13),
    ),
    LiveFragment(
        "changed_messages (deleted)", f"{ROOM_PAGE}#changed_messages", "message-7", "true",
        "a message is deleted: its tombstone",
        lambda: changed_messages([SAMPLE_DELETED], Viewer(), 14),
    ),
    LiveFragment(
        "catch_up", f"{ROOM_PAGE}#catch_up", "last-seq", "true",
        "a page (re)connects, polls, or missed events: what changed, then what is new",
        lambda: catch_up(11, [SAMPLE_EDITED, SAMPLE_MESSAGE], SAMPLE_AUTHOR, 13),
    ),
    LiveFragment(
        "message_history_oob", f"{ROOM_PAGE}#message_history_oob", "messages", "true",
        "a page is too far behind to catch up message by message",
        lambda: message_history([SAMPLE_EDITED, SAMPLE_MESSAGE], SAMPLE_AUTHOR, 13),
    ),
    LiveFragment(
        "message", f"{ROOM_PAGE}#message", "message-7", "true",
        "the author cancels an edit (their page only)",
        lambda: message(SAMPLE_MESSAGE, SAMPLE_AUTHOR),
    ),
    LiveFragment(
        "message_editor", f"{ROOM_PAGE}#message_editor", "message-7", "true",
        "the author clicks Edit (their page only)",
        lambda: message_editor(SAMPLE_MESSAGE),
    ),
    LiveFragment(
        "message_form_reset", f"{ROOM_PAGE}#message_form_reset", "message-input", "true",
        "the sender's message was stored (their page only)",
        message_form_reset,
    ),
    LiveFragment(
        "lines_form_reset", f"{ROOM_PAGE}#lines_form_reset", "lines-input", "true",
        "the sender's message from the several-lines composer was stored (their page only)",
        lambda: message_form_reset(lines=True),
    ),
    LiveFragment(
        "message_error_oob", f"{ROOM_PAGE}#message_error_oob", "message-error", "true",
        "a frame is refused: bad input, a forbidden action, a flood",
        lambda: message_error("Write a message before sending."),
    ),
    LiveFragment(
        "go_live", f"{ROOM_PAGE}#go_live", "message-form", "true",
        "the socket's first sync: the page stops polling and posts over the socket",
        lambda: go_live(can_post=True),
    ),
    LiveFragment(
        "presence", f"{ROOM_PAGE}#presence", "presence", "true",
        "someone arrives or leaves, and to each new socket",
        lambda: presence(["alice", "bob"]),
    ),
    LiveFragment(
        "typing", f"{ROOM_PAGE}#typing", "typing", "true",
        "someone starts or stops typing (never shown to the typist)",
        lambda: typing(["alice"]),
    ),
    LiveFragment(
        "removed", f"{ROOM_PAGE}#removed", "room", "true",
        "the owner removes this member from a private room; the socket then closes",
        lambda: removed_from_room("Release planning"),
    ),
    LiveFragment(
        "unread", f"{ROOM_LIST}#unread", "unread-3", "true",
        "a message arrives in a room, or the user reads it elsewhere (room list)",
        lambda: unread_badge(3, 4),
    ),
    LiveFragment(
        "room_list_item", f"{ROOM_LIST}#room_list_item", "room-list", "afterbegin",
        "a room gets a message or becomes visible to the user (home page): it moves first, "
        "followed by the reader's unread badge",
        lambda: room_list_item(SAMPLE_ROOM, 2),
    ),
    LiveFragment(
        "room_list_entry", f"{ROOM_LIST}#room_list_entry", "room-3", "true",
        "the room's last message is edited or deleted (home page): its entry, where it stands",
        lambda: room_list_entry({**SAMPLE_ROOM, "last": {**SAMPLE_ROOM["last"], "body": "",
                                                          "deleted": True}}),
    ),
    LiveFragment(
        "room_list", f"{ROOM_LIST}#room_list", "room-list", "true",
        "the home page's socket opens or reopens: every room as it is now",
        lambda: room_list([SAMPLE_ROOM], {3: 2}, Viewer(user_id=2)),
    ),
    LiveFragment(
        "room_list_gone", f"{ROOM_LIST}#room_list_gone", "room-3", "delete",
        "the user may no longer see a private room (removed from it): off their home page",
        lambda: room_list_gone(3),
    ),
    LiveFragment(
        "connection", f"{ROOM_PAGE}#connection", "connection", "true",
        "on sync, and to every local socket every ROOMCAST_LIVE_BEAT seconds (one timer)",
        connection_status,
    ),
    LiveFragment(
        "mention_toast", f"{BASE}#mention_toast", "toasts", "beforeend",
        "someone @mentions the user: on every page of theirs",
        lambda: mention_toast(events.mention_event(2, "Lobby", "lobby", SAMPLE_MESSAGE)),
    ),
    LiveFragment(
        "notice_toast", f"{BASE}#notice_toast", "toasts", "beforeend",
        "code pushes a notice with rooms.live.push",
        _sample_notice,
    ),
    LiveFragment(
        "bell", "rooms/notifications.html#bell", "bell", "true",
        "the user's unread notifications change: on every page of theirs",
        _sample_bell,
    ),
    LiveFragment(
        "inbox_new", "rooms/notifications.html#inbox_new", "inbox", "afterbegin",
        "a notification arrives: on the user's open inbox pages",
        _sample_inbox_new,
    ),
    LiveFragment(
        "export_control", "rooms/exports.html#export_control", "export-1", "true",
        "the user's export of a room moves (at least every second), finishes or fails",
        _sample_export_control,
    ),
    LiveFragment(
        "dashboard_body", "rooms/dashboard.html#dashboard_body", "dashboard", "true",
        "the dashboard's figures change (at most once a second)",
        _sample_dashboard,
    ),
)  # fmt: skip
