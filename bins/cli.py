"""`webhook-inspector`: the command-line companion of an inspector instance.

    webhook-inspector forward https://hooks.example.com/<token> --to http://localhost:3000/hooks

follows the bin's JSON live stream and replays each new capture to a local target, for when the
inspector runs somewhere that cannot reach your laptop. It reconnects on its own and catches up
on what arrived while it was away (by capture id), in order.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

from . import outgoing

TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def parse_bin_url(url: str) -> tuple[str, str]:
    """(base URL, token) from a capture URL or an inspector page URL."""
    parts = urlsplit(url)
    match = TOKEN.search(parts.path)
    if parts.scheme not in ("http", "https") or not parts.netloc or match is None:
        raise ValueError(f"not a bin URL: {url!r} (expected https://host/<token>)")
    prefix = parts.path[: match.start()]
    for suffix in ("/bins/", "/"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
            break
    return urlunsplit((parts.scheme, parts.netloc, prefix, "", "")), match.group(0)


def outgoing_for(capture: dict[str, Any], target: str, keep_path: bool) -> outgoing.Outgoing:
    url = (
        outgoing.with_path(target, capture["path"], capture["query_string"])
        if keep_path
        else target
    )
    return outgoing.Outgoing(
        method=capture["method"],
        url=url,
        headers=[(n.encode("utf-8"), v.encode("utf-8")) for n, v in capture["headers"]],
        body=base64.b64decode(capture["body_base64"]),
    )


def describe(capture: dict[str, Any], answer: outgoing.Answer) -> str:
    line = f"#{capture['id']} {capture['method']} {capture['path'] or '/'}"
    if capture["query_string"]:
        line += "?" + capture["query_string"]
    if answer.error:
        return f"{line} -> failed: {answer.error}"
    return f"{line} -> {answer.status} in {answer.duration_ms:.0f} ms"


class Forwarder:
    def __init__(
        self, bin_url: str, target: str, *, keep_path: bool = False, out: TextIO = sys.stdout
    ) -> None:
        self.base, self.token = parse_bin_url(bin_url)
        self.target = outgoing.check_url(target)
        self.keep_path = keep_path
        self.out = out
        self.last_id: int | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def newest_id(self) -> int:
        url = f"{self.base}/api/bins/{self.token}/captures?limit=1"
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(url)
        if response.status_code == 404:
            raise SystemExit(f"no bin {self.token} at {self.base}")
        response.raise_for_status()
        captures = response.json()["captures"]
        return int(captures[0]["id"]) if captures else 0

    def stream_url(self) -> str:
        ws = "wss" if self.base.startswith("https") else "ws"
        rest = self.base.split("://", 1)[1]
        return f"{ws}://{rest}/ws/bins/{self.token}/json/?after={self.last_id}"

    async def run(self, max_deliveries: int | None = None) -> None:
        delay = 0.5
        delivered = 0
        while True:
            try:
                if self.last_id is None:
                    self.last_id = await self.newest_id()
                async with websockets.connect(self.stream_url(), max_size=None) as stream:
                    self.say(f"following {self.base}/{self.token} -> {self.target}")
                    delay = 0.5
                    async for frame in stream:
                        event = json.loads(frame)
                        if event.get("type") != "capture":
                            continue
                        capture = event["capture"]
                        if int(capture["id"]) <= self.last_id:
                            continue  # already replayed before a reconnect
                        answer = await outgoing.send(
                            outgoing_for(capture, self.target, self.keep_path)
                        )
                        self.last_id = max(self.last_id, int(capture["id"]))
                        self.say(describe(capture, answer))
                        delivered += 1
                        if max_deliveries is not None and delivered >= max_deliveries:
                            return
            except (OSError, websockets.WebSocketException, httpx.HTTPError) as exc:
                self.say(f"connection lost ({exc or type(exc).__name__}); retrying in {delay:g} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webhook-inspector", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    forward = commands.add_parser(
        "forward", help="replay a bin's new captures to a local target, live"
    )
    forward.add_argument("bin_url", help="the bin's capture URL or inspector page URL")
    forward.add_argument("--to", required=True, help="target URL, e.g. http://localhost:3000/hooks")
    forward.add_argument(
        "--keep-path",
        action="store_true",
        help="append each capture's sub-path and query string to the target URL",
    )
    args = parser.parse_args(argv)
    try:
        forwarder = Forwarder(args.bin_url, args.to, keep_path=args.keep_path)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(forwarder.run())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
