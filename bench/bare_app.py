"""The yardstick: a bare ASGI app that reads the request body, stores nothing and answers 200.

Served by bench/run.py exactly as the real app is (`daphne --bind 127.0.0.1 --port P
--server-name '' bench.bare_app:application`, pinned to the same CPU), so the ratio
"stored captures/s ÷ bare requests/s" measures what the app costs on top of Daphne itself.

With BENCH_BARE_NO_FORM_PARSING=1 it also turns off Twisted's form parsing the way the real app
does (`bins.server.disable_form_parsing`), to show how much of the gap that alone is worth.
"""

from __future__ import annotations

import os
from typing import Any

BODY = b'{"ok": true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

if os.environ.get("BENCH_BARE_NO_FORM_PARSING") == "1":
    from daphne.http_protocol import WebRequest

    _original_init = WebRequest.__init__

    def _init_without_form_parsing(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        _original_init(self, *args, **kwargs)

    WebRequest.__init__ = _init_without_form_parsing  # type: ignore[method-assign]


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more_body = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
