"""Rooms, members and messages: the data and its queries.

Every change to a room's messages (a new message, an edit, a delete) takes the room's next
sequence number and is published after commit (rooms/actions.py holds every write), so a
page that missed an event can ask the database for everything after the last number it saw.
"""

from __future__ import annotations

import re
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.text import slugify

# "@name": a username may hold . + - inside, but not at its end, so "@bob." and "@bob-"
# (a sentence's full stop, a dash) mention bob.
MENTION = re.compile(r"(?<![\w@])@([\w.+-]{0,149}\w)")
# Slugs that would collide with other pages under /rooms/ (/rooms/new/ creates a room).
RESERVED_SLUGS = frozenset({"new"})
# Two rooms with one title created at once: each retry takes the next free suffix.
SLUG_ATTEMPTS = 5


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
        """Save; a new room without a slug gets a free one, even when another process
        takes the same slug between the check and the insert."""
        if self.slug:
            super().save(*args, **kwargs)
            return
        for attempt in range(SLUG_ATTEMPTS):
            self.slug = unique_slug(self.title, random_suffix=attempt > 1)
            try:
                with transaction.atomic():
                    super().save(*args, **kwargs)
                return
            except IntegrityError:
                taken = Room.objects.filter(slug=self.slug).exists()
                self.slug = ""
                if not taken:
                    raise  # some other constraint failed: not ours to retry
        raise IntegrityError(f"no free slug for {self.title!r} after {SLUG_ATTEMPTS} attempts")

    def clean(self) -> None:
        if self.slug in RESERVED_SLUGS:
            raise ValidationError({"slug": f"The address /rooms/{self.slug}/ is reserved."})

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


def unique_slug(title: str, random_suffix: bool = False) -> str:
    """A slug for `title` that no room uses yet and no other page needs."""
    base = slugify(title)[:90] or "room"
    if random_suffix:
        return f"{base}-{secrets.token_hex(3)}"
    slug, n = base, 1
    while slug in RESERVED_SLUGS or Room.objects.filter(slug=slug).exists():
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


# Compatibility: the write functions live in rooms.actions. These names stay importable
# from here (the consumers import them) and store without a permission check, as before.


def post_message(room: Room, author, body: str, client_key: str | None = None) -> Message:
    """Store a message (no permission check); see rooms.actions.post_message."""
    from rooms import actions

    return actions.store_message(room, author, body, client_key)


def edit_message(message: Message, body: str) -> Message:
    """Change a message's text (no permission check); see rooms.actions.edit_message."""
    from rooms import actions

    return actions.change_message(message, body)


def delete_message(message: Message) -> Message:
    """Turn a message into a tombstone (no check); see rooms.actions.delete_message."""
    from rooms import actions

    return actions.tombstone_message(message)


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
    """Move the user's read marker forward; see rooms.actions.mark_read."""
    from rooms import actions

    actions.mark_read(user, room, seq)


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
