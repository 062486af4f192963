"""Store captures in groups, then announce them.

A Django view inserting one row per request stores a few hundred captures per second (a fresh
thread and database connection per request; see the README's performance section). Here every
capture of a server process goes through one queue to one writer thread that keeps its
connection and commits whatever has queued up in one transaction. A request is answered only
after the transaction holding its capture has committed, and what it is answered is decided in
that transaction; then the batch is handed to the live publisher, off the response path.

Numbers: each capture gets the next number of its bin (1, 2, 3...). The transaction takes them
by updating the bin's row, which it then holds until it commits, so two processes storing
captures of one bin commit them in number order: a client that has seen number n has seen every
number below it that will ever exist (`after=n` never skips one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from . import hop, live, metrics
from .capture import Pending
from .models import Capture, Forward, take_numbers

logger = logging.getLogger(__name__)

# A group ends at this many captures or bytes of bodies, whichever comes first: big bodies
# are never held by the hundred.
MAX_BATCH = 256
MAX_BATCH_BYTES = 32 * 1024 * 1024
# Bodies (bytes) in one group above which the writer's connection is not kept (see
# commit_batch).
LARGE_BATCH = 1024 * 1024

# One thread for the whole process, whatever event loop asks: it owns the writer's database
# connection, so commits are serialised and the connection is reused.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-writer")


class BinGone(Exception):
    """The bin was deleted (by another process) before its capture was stored."""


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

    def _next_batch(self, first: tuple[Pending, asyncio.Future[Pending]]) -> list[Any]:
        batch = [first]
        size = len(first[0].body)
        while len(batch) < MAX_BATCH and size < MAX_BATCH_BYTES and not self.queue.empty():
            batch.append(self.queue.get_nowait())
            size += len(batch[-1][0].body)
        return batch

    async def _run(self) -> None:
        while True:
            batch = self._next_batch(await self.queue.get())
            captures = [capture for capture, _ in batch]
            metrics.GROUP_SIZE.observe(len(captures))
            started = time.perf_counter()
            try:
                results = await self.loop.run_in_executor(_executor, commit_batch, captures)
            except Exception as exc:  # the thread itself failed: refuse the whole batch
                logger.exception("capture writer failed")
                results = [exc] * len(batch)
            metrics.GROUP_SECONDS.observe(time.perf_counter() - started)
            stored: list[Pending] = []
            for (_, future), result in zip(batch, results, strict=True):
                if not isinstance(result, BaseException):
                    stored.append(result)
                if future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            if stored:
                metrics.CAPTURES_STORED.inc(len(stored))
                self._after_commit(stored)
            # The batch holds its bodies: do not keep it alive while waiting for the next one.
            del batch, captures, results, stored

    def _after_commit(self, stored: list[Pending]) -> None:
        """Announce and forward: none of it can change what was answered."""
        # Never let announcing kill the writer: the captures are stored, and live clients
        # heal from the database (see `live`).
        try:
            live.publish_captures(stored)
        except Exception:
            logger.exception("live push of captures failed")
        if any(c.bin.forward_url for c in stored):
            try:
                from .forwarding import wake

                wake()
            except Exception:
                logger.exception("waking the forwarder failed")


def commit_batch(captures: list[Pending]) -> list[Pending | Exception]:
    """Store captures in one transaction (runs in the writer thread).

    If the group fails (say a bin was deleted a moment ago by another process), each capture is
    tried again on its own, so one bad capture never costs the others theirs.
    """
    try:
        results = store_or_split(captures)
        # After the commit: whatever happens here, the captures are stored and answered so.
        try:
            newest: dict[int, int] = {}
            for c in results:
                if isinstance(c, Pending):
                    newest[c.bin_id] = max(newest.get(c.bin_id, 0), c.seq)
            housekeeping(newest)
        except Exception:
            logger.exception("housekeeping after a commit failed; the captures are stored")
            _reset_connection()
        return results
    finally:
        if sum(len(c.body) for c in captures) >= LARGE_BATCH:
            # The drivers keep what a group sent for as long as the connection lives: libpq its
            # send buffer at the size of the largest statement, SQLite its copy of the values
            # bound to the prepared INSERT. After large bodies that would be megabytes held
            # for good; a new connection for the next group costs a millisecond or a few.
            _reset_connection()


def store_or_split(captures: list[Pending]) -> list[Pending | Exception]:
    try:
        store_group(captures)
        return list(captures)
    except Exception:  # not only DatabaseError: a driver may refuse a value with its own error
        _reset_connection()
    results: list[Pending | Exception] = []
    for capture in captures:
        try:
            store_group([capture])
            results.append(capture)
        except Exception as exc:
            logger.warning("capture for bin %s refused by the database: %s", capture.bin_id, exc)
            from .bincache import forget_id

            forget_id(capture.bin_id)
            _reset_connection()
            results.append(exc)
    return results


def store_group(captures: list[Pending]) -> None:
    """Number, answer and insert captures, and queue their forwards, in one transaction."""
    by_bin: dict[int, list[Pending]] = {}
    for c in captures:
        by_bin.setdefault(c.bin_id, []).append(c)
    now = timezone.now()
    if len(by_bin) == 1 and connection.vendor == "postgresql" and plain_group(captures):
        store_plain_group(captures, touch_due(captures[0].bin_id, now))
        return
    with transaction_cursor() as (cursor, mark):
        # Bins in id order: two processes locking the same bins never wait on each other in a
        # circle.
        for bin_id in sorted(by_bin):
            group = by_bin[bin_id]
            first = take_numbers(cursor, bin_id, len(group), touch_due(bin_id, now), mark)
            if first is None:
                raise BinGone(f"bin {bin_id} was deleted")
            deliveries = count_deliveries(cursor, mark, bin_id, group, first)
            for i, c in enumerate(group):
                c.seq = first + i
                answer = c.bin.plan.answer(c, c.seq, deliveries[i])
                c.reply, c.answer, c.answer_json = answer.reply, answer.record, answer.record_json
        insert_captures(cursor, mark, captures)
        forwards = []
        for c in captures:
            if not c.bin.forward_url:
                continue
            if hop.captured_from_us(c.headers):
                logger.info(
                    "capture #%s of bin %s came from this instance (a resend or forward): "
                    "not forwarded again",
                    c.seq,
                    c.bin.token,
                )
            else:
                forwards.append(c)
        if forwards:
            insert_forwards(cursor, mark, forwards, connection.ops.adapt_datetimefield_value(now))


def plain_group(captures: list[Pending]) -> bool:
    """Captures of one bin that need no more than their numbers: every one is answered alike
    (no rules, no steps), none is an event that could be a retry, none is forwarded."""
    info = captures[0].bin
    return (
        info.plan.fixed is not None
        and not info.forward_url
        and all(not c.event_id and type(c.body) is bytes for c in captures)
    )


# Numbers and rows in one statement, with the same text whatever the group's size (so
# PostgreSQL prepares it once): no BEGIN and COMMIT round trips, and the bin's row is held
# until this statement commits, so numbers still follow commit order.
PLAIN_INSERT = """
WITH b AS (
    UPDATE bins_bin SET last_seq = last_seq + %(n)s{touch} WHERE id = %(bin)s RETURNING last_seq
)
INSERT INTO bins_capture (
    bin_id, seq, method, path, query_string, headers_json, body, body_size, content_type,
    remote_addr, received_at, provider, event_type, event_id, duplicate_of, event_delivery,
    event_after_ms, signature, answer
)
SELECT %(bin)s, b.last_seq - %(n)s + v.ord, v.method, v.path, v.query_string, v.headers_json,
    v.body, octet_length(v.body), v.content_type, v.remote_addr, v.received_at, v.provider,
    v.event_type, '', NULL, 0, NULL, v.signature::jsonb, %(answer)s::jsonb
FROM b, unnest(
    %(method)b::text[], %(path)b::text[], %(query)b::text[], %(headers)b::text[],
    %(body)b::bytea[], %(content_type)b::text[], %(remote)b::text[],
    %(received)b::timestamptz[], %(provider)b::text[], %(event_type)b::text[],
    %(signature)b::text[]
) WITH ORDINALITY AS v(
    method, path, query_string, headers_json, body, content_type, remote_addr, received_at,
    provider, event_type, signature, ord
)
RETURNING seq
"""


def store_plain_group(captures: list[Pending], touch: Any) -> None:
    """PostgreSQL: a plain group (see `plain_group`) in one statement, in autocommit."""
    import psycopg

    answer = captures[0].bin.plan.default.steps[0][0]
    params = {
        "n": len(captures),
        "bin": captures[0].bin_id,
        "answer": answer.record_json,
        "method": [c.method for c in captures],
        "path": [c.path for c in captures],
        "query": [c.query_string for c in captures],
        "headers": [c.headers_json for c in captures],
        "body": [c.body for c in captures],
        "content_type": [c.content_type for c in captures],
        "remote": [c.remote_addr for c in captures],
        "received": [c.received_at for c in captures],
        "provider": [c.provider for c in captures],
        "event_type": [c.event_type for c in captures],
        "signature": [
            None if c.signature is None else orjson.dumps(c.signature).decode() for c in captures
        ],
    }
    if touch is not None:
        params["touch"] = touch
    sql = PLAIN_INSERT.format(touch=", last_used_at = %(touch)s" if touch is not None else "")
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        numbers = sorted(row[0] for row in cursor.fetchall())
    if len(numbers) != len(captures):
        raise BinGone(f"bin {captures[0].bin_id} was deleted")
    for c, seq in zip(captures, numbers, strict=True):
        c.seq = seq
        c.reply, c.answer, c.answer_json = answer.reply, answer.record, answer.record_json


# A bin is marked used (for expiry) at most once a minute per process: that column is indexed,
# and writing it would turn every group's update of the bin's row into a full one.
TOUCH_EVERY = 60.0
_touched: dict[int, float] = {}


def touch_due(bin_id: int, now: Any) -> Any:
    """`now` if the bin should be marked used by this group, else None."""
    clock = time.monotonic()
    if clock - _touched.get(bin_id, -TOUCH_EVERY) < TOUCH_EVERY:
        return None
    if len(_touched) > 10_000:
        _touched.clear()
    _touched[bin_id] = clock
    return now


def count_deliveries(
    cursor: Any, mark: str, bin_id: int, group: list[Pending], first: int
) -> list[int]:
    """For each capture of a group: which delivery of its event it is (1 for the first, and
    `duplicate_of`, `event_after_ms` set for the others). Exact: the bin's row is held, so no
    other transaction adds captures to this bin meanwhile."""
    ids = sorted({c.event_id for c in group if c.event_id})
    seen: dict[str, list[Any]] = {}  # event id -> [first number, deliveries, first received]
    if ids:
        cursor.execute(
            f"SELECT event_id, MIN(seq), COUNT(*), MIN(received_at) FROM "
            f"{Capture._meta.db_table} WHERE bin_id = {mark} "
            f"AND event_id IN ({', '.join([mark] * len(ids))}) GROUP BY event_id",
            [bin_id, *ids],
        )
        for event_id, low, count, at in cursor.fetchall():
            seen[event_id] = [low, count, as_datetime(at)]
    counts = []
    for i, c in enumerate(group):
        c.duplicate_of = None
        c.event_after_ms = None
        if not c.event_id:
            c.event_delivery = 0
            counts.append(1)
            continue
        known = seen.get(c.event_id)
        if known is None:
            seen[c.event_id] = [first + i, 1, c.received_at]
            c.event_delivery = 1
        else:
            known[1] += 1
            c.duplicate_of = known[0]
            c.event_delivery = known[1]
            # Deliveries racing each other (two processes) can commit in another order than
            # they arrived: a few ms "before" the original count as 0.
            c.event_after_ms = max(0, round((c.received_at - known[2]).total_seconds() * 1000))
        counts.append(c.event_delivery)
    return counts


def as_datetime(value: Any) -> datetime:
    """A timestamp as the raw cursor returns it (SQLite: text in UTC) as an aware datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


INSERT_FIELDS = (
    "bin_id",
    "seq",
    "method",
    "path",
    "query_string",
    "headers_json",
    "body",
    "body_size",
    "content_type",
    "remote_addr",
    "received_at",
    "provider",
    "event_type",
    "event_id",
    "duplicate_of",
    "event_delivery",
    "event_after_ms",
    "signature",
    "answer",
)


def insert_captures(cursor: Any, mark: str, captures: list[Pending]) -> None:
    """Insert the captures with one prepared single-row INSERT, run for each (executemany).

    What `bulk_create` does, minus the ORM's per-field work, which the profile showed as the
    largest part of the writer's time. One statement text whatever the group's size, so the
    drivers prepare it once (a multi-row INSERT is a new statement for each size, and SQLite
    would keep the values bound to each). Values go through Django's own adaptation for the
    timestamp; JSON columns get their JSON as text.
    """
    meta = Capture._meta
    columns = ", ".join(connection.ops.quote_name(meta.get_field(f).column) for f in INSERT_FIELDS)
    row = "(" + ", ".join([mark] * len(INSERT_FIELDS)) + ")"
    when = connection.ops.adapt_datetimefield_value
    rows = [
        (
            c.bin_id,
            c.seq,
            c.method,
            c.path,
            c.query_string,
            c.headers_json,
            c.body,
            len(c.body),
            c.content_type,
            c.remote_addr,
            when(c.received_at),
            c.provider,
            c.event_type,
            c.event_id,
            c.duplicate_of,
            c.event_delivery,
            c.event_after_ms,
            None if c.signature is None else orjson.dumps(c.signature).decode(),
            c.answer_json,
        )
        for c in captures
    ]
    table = connection.ops.quote_name(meta.db_table)
    cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES {row}", rows)


def insert_forwards(cursor: Any, mark: str, captures: list[Pending], now: Any) -> None:
    """Queue the captures' forwards in the outbox (found by bin and number: no ids needed)."""
    forward = connection.ops.quote_name(Forward._meta.db_table)
    capture = connection.ops.quote_name(Capture._meta.db_table)
    cursor.executemany(
        f"INSERT INTO {forward} (capture_id, target_url, attempts, due_at) "
        f"SELECT id, {mark}, 0, {mark} FROM {capture} WHERE bin_id = {mark} AND seq = {mark}",
        [(c.bin.forward_url, now, c.bin_id, c.seq) for c in captures],
    )


@contextlib.contextmanager
def transaction_cursor() -> Iterator[tuple[Any, str]]:
    """A plain DB-API cursor on the writer's connection, in a transaction of its own, and its
    parameter mark.

    Plain, not Django's: Django's cursors convert every query's placeholders and, on
    PostgreSQL, quote every value (a kilobyte of body included) into the SQL text in Python;
    and its atomic() costs more than the BEGIN and COMMIT it sends. The group's few statements
    go straight to the driver, which binds the values (the server does, on PostgreSQL).
    SQLite's BEGIN IMMEDIATE takes the write lock up front (no deadlock upgrading a read lock).
    """
    connection.ensure_connection()
    raw = connection.connection
    if connection.vendor == "postgresql":
        import psycopg

        cursor, mark, begin = psycopg.Cursor(raw), "%s", "BEGIN"
    else:
        cursor, mark, begin = raw.cursor(), "?", "BEGIN IMMEDIATE"
    try:
        cursor.execute(begin)
        try:
            yield cursor, mark
        except BaseException:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
    finally:
        cursor.close()


# Pruning: a bin is pruned once captures worth 5% of its limit have arrived since the last time
# (at once for a limit under 20), so a busy bin costs one DELETE per 25 captures, not one per
# group. `_pruned_upto` remembers, per bin, the number pruned up to, so a delete never walks the
# rows an earlier one removed.
_pruned_upto: dict[int, int] = {}


def housekeeping(newest: dict[int, int]) -> None:
    """Keep CAPTURES_PER_BIN per bin (runs in the writer thread after a group committed: a
    failure here is logged and never touches an answer)."""
    keep = settings.CAPTURES_PER_BIN
    if keep <= 0:
        return  # 0 = unlimited
    step = max(1, keep // 20)
    if len(_pruned_upto) > 10_000:
        _pruned_upto.clear()
    for bin_id, last in newest.items():
        upto = last - keep
        floor = _pruned_upto.get(bin_id, 0)
        if upto <= 0 or upto - floor < step:
            continue
        try:
            Capture.prune(bin_id, upto, floor)
            _pruned_upto[bin_id] = upto
        except DatabaseError:
            logger.exception("pruning bin %s failed; the next group tries again", bin_id)
            _reset_connection()


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
