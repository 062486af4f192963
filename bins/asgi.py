"""The lean ASGI capture handler, routed before Django.

Capture URLs never enter Django: no middleware, no CSRF, no redirects, no thread per request.
This module only moves bytes between ASGI and the plain functions of `bins.capture`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from django.conf import settings

from . import bincache, capture, hop, hosts, metrics, ratelimit, verdicts, writer
from .replies import Reply

logger = logging.getLogger(__name__)

Scope = dict[str, Any]


class CaptureRouter:
    """Send capture URLs to `capture_app`, everything else to `fallback` (Django)."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        is_capture = capture.is_capture_path(raw_path(scope))
        if settings.CAPTURE_URL:
            refused = misdirected(scope, is_capture)
            if refused is not None:
                await send_reply(send, refuse("misdirected", refused) if is_capture else refused)
                return
        if is_capture:
            await capture_app(scope, receive, send)
        elif hop.sent_by_us(scope.get("headers", ())):
            await send_reply(send, hop.LOOP_REPLY)
        else:
            await self.fallback(scope, receive, send)


def misdirected(scope: Scope, is_capture: bool) -> Reply | None:
    """With CAPTURE_URL set: its host answers captures only, the app's host no captures."""
    on_capture_host = hosts.is_capture_host(hosts.header(scope, b"host"))
    if on_capture_host and not is_capture and scope["path"] != "/healthz":
        return capture.error_reply(404, "This host serves capture URLs only.")
    if is_capture and not on_capture_host:
        return capture.error_reply(
            404, f"Capture URLs are served at {settings.CAPTURE_URL}/<token>, not on this host."
        )
    return None


def raw_path(scope: Scope) -> bytes:
    return scope.get("raw_path") or scope["path"].encode("utf-8")


async def capture_app(scope: Scope, receive: Any, send: Any) -> None:
    reply = await handle(scope, receive)
    await send_reply(send, reply, scope["method"])


async def handle(scope: Scope, receive: Any) -> Reply:
    target = capture.parse_target(raw_path(scope))
    if target is None:
        return refuse("not_found", capture.NOT_FOUND)
    try:
        info = await bincache.lookup(target.token)
    except Exception:
        logger.exception("looking up bin %s failed", target.token)
        return refuse("store_failed", capture.STORE_FAILED)
    if info is None:
        return refuse("not_found", capture.NOT_FOUND)
    if settings.BIN_RATE_LIMIT > 0:
        wait = await ratelimit.retry_after("capture", info.token)
        if wait:
            return refuse("rate_limited", capture.rate_limited(wait))
    limit = settings.MAX_BODY_BYTES
    try:
        body = await read_body(receive, limit, content_length(scope))
    except ClientGone:
        return refuse("incomplete", capture.INCOMPLETE)
    if body is None:
        return refuse("too_large", capture.too_large(limit))
    client = scope.get("client")
    record = capture.build_capture(
        info,
        scope["method"],
        target.sub_path,
        scope.get("query_string", b""),
        list(scope.get("headers", ())),
        body,
        client[0] if client else "",
    )
    if info.signature is not None:
        record.signature = await check_signature(info, record, scope)
    try:
        await writer.store(record)
    except Exception:
        logger.exception("capture for bin %s not stored", target.token)
        return refuse("store_failed", capture.STORE_FAILED)
    reply = record.reply
    if reply.delay_ms:
        await asyncio.sleep(reply.delay_ms / 1000)
    return reply


# Signatures over bodies up to this size are checked in the event loop; larger ones in a thread
# (hashlib lets other threads run while it hashes a large body).
VERIFY_INLINE_BYTES = 64 * 1024


async def check_signature(info: Any, record: capture.Pending, scope: Scope) -> dict[str, Any]:
    """The verdict on a capture's signature by the bin's scheme."""
    base = hosts.scope_bases(scope).capture
    url = verdicts.called_url(base, info.token, record.path, record.query_string)
    check = functools.partial(verdicts.verdict, info.signature, record, url)
    if len(record.body) <= VERIFY_INLINE_BYTES:
        return check()
    return await asyncio.get_running_loop().run_in_executor(None, check)


def refuse(reason: str, reply: Reply) -> Reply:
    """Count a request to a capture URL that stored nothing (see /metrics)."""
    metrics.CAPTURES_REFUSED.labels(reason).inc()
    return reply


class ClientGone(Exception):
    """The client disconnected before its body was complete: nothing is stored."""


def content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


SMALL_BODY = 64 * 1024


async def read_body(
    receive: Any, limit: int, expected: int | None = None
) -> bytes | bytearray | None:
    """The whole request body, or None as soon as it exceeds `limit` bytes (0: no limit).

    Read into one buffer, sized up front when the length is known and within the limit, each
    chunk dropped as soon as it is copied: a large body is never held twice.
    """
    known = expected is not None and 0 < expected <= (limit or expected)
    body = bytearray(expected) if known else bytearray()
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if limit and size + len(chunk) > limit:
            return None
        if known and size + len(chunk) <= len(body):
            body[size : size + len(chunk)] = chunk
        else:
            del body[size:]
            body += chunk
        size += len(chunk)
        if not message.get("more_body", False):
            del body[size:]
            # A small body as bytes (what the rest reads fastest); a large one stays as it is,
            # never copied.
            return bytes(body) if size <= SMALL_BODY else body


# A bin's reply is whatever its owner configured, HTML and script included, served on this
# instance's origin: the browser must never run it as a page of the inspector.
SANDBOX = [
    (b"content-security-policy", b"sandbox"),
    (b"x-content-type-options", b"nosniff"),
]


async def send_reply(send: Any, reply: Reply, method: str = "POST") -> None:
    headers = [(n, v) for n, v in reply.headers if n.lower() != b"content-length"]
    headers += SANDBOX
    body = reply.body
    if reply.status in capture.NO_BODY_STATUSES:
        body = b""
    else:
        # HEAD: the length a GET would get, and no body.
        headers.append((b"content-length", str(len(body)).encode()))
        if method.upper() == "HEAD":
            body = b""
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
