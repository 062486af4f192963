"""The capture path as plain functions: a request's plain values in, what to store and answer out.

No HTTP, no Django request, no I/O here, so every rule (token form, body limit, what is stored,
what is answered) is tested directly. `bins.asgi` serves these functions over ASGI and
`bins.writer` stores what they build.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from . import providers
from .models import capture_json, display_text, wire_to_text
from .replies import Reply

if TYPE_CHECKING:
    from .bincache import BinInfo

# The first path segment looks like a token in some form: those paths belong to the capture
# handler (which answers 404 for any non-canonical form); everything else goes to Django.
_TOKENISH = re.compile(rb"^/([0-9A-Fa-f-]{32,36})(/.*)?\Z", re.DOTALL)
_CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Target:
    token: uuid.UUID
    sub_path: str = field(default="")


def parse_token(text: str) -> uuid.UUID | None:
    """A token in its one accepted form (canonical lowercase UUID4), else None."""
    return uuid.UUID(text) if _CANONICAL.match(text) else None


def is_capture_path(raw_path: bytes) -> bool:
    return _TOKENISH.match(raw_path) is not None


def parse_target(raw_path: bytes) -> Target | None:
    """The bin token and sub-path of a capture URL, or None when the token is not canonical.

    `raw_path` is the path as sent (ASGI `raw_path`), so the stored sub-path keeps its
    percent-encoding.
    """
    match = _TOKENISH.match(raw_path)
    if match is None:
        return None
    token = parse_token(match.group(1).decode("ascii"))
    if token is None:
        return None
    return Target(token, (match.group(2) or b"").decode("latin-1"))


def error_reply(status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> Reply:
    body = json.dumps({"error": message}).encode()
    return Reply(status, [(b"content-type", b"application/json"), *headers], body)


NOT_FOUND = error_reply(404, "No bin with this token. Create one at / or POST /api/bins.")
INCOMPLETE = error_reply(400, "The request ended before its body was complete; not stored.")
STORE_FAILED = error_reply(503, "The capture could not be stored; nothing was kept. Retry later.")


def too_large(limit: int) -> Reply:
    return error_reply(413, f"Body larger than this instance's limit of {limit} bytes; not stored.")


def rate_limited(retry_after: int) -> Reply:
    return error_reply(
        429,
        f"Too many requests to this bin; not stored. Retry in {retry_after} s.",
        [(b"retry-after", str(retry_after).encode())],
    )


# HTTP forbids a body in these answers (RFC 9110 6.4.1): a client would read it as the start of
# the next response on the connection.
NO_BODY_STATUSES = {204, 304}


@dataclass(slots=True)
class Pending:
    """A capture on its way to the database: plain values, no ORM on the hot path (a model
    instance costs more than the INSERT). Same attributes as `Capture` for `capture_json`.
    The writer fills in the rest (number, retry, answer) inside the transaction that stores it.
    """

    bin: BinInfo
    method: str
    path: str
    query_string: str
    headers: list[list[str]]
    headers_json: str
    body: bytes | bytearray
    content_type: str
    remote_addr: str
    received_at: datetime
    provider: str = ""
    event_type: str = ""
    event_id: str = ""
    signature: dict[str, Any] | None = None
    # Set by the writer:
    seq: int = 0
    duplicate_of: int | None = None
    event_delivery: int = 0
    event_after_ms: int | None = None
    answer: dict[str, Any] | None = None
    answer_json: str | None = None
    reply: Reply | None = None

    @property
    def bin_id(self) -> int:
        return self.bin.id

    @property
    def body_size(self) -> int:
        return len(self.body)

    def live_json(self, inline_limit: int) -> dict[str, Any]:
        """Its JSON shape as lists and streams carry it (a body over `inline_limit` left out)."""
        return capture_json(self, self.body if len(self.body) <= inline_limit else None)


def dump_headers(pairs: list[list[str]]) -> str:
    """Header pairs as stored JSON text. orjson is several times faster than json on this hot
    path, but refuses the lone surrogates that stand for bytes that are not UTF-8; json writes
    them as escapes, which read back exactly."""
    try:
        return orjson.dumps(pairs).decode()
    except TypeError:
        return json.dumps(pairs)


def build_capture(
    info: BinInfo,
    method: str,
    sub_path: str,
    query_string: bytes,
    headers: Headers,
    body: bytes | bytearray,
    remote_addr: str,
    received_at: datetime | None = None,
) -> Pending:
    """What to store for a request, every field as it arrived, and who sent it."""
    pairs = [[wire_to_text(name), wire_to_text(value)] for name, value in headers]
    # Shown and filtered on, never sent anywhere: its readable form (the exact bytes stay in
    # the headers).
    content_type = display_text(next((v for n, v in pairs if n == "content-type"), ""))
    pending = Pending(
        info,
        method,
        sub_path,
        query_string.decode("latin-1"),
        pairs,
        dump_headers(pairs),
        body,
        content_type,
        remote_addr,
        received_at or datetime.now(UTC),
    )
    # One pass over the header names when no provider is recognised (nearly free).
    sender = providers.recognise(pairs, body)
    if sender is not None:
        pending.provider = sender.provider
        pending.event_type = sender.event_type or ""
        pending.event_id = sender.event_id or ""
    return pending
