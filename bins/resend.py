"""Resend and auto-forward: send a capture to a target and keep the delivery record.

Where the server may send is a policy (README, "Resend targets"): the target's host is resolved
here, every address is checked, and the connection goes to a checked address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings

from . import hop, outgoing, ratelimit
from .capture import Pending
from .models import Capture, Delivery, text_to_wire
from .outgoing import BadTarget
from .ratelimit import RateLimited

logger = logging.getLogger(__name__)


class Forbidden(BadTarget):
    """The policy forbids this target."""


async def checked_addresses(url: str) -> list[str]:
    """The target's addresses, after the policy has allowed every one of them.

    An IPv6 address is judged with the IPv4 addresses it embeds (NAT64, 6to4, Teredo,
    IPv4-compatible, -mapped and -translated): `[::127.0.0.1]` is loopback here.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await outgoing.resolve(host, port)
    if host.lower() in settings.RESEND_ALLOW_HOSTS:
        return addresses
    for address in addresses:
        if outgoing.is_metadata(address):
            raise Forbidden(
                f"{host} resolves to {_spelled(address)}, a cloud metadata or link-local "
                "address: forbidden unless the host is named in RESEND_ALLOW_HOSTS"
            )
        if settings.RESEND_PRIVATE_TARGETS == "deny" and outgoing.is_private(address):
            raise Forbidden(
                f"{host} resolves to {_spelled(address)}, a private, loopback or link-local "
                "address: this instance forbids those targets (RESEND_PRIVATE_TARGETS=deny)"
            )
    return addresses


def _spelled(address: str) -> str:
    """An address for a message, with the IPv4 it embeds (so the refusal makes sense)."""
    embedded = outgoing.embedded_ipv4(ipaddress.ip_address(address))
    return address + (f" (embeds {', '.join(map(str, embedded))})" if embedded else "")


async def deliver(
    capture: Capture,
    target_url: str,
    *,
    kind: str = Delivery.RESEND,
    method: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = None,
) -> Delivery:
    """Send a capture (or an edited copy of it, for this send only) and record the delivery.

    Raises BadTarget for a malformed URL (nothing is recorded); anything that goes wrong after
    that (policy, DNS, refused, timeout, TLS) is a recorded delivery with its `error`.
    """
    url = outgoing.check_url(target_url)
    request = outgoing.Outgoing(
        method=method or capture.method,
        url=url,
        headers=hop.stamp(headers if headers is not None else wire_headers(capture)),
        body=body if body is not None else capture.body_bytes,
    )
    try:
        addresses = await checked_addresses(url)
    except BadTarget as exc:
        answer = outgoing.Answer(error=str(exc))
    else:
        answer = await outgoing.send(
            request, addresses=addresses, timeout_s=settings.RESEND_TIMEOUT
        )
    delivery = Delivery(
        capture=capture,
        kind=kind,
        target_url=url,
        method=request.method,
        edited=any(x is not None for x in (method, headers, body)),
        duration_ms=answer.duration_ms,
        status=answer.status,
        response_headers_json=json.dumps(answer.headers),
        response_body=answer.body,
        response_size=answer.body_size,
        error=answer.error or "",
    )
    await database_sync_to_async(delivery.save)()
    return delivery


async def resend_capture(capture: Capture, target_url: Any, **edits: Any) -> Delivery:
    """A resend from the page or the API: to `target_url`, or else to the bin's last target,
    which the bin then remembers (so the next resend is one click)."""
    target = target_url
    if target is None or (isinstance(target, str) and not target.strip()):
        target = capture.bin.last_target_url
    if target is None or target == "":
        raise BadTarget(
            "target_url is required: the URL to send to, e.g. http://localhost:3000/webhooks"
        )
    outgoing.check_url(target)  # refuses a non-string or malformed URL in plain words
    wait = await ratelimit.retry_after("resend", capture.bin.token)
    if wait:
        raise RateLimited(
            wait,
            f"Too many resends for this bin (at most {settings.RESEND_RATE_LIMIT:g} a second): "
            f"nothing was sent. Try again in {wait} s.",
        )
    delivery = await deliver(capture, target, **edits)
    await database_sync_to_async(capture.bin.remember_target)(delivery.target_url)
    return delivery


def wire_headers(capture: Capture) -> list[tuple[bytes, bytes]]:
    return [(text_to_wire(n), text_to_wire(v)) for n, v in capture.headers]


# Auto-forward: off the response path, a bounded number at a time; tasks are kept referenced.
_forwarding: set[asyncio.Task[Any]] = set()
_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
MAX_CONCURRENT_FORWARDS = 32
# Beyond this many forwards waiting (a slow target under load), new captures are not forwarded
# and that is logged, rather than holding every body in memory.
MAX_PENDING_FORWARDS = 2_000


def forward_later(captures: list[Pending]) -> None:
    """Start forwarding the captures of bins that have a forward_url (from the event loop)."""
    for capture in captures:
        if capture.bin.forward_url:
            if hop.captured_from_us(capture.headers):
                logger.info(
                    "capture %s came from this instance (resend or forward): not forwarded again",
                    capture.pk,
                )
                continue
            if len(_forwarding) >= MAX_PENDING_FORWARDS:
                logger.error(
                    "auto-forward backlog full (%d waiting): capture %s not forwarded",
                    len(_forwarding),
                    capture.pk,
                )
                continue
            task = asyncio.get_running_loop().create_task(_forward(capture.to_model()))
            _forwarding.add(task)
            task.add_done_callback(_forwarding.discard)


async def _forward(capture: Capture) -> None:
    loop = asyncio.get_running_loop()
    slots = _slots.setdefault(loop, asyncio.Semaphore(MAX_CONCURRENT_FORWARDS))
    async with slots:
        try:
            delivery = await deliver(capture, capture.bin.forward_url, kind=Delivery.FORWARD)
        except Exception:
            logger.exception("auto-forward of capture %s failed", capture.pk)
            return
    if delivery.error:
        logger.warning("auto-forward of capture %s: %s", capture.pk, delivery.error)
