"""One email for people who were away: the mentions they missed, after a quiet period.

As zulip's missed-message emails do: a mention of a user with no page open becomes a
`DigestEntry` with a scheduled time; the user's first pending entry fixes the time of the
whole batch (`ROOMCAST_DIGEST_DELAY` after it), and every later mention joins it. At that
time a job (`rooms.tasks.send_digest`) sends ONE email for all of the user's due entries,
claiming them with SELECT ... FOR UPDATE SKIP LOCKED so two workers never send the same
entries. A user who opens a page meanwhile is not emailed (each web process tells the
digest who has a page open there, see rooms/relay.py), nor one who turned digests off.
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import send_mail
from django.db import models, transaction
from django.template.defaultfilters import pluralize
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from rooms import presence

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from rooms.notifications import Notification

logger = logging.getLogger(__name__)


class DigestEntry(models.Model):
    """One missed mention waiting for (or gone out in) a user's digest."""

    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"  # the user came back, or does not want digests

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    notification = models.ForeignKey(
        "rooms.Notification", on_delete=models.CASCADE, related_name="+"
    )
    scheduled_at = models.DateTimeField()
    state = models.CharField(
        max_length=8,
        default=PENDING,
        choices=[(PENDING, "pending"), (SENT, "sent"), (SKIPPED, "skipped")],
    )
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["scheduled_at", "id"]
        indexes = [models.Index(fields=["state", "scheduled_at"], name="digest_pending_due")]

    def __str__(self) -> str:
        return f"{self.state} digest entry for {self.user_id} at {self.scheduled_at}"


def is_online(user_id: int) -> bool:
    """Whether the user has a page open anywhere the presence store can tell."""

    async def count() -> int:
        store = presence.get_store()
        try:
            return len(await store.values(presence.sockets_key(user_id)))
        finally:
            await store.close()

    try:
        return async_to_sync(count)() > 0
    except Exception:
        # Cannot tell: treat as away; a page opened meanwhile still cancels the email.
        logger.warning("presence store unavailable; %s counted as away", user_id, exc_info=True)
        return False


def schedule(notification: Notification, now: datetime.datetime | None = None) -> DigestEntry:
    """Put a missed mention in its user's next digest, scheduling a send for a new batch."""
    from rooms import tasks

    now = now or timezone.now()
    user_id = notification.user_id
    with transaction.atomic():
        first = (
            DigestEntry.objects.filter(user_id=user_id, state=DigestEntry.PENDING)
            .order_by("scheduled_at")
            .first()
        )
        when = (
            first.scheduled_at
            if first
            else now + datetime.timedelta(seconds=settings.ROOMCAST_DIGEST_DELAY)
        )
        entry = DigestEntry.objects.create(
            user_id=user_id, notification=notification, scheduled_at=when
        )
        if first is None:
            transaction.on_commit(
                lambda: tasks.send_digest.using(run_after=when).enqueue(user_id), robust=True
            )
    return entry


def seen_online(user_ids: list[int], now: datetime.datetime | None = None) -> int:
    """Users with a page open: their pending entries will not be emailed. Returns how many."""
    if not user_ids:
        return 0
    pending = DigestEntry.objects.filter(user_id__in=user_ids, state=DigestEntry.PENDING)
    return pending.update(state=DigestEntry.SKIPPED, done_at=now or timezone.now())


def send_due(user_id: int, now: datetime.datetime | None = None) -> int:
    """Send the user one email for all their due entries; return how many it listed."""
    now = now or timezone.now()
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    with transaction.atomic():
        due = list(
            DigestEntry.objects.select_for_update(skip_locked=True)
            .filter(user_id=user_id, state=DigestEntry.PENDING, scheduled_at__lte=now)
            .select_related("notification")
            .order_by("id")
        )
        if not due:
            return 0
        ids = [entry.pk for entry in due]
        if user is None or not user.email or not wants_digest(user) or is_online(user_id):
            DigestEntry.objects.filter(pk__in=ids).update(state=DigestEntry.SKIPPED, done_at=now)
            return 0
        context = {
            "user": user,
            "entries": due,
            "site_url": settings.ROOMCAST_SITE_URL,
            "unsubscribe": reverse("digest_unsubscribe", args=[unsubscribe_token(user.pk)]),
        }
        # Sent while the entries are locked: a second worker skips them, and if this one
        # dies before committing they are sent again (at least once, never two at a time).
        send_mail(
            subject=f"Roomcast: {len(due)} mention{pluralize(len(due))} while you were away",
            message=render_to_string("rooms/digest_email.txt", context),
            from_email=None,
            recipient_list=[user.email],
        )
        DigestEntry.objects.filter(pk__in=ids).update(state=DigestEntry.SENT, done_at=now)
    return len(due)


UNSUBSCRIBE_SALT = "rooms.digest.unsubscribe"


def unsubscribe_token(user_id: int) -> str:
    """A signed token naming the user: the digest's unsubscribe link works without a login."""
    return signing.dumps(user_id, salt=UNSUBSCRIBE_SALT)


def user_of_token(token: str) -> int | None:
    """The user id an unsubscribe token names, or None for a forged or mangled one."""
    try:
        return int(signing.loads(token, salt=UNSUBSCRIBE_SALT))
    except (signing.BadSignature, TypeError, ValueError):
        return None


def wants_digest(user: AbstractBaseUser) -> bool:
    from rooms.models import Profile

    return Profile.for_user(user).email_digest


def enqueue_strays(now: datetime.datetime | None = None) -> int:
    """Schedule a send for users whose due entries have no send coming (a worker's duty).

    A mention that joined a batch while its send was running is left pending after it; a
    send for it is queued here, a little after it fell due. Returns how many were queued.
    """
    from rooms import tasks

    now = now or timezone.now()
    late = now - datetime.timedelta(seconds=30)
    due = (
        DigestEntry.objects.filter(state=DigestEntry.PENDING, scheduled_at__lt=late)
        .values_list("user_id", flat=True)
        .distinct()[:100]
    )
    from django_tasks_db.compat import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    queued = set(
        DBTaskResult.objects.filter(
            task_path=tasks.send_digest.module_path, status=TaskResultStatus.READY
        ).values_list("args_kwargs__args__0", flat=True)
    )
    users = [user_id for user_id in due if user_id not in queued]
    for user_id in users:
        tasks.send_digest.enqueue(user_id)
    return len(users)
