"""Rooms, members and messages, and the write path that numbers and publishes changes.

Every change to a room's messages (a new message, an edit, a delete) takes the room's next
sequence number and is published after commit, so a page that missed an event can ask the
database for everything after the last number it saw.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.text import slugify

from rooms import events

MENTION = re.compile(r"(?<![\w@])@([\w.+-]{1,150})")


class Room(models.Model):
    """A live room. `last_seq` numbers the room's events, one after another."""

    title = models.CharField(max_length=80)
    slug = models.SlugField(max_length=100, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    is_private = models.BooleanField(
        default=False, help_text="Only the owner and members may see and enter it."
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="private_rooms"
    )
    last_seq = models.PositiveBigIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("room_detail", args=[self.slug])

    def socket_path(self) -> str:
        """The path of the room's WebSocket (routed in rooms/routing.py)."""
        return f"/ws/rooms/{self.slug}/"

    def save(self, *args, **kwargs) -> None:
        if not self.slug:
            self.slug = unique_slug(self.title)
        super().save(*args, **kwargs)

    def can_read(self, user) -> bool:
        """Public rooms are open to all; private ones to the owner and members. Queries."""
        if not self.is_private:
            return True
        if not user.is_authenticated:
            return False
        return self.owner_id == user.pk or self.members.filter(pk=user.pk).exists()

    def can_post(self, user) -> bool:
        """Signed-in, active users who may read the room. Queries for private rooms."""
        return bool(user.is_authenticated and user.is_active) and self.can_read(user)

    def is_moderator(self, user) -> bool:
        """The owner may delete any message."""
        return user.is_authenticated and self.owner_id == user.pk

    def latest_messages(self, limit: int | None = None) -> list[Message]:
        """The newest `limit` messages, oldest first."""
        limit = limit or settings.ROOMCAST_HISTORY_LENGTH
        newest = self.messages.select_related("author").order_by("-seq")[:limit]
        return list(reversed(newest))

    def changes_after(self, after_seq: int, limit: int) -> list[Message]:
        """Messages created or changed after `after_seq`, in the order of those changes."""
        rows = (
            self.messages.filter(Q(seq__gt=after_seq) | Q(changed_seq__gt=after_seq))
            .select_related("author")
            .order_by("seq")[:limit]
        )
        return list(rows)


def visible_rooms(user) -> models.QuerySet[Room]:
    """The rooms `user` may see: public ones, and private ones they own or belong to."""
    if not user.is_authenticated:
        return Room.objects.filter(is_private=False)
    return Room.objects.filter(Q(is_private=False) | Q(owner=user) | Q(members=user)).distinct()


def unique_slug(title: str) -> str:
    """A slug for `title` that no room uses yet."""
    base = slugify(title)[:90] or "room"
    slug, n = base, 1
    while Room.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


class Message(models.Model):
    """One chat message. `seq` is its place in the room's sequence; `changed_seq` its last edit."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveBigIntegerField()
    changed_seq = models.PositiveBigIntegerField(default=0)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField()
    edited = models.BooleanField(default=False)
    deleted = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    # The composer's idempotency key: one composed message is stored once, however often
    # the page sends it (the ws extension replays queued sends after a reconnect).
    client_key = models.CharField(max_length=64, null=True, blank=True, editable=False)
    # Shown under the previous message's name and time: same author, a few minutes later.
    continues = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_unique_room_seq"),
            models.UniqueConstraint(
                fields=["room", "author", "client_key"],
                condition=Q(client_key__isnull=False),
                name="message_unique_client_key",
            ),
        ]
        indexes = [models.Index(fields=["room", "changed_seq"], name="message_room_changed")]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.seq}"

    @property
    def author_name(self) -> str:
        return self.author.get_username() if self.author else "system"

    def can_edit(self, user) -> bool:
        return user.is_authenticated and self.author_id == user.pk and not self.deleted

    def can_delete(self, user) -> bool:
        return not self.deleted and (
            (user.is_authenticated and self.author_id == user.pk) or self.room.is_moderator(user)
        )

    def as_event(self) -> dict:
        """The plain values a live push of this message carries."""
        return {
            "id": self.pk,
            "seq": self.seq,
            "changed_seq": self.changed_seq,
            "author": self.author_name,
            "author_id": self.author_id,
            "body": "" if self.deleted else self.body,
            "edited": self.edited,
            "deleted": self.deleted,
            "created": self.created.timestamp(),
            "continues": self.continues,
        }


class ReadMarker(models.Model):
    """How far a user has read a room: the last sequence number a page of theirs showed."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+")
    last_read_seq = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "room"], name="readmarker_unique_user_room")
        ]


def _next_seq(room: Room) -> int:
    # The UPDATE locks the room row until commit, so sequence numbers commit in order.
    Room.objects.filter(pk=room.pk).update(last_seq=F("last_seq") + 1)
    seq = Room.objects.values_list("last_seq", flat=True).get(pk=room.pk)
    room.last_seq = seq
    return seq


def post_message(room: Room, author, body: str) -> Message:
    """Store a message under the room's next sequence number; publish it after commit."""
    with transaction.atomic():
        seq = _next_seq(room)
        message = Message.objects.create(room=room, seq=seq, author=author, body=body)
        mentioned = mentioned_users(room, body, exclude=author)
        event = message.as_event()
        transaction.on_commit(lambda: events.publish_message(room.pk, event), robust=True)
        for user_id in mentioned:
            mention = events.mention_event(user_id, room.title, room.slug, event)
            transaction.on_commit(lambda m=mention: events.publish(m["group"], m), robust=True)
    return message


def edit_message(message: Message, body: str) -> Message:
    """Change a message's text under a new sequence number; publish after commit."""
    return _change(message, body=body, edited=True)


def delete_message(message: Message) -> Message:
    """Turn a message into a tombstone under a new sequence number; publish after commit."""
    return _change(message, body="", deleted=True)


def _change(message: Message, **fields) -> Message:
    with transaction.atomic():
        fields["changed_seq"] = _next_seq(message.room)
        Message.objects.filter(pk=message.pk).update(**fields)
        for name, value in fields.items():
            setattr(message, name, value)
        event = message.as_event()
        transaction.on_commit(
            lambda: events.publish_message_changed(message.room_id, event), robust=True
        )
    return message


def mentioned_users(room: Room, body: str, exclude=None) -> list[int]:
    """Ids of the users `@named` in `body` who may read the room (not the author)."""
    names = set(MENTION.findall(body))
    if not names:
        return []
    users = get_user_model().objects.filter(username__in=names, is_active=True)
    if exclude is not None and exclude.is_authenticated:
        users = users.exclude(pk=exclude.pk)
    return [user.pk for user in users if room.can_read(user)]


def latest_seq(messages: list[dict]) -> int:
    """The last room event a list of messages (as event values) reflects."""
    return max((max(m["seq"], m["changed_seq"]) for m in messages), default=0)


def mark_read(user, room: Room, seq: int) -> None:
    """Move the user's read marker forward to `seq` (never back); tell their other pages."""
    if not user.is_authenticated:
        return
    marker, _ = ReadMarker.objects.get_or_create(user=user, room=room)
    moved = ReadMarker.objects.filter(pk=marker.pk, last_read_seq__lt=seq).update(last_read_seq=seq)
    if moved:
        event = events.read_event(user.pk, room.pk, seq)
        transaction.on_commit(lambda: events.publish(event["group"], event), robust=True)


def unread_counts(user, rooms) -> dict[int, int]:
    """Others' messages in each room (rooms or their ids) after the user's read marker."""
    if not user.is_authenticated:
        return {}
    room_ids = [getattr(room, "pk", room) for room in rooms]
    marker = ReadMarker.objects.filter(user=user, room=OuterRef("room")).values("last_read_seq")
    rows = (
        Message.objects.filter(room__in=room_ids, deleted=False)
        .exclude(author=user)
        .annotate(read=Coalesce(Subquery(marker), 0))
        .filter(seq__gt=F("read"))
        .values("room")
        .annotate(unread=Count("id"))
    )
    counts = dict.fromkeys(room_ids, 0)
    counts.update({row["room"]: row["unread"] for row in rows})
    return counts


def missed_changes(room_id: int, after_seq: int) -> tuple[list[dict], list[dict] | None, int]:
    """What a page that shows the room's events up to `after_seq` lacks.

    Returns (changes, None, last_seq) when the page can apply the changes, or
    ([], latest, last_seq) when it is too far behind (or ahead) and should show the
    latest history instead. `last_seq` comes from the rows read, in the same query, so
    nothing committed meanwhile is skipped or sent twice.
    """
    limit = settings.ROOMCAST_CATCHUP_LIMIT
    room = Room.objects.get(pk=room_id)
    changes = [m.as_event() for m in room.changes_after(after_seq, limit + 1)]
    if after_seq > room.last_seq or len(changes) > limit:
        latest = [m.as_event() for m in room.latest_messages()]
        return [], latest, latest_seq(latest)
    return changes, None, max(after_seq, latest_seq(changes))


class Profile(models.Model):
    """A user's own settings: the time zone their pages show times in, and email digests."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        help_text="Times on your pages are shown in this time zone.",
    )
    email_digest = models.BooleanField(
        default=True,
        help_text="Email me a digest of mentions I missed while I had no page open.",
    )

    def __str__(self) -> str:
        return f"profile of {self.user}"

    @classmethod
    def for_user(cls, user) -> Profile:
        """The user's profile, created with defaults on first use."""
        profile, _ = cls.objects.get_or_create(user=user)
        return profile


from rooms import digest, exports, notifications, relay, workers  # models of jobs  # noqa: E402, F401
