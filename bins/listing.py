"""Reading captures in bulk without holding more than a client asked for.

Lists and streams carry a body inline only up to INLINE_BODY_BYTES (64 KiB by default), and the
database never even returns the larger ones; one answer inlines at most RESPONSE_BODY_BUDGET
bytes of bodies in all, then leaves the rest out too (`body_omitted`: the client fetches those
one by one). Catch-ups are read in pages.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from django.db.models import BinaryField, BooleanField, Case, F, Q, QuerySet, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Substr

from .live import Item, live_item
from .models import Capture, capture_json

RESPONSE_BODY_BUDGET = 8 * 1024 * 1024
# Text search looks this far into each body (a bin may hold hundreds of 10 MiB bodies).
SEARCH_BODY_BYTES = 1024 * 1024
FILTERS = ("method", "path", "q", "provider", "event_type", "event_id", "valid")


class BadFilter(ValueError):
    """A filter that cannot be applied; the message names it."""


def filtered(rows: QuerySet[Capture], params: Any) -> QuerySet[Capture]:
    """Captures matching a list's filters (API and page alike): `method`, `path` (prefix),
    `q` (text in the path, query string, headers or the first MiB of the body), `provider`,
    `event_type`, `event_id`, `valid` (true/false: the signature verdict)."""
    for name in FILTERS:
        value = params.get(name)
        if value is not None and "\x00" in value:
            raise BadFilter(f"{name} must not contain NUL")
    for name in ("method", "provider", "event_type", "event_id"):
        if params.get(name):
            rows = rows.filter(**{name: params[name]})
    if "path" in params:
        rows = rows.filter(path__startswith=params["path"])
    if params.get("valid"):
        valid = params["valid"].lower()
        if valid not in ("true", "false"):
            raise BadFilter("valid must be true or false")
        rows = rows.filter(signature__valid=valid == "true")
    if params.get("q"):
        rows = rows.filter(text_matches(params["q"]))
    return rows


def text_matches(q: str) -> Q:
    """Where `q` appears: path, query string, headers (as stored: JSON text, so also its JSON
    spelling), or the body's first SEARCH_BODY_BYTES bytes (as UTF-8)."""
    spelled = json.dumps(q)[1:-1]
    where = Q(path__contains=q) | Q(query_string__contains=q) | Q(headers_json__contains=q)
    if spelled != q:
        where |= Q(headers_json__contains=spelled)
    needle = q.encode("utf-8")
    if connection.vendor == "postgresql":
        sql = "position(%s::bytea in substring(body from 1 for %s)) > 0"
        params: tuple[Any, ...] = (needle, SEARCH_BODY_BYTES)
    else:
        sql = "instr(substr(body, 1, %s), %s) > 0"
        params = (SEARCH_BODY_BYTES, needle)
    return where | Q(RawSQL(sql, params, output_field=BooleanField()))


CATCH_UP_PAGE = 100
# The page's list shows a path and query string cut to this many characters (the detail shows
# them whole): a row stays small whatever was sent.
ROW_TEXT = 1000


def with_inline_bodies(rows: QuerySet[Capture]) -> QuerySet[Capture]:
    """Captures with `inline_body`: the body where it is small enough to inline, else None."""
    return rows.defer("body").annotate(
        inline_body=Case(
            When(body_size__lte=settings.INLINE_BODY_BYTES, then=F("body")),
            default=Value(None, output_field=BinaryField()),
            output_field=BinaryField(null=True),
        )
    )


def shapes(rows: list[Capture], budget: int = RESPONSE_BODY_BUDGET) -> list[dict[str, Any]]:
    """The JSON shapes of captures read `with_inline_bodies`, newest budget first."""
    out = []
    for row in rows:
        body = row.inline_body
        if body is not None and len(body) <= budget:
            budget -= len(body)
            body = bytes(body)
        else:
            body = None
        out.append(capture_json(row, body))
    return out


def live_items(rows: list[Capture]) -> list[Item]:
    return [live_item(shape) for shape in shapes(rows)]


def _page_after(bin_id: int, after: int, upto: int) -> list[Item]:
    rows = with_inline_bodies(
        Capture.objects.filter(bin_id=bin_id, seq__gt=after, seq__lte=upto).order_by("seq")
    )
    return live_items(list(rows[:CATCH_UP_PAGE]))


async def captures_after(bin_id: int, after: int, upto: int) -> AsyncIterator[list[Item]]:
    """A bin's stored captures numbered after `after` up to `upto`, in order, a page at a time."""
    while after < upto:
        items = await database_sync_to_async(_page_after)(bin_id, after, upto)
        if not items:
            return
        yield items
        if len(items) < CATCH_UP_PAGE:
            return
        after = items[-1][0]


ROW_FIELDS = (
    "seq",
    "method",
    "received_at",
    "body_size",
    "remote_addr",
    "provider",
    "event_type",
    "event_id",
    "signature",
    "duplicate_of",
    "event_delivery",
    "event_after_ms",
    "answer",
)


def list_rows(bin_id: int, limit: int, filters: Any = None) -> list[dict[str, Any]]:
    """The newest captures of a bin for the page's list (those matching `filters`, see
    `filtered`), as the rows the list shows (the same keys as a capture's JSON): no body, no
    headers, path and query string cut to ROW_TEXT."""
    rows = (
        filtered(Capture.objects.filter(bin_id=bin_id), filters or {})
        .order_by("-seq")
        .values(
            *ROW_FIELDS,
            path_cut=Substr("path", 1, ROW_TEXT + 1),
            query_cut=Substr("query_string", 1, ROW_TEXT + 1),
        )[:limit]
    )
    return [
        {
            **row,
            "id": row["seq"],
            "path": row["path_cut"],
            "query_string": row["query_cut"],
            "event_after_s": None
            if row["event_after_ms"] is None
            else row["event_after_ms"] / 1000,
        }
        for row in rows
    ]
