"""The settings panel's views, the row marks and the event timeline as HTML (Django's client):
what a browser adds nothing to. The browser side is in test_browser_settings.py."""

from __future__ import annotations

import json
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.utils import timezone

from bins import events
from bins.listing import list_rows
from bins.models import Bin, Capture, capture_json
from bins.settings_form import json_value_text, plain_words, read_json_value, response_words

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HTTP_HX_REQUEST": "true"}
EVIL = '<img src=x onerror="window.__pwned=1">'


class FormFields(HTMLParser):
    """The fields a browser would submit for the settings form (what <template>s hold is not
    part of it), in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self.in_template = 0
        self.textarea: list[str] | None = None
        self.select: str | None = None
        self.options: list[tuple[str, bool]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "template":
            self.in_template += 1
        if self.in_template:
            return
        if tag == "input" and a.get("name"):
            if a.get("type") == "checkbox" and "checked" not in a:
                return
            self.fields.append((a["name"], a.get("value") or ""))
        elif tag == "textarea" and a.get("name"):
            self.textarea = [a["name"]]
        elif tag == "select" and a.get("name"):
            self.select, self.options = a["name"], []
        elif tag == "option" and self.select:
            self.options.append((a.get("value") or "", "selected" in a))

    def handle_endtag(self, tag):
        if tag == "template":
            self.in_template -= 1
        elif tag == "textarea" and self.textarea is not None:
            name, *text = self.textarea
            self.fields.append((name, "".join(text)))
            self.textarea = None
        elif tag == "select" and self.select:
            chosen = [v for v, selected in self.options if selected] or [self.options[0][0]]
            self.fields.append((self.select, chosen[0]))
            self.select = None

    def handle_data(self, data):
        if self.textarea is not None:
            self.textarea.append(data)


def form_fields(html: str) -> list[tuple[str, str]]:
    parser = FormFields()
    parser.feed(html)
    return parser.fields


def post_fields(client: Client, url: str, fields: list[tuple[str, str]], **extra):
    """POST the fields as a browser does (urlencoded, repeated names kept in order)."""
    from urllib.parse import urlencode

    return client.post(
        url, urlencode(fields), content_type="application/x-www-form-urlencoded", **extra
    )


def settings_of(bin_: Bin) -> dict:
    bin_.refresh_from_db()
    return {
        "name": bin_.name,
        "response": bin_.response,
        "rules": bin_.rules,
        "forward_url": bin_.forward_url,
        "signature": bin_.signature,
    }


def make_capture(bin_, **kw) -> Capture:
    body = kw.pop("body", b"{}")
    return Capture.objects.create(
        bin=bin_,
        method=kw.pop("method", "POST"),
        body=body,
        body_size=len(body),
        headers_json=json.dumps(kw.pop("headers", [])),
        **kw,
    )


RICH = {
    "name": "Staging <hooks>",
    "response": {
        "status": 202,
        "headers": [["content-type", "text/plain"], ["x-extra", "a: b"]],
        "body": "line one\nline two",
        "delay_ms": 250,
        "steps": [
            {"status": 500, "times": 3, "body": "", "headers": [["retry-after", "5"]]},
            {"status": 503, "delay_ms": 100},
            {"status": 200},
        ],
        "per": "event",
    },
    "rules": [
        {
            "name": "GitHub pings",
            "match": {
                "method": "POST",
                "path": "/gh",
                "header": ["x-github-event", "ping"],
                "provider": "github",
                "event_type": "ping",
            },
            "response": {"status": 204, "body": ""},
        },
        {"name": "a string that reads as JSON", "match": {"json": ["/n", "42"]}, "response": {}},
        {"name": "a number", "match": {"json": ["/n", 42]}, "response": {"body": "n"}},
        {
            "name": "JSON values",
            "match": {"json": ["/a~1b", {"x": [1, True, None]}]},
            "response": {"status": 410, "steps": [{"status": 500}, {}], "per": "bin"},
        },
        {"name": "plain text", "match": {"json": ["/type", "invoice.paid"]}, "response": {}},
    ],
    "forward_url": "https://example.com/hooks?x=1",
    "signature": {
        "scheme": "hmac",
        "secret": "s3cr3t <&>",
        "tolerance_s": 0,
        "header": "x-signature",
        "algorithm": "sha512",
        "encoding": "base64",
        "prefix": "v1=",
    },
}


def test_the_form_saves_back_exactly_what_it_shows(client, bin_):
    """Stored settings -> the form's HTML -> what a browser submits -> the same settings."""
    r = client.patch(f"/api/bins/{bin_.token}", RICH, content_type="application/json")
    assert r.status_code == 200, r.content
    before = settings_of(bin_)
    url = f"/bins/{bin_.token}/settings/"
    page = client.get(url, **HTMX)
    assert page.status_code == 200
    fields = form_fields(page.content.decode())
    assert ("rules", "0") in fields and ("response-steps", "2") in fields
    r = post_fields(client, url, fields, **HTMX)
    assert r.status_code == 200, r.content.decode()
    assert "Saved." in r.content.decode()
    assert settings_of(bin_) == before


@pytest.mark.parametrize(
    "typed, value",
    [
        ("42", 42),
        ('"42"', "42"),
        ("true", True),
        ('{"a": [1, null]}', {"a": [1, None]}),
        ("invoice.paid", "invoice.paid"),
        ("", ""),
        # Not JSON a database takes, or not JSON at all: the text itself.
        ("NaN", "NaN"),
        ("-Infinity", "-Infinity"),
        ("1e999", "1e999"),
        ("[" * 100_000, "[" * 100_000),
    ],
)
def test_a_json_condition_reads_json_else_text(typed, value):
    assert read_json_value(typed) == value
    assert read_json_value(json_value_text(value)) == value


def test_reordered_parts_are_saved_in_page_order(client, bin_):
    client.patch(f"/api/bins/{bin_.token}", RICH, content_type="application/json")
    url = f"/bins/{bin_.token}/settings/"
    fields = form_fields(client.get(url, **HTMX).content.decode())
    # The page moves a part by moving its fields, hidden key included: put rule 3 first.
    order = [v for n, v in fields if n == "rules"]
    moved = order[2:3] + order[:2] + order[3:]
    fields = [f for f in fields if f[0] != "rules"] + [("rules", key) for key in moved]
    assert post_fields(client, url, fields, **HTMX).status_code == 200
    names = [rule["name"] for rule in settings_of(bin_)["rules"]]
    assert names == ["a number", "GitHub pings", "a string that reads as JSON", *names[3:]]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"response-status": "abc"}, "response.status must be an integer from 200 to 599"),
        ({"response-delay_ms": "30001"}, "response.delay_ms must be an integer from 0 to 30000"),
        ({"response-headers": "set-cookie: a=1"}, "response.headers[1]: 'set-cookie' would"),
        ({"response-headers": "no colon"}, "response.headers: the line 'no colon' has no colon"),
        ({"response-step-0-times": "0"}, "response.steps[0].times must be an integer from 1"),
        ({"rule-0-method": "PO ST"}, "rules[0].match.method must be an HTTP method"),
        ({"rule-0-path": "gh"}, 'rules[0].match.path must be a sub-path prefix starting with "/"'),
        ({"rule-1-response-status": "99"}, "rules[1].response.status must be an integer"),
        ({"forward_url": "ftp://example.com"}, "forward_url: "),
        ({"signature-secret": ""}, "signature.secret must not be empty"),
        ({"signature-header": "x_sig"}, "signature.header must not contain _"),
        ({"signature-tolerance_s": "-1"}, "signature.tolerance_s must be an integer from 0"),
        ({"name": "x" * 101}, "name must be null or text of at most 100 characters"),
    ],
)
def test_an_invalid_save_names_the_field_and_changes_nothing(client, bin_, change, message):
    client.patch(f"/api/bins/{bin_.token}", RICH, content_type="application/json")
    before = settings_of(bin_)
    url = f"/bins/{bin_.token}/settings/"
    fields = form_fields(client.get(url, **HTMX).content.decode())
    fields = [(n, change.get(n, v)) for n, v in fields]
    r = post_fields(client, url, fields, **HTMX)
    html = r.content.decode()
    assert r.status_code == 400
    assert 'role="alert"' in html and "Not saved, nothing changed: " in html
    assert message.replace('"', "&quot;").replace("'", "&#x27;") in html
    assert settings_of(bin_) == before
    # The form comes back as typed.
    assert next(iter(change.items())) in form_fields(html)


def test_the_api_and_the_page_refuse_alike(client, bin_):
    """The same bad value gets the same message from PATCH and from the page's form."""
    api = client.patch(
        f"/api/bins/{bin_.token}",
        {"response": {"status": 600}},
        content_type="application/json",
    )
    url = f"/bins/{bin_.token}/settings/"
    fields = [
        (n, "600" if n == "response-status" else v)
        for n, v in form_fields(client.get(url, **HTMX).content.decode())
    ]
    page = post_fields(client, url, fields, **HTMX)
    assert api.json()["error"] in page.content.decode()


def test_the_form_needs_its_csrf_token(bin_):
    strict = Client(enforce_csrf_checks=True)
    url = f"/bins/{bin_.token}/settings/"
    fields = form_fields(strict.get(url, **HTMX).content.decode())
    fields = [(n, "Renamed" if n == "name" else v) for n, v in fields]
    without = [f for f in fields if f[0] != "csrfmiddlewaretoken"]
    assert post_fields(strict, url, without, **HTMX).status_code == 403
    assert settings_of(bin_)["name"] == ""
    assert post_fields(strict, url, fields, **HTMX).status_code == 200
    assert settings_of(bin_)["name"] == "Renamed"


def test_without_script_the_settings_are_a_page_of_their_own(client, bin_):
    url = f"/bins/{bin_.token}/settings/"
    page = client.get(url)
    html = page.content.decode()
    assert page.status_code == 200 and "<html" in html and 'id="settings-form"' in html
    fields = form_fields(html)
    saved = post_fields(
        client, url, [(n, "201" if n == "response-status" else v) for n, v in fields]
    )
    assert saved.status_code == 302 and saved["Location"] == f"/bins/{bin_.token}/"
    assert settings_of(bin_)["response"]["status"] == 201
    bad = post_fields(client, url, [(n, "1" if n == "response-status" else v) for n, v in fields])
    assert bad.status_code == 400 and "<html" in bad.content.decode()
    assert client.get("/bins/00000000-0000-4000-8000-000000000000/settings/").status_code == 404


def test_the_secret_is_only_in_its_own_bins_form(client, bin_):
    secret = "whsec_only_mine_123"
    client.patch(
        f"/api/bins/{bin_.token}",
        {"signature": {"scheme": "stripe", "secret": secret}},
        content_type="application/json",
    )
    other = Bin.objects.create()
    own = client.get(f"/bins/{bin_.token}/settings/", **HTMX).content.decode()
    assert (
        f'type="password" id="f-signature-secret" name="signature-secret" value="{secret}"' in own
    )
    assert secret not in client.get(f"/bins/{other.token}/settings/", **HTMX).content.decode()
    # The inspector page itself carries no settings: the panel fetches them when it opens.
    assert secret not in client.get(f"/bins/{bin_.token}/").content.decode()


def test_hostile_settings_are_escaped_in_the_form_and_the_marks(client, bin_):
    hostile = {
        "name": EVIL,
        "response": {"body": "</textarea>" + EVIL, "headers": [["x-a", EVIL]]},
        "rules": [{"name": EVIL, "match": {"path": "/" + EVIL}, "response": {"status": 500}}],
    }
    r = client.patch(f"/api/bins/{bin_.token}", hostile, content_type="application/json")
    assert r.status_code == 200, r.content
    html = client.get(f"/bins/{bin_.token}/settings/", **HTMX).content.decode()
    assert "<img" not in html and "</textarea><img" not in html
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in html
    c = make_capture(
        bin_,
        provider="stripe",
        event_type=EVIL,
        event_id=EVIL,
        event_delivery=2,
        event_after_ms=1500,
        duplicate_of=1,
        signature={"scheme": "stripe", "valid": False, "reason": EVIL},
        answer={"status": 500, "rule": EVIL},
    )
    for url in [f"/bins/{bin_.token}/", f"/bins/{bin_.token}/captures/{c.seq}/"]:
        page = client.get(url).content.decode()
        assert "<img" not in page
        assert "&lt;img src=x" in page


def test_the_summary_says_what_a_provider_gets(client, bin_):
    assert (
        response_words(
            {
                "status": 200,
                "body": '{"ok": true}',
                "steps": [{"status": 500, "times": 3}, {"status": 200}],
                "per": "event",
            }
        )
        == '500 three times for each event, then 200 {"ok": true}'
    )
    assert (
        response_words(
            {"status": 200, "body": "", "steps": [{"status": 502, "times": 12}, {"status": 503}]}
        )
        == "502 for the bin's first 12 requests, then 503"
    )
    assert response_words({"status": 200, "body": "ok", "delay_ms": 30000}) == (
        "200 ok after 30 s (a provider that stops waiting sooner never sees the 200)"
    )
    assert response_words({"status": 204, "body": "", "delay_ms": 250}) == "204 after 250 ms"
    lines = plain_words(
        {"status": 410, "body": '{"error": "gone"}'},
        [{"name": "pings", "match": {"method": "post", "provider": "github"}, "response": {}}],
    )
    assert lines == [
        '“pings”: a request POST from GitHub gets 410 {"error": "gone"}.',
        'Any other request gets 410 {"error": "gone"}.',
    ]
    # The preview says the same of a form before it is saved, or why it cannot be saved.
    url = f"/bins/{bin_.token}/settings/"
    fields = form_fields(client.get(url, **HTMX).content.decode())
    preview = f"/bins/{bin_.token}/settings/preview/"
    said = post_fields(client, preview, fields, **HTMX).content.decode()
    assert "A provider gets 200 {&quot;ok&quot;: true}." in said
    bad = [(n, "x" if n == "response-delay_ms" else v) for n, v in fields]
    said = post_fields(client, preview, bad, **HTMX).content.decode()
    assert "Cannot be saved as it stands: response.delay_ms must be an integer" in said
    assert settings_of(bin_)["response"] == {}  # a preview saves nothing


def test_row_marks_for_stored_and_live_rows(client, bin_):
    first = make_capture(
        bin_,
        provider="stripe",
        event_type="invoice.paid",
        event_id="evt_123",
        event_delivery=1,
        answer={"status": 500, "rule": "step 1 of 3"},
        signature={"scheme": "stripe", "valid": True, "reason": "valid"},
    )
    retry = make_capture(
        bin_,
        provider="stripe",
        event_type="invoice.paid",
        event_id="evt_123",
        event_delivery=3,
        duplicate_of=first.seq,
        event_after_ms=62_400,
        answer={"status": 200, "rule": None},
        signature={
            "scheme": "stripe",
            "valid": False,
            "reason": "timestamp 412 s old, over the 300 s tolerance",
        },
    )
    stored = list_rows(bin_.id, 10)
    live = [capture_json(c, b"") for c in (retry, first)]
    for rows in (stored, live):
        html = render_to_string("bins/_capture_rows_oob.html", {"captures": rows, "bin": bin_})
        newest, oldest = html.split('<li class="capture"')[1:]
        assert '<span class="mark mark-provider">Stripe · invoice.paid</span>' in newest
        assert "retry 3 of evt_123, +62 s" in newest
        assert '<span class="mark mark-invalid" title="timestamp 412 s old' in newest
        assert '<span class="visually-hidden">: timestamp 412 s old' in newest
        assert "→ 200</span>" in newest
        assert "→ 500, step 1 of 3" in oldest and "mark-valid" in oldest
        assert "retry" not in oldest
    plain = make_capture(bin_)  # no provider, no verdict, no answer: no marks
    html = render_to_string(
        "bins/_capture_rows_oob.html", {"captures": list_rows(bin_.id, 1), "bin": bin_}
    )
    assert f'id="capture-{plain.seq}"' in html and 'class="mark ' not in html


def test_the_verdict_in_plain_words(client, bin_):
    signed = [["stripe-signature", "t=1,v1=00"]]
    unchecked = make_capture(bin_, headers=signed)
    unsigned = make_capture(bin_)
    page = client.get(f"/bins/{bin_.token}/captures/{unchecked.seq}/").content.decode()
    assert "no secret set: add one to check (it carries stripe-signature" in page
    assert 'data-settings-open="signature"' in page
    page = client.get(f"/bins/{bin_.token}/captures/{unsigned.seq}/").content.decode()
    assert "Signature" not in page.split('class="event"')[1].split("</section>")[0]

    signature = {"scheme": "stripe", "secret": "whsec_x", "tolerance_s": 300}
    Bin.objects.filter(pk=bin_.pk).update(signature=signature)
    reason = (
        "signature does not match (computed over the 1,234 received bytes with the bin's secret)"
    )
    bad = make_capture(
        bin_, headers=signed, signature={"scheme": "stripe", "valid": False, "reason": reason}
    )
    good = make_capture(
        bin_, headers=signed, signature={"scheme": "stripe", "valid": True, "reason": "valid"}
    )
    assert (
        reason.replace("'", "&#x27;")
        in client.get(f"/bins/{bin_.token}/captures/{bad.seq}/").content.decode()
    )
    assert (
        "valid (Stripe, checked with the bin&#x27;s secret)"
        in client.get(f"/bins/{bin_.token}/captures/{good.seq}/").content.decode()
    )
    # A scheme set a moment ago: the stored ones are being checked.
    assert events.verdict_view(Capture.objects.get(pk=unchecked.pk))["state"] == "pending"


def deliveries(bin_, n: int, event_id: str = "evt_long") -> list[Capture]:
    start = timezone.now() - timedelta(hours=1)
    made = []
    for i in range(n):
        made.append(
            make_capture(
                bin_,
                provider="stripe",
                event_id=event_id,
                received_at=start + timedelta(seconds=10 * i * i),
                event_delivery=i + 1,
                answer={"status": 500 if i < n - 1 else 200, "rule": None},
            )
        )
        make_capture(bin_)  # another request between deliveries
    return made


def test_the_timeline_lists_every_delivery_with_intervals(client, bin_):
    made = deliveries(bin_, 4)
    t = events.timeline(made[2])
    assert [item["n"] for item in t["items"]] == [1, 2, 3, 4]
    assert [item["seq"] for item in t["items"]] == [c.seq for c in made]
    assert [item["interval_s"] for item in t["items"]] == [None, 10, 30, 50]
    assert [item["after_s"] for item in t["items"]] == [0, 10, 40, 90]
    assert [item["current"] for item in t["items"]] == [False, False, True, False]
    assert (t["total"], t["more_after"], t["partial"]) == (4, 0, False)
    html = client.get(f"/bins/{bin_.token}/captures/{made[2].seq}/").content.decode()
    assert '<tr class="current" aria-current="true">' in html
    assert "<strong>3 (this one)</strong>" in html
    assert "+30 s" in html and "+50 s" in html


def test_a_long_timeline_is_cut_and_says_so(client, bin_, django_assert_max_num_queries):
    made = deliveries(bin_, 120)
    head = events.TIMELINE_HEAD
    around = events.TIMELINE_AROUND
    with django_assert_max_num_queries(5):
        t = events.timeline(made[99])  # the 100th delivery
    shown = [item["n"] for item in t["items"] if "n" in item]
    assert shown == [*range(1, head + 1), *range(100 - around, 100 + around + 1)]
    assert {"gap": 100 - around - head - 1} in t["items"]
    current = [item for item in t["items"] if item.get("current")]
    assert [item["n"] for item in current] == [100]
    # The first shown after the gap still has its interval (the one before it was read).
    after_gap = t["items"][t["items"].index({"gap": 100 - around - head - 1}) + 1]
    assert after_gap["interval_s"] == 10 * (94**2 - 93**2)
    assert (t["total"], t["more_after"], t["partial"]) == (120, 120 - 100 - around, True)
    html = client.get(f"/bins/{bin_.token}/captures/{made[99].seq}/").content.decode()
    assert "64 deliveries not shown" in html and "15 later deliveries not shown" in html

    early = events.timeline(made[3])  # within the head: no window
    assert [item["n"] for item in early["items"]] == list(range(1, head + 1))
    assert early["more_after"] == 120 - head
    near = events.timeline(made[head + 1])  # just past the head: no gap
    assert [item["n"] for item in near["items"] if "n" in item][head - 1 : head + 3] == [
        head,
        head + 1,
        head + 2,
        head + 3,
    ]
    assert not any("gap" in item for item in near["items"])
