"""Notifications that persist: an inbox per user, and a bell with a live unread count.

Mentions, being added to or removed from a private room, and finished exports each leave
a `Notification`. The write layer (rooms/actions.py) calls `notify_on_commit` (or the
helpers below) next to its own events; the bell and the inbox of every page the user has
open are updated by a pushed fragment after commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from rooms import live

if TYPE_CHECKING:
    from rooms.models import Room

BELL = "rooms/notifications.html#bell"
NEW_ITEM = "rooms/notifications.html#inbox_new"
# The inbox page lists at most this many, newest first.
INBOX_LENGTH = 100


class Notification(models.Model):
    """Something that happened for a user, kept until they have seen it (and after)."""

    MENTION = "mention"
    ADDED = "added"
    REMOVED = "removed"
    EXPORT = "export"
    KINDS = [
        (MENTION, "Mention"),
        (ADDED, "Added to a room"),
        (REMOVED, "Removed from a room"),
        (EXPORT, "Export ready"),
    ]

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=16, choices=KINDS)
    text = models.CharField(max_length=300)
    url = models.CharField(max_length=300, blank=True)
    # What the notification is about ("export-<id>", "mention-<message id>"): the same
    # thing notified twice (a job run again) is one notification.
    key = models.CharField(max_length=100, null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "key"],
                condition=Q(key__isnull=False),
                name="notification_unique_user_key",
            )
        ]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_user_unread")]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user_id}: {self.text}"


def unread(user_id: int) -> int:
    """How many of the user's notifications they have not seen."""
    return Notification.objects.filter(user_id=user_id, read_at__isnull=True).count()


def notify(
    user_id: int, kind: str, text: str, url: str = "", key: str | None = None
) -> Notification | None:
    """Store a notification and update the user's bell and inbox on every open page.

    With a `key`, a second call for the same thing does nothing and returns None.
    """
    fields = {"kind": kind, "text": text[:300], "url": url[:300]}
    with transaction.atomic():
        if key is None:
            notification = Notification.objects.create(user_id=user_id, **fields)
        else:
            notification, created = Notification.objects.get_or_create(
                user_id=user_id, key=key, defaults=fields
            )
            if not created:
                return None
        count = unread(user_id)
        target = live.User(user_id)
        live.push(target, NEW_ITEM, {"notification": notification})
        live.push(target, BELL, {"notifications_unread": count})
    return notification


def notify_on_commit(
    user_id: int, kind: str, text: str, url: str = "", key: str | None = None
) -> None:
    """`notify` once the current transaction commits (nothing if it rolls back)."""
    transaction.on_commit(lambda: notify(user_id, kind, text, url, key), robust=True)


def mark_read(user_id: int, ids: Iterable[int] | None = None) -> int:
    """Mark the user's notifications (these, or all) read; update their bells if any were."""
    rows = Notification.objects.filter(user_id=user_id, read_at__isnull=True)
    if ids is not None:
        rows = rows.filter(pk__in=list(ids))
    with transaction.atomic():
        changed = rows.update(read_at=timezone.now())
        if changed:
            live.push(live.User(user_id), BELL, {"notifications_unread": unread(user_id)})
    return changed


# What the write layer calls ----------------------------------------------------------


def mentioned(
    room: Room, message_id: int, author_name: str, body: str, user_ids: Iterable[int]
) -> None:
    """Users @mentioned in a new message: a notification each, and a digest for the away.

    Called by actions.post_message inside its transaction, with the ids it published
    mention events to; the digest decides who had no page open.
    """

    url = reverse("room_detail", args=[room.slug])
    text = f"{author_name} mentioned you in {room.title}: {body[:120]}"
    key = f"mention-{message_id}"
    for user_id in user_ids:
        transaction.on_commit(partial(_mention, user_id, text, url, key), robust=True)


def _mention(user_id: int, text: str, url: str, key: str) -> None:
    from rooms import digest

    notification = notify(user_id, Notification.MENTION, text, url, key)
    if notification is not None and not digest.is_online(user_id):
        digest.schedule(notification)


def member_added(room: Room, user_id: int) -> None:
    """A user was added to a private room (called by actions.add_member)."""
    url = reverse("room_detail", args=[room.slug])
    notify_on_commit(user_id, Notification.ADDED, f"You were added to {room.title}.", url)


def member_removed(room: Room, user_id: int) -> None:
    """A user was removed from a private room (called by actions.remove_member)."""
    notify_on_commit(user_id, Notification.REMOVED, f"You were removed from {room.title}.")


def unread_count(request: HttpRequest) -> dict[str, Any]:
    """Context processor: `notifications_unread` for the bell, queried only if rendered."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"notifications_unread": SimpleLazyObject(lambda: unread(user.pk))}
