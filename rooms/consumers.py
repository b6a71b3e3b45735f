"""The room socket: moves frames between one browser and the room's fan-out hub."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Hashable

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from rooms import fragments
from rooms.fanout import Hub
from rooms.fanout import hub as default_hub
from rooms.forms import MessageForm, SyncForm
from rooms.models import Message, Room, post_message

logger = logging.getLogger(__name__)

# Application close codes (4000-4999). The htmx ws extension reconnects only after
# 1006, 1011, 1012 and 1013, so these end the page's attempts, as they should.
CLOSE_UNKNOWN_ROOM = 4404
CLOSE_FORBIDDEN = 4403

# A frame longer than this is refused before it is parsed.
MAX_FRAME_BYTES = 32 * 1024
# Events held for a socket that is catching up; past this it catches up again instead.
BACKLOG_LIMIT = 1000


class FrameError(Exception):
    """A frame the socket cannot use; the text is shown to the user."""


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


class RoomConsumer(AsyncWebsocketConsumer):
    """One browser tab in one room."""

    # Sockets receive room events through the process's hub, not a channel each.
    channel_layer_alias = None

    def __init__(self, hub: Hub | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hub = hub or default_hub
        self.room: Room | None = None
        self.variant: Hashable = None
        self.last_seq = 0
        # Until the page says what it shows, events wait in the backlog.
        self.syncing = True
        self.synced_once = False
        self.backlog: list[tuple[int, str]] = []
        self.backlog_overflowed = False
        self.catch_up_task: asyncio.Task | None = None

    async def connect(self) -> None:
        """Called when the socket opens: check the room and join its fan-out."""
        self.user = self.scope["user"]
        self.room = await get_room(self.scope["url_route"]["kwargs"]["slug"])
        # Accept first so the close code reaches the page (a refused handshake has none).
        await self.accept()
        if self.room is None:
            await self.close(code=CLOSE_UNKNOWN_ROOM, reason="No such room.")
            return
        if not self.room.can_read(self.user):
            await self.close(code=CLOSE_FORBIDDEN, reason="You may not enter this room.")
            return
        await self.hub.join(self.room.pk, self)

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes: leave the room's fan-out."""
        if self.catch_up_task is not None:
            self.catch_up_task.cancel()
        if self.room is not None:
            await self.hub.leave(self.room.pk, self)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        """Called with each frame from the page: a sync report or a message."""
        try:
            payload = parse_frame(text_data, bytes_data)
        except FrameError as error:
            await self.send(text_data=fragments.message_error(str(error)))
            return
        if "last_seq" in payload:
            await self.receive_sync(payload)
        else:
            await self.receive_message(payload)

    async def receive_sync(self, payload: dict) -> None:
        """The page reports its last event: send what it missed, then go live."""
        form = SyncForm(data={"last_seq": payload.get("last_seq")})
        if not form.is_valid():
            await self.send(text_data=fragments.message_error("Could not sync this page."))
            return
        if self.synced_once:
            return  # one report per connection; later ones describe a page we already fed
        self.synced_once = True
        await self.catch_up(form.cleaned_data["last_seq"])

    async def receive_message(self, payload: dict) -> None:
        """Validate and store a message; the broadcast brings it to every page."""
        if not self.room.can_post(self.user):
            await self.send(text_data=fragments.message_error("Log in to post messages."))
            return
        message = payload.get("message")
        if message is not None and not isinstance(message, str):
            await self.send(text_data=fragments.message_error("A message must be text."))
            return
        form = MessageForm(data={"message": message})
        if not form.is_valid():
            await self.send(text_data=fragments.message_error(form.errors["message"][0]))
            return
        await database_sync_to_async(post_message)(
            self.room, self.user, form.cleaned_data["message"]
        )
        await self.send(text_data=fragments.message_form_reset())

    async def offer(self, seq: int, text: str) -> None:
        """Called by the hub with each room event's fragment, in arrival order."""
        if self.syncing:
            self.backlog.append((seq, text))
            if len(self.backlog) > BACKLOG_LIMIT:
                self.backlog.clear()
                self.backlog_overflowed = True
        elif seq == self.last_seq + 1:
            self.last_seq = seq
            await self.send(text_data=text)
        elif seq > self.last_seq + 1:
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
                for seq, text in waiting:
                    if seq == self.last_seq + 1:
                        self.last_seq = seq
                        await self.send(text_data=text)
                    elif seq > self.last_seq + 1:
                        self.backlog_overflowed = True  # a gap: read the database again
                        break
            if not self.backlog_overflowed:
                self.syncing = False
                return
            self.backlog.clear()
            after_seq = self.last_seq

    async def send_missed(self, after_seq: int) -> None:
        """Send the messages after `after_seq`, or the whole history if too far behind."""
        missed, latest, last_seq = await missed_messages(self.room.pk, after_seq)
        if latest is not None:
            await self.send(text_data=fragments.message_history(latest, last_seq))
        elif missed:
            await self.send(text_data=fragments.new_messages(missed))
        self.last_seq = last_seq


@database_sync_to_async
def get_room(slug: str) -> Room | None:
    """The room with this slug, or None."""
    return Room.objects.filter(slug=slug).first()


@database_sync_to_async
def missed_messages(room_id: int, after_seq: int) -> tuple[list[dict], list[dict] | None, int]:
    """What a page that shows events up to `after_seq` lacks.

    Returns (missed, None, last_seq) when the page can append the missed messages, or
    ([], latest, last_seq) when it is too far behind (or ahead) and should show the
    latest history instead.
    """
    limit = settings.ROOMCAST_CATCHUP_LIMIT
    room_last = Room.objects.values_list("last_seq", flat=True).get(pk=room_id)
    rows = (
        Message.objects.filter(room_id=room_id, seq__gt=after_seq)
        .select_related("author")
        .order_by("seq")[: limit + 1]
    )
    missed = [message.as_event() for message in rows]
    if after_seq > room_last or len(missed) > limit:
        latest = [m.as_event() for m in Room(pk=room_id).latest_messages()]
        return [], latest, latest[-1]["seq"] if latest else 0
    return missed, None, missed[-1]["seq"] if missed else after_seq
