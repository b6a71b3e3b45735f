"""Live fragments: each one is a `{% partialdef %}` of the page that shows it.

The page views and the live path render the same partials, so one definition serves the
first render and every push. Each pushed fragment's root carries the id and the
`hx-swap-oob` it needs, in the template. Where a fragment differs by viewer (edit and
delete buttons, who is typing), it is rendered once per *variant*, not once per socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.template.loader import render_to_string

ROOM_PAGE = "rooms/room_detail.html"
ROOM_LIST = "rooms/room_list.html"
BASE = "base.html"


@dataclass(frozen=True)
class Viewer:
    """Who a fragment is rendered for: enough to pick their variant, nothing more."""

    user_id: int | None = None
    moderator: bool = False

    def message_variant(self, message: dict) -> str:
        """Which buttons this viewer gets on `message`."""
        if message["deleted"] or self.user_id is None:
            return "reader"
        if message["author_id"] == self.user_id:
            return "author"
        return "moderator" if self.moderator else "reader"


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
        **VARIANT_ACTIONS[viewer.message_variant(message)],
    }


def new_messages(messages: list[dict], viewer: Viewer, last_seq: int) -> str:
    """Messages appended to `#messages`, and the page's new last sequence number."""
    return render_to_string(
        f"{ROOM_PAGE}#new_messages",
        {"messages": [message_context(m, viewer) for m in messages], "last_seq": last_seq},
    )


def changed_messages(messages: list[dict], viewer: Viewer, last_seq: int) -> str:
    """Messages replaced in place (edited, or turned into tombstones)."""
    return render_to_string(
        f"{ROOM_PAGE}#changed_messages",
        {"messages": [message_context(m, viewer) for m in messages], "last_seq": last_seq},
    )


def catch_up(after_seq: int, messages: list[dict], viewer: Viewer, last_seq: int) -> str:
    """What a page that shows events up to `after_seq` lacks: changes, then new messages."""
    changed = [m for m in messages if m["seq"] <= after_seq]
    new = [m for m in messages if m["seq"] > after_seq]
    return render_to_string(
        f"{ROOM_PAGE}#catch_up",
        {
            "changed": [message_context(m, viewer) for m in changed],
            "messages": [message_context(m, viewer) for m in new],
            "last_seq": last_seq,
        },
    )


def message_history(messages: list[dict], viewer: Viewer, last_seq: int) -> str:
    """The whole `#messages` list, replacing what the page shows."""
    return render_to_string(
        f"{ROOM_PAGE}#message_history_oob",
        {"messages": [message_context(m, viewer) for m in messages], "last_seq": last_seq},
    )


def message(message: dict, viewer: Viewer) -> str:
    """One message, replaced where it stands (an edit form put back)."""
    return render_to_string(
        f"{ROOM_PAGE}#message", {"message": message_context(message, viewer), "oob": True}
    )


def message_editor(message: dict) -> str:
    """The edit form that replaces one message, for its author's page only."""
    return render_to_string(
        f"{ROOM_PAGE}#message_editor",
        {"message": message, "max_length": settings.ROOMCAST_MESSAGE_MAX_LENGTH},
    )


def message_form_reset() -> str:
    """A blank, focused message input and no error: what the sender sees after posting."""
    return render_to_string(
        f"{ROOM_PAGE}#message_form_reset", {"max_length": settings.ROOMCAST_MESSAGE_MAX_LENGTH}
    )


def go_live(can_post: bool) -> str:
    """Sent on a socket's first sync: the form posts over the socket and polling stops."""
    return render_to_string(
        f"{ROOM_PAGE}#go_live",
        {"can_post": can_post, "max_length": settings.ROOMCAST_MESSAGE_MAX_LENGTH},
    )


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
