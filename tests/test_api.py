"""The JSON API, through Django's test client (it is a plain Django app)."""

import base64
import json

import pytest

from bins.models import Bin, Capture

pytestmark = pytest.mark.django_db(transaction=True)


def make_capture(bin_, body=b"", method="POST", path="", **kw):
    return Capture.objects.create(
        bin=bin_, method=method, path=path, body=body, body_size=len(body), **kw
    )


def test_create_bin(client):
    r = client.post("/api/bins", content_type="application/json")
    assert r.status_code == 201
    data = r.json()
    token = data["token"]
    assert Bin.objects.filter(token=token).exists()
    assert data["capture_url"] == f"http://testserver/{token}"
    assert data["inspect_url"] == f"http://testserver/bins/{token}/"
    assert data["response"]["status"] == 200
    assert data["forward_url"] is None and data["signature"] is None


def test_create_bin_with_a_response(client):
    body = {"response": {"status": 201, "body": "made"}}
    r = client.post("/api/bins", json.dumps(body), content_type="application/json")
    assert r.status_code == 201
    assert r.json()["response"]["status"] == 201
    assert r.json()["response"]["body"] == "made"


def test_public_url_sets_the_capture_url(client, settings):
    settings.PUBLIC_URL = "https://hooks.example.com"
    data = client.post("/api/bins", content_type="application/json").json()
    assert data["capture_url"] == f"https://hooks.example.com/{data['token']}"


def test_get_patch_delete_bin(client, bin_):
    url = f"/api/bins/{bin_.token}"
    assert client.get(url).json()["token"] == str(bin_.token)
    r = client.patch(url, json.dumps({"response": {"status": 202}}), "application/json")
    assert r.status_code == 200
    assert r.json()["response"]["status"] == 202
    # PATCH merges: the body set earlier stays when only headers change.
    client.patch(url, json.dumps({"response": {"body": "hi"}}), "application/json")
    r = client.patch(url, json.dumps({"response": {"headers": [["X-A", "1"]]}}), "application/json")
    assert r.json()["response"] == {
        "status": 202,
        "body": "hi",
        "headers": [["X-A", "1"]],
        "delay_ms": 0,
    }
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"colour": "red"}', "unknown field"),
        ('{"response": {"status": "200"}}', "status"),
        ('{"response": {"status": 99}}', "status"),
        ('{"response": {"status": 200, "bogus": 1}}', "unknown response field"),
        ('{"response": {"headers": [["X-A"]]}}', "pair"),
        ('{"response": {"headers": [["Bad Name", "1"]]}}', "header name"),
        ('{"response": {"headers": [["X-A", "a\\r\\nInjected: 1"]]}}', "line break"),
        ('{"response": {"headers": [["Content-Length", "5"]]}}', "set by the server"),
        ('{"response": {"body": 5}}', "body"),
        ('{"response": {"delay_ms": -1}}', "delay_ms"),
        ('{"forward_url": "ftp://x"}', "forward_url"),
        ('{"forward_url": "http://a..b/"}', "invalid host"),
        ('{"signature": {"scheme": "stripe"}}', "signature"),
    ],
)
def test_invalid_patch_is_400_and_changes_nothing(client, bin_, payload, message):
    before = Bin.objects.get(pk=bin_.pk).response_config
    r = client.patch(f"/api/bins/{bin_.token}", payload, "application/json")
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert Bin.objects.get(pk=bin_.pk).response_config == before


def test_a_bin_cannot_forward_to_itself(client, bin_):
    url = f"/api/bins/{bin_.token}"
    r = client.patch(
        url, json.dumps({"forward_url": f"http://x.test/{bin_.token}"}), "application/json"
    )
    assert r.status_code == 400 and "forever" in r.json()["error"]


def test_unknown_bin_and_bad_tokens_are_json_404(client):
    for url in [
        "/api/bins/3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f",
        "/api/bins/3F2B8C1E-9D4A-4C6B-8E2F-1A2B3C4D5E6F/captures",
        "/api/bins/not-a-token",
    ]:
        r = client.get(url)
        assert r.status_code == 404
        assert r["Content-Type"] == "application/json"
        assert r.json()["error"]


def test_wrong_method_is_405_json(client, bin_):
    r = client.put(f"/api/bins/{bin_.token}")
    assert r.status_code == 405
    assert "PATCH" in r.json()["error"]


def test_list_captures_newest_first_with_paging_and_filters(client, bin_):
    ids = [
        make_capture(bin_, path=f"/{i}", method="GET" if i % 2 else "POST").seq for i in range(6)
    ]
    url = f"/api/bins/{bin_.token}/captures"
    assert [c["id"] for c in client.get(url).json()["captures"]] == ids[::-1]
    assert [c["id"] for c in client.get(url, {"limit": 2}).json()["captures"]] == ids[:3:-1]
    page = client.get(url, {"before": ids[3], "limit": 2}).json()["captures"]
    assert [c["id"] for c in page] == [ids[2], ids[1]]
    after = client.get(url, {"after": ids[3]}).json()["captures"]
    assert [c["id"] for c in after] == [ids[5], ids[4]]
    # Catching up: `after` with `limit` gives the captures right after that id, newest first.
    first_two = client.get(url, {"after": ids[0], "limit": 2}).json()["captures"]
    assert [c["id"] for c in first_two] == [ids[2], ids[1]]
    gets = client.get(url, {"method": "GET"}).json()["captures"]
    assert {c["method"] for c in gets} == {"GET"} and len(gets) == 3
    assert client.get(url, {"limit": "x"}).status_code == 400
    assert client.get(url, {"limit": 0}).status_code == 400
    assert client.get(url, {"colour": "red"}).status_code == 400


def test_capture_shape(client, bin_):
    c = make_capture(
        bin_,
        body=b"\xff\x00binary",
        path="/a%20b",
        query_string="x=1",
        headers_json=json.dumps([["x-a", "1"], ["x-a", "2"]]),
        content_type="application/octet-stream",
        remote_addr="198.51.100.4",
    )
    data = client.get(f"/api/bins/{bin_.token}/captures/{c.seq}").json()
    assert set(data) == {
        "id",
        "method",
        "path",
        "query_string",
        "headers",
        "body_size",
        "body_base64",
        "body_text",
        "content_type",
        "remote_addr",
        "received_at",
        "signature",
        "event_id",
        "duplicate_of",
        "headers_base64",
        "body_omitted",
        "provider",
        "event_type",
        "event_delivery",
        "event_after_s",
        "answer",
    }
    assert data["headers"] == [["x-a", "1"], ["x-a", "2"]]
    assert base64.b64decode(data["body_base64"]) == b"\xff\x00binary"
    assert data["body_text"] is None
    assert data["received_at"].endswith("Z")


def test_raw_body_is_exact_and_a_download(client, bin_):
    body = b"<script>alert(1)</script>\xff"
    c = make_capture(bin_, body=body, content_type="text/html")
    r = client.get(f"/api/bins/{bin_.token}/captures/{c.seq}/raw")
    assert r.status_code == 200
    assert r.content == body
    assert r["Content-Type"] == "application/octet-stream"
    assert r["Content-Disposition"].startswith("attachment")
    assert "sandbox" in r["Content-Security-Policy"]


def test_delete_captures(client, bin_):
    other = Bin.objects.create()
    a, b = make_capture(bin_), make_capture(bin_)
    kept = make_capture(other)
    assert client.delete(f"/api/bins/{bin_.token}/captures/{a.seq}").status_code == 204
    assert client.get(f"/api/bins/{bin_.token}/captures/{a.seq}").status_code == 404
    # A capture is only reachable through its own bin.
    assert client.get(f"/api/bins/{bin_.token}/captures/{kept.id}").status_code == 404
    assert client.delete(f"/api/bins/{bin_.token}/captures").json() == {"deleted": 1}
    assert not Capture.objects.filter(id=b.id).exists()
    assert Capture.objects.filter(id=kept.id).exists()


def test_list_filters_search_text_anywhere_and_the_verdict(client, bin_):
    hit_body = make_capture(bin_, body=b'{"customer": "ada@example.com"}', path="/a")
    hit_header = make_capture(bin_, path="/b", headers_json=json.dumps([["x-user", "ada"]]))
    hit_path = make_capture(bin_, path="/users/ada")
    make_capture(bin_, body=b"nothing here", path="/c")
    late = make_capture(bin_, body=b"x" * (1024 * 1024) + b"ada", path="/d")  # past the first MiB
    url = f"/api/bins/{bin_.token}/captures"
    found = {c["id"] for c in client.get(url, {"q": "ada"}).json()["captures"]}
    assert found == {hit_body.seq, hit_header.seq, hit_path.seq}
    assert late.seq not in found
    Capture.objects.filter(pk=hit_body.pk).update(
        signature={"scheme": "stripe", "valid": True, "reason": "valid"}
    )
    Capture.objects.filter(pk=hit_path.pk).update(
        signature={"scheme": "stripe", "valid": False, "reason": "no Stripe-Signature header"}
    )
    assert [c["id"] for c in client.get(url, {"valid": "true"}).json()["captures"]] == [
        hit_body.seq
    ]
    assert [c["id"] for c in client.get(url, {"valid": "false"}).json()["captures"]] == [
        hit_path.seq
    ]
    assert client.get(url, {"valid": "maybe"}).status_code == 400
