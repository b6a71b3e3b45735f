"""Group names and publishing: how a room event reaches the channel layer.

Events carry plain values (ids, numbers, strings) so any channel layer can carry them.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

MESSAGE = "room.message"


def room_group(room_id: int) -> str:
    """The channel-layer group of a room, built from its primary key, never from URL text."""
    return f"room-{int(room_id)}"


def message_event(room_id: int, message: dict) -> dict:
    """The group event for a new message."""
    return {"type": MESSAGE, "room": int(room_id), "seq": message["seq"], "message": message}


async def apublish(group: str, event: dict) -> None:
    """Send one event to a group from async code."""
    await get_channel_layer().group_send(group, event)


def publish(group: str, event: dict) -> None:
    """Send one event to a group from sync code.

    A layer failure is logged, not raised: the write has committed already, and every
    socket catches up from the database when it sees the gap in the room's sequence.
    """
    try:
        async_to_sync(apublish)(group, event)
    except Exception:
        logger.exception("could not publish %s to %s", event.get("type"), group)


def publish_message(room_id: int, message: dict) -> None:
    """Publish a stored message to its room."""
    publish(room_group(room_id), message_event(room_id, message))
