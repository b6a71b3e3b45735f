"""Limits: frame size and frame budgets per socket, write rates, caps on open sockets.

Shared limits (the write rate per user, the typing throttle, open sockets per user and
per anonymous client address) are counted in the presence store, Redis where there is
one. They fail closed: while the store is away, each process keeps counting on its own
(a local store), so a limit that cannot be checked across processes still limits here.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from rooms import metrics
from rooms.clock import Clock
from rooms.presence import STORE_ERRORS, MemoryStore, Store, StoreFull

logger = logging.getLogger(__name__)

TOO_MANY_SOCKETS = "You have too many pages open: close some, then reload this one."
TOO_MANY_ANONYMOUS = "Too many pages are open from your address: close some, or log in."
SLOW_DOWN = "Slow down: you are sending messages too fast. Wait a few seconds and try again."
FLOOD = "This page sent too much too fast and was disconnected. Reload it to continue."


def frame_too_large(text: str, limit: int) -> bool:
    """Whether `text` is more than `limit` bytes in UTF-8 (measured before any parsing)."""
    if len(text) > limit:
        return True  # every character is at least one byte
    if len(text) * 4 <= limit:
        return False  # every character is at most four bytes
    return len(text.encode("utf-8", "surrogatepass")) > limit


class TokenBucket:
    """A budget of `burst` frames, refilled at `rate` per second on the injected clock."""

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock.now()

    def take(self, cost: float = 1.0) -> bool:
        """Spend `cost`; False (nothing spent) when the budget is exhausted."""
        now = self.clock.now()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


def frame_budget(clock: Clock) -> TokenBucket:
    """A new socket's budget for inbound frames of every kind."""
    return TokenBucket(settings.ROOMCAST_FRAME_RATE, settings.ROOMCAST_FRAME_BURST, clock)


class Limits:
    """The process's shared limits, on its store, with a local store to fall back on."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.local = MemoryStore(clock, private=True)

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(self.store, method)(*args)
        except STORE_ERRORS:
            logger.warning("limit store unavailable: counting in this process", exc_info=True)
            return await getattr(self.local, method)(*args)

    async def hit(self, key: str, window: float) -> int:
        """Count one event for a rate limit shared by every process; the window's count."""
        try:
            return int(await self._call("hit", key, window))
        except StoreFull:
            return 1 << 30  # fail closed

    async def first_in(self, key: str, seconds: float) -> bool:
        """A throttle shared by every process: True once per `seconds` per key."""
        try:
            return bool(await self._call("first_in", key, seconds))
        except StoreFull:
            return False

    async def write_allowed(self, user_id: int) -> bool:
        """Count a write of the user; whether it is within their rate."""
        count = await self.hit(f"posts:{user_id}", settings.ROOMCAST_POST_RATE_WINDOW)
        if count > settings.ROOMCAST_POST_RATE_LIMIT:
            metrics.LIMIT_REFUSALS.labels("write_rate").inc()
            return False
        return True

    async def open_socket(self, key: str, conn_id: str, cap: int) -> bool:
        """Count an open socket under `key` (a user, or a client address), across
        processes; False (and not counted) if that would pass `cap`."""
        ttl = float(settings.ROOMCAST_PRESENCE_TTL)
        try:
            await self._call("touch", key, {conn_id: "open"}, ttl)
            count = len(await self._call("values", key))
        except StoreFull:
            count = cap + 1
        if count <= cap:
            return True
        await self.close_socket(key, conn_id)
        metrics.LIMIT_REFUSALS.labels("sockets").inc()
        return False

    async def close_socket(self, key: str, conn_id: str) -> None:
        await self._call("remove", key, conn_id)

    async def refresh_sockets(self, sockets: dict[str, set[str]]) -> None:
        """One heartbeat: keep this process's open-socket entries alive."""
        ttl = float(settings.ROOMCAST_PRESENCE_TTL)
        for key, conns in list(sockets.items()):
            await self._call("touch", key, dict.fromkeys(conns, "open"), ttl)


def user_sockets_key(user_id: int) -> str:
    return f"sockets:{int(user_id)}"


def address_sockets_key(address: str) -> str:
    return f"anon-sockets:{address}"
