"""What the open capture shows about its sender and its event (see _capture_event.html).

An event's timeline is every delivery of it in the bin (captures with the same `event_id`):
the provider's real retry schedule, read off the captures. A provider that retries for days
can leave hundreds, so the timeline reads a bounded number of them: the first TIMELINE_HEAD,
and a few on each side of the open one when it comes later, and says how many it leaves out.
All reads go through the (bin, event_id) index.
"""

from __future__ import annotations

from typing import Any

from . import providers
from .models import Capture

TIMELINE_HEAD = 30
TIMELINE_AROUND = 5

# Signature headers that give a provider's scheme away (a capture that "looks signed").
SIGNATURE_HEADERS = {
    "x-hub-signature-256": "github",
    "stripe-signature": "stripe",
    "webhook-signature": "standard-webhooks",
    "svix-signature": "standard-webhooks",
    "x-shopify-hmac-sha256": "shopify",
    "x-slack-signature": "slack",
    "x-twilio-signature": "twilio",
}
SCHEME_NAMES = {
    "github": "GitHub",
    "stripe": "Stripe",
    "standard-webhooks": "Standard Webhooks",
    "shopify": "Shopify",
    "slack": "Slack",
    "twilio": "Twilio",
    "hmac": "HMAC",
}


def sender_label(provider: str | None, event_type: str | None) -> str:
    """ "Stripe · invoice.paid", or "" when no provider was recognised."""
    if not provider:
        return ""
    return providers.describe(providers.Recognised(provider, event_type or None))


def span(seconds: float | None) -> str:
    """A time between deliveries, short: "27 ms", "4.2 s", "62 s", "5 min", "3.5 h", "2.1 d"."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{round(seconds)} s"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def looks_signed(headers: list[list[str]]) -> tuple[str, str] | None:
    """(scheme, header name) of the first known signature header, or None."""
    for name, _ in headers:
        scheme = SIGNATURE_HEADERS.get(name)
        if scheme:
            return scheme, name
    return None


def verdict_view(capture: Capture) -> dict[str, str] | None:
    """The signature verdict in plain words: `state` (valid, invalid, unchecked, pending) and
    `text`; None where there is nothing to say (no scheme and nothing that looks signed)."""
    verdict = capture.signature
    if isinstance(verdict, dict):
        scheme = SCHEME_NAMES.get(verdict.get("scheme"), str(verdict.get("scheme")))
        if verdict.get("valid"):
            return {"state": "valid", "text": f"valid ({scheme}, checked with the bin's secret)"}
        return {"state": "invalid", "text": str(verdict.get("reason") or "invalid")}
    if capture.bin.signature:
        # The bin's scheme was set a moment ago: its stored captures are being checked.
        return {"state": "pending", "text": "not checked yet: the check is under way"}
    signed = looks_signed(capture.headers)
    if signed is None:
        return None
    scheme, header = signed
    return {
        "state": "unchecked",
        "text": f"no secret set: add one to check (it carries {header}, "
        f"a {SCHEME_NAMES[scheme]} signature)",
        "scheme": scheme,
    }


def answer_words(answer: dict[str, Any] | None) -> str:
    if not answer:
        return ""
    rule = answer.get("rule")
    return f"{answer.get('status')} ({rule or 'the default response'})"


TIMELINE_FIELDS = ("seq", "received_at", "answer", "signature")


def timeline(capture: Capture) -> dict[str, Any] | None:
    """Every delivery of the capture's event in order (bounded, see the module docstring):
    `items` (each `{"n", "seq", "received_at", "interval_s", "after_s", "answer", "valid",
    "current"}`, or `{"gap": how many are left out}`), `total`, `more_after` (how many after
    the last shown), `partial` (some are left out)."""
    if not capture.event_id:
        return None
    deliveries = Capture.objects.filter(bin_id=capture.bin_id, event_id=capture.event_id)
    total = deliveries.count()
    head = list(deliveries.order_by("seq").values(*TIMELINE_FIELDS)[:TIMELINE_HEAD])
    if not head:
        return None
    rows = list(enumerate(head, 1))  # (position in the event, row)
    shown_upto = len(head)
    interval_only = 0  # the position of a row read only for the next one's interval
    if capture.seq > head[-1]["seq"]:
        # The open delivery comes later: it and a few on each side of it.
        position = deliveries.filter(seq__lt=capture.seq).count() + 1
        before = deliveries.filter(seq__gt=head[-1]["seq"], seq__lt=capture.seq)
        before = list(before.order_by("-seq").values(*TIMELINE_FIELDS)[: TIMELINE_AROUND + 1])
        after = deliveries.filter(seq__gte=capture.seq).order_by("seq")
        after = list(after.values(*TIMELINE_FIELDS)[: TIMELINE_AROUND + 1])
        start = position - len(before)
        rows += enumerate(before[::-1] + after, start)
        shown_upto = position + len(after) - 1
        if len(before) > TIMELINE_AROUND and start > len(head) + 1:
            interval_only = start
    items: list[dict[str, Any]] = []
    first_at = head[0]["received_at"]
    last_shown = 0
    previous: tuple[int, Any] = (0, None)
    for n, row in rows:
        at = row["received_at"]
        interval = None
        if previous[1] is not None and previous[0] == n - 1:
            interval = (at - previous[1]).total_seconds()
        previous = (n, at)
        if n == interval_only:
            continue
        if n > last_shown + 1:
            items.append({"gap": n - last_shown - 1})
        last_shown = n
        verdict = row["signature"]
        items.append(
            {
                "n": n,
                "seq": row["seq"],
                "received_at": at,
                "interval_s": interval,
                "after_s": (at - first_at).total_seconds(),
                "answer": row["answer"],
                "valid": verdict.get("valid") if isinstance(verdict, dict) else None,
                "current": row["seq"] == capture.seq,
            }
        )
    shown = sum(1 for item in items if "n" in item)
    return {
        "items": items,
        "total": total,
        "more_after": max(0, total - shown_upto),
        "partial": shown < total,
        "head": TIMELINE_HEAD,
    }


def detail_extras(capture: Capture) -> dict[str, Any]:
    """Who sent the open capture and what, its verdict in plain words, and its event's
    timeline: the `event` of _capture_event.html."""
    return {
        "event": {
            "sender": sender_label(capture.provider, capture.event_type),
            "event_id": capture.event_id,
            "delivery": capture.event_delivery,
            "after_s": None if capture.event_after_ms is None else capture.event_after_ms / 1000,
            "answer": answer_words(capture.answer),
            "verdict": verdict_view(capture),
            "timeline": timeline(capture),
        }
    }
