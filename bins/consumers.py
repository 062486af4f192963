"""Live streams of a bin: HTML fragments for the page (htmx ws) and JSON frames for scripts.

Both subscribe to the bin's group before reading the database, so nothing committed in
between is missed. Each remembers the number of the last capture it sent (`last_sent`) and
sends only larger numbers, in order: what a push skipped (a lost or late push) is read from the
database first (see `bins.live`). A client that reconnects catches up from the database: the
page gets its list again, a JSON client everything after the `?after=<id>` it gives, in pages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string
from django.utils.html import escape

from . import live, metrics, page_filters
from .capture import parse_token
from .hosts import scope_bases
from .listing import captures_after, list_rows
from .models import Bin, page_list_limit

logger = logging.getLogger(__name__)

# A frame never exceeds what Daphne and the usual clients accept (1 MiB): a capture's frame
# inlines at most INLINE_BODY_BYTES of body, and the page's list is sent in pieces of this size.
PIECE_BYTES = 256 * 1024
# Close code: the server cannot vouch that this client got every capture; reconnect with after=.
BEHIND = 4000


class BinStreamConsumer(AsyncWebsocketConsumer):
    bin: Bin | None = None
    group: str | None = None
    last_sent = 0  # the number of the last capture this client has (or need not have)
    last_push = 0.0  # when the last push arrived (monotonic)

    async def connect(self) -> None:
        token = parse_token(self.scope["url_route"]["kwargs"]["token"])
        self.bin = await database_sync_to_async(Bin.objects.filter(token=token).first)()
        if self.bin is None:
            await self.close()  # before accept: the handshake is refused (403)
            return
        self.bin_id = self.bin.id
        self.lock = asyncio.Lock()
        self.group = live.group_name(self.bin.token)
        self.closing = False
        await self.channel_layer.group_add(self.group, self.channel_name)
        # Subscribed first, then the newest number read: whatever commits from here on is
        # pushed to this stream, whatever committed before is in the database. Read before the
        # handshake completes, so nothing the client sends after connecting can be taken for
        # "before".
        self.newest = await database_sync_to_async(self.read_newest)()
        await self.accept()
        metrics.STREAMS.labels(self.kind).inc()
        self.counted = True
        async with self.lock:
            await self.catch_up()
        live.watcher().add(self.bin.token, self)

    def read_newest(self) -> int:
        return Bin.objects.filter(pk=self.bin_id).values_list("last_seq", flat=True).first() or 0

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections before every handler, a hop to a thread
        # and back per message; at a few hundred captures a second the stream then falls
        # behind. The live handlers reach the database only to fill a gap, through
        # database_sync_to_async, which manages its own connections; so they run directly.
        if message["type"] == "captures.new":
            await self.captures_new(message)
        elif message["type"] == "captures.deleted":
            await self.captures_deleted(message)
        elif message["type"] == "captures.changed":
            await self.captures_changed(message)
        else:
            await super().dispatch(message)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            metrics.STREAMS.labels(self.kind).dec()
            self.counted = False
        if self.group:
            live.watcher().discard(self.bin.token, self)
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def captures_new(self, event: dict[str, Any]) -> None:
        self.last_push = time.monotonic()
        async with self.lock:
            run: list[list[Any]] = []  # consecutive numbers, sent together
            for item in event["captures"]:
                if item[0] <= self.last_sent or self.closing:
                    continue
                if item[0] > self.last_sent + 1:
                    # Numbers were skipped: a push was lost, or another process's push is
                    # late (a push may hold several groups of this process, with another
                    # process's captures between them). They are committed (a larger number
                    # is), so read them first.
                    if run:
                        await self.send_captures(run)
                        run = []
                    if not await self.fill(item[0] - 1):
                        return
                run.append(item)
                self.last_sent = item[0]
            if run:
                await self.send_captures(run)

    async def heal(self, newest: int) -> None:
        """The watcher saw the bin's newest number ahead of what this client has."""
        async with self.lock:
            if newest > self.last_sent and not self.closing:
                await self.fill(newest)

    async def fill(self, upto: int) -> bool:
        """Send the stored captures numbered after last_sent up to `upto`; False if the stream
        was closed instead."""
        metrics.STREAM_FILLS.inc()
        try:
            async for items in captures_after(self.bin_id, self.last_sent, upto):
                await self.send_captures(items)
                self.last_sent = items[-1][0]
        except Exception:
            logger.exception("stream of bin %s: reading missed captures failed", self.bin.token)
            self.close_behind("missed captures could not be read")
            return False
        self.last_sent = max(self.last_sent, upto)
        return True

    def close_behind(self, why: str) -> None:
        """Close with 4000: this client may have missed captures; it reconnects with after=."""
        if not self.closing:
            self.closing = True
            metrics.STREAMS_BEHIND.inc()
            logger.info("closing a stream of bin %s with 4000: %s", self.bin.token, why)
            asyncio.get_running_loop().create_task(self.close(code=BEHIND))

    async def captures_deleted(self, event: dict[str, Any]) -> None:
        async with self.lock:
            await self.send_deleted(event["ids"])

    async def captures_changed(self, event: dict[str, Any]) -> None:
        async with self.lock:
            await self.send_changed(event["why"])

    def query_param(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else None

    async def catch_up(self) -> None:
        raise NotImplementedError

    async def send_captures(self, items: list[list[Any]]) -> None:
        raise NotImplementedError

    async def send_deleted(self, ids: list[int] | None) -> None:
        raise NotImplementedError

    async def send_changed(self, why: str) -> None:
        raise NotImplementedError


# Twisted writes up to 128 KiB to a socket per turn of the loop.
YIELD_EVERY_BYTES = 64 * 1024


class JsonStreamConsumer(BinStreamConsumer):
    """One text frame per capture: {"type": "capture", "capture": {...API shape...}}."""

    kind = "json"

    async def catch_up(self) -> None:
        after = self.query_param("after")
        if after is None:
            self.last_sent = self.newest  # only what arrives from now on
            return
        try:
            self.last_sent = int(after)
        except ValueError:
            await self.send(json.dumps({"type": "error", "error": "after must be a capture id"}))
            await self.close(code=4400)
            self.closing = True
            return
        await self.fill(self.newest)

    async def send_captures(self, items: list[list[Any]]) -> None:
        unflushed = 0
        for _, text in items:
            # Equal to json.dumps({"type": "capture", "capture": shape}), without re-encoding.
            await self.send('{"type": "capture", "capture": ' + text + "}")
            # A send only queues the frame in the server; the socket is written between turns
            # of the event loop. A catch-up or a batch of large captures would otherwise queue
            # megabytes at once, and a client whose unsent frames pass WS_BUFFER_BYTES is
            # closed with 4000 (bins/server.py), however fast it reads. So let the loop turn.
            unflushed += len(text)
            if unflushed >= YIELD_EVERY_BYTES:
                unflushed = 0
                await asyncio.sleep(0)

    async def send_deleted(self, ids: list[int] | None) -> None:
        await self.send(json.dumps({"type": "deleted", "ids": ids}))

    async def send_changed(self, why: str) -> None:
        # Which captures changed is not said: fetch again what you keep.
        await self.send(json.dumps({"type": "changed", "why": why}))


class PageStreamConsumer(BinStreamConsumer):
    """HTML fragments that htmx's ws extension swaps into the inspector page (out of band).

    The page's filters come in the stream's query string (`bins.page_filters`): the list it
    sends, and the live rows, are those that match. Every message also carries the bin's
    counts (kept, received), kept up to date here without a query per capture."""

    kind = "page"
    filters: dict[str, str] = {}
    filter_query = ""
    kept = 0
    received = 0

    async def catch_up(self) -> None:
        params = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.filters = page_filters.page_filters({k: v[0] for k, v in params.items()})
        self.filter_query = page_filters.query(self.filters)
        await self.send_list()

    async def send_list(self) -> None:
        pieces, newest = await database_sync_to_async(self._list_pieces)()
        for html in pieces:
            await self.send(html)
        self.last_sent = max(self.newest, newest, self.last_sent)

    def _list_pieces(self) -> tuple[list[str], int]:
        """The page's list, newest first, as out-of-band swaps that each fit well within a
        frame: the first replaces the list (and the counts), the others append to it."""
        counts = page_filters.counts(self.bin_id)
        self.kept, self.received = counts["kept"], counts["received"]
        rows = list_rows(self.bin_id, page_list_limit(), self.filters)
        newest = max(rows[0]["id"] if rows else 0, self.received)
        pieces: list[list[dict[str, Any]]] = [[]]
        size = 0
        for row in rows:
            # A row's HTML is at most about this size: path and query cut to ROW_TEXT (shown
            # and in its title), marks (provider, verdict, retry, answer) cut short.
            estimate = 4000 + 4 * (len(row["path"]) + len(row["query_string"]))
            if pieces[-1] and size + estimate > PIECE_BYTES:
                pieces.append([])
                size = 0
            pieces[-1].append(row)
            size += estimate
        context = {
            "bin": self.bin,
            "captures": pieces[0],
            "captures_per_bin": page_list_limit(),
            "capture_url": self.bin.capture_url(scope_bases(self.scope)),
            "filters": self.filters,
            "filter_query": self.filter_query,
            "oob": True,
        }
        first = render_to_string("bins/_capture_list.html", context) + self.counts_html()
        rest = [
            render_to_string(
                "bins/_capture_rows_more.html",
                {"captures": p, "bin": self.bin, "filter_query": self.filter_query},
            )
            for p in pieces[1:]
        ]
        return [first, *rest], newest

    def counts_html(self) -> str:
        counts = page_filters.shown_counts(self.kept, self.received)
        return page_filters.counts_html(counts, oob=True)

    async def send_captures(self, items: list[list[Any]]) -> None:
        self.received = max(self.received, items[-1][0])
        self.kept += len(items)
        if self.filters:
            ids = [item[0] for item in items]
            match = await database_sync_to_async(page_filters.matching)(
                self.bin_id, ids, self.filters
            )
            items = [item for item in items if item[0] in match]
        rows = [json.loads(text) for _, text in reversed(items)]
        context = {"captures": rows, "bin": self.bin, "filter_query": self.filter_query}
        html = render_to_string("bins/_capture_rows_oob.html", context) if rows else ""
        await self.send(html + self.counts_html())

    async def send_deleted(self, ids: list[int] | None) -> None:
        if ids is None:
            await self.send_list()  # all of them: the list again (empty), and the counts
            return
        # Some: the page removes those rows (app.js); the counts are read again.
        counts = await database_sync_to_async(page_filters.counts)(self.bin_id)
        self.kept, self.received = counts["kept"], max(self.received, counts["received"])
        numbers = " ".join(str(int(i)) for i in ids)
        await self.send(
            f'<div id="removed" hx-swap-oob="true" data-ids="{numbers}" hidden></div>'
            + self.counts_html()
        )

    async def send_changed(self, why: str) -> None:
        # The list again, and a marker that makes the page fetch its open capture again.
        await self.send_list()
        await self.send(
            f'<div id="changed" hx-swap-oob="true" data-why="{escape(why)}" hidden></div>'
        )
