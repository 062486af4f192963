"""The inspector page as a person uses it, in real Chromium against real server processes:
the phone layout, Clear's confirmation, reconnecting, local times, decoded paths, search and
filters, deletions in every tab, the Bins menu, the keyboard, the counts, dark mode.

Each browser lives inside its test (see test_browser.py's docstring), so anything stored
through the ORM is stored before it opens.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import socket
import threading
import time
from datetime import UTC, datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest

from bins.models import Bin, Capture

from .browser import (
    assert_clean,
    assert_not_reloaded,
    expect,
    open_browser,
    open_inspector,
    rows,
    send,
)

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 850}


def box(locator) -> dict[str, float]:
    b = locator.bounding_box()
    assert b is not None, locator
    return b


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def send_many(base: str, token: str, n: int, path: str = "/hook", **kwargs) -> None:
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            r = client.post(f"{base}/{token}{path}", content=f"{i}".encode(), **kwargs)
            assert r.status_code == 200


# --- the phone ------------------------------------------------------------------------------


def test_on_a_phone_the_capture_url_is_readable_and_a_capture_opens_on_its_own(server):
    with open_browser(viewport=PHONE) as page:
        token = open_inspector(page, server.base)
        url, copy = page.locator("#capture-url"), page.get_by_role("button", name="Copy")
        # Readable: most of the width, the whole token in view at a phone's font size.
        assert box(url)["width"] >= 0.6 * PHONE["width"]
        # Copy sits beside the field, on its row, and overlaps nothing else in the top bar.
        assert abs(box(copy)["y"] - box(url)["y"]) < box(url)["height"]
        assert box(copy)["x"] >= box(url)["x"] + box(url)["width"]
        for other in ("#bins-menu > summary", "#bin-title", ".brand"):
            assert not overlap(box(copy), box(page.locator(other))), other
            assert not overlap(box(url), box(page.locator(other))), other
        assert box(copy)["x"] + box(copy)["width"] <= PHONE["width"]

        send(server.base, token, "POST", "/first", content=b"{}")
        send(server.base, token, "POST", "/second", content=b"{}")
        expect(rows(page)).to_have_count(2)
        back = page.get_by_role("link", name="Back to the list")
        expect(back).to_be_hidden()
        # No capture open: the list fills the screen; no "pick one on the left" below it.
        expect(page.locator("#detail")).to_be_hidden()

        rows(page).nth(1).locator("a").click()
        expect(page.locator("#detail .capture-detail")).to_be_visible()
        expect(page.locator("#capture-list")).to_be_hidden()
        expect(back).to_be_visible()
        assert (
            box(page.locator("#detail .request-line"))["y"]
            >= box(back)["y"] + box(back)["height"] - 1
        )
        back.click()
        expect(page.locator("#capture-list")).to_be_visible()
        expect(back).to_be_hidden()
        expect(page).to_have_url(f"{server.base}/bins/{token}/")
        # Back where the person was: the capture they had open has the focus.
        expect(rows(page).nth(1).locator("a")).to_be_focused()
        assert_not_reloaded(page)
        assert_clean(page)


def test_on_a_desktop_the_list_and_the_open_capture_stand_side_by_side(server):
    with open_browser(viewport=DESKTOP) as page:
        token = open_inspector(page, server.base)
        send(server.base, token, "GET", "/one")
        rows(page).first.locator("a").click()
        expect(page.locator("#detail .capture-detail")).to_be_visible()
        expect(page.locator("#capture-list")).to_be_visible()
        expect(page.get_by_role("link", name="Back to the list")).to_be_hidden()
        assert box(page.locator("#detail"))["x"] >= box(page.locator("aside.list"))["width"] - 1
        # The top bar on one row: the bin's name, the capture URL with Copy, the Bins menu.
        bar = [box(page.locator(s)) for s in ("#bin-title", "#capture-url", "#bins-menu")]
        assert max(b["y"] for b in bar) - min(b["y"] for b in bar) < 20
        assert_clean(page)


# --- Clear ----------------------------------------------------------------------------------


def test_clear_asks_in_the_page_first_and_cancel_keeps_everything(server):
    with open_browser(viewport=DESKTOP) as page:
        native: list[str] = []
        page.on("dialog", lambda d: (native.append(d.message), d.dismiss()))
        token = open_inspector(page, server.base)
        send_many(server.base, token, 3)
        expect(rows(page)).to_have_count(3)

        page.get_by_role("button", name="Clear").click()
        dialog = page.get_by_role("dialog", name="Delete all 3 requests in this bin?")
        expect(dialog).to_be_visible()
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        page.wait_for_timeout(300)
        expect(rows(page)).to_have_count(3)
        assert len(httpx.get(f"{server.base}/api/bins/{token}/captures").json()["captures"]) == 3

        page.get_by_role("button", name="Clear").click()
        expect(dialog).to_be_visible()
        dialog.get_by_role("button", name="Delete all").click()
        expect(dialog).to_be_hidden()
        expect(rows(page)).to_have_count(0)
        expect(page.locator("#capture-list li.empty")).to_be_visible()
        assert httpx.get(f"{server.base}/api/bins/{token}/captures").json()["captures"] == []
        assert native == []  # never window.confirm
        assert_not_reloaded(page)
        assert_clean(page)


# --- reconnecting ---------------------------------------------------------------------------

RECORD_SOCKETS = (
    "window.__ws = [];"
    "['htmx:wsConnecting', 'htmx:wsOpen', 'htmx:wsClose'].forEach(function (name) {"
    "  document.addEventListener(name, function (e) {"
    "    var ev = e.detail && e.detail.event;"
    "    window.__ws.push([name, Date.now(), ev && ev.code]); }); });"
)


def test_after_an_outage_the_page_reconnects_within_seconds_and_says_so(servers):
    a = servers()
    b = servers()
    with open_browser(viewport=DESKTOP) as page:
        page.add_init_script(RECORD_SOCKETS)
        token = open_inspector(page, a.base)
        live = page.locator("#live-status")
        # The state is announced: a status region, apart from the open capture.
        expect(live).to_have_attribute("role", "status")
        assert page.locator("#detail").get_attribute("aria-live") is None
        retry = page.get_by_role("button", name="Retry now")
        expect(retry).to_be_hidden()

        a.stop()
        expect(live).to_have_text("reconnecting…")
        expect(retry).to_be_visible()
        page.wait_for_timeout(20_000)  # full-jitter backoff would be at 16-32 s by now
        send(b.base, token, "POST", "/while-away")
        a = servers(port=a.port)
        back = time.monotonic()
        send(a.base, token, "PUT", "/after")
        expect(rows(page).locator(".path")).to_have_text(["/after", "/while-away"], timeout=7000)
        assert time.monotonic() - back < 7
        expect(live).to_have_text("live")
        expect(retry).to_be_hidden()

        events = page.evaluate("window.__ws")
        lost = next(at for name, at, _ in events if name == "htmx:wsClose")
        attempts = [lost] + [
            at for name, at, _ in events if name == "htmx:wsConnecting" and at > lost
        ]
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        assert len(attempts) >= 6 and max(gaps) <= 5500, gaps
        assert not [m for m in page.watch.console if "[object Event]" in m], page.watch.console
        assert_not_reloaded(page)
        assert_clean(page)


def test_retry_now_reconnects_at_once(server):
    proxy = Proxy(server.port)
    try:
        with open_browser(viewport=DESKTOP) as page:
            page.add_init_script(RECORD_SOCKETS)
            token = open_inspector(page, proxy.base)
            proxy.cut()  # the network is gone: every attempt fails at once
            live = page.locator("#live-status")
            expect(live).to_have_text("reconnecting…")
            page.wait_for_timeout(8000)  # the waits between attempts are 2.5-5 s now
            # Just after a failed attempt, so that the click, not the timer, reconnects.
            page.wait_for_function(
                "() => { var last = window.__ws[window.__ws.length - 1];"
                " return last[0] === 'htmx:wsClose' && Date.now() - last[1] < 300; }"
            )
            proxy.restore()
            clicked = page.evaluate("Date.now()")
            page.get_by_role("button", name="Retry now").click()
            expect(live).to_have_text("live")
            opened = page.evaluate(
                "window.__ws.filter(e => e[0] === 'htmx:wsOpen').map(e => e[1]).pop()"
            )
            assert opened - clicked < 1000
            send(server.base, token, "POST", "/after-retry")
            expect(rows(page).first.locator(".path")).to_have_text("/after-retry")
            assert not [m for m in page.watch.console if "[object Event]" in m]
            assert_not_reloaded(page)
            assert_clean(page)
    finally:
        proxy.close()


class Proxy:
    """A TCP proxy between the browser and a real server. `pause()` stops reading from the
    server (with a small receive window), so the server sees a client too slow to read;
    `cut()` drops every connection and refuses new ones until `restore()`."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.refusing = False
        self.small_windows = True  # until the first resume()
        self.sockets: list[socket.socket] = []
        self.upstreams: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.small_windows = False
        for upstream in self.upstreams:
            try:
                upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            except OSError:
                pass
        self.flowing.set()

    def cut(self) -> None:
        self.refusing = True
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self) -> None:
        self.refusing = False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            upstream = socket.socket()
            if self.small_windows:
                upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            upstream.connect(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            self.upstreams.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pausable: bool) -> None:
        try:
            while True:
                if pausable:
                    self.flowing.wait()
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


def test_a_stream_closed_with_4000_reconnects_at_once_and_misses_nothing(servers):
    # The server closes a stream whose client falls behind with 4000 ("reconnect and catch
    # up"): htmx's extension would stay closed; the page reconnects at once.
    server = servers(WS_BUFFER_BYTES=str(512 * 1024))
    proxy = Proxy(server.port)
    try:
        with open_browser(viewport=DESKTOP) as page:
            page.add_init_script(RECORD_SOCKETS)
            token = open_inspector(page, proxy.base)
            page.wait_for_timeout(2500)  # a connection that has been up a while
            proxy.pause()
            send_many(server.base, token, 300, path="/" + "x" * 1000)
            # Each new secret re-checks the stored captures, and the page gets its list again:
            # megabytes the paused client cannot take.
            for i in range(8):
                signature = {"scheme": "github", "secret": f"secret-{i}"}
                r = httpx.patch(f"{server.base}/api/bins/{token}", json={"signature": signature})
                assert r.status_code == 200, r.text
                time.sleep(0.3)
            proxy.resume()
            page.wait_for_function(
                "() => window.__ws.some(e => e[0] === 'htmx:wsClose')", timeout=15_000
            )
            expect(rows(page)).to_have_count(300, timeout=15_000)
            events = page.evaluate("window.__ws")
            closes = [(at, code) for name, at, code in events if name == "htmx:wsClose"]
            assert closes and closes[0][1] == 4000, events
            opens = [at for name, at, _ in events if name == "htmx:wsOpen" and at > closes[0][0]]
            assert opens and opens[0] - closes[0][0] < 1000, events
            expect(page.locator("#live-status")).to_have_text("live")
            ids = [int(i) for i in rows(page).evaluate_all("rs => rs.map(r => r.dataset.id)")]
            assert ids == list(range(300, 0, -1))
            assert_not_reloaded(page)
            assert_clean(page)
    finally:
        proxy.close()
    assert "closed with 4000" in server.log()


# --- times, ids, paths ----------------------------------------------------------------------


def test_times_are_the_viewers_own_with_the_zone_and_ids_are_the_bins_numbers(server):
    bin_ = Bin.objects.create()
    Capture.objects.create(
        bin=bin_,
        method="POST",
        path="/old",
        received_at=datetime(2024, 3, 5, 13, 3, 7, 123000, tzinfo=UTC),
    )
    other = Bin.objects.create()
    for _ in range(3):
        Capture.objects.create(bin=other, method="GET", path="/elsewhere")
    zone = ZoneInfo("America/New_York")
    with open_browser(viewport=DESKTOP, locale="en-GB", timezone_id="America/New_York") as page:
        page.goto(f"{server.base}/bins/{bin_.token}/")
        old = rows(page).first
        expect(old.locator("time")).to_have_text("5 Mar, 08:03:07.123 GMT-5")
        expect(old.locator("time")).to_have_attribute(
            "title", re.compile(r"Tuesday, 5 March 2024 at 08:03:07\.123 Eastern Standard Time")
        )
        expect(old.locator(".meta")).to_contain_text("#1 ·")  # the bin's first, not a global id

        # A live row: today's time only, still with the zone.
        expect(page.locator("#live-status")).to_have_text("live")
        send(server.base, str(bin_.token), "PUT", "/new")
        expect(rows(page)).to_have_count(2)
        new = rows(page).first
        expect(new.locator(".meta")).to_contain_text("#2 ·")
        listed = httpx.get(f"{server.base}/api/bins/{bin_.token}/captures").json()["captures"]
        at = datetime.fromisoformat(listed[0]["received_at"].replace("Z", "+00:00"))
        local = at.astimezone(zone)
        offset = int(local.utcoffset().total_seconds() // 3600)
        expect(new.locator("time")).to_have_text(
            f"{local:%H:%M:%S}.{local.microsecond // 1000:03d} GMT{offset:+d}"
        )
        # The open capture's times (swapped in by htmx) too.
        page.locator("#capture-1 a").click()
        detail_time = page.locator("#detail .capture-detail time[datetime]").first
        expect(detail_time).to_contain_text("5 Mar, 08:03:07.123 GMT-5")
        assert_clean(page)


def test_the_list_shows_paths_decoded_as_the_detail_does_and_long_ones_whole_in_a_tooltip(server):
    with open_browser(viewport=DESKTOP) as page:
        token = open_inspector(page, server.base)
        send(server.base, token, "POST", "/caf%C3%A9/a%20b?x=%20y")
        row = rows(page).first
        expect(row.locator(".path")).to_have_text("/café/a b?x=%20y")
        row.locator("a").click()
        expect(page.locator("#detail .request-line .path")).to_have_text("/café/a b?x=%20y")

        long_path = "/" + "/".join(f"segment-{i:03d}" for i in range(60))
        send(server.base, token, "GET", long_path)
        path = rows(page).first.locator(".path")
        expect(path).to_have_attribute("title", long_path)
        assert path.evaluate("el => el.scrollWidth > el.clientWidth")  # cut, with an ellipsis
        assert path.evaluate("el => getComputedStyle(el).textOverflow") == "ellipsis"
        assert_clean(page)


# --- search and filters ---------------------------------------------------------------------


def test_search_and_filters_narrow_the_list_live_and_stay_in_the_url(server):
    base = server.base
    with open_browser(viewport=DESKTOP) as page:
        token = open_inspector(page, base)
        send(base, token, "POST", "/orders", content=b'{"item": "needle-in-body"}')
        send(base, token, "GET", "/health")
        send(base, token, "PUT", "/other", headers={"x-note": "needle-in-header"})
        send(base, token, "POST", "/plain", content=b"nothing here")
        expect(rows(page)).to_have_count(4)

        search = page.get_by_role("searchbox", name="Search")
        search.fill("needle")
        expect(rows(page).locator(".path")).to_have_text(["/other", "/orders"])
        expect(page).to_have_url(f"{base}/bins/{token}/?q=needle")
        # Live: a match arrives and shows; one that does not match stays out.
        send(base, token, "DELETE", "/needle-in-path")
        send(base, token, "POST", "/no-match")
        expect(rows(page).locator(".path")).to_have_text(["/needle-in-path", "/other", "/orders"])
        page.wait_for_timeout(500)
        expect(rows(page)).to_have_count(3)
        # The counts still count every capture of the bin.
        expect(page.locator("#capture-counts")).to_have_text("6 kept · 6 received")

        page.get_by_label("Method").select_option("POST")
        expect(rows(page).locator(".path")).to_have_text(["/orders"])
        expect(page).to_have_url(f"{base}/bins/{token}/?q=needle&method=POST")
        # A reload keeps the filters, in the fields and in the list.
        page.reload()
        expect(page.get_by_role("searchbox", name="Search")).to_have_value("needle")
        expect(page.get_by_label("Method")).to_have_value("POST")
        expect(rows(page).locator(".path")).to_have_text(["/orders"])
        expect(page.locator("#live-status")).to_have_text("live")
        send(base, token, "POST", "/needle-again")
        expect(rows(page).locator(".path")).to_have_text(["/needle-again", "/orders"])

        page.get_by_role("searchbox", name="Search").fill("no such text")
        empty = page.locator("#capture-list li.empty")
        expect(empty).to_contain_text("No requests match")
        empty.get_by_role("link", name="Clear filters").click()
        expect(rows(page)).to_have_count(7)
        expect(page).to_have_url(f"{base}/bins/{token}/")
        expect(page.get_by_label("Method")).to_have_value("")
        assert_clean(page)


def stripe_signed(secret: str, body: bytes) -> dict[str, str]:
    at = int(time.time())
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return {"stripe-signature": f"t={at},v1={mac}", "content-type": "application/json"}


def test_provider_and_signature_filters(server):
    base = server.base
    token = httpx.post(f"{base}/api/bins").json()["token"]
    secret = "whsec_test"
    r = httpx.patch(
        f"{base}/api/bins/{token}", json={"signature": {"scheme": "stripe", "secret": secret}}
    )
    assert r.status_code == 200, r.text
    body = b'{"type": "invoice.paid", "id": "evt_1"}'
    send(base, token, "POST", "/stripe-bad", headers=stripe_signed("wrong", body), content=body)
    send(base, token, "POST", "/stripe-good", headers=stripe_signed(secret, body), content=body)
    send(base, token, "POST", "/github", headers={"x-github-event": "push"}, content=b"{}")
    with open_browser(viewport=DESKTOP) as page:
        page.goto(f"{base}/bins/{token}/?provider=github")
        expect(rows(page).locator(".path")).to_have_text(["/github"])
        expect(page.get_by_label("Provider")).to_have_value("github")
        page.get_by_label("Provider").select_option("stripe")
        expect(rows(page).locator(".path")).to_have_text(["/stripe-good", "/stripe-bad"])
        page.get_by_label("Signature verdict").select_option("true")
        expect(rows(page).locator(".path")).to_have_text(["/stripe-good"])
        expect(page).to_have_url(f"{base}/bins/{token}/?provider=stripe&valid=true")
        page.get_by_label("Provider").select_option("")
        page.get_by_label("Signature verdict").select_option("false")
        expect(rows(page).locator(".path")).to_have_text(["/github", "/stripe-bad"])
        page.get_by_label("Method").select_option("DELETE")
        expect(page.locator("#capture-list li.empty")).to_contain_text("No requests match")
        assert_clean(page)


# --- deletions in every tab -----------------------------------------------------------------


def test_a_deleted_capture_leaves_the_list_in_every_open_tab(server):
    with open_browser(viewport=DESKTOP) as page:
        token = open_inspector(page, server.base)
        other = page.context.new_page()
        other.goto(page.url)
        expect(other.locator("#live-status")).to_have_text("live")
        send_many(server.base, token, 3)
        for tab in (page, other):
            expect(rows(tab)).to_have_count(3)
        r = httpx.delete(f"{server.base}/api/bins/{token}/captures/2")
        assert r.status_code in (200, 204), r.text
        for tab in (page, other):
            expect(rows(tab)).to_have_count(2)
            expect(tab.locator("#capture-2")).to_have_count(0)
            expect(tab.locator("#capture-counts")).to_have_text("2 kept · 3 received")
        assert_not_reloaded(page)
        assert_clean(page)


# --- the Bins menu --------------------------------------------------------------------------


def test_the_bins_menu_lists_this_browsers_bins_renames_and_exports(server):
    base = server.base
    with open_browser(viewport=DESKTOP) as page:
        first = open_inspector(page, base)
        title = page.locator("h1")
        expect(title).to_have_text(f"Bin {first[:8]}")
        menu = page.locator("#bins-menu")
        menu.get_by_text("Bins", exact=True).click()
        expect(menu.get_by_role("link", name="Export HAR")).to_have_attribute(
            "href", f"/api/bins/{first}/export.har"
        )
        expect(menu.get_by_role("link", name="Export JSON lines")).to_have_attribute(
            "href", f"/api/bins/{first}/export.jsonl"
        )
        name = menu.get_by_label("Name of this bin")
        name.fill("Stripe <staging>")
        menu.get_by_role("button", name="Rename").click()
        expect(title).to_have_text("Stripe <staging>")
        expect(page).to_have_title("Stripe <staging> · Webhook Inspector")
        assert httpx.get(f"{base}/api/bins/{first}").json()["name"] == "Stripe <staging>"
        assert_not_reloaded(page)

        menu.get_by_role("button", name="New bin").click()
        page.wait_for_url(re.compile(r"/bins/(?!" + first + ")[0-9a-f-]{36}/$"))
        second = page.url.rstrip("/").rsplit("/", 1)[1]
        expect(page.locator("#live-status")).to_have_text("live")
        page.locator("#bins-menu summary").click()
        listed = page.locator("#bin-history li")
        expect(listed).to_have_count(2)
        expect(listed.nth(0)).to_have_attribute("aria-current", "page")
        expect(listed.nth(0)).to_contain_text(second[:8])
        expect(listed.nth(1)).to_contain_text("Stripe <staging>")
        expect(listed.nth(1)).to_contain_text(first[:8])
        assert page.locator("#bin-history img, #bin-history staging").count() == 0
        # Kept in this browser only: the server was never told which bins it opened.
        stored = json.loads(page.evaluate("localStorage.getItem('inspector.bins')"))
        assert [b["token"] for b in stored] == [second, first]
        listed.nth(1).get_by_role("link").click()
        expect(page).to_have_url(f"{base}/bins/{first}/")
        expect(page.locator("h1")).to_have_text("Stripe <staging>")
        assert_clean(page)


def test_a_name_saved_in_the_settings_shows_in_the_title(server):
    with open_browser(viewport=DESKTOP) as page:
        token = open_inspector(page, server.base)
        page.get_by_role("link", name="Settings").click()
        dialog = page.locator("#settings")
        dialog.locator("#f-name").fill("From settings")
        dialog.get_by_role("button", name=re.compile("^Save")).click()
        expect(page.locator("h1")).to_have_text("From settings")
        assert httpx.get(f"{server.base}/api/bins/{token}").json()["name"] == "From settings"
        assert_clean(page)


# --- keyboard -------------------------------------------------------------------------------


def test_the_keyboard_moves_through_the_list_and_finds_the_search(server):
    base = server.base
    with open_browser(viewport=DESKTOP) as page:
        token = open_inspector(page, base)
        send_many(base, token, 3)
        expect(rows(page)).to_have_count(3)
        detail = page.locator("#detail .capture-detail")
        page.keyboard.press("j")
        expect(detail).to_have_attribute("data-id", "3")
        expect(page).to_have_url(f"{base}/bins/{token}/captures/3/")
        page.keyboard.press("j")
        expect(detail).to_have_attribute("data-id", "2")
        page.keyboard.press("j")
        expect(detail).to_have_attribute("data-id", "1")
        page.keyboard.press("j")  # the last: stays
        page.keyboard.press("k")
        expect(detail).to_have_attribute("data-id", "2")
        expect(page.locator("#capture-2")).to_have_class(re.compile(r"\bselected\b"))
        focused = page.locator("#capture-2 a")
        expect(focused).to_be_focused()
        # A visible focus ring on the row that has the focus.
        assert focused.evaluate("el => getComputedStyle(el).outlineStyle") != "none"
        # Arrows while the list has the focus.
        page.keyboard.press("ArrowDown")
        expect(detail).to_have_attribute("data-id", "1")
        page.keyboard.press("ArrowUp")
        page.keyboard.press("ArrowUp")
        expect(detail).to_have_attribute("data-id", "3")

        page.keyboard.press("/")
        search = page.get_by_role("searchbox", name="Search")
        expect(search).to_be_focused()
        page.keyboard.type("jk")  # typed, not taken as moves
        expect(search).to_have_value("jk")
        expect(detail).to_have_attribute("data-id", "3")
        page.keyboard.press("Escape")
        expect(search).not_to_be_focused()
        expect(search).to_have_value("jk")  # left, not cleared

        summary = page.locator("#bins-menu summary")
        summary.click()
        expect(page.locator("#bins-menu .menu-panel")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#bins-menu .menu-panel")).to_be_hidden()
        expect(summary).to_be_focused()
        assert_clean(page)


# --- counts ---------------------------------------------------------------------------------


def test_the_counts_of_captures_kept_and_received_follow_the_pruning_live(servers):
    server = servers(CAPTURES_PER_BIN="5")
    with open_browser(viewport=DESKTOP) as page:
        token = open_inspector(page, server.base)
        counts = page.locator("#capture-counts")
        expect(counts).to_have_text("0 kept · 0 received")
        send_many(server.base, token, 3)
        expect(counts).to_have_text("3 kept · 3 received")
        send_many(server.base, token, 5)
        expect(counts).to_have_text("5 kept · 8 received")
        expect(counts).to_have_attribute("title", re.compile(r"^3 pruned"))
        expect(rows(page)).to_have_count(5)
        page.reload()
        expect(counts).to_have_text("5 kept · 8 received")
        assert_clean(page)


# --- dark mode ------------------------------------------------------------------------------


def luminance(rgb: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", rgb)[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_dark_mode_follows_the_system(server):
    with open_browser(viewport=DESKTOP, color_scheme="dark") as page:
        token = open_inspector(page, server.base)
        send(server.base, token, "POST", "/dark", content=b'{"a": 1}')
        rows(page).first.locator("a").click()
        expect(page.locator("#detail .capture-detail")).to_be_visible()
        for selector in ("body", "aside.list", "#detail"):
            background = page.locator(selector).evaluate(
                "el => { for (; el; el = el.parentElement) { var c ="
                " getComputedStyle(el).backgroundColor;"
                " if (c !== 'rgba(0, 0, 0, 0)') return c; } return 'rgb(255, 255, 255)'; }"
            )
            assert luminance(background) < 0.05, (selector, background)
        ink = page.locator(".request-line .path").evaluate("el => getComputedStyle(el).color")
        assert luminance(ink) > 0.5
        page.emulate_media(color_scheme="light")
        body = page.locator("body").evaluate("el => getComputedStyle(el).backgroundColor")
        assert luminance(body) > 0.8
        assert_clean(page)


def test_a_page_without_script_filters_and_asks_before_clearing(server):
    base = server.base
    token = httpx.post(f"{base}/api/bins").json()["token"]
    send(base, token, "POST", "/alpha-one")
    send(base, token, "GET", "/other")
    with open_browser(viewport=DESKTOP, java_script_enabled=False) as page:
        page.goto(f"{base}/bins/{token}/")
        page.get_by_role("searchbox", name="Search").fill("alpha")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(rf"/bins/{token}/\?q=alpha(&|$)"))
        expect(rows(page).locator(".path")).to_have_text(["/alpha-one"])
        # Times without script: UTC, and said so.
        expect(rows(page).first.locator("time")).to_contain_text("UTC")
        page.get_by_role("button", name="Clear").click()
        expect(page.locator("h1")).to_have_text("Delete all 2 requests in this bin?")
        page.get_by_role("link", name="Cancel").click()
        expect(rows(page)).to_have_count(2)
        page.get_by_role("button", name="Clear").click()
        page.get_by_role("button", name="Delete all").click()
        expect(page).to_have_url(f"{base}/bins/{token}/")
        expect(rows(page)).to_have_count(0)


def test_the_search_is_sent_to_the_stream_encoded(server):
    base = server.base
    with open_browser(viewport=DESKTOP) as page:
        token = open_inspector(page, base)
        send(base, token, "POST", "/a", content="naïve & co".encode())
        send(base, token, "POST", "/b", content=b"plain")
        page.get_by_role("searchbox", name="Search").fill("naïve & co")
        expect(rows(page).locator(".path")).to_have_text(["/a"])
        expect(page).to_have_url(
            f"{base}/bins/{token}/?q={quote('naïve & co', safe='')}".replace("%20", "+")
        )
        assert_clean(page)


# --- the page's own URLs, without a browser -------------------------------------------------


def test_odd_filters_in_the_page_url_are_left_out_not_an_error(client, bin_):
    Capture.objects.create(bin=bin_, method="POST", path="/x")
    for query in ("?valid=maybe", "?q=%00", "?method=%00&q=", "?provider=" + "p" * 500):
        r = client.get(f"/bins/{bin_.token}/{query}")
        assert r.status_code == 200, query
    html = client.get(f"/bins/{bin_.token}/?valid=maybe").content.decode()
    assert f'ws-connect="/ws/bins/{bin_.token}/"' in html  # nothing usable: no filter
    html = client.get(f"/bins/{bin_.token}/?method=PURGE&q=a%20b").content.decode()
    assert f'ws-connect="/ws/bins/{bin_.token}/?q=a+b&amp;method=PURGE"' in html
    assert '<option value="PURGE" selected>PURGE</option>' in html


def test_rename_without_script_and_its_limits(client, bin_):
    r = client.post(f"/bins/{bin_.token}/name/", {"name": "  Orders  "})
    assert r.status_code == 302 and r["Location"] == f"/bins/{bin_.token}/"
    bin_.refresh_from_db()
    assert bin_.name == "Orders"
    r = client.post(f"/bins/{bin_.token}/name/", {"name": "bad\x07name"})
    assert r.status_code == 400 and "Not renamed" in r.content.decode()
    r = client.post(
        f"/bins/{bin_.token}/name/", {"name": "x" * 101}, headers={"HX-Request": "true"}
    )
    assert r.status_code == 400 and 'id="rename-error"' in r.content.decode()
    bin_.refresh_from_db()
    assert bin_.name == "Orders"
    r = client.post(f"/bins/{bin_.token}/name/", {"name": ""}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and f"Bin {str(bin_.token)[:8]}</h1>" in r.content.decode()
    assert client.get(f"/bins/{bin_.token}/name/").status_code == 405


def test_opening_captures_keeps_no_copy_of_the_page_and_back_still_works(server):
    # htmx's history snapshots copied the whole page (500 rows, the open body) into
    # sessionStorage on every click: tens of milliseconds each, and captured data kept there.
    with open_browser(viewport=DESKTOP) as page:
        token = open_inspector(page, server.base)
        send(server.base, token, "POST", "/first", content=b"secret-one")
        send(server.base, token, "POST", "/second", content=b"secret-two")
        expect(rows(page)).to_have_count(2)
        detail = page.locator("#detail .capture-detail")
        page.locator("#capture-1 a").click()
        expect(detail).to_have_attribute("data-id", "1")
        page.locator("#capture-2 a").click()
        expect(detail).to_have_attribute("data-id", "2")
        stored = page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
        assert "secret-one" not in stored and "capture-list" not in stored, stored[:300]
        page.go_back()
        expect(page).to_have_url(f"{server.base}/bins/{token}/captures/1/")
        expect(page.locator("#detail .capture-detail")).to_have_attribute("data-id", "1")
        expect(page.locator("#live-status")).to_have_text("live")
        send(server.base, token, "PUT", "/third")
        expect(rows(page)).to_have_count(3)
        expect(page.locator("#capture-1")).to_have_class(re.compile(r"\bselected\b"))
        assert_clean(page)
