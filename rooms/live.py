"""Push a live fragment to a room, a user, or the whole site, from any code.

    from rooms import live

    # sync code: views, signals, management commands (sent after the transaction commits)
    live.push(room, "rooms/room_detail.html#notice", {"text": "Deploy at 17:00"})
    # async code: consumers, workers
    await live.apush(user, "base.html#notice_toast", {"text": "Your export is ready"})
    # everyone on every page
    live.push(live.SITE, "base.html#notice_toast", {"text": "Back in 5 minutes"})

The fragment is rendered once, here, and every socket in the target's group sends the same
HTML; its root elements carry the ids and `hx-swap-oob` that say where it lands. Every
page's socket hears its room (room pages), its user (signed-in pages) and the site.

Across processes this needs the Redis layer (`REDIS_URL`); on the embedded in-memory layer
it reaches the sockets of the process that calls it. (Room *messages* reach every page
either way: they are stored, and every process notices new sequence numbers.) Worker
processes (`manage.py roomcast_worker`) on the in-memory layer switch on the database relay
(`use_relay(True)`, rooms/relay.py): their pushes are stored, and every web process
publishes them to its own sockets within `ROOMCAST_RELAY_INTERVAL`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.template.loader import render_to_string

from rooms import events, relay
from rooms.models import Room

SITE = events.SITE_GROUP
"""The target meaning every open page of the site."""


@dataclass(frozen=True)
class User:
    """A user as a push target, by id (workers know ids, not user objects)."""

    id: int


# What can be pushed to: a Room, a user (an instance, or live.User by id), or SITE.
Target = Room | AbstractBaseUser | User | str

# Set in worker processes on the in-memory layer: pushes go through the database.
_relay = False


def use_relay(on: bool) -> None:
    """Send this process's pushes through the database relay (or not)."""
    global _relay
    _relay = on


def group_of(target: Target) -> str:
    """The group a target names: a Room, a user (or live.User), or SITE."""
    if isinstance(target, User):
        return events.user_group(target.id)
    if isinstance(target, Room):
        return events.room_group(target.pk)
    if isinstance(target, AbstractBaseUser):
        return events.user_group(target.pk)
    if target == SITE:
        return SITE
    raise TypeError(f"push to a Room, a user or live.SITE, not {target!r}")


def fragment_event(
    target: Target, template_name: str, context: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The event that carries a rendered fragment to the target's sockets."""
    return events.fragment_event(group_of(target), render_to_string(template_name, context))


def push(target: Target, template_name: str, context: dict[str, Any] | None = None) -> None:
    """Render a fragment and push it to the target's pages, once the transaction commits."""
    event = fragment_event(target, template_name, context)
    transaction.on_commit(lambda: send(event), robust=True)


async def apush(target: Target, template_name: str, context: dict[str, Any] | None = None) -> None:
    """Render a fragment and push it to the target's pages, from async code."""
    event = fragment_event(target, template_name, context)
    if _relay:
        await database_sync_to_async(relay.store)(event)
    else:
        await events.apublish(event["group"], event)


def send(event: dict[str, Any]) -> None:
    """Send an event made here to its group: through the layer, or the relay in workers."""
    if _relay:
        relay.store(event)
    else:
        events.publish(event["group"], event)
