"""axe-core's audit of the inspector page (tests/browser.py `axe_problems`): no serious or
critical violation on an empty bin, a full bin (500 captures) and an open capture, on a desktop
and a phone, in light and dark; and the structure a screen reader relies on."""

from __future__ import annotations

import httpx
import pytest

from .browser import assert_clean, axe_problems, expect, open_browser, open_inspector, rows

pytestmark = pytest.mark.django_db(transaction=True)

SIZES = {"desktop": {"width": 1366, "height": 850}, "phone": {"width": 390, "height": 844}}


def fill(base: str, token: str, n: int) -> None:
    """n captures of several kinds (methods, a JSON body, a form, a query, an odd path)."""
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            kind = i % 5
            if kind == 0:
                r = client.post(f"{base}/{token}/orders/{i}", json={"id": i, "ok": True})
            elif kind == 1:
                r = client.get(f"{base}/{token}/search?q=caf%C3%A9&page={i}")
            elif kind == 2:
                r = client.put(f"{base}/{token}/form", data={"name": "Ada", "n": str(i)})
            elif kind == 3:
                r = client.delete(f"{base}/{token}/" + "long-segment/" * 20)
            else:
                r = client.request("PURGE", f"{base}/{token}/cache", content=bytes(range(64)))
            assert r.status_code == 200


def audit(page, where: str) -> list[str]:
    problems = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        problems += [f"{where}, {scheme}: {p}" for p in axe_problems(page)]
    page.emulate_media(color_scheme="light")
    return problems


@pytest.mark.parametrize("size", SIZES)
def test_no_serious_or_critical_violations(server, size):
    with open_browser(viewport=SIZES[size]) as page:
        token = open_inspector(page, server.base)
        problems = audit(page, "empty bin")
        fill(server.base, token, 500)
        expect(rows(page)).to_have_count(500, timeout=20_000)
        problems += audit(page, "full bin")
        # The menu and the confirmation, open.
        page.locator("#bins-menu summary").click()
        problems += audit(page, "Bins menu")
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Clear").click()
        expect(page.locator("#clear-dialog")).to_be_visible()
        problems += audit(page, "Clear dialog")
        page.get_by_role("button", name="Cancel").click()
        # The settings panel takes the page's colours, dark ones too.
        page.get_by_role("link", name="Settings").click()
        expect(page.locator("#settings-form")).to_be_visible()
        problems += audit(page, "settings")
        page.keyboard.press("Escape")
        expect(page.locator("#settings")).to_be_hidden()
        rows(page).nth(2).locator("a").click()
        expect(page.locator("#detail .capture-detail")).to_be_visible()
        problems += audit(page, "open capture")
        assert problems == [], "\n".join(problems)
        assert_clean(page)


def test_the_structure_a_screen_reader_relies_on(server):
    with open_browser(viewport=SIZES["desktop"]) as page:
        token = open_inspector(page, server.base)
        # One h1, the bin's name (or "Bin" and its token's start).
        expect(page.locator("h1")).to_have_count(1)
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Bin {token[:8]}")
        # The live state is announced; the open capture is not read out whole on every click.
        expect(page.get_by_role("status").filter(has_text="live")).to_have_count(1)
        assert page.locator("[aria-live]:has(#detail), #detail[aria-live]").count() == 0
        # Controls named for what they do.
        expect(page.get_by_role("searchbox", name="Search")).to_be_visible()
        expect(page.get_by_role("combobox", name="Method")).to_be_visible()
        expect(page.get_by_role("combobox", name="Provider")).to_be_visible()
        expect(page.get_by_role("combobox", name="Signature verdict")).to_be_visible()
        expect(page.get_by_role("button", name="Copy the capture URL")).to_be_visible()
        expect(page.get_by_role("button", name="Clear")).to_be_visible()
        assert_clean(page)
