"""Group names, event shapes and publishing: how a change reaches every process.

Events carry plain values (ids, numbers, strings) so any channel layer can carry them, and
name their group, so the process's fan-out hub knows which local sockets they are for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

# Room events numbered by the room's sequence (caught up from the database when missed).
MESSAGE = "room.message"
MESSAGE_CHANGED = "room.message_changed"
# Room events about the moment (not numbered: a later one supersedes them).
PRESENCE = "room.presence"
# Made by a process's hub for its own sockets, never published.
BATCH = "room.batch"
TYPISTS = "room.typists"
BEHIND = "room.behind"  # the room's stored sequence moved on: catch up to it
ACCESS = "room.access"  # who may read a private room now (the periodic re-check)
TYPING = "room.typing"
MEMBER_REMOVED = "room.member_removed"
# A room someone may now see (created, or they were added to it): the home page lists it.
ROOM_VISIBLE = "room.visible"
# A rendered fragment pushed through rooms.live, to any group.
FRAGMENT = "live.fragment"
# The group of every open page of the site.
SITE_GROUP = "site"
# Events for one user, on every page they have open.
MENTION = "user.mention"
READ = "user.read"
NOTICE = "user.notice"
# The user logged out, changed password, was deactivated or deleted: every socket closes.
USER_REVOKED = "user.revoked"


def room_group(room_id: int) -> str:
    """The group of a room, built from its primary key, never from URL text."""
    return f"room-{int(room_id)}"


def user_group(user_id: int) -> str:
    """The group of one user's open pages."""
    return f"user-{int(user_id)}"


def message_event(room_id: int, message: dict[str, Any]) -> dict[str, Any]:
    """A new message."""
    return {
        "type": MESSAGE,
        "group": room_group(room_id),
        "room": int(room_id),
        "seq": message["seq"],
        "message": message,
    }


def message_changed_event(room_id: int, message: dict[str, Any]) -> dict[str, Any]:
    """An edited or deleted message, numbered by the change."""
    return {
        "type": MESSAGE_CHANGED,
        "group": room_group(room_id),
        "room": int(room_id),
        "seq": message["changed_seq"],
        "message": message,
    }


def batch_event(
    room_id: int, after_seq: int, upto_seq: int, messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """Everything created or changed in (after_seq, upto_seq]: a filled gap."""
    return {
        "type": BATCH,
        "group": room_group(room_id),
        "room": int(room_id),
        "after": int(after_seq),
        "seq": int(upto_seq),
        "messages": messages,
    }


def typists_event(group: str, typists: list[tuple[int, str]]) -> dict[str, Any]:
    """Who is typing in a room now: (user id, username) pairs."""
    return {"type": TYPISTS, "group": group, "typists": typists}


def behind_event(room_id: int, seq: int) -> dict[str, Any]:
    """The room has stored events up to `seq` that may not have reached this process."""
    return {"type": BEHIND, "group": room_group(room_id), "room": int(room_id), "seq": int(seq)}


def access_event(room_id: int, allowed: list[int]) -> dict[str, Any]:
    """The users who may read a private room now."""
    return {"type": ACCESS, "group": room_group(room_id), "room": int(room_id), "allowed": allowed}


def user_revoked_event(user_id: int, reason: str) -> dict[str, Any]:
    """The user's sessions ended (logout, password change, deactivation, deletion)."""
    group = user_group(user_id)
    return {"type": USER_REVOKED, "group": group, "user": int(user_id), "reason": reason}


def presence_event(room_id: int, names: list[str]) -> dict[str, Any]:
    """Who is in the room now."""
    return {"type": PRESENCE, "group": room_group(room_id), "room": int(room_id), "names": names}


def typing_event(room_id: int, user_id: int, name: str, typing: bool) -> dict[str, Any]:
    """Someone started (or stopped) typing in the room."""
    return {
        "type": TYPING,
        "group": room_group(room_id),
        "room": int(room_id),
        "user": int(user_id),
        "name": name,
        "typing": typing,
    }


def member_removed_event(room_id: int, user_id: int) -> dict[str, Any]:
    """A member was removed from a private room: their sockets there close."""
    return {
        "type": MEMBER_REMOVED,
        "group": room_group(room_id),
        "room": int(room_id),
        "user": int(user_id),
    }


def room_visible_event(
    group: str, room: dict[str, Any], user_id: int | None = None, unread: int = 0
) -> dict[str, Any]:
    """A room that the group's users may now see, as a home page lists it.

    `room` holds plain values (rooms.templatetags.roomcast.room_item(): id, title, url,
    is_private, last). A private room goes to one user's group only, and names that user:
    a socket of anyone else drops it. `unread` is that user's count in the room.
    """
    return {
        "type": ROOM_VISIBLE,
        "group": group,
        "room": room,
        "user": None if user_id is None else int(user_id),
        "unread": int(unread),
    }


def mention_event(
    user_id: int, room_title: str, room_slug: str, message: dict[str, Any]
) -> dict[str, Any]:
    """Someone @mentioned the user."""
    return {
        "type": MENTION,
        "group": user_group(user_id),
        "user": int(user_id),
        "room_title": room_title,
        "room_slug": room_slug,
        "message": message,
    }


def fragment_event(group: str, html: str) -> dict[str, Any]:
    """HTML rendered once, for every socket of the group to send as it is."""
    return {"type": FRAGMENT, "group": group, "html": html}


def read_event(user_id: int, room_id: int, seq: int) -> dict[str, Any]:
    """The user has read the room up to `seq` (on one of their pages)."""
    return {"type": READ, "group": user_group(user_id), "room": int(room_id), "seq": int(seq)}


async def apublish(group: str, event: dict[str, Any]) -> None:
    """Send one event to a group from async code."""
    await get_channel_layer().group_send(group, event)


# Set by the fan-out hub (rooms/fanout.py): hands an event to the server's event loop to
# publish, in order, without making the calling thread wait; False if it cannot.
_handoff: Callable[[str, dict[str, Any]], bool] | None = None


def set_handoff(handoff: Callable[[str, dict[str, Any]], bool] | None) -> None:
    global _handoff
    _handoff = handoff


def publish(group: str, event: dict[str, Any]) -> None:
    """Send one event to a group from sync code.

    In a server process (a view or a consumer's database thread), the event is handed to
    the event loop and the thread goes on at once; elsewhere (a management command) it is
    sent before returning. A layer failure is logged, not raised: the write has committed
    already, and every socket catches up from the database when it sees the gap in the
    room's sequence.
    """
    if _handoff is not None and _handoff(group, event):
        return
    try:
        async_to_sync(apublish)(group, event)
    except Exception:
        logger.exception("could not publish %s to %s", event.get("type"), group)


def publish_message(room_id: int, message: dict[str, Any]) -> None:
    """Publish a stored message to its room."""
    event = message_event(room_id, message)
    publish(event["group"], event)


def publish_message_changed(room_id: int, message: dict[str, Any]) -> None:
    """Publish an edit or delete to its room."""
    event = message_changed_event(room_id, message)
    publish(event["group"], event)
