"""bins.providers, as pure functions: recognition from the header sets providers document,
and signatures made and checked by the providers' own libraries (stripe, standardwebhooks,
svix, slack_sdk, twilio) or, for GitHub and Shopify, by their documented recipes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

import pytest
import standardwebhooks
import stripe
import svix.webhooks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.signature import Clock, SignatureVerifier
from twilio.request_validator import RequestValidator

from bins.providers import (
    BODY_PARSE_LIMIT,
    Recognised,
    Verdict,
    check_config,
    describe,
    recognise,
    resign,
    verify,
)

TOKEN = "0b0e6a1e-8f0c-4a57-9d6e-1f6c2a9d5b11"
CAPTURE_URL = f"https://hooks.example.com/{TOKEN}/twilio/sms?site=eu"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example
OTHER_WHSEC = "whsec_" + base64.b64encode(b"another key of 24 bytes!").decode()


def clock() -> float:
    """Now, a quarter second into the current second: whole-second ages read exactly."""
    return int(time.time()) + 0.25


def mismatch(body: bytes) -> str:
    return (
        f"signature does not match (computed over the {len(body):,} received bytes"
        " with the bin's secret)"
    )


def library_says(check) -> bool:
    try:
        return bool(check())
    except Exception:  # each library raises its own errors (some not its verification error)
        return False


# --- Recognition -----------------------------------------------------------------------------


def test_github_push_and_issues_opened():
    # Header set from GitHub's "Webhook events and payloads: delivery headers".
    headers = [
        ["host", "hooks.example.com"],
        ["user-agent", "GitHub-Hookshot/044aadd"],
        ["content-type", "application/json"],
        ["x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc956b"],
        ["x-github-event", "push"],
        ["x-github-hook-id", "292430182"],
        ["x-github-hook-installation-target-id", "79929171"],
        ["x-github-hook-installation-target-type", "repository"],
        ["x-hub-signature", "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6"],
        [
            "x-hub-signature-256",
            "sha256=d57c68ca6f92289e6987922ff26938930f6e66a2d161ef06abdf1859230aa23c",
        ],
    ]
    push = recognise(headers, b'{"ref": "refs/heads/main", "after": "0d1a26e6"}')
    assert push == Recognised("github", "push", "72d3162e-cc78-11e3-81ab-4c9367dc956b")
    headers[4] = ["x-github-event", "issues"]
    opened = recognise(headers, b'{"action": "opened", "issue": {"number": 1}}')
    assert opened == Recognised("github", "issues.opened", "72d3162e-cc78-11e3-81ab-4c9367dc956b")
    assert describe(opened) == "GitHub · issues.opened"


def test_gitlab_prefers_the_idempotency_key_that_retries_repeat():
    headers = [
        ["content-type", "application/json"],
        ["user-agent", "GitLab/17.6.0"],
        ["idempotency-key", "f6a2c5b4-9e1d-4c1e-8a57-2d5d0c6c9f10"],
        ["x-gitlab-event", "Merge Request Hook"],
        ["x-gitlab-webhook-uuid", "8f1c2a3b-0000-4000-8000-000000000001"],
        ["x-gitlab-event-uuid", "13792a34-cac6-4fda-95a8-c58e00a3954e"],
        ["x-gitlab-instance", "https://gitlab.example.com"],
        ["x-gitlab-token", "secret-token"],
    ]
    body = b'{"object_kind": "merge_request", "object_attributes": {"action": "open"}}'
    assert recognise(headers, body) == Recognised(
        "gitlab", "merge_request.open", "f6a2c5b4-9e1d-4c1e-8a57-2d5d0c6c9f10"
    )
    older = [pair for pair in headers if pair[0] != "idempotency-key"]
    assert recognise(older, b'{"object_kind": "push"}') == Recognised(
        "gitlab", "push", "13792a34-cac6-4fda-95a8-c58e00a3954e"
    )
    # No readable body: the header names the event.
    assert recognise(older, b"\xff\xfe") == Recognised(
        "gitlab", "Merge Request Hook", "13792a34-cac6-4fda-95a8-c58e00a3954e"
    )


def test_stripe_reads_type_and_id_from_the_body():
    headers = [
        ["user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)"],
        ["content-type", "application/json; charset=utf-8"],
        [
            "stripe-signature",
            "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
        ],
    ]
    body = b'{"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event", "type": "invoice.paid"}'
    got = recognise(headers, body)
    assert got == Recognised("stripe", "invoice.paid", "evt_1NG8Du2eZvKYlo2CUI79vXWy")
    assert describe(got) == "Stripe · invoice.paid"


def test_standard_webhooks_and_svix():
    body = b'{"type": "user.created", "data": {"id": "u_1"}}'
    standard = [
        ["content-type", "application/json"],
        ["webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"],
        ["webhook-timestamp", "1674087231"],
        ["webhook-signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="],
    ]
    assert recognise(standard, body) == Recognised(
        "standard-webhooks", "user.created", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    )
    svix_headers = [
        ["svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"],
        ["svix-timestamp", "1614265330"],
        ["svix-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="],
    ]
    assert recognise(svix_headers, body) == Recognised(
        "svix", "user.created", "msg_p5jXN8AQM9LWM0D4loKWxJek"
    )
    # Svix sends both families: the named provider wins over the generic headers.
    assert recognise(standard + svix_headers, body).provider == "svix"


def test_shopify_reads_the_topic_and_webhook_id_headers():
    headers = [
        ["x-shopify-topic", "orders/create"],
        ["x-shopify-hmac-sha256", "XWmrwMey6OsLMeiZKwP4FppHH3cmAiiJJAweH5Jo4bM="],
        ["x-shopify-shop-domain", "example.myshopify.com"],
        ["x-shopify-api-version", "2025-01"],
        ["x-shopify-webhook-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"],
        ["x-shopify-triggered-at", "2025-01-23T15:51:18.011Z"],
        ["x-shopify-event-id", "98880550-7158-44d4-b7cd-2c97c8a091b5"],
    ]
    got = recognise(headers, b'{"id": 820982911946154508}')
    assert got == Recognised("shopify", "orders/create", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    assert describe(got) == "Shopify · orders/create"


def test_slack_events_retries_commands_and_interactivity():
    headers = [
        ["content-type", "application/json"],
        [
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ],
        ["x-slack-request-timestamp", "1531420618"],
        ["x-slack-retry-num", "1"],
        ["x-slack-retry-reason", "http_timeout"],
    ]
    callback = json.dumps(
        {"type": "event_callback", "event_id": "Ev08MFMKH6", "event": {"type": "app_mention"}}
    ).encode()
    got = recognise(headers, callback)
    assert got == Recognised("slack", "app_mention", "Ev08MFMKH6", retry=1)
    assert describe(got) == "Slack · app_mention · retry 1"
    first = [pair for pair in headers if not pair[0].startswith("x-slack-retry")]
    assert recognise(first, b'{"type": "url_verification", "challenge": "3eZbrw"}') == (
        Recognised("slack", "url_verification")
    )
    command = b"token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&command=%2Fdeploy&text=prod"
    assert recognise(first, command) == Recognised("slack", "/deploy")
    payload = urlencode({"payload": json.dumps({"type": "block_actions"})}).encode()
    assert recognise(first, payload) == Recognised("slack", "block_actions")


def test_twilio_message_and_call_status_callbacks():
    headers = [
        ["content-type", "application/x-www-form-urlencoded"],
        ["user-agent", "TwilioProxy/1.1"],
        ["x-twilio-signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="],
        ["i-twilio-idempotency-token", "a7a4b5c3-0d7e-4e4b-9a51-2f1d1c4b7e88"],
        ["x-home-region", "us1"],
    ]
    message = b"MessageSid=SM1&MessageStatus=delivered&AccountSid=AC1&From=%2B15005550006"
    assert recognise(headers, message) == Recognised(
        "twilio", "message.delivered", "a7a4b5c3-0d7e-4e4b-9a51-2f1d1c4b7e88"
    )
    call = b"CallSid=CA1&CallStatus=completed&Direction=inbound"
    assert recognise(headers[:3], call) == Recognised("twilio", "call.completed")


def test_mailgun_by_its_user_agent_json_and_legacy_form():
    headers = [["user-agent", "mailgun/treq-16.12.0"], ["content-type", "application/json"]]
    body = json.dumps(
        {
            "signature": {"token": "t" * 50, "timestamp": "1529006854", "signature": "ab"},
            "event-data": {"event": "delivered", "id": "CPgfbmQMTCKtHW6uIWtuVe"},
        }
    ).encode()
    assert recognise(headers, body) == Recognised("mailgun", "delivered", "CPgfbmQMTCKtHW6uIWtuVe")
    legacy = [["user-agent", "mailgun/treq-16.12.0"]]
    form = b"event=opened&recipient=alice%40example.com&token=abc&timestamp=1&signature=x"
    assert recognise(legacy, form) == Recognised("mailgun", "opened")


def test_sendgrid_by_user_agent_or_signed_headers():
    body = json.dumps(
        [
            {"email": "a@example.com", "event": "processed", "sg_event_id": "cHJvY2Vzc2Vk"},
            {"email": "a@example.com", "event": "bounce", "sg_event_id": "Ym91bmNl"},
            {"email": "b@example.com", "event": "processed", "sg_event_id": "cHJvYzI"},
        ]
    ).encode()
    by_agent = [
        ["user-agent", "SendGrid Event API"],
        ["content-type", "application/json;charset=utf-8"],
    ]
    expected = Recognised("sendgrid", "processed,bounce", "cHJvY2Vzc2Vk")
    assert recognise(by_agent, body) == expected
    signed = [
        ["content-type", "application/json"],
        ["x-twilio-email-event-webhook-signature", "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U="],
        ["x-twilio-email-event-webhook-timestamp", "1588788367"],
    ]
    assert recognise(signed, body) == expected


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [["host", "localhost"], ["user-agent", "curl/8.5.0"], ["accept", "*/*"]],
        [
            ["user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/126"],
            ["accept", "text/html"],
            ["cookie", "a=b"],
            ["x-hub-signature-256", "sha256=00"],  # Meta sends it too: not GitHub's alone
            ["idempotency-key", "abc"],
        ],
    ],
)
def test_requests_without_a_provider_header_are_not_recognised(headers):
    assert recognise(headers, b'{"type": "invoice.paid", "id": "evt_1"}') is None
    assert describe(None) == ""


def test_body_fields_are_read_only_within_the_cap_and_kept_printable():
    headers = [["stripe-signature", "t=1,v1=00"]]
    big = b'{"type": "invoice.paid", "pad": "' + b"x" * BODY_PARSE_LIMIT + b'"}'
    assert recognise(headers, big) == Recognised("stripe")
    assert recognise(headers, b'{"type": "a\\u0000b\\u001b[31m", "id": 42}') == (
        Recognised("stripe", "ab[31m", "42")
    )
    assert recognise(headers, b'{"type": "' + b"t" * 5000 + b'"}').event_type == "t" * 200
    for body in (b"", b"\x00\xff" * 100, b"{not json", b"[" * 200_000, b'{"type": 1.5e999}'):
        assert recognise(headers, body) == Recognised("stripe")


# --- check_config ----------------------------------------------------------------------------


def test_check_config_fills_defaults():
    assert check_config(None) is None
    assert check_config({"scheme": "stripe", "secret": "whsec_test"}) == {
        "scheme": "stripe",
        "secret": "whsec_test",
        "tolerance_s": 300,
    }
    assert check_config({"scheme": "hmac", "secret": "s", "header": "X-Signature"}) == {
        "scheme": "hmac",
        "secret": "s",
        "tolerance_s": 300,
        "header": "x-signature",
        "algorithm": "sha256",
        "encoding": "hex",
        "prefix": "",
    }
    assert (
        check_config({"scheme": "standard-webhooks", "secret": WHSEC, "tolerance_s": 0})[
            "tolerance_s"
        ]
        == 0
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("stripe", "signature must be null or an object"),
        ({"secret": "s"}, "signature.scheme is required"),
        ({"scheme": "paypal", "secret": "s"}, "signature.scheme must be one of"),
        ({"scheme": ["github"], "secret": "s"}, "signature.scheme must be one of"),
        ({"scheme": "github", "secret": "s", "extra": 1}, "unknown signature field(s): extra"),
        ({"scheme": "github", "secret": "s", "header": "x"}, "signature.header applies only"),
        ({"scheme": "github"}, "signature.secret must be a string"),
        ({"scheme": "github", "secret": 123}, "signature.secret must be a string"),
        ({"scheme": "github", "secret": ""}, "signature.secret must not be empty"),
        ({"scheme": "github", "secret": " \t"}, "signature.secret must not be empty"),
        ({"scheme": "github", "secret": "a\x00b"}, "signature.secret must not contain control"),
        ({"scheme": "github", "secret": "a\x1bb"}, "signature.secret must not contain control"),
        ({"scheme": "github", "secret": "a\ud800b"}, "signature.secret must not contain control"),
        ({"scheme": "github", "secret": " s"}, "must not start or end with whitespace"),
        ({"scheme": "github", "secret": "s" * 5000}, "signature.secret must be at most 4096"),
        ({"scheme": "standard-webhooks", "secret": "plain"}, "whsec_ then base64"),
        ({"scheme": "standard-webhooks", "secret": "whsec_"}, "whsec_ then base64"),
        ({"scheme": "standard-webhooks", "secret": "whsec_!!!!"}, "whsec_ then base64"),
        ({"scheme": "standard-webhooks", "secret": "whsec_abcde"}, "whsec_ then base64"),
        ({"scheme": "slack", "secret": "s", "tolerance_s": True}, "signature.tolerance_s must"),
        ({"scheme": "slack", "secret": "s", "tolerance_s": -1}, "signature.tolerance_s must"),
        ({"scheme": "slack", "secret": "s", "tolerance_s": "300"}, "signature.tolerance_s must"),
        ({"scheme": "slack", "secret": "s", "tolerance_s": 10**9}, "signature.tolerance_s must"),
        ({"scheme": "hmac", "secret": "s"}, "signature.header must be a header name"),
        ({"scheme": "hmac", "secret": "s", "header": "X Sig"}, "signature.header must be"),
        ({"scheme": "hmac", "secret": "s", "header": "X:Sig"}, "signature.header must be"),
        ({"scheme": "hmac", "secret": "s", "header": "x_sig"}, "must not contain _"),
        ({"scheme": "hmac", "secret": "s", "header": "x", "algorithm": "md5"}, "algorithm"),
        ({"scheme": "hmac", "secret": "s", "header": "x", "algorithm": ["sha1"]}, "algorithm"),
        ({"scheme": "hmac", "secret": "s", "header": "x", "encoding": "base32"}, "encoding"),
        ({"scheme": "hmac", "secret": "s", "header": "x", "encoding": {}}, "encoding"),
        ({"scheme": "hmac", "secret": "s", "header": "x", "prefix": 1}, "signature.prefix"),
        ({"scheme": "hmac", "secret": "s", "header": "x", "prefix": "a\nb"}, "signature.prefix"),
    ],
)
def test_check_config_refuses_naming_the_field(data, message):
    with pytest.raises(ValueError) as caught:
        check_config(data)
    assert message in str(caught.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
setting_fields = st.fixed_dictionaries(
    {},
    optional={
        "scheme": st.one_of(st.sampled_from(["hmac", "stripe", "standard-webhooks"]), json_values),
        "secret": st.one_of(
            st.text(max_size=20), st.sampled_from([WHSEC, "whsec_AA=="]), json_values
        ),
        "tolerance_s": st.one_of(st.integers(), json_values),
        "header": st.one_of(st.text(max_size=10), json_values),
        "algorithm": st.one_of(st.sampled_from(["sha1", "sha512"]), json_values),
        "encoding": st.one_of(st.sampled_from(["hex", "base64"]), json_values),
        "prefix": st.one_of(st.text(max_size=10), json_values),
    },
)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(setting_fields, json_values))
def test_check_config_raises_only_value_errors_and_its_output_is_usable(data):
    try:
        config = check_config(data)
    except ValueError as exc:
        assert str(exc).startswith(("signature", "unknown signature field"))
        return
    if config is not None:
        assert check_config(config) == config  # what it returns, it takes back unchanged
        assert verify(config, [], b"", "", 0).reason.startswith("no ")
        assert isinstance(resign(config, "POST", "http://t/", [], b"", 0), list)


# --- Signed requests, made by the providers' own libraries ---------------------------------


class FormParams(dict):
    """Form fields as Flask's MultiDict hands them to twilio's RequestValidator."""

    def getall(self, name):
        return self[name]


def form_params(body: bytes) -> FormParams:
    params = FormParams()
    for name, value in parse_qsl(body.decode(), keep_blank_values=True):
        params.setdefault(name, []).append(value)
    return params


def github_recipe(secret: str, body: bytes) -> str:
    # GitHub's "Validating webhook deliveries" Python example.
    return (
        "sha256=" + hmac.new(secret.encode("utf-8"), msg=body, digestmod=hashlib.sha256).hexdigest()
    )


def shopify_recipe(secret: str, body: bytes) -> str:
    # Shopify's "Verify a webhook" Python example.
    digest = hmac.new(secret.encode("utf-8"), body, digestmod=hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


JSON_BODY = b'{"id": "evt_1", "object": "event", "type": "invoice.paid", "text": "h\xc3\xa9"}'
FORM_BODY = b"MessageSid=SM1&Body=Hello+there%21&To=%2B15005550006&Media=b&Media=a&Media=b"


@dataclass
class Case:
    kind: str
    config: dict
    headers: list
    body: bytes
    url: str = ""
    signature_header: str = ""  # the header a test removes or spoils
    library_accepts: object = field(default=None, repr=False)  # (headers, body, url) -> bool


def sign(kind: str, now: float, secret: str | None = None, body: bytes | None = None) -> Case:
    """A request as the provider would send it at `now`, signed with its library."""
    ts = int(now)
    if kind == "github":
        secret = secret or "It's a Secret to Everybody"
        body = JSON_BODY if body is None else body
        config = check_config({"scheme": "github", "secret": secret})
        headers = [["x-github-event", "push"], ["x-hub-signature-256", github_recipe(secret, body)]]

        def accepts(h, b, url):
            return hmac.compare_digest(github_recipe(secret, b), dict(h)["x-hub-signature-256"])

        return Case(kind, config, headers, body, "", "x-hub-signature-256", accepts)
    if kind == "shopify":
        secret = secret or "shpss_0123456789abcdef"
        body = JSON_BODY if body is None else body
        config = check_config({"scheme": "shopify", "secret": secret})
        headers = [
            ["x-shopify-topic", "orders/create"],
            ["x-shopify-hmac-sha256", shopify_recipe(secret, body)],
        ]

        def accepts(h, b, url):
            return hmac.compare_digest(shopify_recipe(secret, b), dict(h)["x-shopify-hmac-sha256"])

        return Case(kind, config, headers, body, "", "x-shopify-hmac-sha256", accepts)
    if kind == "stripe":
        secret = secret or "whsec_test_secret"
        body = JSON_BODY if body is None else body
        config = check_config({"scheme": "stripe", "secret": secret})
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, ts)
        headers = [["content-type", "application/json"], ["stripe-signature", header]]

        def accepts(h, b, url):
            event = stripe.Webhook.construct_event(b, dict(h)["stripe-signature"], secret)
            return event.type == "invoice.paid"

        return Case(kind, config, headers, body, "", "stripe-signature", accepts)
    if kind in ("standard-webhooks", "svix"):
        secret = secret or WHSEC
        body = JSON_BODY if body is None else body
        config = check_config({"scheme": "standard-webhooks", "secret": secret})
        when = datetime.fromtimestamp(ts, tz=UTC)
        if kind == "svix":
            signature = svix.webhooks.Webhook(secret).sign("msg_1", when, body.decode())
            prefix, library = "svix", svix.webhooks.Webhook(secret)
        else:
            signature = standardwebhooks.Webhook(secret).sign("msg_1", when, body.decode())
            prefix, library = "webhook", standardwebhooks.Webhook(secret)
        headers = [
            [f"{prefix}-id", "msg_1"],
            [f"{prefix}-timestamp", str(ts)],
            [f"{prefix}-signature", signature],
        ]

        def accepts(h, b, url):
            library.verify(b, dict(h))
            return True

        return Case(kind, config, headers, body, "", f"{prefix}-signature", accepts)
    if kind == "slack":
        secret = secret or "8f742231b10e8888abcd99yyyzzz85a5"
        body = JSON_BODY if body is None else body
        config = check_config({"scheme": "slack", "secret": secret})
        signature = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
        headers = [["x-slack-request-timestamp", str(ts)], ["x-slack-signature", signature]]

        def accepts(h, b, url):
            return SignatureVerifier(secret).is_valid_request(b, dict(h))

        return Case(kind, config, headers, body, "", "x-slack-signature", accepts)
    if kind in ("twilio", "twilio-sha256"):
        secret = secret or "12345678901234567890123456789012"
        body = FORM_BODY if body is None else body
        config = check_config({"scheme": "twilio", "secret": secret})
        algorithm = "HMAC_SHA256" if kind == "twilio-sha256" else None
        signature = RequestValidator(secret).compute_signature(
            CAPTURE_URL, form_params(body), algorithm
        )
        headers = [
            ["content-type", "application/x-www-form-urlencoded"],
            ["x-twilio-signature", signature],
        ]
        if algorithm:
            headers.append(
                ["x-twilio-webhooks-signature-settings", "key=sk_1,algorithm=HMAC_SHA256"]
            )

        def accepts(h, b, url):
            return RequestValidator(secret).validate(
                url, form_params(b), dict(h)["x-twilio-signature"], algorithm
            )

        return Case(kind, config, headers, body, CAPTURE_URL, "x-twilio-signature", accepts)
    if kind == "twilio-json":
        secret = secret or "12345678901234567890123456789012"
        body = JSON_BODY if body is None else body
        config = check_config({"scheme": "twilio", "secret": secret})
        validator = RequestValidator(secret)
        url = f"{CAPTURE_URL}&bodySHA256={validator.compute_hash(body.decode())}"
        headers = [
            ["content-type", "application/json"],
            ["x-twilio-signature", validator.compute_signature(url, {})],
        ]

        def accepts(h, b, url):
            return RequestValidator(secret).validate(url, b.decode(), dict(h)["x-twilio-signature"])

        return Case(kind, config, headers, body, url, "x-twilio-signature", accepts)
    if kind in ("hmac-hex", "hmac-base64"):
        secret = secret or "generic-secret"
        body = JSON_BODY if body is None else body
        if kind == "hmac-hex":
            settings_ = {"header": "X-Signature", "algorithm": "sha1", "prefix": "sha1="}
            value = "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
        else:
            settings_ = {"header": "X-Signature", "algorithm": "sha512", "encoding": "base64"}
            value = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha512).digest())
            value = value.decode()
        config = check_config({"scheme": "hmac", "secret": secret, **settings_})
        headers = [["x-signature", value]]

        def accepts(h, b, url):
            # The same digest computed here with hmac/hashlib, compared whole.
            digest = hmac.new(secret.encode(), b, config["algorithm"]).digest()
            encoded = digest.hex() if config["encoding"] == "hex" else base64.b64encode(digest)
            expected = config["prefix"] + (
                encoded if isinstance(encoded, str) else encoded.decode()
            )
            return hmac.compare_digest(expected, dict((n.lower(), v) for n, v in h)["x-signature"])

        return Case(kind, config, headers, body, "", "x-signature", accepts)
    raise AssertionError(kind)


KINDS = [
    "github",
    "shopify",
    "stripe",
    "standard-webhooks",
    "svix",
    "slack",
    "twilio",
    "twilio-sha256",
    "twilio-json",
    "hmac-hex",
    "hmac-base64",
]
TIMED = ["stripe", "standard-webhooks", "svix", "slack"]
OTHER_SECRETS = {"standard-webhooks": OTHER_WHSEC, "svix": OTHER_WHSEC}


@pytest.mark.parametrize("kind", KINDS)
def test_a_provider_signed_request_is_valid(kind):
    now = clock()
    case = sign(kind, now)
    assert case.library_accepts(case.headers, case.body, case.url)
    assert verify(case.config, case.headers, case.body, case.url, now) == Verdict(True, "valid")


@pytest.mark.parametrize("kind", KINDS)
def test_one_changed_body_byte_is_a_mismatch(kind):
    now = clock()
    case = sign(kind, now)
    body = case.body[:-1] + bytes([case.body[-1] ^ 1])
    verdict = verify(case.config, case.headers, body, case.url, now)
    assert not verdict.valid
    if kind == "twilio-json":
        assert verdict.reason == (
            f"body does not match the bodySHA256 in the URL ({len(body)} received bytes)"
        )
    elif kind.startswith("twilio"):
        assert verdict.reason == (
            f"signature does not match (computed over the URL {CAPTURE_URL} and 4 form"
            " parameters with the bin's secret)"
        )
    else:
        assert verdict.reason == mismatch(body)


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_secret_is_a_mismatch(kind):
    now = clock()
    case = sign(kind, now)
    other = sign(kind, now, secret=OTHER_SECRETS.get(kind, "not-the-secret"))
    verdict = verify(other.config, case.headers, case.body, case.url, now)
    assert not verdict.valid
    assert verdict.reason.startswith("signature does not match")


@pytest.mark.parametrize("kind", TIMED)
def test_a_stale_timestamp_is_refused_with_its_age(kind):
    now = clock()
    case = sign(kind, now - 412)
    assert not library_says(lambda: case.library_accepts(case.headers, case.body, case.url))
    assert verify(case.config, case.headers, case.body, case.url, now) == Verdict(
        False, "timestamp 412 s old, over the 300 s tolerance"
    )
    # tolerance_s 0: no limit; a wider tolerance takes it.
    for tolerance in (0, 600):
        config = {**case.config, "tolerance_s": tolerance}
        assert verify(config, case.headers, case.body, case.url, now).valid


@pytest.mark.parametrize("kind", ["standard-webhooks", "svix", "slack"])
def test_a_future_timestamp_is_refused_where_the_library_refuses_it(kind):
    now = clock()
    case = sign(kind, now + 1000)
    assert verify(case.config, case.headers, case.body, case.url, now) == Verdict(
        False, "timestamp 1,000 s in the future, over the 300 s tolerance"
    )


def test_stripe_like_its_library_does_not_limit_future_timestamps():
    now = clock()
    case = sign("stripe", now + 1000)
    assert case.library_accepts(case.headers, case.body, case.url)
    assert verify(case.config, case.headers, case.body, "", now).valid


MISSING = {
    "github": "no X-Hub-Signature-256 header",
    "shopify": "no X-Shopify-Hmac-Sha256 header",
    "stripe": "no Stripe-Signature header",
    "standard-webhooks": "no webhook-signature (or svix-signature) header",
    "svix": "no webhook-signature (or svix-signature) header",
    "slack": "no X-Slack-Signature header",
    "twilio": "no X-Twilio-Signature header",
    "twilio-sha256": "no X-Twilio-Signature header",
    "twilio-json": "no X-Twilio-Signature header",
    "hmac-hex": "no x-signature header",
    "hmac-base64": "no x-signature header",
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_signature_header_is_named(kind):
    now = clock()
    case = sign(kind, now)
    headers = [pair for pair in case.headers if pair[0] != case.signature_header]
    assert verify(case.config, headers, case.body, case.url, now) == Verdict(False, MISSING[kind])


def test_github_documented_test_vector():
    config = check_config({"scheme": "github", "secret": "It's a Secret to Everybody"})
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    headers = [["x-hub-signature-256", signature]]
    assert verify(config, headers, b"Hello, World!", "", 0).valid
    assert not verify(config, headers, b"Hello, World?", "", 0).valid
    # The generic scheme configured as GitHub's checks the same.
    generic = check_config(
        {
            "scheme": "hmac",
            "secret": "It's a Secret to Everybody",
            "header": "X-Hub-Signature-256",
            "prefix": "sha256=",
        }
    )
    assert verify(generic, headers, b"Hello, World!", "", 0).valid


def test_standard_webhooks_spec_test_vector():
    config = check_config({"scheme": "standard-webhooks", "secret": WHSEC, "tolerance_s": 0})
    headers = [
        ["webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"],
        ["webhook-timestamp", "1614265330"],
        ["webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="],
    ]
    assert verify(config, headers, b'{"test": 2432232314}', "", 0).valid
    # Several signatures (a rotation), other versions skipped.
    headers[2][1] = "v1a,abc v1,AAAA v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify(config, headers, b'{"test": 2432232314}', "", 0).valid


def test_twilio_url_with_or_without_the_default_port():
    now = clock()
    case = sign("twilio", now)
    with_port = CAPTURE_URL.replace("hooks.example.com", "hooks.example.com:443")
    assert case.library_accepts(case.headers, case.body, with_port)
    assert verify(case.config, case.headers, case.body, with_port, now).valid
    elsewhere = CAPTURE_URL.replace("/sms", "/voice")
    assert not case.library_accepts(case.headers, case.body, elsewhere)
    assert not verify(case.config, case.headers, case.body, elsewhere, now).valid


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("v1=abc", "malformed Stripe-Signature header: no t="),
        ("t=abc,v1=abc", "malformed Stripe-Signature header: t= is not a whole number"),
        ("t,v1=abc", "malformed Stripe-Signature header: t without a value"),
        ("t=1,t,v1=abc", "malformed Stripe-Signature header: t without a value"),
        ("t=1", "malformed Stripe-Signature header: no v1= signature"),
        ("t=1,v0=abc", "malformed Stripe-Signature header: no v1= signature"),
        ("t=1,v1", "malformed Stripe-Signature header: v1 without a value"),
    ],
)
def test_malformed_stripe_headers_are_explained_and_refused_by_the_library(header, reason):
    config = check_config({"scheme": "stripe", "secret": "whsec_x"})
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(JSON_BODY, header, "whsec_x", 300)
    assert verify(config, [["stripe-signature", header]], JSON_BODY, "", time.time()) == (
        Verdict(False, reason)
    )


# --- resign: the provider's library accepts the new headers ----------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_resign_makes_a_stale_or_broken_request_verify_again(kind):
    now = clock()
    case = sign(kind, now - 10_000)
    headers = [
        [name, "0" if name == case.signature_header else value] for name, value in case.headers
    ]
    target = case.url
    if kind.startswith("twilio"):
        # Twilio signs the URL it calls: the new target's.
        target = "http://127.0.0.1:9000/hooks/sms?attempt=2"
        if kind == "twilio-json":
            digest = RequestValidator("x").compute_hash(case.body.decode())
            target += f"&bodySHA256={digest}"
    fresh = resign(case.config, "POST", target, headers, case.body, now)
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in fresh)
    assert case.library_accepts(fresh, case.body, target)
    assert verify(case.config, fresh, case.body, target, now).valid


def test_resign_keeps_names_and_positions_and_drops_duplicates():
    now = clock()
    config = check_config({"scheme": "stripe", "secret": "whsec_x"})
    headers = [
        ["Content-Type", "application/json"],
        ["Stripe-Signature", "t=1,v1=old"],
        ["X-Request-Id", "abc"],
        ["stripe-signature", "t=1,v1=older"],
    ]
    fresh = resign(config, "POST", "http://t/", headers, JSON_BODY, now)
    assert [name for name, _ in fresh] == ["Content-Type", "Stripe-Signature", "X-Request-Id"]
    assert fresh[1][1].startswith(f"t={int(now)},v1=")
    assert stripe.WebhookSignature.verify_header(JSON_BODY, fresh[1][1], "whsec_x", 300)
    # Absent: appended under the provider's own spelling.
    appended = resign(config, "POST", "http://t/", headers[:1], JSON_BODY, now)
    assert appended[0] == ("Content-Type", "application/json")
    assert appended[1][0] == "Stripe-Signature"


def test_resign_standard_webhooks_adds_what_is_missing_and_signs_both_families():
    now = clock()
    config = check_config({"scheme": "standard-webhooks", "secret": WHSEC})
    bare = resign(config, "POST", "http://t/", [], JSON_BODY, now)
    assert [name for name, _ in bare] == ["webhook-id", "webhook-timestamp", "webhook-signature"]
    standardwebhooks.Webhook(WHSEC).verify(JSON_BODY, dict(bare))
    both = [["svix-id", "msg_a"], ["webhook-id", "msg_a"], ["svix-signature", "v1,AAAA"]]
    fresh = dict(resign(config, "POST", "http://t/", both, JSON_BODY, now))
    svix.webhooks.Webhook(WHSEC).verify(JSON_BODY, fresh)
    standardwebhooks.Webhook(WHSEC).verify(
        JSON_BODY, {k: v for k, v in fresh.items() if k.startswith("webhook-")}
    )


def test_resign_github_recomputes_the_sha1_header_it_finds():
    config = check_config({"scheme": "github", "secret": "s3cret"})
    fresh = dict(resign(config, "POST", "http://t/", [["x-hub-signature", "sha1=0"]], b"{}", 0))
    assert fresh["x-hub-signature"] == "sha1=" + hmac.new(b"s3cret", b"{}", "sha1").hexdigest()
    assert fresh["X-Hub-Signature-256"] == github_recipe("s3cret", b"{}")


# --- The libraries and verify agree on what they are handed --------------------------------

AGREE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sig_text = st.text(st.sampled_from("tv01=,. abcdef+/ 9é"), max_size=40)


@AGREE
@given(
    extra=sig_text,
    body=st.sampled_from([JSON_BODY, b"{}", b""]),
    where=st.sampled_from(["alone", "before", "after"]),
)
def test_stripe_agrees_with_its_library(extra, body, where):
    # A header of odd items alone, or around a valid t= and v1=: the library and verify say
    # the same, whatever the items.
    now = clock()
    signed = stripe.WebhookSignature.generate_signature_header(body.decode(), "k", int(now))
    header = {"alone": extra, "before": f"{extra},{signed}", "after": f"{signed},{extra}"}[where]
    config = check_config({"scheme": "stripe", "secret": "k"})
    ours = verify(config, [["stripe-signature", header]], body, "", now)
    theirs = library_says(lambda: stripe.WebhookSignature.verify_header(body, header, "k", 300))
    assert ours.valid == theirs, ours
    if where == "after" and "t" not in extra and "v1" not in extra.split(","):
        assert ours.valid


@AGREE
@given(
    offset=st.sampled_from([-1000, -10, 0, 10, 1000]),
    stamp=st.one_of(st.none(), sig_text),
    signature=st.one_of(st.none(), sig_text),
)
def test_slack_and_standard_webhooks_agree_with_their_libraries(offset, stamp, signature):
    now = clock()
    ts = str(int(now) + offset) if stamp is None else stamp
    slack_sig = signature or SignatureVerifier("k").generate_signature(timestamp=ts, body=JSON_BODY)

    class Frozen(Clock):
        def now(self):
            return now

    config = check_config({"scheme": "slack", "secret": "k"})
    ours = verify(
        config,
        [["x-slack-request-timestamp", ts], ["x-slack-signature", slack_sig]],
        JSON_BODY,
        "",
        now,
    )
    theirs = library_says(
        lambda: SignatureVerifier("k", Frozen()).is_valid(JSON_BODY, ts, slack_sig)
    )
    assert ours.valid == theirs

    when = datetime.fromtimestamp(int(now) + offset, tz=UTC)
    valid = standardwebhooks.Webhook(WHSEC).sign("msg_1", when, JSON_BODY.decode())
    # Odd entries before or after a valid one: the library stops at the first that matches,
    # and fails on a malformed one before it.
    std_sig = valid if signature is None else f"{signature} {valid}"
    if signature and offset > 0:
        std_sig = f"{valid} {signature}"
    headers = {"webhook-id": "msg_1", "webhook-timestamp": ts, "webhook-signature": std_sig}
    config = check_config({"scheme": "standard-webhooks", "secret": WHSEC})
    ours = verify(config, [list(p) for p in headers.items()], JSON_BODY, "", now)
    theirs = library_says(lambda: standardwebhooks.Webhook(WHSEC).verify(JSON_BODY, headers))
    assert ours.valid == theirs


form_bodies = st.lists(
    st.tuples(st.sampled_from(["Body", "To", "From", "Media", "b", ""]), st.text(max_size=8)),
    max_size=6,
).map(lambda pairs: urlencode(pairs).encode())


@AGREE
@given(
    body=form_bodies, url=st.sampled_from([CAPTURE_URL, "http://h:8080/p", "https://h/p?a=1&a=2"])
)
def test_twilio_agrees_with_its_library(body, url):
    secret = "tok"
    signature = RequestValidator(secret).compute_signature(url, form_params(body))
    headers = [
        ["content-type", "application/x-www-form-urlencoded"],
        ["x-twilio-signature", signature],
    ]
    config = check_config({"scheme": "twilio", "secret": secret})
    assert verify(config, headers, body, url, 0).valid
    assert RequestValidator(secret).validate(url, form_params(body), signature)
    tampered = body + b"&extra=1"
    assert verify(config, headers, tampered, url, 0).valid == RequestValidator(secret).validate(
        url, form_params(tampered), signature
    )


# --- Never raises ------------------------------------------------------------------------------

NEVER = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names = st.one_of(
    st.sampled_from(
        [
            "x-github-event",
            "x-gitlab-event",
            "stripe-signature",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "svix-id",
            "svix-timestamp",
            "svix-signature",
            "x-shopify-topic",
            "x-shopify-hmac-sha256",
            "x-slack-signature",
            "x-slack-request-timestamp",
            "x-slack-retry-num",
            "x-twilio-signature",
            "x-twilio-webhooks-signature-settings",
            "user-agent",
            "content-type",
            "x-hub-signature-256",
            "x-signature",
        ]
    ),
    st.text(max_size=12),
)
values = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        ["mailgun/treq-16.12.0", "SendGrid Event API", "application/x-www-form-urlencoded"]
    ),
    st.sampled_from(
        ["t=1,v1=ab", "v1,AAAA", "v1,", "v0=00", "1e400", "nan", "-1", "99999999999999"]
    ),
)
any_bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [b"[" * 3000, b'{"a":' * 3000, b'{"type": "\\ud800"}', b"payload=%7B", b"%ff=%fe"]
    ),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
        ),
        max_leaves=10,
    ).map(lambda value: json.dumps(value).encode()),
)
CONFIGS = [
    check_config({"scheme": "github", "secret": "s"}),
    check_config({"scheme": "stripe", "secret": "s"}),
    check_config({"scheme": "standard-webhooks", "secret": WHSEC}),
    check_config({"scheme": "shopify", "secret": "s"}),
    check_config({"scheme": "slack", "secret": "s"}),
    check_config({"scheme": "twilio", "secret": "s"}),
    check_config({"scheme": "hmac", "secret": "s", "header": "x-signature", "encoding": "base64"}),
    check_config({"scheme": "hmac", "secret": "s", "header": "x-signature", "prefix": "v="}),
]


@NEVER
@given(
    headers=st.lists(st.lists(st.one_of(names, values), min_size=2, max_size=2), max_size=6),
    body=any_bodies,
    url=st.one_of(st.text(max_size=30), st.sampled_from(["http://h:99999/", "https://[::1/"])),
    now=st.floats(allow_nan=True, allow_infinity=True),
)
def test_recognise_verify_and_resign_never_raise(headers, body, url, now):
    got = recognise(headers, body)
    assert got is None or isinstance(got, Recognised)
    if got is not None:
        assert isinstance(describe(got), str)
    for config in CONFIGS:
        verdict = verify(config, headers, body, url, now)
        assert isinstance(verdict, Verdict) and verdict.reason
        if now == now and abs(now) < 1e12:  # a clock's reading
            fresh = resign(config, "POST", "http://t/p?q=1", headers, body, now)
            assert all(isinstance(v, str) for _, v in fresh)


def test_odd_header_shapes_do_not_raise():
    config = CONFIGS[1]
    for headers in (
        [["stripe-signature"]],
        [[1, 2]],
        [["a", "b", "c"]],
        [None],
        "xx",
        [[["x"], "y"]],
    ):
        result = recognise(headers, b"{}")
        assert result is None or isinstance(result, Recognised)
        assert verify(config, headers, b"{}", "", 0).valid is False
