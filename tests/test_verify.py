"""Know what arrived: provider, event, signature verdict, retries of one event, and re-signing
on resend. Real server processes; signatures made and checked with the providers' own
libraries; a real target."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime

import httpx
import pytest
import standardwebhooks
import stripe
from twilio.request_validator import RequestValidator

from .targets import start_target

pytestmark = pytest.mark.django_db(transaction=True)

STRIPE_SECRET = "whsec_test_0123456789abcdef"


def stripe_headers(payload: bytes, secret: str = STRIPE_SECRET, at: int | None = None) -> dict:
    at = int(time.time()) if at is None else at
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{payload.decode()}", secret)
    return {"content-type": "application/json", "stripe-signature": f"t={at},v1={signature}"}


def event(event_id: str = "evt_1", kind: str = "invoice.paid") -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": kind}).encode()


def new_bin(base: str, **settings) -> str:
    r = httpx.post(f"{base}/api/bins", json=settings)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def captures(base: str, token: str, **params) -> list[dict]:
    r = httpx.get(f"{base}/api/bins/{token}/captures", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["captures"][::-1]  # oldest first


@pytest.fixture
def target():
    t = start_target()
    yield t
    t.server.shutdown()


def test_stripe_deliveries_get_a_provider_an_event_and_a_verdict_in_plain_words(servers):
    server = servers()
    signature = {"scheme": "stripe", "secret": STRIPE_SECRET}
    token = new_bin(server.base, signature=signature)
    url = f"{server.base}/{token}/stripe"
    body = event()
    sent = [
        ("valid", body, stripe_headers(body)),
        ("one byte changed", body.replace(b"paid", b"paiD"), stripe_headers(body)),
        ("wrong secret", body, stripe_headers(body, secret="whsec_other")),
        ("stale", body, stripe_headers(body, at=int(time.time()) - 412)),
        ("missing", body, {"content-type": "application/json"}),
    ]
    for _, content, headers in sent:
        assert httpx.post(url, content=content, headers=headers).status_code == 200
    got = captures(server.base, token)
    assert [(c["provider"], c["event_type"], c["event_id"]) for c in got[:4]] == [
        ("stripe", "invoice.paid", "evt_1"),
        ("stripe", "invoice.paiD", "evt_1"),
        ("stripe", "invoice.paid", "evt_1"),
        ("stripe", "invoice.paid", "evt_1"),
    ]
    verdicts = [c["signature"] for c in got]
    assert verdicts[0] == {"scheme": "stripe", "valid": True, "reason": "valid"}
    assert not any(v["valid"] for v in verdicts[1:])
    assert verdicts[1]["reason"].startswith("signature does not match (computed over the")
    assert f"{len(body)} received bytes" in verdicts[1]["reason"]
    assert verdicts[2]["reason"].startswith("signature does not match")
    assert "s old, over the 300 s tolerance" in verdicts[3]["reason"]
    assert verdicts[4]["reason"] == "no Stripe-Signature header"
    # Filterable.
    assert len(captures(server.base, token, provider="stripe")) == 4
    assert len(captures(server.base, token, event_type="invoice.paid")) == 3


def test_a_bin_without_a_scheme_has_no_verdicts_and_a_new_secret_rechecks_the_stored_ones(
    servers,
):
    server = servers()
    token = new_bin(server.base)
    body = event()
    httpx.post(f"{server.base}/{token}", content=body, headers=stripe_headers(body))
    [c] = captures(server.base, token)
    assert c["signature"] is None and c["provider"] == "stripe"
    # Setting the secret checks what is stored.
    r = httpx.patch(
        f"{server.base}/api/bins/{token}",
        json={"signature": {"scheme": "stripe", "secret": STRIPE_SECRET}},
    )
    assert r.status_code == 200 and r.json()["signature"]["secret"] == STRIPE_SECRET
    wait_for(lambda: captures(server.base, token)[0]["signature"] is not None)
    assert captures(server.base, token)[0]["signature"]["valid"] is True
    # A wrong secret: checked again, now invalid.
    httpx.patch(
        f"{server.base}/api/bins/{token}",
        json={"signature": {"scheme": "stripe", "secret": "whsec_wrong"}},
    )
    wait_for(lambda: captures(server.base, token)[0]["signature"]["valid"] is False)


def wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_deliveries_of_one_event_arriving_together_have_exactly_one_original(servers):
    """Twenty deliveries of one GitHub event at once, through two processes: one original,
    the rest retries of it, numbered 1..20 in commit order."""
    a, b = servers(), servers()
    token = new_bin(a.base)
    headers = {
        "x-github-event": "push",
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    }

    async def fire():
        async with httpx.AsyncClient(timeout=30) as http:
            return await asyncio.gather(
                *(
                    http.post(f"{(a, b)[i % 2].base}/{token}/{i}", content=b"{}", headers=headers)
                    for i in range(20)
                )
            )

    assert {r.status_code for r in asyncio.run(fire())} == {200}
    got = captures(a.base, token)
    originals = [c for c in got if c["duplicate_of"] is None]
    assert len(originals) == 1 and originals[0]["event_delivery"] == 1
    first = originals[0]["id"]
    assert sorted(c["event_delivery"] for c in got) == list(range(1, 21))
    assert all(c["duplicate_of"] == first for c in got if c["id"] != first)
    assert [c["event_delivery"] for c in got] == sorted(c["event_delivery"] for c in got)
    assert all(c["event_after_s"] >= 0 for c in got if c["id"] != first)
    assert {c["provider"] for c in got} == {"github"}


def test_a_resigned_resend_of_an_old_edited_capture_verifies_at_the_target(servers, target):
    server = servers()
    token = new_bin(server.base, signature={"scheme": "stripe", "secret": STRIPE_SECRET})
    body = event("evt_old")
    old = int(time.time()) - 3600  # an hour old: past Stripe's 300 s tolerance
    httpx.post(f"{server.base}/{token}", content=body, headers=stripe_headers(body, at=old))
    [capture] = captures(server.base, token)
    assert "s old, over the 300 s tolerance" in capture["signature"]["reason"]
    resend = f"{server.base}/api/bins/{token}/captures/{capture['id']}/resend"
    # A plain resend is byte-exact: the target refuses the old signature, as Stripe's would.
    plain = httpx.post(resend, json={"target_url": target.url}).json()
    assert plain["resigned"] is False
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            target.received[-1].body, target.header("stripe-signature"), STRIPE_SECRET
        )
    edited = json.dumps({"id": "evt_old", "object": "event", "type": "invoice.voided"})
    delivery = httpx.post(resend, json={"target_url": target.url, "body": edited, "resign": True})
    assert delivery.status_code == 201, delivery.text
    assert delivery.json()["resigned"] is True and delivery.json()["edited"] is True
    got = target.received[-1]
    assert got.body == edited.encode()
    verified = stripe.Webhook.construct_event(
        got.body, target.header("stripe-signature"), STRIPE_SECRET
    )
    assert verified["type"] == "invoice.voided"
    # What was sent is in the delivery record.
    sent = dict(delivery.json()["sent_headers"])
    assert sent["stripe-signature"] == target.header("stripe-signature")
    assert base64.b64decode(delivery.json()["sent_body_base64"]) == edited.encode()
    # Without a secret there is nothing to re-sign with: a 400 that says so.
    other = new_bin(server.base)
    httpx.post(f"{server.base}/{other}", content=body)
    r = httpx.post(
        f"{server.base}/api/bins/{other}/captures/1/resend",
        json={"target_url": target.url, "resign": True},
    )
    assert r.status_code == 400 and "signature" in r.json()["error"]


def test_standard_webhooks_and_twilio_resends_verify_with_their_libraries(servers, target):
    server = servers()
    secret = "whsec_" + base64.b64encode(b"standard-webhooks-secret-32bytes").decode()
    token = new_bin(server.base, signature={"scheme": "standard-webhooks", "secret": secret})
    hook = standardwebhooks.Webhook(secret)
    old = datetime.fromtimestamp(time.time() - 3600, UTC)
    body = json.dumps({"type": "user.created"})
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": hook.sign("msg_1", old, body),
    }
    httpx.post(f"{server.base}/{token}", content=body, headers=headers)
    [capture] = captures(server.base, token)
    assert capture["provider"] == "standard-webhooks" and capture["event_id"] == "msg_1"
    assert capture["signature"]["valid"] is False  # an hour old
    r = httpx.post(
        f"{server.base}/api/bins/{token}/captures/1/resend",
        json={"target_url": target.url, "resign": True},
    )
    assert r.status_code == 201
    got = target.received[-1]
    assert hook.verify(got.body, {n.lower(): v for n, v in got.headers}) == {"type": "user.created"}

    # Twilio signs the URL it called: the capture URL, and on resend the target's.
    auth = "12345678901234567890123456789012"
    twilio = new_bin(server.base, signature={"scheme": "twilio", "secret": auth})
    called = f"{server.base}/{twilio}/sms?from=app"
    form = {"From": "+15550001", "Body": "hello"}
    signature = RequestValidator(auth).compute_signature(called, form)
    httpx.post(called, data=form, headers={"x-twilio-signature": signature})
    [capture] = captures(server.base, twilio)
    assert capture["provider"] == "twilio"
    assert capture["signature"] == {"scheme": "twilio", "valid": True, "reason": "valid"}
    to = target.url + "/twilio/in"
    r = httpx.post(
        f"{server.base}/api/bins/{twilio}/captures/1/resend",
        json={"target_url": to, "resign": True},
    )
    assert r.status_code == 201
    assert RequestValidator(auth).validate(to, form, target.header("x-twilio-signature"))
