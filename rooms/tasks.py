"""Roomcast's background jobs, defined with Django's Tasks API.

The one import of the API is here: on Django 6 it becomes `from django.tasks import task`
and nothing else changes (django-tasks-db runs on both). Jobs are stored by the database
backend (settings.TASKS) and run by `manage.py roomcast_worker` (rooms/workers.py), which
leases, retries and reaps them. Every job is safe to run twice: its effect is keyed by
its arguments (an export's id, a user's due digest entries).
"""

from __future__ import annotations

from django_tasks import TaskContext, task  # Django 6: from django.tasks import ...

from rooms import digest, exports


@task(takes_context=True)
def export_room(context: TaskContext, export_id: str) -> str:
    """Write a room export's file, with progress on its user's pages."""
    try:
        return exports.run(export_id)
    except Exception:
        from django.conf import settings

        if context.attempt >= settings.ROOMCAST_JOB_MAX_ATTEMPTS:
            export = exports.Export.objects.select_related("room").get(pk=export_id)
            exports.fail(export, "The export failed. Try again.")
        raise


@task()
def send_digest(user_id: int) -> int:
    """Email a user the mentions they missed that are due; returns how many it listed."""
    return digest.send_due(user_id)


@task()
def ping(n: int) -> int:
    """A job that does nothing (tests and bench/jobs.py): returns its argument."""
    return n


@task()
def stamp(user_id: int) -> float:
    """Push the wall-clock time the job ends at to a user's pages (bench/jobs.py latency)."""
    import time

    from rooms import live

    now = time.time()
    live.push(live.User(user_id), "base.html#notice_toast", {"text": f"{now:.6f}"})
    return now
