"""Pushing fragments from anywhere (rooms.live), the announce command, and the hub's resync
that brings writes of other processes to the page even without a shared layer."""

from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command
from django.db import transaction

from rooms import live
from rooms.models import Message, post_message

pytestmark = pytest.mark.django_db(transaction=True)

NOTICE = "base.html#notice_toast"


def notice(fragment) -> str:
    toasts = fragment.target("toasts")
    assert toasts.swap == "beforeend"
    return toasts.text()


async def test_sync_push_reaches_the_rooms_sockets(room_socket, room):
    page = await room_socket(room)
    await sync_to_async(live.push)(room, NOTICE, {"text": "from sync code"})
    assert notice(await page.receive_fragment()) == "from sync code"


async def test_async_push_reaches_the_rooms_sockets(room_socket, room):
    page = await room_socket(room)
    await live.apush(room, NOTICE, {"text": "from async code"})
    assert notice(await page.receive_fragment()) == "from async code"


async def test_push_to_a_user_reaches_every_page_of_theirs(
    room_socket, user_socket, make_room, room, alice
):
    elsewhere = await database_sync_to_async(make_room)("Elsewhere")
    pages = [await room_socket(room, user=alice), await room_socket(elsewhere, user=alice)]
    pages.append(await user_socket(alice))
    await live.apush(alice, NOTICE, {"text": "just for alice"})
    for page in pages:
        assert notice(await page.receive_fragment()) == "just for alice"


async def test_push_to_a_user_skips_others(room_socket, room, alice, bob):
    bobs_page = await room_socket(room, user=bob)
    await live.apush(alice, NOTICE, {"text": "just for alice"})
    await bobs_page.assert_nothing_received()


async def test_push_to_the_site_reaches_every_page(room_socket, user_socket, room, alice):
    pages = [await room_socket(room), await user_socket(alice)]
    await live.apush(live.SITE, NOTICE, {"text": "maintenance at noon"})
    for page in pages:
        assert notice(await page.receive_fragment()) == "maintenance at noon"


async def test_push_escapes_its_context(room_socket, room):
    page = await room_socket(room)
    await live.apush(room, NOTICE, {"text": "<img src=x>"})
    fragment = await page.receive_fragment()
    assert fragment.select("img") == [] and notice(fragment) == "<img src=x>"


async def test_push_in_a_transaction_waits_for_the_commit(room_socket, room):
    page = await room_socket(room)

    def push_then_roll_back():
        with transaction.atomic():
            live.push(room, NOTICE, {"text": "never"})
            transaction.set_rollback(True)

    await sync_to_async(push_then_roll_back)()
    await page.assert_nothing_received()


def test_push_to_something_else_is_refused():
    with pytest.raises(TypeError, match="push to a Room, a user or live.SITE"):
        live.group_of("room-1")


# The announce command


async def test_announce_posts_a_system_message_live(room_socket, room):
    page = await room_socket(room)
    await sync_to_async(call_command)("announce", room.slug, "Deploy at five")
    article = (await page.receive_fragment()).target("messages").select(".message")[0]
    assert "system" in article["class"]
    assert article.select_one(".author").get_text() == "system"
    assert article.select_one(".body").get_text() == "Deploy at five"


def test_announce_to_an_unknown_room_fails(db):
    with pytest.raises(CommandError, match="There is no room 'nowhere'"):
        call_command("announce", "nowhere", "hello")


def test_announce_of_nothing_fails(room):
    with pytest.raises(CommandError, match="Write a message"):
        call_command("announce", room.slug, "   ")
    assert not Message.objects.exists()


# Resync: writes whose events never reached this process


async def test_a_write_without_an_event_reaches_the_page(room_socket, room, settings):
    settings.ROOMCAST_RESYNC_INTERVAL = 0.05
    page = await room_socket(room)
    await page.assert_nothing_received(timeout=0.2)  # the hub's baseline is taken
    # Another process on the in-memory layer (a management command) stores a message:
    # its event cannot reach this process, but the stored sequence number does.
    await database_sync_to_async(store_without_event)(room, "written elsewhere")
    fragment = await page.receive_fragment()
    assert fragment.target("messages").select(".body")[0].get_text() == "written elsewhere"


def store_without_event(room, body):
    with mock.patch("rooms.events.publish_message"):
        return post_message(room, None, body)
