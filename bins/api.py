"""The JSON API under /api/: thin views over the models; errors are JSON `{"error": ...}`.

The token is the only key to a bin (as on the hosted tools), so there is no session and no CSRF
check here: a cookie grants nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from functools import wraps
from typing import Any

import orjson
from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from . import bincache, binsettings, live, ratelimit
from .hosts import request_bases
from .listing import FILTERS, BadFilter, filtered, shapes, with_inline_bodies
from .models import Bin, Capture, Delivery
from .outgoing import KEEP_RESPONSE_BYTES, BadTarget, check_url
from .ratelimit import RateLimited
from .resend import resend_capture
from .validation import TOKEN, Invalid, bin_changes, header_problem

MAX_LIMIT = 500


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def too_many(exc: RateLimited) -> JsonResponse:
    response = error(429, str(exc))
    response["Retry-After"] = str(exc.retry_after)
    return response


def check_create_rate(request: HttpRequest) -> None:
    """New bins per minute per client address (BIN_CREATE_RATE_LIMIT), page and API alike."""
    address = request.META.get("REMOTE_ADDR") or "unknown"
    wait = ratelimit.retry_after_sync("create", address)
    if wait:
        raise RateLimited(
            wait,
            f"Too many new bins from your address (at most {settings.BIN_CREATE_RATE_LIMIT} a "
            f"minute). Try again in {wait} s.",
        )


def api_view(methods: list[str]) -> Callable[..., Any]:
    """JSON-only view: allowed methods, the bin looked up, validation errors as 400."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error(
                    405, f"{request.method} not allowed here; use {', '.join(methods)}"
                )
                response["Allow"] = ", ".join(methods)
                return response
            if "token" in kwargs:
                bin_ = Bin.objects.filter(token=kwargs.pop("token")).first()
                if bin_ is None:
                    return error(404, "No bin with this token.")
                kwargs["bin_"] = bin_
            try:
                return view(request, *args, **kwargs)
            except Invalid as exc:
                return error(400, str(exc))
            except RateLimited as exc:
                return too_many(exc)

        return wrapper

    return decorate


def json_body(request: HttpRequest) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        # orjson refuses nesting deeper than 1024 with a JSONDecodeError (json would raise
        # RecursionError, a 500).
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object")
    return data


@api_view(["POST"])
def bins(request: HttpRequest) -> HttpResponse:
    changes = bin_changes(None, json_body(request))
    check_create_rate(request)
    bin_ = Bin.objects.create(**changes)
    return JsonResponse(bin_.settings_json(request_bases(request)), status=201)


@api_view(["GET", "PATCH", "DELETE"])
def bin_detail(request: HttpRequest, bin_: Bin) -> HttpResponse:
    if request.method == "PATCH":
        binsettings.change(bin_, json_body(request), request_bases(request).capture)
    elif request.method == "DELETE":
        bincache.forget(bin_.token)
        bin_.delete()
        return HttpResponse(status=204)
    return JsonResponse(bin_.settings_json(request_bases(request)))


LIST_PARAMS = {"limit", "before", "after", *FILTERS}


@api_view(["GET", "DELETE"])
def captures(request: HttpRequest, bin_: Bin) -> HttpResponse:
    if request.method == "DELETE":
        count = bin_.delete_captures()
        live.announce_deleted(bin_.token, None)
        return JsonResponse({"deleted": count})
    params = request.GET
    unknown = set(params) - LIST_PARAMS
    if unknown:
        raise Invalid(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    limit = int_param(params, "limit", 50)
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be between 1 and {MAX_LIMIT}")
    rows = bin_.captures.all()
    if "before" in params:
        rows = rows.filter(seq__lt=int_param(params, "before", 0))
    if "after" in params:
        rows = rows.filter(seq__gt=int_param(params, "after", 0))
    try:
        rows = with_inline_bodies(filtered(rows, params))
    except BadFilter as exc:
        raise Invalid(str(exc)) from exc
    if "after" in params and "before" not in params:
        # Catching up: the `limit` captures right after that id (still shown newest first),
        # so that paging on with the newest id seen misses none.
        page = list(rows.order_by("seq")[:limit])[::-1]
    else:
        page = list(rows.order_by("-seq")[:limit])
    return JsonResponse({"captures": shapes(page)})


def int_param(params: Any, name: str, default: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise Invalid(f"{name} must be an integer") from exc


def get_capture(bin_: Bin, capture_id: int) -> Capture | None:
    return bin_.captures.filter(seq=capture_id).first()


@api_view(["GET", "DELETE"])
def capture_detail(request: HttpRequest, bin_: Bin, capture_id: int) -> HttpResponse:
    if request.method == "DELETE":
        if not bin_.delete_captures([capture_id]):
            return error(404, "No capture with this id in this bin.")
        live.announce_deleted(bin_.token, [capture_id])
        return HttpResponse(status=204)
    capture = get_capture(bin_, capture_id)
    if capture is None:
        return error(404, "No capture with this id in this bin.")
    return JsonResponse(capture.as_json())


@api_view(["GET"])
def capture_raw(request: HttpRequest, bin_: Bin, capture_id: int) -> HttpResponse:
    capture = get_capture(bin_, capture_id)
    if capture is None:
        return error(404, "No capture with this id in this bin.")
    return raw_body_response(capture)


def raw_body_response(capture: Capture) -> HttpResponse:
    """The captured bytes, exactly, as a download: never rendered as a page of this origin."""
    response = HttpResponse(capture.body_bytes, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="capture-{capture.seq}.bin"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


RESEND_FIELDS = {"target_url", "method", "headers", "body", "body_base64", "resign"}


async def resend(request: HttpRequest, token: str, capture_id: int) -> HttpResponse:
    """POST: send the capture (or an edited copy, for this send only) to a target; 201 with the
    delivery record, whatever the target answered or why it failed."""
    if request.method != "POST":
        response = error(405, f"{request.method} not allowed here; use POST")
        response["Allow"] = "POST"
        return response
    capture = await database_sync_to_async(find_capture)(token, capture_id)
    if capture is None:
        return error(404, "No bin with this token, or no capture with this id in it.")
    try:
        data = json_body(request)
        edits = resend_edits(data)
        delivery = await resend_capture(capture, data.get("target_url"), **edits)
    except (Invalid, BadTarget) as exc:
        return error(400, str(exc))
    except RateLimited as exc:
        return too_many(exc)
    return JsonResponse(delivery.as_json(), status=201)


resend = csrf_exempt(resend)


def find_capture(token: str, capture_id: int) -> Capture | None:
    return Capture.objects.select_related("bin").filter(bin__token=token, seq=capture_id).first()


def resend_edits(data: dict[str, Any]) -> dict[str, Any]:
    """Validated per-send changes: method, headers ([[name, value], ...]), body or body_base64."""
    unknown = set(data) - RESEND_FIELDS
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    edits: dict[str, Any] = {}
    if "resign" in data:
        if type(data["resign"]) is not bool:
            raise Invalid("resign must be true or false")
        edits["resign"] = data["resign"]
    if "method" in data:
        method = data["method"]
        if not isinstance(method, str) or not TOKEN.fullmatch(method):
            raise Invalid("method must be an HTTP method token, e.g. POST")
        edits["method"] = method
    if "headers" in data:
        headers = data["headers"]
        if not isinstance(headers, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in headers
        ):
            raise Invalid("headers must be a list of [name, value] string pairs")
        for i, (name, value) in enumerate(headers):
            problem = header_problem(name, value)
            if problem:
                raise Invalid(f"headers[{i}]: {problem}")
        edits["headers"] = [(n.encode("utf-8"), v.encode("utf-8")) for n, v in headers]
    if "body" in data and "body_base64" in data:
        raise Invalid("give body or body_base64, not both")
    if "body" in data:
        if not isinstance(data["body"], str):
            raise Invalid("body must be a string (use body_base64 for bytes)")
        edits["body"] = data["body"].encode("utf-8")
    if "body_base64" in data:
        try:
            edits["body"] = base64.b64decode(data["body_base64"], validate=True)
        except (ValueError, TypeError) as exc:
            raise Invalid("body_base64 is not valid base64") from exc
    return edits


@api_view(["GET", "POST"])
def deliveries(request: HttpRequest, bin_: Bin, capture_id: int) -> HttpResponse:
    """GET: the capture's deliveries, newest first. POST: record a replay made elsewhere (the
    forwarder command on a laptop), so the history shows it too."""
    capture = get_capture(bin_, capture_id)
    if capture is None:
        return error(404, "No capture with this id in this bin.")
    if request.method == "POST":
        delivery = reported_delivery(capture, json_body(request))
        delivery.save()
        return JsonResponse(delivery.as_json(capture.seq), status=201)
    rows = capture.deliveries.order_by("-id")[:MAX_LIMIT]
    return JsonResponse({"deliveries": [d.as_json(capture.seq) for d in rows]})


REPORT_FIELDS = {
    "target_url",
    "method",
    "status",
    "headers",
    "body_base64",
    "body_size",
    "duration_ms",
    "error",
}


def reported_delivery(capture: Capture, data: dict[str, Any]) -> Delivery:
    """A delivery reported by the forwarder command, checked like any other input."""
    unknown = set(data) - REPORT_FIELDS
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    try:
        url = check_url(data.get("target_url"))
    except BadTarget as exc:
        raise Invalid(str(exc)) from exc
    method = data.get("method", capture.method)
    if not isinstance(method, str) or not TOKEN.fullmatch(method):
        raise Invalid("method must be an HTTP method token, e.g. POST")
    status = data.get("status")
    if status is not None and (type(status) is not int or not 100 <= status <= 599):
        raise Invalid("status must be null or an integer from 100 to 599")
    headers = data.get("headers", [])
    if not isinstance(headers, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in headers
    ):
        raise Invalid("headers must be a list of [name, value] string pairs")
    try:
        body = base64.b64decode(data.get("body_base64") or "", validate=True)
    except (ValueError, TypeError) as exc:
        raise Invalid("body_base64 is not valid base64") from exc
    size = data.get("body_size", len(body))
    duration = data.get("duration_ms", 0)
    if type(size) is not int or size < 0:
        raise Invalid("body_size must be a whole number")
    if type(duration) not in (int, float) or not 0 <= duration < 10**9:
        raise Invalid("duration_ms must be a number of milliseconds")
    problem = data.get("error")
    if problem is not None and (not isinstance(problem, str) or len(problem) > 2000):
        raise Invalid("error must be null or a string (at most 2000 characters)")
    return Delivery(
        capture=capture,
        kind=Delivery.FORWARDER,
        target_url=url,
        method=method,
        duration_ms=float(duration),
        status=status,
        response_headers_json=json.dumps(headers[:500]),
        response_body=body[:KEEP_RESPONSE_BYTES],
        response_size=max(size, len(body)),
        error=(problem or "").replace("\x00", ""),
    )
