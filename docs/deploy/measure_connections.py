"""Page loads per second against one daphne process with each database connection mode.

Usage (PostgreSQL must have the database, migrated and seeded):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/rc_ops \
        .venv/bin/python docs/deploy/measure_connections.py --seconds 15 --rounds 3

Each round starts one daphne per mode in turn (per request: new connection; persistent
connections; psycopg pool), loads the room page over keep-alive HTTP from CONCURRENCY
clients for the given time and prints requests per second. Modes are interleaved so that
a noisy neighbour hits them alike; compare them within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODES = {
    "per-request": {"DJANGO_DB_POOL": "0", "DJANGO_CONN_MAX_AGE": "0"},
    "persistent": {"DJANGO_DB_POOL": "0", "DJANGO_CONN_MAX_AGE": "600"},
    "pool": {"DJANGO_DB_POOL": "1", "DJANGO_CONN_MAX_AGE": "0"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client(port: int, path: str, deadline: float, counts: list[int]) -> None:
    """One keep-alive HTTP/1.1 client: GET the path until the deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    while time.monotonic() < deadline:
        writer.write(request)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(f"{path}: {status!r}")
        counts[0] += 1
    writer.close()


async def load(port: int, path: str, seconds: float, concurrency: int) -> float:
    counts = [0]
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client(port, path, deadline, counts) for _ in range(concurrency)))
    return counts[0] / seconds


def wait_for(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("daphne did not start")


def run_mode(env: dict[str, str], path: str, seconds: float, concurrency: int) -> float:
    port = free_port()
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(port)]
        + ["site_config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(port)
        asyncio.run(load(port, path, 1, concurrency))  # warm-up: templates, pool
        return asyncio.run(load(port, path, seconds, concurrency))
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--path", default="/rooms/lobby/")
    args = parser.parse_args()
    base = {
        **os.environ,
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "measure-only"),
        "DJANGO_DEBUG": "0",
        "DJANGO_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    }
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        for mode, env in MODES.items():
            rate = run_mode({**base, **env}, args.path, args.seconds, args.concurrency)
            results[mode].append(rate)
            print(f"round {round_ + 1} {mode:12} {rate:7.1f} pages/s", flush=True)
    base_rate = statistics.median(results["per-request"])
    for mode, rates in results.items():
        median = statistics.median(rates)
        print(f"median {mode:12} {median:7.1f} pages/s  x{median / base_rate:.2f}")


if __name__ == "__main__":
    sys.exit(main())
