"""Work that runs whether or not requests arrive, started when the server starts.

- Expired bins are swept every EXPIRY_SWEEP_SECONDS, in a thread of their own (a large sweep
  never holds up captures), by one process of a cluster at a time (a PostgreSQL advisory lock).
- The forwarder starts at once, so forwards left in the outbox by a stopped process go out
  without waiting for the next capture.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from django.conf import settings
from django.db import connection

from .models import Bin

logger = logging.getLogger(__name__)

# Any constant will do, as long as no other application uses it on the same database.
SWEEP_LOCK = 0x5745_4248_4F4F_4B01


def start_with_server() -> None:
    """Start the background work once Daphne's reactor runs (never in a test process, where no
    reactor runs: tests start what they need themselves)."""
    from twisted.internet import reactor

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]


def start() -> None:
    from twisted.internet import reactor

    from .forwarding import get_forwarder

    threading.Thread(target=sweep_forever, name="bin-expiry", daemon=True).start()
    # Startup triggers fire before the reactor's asyncio loop runs: the forwarder's task is
    # made on the first turn of that loop.
    reactor.callLater(0, get_forwarder)  # type: ignore[attr-defined]


def sweep_forever() -> None:
    every = settings.EXPIRY_SWEEP_SECONDS
    if every <= 0:
        return
    wait = threading.Event().wait
    wait(min(every, 30))  # the first soon after start: an instance may restart often
    while True:
        sweep_once()
        wait(every)


def sweep_once() -> int:
    """Delete expired bins if no other process of the cluster is doing it; how many."""
    try:
        with cluster_lock(SWEEP_LOCK) as mine:
            if not mine:
                return 0
            deleted = Bin.delete_expired()
            if deleted:
                logger.info(
                    "deleted %d bin(s) unused for %d days", deleted, settings.BIN_EXPIRE_DAYS
                )
            return deleted
    except Exception:
        logger.exception("deleting expired bins failed; the next sweep tries again")
        return 0
    finally:
        connection.close()  # this thread wakes every ten minutes: no connection kept between


@contextlib.contextmanager
def cluster_lock(key: int) -> Iterator[bool]:
    """Whether this process holds the cluster-wide lock `key` (always, on SQLite: one process)."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        mine = bool(cursor.fetchone()[0])
    try:
        yield mine
    finally:
        if mine:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
