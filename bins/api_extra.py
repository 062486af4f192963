"""API views for copying a capture as a snippet and exporting a bin (thin: the work is in
`bins.snippets` and `bins.export`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from . import export
from .api import api_view, error
from .hosts import request_bases
from .listing import FILTERS, BadFilter, filtered
from .models import Bin, Capture
from .outgoing import BadTarget, check_url
from .snippets import KINDS, snippet
from .validation import Invalid


def no_sniffing(response: HttpResponse) -> HttpResponse:
    """Captured text served from the instance's origin: never rendered or run as a page."""
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@api_view(["GET"])
def capture_snippet(request: HttpRequest, bin_: Bin, capture_id: int, kind: str) -> HttpResponse:
    """The capture as a `kind` snippet (curl, httpie, python, fetch) as plain text. It sends to
    the bin's own capture URL, or with `?to=<url>` to that base instead (path and query kept)."""
    if kind not in KINDS:
        return error(404, f"No such snippet; use one of: {', '.join(KINDS)}.")
    unknown = set(request.GET) - {"to"}
    if unknown:
        raise Invalid(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    capture = bin_.captures.defer("body").filter(seq=capture_id).first()
    if capture is None:
        return error(404, "No capture with this id in this bin.")
    bases = request_bases(request)
    target = bin_.capture_url(bases)
    if "to" in request.GET:
        target = snippet_target(request.GET["to"])
    raw_url = bases.app + reverse("bins:api-capture-raw", args=[bin_.token, capture.seq])
    text = snippet(capture, kind, target, raw_url=raw_url)
    return no_sniffing(HttpResponse(text, content_type="text/plain; charset=utf-8"))


def snippet_target(url: str) -> str:
    try:
        url = check_url(url)
    except BadTarget as exc:
        raise Invalid(str(exc).replace("target_url", "to")) from exc
    if "@" in urlsplit(url).netloc:
        raise Invalid("to must not hold a user name or password (user:password@)")
    return url


EXPORTS = {
    "har": ("har", "application/json; charset=utf-8"),
    "jsonl": ("jsonl", "application/x-ndjson; charset=utf-8"),
}


@csrf_exempt  # the token is the key (as in bins.api): a POST gets the API's own 405
async def export_har(request: HttpRequest, token: str) -> HttpResponse:
    """GET: the bin's captures as a HAR 1.2 file, oldest first (the list's filters apply)."""
    return await _export(request, token, "har")


@csrf_exempt
async def export_jsonl(request: HttpRequest, token: str) -> HttpResponse:
    """GET: the bin's captures as JSON lines, oldest first, each with its whole body."""
    return await _export(request, token, "jsonl")


async def _export(request: HttpRequest, token: str, kind: str) -> HttpResponse:
    if request.method != "GET":
        response = error(405, f"{request.method} not allowed here; use GET")
        response["Allow"] = "GET"
        return response
    bin_ = await database_sync_to_async(Bin.objects.filter(token=token).first)()
    if bin_ is None:
        return error(404, "No bin with this token.")
    params: dict[str, Any] = {name: request.GET[name] for name in request.GET}
    unknown = set(params) - set(FILTERS)
    if unknown:
        return error(400, f"unknown parameter(s): {', '.join(sorted(unknown))}")
    try:
        filtered(Capture.objects.none(), params)  # checks the filters; runs no query
    except BadFilter as exc:
        return error(400, str(exc))
    # What is stored now: captures arriving during the download are not waited for.
    upto = bin_.last_seq
    if kind == "har":
        comment = f"Captures of bin {bin_.token}" + (
            f" matching {', '.join(f'{k}={v}' for k, v in params.items())}" if params else ""
        )
        capture_url = bin_.capture_url(request_bases(request))
        chunks = export.har(bin_.pk, params, upto, capture_url, comment)
    else:
        chunks = export.jsonl(bin_.pk, params, upto)
    extension, content_type = EXPORTS[kind]
    response = StreamingHttpResponse(chunks, content_type=content_type)
    day = timezone.now().date().isoformat()
    response["Content-Disposition"] = (
        f'attachment; filename="bin-{str(bin_.token)[:8]}-{day}.{extension}"'
    )
    no_sniffing(response)
    return response
