"""Who is in each room, shared by every server process, and short-lived throttles.

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

from django.conf import settings

logger = logging.getLogger(__name__)

# connection id -> (username, expiry time), per room. Module-level so that every hub in a
# process (tests run two) shares one store, as processes share Redis.
_rooms: dict[int, dict[str, tuple[str, float]]] = {}
_throttles: dict[str, float] = {}


class MemoryStore:
    """Presence and throttles for one process."""

    async def touch(self, room_id: int, entries: dict[str, str], ttl: float) -> None:
        """Add or refresh entries (connection id -> username) for `ttl` seconds."""
        expires = time.time() + ttl
        room = _rooms.setdefault(room_id, {})
        for conn_id, name in entries.items():
            room[conn_id] = (name, expires)

    async def remove(self, room_id: int, conn_id: str) -> None:
        _rooms.get(room_id, {}).pop(conn_id, None)

    async def names(self, room_id: int) -> list[str]:
        """The usernames present now, each once, sorted; expired entries are dropped."""
        room = _rooms.get(room_id, {})
        now = time.time()
        for conn_id in [c for c, (_, expires) in room.items() if expires <= now]:
            del room[conn_id]
        return sorted({name for name, _ in room.values()})

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
    """Presence and throttles shared by every process through Redis.

    A room's entries are a sorted set scored by expiry time; its members are
    "<connection id> <username>" (connection ids hold no spaces).
    """

    def __init__(self, url: str, prefix: str = "roomcast") -> None:
        import redis.asyncio as redis  # only processes configured for Redis need it

        self.redis = redis.Redis.from_url(url)
        self.prefix = prefix

    def key(self, room_id: int) -> str:
        return f"{self.prefix}:presence:{int(room_id)}"

    async def touch(self, room_id: int, entries: dict[str, str], ttl: float) -> None:
        if not entries:
            return
        expires = time.time() + ttl
        mapping = {f"{conn_id} {name}": expires for conn_id, name in entries.items()}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key(room_id), mapping)
            # A room nobody refreshes any more vanishes by itself.
            pipe.expire(self.key(room_id), int(ttl * 2) + 1)
            await pipe.execute()

    async def remove(self, room_id: int, conn_id: str) -> None:
        members = await self.redis.zrange(self.key(room_id), 0, -1)
        gone = [m for m in members if m.decode().split(" ", 1)[0] == conn_id]
        if gone:
            await self.redis.zrem(self.key(room_id), *gone)

    async def names(self, room_id: int) -> list[str]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self.key(room_id), "-inf", time.time())
            pipe.zrange(self.key(room_id), 0, -1)
            _, members = await pipe.execute()
        return sorted({m.decode().split(" ", 1)[1] for m in members})

    async def first_in(self, key: str, seconds: float) -> bool:
        key = f"{self.prefix}:throttle:{key}"
        return bool(await self.redis.set(key, 1, nx=True, px=max(1, int(seconds * 1000))))

    async def close(self) -> None:
        await self.redis.aclose()


def get_store() -> MemoryStore | RedisStore:
    """The store the settings choose (a new one per event loop: Redis clients are bound to one)."""
    url = settings.ROOMCAST_PRESENCE_URL
    return RedisStore(url, settings.ROOMCAST_PRESENCE_PREFIX) if url else MemoryStore()


def forget_everything() -> None:
    """Clear the in-memory store (tests)."""
    _rooms.clear()
    _throttles.clear()
