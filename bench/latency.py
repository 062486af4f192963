"""Open-loop POST -> live-stream latency at fixed rates, for bench/run.py (run it pinned to a CPU).

    latency.py --port P --token T [--rates 100,200,400,800] [--seconds 6] [--connections 32]

One process sends the POSTs and listens on the bin's JSON stream, so both ends use the same
`time.perf_counter` clock. POSTs leave on a fixed schedule (open loop: a slow answer does not
delay the next send) over a pool of keep-alive connections, written as raw HTTP/1.1 on asyncio
streams (a client costing ~1 ms of CPU per request could not keep up with 800/s). Each 1 KiB
JSON body carries its sequence number and its scheduled send time; the latency of a capture is
the time its frame arrived minus its scheduled send time, so client-side queueing is counted
rather than hidden. Prints one JSON line per rate, then {"event": "done"}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

BODY_SIZE = 1024
WARMUP_REQUESTS = 100
WARMUP_RATE = 200.0
DRAIN_SECONDS = 5.0


def body_for(seq: int, scheduled: float) -> bytes:
    head = f'{{"event":"bench.latency","seq":{seq},"t":{scheduled:.6f},"pad":"'
    tail = '"}'
    return (head + "x" * (BODY_SIZE - len(head) - len(tail)) + tail).encode()


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class Run:
    """What happened to each request of one rate."""

    scheduled: dict[int, float] = field(default_factory=dict)
    sent: dict[int, float] = field(default_factory=dict)
    answered: dict[int, float] = field(default_factory=dict)
    status: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class Client:
    def __init__(self, host: str, port: int, token: str, connections: int) -> None:
        self.host = host
        self.port = port
        self.head = (
            f"POST /{token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {BODY_SIZE}\r\n\r\n"
        ).encode()
        self.size = connections
        self.idle: asyncio.Queue[Conn | None] = asyncio.Queue()
        self.received: dict[int, float] = {}
        self.frames = 0
        self.ws_error: str | None = None

    async def open(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await self.connect())

    async def connect(self) -> Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return Conn(reader, writer)

    async def close(self) -> None:
        while not self.idle.empty():
            conn = self.idle.get_nowait()
            if conn is not None:
                conn.writer.close()

    async def post(self, run: Run, seq: int, scheduled: float) -> None:
        conn = await self.idle.get()
        try:
            if conn is None:  # a connection broke earlier: open its replacement now
                conn = await self.connect()
            conn.writer.write(self.head + body_for(seq, scheduled))
            run.sent[seq] = time.perf_counter()
            run.status[seq] = await read_response(conn.reader)
            run.answered[seq] = time.perf_counter()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            run.errors.append(f"{type(exc).__name__}: {exc}")
            if conn is not None:
                conn.writer.close()
            conn = None
        finally:
            self.idle.put_nowait(conn)

    async def listen(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                now = time.perf_counter()
                data = json.loads(message)
                if data.get("type") != "capture":
                    continue
                self.frames += 1
                text = data["capture"].get("body_text")
                if not text:
                    continue
                try:
                    seq = json.loads(text)["seq"]
                except (ValueError, KeyError, TypeError):
                    continue
                self.received.setdefault(seq, now)
        except Exception as exc:
            self.ws_error = f"{type(exc).__name__}: {exc}"

    async def run_rate(self, rate: float, count: int, first_seq: int) -> Run:
        run = Run()
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.05
        for i in range(count):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            seq = first_seq + i
            run.scheduled[seq] = scheduled
            tasks.append(asyncio.create_task(self.post(run, seq, scheduled)))
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS * 2)
            for task in pending:
                task.cancel()
                run.errors.append("no answer in time")
        deadline = time.perf_counter() + DRAIN_SECONDS
        while time.perf_counter() < deadline:
            if all(seq in self.received for seq in run.scheduled):
                break
            await asyncio.sleep(0.02)
        return run


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response with a Content-Length body; return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("response without Content-Length")
    if length:
        await reader.readexactly(length)
    return status


def summarize(rate: float, seconds: float, run: Run, received: dict[int, float]) -> dict[str, Any]:
    ws_ms = [(received[s] - t) * 1000 for s, t in run.scheduled.items() if s in received]
    http_ms = [(run.answered[s] - t) * 1000 for s, t in run.scheduled.items() if s in run.answered]
    lag_ms = [(run.sent[s] - t) * 1000 for s, t in run.scheduled.items() if s in run.sent]
    statuses = list(run.status.values())
    return {
        "event": "rate",
        "rate": rate,
        "seconds": seconds,
        "sent": len(run.scheduled),
        "answered_2xx": sum(1 for s in statuses if 200 <= s < 300),
        "non2xx": sum(1 for s in statuses if not 200 <= s < 300),
        "errors": len(run.errors),
        "error_sample": run.errors[:3],
        "delivered": len(ws_ms),
        "ws_p50_ms": percentile(ws_ms, 50),
        "ws_p99_ms": percentile(ws_ms, 99),
        "ws_max_ms": max(ws_ms) if ws_ms else None,
        "http_p50_ms": percentile(http_ms, 50),
        "http_p99_ms": percentile(http_ms, 99),
        "send_lag_p99_ms": percentile(lag_ms, 99),
    }


def emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rates", default="100,200,400,800")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between rates")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    client = Client(args.host, args.port, args.token, args.connections)
    url = f"ws://{args.host}:{args.port}/ws/bins/{args.token}/json/"
    async with connect(url, max_size=None, open_timeout=10, proxy=None) as ws:
        listener = asyncio.create_task(client.listen(ws))
        await client.open()
        try:
            await client.run_rate(WARMUP_RATE, WARMUP_REQUESTS, 0)
            seq = WARMUP_REQUESTS
            for rate in rates:
                await asyncio.sleep(args.pause)
                count = max(1, round(rate * args.seconds))
                run = await client.run_rate(rate, count, seq)
                seq += count
                result = summarize(rate, args.seconds, run, client.received)
                result["ws_error"] = client.ws_error
                emit(result)
        finally:
            await client.close()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    emit({"event": "done", "frames": client.frames})


if __name__ == "__main__":
    asyncio.run(main())
