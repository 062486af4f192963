"""Count the frames of a bin's JSON live stream, for bench/run.py (run it pinned to a CPU).

    ws_listener.py ws://127.0.0.1:PORT/ws/bins/<token>/json/ [--max-seconds N]

Prints one JSON line `{"event": "ready", ...}` once the stream is open, then answers commands
read from stdin, one per line, with one JSON line each:
    count   -> {"event": "count", "frames": n, "distinct": n, "max_id": id, "gaps": n, ...}
    quit    -> the same with "event": "final", then exits
It exits by itself after --max-seconds, or when stdin closes or the stream ends.

Capture ids are the capture's number in its bin (1, 2, 3... in commit order), so a listener
that connected before the bin's first capture must see exactly 1..n: `gaps` counts frames whose
id skipped numbers, `out_of_order` frames whose id was not above the one before. A stream the
server closes with 4000 (it cannot vouch the client got everything) is reopened with
`?after=<last id>`, as the contract tells clients to do; `closes_4000` counts them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

BEHIND = 4000


class Counter:
    def __init__(self) -> None:
        self.frames = 0
        self.other = 0
        self.ids: set[Any] = set()
        self.max_id: Any = None
        self.last_id = 0
        self.gaps = 0
        self.out_of_order = 0
        self.closes_4000 = 0
        self.closed: str | None = None

    def add(self, message: str | bytes) -> dict[str, Any] | None:
        """Count one frame; return the capture it carries (None for other frame types)."""
        data = json.loads(message)
        if data.get("type") != "capture":
            self.other += 1
            return None
        self.frames += 1
        capture: dict[str, Any] = data["capture"]
        capture_id = capture["id"]
        if capture_id <= self.last_id:
            self.out_of_order += 1
        elif capture_id > self.last_id + 1:
            self.gaps += 1
        self.last_id = max(self.last_id, capture_id)
        self.ids.add(capture_id)
        if self.max_id is None or capture_id > self.max_id:
            self.max_id = capture_id
        return capture

    def report(self, event: str) -> dict[str, Any]:
        return {
            "event": event,
            "frames": self.frames,
            "distinct": len(self.ids),
            "other": self.other,
            "max_id": self.max_id,
            "gaps": self.gaps,
            "out_of_order": self.out_of_order,
            "closes_4000": self.closes_4000,
            "closed": self.closed,
        }


def emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def receive_frames(ws: ClientConnection, url: str, counter: Counter) -> None:
    """Count frames until the stream ends; after a 4000 close, reconnect with ?after=."""
    while True:
        try:
            async for message in ws:
                counter.add(message)
        except ConnectionClosed:
            pass
        except Exception as exc:
            counter.closed = f"{type(exc).__name__}: {exc}"
            return
        if ws.close_code != BEHIND:
            counter.closed = f"closed by server: {ws.close_code}"
            return
        counter.closes_4000 += 1
        try:
            ws = await connect(
                f"{url}?after={counter.last_id}", max_size=None, open_timeout=10, proxy=None
            )
        except Exception as exc:
            counter.closed = f"reconnect failed: {type(exc).__name__}: {exc}"
            return


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
        receiver = asyncio.create_task(receive_frames(ws, args.url, counter))
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
