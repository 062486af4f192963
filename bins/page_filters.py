"""The inspector page's search and filters, and its counts of captures kept and received.

The page filters its list with the API's filters (`bins.listing.filtered`: one definition of
what matches). The filters travel in the page's URL (`?q=...&method=POST`, so a reload or a
shared link keeps them) and in its live stream's URL: the stream sends the filtered list on
every (re)connect, and of the captures that arrive only those that match, asking the database
(`matching`), so a row the list shows always matches by the same rule as a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .listing import filtered
from .models import Bin, Capture
from .providers import PROVIDER_NAMES

# What the page offers (a subset of listing.FILTERS), in the order its URL lists them.
PAGE_FILTERS = ("q", "method", "provider", "valid")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
VERDICTS = {"true": "Signature valid", "false": "Signature invalid"}
MAX_QUERY = 200  # characters of a search


def page_filters(params: Mapping[str, Any]) -> dict[str, str]:
    """The filters a page asked for, in PAGE_FILTERS order; empty or unusable values (a NUL,
    a verdict other than true/false) are left out, so the page never fails on its own URL."""
    out: dict[str, str] = {}
    for name in PAGE_FILTERS:
        value = params.get(name)
        if not isinstance(value, str):
            continue
        value = value.strip() if name != "q" else value
        if not value or "\x00" in value:
            continue
        if name == "valid" and value not in VERDICTS:
            continue
        out[name] = value[:MAX_QUERY]
    return out


def query(filters: Mapping[str, str]) -> str:
    """`?q=...&method=...` for these filters, or "" when there are none."""
    return "?" + urlencode(filters) if filters else ""


def choices(filters: Mapping[str, str]) -> dict[str, list[tuple[str, str]]]:
    """The options of the page's method and provider selects (the current value is always
    among them, even an unusual method such as PURGE)."""
    methods = list(METHODS)
    if filters.get("method") and filters["method"] not in methods:
        methods.append(filters["method"])
    providers = dict(PROVIDER_NAMES)
    if filters.get("provider") and filters["provider"] not in providers:
        providers[filters["provider"]] = filters["provider"]
    return {
        "methods": [(m, m) for m in methods],
        "providers": list(providers.items()),
        "verdicts": list(VERDICTS.items()),
    }


def matching(bin_id: int, ids: list[int], filters: Mapping[str, str]) -> set[int]:
    """Which of these capture numbers match the filters (one query, through the bin's index)."""
    rows = filtered(Capture.objects.filter(bin_id=bin_id, seq__in=ids), filters)
    return set(rows.values_list("seq", flat=True))


def counts(bin_id: int, received: int | None = None) -> dict[str, int]:
    """`kept` and `received` (the bin's counters, as its JSON has them: captures_kept,
    captures_received) and `pruned`, the difference (pruned by CAPTURES_PER_BIN, or deleted).
    The writer prunes in steps of 5% of the limit, so for a moment a bin can hold a few more
    than it keeps; the page counts those as pruned already, so a reload and a live count
    agree."""
    if received is None:
        received = Bin.objects.filter(pk=bin_id).values_list("last_seq", flat=True).first() or 0
    kept = Capture.objects.filter(bin_id=bin_id).count()
    return shown_counts(kept, received)


def shown_counts(kept: int, received: int) -> dict[str, int]:
    keep = settings.CAPTURES_PER_BIN
    if keep > 0:
        kept = min(kept, keep)
    kept = min(kept, received)
    return {"kept": kept, "received": received, "pruned": received - kept}


def counts_html(counts: Mapping[str, int], oob: bool = False) -> SafeString:
    """The list head's "N kept · M received" (a live message carries it out of band). Built
    here rather than by a template: every live message to every open page carries it."""
    return format_html(
        '<p id="capture-counts" class="counts" data-kept="{}" data-received="{}" '
        'title="{} pruned (the bin keeps the newest) or deleted"{}>{} kept · {} received</p>',
        counts["kept"],
        counts["received"],
        f"{counts['pruned']:,}",
        SafeString(' hx-swap-oob="true"') if oob else "",
        f"{counts['kept']:,}",
        f"{counts['received']:,}",
    )
