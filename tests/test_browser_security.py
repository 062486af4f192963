"""What a bin answers can never run on the instance's origin: real Chromium, with a listener for
dialogs (a script that ran would open one)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import httpx
import pytest

from bins.models import Bin

from .browser import expect, open_inspector

pytestmark = pytest.mark.django_db(transaction=True)

HTML_REPLY = (
    "<!doctype html><title>bin page</title><h1>hello</h1>"
    "<script>alert('ran on ' + document.domain); document.cookie = 'last_bin=evil';</script>"
)


def new_bin(base: str, response: dict) -> str:
    r = httpx.post(f"{base}/api/bins", json={"response": response})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def watch_dialogs(page) -> list[str]:
    dialogs: list[str] = []

    def record(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    return dialogs


def test_a_bin_reply_opened_in_the_browser_never_runs_as_a_page_of_the_instance(server, page):
    dialogs = watch_dialogs(page)
    token = new_bin(
        server.base, {"status": 200, "headers": [["Content-Type", "text/html"]], "body": HTML_REPLY}
    )
    response = page.goto(f"{server.base}/{token}/open-me")
    assert response is not None and response.status == 200
    assert "sandbox" in response.headers["content-security-policy"]
    # The HTML is shown, its script is not run: a sandboxed document has no script and an
    # opaque origin, so it can neither read the instance's pages nor set its cookies.
    expect(page.locator("h1")).to_have_text("hello")
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.context.cookies() == []


def test_a_bin_reply_is_never_an_allowed_script_of_the_inspector_page(server, page):
    dialogs = watch_dialogs(page)
    script = new_bin(
        server.base,
        {
            "status": 200,
            "headers": [["Content-Type", "application/javascript"]],
            "body": "alert('bin script ran on the inspector page'); window.__pwned = 1;",
        },
    )
    style = new_bin(
        server.base,
        {"status": 200, "headers": [["Content-Type", "text/css"]], "body": "body{display:none}"},
    )
    open_inspector(page, server.base)
    # As if markup had slipped past escaping: a script and a stylesheet from capture URLs on
    # this very origin. The CSP allows scripts and styles by nonce only, so both are refused.
    page.evaluate(
        """([script, style]) => {
            const s = document.createElement('script'); s.src = script;
            document.body.appendChild(s);
            const l = document.createElement('link'); l.rel = 'stylesheet'; l.href = style;
            document.head.appendChild(l);
        }""",
        [f"/{script}", f"/{style}"],
    )
    page.wait_for_function("window.__csp.length >= 2")
    violations = page.evaluate("window.__csp")
    assert any(v.startswith("script-src") and script in v for v in violations), violations
    assert any(v.startswith("style-src") and style in v for v in violations), violations
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.evaluate("typeof window.__pwned") == "undefined"
    expect(page.locator("body")).to_be_visible()


def test_a_stored_reply_with_origin_headers_never_reaches_the_browser(server, page):
    # Settings stored before the rules (the API refuses them now): the capture path drops them.
    # (In a thread of its own: Playwright's loop runs in this one, and the ORM refuses that.)
    make = partial(
        Bin.objects.create,
        response={
            "status": 200,
            "headers": [
                ["Set-Cookie", "last_bin=3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f; Path=/"],
                ["Clear-Site-Data", '"*"'],
                ["Content-Type", "text/plain"],
            ],
            "body": json.dumps({"ok": True}),
        },
    )
    with ThreadPoolExecutor(1) as pool:
        bin_ = pool.submit(make).result()
    response = page.goto(f"{server.base}/{bin_.token}")
    assert response is not None and response.status == 200
    names = {n.lower() for n in response.headers}
    assert "set-cookie" not in names and "clear-site-data" not in names
    assert page.context.cookies() == []
