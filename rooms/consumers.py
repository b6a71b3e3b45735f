"""The sockets: protocol glue between a page's WebSocket and the live core.

A consumer parses each frame the page sends (the JSON the htmx ws extension sends for a
`ws-send` form; its `action` field says what the form is for), checks it against the
socket's budget, calls the write helpers, and answers with a fragment. Events from the
process's fan-out hub (`deliver`) are rendered through the hub's per-event cache, keyed by
viewer variant, and put in the socket's own outbox (rooms/outbox.py), whose supervised
writer sends them, batched, in order, caught up from the database when needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.template.loader import render_to_string

from rooms import actions, channels_adapter, dashboard, events, fragments, limits, metrics, outbox
from rooms.actions import ActionError, Forbidden
from rooms.channels_adapter import raw_send
from rooms.fanout import Hub
from rooms.fanout import hub as default_hub
from rooms.forms import MessageActionForm, MessageForm, SyncForm
from rooms.fragments import Viewer
from rooms.models import Message, Profile, ReadMarker, Room, unread_counts
from rooms.outbox import Outbox, supervise
from rooms.presence import STORE_ERRORS
from rooms.sequence import CatchUp
from rooms.templatetags.roomcast import room_overview

logger = logging.getLogger(__name__)
socket_log = logging.getLogger("rooms.sockets")

# Close codes. The htmx ws extension reconnects only after 1006, 1011, 1012 and 1013, so
# the application codes (4000-4999) end the page's attempts, as they should; 1011 (a
# failure of ours) and 1013 (too slow, or the database is away) bring the page back, and
# it catches up.
CLOSE_UNKNOWN_ROOM = 4404
CLOSE_NOT_FOUND = 4404
CLOSE_FORBIDDEN = 4403
CLOSE_REVOKED = 4401
CLOSE_TOO_MANY_SOCKETS = 4429
CLOSE_FLOOD = 4429
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013

TOO_MANY_SOCKETS = limits.TOO_MANY_SOCKETS
SLOW_DOWN = limits.SLOW_DOWN
NOT_SAVED = "Not saved: try again."
LOG_IN_TO_EDIT = "Log in to edit messages."

# A frame longer than this many bytes (UTF-8) is refused before it is parsed.
MAX_FRAME_BYTES = 32 * 1024


class FrameError(Exception):
    """A frame or an action the socket refuses; the text is shown to the user."""


def parse_frame(text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
    """Decode what the htmx ws extension sends: a JSON object of form fields."""
    if text_data is None:
        raise FrameError("Binary frames are not accepted: send the form as text.")
    if limits.frame_too_large(text_data, MAX_FRAME_BYTES):
        raise FrameError(f"That frame is too large (more than {MAX_FRAME_BYTES} bytes).")
    try:
        payload = json.loads(text_data)
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        raise FrameError("Could not read that: the frame is not JSON.") from None
    if not isinstance(payload, dict):
        raise FrameError("Could not read that: the frame is not a JSON object of form fields.")
    return payload


def message_text(payload: dict[str, Any]) -> str:
    """The validated `message` field of a frame."""
    message = payload.get("message")
    if message is not None and not isinstance(message, str):
        raise FrameError("A message must be text.")
    form = MessageForm(data={"message": message})
    if not form.is_valid():
        raise FrameError(form.errors["message"][0])
    body: str = form.cleaned_data["message"]
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") cannot be stored
        raise FrameError("That message has characters that cannot be stored.") from None
    return body


def message_id(payload: dict[str, Any]) -> int:
    """The validated `message_id` field of a frame."""
    form = MessageActionForm(data={"message_id": payload.get("message_id")})
    if not form.is_valid():
        raise FrameError("That message does not exist.")
    return int(form.cleaned_data["message_id"])


def notice(text: str) -> str:
    """A notice toast (every page has the toast area)."""
    return render_to_string("base.html#notice_toast", {"text": text})


# Channels ships no type information: its consumer base class is Any to mypy.
class LiveSocket(AsyncWebsocketConsumer):  # type: ignore[misc]
    """What every socket kind shares: its outbox and writer, its budget, closing on
    revocation, and the open/close log lines and metrics."""

    kind = "room"
    # Sockets receive events through the process's hub, not a channel each.
    channel_layer_alias = None

    def __init__(self, hub: Hub | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hub = hub or default_hub
        self.conn_id = uuid.uuid4().hex
        self.label = self.conn_id[:12]
        self.room_label = "-"
        self.viewer = Viewer()
        self.outbox = Outbox(
            self, settings.ROOMCAST_OUTBOX_LIMIT, settings.ROOMCAST_OUTBOX_MAX_OVERFLOWS
        )
        self.budget = limits.frame_budget(self.hub.clock)
        self.groups_joined: list[str] = []
        self.socket_key: str | None = None
        self.ending = False
        self.opened_at: float | None = None
        self.close_code: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its thread hop per message.

        Channels closes stale database connections before every handler, a `sync_to_async`
        hop through the one shared database thread for every frame and event. Every database
        call here goes through `database_sync_to_async`, which does that itself, in the thread
        it runs in; the hop only delayed each post behind the others.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # Opening and closing ------------------------------------------------------------------

    async def start_live(self, groups: list[str]) -> bool:
        """Start the writer, join the hub's groups, count and log the open socket.

        False (the socket is closed with 1013, and the page retries) if the channel layer
        is unreachable (Redis away).
        """
        self.outbox.start(f"roomcast-writer-{self.label}")
        self.groups_joined = groups
        try:
            for group in groups:
                await self.hub.join(group, self)
        except STORE_ERRORS:
            logger.warning("the channel layer is unreachable: socket asked to retry", exc_info=True)
            await self.close(code=CLOSE_TRY_AGAIN)
            return False
        self.opened_at = self.hub.clock.now()
        metrics.SOCKETS_OPEN.labels(self.kind).inc()
        socket_log.info(
            "socket open: %s %s user %s",
            self.kind,
            self.room_label,
            self.viewer.user_id,
            extra=self.log_fields(),
        )
        return True

    async def admit(self, user: Any) -> bool:
        """Count this socket against its cap (per user, or per anonymous client address)."""
        if user.is_authenticated:
            key = limits.user_sockets_key(user.pk)
            cap = settings.ROOMCAST_MAX_SOCKETS_PER_USER
        else:
            client = self.scope.get("client") or ("unknown", 0)
            key = limits.address_sockets_key(str(client[0]))
            cap = settings.ROOMCAST_MAX_ANONYMOUS_SOCKETS_PER_ADDRESS
        if await self.hub.open_socket(key, self.conn_id, cap):
            self.socket_key = key
            return True
        return False

    async def stop_live(self, code: int) -> None:
        """Stop the writer, leave the hub, free the socket's place; log the close."""
        await self.outbox.stop()
        for task in list(self._tasks):
            task.cancel()
        if self.socket_key is not None:
            await self.hub.close_socket(self.socket_key, self.conn_id)
            self.socket_key = None
        for group in self.groups_joined:
            await self.hub.leave(group, self)
        self.groups_joined = []
        if self.opened_at is not None:
            duration = self.hub.clock.now() - self.opened_at
            self.opened_at = None
            code = self.close_code or code
            metrics.SOCKETS_OPEN.labels(self.kind).dec()
            metrics.SOCKET_CLOSES.labels(self.kind, str(code)).inc()
            socket_log.info(
                "socket closed: %s %s user %s after %.1fs, code %s",
                self.kind,
                self.room_label,
                self.viewer.user_id,
                duration,
                code,
                extra={**self.log_fields(), "duration": round(duration, 3), "code": code},
            )

    def log_fields(self) -> dict[str, Any]:
        return {
            "socket": self.label,
            "kind": self.kind,
            "room": self.room_label,
            "user": self.viewer.user_id,
        }

    def end(self, code: int, text: str | None = None) -> None:
        """Close the socket (once), after sending `text`; never waits (fan-out safe)."""
        if self.ending:
            return
        self.ending = True
        self.close_code = code
        self.spawn(self._end(code, text), "end")

    async def _end(self, code: int, text: str | None) -> None:
        await self.outbox.stop()
        if text:
            await self.send(text_data=text)
        await self.close(code=code)

    def spawn(self, coroutine: Any, what: str) -> asyncio.Task[Any]:
        """Start a task owned by this socket: kept until done, failures logged."""
        task = asyncio.create_task(coroutine, name=f"roomcast-{what}-{self.label}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        supervise(task, self)
        return task

    def fail(self) -> None:
        """A task of this socket failed (logged already): close it; the page reconnects."""
        self.end(CLOSE_INTERNAL)

    def too_slow(self) -> None:
        """The client does not keep up (the outbox overflowed again and again, or daphne
        buffers too much for it): drop it; the page reconnects and catches up."""
        if self.ending:
            return
        metrics.LIMIT_REFUSALS.labels("too_slow").inc()
        socket_log.warning("socket too slow: dropped", extra=self.log_fields())
        transport = self.transport
        if transport is not None:
            self.ending = True
            self.close_code = 1006
            self.outbox.entries.clear()
            channels_adapter.abort(transport)  # a close frame would only queue behind the rest
        else:
            self.end(CLOSE_TRY_AGAIN)

    # The outbox's owner --------------------------------------------------------------------

    async def write(self, text: str) -> None:
        transport = self.transport
        # What earlier frames left unread (measured before this one joins it).
        limit = settings.ROOMCAST_SOCKET_BUFFER_LIMIT
        if transport is not None and channels_adapter.buffered_bytes(transport) > limit:
            self.too_slow()
            return
        await self.fast_send({"type": "websocket.send", "text": text})
        outbox.frames_sent[self.kind] = outbox.frames_sent.get(self.kind, 0) + 1

    @property
    def sends_at_once(self) -> bool:
        """Whether this socket's frames can be sent without awaiting (daphne, whose send
        never waits; uvicorn, whose send waits only while the client is behind)."""
        return self.transport is not None or self.uvicorn is not None

    def write_now(self, text: str) -> bool:
        """Send one frame without awaiting: under daphne always, under uvicorn while the
        client keeps up; False otherwise (the writer task awaits the send)."""
        transport = self.transport
        if transport is None:
            protocol = self.uvicorn
            if protocol is None or not channels_adapter.send_if_writable(
                protocol, self.fast_send, text
            ):
                return False
            outbox.frames_sent[self.kind] = outbox.frames_sent.get(self.kind, 0) + 1
            return True
        if channels_adapter.buffered_bytes(transport) > settings.ROOMCAST_SOCKET_BUFFER_LIMIT:
            self.too_slow()
            return True
        channels_adapter.write_text(self.fast_send, transport, text)
        outbox.frames_sent[self.kind] = outbox.frames_sent.get(self.kind, 0) + 1
        return True

    @property
    def uvicorn(self) -> Any:
        """uvicorn's WebSocket protocol of this socket (None under other servers)."""
        found = getattr(self, "_uvicorn", False)
        if found is False:
            found = self._uvicorn = channels_adapter.uvicorn_protocol_of(self.fast_send)
        return found

    @property
    def transport(self) -> Any:
        """daphne's transport of this socket (None under other servers): see the adapter."""
        found = getattr(self, "_transport", False)
        if found is False:
            found = self._transport = channels_adapter.transport_of(self.fast_send)
        return found

    async def catch_up(self, after_seq: int, at_least: int) -> tuple[str, int]:
        return "", after_seq

    def snapshot(self) -> str:
        return ""

    def written(self, seq: int) -> None:
        pass

    def beat(self, html: str) -> None:
        """The live beat: the connection status, re-sent every ROOMCAST_LIVE_BEAT."""
        self.outbox.put(None, None, html)

    # Frames from the page ------------------------------------------------------------------

    def within_budget(self) -> bool:
        """Count one inbound frame (of any kind); past the budget, say why and close."""
        if self.budget.take():
            return True
        if not self.ending:
            metrics.LIMIT_REFUSALS.labels("frames").inc()
            socket_log.warning("socket over its frame budget", extra=self.log_fields())
            transport = self.transport
            if transport is not None:  # daphne: stop taking its frames in at once
                channels_adapter.stop_reading(transport)
            self.end(CLOSE_FLOOD, fragments.message_error(limits.FLOOD) + notice(limits.FLOOD))
        return False

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """A socket that only listens still counts what it is sent."""
        self.within_budget()

    # Events common to every socket kind ---------------------------------------------------

    def on_user_revoked(self, event: dict[str, Any]) -> None:
        if event["user"] == self.viewer.user_id:
            self.end(CLOSE_REVOKED, notice(event.get("reason") or "You were signed out."))


class RoomConsumer(LiveSocket):
    """One browser tab in one room."""

    kind = "room"

    def __init__(self, hub: Hub | None = None, **kwargs: Any) -> None:
        super().__init__(hub, **kwargs)
        self.room: Room | None = None
        self.time_zone = "UTC"
        self.synced_once = False
        self.typists_shown: tuple[str, ...] = ()
        self.read_seq = 0
        self.read_now = False
        self.read_timer: Any = None

    @property
    def last_seq(self) -> int:
        """The last room event the page shows (0 until it has synced)."""
        return self.outbox.seq or 0

    # Connection -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Called when the socket opens: check the room, then join its fan-out."""
        self.fast_send = raw_send(self.base_send)
        self.user = self.scope["user"]
        try:
            self.room, allowed, self.time_zone = await room_for(
                self.scope["url_route"]["kwargs"]["slug"], self.user
            )
        except DatabaseError:
            logger.warning("the database is unavailable: socket asked to retry", exc_info=True)
            await self.accept()
            await self.close(code=CLOSE_TRY_AGAIN)
            return
        # Accept first so the close code reaches the page (a refused handshake has none).
        await self.accept()
        if self.room is None:
            await self.close(code=CLOSE_UNKNOWN_ROOM, reason="No such room.")
            return
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN, reason="You may not enter this room.")
            return
        self.room_label = self.room.slug
        if not await self.admit(self.user):
            text = TOO_MANY_SOCKETS if self.user.is_authenticated else limits.TOO_MANY_ANONYMOUS
            await self.send(text_data=fragments.message_error(text))
            await self.close(code=CLOSE_TOO_MANY_SOCKETS, reason=text)
            return
        signed_in = self.user.is_authenticated
        self.viewer = Viewer(
            user_id=self.user.pk if signed_in else None,
            moderator=self.room.is_moderator(self.user),
            time_zone=self.time_zone,
        )
        groups = [events.room_group(self.room.pk), events.SITE_GROUP]
        if signed_in:
            groups.append(events.user_group(self.user.pk))
        if not await self.start_live(groups):
            return
        # The room has events up to what this process fanned out already: a catch-up read
        # shared with other sockets must reach at least that far to serve this one.
        self.outbox.hint(self.hub.seqs.get(groups[0], 0))
        told = signed_in and await self.hub.enter(
            self.room.pk, self.conn_id, self.user.get_username()
        )
        if not told:  # nobody new is listed, so no broadcast brings this page the list
            self.outbox.put(None, None, fragments.presence(await self.hub.present(self.room.pk)))

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes: leave presence and the fan-out."""
        if self.read_timer is not None:
            self.read_timer.cancel()
        if self.room is not None and self.groups_joined and self.viewer.user_id is not None:
            await self.hub.exit(self.room.pk, self.conn_id)
        await self.stop_live(code)
        if self.room is not None:
            try:
                await self.flush_read()
            except DatabaseError:
                logger.warning("could not store the read marker", exc_info=True)

    def refuse(self) -> None:
        """This user may no longer be here: say so on the page and close the socket."""
        assert self.room is not None
        self.end(CLOSE_FORBIDDEN, fragments.removed_from_room(self.room.title))

    async def check_rate(self) -> None:
        """Refuse a write past the user's rate limit (shared by all their sockets)."""
        self.hub.bound()
        assert self.hub.limits is not None
        if not await self.hub.limits.write_allowed(self.user.pk):
            raise FrameError(SLOW_DOWN)

    # Frames from the page ---------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the page: do what its `action` asks."""
        if not self.within_budget() or self.ending:
            return
        try:
            payload = parse_frame(text_data, bytes_data)
            action = payload.get("action")
            if action is None:  # a bare frame: a sync report or a message
                action = "sync" if "last_seq" in payload else "post"
            handler = ACTIONS.get(action) if isinstance(action, str) else None
            if handler is None:
                raise FrameError("Unknown action: reload the page.")
            await handler(self, payload)
        except (FrameError, ActionError) as error:
            await self.send(text_data=fragments.message_error(str(error)))
        except Forbidden:
            self.refuse()
        except DatabaseError:
            logger.warning("the database is unavailable: %s not saved", self.label, exc_info=True)
            await self.send(text_data=fragments.message_error(NOT_SAVED))

    async def do_sync(self, payload: dict[str, Any]) -> None:
        """The page reports its last event: send what it missed, then go live."""
        form = SyncForm(data={"last_seq": payload.get("last_seq")})
        if not form.is_valid():
            raise FrameError("Could not sync this page: reload it.")
        if self.synced_once:
            return  # one report per connection; later ones describe a page we already fed
        self.synced_once = True
        self.read_now = True  # the read marker moves as soon as the catch-up is written
        self.outbox.sync(form.cleaned_data["last_seq"])
        if payload.get("live") == "0":  # the page still has its no-socket form and poller
            await self.send(text_data=fragments.go_live(self.viewer.user_id is not None))
        self.outbox.put(None, None, fragments.connection_status())

    async def do_post(self, payload: dict[str, Any]) -> None:
        """Validate and store a message; the broadcast brings it to every page."""
        if self.viewer.user_id is None:
            raise FrameError("Log in to post messages.")
        body = message_text(payload)
        key = payload.get("client_key")
        await self.check_rate()
        await database_sync_to_async(post_as)(
            self.room, self.user, body, key if isinstance(key, str) else None
        )
        lines = payload.get("composer") == "lines"  # the several-lines composer sent it
        await self.send(text_data=fragments.message_form_reset(lines=lines))

    async def do_typing(self, payload: dict[str, Any]) -> None:
        """The user typed: tell the others, at most once per throttle window."""
        if self.viewer.user_id is None:
            return
        assert self.room is not None
        key = f"typing:{self.room.pk}:{self.user.pk}"
        if await self.hub.first_in(key, settings.ROOMCAST_TYPING_THROTTLE):
            event = events.typing_event(self.room.pk, self.user.pk, self.user.get_username(), True)
            await self.hub.publish(event)

    async def do_edit(self, payload: dict[str, Any]) -> None:
        """Turn one of the user's messages into its edit form, on this page only."""
        if self.viewer.user_id is None:
            raise FrameError(LOG_IN_TO_EDIT)
        pk = message_id(payload)
        message = await database_sync_to_async(actions.message_for_edit)(self.room, self.user, pk)
        await self.send(text_data=fragments.message_editor(message.as_event()))

    async def do_cancel(self, payload: dict[str, Any]) -> None:
        """Put the message back in place of its edit form."""
        message = await self.message(payload)
        await self.send(text_data=fragments.message(message.as_event(), self.viewer))

    async def do_save(self, payload: dict[str, Any]) -> None:
        """Store an edit; the broadcast replaces the message on every page."""
        if self.viewer.user_id is None:
            raise FrameError(LOG_IN_TO_EDIT)
        pk, body = message_id(payload), message_text(payload)
        await self.check_rate()
        await database_sync_to_async(edit_as)(self.room, self.user, pk, body)

    async def do_delete(self, payload: dict[str, Any]) -> None:
        """Turn a message into a tombstone on every page."""
        if self.viewer.user_id is not None:
            await self.check_rate()
        await database_sync_to_async(delete_as)(self.room, self.user, message_id(payload))

    async def message(self, payload: dict[str, Any]) -> Message:
        message: Message | None = await database_sync_to_async(find_message)(
            self.room, message_id(payload)
        )
        if message is None:
            raise FrameError("That message is not in this room.")
        return message

    # Events from the hub (never await: render through the cache, put in the outbox) -----

    def deliver(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        """Called by the hub with each event of this socket's groups."""
        handler = ROOM_EVENTS.get(event["type"])
        if handler is not None:
            handler(self, event, cache)

    def on_message(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        message, seq = event["message"], event["seq"]
        key = (events.MESSAGE, self.viewer.message_variant(message))
        text = cache.get(key)
        if text is None:
            text = cache[key] = fragments.new_messages([message], self.viewer, seq)
        self.outbox.put(seq, seq, text)

    def on_message_changed(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        message, seq = event["message"], event["seq"]
        key = (events.MESSAGE_CHANGED, self.viewer.message_variant(message))
        text = cache.get(key)
        if text is None:
            text = cache[key] = fragments.changed_messages([message], self.viewer, seq)
        self.outbox.put(seq, seq, text)

    def on_behind(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        self.outbox.hint(event["seq"])

    def on_presence(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        text = cache.get(events.PRESENCE)
        if text is None:
            text = cache[events.PRESENCE] = fragments.presence(event["names"])
        self.outbox.put(None, None, text)

    def on_typists(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        # Never show people their own typing: one render per distinct list.
        names = tuple(name for uid, name in event["typists"] if uid != self.viewer.user_id)
        if names == self.typists_shown:
            return  # nothing changed for this viewer (the typist themselves, say)
        self.typists_shown = names
        key = (events.TYPISTS, names)
        text = cache.get(key)
        if text is None:
            text = cache[key] = fragments.typing(list(names))
        self.outbox.put(None, None, text)

    def on_fragment(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        self.outbox.put(None, None, event["html"])

    def on_member_removed(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        if event["user"] == self.viewer.user_id:
            self.refuse()

    def on_access(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        if self.viewer.user_id not in event["allowed"]:
            self.refuse()

    def on_mention(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        assert self.room is not None
        if event["room_slug"] != self.room.slug:  # here the message itself shows it
            self.outbox.put(None, None, fragments.mention_toast(event))

    def on_revoked(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        self.on_user_revoked(event)

    # The outbox's owner: catch-up, state after an overflow, read marker -----------------

    async def catch_up(self, after_seq: int, at_least: int) -> tuple[str, int]:
        """What the page lacks after `after_seq` (one read shared by the room's sockets
        asking for the same range), re-checking that the user may still read the room."""
        assert self.room is not None
        result = await self.hub.catch_ups.fetch(self.room.pk, after_seq, at_least)
        if not result.may_read(self.viewer.user_id):
            self.refuse()
            return "", after_seq
        return result.render(self.viewer, self.render_catch_up), result.last_seq

    def render_catch_up(self, result: CatchUp) -> str:
        return fragments.catch_up_or_history(
            result.after, result.missed, result.latest, self.viewer, result.last_seq
        )

    def snapshot(self) -> str:
        """After an overflow: who is here (as this process last heard), and who types."""
        assert self.room is not None
        names = self.hub.names(self.room.pk)
        parts = [fragments.presence(names)] if names is not None else []
        group = events.room_group(self.room.pk)
        typists = [n for uid, n in self.hub.typing.typists(group) if uid != self.viewer.user_id]
        self.typists_shown = tuple(typists)
        parts.append(fragments.typing(typists))
        return "".join(parts)

    def written(self, seq: int) -> None:
        if self.read_now:
            self.read_now = False
            self.spawn(self.flush_read(), "read-marker")
        else:
            self.note_read()

    def note_read(self) -> None:
        """The page shows new events: write the read marker soon (at most once per interval)."""
        if self.viewer.user_id is None or self.read_timer is not None:
            return
        self.read_timer = self.hub.clock.call_later(
            settings.ROOMCAST_READ_MARK_INTERVAL, self._read_timer_fired
        )

    def _read_timer_fired(self) -> None:
        self.read_timer = None
        self.spawn(self.flush_read(), "read-marker")

    async def flush_read(self) -> None:
        if self.viewer.user_id is None or self.last_seq <= self.read_seq:
            return
        self.read_seq = self.last_seq
        await database_sync_to_async(actions.mark_read)(self.user, self.room, self.read_seq)


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
    events.BEHIND: RoomConsumer.on_behind,
    events.PRESENCE: RoomConsumer.on_presence,
    events.TYPISTS: RoomConsumer.on_typists,
    events.MEMBER_REMOVED: RoomConsumer.on_member_removed,
    events.ACCESS: RoomConsumer.on_access,
    events.MENTION: RoomConsumer.on_mention,
    events.FRAGMENT: RoomConsumer.on_fragment,
    events.USER_REVOKED: RoomConsumer.on_revoked,
}


# What the room list socket keeps of each room to render its entry (with its last message).
ENTRY_KEYS = ("id", "title", "url", "is_private")


def entry_message(message: dict[str, Any]) -> dict[str, Any]:
    """What a room list entry shows of a message (as events carry it)."""
    return {key: message[key] for key in ("id", "author", "body", "deleted", "created")}


# Events after which the room list reads a room's unread count again from the database.
RECOUNT_AFTER = {events.READ, events.BEHIND}


class UserConsumer(LiveSocket):
    """The socket of a page that is not a room: mention toasts, and on the home page
    (`/ws/me/?unread=1`) the live room list: each room's last message and the user's
    unread count, the room with news moved first, rooms the user may now see added, and
    rooms they may no longer see taken off.

    A room page's sidebar opens one too (`/ws/me/?unread=1&beside=<room id>`): live unread
    counts only, none for the room beside it (read there), and no toasts (the room's own
    socket brings those)."""

    kind = "user"

    def __init__(self, hub: Hub | None = None, **kwargs: Any) -> None:
        super().__init__(hub, **kwargs)
        # The home page's rooms (id -> id, title, url, is_private) and unread counts.
        self.listed: dict[int, dict[str, Any]] = {}
        self.unread: dict[int, int] = {}
        self.last_ids: dict[int, int] = {}  # the message each entry shows, by room
        # Rooms whose count is being read again: how many reads are in flight, the seqs
        # of others' messages that arrived meanwhile, and the newest read applied.
        self.recounts: dict[int, int] = {}
        self.arrived: dict[int, deque[int]] = {}
        self.counted_upto: dict[int, int] = {}
        self.lists_rooms = False  # the home page's socket (which keeps the room list live)
        self.beside: int | None = None  # the room of the page whose sidebar this socket serves

    async def connect(self) -> None:
        self.fast_send = raw_send(self.base_send)
        self.user = self.scope["user"]
        await self.accept()
        if not self.user.is_authenticated:
            await self.close(code=CLOSE_FORBIDDEN, reason="Log in first.")
            return
        if not await self.admit(self.user):
            await self.close(code=CLOSE_TOO_MANY_SOCKETS, reason=TOO_MANY_SOCKETS)
            return
        self.viewer = Viewer(user_id=self.user.pk)
        groups = [events.user_group(self.user.pk), events.SITE_GROUP]
        query = parse_qs(self.scope.get("query_string", b"").decode())
        joined = asyncio.Event()
        beside = query.get("beside", [""])[0]
        self.beside = int(beside) if beside.isdigit() else None
        if query.get("unread"):
            try:
                rooms, self.unread, time_zone = await database_sync_to_async(room_list_state)(
                    self.user
                )
            except DatabaseError:
                await self.close(code=CLOSE_TRY_AGAIN)
                return
            self.viewer = Viewer(user_id=self.user.pk, time_zone=time_zone)
            self.lists_rooms = self.beside is None
            self.listed = {room["id"]: {key: room[key] for key in ENTRY_KEYS} for room in rooms}
            self.last_ids = {room["id"]: room["last"]["id"] for room in rooms if room["last"]}
            groups += [events.room_group(room_id) for room_id in self.listed]
            if self.lists_rooms:  # and the page's connection status: live
                listing = fragments.room_list(rooms, self.unread, self.viewer)
                listing += fragments.connection_status()
            else:  # the sidebar: every count as it is now
                listing = "".join(fragments.unread_badge(r, n) for r, n in self.unread.items())

            async def whole_list() -> str:
                await joined.wait()  # so a page that has the list hears every change after it
                return listing

            # First in the outbox: the list as read, then every event from the joins on.
            self.outbox.put(None, None, whole_list)
        self.outbox.sync(0)  # nothing numbered: events leave as they come
        try:
            await self.start_live(groups)
        finally:
            joined.set()

    async def disconnect(self, code: int) -> None:
        await self.stop_live(code)

    def beat(self, html: str) -> None:
        """Only the home page shows the connection status; other pages with this socket
        have no `#connection` for it (and the room page's own socket beats there)."""
        if self.lists_rooms:
            super().beat(html)

    def deliver(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        kind = event["type"]
        if self.beside is not None and kind in (events.FRAGMENT, events.MENTION):
            return  # the room page's own socket brings them
        if kind == events.FRAGMENT:
            self.outbox.put(None, None, event["html"])
        elif kind == events.MENTION:
            text = cache.get(kind)
            if text is None:
                text = cache[kind] = fragments.mention_toast(event)
            self.outbox.put(None, None, text)
        elif kind == events.MESSAGE:
            self.on_message(event, cache)
        elif kind == events.ROOM_VISIBLE:
            self.on_room_visible(event, cache)
        elif kind == events.MESSAGE_CHANGED:
            if event["message"]["deleted"]:  # first: the entry's badge then waits for it
                self.recount(event["room"], cache)
            self.on_message_changed(event, cache)
        elif kind in RECOUNT_AFTER:
            self.recount(event["room"], cache)
        elif self.shut_out(event):
            self.forget_room(event["room"])
        elif kind == events.USER_REVOKED:
            self.on_user_revoked(event)

    # The home page's room list ------------------------------------------------------------

    def on_message(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        """A message in a listed room: the room moves first, showing it; others' messages
        count as unread."""
        room_id, message = event["room"], event["message"]
        room = self.listed.get(room_id)
        if room is None or room_id == self.beside:
            return  # (the page beside the sidebar shows the message: it is being read)
        if message["author_id"] != self.user.pk and not self.reading(room_id):
            self.unread[room_id] = self.unread.get(room_id, 0) + 1
            if self.recounts.get(room_id):
                self.arrived[room_id].append(event["seq"])
        if not self.lists_rooms:
            self.put_badge(room_id, cache)
            return
        self.last_ids[room_id] = message["id"]
        self.put_item({**room, "last": entry_message(message)}, cache)

    def on_message_changed(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        """The message an entry shows was edited or deleted: the entry changes in place."""
        room_id, message = event["room"], event["message"]
        room = self.listed.get(room_id)
        if room is None or not self.lists_rooms or self.last_ids.get(room_id) != message["id"]:
            return
        key = ("room_list_entry", self.viewer.time_zone)
        entry = cache.get(key)
        if entry is None:
            entry = cache[key] = fragments.room_list_entry(
                {**room, "last": entry_message(message)}, self.viewer
            )
        self.outbox.put(None, None, entry)
        self.put_badge(room_id, cache)

    def reading(self, room_id: int) -> bool:
        """Whether the user has the room open on another page (present there, as this
        process last heard; no I/O): that page shows the message and marks it read within
        ROOMCAST_READ_MARK_INTERVAL, so it never counts as unread here meanwhile."""
        names = self.hub.names(room_id)
        return names is not None and self.user.get_username() in names

    def on_room_visible(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        """A room the user may now see: listed first, and its events heard from now on.

        Access is checked again here: a private room's item is only ever taken from the
        event that names this user (sent to their group alone)."""
        room = event["room"]
        room_id = int(room["id"])
        if not self.lists_rooms or room_id in self.listed:
            return
        if room["is_private"] and event.get("user") != self.user.pk:
            return
        self.listed[room_id] = {key: room[key] for key in ENTRY_KEYS}
        if room.get("last"):
            self.last_ids[room_id] = room["last"]["id"]
        self.unread[room_id] = event.get("unread", 0) if room["is_private"] else 0
        self.put_item(room, cache)
        group = events.room_group(room_id)
        self.groups_joined.append(group)
        self.spawn(self.hub.join(group, self), "join")

    def put_item(self, room: dict[str, Any], cache: dict[Any, Any]) -> None:
        """The room's entry, first in the list (rendered once per event and time zone),
        then this user's badge."""
        key = ("room_list_item", self.viewer.time_zone)
        item = cache.get(key)
        if item is None:
            item = cache[key] = fragments.room_list_item(room, viewer=self.viewer)
        self.outbox.put(None, None, item)
        self.put_badge(room["id"], cache)

    def put_badge(self, room_id: int, cache: dict[Any, Any]) -> None:
        """The user's unread count of a room: rendered once per event and count, or, while
        the count is being read again, from the count the writer has when it sends it."""
        if self.recounts.get(room_id):

            async def current() -> str:
                return fragments.unread_badge(room_id, self.unread.get(room_id, 0))

            self.outbox.put(None, None, current)
            return
        count = self.unread.get(room_id, 0)
        key = ("unread", room_id, count)
        badge = cache.get(key)
        if badge is None:
            badge = cache[key] = fragments.unread_badge(room_id, count)
        self.outbox.put(None, None, badge)

    def shut_out(self, event: dict[str, Any]) -> bool:
        """Whether the event says this user may no longer read its room."""
        if event["type"] == events.MEMBER_REMOVED:
            return bool(event["user"] == self.user.pk)
        return event["type"] == events.ACCESS and self.user.pk not in event["allowed"]

    def recount(self, room_id: int, cache: dict[Any, Any]) -> None:
        """Read the room's unread count again: once per event per user (the user's other
        sockets in this process share the read through the event's cache).

        The read also says up to which sequence number it counted; others' messages that
        arrive while it is in flight and lie beyond that are added to it, so a message
        and a read crossing each other leave the right count."""
        if room_id not in self.unread:
            return
        key = ("unread", self.user.pk, room_id)
        shared = cache.get(key)
        if shared is None:
            read = database_sync_to_async(unread_snapshot)(self.user, room_id)
            shared = cache[key] = asyncio.ensure_future(read)
            shared.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.recounts[room_id] = self.recounts.get(room_id, 0) + 1
        self.arrived.setdefault(room_id, deque(maxlen=settings.ROOMCAST_OUTBOX_LIMIT))

        async def badge() -> str:
            try:
                count, upto = await asyncio.shield(shared)
                if room_id in self.unread and upto >= self.counted_upto.get(room_id, 0):
                    self.counted_upto[room_id] = upto
                    later = sum(1 for seq in self.arrived.get(room_id, ()) if seq > upto)
                    self.unread[room_id] = count + later
            finally:
                self.recounted(room_id)
            return fragments.unread_badge(room_id, self.unread.get(room_id, 0))

        self.outbox.put(None, None, badge)

    def recounted(self, room_id: int) -> None:
        left = self.recounts.get(room_id, 0) - 1
        if left > 0:
            self.recounts[room_id] = left
        else:
            self.recounts.pop(room_id, None)
            self.arrived.pop(room_id, None)

    def snapshot(self) -> str:
        """After an overflow (entries, reads in flight among them, were dropped): the page
        reconnects and its socket starts from the database again."""
        self.recounts.clear()
        self.arrived.clear()
        self.end(CLOSE_TRY_AGAIN)
        return ""

    def forget_room(self, room_id: int) -> None:
        group = events.room_group(room_id)
        listed = self.listed.pop(room_id, None)
        self.last_ids.pop(room_id, None)
        self.unread.pop(room_id, None)
        if listed is not None and self.lists_rooms:
            self.outbox.put(None, None, fragments.room_list_gone(room_id))
        if group in self.groups_joined:
            self.groups_joined.remove(group)
            self.spawn(self.hub.leave(group, self), "leave")


class DashboardConsumer(LiveSocket):
    """The dashboard page's socket: takes the process's dashboard pushes."""

    kind = "dashboard"

    def __init__(self, hub: Hub | None = None, **kwargs: Any) -> None:
        super().__init__(hub, **kwargs)
        self.feed: dashboard.DashboardFeed | None = None

    async def connect(self) -> None:
        self.fast_send = raw_send(self.base_send)
        self.user = self.scope["user"]
        await self.accept()
        if not await self.admit(self.user):
            await self.close(code=CLOSE_TOO_MANY_SOCKETS, reason=TOO_MANY_SOCKETS)
            return
        groups = []
        if self.user.is_authenticated:  # to hear that the user was signed out
            self.viewer = Viewer(user_id=self.user.pk)
            groups.append(events.user_group(self.user.pk))
        self.outbox.sync(0)
        await self.start_live(groups)
        self.feed = dashboard.feed_for(self.hub)
        await self.feed.join(self)

    async def disconnect(self, code: int) -> None:
        if self.feed is not None:
            await self.feed.leave(self)
        await self.stop_live(code)

    def beat(self, html: str) -> None:
        """The dashboard page has no `#connection` to restart: nothing to send."""

    def push(self, html: str) -> None:
        """The dashboard feed's update (rendered once for every dashboard)."""
        self.outbox.put(None, None, html)

    def deliver(self, event: dict[str, Any], cache: dict[Any, Any]) -> None:
        if event["type"] == events.USER_REVOKED:
            self.on_user_revoked(event)
        elif event["type"] == events.FRAGMENT:
            self.outbox.put(None, None, event["html"])


class NotFoundConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Any other WebSocket path: accepted, then closed with 4404 (no traceback, no 500)."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)


# Database work, each in one thread hop ------------------------------------------------


async def room_for(slug: str, user: Any) -> tuple[Room | None, bool, str]:
    """The room with this slug (or None), whether `user` may enter it, and their time zone."""
    found: tuple[Room | None, bool, str] = await database_sync_to_async(read_room)(slug, user)
    return found


def read_room(slug: str, user: Any) -> tuple[Room | None, bool, str]:
    """room_for's read, in the database thread (one hop, three small queries at most)."""
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        return None, False, "UTC"
    try:
        actions.require_reader(room, user)
    except Forbidden:
        return room, False, "UTC"
    time_zone = Profile.for_user(user).time_zone if user.is_authenticated else "UTC"
    return room, True, time_zone


def find_message(room: Room, pk: int) -> Message | None:
    try:
        return actions.find_message(room, pk)
    except ActionError:
        return None


# The socket's writes go through the write layer, which checks again that the user may
# (membership can be revoked meanwhile): Forbidden closes the socket, ActionError is shown.


def post_as(room: Room, user: Any, body: str, client_key: str | None = None) -> Message:
    return actions.post_message(room, user, body, client_key)


def edit_as(room: Room, user: Any, pk: int, body: str) -> None:
    actions.edit_message(room, user, pk, body)


def delete_as(room: Room, user: Any, pk: int) -> None:
    actions.delete_message(room, user, pk)


def room_list_state(user: Any) -> tuple[list[dict[str, Any]], dict[int, int], str]:
    """What the home page's socket starts from: the rooms the user may see, most recently
    active first, each with its last message (as a pushed entry shows them), their unread
    counts, and the user's time zone."""
    rooms = room_overview(user)
    return rooms, unread_counts(user, [room["id"] for room in rooms]), fragments.time_zone_of(user)


def unread_snapshot(user: Any, room_id: int) -> tuple[int, int]:
    """The user's unread count in a room and the room's last sequence number, read in one
    statement (one snapshot): every message up to that number is counted, none after."""
    marker = ReadMarker.objects.filter(user=user, room=OuterRef("room")).values("last_read_seq")
    unread = (
        Message.objects.filter(room=OuterRef("pk"), deleted=False)
        .exclude(author=user)
        .annotate(read=Coalesce(Subquery(marker), 0))
        .filter(seq__gt=F("read"))
        .order_by()
        .values("room")
        .annotate(n=Count("id"))
        .values("n")
    )
    row = (
        Room.objects.filter(pk=room_id)
        .annotate(unread=Coalesce(Subquery(unread), 0))
        .values_list("unread", "last_seq")
        .first()
    )
    return (int(row[0]), int(row[1])) if row is not None else (0, 0)
