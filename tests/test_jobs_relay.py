"""Worker-to-page pushes through the database relay, for the in-memory channel layer."""

import asyncio
import datetime

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from rooms import live, relay
from rooms.relay import Relay, RelayedPush

NOTICE = "base.html#notice_toast"


def push_row(group: str = "user-1", text: str = "hi") -> RelayedPush:
    event = {"type": "live.fragment", "group": group, "html": text}
    return RelayedPush.objects.create(group=group, event=event)


def reader(batch: int = 200) -> tuple[Relay, list]:
    seen: list = []

    async def publish(group, event):
        seen.append(event["html"])

    return Relay(publish=publish, batch=batch), seen


@pytest.fixture
def in_relay_mode():
    live.use_relay(True)
    yield
    live.use_relay(False)


@pytest.mark.django_db
def test_relay_reads_rows_stored_after_it_started():
    push_row(text="before")
    relay_, _ = reader()
    assert relay_.read() == []
    push_row(text="after")
    assert [row.event["html"] for row in relay_.read()] == ["after"]


@pytest.mark.django_db
def test_relay_reads_at_most_a_batch_per_poll():
    relay_, _ = reader(batch=2)
    relay_.read()
    for n in range(3):
        push_row(text=str(n))
    assert [row.event["html"] for row in relay_.read()] == ["0", "1"]
    assert [row.event["html"] for row in relay_.read()] == ["2"]


@pytest.mark.django_db
def test_relay_reads_a_row_that_commits_after_a_later_one():
    relay_, _ = reader()
    relay_.read()
    first, late, last = push_row(text="1"), push_row(text="2"), push_row(text="3")
    late_id = late.pk
    late.delete()  # as if its transaction had not committed when the relay read
    assert [row.event["html"] for row in relay_.read()] == ["1", "3"]
    RelayedPush.objects.create(id=late_id, group="user-1", event={"html": "2", "group": "user-1"})
    assert [row.event["html"] for row in relay_.read()] == ["2"]
    assert (first.pk, last.pk) == (late_id - 1, late_id + 1)


@pytest.mark.django_db
def test_two_relays_each_read_every_row():
    one, two = reader()[0], reader()[0]
    one.read(), two.read()
    push_row(text="x")
    assert [r.event["html"] for r in one.read()] == [r.event["html"] for r in two.read()] == ["x"]


@pytest.mark.django_db
def test_delete_expired_deletes_rows_older_than_the_ttl(settings):
    settings.ROOMCAST_RELAY_TTL = 60
    old, fresh = push_row(text="old"), push_row(text="fresh")
    RelayedPush.objects.filter(pk=old.pk).update(
        created=timezone.now() - datetime.timedelta(seconds=61)
    )
    assert relay.delete_expired() == 1
    assert list(RelayedPush.objects.values_list("pk", flat=True)) == [fresh.pk]


@pytest.mark.django_db
def test_push_in_relay_mode_is_stored_not_published(
    in_relay_mode, alice, broadcasts, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        live.push(alice, NOTICE, {"text": "stored"})
    assert list(broadcasts) == []
    stored = RelayedPush.objects.get()
    assert (stored.group, stored.event["type"]) == (f"user-{alice.pk}", "live.fragment")


@pytest.mark.django_db(transaction=True)
async def test_worker_push_reaches_the_users_page_through_the_relay(
    in_relay_mode, user_socket, alice
):
    page = await user_socket(alice)
    relay_ = Relay()
    await relay_.poll()  # started before the worker pushes
    await sync_to_async(live.push)(live.User(alice.pk), NOTICE, {"text": "export ready"})
    await page.assert_nothing_received()
    assert await relay_.poll() == 1
    fragment = await page.receive_fragment()
    assert fragment.target("toasts").text() == "export ready"


@pytest.mark.django_db(transaction=True)
async def test_local_users_are_the_users_with_a_page_open_here(
    fanout_hub, user_socket, room_socket, room, alice, bob
):
    await user_socket(alice)
    await room_socket(room, user=bob)
    await room_socket(room)  # anonymous: no user
    assert relay.local_users(fanout_hub) == sorted([alice.pk, bob.pk])


@pytest.mark.django_db(transaction=True)
async def test_local_users_leave_with_their_last_page(fanout_hub, user_socket, alice):
    page = await user_socket(alice)
    await page.disconnect()
    assert relay.local_users(fanout_hub) == []


def test_layer_is_shared_only_for_a_layer_that_crosses_processes(settings):
    assert relay.layer_is_shared() is False
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"}
    }
    assert relay.layer_is_shared() is True


async def test_a_relay_that_fails_is_logged_and_started_again(monkeypatch, caplog):
    runs = []

    async def run(self):
        runs.append(self)
        if len(runs) == 1:
            raise RuntimeError("database unreachable")
        await asyncio.Event().wait()  # the second one keeps running

    monkeypatch.setattr(Relay, "run", run)
    monkeypatch.setattr(relay, "_task", None)
    monkeypatch.setattr(relay, "RESTART_DELAY", 0)
    relay.ensure_started()
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(runs) == 2
    assert "relay stopped; restarting" in caplog.text
    relay._task.cancel()


async def test_ensure_started_twice_runs_one_relay(monkeypatch):
    runs = []

    async def run(self):
        runs.append(self)
        await asyncio.Event().wait()

    monkeypatch.setattr(Relay, "run", run)
    monkeypatch.setattr(relay, "_task", None)
    relay.ensure_started()
    relay.ensure_started()
    await asyncio.sleep(0)
    assert len(runs) == 1
    relay._task.cancel()
