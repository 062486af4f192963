"""Live streams of a bin: HTML fragments for the page (htmx ws) and JSON frames for scripts.

Both subscribe to the bin's group before reading the database, so nothing committed in
between is missed; what the catch-up already sent is not sent twice. A client that reconnects
catches up from the database: the page gets its whole list again, a JSON client everything
after the `?after=<id>` it gives.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from .capture import parse_token
from .live import group_name, live_item
from .models import Bin, Capture


class BinStreamConsumer(AsyncWebsocketConsumer):
    bin: Bin | None = None
    group: str | None = None
    after_id = 0  # the client has everything up to this id (JSON stream's ?after=)

    async def connect(self) -> None:
        token = parse_token(self.scope["url_route"]["kwargs"]["token"])
        self.bin = await database_sync_to_async(Bin.objects.filter(token=token).first)()
        if self.bin is None:
            await self.close()  # before accept: the handshake is refused (403)
            return
        self.group = group_name(self.bin.token)
        self.sent: set[int] = set()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.catch_up()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections before every handler, a hop to a thread
        # and back per message; at a few hundred captures a second the stream then falls
        # behind. The live handlers touch no database (catch-ups use database_sync_to_async,
        # which manages its own connections), so they run directly.
        if message["type"] == "captures.new":
            await self.captures_new(message)
        elif message["type"] == "captures.deleted":
            await self.captures_deleted(message)
        else:
            await super().dispatch(message)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def captures_new(self, event: dict[str, Any]) -> None:
        fresh = [
            item
            for item in event["captures"]
            if item[0] not in self.sent and item[0] > self.after_id
        ]
        if fresh:
            await self.send_captures(fresh)

    async def captures_deleted(self, event: dict[str, Any]) -> None:
        await self.send_deleted(event["ids"])

    def query_param(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else None

    async def catch_up(self) -> None:
        raise NotImplementedError

    async def send_captures(self, captures: list[list[Any]]) -> None:
        raise NotImplementedError

    async def send_deleted(self, ids: list[int] | None) -> None:
        raise NotImplementedError


# Twisted writes up to 128 KiB to a socket per turn of the loop.
YIELD_EVERY_BYTES = 64 * 1024


class JsonStreamConsumer(BinStreamConsumer):
    """One text frame per capture: {"type": "capture", "capture": {...API shape...}}."""

    async def catch_up(self) -> None:
        after = self.query_param("after")
        if after is None:
            return
        try:
            after_id = int(after)
        except ValueError:
            await self.send(json.dumps({"type": "error", "error": "after must be a capture id"}))
            await self.close(code=4400)
            return
        self.after_id = after_id
        captures = await database_sync_to_async(self._captures_after)(after_id)
        self.sent.update(item[0] for item in captures)
        await self.send_captures(captures)

    def _captures_after(self, after_id: int) -> list[list[Any]]:
        rows = Capture.objects.filter(bin=self.bin, id__gt=after_id).order_by("id")
        return [live_item(c) for c in rows]

    async def send_captures(self, captures: list[list[Any]]) -> None:
        unflushed = 0
        for _, text in captures:
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


class PageStreamConsumer(BinStreamConsumer):
    """HTML fragments that htmx's ws extension swaps into the inspector page (out of band)."""

    async def catch_up(self) -> None:
        html, ids = await database_sync_to_async(self._list_html)()
        self.sent.update(ids)
        await self.send(html)

    def _list_html(self) -> tuple[str, list[int]]:
        captures = list(
            Capture.objects.filter(bin=self.bin)
            .defer("body", "headers_json")
            .order_by("-id")[: settings.CAPTURES_PER_BIN]
        )
        context = {
            "captures": captures,
            "bin": self.bin,
            "oob": True,
            "captures_per_bin": settings.CAPTURES_PER_BIN,
            "capture_url": self.bin.capture_url(self.base_url()),
        }
        html = render_to_string("bins/_capture_list.html", context)
        return html, [c.id for c in captures]

    def base_url(self) -> str:
        """The instance's base URL as this page sees it (like `api.base_url` for requests)."""
        if settings.PUBLIC_URL:
            return settings.PUBLIC_URL
        host = dict(self.scope.get("headers", ())).get(b"host", b"").decode("latin-1")
        scheme = "https" if self.scope.get("scheme") == "wss" else "http"
        return f"{scheme}://{host}"

    async def send_captures(self, captures: list[list[Any]]) -> None:
        rows = [json.loads(text) for _, text in reversed(captures)]
        html = render_to_string("bins/_capture_rows_oob.html", {"captures": rows, "bin": self.bin})
        await self.send(html)

    async def send_deleted(self, ids: list[int] | None) -> None:
        # Simplest correct answer to deletions: send the list again.
        await self.catch_up()
