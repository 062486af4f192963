"""Sending a captured request on to a target: what is sent, and failures in plain words.

No Django here: the forwarder command (`webhook-inspector forward`) uses it on a laptop too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection; host and content-length are
# set for the new one. Everything else goes byte for byte, so signatures still verify.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length"}
KEEP_RESPONSE_BYTES = 64 * 1024
TIMEOUT = 10.0


class BadTarget(ValueError):
    """The target URL cannot be used; the message says why."""


@dataclass
class Outgoing:
    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class Answer:
    """What the target answered, or why no answer came (`error`)."""

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    body_size: int = 0
    duration_ms: float = 0.0
    error: str | None = None


def check_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise BadTarget("target_url must be an http:// or https:// URL")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BadTarget(f"target_url must start with http:// or https://, not {url!r}")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise BadTarget(f"target_url has a bad port: {url!r}") from exc
    if not parts.hostname:
        raise BadTarget(f"target_url has no host: {url!r}")
    try:
        parts.hostname.encode("idna")
    except UnicodeError as exc:
        raise BadTarget(f"target_url has an invalid host name: {parts.hostname!r}") from exc
    if any(c in url for c in " \r\n\t"):
        raise BadTarget("target_url must not contain spaces or line breaks")
    return url


def forwardable(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in headers if n.lower().decode("latin-1") not in NOT_FORWARDED]


def with_path(target: str, sub_path: str, query_string: str) -> str:
    """The target URL with a capture's sub-path and query appended (forwarder `--keep-path`)."""
    parts = urlsplit(target)
    path = parts.path.rstrip("/") + sub_path if sub_path else parts.path
    query = "&".join(q for q in (parts.query, query_string) if q)
    return urlunsplit((parts.scheme, parts.netloc, path or "/", query, ""))


async def resolve(host: str, port: int) -> list[str]:
    """Addresses of a host, in the resolver's order; raises BadTarget when it has none."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BadTarget(f"DNS lookup failed for {host}: {exc.strerror}") from exc
    except UnicodeError as exc:
        raise BadTarget(f"invalid host name: {host!r}") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


async def send(
    outgoing: Outgoing,
    *,
    addresses: list[str] | None = None,
    timeout_s: float = TIMEOUT,
) -> Answer:
    """Send and record the answer; never raises for a failed delivery.

    With `addresses`, the connection goes to those IPs (already checked by the caller's
    policy), tried in order, while Host and TLS SNI keep the URL's name: a DNS answer that
    changes in between (rebinding) cannot move the request elsewhere. Redirects are not
    followed: a 3xx is the target's answer.
    """
    started = time.perf_counter()
    host = urlsplit(outgoing.url).hostname or ""
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        for i, address in enumerate(addresses or [None]):
            try:
                # httpx's timeouts are per read: a target that trickles its answer would hold
                # the send forever without a deadline for the whole of it.
                async with asyncio.timeout(timeout_s):
                    return await _send_once(client, outgoing, address, started)
            except httpx.ConnectError as exc:
                if addresses and i < len(addresses) - 1:
                    continue  # like a browser: the next address of the host
                error = describe(exc, host, timeout_s)
            except Exception as exc:
                error = describe(exc, host, timeout_s)
            break
    return Answer(error=error, duration_ms=_ms(started))


async def _send_once(
    client: httpx.AsyncClient, outgoing: Outgoing, address: str | None, started: float
) -> Answer:
    parts = urlsplit(outgoing.url)
    url = outgoing.url
    headers = forwardable(outgoing.headers)
    extensions: dict[str, Any] = {}
    if address is not None:
        ip = f"[{address}]" if ":" in address else address
        netloc = ip + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        headers = [(b"host", parts.netloc.encode("idna")), *headers]
        if parts.scheme == "https":
            extensions["sni_hostname"] = parts.hostname
    request = client.build_request(
        outgoing.method, url, headers=headers, content=outgoing.body, extensions=extensions
    )
    request.method = outgoing.method  # httpx upper-cases it; the target gets it as captured
    # httpx adds Accept, Accept-Encoding, Connection and User-Agent of its own: the target must
    # get the capture's headers, not ours.
    wanted = {n.decode("latin-1").lower() for n, _ in headers} | {"host", "content-length"}
    for name in {n.lower() for n in request.headers if n.lower() not in wanted}:
        del request.headers[name]
    response = await client.send(request, stream=True)
    try:
        kept = bytearray()
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if len(kept) < KEEP_RESPONSE_BYTES:
                kept += chunk[: KEEP_RESPONSE_BYTES - len(kept)]
    finally:
        await response.aclose()
    return Answer(
        status=response.status_code,
        headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in response.headers.raw],
        body=bytes(kept),
        body_size=size,
        duration_ms=_ms(started),
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def describe(exc: BaseException, host: str, timeout: float) -> str:
    """A failed delivery in plain words."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, httpx.TimeoutException):
        kind = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for the answer",
            httpx.WriteTimeout: "sending the request",
        }.get(type(exc), "")
        return f"timed out after {timeout:g} s" + (f" {kind}" if kind else "")
    chain = _causes(exc)
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS error: certificate not valid for {host} ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause}"
        if isinstance(cause, socket.gaierror):
            return f"DNS lookup failed for {host}"
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by {host}"
        if isinstance(cause, ConnectionResetError):
            return f"connection reset by {host}"
    text = " ".join(str(c) for c in chain).lower()
    if "name or service not known" in text or "nodename nor servname" in text:
        return f"DNS lookup failed for {host}"
    if "connection refused" in text or "errno 111" in text:
        return f"connection refused by {host}"
    if "ssl" in text or "certificate" in text:
        return f"TLS error: {exc}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the target broke the HTTP protocol: {exc}"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect to {host}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


METADATA = {
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
}


def is_metadata(address: str) -> bool:
    """Cloud metadata services (AWS, GCP and Azure, ECS tasks, Alibaba; AWS's IPv6 one)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip in METADATA


def is_private(address: str) -> bool:
    """Loopback, private, link-local and other non-public addresses."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast
