"""Real server processes for the integration tests: daphne on free ports, sharing one
PostgreSQL database and one Redis, driven by real WebSocket clients (`websockets`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from http.cookiejar import Cookie, CookieJar
from pathlib import Path

import psycopg
from websockets.asyncio.client import connect

from rooms.testing import Fragment

ROOT = Path(__file__).resolve().parents[2]

SEED = """
import json
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from rooms.models import Room

out = {}
for name in ("alice", "bob", "carol"):
    user = get_user_model().objects.create_user(name, password="pw-" + name)
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    out[name] = session.session_key
out["room"] = Room.objects.create(title="Lobby").slug
print(json.dumps(out))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Database:
    """A PostgreSQL database of its own, created next to the one DATABASE_URL names."""

    def __init__(self, base_url: str) -> None:
        self.base = urllib.parse.urlsplit(base_url)
        self.name = f"roomcast_it_{uuid.uuid4().hex[:10]}"
        self.url = self.base._replace(path=f"/{self.name}").geturl()

    def _admin(self):
        return psycopg.connect(self.base.geturl(), autocommit=True)

    def create(self) -> None:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class RedisServer:
    """A Redis server of our own on a free port, so that a test may stop and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout}s")


class Site:
    """Roomcast's settings for every process of one test: one database, one Redis."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROOMCAST_"))
        }
        self.env.update(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            ROOMCAST_REDIS_PREFIX=f"roomcast-it-{uuid.uuid4().hex[:8]}",
            DJANGO_SECRET_KEY="integration-tests-only",
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DJANGO_DEBUG="0",
            DJANGO_SSL_REDIRECT="0",
            DJANGO_SECURE_COOKIES="0",
            # Short enough for a test to see a dead process drop out of presence.
            ROOMCAST_PRESENCE_TTL="2",
            ROOMCAST_PRESENCE_HEARTBEAT="0.5",
            ROOMCAST_RESYNC_INTERVAL="0.5",
            ROOMCAST_POST_RATE_LIMIT="1000",
            # The tests open many anonymous sockets from one address, and post fast.
            ROOMCAST_MAX_ANONYMOUS_SOCKETS_PER_ADDRESS="1000",
            ROOMCAST_FRAME_BURST="100000",
        )
        self.servers: list[Server] = []

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def seed(self) -> dict:
        """Migrate, then make alice, bob and carol (with sessions) and a room."""
        self.manage("migrate", "--no-input", "-v0")
        return json.loads(self.manage("shell", "-c", SEED).strip().splitlines()[-1])

    def start_server(
        self, port: int | None = None, *daphne_args: str, runner: str = "daphne"
    ) -> Server:
        server = Server(self.env, port or free_port(), daphne_args, runner)
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


class Server:
    """One server process serving the site: daphne, or uvicorn (`runner="uvicorn"`)."""

    def __init__(self, env: dict, port: int, daphne_args=(), runner: str = "daphne") -> None:
        self.port = port
        self.log_path = Path(tempfile.gettempdir()) / f"roomcast-{runner}-{port}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        if runner == "uvicorn":
            command = ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"]
        else:
            command = ["daphne", "-b", "127.0.0.1", "-p", str(port), *daphne_args]
        self.process = subprocess.Popen(
            [sys.executable, "-m", *command, "site_config.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait()
        self.log.close()

    def get(self, path: str, session: str | None = None) -> int:
        """GET a page; return the status."""
        return self._opener(session).open(self.base + path, timeout=10).status

    def post_message(self, slug: str, session: str, text: str) -> int:
        """Post as a browser without a socket does: the page's form, CSRF token and all."""
        opener = self._opener(session)
        page = opener.open(f"{self.base}/rooms/{slug}/", timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "message": text}).encode()
        return opener.open(f"{self.base}/rooms/{slug}/post/", data=data, timeout=10).status

    def _opener(self, session: str | None):
        jar = CookieJar()
        if session:
            jar.set_cookie(cookie("sessionid", session))
        return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def cookie(name: str, value: str) -> Cookie:
    return Cookie(
        0, name, value, None, False, "127.0.0.1", False, False, "/", True, False, None, False,
        None, None, {},
    )  # fmt: skip


class LiveClient:
    """A browser tab's socket: connects, syncs as the page does, and collects every frame."""

    def __init__(self, server: Server, slug: str, session: str | None = None) -> None:
        self.server, self.slug, self.session = server, slug, session
        self.frames: asyncio.Queue[Fragment] = asyncio.Queue()
        self.seqs: list[int] = []  # the data-seq of every message appended, in order
        self.last_seq = 0
        self.ws = None
        self.reader: asyncio.Task | None = None

    async def connect(self, server: Server | None = None) -> LiveClient:
        """Open (or reopen, maybe on another server) the socket and report the last event."""
        self.server = server or self.server
        headers = {"Origin": self.server.base}
        if self.session:
            headers["Cookie"] = f"sessionid={self.session}"
        url = f"ws://127.0.0.1:{self.server.port}/ws/rooms/{self.slug}/"
        self.ws = await connect(url, additional_headers=headers, open_timeout=10)
        self.reader = asyncio.create_task(self._read())
        await self.send(action="sync", last_seq=str(self.last_seq), live="1")
        return self

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for text in self.ws:
                fragment = Fragment(text)
                for swap in fragment.swaps:
                    if swap.id == "messages":
                        seqs = [int(a["data-seq"]) for a in swap.select("article[data-seq]")]
                        # Appended, or (far behind) the whole list replaced.
                        self.seqs = self.seqs + seqs if swap.swap == "beforeend" else seqs
                    if swap.id == "last-seq":
                        self.last_seq = int(swap.element["value"])
                await self.frames.put(fragment)

    async def send(self, **fields) -> None:
        await self.ws.send(json.dumps(fields))

    async def post(self, text: str) -> None:
        await self.send(action="post", message=text)

    async def wait_for(self, condition, timeout: float = 15.0) -> Fragment:
        """The first frame (from now) for which condition(frame) holds."""
        async with asyncio.timeout(timeout):
            while True:
                fragment = await self.frames.get()
                if condition(fragment):
                    return fragment

    async def wait_for_seq(self, seq: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while self.last_seq < seq:
                await self.frames.get()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()


def presence_of(fragment: Fragment) -> list[str] | None:
    """The presence list a frame leaves on the page: its last presence swap (a frame may
    batch several), or None if it has none."""
    swaps = [swap for swap in fragment.swaps if swap.id == "presence"]
    if not swaps:
        return None
    return [li.get_text() for li in swaps[-1].select("li:not(.empty)")]


def stalled_socket(server: Server, slug: str, sync: bool = False) -> socket.socket:
    """A client that opens the room's socket, then never reads again (a stalled tab).

    With `sync`, it first reports its last event as a page does (so it is sent the room).
    """
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        (
            f"GET /ws/rooms/{slug}/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {server.base}\r\n\r\n"
        ).encode()
    )
    if sync:
        sock.sendall(masked_text_frame(json.dumps({"action": "sync", "last_seq": "0"})))
    return sock


def masked_text_frame(text: str) -> bytes:
    """One WebSocket text frame as a client sends it (masked; payload under 126 bytes)."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked
