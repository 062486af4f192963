"""Announce committed captures to live clients, and make sure no client silently misses one.

The writer hands over each committed batch; one publisher task per event loop sends one group
message per bin with that bin's new captures, in number order, off the response path.

A push can be lost on its way (Redis down, a subscription that was reconnecting, a push that
timed out), and with several processes the pushes of one bin can arrive out of order. So the
streams never trust pushes alone: each stream knows the number of the last capture it sent, and
a capture number is only ever sent after all the smaller ones (`bins.consumers`). What was not
pushed is read from the database: when a push skips numbers, and when the bin's newest number
in the database (watched by one task per process, `Watcher`) is ahead of what a stream has sent.
A stream that cannot be brought up to date is closed with code 4000; its client reconnects
with `?after=`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from typing import Any, Protocol

import orjson
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from . import metrics
from .capture import Pending
from .models import Bin

logger = logging.getLogger(__name__)

# A live item: [capture number, its API JSON as text].
Item = list[Any]


def group_name(token: uuid.UUID | str) -> str:
    return f"bin.{token}"


class Publisher:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[tuple[uuid.UUID, list[Item]]] = asyncio.Queue()
        self.idle = asyncio.Event()
        self.task = loop.create_task(self._run(), name="live-publisher")

    async def _run(self) -> None:
        layer = get_channel_layer()
        while True:
            pending: dict[uuid.UUID, list[Item]] = {}
            if self.queue.empty():
                self.idle.set()
            token, items = await self.queue.get()
            self.idle.clear()
            pending.setdefault(token, []).extend(items)
            while not self.queue.empty():
                token, items = self.queue.get_nowait()
                pending.setdefault(token, []).extend(items)
            for token, items in pending.items():
                await send_captures(layer, token, items)
            # A batch may hold many megabytes of JSON: do not keep the last one alive while
            # waiting for the next (the memory would not come back until a capture arrives).
            del pending, token, items


# A push that has not gone through by then is given up (and logged): with Redis down, a send can
# wait on a connection that is not coming back, and everything queued behind it would wait too.
SEND_TIMEOUT = 2.0


async def group_send_within(group: str, message: dict[str, Any]) -> None:
    """group_send that gives up after SEND_TIMEOUT (raises TimeoutError)."""
    await asyncio.wait_for(get_channel_layer().group_send(group, message), SEND_TIMEOUT)


async def send_captures(layer: Any, token: uuid.UUID, items: list[Item]) -> None:
    message = {"type": "captures.new", "captures": items}
    try:
        await asyncio.wait_for(layer.group_send(group_name(token), message), SEND_TIMEOUT)
        metrics.PUSHES.inc()
    except Exception:
        metrics.PUSHES_FAILED.inc()
        logger.exception(
            "live push failed for bin %s (captures %s..%s are stored; streams of this process "
            "are closed with 4000, the others catch up from the database)",
            token,
            items[0][0],
            items[-1][0],
        )
        # This process knows its own streams missed the push: they cannot vouch for their
        # clients any more. Streams of other processes find the gap from the database.
        for stream in list(watcher().streams.get(token, ())):
            stream.close_behind("a live push failed")


# Keyed by the loop itself (weakly): ids of closed loops get reused.
_publishers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Publisher] = (
    weakref.WeakKeyDictionary()
)


def get_publisher() -> Publisher:
    loop = asyncio.get_running_loop()
    publisher = _publishers.get(loop)  # one dict lookup per batch, not per capture
    if publisher is None or publisher.task.done():
        publisher = _publishers[loop] = Publisher(loop)
    return publisher


def live_item(shape: dict[str, Any]) -> Item:
    """A capture as the streams carry it: `[number, its JSON as text]`. Serialised once for
    every listener, and nearly free for the in-memory layer, which deep-copies each message.
    The shape holds no lone surrogates (headers are shown with \\xNN), so orjson takes it."""
    return [shape["id"], orjson.dumps(shape).decode()]


def publish_captures(captures: list[Pending]) -> None:
    """Queue committed captures for their bins' live streams (called from the event loop)."""
    publisher = get_publisher()
    by_bin: dict[uuid.UUID, list[Item]] = {}
    limit = settings.INLINE_BODY_BYTES
    for capture in captures:
        by_bin.setdefault(capture.bin.token, []).append(live_item(capture.live_json(limit)))
    for token, items in by_bin.items():
        items.sort(key=lambda item: item[0])
        publisher.queue.put_nowait((token, items))


def announce_deleted(token: uuid.UUID, ids: list[int] | None) -> None:
    """Tell live clients that captures were deleted (None: all of them). Called from views."""
    from asgiref.sync import async_to_sync

    message = {"type": "captures.deleted", "ids": ids}
    try:
        async_to_sync(group_send_within)(group_name(token), message)
    except Exception:
        logger.exception("live push of a deletion in bin %s failed", token)


def announce_changed(token: uuid.UUID, why: str) -> None:
    """Tell live clients that stored captures changed (their signatures were checked again):
    the page lists them again. Called from threads, not the event loop."""
    from asgiref.sync import async_to_sync

    message = {"type": "captures.changed", "why": why}
    try:
        async_to_sync(group_send_within)(group_name(token), message)
    except Exception:
        logger.exception("live push of a change in bin %s failed", token)


async def stop() -> None:
    """Stop this event loop's publisher and watcher once they are idle (tests: each test has
    its own loop; a send cancelled halfway through a Redis connect may never return)."""
    loop = asyncio.get_running_loop()
    current = _publishers.pop(loop, None)
    if current is not None:
        await asyncio.wait([asyncio.ensure_future(current.idle.wait())], timeout=2)
        current.task.cancel()
        await asyncio.wait([current.task], timeout=2)
    watching = _watchers.pop(loop, None)
    if watching is not None and watching.task is not None:
        watching.task.cancel()
        await asyncio.wait([watching.task], timeout=2)


# --- the watcher: what pushes missed, read from the database --------------------------------


class Stream(Protocol):
    """What the watcher needs of a live stream (see `bins.consumers`)."""

    bin_id: int
    last_sent: int
    last_push: float

    async def heal(self, newest: int) -> None: ...

    def close_behind(self, why: str) -> None: ...


# How often the watcher reads the newest numbers of the bins this process streams, and how long
# a stream that is behind is given for the push of what it lacks to arrive first.
WATCH_EVERY = 1.0
PUSH_GRACE = 1.0


class Watcher:
    """One per event loop: every WATCH_EVERY seconds, one query for the newest capture number of
    every bin this process streams; a stream that is behind and got no push for PUSH_GRACE
    reads what it lacks from the database."""

    def __init__(self) -> None:
        self.streams: dict[uuid.UUID, set[Stream]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, token: uuid.UUID, stream: Stream) -> None:
        self.streams.setdefault(token, set()).add(stream)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="live-watcher")

    def discard(self, token: uuid.UUID, stream: Stream) -> None:
        streams = self.streams.get(token)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self.streams[token]

    async def _run(self) -> None:
        while self.streams:
            await asyncio.sleep(WATCH_EVERY)
            try:
                await self.check()
            except Exception:
                logger.exception("live watcher: reading the bins' newest captures failed")

    async def check(self) -> None:
        ids = {next(iter(s)).bin_id for s in self.streams.values() if s}
        if not ids:
            return
        newest = await database_sync_to_async(_newest_numbers)(ids)
        now = time.monotonic()
        for streams in list(self.streams.values()):
            for stream in list(streams):
                upto = newest.get(stream.bin_id)
                if upto is None:
                    continue
                if stream.last_sent < upto and now - stream.last_push >= PUSH_GRACE:
                    await stream.heal(upto)


def _newest_numbers(ids: set[int]) -> dict[int, int]:
    return dict(Bin.objects.filter(id__in=ids).values_list("id", "last_seq"))


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watcher] = (
    weakref.WeakKeyDictionary()
)


def watcher() -> Watcher:
    loop = asyncio.get_running_loop()
    current = _watchers.get(loop)
    if current is None:
        current = _watchers[loop] = Watcher()
    return current
