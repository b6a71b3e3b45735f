"""Notifications that persist: the inbox, the live bell, and what the write layer calls."""

import pytest
from asgiref.sync import sync_to_async
from bs4 import BeautifulSoup
from django.test import RequestFactory
from django.urls import reverse

from rooms import notifications
from rooms.notifications import Notification


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.content.decode(), "html.parser")


def inbox_texts(response) -> list[str]:
    return [
        li.a.get_text() if li.a else li.contents[0].get_text().strip()
        for li in soup(response).select("#inbox li.notification")
    ]


@pytest.mark.django_db
def test_notify_stores_an_unread_notification(alice):
    notifications.notify(alice.pk, Notification.EXPORT, "Export ready", "/x/")
    stored = Notification.objects.get()
    assert (stored.user_id, stored.kind, stored.text, stored.url, stored.read_at) == (
        alice.pk,
        "export",
        "Export ready",
        "/x/",
        None,
    )


@pytest.mark.django_db
def test_notify_with_a_key_twice_stores_one(alice):
    first = notifications.notify(alice.pk, Notification.EXPORT, "ready", key="export-1")
    second = notifications.notify(alice.pk, Notification.EXPORT, "ready", key="export-1")
    assert (first is not None, second, Notification.objects.count()) == (True, None, 1)


@pytest.mark.django_db
def test_notify_on_commit_stores_nothing_when_the_transaction_rolls_back(alice):
    from django.db import transaction

    with transaction.atomic():
        notifications.notify_on_commit(alice.pk, Notification.ADDED, "added")
        transaction.set_rollback(True)
    assert Notification.objects.count() == 0


@pytest.mark.django_db(transaction=True)
async def test_notify_pushes_the_bell_and_the_new_item_to_every_page(user_socket, alice):
    pages = [await user_socket(alice), await user_socket(alice)]
    await sync_to_async(notifications.notify)(alice.pk, Notification.EXPORT, "Export ready", "/x/")
    for page in pages:
        fragment = await page.receive_fragment()
        item = fragment.target("inbox")
        assert (item.swap, item.select("li a")[0].get_text()) == ("afterbegin", "Export ready")
        bell = (await page.receive_fragment()).target("bell")
        assert bell.select(".count")[0].get_text() == "1"


@pytest.mark.django_db(transaction=True)
async def test_notify_does_not_reach_other_users(user_socket, alice, bob):
    page = await user_socket(bob)
    await sync_to_async(notifications.notify)(alice.pk, Notification.EXPORT, "Export ready")
    await page.assert_nothing_received()


@pytest.mark.django_db
def test_inbox_lists_notifications_newest_first(client, alice):
    notifications.notify(alice.pk, Notification.ADDED, "first")
    notifications.notify(alice.pk, Notification.ADDED, "second")
    client.force_login(alice)
    assert inbox_texts(client.get(reverse("notifications"))) == ["second", "first"]


@pytest.mark.django_db
def test_inbox_shows_only_the_users_own(client, alice, bob):
    notifications.notify(bob.pk, Notification.ADDED, "bob's")
    client.force_login(alice)
    assert inbox_texts(client.get(reverse("notifications"))) == []


@pytest.mark.django_db
def test_inbox_marks_what_it_shows_read(client, alice):
    notifications.notify(alice.pk, Notification.ADDED, "first")
    client.force_login(alice)
    page = soup(client.get(reverse("notifications")))
    assert len(page.select("#inbox li.unread")) == 1  # shown as new this once
    assert notifications.unread(alice.pk) == 0


@pytest.mark.django_db
def test_inbox_needs_a_signed_in_user(client):
    response = client.get(reverse("notifications"))
    assert (response.status_code, response["Location"].split("?")[0]) == (302, "/accounts/login/")


@pytest.mark.django_db(transaction=True)
async def test_inbox_seen_in_one_tab_clears_the_bell_in_another(user_socket, alice):
    await sync_to_async(notifications.notify)(alice.pk, Notification.ADDED, "added")
    other_tab = await user_socket(alice)
    await sync_to_async(notifications.mark_read)(alice.pk)
    bell = (await other_tab.receive_fragment()).target("bell")
    assert (bell.select(".count")[0].get_text(), "unread" in bell.element["class"]) == ("0", False)


@pytest.mark.django_db
def test_mark_read_with_nothing_unread_pushes_nothing(alice, broadcasts, committed):
    assert committed(notifications.mark_read, alice.pk) == 0
    assert list(broadcasts) == []


@pytest.mark.django_db
def test_mentioned_notifies_each_user_once_per_message(room, alice, bob, committed):
    committed(notifications.mentioned, room, 7, "alice", "hi @bob", [bob.pk])
    committed(notifications.mentioned, room, 7, "alice", "hi @bob", [bob.pk])
    stored = Notification.objects.get()
    assert (stored.user_id, stored.kind, stored.text, stored.url) == (
        bob.pk,
        "mention",
        "alice mentioned you in Lobby: hi @bob",
        reverse("room_detail", args=[room.slug]),
    )


@pytest.mark.django_db
def test_member_added_notifies_the_member(room, bob, committed):
    committed(notifications.member_added, room, bob.pk)
    assert list(Notification.objects.values_list("user_id", "kind", "text")) == [
        (bob.pk, "added", "You were added to Lobby.")
    ]


@pytest.mark.django_db
def test_member_removed_notifies_the_member(room, bob, committed):
    committed(notifications.member_removed, room, bob.pk)
    assert list(Notification.objects.values_list("user_id", "kind", "text")) == [
        (bob.pk, "removed", "You were removed from Lobby.")
    ]


@pytest.mark.django_db
def test_bell_count_in_the_page_context_is_the_unread_count(alice):
    notifications.notify(alice.pk, Notification.ADDED, "added")
    request = RequestFactory().get("/")
    request.user = alice
    assert str(notifications.unread_count(request)["notifications_unread"]) == "1"


@pytest.mark.django_db
def test_bell_context_is_empty_for_anonymous_visitors():
    from django.contrib.auth.models import AnonymousUser

    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    assert notifications.unread_count(request) == {}


@pytest.mark.parametrize(
    ("name", "target", "swap", "context"),
    [
        ("bell", "bell", "true", {"notifications_unread": 3}),
        (
            "inbox_new",
            "inbox",
            "afterbegin",
            {"notification": Notification(pk=5, kind="mention", text="alice mentioned you")},
        ),
    ],
)
def test_pushed_notification_fragments_pass_the_live_fragment_check(name, target, swap, context):
    from django.template.loader import render_to_string

    from rooms.checks import check_fragment
    from rooms.fragments import LiveFragment

    template = f"rooms/notifications.html#{name}"
    fragment = LiveFragment(
        name, template, target, swap, "a notification", lambda: render_to_string(template, context)
    )
    assert check_fragment(fragment) == []
