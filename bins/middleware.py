"""Middleware of the pages and API."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


def noindex(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """Keep every page and API answer out of search engines: a bin's page is its owner's, and
    an indexed link is a token anyone can use."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response.headers.setdefault("X-Robots-Tag", "noindex, nofollow")
        return response

    return middleware
