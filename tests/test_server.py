"""The real thing: a Daphne process started as `make run` starts it, real HTTP and websockets."""

import asyncio
import base64
import json

import httpx
import pytest
import websockets

from .servers import database_url, free_port, raw_request, start_server  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(transactional_db, tmp_path):
    proc = start_server(tmp_path)
    yield proc.base
    proc.stop()


def test_captures_arrive_live_and_come_back_byte_exact(server):
    asyncio.run(_captures_arrive_live(server))


async def _captures_arrive_live(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        bin_ = (await http.post("/api/bins")).json()
        token = bin_["token"]
        assert bin_["capture_url"] == f"{base}/{token}"
        ws_base = base.replace("http", "ws", 1)
        async with (
            websockets.connect(f"{ws_base}/ws/bins/{token}/json/") as stream,
            websockets.connect(f"{ws_base}/ws/bins/{token}/", origin=base) as page,
        ):
            assert 'id="capture-list"' in await asyncio.wait_for(page.recv(), 5)
            binary = bytes(range(256)) * 4
            malformed = b"--zz\r\nthis is not multipart at all"
            sent = [
                ("POST", "/json?x=1", {"content-type": "application/json"}, b'{"hello": "world"}'),
                ("PUT", "/file.bin", {"content-type": "application/octet-stream"}, binary),
                ("POST", "/form", {"content-type": "multipart/form-data; boundary=zz"}, malformed),
                ("PURGE", "", {}, b""),
            ]
            for method, path, headers, body in sent:
                r = await http.request(method, f"/{token}{path}", headers=headers, content=body)
                assert r.status_code == 200, (method, r.text)
                assert r.json() == {"ok": True}
                assert "server" not in r.headers
            frames = [json.loads(await asyncio.wait_for(stream.recv(), 5)) for _ in sent]
            rows = [await asyncio.wait_for(page.recv(), 5) for _ in sent]
        for frame, (method, path, _, body) in zip(frames, sent, strict=True):
            capture = frame["capture"]
            assert capture["method"] == method
            assert (
                capture["path"] + ("?" + capture["query_string"] if capture["query_string"] else "")
                == path
            )
            assert base64.b64decode(capture["body_base64"]) == body
            raw = await http.get(f"/api/bins/{token}/captures/{capture['id']}/raw")
            assert raw.content == body
        assert "/file.bin" in rows[1]
        listed = (await http.get(f"/api/bins/{token}/captures")).json()["captures"]
        assert [c["id"] for c in listed] == [f["capture"]["id"] for f in reversed(frames)]


def test_repeated_headers_and_query_keys_over_a_raw_socket(server):
    port = int(server.rsplit(":", 1)[1])
    token = httpx.post(f"{server}/api/bins").json()["token"]
    request = (
        f"POST /{token}/raw%2Fpath?k=1&k=2&k=%20 HTTP/1.1\r\n"
        "Host: example.test\r\n"
        "X-Dup: one\r\n"
        "X-Other: middle\r\n"
        "X-Dup: two\r\n"
        "Content-Length: 3\r\n"
        "Connection: close\r\n\r\nabc"
    ).encode()
    assert raw_request(port, request).startswith(b"HTTP/1.1 200")
    [capture] = httpx.get(f"{server}/api/bins/{token}/captures").json()["captures"]
    assert capture["path"] == "/raw%2Fpath"
    assert capture["query_string"] == "k=1&k=2&k=%20"
    # Daphne groups a repeated name at its first place (see the README's known limits).
    assert capture["headers"] == [
        ["host", "example.test"],
        ["x-dup", "one"],
        ["x-dup", "two"],
        ["x-other", "middle"],
        ["content-length", "3"],
        ["connection", "close"],
    ]
    assert capture["body_text"] == "abc"
