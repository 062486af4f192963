"""Bins as the capture path needs them, cached briefly in the process.

A capture needs its bin's id and reply; looking them up per request would cost a database
round trip on the hot path. Entries live for `TTL` seconds, so a change made through another
process (PATCH, DELETE) takes effect within that time; changes made in this process drop the
entry at once. Unknown tokens are not cached: a bin created a moment ago elsewhere must work.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from .models import Bin
from .replies import Plan, plan_for

TTL = 1.0
_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class BinInfo:
    """What the capture path needs of a bin."""

    id: int
    token: uuid.UUID
    forward_url: str
    plan: Plan  # what it answers (see `replies`)
    signature: dict[str, Any] | None  # how its captures' signatures are checked, or None


_cache: dict[uuid.UUID, tuple[float, BinInfo]] = {}


def load(token: uuid.UUID) -> BinInfo | None:
    """Read a bin from the database (blocking)."""
    row = (
        Bin.objects.filter(token=token)
        .values_list("id", "response", "rules", "forward_url", "signature")
        .first()
    )
    if row is None:
        return None
    bin_id, response, rules, forward_url, signature = row
    return BinInfo(bin_id, token, forward_url, plan_for(response, rules), signature)


async def lookup(token: uuid.UUID) -> BinInfo | None:
    now = time.monotonic()
    hit = _cache.get(token)
    if hit is not None and hit[0] > now:
        return hit[1]
    from .writer import run_in_writer_thread

    info = await run_in_writer_thread(load, token)
    if info is None:
        _cache.pop(token, None)
        return None
    if len(_cache) >= _MAX_ENTRIES:
        for key in [k for k, (expires, _) in _cache.items() if expires <= now]:
            del _cache[key]
    _cache[token] = (now + TTL, info)
    return info


def forget(token: uuid.UUID) -> None:
    _cache.pop(token, None)


def forget_id(bin_id: int) -> None:
    for token, (_, info) in list(_cache.items()):
        if info.id == bin_id:
            _cache.pop(token, None)
