"""Changing a bin's settings: one place for the API's PATCH and the page's settings form."""

from __future__ import annotations

from typing import Any

from . import bincache, verdicts
from .models import Bin
from .validation import bin_changes


def change(bin_: Bin, data: dict[str, Any], capture_base: str) -> Bin:
    """Apply a PATCH-shaped change (raises validation.Invalid naming the field; then nothing
    changed). The capture path sees it at once in this process, within a second elsewhere; a
    new signature scheme or secret re-checks the stored captures."""
    changes = bin_changes(bin_, data, str(bin_.token))
    recheck = "signature" in changes and changes["signature"] != bin_.signature
    for field, value in changes.items():
        setattr(bin_, field, value)
    if changes:
        bin_.save(update_fields=list(changes))
    bincache.forget(bin_.token)
    if recheck:
        verdicts.recheck_later(bin_, capture_base)
    return bin_
