"""Pushes from worker processes to pages when the channel layer cannot cross processes.

On the embedded default (in-memory layer) a worker's `live.apush` would reach nobody: the
pages' sockets live in the web process. So a worker stores each push as a `RelayedPush`
row, and every web process runs one `Relay` task that reads new rows every
`ROOMCAST_RELAY_INTERVAL` seconds (at most `ROOMCAST_RELAY_BATCH` a time) and publishes
them on its own layer, where its fan-out hub hands them to its sockets. Rows are not
deleted on delivery, since several web processes each need every row: each process keeps
its own cursor, and rows are deleted `ROOMCAST_RELAY_TTL` seconds after they were made (by
the workers' maintenance), long after every live process has read them.

With `REDIS_URL` the layer carries workers' pushes directly and no rows are written.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import models
from django.db.models import Max, Q
from django.utils import timezone

from rooms import events

if TYPE_CHECKING:
    from rooms.fanout import Hub

logger = logging.getLogger(__name__)

# A row id skipped over by the cursor (its transaction had not committed yet) is looked
# for again for this long, then given up; at most MAX_GAPS are remembered (the oldest go).
GAP_WAIT = 10.0
MAX_GAPS = 1000
# A relay that failed is started again after this many seconds.
RESTART_DELAY = 1.0
# How often (seconds) a web process tells the digest who has a page open here.
SWEEP_INTERVAL = 2.0


class RelayedPush(models.Model):
    """One event a worker published for pages, waiting for every web process to read it."""

    group = models.CharField(max_length=150)
    event = models.JSONField()
    created = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.event.get('type')} to {self.group}"


def layer_is_shared() -> bool:
    """Whether the channel layer reaches other processes (Redis) or not (in memory)."""
    backend = str(settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", ""))
    return not backend.endswith("InMemoryChannelLayer")


def store(event: dict[str, Any]) -> None:
    """Keep an event for every web process's relay to publish."""
    RelayedPush.objects.create(group=event["group"], event=event)


def delete_expired(now: datetime.datetime | None = None) -> int:
    """Delete rows every web process has had time to read; return how many."""
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(seconds=settings.ROOMCAST_RELAY_TTL)
    deleted, _ = RelayedPush.objects.filter(created__lt=cutoff).delete()
    return deleted


class Relay:
    """A web process's reader of relayed pushes: a cursor over row ids, and the gaps in it."""

    def __init__(
        self,
        publish: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
        batch: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.publish = publish or events.apublish
        self.batch = batch or settings.ROOMCAST_RELAY_BATCH
        self.clock = clock
        self.cursor: int | None = None
        self.gaps: dict[int, float] = {}  # row id -> when it was first missed

    def read(self) -> list[RelayedPush]:
        """Rows after the cursor (and missed ones that have committed since), in id order."""
        if self.cursor is None:
            # A process starting now relays what is pushed from now on.
            self.cursor = RelayedPush.objects.aggregate(last=Max("id"))["last"] or 0
        now = self.clock()
        self.gaps = {i: t for i, t in self.gaps.items() if now - t < GAP_WAIT}
        where = Q(id__gt=self.cursor)
        if self.gaps:
            where |= Q(id__in=list(self.gaps))
        rows = list(RelayedPush.objects.filter(where).order_by("id")[: self.batch])
        for row in rows:
            self.gaps.pop(row.pk, None)
            if row.pk > self.cursor:
                # Ids between the cursor and this row belong to transactions that have not
                # committed yet (or rolled back): look for them again for a while.
                for missing in range(self.cursor + 1, min(row.pk, self.cursor + 1 + MAX_GAPS)):
                    self.gaps[missing] = now
                self.cursor = row.pk
        while len(self.gaps) > MAX_GAPS:
            del self.gaps[min(self.gaps)]
        return rows

    async def poll(self) -> int:
        """Publish every new row on the local layer; return how many."""
        rows = await database_sync_to_async(self.read)()
        for row in rows:
            await self.publish(row.group, row.event)
        return len(rows)

    async def run(self) -> None:
        """Poll for ever; on the in-memory layer only (Redis carries pushes itself)."""
        from rooms import digest

        next_sweep = 0.0
        while True:
            try:
                if not layer_is_shared():
                    await self.poll()
                if self.clock() >= next_sweep:
                    # Users with a page open here are not away: no digest for them.
                    next_sweep = self.clock() + SWEEP_INTERVAL
                    await database_sync_to_async(digest.seen_online)(local_users())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("relay could not read pushed events")
            await asyncio.sleep(settings.ROOMCAST_RELAY_INTERVAL)


def local_users(hub: Hub | None = None) -> list[int]:
    """Ids of the users with a socket open in this process (on its hub, or on `hub`).

    Every signed-in page's socket is in its user's group (events.user_group): read them
    from the hub's map of local groups and their sockets.
    """
    from rooms import fanout

    groups = (hub or fanout.hub).groups
    prefix = events.user_group(0).removesuffix("0")
    return sorted(
        int(group.removeprefix(prefix))
        for group, sockets in list(groups.items())
        if group.startswith(prefix) and sockets
    )


# One relay per process (per event loop), started by the first connection it serves.
_task: asyncio.Task[None] | None = None


def ensure_started() -> None:
    """Start this process's relay on the running loop, once, supervised.

    A relay that fails is logged and started again after a second: a stopped relay would
    silently stop every worker's pushes to this process's pages.
    """
    global _task
    loop = asyncio.get_running_loop()
    if _task is not None and not _task.done() and _task.get_loop() is loop:
        return
    _task = loop.create_task(Relay().run(), name="roomcast-relay")
    _task.add_done_callback(_restart)


def _restart(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    logger.error("relay stopped; restarting in %s s", RESTART_DELAY, exc_info=error)
    loop = task.get_loop()
    if not loop.is_closed():
        loop.call_later(RESTART_DELAY, _restart_now, loop)


def _restart_now(loop: asyncio.AbstractEventLoop) -> None:
    global _task
    _task = loop.create_task(Relay().run(), name="roomcast-relay")
    _task.add_done_callback(_restart)
