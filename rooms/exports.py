"""Room exports: a member asks, a worker writes the room's history to a file, streaming.

The request (`request_export`) is one `Export` row; the job (`rooms.tasks.export_room`)
is keyed by it, so running it twice (a worker died and the job was re-queued) writes the
same file again and finishes the row once. While it writes, the requesting user's pages
get the export control re-rendered with a moving progress bar (at least once per
`ROOMCAST_EXPORT_PROGRESS_INTERVAL` seconds of an injected clock). Messages are read in
chunks and written as they come, so memory does not grow with the room. The file can be
downloaded by that user only, until `ROOMCAST_EXPORT_TTL` seconds after it was made.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from rooms import live

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from rooms.models import Message, Room

logger = logging.getLogger(__name__)

CONTROL = "rooms/exports.html#export_control"
CHUNK = 2000


class Export(models.Model):
    """One user's request for a room's history as a file, and how far its job has got."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    ACTIVE = (QUEUED, RUNNING)
    FORMATS = [("md", "Markdown"), ("json", "JSON")]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    room = models.ForeignKey("rooms.Room", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    format = models.CharField(max_length=4, choices=FORMATS, default="md")
    state = models.CharField(
        max_length=8,
        default=QUEUED,
        choices=[(s, s) for s in (QUEUED, RUNNING, DONE, FAILED, EXPIRED)],
    )
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=200, blank=True)
    job_id = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            # Asking again while one runs does not start a second.
            models.UniqueConstraint(
                fields=["room", "user"],
                condition=Q(state__in=["queued", "running"]),
                name="export_one_active_per_room_user",
            )
        ]

    def __str__(self) -> str:
        return f"export {self.pk} of room {self.room_id} ({self.state})"

    @property
    def filename(self) -> str:
        return f"{self.room.slug}.{self.format}"

    @property
    def path(self) -> Path:
        return Path(settings.ROOMCAST_EXPORT_DIR) / f"{self.pk}.{self.format}"

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, self.done * 100 // self.total)

    def download_url(self) -> str:
        return reverse("export_download", args=[self.pk])

    def is_downloadable(self, now: datetime.datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.state == self.DONE and self.expires_at is not None and self.expires_at > now


def latest(room: Room, user: User) -> Export | None:
    """The user's most recent export of the room, if any."""
    return Export.objects.filter(room=room, user=user).select_related("room").first()


def request_export(room: Room, user: User, fmt: str) -> tuple[Export, bool]:
    """Ask for an export; returns (export, started). One that is running is returned as is.

    The caller has checked that the user may read the room; the job checks again.
    """
    with transaction.atomic():
        active = Export.objects.filter(room=room, user=user, state__in=Export.ACTIVE).first()
        if active is not None and not job_gave_up(active):
            return active, False
        try:
            with transaction.atomic():
                export = Export.objects.create(room=room, user=user, format=fmt)
        except IntegrityError:  # asked twice at the same moment: the other one won
            return Export.objects.get(room=room, user=user, state__in=Export.ACTIVE), False
        transaction.on_commit(lambda: start(export), robust=True)
    return export, True


def start(export: Export) -> None:
    from rooms import tasks

    result = tasks.export_room.enqueue(str(export.pk))
    Export.objects.filter(pk=export.pk).update(job_id=result.id)


def job_gave_up(export: Export) -> bool:
    """An active export whose job failed for good (its last worker died): mark it failed."""
    from django_tasks_db.compat import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    if not export.job_id:
        return False
    status = DBTaskResult.objects.filter(pk=export.job_id).values_list("status", flat=True)
    if status.first() != TaskResultStatus.FAILED:
        return False
    fail(export, "The export failed. Try again.")
    return True


def push_control(export: Export) -> None:
    """Show the export's state on every page its user has open."""
    live.push(live.User(export.user_id), CONTROL, {"room": export.room, "export": export})


# Writing ------------------------------------------------------------------------------


def messages_of(room: Room) -> Iterator[Message]:
    """The room's messages in order, read CHUNK rows at a time.

    Each chunk is its own query (by sequence number), not one long-lived cursor: on SQLite
    a connection holding a read cursor open cannot write (the progress updates) once
    another connection (the lease heartbeat) has written.
    """
    after = 0
    while True:
        rows = list(
            room.messages.filter(seq__gt=after).select_related("author").order_by("seq")[:CHUNK]
        )
        yield from rows
        if len(rows) < CHUNK:
            return
        after = rows[-1].seq


def write_markdown(room: Room, out: IO[str], rows: Iterator[Message]) -> Iterator[int]:
    out.write(f"# {room.title}\n\n")
    for n, message in enumerate(rows, 1):
        stamp = message.created.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        body = "*(deleted)*" if message.deleted else message.body
        edited = " (edited)" if message.edited and not message.deleted else ""
        out.write(f"**{message.author_name}** · {stamp}{edited}\n\n{body}\n\n")
        yield n


def write_json(room: Room, out: IO[str], rows: Iterator[Message]) -> Iterator[int]:
    head = {"room": {"title": room.title, "slug": room.slug}}
    out.write(json.dumps(head)[:-1] + ', "messages": [\n')
    for n, message in enumerate(rows, 1):
        record = {
            "seq": message.seq,
            "author": message.author_name,
            "created": message.created.isoformat(),
            "body": "" if message.deleted else message.body,
            "edited": message.edited,
            "deleted": message.deleted,
        }
        out.write(("," if n > 1 else "") + json.dumps(record) + "\n")
        yield n
    out.write("]}\n")


WRITERS = {"md": write_markdown, "json": write_json}


def run(export_id: str, clock: Callable[[], float] = time.monotonic) -> str:
    """Write an export's file, pushing progress; return the state it ended in.

    Safe to run twice: a finished export is left as it is, and a re-run writes the whole
    file again under a temporary name and moves it into place.
    """
    export = Export.objects.select_related("room", "user").get(pk=export_id)
    if export.state not in Export.ACTIVE:
        return export.state
    room = export.room
    if not room.can_read(export.user):
        return fail(export, "You can no longer read this room.")
    export.total = room.messages.count()
    export.done = 0
    export.state = Export.RUNNING
    Export.objects.filter(pk=export.pk).update(state=export.state, total=export.total, done=0)
    push_control(export)
    path = export.path
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{path.name}.*.part"):
        stale.unlink(missing_ok=True)  # left by a run whose worker died
    part = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.part")
    interval = settings.ROOMCAST_EXPORT_PROGRESS_INTERVAL
    next_report = clock() + interval
    try:
        with open(part, "w", encoding="utf-8") as out:
            for n in WRITERS[export.format](room, out, messages_of(room)):
                if clock() >= next_report:
                    next_report = clock() + interval
                    progress(export, n)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return finish(export)


def progress(export: Export, done: int) -> None:
    export.done = done
    Export.objects.filter(pk=export.pk, state=Export.RUNNING).update(done=done)
    push_control(export)


def finish(export: Export) -> str:
    """Mark the export done (once) and tell its user; the second run of a job does nothing."""
    from rooms import notifications

    now = timezone.now()
    expires = now + datetime.timedelta(seconds=settings.ROOMCAST_EXPORT_TTL)
    with transaction.atomic():
        finished = Export.objects.filter(pk=export.pk, state__in=Export.ACTIVE).update(
            state=Export.DONE, done=export.total, finished_at=now, expires_at=expires
        )
        if not finished:
            return Export.objects.values_list("state", flat=True).get(pk=export.pk)
        export.state, export.done, export.finished_at, export.expires_at = (
            Export.DONE,
            export.total,
            now,
            expires,
        )
        push_control(export)
        notifications.notify(
            export.user_id,
            "export",
            f"Your export of {export.room.title} is ready.",
            export.download_url(),
            key=f"export-{export.pk}",
        )
    return Export.DONE


def fail(export: Export, reason: str) -> str:
    Export.objects.filter(pk=export.pk, state__in=Export.ACTIVE).update(
        state=Export.FAILED, error=reason[:200], finished_at=timezone.now()
    )
    export.state, export.error = Export.FAILED, reason
    push_control(export)
    return Export.FAILED


def delete_expired(now: datetime.datetime | None = None) -> int:
    """Delete the files of exports past their time (a worker's duty); return how many."""
    now = now or timezone.now()
    expired = list(Export.objects.filter(state=Export.DONE, expires_at__lte=now)[:100])
    for export in expired:
        export.path.unlink(missing_ok=True)
    Export.objects.filter(pk__in=[e.pk for e in expired]).update(state=Export.EXPIRED)
    return len(expired)
