"""The benchmark's processes: servers on daphne, uvicorn or granian pinned to the server core,
a private Redis, the seeded databases, and what /proc says about CPU and memory.

Used by bench/run.py; nothing here measures, it only starts, stops and reads processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, CLIENT_CPU = 0, 1
SENDERS = 4
# What `make run` and the README's production command give daphne.
DAPHNE_ARGS = ["--ping-interval", "10", "--ping-timeout", "20"]
RUNNERS = ("daphne", "uvicorn", "granian")
# The database the multi-process scenario shares (brief: rc_bench), and the Redis prefix.
PG_URL = "postgres://postgres@127.0.0.1:5432/rc_bench"
REDIS_PREFIX = "rc_bench"

SEED = """
import json
from importlib import import_module
from django.conf import settings
from django.contrib.auth import get_user_model
from rooms.models import Room

SessionStore = import_module(settings.SESSION_ENGINE).SessionStore
cookies = []
for n in range(%(senders)d):
    user, made = get_user_model().objects.get_or_create(username=f"bench{n}")
    if made:
        user.set_password("x")
        user.save()
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    cookies.append(f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
token = "%(token)s"
rooms = [Room(title=f"bench {token} {n}", slug=f"bench-{token}-{n}") for n in range(%(rooms)d)]
Room.objects.bulk_create(rooms, batch_size=500)
limit = getattr(settings, "ROOMCAST_OUTBOX_LIMIT", None)
print(json.dumps({"cookies": cookies, "rooms": [r.slug for r in rooms], "outbox_limit": limit}))
"""

ACCESS_LINE = re.compile(r'"(WSCONNECTING|WSCONNECT|WSDISCONNECT|WSREJECT|GET) [^"]*"')

LABELS = {
    "bare": "bare ASGI",
    "roomcast": "Roomcast",
    "roomcast+redis": "Roomcast, Redis layer",
    "roomcast+pg": "Roomcast, PostgreSQL+Redis",
    "tutorial": "tutorial consumer",
}


# /proc ---------------------------------------------------------------------------------------


def raise_open_files() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; children (servers, clients) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def can_pin() -> bool:
    """Two separate cores available to this process (and permission to use them)."""
    return hasattr(os, "sched_setaffinity") and {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0)


def pinned(cpu: int) -> Callable[[], None]:
    """A preexec_fn that pins the child (and what it forks) to `cpu`, where that is allowed."""

    def pin() -> None:
        if can_pin():
            os.sched_setaffinity(0, {cpu})

    return pin


def proc_status(pid: int, name: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return line.split(":", 1)[1].strip()
    return ""


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (granian serves from a worker process it forks)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def rss_kib(pids: list[int]) -> int:
    """Resident memory of these processes together, KiB."""
    total = 0
    for pid in pids:
        value = proc_status(pid, "VmRSS")
        total += int(value.split()[0]) if value else 0
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes together, from /proc/<pid>/stat."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def send_queue_kib(ports: set[int]) -> int:
    """Bytes the kernel holds unsent on the established sockets of these local ports, KiB.

    What a client does not read waits here first (up to about half of tcp_wmem's maximum
    per socket), before the server process buffers any of it.
    """
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if fields[3] == "01" and port in ports:  # 01: ESTABLISHED
                    total += int(fields[4].split(":")[0], 16)
    return total // 1024


def core_times() -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks of each core so far, from /proc/stat; iowait counts as idle.

    The server's own CPU time misses the kernel's work for it (loopback TCP in softirq) and
    other processes; a core's busy share says whether that core was the bottleneck.
    """
    cores = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *ticks = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                values = [int(t) for t in ticks[:8]]
                idle = values[3] + values[4]
                cores[int(name[3:])] = (sum(values) - idle, sum(values))
    return cores


def busy_since(before: dict[int, tuple[int, int]], core: int) -> float | None:
    after = core_times()
    if core not in before or core not in after:
        return None
    busy, total = (a - b for a, b in zip(after[core], before[core], strict=True))
    return busy / total if total else None


def machine_busy(seconds: float = 1.0) -> dict[int, float | None]:
    """Each core's busy share over a moment: other work running beside the benchmark."""
    before = core_times()
    time.sleep(seconds)
    return {core: busy_since(before, core) for core in before}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"exited with {process.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        time.sleep(0.05)
    raise ServerError(f"did not listen within {seconds:.0f} s")


class ServerError(Exception):
    """A server that did not start, with the tail of its log."""


# Servers ------------------------------------------------------------------------------------


@dataclass
class Server:
    """One running server process (or several serving one room) and how to reach it."""

    kind: str
    runner: str
    processes: list[subprocess.Popen]
    urls: list[str]
    protocol: str
    cookies: list[str]
    logs: list[Path]
    redis: object | None = None

    @property
    def ports(self) -> set[int]:
        return {int(url.split(":")[2].split("/")[0]) for url in self.urls}

    @property
    def pids(self) -> list[int]:
        """Every process serving, forked workers included."""
        return [pid for p in self.processes for pid in process_tree(p.pid)]

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(log_tail(log, lines) for log in self.logs)

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)  # granian's worker too: each server is a group
            process.wait()


@dataclass
class Database:
    """A seeded database: its URL, sender session cookies, and rooms not used yet."""

    url: str
    cookies: list[str]
    rooms: list[str]
    outbox_limit: int | None = None
    taken: int = 0

    def take(self, count: int = 1) -> list[str]:
        """Fresh rooms (a new room per scenario: no history, sequence numbers from 1)."""
        if self.taken + count > len(self.rooms):
            raise ServerError(f"the seeded database has no {count} fresh rooms left")
        rooms = self.rooms[self.taken : self.taken + count]
        self.taken += count
        return rooms


@dataclass
class Servers:
    """Starts each kind of server on free ports, pinned to the server core."""

    tmp: Path
    rooms_needed: int
    redis_url: str | None = None
    postgres: bool = False
    databases: dict[str, Database] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROOMCAST_"))}
        for name in ("REDIS_URL", "DATABASE_URL"):
            base.pop(name, None)
        self.base_env = base
        self.token = f"{int(time.time()):x}{os.getpid():x}"
        self.databases["sqlite"] = self.seed(f"sqlite:///{self.tmp / 'roomcast-bench.sqlite3'}")
        if self.postgres:
            self.databases["pg"] = self.seed(PG_URL, rooms=12)

    def roomcast_env(self, database: str) -> dict[str, str]:
        return {
            **self.base_env,
            "DJANGO_SETTINGS_MODULE": "site_config.settings",
            "DATABASE_URL": database,
            "DJANGO_SECRET_KEY": "bench",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_DEBUG": "0",
            "DJANGO_SSL_REDIRECT": "0",
            "DJANGO_SECURE_COOKIES": "0",
            # The benchmark floods on purpose: no rate limit or socket cap may refuse it.
            "ROOMCAST_POST_RATE_LIMIT": "1000000000",
            "ROOMCAST_MAX_SOCKETS_PER_USER": "1000000",
            "ROOMCAST_FRAME_BURST": "1000000000",
            "ROOMCAST_FRAME_RATE": "1000000000",
            "ROOMCAST_MAX_ANONYMOUS_SOCKETS_PER_ADDRESS": "1000000",
        }

    def seed(self, url: str, rooms: int | None = None) -> Database:
        """Migrate, sign the senders in, create the fresh rooms the plan needs."""
        env = self.roomcast_env(url)
        self.manage(env, "migrate", "--no-input", "-v0")
        count = self.rooms_needed if rooms is None else rooms
        code = SEED % {"senders": SENDERS, "rooms": count, "token": self.token}
        made = json.loads(self.manage(env, "shell", "-c", code))
        return Database(url, made["cookies"], made["rooms"], made["outbox_limit"])

    def manage(self, env: dict[str, str], *args: str) -> str:
        """Run a Roomcast management command; its last line of output."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if done.returncode:
            tail = "\n".join(done.stderr.strip().splitlines()[-12:])
            raise ServerError(f"manage.py {args[0]} failed:\n{tail}")
        return (done.stdout.strip().splitlines() or [""])[-1]

    def app(self, kind: str, rooms: int) -> tuple[dict, str, list[str], str, list[str]]:
        """Environment, ASGI app, socket paths, client protocol and sender cookies of a kind."""
        if kind == "tutorial":
            env = {**self.base_env, "DJANGO_SETTINGS_MODULE": "bench.baseline_settings"}
            paths = [f"/ws/chat/bench{n}/" for n in range(rooms)]
            return env, "bench.baseline_app:application", paths, "tutorial", []
        if kind == "bare":
            return self.base_env, "bench.bare_app:application", ["/ws/"], "bare", []
        database = self.databases["pg" if kind == "roomcast+pg" else "sqlite"]
        env = self.roomcast_env(database.url)
        if kind in ("roomcast+redis", "roomcast+pg"):
            if not self.redis_url:
                raise ServerError("no Redis")
            # This scenario's keys only: the processes of one scenario share them.
            prefix = f"{REDIS_PREFIX}_{self.token}_{database.taken}"
            env = {**env, "REDIS_URL": self.redis_url, "ROOMCAST_REDIS_PREFIX": prefix}
        paths = [f"/ws/rooms/{slug}/" for slug in database.take(rooms)]
        return env, "site_config.asgi:application", paths, "roomcast", database.cookies

    def command(self, runner: str, app: str, port: int) -> list[str]:
        if runner == "uvicorn":
            command = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
            return command + ["--lifespan", "off", "--log-level", "warning", app]
        if runner == "granian":
            # asginl: no lifespan (Channels' router has none); the default backpressure
            # (backlog / workers = 1024 connections) would refuse the large rooms.
            command = ["-m", "granian", "--interface", "asginl", "--host", "127.0.0.1"]
            command += ["--port", str(port), "--workers", "1", "--backlog", "4096"]
            return command + ["--backpressure", "65536", "--log-level", "warning", app]
        return ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_ARGS, app]

    def start(self, kind: str, runner: str = "daphne", processes: int = 1, rooms: int = 1):
        """`processes` servers of `kind` sharing their database and layer, pinned to core 0."""
        env, app, paths, protocol, cookies = self.app(kind, rooms)
        started: list[Any] = []
        logs: list[Any] = []
        urls: list[str] = []
        server = Server(kind, runner, started, urls, protocol, cookies, logs)
        for _ in range(processes):
            port = free_port()
            log = self.tmp / f"{kind}-{runner}-{port}.log"
            logs.append(log)
            with log.open("w") as out:
                started.append(
                    subprocess.Popen(
                        [sys.executable, *self.command(runner, app, port)],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=out,
                        preexec_fn=pinned(SERVER_CPU),
                        start_new_session=True,
                    )
                )
            try:
                wait_for_port(port, started[-1])
            except ServerError as error:
                server.stop()
                raise ServerError(
                    f"{kind} on {runner} {error}; its log:\n{log_tail(log)}"
                ) from None
            # One room on every process (several URLs), or one URL per room (one process).
            urls += [f"ws://127.0.0.1:{port}{path}" for path in paths]
        time.sleep(0.3)  # let it finish starting before the first wave of sockets
        return server


def log_tail(log: Path, lines: int = 15) -> str:
    """The end of a server's log without its access lines (one per socket: they hide errors)."""
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace").splitlines()
        kept = [line for line in text if not ACCESS_LINE.search(line)]
        return "\n".join(kept[-lines:])
    return ""


# Redis -----------------------------------------------------------------------------------------


class PrivateRedis:
    """A Redis of the benchmark's own, pinned to the load generator's core, so that the
    commands a scenario costs can be counted exactly (the machine's Redis serves others too).
    Falls back to `fallback` (counts then include other clients') when redis-server is missing.
    """

    def __init__(self, tmp: Path, fallback: str | None) -> None:
        self.process: subprocess.Popen | None = None
        self.url = fallback
        self.private = False
        binary = shutil.which("redis-server")
        if binary:
            port = free_port()
            self.process = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
                + ["--appendonly", "no", "--dir", str(tmp)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=pinned(CLIENT_CPU),
            )
            try:
                wait_for_port(port, self.process, 10)
                self.url, self.private = f"redis://127.0.0.1:{port}/0", True
            except ServerError:
                self.stop()
        if self.url and not self.ping():
            self.url = None

    def ping(self) -> bool:
        try:
            import redis

            return bool(redis.Redis.from_url(str(self.url), socket_timeout=2).ping())
        except Exception:
            return False

    def commands(self) -> dict[str, int]:
        """Commands processed so far, in total and per command."""
        import redis

        client = redis.Redis.from_url(str(self.url), socket_timeout=2)
        stats = client.info("commandstats")
        counts = {name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items()}
        counts["total"] = int(client.info("stats")["total_commands_processed"])
        return counts

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
