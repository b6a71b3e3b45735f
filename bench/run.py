"""`make bench`: Roomcast against a bare ASGI broadcast and a tutorial-style Channels consumer
on daphne, uvicorn and granian, plus the scale scenarios (two processes, many rooms, a stalled
client), every figure measured in several rounds; prints each target as measured / target /
PASS or MISS and writes JSON and an SVG chart to bench/results/.

Every scenario starts fresh servers pinned to core 0 and drives them with bench/loadgen.py,
real WebSocket clients in their own process pinned to core 1. A round runs every scenario
once; ratios are taken within a round (same minute, same machine state), and each figure's
spread (min / median / max over the rounds) is printed beside it. `--quick` runs small rooms
in one round for a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report  # noqa: E402
from bench.servers import (  # noqa: E402
    CLIENT_CPU,
    LABELS,
    RUNNERS,
    SENDERS,
    SERVER_CPU,
    PrivateRedis,
    Server,
    ServerError,
    Servers,
    busy_since,
    can_pin,
    core_times,
    cpu_seconds,
    machine_busy,
    pinned,
    proc_status,
    raise_open_files,
    rss_kib,
    send_queue_kib,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOADGEN = ROOT / "bench" / "loadgen.py"
# The closed loop keeps about MAX_LAG seconds of work in flight (at the rate delivered so far),
# between MIN_WINDOW and WINDOW messages: deep enough that the fastest server never idles,
# short enough that the slowest drains quickly at the end. Many small rooms need a wider one.
WINDOW, MIN_WINDOW, MAX_LAG = 64, 4, 1.0
ROOMS_WINDOW = 256
# Roomcast's message body: "m<index> <time> " and this much padding, a ~690-byte frame; the
# stalled-client scenario sends ~3.4 kB frames (as in the daphne measurement).
ROOMCAST_PAD, STALL_PAD = 300, 3000


@dataclass(frozen=True)
class Spec:
    """One scenario: what is measured, on which server, with how many sockets."""

    mode: str  # throughput | latency | stall | memory
    kind: str  # a key of LABELS
    sockets: int  # counted sockets (receivers; live ones beside stalled clients)
    runner: str = "daphne"
    processes: int = 1
    rooms: int = 1  # > 1: `sockets` spread over this many rooms, the first of each posts

    @property
    def key(self) -> str:
        return (
            f"{self.mode}/{self.kind}/{self.runner}/{self.sockets}/{self.processes}p/{self.rooms}r"
        )

    def describe(self) -> str:
        where = f"{self.runner}" + (f" x{self.processes}" if self.processes > 1 else "")
        size = f"{self.rooms} rooms of {self.sockets // self.rooms}" if self.rooms > 1 else ""
        return f"{LABELS[self.kind]}, {where}, {size or f'{self.sockets} sockets'}"


@dataclass
class Plan:
    """Room sizes, durations and rounds of one run."""

    quick: bool
    rounds: int
    small: int
    large: int
    idle: int
    seconds: float
    latency_messages: int
    stall_live: int
    stalled: int
    stall_messages: int  # messages without stalled clients, then as many with them
    many_rooms: int
    per_room: int
    hold: float
    runners: tuple[str, ...] = RUNNERS

    STALL_RATE = 50

    @classmethod
    def make(cls, quick: bool, rounds: int | None, runners: tuple[str, ...]) -> Plan:
        if quick:
            return cls(
                True, rounds or 1, 20, 100, 200, seconds=1.0, latency_messages=10,
                stall_live=20, stalled=5, stall_messages=120, many_rooms=30,
                per_room=5, hold=1, runners=runners,
            )  # fmt: skip
        return cls(
            False, rounds or 3, 100, 1000, 1000, seconds=4, latency_messages=60,
            stall_live=100, stalled=20, stall_messages=300, many_rooms=1000,
            per_room=5, hold=2, runners=runners,
        )  # fmt: skip

    def specs(self, redis: bool, postgres: bool) -> list[Spec]:
        """One round's scenarios, in order: each ratio's two sides measured side by side."""
        large = self.large
        specs = [Spec("throughput", "roomcast", self.small)]  # first: it sets the frame size
        for runner in self.runners:
            specs += [Spec("throughput", "roomcast", large, runner)]
            specs += [Spec("throughput", "bare", large, runner)]
            if runner == "daphne":
                specs += [Spec("throughput", "tutorial", large, runner)]
        if redis:
            specs += [Spec("throughput", "roomcast+redis", large)]
        specs += [Spec("latency", "roomcast", large), Spec("latency", "bare", large)]
        specs += [Spec("stall", "roomcast", self.stall_live, r) for r in self.runners]
        if redis and postgres:
            specs += [Spec("throughput", "roomcast+pg", large, processes=n) for n in (1, 2)]
        many = self.many_rooms * self.per_room
        specs += [Spec("throughput", "roomcast", many, rooms=self.many_rooms)]
        if redis:
            specs += [Spec("throughput", "roomcast+redis", many, rooms=self.many_rooms)]
        specs += [Spec("memory", "roomcast", self.idle), Spec("memory", "tutorial", self.idle)]
        return specs

    def rooms_needed(self) -> int:
        """Fresh SQLite rooms for every Roomcast scenario of every round."""
        per_round = sum(s.rooms for s in self.specs(True, False) if s.kind.startswith("roomcast"))
        return per_round * self.rounds + 5


# Driving ---------------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """The servers' RSS every half second while a scenario runs (the stall curve)."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.samples, self.stopped = server, [], threading.Event()
        self.started_at = time.perf_counter()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            at = round(time.perf_counter() - self.started_at, 2)
            self.samples.append((at, rss_kib(self.server.pids)))


def drive(server: Server, redis: PrivateRedis | None, spec: Spec, hold: float = 0, **options):
    """Run the load generator against `server`; add the servers' CPU and memory figures."""
    loadgen_mode = "idle" if spec.mode == "memory" else spec.mode
    args = [sys.executable, str(LOADGEN), loadgen_mode, "--protocol", server.protocol]
    with tempfile.NamedTemporaryFile("w", suffix=".urls", delete=False) as urls:
        urls.write("\n".join(server.urls) + "\n")
    args += ["--urls-file", urls.name]
    if spec.rooms > 1:
        args += ["--per-room", str(spec.sockets // spec.rooms)]
    for cookie in server.cookies:
        args += ["--cookie", cookie]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    pids = server.pids
    figures: dict = {"server_cpus": proc_status(pids[0], "Cpus_allowed_list"), "marks": {}}
    sampler = Sampler(server)
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
        figures["loadgen_cpus"] = proc_status(client.pid, "Cpus_allowed_list")
        lines, first = [], None
        for line in client.stdout:
            if not line.startswith("MARK"):
                lines.append(line)
                continue
            name = line.split()[1] if len(line.split()) > 1 else "start"
            pids = server.pids
            now = (cpu_seconds(pids), time.perf_counter(), core_times())
            at = {"rss_kib": rss_kib(pids), "t": now[1], "sendq_kib": send_queue_kib(server.ports)}
            if redis is not None and redis.url and spec.kind in ("roomcast+redis", "roomcast+pg"):
                at["redis"] = redis.commands()
            figures["marks"][name] = at
            if first is None:
                first = now
                sampler.start()
                if hold:
                    time.sleep(hold)
                    figures["rss_kib_held"] = rss_kib(server.pids)
                    client.stdin.close()
            else:  # how busy the servers and each core were while measured
                elapsed = now[1] - first[1]
                figures["server_cpu"] = (now[0] - first[0]) / elapsed
                figures["server_core_busy"] = busy_since(first[2], SERVER_CPU)
                figures["loadgen_core_busy"] = busy_since(first[2], CLIENT_CPU)
        if first is not None and "server_cpu" not in figures:  # idle: up to the hold's end
            elapsed = time.perf_counter() - first[1]
            figures["server_cpu"] = (cpu_seconds(server.pids) - first[0]) / elapsed
        client.wait()
        sampler.stopped.set()
        errors.seek(0)
        stderr = errors.read()
    os.unlink(urls.name)
    figures["rss_samples"] = sampler.samples
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"error": f"the load generator failed:\n{stderr.strip()[-2000:]}"}
    return {**result, **figures}


def options(spec: Spec, plan: Plan, size: int) -> dict:
    """The load generator's options for a scenario."""
    if spec.mode == "throughput":
        many = spec.rooms > 1
        return {
            "senders": SENDERS,
            "window": ROOMS_WINDOW if many else WINDOW,
            "min_window": 16 if many else MIN_WINDOW,
            "max_lag": MAX_LAG,
            "seconds": plan.seconds,
            "pad": ROOMCAST_PAD,
            "size": size,
            "stall": 20,
        }
    if spec.mode == "latency":
        return {"senders": 1, "messages": plan.latency_messages, "rate": 10}
    if spec.mode == "stall":
        return {
            "senders": SENDERS,
            "warmup": plan.stall_messages // 3,
            "messages": plan.stall_messages,
            "stalled_messages": plan.stall_messages,
            "rate": Plan.STALL_RATE,
            "stalled": plan.stalled,
            "pad": STALL_PAD,
            "timeout": 10,
        }
    return {}


def wave(spec: Spec) -> int:
    """Sockets connecting at once. Connects queue behind the server's one database thread, and
    daphne drops a socket not accepted within 5 s (`--websocket_connect_timeout`): on
    PostgreSQL every query also opens a connection (conn_max_age=0), and 5,000 sockets of many
    rooms keep the queue long, so those come in smaller waves (the server's connect rate, not
    the wave, sets how long filling a room takes).
    """
    if spec.kind == "roomcast+pg":
        return 10
    return 20 if spec.rooms > 1 else 50


def scenario(servers: Servers, redis: PrivateRedis | None, spec: Spec, plan: Plan, size: int):
    """Start fresh servers, drive them, stop them: one row of results.

    Prints one progress line; a failure comes back as the row's "error" (and is printed with
    the tail of the server's log) instead of stopping the whole run.
    """
    print(f"  {spec.mode:10} {spec.describe():52} ", end="", flush=True)
    started = time.monotonic()
    row = {**asdict(spec), "key": spec.key, "server": spec.kind}
    log = ""
    try:
        server = servers.start(spec.kind, spec.runner, spec.processes, spec.rooms)
    except ServerError as error:
        row["error"] = str(error)
    else:
        try:
            rss_before = rss_kib(server.pids)
            opts = options(spec, plan, size)
            if spec.mode in ("latency", "stall"):
                opts["pad"] = opts.get("pad", ROOMCAST_PAD)
                opts["size"] = size
            hold = plan.hold if spec.mode == "memory" else 0
            opts["wave"] = wave(spec)
            row.update(drive(server, redis, spec, hold, receivers=spec.sockets, **opts))
            row["rss_kib_before"] = rss_before
            derive(row, spec)
        finally:
            server.stop()
        log = server.log_tail()
    row["wall_s"] = round(time.monotonic() - started, 1)
    if row.get("error"):
        print(f"FAILED ({row['wall_s']:.0f} s)\n    {row['error']}", flush=True)
        if log:
            print("    server log:\n      " + log.replace("\n", "\n      "), flush=True)
    else:
        print(f"{report.summary(row)} ({row['wall_s']:.0f} s)", flush=True)
    return row


def derive(row: dict, spec: Spec) -> None:
    """Figures computed from the marks: memory growth, Redis commands per message."""
    marks = row.get("marks", {})
    if "rss_kib_held" in row:
        row["kib_per_socket"] = (row["rss_kib_held"] - row["rss_kib_before"]) / spec.sockets
    if spec.mode == "stall" and {"clean", "stalled", "end"} <= set(marks):
        row["growth_clean_kib"] = marks["stalled"]["rss_kib"] - marks["clean"]["rss_kib"]
        row["growth_stalled_kib"] = marks["end"]["rss_kib"] - marks["stalled"]["rss_kib"]
        # After the drain the live sockets' queues are empty: what the kernel still holds is
        # the stalled clients'.
        row["kernel_stalled_kib"] = marks["end"]["sendq_kib"]
    start, end = marks.get("start", {}), marks.get("end", {})
    if "redis" in start and "redis" in end and row.get("messages"):
        delta = {k: end["redis"].get(k, 0) - start["redis"].get(k, 0) for k in end["redis"]}
        row["redis_commands_per_message"] = delta["total"] / row["messages"]
        top = sorted((k for k in delta if k != "total"), key=lambda k: -delta[k])[:6]
        row["redis_top_commands"] = {k: round(delta[k] / row["messages"], 2) for k in top}


def versions() -> dict:
    names = ["django", "channels", "channels-redis", "daphne", "twisted", "uvicorn", "granian"]
    names += ["websockets", "redis", "psycopg"]
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/rc_bench", connect_timeout=3):
            return True
    except Exception:
        return False


def measure(plan: Plan, only: str | None = None) -> dict:
    results: dict = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": platform.node(),
        "python": platform.python_version(),
        "versions": versions(),
        "quick": plan.quick,
        "plan": asdict(plan),
        "senders": SENDERS,
        "window": [MIN_WINDOW, WINDOW],
        "max_lag_s": MAX_LAG,
        "cores": {"pinned": can_pin(), "server": SERVER_CPU, "loadgen": CLIENT_CPU},
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
    with tempfile.TemporaryDirectory(prefix="roomcast-bench-") as tmp:
        redis = PrivateRedis(Path(tmp), os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
        postgres = postgres_available()
        try:
            results["redis"] = redis.url and ("private" if redis.private else redis.url)
            results["postgres"] = postgres
            if not redis.url:
                print("  (no Redis: the Redis, two-process and many-rooms-Redis rows are skipped)")
            if not postgres:
                print("  (no PostgreSQL database rc_bench: the two-process rows are skipped)")
            servers = Servers(Path(tmp), plan.rooms_needed(), redis.url, postgres)
            results["outbox_limit"] = servers.databases["sqlite"].outbox_limit
            specs = plan.specs(bool(redis.url), postgres)
            if only:
                wanted = only.split(",")
                specs = [s for s in specs if any(w in s.key for w in wanted)] or specs[:1]
            rows: list[dict] = []
            size = 0
            for number in range(plan.rounds):
                print(f"Round {number + 1} of {plan.rounds}:", flush=True)
                for spec in specs:
                    row = scenario(servers, redis, spec, plan, size or 700)
                    row["round"] = number
                    rows.append(row)
                    if not size and spec.mode == "throughput":
                        size = row.get("frame_bytes") or 0
            results["frame_bytes"] = size or 700
            results["rows"] = rows
        finally:
            redis.stop()
    return results


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small rooms, one round (~1-2 min)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, --quick 1)")
    parser.add_argument(
        "--runners", default=",".join(RUNNERS), help="servers to compare (default: all three)"
    )
    parser.add_argument(
        "--only",
        help="only the scenarios whose key has one of these comma-separated texts",
    )
    args = parser.parse_args()
    runners = tuple(r for r in args.runners.split(",") if r in RUNNERS) or ("daphne",)
    plan = Plan.make(args.quick, args.rounds, runners)
    limit = raise_open_files()
    needed = max(plan.idle, plan.many_rooms * plan.per_room) + 200
    if limit < needed:
        sys.exit(f"bench: {needed} sockets need more open files than the limit ({limit})")
    busy = machine_busy()
    if max((b or 0 for b in busy.values()), default=0) > report.NOISE:
        shares = ", ".join(f"core {core} {share:.0%}" for core, share in sorted(busy.items()))
        print(f"  (the machine is not idle: {shares} busy before starting; expect noise)")
    started = time.monotonic()
    print(f"Measuring, each scenario on fresh servers{' (quick)' if plan.quick else ''}:")
    try:
        results = measure(plan, args.only)
        results["busy_before"] = busy
    except ServerError as error:
        sys.exit(f"\nbench: Roomcast could not be set up, so nothing was measured.\n{error}")
    results["figures"] = report.figures(results)
    results["targets"] = report.targets(results)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "quick" if plan.quick or args.only or args.rounds == 1 else "latest"
    write(RESULTS / f"{name}.json", json.dumps(results, indent=2) + "\n")
    write(RESULTS / f"{name}.svg", report.svg_chart(results))
    print("\n" + report.table(results))
    print(
        f"\nWrote bench/results/{name}.json and bench/results/{name}.svg "
        f"in {results['elapsed_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
