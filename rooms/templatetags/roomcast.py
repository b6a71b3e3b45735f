"""Template tags and filters for Roomcast's pages and fragments."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from django import template
from django.db.models import OuterRef, Subquery
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe

from rooms import fragments
from rooms.models import MENTION, Message, Room, unread_counts, visible_rooms

register = template.Library()

# Matched on the raw text, before escaping, so a link never splits an entity: an URL ends at
# whitespace, a quote or an angle bracket. Only http(s): never javascript: and the like.
URL = r"""https?://[^\s"'<>]+"""
TOKEN = re.compile(f"(?P<url>{URL})|{MENTION.pattern}")
# Punctuation that ends a sentence rather than the link it follows.
TRAILING = ".,;:!?)]}"
AVATAR_COLOURS = 12


def _link(url: str) -> str:
    trail = ""
    while url and url[-1] in TRAILING:
        url, trail = url[:-1], url[-1] + trail
    return str(
        format_html(
            '<a href="{}" rel="noopener nofollow ugc" target="_blank">{}</a>{}', url, url, trail
        )
    )


@register.filter
def mentions(text: str) -> SafeString:
    """Escape `text` and highlight each @username in it."""
    escaped = str(conditional_escape(text))
    # Usernames hold no characters that escaping changes, so matching after escaping is safe.
    return mark_safe(
        MENTION.sub(lambda m: format_html('<mark class="mention">@{}</mark>', m[1]), escaped)
    )


@register.filter
def message_text(text: str) -> SafeString:
    """Escape `text`, turn http(s) URLs into links and highlight @mentions (not inside URLs)."""
    parts, start = [], 0
    for match in TOKEN.finditer(str(text)):
        parts.append(str(conditional_escape(text[start : match.start()])))
        if match["url"]:
            parts.append(_link(match["url"]))
        else:
            parts.append(str(format_html('<mark class="mention">@{}</mark>', match[2])))
        start = match.end()
    parts.append(str(conditional_escape(text[start:])))
    return mark_safe("".join(parts))


@register.filter
def initials(name: str) -> str:
    """One or two letters for an avatar: "alice" -> "AL", "mary.jones" -> "MJ"."""
    parts = [p for p in re.split(r"[\W_]+", str(name)) if p]
    if len(parts) >= 2:
        return (parts[0][0] + parts[1][0]).upper()
    word = parts[0] if parts else str(name) or "?"
    return word[:2].upper()


@register.filter
def avatar_colour(name: str) -> int:
    """A colour number (0-11) derived from the username: the same name, the same colour."""
    return sum(str(name).encode()) % AVATAR_COLOURS


@register.simple_tag(takes_context=True)
def reader_time_zone(context: template.Context) -> str:
    """The signed-in reader's time zone (their profile's), or UTC; never writes."""
    return fragments.time_zone_of(context.get("user"))


@register.simple_tag
def new_client_key() -> str:
    """A fresh idempotency key, for a composer rendered without one in its context."""
    return fragments.new_client_key()


def room_overview(user: Any, rooms: list[Room] | None = None) -> list[dict[str, Any]]:
    """The rooms `user` may see, each with its last message: most recently active first,
    then the rooms without messages, in the order given (by title)."""
    latest = Message.objects.filter(room=OuterRef("pk")).order_by("-seq")
    queryset = (
        visible_rooms(user) if rooms is None else Room.objects.filter(pk__in=[r.pk for r in rooms])
    )
    rows = queryset.annotate(
        last_body=Subquery(latest.values("body")[:1]),
        last_author=Subquery(latest.values("author__username")[:1]),
        last_created=Subquery(latest.values("created")[:1]),
        last_deleted=Subquery(latest.values("deleted")[:1]),
        last_id=Subquery(latest.values("pk")[:1]),
    )
    order = {room.pk: n for n, room in enumerate(rooms)} if rooms is not None else {}
    items = sorted((room_item(row) for row in rows), key=lambda item: order.get(item["id"], 0))
    # A stable sort: rooms without messages keep their order, after the active ones.
    items.sort(key=lambda item: item["last"]["created"] if item["last"] else -1.0, reverse=True)
    return items


def room_item(row: Any) -> dict[str, Any]:
    """The plain values a room list entry shows (what a live push of it would carry)."""
    last = None
    if row.last_created is not None:
        last = {
            "id": row.last_id,
            "author": row.last_author or "system",
            "body": "" if row.last_deleted else row.last_body,
            "deleted": bool(row.last_deleted),
            "created": row.last_created.timestamp(),
        }
    return {
        "id": row.pk,
        "title": row.title,
        "url": row.get_absolute_url(),
        "is_private": row.is_private,
        "last": last,
    }


@register.simple_tag(takes_context=True)
def room_list_items(context: template.Context, rooms: list[Room]) -> list[dict[str, Any]]:
    """The home page's rooms (those the view found) with last message and unread count."""
    user = context.get("user")
    items = room_overview(user, rooms)
    signed_in = user is not None and user.is_authenticated
    unread = {room.pk: getattr(room, "unread", 0) for room in rooms}
    for item in items:
        item["unread"] = unread.get(item["id"], 0) if signed_in else None
        if item["last"]:
            item["last"]["created"] = datetime.fromtimestamp(item["last"]["created"], UTC)
    return items


@register.inclusion_tag("rooms/sidebar.html", takes_context=True)
def room_sidebar(context: template.Context, current: Room | None = None) -> dict[str, Any]:
    """The rooms beside a conversation: each with the reader's unread count."""
    user = context.get("user")
    rooms = list(visible_rooms(user)) if user is not None else []
    unread = unread_counts(user, rooms) if user is not None else {}
    return {
        "rooms": [
            {"room": room, "unread": unread.get(room.pk, 0), "current": room == current}
            for room in rooms
        ],
        "user": user,
        "current": current,
    }
