"""Several server processes sharing PostgreSQL and Redis: delivery, presence, order, and
what happens when Redis restarts or a process is killed."""

import asyncio

import pytest

from tests.integration.servers import LiveClient, presence_of, stalled_socket

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


async def test_messages_cross_processes_in_order_exactly_once(site):
    seed = site.seed()
    first, second = site.start_server(), site.start_server()
    sender = await LiveClient(first, seed["room"], seed["alice"]).connect()
    reader = await LiveClient(second, seed["room"], seed["bob"]).connect()
    for n in range(30):
        await sender.post(f"m{n}")
    await reader.wait_for_seq(30)
    assert reader.seqs == list(range(1, 31))
    await sender.close()
    await reader.close()


async def test_presence_is_shared_across_processes(site):
    seed = site.seed()
    first, second = site.start_server(), site.start_server()
    watcher = await LiveClient(second, seed["room"], seed["bob"]).connect()
    await LiveClient(first, seed["room"], seed["alice"]).connect()
    await watcher.wait_for(lambda f: presence_of(f) == ["alice", "bob"])
    await watcher.close()


async def test_a_killed_process_drops_out_and_its_pages_catch_up_on_a_survivor(site):
    seed = site.seed()
    doomed, survivor = site.start_server(), site.start_server()
    alice = await LiveClient(doomed, seed["room"], seed["alice"]).connect()
    bob = await LiveClient(survivor, seed["room"], seed["bob"]).connect()
    await bob.post("before")
    await alice.wait_for_seq(1)
    await bob.wait_for(lambda f: presence_of(f) == ["alice", "bob"])
    doomed.kill()  # SIGKILL: no disconnect handler runs
    # Presence forgets alice's dead socket (TTL 2 s in these tests, 20 s by default).
    await bob.wait_for(lambda f: presence_of(f) == ["bob"], timeout=10)
    for n in range(3):
        await bob.post(f"while alice was away {n}")
    await bob.wait_for_seq(4)
    await alice.connect(survivor)  # the page reconnects, to the process that is left
    await alice.wait_for_seq(4)
    assert alice.seqs == [1, 2, 3, 4]
    await alice.close()
    await bob.close()


async def test_redis_restart_loses_nothing(site_on_private_redis, private_redis):
    site = site_on_private_redis
    seed = site.seed()
    first, second = site.start_server(), site.start_server()
    alice = await LiveClient(first, seed["room"], seed["alice"]).connect()
    bob = await LiveClient(second, seed["room"], seed["bob"]).connect()
    await alice.post("before the restart")
    await bob.wait_for_seq(1)

    private_redis.stop()
    # Pages still load and posts are stored while Redis is down.
    assert first.get(f"/rooms/{seed['room']}/", seed["carol"]) == 200
    for n in range(3):
        assert first.post_message(seed["room"], seed["carol"], f"during {n}") == 200
    private_redis.start()

    # Live delivery resumes by itself, and bob's page gets every message it missed.
    await asyncio.sleep(2)
    await alice.post("after the restart")
    await bob.wait_for_seq(5, timeout=30)
    assert bob.seqs == [1, 2, 3, 4, 5]
    await alice.close()
    await bob.close()


async def test_a_stalled_client_neither_slows_the_room_nor_stays(site):
    seed = site.seed()
    # Pings every second, and a client that does not answer within 2 s is dropped.
    server = site.start_server(None, "--ping-interval", "1", "--ping-timeout", "2")
    stalled = stalled_socket(server, seed["room"])
    sender = await LiveClient(server, seed["room"], seed["alice"]).connect()
    reader = await LiveClient(server, seed["room"], seed["bob"]).connect()
    for n in range(50):
        await sender.post(f"{n} " + "x" * 2000)  # enough to fill the stalled socket's buffers
    await reader.wait_for_seq(50)
    assert reader.seqs == list(range(1, 51))
    # The server closes the stalled socket: its buffered frames are freed.
    async with asyncio.timeout(15):
        while "WSDISCONNECT" not in server.log_path.read_text():
            await asyncio.sleep(0.2)
    stalled.close()
    await sender.close()
    await reader.close()
