"""The benchmark's load generator: real WebSocket clients on raw asyncio sockets.

Run by bench/run.py as its own process, pinned to the core the server is not on. It speaks
just enough RFC 6455 to be cheap per frame (the clients must outrun the server they measure):
an HTTP upgrade, masked frames out, unmasked frames in, pings answered. Every broadcast
message carries "m<index> <send time>"; each receiver checks that it gets every index once,
and each sender's messages in the order sent (and, from Roomcast, rising `data-seq`).

    python bench/loadgen.py throughput --url ws://127.0.0.1:8001/ws/rooms/bench/ \
        --receivers 1000 --protocol roomcast --cookie sessionid=...

It prints MARK when the measured part starts (bench/run.py samples the server's CPU time
and memory then) and one JSON object on its last line of output. Anything that stops the run (a
refused post, a socket the server closes, no progress for `--stall` seconds) ends it at
once with the reason in "error", instead of hanging.
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
import statistics
import struct
import sys
import time
from urllib.parse import urlsplit

INDEX = re.compile(rb"m(\d+) (\d+\.\d+)")
SEQ = re.compile(rb'data-seq="(\d+)"')
# Roomcast's error fragment; the form reset a sender gets after each post has it empty.
ERROR = re.compile(rb'id="message-error"[^>]*>([^<]*)<')
TUTORIAL_WRAPPER = len(json.dumps({"message": ""}))


class Client(asyncio.Protocol):
    """One WebSocket connection; counts the broadcast messages it receives."""

    def __init__(self, bench: Bench, number: int) -> None:
        self.bench, self.number = bench, number
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

    @property
    def is_sender(self) -> bool:
        return self.number < 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.handshaken.done():
            self.handshaken.set_exception(ConnectionError("closed during the handshake"))
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
        return True

    def on_close(self, payload: bytes) -> None:
        code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
        reason = payload[2:].decode(errors="replace")
        if not self.closing:
            self.bench.fail(f"the server closed socket {self.number}: code {code} {reason}")
        self.closing = True
        self.transport.close()

    def on_text(self, payload: bytes) -> None:
        if self.is_sender:
            # Senders hear their own messages too, but are not counted; a refused post is
            # fatal (a rate limit, say): the run would otherwise wait for it forever.
            error = ERROR.search(payload)
            if error and error[1].strip():
                text = html.unescape(error[1].decode()).strip()
                self.bench.fail(f"the server refused a post: {text!r}")
            return
        if self.bench.frame_bytes is None and INDEX.search(payload):
            self.bench.frame_bytes = len(payload)
        if self.bench.check_seq:
            for match in SEQ.finditer(payload):
                seq = int(match[1])
                if seq < self.last_seq:
                    self.reordered += 1
                self.last_seq = max(self.last_seq, seq)
        # A frame may carry several messages (a gap filled in one batch): count each.
        for match in INDEX.finditer(payload):
            self.on_message(int(match[1]), float(match[2]))

    def on_message(self, index: int, sent_at: float) -> None:
        self.received += 1
        # Messages of one sender must arrive in the order sent (senders take turns).
        sender = index % self.bench.args.senders
        last = self.last_by_sender.get(sender, -1)
        if index < last:
            self.reordered += 1
        else:
            self.last_by_sender[sender] = index
        if self.seen is not None and index < len(self.seen):
            if self.seen[index]:
                self.bench.duplicated += 1
            self.seen[index] = 1
        if self.bench.latencies is not None:
            self.bench.latencies.append(time.time() - sent_at)
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
        self.url = urlsplit(args.url)
        self.check_seq = args.protocol == "roomcast"
        self.clients: list[Client] = []
        self.senders: list[Client] = []
        self.frame_bytes: int | None = None
        self.duplicated = 0
        self.latencies: list[float] | None = None
        self.deliveries = 0
        self.deliveries_wanted = 0
        self.done = asyncio.Event()
        self.error: str | None = None
        self.started = time.perf_counter()
        self.wake_at = float("inf")
        self.progress = asyncio.Event()

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

    async def connect(self, number: int, cookie: str | None = None) -> Client:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: Client(self, number), self.url.hostname, self.url.port
        )
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self.url.path} HTTP/1.1",
            f"Host: {self.url.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: http://{self.url.netloc}",
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

    async def connect_receivers(self, count: int) -> None:
        for start in range(0, count, 100):  # in waves, not to flood the server's accept queue
            batch = range(start, min(start + 100, count))
            self.clients += await asyncio.gather(*(self.connect(n) for n in batch))
        await asyncio.sleep(0.5)  # the last syncs are answered

    async def connect_senders(self) -> None:
        cookies = self.args.cookie or [None]
        for n in range(self.args.senders):
            self.senders.append(await self.connect(-1 - n, cookies[n % len(cookies)]))
        await asyncio.sleep(0.2)

    def expect(self, messages: int) -> None:
        for client in self.clients:
            client.seen = bytearray(messages)

    def message(self, index: int) -> None:
        """Send message `index` from its sender, padded to the run's frame size."""
        sender = self.senders[index % len(self.senders)]
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
        done = self.deliveries / len(self.clients)
        rate = done / max(time.perf_counter() - self.started, 1e-3)
        limit = min(self.args.window, max(self.args.min_window, rate * self.args.max_lag))
        return index - done >= limit

    async def wait_to_send(self, index: int) -> None:
        """Until the closed loop may send message `index`."""
        while self.too_far_ahead(index) and self.error is None:
            self.wake_at = self.deliveries + len(self.clients)  # one more message's worth
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), self.args.stall)
            except TimeoutError:
                self.fail(f"no message delivered for {self.args.stall:.0f} s")
        self.wake_at = float("inf")

    async def drain(self, messages: int) -> None:
        """Wait for every receiver to get every message (or for the timeout)."""
        self.deliveries_wanted = messages * len(self.clients)
        if self.deliveries >= self.deliveries_wanted:
            self.done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout=self.args.timeout)

    def counts(self, messages: int) -> dict:
        received = sum(c.received for c in self.clients)
        unique = received - self.duplicated
        first = self.clients[0].seen if self.clients else bytearray(messages)
        return {
            "messages": messages,
            "deliveries": received,
            "lost": messages * len(self.clients) - unique,
            "duplicated": self.duplicated,
            "reordered": sum(c.reordered for c in self.clients),
            "missing_at_first_socket": [i for i in range(messages) if not first[i]][:20],
            "frame_bytes": self.frame_bytes,
            "error": self.error,
        }

    def close(self) -> None:
        for client in self.clients + self.senders:
            client.close()


def mark() -> None:
    """Tell bench/run.py that the measured part starts now."""
    print("MARK", flush=True)


async def throughput(bench: Bench) -> dict:
    """Closed loop: senders take turns, at most `window` messages ahead of receiver 0."""
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
    return {
        **bench.counts(sent),
        "seconds": elapsed,
        "frames_per_s": bench.deliveries / elapsed,
        "loadgen_cpu": (time.process_time() - cpu) / elapsed,
    }


async def latency(bench: Bench) -> dict:
    """Open loop: `rate` messages a second, whatever the server does; latency per frame."""
    args = bench.args
    bench.latencies = []
    await bench.connect_receivers(args.receivers)
    bench.expect(args.messages)
    await bench.connect_senders()
    mark()
    cpu, started = time.process_time(), time.perf_counter()
    for index in range(args.messages):
        delay = started + index / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if bench.error:
            break
        bench.message(index)
    await bench.drain(args.messages)
    elapsed = time.perf_counter() - started
    latencies = sorted(bench.latencies)

    def percentile(q: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        **bench.counts(args.messages),
        "offered_frames_per_s": round(args.rate * args.receivers),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": percentile(1.0),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else None,
        "loadgen_cpu": (time.process_time() - cpu) / elapsed,
    }


async def idle(bench: Bench) -> dict:
    """Open `receivers` sockets, mark, and hold them until stdin closes."""
    await bench.connect_receivers(bench.args.receivers)
    mark()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return {"sockets": len(bench.clients), "error": bench.error}


async def run(args) -> dict:
    bench = Bench(args)
    mode = {"throughput": throughput, "latency": latency, "idle": idle}[args.mode]
    try:
        return await mode(bench)
    except (OSError, TimeoutError) as error:
        return {"error": f"could not connect: {error or type(error).__name__}"}
    finally:
        bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket load for bench/run.py")
    parser.add_argument("mode", choices=["throughput", "latency", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--protocol", choices=["roomcast", "tutorial", "bare"], required=True)
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--cookie", action="append", help="a sender's Cookie header (repeat)")
    parser.add_argument("--messages", type=int, default=100000, help="at most this many")
    parser.add_argument("--window", type=int, default=64, help="closed loop: most in flight")
    parser.add_argument("--min-window", type=int, default=4, help="closed loop: least")
    parser.add_argument("--max-lag", type=float, default=1.0, help="closed loop: seconds ahead")
    parser.add_argument("--rate", type=float, default=10, help="open loop: messages a second")
    parser.add_argument("--seconds", type=float, default=8, help="closed loop: sending time")
    parser.add_argument("--pad", type=int, default=300, help="roomcast: body padding")
    parser.add_argument("--size", type=int, default=700, help="tutorial, bare: frame bytes")
    parser.add_argument("--last-seq", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60, help="to drain after sending")
    parser.add_argument("--stall", type=float, default=15, help="longest wait for progress")
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
