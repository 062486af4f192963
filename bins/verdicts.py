"""Signature verdicts: checked as each capture arrives (`bins.asgi`), and checked again for the
bin's stored captures whenever its scheme or secret changes.

A re-check reads one capture at a time (a bin may hold hundreds of 10 MiB bodies) in a thread of
its own, then tells the bin's live streams, so an open page shows the new verdicts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import connection

from . import providers
from .models import Bin, Capture

logger = logging.getLogger(__name__)


def verdict(config: dict[str, Any], capture: Any, url: str) -> dict[str, Any]:
    """A capture's verdict as the contract shapes it; `url` is the capture URL as called."""
    result = providers.verify(
        config, capture.headers, bytes(capture.body), url, capture.received_at.timestamp()
    )
    return {"scheme": config["scheme"], "valid": result.valid, "reason": result.reason}


def called_url(capture_base: str, token: Any, path: str, query: str) -> str:
    """The capture URL as the provider called it (Twilio signs it)."""
    return f"{capture_base}/{token}{path}" + (f"?{query}" if query else "")


def recheck(bin_id: int, capture_base: str) -> int:
    """Check every stored capture of a bin again with its current signature setting (None:
    verdicts cleared); returns how many were checked."""
    bin_ = Bin.objects.filter(pk=bin_id).only("token", "signature").first()
    if bin_ is None:
        return 0
    config = bin_.signature
    if config is None:
        return Capture.objects.filter(bin_id=bin_id).update(signature=None)
    checked = 0
    for pk in Capture.objects.filter(bin_id=bin_id).order_by("seq").values_list("pk", flat=True):
        capture = Capture.objects.filter(pk=pk).first()
        if capture is None:  # pruned meanwhile
            continue
        url = called_url(capture_base, bin_.token, capture.path, capture.query_string)
        Capture.objects.filter(pk=pk).update(signature=verdict(config, capture, url))
        checked += 1
    return checked


def recheck_later(bin_: Bin, capture_base: str) -> threading.Thread:
    """Re-check a bin's captures in a thread of its own, then tell its live streams."""

    def run() -> None:
        from .live import announce_changed

        try:
            recheck(bin_.pk, capture_base)
            announce_changed(bin_.token, "signatures checked again")
        except Exception:
            logger.exception("checking the signatures of bin %s again failed", bin_.token)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="signature-recheck", daemon=True)
    thread.start()
    return thread
