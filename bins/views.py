"""The browser pages: thin views, logic lives on the models and in `bins.display`."""

from __future__ import annotations

from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_POST, require_safe

from . import display, events, page_filters
from .api import check_create_rate
from .capture import parse_token
from .hosts import request_bases
from .listing import list_rows
from .live import announce_deleted, group_send_within
from .models import Bin, Capture, page_list_limit
from .ratelimit import RateLimited

LAST_BIN_COOKIE = "last_bin"
COOKIE_AGE = 365 * 24 * 3600


def _remember(response: HttpResponse, bin_: Bin) -> HttpResponse:
    response.set_cookie(
        LAST_BIN_COOKIE, str(bin_.token), max_age=COOKIE_AGE, httponly=True, samesite="Lax"
    )
    return response


def create_bin(request: HttpRequest) -> Bin | HttpResponse:
    """A new bin, or the page that says this address made too many lately."""
    try:
        check_create_rate(request)
    except RateLimited as exc:
        response = render(
            request, "message.html", {"title": "Too many new bins", "text": str(exc)}, status=429
        )
        response["Retry-After"] = str(exc.retry_after)
        return response
    return Bin.objects.create()


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Back to the bin this browser used last, or a new one."""
    token = parse_token(request.COOKIES.get(LAST_BIN_COOKIE, ""))
    bin_ = Bin.objects.filter(token=token).first() if token else None
    if bin_ is None:
        bin_ = create_bin(request)
        if isinstance(bin_, HttpResponse):
            return bin_
    return _remember(redirect(bin_.inspect_path()), bin_)


@require_POST
def clear(request: HttpRequest, token: str) -> HttpResponse:
    """Delete every capture of the bin (the page's Clear button), once confirmed: the page
    asks in a dialog; without script this answers with a page that asks."""
    bin_ = Bin.objects.filter(token=token).first()
    if bin_ is None:
        raise Http404("No bin with this token.")
    if request.POST.get("confirm") != "yes":
        context = {"bin": bin_, **page_filters.counts(bin_.id)}
        return render(request, "bins/clear_confirm.html", context)
    bin_.delete_captures()
    announce_deleted(bin_.token, None)
    if request.htmx:
        return HttpResponse(status=204)  # the live stream empties the list
    return redirect(bin_.inspect_path())


@require_POST
def new_bin(request: HttpRequest) -> HttpResponse:
    bin_ = create_bin(request)
    if isinstance(bin_, HttpResponse):
        return bin_
    return _remember(redirect(bin_.inspect_path()), bin_)


@require_GET
def inspect(request: HttpRequest, token: str, capture_id: int | None = None) -> HttpResponse:
    bin_ = Bin.objects.filter(token=token).first()
    if bin_ is None:
        raise Http404("No bin with this token.")
    selected = None
    if capture_id is not None:
        selected = bin_.captures.filter(seq=capture_id).first()
        if selected is None:
            raise Http404("No capture with this id in this bin.")
    bin_.touch()
    detail = detail_context(selected)
    if request.htmx and request.htmx.target == "detail":
        return render(request, "bins/_detail.html", detail)
    filters = page_filters.page_filters(request.GET)
    context = {
        "bin": bin_,
        "capture_url": bin_.capture_url(request_bases(request)),
        "captures": list_rows(bin_.id, page_list_limit(), filters),
        "captures_per_bin": page_list_limit(),  # the page trims its list to this
        "filters": filters,
        "filter_query": page_filters.query(filters),
        "filter_choices": page_filters.choices(filters),
        "counts": page_filters.counts(bin_.id, bin_.last_seq),
        **detail,
    }
    return _remember(render(request, "bins/inspect.html", context), bin_)


def detail_context(capture: Capture | None) -> dict[str, object]:
    """The open capture as _detail.html shows it (the list's capture numbers only: #seq)."""
    if capture is None:
        return {"capture": None}
    headers = display.edit_headers(capture)
    edit_body = display.editable_body(capture)
    signature = capture.bin.signature or {}
    return {
        "capture": capture,
        "decoded_path": display.decoded_path(capture),
        "raw_target": display.raw_target(capture),
        "query": display.query_params(capture),
        "headers": capture.display_headers,
        "body": display.body_view(capture),
        "edit_headers": "\n".join(f"{n}: {v}" for n, v, _ in headers),
        "edit_header_rows": min(len(headers) + 1, 12),
        "edit_body": edit_body,
        "edit_body_rows": 3 if edit_body is None else min(max(edit_body.count("\n") + 2, 3), 16),
        "edit_limit": display.EDIT_LIMIT,
        # Re-signing needs the bin's scheme and secret (bins/providers.py).
        "can_resign": bool(signature.get("scheme") and signature.get("secret")),
        "resign_scheme": events.SCHEME_NAMES.get(signature.get("scheme"), signature.get("scheme")),
        "snippets": display.snippet_links(capture),
        **events.detail_extras(capture),
        **deliveries_context(capture),
    }


def deliveries_context(
    capture: Capture, message: str | None = None, *, fresh: bool = False
) -> dict[str, object]:
    """The capture's newest deliveries with what each sent and was answered, bodies read only
    up to display.PREVIEW_LIMIT (a sent body can be 10 MiB; 20 of them must not be loaded)."""
    rows, more = display.delivery_rows(capture)
    return {
        "capture": capture,
        "deliveries": rows,
        "more_deliveries": more,
        "last_target_url": capture.bin.last_target_url,
        "resend_error": message,
        "fresh": fresh,
    }


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the channel layer answer, 503 naming what failed."""
    from asgiref.sync import async_to_sync

    failed: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        failed["database"] = str(exc) or exc.__class__.__name__
    try:
        async_to_sync(group_send_within)("healthz", {"type": "healthz.ping"})
    except Exception as exc:
        failed["channel_layer"] = str(exc) or exc.__class__.__name__
    status = 503 if failed else 200
    return JsonResponse(
        {"ok": not failed, "database": connection.vendor, "errors": failed}, status=status
    )


@require_GET
def robots(request: HttpRequest) -> HttpResponse:
    """Bins are private to whoever holds their token: nothing here is for search engines."""
    return HttpResponse("User-agent: *\nDisallow: /\n", content_type="text/plain")


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """Tools that ask for /favicon.ico without reading the page get the page's icon."""
    return redirect(static("bins/favicon.svg"), permanent=True)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """This process's metrics in Prometheus' text format (see `bins.metrics`)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from . import metrics  # noqa: F401 (registers the metrics)

    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
