"""What every page template needs."""

from __future__ import annotations

from django.http import HttpRequest


def page(request: HttpRequest) -> dict[str, object]:
    # django-htmx's `{% htmx_script %}` reads `csp_nonce`; the page's own tags read it too. The
    # nonce is made on first use, so responses that render no page never pay for it.
    return {"csp_nonce": getattr(request, "csp_nonce", "")}
