"""Editing and deleting messages: who may, what every page sees, and what later pages load."""

import pytest
from bs4 import BeautifulSoup
from channels.db import database_sync_to_async
from django.test import Client
from django.urls import reverse

from rooms.forms import UNENCODABLE
from rooms.models import Message, delete_message, edit_message, post_message
from rooms.testing import Fragment, capture_broadcasts

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def stored(message) -> Message:
    return Message.objects.get(pk=message.pk)


@pytest.fixture
def bobs_message(room, bob):
    """A message by bob in alice's room."""
    return post_message(room, bob, "bob was here")


def actions(fragment, message) -> list[str]:
    """The action buttons the message shows in this fragment."""
    article = fragment.select(f"#message-{message.pk}")[0]
    return [i["value"] for i in article.select(".actions input[name=action]")]


async def test_author_gets_the_edit_form_on_their_page_only(room_socket, room, bob, bobs_message):
    author = await room_socket(room, user=bob, last_seq=bobs_message.seq)
    other = await room_socket(room, last_seq=bobs_message.seq)
    await author.edit(bobs_message.pk)
    editor = (await author.receive_fragment()).target(f"message-{bobs_message.pk}")
    assert editor.select("input[name=message]")[0]["value"] == "bob was here"
    await other.assert_nothing_received()


async def test_saved_edit_updates_every_page_in_place(room_socket, room, bob, bobs_message):
    author = await room_socket(room, user=bob, last_seq=bobs_message.seq)
    other = await room_socket(room, last_seq=bobs_message.seq)
    await author.save(bobs_message.pk, "bob was here (fixed)")
    swap = (await other.receive_fragment()).target(f"message-{bobs_message.pk}")
    assert swap.swap == "true"
    assert swap.select(".body")[0].get_text() == "bob was here (fixed)"
    assert swap.select(".edited")[0].get_text() == "(edited)"


async def test_editing_someone_elses_message_is_refused(room_socket, room, alice, bobs_message):
    owner = await room_socket(room, user=alice, last_seq=bobs_message.seq)
    await owner.edit(bobs_message.pk)
    error = (await owner.receive_fragment()).target("message-error")
    assert error.text() == "You can only edit your own messages."


async def test_saving_someone_elses_message_changes_nothing(room_socket, room, alice, bobs_message):
    owner = await room_socket(room, user=alice, last_seq=bobs_message.seq)
    await owner.save(bobs_message.pk, "forged")
    error = (await owner.receive_fragment()).target("message-error")
    assert error.text() == "You can only edit your own messages."
    assert (await stored(bobs_message)).body == "bob was here"


async def test_saving_a_blank_edit_is_refused(room_socket, room, bob, bobs_message):
    author = await room_socket(room, user=bob, last_seq=bobs_message.seq)
    await author.save(bobs_message.pk, "   ")
    error = (await author.receive_fragment()).target("message-error")
    assert error.text() == "Write a message before sending."


async def test_editing_a_message_of_another_room_is_refused(
    room_socket, make_room, bob, bobs_message
):
    other_room = await database_sync_to_async(make_room)("Elsewhere")
    author = await room_socket(other_room, user=bob)
    await author.edit(bobs_message.pk)
    error = (await author.receive_fragment()).target("message-error")
    assert error.text() == "That message is not in this room."


async def test_editing_without_a_message_id_is_refused(room_socket, room, bob):
    author = await room_socket(room, user=bob)
    await author.send_form(None, action="edit", message_id="not a number")
    error = (await author.receive_fragment()).target("message-error")
    assert error.text() == "That message does not exist."


async def test_cancel_puts_the_message_back(room_socket, room, bob, bobs_message):
    author = await room_socket(room, user=bob, last_seq=bobs_message.seq)
    await author.cancel(bobs_message.pk)
    swap = (await author.receive_fragment()).target(f"message-{bobs_message.pk}")
    assert swap.select(".body")[0].get_text() == "bob was here"


async def test_author_deletes_their_message_for_everyone(room_socket, room, bob, bobs_message):
    author = await room_socket(room, user=bob, last_seq=bobs_message.seq)
    other = await room_socket(room, last_seq=bobs_message.seq)
    await author.delete(bobs_message.pk)
    swap = (await other.receive_fragment()).target(f"message-{bobs_message.pk}")
    assert swap.select(".tombstone")[0].get_text() == "This message was deleted."
    assert "bob was here" not in swap.text()


async def test_room_owner_deletes_any_message(room_socket, room, alice, bobs_message):
    owner = await room_socket(room, user=alice, last_seq=bobs_message.seq)
    await owner.delete(bobs_message.pk)
    swap = (await owner.receive_fragment()).target(f"message-{bobs_message.pk}")
    assert swap.select(".tombstone")
    assert (await stored(bobs_message)).deleted


async def test_others_may_not_delete(room_socket, room, make_user, bobs_message):
    carol = await database_sync_to_async(make_user)("carol")
    stranger = await room_socket(room, user=carol, last_seq=bobs_message.seq)
    await stranger.delete(bobs_message.pk)
    error = (await stranger.receive_fragment()).target("message-error")
    assert error.text() == "Only its author or the room's owner can delete a message."
    assert not (await stored(bobs_message)).deleted


async def test_anonymous_may_not_delete(room_socket, room, bobs_message):
    anonymous = await room_socket(room, last_seq=bobs_message.seq)
    await anonymous.delete(bobs_message.pk)
    error = (await anonymous.receive_fragment()).target("message-error")
    assert error.text() == "Only its author or the room's owner can delete a message."


async def test_author_sees_edit_and_delete_on_their_new_message(room_socket, room, bob):
    author = await room_socket(room, user=bob)
    await author.post("mine")
    swap = await author.receive_swap("messages")
    message = await database_sync_to_async(Message.objects.get)(body="mine")
    assert actions(swap, message) == ["edit", "delete"]


async def test_owner_sees_only_delete_on_others_messages(room_socket, room, alice, bob):
    owner = await room_socket(room, user=alice)
    await (await room_socket(room, user=bob)).post("theirs")
    fragment = await owner.receive_fragment()
    message = await database_sync_to_async(Message.objects.get)(body="theirs")
    assert actions(fragment, message) == ["delete"]


async def test_readers_see_no_actions(room_socket, room, bob, make_user):
    carol = await database_sync_to_async(make_user)("carol")
    reader = await room_socket(room, user=carol)
    await (await room_socket(room, user=bob)).post("theirs")
    assert (await reader.receive_fragment()).select(".actions") == []


async def test_reconnect_catches_up_edits_and_deletes(room_socket, room, bob, bobs_message):
    kept = await database_sync_to_async(post_message)(room, bob, "kept")
    seen = kept.seq
    author = await room_socket(room, user=bob, last_seq=seen)
    await author.save(kept.pk, "kept, edited")
    await author.delete(bobs_message.pk)
    await author.receive_swap(f"message-{bobs_message.pk}")  # one frame or two: batched
    page = await room_socket(room, last_seq=seen)  # a page that was offline meanwhile
    fragment = await page.receive_fragment()
    assert fragment.target(f"message-{kept.pk}").select(".body")[0].get_text() == "kept, edited"
    assert fragment.target(f"message-{bobs_message.pk}").select(".tombstone")
    assert not fragment.has_target("messages")  # nothing new to append


def test_a_later_page_load_shows_the_edit(client, room, bob, bobs_message):
    edit_message(bobs_message, "changed")
    page = BeautifulSoup(client.get(room.get_absolute_url()).content, "html.parser")
    article = page.select_one(f"#message-{bobs_message.pk}")
    assert article.select_one(".body").get_text() == "changed"
    assert article.select_one(".edited").get_text() == "(edited)"


def test_a_later_page_load_shows_the_tombstone(client, room, bob, bobs_message):
    delete_message(bobs_message)
    page = BeautifulSoup(client.get(room.get_absolute_url()).content, "html.parser")
    article = page.select_one(f"#message-{bobs_message.pk}")
    assert article.select_one(".tombstone").get_text() == "This message was deleted."
    assert "bob was here" not in article.get_text()


# Without a socket: the HTTP endpoints answer the partials the socket sends


def edit_url(message) -> str:
    return reverse("message_edit", args=[message.room.slug, message.pk])


def delete_url(message) -> str:
    return reverse("message_delete", args=[message.room.slug, message.pk])


def test_http_edit_get_answers_the_editor(client, bob, bobs_message):
    client.force_login(bob)
    fragment = Fragment(client.get(edit_url(bobs_message)).content.decode())
    editor = fragment.target(f"message-{bobs_message.pk}")
    assert editor.select("input[name=message]")[0]["value"] == "bob was here"


def test_http_edit_post_stores_and_answers_the_message(client, bob, bobs_message):
    client.force_login(bob)
    response = client.post(edit_url(bobs_message), {"message": "fixed"})
    swap = Fragment(response.content.decode()).target(f"message-{bobs_message.pk}")
    assert (swap.swap, swap.select(".body")[0].get_text()) == ("true", "fixed")
    assert swap.select(".edited")[0].get_text() == "(edited)"
    assert Message.objects.get(pk=bobs_message.pk).body == "fixed"


def test_http_edit_is_broadcast(client, room, bob, bobs_message):
    client.force_login(bob)
    with capture_broadcasts(room) as captured:
        client.post(edit_url(bobs_message), {"message": "fixed"})
    assert captured.one("room.message_changed").event["message"]["body"] == "fixed"


def test_http_edit_of_someone_elses_message_is_refused(client, alice, bobs_message):
    client.force_login(alice)
    response = client.post(edit_url(bobs_message), {"message": "forged"})
    assert response.status_code == 400
    error = Fragment(response.content.decode()).target("message-error")
    assert error.text() == "You can only edit your own messages."
    assert Message.objects.get(pk=bobs_message.pk).body == "bob was here"


def test_http_edit_refusal_is_swapped_by_htmx(client, alice, bobs_message):
    client.force_login(alice)
    response = client.post(edit_url(bobs_message), {"message": "forged"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert Fragment(response.content.decode()).has_target("message-error")


def test_http_edit_of_a_blank_message_is_refused(client, bob, bobs_message):
    client.force_login(bob)
    response = client.post(edit_url(bobs_message), {"message": "  "})
    error = Fragment(response.content.decode()).target("message-error")
    assert error.text() == "Write a message before sending."


def test_http_edit_of_a_message_deleted_meanwhile_says_so(client, room, bob, bobs_message):
    delete_message(bobs_message)
    client.force_login(bob)
    response = client.post(edit_url(bobs_message), {"message": "too late"})
    error = Fragment(response.content.decode()).target("message-error")
    assert error.text() == "That message was deleted."


def test_http_editor_of_a_message_deleted_meanwhile_says_so(client, room, bob, bobs_message):
    delete_message(bobs_message)
    client.force_login(bob)
    error = Fragment(client.get(edit_url(bobs_message)).content.decode()).target("message-error")
    assert error.text() == "That message was deleted."


def test_http_edit_needs_login(client, bobs_message):
    response = client.post(edit_url(bobs_message), {"message": "anon"})
    assert response.status_code == 302
    assert Message.objects.get(pk=bobs_message.pk).body == "bob was here"


def test_http_delete_answers_the_tombstone(client, bob, bobs_message):
    client.force_login(bob)
    response = client.post(delete_url(bobs_message))
    swap = Fragment(response.content.decode()).target(f"message-{bobs_message.pk}")
    assert swap.select(".tombstone")[0].get_text() == "This message was deleted."
    assert Message.objects.get(pk=bobs_message.pk).deleted


def test_http_delete_by_the_room_owner(client, alice, bobs_message):
    client.force_login(alice)
    client.post(delete_url(bobs_message))
    assert Message.objects.get(pk=bobs_message.pk).deleted


def test_http_delete_by_another_user_is_refused(client, make_user, bobs_message):
    client.force_login(make_user("carol"))
    response = client.post(delete_url(bobs_message))
    error = Fragment(response.content.decode()).target("message-error")
    assert error.text() == "Only its author or the room's owner can delete a message."
    assert not Message.objects.get(pk=bobs_message.pk).deleted


def test_http_delete_needs_post(client, bob, bobs_message):
    client.force_login(bob)
    assert client.get(delete_url(bobs_message)).status_code == 405


def test_http_delete_needs_csrf(bob, bobs_message):
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    assert client.post(delete_url(bobs_message)).status_code == 403
    assert not Message.objects.get(pk=bobs_message.pk).deleted


def test_http_delete_in_a_private_room_of_others_is_not_found(client, make_room, alice, bob):
    secret = make_room("Secret", owner=alice, is_private=True)
    message = post_message(secret, alice, "hush")
    client.force_login(bob)
    assert client.post(delete_url(message)).status_code == 404
    assert not Message.objects.get(pk=message.pk).deleted


def test_http_message_show_answers_the_message_as_it_stands(client, bob, bobs_message):
    client.force_login(bob)
    url = reverse("message_show", args=[bobs_message.room.slug, bobs_message.pk])
    swap = Fragment(client.get(url).content.decode()).target(f"message-{bobs_message.pk}")
    assert swap.select(".body")[0].get_text() == "bob was here"


async def test_a_message_with_a_lone_surrogate_is_refused(room_socket, room, bob):
    author = await room_socket(room, user=bob)
    await author.send_text('{"action": "post", "message": "bad \\ud800 text"}')
    error = (await author.receive_fragment()).target("message-error")
    assert error.text() == UNENCODABLE
    assert not await database_sync_to_async(Message.objects.exists)()
    assert author.connected
