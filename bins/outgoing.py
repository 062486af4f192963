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
    if not isinstance(url, str):
        raise BadTarget(
            f"target_url must be a string (an http:// or https:// URL), not {type(url).__name__}"
        )
    if not url.strip():
        raise BadTarget("target_url must be an http:// or https:// URL")
    url = url.strip()
    # A NUL or other control character means nothing in a URL; it is refused here rather than
    # reaching the resolver or the database (where a NUL fails). Tabs and line breaks get the
    # message below.
    if any((ord(c) < 0x20 and c not in "\t\r\n") or c == "\x7f" for c in url):
        raise BadTarget("target_url must not contain control characters")
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
    verify: ssl.SSLContext | bool = True,
) -> Answer:
    """Send and record the answer; never raises for a failed delivery.

    With `addresses`, the connection goes to those IPs (already checked by the caller's
    policy), tried in order, while Host and TLS SNI keep the URL's name: a DNS answer that
    changes in between (rebinding) cannot move the request elsewhere. Redirects are not
    followed: a 3xx is the target's answer. `verify` is how the target's TLS certificate is
    checked (the forwarder command's --insecure and --ca-file; the server always checks).
    """
    started = time.perf_counter()
    host = urlsplit(outgoing.url).hostname or ""
    # trust_env=False: HTTP(S)_PROXY, ALL_PROXY, NO_PROXY, SSL_CERT_FILE or .netrc in the
    # server's environment must never reroute a send, or change what it trusts.
    async with httpx.AsyncClient(
        timeout=timeout_s, follow_redirects=False, trust_env=False, verify=verify
    ) as client:
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
        headers = [(b"host", host_header(outgoing.url)), *headers]
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


def host_header(url: str) -> bytes:
    """The Host header for a URL: host[:port] only, never the userinfo (`user:pw@`) that the
    netloc may carry; an IPv6 literal in brackets, a name IDNA-encoded."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    return (host + (f":{parts.port}" if parts.port is not None else "")).encode("ascii")


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


# Cloud metadata services and host agents: reading them can hand out the instance's
# credentials. Denied in both modes (README, "Resend targets") unless the host is named in
# RESEND_ALLOW_HOSTS. The one list of them, by cloud:
METADATA_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        # IPv4 link-local, whole: AWS, GCP, Azure, OpenStack, DigitalOcean and Oracle (OCI)
        # metadata at 169.254.169.254; AWS ECS task metadata 169.254.170.2; AWS EKS Pod Identity
        # 169.254.170.23; and whatever other agent a cloud puts there next.
        "169.254.0.0/16",
        "fe80::/10",  # IPv6 link-local, whole, for the same reason
        "fd00:ec2::/32",  # AWS, whole: IMDS fd00:ec2::254, EKS Pod Identity fd00:ec2::23
        "168.63.129.16/32",  # Azure WireServer (host agent)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud (Classic) metadata
    )
]

# IPv6 prefixes that carry an IPv4 address in their last 32 bits. A connection to one may end
# at that IPv4 address (a translator, a tunnel, or the host's own stack), so an address is
# judged by itself and by the IPv4 it embeds. (IPv4-mapped, 6to4 and Teredo have their own
# accessors in ipaddress.)
LAST_32_BITS_IPV4 = [
    ipaddress.ip_network(n)
    for n in (
        "::/96",  # IPv4-compatible (deprecated, RFC 4291): ::127.0.0.1
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765): ::ffff:0:127.0.0.1
        "64:ff9b::/96",  # NAT64 well-known prefix (RFC 6052): 64:ff9b::7f00:1
    )
]
# The NAT64 local-use prefix (RFC 8215) is not reachable from the internet, and an operator
# may embed the IPv4 at any of RFC 6052's positions after a /48 to /96 prefix.
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
NOT_GLOBAL_V6 = [NAT64_LOCAL_USE]  # IANA: not globally reachable (older Pythons miss it)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries (IPv4-mapped, -compatible, -translated,
    NAT64, 6to4, both of Teredo's); none for an IPv4 address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour:
        found.append(ip.sixtofour)
    if ip.teredo:
        found.extend(ip.teredo)  # (server, client)
    if any(ip in net for net in LAST_32_BITS_IPV4):
        found.append(ipaddress.IPv4Address(ip.packed[12:]))
    if ip in NAT64_LOCAL_USE:
        # RFC 6052 2.2: bits 64-71 are zero ("u") and the IPv4 skips them; after a /48, /56
        # or /64 prefix it starts at that byte, after a /96 prefix it is the last 32 bits.
        without_u = ip.packed[:8] + ip.packed[9:]
        found += [ipaddress.IPv4Address(without_u[n : n + 4]) for n in (6, 7, 8)]
        found.append(ipaddress.IPv4Address(ip.packed[12:]))
    return list(dict.fromkeys(found))


def _judged(address: str) -> list[IPAddress]:
    """The address and the IPv4 addresses it embeds: it is as private as the worst of them.
    An IPv4-mapped address is only another spelling of its IPv4, so that alone is judged."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return [ip.ipv4_mapped]
    return [ip, *embedded_ipv4(ip)]


def is_metadata(address: str) -> bool:
    """A cloud metadata service or host agent (METADATA_NETWORKS), written directly or
    embedded in an IPv6 address."""
    return any(ip in net for ip in _judged(address) for net in METADATA_NETWORKS)


def is_private(address: str) -> bool:
    """Loopback, private, link-local and other non-public addresses, written directly or
    embedded in an IPv6 address."""
    return any(
        not ip.is_global or ip.is_multicast or any(ip in net for net in NOT_GLOBAL_V6)
        for ip in _judged(address)
    )
