"""Access that ends when it should: a user who logs out, changes their password, is
deactivated or deleted has every open socket closed (by the sockets' handler of
`user.revoked`, in every process), with the reason shown on the page.

Django signals catch each of the four wherever it happens (a view, the admin, a command,
the shell); the event is published after the change commits.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from rooms import events
from rooms.actions import on_commit_publish

REVOKED = "user.revoked"

LOGGED_OUT = "You logged out, so this page stopped updating. Log in again to continue."
PASSWORD_CHANGED = (
    "Your password was changed, so this page stopped updating. Log in again to continue."
)
DEACTIVATED = "Your account was deactivated, so this page stopped updating."
DELETED = "Your account was deleted, so this page stopped updating."


def revoked_event(user_id: int, reason: str) -> dict[str, Any]:
    """Every socket of the user closes (4401) and shows `reason`."""
    group = events.user_group(user_id)
    return {"type": REVOKED, "group": group, "user": int(user_id), "reason": reason}


def revoke(user_id: int, reason: str) -> None:
    """Close every socket of the user, once the current transaction commits."""
    on_commit_publish(revoked_event(user_id, reason))


@receiver(user_logged_out, dispatch_uid="rooms.revocation.logged_out")
def on_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and user.pk is not None:
        revoke(user.pk, LOGGED_OUT)


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="rooms.revocation.pre_save")
def note_access_change(
    sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any
) -> None:
    """Before a user is saved, note whether the save ends their access (one query, only
    when the save may change the password or is_active)."""
    instance._roomcast_revoke = None
    if instance.pk is None or kwargs.get("raw"):
        return
    if update_fields is not None and not {"password", "is_active"} & set(update_fields):
        return  # e.g. the last_login update on every login
    before = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    if before["is_active"] and not instance.is_active:
        instance._roomcast_revoke = DEACTIVATED
    elif before["password"] != instance.password and not rehashed(instance, before["password"]):
        instance._roomcast_revoke = PASSWORD_CHANGED


def rehashed(user: Any, old_hash: str) -> bool:
    """Whether a new hash holds the same password (Django upgrades hashes on login)."""
    raw = getattr(user, "_password", None)  # set by set_password until the save completes
    return raw is not None and check_password(raw, old_hash)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="rooms.revocation.post_save")
def on_access_change(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    reason = getattr(instance, "_roomcast_revoke", None)
    instance._roomcast_revoke = None
    if reason and not created:
        revoke(instance.pk, reason)


@receiver(post_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="rooms.revocation.deleted")
def on_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.pk is not None:
        revoke(instance.pk, DELETED)
