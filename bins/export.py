"""A bin's captures as a download: HAR 1.2 or JSON lines, oldest first, streamed.

Memory follows bytes: captures are read a batch at a time (at most PAGE captures and about
BATCH_BODY_BYTES of bodies; one larger body makes a batch of its own), rendered in a worker
thread, and yielded one capture at a time, so a bin of hundreds of 10 MiB bodies never sits in
memory at once. The export covers the captures stored when it starts (up to the bin's last
number then), so it ends even while captures keep arriving; ones deleted meanwhile are skipped.

Under Daphne the chunks reach the client no faster than it reads them (`bins.flow`).
"""

from __future__ import annotations

import base64
import functools
import http
import importlib.metadata
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from typing import Any
from urllib.parse import parse_qsl

import orjson
from channels.db import database_sync_to_async

from .listing import filtered
from .models import Capture, capture_json, display_text, utf8_or_none

PAGE = 50
BATCH_BODY_BYTES = 4 * 1024 * 1024

Render = Callable[[Capture, bytes], bytes]


def _batch(
    bin_id: int, params: Any, after: int, upto: int, render: Render
) -> tuple[list[bytes], int | None]:
    """The next captures after number `after` (up to `upto`, matching `params`), rendered; and
    the number of the last one read (None when there are no more)."""
    rows = list(
        filtered(Capture.objects.filter(bin_id=bin_id, seq__gt=after, seq__lte=upto), params)
        .defer("body")
        .order_by("seq")[:PAGE]
    )
    taken: list[Capture] = []
    size = 0
    for row in rows:
        if taken and size + row.body_size > BATCH_BODY_BYTES:
            break
        taken.append(row)
        size += row.body_size
    if not taken:
        return [], None
    bodies = dict(Capture.objects.filter(pk__in=[r.pk for r in taken]).values_list("pk", "body"))
    rendered = [render(row, bytes(bodies[row.pk])) for row in taken if row.pk in bodies]
    return rendered, taken[-1].seq


async def captures(
    bin_id: int, params: Any, upto: int, render: Render, separator: bytes = b""
) -> AsyncIterator[bytes]:
    """Each capture rendered, oldest first, with `separator` between them."""
    after = 0
    first = True
    while True:
        rendered, last = await database_sync_to_async(_batch)(bin_id, params, after, upto, render)
        if last is None:
            return
        for chunk in rendered:
            if not first and separator:
                yield separator
            first = False
            yield chunk
        rendered.clear()  # a batch's bodies go before the next batch is read
        after = last


# --- JSON lines --------------------------------------------------------------------------------


def jsonl_line(capture: Capture, body: bytes) -> bytes:
    """A capture in the API's JSON shape with its whole body, as one line."""
    return orjson.dumps(capture_json(capture, body)) + b"\n"


def jsonl(bin_id: int, params: Any, upto: int) -> AsyncIterator[bytes]:
    return captures(bin_id, params, upto, jsonl_line)


# --- HAR 1.2 -----------------------------------------------------------------------------------


def creator() -> dict[str, str]:
    try:
        version = importlib.metadata.version("webhook-inspector")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout, not installed
        version = "0"
    return {"name": "webhook-inspector", "version": version}


def har_time(capture: Capture) -> str:
    """ISO 8601 with the zone, to the millisecond (what every HAR reader parses)."""
    return (
        capture.received_at.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def har_headers(pairs: list[list[str]]) -> list[dict[str, str]]:
    out = []
    for name, value in pairs:
        header = {"name": display_text(name), "value": display_text(value)}
        if header["name"] != name or header["value"] != value:
            header["comment"] = "Not valid UTF-8: \\xNN stands for each such byte."
        out.append(header)
    return out


def post_data(capture: Capture, body: bytes) -> dict[str, Any]:
    """The body: as text where it is UTF-8, else base64 with `encoding: "base64"`.

    HAR 1.2 defines `encoding` on a response's content only; on postData it is the extension
    several tools read the same way (readers that do not know it see the base64 text, and the
    comment says what it is). Chrome DevTools' importer reads postData's mimeType, text and
    params only.
    """
    text = utf8_or_none(body)
    data: dict[str, Any] = {"mimeType": capture.content_type}
    if text is not None:
        data["text"] = text
    else:
        data["text"] = base64.b64encode(body).decode("ascii")
        data["encoding"] = "base64"
        data["comment"] = "The body is not UTF-8 text: text holds its bytes in base64."
    return data


def har_response(answer: dict[str, Any] | None) -> dict[str, Any]:
    """What the bin answered: its status (and the rule or step that chose it). Its headers and
    body are not stored, so they are left empty; status 0 where no answer is recorded."""
    status = (answer or {}).get("status") or 0
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    response: dict[str, Any] = {
        "status": status,
        "statusText": reason,
        "httpVersion": "HTTP/1.1" if status else "",
        "cookies": [],
        "headers": [],
        "content": {"size": 0, "mimeType": "x-unknown"},
        "redirectURL": "",
        "headersSize": -1,
        "bodySize": -1,
        "comment": "The inspector keeps the status it answered, not the answer's headers or body.",
    }
    if answer and answer.get("rule"):
        response["comment"] += f" Chosen by: {answer['rule']}."
    return response


def har_entry(capture_url: str, capture: Capture, body: bytes) -> dict[str, Any]:
    query = capture.query_string
    request: dict[str, Any] = {
        "method": capture.method,
        "url": capture_url + capture.path + (f"?{query}" if query else ""),
        # Not stored; Daphne speaks HTTP/1.1 (and 1.0, rarely seen from providers).
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": har_headers(capture.headers),
        "queryString": [
            {"name": n, "value": v}
            for n, v in parse_qsl(query, keep_blank_values=True, errors="replace")
        ],
        "headersSize": -1,
        "bodySize": capture.body_size,
    }
    if body:
        request["postData"] = post_data(capture, body)
    return {
        "startedDateTime": har_time(capture),
        "time": 0,
        "request": request,
        "response": har_response(capture.answer),
        "cache": {},
        "timings": {"blocked": -1, "dns": -1, "connect": -1, "send": 0, "wait": 0, "receive": 0},
        # The capture's number in its bin, where it came from, and the exact time received.
        "_id": capture.seq,
        "_remoteAddr": capture.remote_addr,
        "_receivedAt": capture.received_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def _har_chunk(capture_url: str, capture: Capture, body: bytes) -> bytes:
    return orjson.dumps(har_entry(capture_url, capture, body))


async def har(
    bin_id: int, params: Any, upto: int, capture_url: str, comment: str
) -> AsyncIterator[bytes]:
    """A HAR 1.2 document, `log.entries` streamed one capture at a time."""
    head = {"version": "1.2", "creator": creator(), "comment": comment}
    # The document is written around the entries: `{"log": {...head, "entries": [` ... `]}}`.
    yield b'{"log":' + orjson.dumps(head)[:-1] + b',"entries":['
    render = functools.partial(_har_chunk, capture_url)
    async for chunk in captures(bin_id, params, upto, render, separator=b","):
        yield chunk
    yield b"]}}\n"
