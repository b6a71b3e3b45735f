"""The write layer: each change, its permission check, and what it publishes."""

from datetime import timedelta
from unittest import mock

import pytest
from bs4 import BeautifulSoup
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse

from rooms import actions, events
from rooms.models import Message, ReadMarker, Room
from rooms.notifications import Notification
from rooms.testing import capture_broadcasts

pytestmark = pytest.mark.django_db


@pytest.fixture
def secret(make_room, alice):
    return make_room("Secret", owner=alice, is_private=True)


def inbox_items() -> list[tuple[int, str]]:
    return list(Notification.objects.order_by("id").values_list("user_id", "kind"))


# Posting


def test_post_message_stores_under_the_next_sequence_number(room, alice):
    assert [actions.post_message(room, alice, t).seq for t in ("a", "b")] == [1, 2]


def test_post_message_with_one_client_key_stores_once(room, alice):
    first = actions.post_message(room, alice, "hi", client_key="k1")
    again = actions.post_message(room, alice, "hi", client_key="k1")
    assert again.pk == first.pk
    assert Message.objects.filter(room=room).count() == 1


def test_post_message_repeat_publishes_nothing(room, alice):
    actions.post_message(room, alice, "hi", client_key="k1")
    with capture_broadcasts(room) as captured:
        actions.post_message(room, alice, "hi", client_key="k1")
    assert captured.summary() == []


def test_post_message_repeat_takes_no_sequence_number(room, alice):
    actions.post_message(room, alice, "hi", client_key="k1")
    actions.post_message(room, alice, "hi", client_key="k1")
    room.refresh_from_db()
    assert room.last_seq == 1


def test_post_message_racing_a_send_of_itself_returns_the_stored_one(room, alice):
    first = actions.post_message(room, alice, "hi", client_key="k1")
    real = actions.stored_under
    # The other send commits between this one's check and its insert.
    with mock.patch.object(actions, "stored_under", side_effect=[None, real(room, alice.pk, "k1")]):
        again = actions.post_message(room, alice, "hi", client_key="k1")
    assert again.pk == first.pk
    room.refresh_from_db()
    assert (Message.objects.filter(room=room).count(), room.last_seq) == (1, 1)


def test_post_message_keys_are_per_author(room, alice, bob):
    actions.post_message(room, alice, "hi", client_key="k1")
    actions.post_message(room, bob, "hi", client_key="k1")
    assert Message.objects.filter(room=room).count() == 2


def test_post_message_without_key_stores_every_send(room, alice):
    actions.post_message(room, alice, "hi")
    actions.post_message(room, alice, "hi")
    assert Message.objects.filter(room=room).count() == 2


def test_post_message_refuses_an_overlong_client_key(room, alice):
    with pytest.raises(actions.ActionError, match="reload the page"):
        actions.post_message(room, alice, "hi", client_key="k" * 65)
    assert not Message.objects.exists()


def test_post_message_refuses_a_client_key_that_is_not_text(room, alice):
    with pytest.raises(actions.ActionError):
        actions.post_message(room, alice, "hi", client_key=["k"])
    assert not Message.objects.exists()


def test_post_message_by_anonymous_says_log_in(room):
    with pytest.raises(actions.ActionError, match="Log in to post messages."):
        actions.post_message(room, AnonymousUser(), "hi")


def test_post_message_by_non_member_is_forbidden(secret, bob):
    with pytest.raises(actions.Forbidden):
        actions.post_message(secret, bob, "hi")
    assert not Message.objects.exists()


def test_post_message_by_inactive_user_is_forbidden(room, make_user):
    gone = make_user("gone", is_active=False)
    with pytest.raises(actions.Forbidden):
        actions.post_message(room, gone, "hi")


# Grouping: Message.continues


def test_second_message_of_an_author_continues_the_first(room, alice):
    actions.post_message(room, alice, "one")
    assert actions.post_message(room, alice, "two").continues is True
    assert Message.objects.get(body="two").continues is True


def test_first_message_of_a_room_does_not_continue(room, alice):
    assert actions.post_message(room, alice, "one").continues is False


def test_message_after_another_author_does_not_continue(room, alice, bob):
    actions.post_message(room, alice, "one")
    assert actions.post_message(room, bob, "two").continues is False


def test_message_after_a_deleted_one_does_not_continue(room, alice):
    first = actions.post_message(room, alice, "one")
    actions.delete_message(room, alice, first.pk)
    assert actions.post_message(room, alice, "two").continues is False


def test_message_more_than_five_minutes_later_does_not_continue(room, alice):
    first = actions.post_message(room, alice, "one")
    Message.objects.filter(pk=first.pk).update(created=first.created - timedelta(minutes=6))
    assert actions.post_message(room, alice, "two").continues is False


def test_continues_is_in_the_event(room, alice):
    actions.post_message(room, alice, "one")
    with capture_broadcasts(room) as captured:
        actions.post_message(room, alice, "two")
    assert captured.one(events.MESSAGE).event["message"]["continues"] is True


def test_announcements_never_continue(room):
    actions.post_announcement(room, "one")
    assert actions.post_announcement(room, "two").continues is False


# Editing and deleting


def test_edit_message_by_its_author(room, alice):
    message = actions.post_message(room, alice, "one")
    actions.edit_message(room, alice, message.pk, "uno")
    assert Message.objects.get(pk=message.pk).body == "uno"


def test_edit_of_a_message_deleted_meanwhile_says_so(room, alice):
    message = actions.post_message(room, alice, "one")
    actions.delete_message(room, alice, message.pk)
    with pytest.raises(actions.ActionError, match="^That message was deleted.$"):
        actions.edit_message(room, alice, message.pk, "uno")


def test_editor_of_a_message_deleted_meanwhile_says_so(room, alice):
    message = actions.post_message(room, alice, "one")
    actions.delete_message(room, alice, message.pk)
    with pytest.raises(actions.ActionError, match="^That message was deleted.$"):
        actions.message_for_edit(room, alice, message.pk)


def test_edit_of_someone_elses_message_is_refused(room, alice, bob):
    message = actions.post_message(room, bob, "one")
    with pytest.raises(actions.ActionError, match="^You can only edit your own messages.$"):
        actions.edit_message(room, alice, message.pk, "forged")
    assert Message.objects.get(pk=message.pk).body == "one"


def test_edit_of_a_message_of_another_room_is_refused(room, make_room, alice):
    message = actions.post_message(make_room("Other"), alice, "one")
    with pytest.raises(actions.ActionError, match="^That message is not in this room.$"):
        actions.edit_message(room, alice, message.pk, "moved")


def test_delete_of_a_deleted_message_changes_nothing(room, alice):
    message = actions.post_message(room, alice, "one")
    actions.delete_message(room, alice, message.pk)
    with capture_broadcasts(room) as captured:
        actions.delete_message(room, alice, message.pk)
    assert captured.summary() == []


# Members


def test_owner_cannot_add_themself(secret, alice):
    with pytest.raises(actions.ActionError, match="owners are always members"):
        actions.add_member(secret, alice, alice)
    assert list(secret.members.all()) == []


def test_member_cannot_be_added_to_a_public_room(room, alice, bob):
    with pytest.raises(actions.ActionError, match="^Only private rooms have members.$"):
        actions.add_member(room, alice, bob)


def test_remove_member_publishes_member_removed_after_commit(secret, alice, bob):
    secret.members.add(bob)
    with capture_broadcasts(secret) as captured:
        actions.remove_member(secret, alice, bob)
    assert captured.one(events.MEMBER_REMOVED).event["user"] == bob.pk
    assert list(secret.members.all()) == []


def test_remove_of_a_non_member_says_so(secret, alice, bob):
    with pytest.raises(actions.ActionError, match="^bob is not a member of this room.$"):
        actions.remove_member(secret, alice, bob)


def test_system_removes_a_member(secret, bob):
    secret.members.add(bob)
    actions.remove_member(secret, actions.SYSTEM, bob)
    assert list(secret.members.all()) == []


def test_set_members_removes_and_adds_through_actions(secret, bob, make_user):
    carol = make_user("carol")
    secret.members.add(bob)
    with capture_broadcasts(secret) as captured:
        actions.set_members(secret, actions.SYSTEM, [carol])
    assert list(secret.members.all()) == [carol]
    assert captured.one(events.MEMBER_REMOVED).event["user"] == bob.pk


# Notifications: each write leaves one inbox item, for the user it concerns


def test_post_message_mention_notifies_the_mentioned_user_only(room, alice, bob, carol, committed):
    committed(actions.post_message, room, alice, "hi @bob")
    assert inbox_items() == [(bob.pk, Notification.MENTION)]


def test_post_message_mention_notification_names_author_and_room(room, alice, bob, committed):
    committed(actions.post_message, room, alice, "hi @bob")
    assert Notification.objects.get().text == "alice mentioned you in Lobby: hi @bob"


def test_post_message_sent_twice_with_one_client_key_notifies_once(room, alice, bob, committed):
    committed(actions.post_message, room, alice, "hi @bob", client_key="k1")
    committed(actions.post_message, room, alice, "hi @bob", client_key="k1")
    assert inbox_items() == [(bob.pk, Notification.MENTION)]


def test_post_message_mention_in_a_private_room_the_user_cannot_read_notifies_nobody(
    secret, alice, bob, committed
):
    committed(actions.post_message, secret, alice, "hi @bob")
    assert inbox_items() == []


def test_post_message_without_a_mention_notifies_nobody(room, alice, bob, committed):
    committed(actions.post_message, room, alice, "hi bob")
    assert inbox_items() == []


def test_post_message_rolled_back_notifies_nobody(room, alice, bob):
    from django.db import transaction

    with transaction.atomic():
        actions.post_message(room, alice, "hi @bob")
        transaction.set_rollback(True)
    assert inbox_items() == []


def test_add_member_notifies_the_added_member_only(secret, alice, bob, carol, committed):
    committed(actions.add_member, secret, alice, bob)
    assert inbox_items() == [(bob.pk, Notification.ADDED)]


def test_add_member_of_a_member_notifies_nobody_again(secret, alice, bob, committed):
    committed(actions.add_member, secret, alice, bob)
    committed(actions.add_member, secret, alice, bob)
    assert inbox_items() == [(bob.pk, Notification.ADDED)]


def test_add_member_refused_notifies_nobody(room, alice, bob, committed):
    with pytest.raises(actions.ActionError):
        committed(actions.add_member, room, alice, bob)
    assert inbox_items() == []


def test_remove_member_notifies_the_removed_member_only(secret, alice, bob, carol, committed):
    secret.members.add(bob, carol)
    committed(actions.remove_member, secret, alice, bob)
    assert inbox_items() == [(bob.pk, Notification.REMOVED)]


def test_set_members_notifies_each_change_once(secret, bob, carol, committed):
    secret.members.add(bob)
    committed(actions.set_members, secret, actions.SYSTEM, [carol])
    assert sorted(inbox_items()) == sorted(
        [(bob.pk, Notification.REMOVED), (carol.pk, Notification.ADDED)]
    )


# Rooms and read markers


def test_create_room_is_owned_by_its_creator(alice):
    room = actions.create_room(alice, "Design", is_private=True)
    assert (room.owner, room.is_private, room.slug) == (alice, True, "design")


def test_mark_read_moves_forward_only(room, alice):
    actions.mark_read(alice, room, 5)
    actions.mark_read(alice, room, 3)
    assert ReadMarker.objects.get(user=alice, room=room).last_read_seq == 5


# The admin writes through actions too


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def test_admin_delete_of_a_message_leaves_a_tombstone_everyone_sees(staff_client, room, bob):
    message = actions.post_message(room, bob, "spam")
    url = reverse("admin:rooms_message_delete", args=[message.pk])
    with capture_broadcasts(room) as captured:
        response = staff_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert Message.objects.get(pk=message.pk).deleted
    assert captured.one(events.MESSAGE_CHANGED).event["message"]["deleted"] is True


def test_admin_edit_of_a_message_is_published(staff_client, room, bob):
    message = actions.post_message(room, bob, "typo")
    url = reverse("admin:rooms_message_change", args=[message.pk])
    with capture_broadcasts(room) as captured:
        response = staff_client.post(url, {"body": "fixed"})
    assert response.status_code == 302
    assert captured.one(events.MESSAGE_CHANGED).event["message"]["body"] == "fixed"
    assert Message.objects.get(pk=message.pk).edited


def test_admin_refuses_a_reserved_slug(staff_client, alice):
    url = reverse("admin:rooms_room_add")
    response = staff_client.post(url, {"title": "New", "slug": "new", "owner": alice.pk})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["slug"] == [
        "The address /rooms/new/ is reserved."
    ]
    assert not Room.objects.exists()


def test_admin_adds_a_room(staff_client, alice):
    url = reverse("admin:rooms_room_add")
    response = staff_client.post(url, {"title": "Ops", "slug": "ops", "owner": alice.pk})
    assert response.status_code == 302
    assert Room.objects.get().slug == "ops"


JOB_RECORDS = ["export", "notification", "digestentry", "joblease", "workerheartbeat"]


@pytest.mark.parametrize("model", JOB_RECORDS)
def test_admin_lists_the_jobs_records(staff_client, model):
    assert staff_client.get(reverse(f"admin:rooms_{model}_changelist")).status_code == 200


@pytest.mark.parametrize("model", JOB_RECORDS)
def test_admin_cannot_add_the_jobs_records(staff_client, model):
    assert staff_client.get(reverse(f"admin:rooms_{model}_add")).status_code == 403


def test_admin_shows_a_notification_without_a_save_button(staff_client, alice):
    note = Notification.objects.create(user=alice, kind=Notification.ADDED, text="added")
    response = staff_client.get(reverse("admin:rooms_notification_change", args=[note.pk]))
    page = BeautifulSoup(response.content.decode(), "html.parser")
    assert (response.status_code, page.select("input[name=_save]")) == (200, [])


def test_admin_cannot_change_a_notification(staff_client, alice):
    note = Notification.objects.create(user=alice, kind=Notification.ADDED, text="added")
    url = reverse("admin:rooms_notification_change", args=[note.pk])
    response = staff_client.post(url, {"user": alice.pk, "kind": "added", "text": "changed"})
    assert (response.status_code, Notification.objects.get().text) == (403, "added")


def test_admin_cannot_delete_a_notification(staff_client, alice):
    note = Notification.objects.create(user=alice, kind=Notification.ADDED, text="added")
    url = reverse("admin:rooms_notification_delete", args=[note.pk])
    response = staff_client.post(url, {"post": "yes"})
    assert (response.status_code, Notification.objects.count()) == (403, 1)
