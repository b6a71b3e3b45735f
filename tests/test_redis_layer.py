"""The Redis channel layer against the real Redis named by REDIS_URL."""

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
    await sender.send_form(message="across processes")
    assert bodies(await reader.receive_fragment()) == ["across processes"]


async def test_redis_post_reaches_socket_on_same_instance(redis_config, room_socket, room, alice):
    sender = await room_socket(room, user=alice)
    reader = await room_socket(room)
    await sender.send_form(message="same process")
    assert bodies(await reader.receive_fragment()) == ["same process"]


async def test_redis_messages_arrive_in_order_across_instances(
    redis_config, second_instance, room_socket, room, alice
):
    sender = await room_socket(room, user=alice)
    reader = await room_socket(room, application=second_instance)
    for n in range(5):
        await sender.send_form(message=f"m{n}")
    received = [b for _ in range(5) for b in bodies(await reader.receive_fragment())]
    assert received == [f"m{n}" for n in range(5)]
