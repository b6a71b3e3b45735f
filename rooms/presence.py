"""Who is in each room, shared by every server process, and short-lived counters.

Each open socket of a signed-in user is one *entry* (connection id -> username) that
expires TTL seconds after its process last refreshed it. A process refreshes its own
entries every heartbeat, so when a process dies without closing its sockets, its entries
simply stop being refreshed and drop out: no disconnect handler is needed for that. A user
with three tabs has three entries and is listed once; they leave when the last one goes.

The store is in memory (one process: the embedded default) or in Redis (several
processes), chosen by `ROOMCAST_PRESENCE_URL`. Both compare expiry times with the wall
clock (the injected `rooms.clock`), so processes on several machines need synchronised
clocks. `Tracker` is one process's side of presence: its own entries, refreshed every
heartbeat, and the list it last told its rooms.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings

from rooms import clock as clocks
from rooms.clock import Clock

try:
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - redis is a runtime requirement
    RedisError = OSError  # type: ignore[misc,assignment]

logger = logging.getLogger(__name__)

# What a store raises while its service is away. Anything else is a bug and propagates.
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# Keys an in-memory store holds at most; at the bound it drops expired keys first, then
# refuses new ones (StoreFull), which the limits treat as "over the limit".
MAX_KEYS = 100_000


class StoreFull(Exception):
    """The in-memory store is at its bound."""


# Expiring sets: set key -> {connection id -> (value, expiry time)}. A room's presence is
# the set "presence:<room id>" (values: usernames); a user's open sockets, "sockets:<user
# id>". Module-level so that every hub in a process (tests run two) shares one store, as
# processes share Redis.
_sets: dict[str, dict[str, tuple[str, float]]] = {}
_throttles: dict[str, float] = {}
_counters: dict[str, tuple[float, int]] = {}


def presence_key(room_id: int) -> str:
    return f"presence:{int(room_id)}"


def sockets_key(user_id: int) -> str:
    return f"sockets:{int(user_id)}"


class MemoryStore:
    """Presence, socket counts, throttles and rate counters for one process.

    By default every MemoryStore of the process shares the module's maps (as processes
    share Redis); `private=True` gives one its own (the limits' local fallback).
    """

    def __init__(self, clock: Clock | None = None, private: bool = False) -> None:
        self.clock = clock or clocks.system
        if private:
            self.sets: dict[str, dict[str, tuple[str, float]]] = {}
            self.throttles: dict[str, float] = {}
            self.counters: dict[str, tuple[float, int]] = {}
        else:
            self.sets, self.throttles, self.counters = _sets, _throttles, _counters

    def _room_for(self, mapping: dict[str, Any], key: str, expired: Callable[[Any], bool]) -> None:
        """Make room for a new key at the bound, or raise StoreFull."""
        if key in mapping or len(mapping) < MAX_KEYS:
            return
        for old in [k for k, v in mapping.items() if expired(v)]:
            del mapping[old]
        if len(mapping) >= MAX_KEYS:
            raise StoreFull(key)

    async def touch(self, key: str, entries: dict[str, str], ttl: float) -> None:
        """Add or refresh entries (connection id -> value) for `ttl` seconds."""
        now = self.clock.time()
        self._room_for(self.sets, key, lambda m: all(e <= now for _, e in m.values()))
        expires = now + ttl
        members = self.sets.setdefault(key, {})
        for conn_id, value in entries.items():
            members[conn_id] = (value, expires)

    async def remove(self, key: str, conn_id: str) -> None:
        members = self.sets.get(key)
        if members is not None:
            members.pop(conn_id, None)
            if not members:
                del self.sets[key]

    async def values(self, key: str) -> list[str]:
        """The value of every live entry (expired entries are dropped first)."""
        members = self.sets.get(key, {})
        now = self.clock.time()
        for conn_id in [c for c, (_, expires) in members.items() if expires <= now]:
            del members[conn_id]
        return [value for value, _ in members.values()]

    async def names(self, room_id: int) -> list[str]:
        """The usernames present in a room now, each once, sorted."""
        return sorted(set(await self.values(presence_key(room_id))))

    async def hit(self, key: str, window: float) -> int:
        """Count one event under `key`; return the count in the current `window` seconds."""
        now = self.clock.time()
        self._room_for(self.counters, key, lambda v: now - v[0] >= window)
        start, count = self.counters.get(key, (now, 0))
        if now - start >= window:
            start, count = now, 0
        self.counters[key] = (start, count + 1)
        return count + 1

    async def first_in(self, key: str, seconds: float) -> bool:
        """True for the first call with `key` in any `seconds` window, False for the rest."""
        now = self.clock.time()
        if self.throttles.get(key, 0) > now:
            return False
        self._room_for(self.throttles, key, lambda until: until <= now)
        self.throttles[key] = now + seconds
        return True

    async def close(self) -> None:
        pass


class RedisStore:
    """Presence, socket counts, throttles and rate counters shared through Redis.

    An expiring set is a sorted set scored by expiry time; its members are
    "<connection id> <value>" (connection ids hold no spaces).
    """

    def __init__(self, url: str, prefix: str = "roomcast", clock: Clock | None = None) -> None:
        import redis.asyncio as redis  # only processes configured for Redis need it

        # Short timeouts: a Redis that is away must not hold a socket's frame for long
        # (the limits then fall back to this process's own counts).
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        self.prefix = prefix
        self.clock = clock or clocks.system

    def key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def touch(self, key: str, entries: dict[str, str], ttl: float) -> None:
        if not entries:
            return
        expires = self.clock.time() + ttl
        mapping = {f"{conn_id} {value}": expires for conn_id, value in entries.items()}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key(key), mapping)
            # A set nobody refreshes any more vanishes by itself.
            pipe.expire(self.key(key), int(ttl * 2) + 1)
            await pipe.execute()

    async def remove(self, key: str, conn_id: str) -> None:
        members: list[bytes] = await self.redis.zrange(self.key(key), 0, -1)
        gone = [m for m in members if m.decode().split(" ", 1)[0] == conn_id]
        if gone:
            await self.redis.zrem(self.key(key), *gone)

    async def values(self, key: str) -> list[str]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self.key(key), "-inf", self.clock.time())
            pipe.zrange(self.key(key), 0, -1)
            _, members = await pipe.execute()
        return [m.decode().split(" ", 1)[1] for m in members]

    async def names(self, room_id: int) -> list[str]:
        return sorted(set(await self.values(presence_key(room_id))))

    async def hit(self, key: str, window: float) -> int:
        key = self.key(f"rate:{key}")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, max(1, int(window * 1000)), nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def first_in(self, key: str, seconds: float) -> bool:
        key = f"{self.prefix}:throttle:{key}"
        return bool(await self.redis.set(key, 1, nx=True, px=max(1, int(seconds * 1000))))

    async def close(self) -> None:
        await self.redis.aclose()


Store = MemoryStore | RedisStore


def get_store(clock: Clock | None = None) -> Store:
    """The store the settings choose (a new one per event loop: Redis clients are bound to one)."""
    url = settings.ROOMCAST_PRESENCE_URL
    if url:
        return RedisStore(url, settings.ROOMCAST_PRESENCE_PREFIX, clock)
    return MemoryStore(clock)


def hit_from_sync_code(key: str, window: float) -> int:
    """`store.hit` for sync code (a view): count one event, return the window's count."""

    async def hit() -> int:
        store = get_store()
        try:
            return await store.hit(key, window)
        except STORE_ERRORS:
            # Fail closed: count in this process while the shared store is away.
            logger.warning("rate limit store unavailable: counting in this process", exc_info=True)
            return await _sync_fallback.hit(key, window)
        finally:
            await store.close()

    return async_to_sync(hit)()


# The process's own counts for sync code (views) while the shared store is away.
_sync_fallback = MemoryStore(private=True)


def forget_everything() -> None:
    """Clear the in-memory store (tests)."""
    _sets.clear()
    _throttles.clear()
    _counters.clear()


async def guarded(awaitable: Awaitable[Any], what: str) -> Any:
    """Await a store call; None (logged) if the store is away. Other errors propagate."""
    try:
        return await awaitable
    except STORE_ERRORS:
        logger.warning("%s: the presence store is unavailable", what, exc_info=True)
        return None


class Tracker:
    """This process's presence entries per room, refreshed every heartbeat.

    `entries[room_id]` maps this process's signed-in sockets (connection id) to their
    username; `names[room_id]` is the list the room was last told.
    """

    def __init__(self, store: Store, publish: Callable[[dict[str, Any]], Awaitable[None]]):
        self.store = store
        self.publish = publish
        self.entries: dict[int, dict[str, str]] = {}
        self.names: dict[int, list[str]] = {}

    @property
    def ttl(self) -> float:
        return float(settings.ROOMCAST_PRESENCE_TTL)

    async def enter(self, room_id: int, conn_id: str, name: str) -> bool:
        """Count a socket as present; tell the room if its list changed (returned)."""
        self.entries.setdefault(room_id, {})[conn_id] = name
        await guarded(self.store.touch(presence_key(room_id), {conn_id: name}, self.ttl), "enter")
        return await self.publish_if_changed(room_id)

    async def exit(self, room_id: int, conn_id: str) -> None:
        """Stop counting a socket as present."""
        room = self.entries.get(room_id)
        if room is not None:
            room.pop(conn_id, None)
            if not room:
                del self.entries[room_id]
        await guarded(self.store.remove(presence_key(room_id), conn_id), "exit")
        await self.publish_if_changed(room_id)

    async def present(self, room_id: int) -> list[str]:
        """Who is in the room now, across processes (what we last knew if the store is away)."""
        names = await guarded(self.store.names(room_id), "present")
        if names is None:
            return self.names.get(room_id) or sorted(set(self.entries.get(room_id, {}).values()))
        return list(names)

    def seen(self, room_id: int, names: list[str]) -> None:
        """A presence event arrived: the room has been told this list."""
        self.names[room_id] = names

    def forget(self, room_id: int) -> None:
        """No local socket is in the room any more."""
        self.names.pop(room_id, None)

    async def publish_if_changed(self, room_id: int) -> bool:
        names = await guarded(self.store.names(room_id), "names")
        if names is None or names == self.names.get(room_id):
            return False
        self.names[room_id] = names
        await guarded(self.publish(presence_event(room_id, names)), "publish presence")
        return True

    async def refresh(self, rooms: list[int]) -> None:
        """One heartbeat: keep our entries alive, and tell rooms whose list changed."""
        for room_id in rooms:
            entries = self.entries.get(room_id)
            if entries:
                touch = self.store.touch(presence_key(room_id), dict(entries), self.ttl)
                await guarded(touch, "refresh")
            await self.publish_if_changed(room_id)


def presence_event(room_id: int, names: list[str]) -> dict[str, Any]:
    from rooms import events

    return events.presence_event(room_id, names)
