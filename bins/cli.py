"""`webhook-inspector`: the command-line companion of an inspector instance.

    webhook-inspector forward https://inspector.example.com/bins/<token>/ --to http://localhost:3000/hooks

follows the bin's JSON live stream and replays each new capture to a local target, for when the
inspector runs somewhere that cannot reach your laptop. It reconnects on its own and catches up
on what arrived while it was away (by capture number), in order, and records each replay in the
capture's delivery history on the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import ssl
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

from . import outgoing

TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# Reconnect backoff: from MIN up to MAX seconds, doubling after each failed attempt.
BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
# The server closes a stream with this code when the client may have missed captures: come
# back at once, with ?after=.
BEHIND = 4000


class BinGone(Exception):
    """The bin does not exist (any more) on that instance: nothing to follow."""


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


def wire_headers(capture: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The capture's headers, byte for byte (`headers_base64` where one is not UTF-8)."""
    if capture.get("headers_base64"):
        return [(base64.b64decode(n), base64.b64decode(v)) for n, v in capture["headers_base64"]]
    return [(n.encode("utf-8"), v.encode("utf-8")) for n, v in capture["headers"]]


def outgoing_for(
    capture: dict[str, Any], body: bytes, target: str, keep_path: bool
) -> outgoing.Outgoing:
    url = (
        outgoing.with_path(target, capture["path"], capture["query_string"])
        if keep_path
        else target
    )
    return outgoing.Outgoing(capture["method"], url, wire_headers(capture), body)


def describe(capture: dict[str, Any], answer: outgoing.Answer) -> str:
    line = f"#{capture['id']} {capture['method']} {capture['path'] or '/'}"
    if capture["query_string"]:
        line += "?" + capture["query_string"]
    if answer.error:
        return f"{line} -> failed: {answer.error}"
    return f"{line} -> {answer.status} in {answer.duration_ms:.0f} ms"


def plain(exc: BaseException) -> str:
    """A lost connection to the instance, in plain words."""
    if isinstance(exc, websockets.ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd else None
        if code == BEHIND:
            return "the server could not vouch that every capture reached us"
        return f"the stream closed (code {code})" if code else "the connection dropped"
    if isinstance(exc, websockets.InvalidStatus):
        return f"the server refused the stream ({exc.response.status_code})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the instance running?)"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"the server answered {exc.response.status_code}"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return "timed out"
    return str(exc) or type(exc).__name__


class Forwarder:
    def __init__(
        self,
        bin_url: str,
        target: str,
        *,
        keep_path: bool = False,
        verify: ssl.SSLContext | bool = True,
        out: TextIO = sys.stdout,
    ) -> None:
        self.base, self.token = parse_bin_url(bin_url)
        self.target = outgoing.check_url(target)
        self.keep_path = keep_path
        self.verify = verify
        self.out = out
        self.last_id: int | None = None
        self.api = f"{self.base}/api/bins/{self.token}"

    def say(self, text: str) -> None:
        print(f"{datetime.now().strftime('%H:%M:%S')} {text}", file=self.out, flush=True)

    async def check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code in (403, 404):
            raise BinGone(
                f"no bin {self.token} at {self.base} ({response.status_code}): it was deleted, "
                "expired, or this is not its inspector's address"
            )
        response.raise_for_status()
        return response

    async def newest_id(self, http: httpx.AsyncClient) -> int:
        response = await self.check(await http.get(f"{self.api}/captures?limit=1"))
        captures = response.json()["captures"]
        return int(captures[0]["id"]) if captures else 0

    def stream_url(self) -> str:
        ws = "wss" if self.base.startswith("https") else "ws"
        rest = self.base.split("://", 1)[1]
        return f"{ws}://{rest}/ws/bins/{self.token}/json/?after={self.last_id}"

    async def body_of(self, http: httpx.AsyncClient, capture: dict[str, Any]) -> bytes:
        """The exact body: from the frame, or from /raw where the stream left it out."""
        if not capture.get("body_omitted"):
            return base64.b64decode(capture["body_base64"])
        response = await self.check(await http.get(f"{self.api}/captures/{capture['id']}/raw"))
        return response.content

    async def record(
        self,
        http: httpx.AsyncClient,
        capture: dict[str, Any],
        sent: outgoing.Outgoing,
        answer: outgoing.Answer,
    ) -> None:
        """Add this replay to the capture's delivery history on the server (best effort)."""
        record = {
            "target_url": sent.url,
            "method": sent.method,
            "status": answer.status,
            "headers": [list(pair) for pair in answer.headers],
            "body_base64": base64.b64encode(answer.body).decode(),
            "body_size": answer.body_size,
            "duration_ms": answer.duration_ms,
            "error": answer.error,
        }
        try:
            await http.post(f"{self.api}/captures/{capture['id']}/deliveries", json=record)
        except httpx.HTTPError as exc:
            self.say(f"#{capture['id']}: could not record the delivery on the server: {plain(exc)}")

    async def replay(self, http: httpx.AsyncClient, capture: dict[str, Any]) -> None:
        sent = outgoing_for(capture, await self.body_of(http, capture), self.target, self.keep_path)
        answer = await outgoing.send(sent, verify=self.verify)
        self.say(describe(capture, answer))
        await self.record(http, capture, sent, answer)

    async def run(self, max_deliveries: int | None = None) -> None:
        delay = BACKOFF_MIN
        delivered = 0
        async with httpx.AsyncClient(timeout=30) as http:
            while True:
                try:
                    if self.last_id is None:
                        self.last_id = await self.newest_id(http)
                    async with websockets.connect(self.stream_url(), max_size=2**20) as stream:
                        self.say(f"following {self.base}/{self.token} -> {self.target}")
                        async for frame in stream:
                            event = json.loads(frame)
                            if event.get("type") != "capture":
                                continue
                            capture = event["capture"]
                            if int(capture["id"]) <= self.last_id:
                                continue  # already replayed before a reconnect
                            await self.replay(http, capture)
                            self.last_id = int(capture["id"])
                            delay = BACKOFF_MIN  # a working stream resets the backoff
                            delivered += 1
                            if max_deliveries is not None and delivered >= max_deliveries:
                                return
                    # The server closed the stream cleanly (a restart): come back, gently.
                    await self.wait(ConnectionResetError("the server closed the stream"), delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                except BinGone:
                    raise
                except websockets.InvalidStatus as exc:
                    if exc.response.status_code in (403, 404):
                        raise BinGone(
                            f"the server refused the stream of bin {self.token} "
                            f"({exc.response.status_code}): it does not exist (any more)"
                        ) from exc
                    await self.wait(exc, delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                except websockets.ConnectionClosed as exc:
                    if exc.rcvd is not None and exc.rcvd.code == BEHIND:
                        self.say(f"reconnecting at once: {plain(exc)}")
                        continue
                    await self.wait(exc, delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                except (OSError, websockets.WebSocketException, httpx.HTTPError) as exc:
                    await self.wait(exc, delay)
                    delay = min(delay * 2, BACKOFF_MAX)

    async def wait(self, exc: BaseException, delay: float) -> None:
        self.say(f"connection lost ({plain(exc)}); retrying in {delay:g} s")
        await asyncio.sleep(delay)


def tls_setting(insecure: bool, ca_file: str | None) -> ssl.SSLContext | bool:
    """How to check a local HTTPS target's certificate."""
    if insecure:
        return False
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webhook-inspector", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    forward = commands.add_parser(
        "forward", help="replay a bin's new captures to a local target, live"
    )
    forward.add_argument(
        "bin_url",
        help="the bin's inspector page URL, or its capture URL when captures share the "
        "inspector's origin",
    )
    forward.add_argument("--to", required=True, help="target URL, e.g. http://localhost:3000/hooks")
    forward.add_argument(
        "--keep-path",
        action="store_true",
        help="append each capture's sub-path and query string to the target URL",
    )
    forward.add_argument(
        "--insecure",
        action="store_true",
        help="do not check the target's TLS certificate (a local dev server's self-signed one)",
    )
    forward.add_argument("--ca-file", help="trust this CA bundle (PEM) for the target's TLS")
    args = parser.parse_args(argv)
    try:
        verify = tls_setting(args.insecure, args.ca_file)
        forwarder = Forwarder(args.bin_url, args.to, keep_path=args.keep_path, verify=verify)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        asyncio.run(forwarder.run())
    except BinGone as exc:
        forwarder.say(f"stopped: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
