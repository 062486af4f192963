"""Auto-forward, from the outbox.

The writer stores a `Forward` row with each capture of a bin that has a `forward_url`, in the
same transaction: a forward survives a restart, and nothing about it is held in memory. One
task per process claims due rows (a claim is a row lock skipped by the others on PostgreSQL, so
each capture is sent by one process however many run) and sends them, a bounded number and a
bounded amount of body bytes at a time. An attempt that gets no answer, or 408, 429 or 5xx, is
tried again with backoff, up to FORWARD_MAX_ATTEMPTS; each attempt is a recorded delivery.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from . import metrics
from .models import Capture, Delivery, Forward
from .resend import deliver

logger = logging.getLogger(__name__)

# Seconds to wait before attempt 2, 3, 4, ...; hourly after the last.
BACKOFF = (1, 5, 30, 120, 600)
CLAIM_BATCH = 16
CONCURRENT = 16
# Bodies held at once by the sends of one process (a single larger body still goes, alone).
MEMORY_BYTES = 64 * 1024 * 1024
# Other processes' forwards, and retries that came due, are looked for this often.
POLL_EVERY = 1.0


def retry_after(attempts: int) -> int:
    return BACKOFF[attempts - 1] if attempts <= len(BACKOFF) else 3600


def should_retry(delivery: Delivery) -> bool:
    if delivery.status is None:
        return True
    return delivery.status in (408, 429) or delivery.status >= 500


def claim(limit: int) -> list[tuple[int, int, str, int, int]]:
    """Claim due forwards: (forward id, capture pk, target, attempt number, body size)."""
    now = timezone.now()
    # A claim lasts longer than any send can take; a process that died while sending leaves
    # its claims to expire, and another process sends them again.
    until = now + timedelta(seconds=settings.RESEND_TIMEOUT * 3 + 60)
    forward, capture = Forward._meta.db_table, Capture._meta.db_table
    skip_locked = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {forward} SET claimed_until = %s, attempts = attempts + 1 "
            f"WHERE id IN (SELECT id FROM {forward} WHERE due_at <= %s AND "
            "(claimed_until IS NULL OR claimed_until < %s) "
            f"ORDER BY due_at, id LIMIT %s{skip_locked}) "
            "RETURNING id, capture_id, target_url, attempts",
            [until, now, now, limit],
        )
        claimed = cursor.fetchall()
        if not claimed:
            return []
        ids = [row[1] for row in claimed]
        cursor.execute(
            f"SELECT id, body_size FROM {capture} WHERE id IN ({', '.join(['%s'] * len(ids))})",
            ids,
        )
        sizes = dict(cursor.fetchall())
    return [(f, c, url, n, sizes.get(c, 0)) for f, c, url, n in claimed]


def settle(forward_id: int, attempts: int, retry: bool) -> bool:
    """Done with an attempt: delete the forward, or make it due again after the backoff
    (True)."""
    limit = settings.FORWARD_MAX_ATTEMPTS
    if retry and (limit == 0 or attempts < limit):
        due = timezone.now() + timedelta(seconds=retry_after(attempts))
        Forward.objects.filter(pk=forward_id).update(due_at=due, claimed_until=None)
        return True
    Forward.objects.filter(pk=forward_id).delete()
    return False


def load(capture_pk: int) -> Capture | None:
    return Capture.objects.select_related("bin").filter(pk=capture_pk).first()


class Forwarder:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.woken = asyncio.Event()
        self.slots = asyncio.Semaphore(CONCURRENT)
        self.memory = MEMORY_BYTES
        self.memory_freed = asyncio.Condition()
        self.sending: set[asyncio.Task[None]] = set()
        self.task = loop.create_task(self._run(), name="forwarder")

    async def _run(self) -> None:
        while True:
            try:
                jobs = await database_sync_to_async(claim)(CLAIM_BATCH)
            except Exception:
                logger.exception("forwarder: claiming forwards failed; trying again")
                jobs = []
            for job in jobs:
                await self.slots.acquire()
                await self.reserve(job[4])
                task = asyncio.get_running_loop().create_task(self.send(*job))
                self.sending.add(task)
                task.add_done_callback(self.sending.discard)
            if len(jobs) < CLAIM_BATCH:
                self.woken.clear()
                try:
                    await asyncio.wait_for(self.woken.wait(), POLL_EVERY)
                except TimeoutError:
                    pass

    async def reserve(self, size: int) -> None:
        size = min(size, MEMORY_BYTES)  # a body larger than the budget goes alone
        async with self.memory_freed:
            await self.memory_freed.wait_for(lambda: self.memory >= size)
            self.memory -= size

    async def release(self, size: int) -> None:
        async with self.memory_freed:
            self.memory += min(size, MEMORY_BYTES)
            self.memory_freed.notify_all()

    async def send(
        self, forward_id: int, capture_pk: int, url: str, attempt: int, size: int
    ) -> None:
        try:
            capture = await database_sync_to_async(load)(capture_pk)
            if capture is None:  # deleted meanwhile: its forward went with it
                return
            delivery = await deliver(capture, url, kind=Delivery.FORWARD, attempt=attempt)
            retry = should_retry(delivery)
            again = await database_sync_to_async(settle)(forward_id, attempt, retry)
            outcome = "delivered" if not retry else "retry" if again else "gave_up"
            metrics.FORWARDS.labels(outcome).inc()
            if retry:
                logger.warning(
                    "auto-forward of capture %s to %s, attempt %d: %s",
                    capture_pk,
                    url,
                    attempt,
                    delivery.error or f"answered {delivery.status}",
                )
        except Exception:
            # The claim expires and the forward is tried again.
            logger.exception("auto-forward of capture %s failed", capture_pk)
        finally:
            self.slots.release()
            await self.release(size)


_forwarders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Forwarder] = (
    weakref.WeakKeyDictionary()
)


def get_forwarder() -> Forwarder:
    loop = asyncio.get_running_loop()
    current = _forwarders.get(loop)
    if current is None or current.task.done():
        current = _forwarders[loop] = Forwarder(loop)
    return current


def wake() -> None:
    """New forwards were committed in this process: look now (called from the event loop)."""
    get_forwarder().woken.set()


def backlog() -> int:
    """Forwards waiting (for /metrics)."""
    return Forward.objects.count()


async def stop() -> None:
    """Stop this event loop's forwarder (tests)."""
    current = _forwarders.pop(asyncio.get_running_loop(), None)
    if current is not None:
        current.task.cancel()
        for task in list(current.sending):
            task.cancel()
        await asyncio.wait([current.task, *current.sending], timeout=2)
