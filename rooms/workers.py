"""Worker processes: claim stored jobs, run them under a lease, retry, and reap the dead.

django-tasks-db stores each job as a `DBTaskResult` row and claims it with a row lock, so
two workers never claim the same job. What it leaves open (django-tasks-db#5): a worker
that dies in the middle of a job leaves it RUNNING for ever, and a failed job is never
retried. Here every claimed job gets a lease (`JobLease`) in the same transaction as the
claim; a thread of the worker renews it while the job runs; any worker's reaper puts a job
whose lease ran out back in the queue, or fails it once it has used all its attempts. A job
finishes only while its worker still holds the lease, so a job re-run after its first
worker was presumed dead leaves one result. Jobs themselves are written to be safe to run
twice (rooms/tasks.py).
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, models
from django.db.utils import OperationalError
from django.utils import timezone
from django_tasks_db.compat import TaskContext, TaskResultStatus, task_finished, task_started
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import exclusive_transaction, is_locked_database_exception

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


class JobLease(models.Model):
    """A running job's lease: the worker running it, and until when it is presumed alive."""

    task = models.OneToOneField(
        DBTaskResult, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    worker_id = models.CharField(max_length=64)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.task_id} held by {self.worker_id} until {self.expires_at}"


class WorkerHeartbeat(models.Model):
    """A worker process, as last seen by its own loop: /readyz counts the recent ones.

    One row per running worker (its loop refreshes it every third of a lease, and its
    lease thread while a long job runs); removed when the worker stops cleanly. Rows of
    workers that died are ignored once stale and deleted by any worker's maintenance.
    """

    worker_id = models.CharField(max_length=64, primary_key=True)
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"worker {self.worker_id} (pid {self.pid} on {self.hostname}), seen {self.seen_at}"


# A worker not seen for this many lease periods is presumed dead: not counted by /readyz.
HEARTBEAT_STALE_LEASES = 3


def lease_seconds() -> float:
    return float(settings.ROOMCAST_JOB_LEASE)


def heartbeat_stale_after() -> datetime.timedelta:
    return datetime.timedelta(seconds=HEARTBEAT_STALE_LEASES * lease_seconds())


def live_worker_count(now: datetime.datetime | None = None) -> int:
    """How many workers refreshed their heartbeat within a few lease periods (one query).

    `ROOMCAST_WORKER_CHECK` names this function: /readyz fails while it returns 0.
    """
    now = now or timezone.now()
    return WorkerHeartbeat.objects.filter(seen_at__gte=now - heartbeat_stale_after()).count()


def forget_dead_workers(now: datetime.datetime | None = None) -> int:
    """Delete the heartbeats of workers that stopped without saying so; return how many."""
    now = now or timezone.now()
    deleted, _ = WorkerHeartbeat.objects.filter(seen_at__lt=now - heartbeat_stale_after()).delete()
    return deleted


def retry_delay(attempts: int) -> datetime.timedelta:
    """How long a job that failed on its `attempts`-th run waits before the next one."""
    return datetime.timedelta(seconds=settings.ROOMCAST_JOB_RETRY_DELAY * 2 ** (attempts - 1))


def _requeue_or_fail(result: DBTaskResult[Any, Any], now: datetime.datetime, why: str) -> str:
    """Put a job back in the queue for another attempt, or fail it after the last one."""
    attempts = len(result.worker_ids)
    if attempts >= settings.ROOMCAST_JOB_MAX_ATTEMPTS:
        result.status = TaskResultStatus.FAILED
        result.finished_at = now
        if not result.traceback:
            result.exception_class_path = "rooms.workers.LeaseExpired"
            result.traceback = why
        result.save(update_fields=["status", "finished_at", "exception_class_path", "traceback"])
        return TaskResultStatus.FAILED
    result.status = TaskResultStatus.READY
    result.started_at = None
    result.finished_at = None
    result.run_after = now + retry_delay(attempts) if attempts else now
    result.save(update_fields=["status", "started_at", "finished_at", "run_after"])
    return TaskResultStatus.READY


def reap(now: datetime.datetime | None = None) -> int:
    """Re-queue (or fail) every running job whose lease ran out; return how many.

    Safe in several workers at once: leases are locked with SKIP LOCKED on PostgreSQL, and
    SQLite's writers are serialised.
    """
    now = now or timezone.now()
    reaped = 0
    with exclusive_transaction():
        expired = (
            JobLease.objects.select_for_update(skip_locked=True)
            .filter(expires_at__lt=now)
            .select_related("task")[:100]
        )
        for lease in expired:
            result = lease.task
            lease.delete()
            if result.status != TaskResultStatus.RUNNING:
                continue
            state = _requeue_or_fail(result, now, f"worker {lease.worker_id} stopped renewing")
            logger.warning(
                "job %s (%s) lost its worker %s: %s",
                result.id,
                result.task_path,
                lease.worker_id,
                "re-queued" if state == TaskResultStatus.READY else "failed, no attempts left",
                extra={"job": str(result.id), "worker": lease.worker_id},
            )
            reaped += 1
        # Jobs claimed by a plain `db_worker` (no lease) that have run longer than a lease.
        orphans = (
            DBTaskResult.objects.select_for_update(skip_locked=True)
            .filter(status=TaskResultStatus.RUNNING)
            .filter(started_at__lt=now - datetime.timedelta(seconds=lease_seconds()))
            .exclude(pk__in=JobLease.objects.values("task_id"))[:100]
        )
        for result in orphans:
            _requeue_or_fail(result, now, "running without a lease")
            reaped += 1
    return reaped


def queue_figures(now: datetime.datetime | None = None) -> dict[str, int]:
    """The dashboard's job-queue figures: waiting, running, failed in the last hour."""
    now = now or timezone.now()
    jobs = DBTaskResult.objects.all()
    return {
        "waiting": jobs.filter(status=TaskResultStatus.READY).count(),
        "running": jobs.filter(status=TaskResultStatus.RUNNING).count(),
        "failed": jobs.filter(
            status=TaskResultStatus.FAILED, finished_at__gte=now - datetime.timedelta(hours=1)
        ).count(),
    }


class Worker:
    """One worker process's loop: claim, run under a lease, finish; reap and tidy between."""

    def __init__(
        self,
        worker_id: str | None = None,
        queues: tuple[str, ...] = ("default",),
        backend: str = "default",
        interval: float = 0.5,
        maintenance_interval: float = 5.0,
        clock: Clock = timezone.now,
    ) -> None:
        self.worker_id = worker_id or uuid.uuid4().hex[:32]
        self.queues = queues
        self.backend = backend
        self.interval = interval
        self.maintenance_interval = maintenance_interval
        self.clock = clock
        self.running = True
        self.current: DBTaskResult[Any, Any] | None = None
        self.stop_event = threading.Event()
        self.done = 0
        self.started_at = clock()
        # When this worker last wrote its heartbeat (None: not yet); two threads write it.
        self.last_beat: datetime.datetime | None = None
        self.beat_lock = threading.Lock()

    # Claiming ---------------------------------------------------------------------------

    def claim(self) -> DBTaskResult[Any, Any] | None:
        """Lock the next ready job, mark it running and lease it, in one transaction."""
        ready = DBTaskResult.objects.ready().filter(
            backend_name=self.backend, queue_name__in=self.queues
        )
        try:
            with exclusive_transaction(ready.db):
                result = ready.get_locked()
                if result is None:
                    return None
                result.claim(self.worker_id)
                JobLease.objects.update_or_create(
                    task=result,
                    defaults={"worker_id": self.worker_id, "expires_at": self.lease_end()},
                )
                return result
        except OperationalError as error:
            if is_locked_database_exception(error):
                return None  # SQLite is busy: try again on the next turn
            raise

    def lease_end(self) -> datetime.datetime:
        return self.clock() + datetime.timedelta(seconds=lease_seconds())

    def renew(self, result: DBTaskResult[Any, Any]) -> bool:
        """Extend this worker's lease on a job; False if it lost it (it was reaped)."""
        held = JobLease.objects.filter(task=result, worker_id=self.worker_id)
        return bool(held.update(expires_at=self.lease_end()))

    # Running ----------------------------------------------------------------------------

    def run_one(self) -> bool:
        """Claim and run one job; False when none was ready."""
        result = self.claim()
        if result is None:
            return False
        self.execute(result)
        return True

    def execute(self, result: DBTaskResult[Any, Any]) -> None:
        """Run a claimed job and record how it ended (success, retry or failure)."""
        self.current = result
        try:
            task = result.task
            task_result = result.task_result
            backend = type(task.get_backend())
            task_started.send(sender=backend, task_result=task_result)
            args, kwargs = task_result.args, task_result.kwargs
            if task.takes_context:
                value = task.call(TaskContext(task_result=task_result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
        except Exception as error:
            logger.exception(
                "job %s (%s) failed", result.id, result.task_path, extra={"job": str(result.id)}
            )
            self.finish(result, error=error)
        else:
            self.finish(result, value=value)
        finally:
            self.current = None
            self.done += 1

    def finish(
        self, result: DBTaskResult[Any, Any], value: Any = None, error: BaseException | None = None
    ) -> None:
        """Record the end of a run, only if this worker still holds the job's lease."""
        with exclusive_transaction():
            lease = (
                JobLease.objects.select_for_update()
                .filter(task=result, worker_id=self.worker_id)
                .first()
            )
            if lease is None:
                # Presumed dead and reaped: the job is queued or run again elsewhere, and
                # that run records the one result.
                logger.warning("job %s: lease lost, this run's result is dropped", result.id)
                return
            lease.delete()
            if error is None:
                result.set_successful(value)
            elif len(result.worker_ids) >= settings.ROOMCAST_JOB_MAX_ATTEMPTS:
                result.set_failed(error)
            else:
                result.set_failed(error)  # the error stays visible in the admin meanwhile
                _requeue_or_fail(result, self.clock(), "")
        task_finished.send(sender=type(result.task.get_backend()), task_result=result.task_result)

    # Being seen alive -------------------------------------------------------------------

    def beat(self, force: bool = False) -> bool:
        """Refresh this worker's heartbeat row if a third of a lease has passed (or `force`).

        Returns whether it wrote. One UPDATE (an INSERT the first time). A busy SQLite
        writes nothing and is tried again on the next turn.
        """
        with self.beat_lock:
            now = self.clock()
            period = datetime.timedelta(seconds=lease_seconds() / 3)
            if not force and self.last_beat is not None and now - self.last_beat < period:
                return False
            try:
                self._write_heartbeat(now)
            except OperationalError as error:
                if is_locked_database_exception(error):
                    return False
                raise
            self.last_beat = now
            return True

    def _write_heartbeat(self, now: datetime.datetime) -> None:
        seen = WorkerHeartbeat.objects.filter(worker_id=self.worker_id)
        if not seen.update(seen_at=now):
            WorkerHeartbeat.objects.update_or_create(
                worker_id=self.worker_id,
                defaults={
                    "hostname": socket.gethostname()[:255],
                    "pid": os.getpid(),
                    "started_at": self.started_at,
                    "seen_at": now,
                },
            )

    def forget(self) -> None:
        """Remove this worker's heartbeat: it stops (a clean exit)."""
        WorkerHeartbeat.objects.filter(worker_id=self.worker_id).delete()

    # The loop ---------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Every third of a lease, renew the running job's lease and this worker's heartbeat.

        A thread: a long job keeps both fresh while the loop waits for it.
        """
        try:
            while not self.stop_event.wait(lease_seconds() / 3):
                result = self.current
                if result is None:
                    continue  # the loop turns, and beats itself
                try:
                    if self.renew(result):
                        self.beat()
                    else:
                        logger.warning("job %s: lease lost while running", result.id)
                except Exception:
                    # A database blip: the lease has two more thirds to run; try next time
                    # (if it runs out, the reaper re-queues the job, which is safe to re-run).
                    logger.exception("job %s: could not renew its lease", result.id)
        finally:
            connection.close()

    def maintain(self) -> None:
        """Between jobs: reap dead workers' jobs, delete expired pushes and exports."""
        from rooms import digest, exports, relay

        duties = (
            reap,
            forget_dead_workers,
            relay.delete_expired,
            exports.delete_expired,
            digest.enqueue_strays,
        )
        for duty in duties:
            try:
                duty()
            except Exception:
                logger.exception("worker maintenance %s failed", duty.__name__)

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """First signal: finish the running job, then stop. Second: stop at once."""
        if not self.running:
            raise SystemExit(1)
        logger.info("worker %s stopping after the current job", self.worker_id)
        self.running = False

    def run(self, max_jobs: int | None = None) -> None:
        """Run jobs until stopped (or `max_jobs` have run)."""
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)
        beat = threading.Thread(target=self.heartbeat, name="lease-heartbeat", daemon=True)
        beat.start()
        logger.info("worker %s started on queues %s", self.worker_id, ",".join(self.queues))
        next_maintenance = 0.0
        try:
            self.beat(force=True)
            while self.running and (max_jobs is None or self.done < max_jobs):
                close_old_connections()
                self.beat()
                if time.monotonic() >= next_maintenance:
                    self.maintain()
                    next_maintenance = time.monotonic() + self.maintenance_interval
                if not self.run_one() and self.running:
                    time.sleep(self.interval)
        finally:
            self.stop_event.set()
            beat.join()
            try:
                self.forget()
            except Exception:
                # The row goes stale and is deleted by another worker's maintenance.
                logger.exception("worker %s: could not remove its heartbeat", self.worker_id)
            logger.info("worker %s stopped after %d jobs", self.worker_id, self.done)
