"""The worker loop: claims under a lease, retries with a bound, and the reaper."""

import datetime
import signal

import pytest
from django.utils import timezone
from django_tasks import task
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from rooms import tasks, workers
from rooms.workers import JobLease, Worker, WorkerHeartbeat

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


@task()
def boom() -> None:
    raise RuntimeError("boom")


@task()
def count_live_workers() -> int:
    return workers.live_worker_count()


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def worker(name: str, seconds: float = 0) -> Worker:
    return Worker(worker_id=name, clock=lambda: at(seconds))


def row(result) -> DBTaskResult:
    return DBTaskResult.objects.get(pk=result.id)


@pytest.fixture(autouse=True)
def lease_settings(settings):
    settings.ROOMCAST_JOB_LEASE = 30
    settings.ROOMCAST_JOB_MAX_ATTEMPTS = 3
    settings.ROOMCAST_JOB_RETRY_DELAY = 10


@pytest.mark.django_db
def test_worker_runs_a_queued_job_once():
    result = tasks.ping.enqueue(5)
    w = worker("a")
    assert w.run_one() is True
    assert w.run_one() is False
    assert (row(result).status, row(result).return_value) == (TaskResultStatus.SUCCESSFUL, 5)


@pytest.mark.django_db
def test_worker_claim_leases_the_job_until_a_lease_from_now():
    result = tasks.ping.enqueue(1)
    worker("a", 0).claim()
    lease = JobLease.objects.get(task_id=result.id)
    assert (lease.worker_id, lease.expires_at) == ("a", at(30))
    assert row(result).status == TaskResultStatus.RUNNING


@pytest.mark.django_db
def test_worker_success_releases_the_lease():
    tasks.ping.enqueue(1)
    worker("a").run_one()
    assert JobLease.objects.count() == 0


@pytest.mark.django_db
def test_renew_moves_the_lease_forward():
    result = tasks.ping.enqueue(1)
    claimed = worker("a", 0).claim()
    assert worker("a", 20).renew(claimed) is True
    assert JobLease.objects.get(task_id=result.id).expires_at == at(50)


@pytest.mark.django_db
def test_reap_requeues_a_job_whose_lease_ran_out():
    result = tasks.ping.enqueue(7)
    worker("dead", 0).claim()
    assert workers.reap(now=at(31)) == 1
    assert row(result).status == TaskResultStatus.READY
    assert JobLease.objects.count() == 0


@pytest.mark.django_db
def test_reap_leaves_a_job_whose_lease_is_alive():
    result = tasks.ping.enqueue(7)
    worker("alive", 0).claim()
    assert workers.reap(now=at(29)) == 0
    assert row(result).status == TaskResultStatus.RUNNING


@pytest.mark.django_db
def test_reaped_job_finishes_once_on_another_worker():
    result = tasks.ping.enqueue(7)
    dead = worker("dead", 0)
    claimed = dead.claim()
    workers.reap(now=at(31))
    DBTaskResult.objects.filter(pk=result.id).update(run_after=timezone.now())
    assert worker("b", 40).run_one() is True
    # The first worker comes back and tries to record its run: dropped, it lost the lease.
    dead.finish(claimed, value=99)
    final = row(result)
    assert (final.status, final.return_value, final.worker_ids) == (
        TaskResultStatus.SUCCESSFUL,
        7,
        ["dead", "b"],
    )


@pytest.mark.django_db
def test_reap_fails_a_job_that_used_every_attempt(settings):
    settings.ROOMCAST_JOB_MAX_ATTEMPTS = 1
    result = tasks.ping.enqueue(7)
    worker("dead", 0).claim()
    workers.reap(now=at(31))
    final = row(result)
    assert (final.status, final.exception_class_path) == (
        TaskResultStatus.FAILED,
        "rooms.workers.LeaseExpired",
    )


@pytest.mark.django_db
def test_failed_job_is_requeued_after_the_retry_delay():
    result = boom.enqueue()
    worker("a", 0).run_one()
    final = row(result)
    assert (final.status, final.run_after) == (TaskResultStatus.READY, at(10))
    assert final.exception_class_path == "builtins.RuntimeError"


@pytest.mark.django_db
def test_failed_job_fails_for_good_on_its_last_attempt(settings):
    settings.ROOMCAST_JOB_MAX_ATTEMPTS = 2
    result = boom.enqueue()
    worker("a", 0).run_one()
    DBTaskResult.objects.filter(pk=result.id).update(run_after=timezone.now())
    worker("b", 100).run_one()
    final = row(result)
    assert (final.status, final.worker_ids) == (TaskResultStatus.FAILED, ["a", "b"])


@pytest.mark.django_db
def test_queue_figures_count_waiting_running_and_recently_failed():
    tasks.ping.enqueue(1)
    tasks.ping.enqueue(2)
    worker("a").claim()
    old = boom.enqueue()
    DBTaskResult.objects.filter(pk=old.id).update(
        status=TaskResultStatus.FAILED, finished_at=timezone.now() - datetime.timedelta(hours=2)
    )
    recent = boom.enqueue()
    DBTaskResult.objects.filter(pk=recent.id).update(
        status=TaskResultStatus.FAILED, finished_at=timezone.now()
    )
    assert workers.queue_figures() == {"waiting": 1, "running": 1, "failed": 1}


def test_job_queue_partial_shows_the_three_figures():
    from bs4 import BeautifulSoup
    from django.template.loader import render_to_string

    html = render_to_string(
        "rooms/job_queue.html#job_queue", {"jobs": {"waiting": 3, "running": 1, "failed": 2}}
    )
    page = BeautifulSoup(html, "html.parser")
    names = ("waiting", "running", "failed")
    assert [page.select_one(f"#jobs-{name}").get_text() for name in names] == ["3", "1", "2"]


# Heartbeats: /readyz counts the workers seen lately


class Clock:
    """A clock the test moves."""

    def __init__(self, seconds: float = 0) -> None:
        self.seconds = seconds

    def __call__(self) -> datetime.datetime:
        return at(self.seconds)


def seen_at() -> dict[str, datetime.datetime]:
    return dict(WorkerHeartbeat.objects.values_list("worker_id", "seen_at"))


@pytest.mark.django_db
def test_worker_beat_records_the_worker_as_seen_now():
    assert worker("a", 5).beat() is True
    assert seen_at() == {"a": at(5)}


@pytest.mark.django_db
def test_worker_beat_within_a_third_of_a_lease_writes_nothing():
    clock = Clock(0)
    w = Worker(worker_id="a", clock=clock)
    w.beat()
    clock.seconds = 9
    assert (w.beat(), seen_at()) == (False, {"a": at(0)})


@pytest.mark.django_db
def test_worker_beat_after_a_third_of_a_lease_moves_seen_at():
    clock = Clock(0)
    w = Worker(worker_id="a", clock=clock)
    w.beat()
    clock.seconds = 10
    assert (w.beat(), seen_at()) == (True, {"a": at(10)})


@pytest.mark.django_db
def test_live_worker_count_counts_workers_seen_within_three_leases():
    worker("old", 0).beat()
    worker("recent", 2).beat()
    assert workers.live_worker_count(now=at(91)) == 1


@pytest.mark.django_db
def test_live_worker_count_is_zero_without_heartbeats():
    assert workers.live_worker_count(now=at(0)) == 0


@pytest.mark.django_db
def test_forget_dead_workers_deletes_only_stale_heartbeats():
    worker("old", 0).beat()
    worker("recent", 2).beat()
    assert workers.forget_dead_workers(now=at(91)) == 1
    assert list(seen_at()) == ["recent"]


@pytest.mark.django_db
def test_worker_forget_removes_only_its_own_heartbeat():
    worker("a").beat()
    worker("b").beat()
    worker("a").forget()
    assert list(seen_at()) == ["b"]


@pytest.mark.django_db
def test_worker_run_is_seen_while_running_and_removed_on_a_clean_exit(monkeypatch):
    # The loop's connection housekeeping would end the test's transaction.
    monkeypatch.setattr(workers, "close_old_connections", lambda: None)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = count_live_workers.enqueue()
    try:
        Worker(worker_id="a").run(max_jobs=1)
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert (row(result).return_value, seen_at()) == (1, {})


@pytest.mark.django_db
def test_worker_beat_on_a_busy_sqlite_writes_nothing_and_tries_again(monkeypatch):
    w = worker("a", 0)

    def locked(now):
        raise workers.OperationalError("database is locked")

    monkeypatch.setattr(w, "_write_heartbeat", locked)
    assert (w.beat(), w.last_beat) == (False, None)


@pytest.mark.django_db
def test_worker_beat_raises_other_database_errors(monkeypatch):
    w = worker("a", 0)

    def broken(now):
        raise workers.OperationalError("disk I/O error")

    monkeypatch.setattr(w, "_write_heartbeat", broken)
    with pytest.raises(workers.OperationalError):
        w.beat()
