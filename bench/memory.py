"""What a burst of big or slow clients costs the server in memory, and whether it comes back.

    .venv/bin/python bench/memory.py [--settle SECONDS] [--phases uploads,list,streams]
                                     [--database-url postgres://...]

`make bench` runs it after bench/run.py. It ends with two plain verdicts: the server's RSS
stayed under 400 MB throughout (the peak), and it came back near its start (the end within
25 MB of the start); the exit status is 1 when either fails.

Starts the real server as `make run` starts it (SQLite unless --database-url names an empty
PostgreSQL database, in-memory channel layer, a temporary DATA_DIR, default settings) and
reads its RSS from /proc/<pid>/status at the start, every 50 ms during each phase (the peak)
and a few seconds after each phase (what stayed):

1. uploads: 20 parallel POSTs of 8 MiB each to one bin.
2. list:    GET /api/bins/<token>/captures?limit=500 over that bin (20 captures of 8 MiB): lists
            leave bodies over INLINE_BODY_BYTES (64 KiB) out, so this must stay small.
3. streams: 20 JSON stream clients that never read (small receive buffers) while 16 KiB
            captures arrive at 100/s for 10 s; then they go away.

RSS is in MB (10^6 bytes) throughout. Every server and client started here is stopped at the
end, on error too. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from run import DAPHNE, HOST, ROOT, base_env, free_port, make_run_flags, migrate, rss_kib

APP = "inspector.asgi:application"
UPLOADS = 20
UPLOAD_BYTES = 8 * 1024 * 1024
STREAM_CLIENTS = 20
STREAM_RATE = 100  # captures per second
STREAM_SECONDS = 10.0
STREAM_BODY_BYTES = 16 * 1024
PEAK_LIMIT_MB = 400.0  # the server's RSS must stay under this throughout
NEAR_START_MB = 25.0  # and come back within this of where it started


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def mb(kib: int) -> str:
    return f"{kib * 1024 / 1e6:7.1f} MB"


class Sampler:
    """Reads the server's RSS every 50 ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_kib(self.pid)["VmRSS"])
            time.sleep(0.05)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


def phase(
    name: str, pid: int, settle: float, action: Callable[[], tuple[str, bool]]
) -> dict[str, object]:
    """Run one phase (its action says what happened and whether every request got its 2xx)."""
    before = rss_kib(pid)["VmRSS"]
    sampler = Sampler(pid)
    started = time.monotonic()
    note, ok = action()
    took = time.monotonic() - started
    peak = sampler.stop()
    time.sleep(settle)
    after = rss_kib(pid)["VmRSS"]
    log(
        f"{name:8} before {mb(before)}  peak {mb(peak)}  after {settle:.0f} s {mb(after)}"
        f"  ({took:.1f} s; {note})"
    )
    return {"phase": name, "before": before, "peak": peak, "after": after, "ok": ok}


def uploads(base: str, token: str) -> tuple[str, bool]:
    body = b"x" * UPLOAD_BYTES

    def post(_: int) -> int:
        with httpx.Client(trust_env=False, timeout=120) as client:
            return client.post(f"{base}/{token}", content=body).status_code

    with ThreadPoolExecutor(UPLOADS) as pool:
        statuses = list(pool.map(post, range(UPLOADS)))
    return f"statuses {sorted(set(statuses))}", set(statuses) == {200}


def big_list(base: str, token: str) -> tuple[str, bool]:
    with httpx.Client(trust_env=False, timeout=300) as client:
        response = client.get(f"{base}/api/bins/{token}/captures", params={"limit": 500})
    captures = response.json().get("captures", []) if response.status_code == 200 else []
    omitted = sum(1 for c in captures if c.get("body_omitted"))
    return (
        f"status {response.status_code}, {len(response.content) / 1e6:.2f} MB answer, "
        f"{len(captures)} captures, {omitted} bodies left out"
    ), response.status_code == 200


def open_stream(port: int, token: str) -> socket.socket:
    """A websocket client that completes the handshake and then never reads."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((HOST, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws/bins/{token}/json/ HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise RuntimeError("stream refused")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return s


def streams(base: str, port: int, token: str) -> tuple[str, bool]:
    clients = [open_stream(port, token) for _ in range(STREAM_CLIENTS)]
    body = b"y" * STREAM_BODY_BYTES
    sent = 0
    statuses: set[int] = set()
    try:
        with httpx.Client(trust_env=False, timeout=30) as client:
            started = time.monotonic()
            while time.monotonic() - started < STREAM_SECONDS:
                statuses.add(client.post(f"{base}/{token}", content=body).status_code)
                sent += 1
                pause = started + sent / STREAM_RATE - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
    finally:
        for s in clients:
            s.close()
    return (
        f"{sent} captures (statuses {sorted(statuses)}) to {STREAM_CLIENTS} clients that "
        "never read, then closed"
    ), statuses == {200}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before 'after'")
    parser.add_argument("--phases", default="uploads,list,streams", help="which, in this order")
    parser.add_argument(
        "--database-url", help="an empty PostgreSQL database on 127.0.0.1 (default: SQLite)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inspector-memory-") as tmp:
        env = {**base_env(), "DATA_DIR": tmp}
        if args.database_url:
            if urlsplit(args.database_url).hostname != HOST:
                parser.error(f"only {HOST} may be used")
            env["DATABASE_URL"] = args.database_url
        migrate(env)
        port = free_port()
        log_path = Path(tmp) / "server.log"
        command = [DAPHNE, "--bind", HOST, "--port", str(port), *make_run_flags(), APP]
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://{HOST}:{port}"
            wait_ready(base, proc)
            with httpx.Client(trust_env=False, timeout=10) as client:
                big = client.post(f"{base}/api/bins").json()["token"]
                live = client.post(f"{base}/api/bins").json()["token"]
                for _ in range(20):  # warm up: imports, caches, connections
                    client.post(f"{base}/{live}", content=b"{}")
                client.delete(f"{base}/api/bins/{live}/captures")
            time.sleep(1)
            start = rss_kib(proc.pid)
            log(f"start    {mb(start['VmRSS'])}")
            actions = {
                "uploads": lambda: uploads(base, big),
                "list": lambda: big_list(base, big),
                "streams": lambda: streams(base, port, live),
            }
            results = [
                phase(name, proc.pid, args.settle, actions[name]) for name in args.phases.split(",")
            ]
            end = rss_kib(proc.pid)
            log(f"end      {mb(end['VmRSS'])}  (high-water mark {mb(end['VmHWM'])})")
            print()
            print("| phase | before | peak | after |")
            print("|---|---|---|---|")
            for r in results:
                cells = [mb(int(str(r[k]))).strip() for k in ("before", "peak", "after")]
                print(f"| {r['phase']} | " + " | ".join(cells) + " |")
            print(f"| start → end | {mb(start['VmRSS']).strip()} | | {mb(end['VmRSS']).strip()} |")
            failed = verdicts(start, end, results)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.returncode not in (0, -15):
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
    return 1 if failed else 0


def verdicts(start: dict[str, int], end: dict[str, int], results: list[dict[str, object]]) -> bool:
    """Print the plain answers; True when one of them is no."""
    # VmHWM is the kernel's own peak of RSS, warm-up included: nothing between the samples is
    # missed.
    peak_mb = end["VmHWM"] * 1024 / 1e6
    start_mb = start["VmRSS"] * 1024 / 1e6
    end_mb = end["VmRSS"] * 1024 / 1e6
    under = peak_mb < PEAK_LIMIT_MB
    back = end_mb - start_mb <= NEAR_START_MB
    answered = all(r["ok"] for r in results)
    print()
    print(
        f"RSS stayed under {PEAK_LIMIT_MB:g} MB: {'yes' if under else 'NO'} "
        f"(high-water mark {peak_mb:.1f} MB)"
    )
    print(
        f"RSS came back near its start: {'yes' if back else 'NO'} ({start_mb:.1f} MB -> "
        f"{end_mb:.1f} MB, {end_mb - start_mb:+.1f} MB; near = within {NEAR_START_MB:g} MB)"
    )
    print(f"every request answered as expected: {'yes' if answered else 'NO'}")
    return not (under and back and answered)


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 40
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.get(f"{base}/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
    raise RuntimeError("server did not start")


if __name__ == "__main__":
    sys.exit(main())
