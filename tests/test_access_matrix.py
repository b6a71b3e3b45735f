"""Who may do what, over each transport: one matrix of role x action x transport.

A private room owned by alice; bob and carol are members, carol wrote the message the
edit and delete act on; dave is no member; erin is a member whose account is deactivated
(her session no longer signs her in). Each cell asserts what is stored and what the user
sees: the page's status and error text, or the socket's fragment or close code.
"""

from dataclasses import dataclass

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.urls import reverse

from rooms import actions, consumers
from rooms.models import Message, Room, post_message
from rooms.testing import Fragment

ROLES = ["anonymous", "non_member", "member", "author", "owner", "inactive"]


@dataclass(frozen=True)
class Outcome:
    kind: str  # "done", "login", "hidden", "refused", "not_owner"
    text: str = ""


DONE = Outcome("done")
LOGIN = Outcome("login")  # HTTP: sent to log in; socket: a private room refuses anonymous
HIDDEN = Outcome("hidden")  # HTTP 404; socket closed with 4403
NOT_OWNER = Outcome("not_owner")  # HTTP 403
NOT_YOURS = Outcome("refused", actions.NOT_YOURS)
MAY_NOT_DELETE = Outcome("refused", actions.MAY_NOT_DELETE)

OUTSIDERS = {"anonymous": LOGIN, "non_member": HIDDEN, "inactive": LOGIN}
EXPECTED = {
    "post": {**OUTSIDERS, "member": DONE, "author": DONE, "owner": DONE},
    "edit": {**OUTSIDERS, "member": NOT_YOURS, "author": DONE, "owner": NOT_YOURS},
    "delete": {**OUTSIDERS, "member": MAY_NOT_DELETE, "author": DONE, "owner": DONE},
    "add_member": {**OUTSIDERS, "member": NOT_OWNER, "author": NOT_OWNER, "owner": DONE},
    "remove_member": {**OUTSIDERS, "member": NOT_OWNER, "author": NOT_OWNER, "owner": DONE},
}
SOCKET_ACTIONS = ["post", "edit", "delete"]  # members are managed on the page only


@dataclass
class Cast:
    room: Room
    users: dict
    message: Message
    newcomer: AbstractBaseUser  # whom add_member adds
    leaver: AbstractBaseUser  # whom remove_member removes


@pytest.fixture
def cast(db, make_room) -> Cast:
    # No passwords: hashing seven of them per cell would be most of the test's time.
    make = get_user_model().objects.create
    alice, bob, carol, dave, erin, frank, gina = (
        make(username=name) for name in ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
    )
    room = make_room("Secret", owner=alice, is_private=True)
    room.members.add(bob, carol, erin, gina)
    message = post_message(room, carol, "carol's words")
    get_user_model().objects.filter(pk=erin.pk).update(is_active=False)
    users = {
        "anonymous": None,
        "non_member": dave,
        "member": bob,
        "author": carol,
        "owner": alice,
        "inactive": erin,
    }
    room.refresh_from_db()
    return Cast(room, users, message, frank, gina)


def changed(action: str, cast: Cast) -> bool:
    """Whether the action's change is stored."""
    if action == "post":
        return Message.objects.filter(body="matrix").exists()
    if action == "edit":
        return Message.objects.get(pk=cast.message.pk).body == "matrix"
    if action == "delete":
        return Message.objects.get(pk=cast.message.pk).deleted
    if action == "add_member":
        return cast.room.members.filter(pk=cast.newcomer.pk).exists()
    return not cast.room.members.filter(pk=cast.leaver.pk).exists()


def http_request(client, action: str, cast: Cast):
    slug, pk = cast.room.slug, cast.message.pk
    if action == "post":
        return client.post(reverse("room_post", args=[slug]), {"message": "matrix"})
    if action == "edit":
        return client.post(reverse("message_edit", args=[slug, pk]), {"message": "matrix"})
    if action == "delete":
        return client.post(reverse("message_delete", args=[slug, pk]))
    if action == "add_member":
        return client.post(reverse("room_member_add", args=[slug]), {"username": "frank"})
    return client.post(reverse("room_member_remove", args=[slug, cast.leaver.pk]))


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(EXPECTED))
def test_http(client, cast, action, role):
    expected = EXPECTED[action][role]
    user = cast.users[role]
    if user is not None:
        client.force_login(user)
    response = http_request(client, action, cast)
    assert changed(action, cast) == (expected == DONE)
    if expected == DONE:
        assert response.status_code in (200, 302)
        if response.status_code == 302:
            assert response["Location"] == cast.room.get_absolute_url()
    elif expected == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    elif expected == HIDDEN:
        assert response.status_code == 404
    elif expected == NOT_OWNER:
        assert response.status_code == 403
    else:
        assert response.status_code == 400
        assert Fragment(response.content.decode()).target("message-error").text() == expected.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", SOCKET_ACTIONS)
async def test_socket(room_socket, cast, action, role):
    expected = EXPECTED[action][role]
    user = cast.users[role]
    if expected in (LOGIN, HIDDEN):
        # Nobody outside the room gets a live socket: it is closed on connect.
        socket = await room_socket(cast.room, user=user, last_seq=None)
        assert await socket.receive_close() == consumers.CLOSE_FORBIDDEN
    else:
        socket = await room_socket(cast.room, user=user, last_seq=cast.room.last_seq)
        pk = cast.message.pk
        if action == "post":
            await socket.post("matrix")
        elif action == "edit":
            await socket.save(pk, "matrix")
        else:
            await socket.delete(pk)
        if expected == DONE:
            wanted = "messages" if action == "post" else f"message-{pk}"
            targets = []
            while wanted not in targets:
                targets = (await socket.receive_fragment()).targets()
        else:
            # Other frames (the connection beat) may come first.
            targets = []
            while "message-error" not in targets:
                fragment = await socket.receive_fragment()
                targets = fragment.targets()
            assert fragment.target("message-error").text() == expected.text
    assert await database_sync_to_async(changed)(action, cast) == (expected == DONE)
