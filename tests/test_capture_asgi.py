"""The capture path through the project's ASGI application, as Daphne hands requests over."""

import asyncio
import base64
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from bins import writer
from bins.models import Bin, Capture, text_to_wire
from inspector.asgi import application

from .conftest import HOST, asgi_http

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_loop")]


def captures_of(bin_):
    return list(Capture.objects.filter(bin=bin_).order_by("id"))


@pytest.mark.parametrize(
    "method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND", "get"]
)
async def test_every_method_is_stored_as_sent(bin_, method):
    answer = await asgi_http(f"/{bin_.token}", method=method, body=b"x")
    assert answer.status == 200
    [c] = await database_sync_to_async(captures_of)(bin_)
    assert c.method == method
    assert c.body_bytes == b"x"


async def test_request_is_stored_byte_exact(bin_):
    headers = [
        (b"host", b"example.test"),
        (b"x-dup", b"one"),
        (b"x-dup", b"two"),
        (b"content-type", b"application/json; charset=utf-8"),
        (b"x-raw", b"\xff\xfe not utf-8"),
    ]
    body = b'{"event": "ping", "n": 1}'
    answer = await asgi_http(
        f"/{bin_.token}/hooks/a%20b/%2F",
        query=b"k=1&k=2&empty=&flag&enc=%26%3D",
        headers=headers,
        body=body,
    )
    assert answer.status == 200
    [c] = await database_sync_to_async(captures_of)(bin_)
    assert c.path == "/hooks/a%20b/%2F"
    assert c.query_string == "k=1&k=2&empty=&flag&enc=%26%3D"
    assert [(text_to_wire(n), text_to_wire(v)) for n, v in c.headers] == headers
    assert c.body_bytes == body
    assert c.body_size == len(body)
    assert c.content_type == "application/json; charset=utf-8"
    assert c.remote_addr == "203.0.113.7"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        bytes(range(256)),
        b"\xc3\x28 invalid utf-8",
        b"--zz\r\nnot really multipart",
        b'{"unterminated": ',
        b"\x00" * 1000,
    ],
)
async def test_any_body_is_kept_exactly(bin_, body):
    answer = await asgi_http(f"/{bin_.token}", body=body)
    assert answer.status == 200
    [c] = await database_sync_to_async(captures_of)(bin_)
    assert c.body_bytes == body
    assert base64.b64decode(c.as_json()["body_base64"]) == body


async def test_a_content_type_that_is_not_utf8_is_stored_like_any_other(bin_):
    headers = [(b"content-type", b"text/plain; charset=\xff\xfe")]
    ws = WebsocketCommunicator(application, f"/ws/bins/{bin_.token}/json/", headers=HOST)
    assert (await ws.connect())[0]
    answers = await asyncio.gather(
        asgi_http(f"/{bin_.token}/odd", headers=headers, body=b"x"),
        asgi_http(f"/{bin_.token}/plain", body=b"y"),
    )
    assert [a.status for a in answers] == [200, 200]
    [odd] = [c for c in await database_sync_to_async(captures_of)(bin_) if c.path == "/odd"]
    assert [(text_to_wire(n), text_to_wire(v)) for n, v in odd.headers] == headers
    assert odd.content_type == "text/plain; charset=\\xff\\xfe"
    frames = [json.loads(await ws.receive_from(timeout=5)) for _ in range(2)]
    assert {f["capture"]["path"] for f in frames} == {"/odd", "/plain"}
    await ws.disconnect()


async def test_replies_are_sandboxed_so_a_bin_cannot_serve_script_as_the_inspector(
    transactional_db,
):
    bin_ = await database_sync_to_async(Bin.objects.create)(
        response={"headers": [["content-type", "text/html"]], "body": "<script>alert(1)</script>"}
    )
    answer = await asgi_http(f"/{bin_.token}")
    assert (b"content-security-policy", b"sandbox") in answer.headers
    assert (b"x-content-type-options", b"nosniff") in answer.headers
    missing = await asgi_http("/3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f")
    assert (b"content-security-policy", b"sandbox") in missing.headers


async def test_body_in_several_chunks_is_joined(bin_):
    await asgi_http(f"/{bin_.token}", body=[b"ab", b"", b"cd", b"ef"])
    [c] = await database_sync_to_async(captures_of)(bin_)
    assert c.body_bytes == b"abcdef"


async def test_unknown_token_is_404_json_and_stores_nothing(transactional_db):
    answer = await asgi_http("/3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f/x", body=b"hello")
    assert answer.status == 404
    assert json.loads(answer.body)["error"]
    assert (b"content-type", b"application/json") in answer.headers
    assert await database_sync_to_async(Capture.objects.count)() == 0


async def test_non_canonical_token_is_404(bin_):
    for path in [f"/{str(bin_.token).upper()}", f"/{bin_.token.hex}"]:
        answer = await asgi_http(path, body=b"hello")
        assert answer.status == 404
        assert json.loads(answer.body)["error"]
    assert await database_sync_to_async(Capture.objects.count)() == 0


async def test_body_over_the_limit_is_413_and_stores_nothing(bin_, settings):
    settings.MAX_BODY_BYTES = 1000
    answer = await asgi_http(f"/{bin_.token}", body=[b"a" * 600, b"b" * 600])
    assert answer.status == 413
    assert "1000" in json.loads(answer.body)["error"]
    answer = await asgi_http(f"/{bin_.token}", body=b"c" * 1000)
    assert answer.status == 200
    assert [c.body_size for c in await database_sync_to_async(captures_of)(bin_)] == [1000]


async def test_reply_is_the_bins_configured_response(transactional_db):
    bin_ = await database_sync_to_async(Bin.objects.create)(
        response={"status": 503, "headers": [["Retry-After", "7"]], "body": "try later"}
    )
    answer = await asgi_http(f"/{bin_.token}", body=b"x")
    assert answer.status == 503
    assert (b"Retry-After", b"7") in answer.headers
    assert (b"content-length", b"9") in answer.headers
    assert answer.body == b"try later"
    assert len(await database_sync_to_async(captures_of)(bin_)) == 1


async def test_concurrent_requests_are_all_stored(bin_):
    n = 200
    answers = await asyncio.gather(
        *(asgi_http(f"/{bin_.token}/{i}", body=str(i).encode()) for i in range(n))
    )
    assert {a.status for a in answers} == {200}
    stored = await database_sync_to_async(captures_of)(bin_)
    assert sorted(c.body_bytes for c in stored) == sorted(str(i).encode() for i in range(n))


async def test_pruning_keeps_the_newest(bin_, settings):
    settings.CAPTURES_PER_BIN = 5
    for i in range(8):
        await asgi_http(f"/{bin_.token}/{i}")
    # Pruning runs in the writer's thread after the answer (it can never change one): once
    # that thread has done what was queued before this, the pruning is done.
    await writer.run_in_writer_thread(lambda: None)
    assert [c.path for c in await database_sync_to_async(captures_of)(bin_)] == [
        "/3",
        "/4",
        "/5",
        "/6",
        "/7",
    ]


async def test_capture_is_pushed_live_after_it_is_stored(bin_):
    ws = WebsocketCommunicator(application, f"/ws/bins/{bin_.token}/json/", headers=HOST)
    connected, _ = await ws.connect()
    assert connected
    answer = await asgi_http(f"/{bin_.token}/live", body=b'{"n": 1}')
    assert answer.status == 200
    frame = json.loads(await ws.receive_from(timeout=5))
    assert frame["type"] == "capture"
    assert frame["capture"]["path"] == "/live"
    assert frame["capture"]["body_text"] == '{"n": 1}'
    stored = await database_sync_to_async(Capture.objects.get)(bin=bin_, seq=frame["capture"]["id"])
    assert stored.as_json() == frame["capture"]
    await ws.disconnect()


async def test_django_pages_are_not_captured(transactional_db):
    answer = await asgi_http("/healthz", method="GET")
    assert answer.status == 200
    assert json.loads(answer.body)["ok"] is True
