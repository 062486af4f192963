"""The settings panel, the row marks and the event timeline in a real browser (Chromium against
a real Daphne process; see tests/browser.py). Captures are sent with httpx as a provider sends
them, and what was saved is checked through the JSON API."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
import stripe

from .browser import assert_clean, assert_not_reloaded, expect, open_inspector, rows

pytestmark = pytest.mark.django_db(transaction=True)

STRIPE_SECRET = "whsec_settings_0123456789"
SCREENSHOT_SETTINGS = "/tmp/browser-settings.png"
SCREENSHOT_TIMELINE = "/tmp/browser-timeline.png"


def stripe_event(event_id: str, secret: str = STRIPE_SECRET) -> tuple[bytes, dict[str, str]]:
    """A Stripe delivery signed with Stripe's own library code."""
    body = json.dumps({"id": event_id, "object": "event", "type": "invoice.paid"}).encode()
    at = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{body.decode()}", secret)
    return body, {"content-type": "application/json", "stripe-signature": f"t={at},v1={signature}"}


def bin_settings(base: str, token: str) -> dict:
    r = httpx.get(f"{base}/api/bins/{token}")
    assert r.status_code == 200
    return r.json()


def open_settings(page):
    page.get_by_role("link", name="Settings").click()
    dialog = page.get_by_role("dialog", name="Settings of this bin")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#settings-form")).to_be_visible()
    return dialog


def default_response(dialog):
    return dialog.locator(".response-editor[data-prefix='response']")


def save(dialog):
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator(".saved")).to_have_text(re.compile("Saved"))


def test_a_rule_saved_in_the_panel_answers_the_next_capture_and_marks_its_row(server, page):
    base = server.base
    token = open_inspector(page, base)
    dialog = open_settings(page)
    dialog.get_by_role("button", name="Add a rule").click()
    rule = dialog.locator("#settings-rules > li").first
    expect(rule.get_by_label("Rule name")).to_be_focused()
    rule.get_by_label("Rule name").fill("Stripe <b>invoices</b>")
    rule.get_by_label("Method").fill("POST")
    rule.get_by_label("Sub-path starts with").fill("/stripe")
    rule.get_by_label("Status", exact=True).fill("503")
    rule.get_by_label("Body", exact=True).fill('{"retry": "later"}')
    # The plain-words line follows the form before it is saved.
    expect(dialog.locator("#settings-summary")).to_contain_text(
        '“Stripe <b>invoices</b>”: a request POST to /stripe… gets 503 {"retry": "later"}.'
    )
    save(dialog)
    rules = bin_settings(base, token)["rules"]
    assert rules == [
        {
            "name": "Stripe <b>invoices</b>",
            "match": {"method": "POST", "path": "/stripe"},
            "response": {"status": 503, "body": '{"retry": "later"}'},
        }
    ]
    dialog.get_by_role("button", name="Close").first.click()
    expect(dialog).to_be_hidden()

    r = httpx.post(f"{base}/{token}/stripe/events", content=b"{}")
    assert (r.status_code, r.text) == (503, '{"retry": "later"}')
    r = httpx.get(f"{base}/{token}/stripe")  # not a POST: the default answers
    assert r.status_code == 200
    expect(rows(page)).to_have_count(2)
    marks = rows(page).locator(".mark-answer")
    expect(marks).to_have_text(["→ 200", "→ 503, Stripe <b>invoices</b>"])
    assert page.locator("#capture-list b").count() == 0  # the rule's name stays text
    assert_not_reloaded(page)
    assert_clean(page)


def test_fail_three_times_then_succeed_per_event_in_the_marks_and_the_timeline(server, page):
    base = server.base
    token = open_inspector(page, base)
    dialog = open_settings(page)
    dialog.get_by_role("button", name="Fail 3 times then 200").click()
    response = default_response(dialog)
    expect(response.get_by_label("Status", exact=True).first).to_have_value("200")
    expect(response.get_by_label("Count")).to_have_value("event")
    steps = response.locator(".steps-list > li")
    expect(steps).to_have_count(2)
    expect(steps.nth(0).get_by_label("Status", exact=True)).to_have_value("500")
    expect(steps.nth(0).get_by_label("Times")).to_have_value("3")
    expect(steps.nth(1).get_by_label("Status", exact=True)).to_have_value("200")
    expect(dialog.locator("#settings-summary")).to_have_text(
        'A provider gets 500 three times for each event, then 200 {"ok": true}.'
    )
    save(dialog)
    saved = bin_settings(base, token)["response"]
    assert saved["steps"] == [{"status": 500, "times": 3}, {"status": 200}]
    assert saved["per"] == "event"
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    signature = {"scheme": "stripe", "secret": STRIPE_SECRET}
    assert httpx.patch(f"{base}/api/bins/{token}", json={"signature": signature}).is_success

    answers = []
    for event_id in ["evt_A", "evt_A", "evt_B", "evt_A", "evt_A"]:
        body, headers = stripe_event(event_id)
        answers.append(httpx.post(f"{base}/{token}/stripe", content=body, headers=headers))
    assert [r.status_code for r in answers] == [500, 500, 500, 500, 200]
    expect(rows(page)).to_have_count(5)
    newest = rows(page).first
    expect(newest.locator(".mark-provider")).to_have_text("Stripe · invoice.paid")
    expect(newest.locator(".mark-retry")).to_have_text(re.compile(r"^retry 4 of evt_A, \+"))
    expect(newest.locator(".mark-answer")).to_have_text("→ 200, step 2 of 2")
    expect(rows(page).locator(".mark-answer")).to_have_text(
        ["→ 200, step 2 of 2", *["→ 500, step 1 of 2"] * 4]
    )
    expect(rows(page).nth(2).locator(".mark-retry")).to_have_count(0)  # evt_B's first
    expect(rows(page).locator(".mark-valid")).to_have_count(5)

    newest.click()
    timeline = page.locator("#detail table.timeline")
    expect(timeline.locator("caption")).to_contain_text("Deliveries of this event 4")
    lines = timeline.locator("tbody tr")
    expect(lines).to_have_count(4)
    expect(lines.locator("td:nth-child(5)")).to_have_text(
        ["500 step 1 of 2", "500 step 1 of 2", "500 step 1 of 2", "200 step 2 of 2"]
    )
    expect(lines.locator("td:nth-child(6)")).to_have_text(["valid"] * 4)
    expect(lines.nth(3)).to_have_attribute("aria-current", "true")
    expect(lines.nth(3).locator("td").first).to_contain_text("4 (this one)")
    expect(lines.nth(1).locator("td:nth-child(3)")).to_have_text(re.compile(r"^\+\d"))
    # Another delivery of the event opens from the timeline.
    lines.nth(0).get_by_role("link", name="1").click()
    expect(page.locator("#detail .capture-detail")).to_have_attribute("data-id", "1")
    expect(page.locator("#detail table.timeline tbody tr").nth(0)).to_have_attribute(
        "aria-current", "true"
    )
    assert_not_reloaded(page)
    assert_clean(page)
    page.screenshot(path=SCREENSHOT_TIMELINE)


def test_presets_fill_the_form_and_nothing_is_saved_before_save(server, page):
    base = server.base
    token = open_inspector(page, base)
    dialog = open_settings(page)
    response = default_response(dialog)
    summary = dialog.locator("#settings-summary")
    expected = {
        "Always 500": ("500", "0", '{"ok": false}', 'A provider gets 500 {"ok": false}.'),
        "Time out (30 s)": (
            "200",
            "30000",
            '{"ok": true}',
            'A provider gets 200 {"ok": true} after 30 s (a provider that stops waiting '
            "sooner never sees the 200).",
        ),
        "410 Gone (provider should disable the endpoint)": (
            "410",
            "0",
            '{"error": "gone"}',
            'A provider gets 410 {"error": "gone"}.',
        ),
        "Always 200": ("200", "0", '{"ok": true}', 'A provider gets 200 {"ok": true}.'),
    }
    dialog.get_by_role("button", name="Fail 3 times then 200").click()
    for preset, (status, delay, body, words) in expected.items():
        dialog.get_by_role("button", name=preset).click()
        expect(response.get_by_label("Status", exact=True).first).to_have_value(status)
        expect(response.get_by_label("Delay (ms)").first).to_have_value(delay)
        expect(response.get_by_label("Body", exact=True).first).to_have_value(body)
        expect(response.get_by_label("Content type")).to_have_value("application/json")
        expect(response.locator(".steps-list > li")).to_have_count(0)
        expect(summary).to_have_text(words)
    # Filled in, not saved: the bin still answers as before.
    assert bin_settings(base, token)["response"]["status"] == 200
    dialog.get_by_role("button", name="Always 500").click()
    save(dialog)
    assert httpx.post(f"{base}/{token}").status_code == 500
    assert_clean(page)


def test_an_invalid_setting_shows_the_error_naming_the_field_and_changes_nothing(server, page):
    base = server.base
    token = open_inspector(page, base)
    before = bin_settings(base, token)
    dialog = open_settings(page)
    dialog.get_by_label("Name", exact=True).fill("renamed")
    status = default_response(dialog).get_by_label("Status", exact=True).first
    status.fill("600")
    expect(dialog.locator("#settings-summary")).to_have_text(
        "Cannot be saved as it stands: response.status must be an integer from 200 to 599"
    )
    dialog.get_by_role("button", name="Save").click()
    error = dialog.get_by_role("alert")
    expect(error).to_have_text(
        "Not saved, nothing changed: response.status must be an integer from 200 to 599"
    )
    status = default_response(dialog).get_by_label("Status", exact=True).first
    expect(status).to_have_value("600")  # the form as typed
    expect(status).to_have_attribute("aria-invalid", "true")
    expect(status).to_be_focused()
    expect(dialog.get_by_label("Name", exact=True)).to_have_value("renamed")
    assert bin_settings(base, token) == before  # nothing changed, the name neither

    # A header line the form cannot read is named too.
    status.fill("201")
    default_response(dialog).get_by_label("Other headers, one per line (Name: value)").fill(
        "x-ok: 1\nno colon here"
    )
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_role("alert")).to_contain_text(
        "response.headers: the line 'no colon here' has no colon"
    )
    assert bin_settings(base, token) == before
    assert_clean(page)


def test_the_secret_is_masked_until_revealed_and_setting_it_rechecks_the_open_capture(server, page):
    base = server.base
    token = open_inspector(page, base)
    body, headers = stripe_event("evt_S")
    assert httpx.post(f"{base}/{token}/stripe", content=body, headers=headers).status_code == 200
    expect(rows(page)).to_have_count(1)
    rows(page).first.click()
    verdict = page.locator("#detail .verdict dd")
    expect(verdict).to_contain_text("no secret set: add one to check")
    expect(rows(page).first.locator(".mark-valid, .mark-invalid")).to_have_count(0)

    # The verdict's link opens the panel at the signature section.
    verdict.get_by_role("link", name="Set the secret").click()
    dialog = page.get_by_role("dialog", name="Settings of this bin")
    scheme = dialog.get_by_label("Scheme")
    expect(scheme).to_be_focused()
    secret = dialog.get_by_label("Secret", exact=True)
    expect(secret).to_be_hidden()  # no scheme: nothing to set
    scheme.select_option("hmac")
    expect(dialog.get_by_label("Algorithm")).to_be_visible()
    scheme.select_option("stripe")
    expect(dialog.get_by_label("Algorithm")).to_be_hidden()  # hmac's own fields
    secret.fill(STRIPE_SECRET)
    expect(secret).to_have_attribute("type", "password")
    reveal = dialog.get_by_role("button", name="Reveal")
    reveal.click()
    expect(secret).to_have_attribute("type", "text")
    expect(dialog.get_by_role("button", name="Hide")).to_have_attribute("aria-pressed", "true")
    dialog.get_by_role("button", name="Hide").click()
    expect(secret).to_have_attribute("type", "password")
    save(dialog)
    assert bin_settings(base, token)["signature"]["secret"] == STRIPE_SECRET
    # Opened again: the stored secret is there, masked.
    dialog.get_by_role("button", name="Close").first.click()
    open_settings(page)
    secret = dialog.get_by_label("Secret", exact=True)
    expect(secret).to_have_attribute("type", "password")
    expect(secret).to_have_value(STRIPE_SECRET)
    dialog.get_by_role("button", name="Close").first.click()

    # The stored capture was checked again, and the open page shows it without a reload.
    expect(verdict).to_have_text("valid (Stripe, checked with the bin's secret)")
    expect(rows(page).first.locator(".mark-valid")).to_have_text("valid")

    dialog = open_settings(page)
    dialog.get_by_label("Secret", exact=True).fill("whsec_not_the_one")
    save(dialog)
    page.keyboard.press("Escape")
    expect(verdict).to_have_text(
        f"signature does not match (computed over the {len(body)} received bytes with the "
        "bin's secret)"
    )
    invalid = rows(page).first.locator(".mark-invalid")
    expect(invalid).to_contain_text("invalid")
    expect(invalid).to_have_attribute("title", re.compile("^signature does not match"))
    assert_not_reloaded(page)
    assert_clean(page)


def test_moving_a_rule_up_with_the_keyboard_changes_which_rule_answers(server, page):
    base = server.base
    token = open_inspector(page, base)
    r = httpx.patch(
        f"{base}/api/bins/{token}",
        json={
            "rules": [
                {"name": "first", "match": {"method": "POST"}, "response": {"status": 201}},
                {"name": "second", "match": {"path": "/a"}, "response": {"status": 202}},
            ]
        },
    )
    assert r.status_code == 200
    assert httpx.post(f"{base}/{token}/a").status_code == 201
    dialog = open_settings(page)
    rules = dialog.locator("#settings-rules > li")
    legends = rules.locator(":scope > fieldset > legend")
    expect(legends).to_have_text(["Rule 1: first", "Rule 2: second"])
    move_up = rules.nth(1).get_by_role("button", name="Move up")
    move_up.focus()
    page.keyboard.press("Enter")
    expect(legends).to_have_text(["Rule 1: second", "Rule 2: first"])
    expect(rules.nth(0).get_by_role("button", name="Move up")).to_be_focused()
    expect(dialog.locator("#settings-summary .summary-line").first).to_have_text(
        '“second”: a request to /a… gets 202 {"ok": true}.'
    )
    save(dialog)
    assert [rule["name"] for rule in bin_settings(base, token)["rules"]] == ["second", "first"]
    page.keyboard.press("Escape")
    assert httpx.post(f"{base}/{token}/a").status_code == 202
    expect(rows(page).first.locator(".mark-answer")).to_have_text("→ 202, second")
    assert_clean(page)
    # For a person to look at (a screenshot styles the page, so it comes after the checks):
    # the panel with steps too, tall enough to show it whole.
    steps = {"steps": [{"status": 500, "times": 3}, {"status": 200}], "per": "event"}
    httpx.patch(f"{base}/api/bins/{token}", json={"name": "Stripe staging", "response": steps})
    page.set_viewport_size({"width": 1100, "height": 2300})
    open_settings(page)
    expect(dialog.locator("#settings-summary .summary-line")).to_have_count(3)
    dialog.screenshot(path=SCREENSHOT_SETTINGS)
