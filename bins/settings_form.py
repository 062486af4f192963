"""The page's settings form: a bin's settings as form fields and back, and in plain words.

Three shapes, one way each:
- the settings (PATCH-shaped: `name`, `response`, `rules`, `forward_url`, `signature`), as the
  API and `binsettings.change` take them;
- the editor (`Editor`: nested dicts of plain strings), what the form shows; made from the
  stored settings, or from a posted form so that an invalid save shows what was typed;
- the posted form: flat fields. Repeated parts (rules, steps) each have a key; the hidden
  `rules` / `<prefix>-steps` inputs list the keys in page order, so reordering on the page
  needs no renumbering.

Numbers that are not numbers are passed on as typed, so the API's own validation names the
field with the API's own message ("response.status must be an integer from 200 to 599").
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.http import QueryDict

from .models import full_response
from .providers import ALGORITHMS, DEFAULT_TOLERANCE_S, ENCODINGS, PROVIDER_NAMES
from .validation import Invalid

# Keys of repeated parts as the page makes them (the server: 0, 1, ...; the page's script: n1...).
KEY = re.compile(r"[a-z0-9]{1,12}")
INTEGER = re.compile(r"-?[0-9]{1,9}")

# Signature schemes as the form offers them, with the header each reads.
SCHEME_LABELS = {
    "github": "GitHub (X-Hub-Signature-256)",
    "stripe": "Stripe (Stripe-Signature)",
    "standard-webhooks": "Standard Webhooks / Svix (webhook-signature, svix-signature)",
    "shopify": "Shopify (X-Shopify-Hmac-Sha256)",
    "slack": "Slack (X-Slack-Signature)",
    "twilio": "Twilio (X-Twilio-Signature)",
    "hmac": "Other: an HMAC of the body in a header of your choice",
}

Editor = dict[str, Any]

# The text fields of each part as the form names them (`<prefix>-<field>`).
RESPONSE_FIELDS = ("status", "content_type", "headers", "body", "delay_ms")
STEP_FIELDS = ("status", "times", "body", "delay_ms", "headers")
RULE_FIELDS = (
    "name",
    "method",
    "path",
    "header_name",
    "header_value",
    "json_pointer",
    "json_value",
    "provider",
    "event_type",
)
SIGNATURE_FIELDS = ("scheme", "secret", "tolerance_s", "header", "algorithm", "encoding", "prefix")


# --- stored settings -> editor ---------------------------------------------------------------


def editor_from_settings(settings: dict[str, Any]) -> Editor:
    """The editor for a bin's stored settings (`Bin.settings_json()` or a valid PATCH)."""
    signature = settings.get("signature") or {}
    return {
        "name": settings.get("name") or "",
        "forward_url": settings.get("forward_url") or "",
        "response": response_editor(full_response(settings.get("response")), "response", False),
        "rules": [rule_editor(rule, str(i)) for i, rule in enumerate(settings.get("rules") or [])],
        "signature": {
            "scheme": signature.get("scheme") or "",
            "secret": signature.get("secret") or "",
            "tolerance_s": _text(signature.get("tolerance_s", DEFAULT_TOLERANCE_S)),
            "header": signature.get("header") or "",
            "algorithm": signature.get("algorithm") or "sha256",
            "encoding": signature.get("encoding") or "hex",
            "prefix": signature.get("prefix") or "",
        },
    }


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _header_lines(headers: Any) -> str:
    if not isinstance(headers, list):
        return ""
    return "\n".join(f"{p[0]}: {p[1]}" for p in headers if isinstance(p, list) and len(p) == 2)


def response_editor(response: dict[str, Any], prefix: str, optional: bool) -> Editor:
    """A response's fields; `optional` for a rule's response (blank: the default's)."""
    headers = response.get("headers")
    content_type = ""
    rest = headers if isinstance(headers, list) else []
    for i, pair in enumerate(rest):
        if isinstance(pair, list) and len(pair) == 2 and str(pair[0]).lower() == "content-type":
            content_type = str(pair[1])
            rest = rest[:i] + rest[i + 1 :]
            break
    steps = response.get("steps") if isinstance(response.get("steps"), list) else []
    return {
        "prefix": prefix,
        "optional": optional,
        "status": _text(response.get("status")),
        "content_type": content_type,
        "headers": _header_lines(rest),
        "body": _text(response.get("body")),
        # A rule's explicitly empty body differs from none given (the default's body).
        "empty_body": optional and response.get("body") == "",
        "delay_ms": _text(response.get("delay_ms")),
        # Stored steps without `per` count the bin's captures; new steps default to per event
        # (what testing a provider's retries needs).
        "per": response.get("per") or ("bin" if steps else "event"),
        "steps": [step_editor(step, prefix, str(i)) for i, step in enumerate(steps)],
    }


def step_editor(step: Any, prefix: str, key: str) -> Editor:
    step = step if isinstance(step, dict) else {}
    return {
        "key": key,
        "prefix": f"{prefix}-step-{key}",
        "status": _text(step.get("status")),
        "times": _text(step.get("times")),
        "body": _text(step.get("body")),
        "delay_ms": _text(step.get("delay_ms")),
        "headers": _header_lines(step.get("headers")),
        # An explicitly empty body differs from none given (the response's body).
        "empty_body": step.get("body") == "",
    }


def _not_json(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is not a finite number")
    return number


def read_json_value(text: str) -> Any:
    """A JSON condition's value as typed: JSON where it reads as JSON (`42`, `true`, `"42"`),
    else the text itself. NaN and infinities are not JSON (a database would refuse them)."""
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, RecursionError):
        return text


def json_value_text(value: Any) -> str:
    """A JSON condition's value as the form shows it: plain text for a string that does not
    read as JSON, JSON otherwise (so `42` is the number, `"42"` the string)."""
    if isinstance(value, str) and read_json_value(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)


def rule_editor(rule: Any, key: str) -> Editor:
    rule = rule if isinstance(rule, dict) else {}
    match = rule.get("match") if isinstance(rule.get("match"), dict) else {}
    header = match.get("header") if isinstance(match.get("header"), list) else ["", ""]
    pointer = match.get("json") if isinstance(match.get("json"), list) else None
    response = rule.get("response") if isinstance(rule.get("response"), dict) else {}
    prefix = f"rule-{key}"
    return {
        "key": key,
        "prefix": prefix,
        "name": _text(rule.get("name")),
        "method": _text(match.get("method")),
        "path": _text(match.get("path")),
        "header_name": _text(header[0]) if len(header) == 2 else "",
        "header_value": _text(header[1]) if len(header) == 2 else "",
        "json_pointer": _text(pointer[0]) if pointer and len(pointer) == 2 else "",
        "json_value": json_value_text(pointer[1]) if pointer and len(pointer) == 2 else "",
        "provider": _text(match.get("provider")),
        "event_type": _text(match.get("event_type")),
        "response": response_editor(response, f"{prefix}-response", True),
    }


def numbered(editor: Editor) -> Editor:
    """The editor with each part's position and its field's name in the API's messages
    (`rules[1].response.status`), so the form can point at the field a message names."""
    if "response" in editor:
        _numbered_response(editor["response"], "response")
    for i, rule in enumerate(editor.get("rules", [])):
        rule.update(position=i + 1, field=f"rules[{i}]")
        _numbered_response(rule["response"], f"rules[{i}].response")
    return editor


def _numbered_response(r: Editor, field: str) -> None:
    r["field"] = field
    for i, step in enumerate(r["steps"]):
        step.update(position=i + 1, field=f"{field}.steps[{i}]", parent=r["prefix"])


# --- posted form -> editor -------------------------------------------------------------------


def _keys(form: QueryDict, name: str) -> list[str]:
    seen: list[str] = []
    for key in form.getlist(name):
        if KEY.fullmatch(key) and key not in seen:
            seen.append(key)
    return seen


def _field(form: QueryDict, name: str) -> str:
    # Browsers send a textarea's line breaks as CRLF: settings are kept with LF.
    return form.get(name, "").replace("\r\n", "\n")


def editor_from_form(form: QueryDict) -> Editor:
    """The editor as the posted form has it (every value as typed)."""
    return {
        "name": _field(form, "name"),
        "forward_url": _field(form, "forward_url"),
        "response": response_from_form(form, "response", False),
        "rules": [rule_from_form(form, key) for key in _keys(form, "rules")],
        "signature": {name: _field(form, f"signature-{name}") for name in SIGNATURE_FIELDS},
    }


def response_from_form(form: QueryDict, prefix: str, optional: bool) -> Editor:
    return {
        "prefix": prefix,
        "optional": optional,
        **{name: _field(form, f"{prefix}-{name}") for name in RESPONSE_FIELDS},
        "empty_body": optional and bool(form.get(f"{prefix}-empty_body")),
        "per": _field(form, f"{prefix}-per") or "event",
        "steps": [
            {
                "key": key,
                "prefix": f"{prefix}-step-{key}",
                **{name: _field(form, f"{prefix}-step-{key}-{name}") for name in STEP_FIELDS},
                "empty_body": bool(form.get(f"{prefix}-step-{key}-empty_body")),
            }
            for key in _keys(form, f"{prefix}-steps")
        ],
    }


def rule_from_form(form: QueryDict, key: str) -> Editor:
    prefix = f"rule-{key}"
    return {
        "key": key,
        "prefix": prefix,
        **{name: _field(form, f"{prefix}-{name}") for name in RULE_FIELDS},
        "response": response_from_form(form, f"{prefix}-response", True),
    }


# --- editor -> settings (PATCH-shaped) -------------------------------------------------------


def _number(text: str) -> int | str:
    """An integer as typed, or the text itself (the API's validation then names the field)."""
    text = text.strip()
    return int(text) if INTEGER.fullmatch(text) else text


def _headers(content_type: str, lines: str, field: str) -> list[list[str]]:
    headers = [["content-type", content_type.strip()]] if content_type.strip() else []
    for line in lines.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise Invalid(f"{field}: the line {line.strip()!r} has no colon (write Name: value)")
        headers.append([name.strip(), value.strip()])
    return headers


def response_settings(r: Editor, field: str) -> dict[str, Any]:
    """A response from its editor. The default response is given whole (what the form shows
    is what is stored); a rule's response gives only what is filled in (the rest is the
    default's)."""
    optional = r["optional"]
    out: dict[str, Any] = {}
    if r["status"].strip() or not optional:
        out["status"] = _number(r["status"])
    headers = _headers(r["content_type"], r["headers"], f"{field}.headers")
    if headers or not optional:
        out["headers"] = headers
    if r["empty_body"]:
        out["body"] = ""
    elif r["body"] or not optional:
        out["body"] = r["body"]
    if r["delay_ms"].strip():
        out["delay_ms"] = _number(r["delay_ms"])
    elif not optional:
        out["delay_ms"] = 0
    steps = [step_settings(s, f"{field}.steps[{i}]") for i, s in enumerate(r["steps"])]
    if steps:
        out["steps"] = steps
        out["per"] = r["per"]
    elif not optional:
        out["steps"] = []  # the form shows none: clear any stored
    return out


def step_settings(s: Editor, field: str) -> dict[str, Any]:
    """A step gives what is filled in; the rest is its response's."""
    out: dict[str, Any] = {}
    for name in ("status", "times", "delay_ms"):
        if s[name].strip():
            out[name] = _number(s[name])
    if s["body"] or s["empty_body"]:
        out["body"] = "" if s["empty_body"] else s["body"]
    if s["headers"].strip():
        out["headers"] = _headers("", s["headers"], f"{field}.headers")
    return out


def rule_settings(rule: Editor, i: int) -> dict[str, Any]:
    field = f"rules[{i}]"
    match: dict[str, Any] = {}
    for name in ("method", "path", "provider", "event_type"):
        if rule[name].strip():
            match[name] = rule[name].strip()
    if rule["header_name"].strip() or rule["header_value"]:
        match["header"] = [rule["header_name"].strip(), rule["header_value"]]
    if rule["json_pointer"].strip() or rule["json_value"]:
        match["json"] = [rule["json_pointer"].strip(), read_json_value(rule["json_value"])]
    out: dict[str, Any] = {
        "match": match,
        "response": response_settings(rule["response"], f"{field}.response"),
    }
    if rule["name"].strip():
        out["name"] = rule["name"]
    return out


def settings_from_editor(editor: Editor) -> dict[str, Any]:
    """The PATCH for what the form shows (raises Invalid for a header line it cannot read)."""
    sig = editor["signature"]
    signature: dict[str, Any] | None = None
    if sig["scheme"]:
        signature = {"scheme": sig["scheme"], "secret": sig["secret"]}
        if sig["tolerance_s"].strip():
            signature["tolerance_s"] = _number(sig["tolerance_s"])
        if sig["scheme"] == "hmac":
            signature.update(
                header=sig["header"].strip(),
                algorithm=sig["algorithm"],
                encoding=sig["encoding"],
                prefix=sig["prefix"],
            )
    return {
        "name": editor["name"],
        "response": response_settings(editor["response"], "response"),
        "rules": [rule_settings(rule, i) for i, rule in enumerate(editor["rules"])],
        "forward_url": editor["forward_url"].strip() or None,
        "signature": signature,
    }


# Where a message of the API points in the form: "rules[1].match.header must be ..." ->
# "rules[1].match.header"; "response.headers[0]: ..." -> "response.headers".
FIELD_PATH = re.compile(r"(?:unknown )?([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*)")


def error_field(message: str) -> str:
    found = FIELD_PATH.match(message)
    if not found:
        return ""
    return re.sub(r"\.headers\[\d+\]$", ".headers", found.group(1))


# --- choices for the form's selects ----------------------------------------------------------


def choices() -> dict[str, Any]:
    return {
        "schemes": list(SCHEME_LABELS.items()),
        "algorithms": list(ALGORITHMS),
        "encodings": list(ENCODINGS),
        "providers": list(PROVIDER_NAMES.items()),
        "provider_ids": list(PROVIDER_NAMES),
    }


# --- in plain words --------------------------------------------------------------------------

TIMES = {1: "once", 2: "twice"} | {
    n: f"{w} times"
    for n, w in zip(range(3, 11), "three four five six seven eight nine ten".split(), strict=True)
}
# Providers stop waiting for an answer well before this (GitHub after 10 s).
SLOW_MS = 10_000


def _delay(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:g} s"


def _body(body: str) -> str:
    text = " ".join(body.split())
    return text if len(text) <= 60 else text[:59] + "…"


def reply_words(config: dict[str, Any], *, body: bool) -> str:
    """`500`, or `200 {"ok": true}` (with `body`), and its delay."""
    words = str(config.get("status"))
    if body and config.get("body"):
        words += " " + _body(str(config["body"]))
    delay = config.get("delay_ms") or 0
    if delay:
        words += f" after {_delay(delay)}"
        if delay >= SLOW_MS:
            words += f" (a provider that stops waiting sooner never sees the {config['status']})"
    return words


def response_words(config: dict[str, Any]) -> str:
    """What a response answers, step by step: `500 three times for each event, then 200
    {"ok": true}`. Bodies are shown for the answer a provider ends with."""
    steps = config.get("steps") or []
    if not steps:
        return reply_words(config, body=True)
    per_event = (config.get("per") or "bin") == "event"
    parts = []
    for i, step in enumerate(steps):
        merged = {**config, **step}
        if i == len(steps) - 1:
            parts.append(reply_words(merged, body=True))
            break
        times = step.get("times", 1)
        reply = reply_words(merged, body=False)
        if per_event:
            where = " for each event" if i == 0 else ""
            parts.append(f"{reply} {TIMES.get(times, f'{times} times')}{where}")
        elif i == 0:
            parts.append(f"{reply} for the bin's first {times} request{'s' * (times > 1)}")
        else:
            parts.append(f"{reply} for the next {times}")
    return ", then ".join(parts)


def match_words(match: dict[str, Any]) -> str:
    words = []
    if "method" in match:
        words.append(str(match["method"]).upper())
    if match.get("path"):
        words.append(f"to {match['path']}…")
    if "header" in match:
        words.append(f"with {match['header'][0]} containing {match['header'][1]!r}")
    if "json" in match:
        words.append(f"with {match['json'][0] or 'the body'} = {json.dumps(match['json'][1])}")
    if "provider" in match:
        words.append(f"from {PROVIDER_NAMES.get(match['provider'], match['provider'])}")
    if "event_type" in match:
        words.append(f"of type {match['event_type']}")
    return " ".join(words) or "every request"


def plain_words(response: dict[str, Any], rules: list[dict[str, Any]]) -> list[str]:
    """What a provider will get, in sentences: one per rule, then the default. Takes valid
    settings (`validation.bin_changes`' output)."""
    base = full_response(response)
    plain = {k: v for k, v in base.items() if k not in ("steps", "per")}
    lines = []
    for rule in rules:
        config = {**plain, **rule.get("response", {})}
        lines.append(
            f"“{rule['name']}”: a request {match_words(rule.get('match', {}))} gets "
            f"{response_words(config)}."
        )
    lead = "Any other request gets" if rules else "A provider gets"
    lines.append(f"{lead} {response_words(base)}.")
    return lines
