"""The write path: sequence numbers, and publishing after commit."""

import pytest
from django.db import transaction

from rooms.models import post_message

pytestmark = pytest.mark.django_db


def test_post_message_numbers_messages_in_sequence(room, alice):
    seqs = [post_message(room, alice, text).seq for text in ("a", "b", "c")]
    room.refresh_from_db()
    assert seqs == [1, 2, 3]
    assert room.last_seq == 3


def test_post_message_sequences_are_per_room(make_room, alice):
    lobby, other = make_room("Lobby"), make_room("Other")
    post_message(lobby, alice, "a")
    assert post_message(other, alice, "b").seq == 1


def test_post_message_publishes_after_commit(room, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        post_message(room, alice, "hi")
    assert len(callbacks) == 1


def test_post_message_rolled_back_publishes_nothing(
    room, alice, django_capture_on_commit_callbacks
):
    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        post_message(room, alice, "hi")
        raise RuntimeError
    assert callbacks == []
