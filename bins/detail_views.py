"""The open capture's own actions: the resend form, "Send again" from the history, delete.

Every answer to htmx is a small partial that says what happened, errors included (the page's
htmx config swaps 4xx answers in; 5xx and network failures are shown by static/bins/detail.js).
A request that was deleted meanwhile (another tab, Clear, the API, pruning) is a 404 that says
so, never Django's whole 404 page swapped into the pane.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import display, hop
from .api import find_capture
from .live import announce_deleted
from .models import Bin, Capture, Delivery, text_to_wire
from .outgoing import BadTarget
from .ratelimit import RateLimited
from .resend import resend_capture
from .validation import TOKEN, Invalid, header_problem
from .views import deliveries_context

GONE = (
    "This request was deleted (in another tab, by Clear, through the API, or pruned as the bin "
    "filled up): nothing was sent."
)


def capture_gone(request: HttpRequest, target: str) -> HttpResponse:
    """404 for an action on a capture that is no longer there, as a partial for `target`
    (`#deliveries` or `#detail`), or a page without htmx."""
    if not request.htmx:
        return render(request, "message.html", {"title": "Deleted", "text": GONE}, status=404)
    if target == "#deliveries":
        return render(request, "bins/_deliveries.html", {"gone": True}, status=404)
    return render(request, "bins/_detail.html", {"capture": None, "gone": True}, status=404)


async def send_and_answer(
    request: HttpRequest,
    capture: Capture,
    target_url: Any,
    edits: dict[str, Any],
    refused: str | None = None,
) -> HttpResponse:
    """Send (unless `refused` says why not) and answer with the delivery history, which says
    why nothing was sent where nothing was: 400 for a bad target or edit, 429 when the bin's
    resends are over RESEND_RATE_LIMIT (with Retry-After and the wait in words)."""
    message, status, retry_after = refused, 400 if refused else 200, None
    if refused is None:
        try:
            delivery = await resend_capture(capture, target_url, **edits)
            if delivery.pk is None:
                answered = delivery.error or f"status {delivery.status}"
                message = (
                    f"Sent ({answered}), but this request was deleted meanwhile: the delivery "
                    "is not kept."
                )
        except (Invalid, BadTarget) as exc:
            message, status = f"Not sent: {exc}", 400
        except RateLimited as exc:
            message = (
                "Too many resends for this bin (RESEND_RATE_LIMIT): nothing was sent. "
                f"Retry after {exc.retry_after} s."
            )
            status, retry_after = 429, exc.retry_after
    elif not message.startswith("Not sent"):
        message = f"Not sent: {message}"
    context = await database_sync_to_async(deliveries_context)(
        capture, message, fresh=status == 200
    )
    if request.htmx:
        response = render(request, "bins/_deliveries.html", context, status=status)
    elif message:
        response = render(
            request, "message.html", {"title": "Not sent", "text": message}, status=status
        )
    else:
        return redirect("bins:capture", capture.bin.token, capture.seq)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


@require_POST
async def resend(request: HttpRequest, token: str, capture_id: int) -> HttpResponse:
    """The page's resend form: what the form shows is what is sent (see `form_edits`); answers
    with the delivery history (htmx), or says why nothing was sent."""
    capture = await database_sync_to_async(find_capture)(token, capture_id)
    if capture is None:
        return capture_gone(request, "#deliveries")
    try:
        edits = form_edits(request.POST, capture)
    except Invalid as exc:
        return await send_and_answer(request, capture, None, {}, refused=str(exc))
    return await send_and_answer(request, capture, request.POST.get("target_url"), edits)


def form_edits(form: QueryDict, capture: Capture) -> dict[str, object]:
    """The resend form's fields as per-send changes (`resend.deliver`'s arguments). A field left
    as the form showed it is no change, so an untouched form sends the capture byte for byte
    as captured, though the form shows bytes that are not UTF-8 as \\xNN and line breaks as
    the browser likes; and a header line left as it was keeps its exact bytes among edited ones.
    A field the form did not send is no change either."""
    edits: dict[str, object] = {}
    method = form.get("method", capture.method).strip()
    if method != capture.method:
        if not TOKEN.fullmatch(method):
            raise Invalid(f"Method {method!r} is not an HTTP method, e.g. POST")
        edits["method"] = method
    if "headers" in form:
        shown = display.edit_headers(capture)
        lines = []
        for line in form["headers"].splitlines():
            if line.strip():
                name, sep, value = line.partition(":")
                if not sep:
                    raise Invalid(f"Header line {line!r} has no colon: write it as Name: value")
                lines.append((name.strip(), value.strip()))
        if lines != [(n, v) for n, v, _ in shown]:
            exact = {(n, v): stored for n, v, stored in shown}
            headers = []
            for name, value in lines:
                stored = exact.get((name, value))
                if stored is None:
                    problem = header_problem(name, value)
                    if problem:
                        raise Invalid(f"Header {problem}")
                    stored = [name, value]
                headers.append((text_to_wire(stored[0]), text_to_wire(stored[1])))
            edits["headers"] = headers
    original = display.editable_body(capture)
    if "body" in form and original is not None and not display.same_lines(form["body"], original):
        edits["body"] = display.with_line_breaks_of(form["body"], original).encode("utf-8")
    if form.get("resign"):
        edits["resign"] = True
    return edits


@require_POST
async def send_again(
    request: HttpRequest, token: str, capture_id: int, delivery_id: int
) -> HttpResponse:
    """A delivery's "Send again": what was sent that time, to the same target."""
    capture = await database_sync_to_async(find_capture)(token, capture_id)
    if capture is None:
        return capture_gone(request, "#deliveries")
    delivery = await database_sync_to_async(
        lambda: capture.deliveries.filter(pk=delivery_id).first()
    )()
    if delivery is None:
        return await send_and_answer(
            request, capture, None, {}, refused="that delivery is no longer kept."
        )
    return await send_and_answer(request, capture, delivery.target_url, again_edits(delivery))


def again_edits(delivery: Delivery) -> dict[str, Any]:
    """`resend.deliver`'s arguments that send again what a delivery sent: nothing for one that
    sent the capture as captured; else its method, headers and body as recorded (less this
    instance's hop mark, added anew), re-signed afresh if it was re-signed (the provider's
    timestamp then is too old by now)."""
    edits: dict[str, Any] = {}
    if delivery.resigned:
        edits["resign"] = True
    if not delivery.edited:
        return edits
    sent = delivery.sent_headers
    if sent is not None:
        headers = [(text_to_wire(n), text_to_wire(v)) for n, v in sent]
        if headers and headers[-1] == (hop.HEADER, hop.mark()):
            headers.pop()  # the mark stamped on that send: stamped again on this one
        edits["headers"] = headers
    if delivery.sent_body is not None:
        edits["body"] = bytes(delivery.sent_body)
    edits["method"] = delivery.method
    return edits


@require_POST
def delete_capture(request: HttpRequest, token: str, capture_id: int) -> HttpResponse:
    """The open capture's Delete: as the API's DELETE, announced live (every open page drops
    the row); the pane then shows the placeholder, and the address the bin's page."""
    bin_ = Bin.objects.filter(token=token).first()
    if bin_ is None or not bin_.delete_captures([capture_id]):
        return capture_gone(request, "#detail")
    announce_deleted(bin_.token, [capture_id])
    if not request.htmx:
        return redirect(bin_.inspect_path())
    response = render(request, "bins/_detail.html", {"capture": None, "deleted": capture_id})
    response["HX-Push-Url"] = bin_.inspect_path()
    return response
