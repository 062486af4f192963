"""Reading captures in bulk without holding more than a client asked for.

Lists and streams carry a body inline only up to INLINE_BODY_BYTES (64 KiB by default), and the
database never even returns the larger ones; one answer inlines at most RESPONSE_BODY_BUDGET
bytes of bodies in all, then leaves the rest out too (`body_omitted`: the client fetches those
one by one). Catch-ups are read in pages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import BinaryField, Case, F, QuerySet, Value, When
from django.db.models.functions import Substr

from .live import Item, live_item
from .models import Capture, capture_json

RESPONSE_BODY_BUDGET = 8 * 1024 * 1024
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
    "answer",
)


def list_rows(bin_id: int, limit: int) -> list[dict[str, Any]]:
    """The newest captures of a bin for the page's list, as the rows the list shows (the same
    keys as a capture's JSON): no body, no headers, path and query string cut to ROW_TEXT."""
    rows = (
        Capture.objects.filter(bin_id=bin_id)
        .order_by("-seq")
        .values(
            *ROW_FIELDS,
            path_cut=Substr("path", 1, ROW_TEXT + 1),
            query_cut=Substr("query_string", 1, ROW_TEXT + 1),
        )[:limit]
    )
    return [
        {**row, "id": row["seq"], "path": row["path_cut"], "query_string": row["query_cut"]}
        for row in rows
    ]
