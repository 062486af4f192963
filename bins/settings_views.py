"""The inspector page's settings panel: show a bin's settings as a form, save it through
`binsettings.change` (the API's PATCH: same validation, same messages), and say in plain words
what a provider will get. The form and its plumbing are in `bins.settings_form`."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from . import binsettings
from .hosts import request_bases
from .models import Bin
from .settings_form import (
    Editor,
    choices,
    editor_from_form,
    editor_from_settings,
    error_field,
    numbered,
    plain_words,
    rule_editor,
    settings_from_editor,
    step_editor,
)
from .validation import Invalid, bin_changes


def find_bin(token: str) -> Bin:
    bin_ = Bin.objects.filter(token=token).first()
    if bin_ is None:
        raise Http404("No bin with this token.")
    return bin_


def stored(bin_: Bin) -> dict[str, Any]:
    """The bin's settings, PATCH-shaped (what the form edits)."""
    return {
        "name": bin_.name,
        "response": bin_.response_config,
        "rules": bin_.rules,
        "forward_url": bin_.forward_url,
        "signature": bin_.signature,
    }


def render_form(
    request: HttpRequest,
    bin_: Bin,
    editor: Editor,
    *,
    error: str = "",
    saved: bool = False,
    status: int = 200,
) -> HttpResponse:
    context = {
        "bin": bin_,
        "editor": numbered(editor),
        "choices": choices(),
        "summary": [] if error else plain_words(bin_.response_config, bin_.rules),
        "preview_error": error,
        "error": error,
        "error_field": error_field(error),
        "saved": saved,
        # What the page's script copies for a new rule or step.
        "blank_rule": numbered({"rules": [rule_editor({}, "__rule__")]})["rules"][0],
        "blank_step": {**step_editor({}, "__prefix__", "__step__"), "parent": "__prefix__"},
    }
    template = "bins/_settings_form.html" if request.htmx else "bins/settings_page.html"
    return render(request, template, context, status=status)


@require_http_methods(["GET", "POST"])
def bin_settings(request: HttpRequest, token: str) -> HttpResponse:
    """GET: the form (htmx: the panel's content; else a page of its own). POST: save it; an
    invalid save changes nothing and shows the form as typed, with the message naming the
    field."""
    bin_ = find_bin(token)
    if request.method == "GET":
        return render_form(request, bin_, editor_from_settings(stored(bin_)))
    editor = editor_from_form(request.POST)
    try:
        binsettings.change(bin_, settings_from_editor(editor), request_bases(request).capture)
    except Invalid as exc:
        bin_.refresh_from_db()  # nothing changed: the summary says what still holds
        return render_form(request, bin_, editor, error=str(exc), status=400)
    if not request.htmx:
        return redirect(bin_.inspect_path())
    return render_form(request, bin_, editor_from_settings(stored(bin_)), saved=True)


@require_POST
def preview(request: HttpRequest, token: str) -> HttpResponse:
    """What a provider would get with the form as it stands (nothing is saved), or why it
    cannot be saved yet."""
    bin_ = find_bin(token)
    context: dict[str, Any] = {"summary": [], "preview_error": ""}
    try:
        patch = settings_from_editor(editor_from_form(request.POST))
        changes = bin_changes(bin_, patch, str(bin_.token))
        context["summary"] = plain_words(changes["response"], changes["rules"])
    except Invalid as exc:
        context["preview_error"] = str(exc)
    return render(request, "bins/_settings_summary.html", context)
