"""The live core on real servers: a stalled client beside 100 live sockets, limits while
Redis is away, and revocation reaching every process."""

import asyncio
import contextlib
import json
import re
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.servers import LiveClient, presence_of, stalled_socket

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

READERS, POSTS = 100, 1500


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class LightReader:
    """A live socket that keeps up cheaply: reads every frame, notes message numbers by regex."""

    def __init__(self, server, slug: str) -> None:
        self.url = f"ws://127.0.0.1:{server.port}/ws/rooms/{slug}/"
        self.origin = server.base
        self.seqs: list[int] = []

    async def connect(self) -> "LightReader":
        self.ws = await connect(self.url, additional_headers={"Origin": self.origin})
        await self.ws.send(json.dumps({"action": "sync", "last_seq": "0", "live": "1"}))
        self.task = asyncio.create_task(self.read())
        return self

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for text in self.ws:
                self.seqs += [int(n) for n in SEQ.findall(str(text))]

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


SEQ = re.compile(r'<article[^>]* data-seq="(\d+)"')


async def stalled_beside_readers(site, server, seed, readers: int, closed: str) -> float:
    """A socket that never reads beside `readers` live ones while another process posts
    POSTS messages of ~4 kB: every reader gets them all in order, the server closes the
    stalled one (its close line matches `closed`), and the server's RSS growth (MiB) is
    returned."""
    live = [await LightReader(server, seed["room"]).connect() for _ in range(readers)]
    stalled = stalled_socket(server, seed["room"], sync=True)
    sender = await LiveClient(server, seed["room"], seed["alice"]).connect()
    await sender.post("the stalled socket has joined when its readers see this")
    await sender.wait_for_seq(1)
    before = rss_kib(server.process.pid)
    # ~6 MB for every socket: more than the kernel buffers (4 MB here) and the app's bound,
    # posted by another process (a shell, in a thread: the readers keep reading).
    await asyncio.to_thread(
        site.manage,
        "shell",
        "-c",
        "from rooms.models import Room, post_message; room = Room.objects.get(slug='lobby'); "
        f"[post_message(room, None, str(n) + ' ' + 'x' * 3900) for n in range({POSTS})]",
    )
    async with asyncio.timeout(120):
        while any(len(r.seqs) < POSTS + 1 for r in live):
            await asyncio.sleep(0.2)
    assert all(r.seqs == list(range(1, POSTS + 2)) for r in live)
    # The readers are all still open, so the socket closed is the stalled one.
    async with asyncio.timeout(90):
        while not re.search(closed, server.log_path.read_text()):
            await asyncio.sleep(0.2)
    growth_mib = (rss_kib(server.process.pid) - before) / 1024
    stalled.close()
    for reader in live:
        await reader.close()
    await sender.close()
    return growth_mib


async def test_a_stalled_client_is_dropped_while_100_sockets_keep_up(site):
    site.env["ROOMCAST_SOCKET_BUFFER_LIMIT"] = str(256 * 1024)
    seed = site.seed()
    server = site.start_server()  # no ping options: the app's own bound must hold
    # The stalled socket does not stay: the server drops it (1006), freeing its buffers.
    # Measured here: daphne's default ping timeout (20 s + 30 s) drops it, before the app's
    # transport bound (ROOMCAST_SOCKET_BUFFER_LIMIT) is reached, because the kernel's socket
    # buffers (up to 4 MB send, autotuned receive) absorb these 6 MB first.
    growth_mib = await stalled_beside_readers(site, server, seed, READERS, "code 1006")
    print(f"server RSS growth with a stalled client and {READERS} readers: {growth_mib:.1f} MiB")
    assert growth_mib < 64


async def test_on_uvicorn_a_stalled_client_is_dropped_while_live_sockets_keep_up(site):
    # uvicorn's send waits while a client is behind; frames to clients that keep up are
    # sent without a task wake-up (channels_adapter.send_if_writable). The stalled client's
    # writer waits and its bounded outbox overflows. uvicorn's ping timeout (20 s + 20 s)
    # closes it, 1005, or repeated overflows of its outbox do, 1013, whichever comes first.
    seed = site.seed()
    server = site.start_server(runner="uvicorn")
    growth_mib = await stalled_beside_readers(
        site, server, seed, 20, r"socket closed: .* code 10(05|06|13)"
    )
    print(f"uvicorn RSS growth with a stalled client and 20 readers: {growth_mib:.1f} MiB")
    assert growth_mib < 64


async def test_limits_hold_while_redis_is_away_and_the_first_socket_after_works(
    site_on_private_redis, private_redis
):
    site = site_on_private_redis
    site.env["ROOMCAST_POST_RATE_LIMIT"] = "3"
    seed = site.seed()
    server = site.start_server()
    alice = await LiveClient(server, seed["room"], seed["alice"]).connect()
    await alice.wait_for(lambda f: presence_of(f) == ["alice"])  # joined, not only accepted
    private_redis.stop()
    for n in range(5):
        await alice.post(f"while redis is away {n}")
    refusal = await alice.wait_for(
        lambda f: f.has_target("message-error") and "Slow down" in f.target("message-error").text()
    )
    assert refusal.target("message-error").text().startswith("Slow down")
    private_redis.start()
    bob = await LiveClient(server, seed["room"], seed["bob"]).connect()
    await bob.post("after redis returned")
    await bob.wait_for(lambda f: f.has_target("messages"), timeout=30)
    await alice.close()
    await bob.close()


async def test_revocation_closes_the_users_sockets_in_every_process(site):
    seed = site.seed()
    first, second = site.start_server(), site.start_server()
    tabs = [
        await LiveClient(server, seed["room"], seed["alice"]).connect()
        for server in (first, second)
    ]
    bob = await LiveClient(second, seed["room"], seed["bob"]).connect()
    # (In a thread: the readers keep reading meanwhile.)
    await asyncio.to_thread(
        site.manage,
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; from rooms import events; "
        "uid = get_user_model().objects.get(username='alice').pk; "
        "e = events.user_revoked_event(uid, 'You signed out.'); events.publish(e['group'], e)",
    )
    for tab in tabs:
        notice = await tab.wait_for(lambda f: f.has_target("toasts"), timeout=2)
        assert notice.target("toasts").text() == "You signed out."
        async with asyncio.timeout(2):
            with pytest.raises(ConnectionClosed) as closed:
                await tab.ws.recv()
        assert closed.value.rcvd.code == 4401
    assert bob.ws.close_code is None
    await bob.close()
