"""Resend and auto-forward: send a capture to a target and keep the delivery record.

Where the server may send is a policy (README, "Resend targets"): the target's host is resolved
here, every address is checked, and the connection goes to a checked address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError

from . import hop, outgoing, providers, ratelimit
from .models import Capture, Delivery, text_to_wire, wire_to_text
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
    resign: bool = False,
    attempt: int = 1,
) -> Delivery:
    """Send a capture (or an edited copy of it, for this send only) and record the delivery.

    Raises BadTarget for a malformed URL (nothing is recorded); anything that goes wrong after
    that (policy, DNS, refused, timeout, TLS) is a recorded delivery with its `error`. If the
    capture was deleted meanwhile (pruned, cleared), the delivery is answered but not kept
    (its `pk` stays None).
    """
    url = outgoing.check_url(target_url)
    edited = any(x is not None for x in (method, headers, body))
    method = method or capture.method
    headers = headers if headers is not None else wire_headers(capture)
    body = body if body is not None else capture.body_bytes
    if resign:
        headers = resigned(capture.bin.signature, method, url, headers, body)
    request = outgoing.Outgoing(method=method, url=url, headers=hop.stamp(headers), body=body)
    changed = edited or resign
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
        edited=edited,
        resigned=resign,
        # What was sent, where it was not the capture as captured.
        sent_headers_json=json.dumps(
            [[wire_to_text(n), wire_to_text(v)] for n, v in outgoing.forwardable(request.headers)]
        )
        if changed
        else "",
        sent_body=request.body if changed else None,
        attempt=attempt,
        duration_ms=answer.duration_ms,
        status=answer.status,
        response_headers_json=json.dumps(answer.headers),
        response_body=answer.body,
        response_size=answer.body_size,
        error=answer.error or "",
    )
    try:
        await database_sync_to_async(delivery.save)()
    except IntegrityError:
        # The target got it; only the record has nowhere to go.
        logger.info("capture %s was deleted while it was sent: delivery not kept", capture.pk)
        delivery.pk = None
    return delivery


def resigned(
    config: dict[str, Any] | None,
    method: str,
    url: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> list[tuple[bytes, bytes]]:
    """The headers with a fresh signature for exactly these bytes and this target, by the
    bin's scheme and secret: an edited body, or a capture older than the provider's tolerance,
    still verifies at the target."""
    if not config:
        raise BadTarget("resign needs the bin's signature scheme and secret: set `signature` first")
    pairs = [[wire_to_text(n), wire_to_text(v)] for n, v in headers]
    fresh = providers.resign(config, method, url, pairs, body, time.time())
    return [(text_to_wire(n), text_to_wire(v)) for n, v in fresh]


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
