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

from .capture import Reply, reply_for
from .models import Bin

TTL = 1.0
_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class BinInfo:
    # Only id, token and forward_url are set: what the capture path and auto-forward need.
    bin: Bin
    reply: Reply


_cache: dict[uuid.UUID, tuple[float, BinInfo]] = {}


def load(token: uuid.UUID) -> BinInfo | None:
    """Read a bin from the database (blocking)."""
    row = Bin.objects.filter(token=token).values_list("id", "response", "forward_url").first()
    if row is None:
        return None
    bin_id, response, forward_url = row
    return BinInfo(Bin(id=bin_id, token=token, forward_url=forward_url), reply_for(response))


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
        if info.bin.id == bin_id:
            _cache.pop(token, None)
