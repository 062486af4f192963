"""Helpers of the browser tests: Chromium (Playwright) against real Daphne processes.

The fixtures (`servers`, `server`, `page`) are in conftest.py. Each server is started as
`make run` starts it and shares pytest-django's test database through DATABASE_URL. Chromium is
Debian's (/usr/bin/chromium, or $CHROMIUM); where it is missing the browser tests are skipped,
except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by require_browser()
    expect = sync_playwright = None

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))  # Debian's; CI installs it
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
# htmx's ws extension retries with full-jitter backoff (up to 1 s, 2 s, 4 s, 8 s, 16 s, ...):
# a few seconds as a rule, rarely more than 10 once the server is back.
RECONNECT_TIMEOUT_MS = 20_000

IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=1</script>"


# --- browser -------------------------------------------------------------------------------


def require_browser() -> None:
    """Skip without Chromium or Playwright, but fail in CI, which installs both."""
    missing = None
    if sync_playwright is None:
        missing = "the playwright package is missing (pip install -e '.[dev]')"
    elif not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests: {missing}")
    if missing:
        pytest.skip(missing)


@contextmanager
def open_browser(**context_options) -> Iterator:
    """A fresh browser (no cookies) with one page that records what it said (`page.watch`)."""
    require_browser()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context(
                **{"viewport": {"width": 1280, "height": 800}, **context_options}
            )
            page = context.new_page()
            page.set_default_timeout(10_000)
            page.watch = Watch(page)
            yield page
        finally:
            browser.close()


class Watch:
    """What the page said: console messages, uncaught errors and CSP violation events."""

    def __init__(self, page) -> None:
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        # Init scripts come from the browser's tooling, not from the page, so the CSP lets them run.
        # It also counts the websocket messages htmx has swapped in.
        page.add_init_script(
            "window.__csp = []; window.__wsMessages = 0;"
            "document.addEventListener('securitypolicyviolation', function (e) {"
            "  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI); });"
            "document.addEventListener('htmx:wsAfterMessage', function () {"
            "  window.__wsMessages += 1; });"
        )

    def csp_messages(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m]


def assert_clean(page) -> None:
    """No CSP violation (as event or console message) and no uncaught error on the page."""
    assert page.evaluate("window.__csp") == []
    assert page.watch.csp_messages() == [], page.watch.console
    assert page.watch.errors == []


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
    # On connect the server sends the list again (the catch-up): wait until it is swapped in.
    page.wait_for_function("window.__wsMessages > 0")
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
    table = page.locator("#detail summary:has(h3:has-text('Headers')) + table.kv tr")
    return [(row.locator("th").inner_text(), row.locator("td").inner_text()) for row in table.all()]


# --- accessibility -------------------------------------------------------------------------

AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"


def axe_problems(page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's audit of the page as it is now: the violations of these impacts, one line each.

    axe-core comes from npm (tests/package.json; `make test` runs `npm ci`). It is evaluated
    through the DevTools protocol, which the page's CSP does not govern, so the page is audited
    with its real CSP in force."""
    if not AXE.exists():
        message = f"{AXE} is missing (cd tests && npm ci)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the accessibility audit: {message}")
        pytest.skip(message)
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    results = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ({"
        "  id: v.id, impact: v.impact, help: v.help,"
        "  nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)})))"
    )
    return [
        f"{v['impact']} {v['id']} ({v['help']}): " + " | ".join(v["nodes"][:3])
        for v in results
        if v["impact"] in impacts
    ]
