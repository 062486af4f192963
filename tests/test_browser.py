"""The inspector page in a real browser: Chromium (Playwright) against real Daphne processes.

Each server is started as `make run` starts it and shares pytest-django's test database through
DATABASE_URL. Chromium is Debian's (/usr/bin/chromium); where it is missing these tests are
skipped, except in CI (CI=true), where they fail.

Playwright's sync API marks its event loop as running in this thread while the driver is up, so
the browser lives for one test only and is gone before the test database is flushed (Django's
ORM refuses to run with a running loop).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path("/tmp/browser-inspector.png")
TOKEN_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
# htmx's ws extension retries with full-jitter backoff (up to 1 s, 2 s, 4 s, 8 s, ...).
RECONNECT_TIMEOUT_MS = 15_000

IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=1</script>"


# --- servers -------------------------------------------------------------------------------


def database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daphne:
    """One server process on a fixed port, that can be stopped and started again."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir  # shared by every process: one SECRET_KEY for all
        self.base = f"http://127.0.0.1:{port}"
        self.log = data_dir / f"daphne-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daphne:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(self.data_dir),
            "PORT": str(self.port),
        }
        daphne = Path(sys.executable).parent / "daphne"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(str(daphne), "--bind", "127.0.0.1", "--port", str(self.port)),
                    *("--server-name", "", "inspector.asgi:application"),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"server on port {self.port} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def daphnes(transactional_db, tmp_path) -> Iterator[Callable[[], Daphne]]:
    """Starts server processes on the test database; all are stopped at the end."""
    started: list[Daphne] = []

    def start() -> Daphne:
        server = Daphne(free_port(), tmp_path)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(daphnes) -> Daphne:
    return daphnes()


# --- browser -------------------------------------------------------------------------------


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


class Watch:
    """What the page said: console messages, uncaught errors and CSP violation events."""

    def __init__(self, page) -> None:
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        # Init scripts come from the browser's tooling, not from the page, so the CSP lets them run.
        page.add_init_script(
            "window.__csp = [];"
            "document.addEventListener('securitypolicyviolation', function (e) {"
            "  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI); });"
        )

    def csp_messages(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m]


@pytest.fixture
def page(daphnes, transactional_db):
    """A fresh browser (no cookies) with one page; gone before the servers and the database."""
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(10_000)
            page.watch = Watch(page)
            yield page
        finally:
            browser.close()


def expect(*args, **kwargs):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kwargs)


# --- helpers -------------------------------------------------------------------------------


def open_inspector(page, base: str) -> str:
    """Open `/` as a person does; back comes the live inspector of a new bin: its token."""
    response = page.goto(f"{base}/")
    assert response is not None and response.ok
    expect(page).to_have_url(re.compile(rf"^{re.escape(base)}/bins/{TOKEN_RE}/$"))
    token = page.url.rstrip("/").rsplit("/", 1)[1]
    expect(page.locator("#capture-url")).to_have_value(f"{base}/{token}")
    live = page.locator("#live-status")
    expect(live).to_have_attribute("data-state", "open")
    expect(live).to_have_text("live")
    # A marker that a reload would wipe: everything after this must arrive without one.
    page.evaluate("window.__sameDocument = true")
    return token


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__sameDocument") is True


def send(base: str, token: str, method: str, path: str, **kwargs) -> None:
    r = httpx.request(method, f"{base}/{token}{path}", timeout=10, **kwargs)
    assert r.status_code == 200, (method, path, r.text)


def rows(page):
    return page.locator("#capture-list li.capture")


def header_pairs(page) -> list[tuple[str, str]]:
    table = page.locator("#detail h3:has-text('Headers') + table.kv tr")
    return [
        (row.locator("th").inner_text(), row.locator("td").inner_text())
        for row in table.all()
    ]


# --- tests ---------------------------------------------------------------------------------


def test_home_opens_a_live_inspector(server, page):
    token = open_inspector(page, server.base)
    expect(rows(page)).to_have_count(0)
    expect(page.locator("#capture-list li.empty")).to_be_visible()
    expect(page.locator("#detail .placeholder")).to_be_visible()
    # Back to `/`: the same bin again (the browser remembers it).
    page.goto(f"{server.base}/")
    expect(page).to_have_url(f"{server.base}/bins/{token}/")


def test_captures_arrive_live_and_open_in_the_detail_panel(server, page):
    base = server.base
    token = open_inspector(page, base)
    payload = {"hello": "world", "items": [1, 2, {"nested": True}], "text": "é ✓"}
    binary = bytes(range(256))
    sent = [
        ("POST", "/json?x=1", {"json": payload}),
        ("PUT", "/file.bin", {"content": binary, "headers": {"content-type": "application/octet-stream"}}),
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
    assert ("content-length", str(len(json.dumps(payload).encode()))) in headers
    expect(post).to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator("#capture-list li.selected")).to_have_count(1)
    assert_not_reloaded(page)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # The GET with repeated query keys: every value kept, in order; the selection moves.
    get = rows(page).nth(0)
    get.click()
    expect(page).to_have_url(f"{base}/bins/{token}/captures/{get.get_attribute('data-id')}/")
    expect(detail.locator(".request-line")).to_contain_text("GET")
    query = page.locator("#detail h3:has-text('Query parameters') + table.kv tr")
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
    assert page.watch.errors == []


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_hostile_capture_is_shown_as_text_and_the_page_obeys_its_csp(server, page):
    base = server.base
    token = open_inspector(page, base)
    csp = page.evaluate("fetch(location.href).then(r => r.headers.get('content-security-policy'))")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp

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
    expect(rows(page).nth(1).locator(".path")).to_contain_text("%3Cimg%20src%3Dx")

    rows(page).nth(1).click()
    detail = page.locator("#detail .capture-detail")
    expect(detail.locator(".request-line .path")).to_have_text(
        "/" + hostile + "?q=" + quote(SCRIPT, safe="")
    )
    expect(page.locator("#detail h3:has-text('Query parameters') + table.kv td")).to_have_text(
        SCRIPT
    )
    assert ("x-evil", hostile) in header_pairs(page)
    expect(detail.locator("pre.body-text")).to_have_text(hostile)

    rows(page).first.click()
    expect(detail.locator(".request-line .path")).to_have_text(raw_path)
    expect(detail.locator("pre.body-json")).to_contain_text(json.dumps(hostile))

    # The same capture rendered by the server as a whole page (a shared link).
    page.goto(page.url)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "open")
    expect(page.locator("#detail .request-line .path")).to_have_text(raw_path)
    expect(rows(page).first.locator(".path")).to_have_text(raw_path)

    for where in ("#capture-list", "#detail"):
        assert page.locator(f"{where} img, {where} script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("window.__csp") == []
    assert page.watch.csp_messages() == []
    assert page.watch.errors == []


def test_a_lost_connection_catches_up_from_the_database(daphnes, page):
    a = daphnes()
    b = daphnes()
    token = open_inspector(page, a.base)
    send(a.base, token, "POST", "/before")
    expect(rows(page)).to_have_count(1)

    a.stop()
    live = page.locator("#live-status")
    expect(live).to_have_attribute("data-state", "closed")
    expect(live).to_have_text("reconnecting…")
    send(b.base, token, "POST", "/while-away/1")
    send(b.base, token, "PUT", "/while-away/2")
    a.start()

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
    assert page.watch.errors == []
