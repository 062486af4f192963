"""The inspector page in a real browser: Chromium (Playwright) against real Daphne processes.

Each server is started as `make run` starts it and shares pytest-django's test database through
DATABASE_URL. Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM); where it is missing these
tests are skipped, except in CI (CI=true), where they fail. A screenshot of the inspector with a
capture open is left in /tmp/browser-inspector.png for a person to look at.

Playwright's sync API marks its event loop as running in this thread while the driver is up, so
the browser lives for one test only and is gone before the test database is flushed (Django's
ORM refuses to run with a running loop).
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from .browser import (
    IMG,
    RECONNECT_TIMEOUT_MS,
    SCREENSHOT,
    SCRIPT,
    assert_clean,
    assert_not_reloaded,
    expect,
    header_pairs,
    open_inspector,
    rows,
    send,
)
from .servers import raw_request

pytestmark = pytest.mark.django_db(transaction=True)


# --- tests ---------------------------------------------------------------------------------


def test_the_empty_list_shows_the_capture_url_in_its_example(server, page):
    token = open_inspector(page, server.base)
    example = page.locator("#capture-list li.empty pre").inner_text()
    assert "curl -X POST -H 'Content-Type: application/json'" in example
    assert f"{server.base}/{token}" in example


def test_captures_arrive_live_newest_first_and_open_in_the_detail_panel(server, page):
    base = server.base
    token = open_inspector(page, base)
    expect(rows(page)).to_have_count(0)
    expect(page.locator("#capture-list li.empty")).to_be_visible()
    expect(page.locator("#detail .placeholder")).to_be_visible()

    payload = {"hello": "world", "items": [1, 2, {"nested": True}], "text": "é ✓"}
    json_body = json.dumps(payload).encode()
    binary = bytes(range(256))
    sent = [
        (
            "POST",
            "/json?x=1",
            {"content": json_body, "headers": {"content-type": "application/json"}},
        ),
        (
            "PUT",
            "/file.bin",
            {"content": binary, "headers": {"content-type": "application/octet-stream"}},
        ),
        ("GET", "/search?tag=a&tag=b&q=1", {}),
    ]
    for count, (method, path, kwargs) in enumerate(sent, 1):
        send(base, token, method, path, **kwargs)
        expect(rows(page)).to_have_count(count)
        expect(rows(page).first.locator(".method")).to_have_text(method)
    expect(rows(page).locator(".method")).to_have_text(["GET", "PUT", "POST"])
    expect(rows(page).locator(".path")).to_have_text(
        ["/search?tag=a&tag=b&q=1", "/file.bin", "/json?x=1"]
    )
    expect(page.locator("#capture-list li.empty")).to_be_hidden()
    assert_not_reloaded(page)

    # The JSON POST: request line, headers, body pretty-printed; the URL is the capture's.
    post = rows(page).nth(2)
    post_id = post.get_attribute("data-id")
    post.click()
    expect(page).to_have_url(f"{base}/bins/{token}/captures/{post_id}/")
    detail = page.locator("#detail .capture-detail")
    expect(detail).to_have_attribute("data-id", post_id)
    expect(detail.locator(".request-line .method")).to_have_text("POST")
    expect(detail.locator(".request-line .path")).to_have_text("/json?x=1")
    body = detail.locator("pre.body-json")
    expect(body).to_be_visible()
    assert body.text_content() == json.dumps(payload, indent=2, ensure_ascii=False)
    headers = header_pairs(page)
    assert ("content-type", "application/json") in headers
    assert ("host", f"127.0.0.1:{server.port}") in headers
    assert ("content-length", str(len(json_body))) in headers
    expect(post).to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator("#capture-list li.selected")).to_have_count(1)
    assert_not_reloaded(page)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # The GET with repeated query keys: every value kept, in order; the selection moves.
    get = rows(page).nth(0)
    get.click()
    expect(page).to_have_url(f"{base}/bins/{token}/captures/{get.get_attribute('data-id')}/")
    expect(detail.locator(".request-line")).to_contain_text("GET")
    query = page.locator("#detail summary:has(h3:has-text('Query parameters')) + table.kv tr")
    expect(query.locator("th")).to_have_text(["tag", "tag", "q"])
    expect(query.locator("td")).to_have_text(["a", "b", "1"])
    expect(get).to_have_class(re.compile(r"\bselected\b"))
    expect(post).not_to_have_class(re.compile(r"\bselected\b"))

    # The binary PUT: a hex dump.
    rows(page).nth(1).click()
    expect(detail.locator("pre.hex")).to_contain_text(
        "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................"
    )
    assert_not_reloaded(page)

    # A capture that arrives while one is open goes on top; the open one stays marked.
    send(base, token, "DELETE", "/later")
    expect(rows(page)).to_have_count(4)
    expect(rows(page).first.locator(".path")).to_have_text("/later")
    expect(rows(page).nth(2)).to_have_class(re.compile(r"\bselected\b"))

    # The pushed URL is a link a person can share: it opens the page with that capture.
    page.goto(f"{base}/bins/{token}/captures/{post_id}/")
    expect(page.locator("#detail .capture-detail")).to_have_attribute("data-id", post_id)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "open")
    expect(page.locator(f"#capture-{post_id}")).to_have_class(re.compile(r"\bselected\b"))
    expect(rows(page)).to_have_count(4)
    # And `/` takes this browser back to its bin.
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/bins/{token}/")
    expect(rows(page)).to_have_count(4)
    assert_clean(page)


def assert_no_markup_from_captures(page) -> None:
    for where in ("#capture-list", "#detail"):
        assert page.locator(f"{where} img, {where} script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_hostile_capture_is_shown_as_text_and_the_page_obeys_its_csp(server, page):
    base = server.base
    token = open_inspector(page, base)
    csp = page.evaluate("fetch(location.href).then(r => r.headers.get('content-security-policy'))")
    assert "script-src 'nonce-" in csp and "unsafe-inline" not in csp

    # Percent-encoded in the path (decoded for display), raw in a header and the body.
    hostile = IMG + SCRIPT
    send(
        base,
        token,
        "POST",
        "/" + quote(hostile, safe="") + "?q=" + quote(SCRIPT, safe=""),
        headers={"content-type": "text/html", "x-evil": hostile},
        content=hostile.encode(),
    )
    expect(rows(page)).to_have_count(1)
    # Raw, unencoded in the request target, so the list shows it as it is; a JSON body too.
    raw_path = "/<img/src=x/onerror=window.__pwned=1>?<script>window.__pwned=1</script>"
    body = json.dumps({"html": hostile}).encode()
    answer = raw_request(
        server.port,
        f"POST /{token}{raw_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer
    expect(rows(page)).to_have_count(2)
    expect(rows(page).first.locator(".path")).to_have_text(raw_path)
    expect(rows(page).first.locator(".path")).to_be_visible()
    # The list decodes the path as the open capture does (as text: no markup gets in).
    expect(rows(page).nth(1).locator(".path")).to_have_text(
        "/" + hostile + "?q=" + quote(SCRIPT, safe="")
    )
    assert_no_markup_from_captures(page)

    rows(page).nth(1).click()
    detail = page.locator("#detail .capture-detail")
    expect(detail.locator(".request-line .path")).to_have_text(
        "/" + hostile + "?q=" + quote(SCRIPT, safe="")
    )
    expect(
        page.locator("#detail summary:has(h3:has-text('Query parameters')) + table.kv td")
    ).to_have_text(SCRIPT)
    assert ("x-evil", hostile) in header_pairs(page)
    expect(detail.locator("pre.body-text")).to_have_text(hostile)
    expect(detail.locator("pre.body-text")).to_be_visible()
    assert_no_markup_from_captures(page)

    rows(page).first.click()
    expect(detail.locator(".request-line .path")).to_have_text(raw_path)
    expect(detail.locator("pre.body-json")).to_contain_text(json.dumps(hostile))

    # The same capture rendered by the server as a whole page (a shared link).
    page.goto(page.url)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "open")
    expect(page.locator("#detail .request-line .path")).to_have_text(raw_path)
    expect(rows(page).first.locator(".path")).to_have_text(raw_path)

    assert_no_markup_from_captures(page)
    assert_clean(page)

    # The control: markup that did get in would be stopped by the CSP, and would be reported.
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate(f"document.body.insertAdjacentHTML('beforeend', {json.dumps(IMG)})")
    page.wait_for_function("window.__csp.length > 0")
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_a_lost_connection_catches_up_from_the_database(servers, page):
    a = servers()
    b = servers()
    token = open_inspector(page, a.base)
    send(a.base, token, "POST", "/before")
    expect(rows(page)).to_have_count(1)

    a.stop()
    live = page.locator("#live-status")
    expect(live).to_have_attribute("data-state", "closed")
    expect(live).to_have_text("reconnecting…")
    send(b.base, token, "POST", "/while-away/1")
    send(b.base, token, "PUT", "/while-away/2")
    a = servers(port=a.port)

    expect(live).to_have_attribute("data-state", "open", timeout=RECONNECT_TIMEOUT_MS)
    expect(rows(page).locator(".path")).to_have_text(
        ["/while-away/2", "/while-away/1", "/before"], timeout=RECONNECT_TIMEOUT_MS
    )
    expect(rows(page).locator(".method")).to_have_text(["PUT", "POST", "POST"])
    assert_not_reloaded(page)

    # And it is live again on the new connection.
    send(a.base, token, "PATCH", "/after")
    expect(rows(page).first.locator(".path")).to_have_text("/after")
    expect(rows(page)).to_have_count(4)
    assert_not_reloaded(page)
    assert_clean(page)
