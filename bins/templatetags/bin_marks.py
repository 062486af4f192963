"""Filters for the marks on a capture (list rows, the open capture's event and timeline)."""

from __future__ import annotations

from typing import Any

from django import template

from .. import events

register = template.Library()


@register.filter
def provider_label(c: Any) -> str:
    """ "Stripe · invoice.paid" from a capture's JSON (a dict) or a Capture."""
    if isinstance(c, dict):
        return events.sender_label(c.get("provider"), c.get("event_type"))
    return events.sender_label(c.provider, c.event_type)


@register.filter
def span(seconds: float | None) -> str:
    return events.span(seconds)


@register.filter
def status_class(status: Any) -> str:
    """ "2xx" ... "5xx" for a status code, for its colour."""
    return f"{str(status)[:1]}xx" if str(status)[:1] in "2345" and status else "err"
