"""Rooms and messages, and the write path that numbers and publishes them."""

from __future__ import annotations

from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.urls import reverse
from django.utils.text import slugify

from rooms import events


class Room(models.Model):
    """A live room. `last_seq` numbers the room's events, one after another."""

    title = models.CharField(max_length=80)
    slug = models.SlugField(max_length=100, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
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
        """Anyone may read a room (private rooms come later)."""
        return True

    def can_post(self, user) -> bool:
        """Signed-in, active users may post."""
        return bool(user.is_authenticated and user.is_active)

    def latest_messages(self, limit: int | None = None) -> list[Message]:
        """The newest `limit` messages, oldest first."""
        limit = limit or settings.ROOMCAST_HISTORY_LENGTH
        newest = self.messages.select_related("author").order_by("-seq")[:limit]
        return list(reversed(newest))


def unique_slug(title: str) -> str:
    """A slug for `title` that no room uses yet."""
    base = slugify(title)[:90] or "room"
    slug, n = base, 1
    while Room.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


class Message(models.Model):
    """One chat message. `seq` is its place in the room's event sequence."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveBigIntegerField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_unique_room_seq")
        ]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.seq}"

    @property
    def author_name(self) -> str:
        return self.author.get_username() if self.author else "system"

    def as_event(self) -> dict:
        """The plain values a live push of this message carries."""
        return {
            "id": self.pk,
            "seq": self.seq,
            "author": self.author_name,
            "body": self.body,
            "created": self.created.timestamp(),
        }


def post_message(room: Room, author, body: str) -> Message:
    """Store a message under the room's next sequence number; publish it after commit."""
    with transaction.atomic():
        # The UPDATE locks the room row until commit, so sequence numbers commit in order.
        Room.objects.filter(pk=room.pk).update(last_seq=F("last_seq") + 1)
        seq = Room.objects.values_list("last_seq", flat=True).get(pk=room.pk)
        message = Message.objects.create(room=room, seq=seq, author=author, body=body)
        transaction.on_commit(lambda: events.publish_message(room.pk, message.as_event()))
    room.last_seq = seq
    return message
