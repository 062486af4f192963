"""Small page actions of the inspector's top bar: renaming the bin."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import binsettings
from .hosts import request_bases
from .settings_views import find_bin
from .validation import Invalid


@require_POST
def rename(request: HttpRequest, token: str) -> HttpResponse:
    """Set the bin's `name` through the settings' one save path (the API's PATCH rules: at
    most 100 characters, no control characters; empty clears it). htmx gets the page's new
    title back; without script, the page again."""
    bin_ = find_bin(token)
    name = request.POST.get("name", "")
    try:
        binsettings.change(bin_, {"name": name or None}, request_bases(request).capture)
    except Invalid as exc:
        if request.htmx:
            return render(
                request, "bins/_bin_title.html", {"bin": bin_, "error": str(exc)}, status=400
            )
        return render(
            request, "message.html", {"title": "Not renamed", "text": str(exc)}, status=400
        )
    if request.htmx:
        return render(request, "bins/_bin_title.html", {"bin": bin_})
    return redirect(bin_.inspect_path())
