"""Webhook providers: who sent a capture, whether its signature holds, and a fresh signature.

Pure functions, no Django, so the capture path, the API, the page and the forwarder can all
use them. Everything they read (headers, body, a bin's secret) is attacker-controlled:
`recognise` and `verify` never raise, and they read a body only up to BODY_PARSE_LIMIT.

- `recognise(headers, body)`: the provider, event type and event id of a request, or None.
  It runs for every capture, so a request without a provider header costs one pass over the
  header names and nothing else.
- `check_config(data)`: a bin's `signature` setting as the API takes it, checked and with
  defaults filled in; ValueError names the bad field.
- `verify(config, headers, body, url, now)`: Verdict(valid, reason), computed the way each
  provider's own library computes it (the functions below name the library code they follow).
- `resign(config, method, url, headers, body, now)`: the headers with fresh signature (and
  timestamp) headers for these exact bytes, for a resend to `url`.
- `describe(recognised)`: "Stripe · invoice.paid".

Headers are `[name, value]` text pairs with lowercased names, as a capture stores them; the
first occurrence of a name is the one read (what most frameworks' `headers.get` returns).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import ParseResult, parse_qs, parse_qsl, urlparse

import orjson

# Bodies are parsed for event fields only up to this size; past it, body fields are not read.
BODY_PARSE_LIMIT = 1024 * 1024
# Event types and ids are stored and shown: keep them short and printable.
FIELD_MAX_CHARS = 200
# Form bodies with more fields than this are not read (parse_qsl refuses them cheaply).
FORM_MAX_FIELDS = 10_000

DEFAULT_TOLERANCE_S = 300
MAX_TOLERANCE_S = 365 * 24 * 3600
MAX_SECRET_CHARS = 4096


class Recognised(NamedTuple):
    provider: str  # short id: github, gitlab, stripe, standard-webhooks, svix, shopify, ...
    event_type: str | None = None  # e.g. "invoice.paid", "issues.opened"
    event_id: str | None = None  # the provider's delivery or event id, the same on a retry
    retry: int | None = None  # the provider's retry number where it sends one (Slack)


class Verdict(NamedTuple):
    valid: bool
    reason: str  # plain words: "valid", "signature does not match (...)", ...


# Display names, in order of precedence: when a request carries several providers' headers,
# the first named here wins (a named provider before the generic Standard Webhooks headers,
# which some providers send as well).
PROVIDER_NAMES = {
    "github": "GitHub",
    "gitlab": "GitLab",
    "stripe": "Stripe",
    "shopify": "Shopify",
    "slack": "Slack",
    "twilio": "Twilio",
    "sendgrid": "SendGrid",
    "svix": "Svix",
    "standard-webhooks": "Standard Webhooks",
    "mailgun": "Mailgun",
}

# --------------------------------------------------------------------------------------------
# Recognition
# --------------------------------------------------------------------------------------------

# Header names that give a provider away. `user-agent` is in every other request, so for it
# the value decides (Mailgun and SendGrid's event posts carry no header of their own).
_TRIGGERS: dict[str, str] = {
    "x-github-event": "github",
    "x-github-delivery": "github",
    "x-gitlab-event": "gitlab",
    "stripe-signature": "stripe",
    "x-shopify-topic": "shopify",
    "x-shopify-hmac-sha256": "shopify",
    "x-shopify-webhook-id": "shopify",
    "x-slack-signature": "slack",
    "x-slack-request-timestamp": "slack",
    "x-twilio-signature": "twilio",
    "x-twilio-email-event-webhook-signature": "sendgrid",
    "x-twilio-email-event-webhook-timestamp": "sendgrid",
    "svix-id": "svix",
    "svix-signature": "svix",
    "svix-timestamp": "svix",
    "webhook-id": "standard-webhooks",
    "webhook-signature": "standard-webhooks",
    "webhook-timestamp": "standard-webhooks",
    "user-agent": "",
}
_RANK = {name: rank for rank, name in enumerate(PROVIDER_NAMES)}


def _by_user_agent(value: Any) -> str | None:
    # Mailgun posts with "mailgun/treq-<version>", SendGrid's Event Webhook with
    # "SendGrid Event API".
    if isinstance(value, str):
        if value.startswith("mailgun/"):
            return "mailgun"
        if value.startswith("SendGrid Event API"):
            return "sendgrid"
    return None


def recognise(headers: Sequence[Sequence[str]], body: bytes) -> Recognised | None:
    """Who sent this request, or None. Never raises."""
    try:
        best = None
        for pair in headers:
            provider = _TRIGGERS.get(pair[0])
            if provider is None:
                continue
            if not provider:
                provider = _by_user_agent(pair[1])
                if provider is None:
                    continue
            if best is None or _RANK[provider] < _RANK[best]:
                best = provider
        if best is None:
            return None
        return _READERS[best](_first_values(headers), body)
    except Exception:
        return None


def _first_values(headers: Sequence[Sequence[str]]) -> dict[str, str]:
    """The first value of each (lowercased) header name."""
    first: dict[str, str] = {}
    for pair in headers:
        if len(pair) != 2:
            continue
        name, value = pair
        if not isinstance(name, str):
            continue
        name = name.lower()
        if name not in first:
            first[name] = value if isinstance(value, str) else str(value)
    return first


def _text(value: Any) -> str | None:
    """A body or header field fit to store and show: a short printable string, or None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)[:FIELD_MAX_CHARS]
    # Controls (NUL above all: PostgreSQL text refuses it) and lone surrogates are dropped.
    if not text.isprintable():
        text = "".join(c for c in text if c.isprintable())
    return text.strip() or None


def _json(body: bytes) -> Any:
    """The body as JSON when it is an object or array within the size cap, else None.
    orjson refuses invalid UTF-8 and nesting deeper than 1024 rather than recursing."""
    if not body or len(body) > BODY_PARSE_LIMIT or body.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return orjson.loads(body)
    except Exception:
        return None


def _form_pairs(body: bytes) -> list[tuple[str, str]]:
    """The body as application/x-www-form-urlencoded pairs, blanks kept (as Flask and Django
    read a form); [] past the size cap or the field cap."""
    if not body or len(body) > BODY_PARSE_LIMIT:
        return []
    try:
        return parse_qsl(
            body.decode("utf-8", "replace"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="replace",
            max_num_fields=FORM_MAX_FIELDS,
        )
    except ValueError:
        return []


def _form(body: bytes) -> dict[str, str]:
    first: dict[str, str] = {}
    for name, value in _form_pairs(body):
        first.setdefault(name, value)
    return first


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _read_github(h: dict[str, str], body: bytes) -> Recognised:
    # X-GitHub-Event names the event ("issues"); the body's "action" the activity ("opened").
    event = _text(h.get("x-github-event"))
    action = _text(_get(_json(body), "action")) if event else None
    return Recognised(
        "github", f"{event}.{action}" if action else event, _text(h.get("x-github-delivery"))
    )


def _read_gitlab(h: dict[str, str], body: bytes) -> Recognised:
    # object_kind ("merge_request") and object_attributes.action ("open") name the event;
    # the header ("Merge Request Hook") is the fallback. Idempotency-Key stays the same
    # across retries; X-Gitlab-Event-UUID is older.
    data = _json(body)
    kind = _text(_get(data, "object_kind"))
    action = _text(_get(data, "object_attributes", "action")) if kind else None
    event = f"{kind}.{action}" if action else kind or _text(h.get("x-gitlab-event"))
    event_id = _text(h.get("idempotency-key")) or _text(h.get("x-gitlab-event-uuid"))
    return Recognised("gitlab", event, event_id)


def _read_stripe(h: dict[str, str], body: bytes) -> Recognised:
    data = _json(body)
    return Recognised("stripe", _text(_get(data, "type")), _text(_get(data, "id")))


def _read_standard(h: dict[str, str], body: bytes) -> Recognised:
    return Recognised(
        "standard-webhooks", _text(_get(_json(body), "type")), _text(h.get("webhook-id"))
    )


def _read_svix(h: dict[str, str], body: bytes) -> Recognised:
    return Recognised("svix", _text(_get(_json(body), "type")), _text(h.get("svix-id")))


def _read_shopify(h: dict[str, str], body: bytes) -> Recognised:
    return Recognised(
        "shopify", _text(h.get("x-shopify-topic")), _text(h.get("x-shopify-webhook-id"))
    )


def _read_slack(h: dict[str, str], body: bytes) -> Recognised:
    # Events API: JSON with "type" ("event_callback", "url_verification") and, for a
    # callback, the inner "event.type" ("app_mention") and "event_id". Slash commands and
    # interactivity post forms: "command" ("/deploy") or a JSON "payload" with a "type".
    data = _json(body)
    event = event_id = None
    if isinstance(data, dict):
        event = _text(data.get("type"))
        if event == "event_callback":
            event = _text(_get(data, "event", "type")) or event
        event_id = _text(data.get("event_id"))
    else:
        form = _form(body)
        if "command" in form:
            event = _text(form["command"])
        elif "payload" in form:
            event = _text(_get(_json(form["payload"].encode()), "type"))
    retry = h.get("x-slack-retry-num", "").strip()[:6]
    return Recognised("slack", event, event_id, int(retry) if retry.isdecimal() else None)


def _read_twilio(h: dict[str, str], body: bytes) -> Recognised:
    # Twilio posts forms: a call's status callback has CallStatus, a message's MessageStatus
    # (SmsStatus on older ones). I-Twilio-Idempotency-Token is the same on a retry.
    form = _form(body)
    event = None
    if "CallStatus" in form:
        event = _text("call." + form["CallStatus"])
    elif "MessageStatus" in form or "SmsStatus" in form:
        event = _text("message." + form.get("MessageStatus", form.get("SmsStatus", "")))
    return Recognised("twilio", event, _text(h.get("i-twilio-idempotency-token")))


def _read_mailgun(h: dict[str, str], body: bytes) -> Recognised:
    # Current webhooks post JSON {"signature": {...}, "event-data": {"event", "id", ...}};
    # legacy ones a form with an "event" field.
    data = _json(body)
    if isinstance(data, dict):
        return Recognised(
            "mailgun",
            _text(_get(data, "event-data", "event")),
            _text(_get(data, "event-data", "id")),
        )
    return Recognised("mailgun", _text(_form(body).get("event")))


def _read_sendgrid(h: dict[str, str], body: bytes) -> Recognised:
    # The Event Webhook posts a JSON array of events, each with "event" and "sg_event_id".
    # The event type lists the distinct events in order ("processed,delivered"); the id is
    # the first event's, which a retry of the same batch repeats.
    data = _json(body)
    if not isinstance(data, list):
        return Recognised("sendgrid")
    kinds: list[str] = []
    for item in data:
        kind = _text(_get(item, "event"))
        if kind and kind not in kinds:
            kinds.append(kind)
    first = data[0] if data else None
    return Recognised("sendgrid", _text(",".join(kinds)), _text(_get(first, "sg_event_id")))


_READERS: dict[str, Callable[[dict[str, str], bytes], Recognised]] = {
    "github": _read_github,
    "gitlab": _read_gitlab,
    "stripe": _read_stripe,
    "standard-webhooks": _read_standard,
    "svix": _read_svix,
    "shopify": _read_shopify,
    "slack": _read_slack,
    "twilio": _read_twilio,
    "mailgun": _read_mailgun,
    "sendgrid": _read_sendgrid,
}


def describe(recognised: Recognised | None) -> str:
    """ "Stripe · invoice.paid" for display; "" when nothing was recognised."""
    if recognised is None:
        return ""
    parts = [PROVIDER_NAMES.get(recognised.provider, recognised.provider)]
    if recognised.event_type:
        parts.append(recognised.event_type)
    if recognised.retry:
        parts.append(f"retry {recognised.retry}")
    return " · ".join(parts)


# --------------------------------------------------------------------------------------------
# A bin's signature setting
# --------------------------------------------------------------------------------------------

SCHEMES = ("github", "stripe", "standard-webhooks", "shopify", "slack", "twilio", "hmac")
HMAC_FIELDS = ("header", "algorithm", "encoding", "prefix")
ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
ENCODINGS = ("hex", "base64")
# RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}")
_WHSEC = re.compile(r"whsec_([A-Za-z0-9+/]+={0,2})")


def _bad_chars(text: str) -> bool:
    # Control characters have no place in a secret or a header, and a lone surrogate
    # (which JSON can carry) cannot even be encoded to bytes.
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


def check_config(data: Any) -> dict[str, Any] | None:
    """A bin's `signature` setting as the API receives it, checked, with defaults filled in.
    Raises ValueError naming the field; returns None for null (no scheme)."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError("signature must be null or an object")
    scheme = data.get("scheme")
    if scheme is None:
        raise ValueError(f"signature.scheme is required: one of {', '.join(SCHEMES)}")
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"signature.scheme must be one of {', '.join(SCHEMES)}")
    allowed = {"scheme", "secret", "tolerance_s"}
    if scheme == "hmac":
        allowed.update(HMAC_FIELDS)
    misplaced = sorted(str(k) for k in data if k in HMAC_FIELDS and k not in allowed)
    if misplaced:
        raise ValueError(f"signature.{misplaced[0]} applies only to the hmac scheme")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ValueError(f"unknown signature field(s): {', '.join(unknown)}")

    secret = data.get("secret")
    if not isinstance(secret, str):
        raise ValueError("signature.secret must be a string")
    if not secret.strip():
        raise ValueError("signature.secret must not be empty")
    if len(secret) > MAX_SECRET_CHARS:
        raise ValueError(f"signature.secret must be at most {MAX_SECRET_CHARS} characters")
    if _bad_chars(secret):
        raise ValueError("signature.secret must not contain control characters")
    if secret != secret.strip():
        raise ValueError("signature.secret must not start or end with whitespace")
    if scheme == "standard-webhooks":
        if not (_WHSEC.fullmatch(secret) and _whsec_key(secret)):
            raise ValueError(
                "signature.secret must be a Standard Webhooks secret: whsec_ then base64"
            )

    tolerance = data.get("tolerance_s", DEFAULT_TOLERANCE_S)
    if type(tolerance) is not int or not 0 <= tolerance <= MAX_TOLERANCE_S:
        raise ValueError(
            f"signature.tolerance_s must be an integer from 0 to {MAX_TOLERANCE_S} (0: no limit)"
        )
    config: dict[str, Any] = {"scheme": scheme, "secret": secret, "tolerance_s": tolerance}
    if scheme != "hmac":
        return config

    header = data.get("header")
    if not isinstance(header, str) or not _TOKEN.fullmatch(header):
        raise ValueError("signature.header must be a header name (letters, digits, -)")
    if "_" in header:
        # The HTTP server drops header names with "_" before the app sees them.
        raise ValueError("signature.header must not contain _: such headers never arrive")
    algorithm = data.get("algorithm", "sha256")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"signature.algorithm must be one of {', '.join(ALGORITHMS)}")
    encoding = data.get("encoding", "hex")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ValueError(f"signature.encoding must be one of {', '.join(ENCODINGS)}")
    prefix = data.get("prefix", "")
    if (
        not isinstance(prefix, str)
        or len(prefix) > 64
        or not prefix.isascii()
        or not prefix.isprintable()
    ):
        raise ValueError("signature.prefix must be printable ASCII, at most 64 characters")
    config.update(header=header.lower(), algorithm=algorithm, encoding=encoding, prefix=prefix)
    return config


def _whsec_key(secret: str) -> bytes:
    """The HMAC key of a whsec_ secret, as standardwebhooks' Webhook.__init__ derives it."""
    if secret.startswith("whsec_"):
        secret = secret[len("whsec_") :]
    try:
        return base64.b64decode(secret + "==")  # padding is added for unpadded secrets
    except (binascii.Error, ValueError):
        return b""


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------

VALID = Verdict(True, "valid")


def _b(text: str) -> bytes:
    return text.encode("utf-8", "replace")


def _hmac(key: str | bytes, message: bytes, digest: Callable[..., Any] = hashlib.sha256) -> Any:
    return hmac.new(_b(key) if isinstance(key, str) else key, message, digest)


def _same(expected: bytes, received: str | bytes) -> bool:
    """Constant-time comparison; received text is compared as its UTF-8 bytes."""
    return hmac.compare_digest(expected, _b(received) if isinstance(received, str) else received)


def _mismatch(body: bytes) -> Verdict:
    return Verdict(
        False,
        f"signature does not match (computed over the {len(body):,} received bytes"
        " with the bin's secret)",
    )


def _age(timestamp: float, now: float, tolerance: int) -> Verdict | None:
    """A verdict when the timestamp is further from now than the tolerance (0: no limit)."""
    if not tolerance:
        return None
    if timestamp < now - tolerance:
        off = f"{round(now - timestamp):,} s old"
    elif timestamp > now + tolerance:
        off = f"{round(timestamp - now):,} s in the future"
    else:
        return None
    return Verdict(False, f"timestamp {off}, over the {tolerance} s tolerance")


def verify(
    config: dict[str, Any],
    headers: Sequence[Sequence[str]],
    body: bytes,
    url: str = "",
    now: float | None = None,
) -> Verdict:
    """Does the request carry a valid signature under the bin's setting? Never raises.

    `url` is the capture URL as the provider called it (only Twilio signs it); `now` is the
    time to judge timestamps against (the time the capture arrived, for a re-check)."""
    try:
        verifier = _VERIFIERS[config["scheme"]]
        return verifier(
            config,
            _first_values(headers),
            bytes(body),
            url,
            time.time() if now is None else float(now),
        )
    except Exception as exc:
        return Verdict(False, f"signature could not be checked ({type(exc).__name__})")


def _verify_github(cfg: dict[str, Any], h: dict[str, str], body: bytes, url: str, now: float):
    # GitHub's documented recipe: "sha256=" + hex HMAC-SHA256 of the body, compared whole.
    received = h.get("x-hub-signature-256")
    if not received:
        return Verdict(False, "no X-Hub-Signature-256 header")
    expected = b"sha256=" + _b(_hmac(cfg["secret"], body).hexdigest())
    return VALID if _same(expected, received) else _mismatch(body)


def _verify_shopify(cfg: dict[str, Any], h: dict[str, str], body: bytes, url: str, now: float):
    # Shopify's documented recipe: base64 HMAC-SHA256 of the body, compared whole.
    received = h.get("x-shopify-hmac-sha256")
    if not received:
        return Verdict(False, "no X-Shopify-Hmac-Sha256 header")
    expected = base64.b64encode(_hmac(cfg["secret"], body).digest())
    return VALID if _same(expected, received) else _mismatch(body)


def _verify_stripe(cfg: dict[str, Any], h: dict[str, str], body: bytes, url: str, now: float):
    # As stripe-python's WebhookSignature.verify_header: "t=<int>,v1=<hex>[,v1=...]", the
    # HMAC-SHA256 of "<t>.<body>" with the whole secret (whsec_ included), any v1 matching,
    # then t no older than the tolerance (newer is not limited).
    header = h.get("stripe-signature")
    if not header:
        return Verdict(False, "no Stripe-Signature header")
    items = [item.split("=", 2) for item in header.split(",")]
    try:  # every "t" item must have a value, as the library's list comprehension requires
        stamps = [item[1] for item in items if item[0] == "t"]
    except IndexError:
        return Verdict(False, "malformed Stripe-Signature header: t without a value")
    if not stamps:
        return Verdict(False, "malformed Stripe-Signature header: no t=")
    try:
        timestamp = int(stamps[0])
    except ValueError:
        return Verdict(False, "malformed Stripe-Signature header: t= is not a whole number")
    try:
        signatures = [item[1] for item in items if item[0] == "v1"]
    except IndexError:
        return Verdict(False, "malformed Stripe-Signature header: v1 without a value")
    if not signatures:
        return Verdict(False, "malformed Stripe-Signature header: no v1= signature")
    expected = _b(_hmac(cfg["secret"], b"%d." % timestamp + body).hexdigest())
    if not any(_same(expected, signature) for signature in signatures):
        return _mismatch(body)
    # Stripe limits only the age: a timestamp ahead of the clock passes.
    late = _age(timestamp, now, cfg["tolerance_s"])
    return late if late and timestamp < now else VALID


def _verify_standard(cfg: dict[str, Any], h: dict[str, str], body: bytes, url: str, now: float):
    # As standardwebhooks' (and svix's) Webhook.verify: svix-* headers win over webhook-*;
    # the timestamp within the tolerance either way; then any "v1,<base64>" among the
    # space-separated signatures matching the HMAC-SHA256 of "<id>.<timestamp>.<body>" keyed
    # with the base64-decoded secret. The bytes are signed as received (the libraries
    # decode the body as UTF-8 first, which changes nothing for the UTF-8 bodies they accept).
    def pick(name: str) -> str:
        return h["svix-" + name] if "svix-" + name in h else h.get("webhook-" + name, "")

    msg_id, stamp, signatures = pick("id"), pick("timestamp"), pick("signature")
    for name, value in (("id", msg_id), ("timestamp", stamp), ("signature", signatures)):
        if not value:
            return Verdict(False, f"no webhook-{name} (or svix-{name}) header")
    try:
        when = datetime.fromtimestamp(float(stamp), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return Verdict(False, "malformed webhook-timestamp header: not a Unix time")
    late = _age(when.timestamp(), now, cfg["tolerance_s"])
    if late:
        return late
    signed = _b(f"{msg_id}.{math.floor(when.timestamp())}.") + body
    expected = _hmac(_whsec_key(cfg["secret"]), signed).digest()
    for versioned in signatures.split(" "):
        parts = versioned.split(",")
        if len(parts) != 2:
            return Verdict(False, "malformed webhook-signature header: expected v1,<base64>")
        version, signature = parts
        if version != "v1":
            continue
        try:
            received = base64.b64decode(signature)
        except (binascii.Error, ValueError):
            return Verdict(False, "malformed webhook-signature header: signature is not base64")
        if _same(expected, received):
            return VALID
    return _mismatch(body)


def _verify_slack(cfg: dict[str, Any], h: dict[str, str], body: bytes, url: str, now: float):
    # As slack_sdk's SignatureVerifier.is_valid: the timestamp within the tolerance either
    # way, then "v0=" + hex HMAC-SHA256 of "v0:<timestamp header as sent>:<body>".
    stamp = h.get("x-slack-request-timestamp")
    received = h.get("x-slack-signature")
    if not stamp:
        return Verdict(False, "no X-Slack-Request-Timestamp header")
    if not received:
        return Verdict(False, "no X-Slack-Signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        return Verdict(False, "malformed X-Slack-Request-Timestamp header: not a whole number")
    late = _age(timestamp, now, cfg["tolerance_s"])
    if late:
        return late
    expected = b"v0=" + _b(_hmac(cfg["secret"], b"v0:" + _b(stamp) + b":" + body).hexdigest())
    return VALID if _same(expected, received) else _mismatch(body)


def _verify_hmac(cfg: dict[str, Any], h: dict[str, str], body: bytes, url: str, now: float):
    # A generic HMAC of the body in one header: <prefix><hex or base64 digest>. Hex is read
    # in either case and base64 in its standard or URL-safe alphabet, padded or not.
    name, prefix = cfg["header"], cfg["prefix"]
    value = h.get(name)
    if not value:
        return Verdict(False, f"no {name} header")
    if not value.startswith(prefix):
        return Verdict(False, f"{name} header does not start with {prefix!r}")
    received = _decode_digest(value[len(prefix) :].strip(), cfg["encoding"])
    if received is None:
        return Verdict(False, f"{name} header is not {cfg['encoding']} after the prefix")
    expected = _hmac(cfg["secret"], body, ALGORITHMS[cfg["algorithm"]]).digest()
    return VALID if _same(expected, received) else _mismatch(body)


def _decode_digest(text: str, encoding: str) -> bytes | None:
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        text = text.replace("-", "+").replace("_", "/").rstrip("=")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


# Twilio ----------------------------------------------------------------------------------

_TWILIO_DIGESTS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def _twilio_algorithm(settings_header: str | None) -> str:
    # As twilio's get_signature_algorithm: X-Twilio-Webhooks-Signature-Settings
    # "key=...,algorithm=HMAC_SHA256" names it; absent, it is the Auth Token's HMAC_SHA1.
    for part in (settings_header or "").split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "algorithm" and value.strip():
            return value.strip()
    return "HMAC_SHA1"


def _twilio_params(h: dict[str, str], method: str | None, body: bytes, query: dict) -> Any:
    """What a Twilio handler passes to RequestValidator as params: the form fields of a
    form POST (all values of each name), the body itself when the URL carries bodySHA256
    (JSON requests), nothing otherwise (GET: the parameters are in the URL)."""
    if "bodySHA256" in query:
        return body
    if (method or "POST").upper() != "GET" and h.get("content-type", "").lower().startswith(
        "application/x-www-form-urlencoded"
    ):
        params: dict[str, list[str]] = {}
        for name, value in _form_pairs(body):
            params.setdefault(name, []).append(value)
        return params
    return {}


def _twilio_signature(secret: str, url: str, params: dict[str, list[str]], algorithm: str):
    # As RequestValidator.compute_signature: the URL, then each parameter name (sorted,
    # once) followed by each of its distinct values (sorted), HMAC'd and base64-encoded.
    text = url
    for name in sorted(set(params)):
        for value in sorted(set(params[name])):
            text += name + value
    digest = _hmac(secret, _b(text), _TWILIO_DIGESTS[algorithm.upper()]).digest()
    return base64.b64encode(digest).strip()


def _without_port(uri: ParseResult) -> str:
    # twilio's remove_port, quirks included.
    if not uri.port:
        return uri.geturl()
    return uri._replace(netloc=uri.netloc.split(":")[0]).geturl()


def _with_port(uri: ParseResult) -> str:
    # twilio's add_port.
    if uri.port:
        return uri.geturl()
    port = 443 if uri.scheme == "https" else 80
    return uri._replace(netloc=f"{uri.netloc}:{port}").geturl()


def _verify_twilio(cfg: dict[str, Any], h: dict[str, str], body: bytes, url: str, now: float):
    # As twilio's RequestValidator.validate over the URL the provider called, tried with and
    # without the port; for JSON bodies the URL's bodySHA256 must be the body's SHA-256.
    received = h.get("x-twilio-signature")
    if not received:
        return Verdict(False, "no X-Twilio-Signature header")
    algorithm = _twilio_algorithm(h.get("x-twilio-webhooks-signature-settings"))
    if algorithm.upper() not in _TWILIO_DIGESTS:
        return Verdict(
            False, f"unsupported algorithm {algorithm!r} in X-Twilio-Webhooks-Signature-Settings"
        )
    if not url:
        return Verdict(False, "the capture URL is not known, and Twilio signs it")
    try:
        uri = urlparse(url)
        with_port, without_port = _with_port(uri), _without_port(uri)
    except ValueError:
        return Verdict(False, "the capture URL has an invalid port")
    query = parse_qs(uri.query)
    params = _twilio_params(h, None, body, query)
    if isinstance(params, bytes):
        if not _same(_b(hashlib.sha256(body).hexdigest()), query["bodySHA256"][0]):
            return Verdict(
                False,
                f"body does not match the bodySHA256 in the URL ({len(body):,} received bytes)",
            )
        params = {}
    secret = cfg["secret"]
    for candidate in (without_port, with_port):
        if _same(_twilio_signature(secret, candidate, params, algorithm), received):
            return VALID
    return Verdict(
        False,
        f"signature does not match (computed over the URL {url} and {len(params):,} form"
        " parameters with the bin's secret)",
    )


_VERIFIERS: dict[str, Callable[..., Verdict]] = {
    "github": _verify_github,
    "shopify": _verify_shopify,
    "stripe": _verify_stripe,
    "standard-webhooks": _verify_standard,
    "slack": _verify_slack,
    "twilio": _verify_twilio,
    "hmac": _verify_hmac,
}


# --------------------------------------------------------------------------------------------
# Signing anew for a resend
# --------------------------------------------------------------------------------------------


def _put(headers: list[tuple[str, str]], name: str, value: str) -> None:
    """Set a header in place: the first occurrence keeps its name and position and takes the
    value, later ones go; an absent header is appended under `name`."""
    lowered = name.lower()
    at = [i for i, (n, _) in enumerate(headers) if n.lower() == lowered]
    if not at:
        headers.append((name, value))
        return
    headers[at[0]] = (headers[at[0]][0], value)
    for i in reversed(at[1:]):
        del headers[i]


def _has(headers: list[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def resign(
    config: dict[str, Any],
    method: str,
    url: str,
    headers: Sequence[Sequence[str]],
    body: bytes,
    now: float | None = None,
) -> list[tuple[str, str]]:
    """The headers with fresh signature (and timestamp) headers for exactly `body`, so that a
    target using the provider's library accepts them at `now`. `url` is the target (Twilio
    signs it). `config` is a checked setting (check_config)."""
    out = [(str(n), str(v)) for n, v in headers]
    body = bytes(body)
    stamp = str(int(time.time() if now is None else now))
    scheme, secret = config["scheme"], config["secret"]
    if scheme == "github":
        _put(out, "X-Hub-Signature-256", "sha256=" + _hmac(secret, body).hexdigest())
        if _has(out, "x-hub-signature") is not None:  # GitHub also sends a SHA-1 one
            _put(out, "X-Hub-Signature", "sha1=" + _hmac(secret, body, hashlib.sha1).hexdigest())
    elif scheme == "shopify":
        digest = _hmac(secret, body).digest()
        _put(out, "X-Shopify-Hmac-Sha256", base64.b64encode(digest).decode())
    elif scheme == "stripe":
        signature = _hmac(secret, _b(stamp + ".") + body).hexdigest()
        _put(out, "Stripe-Signature", f"t={stamp},v1={signature}")
    elif scheme == "standard-webhooks":
        _resign_standard(out, secret, stamp, body)
    elif scheme == "slack":
        signature = _hmac(secret, _b(f"v0:{stamp}:") + body).hexdigest()
        _put(out, "X-Slack-Request-Timestamp", stamp)
        _put(out, "X-Slack-Signature", "v0=" + signature)
    elif scheme == "twilio":
        h = _first_values(out)
        algorithm = _twilio_algorithm(h.get("x-twilio-webhooks-signature-settings"))
        if algorithm.upper() not in _TWILIO_DIGESTS:
            algorithm = "HMAC_SHA1"
        params = _twilio_params(h, method, body, parse_qs(urlparse(url).query))
        params = {} if isinstance(params, bytes) else params
        signature = _twilio_signature(secret, url, params, algorithm).decode()
        _put(out, "X-Twilio-Signature", signature)
    elif scheme == "hmac":
        digest = _hmac(secret, body, ALGORITHMS[config["algorithm"]]).digest()
        encoded = digest.hex() if config["encoding"] == "hex" else base64.b64encode(digest).decode()
        _put(out, config["header"], config["prefix"] + encoded)
    else:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    return out


def _resign_standard(out: list[tuple[str, str]], secret: str, stamp: str, body: bytes) -> None:
    # Sign each family the request carries (svix-* and/or webhook-*), each over its own id;
    # a request with neither gets webhook-* headers and a new id.
    key = _whsec_key(secret)
    families = [
        f for f in ("svix", "webhook") if _has(out, f + "-id") or _has(out, f + "-signature")
    ]
    known_id = _has(out, "webhook-id") or _has(out, "svix-id")
    for family in families or ["webhook"]:
        msg_id = _has(out, family + "-id") or known_id or "msg_" + secrets.token_hex(12)
        digest = _hmac(key, _b(f"{msg_id}.{stamp}.") + body).digest()
        _put(out, family + "-id", msg_id)
        _put(out, family + "-timestamp", stamp)
        _put(out, family + "-signature", "v1," + base64.b64encode(digest).decode())
