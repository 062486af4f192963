"""Announce committed captures to live clients, batched per bin, off the response path.

The writer hands over each committed batch; one publisher task per event loop sends one group
message per bin with all of that bin's new captures, in commit order. A failed push (Redis down)
is logged loudly and never touches the stored captures: clients catch up by id from the
database when they reconnect (see `bins.consumers`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from typing import Any

import orjson
from channels.layers import get_channel_layer

from .capture import Pending
from .models import Capture

logger = logging.getLogger(__name__)


def group_name(token: uuid.UUID | str) -> str:
    return f"bin.{token}"


class Publisher:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[tuple[uuid.UUID, list[list[Any]]]] = asyncio.Queue()
        self.idle = asyncio.Event()
        self.task = loop.create_task(self._run(), name="live-publisher")

    async def _run(self) -> None:
        layer = get_channel_layer()
        while True:
            pending: dict[uuid.UUID, list[list[Any]]] = {}
            if self.queue.empty():
                self.idle.set()
            token, captures = await self.queue.get()
            self.idle.clear()
            pending.setdefault(token, []).extend(captures)
            while not self.queue.empty():
                token, captures = self.queue.get_nowait()
                pending.setdefault(token, []).extend(captures)
            for token, captures in pending.items():
                await send_captures(layer, token, captures)
            # A batch may hold many megabytes of JSON: do not keep the last one alive while
            # waiting for the next (the memory would not come back until a capture arrives).
            del pending, token, captures


# A push that has not gone through by then is given up (and logged): with Redis down, a send can
# wait on a connection that is not coming back, and everything queued behind it would wait too.
SEND_TIMEOUT = 2.0


async def group_send_within(group: str, message: dict[str, Any]) -> None:
    """group_send that gives up after SEND_TIMEOUT (raises TimeoutError)."""
    await asyncio.wait_for(get_channel_layer().group_send(group, message), SEND_TIMEOUT)


async def send_captures(layer: Any, token: uuid.UUID, captures: list[list[Any]]) -> None:
    message = {"type": "captures.new", "captures": captures}
    try:
        await asyncio.wait_for(layer.group_send(group_name(token), message), SEND_TIMEOUT)
    except Exception:
        logger.exception(
            "live push failed for bin %s (captures %s..%s are stored; clients catch up on "
            "reconnect)",
            token,
            captures[0][0],
            captures[-1][0],
        )


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


def live_item(capture: Capture | Pending) -> list[Any]:
    """A capture as the streams carry it: `[id, its API JSON as text]`. Serialised once for
    every listener, and nearly free for the in-memory layer, which deep-copies each message."""
    shape = capture.as_json()
    # The shape holds no lone surrogates (headers are shown with \\xNN), so orjson takes it.
    return [shape["id"], orjson.dumps(shape).decode()]


def publish_captures(captures: list[Pending]) -> None:
    """Queue committed captures for their bins' live streams (called from the event loop)."""
    publisher = get_publisher()
    by_bin: dict[uuid.UUID, list[list[Any]]] = {}
    for capture in captures:
        by_bin.setdefault(capture.bin.token, []).append(live_item(capture))
    for token, items in by_bin.items():
        publisher.queue.put_nowait((token, items))


def announce_deleted(token: uuid.UUID, ids: list[int] | None) -> None:
    """Tell live clients that captures were deleted (None: all of them). Called from views."""
    from asgiref.sync import async_to_sync

    message = {"type": "captures.deleted", "ids": ids}
    try:
        async_to_sync(group_send_within)(group_name(token), message)
    except Exception:
        logger.exception("live push of a deletion in bin %s failed", token)


async def stop() -> None:
    """Stop this event loop's publisher once it has sent what it holds (tests: each test has
    its own loop; a send cancelled halfway through a Redis connect may never return)."""
    current = _publishers.pop(asyncio.get_running_loop(), None)
    if current is not None:
        await asyncio.wait([asyncio.ensure_future(current.idle.wait())], timeout=2)
        current.task.cancel()
        await asyncio.wait([current.task], timeout=2)
