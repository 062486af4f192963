"""What the HTTP server must do differently for a byte-exact inspector, in one place."""

from __future__ import annotations

from typing import Any


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
