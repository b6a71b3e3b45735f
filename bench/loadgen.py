"""The benchmark's load generator: real WebSocket clients on raw asyncio sockets.

Run by bench/run.py as its own process, pinned to the core the server is not on. It speaks
just enough RFC 6455 to be cheap per frame (the clients must outrun the server they measure):
an HTTP upgrade, masked text frames out, unmasked frames in. Every broadcast message carries
"m<index> <send time>"; each receiver checks that it gets every index once, in order.

    python bench/loadgen.py throughput --url ws://127.0.0.1:8001/ws/rooms/bench/ \
        --receivers 1000 --messages 200 --protocol roomcast --cookie sessionid=...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import statistics
import struct
import sys
import time
from urllib.parse import urlsplit

INDEX = re.compile(rb"m(\d+) (\d+\.\d+)")


class Client(asyncio.Protocol):
    """One WebSocket connection; counts the broadcast messages it receives."""

    def __init__(self, bench: Bench, number: int) -> None:
        self.bench, self.number = bench, number
        self.buffer = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.transport = None
        self.last_by_sender: dict[int, int] = {}
        self.received = 0
        self.reordered = 0
        self.seen: bytearray | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[:end].split(b"\r\n", 1)[0])
            del self.buffer[: end + 4]
            if b" 101 " not in status:
                self.handshaken.set_exception(ConnectionError(status.decode()))
                return
            self.upgraded = True
            self.handshaken.set_result(None)
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
            if opcode == 1:
                self.on_text(bytes(buffer[offset + head : offset + head + length]))
            elif opcode == 9:  # ping: answer, or the server drops us
                self.send(bytes(buffer[offset + head : offset + head + length]), opcode=10)
            offset += head + length
        del buffer[:offset]

    def on_text(self, payload: bytes) -> None:
        if self.number < 0:
            return  # a sender: it hears its own messages too, but is not counted
        if self.bench.frame_bytes is None and INDEX.search(payload):
            self.bench.frame_bytes = len(payload)
        # A frame may carry several messages (a gap filled in one batch): count each.
        for match in INDEX.finditer(payload):
            self.on_message(int(match[1]), float(match[2]))

    def on_message(self, index: int, sent_at: float) -> None:
        self.received += 1
        # Messages of one sender must arrive in the order sent (senders take turns).
        sender = index % self.bench.args.senders
        if index < self.last_by_sender.get(sender, -1):
            self.reordered += 1
        self.last_by_sender[sender] = max(self.last_by_sender.get(sender, -1), index)
        if self.seen is not None and index < len(self.seen):
            if self.seen[index]:
                self.bench.duplicated += 1
            self.seen[index] = 1
        if self.bench.latencies is not None:
            self.bench.latencies.append(time.time() - sent_at)
        if self.number == 0:
            self.bench.probe_got(index)
        self.bench.frame_in()

    def send(self, payload: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(head + mask + masked)

    def send_json(self, value: dict) -> None:
        self.send(json.dumps(value).encode())


class Bench:
    """The sockets of one run and what they counted."""

    def __init__(self, args) -> None:
        self.args = args
        self.url = urlsplit(args.url)
        self.clients: list[Client] = []
        self.frame_bytes: int | None = None
        self.duplicated = 0
        self.latencies: list[float] | None = None
        self.frames = 0
        self.frames_wanted = 0
        self.all_in = asyncio.Event()
        self.probe_index = -1
        self.probe_moved = asyncio.Event()

    def frame_in(self) -> None:
        self.frames += 1
        if self.frames_wanted and self.frames >= self.frames_wanted:
            self.all_in.set()

    def probe_got(self, index: int) -> None:
        self.probe_index = max(self.probe_index, index)
        self.probe_moved.set()

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
        await client.handshaken
        if self.args.protocol == "roomcast":
            client.send_json({"action": "sync", "last_seq": str(self.args.last_seq), "live": "1"})
        return client

    async def connect_receivers(self, count: int) -> None:
        for start in range(0, count, 100):  # in waves, not to flood the server's accept queue
            batch = range(start, min(start + 100, count))
            self.clients += await asyncio.gather(*(self.connect(n) for n in batch))
        await asyncio.sleep(0.5)  # the last syncs are answered

    def message(self, sender: Client, index: int) -> None:
        text = f"m{index} {time.time():.6f} " + "x" * self.args.pad
        if self.args.protocol == "roomcast":
            sender.send_json({"action": "post", "message": text})
        elif self.args.protocol == "tutorial":
            sender.send_json({"message": text})
        else:
            sender.send(text.encode())

    def counts(self, messages: int) -> dict:
        received = sum(c.received for c in self.clients)
        unique = received - self.duplicated
        return {
            "frames": received,
            "lost": messages * len(self.clients) - unique,
            "duplicated": self.duplicated,
            "reordered": sum(c.reordered for c in self.clients),
            "missing_at_first_socket": [
                i for i in range(messages) if self.clients and not self.clients[0].seen[i]
            ][:20],
            "frame_bytes": self.frame_bytes,
        }


async def throughput(args) -> dict:
    """Closed loop: keep `window` messages in flight (as seen by receiver 0)."""
    bench = Bench(args)
    await bench.connect_receivers(args.receivers)
    for client in bench.clients:
        client.seen = bytearray(args.messages)
    senders = [await bench.connect(-1 - n, args.cookie) for n in range(args.senders)]
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    sent = 0
    for index in range(args.messages):
        if time.perf_counter() - started > args.seconds:
            break  # a slow server gets fewer messages, not a longer run
        while index - bench.probe_index > args.window:
            bench.probe_moved.clear()
            await bench.probe_moved.wait()
        bench.message(senders[index % len(senders)], index)
        sent += 1
    bench.frames_wanted = sent * args.receivers
    if bench.frames >= bench.frames_wanted:
        bench.all_in.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(bench.all_in.wait(), timeout=args.timeout)
    elapsed = time.perf_counter() - started
    return {
        **bench.counts(sent),
        "messages": sent,
        "seconds": elapsed,
        "frames_per_s": bench.frames / elapsed,
    }


async def latency(args) -> dict:
    """Open loop: `rate` messages a second, whatever the server does; latency per frame."""
    bench = Bench(args)
    bench.latencies = []
    await bench.connect_receivers(args.receivers)
    for client in bench.clients:
        client.seen = bytearray(args.messages)
    sender = await bench.connect(-1, args.cookie)
    await asyncio.sleep(0.2)
    bench.frames_wanted = args.messages * args.receivers
    started = time.perf_counter()
    for index in range(args.messages):
        delay = started + index / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        bench.message(sender, index)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(bench.all_in.wait(), timeout=args.timeout)
    latencies = sorted(bench.latencies)

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0
        )

    return {
        **bench.counts(args.messages),
        "messages": args.messages,
        "offered_frames_per_s": args.rate * args.receivers,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0,
    }


async def idle(args) -> dict:
    """Open `receivers` sockets, say READY, and hold them until stdin closes."""
    bench = Bench(args)
    await bench.connect_receivers(args.receivers)
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return {"sockets": len(bench.clients)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["throughput", "latency", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--protocol", choices=["roomcast", "tutorial", "bare"], required=True)
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--pad", type=int, default=300)
    parser.add_argument("--cookie")
    parser.add_argument("--last-seq", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--seconds", type=float, default=10, help="cap on sending time")
    parser.add_argument("--cpu", type=int)
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    result = asyncio.run(
        {"throughput": throughput, "latency": latency, "idle": idle}[args.mode](args)
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
