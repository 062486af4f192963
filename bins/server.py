"""What the HTTP server (Daphne on Twisted) must do differently, in one place.

`configure_daphne()` is the one entry point, called from `inspector/asgi.py` when Daphne
imports the application, which is before Daphne builds its HTTP and websocket factories:

- Twisted never parses POSTed form bodies (a malformed one would be answered 400 and lost).
- HTTP timeouts: an idle connection is closed after HTTP_IDLE_TIMEOUT seconds, and a client
  gets HTTP_REQUEST_TIMEOUT seconds from the first byte of a request to its last, so a client
  that trickles a byte now and then cannot hold a connection (and a descriptor) for ever.
- A websocket client whose unsent frames in the server exceed WS_BUFFER_BYTES is closed with
  code 4000 (it reconnects with `?after=` and misses nothing); its frames are dropped from then
  on instead of buffered without bound.
- glibc gives freed memory back to the system after bursts of large bodies.

No underscore-private Twisted or Autobahn API is used: factories' `protocol` classes, the
documented `HTTPChannel` and `TimeoutMixin` methods, `IConsumer.registerProducer`, Autobahn's
`sendMessage`/`sendClose` and close-handshake timeout, and the Daphne classes that use them.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import time
import weakref
from typing import Any

from django.conf import settings
from twisted.internet.interfaces import IPushProducer
from twisted.web import http
from zope.interface import implementer

logger = logging.getLogger(__name__)


def configure_daphne() -> None:
    """Adjust Daphne, Twisted and the C allocator for this process (idempotent)."""
    disable_form_parsing()
    bound_http_connections()
    bound_websocket_buffers()
    return_freed_memory()


# --- form bodies ---------------------------------------------------------------------------


def disable_form_parsing() -> None:
    """Stop Twisted from parsing POSTed form bodies before the app runs.

    Twisted parses `multipart/form-data` and urlencoded POST bodies into `request.args`, which
    Daphne never uses, and answers a malformed multipart body with its own 400 before the app
    sees it: that capture would be lost. It also costs about a fifth of the capture path's
    CPU. Twisted's `Request` takes `parsePOSTFormSubmission=False`; Daphne's `WebRequest`
    passes its arguments through, so this sets that default for every request.
    """
    from daphne.http_protocol import WebRequest

    if getattr(WebRequest.__init__, "_form_parsing_off", False):
        return
    original = WebRequest.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        original(self, *args, **kwargs)

    __init__._form_parsing_off = True  # type: ignore[attr-defined]
    WebRequest.__init__ = __init__  # type: ignore[method-assign]


# --- HTTP timeouts -------------------------------------------------------------------------

_TIMEOUT_BODY = b"request not received in time\n"
REQUEST_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class BoundedHTTPChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 connection with a deadline for receiving each request.

    Twisted already has the idle timeout (`TimeoutMixin`, `timeOut`): it runs while the
    connection waits for a request, is reset by every byte received, and is off while a
    request is being answered. Because every byte resets it, a client sending a byte every
    few seconds keeps a connection forever. So each request's first byte is timed, and one
    sweep a second closes the connections whose request is not whole by the deadline (a timer
    per request would cost every request a heap insert and a cancel). Neither runs while the
    app answers (a bin's reply may be delayed by design), and a websocket upgrade leaves both
    off for good.
    """

    _started = 0.0  # when the first byte of the request being received arrived; 0: none
    _answering = False  # a whole request is in; its answer is not finished
    _received = 0  # bytes received since the last request was answered

    def connectionMade(self) -> None:
        # Set before Twisted's connectionMade, which starts the idle timer with it.
        self.timeOut = settings.HTTP_IDLE_TIMEOUT or None
        super().connectionMade()
        if settings.HTTP_REQUEST_TIMEOUT:
            _receiving.add(self)
            _start_deadline_sweep()

    def dataReceived(self, data: bytes) -> None:
        if not self._started and not self._answering:
            self._started = time.monotonic()
        self._received += len(data)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._started = 0.0
        self._answering = True
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        # Before Twisted's requestDone: it replays pipelined data, which may complete the
        # next request (allContentReceived) at once.
        self._answering = False
        if self._received + request.sentLength >= LARGE_BYTES:
            tidy_memory_soon()
        self._received = 0
        super().requestDone(request)

    def connectionLost(self, reason: Any) -> None:
        self._started = 0.0
        _receiving.discard(self)
        super().connectionLost(reason)

    def too_slow(self) -> None:
        self._started = 0.0
        _receiving.discard(self)
        logger.info(
            "closing a connection from %s: no whole request within %s s",
            self.transport.getPeer(),
            settings.HTTP_REQUEST_TIMEOUT,
        )
        self.transport.write(REQUEST_TIMEOUT_ANSWER)
        # Twisted's own timeout path: close once written, abort if that does not happen soon.
        self.timeoutConnection()


# Open HTTP connections (weakly: an upgraded or dropped one simply goes), swept once a second.
_receiving: weakref.WeakSet[BoundedHTTPChannel] = weakref.WeakSet()
_sweeping = False
DEADLINE_SWEEP_SECONDS = 1.0


def _start_deadline_sweep() -> None:
    global _sweeping
    if not _sweeping:
        _sweeping = True
        _call_later(DEADLINE_SWEEP_SECONDS, _sweep_deadlines)


def _sweep_deadlines() -> None:
    global _sweeping
    _sweeping = False
    limit = settings.HTTP_REQUEST_TIMEOUT
    now = time.monotonic()
    for channel in list(_receiving):
        if channel._started and now - channel._started >= limit:
            channel.too_slow()
    if _receiving:
        _start_deadline_sweep()


def bound_http_connections() -> None:
    """Make Daphne's HTTP factory build `BoundedHTTPChannel`s.

    Twisted's `HTTPFactory` builds a wrapper that can switch to HTTP/2 after TLS ALPN; Daphne
    only offers HTTP/2 with Twisted's http2 extra and a TLS endpoint, which this project does
    not use, so the factory builds the HTTP/1.1 channel directly. Daphne's `--http-timeout` is
    not this: it limits how long the app may take to answer (503), which would cut delayed
    bin replies.
    """
    from daphne.http_protocol import HTTPFactory

    HTTPFactory.protocol = BoundedHTTPChannel  # type: ignore[assignment]


# --- websocket send buffers ----------------------------------------------------------------

# After the 4000 close frame (queued behind what the client has not read yet), the client gets
# this long to read up to it and answer the close before the connection is dropped.
SLOW_READER_DRAIN_SECONDS = 30


@implementer(IPushProducer)
class SendBuffer:
    """Registered as the transport's streaming producer, to learn how full its buffer is.

    Twisted calls `pauseProducing` when a write leaves more than `bufferSize` (64 KiB) unsent,
    and `resumeProducing` once everything is written to the socket. Bytes handed over in
    between are what piles up in the server for a client that does not read.
    """

    def __init__(self) -> None:
        self.paused = False
        self.held = 0  # bytes of frames handed over since the transport paused us

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.held = 0

    def stopProducing(self) -> None:
        pass


def _bounded_websocket_protocol() -> type:
    from daphne.ws_protocol import WebSocketProtocol

    class BoundedWebSocketProtocol(WebSocketProtocol):  # type: ignore[misc]
        """Daphne's websocket protocol that closes a client too slow to read with 4000."""

        send_buffer: SendBuffer | None = None
        too_slow = False
        held_much = False  # more than LARGE_BYTES waited in the server at some point

        def onOpen(self) -> None:
            super().onOpen()
            if settings.WS_BUFFER_BYTES:
                self.send_buffer = SendBuffer()
                # Daphne upgraded this connection from an HTTPChannel, which is still the
                # transport's producer (and pauses nothing once upgraded); Autobahn registers
                # none. A transport takes one producer.
                self.transport.unregisterProducer()
                self.transport.registerProducer(self.send_buffer, True)

        def sendMessage(self, payload: bytes, *args: Any, **kwargs: Any) -> None:
            if self.too_slow:
                return  # the client was told to reconnect and catch up: nothing more piles up
            buffer = self.send_buffer
            if buffer is not None and buffer.paused:
                buffer.held += len(payload)
                self.held_much = self.held_much or buffer.held >= LARGE_BYTES
                if buffer.held > settings.WS_BUFFER_BYTES:
                    self.close_too_slow()
                    return
            super().sendMessage(payload, *args, **kwargs)

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            super().onClose(wasClean, code, reason)
            # Autobahn leaves this timer running when the connection is lost first; it holds
            # the protocol, and with it the transport's unsent buffer, until it fires.
            if self.closeHandshakeTimeoutCall is not None:
                self.closeHandshakeTimeoutCall.cancel()
                self.closeHandshakeTimeoutCall = None
            if self.held_much:
                # Daphne lets go of a closed connection (and so of its transport's buffer) once
                # its app has finished, checked every second: tidy up after that.
                _call_later(WS_TIDY_DELAY, tidy_memory_soon)

        def close_too_slow(self) -> None:
            self.too_slow = True
            logger.warning(
                "websocket %s closed with 4000: over %s bytes unsent (client too slow)",
                self.path.decode("latin-1", "replace"),
                settings.WS_BUFFER_BYTES,
            )
            self.closeHandshakeTimeout = SLOW_READER_DRAIN_SECONDS
            self.sendClose(code=4000, reason="too slow; reconnect with ?after=")

    return BoundedWebSocketProtocol


def bound_websocket_buffers() -> None:
    """Make Daphne's websocket factory build protocols that bound their send buffers."""
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

    if WebSocketFactory.protocol is WebSocketProtocol:
        WebSocketFactory.protocol = _bounded_websocket_protocol()


# --- memory ---------------------------------------------------------------------------------

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks of this size and more get pages of their own, given back when freed. glibc starts at
# this value but raises it (up to 32 MiB) each time such a block is freed, so after a burst of
# large bodies later ones come from the heap and stay there; a fixed value stops that.
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024
# A request or response this big, or a websocket that had this much waiting, is followed by a
# tidy-up: a garbage collection and, with glibc, malloc_trim.
LARGE_BYTES = 1024 * 1024
TIDY_DELAY = 1.0  # seconds; one tidy-up at most per delay, however many large requests
WS_TIDY_DELAY = 3.0

_libc: Any = None
_tidy_pending = False


def return_freed_memory() -> None:
    """Fix glibc's mmap and trim thresholds (a no-op where the C library is not glibc)."""
    global _libc
    try:
        is_glibc = os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # not glibc, or no confstr at all
        is_glibc = False
    if not is_glibc:
        return
    _libc = ctypes.CDLL(None)
    # Setting either threshold turns off glibc's dynamic adjustment of both. The trim
    # threshold stays high: trimming the heap's top on every free would cost a system call
    # per request under load; tidy_memory_soon trims explicitly after large requests.
    _libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    _libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def tidy_memory_soon() -> None:
    """After something large: free what it left in reference cycles, then give freed pages back.

    Twisted connections (transport <-> protocol) and Django's request/response objects sit in
    reference cycles, so a large body or send buffer is freed only by a full garbage
    collection, which an idle server may not run for a long time (and `gc.freeze()` keeps the
    long-lived objects out of it, so it is cheap). malloc_trim then returns free pages in the
    middle of glibc's heaps, which freeing alone does not.
    """
    global _tidy_pending
    if _tidy_pending:
        return
    _tidy_pending = True
    _call_later(TIDY_DELAY, _tidy)


def _call_later(delay: float, func: Any) -> None:
    # Imported here: the reactor must not be installed by importing this module (Daphne
    # installs the asyncio one first).
    from twisted.internet import reactor

    reactor.callLater(delay, func)  # type: ignore[attr-defined]


def _tidy() -> None:
    global _tidy_pending
    _tidy_pending = False
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
