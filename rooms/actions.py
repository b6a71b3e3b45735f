"""Every write, with its permission check: one function per change, publishing on commit.

Views, consumers, the admin and management commands all call these, so a rule lives in
one place. Each function checks, then writes in one transaction, then publishes its live
event after commit (a rolled-back write publishes nothing).

Refusals are exceptions:
- `Forbidden`: the user may not use the room at all (a socket closes with 4403; a page
  answers 404, since a private room is not even admitted to exist);
- `ActionError(text)`: a refusal the user is shown (not found, not yours, deleted meanwhile).

`SYSTEM` acts for the site itself (management commands, staff in the admin): it passes the
room-level checks, never a user's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from django.db import IntegrityError, transaction
from django.db.models import F

from rooms import events, notifications
from rooms.models import Message, ReadMarker, Room, mentioned_users, unread_counts

# A message shown under the previous one's name and time: same author, within this.
CONTINUES_WITHIN = timedelta(minutes=5)
CLIENT_KEY_MAX_LENGTH = 64

NOT_IN_ROOM = "That message is not in this room."
NOT_YOURS = "You can only edit your own messages."
DELETED_MEANWHILE = "That message was deleted."
MAY_NOT_DELETE = "Only its author or the room's owner can delete a message."
LOG_IN_TO_POST = "Log in to post messages."
BAD_CLIENT_KEY = "Could not send that message: reload the page and try again."
OWNER_ONLY = "Only the owner of a private room manages its members."
NOT_PRIVATE = "Only private rooms have members."
OWNER_IS_MEMBER = "You own this room: owners are always members."
NOT_A_MEMBER = "{name} is not a member of this room."
INACTIVE_MEMBER = "{name} cannot be added: their account is deactivated."


class Forbidden(Exception):
    """The user may not use this room at all (any more)."""


class ActionError(Exception):
    """A refusal shown to the user; `str(error)` is the text."""


class _System:
    """The site itself acting (commands, staff in the admin): passes room-level checks."""

    is_authenticated = True
    is_active = True
    pk = None

    def __repr__(self) -> str:
        return "SYSTEM"


SYSTEM: Final = _System()


def on_commit_publish(event: dict[str, Any]) -> None:
    """Publish `event` to its group once the current transaction commits."""
    transaction.on_commit(lambda: events.publish(event["group"], event), robust=True)


# Checks ---------------------------------------------------------------------------------


def require_reader(room: Room, user: Any) -> None:
    """Raise Forbidden unless `user` may see the room."""
    if user is SYSTEM:
        return
    if user.is_authenticated and not user.is_active:
        raise Forbidden
    if not room.can_read(user):
        raise Forbidden


def require_poster(room: Room, user: Any) -> None:
    """Raise Forbidden unless `user` may see the room, ActionError unless signed in."""
    require_reader(room, user)
    if user is not SYSTEM and not user.is_authenticated:
        raise ActionError(LOG_IN_TO_POST)


def require_member_manager(room: Room, user: Any) -> None:
    """Only the owner of a private room (or SYSTEM) adds and removes members."""
    require_reader(room, user)
    if user is not SYSTEM and not room.is_moderator(user):
        raise ActionError(OWNER_ONLY)
    if not room.is_private:
        raise ActionError(NOT_PRIVATE)


def find_message(room: Room, message_id: int) -> Message:
    """The room's message with this id; ActionError if the room has none."""
    message = (
        Message.objects.filter(room=room, pk=message_id).select_related("author", "room").first()
    )
    if message is None:
        raise ActionError(NOT_IN_ROOM)
    return message


def locked_message(room: Room, message_id: int) -> Message:
    """The room's message, its row locked for this transaction and its state read again
    under the lock, so that a delete and an edit cannot both win."""
    message = find_message(room, message_id)
    Message.objects.select_for_update().filter(pk=message.pk).values("pk").get()
    message.refresh_from_db(fields=["deleted", "body", "edited", "changed_seq"])
    return message


def message_for_edit(room: Room, user: Any, message_id: int) -> Message:
    """The message `user` asks to edit (to show its editor), after every check."""
    require_poster(room, user)
    message = find_message(room, message_id)
    if message.deleted:
        raise ActionError(DELETED_MEANWHILE)
    if user is not SYSTEM and message.author_id != user.pk:
        raise ActionError(NOT_YOURS)
    return message


# Rooms ----------------------------------------------------------------------------------


def create_room(user: Any, title: str, is_private: bool = False) -> Room:
    """A new room owned by `user` (its slug is unique even when two are created at once)."""
    if user is not SYSTEM and not (user.is_authenticated and user.is_active):
        raise ActionError("Log in to create a room.")
    owner = None if user is SYSTEM else user
    with transaction.atomic():
        room = Room.objects.create(title=title, is_private=is_private, owner=owner)
        # Home pages list it live: a public room everyone's, a private one its owner's
        # (a private room without an owner is seen by its members once they are added).
        if not is_private:
            on_commit_publish(events.room_visible_event(events.SITE_GROUP, _listed(room)))
        elif owner is not None:
            group = events.user_group(owner.pk)
            on_commit_publish(events.room_visible_event(group, _listed(room), owner.pk))
    return room


def _listed(room: Room) -> dict[str, Any]:
    """The room as a home page lists it (plain values, with its last message)."""
    from rooms.templatetags.roomcast import room_overview  # renders nothing; shapes the item

    (item,) = room_overview(None, [room])
    return item


def add_member(room: Room, user: Any, member: Any) -> None:
    """Add `member` to a private room."""
    require_member_manager(room, user)
    if member.pk == room.owner_id:
        raise ActionError(OWNER_IS_MEMBER)
    if not member.is_active:
        raise ActionError(INACTIVE_MEMBER.format(name=member.get_username()))
    with transaction.atomic():
        if room.members.filter(pk=member.pk).exists():
            return  # a member already: nothing changes, nobody is told twice
        room.members.add(member)
        notifications.member_added(room, member.pk)
        # The new member's home pages list the room, with their unread count in it.
        unread = unread_counts(member, [room.pk])[room.pk]
        group = events.user_group(member.pk)
        on_commit_publish(events.room_visible_event(group, _listed(room), member.pk, unread))


def remove_member(room: Room, user: Any, member: Any) -> None:
    """Remove `member` from a private room; their open pages of it close at once."""
    require_member_manager(room, user)
    with transaction.atomic():
        if not room.members.filter(pk=member.pk).exists():
            raise ActionError(NOT_A_MEMBER.format(name=member.get_username()))
        room.members.remove(member)
        on_commit_publish(events.member_removed_event(room.pk, member.pk))
        notifications.member_removed(room, member.pk)


def set_members(room: Room, user: Any, members: Any) -> None:
    """Make the room's members exactly `members`, each change through add/remove_member."""
    wanted = {member.pk: member for member in members}
    current = {member.pk: member for member in room.members.all()}
    with transaction.atomic():
        for pk, member in current.items():
            if pk not in wanted:
                remove_member(room, user, member)
        for pk, member in wanted.items():
            if pk not in current:
                add_member(room, user, member)


# Messages -------------------------------------------------------------------------------


def _next_seq(room: Room) -> int:
    # The UPDATE locks the room row until commit, so sequence numbers commit in order.
    Room.objects.filter(pk=room.pk).update(last_seq=F("last_seq") + 1)
    seq = Room.objects.values_list("last_seq", flat=True).get(pk=room.pk)
    room.last_seq = seq
    return seq


def _clean_client_key(client_key: Any) -> str | None:
    if client_key is None or client_key == "":
        return None
    if not isinstance(client_key, str) or len(client_key) > CLIENT_KEY_MAX_LENGTH:
        raise ActionError(BAD_CLIENT_KEY)
    if not client_key.isascii():  # a uuid4 hex; never text the database might refuse
        raise ActionError(BAD_CLIENT_KEY)
    return client_key


def _continues(room: Room, seq: int, author_id: int | None, now: Any) -> bool:
    """Whether a message by `author_id` at `now` continues the room's previous message."""
    if author_id is None:
        return False
    previous = (
        Message.objects.filter(room=room, seq__lt=seq)
        .order_by("-seq")
        .values("author_id", "deleted", "created")
        .first()
    )
    return bool(
        previous
        and previous["author_id"] == author_id
        and not previous["deleted"]
        and now - previous["created"] <= CONTINUES_WITHIN
    )


def store_message(room: Room, author: Any, body: str, client_key: str | None = None) -> Message:
    """Store a message under the room's next sequence number and publish it after commit.

    No permission check: `post_message` and `post_announcement` are the ways in. With a
    `client_key`, a message already stored under it is returned and nothing is published.
    """
    author_id = author.pk if author is not None else None
    if client_key is not None and (message := stored_under(room, author_id, client_key)):
        return message
    try:
        with transaction.atomic():
            seq = _next_seq(room)
            message = Message(room=room, seq=seq, author=author, body=body, client_key=client_key)
            message.save()
            # `created` is set by the save: compare the previous message with it.
            message.continues = _continues(room, seq, author_id, message.created)
            if message.continues:
                Message.objects.filter(pk=message.pk).update(continues=True)
            event = message.as_event()
            transaction.on_commit(lambda: events.publish_message(room.pk, event), robust=True)
            mentioned = mentioned_users(room, body, exclude=author)
            for user_id in mentioned:
                on_commit_publish(events.mention_event(user_id, room.title, room.slug, event))
            if mentioned:
                notifications.mentioned(room, message.pk, message.author_name, body, mentioned)
    except IntegrityError:
        # The same composed message, stored meanwhile by another send of it.
        if client_key is None or (message := stored_under(room, author_id, client_key)) is None:
            raise
    return message


def stored_under(room: Room, author_id: int | None, client_key: str) -> Message | None:
    """The message of this author already stored under this idempotency key, if any."""
    return Message.objects.filter(room=room, author_id=author_id, client_key=client_key).first()


def post_message(room: Room, user: Any, body: str, client_key: Any = None) -> Message:
    """`user` posts `body`; the same `client_key` (one composed message) is stored once."""
    require_poster(room, user)
    key = _clean_client_key(client_key)
    return store_message(room, None if user is SYSTEM else user, body, key)


def post_announcement(room: Room, body: str) -> Message:
    """A system message (no author), live for everyone in the room."""
    return store_message(room, None, body)


def _change(message: Message, **fields: Any) -> Message:
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


def change_message(message: Message, body: str) -> Message:
    """Change a message's text under a new sequence number (no check: see edit_message)."""
    return _change(message, body=body, edited=True)


def tombstone_message(message: Message) -> Message:
    """Turn a message into a tombstone (no check: see delete_message)."""
    return _change(message, body="", deleted=True)


def edit_message(room: Room, user: Any, message_id: int, body: str) -> Message:
    """The author changes their message's text; every page shows the edit."""
    require_poster(room, user)
    with transaction.atomic():
        message = locked_message(room, message_id)
        if message.deleted:
            raise ActionError(DELETED_MEANWHILE)
        if user is not SYSTEM and message.author_id != user.pk:
            raise ActionError(NOT_YOURS)
        return change_message(message, body)


def delete_message(room: Room, user: Any, message_id: int) -> Message:
    """The author or the room's owner deletes a message; it becomes a tombstone everywhere.

    Deleting a message that is deleted already changes nothing and is no error.
    """
    require_reader(room, user)
    with transaction.atomic():
        message = locked_message(room, message_id)
        if message.deleted:
            return message
        if user is not SYSTEM and not message.can_delete(user):
            raise ActionError(MAY_NOT_DELETE)
        return tombstone_message(message)


# Read markers ---------------------------------------------------------------------------


def mark_read(user: Any, room: Room, seq: int) -> None:
    """Move the user's read marker forward to `seq` (never back); tell their other pages."""
    if user is SYSTEM or not user.is_authenticated:
        return
    marker, _ = ReadMarker.objects.get_or_create(user=user, room=room)
    moved = ReadMarker.objects.filter(pk=marker.pk, last_read_seq__lt=seq).update(last_read_seq=seq)
    if moved:
        on_commit_publish(events.read_event(user.pk, room.pk, seq))
