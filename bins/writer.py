"""Store captures in groups, then announce them.

A Django view inserting one row per request stores a few hundred captures per second (a fresh
thread and database connection per request; see the README's performance section). Here every
capture of a server process goes through one queue to one writer thread that keeps its
connection and commits whatever has queued up in one transaction. A request is answered only
after the transaction holding its capture has committed; then the batch is handed to the live
publisher, off the response path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from . import live
from .capture import Pending
from .models import Bin, Capture
from .resend import forward_later

logger = logging.getLogger(__name__)

MAX_BATCH = 256
# Bodies (bytes) in one batch above which the PostgreSQL connection is not kept (see commit_batch).
LARGE_BATCH = 8 * 1024 * 1024

# One thread for the whole process, whatever event loop asks: it owns the writer's database
# connection, so commits are serialised and the connection is reused.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-writer")


class CaptureWriter:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[Pending, asyncio.Future[Pending]]] = asyncio.Queue()
        self.task = loop.create_task(self._run(), name="capture-writer")

    async def store(self, capture: Pending) -> Pending:
        """Queue a capture and wait until it is committed; raises if it could not be stored."""
        future: asyncio.Future[Pending] = self.loop.create_future()
        self.queue.put_nowait((capture, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            captures = [capture for capture, _ in batch]
            try:
                results = await self.loop.run_in_executor(_executor, commit_batch, captures)
            except Exception as exc:  # the thread itself failed: refuse the whole batch
                logger.exception("capture writer failed")
                results = [exc] * len(batch)
            stored: list[Pending] = []
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the client went away
                    pass
                elif isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
                if not isinstance(result, BaseException):
                    stored.append(result)
            if stored:
                # Never let announcing kill the writer: the captures are stored, and clients
                # catch up from the database when they reconnect.
                try:
                    live.publish_captures(stored)
                except Exception:
                    logger.exception("live push of captures %s failed", [c.pk for c in stored])
                try:
                    forward_later(stored)
                except Exception:
                    logger.exception("auto-forward of captures %s failed", [c.pk for c in stored])
            # The batch holds its bodies (up to MAX_BATCH of MAX_BODY_BYTES): do not keep it alive
            # while waiting for the next capture.
            del batch, captures, results, stored


def commit_batch(captures: list[Pending]) -> list[Pending | Exception]:
    """Insert captures in one statement (runs in the writer thread), then prune their bins.

    If the group fails (say a bin was deleted a moment ago by another process), each capture is
    retried on its own, so one bad capture never costs the others theirs.
    """
    results: list[Pending | Exception]
    try:
        # One statement, so it commits on its own (autocommit): no BEGIN/COMMIT round trips.
        insert_captures(captures)
        results = list(captures)
    except Exception:  # not only DatabaseError: a driver may refuse a value with its own error
        _reset_connection()
        results = [_insert_one(capture) for capture in captures]
    stored: dict[int, int] = {}
    for c in results:
        if isinstance(c, Pending):
            stored[c.bin_id] = stored.get(c.bin_id, 0) + 1
    bin_ids = sorted(stored)
    try:
        housekeeping(stored)
    except DatabaseError:
        # Housekeeping only: the captures are committed, so do not fail them.
        logger.exception("pruning bins %s failed", bin_ids)
        _reset_connection()
    if connection.vendor == "postgresql" and sum(c.body_size for c in captures) >= LARGE_BATCH:
        # libpq keeps its send buffer at the size of the largest statement sent for as long as
        # the connection lives: after a batch of large bodies that would be that many MiB held
        # for good. A new connection for the next batch costs a few milliseconds.
        _reset_connection()
    return results


_touched: dict[int, float] = {}
_since_prune: dict[int, int] = {}
_pruned_upto: dict[int, int] = {}
_last_expiry_sweep = 0.0
TOUCH_EVERY = 60.0
EXPIRY_SWEEP_EVERY = 600.0


def housekeeping(stored: dict[int, int]) -> None:
    """Keep CAPTURES_PER_BIN per bin, mark bins used, now and then delete expired bins.

    A bin is pruned once captures worth 5% of its limit have arrived since the last time (at
    once for a limit under 20, and for a bin first seen by this process): a query per bin per
    group would cost a database round trip every commit.
    """
    global _last_expiry_sweep
    step = max(1, settings.CAPTURES_PER_BIN // 20)
    due = []
    for bin_id, count in stored.items():
        since = _since_prune.get(bin_id)
        since = step if since is None else since + count
        if since >= step:
            due.append(bin_id)
            since = 0
        _since_prune[bin_id] = since
    if len(_since_prune) > 10_000:
        _since_prune.clear()
        _pruned_upto.clear()
    Capture.prune_bins(due, floors=_pruned_upto)
    bin_ids = list(stored)
    now = time.monotonic()
    stale = [i for i in bin_ids if now - _touched.get(i, -TOUCH_EVERY) >= TOUCH_EVERY]
    if stale:
        Bin.objects.filter(id__in=stale).update(last_used_at=timezone.now())
        _touched.update(dict.fromkeys(stale, now))
        if len(_touched) > 10_000:
            _touched.clear()
    if now - _last_expiry_sweep >= EXPIRY_SWEEP_EVERY:
        _last_expiry_sweep = now
        _sweeper.submit(sweep_expired)


# Expired bins are deleted in a thread of their own, so a large sweep never holds up captures.
_sweeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bin-expiry")


def sweep_expired() -> None:
    try:
        if deleted := Bin.delete_expired():
            logger.info("deleted %d bin(s) unused for %d days", deleted, settings.BIN_EXPIRE_DAYS)
    except Exception:
        logger.exception("deleting expired bins failed; the next sweep tries again")
    finally:
        connection.close()  # this thread runs every ten minutes: no connection kept between


INSERT_FIELDS = (
    "bin_id",
    "method",
    "path",
    "query_string",
    "headers_json",
    "body",
    "body_size",
    "content_type",
    "remote_addr",
    "received_at",
)


def insert_captures(captures: list[Pending]) -> None:
    """One multi-row INSERT ... RETURNING id; sets each capture's id.

    What `bulk_create` does, minus the ORM's per-field work, which the profile showed as the
    largest part of the writer's time. Values go through the fields' own database preparation
    for the types that need it (the timestamp), so rows are exactly what the ORM would write.
    """
    meta = Capture._meta
    columns = ", ".join(connection.ops.quote_name(meta.get_field(f).column) for f in INSERT_FIELDS)
    row = "(" + ", ".join(["%s"] * len(INSERT_FIELDS)) + ")"
    received = meta.get_field("received_at")
    params: list[object] = []
    for c in captures:
        params += [
            c.bin_id,
            c.method,
            c.path,
            c.query_string,
            c.headers_json,
            c.body,
            c.body_size,
            c.content_type,
            c.remote_addr,
            received.get_db_prep_value(c.received_at, connection),
        ]
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) "
        f"VALUES {', '.join([row] * len(captures))} RETURNING id"
    )
    with connection.wrap_database_errors, raw_cursor() as cursor:
        cursor.execute(sql, params)
        # Rows get ids in VALUES order, but RETURNING may list them in any order (SQLite says
        # so): sorted, they match the captures again.
        ids = sorted(r[0] for r in cursor.fetchall())
    for capture, pk in zip(captures, ids, strict=True):
        capture.pk = pk


def raw_cursor() -> Any:
    """A cursor that sends parameters apart from the query on PostgreSQL.

    Django's psycopg cursors bind client-side: they quote every value, a kilobyte of body
    included, into the SQL text in Python. A plain psycopg cursor on the same connection (and
    so in the same transaction) lets the server bind them. SQLite binds natively anyway.
    """
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        import psycopg

        return psycopg.Cursor(connection.connection)
    return connection.cursor()


def _insert_one(capture: Pending) -> Pending | Exception:
    try:
        insert_captures([capture])
        return capture
    except Exception as exc:
        logger.warning("capture for bin %s refused by the database: %s", capture.bin_id, exc)
        from .bincache import forget_id

        forget_id(capture.bin_id)
        _reset_connection()
        return exc


def _reset_connection() -> None:
    # A broken connection (database restarted) is replaced on the next batch.
    try:
        connection.close()
    except DatabaseError:
        pass


# Keyed by the loop itself (weakly): ids of closed loops get reused.
_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CaptureWriter] = (
    weakref.WeakKeyDictionary()
)


_last: tuple[asyncio.AbstractEventLoop | None, CaptureWriter | None] = (None, None)


def get_writer() -> CaptureWriter:
    """The writer of the running event loop (Daphne has one; tests may make several)."""
    global _last
    loop = asyncio.get_running_loop()
    if _last[0] is loop and _last[1] is not None and not _last[1].task.done():
        return _last[1]  # the hot path: no weak-dictionary lookup per capture
    writer = _writers.get(loop)
    if writer is None or writer.task.done():
        writer = _writers[loop] = CaptureWriter(loop)
    _last = (loop, writer)
    return writer


async def store(capture: Pending) -> Pending:
    return await get_writer().store(capture)


def run_in_writer_thread(func, *args):  # type: ignore[no-untyped-def]
    """Run a database function in the writer thread (its connection), for lookups and tests."""
    return asyncio.get_running_loop().run_in_executor(_executor, func, *args)


def close_connection() -> None:
    """Close the writer thread's connection (test teardown, so the test database can go)."""
    _executor.submit(_reset_connection).result()


async def stop() -> None:
    """Stop this event loop's writer (tests: each test has its own loop)."""
    global _last
    _last = (None, None)
    current = _writers.pop(asyncio.get_running_loop(), None)
    if current is not None:
        current.task.cancel()
        await asyncio.wait([current.task], timeout=2)
