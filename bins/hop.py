"""What this instance sends carries its mark, so that it never loops on itself.

Every resend and auto-forward adds a `webhook-inspector-hop` header with this instance's mark
(derived from SECRET_KEY, so every process of a deployment shares it). A capture that carries
the mark is stored like any other but never auto-forwarded, and a request with it can never
drive the pages or API. Forwarding copies headers, so marks pile up along a chain: two
instances forwarding to each other stop too.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable

from django.conf import settings

from .capture import error_reply

HEADER = b"webhook-inspector-hop"
LOOP_REPLY = error_reply(
    508,
    "Loop detected: this request was sent by this instance (a resend or auto-forward), so it "
    "cannot drive this instance's pages or API.",
)


@functools.cache
def mark() -> bytes:
    digest = hmac.new(settings.SECRET_KEY.encode(), b"webhook-inspector hop", hashlib.sha256)
    return digest.hexdigest()[:20].encode()


def sent_by_us(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether wire headers (names lowercased, as ASGI gives them) carry this instance's mark."""
    own = mark()
    return any(name == HEADER and value.strip() == own for name, value in headers)


def captured_from_us(pairs: Iterable[list[str]] | Iterable[tuple[str, str]]) -> bool:
    """The same for a capture's stored header pairs."""
    own = mark().decode()
    name = HEADER.decode()
    return any(n == name and v.strip() == own for n, v in pairs)


def stamp(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Outgoing headers with this instance's mark added (any marks already there are kept)."""
    return [*headers, (HEADER, mark())]
