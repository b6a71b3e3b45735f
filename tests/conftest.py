"""Shared fixtures: small factories, and the services the integration tests need."""

import itertools
import os

import pytest
from django.contrib.auth import get_user_model

from rooms import presence
from rooms.models import Room, post_message

pytest_plugins = ["rooms.testing"]

_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def in_memory_channel_layer(settings):
    """Every test starts on a fresh in-memory layer and presence store; Redis tests switch."""
    presence.forget_everything()
    # Users are made in most tests: a fast hasher (production keeps Django's default list).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ROOMCAST_PRESENCE_URL = ""
    # The hub's database resync is tested on its own; elsewhere it would race the tests.
    settings.ROOMCAST_RESYNC_INTERVAL = 3600
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 10_000},
        }
    }


@pytest.fixture
def make_user(db):
    """Create a user: `make_user("alice")`; the password is "pw-<username>"."""

    def make(username: str | None = None, **fields):
        username = username or f"user{next(_counter)}"
        return get_user_model().objects.create_user(
            username=username, password=f"pw-{username}", **fields
        )

    return make


@pytest.fixture
def make_room(db):
    """Create a room: `make_room("Lobby", messages=[(alice, "hi")])`."""

    def make(title: str | None = None, messages=(), **fields):
        room = Room.objects.create(title=title or f"Room {next(_counter)}", **fields)
        for author, body in messages:
            post_message(room, author, body)
        room.refresh_from_db()
        return room

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol")


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a write as if in its own transaction, with its on-commit callbacks."""

    def run(function, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return function(*args, **kwargs)

    return run


@pytest.fixture
def room(make_room, alice):
    return make_room("Lobby", owner=alice)


def _service(name: str, why: str) -> str:
    """The URL of a service the test needs; skip without it, but fail in CI."""
    url = os.environ.get(name, "")
    if not url:
        message = f"{name} is not set: {why}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must run this test, not skip it)")
        pytest.skip(message)
    return url


@pytest.fixture
def redis_url() -> str:
    return _service("REDIS_URL", "set it (e.g. redis://127.0.0.1:6379/0) to test the Redis layer")


@pytest.fixture
def database_url() -> str:
    return _service(
        "DATABASE_URL", "set it (e.g. postgres://postgres@127.0.0.1:5432/test) to test PostgreSQL"
    )
