"""Real worker processes beside real servers, on PostgreSQL (and Redis, or the database relay):
exports with live progress, a worker killed mid-export, many jobs through two workers, the
email digest, and the inbox on a second tab."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from websockets.asyncio.client import connect

from rooms.testing import Fragment
from tests.integration.servers import ROOT, LiveClient, Server, Site

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

MESSAGES = """
from django.contrib.auth import get_user_model
from rooms.models import Message, Room
room = Room.objects.get(slug="{slug}")
alice = get_user_model().objects.get(username="alice")
Message.objects.bulk_create(
    [Message(room=room, seq=n, author=alice, body=f"message {{n}}") for n in range(1, {count} + 1)],
    batch_size=5000,
)
Room.objects.filter(pk=room.pk).update(last_seq={count})
print(room.pk)
"""


class WorkerProcess:
    """One `manage.py roomcast_worker` process."""

    def __init__(self, site: Site, name: str) -> None:
        self.name = name
        self.log_path = Path(tempfile.gettempdir()) / f"roomcast-worker-{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "roomcast_worker", "--worker-id", name]
            # A dead worker's job is reaped within half a second of its lease running out.
            + ["--interval", "0.1", "--maintenance-interval", "0.5"],
            cwd=ROOT,
            env=site.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.log.close()


class JobsSite(Site):
    """A site with short leases and retry delays, exports and emails in files, and workers."""

    def __init__(self, database_url: str, redis_url: str, tmp_path: Path) -> None:
        super().__init__(database_url, redis_url)
        self.env.update(
            ROOMCAST_JOB_LEASE="2",
            ROOMCAST_JOB_RETRY_DELAY="0.2",
            ROOMCAST_EXPORT_DIR=str(tmp_path / "exports"),
            ROOMCAST_EXPORT_PROGRESS_INTERVAL="0.2",
            EMAIL_FILE_PATH=str(tmp_path / "mail"),
            ROOMCAST_DIGEST_DELAY="2",
            ROOMCAST_RELAY_INTERVAL="0.1",
        )
        self.workers: list[WorkerProcess] = []

    def start_worker(self, name: str) -> WorkerProcess:
        worker = WorkerProcess(self, name)
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.kill()
        super().stop()


@pytest.fixture
def jobs_site(postgres_database, redis_url, tmp_path):
    """The site on PostgreSQL and Redis, ready for workers."""
    site = JobsSite(postgres_database, redis_url, tmp_path)
    yield site
    site.stop()


@pytest.fixture
def sqlite_site(tmp_path):
    """The embedded default: SQLite and the in-memory layer (no service needed)."""
    site = JobsSite(f"sqlite:///{tmp_path / 'db.sqlite3'}", "", tmp_path)
    site.env.pop("REDIS_URL")
    yield site
    site.stop()


@pytest.fixture(params=["postgres", "sqlite"])
def any_site(request):
    """PostgreSQL with Redis, then the embedded default."""
    return request.getfixturevalue("jobs_site" if request.param == "postgres" else "sqlite_site")


@pytest.fixture(params=["relay", "redis"])
def layer(request, jobs_site):
    """Run the test on the embedded in-memory layer (pushes through the database relay)
    and on Redis (pushes through the layer)."""
    if request.param == "relay":
        jobs_site.env.pop("REDIS_URL")
    return request.param


def query(site: Site, sql: str, *args) -> list[tuple]:
    url = site.env["DATABASE_URL"]
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            rows = conn.execute(sql.replace("%s", "?").replace("::text", ""), args).fetchall()
            return [tuple(json_or(v) for v in row) for row in rows]
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def json_or(value):
    """SQLite returns JSON columns as text and UUIDs as hex: read them as PostgreSQL does."""
    if isinstance(value, str) and value.startswith("["):
        return json.loads(value)
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{32}", value):
        return str(uuid.UUID(value))
    return value


def opener(server: Server, session: str):
    return server._opener(session)


def ask_for_export(server: Server, session: str, slug: str, fmt: str) -> int:
    """Press the Export button as htmx does: POST the form with the page's CSRF token."""
    browser = opener(server, session)
    page = browser.open(f"{server.base}/rooms/{slug}/", timeout=10).read().decode()
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert found is not None, "the room page has no CSRF token"
    token = found[1]
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "format": fmt}).encode()
    browser.addheaders = [("HX-Request", "true")]
    return browser.open(f"{server.base}/rooms/{slug}/export/", data=data, timeout=10).status


def download(server: Server, session: str, export_id: str) -> tuple[int, bytes]:
    try:
        response = opener(server, session).open(f"{server.base}/exports/{export_id}/", timeout=10)
    except urllib.error.HTTPError as error:
        return error.code, b""
    return response.status, response.read()


class UserPage:
    """A page that is not a room (`/ws/me/`): collects every frame."""

    def __init__(self, server: Server, session: str) -> None:
        self.server, self.session = server, session
        self.frames: asyncio.Queue[Fragment] = asyncio.Queue()

    async def connect(self) -> UserPage:
        headers = {"Origin": self.server.base, "Cookie": f"sessionid={self.session}"}
        url = f"ws://127.0.0.1:{self.server.port}/ws/me/"
        self.ws = await connect(url, additional_headers=headers, open_timeout=10)
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for text in self.ws:
                if isinstance(text, str):  # the site sends text frames only
                    await self.frames.put(Fragment(text))

    async def wait_for(self, condition, timeout: float = 20.0) -> Fragment:
        async with asyncio.timeout(timeout):
            while True:
                fragment = await self.frames.get()
                if condition(fragment):
                    return fragment

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


def bell(fragment: Fragment) -> str | None:
    if not fragment.has_target("bell"):
        return None
    return fragment.target("bell").select(".count")[0].get_text()


def export_state(fragment: Fragment, room_id: int) -> str | None:
    """ "progress:N/M" or "done" for a pushed export control, None for other frames."""
    if not fragment.has_target(f"export-{room_id}"):
        return None
    control = fragment.target(f"export-{room_id}")
    progress = control.select("progress")
    if progress:
        return f"progress:{progress[0]['value']}/{progress[0]['max']}"
    return "done" if control.select(".export-ready a") else "other"


def wait_until(condition, timeout: float = 60.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


async def test_export_end_to_end_with_progress_on_the_requesting_users_pages(jobs_site, layer):
    site = jobs_site
    seed = site.seed()
    room_id = int(
        site.manage("shell", "-c", MESSAGES.format(slug=seed["room"], count=20_000)).split()[-1]
    )
    server = site.start_server()
    site.start_worker("w1")
    alice_room = await LiveClient(server, seed["room"], seed["alice"]).connect()
    alice_tab = await UserPage(server, seed["alice"]).connect()
    bob_page = await UserPage(server, seed["bob"]).connect()
    await asyncio.sleep(0.5)  # the relay has started (with the first connection)

    assert ask_for_export(server, seed["alice"], seed["room"], "json") == 200
    states = []
    while not states or states[-1] != "done":
        fragment = await alice_room.wait_for(lambda f: export_state(f, room_id), timeout=60)
        states.append(export_state(fragment, room_id))
    assert states[0] == "progress:0/20000"
    assert len(states) >= 3  # the bar moved on the way
    # The finished export lands in the inbox, live on another tab, and the bell rings there.
    item = await alice_tab.wait_for(lambda f: f.has_target("inbox"))
    assert item.target("inbox").select("li a")[0].get_text() == "Your export of Lobby is ready."
    if bell(item) != "1":  # the bell's swap may share the inbox item's frame, or follow it
        await alice_tab.wait_for(lambda f: bell(f) == "1")

    [(export_id, state)] = query(site, "SELECT id::text, state FROM rooms_export")
    assert state == "done"
    status, body = download(server, seed["alice"], export_id)
    exported = json.loads(body)
    stored = query(
        site, "SELECT seq, body FROM rooms_message WHERE room_id=%s ORDER BY seq", room_id
    )
    assert status == 200
    assert [(m["seq"], m["body"]) for m in exported["messages"]] == stored
    assert download(server, seed["bob"], export_id)[0] == 404
    # Bob's page heard nothing of alice's export.
    assert all(export_state(f, room_id) is None for f in drain(bob_page.frames))
    for page in (alice_room, alice_tab, bob_page):
        await page.close()


def drain(frames: asyncio.Queue) -> list[Fragment]:
    out = []
    while not frames.empty():
        out.append(frames.get_nowait())
    return out


# Enough messages that the export is still running when the test sees its first progress.
KILLED_EXPORT_MESSAGES = 100_000


async def test_a_worker_killed_mid_export_is_replaced_and_the_export_finishes_once(any_site):
    site = any_site
    site.env["ROOMCAST_EXPORT_PROGRESS_INTERVAL"] = "0.05"  # progress shows up early
    seed = site.seed()
    count = KILLED_EXPORT_MESSAGES
    room_id = int(
        site.manage("shell", "-c", MESSAGES.format(slug=seed["room"], count=count)).split()[-1]
    )
    server = site.start_server()
    doomed = site.start_worker("doomed")
    assert ask_for_export(server, seed["alice"], seed["room"], "md") == 200

    # Kill the worker once it has written part of the file.
    def partway():
        rows = query(site, "SELECT done, total FROM rooms_export WHERE state='running'")
        return rows and 0 < rows[0][0] < rows[0][1]

    wait_until(partway, every=0.02)
    doomed.kill()  # SIGKILL: its job stays "running" until its lease runs out
    site.start_worker("successor")
    wait_until(lambda: query(site, "SELECT 1 FROM rooms_export WHERE state='done'"), timeout=120)
    # The job is recorded as finished just after it marks its export done.
    finished = "SELECT 1 FROM django_tasks_database_dbtaskresult WHERE status <> 'RUNNING'"
    wait_until(lambda: query(site, finished), timeout=30)

    [(status, worker_ids)] = query(
        site, "SELECT status, worker_ids FROM django_tasks_database_dbtaskresult"
    )
    assert (status, worker_ids) == ("SUCCESSFUL", ["doomed", "successor"])
    notes = query(site, "SELECT kind FROM rooms_notification")
    assert notes == [("export",)]
    [(export_id,)] = query(site, "SELECT id::text FROM rooms_export")
    files = sorted(p.name for p in Path(site.env["ROOMCAST_EXPORT_DIR"]).iterdir())
    assert files == [f"{export_id}.md"]
    status, body = download(server, seed["alice"], export_id)
    assert body.decode().count("**alice**") == count
    assert room_id > 0


async def test_two_workers_run_fifty_jobs_each_exactly_once(jobs_site):
    site = jobs_site
    site.seed()
    site.manage("shell", "-c", "from rooms.tasks import ping\nfor n in range(50): ping.enqueue(n)")
    site.start_worker("one"), site.start_worker("two")
    done = "SELECT count(*) FROM django_tasks_database_dbtaskresult WHERE status='SUCCESSFUL'"
    wait_until(lambda: query(site, done)[0][0] == 50)
    rows = query(site, "SELECT return_value, worker_ids FROM django_tasks_database_dbtaskresult")
    assert sorted(value for value, _ in rows) == list(range(50))
    assert all(len(ids) == 1 for _, ids in rows)  # each claimed (and run) once
    assert {ids[0] for _, ids in rows} == {"one", "two"}


def readiness(server: Server) -> tuple[int, dict]:
    """/readyz's status code and answer."""
    try:
        response = urllib.request.urlopen(f"{server.base}/readyz", timeout=10)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    return response.status, json.loads(response.read())


def test_readyz_sees_a_running_worker_and_not_one_that_stopped(jobs_site):
    site = jobs_site
    site.seed()
    server = site.start_server()
    assert readiness(server)[1]["checks"]["workers"] == "fail"
    worker = site.start_worker("w1")
    assert wait_until(lambda: readiness(server)[0] == 200, every=0.2)
    assert readiness(server)[1]["checks"] == {"database": "ok", "redis": "ok", "workers": "ok"}
    worker.kill(signal.SIGTERM)  # a clean stop removes its heartbeat at once
    assert readiness(server) == (
        503,
        {"status": "fail", "checks": {"database": "ok", "redis": "ok", "workers": "fail"}},
    )


# The write layer notifies the mentioned users itself (and schedules the digest).
DIGEST = """
from django.contrib.auth import get_user_model
from rooms import actions
from rooms.models import Room
users = get_user_model().objects
for name in ("bob", "carol"):
    users.filter(username=name).update(email=name + "@example.com")
room = Room.objects.get(slug="{slug}")
alice = users.get(username="alice")
for text in ("first @bob @carol", "second @bob @carol"):
    actions.post_message(room, alice, text)
"""


async def test_digest_goes_once_after_the_quiet_period_and_not_to_who_was_online(jobs_site):
    site = jobs_site
    seed = site.seed()
    server = site.start_server()
    site.start_worker("w1")
    carol = await LiveClient(server, seed["room"], seed["carol"]).connect()  # carol is here
    await asyncio.sleep(0.5)
    site.manage("shell", "-c", DIGEST.format(slug=seed["room"]))
    mail = Path(site.env["EMAIL_FILE_PATH"])
    wait_until(lambda: mail.exists() and any(mail.iterdir()), timeout=30)
    await asyncio.sleep(3)  # longer than the quiet period again: nothing more goes out
    emails = [p.read_text() for p in mail.iterdir()]
    assert len(emails) == 1
    assert "To: bob@example.com" in emails[0]
    assert "first @bob @carol" in emails[0] and "second @bob @carol" in emails[0]
    await carol.close()


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_serve_runs_a_worker_beside_the_server_and_stopping_it_stops_both(
    sqlite_site, tmp_path, stop
):
    """`make run`'s command: Ctrl-C in a terminal (the whole process group), or SIGTERM
    from a process manager (serve alone)."""
    import os

    from tests.integration.servers import free_port, wait_for_port

    site = sqlite_site
    site.manage("migrate", "--no-input", "-v0")  # no users or rooms needed
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    serve = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=site.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port)
        # The worker is up once its heartbeat is written (that it runs jobs is tested above).
        workers = "SELECT count(*) FROM rooms_workerheartbeat"
        wait_until(lambda: query(site, workers)[0][0] == 1, timeout=30)
        children = subprocess.run(
            ["pgrep", "-P", str(serve.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert len(children) == 2  # daphne and one worker
        if stop == "ctrl-c":
            os.killpg(serve.pid, signal.SIGINT)
        else:
            serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
        for pid in children:
            assert not Path(f"/proc/{pid}").exists()
        assert query(site, workers)[0][0] == 0  # the worker stopped cleanly
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()
