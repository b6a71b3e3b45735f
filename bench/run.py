"""`make bench`: Roomcast's fan-out against a tutorial-style Channels consumer and a bare ASGI
broadcast, on daphne, in one run; prints one table of ratios and writes JSON and an SVG chart
to bench/results/.

The server of each scenario runs on core 0 (taskset), the load generator (bench/loadgen.py,
real WebSocket clients) on core 1; every scenario starts a fresh server. `--quick` runs small
rooms for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SERVER_CPU, CLIENT_CPU = 0, 1

SEED = """
import json
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from rooms.models import Room

user = get_user_model().objects.create_user("sender", password="x")
session = SessionStore()
session["_auth_user_id"] = str(user.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = user.get_session_auth_hash()
session.create()
rooms = [Room.objects.create(title=f"bench {n}").slug for n in range(40)]
print(json.dumps({"cookie": f"sessionid={session.session_key}", "rooms": rooms}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and os.cpu_count() > 1 else []


class Servers:
    """Starts each kind of server on a free port, pinned to the server core."""

    def __init__(self, tmp: Path, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self.base_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROOMCAST_"))
        }
        self.base_env.pop("REDIS_URL", None)
        self.roomcast_env = {
            **self.base_env,
            "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
            "DJANGO_SECRET_KEY": "bench",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_SSL_REDIRECT": "0",
            "DJANGO_SECURE_COOKIES": "0",
            # The benchmark floods on purpose.
            "ROOMCAST_POST_RATE_LIMIT": "1000000000",
            "ROOMCAST_MAX_SOCKETS_PER_USER": "1000000",
        }
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
            cwd=ROOT, env=self.roomcast_env, check=True,
        )  # fmt: skip
        out = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SEED],
            cwd=ROOT, env=self.roomcast_env, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        seed = json.loads(out.strip().splitlines()[-1])
        self.cookie, self.rooms = seed["cookie"], iter(seed["rooms"])

    def start(self, kind: str):
        """(process, websocket URL, cookie) for a fresh server of this kind."""
        port = free_port()
        env, app, cookie = self.roomcast_env, "site_config.asgi:application", self.cookie
        path = f"/ws/rooms/{next(self.rooms)}/"
        if kind == "roomcast+redis":
            env = {**env, "REDIS_URL": self.redis_url, "ROOMCAST_REDIS_PREFIX": f"bench{port}"}
        elif kind == "tutorial":
            env = {**self.base_env, "DJANGO_SETTINGS_MODULE": "bench.baseline_settings"}
            app, cookie, path = "bench.baseline_app:application", None, "/ws/chat/bench/"
        elif kind == "bare":
            env, app, cookie, path = self.base_env, "bench.bare_app:application", None, "/ws/"
        process = subprocess.Popen(
            [*pinned(SERVER_CPU), sys.executable, "-m", "daphne", "-b", "127.0.0.1",
             "-p", str(port), app],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)
        return process, f"ws://127.0.0.1:{port}{path}", cookie


def loadgen(mode: str, url: str, protocol: str, cookie: str | None, **options) -> dict:
    args = [*pinned(CLIENT_CPU), sys.executable, str(ROOT / "bench" / "loadgen.py"), mode]
    args += ["--url", url, "--protocol", protocol]
    if cookie:
        args += ["--cookie", cookie]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    out = subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def protocol_of(kind: str) -> str:
    return {"tutorial": "tutorial", "bare": "bare"}.get(kind, "roomcast")


def run_throughput(servers: Servers, kind: str, receivers: int, pad: int, seconds: float) -> dict:
    process, url, cookie = servers.start(kind)
    try:
        return loadgen(
            "throughput", url, protocol_of(kind), cookie, receivers=receivers, messages=100000,
            pad=pad, seconds=seconds, window=8, timeout=60,
        )  # fmt: skip
    finally:
        process.kill()


def run_latency(servers: Servers, kind: str, receivers: int, pad: int, messages: int) -> dict:
    process, url, cookie = servers.start(kind)
    try:
        return loadgen(
            "latency", url, protocol_of(kind), cookie, receivers=receivers, messages=messages,
            rate=10, pad=pad, timeout=60,
        )  # fmt: skip
    finally:
        process.kill()


def run_idle(servers: Servers, kind: str, sockets: int) -> dict:
    process, url, cookie = servers.start(kind)
    try:
        time.sleep(1)
        before = rss_kib(process.pid)
        args = [*pinned(CLIENT_CPU), sys.executable, str(ROOT / "bench" / "loadgen.py"), "idle"]
        args += ["--url", url, "--protocol", protocol_of(kind), "--receivers", str(sockets)]
        client = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert client.stdout.readline().strip() == "READY"
        time.sleep(2)
        after = rss_kib(process.pid)
        client.stdin.close()
        client.wait(timeout=30)
        return {"sockets": sockets, "rss_before_kib": before, "rss_after_kib": after,
                "kib_per_socket": (after - before) / sockets}  # fmt: skip
    finally:
        process.kill()


def redis_available(url: str | None) -> bool:
    if not url:
        return False
    try:
        import redis

        return bool(redis.Redis.from_url(url).ping())
    except Exception:
        return False


def measure(args) -> dict:
    small, large = (50, 200) if args.quick else (100, 1000)
    idle_sockets = 300 if args.quick else 2000
    seconds = 3 if args.quick else 8
    latency_messages = 30 if args.quick else 100
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    has_redis = redis_available(redis_url)
    results: dict = {"rooms": {"small": small, "large": large}, "throughput": {}, "latency": {}}
    with tempfile.TemporaryDirectory() as tmp:
        servers = Servers(Path(tmp), redis_url if has_redis else None)
        # Roomcast first: its frame size sets the others' payload, so all send the same bytes.
        probe = run_throughput(servers, "roomcast", 10, 300, 1)
        frame = probe["frame_bytes"] or 700
        pads = {"roomcast": 300, "roomcast+redis": 300}
        pads["tutorial"] = max(0, 300 + frame - 300 - 40 - len('{"message": ""}'))
        pads["bare"] = max(0, 300 + frame - 300 - 40)
        results["frame_bytes"] = frame
        kinds = ["bare", "roomcast", "tutorial"] + (["roomcast+redis"] if has_redis else [])
        for kind in kinds:
            for n in (small, large):
                if kind == "roomcast+redis" and n == small:
                    continue
                print(f"  throughput {kind:15} {n:5} sockets ...", flush=True)
                results["throughput"][f"{kind}@{n}"] = run_throughput(
                    servers, kind, n, pads[kind], seconds
                )
        for kind in ("roomcast", "tutorial", "bare"):
            print(f"  latency    {kind:15} {large:5} sockets, 10 msg/s ...", flush=True)
            results["latency"][kind] = run_latency(
                servers, kind, large, pads[kind], latency_messages
            )
        results["idle"] = {}
        for kind in ("roomcast", "tutorial", "bare"):
            print(f"  memory     {kind:15} {idle_sockets:5} idle sockets ...", flush=True)
            results["idle"][kind] = run_idle(servers, kind, idle_sockets)
    return results


def targets(r: dict) -> list[tuple[str, float, str, bool]]:
    """(what, measured, target, met) for each target of issue 3."""
    small, large = r["rooms"]["small"], r["rooms"]["large"]
    t = {k: v["frames_per_s"] for k, v in r["throughput"].items()}
    rows = [
        (f"Roomcast / bare ASGI, {large} sockets", t[f"roomcast@{large}"] / t[f"bare@{large}"],
         ">= 0.70", t[f"roomcast@{large}"] / t[f"bare@{large}"] >= 0.70),
        (f"Roomcast / tutorial, {large} sockets", t[f"roomcast@{large}"] / t[f"tutorial@{large}"],
         ">= 6.0", t[f"roomcast@{large}"] / t[f"tutorial@{large}"] >= 6.0),
        (f"Roomcast {large} / {small} sockets", t[f"roomcast@{large}"] / t[f"roomcast@{small}"],
         ">= 0.85", t[f"roomcast@{large}"] / t[f"roomcast@{small}"] >= 0.85),
    ]  # fmt: skip
    p99 = r["latency"]["roomcast"]["p99_ms"]
    offered = r["latency"]["roomcast"]["offered_frames_per_s"]
    rows.append((f"Roomcast p99 ms at {offered} frames/s offered", p99, "<= 100", p99 <= 100))
    if f"roomcast+redis@{large}" in t:
        ratio = t[f"roomcast+redis@{large}"] / t[f"roomcast@{large}"]
        rows.append(
            (f"Roomcast Redis / in-memory, {large} sockets", ratio, ">= 0.80", ratio >= 0.8)
        )
    mem = r["idle"]["roomcast"]["kib_per_socket"] / r["idle"]["tutorial"]["kib_per_socket"]
    rows.append(("Roomcast / tutorial memory per idle socket", mem, "<= 1.00", mem <= 1.0))
    runs = [v for k, v in r["throughput"].items() if k.startswith("roomcast")]
    runs += [r["latency"]["roomcast"]]
    bad = sum(v["lost"] + v["duplicated"] + v["reordered"] for v in runs)
    rows.append(("Roomcast messages lost + duplicated + reordered", bad, "== 0", bad == 0))
    return rows


def print_table(r: dict) -> None:
    print(f"\nOne run, {platform.node()}: server on core {SERVER_CPU}, clients on core "
          f"{CLIENT_CPU}; frames of {r['frame_bytes']} bytes\n")  # fmt: skip
    header = f"{'throughput (frames/s)':24}{'sockets':>8}{'frames/s':>11}"
    print(f"{header}{'lost':>6}{'dup':>5}{'reord':>6}")
    for key, v in r["throughput"].items():
        kind, n = key.split("@")
        print(f"{kind:24}{n:>8}{v['frames_per_s']:>11.0f}{v['lost']:>6}{v['duplicated']:>5}"
              f"{v['reordered']:>6}")  # fmt: skip
    print(f"\n{'latency at 10 msg/s':24}{'offered':>8}{'p50 ms':>11}{'p99 ms':>9}{'lost':>6}")
    for kind, v in r["latency"].items():
        print(f"{kind:24}{v['offered_frames_per_s']:>8}{v['p50_ms']:>11.1f}{v['p99_ms']:>9.1f}"
              f"{v['lost']:>6}")  # fmt: skip
    print(f"\n{'memory per idle socket':24}{'sockets':>8}{'KiB':>11}")
    for kind, v in r["idle"].items():
        print(f"{kind:24}{v['sockets']:>8}{v['kib_per_socket']:>11.1f}")
    print(f"\n{'target':52}{'measured':>10}  {'target':>8}")
    for what, value, target, met in targets(r):
        print(f"{what:52}{value:>10.2f}  {target:>8}  {'PASS' if met else 'MISS'}")


def svg_chart(r: dict) -> str:
    """Frames per second by server and room size, as a bar chart."""
    rows = list(r["throughput"].items())
    top = max(v["frames_per_s"] for _, v in rows) or 1
    width, bar_h, gap, left = 640, 22, 8, 190
    height = 40 + len(rows) * (bar_h + gap)
    colors = {"roomcast": "#2563eb", "roomcast+redis": "#60a5fa", "tutorial": "#9ca3af",
              "bare": "#111827"}  # fmt: skip
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<text x="10" y="20" font-size="14" font-weight="bold">Frames delivered per second '
        "(one core, daphne)</text>",
    ]
    for i, (key, v) in enumerate(rows):
        kind, n = key.split("@")
        y = 34 + i * (bar_h + gap)
        w = (width - left - 80) * v["frames_per_s"] / top
        parts.append(f'<text x="10" y="{y + 15}">{kind}, {n} sockets</text>')
        title = f"<title>{v['frames_per_s']:.0f}</title>"
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                     f'fill="{colors[kind]}">{title}</rect>')  # fmt: skip
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}">{v["frames_per_s"]:,.0f}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small rooms, short runs")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("Measuring (each scenario on a fresh server) ...", flush=True)
    results = measure(args)
    results["targets"] = [
        {"what": what, "measured": value, "target": target, "met": met}
        for what, value, target, met in targets(results)
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else "latest"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.svg").write_text(svg_chart(results))
    print_table(results)
    print(f"\nWrote bench/results/{name}.json and bench/results/{name}.svg")


if __name__ == "__main__":
    main()
