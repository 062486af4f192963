"""The browser pages as HTML: redirects, the inspector, capture details, escaping, headers."""

import gzip
import json
import re

import pytest
from django.test import Client

from bins.models import Bin, Capture

pytestmark = pytest.mark.django_db(transaction=True)


def make_capture(bin_, body=b"", content_type="", **kw):
    return Capture.objects.create(
        bin=bin_,
        method=kw.pop("method", "POST"),
        body=body,
        body_size=len(body),
        content_type=content_type,
        headers_json=json.dumps(kw.pop("headers", [["content-type", content_type]])),
        **kw,
    )


def test_home_makes_a_bin_then_returns_to_it(client):
    r = client.get("/")
    assert r.status_code == 302
    bin_ = Bin.objects.get()
    assert r["Location"] == f"/bins/{bin_.token}/"
    assert client.get("/")["Location"] == f"/bins/{bin_.token}/"
    assert Bin.objects.count() == 1


def test_home_makes_a_new_bin_when_the_last_one_is_gone(client):
    client.get("/")
    Bin.objects.all().delete()
    r = client.get("/")
    assert r["Location"] == f"/bins/{Bin.objects.get().token}/"


def test_new_bin_needs_post_with_csrf(transactional_db):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/bins/").status_code == 403
    assert Bin.objects.count() == 0
    page = strict.get("/", follow=True)
    token = page.context["csrf_token"]
    r = strict.post("/bins/", {"csrfmiddlewaretoken": str(token)})
    assert r.status_code == 302
    assert Bin.objects.count() == 2


def test_inspector_page(client, bin_):
    make_capture(bin_, b'{"a": 1}', "application/json", path="/hook")
    r = client.get(f"/bins/{bin_.token}/")
    html = r.content.decode()
    assert r.status_code == 200
    assert f'value="http://testserver/{bin_.token}"' in html
    assert f'ws-connect="/ws/bins/{bin_.token}/"' in html
    assert "/hook" in html
    assert "htmx" in html and "hx-ws" in html
    csp = r["Content-Security-Policy"]
    # Scripts and styles by this response's nonce only: never by origin, so nothing a capture
    # URL on this origin serves could ever be one.
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp).group(1)
    assert "'self'" not in csp.split("script-src")[1].split(";")[0]
    assert "unsafe-inline" not in csp and f"style-src 'nonce-{nonce}'" in csp
    tags = re.findall(r"<(?:script|link)\b[^>]*>", html)
    assert tags and all(f'nonce="{nonce}"' in tag for tag in tags), tags
    assert "<script>" not in html  # no inline script: every script has a src
    assert r["X-Frame-Options"] == "DENY"


def test_static_files_are_served_with_debug_off(client):
    assert client.get("/static/bins/app.js").status_code == 200
    assert client.get("/static/django_htmx/ext/hx-ws-2.min.js").status_code == 200


def test_favicon_is_the_pages_icon(client, transactional_db):
    """Browsers and tools ask for /favicon.ico; it was a 404 on every load."""
    page = client.get("/", follow=True)
    assert '<link rel="icon" href="/static/bins/favicon.svg"' in page.content.decode()
    for method in (client.get, client.head):
        r = method("/favicon.ico")
        assert (r.status_code, r["Location"]) == (301, "/static/bins/favicon.svg")
    icon = client.get("/static/bins/favicon.svg")
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(icon.streaming_content)


def test_unknown_bin_page_is_404(client, transactional_db):
    assert client.get("/bins/3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f/").status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"b":[1,2],"a":"x"}', "application/json", "&quot;b&quot;: [\n    1,"),
        (
            b"name=Ada&lang=en&empty=",
            "application/x-www-form-urlencoded",
            "<th>lang</th><td>en</td>",
        ),
        (b"plain words\nsecond line", "text/plain", "plain words\nsecond line"),
        (bytes(range(40)), "application/octet-stream", "00000000  00 01 02 03"),
        (b"", "", "No body."),
    ],
)
def test_detail_shows_the_body_by_kind(client, bin_, body, content_type, expected):
    c = make_capture(bin_, body, content_type)
    html = client.get(f"/bins/{bin_.token}/captures/{c.seq}/").content.decode()
    assert expected in html


def test_multipart_fields_and_files_are_listed(client, bin_):
    body = (
        b'--zz\r\nContent-Disposition: form-data; name="title"\r\n\r\nhello\r\n'
        b'--zz\r\nContent-Disposition: form-data; name="upload"; filename="a.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\x02\r\n--zz--\r\n"
    )
    c = make_capture(bin_, body, "multipart/form-data; boundary=zz")
    html = client.get(f"/bins/{bin_.token}/captures/{c.seq}/").content.decode()
    assert "<th>title</th><td>hello</td>" in html
    assert "file &#x27;a.bin&#x27;, 3 bytes" in html


def test_htmx_request_gets_only_the_detail(client, bin_):
    c = make_capture(bin_, b"hi", "text/plain")
    r = client.get(
        f"/bins/{bin_.token}/captures/{c.seq}/",
        headers={"HX-Request": "true", "HX-Target": "detail"},
    )
    html = r.content.decode()
    assert "capture-detail" in html and "<html" not in html


def test_query_and_path_are_decoded_for_display(client, bin_):
    c = make_capture(bin_, path="/a%20b", query_string="x=1&x=2&y=%26")
    html = client.get(f"/bins/{bin_.token}/captures/{c.seq}/").content.decode()
    assert "/a b" in html
    assert html.count("<th>x</th>") == 2
    assert "<th>y</th><td>&amp;</td>" in html


def test_hostile_content_is_escaped_everywhere(client, bin_):
    evil = "<script>alert(1)</script>"
    c = make_capture(
        bin_,
        evil.encode(),
        "text/html",
        method=evil,
        path="/" + evil,
        query_string=f"{evil}={evil}",
        headers=[[evil, evil]],
        remote_addr=evil,
    )
    for url in [f"/bins/{bin_.token}/", f"/bins/{bin_.token}/captures/{c.seq}/"]:
        html = client.get(url).content.decode()
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_healthz(client, transactional_db):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["ok"] is True


def test_clear_deletes_every_capture_of_the_bin(client, bin_):
    make_capture(bin_, b"x")
    other = Bin.objects.create()
    make_capture(other, b"y")
    # Without script, Clear posts unconfirmed: a page asks first, and nothing is deleted yet.
    r = client.post(f"/bins/{bin_.token}/clear/")
    assert r.status_code == 200
    assert "Delete all 1 request in this bin?" in r.content.decode()
    assert 'name="confirm" value="yes"' in r.content.decode()
    assert bin_.captures.count() == 1
    r = client.post(f"/bins/{bin_.token}/clear/", {"confirm": "yes"})
    assert r.status_code == 302
    assert not bin_.captures.exists() and other.captures.count() == 1
    assert client.get(f"/bins/{bin_.token}/clear/").status_code == 405


def detail(client, bin_, capture) -> str:
    r = client.get(f"/bins/{bin_.token}/captures/{capture.seq}/")
    assert r.status_code == 200
    return r.content.decode()


def test_a_multipart_body_with_a_great_many_parts_lists_the_first_and_says_so(client, bin_):
    # About 10 MB in 200,000 parts: parsed whole, it took 26.7 s and starved other requests.
    part = b'--zz\r\nContent-Disposition: form-data; name="f"\r\n\r\nvalue-of-some-length\r\n'
    body = part * 200_000 + b"--zz--\r\n"
    c = make_capture(bin_, body, "multipart/form-data; boundary=zz")
    html = detail(client, bin_, c)
    # Over the layout limit: not parsed at all; the text is shown in part.
    assert "Shown in part: the first " in html
    small = part * 5_000 + b"--zz--\r\n"
    c = make_capture(bin_, small[: 1024 * 1024], "multipart/form-data; boundary=zz")
    html = detail(client, bin_, c)
    assert "Shown in part: the first 200 of" in html
    assert html.count("<th>f</th>") == 200


def test_deep_json_is_shown_as_sent_and_never_a_500(client, bin_):
    # 200,000 deep (a 500 before): too deep to lay out, said first.
    nested = b"[" * 200_000 + b"]" * 200_000
    c = make_capture(bin_, nested, "application/json")
    assert "Nested too deep to lay out" in detail(client, bin_, c)
    # Over the layout limit: not even parsed.
    deep = b"[" * 600_000 + b"]" * 600_000
    c = make_capture(bin_, deep, "application/json")
    assert "Too large to lay out" in detail(client, bin_, c)


def test_a_large_json_body_says_first_that_it_is_shown_in_part(client, bin_):
    big = json.dumps({"items": ["x" * 100] * 12_000}).encode()  # ~1.3 MB
    c = make_capture(bin_, big, "application/json")
    html = detail(client, bin_, c)
    note = html.index("Too large to lay out")
    cut = html.index("Shown in part: the first ")
    body = html.index('<pre class="body body-text"')
    assert note < body and cut < body


def test_gzip_bodies_are_shown_decoded_and_bombs_are_cut(client, bin_):
    payload = json.dumps({"hello": "gzip"}).encode()
    c = make_capture(
        bin_,
        gzip.compress(payload),
        "application/json",
        headers=[["content-type", "application/json"], ["content-encoding", "gzip"]],
    )
    html = detail(client, bin_, c)
    assert "Decoded from gzip" in html and "&quot;hello&quot;: &quot;gzip&quot;" in html
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KB
    c = make_capture(
        bin_,
        bomb,
        "text/plain",
        headers=[["content-type", "text/plain"], ["content-encoding", "gzip"]],
    )
    html = detail(client, bin_, c)
    assert "the first 4.0 MiB decoded" in html
    assert "Shown in part: the first " in html
    broken = make_capture(
        bin_,
        b"not gzip at all",
        "text/plain",
        headers=[["content-type", "text/plain"], ["content-encoding", "gzip"]],
    )
    assert "does not decode: shown as sent" in detail(client, bin_, broken)


def test_the_pages_export_links_download_the_bin(server):
    """The Bins menu's Export HAR / Export JSON lines links lead to the bin's exports (a real
    server: the exports stream)."""
    import httpx

    token = httpx.post(f"{server.base}/api/bins", json={}).json()["token"]
    assert httpx.post(f"{server.base}/{token}/x", json={"a": 1}).status_code == 200
    html = httpx.get(f"{server.base}/bins/{token}/").text
    links = {
        text: href
        for href, text in re.findall(r'<a href="([^"]+)" download>(Export [^<]+)</a>', html)
    }
    assert set(links) == {"Export HAR", "Export JSON lines"}
    har = httpx.get(server.base + links["Export HAR"])
    assert har.status_code == 200 and "attachment" in har.headers["content-disposition"]
    entries = har.json()["log"]["entries"]
    assert [(e["request"]["method"], e["request"]["url"]) for e in entries] == [
        ("POST", f"{server.base}/{token}/x")
    ]
    lines = httpx.get(server.base + links["Export JSON lines"]).content.splitlines()
    assert [json.loads(line)["body_text"] for line in lines] == ['{"a":1}']
