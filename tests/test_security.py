"""A public instance is safe: a bin's reply can never act on the instance, and the instance can
never be turned on others (or on itself). Real server processes, raw sockets where the bytes on
the wire are the point."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import time

import httpx
import pytest
from django.test import Client

from bins.models import Bin, Capture, Delivery

from .conftest import asgi_http
from .servers import ROOT, free_port, raw_request
from .targets import start_target

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def target():
    t = start_target()
    yield t
    t.server.shutdown()


def new_bin(base: str, **settings) -> str:
    r = httpx.post(f"{base}/api/bins", json=settings)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def newest(base: str, token: str) -> int:
    return httpx.get(f"{base}/api/bins/{token}/captures?limit=1").json()["captures"][0]["id"]


def patch(base: str, token: str, data: dict) -> httpx.Response:
    return httpx.patch(f"{base}/api/bins/{token}", json=data)


# --- 1 and 2: what a bin's reply may be ----------------------------------------------------


@pytest.mark.parametrize("status", [100, 101, 102, 103, 199, 600, "200", 200.0, True])
def test_a_reply_status_outside_200_to_599_is_refused(client: Client, status):
    bin_ = Bin.objects.create()
    r = client.patch(
        f"/api/bins/{bin_.token}",
        json.dumps({"response": {"status": status, "body": "HTTP/1.1 200 OK\r\n\r\n<script>"}}),
        "application/json",
    )
    assert r.status_code == 400
    assert "response.status must be an integer from 200 to 599" in r.json()["error"]
    assert Bin.objects.get(pk=bin_.pk).response == {}


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("Set-Cookie", "last_bin=3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f; Path=/", "own origin"),
        ("set-cookie2", "a=1", "own origin"),
        ("Clear-Site-Data", '"*"', "own origin"),
        ("Alt-Svc", 'h2="attacker.example:443"', "own origin"),
        ("NEL", '{"report_to": "x", "max_age": 9999999}', "own origin"),
        ("Report-To", '{"group": "x"}', "own origin"),
        ("Strict-Transport-Security", "max-age=0", "own origin"),
        ("Upgrade", "websocket", "set by the server"),
        ("Connection", "upgrade", "set by the server"),
        ("X A", "1", "not a valid header name"),
        ("X:A", "1", "not a valid header name"),
        ("X-Ä", "1", "not a valid header name"),
        ("", "1", "not a valid header name"),
        ("X-A", "a\x0bb", "control character"),
        ("X-A", "a\x1b[31m", "control character"),
        ("X-A", "a\x85b", "control character"),
        ("X-A", "a\r\nSet-Cookie: x=1", "control character"),
        ("X-A", "a\x00", "control character"),
        ("X-A", "€", "Latin-1"),
    ],
)
def test_a_reply_header_that_could_act_on_the_origin_is_refused(client: Client, name, value, why):
    bin_ = Bin.objects.create()
    r = client.patch(
        f"/api/bins/{bin_.token}",
        json.dumps({"response": {"headers": [["X-Fine", "1"], [name, value]]}}),
        "application/json",
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error.startswith("response.headers[1]") and why in error, error
    assert Bin.objects.get(pk=bin_.pk).response == {}


@pytest.mark.usefixtures("live_loop")
async def test_settings_stored_before_the_rules_are_not_served(transactional_db):
    from channels.db import database_sync_to_async

    bin_ = await database_sync_to_async(Bin.objects.create)(
        response={
            "status": 101,
            "headers": [["Set-Cookie", "a=1"], ["X-Ok", "1"], ["Upgrade", "websocket"]],
            "body": "hi",
        }
    )
    answer = await asgi_http(f"/{bin_.token}", body=b"x")
    assert answer.status == 200
    names = [n.lower() for n, _ in answer.headers]
    assert b"set-cookie" not in names and b"upgrade" not in names
    assert (b"X-Ok", b"1") in answer.headers and answer.body == b"hi"


def test_no_body_goes_out_where_http_forbids_one(servers):
    s = servers()
    token = new_bin(s.base)
    for status in (204, 304):
        assert patch(s.base, token, {"response": {"status": status, "body": "SMUGGLED"}}).is_success
        answer = raw_request(
            s.port,
            f"POST /{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n".encode()
            + b"Connection: close\r\n\r\nx",
        )
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status}".encode()), answer
        assert rest == b"", answer
    assert patch(s.base, token, {"response": {"status": 200, "body": "hello"}}).is_success
    answer = raw_request(
        s.port, f"HEAD /{token}/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"\r\nContent-Length: 5" in head, answer
    assert rest == b""
    # Each was stored all the same.
    captures = httpx.get(f"{s.base}/api/bins/{token}/captures").json()["captures"]
    assert [c["method"] for c in captures] == ["HEAD", "POST", "POST"]


# --- 5: forward loops ----------------------------------------------------------------------


def test_two_bins_forwarding_to_each_other_stop_after_one_hop(servers):
    s = servers()
    a, b = new_bin(s.base), new_bin(s.base)
    assert patch(s.base, a, {"forward_url": f"{s.base}/{b}/from-a"}).is_success
    assert patch(s.base, b, {"forward_url": f"{s.base}/{a}/from-b"}).is_success
    assert httpx.post(f"{s.base}/{a}/start", content=b"ping").status_code == 200
    time.sleep(3)
    in_a = httpx.get(f"{s.base}/api/bins/{a}/captures").json()["captures"]
    in_b = httpx.get(f"{s.base}/api/bins/{b}/captures").json()["captures"]
    assert [c["path"] for c in in_a] == ["/start"]
    assert [c["path"] for c in in_b] == ["/from-a"]
    # The forwarded capture carries the mark of the instance that sent it.
    assert "webhook-inspector-hop" in [n for n, _ in in_b[0]["headers"]]
    assert "not forwarded again" in s.log()


def test_a_percent_encoded_self_forward_is_refused(client: Client):
    bin_ = Bin.objects.create()
    encoded = str(bin_.token).replace("-", "%2D").replace("a", "%61")
    r = client.patch(
        f"/api/bins/{bin_.token}",
        json.dumps({"forward_url": f"http://x.test/{encoded}"}),
        "application/json",
    )
    assert r.status_code == 400 and "forever" in r.json()["error"]


def test_what_the_instance_sends_can_never_drive_its_own_api(servers, target):
    s = servers()
    victim = new_bin(s.base)
    # The victim bin has a capture and a last target: its resend API would send again.
    assert httpx.post(f"{s.base}/{victim}", content=b"x").status_code == 200
    api = f"{s.base}/api/bins/{victim}/captures/{newest(s.base, victim)}/resend"
    assert httpx.post(api, json={"target_url": target.url}).is_success
    assert len(target.received) == 1
    attacker = new_bin(s.base)
    assert patch(s.base, attacker, {"forward_url": api}).is_success
    for _ in range(3):
        assert httpx.post(f"{s.base}/{attacker}", content=b"go").status_code == 200
    time.sleep(2)
    assert len(target.received) == 1  # the victim's resend never ran again
    [capture, *_] = httpx.get(f"{s.base}/api/bins/{attacker}/captures").json()["captures"]
    deliveries = httpx.get(
        f"{s.base}/api/bins/{attacker}/captures/{capture['id']}/deliveries"
    ).json()["deliveries"]
    assert deliveries and {d["status"] for d in deliveries} == {508}
    # The mark is checked, not the target: a resend to the pages is refused the same way.
    r = httpx.post(f"{s.base}/{victim}", content=b"y")
    assert r.status_code == 200
    answer = httpx.post(
        f"{s.base}/api/bins/{victim}/captures/{newest(s.base, victim)}/resend",
        json={"target_url": f"{s.base}/"},
    ).json()
    assert answer["status"] == 508


# --- 6: resend rate limit ------------------------------------------------------------------


def test_resends_are_rate_limited_per_bin_and_the_answer_says_when(servers, target):
    s = servers()
    token = new_bin(s.base)
    httpx.post(f"{s.base}/{token}", content=b"x" * 1000)
    url = f"{s.base}/api/bins/{token}/captures/{newest(s.base, token)}/resend"

    async def burst():
        async with httpx.AsyncClient(timeout=10) as http:
            return await asyncio.gather(
                *(http.post(url, json={"target_url": target.url}) for _ in range(10))
            )

    answers = asyncio.run(burst())
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) in (5, 6) and statuses.count(429) >= 4, statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert "Too many resends" in refused.json()["error"]
    assert len(target.received) == statuses.count(201)
    # Another bin has its own allowance.
    other = new_bin(s.base)
    httpx.post(f"{s.base}/{other}", content=b"y")
    r = httpx.post(
        f"{s.base}/api/bins/{other}/captures/{newest(s.base, other)}/resend",
        json={"target_url": target.url},
    )
    assert r.status_code == 201


def test_the_page_says_when_resends_are_rate_limited(client: Client, settings, target):
    settings.RESEND_RATE_LIMIT = 1
    bin_ = Bin.objects.create()
    capture = Capture.objects.create(bin=bin_, method="POST", body=b"x", body_size=1)
    url = f"/bins/{bin_.token}/captures/{capture.seq}/resend/"
    first = client.post(url, {"target_url": target.url}, HTTP_HX_REQUEST="true")
    assert first.status_code == 200
    second = client.post(url, {"target_url": target.url}, HTTP_HX_REQUEST="true")
    assert second.status_code == 429 and second["Retry-After"] == "1"
    assert "Too many resends for this bin" in second.content.decode()
    assert Delivery.objects.count() == 1


# --- 7: DNS rebinding -----------------------------------------------------------------------


def test_pages_and_api_answer_only_to_the_instances_own_names(servers):
    s = servers()
    port = s.port
    for host in ("attacker.example", f"attacker.example:{port}", "192.168.1.5"):
        for path in ("/api/bins", "/"):
            r = httpx.post(f"{s.base}{path}", headers={"host": host})
            assert r.status_code == 400, (host, path, r.status_code)
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert httpx.post(f"{s.base}/api/bins", headers={"host": host}).status_code == 201
    # PUBLIC_URL's host is added to the loopback names.
    t = servers(PUBLIC_URL="https://hooks.example.com")
    assert httpx.post(f"{t.base}/api/bins", headers={"host": "hooks.example.com"}).is_success
    assert httpx.post(f"{t.base}/api/bins", headers={"host": "other.example"}).status_code == 400


def ws_handshake(port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade"]
    lines += ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock.recv(4096)


def test_a_stream_opens_only_for_the_instances_own_pages(servers):
    s = servers()
    token = new_bin(s.base)
    path = f"/ws/bins/{token}/json/"
    own = f"127.0.0.1:{s.port}"
    ok = ws_handshake(s.port, path, {"Host": own, "Origin": f"http://{own}"})
    assert ok.startswith(b"HTTP/1.1 101"), ok
    assert ws_handshake(s.port, path, {"Host": own}).startswith(b"HTTP/1.1 101")
    refused = [
        # DNS rebinding: Origin and Host agree, but the name is not ours.
        {"Host": f"attacker.example:{s.port}", "Origin": f"http://attacker.example:{s.port}"},
        # Another site's page.
        {"Host": own, "Origin": "http://attacker.example"},
        # The same host under another scheme is another origin.
        {"Host": own, "Origin": f"https://{own}"},
        {"Host": own, "Origin": "null"},
    ]
    for headers in refused:
        answer = ws_handshake(s.port, path, headers)
        assert not answer.startswith(b"HTTP/1.1 101"), (headers, answer)


def test_private_targets_are_denied_by_default_unless_listening_on_loopback_only(servers, target):
    for env, allowed in (({}, True), ({"HOST": "0.0.0.0"}, False)):
        s = servers(**env)
        token = new_bin(s.base)
        httpx.post(f"{s.base}/{token}", content=b"x")
        delivery = httpx.post(
            f"{s.base}/api/bins/{token}/captures/{newest(s.base, token)}/resend",
            json={"target_url": target.url},
        ).json()
        if allowed:
            assert delivery["status"] == 200, delivery
        else:
            assert "RESEND_PRIVATE_TARGETS=deny" in delivery["error"], delivery
    assert len(target.received) == 1


# --- 8: bins for free -----------------------------------------------------------------------


def test_new_bins_are_rate_limited_per_client_address(servers):
    s = servers(BIN_CREATE_RATE_LIMIT="3")
    # A client address of its own (all of 127/8 is loopback): with Redis the count is shared
    # by every process, and a rerun within the minute must not inherit this one's.
    address = (
        f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.{random.randrange(2, 255)}"
    )
    client = httpx.Client(transport=httpx.HTTPTransport(local_address=address))
    answers = [client.post(f"{s.base}/api/bins") for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert "Too many new bins" in answers[3].json()["error"]
    assert int(answers[3].headers["retry-after"]) >= 1
    # A crawler's cookie-less GET / is refused the same way, with a page that says why.
    page = client.get(f"{s.base}/")
    assert page.status_code == 429 and "Too many new bins" in page.text
    assert Bin.objects.count() == 3
    # Another address has its own allowance.
    assert httpx.post(f"{s.base}/api/bins").status_code == 201


def test_pages_are_kept_out_of_search_engines(client: Client):
    r = client.get("/", follow=True)
    assert r.status_code == 200
    assert r["X-Robots-Tag"] == "noindex, nofollow"
    assert '<meta name="robots" content="noindex, nofollow">' in r.content.decode()
    assert client.get("/robots.txt").content == b"User-agent: *\nDisallow: /\n"


# --- 9: a separate capture origin -----------------------------------------------------------


def test_capture_url_serves_captures_on_their_own_origin_only(servers):
    port = free_port()
    app, hooks = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
    servers(port=port, PUBLIC_URL=app, CAPTURE_URL=hooks)
    created = httpx.post(f"{app}/api/bins").json()
    token = created["token"]
    assert created["capture_url"] == f"{hooks}/{token}"
    assert created["inspect_url"] == f"{app}/bins/{token}/"
    assert httpx.post(f"{hooks}/{token}/x", content=b"1").status_code == 200
    # The app's host answers no captures, and the capture host no pages, API or streams.
    wrong = httpx.post(f"{app}/{token}/x", content=b"2")
    assert wrong.status_code == 404 and hooks in wrong.json()["error"]
    for path in ("/", f"/bins/{token}/", f"/api/bins/{token}", "/static/bins/app.css"):
        r = httpx.get(f"{hooks}{path}")
        assert r.status_code == 404, path
        assert r.json()["error"] == "This host serves capture URLs only."
    handshake = ws_handshake(port, f"/ws/bins/{token}/json/", {"Host": f"localhost:{port}"})
    assert not handshake.startswith(b"HTTP/1.1 101")
    captures = httpx.get(f"{app}/api/bins/{token}/captures").json()["captures"]
    assert [c["body_text"] for c in captures] == ["1"]
    page = httpx.get(f"{app}/bins/{token}/")
    assert f'value="{hooks}/{token}"' in page.text


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CAPTURES_PER_BIN", "-1"),
        ("MAX_BODY_BYTES", "ten"),
        ("BIN_RATE_LIMIT", "-2"),
        ("RESEND_RATE_LIMIT", "fast"),
        ("BIN_CREATE_RATE_LIMIT", "1.5"),
        ("RESEND_PRIVATE_TARGETS", "maybe"),
        ("PUBLIC_URL", "hooks.example.com"),
        ("CAPTURE_URL", "ftp://hooks.example.com"),
    ],
)
def test_an_invalid_setting_stops_the_server_with_a_message_naming_it(tmp_path, name, value):
    daphne = [sys.executable, "-m", "daphne", "--port", "0", "inspector.asgi:application"]
    env = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path), name: value}
    done = subprocess.run(daphne, cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode != 0
    assert f"Configuration error: {name}" in done.stderr.decode(), done.stderr.decode()[-2000:]
