"""The live dashboard: figures per room, small SVG charts, and the feed that pushes them.

The figures are computed by a background task in each server process that has a
dashboard open (the `DashboardFeed`), at most once per interval (1 s), never per message:
a burst of a thousand messages costs one computation and one push. Every dashboard socket
of the process gets the same rendered HTML, and only when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.template.loader import render_to_string
from django.utils import timezone

from rooms import presence, workers
from rooms.models import Message, Room

logger = logging.getLogger(__name__)

MINUTES = 60
PAGE = "rooms/dashboard.html"


@dataclass
class RoomFigures:
    room_id: int
    title: str
    url: str
    online: int
    per_minute: list[int]  # messages in each of the last MINUTES minutes, oldest first

    @property
    def last_hour(self) -> int:
        return sum(self.per_minute)


def room_figures(now=None) -> list[RoomFigures]:
    """Messages per minute over the last hour for every public room (online filled later)."""
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=MINUTES)
    rooms = list(Room.objects.filter(is_private=False).order_by("title"))
    rows = (
        Message.objects.filter(room__in=rooms, created__gte=start, created__lt=end)
        .annotate(minute=TruncMinute("created"))
        .values("room", "minute")
        .annotate(n=Count("id"))
    )
    series = {room.pk: [0] * MINUTES for room in rooms}
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= index < MINUTES:
            series[row["room"]][index] += row["n"]
    return [
        RoomFigures(room.pk, room.title, room.get_absolute_url(), 0, series[room.pk])
        for room in rooms
    ]


def sparkline(values: list[int], width: int = 180, height: int = 28) -> dict:
    """Geometry of a sparkline: polyline points scaled to the box (0 at the bottom)."""
    top = max(values, default=0) or 1
    step = width / max(len(values) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )
    return {"points": points, "width": width, "height": height, "max": max(values, default=0)}


def bar_width(value: int, largest: int, width: int = 120) -> int:
    """Width of a bar for `value` when the largest bar is `width` wide."""
    return round(width * value / largest) if largest else 0


def context(figures: list[RoomFigures], online: int) -> dict:
    """What the dashboard partials render."""
    largest = max((f.last_hour for f in figures), default=0)
    return {
        "rows": [
            {
                "figures": f,
                "spark": sparkline(f.per_minute),
                "values": ",".join(map(str, f.per_minute)),
                "bar": bar_width(f.last_hour, largest),
            }
            for f in figures
        ],
        "online": online,
        "messages": sum(f.last_hour for f in figures),
        "rooms": len(figures),
        "minutes": MINUTES,
    }


async def current_context(hub) -> dict:
    """The dashboard's figures now, with presence from the hub's store."""
    figures = await database_sync_to_async(room_figures)()
    ctx = context(figures, await count_online(figures, hub.present))
    ctx["jobs"] = await database_sync_to_async(workers.queue_figures)()
    return ctx


async def count_online(figures: list[RoomFigures], present) -> int:
    """Fill in each room's online count; return the number of people online in all."""
    everyone: set[str] = set()
    for f in figures:
        names = await present(f.room_id)
        f.online = len(names)
        everyone.update(names)
    return len(everyone)


def page_context() -> dict:
    """The figures for the first render of the page (sync: a view)."""
    figures = room_figures()

    async def online() -> int:
        store = presence.get_store()
        try:
            return await count_online(figures, store.names)
        except Exception:  # the page still loads while Redis is down
            logger.warning("presence store unavailable", exc_info=True)
            return 0
        finally:
            await store.close()

    ctx = context(figures, async_to_sync(online)())
    ctx["jobs"] = workers.queue_figures()
    return ctx


def render(ctx: dict) -> str:
    """The pushed update: the whole dashboard body, swapped by its id."""
    return render_to_string(f"{PAGE}#dashboard_body", {**ctx, "oob": True})


class DashboardFeed:
    """Pushes the dashboard to this process's dashboard sockets, at most once per interval."""

    def __init__(self, hub) -> None:
        self.hub = hub
        self.sockets: set = set()
        self.task: asyncio.Task | None = None
        self.last_html: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def join(self, socket) -> None:
        self.sockets.add(socket)
        if self.task is None or self.task.done():
            self.last_html = None
            self.task = asyncio.create_task(self.run(), name="roomcast-dashboard")

    async def leave(self, socket) -> None:
        self.sockets.discard(socket)
        if not self.sockets and self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the dashboard could not be computed")
            await asyncio.sleep(settings.ROOMCAST_DASHBOARD_INTERVAL)

    async def tick(self) -> None:
        """Compute once; push to every dashboard socket if anything changed."""
        html = render(await current_context(self.hub))
        if html == self.last_html:
            return
        self.last_html = html
        for socket in list(self.sockets):
            socket.push(html)  # into the socket's own outbox: a slow dashboard waits alone


def feed_for(hub) -> DashboardFeed:
    """The dashboard feed of this hub (one per hub, per event loop), kept on the hub
    itself so that no registry outlives it."""
    loop = asyncio.get_running_loop()
    feed = getattr(hub, "dashboard_feed", None)
    if feed is None or feed.loop is not loop:
        feed = hub.dashboard_feed = DashboardFeed(hub)
        feed.loop = loop
    return feed
