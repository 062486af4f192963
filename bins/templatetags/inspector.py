from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from django import template

from .. import display, page_filters

register = template.Library()


def _as_datetime(value: datetime | str) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


@register.filter
def clock(value: datetime | str) -> str:
    """Time of day with milliseconds (UTC): what tells deliveries apart in a list."""
    return _as_datetime(value).strftime("%H:%M:%S.%f")[:-3]


@register.filter
def stamp(value: datetime | str) -> str:
    """Date and time with the zone: "24 Nov 13:03:07 UTC". What a page without script shows;
    app.js shows every `time[datetime]` in the viewer's own zone."""
    at = _as_datetime(value).astimezone(UTC)
    return f"{at.day} {at:%b %H:%M:%S} UTC"


@register.filter
def thousands(value: int) -> str:
    return f"{int(value):,}"


@register.filter
def iso(value: datetime | str) -> str:
    return _as_datetime(value).isoformat().replace("+00:00", "Z")


@register.filter
def size(value: int) -> str:
    value = int(value)
    if value < 1024:
        return f"{value} B"
    if value < 1024 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value / 1024 / 1024:.1f} MiB"


@register.filter
def shown_target(c: Any) -> str:
    """A capture's path decoded as the open capture shows it (`display.decoded_path`, the one
    place that decodes), then its query string as sent (from a list row, its JSON, or a
    Capture)."""
    if isinstance(c, dict):
        c = SimpleNamespace(path=c["path"], query_string=c["query_string"])
    path = display.decoded_path(c)
    return path + (f"?{c.query_string}" if c.query_string else "")


@register.simple_tag
def capture_counts(counts: dict[str, int]) -> str:
    """The list head's counts (bins.page_filters.counts_html, as live messages carry them)."""
    return page_filters.counts_html(counts)
