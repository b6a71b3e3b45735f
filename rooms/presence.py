"""Who is in each room, shared by every server process, and short-lived counters.

Each open socket of a signed-in user is one *entry* (connection id -> username) that
expires TTL seconds after its process last refreshed it. A process refreshes its own
entries every heartbeat, so when a process dies without closing its sockets, its entries
simply stop being refreshed and drop out: no disconnect handler is needed for that. A user
with three tabs has three entries and is listed once; they leave when the last one goes.

The store is in memory (one process: the embedded default) or in Redis (several
processes), chosen by `ROOMCAST_PRESENCE_URL`. Both compare expiry times with the wall
clock, so processes on several machines need synchronised clocks.
"""

from __future__ import annotations

import logging
import time

from asgiref.sync import async_to_sync
from django.conf import settings

logger = logging.getLogger(__name__)

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
    """Presence, socket counts, throttles and rate counters for one process."""

    async def touch(self, key: str, entries: dict[str, str], ttl: float) -> None:
        """Add or refresh entries (connection id -> value) for `ttl` seconds."""
        expires = time.time() + ttl
        members = _sets.setdefault(key, {})
        for conn_id, value in entries.items():
            members[conn_id] = (value, expires)

    async def remove(self, key: str, conn_id: str) -> None:
        _sets.get(key, {}).pop(conn_id, None)

    async def values(self, key: str) -> list[str]:
        """The value of every live entry (expired entries are dropped first)."""
        members = _sets.get(key, {})
        now = time.time()
        for conn_id in [c for c, (_, expires) in members.items() if expires <= now]:
            del members[conn_id]
        return [value for value, _ in members.values()]

    async def names(self, room_id: int) -> list[str]:
        """The usernames present in a room now, each once, sorted."""
        return sorted(set(await self.values(presence_key(room_id))))

    async def hit(self, key: str, window: float) -> int:
        """Count one event under `key`; return the count in the current `window` seconds."""
        now = time.time()
        start, count = _counters.get(key, (now, 0))
        if now - start >= window:
            start, count = now, 0
        _counters[key] = (start, count + 1)
        return count + 1

    async def first_in(self, key: str, seconds: float) -> bool:
        """True for the first call with `key` in any `seconds` window, False for the rest."""
        now = time.time()
        if _throttles.get(key, 0) > now:
            return False
        _throttles[key] = now + seconds
        return True

    async def close(self) -> None:
        pass


class RedisStore:
    """Presence, socket counts, throttles and rate counters shared through Redis.

    An expiring set is a sorted set scored by expiry time; its members are
    "<connection id> <value>" (connection ids hold no spaces).
    """

    def __init__(self, url: str, prefix: str = "roomcast") -> None:
        import redis.asyncio as redis  # only processes configured for Redis need it

        self.redis = redis.Redis.from_url(url)
        self.prefix = prefix

    def key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def touch(self, key: str, entries: dict[str, str], ttl: float) -> None:
        if not entries:
            return
        expires = time.time() + ttl
        mapping = {f"{conn_id} {value}": expires for conn_id, value in entries.items()}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key(key), mapping)
            # A set nobody refreshes any more vanishes by itself.
            pipe.expire(self.key(key), int(ttl * 2) + 1)
            await pipe.execute()

    async def remove(self, key: str, conn_id: str) -> None:
        members = await self.redis.zrange(self.key(key), 0, -1)
        gone = [m for m in members if m.decode().split(" ", 1)[0] == conn_id]
        if gone:
            await self.redis.zrem(self.key(key), *gone)

    async def values(self, key: str) -> list[str]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self.key(key), "-inf", time.time())
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


def get_store() -> MemoryStore | RedisStore:
    """The store the settings choose (a new one per event loop: Redis clients are bound to one)."""
    url = settings.ROOMCAST_PRESENCE_URL
    return RedisStore(url, settings.ROOMCAST_PRESENCE_PREFIX) if url else MemoryStore()


def hit_from_sync_code(key: str, window: float) -> int:
    """`store.hit` for sync code (a view): count one event, return the window's count."""

    async def hit() -> int:
        store = get_store()
        try:
            return await store.hit(key, window)
        except Exception:
            logger.warning("rate limit store unavailable", exc_info=True)
            return 0
        finally:
            await store.close()

    return async_to_sync(hit)()


def forget_everything() -> None:
    """Clear the in-memory store (tests)."""
    _sets.clear()
    _throttles.clear()
    _counters.clear()
