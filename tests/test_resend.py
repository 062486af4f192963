"""Resend and auto-forward against a real HTTP target; signatures checked with the providers'
own libraries."""

import asyncio
import base64
import json
import socket
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe
from channels.db import database_sync_to_async

from bins import hop
from bins.models import Bin, Capture, Delivery
from bins.outgoing import is_private

from .conftest import asgi_http
from .servers import free_port
from .targets import start_target

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_loop")]


@pytest.fixture
def target():
    t = start_target()
    yield t
    t.server.shutdown()


async def capture_via_asgi(bin_, path="/hook", method="POST", headers=(), body=b""):
    answer = await asgi_http(f"/{bin_.token}{path}", method=method, headers=headers, body=body)
    assert answer.status == 200
    return await database_sync_to_async(lambda: Capture.objects.filter(bin=bin_).latest("id"))()


async def api_resend(client_token, capture_id, payload):
    from django.test import AsyncClient

    r = await AsyncClient().post(
        f"/api/bins/{client_token}/captures/{capture_id}/resend",
        json.dumps(payload),
        content_type="application/json",
    )
    return r.status_code, r.json()


async def test_resend_sends_method_headers_and_body_byte_for_byte(bin_, target):
    headers = [
        (b"host", b"hooks.example.test"),
        (b"content-type", b"application/octet-stream"),
        (b"x-dup", b"1"),
        (b"x-dup", b"2"),
        (b"x-odd", b"caf\xc3\xa9"),
        (b"connection", b"keep-alive"),
        (b"content-length", b"256"),
    ]
    body = bytes(range(256))
    c = await capture_via_asgi(bin_, method="PATCH", headers=headers, body=body)
    status, delivery = await api_resend(bin_.token, c.seq, {"target_url": target.url + "/in?x=1"})
    assert status == 201
    assert delivery["status"] == 200
    assert base64.b64decode(delivery["body_base64"]) == b"thanks"
    assert ["X-Target", "yes"] in delivery["headers"]
    assert delivery["error"] is None and delivery["duration_ms"] > 0
    got = target.received[-1]
    assert (got.method, got.path, got.body) == ("PATCH", "/in?x=1", body)
    names = [n.lower() for n, _ in got.headers]
    assert (
        names.count("host") == 1
        and target.header("host") == f"127.0.0.1:{target.server.server_port}"
    )
    sent = [(n.lower(), v) for n, v in got.headers if n.lower() not in ("host", "content-length")]
    assert sent == [
        ("content-type", "application/octet-stream"),
        ("x-dup", "1"),
        ("x-dup", "2"),
        ("x-odd", "caf\xc3\xa9"),  # http.server decodes header bytes as latin-1
        # This instance's mark, added last: a capture that carries it is never auto-forwarded.
        ("webhook-inspector-hop", hop.mark().decode()),
    ]
    assert target.header("content-length") == "256"
    # The bin remembers the target for the next one-click resend.
    status, again = await api_resend(bin_.token, c.seq, {})
    assert status == 201 and again["target_url"] == target.url + "/in?x=1"


async def test_stripe_and_standard_webhooks_signatures_still_verify(bin_, target):
    payload = json.dumps({"id": "evt_1", "object": "event", "type": "ping"}).encode()
    secret = "whsec_test_secret"
    ts = int(time.time())
    signed = stripe.WebhookSignature._compute_signature(f"{ts}.{payload.decode()}", secret)
    c = await capture_via_asgi(
        bin_,
        headers=[
            (b"content-type", b"application/json"),
            (b"stripe-signature", f"t={ts},v1={signed}".encode()),
        ],
        body=payload,
    )
    await api_resend(bin_.token, c.seq, {"target_url": target.url})
    got = target.received[-1]
    event = stripe.Webhook.construct_event(got.body, target.header("stripe-signature"), secret)
    assert event["id"] == "evt_1"

    sw_secret = "whsec_" + base64.b64encode(b"standard-webhooks-secret-32bytes").decode()
    hook = standardwebhooks.Webhook(sw_secret)
    now = datetime.now(UTC)
    signature = hook.sign("msg_1", now, payload.decode())
    c = await capture_via_asgi(
        bin_,
        headers=[
            (b"webhook-id", b"msg_1"),
            (b"webhook-timestamp", str(int(now.timestamp())).encode()),
            (b"webhook-signature", signature.encode()),
        ],
        body=payload,
    )
    await api_resend(bin_.token, c.seq, {"target_url": target.url})
    got = target.received[-1]
    assert hook.verify(got.body, {n.lower(): v for n, v in got.headers})["id"] == "evt_1"


async def test_edit_before_resend_changes_only_that_send(bin_, target):
    c = await capture_via_asgi(bin_, headers=[(b"x-a", b"1")], body=b"original")
    status, delivery = await api_resend(
        bin_.token,
        c.seq,
        {"target_url": target.url, "method": "PUT", "headers": [["X-B", "2"]], "body": "edited"},
    )
    assert status == 201 and delivery["edited"] is True and delivery["method"] == "PUT"
    got = target.received[-1]
    assert (got.method, got.body) == ("PUT", b"edited")
    assert target.header("x-b") == "2"
    assert "x-a" not in [n.lower() for n, _ in got.headers]
    stored = await database_sync_to_async(Capture.objects.get)(id=c.id)
    assert stored.body_bytes == b"original" and stored.method == "POST"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"target_url": "not a url"}, "http"),
        ({"target_url": "ftp://example.com/"}, "http"),
        ({"target_url": "http://"}, "host"),
        ({}, "target_url is required"),
        ({"target_url": "http://x.test", "colour": 1}, "unknown"),
        ({"target_url": "http://x.test", "body": "a", "body_base64": "YQ=="}, "not both"),
        ({"target_url": "http://x.test", "body_base64": "%%%"}, "base64"),
        ({"target_url": "http://x.test", "method": "GE T"}, "method"),
        ({"target_url": "http://a..b/"}, "invalid host"),
    ],
)
async def test_bad_resend_input_is_400_and_records_nothing(bin_, payload, message):
    c = await capture_via_asgi(bin_)
    status, body = await api_resend(bin_.token, c.seq, payload)
    assert status == 400
    assert message in body["error"]
    assert await database_sync_to_async(Delivery.objects.count)() == 0


async def test_failures_are_recorded_in_plain_words(bin_, settings):
    c = await capture_via_asgi(bin_)
    closed = f"http://127.0.0.1:{free_port()}/"
    status, refused = await api_resend(bin_.token, c.seq, {"target_url": closed})
    assert status == 201
    assert refused["status"] is None and "connection refused" in refused["error"]
    status, dns = await api_resend(
        bin_.token, c.seq, {"target_url": "http://no-such-host.invalid/"}
    )
    assert status == 201 and "DNS lookup failed" in dns["error"]
    assert await database_sync_to_async(Delivery.objects.filter(capture=c).count)() == 2


async def test_a_slow_target_times_out(bin_, settings):
    settings.RESEND_TIMEOUT = 0.5
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts, never answers
    try:
        c = await capture_via_asgi(bin_)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        _, delivery = await api_resend(bin_.token, c.seq, {"target_url": url})
        assert "timed out after 0.5 s" in delivery["error"]
    finally:
        silent.close()


async def test_policy_deny_forbids_private_targets(bin_, settings, target):
    settings.RESEND_PRIVATE_TARGETS = "deny"
    c = await capture_via_asgi(bin_)
    for url in [target.url, "http://localhost:1/", "http://[::1]:1/", "http://10.1.2.3/"]:
        _, delivery = await api_resend(bin_.token, c.seq, {"target_url": url})
        assert "forbids those targets" in delivery["error"], url
    assert target.received == []
    settings.RESEND_ALLOW_HOSTS = {"127.0.0.1"}
    _, delivery = await api_resend(bin_.token, c.seq, {"target_url": target.url})
    assert delivery["status"] == 200


async def test_the_method_is_sent_as_captured_case_and_all(bin_, target):
    c = await capture_via_asgi(bin_, method="purge")
    _, delivery = await api_resend(bin_.token, c.seq, {"target_url": target.url})
    assert delivery["status"] == 200
    assert target.received[-1].method == "purge"


async def test_cloud_metadata_is_forbidden_even_when_private_targets_are_allowed(bin_, settings):
    assert settings.RESEND_PRIVATE_TARGETS == "allow"
    c = await capture_via_asgi(bin_)
    for url in ["http://169.254.169.254/latest/", "http://[::ffff:169.254.169.254]/"]:
        _, delivery = await api_resend(bin_.token, c.seq, {"target_url": url})
        assert "cloud metadata" in delivery["error"], url


def test_private_address_classification():
    for address in [
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
    ]:
        assert is_private(address), address
    for address in ["93.184.216.34", "2606:4700::1111"]:
        assert not is_private(address), address


async def test_redirects_are_not_followed(bin_, target):
    target.status = 302
    target.reply_headers = [("Location", "http://169.254.169.254/")]
    c = await capture_via_asgi(bin_)
    _, delivery = await api_resend(bin_.token, c.seq, {"target_url": target.url})
    assert delivery["status"] == 302
    assert len(target.received) == 1


async def test_auto_forward_sends_each_new_capture_and_records_it(transactional_db, target):
    bin_ = await database_sync_to_async(Bin.objects.create)(forward_url=target.url + "/fwd")
    c = await capture_via_asgi(bin_, body=b"forward me")
    deadline = time.monotonic() + 5
    while not await database_sync_to_async(Delivery.objects.filter(capture=c).exists)():
        assert time.monotonic() < deadline, "no forward recorded"
        await asyncio.sleep(0.05)
    delivery = await database_sync_to_async(Delivery.objects.get)(capture=c)
    assert delivery.kind == "forward" and delivery.status == 200
    assert target.received[-1].body == b"forward me" and target.received[-1].path == "/fwd"


async def test_auto_forward_to_a_dead_target_never_fails_the_capture(transactional_db):
    bin_ = await database_sync_to_async(Bin.objects.create)(
        forward_url=f"http://127.0.0.1:{free_port()}/"
    )
    answer = await asgi_http(f"/{bin_.token}", body=b"x")
    assert answer.status == 200
    c = await database_sync_to_async(Capture.objects.get)(bin=bin_)
    deadline = time.monotonic() + 5
    while not await database_sync_to_async(Delivery.objects.filter(capture=c).exists)():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (
        "connection refused"
        in (await database_sync_to_async(Delivery.objects.get)(capture=c)).error
    )


def test_page_resend_form_records_and_shows_the_delivery(client, bin_, target):
    c = Capture.objects.create(bin=bin_, method="POST", body=b"hi", body_size=2)
    url = f"/bins/{bin_.token}/captures/{c.seq}/resend/"
    r = client.post(url, {"target_url": target.url + "/page"}, headers={"HX-Request": "true"})
    html = r.content.decode()
    assert r.status_code == 200
    assert 'id="deliveries"' in html and "/page" in html and "thanks" in html
    assert target.received[-1].body == b"hi"
    r = client.post(url, {"target_url": "nope"}, headers={"HX-Request": "true"})
    assert "http" in r.content.decode() and 'class="error"' in r.content.decode()
    r = client.post(
        url,
        {
            "target_url": target.url,
            "edit": "1",
            "method": "PUT",
            "headers": "X-Edited: yes",
            "body": "new",
        },
        headers={"HX-Request": "true"},
    )
    assert target.received[-1].method == "PUT" and target.received[-1].body == b"new"
    page = client.get(f"/bins/{bin_.token}/captures/{c.seq}/").content.decode()
    assert f'value="{target.url}"' in page  # the last target is prefilled
