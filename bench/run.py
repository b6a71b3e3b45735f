"""`make bench`: Roomcast's fan-out against a tutorial-style Channels consumer and a bare ASGI
broadcast, measured in one run; prints one table with the targets of issue 3 and writes JSON
and an SVG chart to bench/results/.

Every scenario starts a fresh server (daphne; uvicorn too for the large room when it is
installed) pinned to core 0, and drives it with bench/loadgen.py, real WebSocket clients in
their own process pinned to core 1. `--quick` runs small rooms for a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOADGEN = ROOT / "bench" / "loadgen.py"
SERVER_CPU, CLIENT_CPU = 0, 1
SENDERS = 4
# The closed loop keeps about MAX_LAG seconds of work in flight (at the rate delivered so far),
# between MIN_WINDOW and WINDOW messages: deep enough that the fastest server never idles,
# short enough that the slowest drains quickly at the end.
WINDOW, MIN_WINDOW, MAX_LAG = 64, 4, 1.0
# A core busier than its process by more than this ran something else too (a noisy result).
NOISE = 0.12
# Roomcast's message body: "m<index> <time> " and this much padding, a ~690-byte frame.
ROOMCAST_PAD = 300
# What `make run` and the README's production command give daphne.
DAPHNE_ARGS = ["--ping-interval", "10", "--ping-timeout", "20"]

SEED = """
import json
from importlib import import_module
from django.conf import settings
from django.contrib.auth import get_user_model
from rooms.models import Room

SessionStore = import_module(settings.SESSION_ENGINE).SessionStore
cookies = []
for n in range(%(senders)d):
    user = get_user_model().objects.create_user(f"bench{n}", password="x")
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    cookies.append(f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
rooms = [Room.objects.create(title=f"bench {n}").slug for n in range(%(rooms)d)]
print(json.dumps({"cookies": cookies, "rooms": rooms}))
"""

LABELS = {
    "bare": "bare ASGI",
    "roomcast": "Roomcast",
    "roomcast+redis": "Roomcast, Redis layer",
    "tutorial": "tutorial consumer",
}


@dataclass
class Plan:
    """Room sizes and durations of one run."""

    quick: bool
    small: int
    large: int
    idle: int
    seconds: float
    latency_messages: int
    hold: float
    runners: list[str] = field(default_factory=lambda: ["daphne"])

    @classmethod
    def make(cls, quick: bool, uvicorn: bool) -> Plan:
        if quick:
            return cls(True, 50, 200, idle=300, seconds=1.5, latency_messages=15, hold=1)
        runners = ["daphne", "uvicorn"] if uvicorn else ["daphne"]
        return cls(False, 100, 1000, 2000, seconds=8, latency_messages=100, hold=2, runners=runners)


# Processes ---------------------------------------------------------------------------------


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


def pinned(cpu: int):
    """A preexec_fn that pins the child to `cpu`, where that is allowed."""

    def pin() -> None:
        if can_pin():
            os.sched_setaffinity(0, {cpu})

    return pin


def proc_status(pid: int, field: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return line.split(":", 1)[1].strip()
    return ""


def rss_kib(pid: int) -> int:
    value = proc_status(pid, "VmRSS")
    return int(value.split()[0]) if value else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


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


def machine_busy(seconds: float = 1.0) -> dict[int, float]:
    """Each core's busy share over a moment: other work running beside the benchmark."""
    before = core_times()
    time.sleep(seconds)
    return {core: busy_since(before, core) for core in before}


def disturbed(row: dict) -> bool:
    """Whether something besides the server and the load generator used their cores."""
    pairs = [("server_core_busy", "server_cpu"), ("loadgen_core_busy", "loadgen_cpu")]
    return any(
        row.get(core) is not None and row.get(own) is not None and row[core] - row[own] > NOISE
        for core, own in pairs
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerError(Exception):
    """A server that did not start, with the tail of its log."""


@dataclass
class Server:
    """One running server process and how to reach its room."""

    kind: str
    runner: str
    process: subprocess.Popen
    url: str
    protocol: str
    cookies: list[str]
    log: Path

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, port: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.kind} exited with {self.process.returncode}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                time.sleep(0.3)  # let it finish starting before the first wave of sockets
                return
            time.sleep(0.05)
        raise ServerError(f"{self.kind} did not listen within {seconds:.0f} s")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class Servers:
    """Starts each kind of server on a free port, pinned to the server core."""

    def __init__(self, tmp: Path, redis_url: str | None) -> None:
        self.tmp, self.redis_url = tmp, redis_url
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROOMCAST_"))}
        base.pop("REDIS_URL", None)
        base.pop("DATABASE_URL", None)
        self.base_env = base
        self.roomcast_env = {
            **base,
            "DJANGO_SETTINGS_MODULE": "site_config.settings",
            "DATABASE_URL": f"sqlite:///{tmp / 'roomcast-bench.sqlite3'}",
            "DJANGO_SECRET_KEY": "bench",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_DEBUG": "0",
            "DJANGO_SSL_REDIRECT": "0",
            "DJANGO_SECURE_COOKIES": "0",
            # The benchmark floods on purpose: no rate limit or socket cap may refuse it.
            "ROOMCAST_POST_RATE_LIMIT": "1000000000",
            "ROOMCAST_MAX_SOCKETS_PER_USER": "1000000",
        }
        self.manage("migrate", "--no-input", "-v0")
        made = json.loads(self.manage("shell", "-c", SEED % {"senders": SENDERS, "rooms": 60}))
        self.cookies, self.rooms = made["cookies"], iter(made["rooms"])

    def manage(self, *args: str) -> str:
        """Run a Roomcast management command; its last line of output."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.roomcast_env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            tail = "\n".join(done.stderr.strip().splitlines()[-12:])
            raise ServerError(f"manage.py {args[0]} failed:\n{tail}")
        return (done.stdout.strip().splitlines() or [""])[-1]

    def app(self, kind: str, port: int) -> tuple[dict, str, str, str, list[str]]:
        """Environment, ASGI app, socket path, client protocol and sender cookies of a kind."""
        if kind == "tutorial":
            env = {**self.base_env, "DJANGO_SETTINGS_MODULE": "bench.baseline_settings"}
            return env, "bench.baseline_app:application", "/ws/chat/bench/", "tutorial", []
        if kind == "bare":
            return self.base_env, "bench.bare_app:application", "/ws/", "bare", []
        env = self.roomcast_env
        if kind == "roomcast+redis":
            prefix = f"roomcast-bench-{port}"  # this server's keys only
            env = {**env, "REDIS_URL": self.redis_url, "ROOMCAST_REDIS_PREFIX": prefix}
        path = f"/ws/rooms/{next(self.rooms)}/"  # a new, empty room for every server
        return env, "site_config.asgi:application", path, "roomcast", self.cookies

    def start(self, kind: str, runner: str = "daphne") -> Server:
        port = free_port()
        env, app, path, protocol, cookies = self.app(kind, port)
        if runner == "uvicorn":
            command = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
            command += ["--lifespan", "off", "--log-level", "warning", app]
        else:
            command = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_ARGS, app]
        log = self.tmp / f"{kind}-{runner}-{port}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, *command],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=out,
                preexec_fn=pinned(SERVER_CPU),
            )
        url = f"ws://127.0.0.1:{port}{path}"
        server = Server(kind, runner, process, url, protocol, cookies, log)
        try:
            server.wait_ready(port)
        except ServerError as error:
            server.stop()
            raise ServerError(f"{error}; its log:\n{server.log_tail()}") from None
        return server


# Scenarios ---------------------------------------------------------------------------------


def drive(server: Server, mode: str, hold: float = 0, **options) -> dict:
    """Run the load generator against `server`; add the server's CPU and memory figures."""
    loadgen_mode = "idle" if mode == "memory" else mode
    args = [sys.executable, str(LOADGEN), loadgen_mode, "--url", server.url]
    args += ["--protocol", server.protocol]
    for cookie in server.cookies:
        args += ["--cookie", cookie]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    pid = server.process.pid
    with tempfile.TemporaryFile("w+") as errors:
        client = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            preexec_fn=pinned(CLIENT_CPU),
        )
        figures: dict = {"server_cpus": proc_status(pid, "Cpus_allowed_list")}
        figures["loadgen_cpus"] = proc_status(client.pid, "Cpus_allowed_list")
        lines, mark = [], None
        for line in client.stdout:
            if line.strip() != "MARK":
                lines.append(line)
                continue
            # The measured part starts: the sockets are open (and synced).
            mark = cpu_seconds(pid), time.perf_counter(), core_times()
            figures["rss_kib_at_mark"] = rss_kib(pid)
            if hold:
                time.sleep(hold)
                figures["rss_kib_held"] = rss_kib(pid)
                client.stdin.close()
        if mark is not None:  # how busy the server and each core were while measured
            figures["server_cpu"] = (cpu_seconds(pid) - mark[0]) / (time.perf_counter() - mark[1])
            figures["server_core_busy"] = busy_since(mark[2], SERVER_CPU)
            figures["loadgen_core_busy"] = busy_since(mark[2], CLIENT_CPU)
        client.wait()
        errors.seek(0)
        stderr = errors.read()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"error": f"the load generator failed:\n{stderr.strip()[-2000:]}"}
    return {**result, **figures}


def scenario(servers: Servers, kind: str, mode: str, sockets: int, runner="daphne", **options):
    """Start a fresh server, drive it, stop it: one row of results.

    Prints one progress line; a failure comes back as the row's "error" (and is printed with
    the tail of the server's log) instead of stopping the whole run.
    """
    print(f"  {mode:10} {LABELS[kind]:22} {runner:8} {sockets:5} sockets ", end="", flush=True)
    started = time.monotonic()
    row = {"server": kind, "runner": runner, "sockets": sockets}
    log = ""
    try:
        server = servers.start(kind, runner)
    except ServerError as error:
        row["error"] = str(error)
    else:
        try:
            rss_before = rss_kib(server.process.pid)
            row.update(drive(server, mode, receivers=sockets, **options))
            row["rss_kib_before"] = rss_before
            if "rss_kib_held" in row:
                row["kib_per_socket"] = (row["rss_kib_held"] - rss_before) / sockets
        finally:
            server.stop()
        log = server.log_tail()
    row["wall_s"] = round(time.monotonic() - started, 1)
    if row.get("error"):
        print(f"FAILED ({row['wall_s']:.0f} s)\n    {row['error']}", flush=True)
        if log:
            print("    server log:\n      " + log.replace("\n", "\n      "), flush=True)
    else:
        print(f"{summary(mode, row)} ({row['wall_s']:.0f} s)", flush=True)
    return row


def summary(mode: str, row: dict) -> str:
    if mode == "throughput":
        return f"{row['frames_per_s']:,.0f} frames/s"
    if mode == "latency":
        return f"p99 {row['p99_ms']:,.1f} ms"
    return f"{row['kib_per_socket']:.1f} KiB per socket"


def throughput(servers: Servers, kind: str, sockets: int, plan: Plan, size: int, runner: str):
    """Frames/s at saturation: the closed loop."""
    return scenario(
        servers,
        kind,
        "throughput",
        sockets,
        runner,
        senders=SENDERS,
        window=WINDOW,
        min_window=MIN_WINDOW,
        max_lag=MAX_LAG,
        seconds=plan.seconds,
        pad=ROOMCAST_PAD,
        size=size,
    )


def latency(servers: Servers, kind: str, plan: Plan, size: int) -> dict:
    """Send to receipt at 10 messages a second into the large room: the open loop."""
    return scenario(
        servers,
        kind,
        "latency",
        plan.large,
        senders=1,
        messages=plan.latency_messages,
        rate=10,
        pad=ROOMCAST_PAD,
        size=size,
    )


def idle(servers: Servers, kind: str, plan: Plan) -> dict:
    """Memory per idle socket: RSS with the sockets open (a moment to settle) minus before."""
    return scenario(servers, kind, "memory", plan.idle, hold=plan.hold)


def redis_available(url: str) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except Exception:
        return False


def versions() -> dict:
    names = ["django", "channels", "channels-redis", "daphne", "twisted", "uvicorn", "websockets"]
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def measure(plan: Plan) -> dict:
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    has_redis = redis_available(redis_url)
    if not has_redis:
        print(f"  (no Redis at {redis_url}: the Redis row is skipped)")
    results: dict = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": platform.node(),
        "python": platform.python_version(),
        "versions": versions(),
        "quick": plan.quick,
        "rooms": {"small": plan.small, "large": plan.large},
        "senders": SENDERS,
        "window": [MIN_WINDOW, WINDOW],
        "max_lag_s": MAX_LAG,
        "seconds": plan.seconds,
        "cores": {"pinned": can_pin(), "server": SERVER_CPU, "loadgen": CLIENT_CPU},
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "redis": redis_url if has_redis else None,
    }
    with tempfile.TemporaryDirectory(prefix="roomcast-bench-") as tmp:
        servers = Servers(Path(tmp), redis_url if has_redis else None)
        # Roomcast first: its frame size sets the others' payload, so all send the same bytes.
        runs = [throughput(servers, "roomcast", plan.small, plan, 0, "daphne")]
        size = results["frame_bytes"] = runs[0].get("frame_bytes") or 700
        for runner in plan.runners:
            kinds = ["roomcast", "bare", "tutorial"]
            if runner == "daphne" and has_redis:
                kinds.append("roomcast+redis")
            for kind in kinds:
                for sockets in (plan.small, plan.large):
                    if runner == "daphne" and kind == "roomcast" and sockets == plan.small:
                        continue  # measured first
                    if sockets == plan.small and (runner != "daphne" or kind == "roomcast+redis"):
                        continue  # the second server and Redis: the large room only
                    runs.append(throughput(servers, kind, sockets, plan, size, runner))
        results["throughput"] = runs
        results["latency"] = [
            latency(servers, k, plan, size) for k in ("roomcast", "tutorial", "bare")
        ]
        results["idle"] = [idle(servers, k, plan) for k in ("roomcast", "tutorial", "bare")]
    return results


# Report ------------------------------------------------------------------------------------


def find(rows: list[dict], server: str, sockets: int | None = None, runner="daphne") -> dict:
    for row in rows:
        same_size = sockets is None or row["sockets"] == sockets
        if row["server"] == server and row["runner"] == runner and same_size:
            return row
    return {}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(r: dict) -> list[dict]:
    """Each target of issue 3: what, measured, target, and PASS, MISS or SKIP."""
    small, large, runs = r["rooms"]["small"], r["rooms"]["large"], r["throughput"]

    def fps(server: str, sockets: int) -> float | None:
        return find(runs, server, sockets).get("frames_per_s")

    def row(what: str, measured, op: str, limit: float, skip: str | None = None, spec=".3f"):
        if skip:
            verdict = "SKIP"
        elif measured is None:
            verdict = "MISS"  # not measured: a failed run counts against the target
        else:
            verdict = "PASS" if (measured >= limit if op == ">=" else measured <= limit) else "MISS"
        target = f"{op} {limit:g}"
        return {
            "what": what,
            "measured": measured,
            "target": target,
            "verdict": verdict,
            "note": skip,
            "format": spec,
        }

    roomcast = fps("roomcast", large)
    latency = find(r["latency"], "roomcast")
    memory = ratio(
        find(r["idle"], "roomcast").get("kib_per_socket"),
        find(r["idle"], "tutorial").get("kib_per_socket"),
    )
    roomcast_runs = [x for x in runs + r["latency"] if x["server"].startswith("roomcast")]
    faults = None
    if all(x.get("lost") is not None for x in roomcast_runs):
        faults = sum(x["lost"] + x["duplicated"] + x["reordered"] for x in roomcast_runs)
    no_redis = None if r["redis"] else "no Redis server"
    over_bare = ratio(roomcast, fps("bare", large))
    over_tutorial = ratio(roomcast, fps("tutorial", large))
    over_small = ratio(roomcast, fps("roomcast", small))
    redis = ratio(fps("roomcast+redis", large), roomcast)
    p99 = latency.get("p99_ms")
    return [
        row(f"Roomcast / bare ASGI, {large} sockets", over_bare, ">=", 0.7),
        row(f"Roomcast / tutorial, {large} sockets", over_tutorial, ">=", 6),
        row(f"Roomcast {large} / {small} sockets", over_small, ">=", 0.85),
        row(f"Roomcast p99 ms, {large * 10} frames/s offered", p99, "<=", 100, spec=".1f"),
        row(f"Roomcast Redis / in-memory, {large} sockets", redis, ">=", 0.8, no_redis),
        row("Roomcast / tutorial memory per idle socket", memory, "<=", 1),
        row("Roomcast lost + duplicated + reordered", faults, "<=", 0, spec="d"),
    ]


def number(value, spec: str = ".0f", width: int = 9) -> str:
    return f"{value:>{width}{spec}}" if isinstance(value, int | float) else f"{'-':>{width}}"


def share(value) -> str:
    return f"{value:>6.0%}" if isinstance(value, int | float) else f"{'-':>6}"


def faults(row: dict) -> str:
    return "".join(number(row.get(k), "d", 6) for k in ("lost", "duplicated", "reordered"))


def table(r: dict) -> str:
    """The one table of a run, as printed."""
    pinning = (
        f"server on core {SERVER_CPU}, load generator on core {CLIENT_CPU}"
        if r["cores"]["pinned"]
        else "NOT pinned (fewer than 2 usable cores)"
    )
    quick = " QUICK RUN: small rooms, short runs." if r["quick"] else ""
    out = [
        f"Roomcast fan-out benchmark, {r['when']} on {r['host']}: {pinning}.{quick}",
        f"Frames of {r['frame_bytes']} bytes. Saturation: {r['senders']} senders for "
        f"{r['seconds']:g} s, closed loop: {r['max_lag_s']:g} s of work in flight, "
        f"{r['window'][0]} to {r['window'][1]} messages.",
        "core 0, core 1: how busy the server's core and the load generator's core were (the "
        "one near 100% is the limit).",
        "",
        f"{'frames/s at saturation':28}{'server':>8}{'sockets':>8}{'frames/s':>9}{'msgs':>7}"
        f"{'core 0':>8}{'core 1':>8}{'lost':>6}{'dup':>6}{'reord':>6}",
    ]
    for row in r["throughput"]:
        line = f"{LABELS[row['server']]:28}{row['runner']:>8}{row['sockets']:>8}"
        if row.get("error"):
            out.append(f"{line}  ERROR: {row['error'].splitlines()[0]}")
            continue
        out.append(
            line
            + number(row["frames_per_s"])
            + number(row["messages"], "d", 7)
            + share(row.get("server_core_busy")).rjust(8)
            + share(row.get("loadgen_core_busy")).rjust(8)
            + faults(row)
        )
    noisy = [
        f"{LABELS[row['server']]} ({row['runner']}, {row['sockets']})"
        for row in r["throughput"]
        if disturbed(row)
    ]
    if noisy:
        out.append(f"NOISY (other processes used the cores): {', '.join(noisy)}")
    out.append("")
    out.append(
        f"{'latency, 10 messages/s':28}{'frames/s offered':>16}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'lost':>6}{'dup':>6}{'reord':>6}"
    )
    for row in r["latency"]:
        line = f"{LABELS[row['server']]:28}{row['sockets'] * 10:>16}"
        if row.get("error"):
            out.append(f"{line}  ERROR: {row['error'].splitlines()[0]}")
            continue
        out.append(
            line
            + number(row["p50_ms"], ".1f")
            + number(row["p99_ms"], ".1f")
            + number(row["max_ms"], ".1f")
            + faults(row)
        )
    out += ["", f"{'memory per idle socket':28}{'sockets':>16}{'KiB':>9}{'RSS MiB':>9}"]
    for row in r["idle"]:
        line = f"{LABELS[row['server']]:28}{row['sockets']:>16}"
        if row.get("error"):
            out.append(f"{line}  ERROR: {row['error'].splitlines()[0]}")
            continue
        rss = row.get("rss_kib_held", 0) / 1024
        out.append(line + number(row["kib_per_socket"], ".1f") + number(rss, ".0f"))
    out += ["", f"{'target (issue 3)':52}{'measured':>10}  {'target':<8}"]
    for t in r["targets"]:
        measured = number(t["measured"], t["format"], 10)
        note = f"  ({t['note']})" if t["note"] else ""
        out.append(f"{t['what']:52}{measured}  {t['target']:<8}  {t['verdict']}{note}")
    return "\n".join(out)


def svg_chart(r: dict) -> str:
    """Frames per second by server and room size, as a horizontal bar chart."""
    order = list(LABELS)
    rows = sorted(
        (x for x in r["throughput"] if x.get("frames_per_s")),
        key=lambda x: (x["runner"] != "daphne", -x["sockets"], order.index(x["server"])),
    )
    top = max((x["frames_per_s"] for x in rows), default=1)
    width, bar, gap, left, top_margin = 720, 20, 6, 250, 46
    height = top_margin + len(rows) * (bar + gap) + 34
    colors = {
        "roomcast": "#2563eb",
        "roomcast+redis": "#60a5fa",
        "tutorial": "#9ca3af",
        "bare": "#111827",
    }
    title = "Frames delivered per second, server on one core"
    if r["quick"]:
        title += " (quick run: small rooms)"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">{title}</text>',
        f'<text x="10" y="37" fill="#4b5563">{r["frame_bytes"]}-byte frames; one run, '
        f"{r['when']}; compare bars within one chart</text>",
    ]
    for i, x in enumerate(rows):
        y = top_margin + i * (bar + gap)
        w = (width - left - 90) * x["frames_per_s"] / top
        label = f"{LABELS[x['server']]}, {x['sockets']:,} sockets"
        if x["runner"] != "daphne":
            label += f" ({x['runner']})"
        parts += [
            f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{label}</text>',
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colors[x["server"]]}">'
            f"<title>{x['frames_per_s']:,.0f} frames/s</title></rect>",
            f'<text x="{left + w + 6:.1f}" y="{y + 14}">{x["frames_per_s"]:,.0f}</text>',
        ]
    footer = top_margin + len(rows) * (bar + gap) + 18
    summary = "; ".join(
        f"{t['what']}: {t['measured']:{t['format']}} ({t['verdict']})"
        for t in r["targets"][:3]
        if t["measured"] is not None
    )
    parts.append(f'<text x="10" y="{footer}" fill="#4b5563" font-size="11">{summary}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small rooms, short runs (~1 min)")
    parser.add_argument("--no-uvicorn", action="store_true", help="daphne only")
    args = parser.parse_args()
    has_uvicorn = importlib.util.find_spec("uvicorn") is not None
    plan = Plan.make(args.quick, uvicorn=has_uvicorn and not args.no_uvicorn)
    limit = raise_open_files()
    if limit < plan.idle + 100:
        sys.exit(f"bench: {plan.idle} sockets need more open files than the limit ({limit})")
    if not plan.quick and not has_uvicorn:
        print("  (uvicorn is not installed: its rows are skipped)")
    busy = machine_busy()
    if max(busy.values(), default=0) > NOISE:
        shares = ", ".join(f"core {core} {share:.0%}" for core, share in sorted(busy.items()))
        print(f"  (the machine is not idle: {shares} busy before starting; expect noise)")
    started = time.monotonic()
    print(f"Measuring, each scenario on a fresh server{' (quick)' if plan.quick else ''}:")
    try:
        results = measure(plan)
        results["busy_before"] = busy
    except ServerError as error:
        sys.exit(f"\nbench: Roomcast could not be set up, so nothing was measured.\n{error}")
    results["targets"] = targets(results)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "quick" if plan.quick else "latest"
    write(RESULTS / f"{name}.json", json.dumps(results, indent=2) + "\n")
    write(RESULTS / f"{name}.svg", svg_chart(results))
    print("\n" + table(results))
    print(
        f"\nWrote bench/results/{name}.json and bench/results/{name}.svg "
        f"in {results['elapsed_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
