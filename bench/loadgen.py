"""The benchmark's load generator: real WebSocket clients on raw asyncio sockets.

Run by bench/run.py as its own process, pinned to the core the server is not on. It speaks
just enough RFC 6455 to be cheap per frame (the clients must outrun the server they measure):
an HTTP upgrade, masked frames out, unmasked frames in, pings answered. Every broadcast
message carries "m<index> <send time>"; each receiver checks that it gets every index once,
and each sender's messages in the order sent (and, from Roomcast, rising `data-seq`).

    python bench/loadgen.py throughput --url ws://127.0.0.1:8001/ws/rooms/bench/ \
        --receivers 1000 --protocol roomcast --cookie sessionid=...

Several `--url`s of one room (one per server process) spread the sockets over them;
`--per-room N` makes each URL a room of its own with N sockets, the first of which posts.
`stall` mode adds `--stalled` clients that never read after their handshake.

It prints `MARK <name>` when a measured part starts or ends (bench/run.py samples the
server's CPU time and memory then) and one JSON object on its last line of output.
Anything that stops the run (a refused post, a socket the server closes, no progress for
`--stall` seconds) ends it at once with the reason in "error", instead of hanging.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import html
import json
import os
import re
import socket
import statistics
import struct
import sys
import time
from urllib.parse import SplitResult, urlsplit

INDEX = re.compile(rb"m(\d+) (\d+\.\d+)")
SEQ = re.compile(rb'data-seq="(\d+)"')
# Roomcast's error fragment; the form reset a sender gets after each post has it empty.
ERROR = re.compile(rb'id="message-error"[^>]*>([^<]*)<')
TUTORIAL_WRAPPER = len(json.dumps({"message": ""}))
STALLED_RCVBUF, STALLED_MSS = 4096, 1448


class Client(asyncio.Protocol):
    """One WebSocket connection; counts the broadcast messages it receives.

    `room` numbers its room among the run's rooms; a `poster` posts and checks the answers
    to its posts; a `counted` client counts what it receives; a `stalled` one stops reading
    right after its handshake (a tab that never reads) and may be closed by the server.
    """

    def __init__(
        self,
        bench: Bench,
        number: int,
        room: int = 0,
        poster: bool = False,
        counted: bool = True,
        stalled: bool = False,
    ) -> None:
        self.bench, self.number, self.room = bench, number, room
        self.poster, self.counted, self.stalled = poster, counted, stalled
        self.buffer = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.closing = False
        self.transport = None
        self.last_by_sender: dict[int, int] = {}
        self.last_seq = 0
        self.received = 0
        self.reordered = 0
        self.seen: bytearray | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.handshaken.done():
            self.handshaken.set_exception(ConnectionError("closed during the handshake"))
        elif self.stalled:
            self.bench.stalled_closed += 1  # a server may close a client that never reads
        elif not self.closing:
            self.bench.fail(f"the server dropped socket {self.number} ({exc or 'EOF'})")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded and not self.read_handshake():
            return
        buffer = self.buffer
        offset, size = 0, len(buffer)
        while size - offset >= 2:
            opcode, length = buffer[offset] & 0x0F, buffer[offset + 1] & 0x7F
            head = 2
            if length == 126:
                if size - offset < 4:
                    break
                length = struct.unpack_from("!H", buffer, offset + 2)[0]
                head = 4
            elif length == 127:
                if size - offset < 10:
                    break
                length = struct.unpack_from("!Q", buffer, offset + 2)[0]
                head = 10
            if size - offset < head + length:
                break
            payload = bytes(buffer[offset + head : offset + head + length])
            offset += head + length
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 9:  # ping: answer, or the server drops us
                self.send(payload, opcode=10)
            elif opcode == 8:
                self.on_close(payload)
        del buffer[:offset]

    def read_handshake(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(self.buffer[:end].split(b"\r\n", 1)[0])
        del self.buffer[: end + 4]
        if b" 101 " not in status:
            self.handshaken.set_exception(ConnectionError(status.decode(errors="replace")))
            return False
        self.upgraded = True
        self.handshaken.set_result(None)
        if self.stalled:
            self.transport.pause_reading()  # never read again: the kernel buffers fill up
        return True

    def on_close(self, payload: bytes) -> None:
        code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
        reason = payload[2:].decode(errors="replace")
        if not self.closing and not self.stalled:
            self.bench.fail(f"the server closed socket {self.number}: code {code} {reason}")
        self.closing = True
        self.transport.close()

    def on_text(self, payload: bytes) -> None:
        if self.poster:
            # Posters hear the answers to their posts: a refused post is fatal (a rate limit,
            # say): the run would otherwise wait for it forever.
            error = ERROR.search(payload)
            if error and error[1].strip():
                text = html.unescape(error[1].decode()).strip()
                self.bench.fail(f"the server refused a post: {text!r}")
        if not self.counted:
            return
        if self.bench.frame_bytes is None and INDEX.search(payload):
            self.bench.frame_bytes = len(payload)
        if self.bench.check_seq:
            for match in SEQ.finditer(payload):
                seq = int(match[1])
                if seq < self.last_seq:
                    self.reordered += 1
                self.last_seq = max(self.last_seq, seq)
        # A frame may carry several messages (batched, or a gap filled): count each.
        for match in INDEX.finditer(payload):
            self.on_message(int(match[1]), float(match[2]))

    def on_message(self, index: int, sent_at: float) -> None:
        self.received += 1
        # Messages of one poster must arrive in the order sent (posters take turns).
        sender = index % len(self.bench.posters)
        last = self.last_by_sender.get(sender, -1)
        if index < last:
            self.reordered += 1
        else:
            self.last_by_sender[sender] = index
        local = index // self.bench.rooms  # message `index` goes to room index % rooms
        if self.seen is not None and local < len(self.seen):
            if self.seen[local]:
                self.bench.duplicated += 1
            self.seen[local] = 1
        if self.bench.latencies is not None:
            self.bench.latencies.append((index, time.time() - sent_at))
        self.bench.delivered()

    def send(self, payload: bytes, opcode: int = 1) -> None:
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        # XOR the whole payload as one big integer with the repeated mask: no per-byte loop.
        key = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload) ^ int.from_bytes(key)).to_bytes(length)
        self.transport.write(head + mask + masked)

    def send_json(self, value: dict) -> None:
        self.send(json.dumps(value).encode())

    def close(self) -> None:
        self.closing = True
        if not self.transport.is_closing():
            self.send(struct.pack("!H", 1000), opcode=8)
            self.transport.close()


class Bench:
    """The sockets of one run and what they counted."""

    def __init__(self, args) -> None:
        self.args = args
        urls = list(args.url or [])
        if args.urls_file:
            with open(args.urls_file) as lines:
                urls += [line.strip() for line in lines if line.strip()]
        if not urls:
            raise SystemExit("loadgen: no --url")
        self.urls = [urlsplit(url) for url in urls]
        # --per-room: every URL is a room of its own; otherwise all URLs are one room (served
        # by several processes) and the sockets are spread over them.
        self.rooms = len(self.urls) if args.per_room else 1
        self.check_seq = args.protocol == "roomcast"
        self.clients: list[Client] = []
        self.posters: list[Client] = []
        self.stalled: list[Client] = []
        self.stalled_closed = 0
        self.connect_s: float | None = None
        self.frame_bytes: int | None = None
        self.duplicated = 0
        self.latencies: list[tuple[int, float]] | None = None
        self.deliveries = 0
        self.deliveries_wanted = 0
        self.done = asyncio.Event()
        self.error: str | None = None
        self.started = time.perf_counter()
        self.wake_at = float("inf")
        self.progress = asyncio.Event()

    @property
    def per_message(self) -> int:
        """Deliveries one message makes: the sockets counted in its room."""
        return max(1, len(self.clients) // self.rooms)

    def delivered(self) -> None:
        self.deliveries += 1
        if self.deliveries >= self.wake_at:
            self.progress.set()
        if self.deliveries_wanted and self.deliveries >= self.deliveries_wanted:
            self.done.set()

    def fail(self, reason: str) -> None:
        """Stop the run: the first reason is the one reported."""
        if self.error is None:
            self.error = reason
        self.done.set()
        self.progress.set()

    async def connect(self, url: SplitResult, cookie: str | None = None, **role) -> Client:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if role.get("stalled"):
            # A small receive buffer: what the client's kernel would absorb for a tab that
            # does not read is small, so the server's own buffering shows within seconds.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
            # An Ethernet-sized segment, not loopback's 64 KiB one: the server's kernel sizes
            # its send buffer from the segment size, as it would for a real remote client.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, STALLED_MSS)
        await loop.sock_connect(sock, (url.hostname, url.port))
        _, client = await loop.create_connection(lambda: Client(self, **role), sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {url.path} HTTP/1.1",
            f"Host: {url.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: http://{url.netloc}",
        ]
        if cookie:
            lines.append(f"Cookie: {cookie}")
        client.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            await asyncio.wait_for(client.handshaken, self.args.stall)
        except ConnectionError as error:
            raise ConnectionError(f"handshake refused: {error}") from None
        if self.args.protocol == "roomcast":
            # What the room page sends on open: the last event it shows (the room is new).
            client.send_json({"action": "sync", "last_seq": str(self.args.last_seq)})
        return client

    def cookie(self, n: int) -> str | None:
        cookies = self.args.cookie or [None]
        return cookies[n % len(cookies)]

    async def connect_receivers(self, count: int) -> None:
        """`count` counted sockets: spread over the URLs of one room, or `per_room` a room."""

        def plan(n: int) -> tuple[SplitResult, str | None, dict]:
            if not self.args.per_room:
                return self.urls[n % len(self.urls)], None, {"number": n}
            room, place = divmod(n, self.args.per_room)
            poster = place == 0  # the first socket of each room posts (signed in)
            cookie = self.cookie(room) if poster else None
            return self.urls[room], cookie, {"number": n, "room": room, "poster": poster}

        # In waves: a burst of connects queues behind the server's database thread, and daphne
        # drops a socket not accepted within 5 s (its --websocket_connect_timeout).
        started, wave = time.perf_counter(), self.args.wave
        for start in range(0, count, wave):
            batch = [plan(n) for n in range(start, min(start + wave, count))]
            made = await asyncio.gather(*(self.connect(u, c, **role) for u, c, role in batch))
            self.clients += made
            self.posters += [client for client in made if client.poster]
        self.connect_s = time.perf_counter() - started
        await asyncio.sleep(0.5)  # the last syncs are answered

    async def connect_senders(self) -> None:
        """Separate, uncounted posters (one room): spread over the URLs like the receivers."""
        if self.args.per_room:
            return
        for n in range(self.args.senders):
            url = self.urls[n % len(self.urls)]
            role = {"number": -1 - n, "poster": True, "counted": False}
            self.posters.append(await self.connect(url, self.cookie(n), **role))
        await asyncio.sleep(0.2)

    async def connect_stalled(self, count: int) -> None:
        """Clients that never read after their handshake, beside the others."""
        for n in range(count):
            url = self.urls[n % len(self.urls)]
            role = {"number": 1_000_000 + n, "counted": False, "stalled": True}
            self.stalled.append(await self.connect(url, None, **role))

    def expect(self, messages: int) -> None:
        for client in self.clients:
            client.seen = bytearray(messages // self.rooms + 1)

    def message(self, index: int) -> None:
        """Send message `index` from its poster, padded to the run's frame size."""
        sender = self.posters[index % len(self.posters)]
        text = f"m{index} {time.time():.6f} "
        if self.args.protocol == "roomcast":
            sender.send_json({"action": "post", "message": text + "x" * self.args.pad})
        elif self.args.protocol == "tutorial":
            # The consumer sends {"message": text}: that frame is `size` bytes long.
            text += "x" * max(0, self.args.size - TUTORIAL_WRAPPER - len(text))
            sender.send_json({"message": text})
        else:
            text += "x" * max(0, self.args.size - len(text))
            sender.send(text.encode())

    def too_far_ahead(self, index: int) -> bool:
        """Whether sending message `index` now would put the closed loop too far ahead.

        In flight: messages sent minus deliveries so far in whole rooms' worth, so every
        socket counts, not only one that the server happens to serve first. The limit is
        about `max_lag` seconds of work at the rate delivered so far, between `min_window`
        and `window` messages: a fast server always has a backlog, and a slow one's backlog
        (and the drain at the end) stays short.
        """
        done = self.deliveries / self.per_message
        rate = done / max(time.perf_counter() - self.started, 1e-3)
        limit = min(self.args.window, max(self.args.min_window, rate * self.args.max_lag))
        return index - done >= limit

    async def wait_to_send(self, index: int) -> None:
        """Until the closed loop may send message `index`."""
        while self.too_far_ahead(index) and self.error is None:
            self.wake_at = self.deliveries + self.per_message  # one more message's worth
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), self.args.stall)
            except TimeoutError:
                self.fail(f"no message delivered for {self.args.stall:.0f} s")
        self.wake_at = float("inf")

    async def drain(self, messages: int) -> None:
        """Wait for every receiver to get every message (or for the timeout)."""
        self.deliveries_wanted = self.expected(messages)
        if self.deliveries >= self.deliveries_wanted:
            self.done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout=self.args.timeout)

    def expected(self, messages: int) -> int:
        """Deliveries that `messages` messages make: each goes to the sockets of its room."""
        full, rest = divmod(messages, self.rooms)
        return (full * self.rooms + rest) * self.per_message

    def counts(self, messages: int) -> dict:
        received = sum(c.received for c in self.clients)
        unique = received - self.duplicated
        first = self.clients[0].seen if self.clients else bytearray()
        missing = [i * self.rooms for i in range(len(first)) if not first[i]]
        return {
            "messages": messages,
            "deliveries": received,
            "lost": self.expected(messages) - unique,
            "duplicated": self.duplicated,
            "reordered": sum(c.reordered for c in self.clients),
            "missing_at_first_socket": [i for i in missing if i < messages][:20],
            "frame_bytes": self.frame_bytes,
            "sockets_open": len(self.clients) + len(self.stalled) + len(self.posters),
            "connect_s": self.connect_s,
            "rooms": self.rooms,
            "error": self.error,
        }

    def close(self) -> None:
        for client in self.clients + self.posters + self.stalled:
            if client.transport is not None:
                client.close()


def mark(name: str = "start") -> None:
    """Tell bench/run.py that a measured part starts (or ends) now."""
    print(f"MARK {name}", flush=True)


async def throughput(bench: Bench) -> dict:
    """Closed loop: posters take turns, at most a window of messages ahead of delivery."""
    args = bench.args
    await bench.connect_receivers(args.receivers)
    bench.expect(args.messages)
    await bench.connect_senders()
    mark()
    cpu, started = time.process_time(), time.perf_counter()
    bench.started = started
    sent = 0
    for index in range(args.messages):
        if time.perf_counter() - started > args.seconds:
            break  # a slow server gets fewer messages, not a longer run
        await bench.wait_to_send(index)
        if bench.error:
            break
        bench.message(index)
        sent += 1
    await bench.drain(sent)
    elapsed = time.perf_counter() - started
    mark("end")
    return {
        **bench.counts(sent),
        "seconds": elapsed,
        "frames_per_s": bench.deliveries / elapsed,
        "messages_per_s": bench.deliveries / bench.per_message / elapsed,
        "loadgen_cpu": (time.process_time() - cpu) / elapsed,
    }


def percentiles(latencies: list[float]) -> dict:
    """p50, p99 and max of latencies in seconds, as milliseconds."""
    ordered = sorted(latencies)

    def at(q: float) -> float | None:
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": at(1.0),
        "mean_ms": statistics.fmean(ordered) * 1000 if ordered else None,
    }


async def open_loop(bench: Bench, first: int, count: int) -> None:
    """Send messages first..first+count-1 at `rate` a second, whatever the server does."""
    started = time.perf_counter()
    for n in range(count):
        delay = started + n / bench.args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if bench.error:
            break
        bench.message(first + n)


async def latency(bench: Bench) -> dict:
    """Open loop: `rate` messages a second, whatever the server does; latency per frame."""
    args = bench.args
    bench.latencies = []
    await bench.connect_receivers(args.receivers)
    bench.expect(args.messages)
    await bench.connect_senders()
    mark()
    cpu, started = time.process_time(), time.perf_counter()
    await open_loop(bench, 0, args.messages)
    await bench.drain(args.messages)
    elapsed = time.perf_counter() - started
    mark("end")
    return {
        **bench.counts(args.messages),
        **percentiles([seconds for _, seconds in bench.latencies]),
        "offered_frames_per_s": round(args.rate * args.receivers),
        "loadgen_cpu": (time.process_time() - cpu) / elapsed,
    }


async def stall(bench: Bench) -> dict:
    """Open loop in two phases: `messages` without, then `stalled_messages` with `stalled`
    clients that never read.

    The live receivers' latency and losses are reported per phase; bench/run.py samples the
    server's memory at each MARK, so the growth of each phase can be compared.
    """
    args = bench.args
    bench.latencies = []
    warm = args.warmup
    total = warm + args.messages + args.stalled_messages
    await bench.connect_receivers(args.receivers)
    bench.expect(total)
    await bench.connect_senders()
    await open_loop(bench, 0, warm)  # first renders, caches, buffers: not the stall's cost
    mark("clean")
    await open_loop(bench, warm, args.messages)
    await bench.connect_stalled(args.stalled)
    mark("stalled")
    await open_loop(bench, warm + args.messages, args.stalled_messages)
    await bench.drain(total)
    mark("end")  # every live socket has every message: what the server still holds is theirs
    phases = {}
    for name, first, count in (
        ("clean", warm, args.messages),
        ("stalled", warm + args.messages, args.stalled_messages),
    ):
        seen = [s for i, s in bench.latencies if first <= i < first + count]
        phases[name] = {**percentiles(seen), "lost": count * len(bench.clients) - len(seen)}
    counts = bench.counts(total)  # a lagging server's losses are in the phases, not an error
    return {
        **counts,
        "phases": phases,
        "stalled": args.stalled,
        "stalled_closed": bench.stalled_closed,
        "offered_frames_per_s": round(args.rate * args.receivers),
    }


async def idle(bench: Bench) -> dict:
    """Open `receivers` sockets, mark, and hold them until stdin closes."""
    await bench.connect_receivers(bench.args.receivers)
    mark()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return {"sockets_open": len(bench.clients), "connect_s": bench.connect_s, "error": bench.error}


MODES = {"throughput": throughput, "latency": latency, "stall": stall, "idle": idle}


async def run(args) -> dict:
    bench = Bench(args)
    try:
        return await MODES[args.mode](bench)
    except (OSError, TimeoutError) as error:
        return {"error": f"could not connect: {error or type(error).__name__}"}
    finally:
        bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket load for bench/run.py")
    parser.add_argument("mode", choices=list(MODES))
    parser.add_argument("--url", action="append", help="a socket URL (repeat: one per server)")
    parser.add_argument("--urls-file", help="more URLs, one a line")
    parser.add_argument("--per-room", type=int, default=0, help="each URL is a room of N")
    parser.add_argument("--protocol", choices=["roomcast", "tutorial", "bare"], required=True)
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--stalled", type=int, default=0, help="stall: clients that never read")
    parser.add_argument("--stalled-messages", type=int, default=0, help="stall: second phase")
    parser.add_argument("--warmup", type=int, default=0, help="stall: messages before both")
    parser.add_argument("--cookie", action="append", help="a poster's Cookie header (repeat)")
    parser.add_argument("--messages", type=int, default=100000, help="at most this many")
    parser.add_argument("--window", type=int, default=64, help="closed loop: most in flight")
    parser.add_argument("--min-window", type=int, default=4, help="closed loop: least")
    parser.add_argument("--max-lag", type=float, default=1.0, help="closed loop: seconds ahead")
    parser.add_argument("--rate", type=float, default=10, help="open loop: messages a second")
    parser.add_argument("--seconds", type=float, default=8, help="closed loop: sending time")
    parser.add_argument("--pad", type=int, default=300, help="roomcast: body padding")
    parser.add_argument("--size", type=int, default=700, help="tutorial, bare: frame bytes")
    parser.add_argument("--last-seq", type=int, default=0)
    parser.add_argument("--wave", type=int, default=50, help="sockets connecting at once")
    parser.add_argument("--timeout", type=float, default=60, help="to drain after sending")
    parser.add_argument("--stall", type=float, default=15, help="longest wait for progress")
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
