"""Private rooms: seen and entered by members only; the owner adds and removes members."""

from io import StringIO

import pytest
from bs4 import BeautifulSoup
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from rooms import consumers
from rooms.models import Message, Room
from rooms.testing import communicator_for

pytestmark = pytest.mark.django_db(transaction=True)


def parse(response) -> BeautifulSoup:
    return BeautifulSoup(response.content, "html.parser")


@pytest.fixture
def secret(make_room, alice):
    """A private room owned by alice."""
    return make_room("Secret", owner=alice, is_private=True)


def room_titles(client) -> list[str]:
    return [a.get_text() for a in parse(client.get("/")).select("#room-list li > a")]


def test_creating_a_private_room(client, alice):
    client.force_login(alice)
    client.post("/rooms/new/", {"title": "Hush", "is_private": "on"})
    assert Room.objects.get(title="Hush").is_private


def test_private_room_is_hidden_from_the_list(client, secret, bob):
    client.force_login(bob)
    assert "Secret" not in room_titles(client)


def test_private_room_is_listed_for_members(client, secret, bob):
    secret.members.add(bob)
    client.force_login(bob)
    assert "Secret" in room_titles(client)


def test_private_room_page_is_not_found_for_non_members(client, secret, bob):
    client.force_login(bob)
    assert client.get(secret.get_absolute_url()).status_code == 404


def test_private_room_page_is_not_found_for_anonymous(client, secret):
    assert client.get(secret.get_absolute_url()).status_code == 404


def test_owner_sees_the_member_form(client, secret, alice):
    client.force_login(alice)
    page = parse(client.get(secret.get_absolute_url()))
    assert page.select_one("form[action$='/members/'] input[name=username]") is not None


def test_owner_adds_a_member_by_username(client, secret, alice, bob):
    client.force_login(alice)
    response = client.post(reverse("room_member_add", args=[secret.slug]), {"username": "bob"})
    assert response.status_code == 302
    assert list(secret.members.all()) == [bob]


def test_adding_an_unknown_username_says_so(client, secret, alice):
    client.force_login(alice)
    response = client.post(reverse("room_member_add", args=[secret.slug]), {"username": "zed"})
    assert response.status_code == 400
    errors = [p.get_text() for p in parse(response).select(".members .error")]
    assert errors == ["There is no user called zed."]


def test_members_may_not_add_members(client, secret, bob, carol):
    secret.members.add(bob)
    client.force_login(bob)
    response = client.post(reverse("room_member_add", args=[secret.slug]), {"username": "carol"})
    assert response.status_code == 403
    assert list(secret.members.all()) == [bob]


def test_member_forms_need_csrf(secret, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("room_member_add", args=[secret.slug]), {"username": "bob"})
    assert response.status_code == 403


async def test_non_member_socket_is_closed_with_forbidden(ws_application, secret, bob):
    communicator = await communicator_for(ws_application, secret.socket_path(), bob)
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_output())["code"] == consumers.CLOSE_FORBIDDEN


async def test_anonymous_socket_is_closed_with_forbidden(ws_application, secret):
    communicator = await communicator_for(ws_application, secret.socket_path())
    await communicator.connect()
    assert (await communicator.receive_output())["code"] == consumers.CLOSE_FORBIDDEN


async def test_members_chat_live(room_socket, secret, alice, bob):
    await database_sync_to_async(secret.members.add)(bob)
    member = await room_socket(secret, user=bob)
    await (await room_socket(secret, user=alice)).post("members only")
    fragment = await member.receive_fragment()
    assert fragment.target("messages").select(".body")[0].get_text() == "members only"


async def test_removing_a_member_closes_their_sockets_and_says_why(
    async_client, room_socket, secret, alice, bob
):
    await database_sync_to_async(secret.members.add)(bob)
    tabs = [await room_socket(secret, user=bob) for _ in range(2)]
    await async_client.aforce_login(alice)
    await async_client.post(reverse("room_member_remove", args=[secret.slug, bob.pk]))
    for tab in tabs:
        notice = (await tab.receive_fragment()).target("room")
        assert (
            notice.text()
            == "You were removed from Secret by its owner, so this page no longer updates."
        )
        assert await tab.receive_close() == consumers.CLOSE_FORBIDDEN


async def test_a_revoked_member_cannot_post(room_socket, secret, bob):
    await database_sync_to_async(secret.members.add)(bob)
    member = await room_socket(secret, user=bob)
    # Revoked without the live event (as if it were lost): the next post is checked anyway.
    await database_sync_to_async(secret.members.remove)(bob)
    await member.post("sneaky")
    assert (await member.receive_fragment()).has_target("room")
    assert await member.receive_close() == consumers.CLOSE_FORBIDDEN
    assert not await database_sync_to_async(Message.objects.filter(body="sneaky").exists)()


def test_the_owner_cannot_add_themself(client, secret, alice):
    client.force_login(alice)
    response = client.post(reverse("room_member_add", args=[secret.slug]), {"username": "alice"})
    assert response.status_code == 400
    errors = [p.get_text() for p in parse(response).select(".members .error")]
    assert errors == ["You own this room: owners are always members."]
    assert list(secret.members.all()) == []


async def assert_removed(tab) -> None:
    notice = (await tab.receive_fragment()).target("room")
    assert notice.text() == (
        "You were removed from Secret by its owner, so this page no longer updates."
    )
    assert await tab.receive_close() == consumers.CLOSE_FORBIDDEN


async def test_removal_by_command_closes_their_sockets(room_socket, secret, bob):
    await database_sync_to_async(secret.members.add)(bob)
    tab = await room_socket(secret, user=bob)
    remove = database_sync_to_async(call_command)
    await remove("remove_member", secret.slug, "bob", stdout=StringIO())
    await assert_removed(tab)


def test_remove_member_command_says_what_it_did(secret, bob):
    secret.members.add(bob)
    out = StringIO()
    call_command("remove_member", secret.slug, "bob", stdout=out)
    assert out.getvalue() == "Removed bob from Secret.\n"
    assert list(secret.members.all()) == []


def test_remove_member_command_refuses_a_non_member(secret, bob):
    with pytest.raises(CommandError, match="^bob is not a member of this room.$"):
        call_command("remove_member", secret.slug, "bob")


def test_remove_member_command_refuses_an_unknown_room(bob):
    with pytest.raises(CommandError, match="^There is no room 'nowhere'.$"):
        call_command("remove_member", "nowhere", "bob")


def admin_change(client, room, **fields) -> int:
    """Save the room's admin change form; the response's status code."""
    data = {
        "title": room.title,
        "slug": room.slug,
        "owner": room.owner_id or "",
        "is_private": "on" if room.is_private else "",
        **fields,
    }
    data = {k: v for k, v in data.items() if v != ""}
    return client.post(reverse("admin:rooms_room_change", args=[room.pk]), data).status_code


@pytest.fixture
def staff(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


async def test_removal_in_the_admin_closes_their_sockets(
    async_client, room_socket, secret, bob, staff
):
    await database_sync_to_async(secret.members.add)(bob)
    tab = await room_socket(secret, user=bob)
    client = Client()
    await database_sync_to_async(client.force_login)(staff)
    status = await database_sync_to_async(admin_change)(client, secret, members=[])
    assert status == 302
    await assert_removed(tab)
    assert await database_sync_to_async(lambda: list(secret.members.all()))() == []


def test_adding_in_the_admin_adds_the_member(client, secret, bob, staff):
    client.force_login(staff)
    assert admin_change(client, secret, members=[bob.pk]) == 302
    assert list(secret.members.all()) == [bob]


def test_the_admin_refuses_the_owner_as_a_member(client, secret, alice, staff):
    client.force_login(staff)
    assert admin_change(client, secret, members=[alice.pk]) == 200
    assert list(secret.members.all()) == []
