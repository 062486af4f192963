"""Many JSON-stream listeners on one bin at a fixed POST rate: POST -> frame latency across all.

    fanout.py --ports P1[,P2...] --token T [--listeners 100] [--rate 200] [--seconds 10]
              [--workers 4] [--connections 32]

bench/run.py --fanout runs it against servers it starts; it also runs against any instance on
127.0.0.1 with a bin made for it (the bin must have no captures yet).

POSTs go to the first port, open loop, from bench/latency.py's client: each 1 KiB body carries
its sequence number and its scheduled send time. The listeners are spread round-robin over the
ports (with two processes, half of them get every capture through Redis) and run in --workers
processes of their own, since one Python process cannot read 100 x 200 frames a second.
Every process reads `time.perf_counter`, which on Linux is CLOCK_MONOTONIC, one clock for the
whole machine; so, as in latency.py, latency = the frame's arrival in its listener's process
minus the POST's scheduled send time in the sender's, client-side queueing included.

A listener the server closes with 4000 reconnects with `?after=` (bench/ws_listener.py's
loop), and the frames of that catch-up count, late. Prints {"event": "measuring", "pids"}
when the timed run starts, {"event": "measured"} once every listener has every frame (or
latency.DRAIN_SECONDS after the last answer), then the result, {"event": "fanout", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from typing import Any

from latency import DRAIN_SECONDS, WARMUP_RATE, WARMUP_REQUESTS, Client, percentile
from websockets.asyncio.client import connect
from ws_listener import Counter, receive_frames

READY_TIMEOUT = 60.0


class Timed(Counter):
    """A stream's frame counter that also keeps, per sequence number, the POST -> frame
    latency in ms (first arrival only)."""

    def __init__(self) -> None:
        super().__init__()
        self.latency: dict[int, float] = {}

    def add(self, message: str | bytes) -> dict[str, Any] | None:
        now = time.perf_counter()
        capture = super().add(message)
        if capture is not None and capture.get("body_text"):
            try:
                body = json.loads(capture["body_text"])
                seq, scheduled = int(body["seq"]), float(body["t"])
            except (ValueError, KeyError, TypeError):
                return capture  # not one of ours
            self.latency.setdefault(seq, (now - scheduled) * 1000)
        return capture


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def worker(urls: list[str]) -> None:
    """Open one stream per URL, then answer commands read from stdin, one per line:
    `missing FIRST END` -> how many of the sequence numbers FIRST..END-1 each listener still
    lacks, summed; `stop` -> what each listener received, then exit."""
    counters: list[Timed] = []
    tasks: list[asyncio.Task[None]] = []
    for url in urls:
        ws = await connect(url, max_size=None, open_timeout=10, proxy=None)
        counter = Timed()
        counters.append(counter)
        tasks.append(asyncio.create_task(receive_frames(ws, url, counter)))
    emit({"event": "ready", "listeners": len(urls), "pid": os.getpid()})
    loop = asyncio.get_running_loop()
    while True:
        words = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not words or words[0] == "stop":
            break
        if words[0] == "missing":
            wanted = range(int(words[1]), int(words[2]))
            missing = sum(1 for c in counters for seq in wanted if seq not in c.latency)
            emit({"event": "missing", "missing": missing})
    for task in tasks:
        task.cancel()
    listeners = []
    for counter in counters:
        seqs = sorted(counter.latency)
        listeners.append(
            {
                **counter.report("final"),
                "seqs": seqs,
                "ms": [round(counter.latency[s], 3) for s in seqs],
            }
        )
    emit({"event": "result", "listeners": listeners, "cpu_s": cpu_seconds_self()})


class Everything:
    """Stands for latency.Client's `received` (the frames its own stream got): this client has
    no stream, so its wait for frames ends at once; the workers are asked instead."""

    def __contains__(self, seq: object) -> bool:
        return True


async def start_workers(urls: list[str], workers: int) -> list[asyncio.subprocess.Process]:
    procs = []
    for chunk in (urls[i::workers] for i in range(workers)):
        if not chunk:
            continue
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            *chunk,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**26,  # the result line holds every latency of its listeners
        )
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        if not line or json.loads(line).get("event") != "ready":
            raise RuntimeError(f"a listener worker did not start: {line!r}")
    return procs


async def ask(procs: list[asyncio.subprocess.Process], command: str) -> list[dict[str, Any]]:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(command.encode() + b"\n")
        await proc.stdin.drain()
    answers = []
    for proc in procs:
        assert proc.stdout is not None
        answers.append(json.loads(await asyncio.wait_for(proc.stdout.readline(), 60)))
    return answers


async def delivered(procs: list[asyncio.subprocess.Process], first: int, end: int) -> None:
    """Wait until every listener has frames first..end-1, or DRAIN_SECONDS have passed."""
    deadline = time.perf_counter() + DRAIN_SECONDS
    while time.perf_counter() < deadline:
        answers = await ask(procs, f"missing {first} {end}")
        if not any(a["missing"] for a in answers):
            return
        await asyncio.sleep(0.1)


async def stop_workers(procs: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
    results = await ask(procs, "stop")
    for proc in procs:
        await proc.wait()
    return results


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    clock = time.get_clock_info("perf_counter").implementation
    if "CLOCK_MONOTONIC" not in clock:
        raise SystemExit(f"perf_counter is {clock}, not one clock for all processes")
    ports = [int(p) for p in args.ports.split(",")]
    urls = [
        f"ws://{args.host}:{ports[i % len(ports)]}/ws/bins/{args.token}/json/"
        for i in range(args.listeners)
    ]
    cpu_before = cpu_seconds_self()
    procs = await start_workers(urls, args.workers)
    client = Client(args.host, ports[0], args.token, args.connections)
    client.received = Everything()  # type: ignore[assignment]
    try:
        await client.open()
        # Warm-up: imports, caches and connections in the server, before anything is timed.
        warm = await client.run_rate(WARMUP_RATE, WARMUP_REQUESTS, 0)
        await delivered(procs, 0, WARMUP_REQUESTS)
        await asyncio.sleep(args.pause)
        count = max(1, round(args.rate * args.seconds))
        # The processes whose CPU time is the client's, for bench/run.py's CPU accounting,
        # which runs from here until "measured".
        pids = [os.getpid(), *(proc.pid for proc in procs)]
        emit({"event": "measuring", "pids": pids})
        run = await client.run_rate(args.rate, count, WARMUP_REQUESTS)
        await delivered(procs, WARMUP_REQUESTS, WARMUP_REQUESTS + count)
        emit({"event": "measured"})
    finally:
        await client.close()
        results = await stop_workers(procs)
    listeners = [listener for r in results for listener in r["listeners"]]
    measured = set(run.scheduled)
    all_ms: list[float] = []
    per_listener: list[int] = []
    for listener in listeners:
        got = [
            ms for seq, ms in zip(listener["seqs"], listener["ms"], strict=True) if seq in measured
        ]
        all_ms.extend(got)
        per_listener.append(len(got))
    statuses = [*warm.status.values(), *run.status.values()]
    stored = sum(1 for s in statuses if 200 <= s < 300)
    # Each listener connected before the bin's first capture: it must have 1..stored, in order.
    complete = sum(
        1
        for x in listeners
        if x["frames"] == x["distinct"] == stored
        and x["max_id"] == stored
        and x["gaps"] == 0
        and x["out_of_order"] == 0
    )
    http_ms = [(run.answered[s] - t) * 1000 for s, t in run.scheduled.items() if s in run.answered]
    lag_ms = [(run.sent[s] - t) * 1000 for s, t in run.scheduled.items() if s in run.sent]
    return {
        "event": "fanout",
        "listeners": len(listeners),
        "processes": len(ports),
        "rate": args.rate,
        "seconds": args.seconds,
        "sent": len(measured),
        "answered_2xx": sum(1 for s in run.status.values() if 200 <= s < 300),
        "non2xx": sum(1 for s in statuses if not 200 <= s < 300),
        "errors": len(warm.errors) + len(run.errors),
        "error_sample": (warm.errors + run.errors)[:3],
        "expected": len(listeners) * len(measured),
        "delivered": len(all_ms),
        "delivered_min_per_listener": min(per_listener, default=0),
        "listeners_complete_in_order": complete,
        "captures_stored": stored,
        "gaps": sum(x["gaps"] for x in listeners),
        "out_of_order": sum(x["out_of_order"] for x in listeners),
        "closes_4000": sum(x["closes_4000"] for x in listeners),
        "streams_ended": sorted({x["closed"] for x in listeners if x["closed"]}),
        "p50_ms": percentile(all_ms, 50),
        "p99_ms": percentile(all_ms, 99),
        "max_ms": max(all_ms, default=None),
        "http_p99_ms": percentile(http_ms, 99),
        "send_lag_p99_ms": percentile(lag_ms, 99),
        "client_cpu_s_whole_run": cpu_seconds_self()
        - cpu_before
        + sum(r["cpu_s"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs="+", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports", help="server ports, comma separated; POSTs go to the first")
    parser.add_argument("--token")
    parser.add_argument("--listeners", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="POSTs per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4, help="listener processes")
    parser.add_argument("--connections", type=int, default=32, help="sender connections")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds after the warm-up")
    args = parser.parse_args()
    if args.worker:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(worker(args.worker))
        return
    if not args.ports or not args.token:
        parser.error("--ports and --token are required")
    emit(asyncio.run(drive(args)))


if __name__ == "__main__":
    main()
