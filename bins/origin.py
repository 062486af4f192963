"""Websocket origin check: a browser may only open a bin's stream from this instance's pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings


class SameOriginValidator:
    """Refuse a websocket handshake whose Origin is another site.

    Browsers always send Origin on websockets; scripts (the JSON stream's users) usually send
    none and are let through, as the token is the stream's only secret anyway. A page on another
    site cannot open the stream on a visitor's behalf.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", ()))
        origin = headers.get(b"origin")
        if origin is not None and not self.allowed(origin.decode("latin-1"), headers):
            # Refuse the handshake the way Channels' own validators do.
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return None
        return await self.app(scope, receive, send)

    @staticmethod
    def allowed(origin: str, headers: dict[bytes, bytes]) -> bool:
        host = urlsplit(origin).netloc.lower()
        if not host:
            return False
        if host == headers.get(b"host", b"").decode("latin-1").lower():
            return True
        trusted = {urlsplit(o).netloc.lower() for o in settings.CSRF_TRUSTED_ORIGINS}
        if settings.PUBLIC_URL:
            trusted.add(urlsplit(settings.PUBLIC_URL).netloc.lower())
        return host in trusted
