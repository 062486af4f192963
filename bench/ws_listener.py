"""Count the frames of a bin's JSON live stream, for bench/run.py (run it pinned to a CPU).

    ws_listener.py ws://127.0.0.1:PORT/ws/bins/<token>/json/ [--max-seconds N]

Prints one JSON line `{"event": "ready", ...}` once the stream is open, then answers commands
read from stdin, one per line, with one JSON line each:
    count   -> {"event": "count", "frames": n, "distinct": n, "other": n, "max_id": id}
    quit    -> the same with "event": "final", then exits
It exits by itself after --max-seconds, or when stdin closes or the stream ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class Counter:
    def __init__(self) -> None:
        self.frames = 0
        self.other = 0
        self.ids: set[Any] = set()
        self.max_id: Any = None
        self.closed: str | None = None

    def add(self, message: str | bytes) -> None:
        data = json.loads(message)
        if data.get("type") != "capture":
            self.other += 1
            return
        self.frames += 1
        capture_id = data["capture"]["id"]
        self.ids.add(capture_id)
        if self.max_id is None or capture_id > self.max_id:
            self.max_id = capture_id

    def report(self, event: str) -> dict[str, Any]:
        return {
            "event": event,
            "frames": self.frames,
            "distinct": len(self.ids),
            "other": self.other,
            "max_id": self.max_id,
            "closed": self.closed,
        }


def emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def receive_frames(ws: ClientConnection, counter: Counter) -> None:
    try:
        async for message in ws:
            counter.add(message)
    except Exception as exc:
        counter.closed = f"{type(exc).__name__}: {exc}"
    else:
        counter.closed = f"closed by server: {ws.close_code}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_seconds

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    counter = Counter()
    async with connect(args.url, max_size=None, open_timeout=10, proxy=None) as ws:
        extensions = [type(e).__name__ for e in ws.protocol.extensions]
        emit({"event": "ready", "extensions": extensions})
        receiver = asyncio.create_task(receive_frames(ws, counter))
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    line = await asyncio.wait_for(stdin.readline(), timeout=remaining)
                except TimeoutError:
                    break
                command = line.decode().strip()
                if not line or command == "quit":
                    break
                if command == "count":
                    emit(counter.report("count"))
        finally:
            receiver.cancel()
    emit(counter.report("final"))


if __name__ == "__main__":
    asyncio.run(main())
