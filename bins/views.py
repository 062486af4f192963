"""The browser pages: thin views, logic lives on the models and in `bins.display`."""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_POST

from . import display, events, page_filters
from .api import check_create_rate, find_capture, resend_edits
from .capture import parse_token
from .hosts import request_bases
from .listing import list_rows
from .live import announce_deleted, group_send_within
from .models import Bin, Capture, page_list_limit
from .outgoing import NOT_FORWARDED, BadTarget
from .ratelimit import RateLimited
from .resend import resend_capture
from .validation import Invalid

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
    if capture is None:
        return {"capture": None}
    return {
        "capture": capture,
        "decoded_path": display.decoded_path(capture),
        "query": display.query_params(capture),
        "headers": capture.display_headers,
        "body": display.body_view(capture),
        "edit_headers": "\n".join(
            f"{n}: {v}" for n, v in capture.display_headers if n not in NOT_FORWARDED
        ),
        **events.detail_extras(capture),
        **deliveries_context(capture),
    }


def deliveries_context(capture: Capture, message: str | None = None) -> dict[str, object]:
    return {
        "capture": capture,
        "deliveries": list(capture.deliveries.order_by("-id")[:20]),
        "last_target_url": capture.bin.last_target_url,
        "resend_error": message,
    }


@require_POST
async def resend(request: HttpRequest, token: str, capture_id: int) -> HttpResponse:
    """The page's resend form: send, record, answer with the delivery history (htmx)."""
    capture = await database_sync_to_async(find_capture)(token, capture_id)
    if capture is None:
        raise Http404("No capture with this id in this bin.")
    form = request.POST
    message = None
    status = 200
    retry_after = None
    try:
        edits = resend_edits(form_edits(form, capture)) if form.get("edit") else {}
        if form.get("resign"):
            edits["resign"] = True
        await resend_capture(capture, form.get("target_url"), **edits)
    except (Invalid, BadTarget) as exc:
        message, status = str(exc), 400
    except RateLimited as exc:
        message, status, retry_after = str(exc), 429, exc.retry_after
    context = await database_sync_to_async(deliveries_context)(capture, message)
    if request.htmx:
        response = render(request, "bins/_deliveries.html", context, status=status)
    elif message:
        response = render(
            request, "message.html", {"title": "Not sent", "text": message}, status=status
        )
    else:
        return redirect("bins:capture", token, capture_id)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


def form_edits(form: QueryDict, capture: Capture) -> dict[str, object]:
    """The page's edit fields as the API's resend fields."""
    headers = []
    for line in form.get("headers", "").splitlines():
        if line.strip():
            name, sep, value = line.partition(":")
            if not sep:
                raise Invalid(f"header line {line!r} has no colon")
            headers.append([name.strip(), value.strip()])
    edits: dict[str, object] = {"method": form.get("method", "").strip(), "headers": headers}
    if capture.body_text is not None and "body" in form:
        # Browsers send textarea line breaks as CRLF; keep the body's own line breaks.
        body = form["body"]
        if "\r\n" not in capture.body_text:
            body = body.replace("\r\n", "\n")
        edits["body"] = body
    return edits


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


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Tools that ask for /favicon.ico without reading the page get the page's icon."""
    return redirect(static("bins/favicon.svg"), permanent=True)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """This process's metrics in Prometheus' text format (see `bins.metrics`)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from . import metrics  # noqa: F401 (registers the metrics)

    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
