"""The capture rules as plain functions: no HTTP, no server."""

import base64
import json
import uuid

import pytest

from bins import capture
from bins.bincache import BinInfo
from bins.models import DEFAULT_RESPONSE, text_to_wire
from bins.replies import Reply, plan_for

TOKEN = "3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f"


@pytest.mark.parametrize(
    ("raw", "sub_path"),
    [
        (f"/{TOKEN}", ""),
        (f"/{TOKEN}/", "/"),
        (f"/{TOKEN}/a/b%20c/%2F", "/a/b%20c/%2F"),
        (f"/{TOKEN}//double", "//double"),
    ],
)
def test_parse_target_keeps_the_sub_path_as_sent(raw, sub_path):
    target = capture.parse_target(raw.encode())
    assert target is not None
    assert target.token == uuid.UUID(TOKEN)
    assert target.sub_path == sub_path


@pytest.mark.parametrize(
    "raw",
    [
        f"/{TOKEN.upper()}",
        f"/{TOKEN.replace('-', '')}",
        "/3f2b8c1e-9d4a-1c6b-8e2f-1a2b3c4d5e6f",  # version 1, not 4
        f"/{TOKEN[:-1]}",
        f"/{TOKEN}x",
    ],
)
def test_other_forms_of_a_token_are_not_targets(raw):
    assert capture.parse_target(raw.encode()) is None


def test_only_token_shaped_paths_go_to_the_capture_handler():
    assert capture.is_capture_path(f"/{TOKEN}/x".encode())
    assert capture.is_capture_path(f"/{TOKEN.upper()}".encode())  # answered 404 there
    for path in [b"/", b"/api/bins", b"/bins/", b"/healthz", b"/static/bins/app.css"]:
        assert not capture.is_capture_path(path)


def test_build_capture_keeps_everything_byte_exact():
    headers = [
        (b"x-dup", b"1"),
        (b"x-dup", b"2"),
        (b"content-type", b"application/octet-stream"),
        (b"x-bytes", b"caf\xc3\xa9 \xff\x00"),
    ]
    body = bytes(range(256)) * 3
    info = BinInfo(7, uuid.UUID(TOKEN), "", plan_for(None, None), None)
    c = capture.build_capture(info, "fancyVerb", "/p%2Fq", b"a=1&a=2&b", headers, body, "::1")
    assert (c.bin_id, c.method, c.path, c.query_string) == (7, "fancyVerb", "/p%2Fq", "a=1&a=2&b")
    assert c.body == body and c.body_size == 768
    assert c.content_type == "application/octet-stream"
    assert c.remote_addr == "::1"
    stored = json.loads(c.headers_json)
    assert [(text_to_wire(n), text_to_wire(v)) for n, v in stored] == headers
    # The API shows undecodable bytes readably, valid UTF-8 as text.
    shape = c.live_json(64 * 1024)
    assert shape["headers"][3] == ["x-bytes", "café \\xff\x00"]
    # ... and gives the exact bytes where a header is not UTF-8.
    exact = [(base64.b64decode(n), base64.b64decode(v)) for n, v in shape["headers_base64"]]
    assert exact == headers
    assert c.received_at.tzinfo is not None


def test_a_bins_reply_defaults_and_configured():
    default = plan_for(None, None).fixed
    assert default.status == DEFAULT_RESPONSE["status"]
    assert default.body == b'{"ok": true}'
    custom = plan_for(
        {"status": 418, "headers": [["X-Teapot", "yes"]], "body": "short and stout", "delay_ms": 5},
        None,
    ).fixed
    assert custom == Reply(418, [(b"X-Teapot", b"yes")], b"short and stout", 5)


def test_error_replies_are_json():
    reply = capture.too_large(10)
    assert reply.status == 413
    assert json.loads(reply.body)["error"].startswith("Body larger")
    assert json.loads(capture.NOT_FOUND.body)["error"]
