"""The instance's own names, in one place: the base URLs shown to users, which host serves what,
and which pages may open a bin's live stream.

With `CAPTURE_URL` set, capture URLs live on their own origin: that host answers captures and
nothing else, and the app's host answers no captures, so a bin's reply (whatever its owner
configured) never shares an origin with the pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


@dataclass(frozen=True, slots=True)
class Bases:
    """Base URLs (no trailing slash) of the pages and API, and of capture URLs."""

    app: str
    capture: str


def bases(scheme: str, host: str) -> Bases:
    """The base URLs as a client that reached us at `scheme://host` should see them."""
    app = settings.PUBLIC_URL or f"{scheme}://{host}"
    return Bases(app, settings.CAPTURE_URL or app)


def request_bases(request: HttpRequest) -> Bases:
    return bases(request.scheme or "http", request.get_host())


def scope_bases(scope: dict[str, Any]) -> Bases:
    return bases(scope_scheme(scope), header(scope, b"host"))


def header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def scope_scheme(scope: dict[str, Any]) -> str:
    """http or https, as the client sees it (a TLS proxy says so in X-Forwarded-Proto)."""
    if settings.TRUST_X_FORWARDED_PROTO:
        forwarded = header(scope, b"x-forwarded-proto").split(",")[0].strip().lower()
        if forwarded in {"http", "https"}:
            return forwarded
    return "https" if scope.get("scheme") in {"https", "wss"} else "http"


def origin_of(url: str) -> str:
    """scheme://host[:port] in one spelling: lowercase, default ports left out."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower().rsplit("@", 1)[-1]
    if netloc.endswith(":" + DEFAULT_PORTS.get(scheme, "")):
        netloc = netloc.rsplit(":", 1)[0]
    return f"{scheme}://{netloc}"


def capture_netloc() -> str:
    """The host[:port] of CAPTURE_URL, or "" when captures share the app's origin."""
    if not settings.CAPTURE_URL:
        return ""
    return origin_of(settings.CAPTURE_URL).split("://", 1)[1]


def is_capture_host(host: str) -> bool:
    """Whether a request's Host names the capture origin (only when CAPTURE_URL is set)."""
    wanted = capture_netloc()
    if not wanted:
        return False
    scheme = urlsplit(settings.CAPTURE_URL).scheme
    return origin_of(f"{scheme}://{host}") == f"{scheme}://{wanted}"


def host_allowed(host: str) -> bool:
    """Django's ALLOWED_HOSTS check, for requests that do not go through Django's views."""
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def trusted_origins(scope: dict[str, Any]) -> set[str]:
    """Origins whose pages may open a bin's stream: this page's own, PUBLIC_URL's and
    CSRF_TRUSTED_ORIGINS. Compared whole (scheme, host and port), never by host alone."""
    own = origin_of(f"{scope_scheme(scope)}://{header(scope, b'host')}")
    extra = [*settings.CSRF_TRUSTED_ORIGINS, settings.PUBLIC_URL]
    return {own, *(origin_of(o) for o in extra if o)}


class WebsocketGuard:
    """Refuse a websocket handshake for a host this instance does not answer to (DNS rebinding:
    a page on attacker.example resolving to 127.0.0.1 has Origin == Host), or whose Origin is
    another site's page.

    Browsers always send Origin on websockets; scripts (the JSON stream's users) usually send
    none and are let through, as the token is the stream's only secret anyway.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = header(scope, b"origin")
        host = header(scope, b"host")
        allowed = host_allowed(host) and not is_capture_host(host)
        if allowed and origin:
            allowed = origin_of(origin) in trusted_origins(scope)
        if not allowed:
            # Refuse the handshake the way Channels' own validators do.
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return None
        return await self.app(scope, receive, send)
