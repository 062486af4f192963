"""Backpressure for HTTP responses sent in parts: the app waits while the client is not reading.

Daphne writes each body message an app sends straight into Twisted's transport, whose buffer
of unsent bytes grows without bound: a bin export (hundreds of MiB) to a client reading slowly,
or not at all, would be held in the server whole. `Backpressure` wraps the Django app: after
each body message with more to come, it waits until the connection's buffer has drained.

It learns that the way Twisted tells any producer: an `IPushProducer` registered on the
request (`IRequest.registerProducer`), paused when the transport's buffer exceeds its
`bufferSize` (64 KiB) and resumed once it is empty. The request is the one Daphne bound to
`send` (`functools.partial(server.handle_reply, request)`); anywhere else (tests' ASGI
communicators, another server) responses pass through unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from django.conf import settings
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

logger = logging.getLogger(__name__)


@implementer(IPushProducer)
class Flow:
    """Whether a response's connection can take more now (Twisted calls the three methods)."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.writable = asyncio.Event()
        self.writable.set()
        self.registered = False
        self.stopped = False

    def pauseProducing(self) -> None:
        self.writable.clear()

    def resumeProducing(self) -> None:
        self.writable.set()

    def stopProducing(self) -> None:
        self.stopped = True
        self.writable.set()

    def register(self) -> None:
        if self.registered or self.stopped:
            return
        try:
            self.request.registerProducer(self, True)
        except (AttributeError, RuntimeError, ValueError):
            # The connection is gone (no channel), or something else produces for it: no pacing.
            self.stopped = True
            return
        self.registered = True

    def release(self) -> None:
        if not self.registered:
            return
        self.registered = False
        try:
            self.request.unregisterProducer()
        except AttributeError:  # the connection is gone
            pass

    async def drained(self) -> None:
        """Return once the client has read what was sent (at once if nothing is waiting). A
        client that reads nothing for HTTP_IDLE_TIMEOUT seconds (0: no limit) is disconnected:
        the connection is idle, only the other way round."""
        if self.writable.is_set():
            return
        limit = settings.HTTP_IDLE_TIMEOUT or None
        try:
            await asyncio.wait_for(self.writable.wait(), limit)
        except TimeoutError:
            logger.warning("closing a connection whose client read nothing for %s s", limit)
            self.stopProducing()
            channel = getattr(self.request, "channel", None)
            if channel is not None and channel.transport is not None:
                channel.transport.abortConnection()


def twisted_request(send: Any) -> Any:
    """The Twisted request Daphne bound to this `send`, or None."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    from twisted.web.http import Request

    candidate = send.args[0]
    return candidate if isinstance(candidate, Request) else None


class Backpressure:
    """ASGI middleware: a response in several body messages goes no faster than it is read."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        request = twisted_request(send) if scope["type"] == "http" else None
        if request is None:
            return await self.app(scope, receive, send)
        flow = Flow(request)

        async def paced(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body"):
                    flow.register()
                    await send(message)
                    await flow.drained()
                    return
                # Before the last write: finishing the request may start the next one on this
                # connection, which must find no producer of ours registered.
                flow.release()
            await send(message)

        try:
            return await self.app(scope, receive, paced)
        finally:
            flow.release()
