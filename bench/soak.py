"""Soak: connect/disconnect churn plus traffic for a number of minutes, then compare the
server's memory, open sockets, group members and presence entries before and after.

    .venv/bin/python bench/soak.py --minutes 10          # writes bench/results/soak.json

It starts its own daphne (SQLite in a temporary file, the in-memory layer; `--redis URL`
for channels-redis), signs in 20 users, and runs churners (open a room socket, stay a
moment, leave: half close cleanly, half drop the connection) beside posters. After the
run every socket is closed and the presence entries are given their TTL to expire; what
is left is what leaked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

SEED = """
import json
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from rooms.models import Room

sessions = []
for n in range(20):
    user = get_user_model().objects.create_user(f"soak{n}", password="x")
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    sessions.append(session.session_key)
rooms = [Room.objects.create(title=f"Soak {n}").slug for n in range(3)]
print(json.dumps({"sessions": sessions, "rooms": rooms}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(database: str, redis_url: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROOMCAST_"))}
    env.pop("REDIS_URL", None)
    env.update(
        DATABASE_URL=f"sqlite:///{database}",
        DJANGO_SECRET_KEY="soak",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SSL_REDIRECT="0",
        DJANGO_SECURE_COOKIES="0",
        ROOMCAST_STATS="1",
        ROOMCAST_POST_RATE_LIMIT="100000",
        ROOMCAST_MAX_SOCKETS_PER_USER="100000",
        ROOMCAST_FRAME_BURST="1000000000",
        ROOMCAST_FRAME_RATE="1000000000",
        ROOMCAST_MAX_ANONYMOUS_SOCKETS_PER_ADDRESS="1000000",
        ROOMCAST_PRESENCE_TTL="4",
        ROOMCAST_PRESENCE_HEARTBEAT="1",
    )
    if redis_url:
        env.update(REDIS_URL=redis_url, ROOMCAST_REDIS_PREFIX=f"roomcast-soak-{os.getpid()}")
    return env


def manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True,
        text=True,
    ).stdout  # fmt: skip


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/dev/stats/", timeout=10) as response:
        return json.load(response)


async def open_socket(port: int, slug: str, session: str):
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws/rooms/{slug}/",
        additional_headers={"Origin": f"http://127.0.0.1:{port}", "Cookie": f"sessionid={session}"},
        max_queue=None,
    )
    await ws.send(json.dumps({"action": "sync", "last_seq": "0", "live": "1"}))
    return ws


async def drain(ws) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


async def churner(port: int, seed: dict, until: float, counts: dict) -> None:
    while time.monotonic() < until:
        ws = await open_socket(port, random.choice(seed["rooms"]), random.choice(seed["sessions"]))
        reader = asyncio.create_task(drain(ws))
        counts["connects"] += 1
        await asyncio.sleep(random.uniform(0.2, 2.0))
        if random.random() < 0.5:
            await ws.close()
        else:
            ws.transport.abort()  # the connection just drops, as when a laptop sleeps
        reader.cancel()


async def poster(port: int, seed: dict, until: float, counts: dict) -> None:
    ws = await open_socket(port, random.choice(seed["rooms"]), random.choice(seed["sessions"]))
    reader = asyncio.create_task(drain(ws))
    while time.monotonic() < until:
        await ws.send(json.dumps({"action": "post", "message": f"soak {counts['posts']}"}))
        counts["posts"] += 1
        await asyncio.sleep(0.1)
    await ws.close()
    reader.cancel()


async def sampler(port: int, until: float, peak: dict) -> None:
    """Keep the largest figure of each statistic seen during the run."""
    while time.monotonic() < until:
        await asyncio.sleep(5)
        for key, value in (await asyncio.to_thread(stats, port)).items():
            peak[key] = max(peak.get(key, 0), value)


async def soak(port: int, seed: dict, minutes: float, churners: int, posters: int):
    counts, peak = {"connects": 0, "posts": 0}, {}
    until = time.monotonic() + minutes * 60
    tasks = [churner(port, seed, until, counts) for _ in range(churners)]
    tasks += [poster(port, seed, until, counts) for _ in range(posters)]
    await asyncio.gather(sampler(port, until, peak), *tasks)
    return counts, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--churners", type=int, default=40)
    parser.add_argument("--posters", type=int, default=4)
    parser.add_argument("--redis", metavar="URL", help="use channels-redis at this URL")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = server_env(f"{tmp}/soak.sqlite3", args.redis)
        manage(env, "migrate", "--no-input", "-v0")
        seed = json.loads(manage(env, "shell", "-c", SEED).strip().splitlines()[-1])
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
            + ["--ping-interval", "10", "--ping-timeout", "20", "site_config.asgi:application"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(100):
                with contextlib.suppress(OSError):
                    before = stats(port)
                    break
                time.sleep(0.1)
            counts, during = asyncio.run(
                soak(port, seed, args.minutes, args.churners, args.posters)
            )
            time.sleep(8)  # presence TTL (4 s here) plus heartbeats
            after = stats(port)
        finally:
            server.kill()

    report = {"minutes": args.minutes, **counts, "before": before, "peak": during, "after": after}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{counts['connects']} connects and {counts['posts']} posts in {args.minutes} min")
    print(f"{'':28}{'before':>10}{'peak':>10}{'after':>10}")
    for key in before:
        print(f"{key:28}{before[key]:>10}{during.get(key, 0):>10}{after[key]:>10}")


if __name__ == "__main__":
    main()
