"""Editing and deleting messages: who may, what every page sees, and what later pages load."""

import pytest
from bs4 import BeautifulSoup
from channels.db import database_sync_to_async

from rooms.models import Message, delete_message, edit_message, post_message

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
    fragment = await author.receive_fragment()
    message = await database_sync_to_async(Message.objects.get)(body="mine")
    assert actions(fragment, message) == ["edit", "delete"]


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
    await author.receive_fragment()
    await author.receive_fragment()
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
