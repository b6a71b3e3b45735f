"""Room sequence numbers: catch-up shared by the sockets that need the same range, the
resync loop that finds writes whose events never arrived, and access re-checks.

A socket that lacks room events (after a reconnect, a gap, an overflow or a resync hint)
asks `CatchUps.fetch(room, after_seq)`. Sockets of one room asking for the same range
while a read is in flight share it: one query, however many sockets (a reconnect
storm). At most `ROOMCAST_CATCHUP_CONCURRENCY` reads run at once per process; the rest
wait their turn. A read that fails is forgotten, so the next request reads again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings

from rooms import clock as clocks
from rooms import metrics
from rooms.clock import Clock

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SharedReads:
    """Database reads shared by key while in flight, at most `limit` running at once.

    `in_flight` holds only reads in flight, each removed when it ends, so it is bounded by
    the number of distinct keys being read. A finished read is kept `keep` seconds (at
    most `max_kept` of them, oldest dropped first), so that a reconnect storm spread over
    a second still reads once per range.
    """

    def __init__(
        self, limit: int, clock: Clock | None = None, keep: float = 0.0, max_kept: int = 1000
    ) -> None:
        self.limit = limit
        self.clock = clock or clocks.system
        self.keep = keep
        self.max_kept = max_kept
        self.kept: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.in_flight: dict[Hashable, asyncio.Task[Any]] = {}
        self.reads = 0  # reads started, for tests and statistics

    def _bind(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or loop is not self._loop:
            self._loop, self._semaphore, self.in_flight = loop, asyncio.Semaphore(self.limit), {}
            self.kept.clear()
        return self._semaphore

    async def get(
        self,
        key: Hashable,
        read: Callable[[], Awaitable[T]],
        usable: Callable[[T], bool] | None = None,
    ) -> T:
        """The result of `read()` for `key`, shared with every caller asking meanwhile.

        A shared or kept result that is not `usable` for this caller (it was read before
        what the caller needs was committed) is read again. The read runs in a task of
        its own, so a caller that goes away (its socket closed) does not cancel it for
        the others; its failure reaches every caller.
        """
        semaphore = self._bind()
        kept = self.kept.get(key)
        if kept is not None:
            if kept[0] > self.clock.now() and (usable is None or usable(kept[1])):
                return kept[1]  # type: ignore[no-any-return]
            del self.kept[key]
        task = self.in_flight.get(key)
        if task is not None:
            result: T = await asyncio.shield(task)
            if usable is None or usable(result):
                return result
        task = asyncio.create_task(self._run(semaphore, read), name=f"roomcast-read-{key}")
        self.in_flight[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    async def _run(self, semaphore: asyncio.Semaphore, read: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            self.reads += 1
            return await read()

    def _forget(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        if self.in_flight.get(key) is done:
            del self.in_flight[key]
        if done.cancelled() or done.exception() is not None:
            return  # a failure is raised to every caller, and the next one reads again
        if self.keep > 0:
            self.kept[key] = (self.clock.now() + self.keep, done.result())
            while len(self.kept) > self.max_kept:
                self.kept.popitem(last=False)


@dataclass
class CatchUp:
    """What changed in a room after a sequence number, as read once for many sockets."""

    room_id: int
    after: int
    missed: list[dict[str, Any]]
    latest: list[dict[str, Any]] | None  # the latest history instead, when too far behind
    last_seq: int
    allowed: frozenset[int] | None  # users who may read a private room; None: public
    renders: dict[Hashable, str] = field(default_factory=dict)

    def may_read(self, user_id: int | None) -> bool:
        return self.allowed is None or (user_id is not None and user_id in self.allowed)

    def render(self, viewer: Hashable, make: Callable[[CatchUp], str]) -> str:
        """The catch-up fragment for one viewer variant, rendered once per variant."""
        text = self.renders.get(viewer)
        if text is None:
            text = self.renders[viewer] = make(self)
        return text


def read_catch_up(room_id: int, after_seq: int) -> CatchUp:
    """One read: the room's changes after `after_seq`, and who may read it."""
    from rooms import models  # the models import this package's events module

    missed, latest, last_seq = models.missed_changes(room_id, after_seq)
    allowed = allowed_users([room_id]).get(room_id)
    return CatchUp(room_id, after_seq, missed, latest, last_seq, allowed)


class CatchUps:
    """Catch-up reads of one process, shared per (room, after_seq)."""

    # A finished read serves sockets asking for the same range this long. Safe: events
    # after its last_seq reach every socket anyway (live, or by the resync's hint).
    KEEP = 1.0

    def __init__(self, clock: Clock | None = None, limit: int | None = None) -> None:
        limit = limit or settings.ROOMCAST_CATCHUP_CONCURRENCY
        self.shared = SharedReads(limit, clock, keep=self.KEEP)

    async def fetch(self, room_id: int, after_seq: int, at_least: int = 0) -> CatchUp:
        """The room's changes after `after_seq`, from a read that reaches `at_least`."""

        async def read() -> CatchUp:
            metrics.CATCH_UP_QUERIES.inc()
            result: CatchUp = await database_sync_to_async(read_catch_up)(room_id, after_seq)
            return result

        def usable(result: CatchUp) -> bool:
            return result.last_seq >= at_least or result.latest is not None

        return await self.shared.get(("catch-up", room_id, after_seq), read, usable)


def allowed_users(room_ids: list[int]) -> dict[int, frozenset[int] | None]:
    """For each room: the ids of the users who may read it (owner and members) if it is
    private, None if it is public. Two queries, whatever the number of rooms."""
    from rooms.models import Room

    rooms = dict(Room.objects.filter(pk__in=room_ids).values_list("pk", "is_private"))
    private = [pk for pk, is_private in rooms.items() if is_private]
    allowed: dict[int, set[int]] = {pk: set() for pk in private}
    if private:
        through = Room.members.through
        for room_id, user_id in through.objects.filter(room_id__in=private).values_list(
            "room_id", "user_id"
        ):
            allowed[room_id].add(user_id)
        for room_id, owner_id in Room.objects.filter(pk__in=private).values_list("pk", "owner_id"):
            if owner_id is not None:
                allowed[room_id].add(owner_id)
    result: dict[int, frozenset[int] | None] = dict.fromkeys(rooms)
    result.update({pk: frozenset(users) for pk, users in allowed.items()})
    # A room deleted meanwhile: nobody may read it.
    result.update({pk: frozenset() for pk in room_ids if pk not in rooms})
    return result


def last_seqs(room_ids: list[int]) -> dict[int, int]:
    """Each room's last sequence number, as stored."""
    from rooms.models import Room

    return dict(Room.objects.filter(pk__in=room_ids).values_list("pk", "last_seq"))


fetch_last_seqs = database_sync_to_async(last_seqs)
fetch_allowed_users = database_sync_to_async(allowed_users)
