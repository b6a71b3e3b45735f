"""The write path: sequence numbers, and publishing after commit."""

import threading
from unittest import mock

import pytest
from bs4 import BeautifulSoup
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from rooms import actions, models
from rooms.models import MENTION, Room, mentioned_users, post_message

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


# Slugs: reserved words, and two rooms with one title created at once


def test_a_room_titled_new_gets_a_slug_other_than_new(make_room):
    assert make_room("New").slug == "new-2"


def test_a_room_titled_new_can_be_reached(client, alice):
    client.force_login(alice)
    response = client.post("/rooms/new/", {"title": "New"})
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert BeautifulSoup(page.content, "html.parser").h1.get_text().strip() == "New"


def test_a_reserved_slug_is_refused_by_validation(make_room):
    room = make_room("Anything")
    room.slug = "new"
    with pytest.raises(ValidationError) as refused:
        room.full_clean()
    assert refused.value.message_dict["slug"] == ["The address /rooms/new/ is reserved."]


def test_a_slug_taken_between_check_and_insert_is_retried(make_room):
    make_room("Lobby")
    # Another process takes "lobby" after this one checked it was free.
    with mock.patch("rooms.models.unique_slug", side_effect=["lobby", "lobby-2"]):
        room = Room.objects.create(title="Lobby")
    assert room.slug == "lobby-2"
    assert sorted(Room.objects.values_list("slug", flat=True)) == ["lobby", "lobby-2"]


def test_slug_retries_are_bounded(make_room):
    make_room("Lobby")
    with (
        mock.patch("rooms.models.unique_slug", return_value="lobby"),
        pytest.raises(IntegrityError, match="no free slug"),
    ):
        Room.objects.create(title="Lobby")
    assert Room.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_two_rooms_with_one_title_created_at_once(database_url, alice):
    both_checked = threading.Barrier(2, timeout=5)
    real_unique_slug = models.unique_slug

    def checked_then_wait(title, random_suffix=False):
        slug = real_unique_slug(title, random_suffix)
        if slug == "lobby":
            both_checked.wait()  # both saw "lobby" free before either inserted it
        return slug

    made, errors = [], []

    def create():
        try:
            made.append(actions.create_room(alice, "Lobby"))
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    with mock.patch("rooms.models.unique_slug", side_effect=checked_then_wait):
        threads = [threading.Thread(target=create) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert sorted(room.slug for room in made) == ["lobby", "lobby-2"]


# Mentions: trailing punctuation is not part of a name


@pytest.mark.parametrize(
    "body", ["hi @bob.", "hi @bob-", "@bob, look", "(@bob)", "@bob!", "@bob..."]
)
def test_mention_followed_by_punctuation_mentions_the_user(room, alice, bob, body):
    assert mentioned_users(room, body, exclude=alice) == [bob.pk]


def test_mention_of_a_name_with_a_dot_inside(room, alice, make_user):
    jo = make_user("jo.smith")
    assert mentioned_users(room, "ask @jo.smith please", exclude=alice) == [jo.pk]


def test_mention_of_a_name_with_a_dash_inside_at_the_end_of_a_sentence(room, alice, make_user):
    jean = make_user("jean-luc")
    assert mentioned_users(room, "thanks @jean-luc.", exclude=alice) == [jean.pk]


def test_mention_regex_leaves_trailing_punctuation_out():
    assert MENTION.findall("@bob. @bob- @a.b-c @x_") == ["bob", "bob", "a.b-c", "x_"]


def test_an_email_address_is_no_mention():
    assert MENTION.findall("write to bob@example.com") == []


def test_mention_highlight_leaves_the_full_stop_outside(client, room, alice, bob):
    post_message(room, alice, "hi @bob.")
    page = BeautifulSoup(client.get(room.get_absolute_url()).content, "html.parser")
    body = page.select_one("#messages .body")
    assert [mark.get_text() for mark in body.select("mark.mention")] == ["@bob"]
    assert body.get_text() == "hi @bob."
