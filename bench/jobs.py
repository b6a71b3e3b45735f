"""Background jobs: throughput through 1 and 4 worker processes, and the time from a job's
end to a user's page showing what it pushed.

    .venv/bin/python bench/jobs.py                    # SQLite + in-memory layer (database relay)
    .venv/bin/python bench/jobs.py --jobs 500 \\
        --database-url postgres://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/0          # PostgreSQL (a fresh database), Redis

Throughput is measured from the database's own timestamps (first job started to last job
finished), so process start-up is not counted. Latency: a job (`rooms.tasks.stamp`) pushes
the wall-clock time it ends at to alice's page (a `/ws/me/` socket); the client subtracts it
from the time the frame arrives. Writes results/jobs-<database>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")

import django  # noqa: E402

django.setup()

from websockets.asyncio.client import connect  # noqa: E402

from rooms.testing import Fragment  # noqa: E402
from tests.integration.servers import Database, Site  # noqa: E402

ENQUEUE = "from rooms.tasks import ping\nfor n in range({n}): ping.enqueue(n)"
SPAN = """
from django.db.models import Max, Min
from django_tasks_db.models import DBTaskResult
done = DBTaskResult.objects.filter(status="SUCCESSFUL")
span = done.aggregate(a=Min("started_at"), b=Max("finished_at"))
print(done.count(), (span["b"] - span["a"]).total_seconds() if span["a"] else 0)
"""


def make_site(args, tmp: Path, name: str) -> tuple[Site, Database | None]:
    if args.database_url:
        database = Database(args.database_url)
        database.create()
        site = Site(database.url, args.redis_url or "")
    else:
        database = None
        site = Site(f"sqlite:///{tmp / (name + '.sqlite3')}", args.redis_url or "")
    if not args.redis_url:
        site.env.pop("REDIS_URL")
    site.env["ROOMCAST_RELAY_INTERVAL"] = str(args.relay_interval)
    return site, database


def start_workers(site: Site, count: int, tmp: Path) -> list:
    import subprocess

    logs = [open(tmp / f"worker-{n}.log", "w") for n in range(count)]  # noqa: SIM115
    return [
        subprocess.Popen(
            [sys.executable, "manage.py", "roomcast_worker", "--interval", "0.05"],
            cwd=ROOT,
            env=site.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]


def stop(processes: list) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)


def finished(site: Site) -> int:
    """How many jobs have succeeded (read straight from the database: no process to start)."""
    sql = "SELECT count(*) FROM django_tasks_database_dbtaskresult WHERE status='SUCCESSFUL'"
    url = site.env["DATABASE_URL"]
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return int(conn.execute(sql).fetchone()[0])
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None  # count(*) always answers one row
        return int(row[0])


def throughput(args, tmp: Path, workers: int) -> dict:
    site, database = make_site(args, tmp, f"throughput-{workers}")
    try:
        site.seed()
        site.manage("shell", "-c", ENQUEUE.format(n=args.jobs))
        processes = start_workers(site, workers, tmp)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and finished(site) < args.jobs:
            time.sleep(0.5)
        stop(processes)
        count, span = site.manage("shell", "-c", SPAN).split()[-2:]
        return {"workers": workers, "jobs": int(count), "seconds": float(span),
                "jobs_per_s": round(int(count) / float(span), 1)}  # fmt: skip
    finally:
        site.stop()
        if database:
            database.drop()


async def latency(args, tmp: Path) -> dict:
    site, database = make_site(args, tmp, "latency")
    try:
        seed = site.seed()
        alice = int(site.manage("shell", "-c", ALICE).split()[-1])
        server = site.start_server()
        processes = start_workers(site, 1, tmp)
        headers = {"Origin": server.base, "Cookie": f"sessionid={seed['alice']}"}
        url = f"ws://127.0.0.1:{server.port}/ws/me/"
        samples: list[float] = []
        async with connect(url, additional_headers=headers) as ws:
            await asyncio.sleep(1.0)
            # One process enqueues every sample, a job at a time, while this loop reads:
            # the arrival time is taken as each frame comes in.
            script = STAMPS.format(user=alice, n=args.samples)
            enqueuer = asyncio.create_task(asyncio.to_thread(site.manage, "shell", "-c", script))
            async with asyncio.timeout(60 + args.samples):
                while len(samples) < args.samples:
                    text = await ws.recv()
                    arrived = time.time()
                    if not isinstance(text, str):
                        continue  # the site sends text frames only
                    fragment = Fragment(text)
                    if fragment.has_target("toasts"):
                        sent = float(fragment.target("toasts").text())
                        samples.append((arrived - sent) * 1000)
            await enqueuer
        stop(processes)
        samples.sort()
        return {
            "samples": len(samples),
            "p50_ms": round(statistics.median(samples), 1),
            "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 1),
            "max_ms": round(samples[-1], 1),
            "relay_interval_s": args.relay_interval if not args.redis_url else None,
        }
    finally:
        site.stop()
        if database:
            database.drop()


STAMPS = "import time\nfrom rooms.tasks import stamp\n"
STAMPS += "for _ in range({n}):\n    stamp.enqueue({user})\n    time.sleep(0.5)"

ALICE = "from django.contrib.auth import get_user_model\n"
ALICE += "print(get_user_model().objects.get(username='alice').pk)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--database-url", default="", help="PostgreSQL server (default SQLite)")
    parser.add_argument("--redis-url", default="", help="Redis layer (default in-memory + relay)")
    parser.add_argument("--relay-interval", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        results = {
            "database": "postgresql" if args.database_url else "sqlite",
            "layer": "redis" if args.redis_url else "in-memory + database relay",
            "throughput": [throughput(args, tmp, n) for n in (1, 4)],
            "latency": asyncio.run(latency(args, tmp)),
        }
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results" / f"jobs-{results['database']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
