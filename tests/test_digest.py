"""Email digests of missed mentions: batched per user, sent once, not to the present."""

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.core import mail
from django_tasks_db.models import DBTaskResult

from rooms import digest, notifications, presence
from rooms.digest import DigestEntry
from rooms.models import Profile
from rooms.notifications import Notification

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
ROOT = Path(__file__).resolve().parent.parent


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def delay(settings):
    settings.ROOMCAST_DIGEST_DELAY = 600
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def bob(make_user):
    return make_user("bob", email="bob@example.com")


def mention(user, text: str, seconds: float = 0, committed=None) -> DigestEntry:
    note = Notification.objects.create(user=user, kind="mention", text=text, url="/rooms/lobby/")
    if committed is not None:
        return committed(digest.schedule, note, now=at(seconds))
    return digest.schedule(note, now=at(seconds))


def states(user) -> list[str]:
    return list(DigestEntry.objects.filter(user=user).values_list("state", flat=True))


def open_page(user) -> None:
    async def touch():
        await presence.get_store().touch(presence.sockets_key(user.pk), {"c1": "open"}, 20)

    async_to_sync(touch)()


@pytest.mark.django_db
def test_first_missed_mention_fixes_the_batch_time(bob):
    first = mention(bob, "one", seconds=0)
    second = mention(bob, "two", seconds=100)
    assert (first.scheduled_at, second.scheduled_at) == (at(600), at(600))


@pytest.mark.django_db
def test_a_batch_queues_one_send_at_its_time(bob, committed):
    mention(bob, "one", 0, committed)
    mention(bob, "two", 100, committed)
    job = DBTaskResult.objects.get()
    assert (job.task_path, job.args_kwargs["args"], job.run_after) == (
        "rooms.tasks.send_digest",
        [bob.pk],
        at(600),
    )


@pytest.mark.django_db
def test_send_due_sends_one_email_for_all_due_mentions(bob):
    mention(bob, "alice mentioned you in Lobby: one")
    mention(bob, "carol mentioned you in Lobby: two", seconds=5)
    assert digest.send_due(bob.pk, now=at(600)) == 2
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert (email.to, email.subject) == (
        ["bob@example.com"],
        "Roomcast: 2 mentions while you were away",
    )
    assert "- alice mentioned you in Lobby: one" in email.body
    assert "- carol mentioned you in Lobby: two" in email.body
    assert states(bob) == ["sent", "sent"]


@pytest.mark.django_db
def test_send_due_before_the_quiet_period_ends_sends_nothing(bob):
    mention(bob, "one")
    assert digest.send_due(bob.pk, now=at(599)) == 0
    assert (len(mail.outbox), states(bob)) == (0, ["pending"])


@pytest.mark.django_db
def test_send_due_twice_sends_one_email(bob):
    mention(bob, "one")
    digest.send_due(bob.pk, now=at(600))
    digest.send_due(bob.pk, now=at(601))
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_send_due_to_a_user_who_turned_digests_off_sends_nothing(bob):
    Profile.objects.create(user=bob, email_digest=False)
    mention(bob, "one")
    assert digest.send_due(bob.pk, now=at(600)) == 0
    assert (len(mail.outbox), states(bob)) == (0, ["skipped"])


@pytest.mark.django_db
def test_send_due_to_a_user_with_a_page_open_now_sends_nothing(bob):
    mention(bob, "one")
    open_page(bob)
    assert digest.send_due(bob.pk, now=at(600)) == 0
    assert (len(mail.outbox), states(bob)) == (0, ["skipped"])


@pytest.mark.django_db
def test_a_user_seen_online_meanwhile_gets_no_email(bob):
    mention(bob, "one")
    assert digest.seen_online([bob.pk]) == 1  # a web process saw a page of theirs
    assert digest.send_due(bob.pk, now=at(600)) == 0
    assert len(mail.outbox) == 0


@pytest.mark.django_db
def test_mention_of_a_user_with_a_page_open_schedules_no_digest(room, alice, bob, committed):
    open_page(bob)
    committed(notifications.mentioned, room, 1, "alice", "hi @bob", [bob.pk])
    assert (Notification.objects.count(), DigestEntry.objects.count()) == (1, 0)


@pytest.mark.django_db
def test_mention_of_a_user_away_schedules_a_digest(room, alice, bob, committed):
    committed(notifications.mentioned, room, 1, "alice", "hi @bob", [bob.pk])
    assert states(bob) == ["pending"]


@pytest.mark.django_db
def test_enqueue_strays_queues_a_send_for_late_entries_once(bob):
    mention(bob, "one")  # outside a transaction's commit: no send was queued
    assert digest.enqueue_strays(now=at(700)) == 1
    assert digest.enqueue_strays(now=at(705)) == 0  # one is queued already
    assert DBTaskResult.objects.count() == 1


@pytest.mark.django_db
def test_password_reset_email_goes_out_through_the_same_configuration(client, bob, settings):
    settings.DEFAULT_FROM_EMAIL = "Roomcast <noreply@example.com>"
    settings.ROOMCAST_EMAIL_ENABLED = True  # offered only where mail can go out (EMAIL_HOST)
    client.post("/accounts/password_reset/", {"email": "bob@example.com"})
    assert [(m.to, m.from_email) for m in mail.outbox] == [
        (["bob@example.com"], "Roomcast <noreply@example.com>")
    ]


def email_settings(**env) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EMAIL_"))}
    script = (
        "import site_config.settings as s; "
        "print(s.EMAIL_BACKEND, getattr(s, 'EMAIL_HOST', ''), getattr(s, 'EMAIL_PORT', ''), "
        "getattr(s, 'EMAIL_USE_TLS', ''), s.DEFAULT_FROM_EMAIL)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**clean, "DJANGO_DEBUG": "1", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_email_settings_use_smtp_from_the_environment():
    assert email_settings(
        EMAIL_HOST="smtp.example.com",
        EMAIL_PORT="2525",
        EMAIL_USE_TLS="0",
        DEFAULT_FROM_EMAIL="x@y",
    ) == ["django.core.mail.backends.smtp.EmailBackend", "smtp.example.com", "2525", "False", "x@y"]


def test_email_settings_default_to_the_console():
    assert email_settings()[0] == "django.core.mail.backends.console.EmailBackend"


@pytest.mark.django_db
def test_digest_email_carries_a_working_unsubscribe_link(client, bob):
    mention(bob, "one")
    digest.send_due(bob.pk, now=at(600))
    link = next(line for line in mail.outbox[0].body.splitlines() if "/unsubscribe/" in line)
    path = link.strip().removeprefix("http://127.0.0.1:8000")
    assert client.get(path).status_code == 200
    assert Profile.for_user(bob).email_digest is True  # a GET changes nothing
    client.post(path)
    assert Profile.for_user(bob).email_digest is False


@pytest.mark.django_db
def test_unsubscribe_with_a_forged_token_is_404(client, bob):
    token = digest.unsubscribe_token(bob.pk)[:-2] + "xx"
    response = client.post(f"/notifications/unsubscribe/{token}/")
    assert (response.status_code, Profile.for_user(bob).email_digest) == (404, True)
