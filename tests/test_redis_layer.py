"""The Redis channel layer against the real Redis named by REDIS_URL."""

import asyncio
import uuid

import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer

from rooms.fanout import Hub
from rooms.routing import websocket_application

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_config(redis_url, settings) -> dict:
    """Point the default layer at Redis, under a prefix no other test shares."""
    config = {"hosts": [redis_url], "prefix": f"roomcast-test-{uuid.uuid4().hex[:8]}"}
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": config}
    }
    return config


@pytest.fixture
def redis_presence(redis_url, settings) -> None:
    """Keep presence in Redis, under a prefix no other test shares."""
    settings.ROOMCAST_PRESENCE_URL = redis_url
    settings.ROOMCAST_PRESENCE_PREFIX = f"roomcast-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def second_instance(redis_config):
    """Another application instance: its own hub on its own Redis connection."""
    layer = RedisPubSubChannelLayer(**redis_config)
    yield websocket_application(hub=Hub(layer=layer))
    await layer.flush()


def bodies(fragment) -> list[str]:
    return [p.get_text() for p in fragment.target("messages").select(".message .body")]


async def test_redis_post_reaches_socket_on_other_instance(
    redis_config, second_instance, room_socket, room, alice
):
    sender = await room_socket(room, user=alice)
    reader = await room_socket(room, application=second_instance)
    await sender.post("across processes")
    assert bodies(await reader.receive_fragment()) == ["across processes"]


async def test_redis_post_reaches_socket_on_same_instance(redis_config, room_socket, room, alice):
    sender = await room_socket(room, user=alice)
    reader = await room_socket(room)
    await sender.post("same process")
    assert bodies(await reader.receive_fragment()) == ["same process"]


async def test_redis_messages_arrive_in_order_across_instances(
    redis_config, second_instance, room_socket, room, alice
):
    sender = await room_socket(room, user=alice)
    reader = await room_socket(room, application=second_instance)
    for n in range(5):
        await sender.post(f"m{n}")
    received: list[str] = []
    while len(received) < 5:  # in one frame or several: the writer batches what waits
        fragment = await reader.receive_fragment()
        received += [p.get_text() for p in fragment.select("#messages .message .body")]
    assert received == [f"m{n}" for n in range(5)]


# Presence through Redis


async def test_redis_presence_is_shared_across_instances(redis_presence, room):
    first, second = Hub(), Hub()
    await first.enter(room.pk, "tab-a", "alice")
    await second.enter(room.pk, "tab-b", "bob")
    assert await first.present(room.pk) == ["alice", "bob"]


async def test_redis_presence_counts_tabs_on_two_instances_once(redis_presence, room):
    first, second = Hub(), Hub()
    await first.enter(room.pk, "tab-a", "alice")
    await second.enter(room.pk, "tab-b", "alice")
    await first.exit(room.pk, "tab-a")
    assert await second.present(room.pk) == ["alice"]


async def test_redis_presence_forgets_a_crashed_instance(redis_presence, room, settings):
    settings.ROOMCAST_PRESENCE_TTL = 0.3
    crashed = Hub()
    await crashed.enter(room.pk, "tab-on-dead-process", "bob")
    assert await Hub().present(room.pk) == ["bob"]
    # The process dies: it neither refreshes nor removes its entry.
    await asyncio.sleep(0.4)
    assert await Hub().present(room.pk) == []


async def test_redis_typing_throttle_is_shared_across_instances(redis_presence):
    first, second = Hub(), Hub()
    assert await first.first_in("typing:1:1", 2.0)
    assert not await second.first_in("typing:1:1", 2.0)
