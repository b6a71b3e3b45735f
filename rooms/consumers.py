"""The sockets: a room page's socket, and the socket every other page opens for its user.

Both take events from the process's fan-out hub (`deliver`) and render them through the
hub's per-event cache, keyed by viewer variant. Frames from the page are the JSON the htmx
ws extension sends for a `ws-send` form; its `action` field says what the form is for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from rooms import dashboard, events, fragments, models
from rooms.fanout import Hub
from rooms.fanout import hub as default_hub
from rooms.forms import MessageActionForm, MessageForm, SyncForm
from rooms.fragments import Viewer
from rooms.models import (
    Message,
    Room,
    delete_message,
    edit_message,
    mark_read,
    post_message,
    unread_counts,
    visible_rooms,
)

logger = logging.getLogger(__name__)

# Application close codes (4000-4999). The htmx ws extension reconnects only after
# 1006, 1011, 1012 and 1013, so these end the page's attempts, as they should.
CLOSE_UNKNOWN_ROOM = 4404
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY_SOCKETS = 4429

TOO_MANY_SOCKETS = "You have too many pages open: close some, then reload this one."
SLOW_DOWN = "Slow down: you are sending messages too fast. Wait a few seconds and try again."

# A frame longer than this is refused before it is parsed.
MAX_FRAME_BYTES = 32 * 1024
# Events held for a socket that is catching up; past this it catches up again instead.
BACKLOG_LIMIT = 1000


class FrameError(Exception):
    """A frame or an action the socket refuses; the text is shown to the user."""


def parse_frame(text_data: str | None, bytes_data: bytes | None) -> dict:
    """Decode what the htmx ws extension sends: a JSON object of form fields."""
    if text_data is None:
        raise FrameError("Binary frames are not accepted: send the form as text.")
    if len(text_data) > MAX_FRAME_BYTES:
        raise FrameError(f"That frame is too large (more than {MAX_FRAME_BYTES} bytes).")
    try:
        payload = json.loads(text_data)
    except ValueError:
        raise FrameError("Could not read that: the frame is not JSON.") from None
    if not isinstance(payload, dict):
        raise FrameError("Could not read that: the frame is not a JSON object of form fields.")
    return payload


def message_text(payload: dict) -> str:
    """The validated `message` field of a frame."""
    message = payload.get("message")
    if message is not None and not isinstance(message, str):
        raise FrameError("A message must be text.")
    form = MessageForm(data={"message": message})
    if not form.is_valid():
        raise FrameError(form.errors["message"][0])
    return form.cleaned_data["message"]


def message_id(payload: dict) -> int:
    """The validated `message_id` field of a frame."""
    form = MessageActionForm(data={"message_id": payload.get("message_id")})
    if not form.is_valid():
        raise FrameError("That message does not exist.")
    return form.cleaned_data["message_id"]


class RoomConsumer(AsyncWebsocketConsumer):
    """One browser tab in one room."""

    # Sockets receive events through the process's hub, not a channel each.
    channel_layer_alias = None

    def __init__(self, hub: Hub | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hub = hub or default_hub
        self.room: Room | None = None
        self.viewer = Viewer()
        self.conn_id = uuid.uuid4().hex
        self.groups_joined: list[str] = []
        self.last_seq = 0
        # Until the page says what it shows, numbered events wait in the backlog.
        self.syncing = True
        self.synced_once = False
        self.backlog: list[tuple[int, int, str]] = []
        self.backlog_overflowed = False
        self.catch_up_task: asyncio.Task | None = None
        self.typists_shown: tuple[str, ...] = ()
        self.read_seq = 0
        self.read_timer: asyncio.TimerHandle | None = None
        self.read_task: asyncio.Task | None = None

    # Connection -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Called when the socket opens: check the room, then join its fan-out."""
        self.fast_send = raw_send(self.base_send)
        self.user = self.scope["user"]
        self.room, allowed = await room_for(self.scope["url_route"]["kwargs"]["slug"], self.user)
        # Accept first so the close code reaches the page (a refused handshake has none).
        await self.accept()
        if self.room is None:
            await self.close(code=CLOSE_UNKNOWN_ROOM, reason="No such room.")
            return
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN, reason="You may not enter this room.")
            return
        signed_in = self.user.is_authenticated
        if signed_in and not await self.hub_admits(self.hub, self.user, self.conn_id):
            await self.send(text_data=fragments.message_error(TOO_MANY_SOCKETS))
            await self.close(code=CLOSE_TOO_MANY_SOCKETS, reason=TOO_MANY_SOCKETS)
            return
        self.viewer = Viewer(
            user_id=self.user.pk if signed_in else None,
            moderator=self.room.is_moderator(self.user),
        )
        self.groups_joined = [events.room_group(self.room.pk), events.SITE_GROUP]
        if signed_in:
            self.groups_joined.append(events.user_group(self.user.pk))
        for group in self.groups_joined:
            await self.hub.join(group, self)
        told = signed_in and await self.hub.enter(
            self.room.pk, self.conn_id, self.user.get_username()
        )
        if not told:  # nobody new is listed, so no broadcast brings this page the list
            await self.send(text_data=fragments.presence(await self.hub.present(self.room.pk)))

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes: leave presence and the fan-out."""
        if self.catch_up_task is not None:
            self.catch_up_task.cancel()
        if not self.groups_joined:
            return
        if self.viewer.user_id is not None:
            await self.hub.exit(self.room.pk, self.conn_id)
            await self.hub.close_socket(self.user.pk, self.conn_id)
        for group in self.groups_joined:
            await self.hub.leave(group, self)
        self.groups_joined = []
        if self.read_timer is not None:
            self.read_timer.cancel()
        await self.flush_read()

    @staticmethod
    async def hub_admits(hub: Hub, user, conn_id: str) -> bool:
        """Count this socket against the user's cap on open sockets (all processes)."""
        if await hub.open_socket(user.pk, conn_id) <= settings.ROOMCAST_MAX_SOCKETS_PER_USER:
            return True
        await hub.close_socket(user.pk, conn_id)
        return False

    async def check_rate(self) -> None:
        """Refuse a write past the user's rate limit (shared by all their sockets)."""
        count = await self.hub.hit(f"posts:{self.user.pk}", settings.ROOMCAST_POST_RATE_WINDOW)
        if count > settings.ROOMCAST_POST_RATE_LIMIT:
            raise FrameError(SLOW_DOWN)

    async def refuse(self) -> None:
        """This user may no longer be here: say so on the page and close the socket."""
        await self.send(text_data=fragments.removed_from_room(self.room.title))
        await self.close(code=CLOSE_FORBIDDEN, reason="You may not enter this room.")

    # Frames from the page ---------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        """Called with each frame from the page: do what its `action` asks."""
        try:
            payload = parse_frame(text_data, bytes_data)
            action = payload.get("action")
            if action is None:  # a bare frame: a sync report or a message
                action = "sync" if "last_seq" in payload else "post"
            handler = ACTIONS.get(action) if isinstance(action, str) else None
            if handler is None:
                raise FrameError("Unknown action: reload the page.")
            await handler(self, payload)
        except FrameError as error:
            await self.send(text_data=fragments.message_error(str(error)))
        except Forbidden:
            await self.refuse()

    async def do_sync(self, payload: dict) -> None:
        """The page reports its last event: send what it missed, then go live."""
        form = SyncForm(data={"last_seq": payload.get("last_seq")})
        if not form.is_valid():
            raise FrameError("Could not sync this page: reload it.")
        if self.synced_once:
            return  # one report per connection; later ones describe a page we already fed
        self.synced_once = True
        await self.catch_up(form.cleaned_data["last_seq"])
        if payload.get("live") == "0":  # the page still has its no-socket form and poller
            await self.send(text_data=fragments.go_live(self.viewer.user_id is not None))
        await self.flush_read()

    async def do_post(self, payload: dict) -> None:
        """Validate and store a message; the broadcast brings it to every page."""
        if self.viewer.user_id is None:
            raise FrameError("Log in to post messages.")
        body = message_text(payload)
        await self.check_rate()
        await database_sync_to_async(post_as)(self.room, self.user, body)
        await self.send(text_data=fragments.message_form_reset())

    async def do_typing(self, payload: dict) -> None:
        """The user typed: tell the others, at most once per throttle window."""
        if self.viewer.user_id is None:
            return
        key = f"typing:{self.room.pk}:{self.user.pk}"
        if await self.hub.first_in(key, settings.ROOMCAST_TYPING_THROTTLE):
            event = events.typing_event(self.room.pk, self.user.pk, self.user.get_username(), True)
            await self.hub.publish(event)

    async def do_edit(self, payload: dict) -> None:
        """Turn one of the user's messages into its edit form, on this page only."""
        message = await self.message(payload)
        if not message.can_edit(self.user):
            raise FrameError("You can only edit your own messages.")
        await self.send(text_data=fragments.message_editor(message.as_event()))

    async def do_cancel(self, payload: dict) -> None:
        """Put the message back in place of its edit form."""
        message = await self.message(payload)
        await self.send(text_data=fragments.message(message.as_event(), self.viewer))

    async def do_save(self, payload: dict) -> None:
        """Store an edit; the broadcast replaces the message on every page."""
        pk, body = message_id(payload), message_text(payload)
        await self.check_rate()
        await database_sync_to_async(edit_as)(self.room, self.user, pk, body)

    async def do_delete(self, payload: dict) -> None:
        """Turn a message into a tombstone on every page."""
        if self.viewer.user_id is not None:
            await self.check_rate()
        await database_sync_to_async(delete_as)(self.room, self.user, message_id(payload))

    async def message(self, payload: dict) -> Message:
        message = await database_sync_to_async(find_message)(self.room, message_id(payload))
        if message is None:
            raise FrameError("That message is not in this room.")
        return message

    # Events from the hub ----------------------------------------------------------------

    async def deliver(self, event: dict, cache: dict) -> None:
        """Called by the hub with each event of this socket's groups."""
        handler = ROOM_EVENTS.get(event["type"])
        if handler is not None:
            await handler(self, event, cache)

    async def on_message(self, event: dict, cache: dict) -> None:
        message, seq = event["message"], event["seq"]
        key = (events.MESSAGE, self.viewer.message_variant(message))
        text = cache.get(key)
        if text is None:
            text = cache[key] = fragments.new_messages([message], self.viewer, seq)
        await self.offer(seq, seq, text)

    async def on_message_changed(self, event: dict, cache: dict) -> None:
        message, seq = event["message"], event["seq"]
        key = (events.MESSAGE_CHANGED, self.viewer.message_variant(message))
        text = cache.get(key)
        if text is None:
            text = cache[key] = fragments.changed_messages([message], self.viewer, seq)
        await self.offer(seq, seq, text)

    async def on_batch(self, event: dict, cache: dict) -> None:
        after, seq = event["after"], event["seq"]
        key = (events.BATCH, self.viewer)
        text = cache.get(key)
        if text is None:
            text = cache[key] = fragments.catch_up(after, event["messages"], self.viewer, seq)
        await self.offer(after + 1, seq, text)

    async def on_presence(self, event: dict, cache: dict) -> None:
        text = cache.get(events.PRESENCE)
        if text is None:
            text = cache[events.PRESENCE] = fragments.presence(event["names"])
        await self.send(text_data=text)

    async def on_typists(self, event: dict, cache: dict) -> None:
        # Never show people their own typing: one render per distinct list.
        names = tuple(name for uid, name in event["typists"] if uid != self.viewer.user_id)
        if names == self.typists_shown:
            return  # nothing changed for this viewer (the typist themselves, say)
        self.typists_shown = names
        key = (events.TYPISTS, names)
        text = cache.get(key)
        if text is None:
            text = cache[key] = fragments.typing(list(names))
        await self.send(text_data=text)

    async def on_fragment(self, event: dict, cache: dict) -> None:
        await self.send(text_data=event["html"])

    async def on_member_removed(self, event: dict, cache: dict) -> None:
        if event["user"] == self.viewer.user_id:
            await self.refuse()

    async def on_mention(self, event: dict, cache: dict) -> None:
        if event["room_slug"] != self.room.slug:  # here the message itself shows it
            await self.send(text_data=fragments.mention_toast(event))

    # Sequence and catch-up --------------------------------------------------------------

    async def offer(self, first: int, last: int, text: str) -> None:
        """Take the fragment for the room's events numbered first..last, in arrival order."""
        if self.syncing:
            self.backlog.append((first, last, text))
            if len(self.backlog) > BACKLOG_LIMIT:
                self.backlog.clear()
                self.backlog_overflowed = True
        elif last <= self.last_seq:
            return  # the page has it already
        elif first == self.last_seq + 1:
            self.last_seq = last
            await self.fast_send({"type": "websocket.send", "text": text})
            self.note_read()
        else:
            # This page missed an event: fetch from the database what it lacks.
            self.syncing = True
            self.catch_up_task = asyncio.create_task(self.catch_up(self.last_seq))

    async def catch_up(self, after_seq: int) -> None:
        """Bring the page up to date from the database, then deliver what waited meanwhile."""
        self.syncing = True
        while True:
            self.backlog_overflowed = False
            await self.send_missed(after_seq)
            while self.backlog and not self.backlog_overflowed:
                waiting, self.backlog = sorted(self.backlog), []
                for first, last, text in waiting:
                    if last <= self.last_seq:
                        continue
                    if first != self.last_seq + 1:
                        self.backlog_overflowed = True  # a gap: read the database again
                        break
                    self.last_seq = last
                    await self.send(text_data=text)
            if not self.backlog_overflowed:
                self.syncing = False
                self.note_read()
                return
            self.backlog.clear()
            after_seq = self.last_seq

    async def send_missed(self, after_seq: int) -> None:
        """Send what changed after `after_seq`, or the whole history if too far behind."""
        missed, latest, last_seq = await missed_changes(self.room.pk, after_seq)
        if latest is not None:
            await self.send(text_data=fragments.message_history(latest, self.viewer, last_seq))
        elif missed:
            await self.send(text_data=fragments.catch_up(after_seq, missed, self.viewer, last_seq))
        self.last_seq = last_seq

    # Read marker ------------------------------------------------------------------------

    def note_read(self) -> None:
        """The page shows new events: write the read marker soon (at most once per interval)."""
        if self.viewer.user_id is None or self.read_timer is not None:
            return
        self.read_timer = asyncio.get_running_loop().call_later(
            settings.ROOMCAST_READ_MARK_INTERVAL, self._read_timer_fired
        )

    def _read_timer_fired(self) -> None:
        self.read_timer = None
        self.read_task = asyncio.get_running_loop().create_task(self.flush_read())

    async def flush_read(self) -> None:
        if self.viewer.user_id is None or self.last_seq <= self.read_seq:
            return
        self.read_seq = self.last_seq
        await database_sync_to_async(mark_read)(self.user, self.room, self.read_seq)


ACTIONS = {
    "sync": RoomConsumer.do_sync,
    "post": RoomConsumer.do_post,
    "typing": RoomConsumer.do_typing,
    "edit": RoomConsumer.do_edit,
    "cancel": RoomConsumer.do_cancel,
    "save": RoomConsumer.do_save,
    "delete": RoomConsumer.do_delete,
}

ROOM_EVENTS = {
    events.MESSAGE: RoomConsumer.on_message,
    events.MESSAGE_CHANGED: RoomConsumer.on_message_changed,
    events.BATCH: RoomConsumer.on_batch,
    events.PRESENCE: RoomConsumer.on_presence,
    events.TYPISTS: RoomConsumer.on_typists,
    events.MEMBER_REMOVED: RoomConsumer.on_member_removed,
    events.MENTION: RoomConsumer.on_mention,
    events.FRAGMENT: RoomConsumer.on_fragment,
}


# Events after which the room list reads a room's unread count again from the database.
RECOUNT_AFTER = {events.READ, events.BATCH}


class UserConsumer(AsyncWebsocketConsumer):
    """The socket of a page that is not a room: mention toasts, and on the room list,
    live unread counts (`/ws/me/?unread=1`)."""

    channel_layer_alias = None

    def __init__(self, hub: Hub | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hub = hub or default_hub
        self.groups_joined: list[str] = []
        self.unread: dict[int, int] = {}

    async def connect(self) -> None:
        self.user = self.scope["user"]
        await self.accept()
        if not self.user.is_authenticated:
            await self.close(code=CLOSE_FORBIDDEN, reason="Log in first.")
            return
        self.conn_id = uuid.uuid4().hex
        if not await RoomConsumer.hub_admits(self.hub, self.user, self.conn_id):
            await self.close(code=CLOSE_TOO_MANY_SOCKETS, reason=TOO_MANY_SOCKETS)
            return
        self.groups_joined = [events.user_group(self.user.pk), events.SITE_GROUP]
        query = parse_qs(self.scope.get("query_string", b"").decode())
        if query.get("unread"):
            self.unread = await database_sync_to_async(my_unread_counts)(self.user)
            self.groups_joined += [events.room_group(room_id) for room_id in self.unread]
        for group in self.groups_joined:
            await self.hub.join(group, self)

    async def disconnect(self, code: int) -> None:
        if self.groups_joined:
            await self.hub.close_socket(self.user.pk, self.conn_id)
        for group in self.groups_joined:
            await self.hub.leave(group, self)
        self.groups_joined = []

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        pass  # this socket only listens

    async def deliver(self, event: dict, cache: dict) -> None:
        kind = event["type"]
        if kind == events.FRAGMENT:
            await self.send(text_data=event["html"])
        elif kind == events.MENTION:
            await self.send(text_data=fragments.mention_toast(event))
        elif kind == events.MESSAGE:
            room_id = event["room"]
            if room_id in self.unread and event["message"]["author_id"] != self.user.pk:
                self.unread[room_id] += 1
                await self.send(text_data=fragments.unread_badge(room_id, self.unread[room_id]))
        elif kind in RECOUNT_AFTER or (
            kind == events.MESSAGE_CHANGED and event["message"]["deleted"]
        ):
            await self.recount(event["room"])
        elif kind == events.MEMBER_REMOVED and event["user"] == self.user.pk:
            self.unread.pop(event["room"], None)
            self.groups_joined.remove(event["group"])
            await self.hub.leave(event["group"], self)

    async def recount(self, room_id: int) -> None:
        if room_id not in self.unread:
            return
        counts = await database_sync_to_async(unread_counts)(self.user, [room_id])
        self.unread[room_id] = counts.get(room_id, 0)
        await self.send(text_data=fragments.unread_badge(room_id, self.unread[room_id]))


# Database work, each in one thread hop ------------------------------------------------


def raw_send(send):
    """The server's own `send` under Channels' session middleware wrapper, for live frames.

    The wrapper (channels.sessions.InstanceSessionWrapper.send) only acts on messages that
    can carry a cookie (http.response.start, websocket.accept); for the thousands of
    websocket.send frames of a busy room it is pure overhead, measured at about a sixth of
    the fan-out's time. Falls back to `send` itself under any other stack.
    """
    wrapper = getattr(send, "__self__", None)
    return getattr(wrapper, "real_send", send)


class Forbidden(Exception):
    """The user may no longer use this room."""


@database_sync_to_async
def room_for(slug: str, user) -> tuple[Room | None, bool]:
    """The room with this slug (or None), and whether `user` may enter it."""
    room = Room.objects.filter(slug=slug).first()
    return room, room is not None and room.can_read(user)


def find_message(room: Room, pk: int) -> Message | None:
    return Message.objects.filter(room=room, pk=pk).select_related("author", "room").first()


def post_as(room: Room, user, body: str) -> Message:
    """Post, after checking again that the user may (membership can be revoked)."""
    if not room.can_post(user):
        raise Forbidden
    return post_message(room, user, body)


def edit_as(room: Room, user, pk: int, body: str) -> None:
    if not room.can_post(user):
        raise Forbidden
    message = find_message(room, pk)
    if message is None:
        raise FrameError("That message is not in this room.")
    if not message.can_edit(user):
        raise FrameError("You can only edit your own messages.")
    edit_message(message, body)


def delete_as(room: Room, user, pk: int) -> None:
    if not room.can_read(user):
        raise Forbidden
    message = find_message(room, pk)
    if message is None:
        raise FrameError("That message is not in this room.")
    if message.deleted:
        return  # deleted already: nothing to do
    if not message.can_delete(user):
        raise FrameError("Only its author or the room's owner can delete a message.")
    delete_message(message)


def my_unread_counts(user) -> dict[int, int]:
    return unread_counts(user, list(visible_rooms(user).values_list("pk", flat=True)))


missed_changes = database_sync_to_async(models.missed_changes)


class DashboardConsumer(AsyncWebsocketConsumer):
    """The dashboard page's socket: takes the process's dashboard pushes."""

    channel_layer_alias = None

    def __init__(self, hub: Hub | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hub = hub or default_hub
        self.feed = None

    async def connect(self) -> None:
        await self.accept()
        self.feed = dashboard.feed_for(self.hub)
        await self.feed.join(self)

    async def disconnect(self, code: int) -> None:
        if self.feed is not None:
            await self.feed.leave(self)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        pass  # this socket only listens
