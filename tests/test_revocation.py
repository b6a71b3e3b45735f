"""Access that ends: logging out, a new password, deactivation and deletion each publish
`user.revoked` to the user's group after commit, and nothing else does."""

import pytest
from django.db import transaction
from django.urls import reverse

from rooms import events, revocation
from rooms.testing import capture_broadcasts

pytestmark = pytest.mark.django_db

REVOKED = "user.revoked"


def test_logout_revokes(client, alice):
    client.force_login(alice)
    with capture_broadcasts(alice) as captured:
        client.post(reverse("logout"))
    assert captured.one(REVOKED).event == {
        "type": REVOKED,
        "group": events.user_group(alice.pk),
        "user": alice.pk,
        "reason": revocation.LOGGED_OUT,
    }


def test_password_change_revokes(alice):
    alice.set_password("a-new-pass-phrase")
    with capture_broadcasts(alice) as captured:
        alice.save()
    assert captured.one(REVOKED).event["reason"] == revocation.PASSWORD_CHANGED


def test_password_change_page_revokes(client, alice):
    client.force_login(alice)
    form = {
        "old_password": "pw-alice",
        "new_password1": "a-new-pass-phrase",
        "new_password2": "a-new-pass-phrase",
    }
    with capture_broadcasts(alice) as captured:
        response = client.post(reverse("password_change"), form)
    assert response.status_code == 302
    assert captured.one(REVOKED).event["reason"] == revocation.PASSWORD_CHANGED


def test_deactivation_revokes(alice):
    alice.is_active = False
    with capture_broadcasts(alice) as captured:
        alice.save()
    assert captured.one(REVOKED).event["reason"] == revocation.DEACTIVATED


def test_deactivation_with_update_fields_revokes(alice):
    alice.is_active = False
    with capture_broadcasts(alice) as captured:
        alice.save(update_fields=["is_active"])
    assert captured.one(REVOKED).event["reason"] == revocation.DEACTIVATED


def test_deletion_revokes(alice):
    user_id = alice.pk
    with capture_broadcasts(events.user_group(user_id)) as captured:
        alice.delete()
    assert captured.one(REVOKED).event["user"] == user_id
    assert captured.one(REVOKED).event["reason"] == revocation.DELETED


def test_an_unrelated_save_does_not_revoke(alice):
    alice.first_name = "Alice"
    with capture_broadcasts() as captured:
        alice.save()
    assert captured.of_type(REVOKED) == []


def test_logging_in_does_not_revoke(client, alice):
    with capture_broadcasts() as captured:
        client.post(reverse("login"), {"username": "alice", "password": "pw-alice"})
    assert captured.of_type(REVOKED) == []
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_the_same_password_hashed_again_does_not_revoke(alice):
    alice.set_password("pw-alice")  # as Django does when it upgrades a hash at login
    with capture_broadcasts() as captured:
        alice.save(update_fields=["password"])
    assert captured.of_type(REVOKED) == []


def test_creating_a_user_does_not_revoke(make_user):
    with capture_broadcasts() as captured:
        make_user("carol")
    assert captured.of_type(REVOKED) == []


def test_reactivating_does_not_revoke(make_user):
    user = make_user("carol", is_active=False)
    user.is_active = True
    with capture_broadcasts() as captured:
        user.save()
    assert captured.of_type(REVOKED) == []


def test_a_rolled_back_deactivation_does_not_revoke(alice):
    alice.is_active = False
    with capture_broadcasts() as captured, pytest.raises(RuntimeError), transaction.atomic():
        alice.save()
        raise RuntimeError
    assert captured.of_type(REVOKED) == []
