"""Validation of a bin's settings as the API takes them (POST /api/bins, PATCH)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from .models import full_response
from .outgoing import BadTarget, check_url

# What a response (and each of its steps) may set.
RESPONSE_FIELDS = {"status", "headers", "body", "delay_ms"}
MAX_DELAY_MS = 30_000
# An HTTP token (RFC 9110 5.6.2): what a header name or a method may be.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters in a header value: C0 but tab, DEL, and C1 (0x80-0x9f, which Latin-1 text
# carries as single bytes: NEL \x85 ends a line for some parsers).
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# Framing and connection headers are the server's to set: a wrong Content-Length would break
# the reply, Upgrade with Connection would ask for a tunnel.
SERVER_HEADERS = {
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "trailer",
    "te",
    "proxy-connection",
}
# A bin's reply is served from this instance's origin, and whoever holds the token writes it:
# headers that act on the whole origin (its cookies and storage, where the browser sends its
# traffic, its error reports, its transport security) are never allowed in it.
ORIGIN_HEADERS = {
    "set-cookie",
    "set-cookie2",
    "clear-site-data",
    "alt-svc",
    "nel",
    "report-to",
    "strict-transport-security",
    "service-worker-allowed",
    "accept-ch",
}


class Invalid(ValueError):
    """A bad request to the API; the message names the problem."""


BIN_FIELDS = {"name", "response", "rules", "forward_url", "signature"}
MAX_NAME = 100
MAX_BODY_CHARS = 1024 * 1024
MAX_STEPS = 20
MAX_TIMES = 1000
MAX_RULES = 50
MATCH_FIELDS = {"method", "path", "header", "json", "provider", "event_type"}


def bin_changes(current: Any, data: dict[str, Any], token: str = "") -> dict[str, Any]:
    """The Bin fields to set for a POST or PATCH body (`current`: the bin, or None for a new
    one); raises Invalid naming the field (nothing is changed)."""
    unknown = set(data) - BIN_FIELDS
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {}
    if "name" in data:
        changes["name"] = check_name(data["name"])
    if "response" in data:
        stored = current.response if current is not None else None
        changes["response"] = merge_response(stored, data["response"])
    if "rules" in data:
        changes["rules"] = check_rules(data["rules"])
    if "signature" in data:
        try:
            changes["signature"] = check_signature(data["signature"])
        except ValueError as exc:
            raise Invalid(str(exc)) from exc
    if "forward_url" in data:
        url = data["forward_url"]
        try:
            changes["forward_url"] = "" if url in (None, "") else check_url(url)
        except BadTarget as exc:
            raise Invalid(f"forward_url: {exc}") from exc
        if token and token in unquote(changes["forward_url"]).lower():
            raise Invalid("forward_url points at this bin: every capture would forward forever")
    return changes


def check_name(name: Any) -> str:
    if name is None:
        return ""
    if not isinstance(name, str) or len(name) > MAX_NAME or CONTROL.search(name):
        raise Invalid(f"name must be null or text of at most {MAX_NAME} characters")
    return name.strip()


def check_signature(data: Any) -> dict[str, Any] | None:
    from .providers import check_config

    return check_config(data)


def merge_response(current: dict[str, Any] | None, response: Any) -> dict[str, Any]:
    """The bin's stored response with a PATCH's fields over it (defaults filled in)."""
    check_response(response, "response", steps=True)
    return {**full_response(current), **response}


def check_response(response: Any, field: str, *, steps: bool) -> None:
    """A response (or a step of one, or a rule's): the fields it gives are all valid."""
    if not isinstance(response, dict):
        raise Invalid(f"{field} must be an object")
    allowed = RESPONSE_FIELDS | ({"steps", "per"} if steps else {"times"})
    unknown = set(response) - allowed
    if unknown:
        raise Invalid(f"unknown {field} field(s): {', '.join(sorted(unknown))}")
    if "status" in response:
        status = response["status"]
        if type(status) is not int or not 200 <= status <= 599:
            # 1xx would carry the reply past the sandbox header as an interim response, and 101
            # would open a raw tunnel on this origin.
            raise Invalid(f"{field}.status must be an integer from 200 to 599")
    if "headers" in response:
        response_headers(response["headers"], f"{field}.headers")
    if "body" in response:
        body = response["body"]
        if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
            raise Invalid(f"{field}.body must be a string of at most {MAX_BODY_CHARS} characters")
    if "delay_ms" in response:
        delay = response["delay_ms"]
        if type(delay) is not int or not 0 <= delay <= MAX_DELAY_MS:
            raise Invalid(f"{field}.delay_ms must be an integer from 0 to {MAX_DELAY_MS}")
    if "times" in response:
        times = response["times"]
        if type(times) is not int or not 1 <= times <= MAX_TIMES:
            raise Invalid(f"{field}.times must be an integer from 1 to {MAX_TIMES}")
    if "per" in response and response["per"] not in ("bin", "event"):
        raise Invalid(f'{field}.per must be "bin" or "event"')
    if "steps" in response:
        items = response["steps"]
        if not isinstance(items, list) or len(items) > MAX_STEPS:
            raise Invalid(f"{field}.steps must be a list of at most {MAX_STEPS} steps")
        for i, step in enumerate(items):
            check_response(step, f"{field}.steps[{i}]", steps=False)


def check_rules(rules: Any) -> list[dict[str, Any]]:
    if rules is None:
        return []
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise Invalid(f"rules must be a list of at most {MAX_RULES} rules")
    checked = []
    for i, rule in enumerate(rules):
        field = f"rules[{i}]"
        if not isinstance(rule, dict):
            raise Invalid(f"{field} must be an object")
        unknown = set(rule) - {"name", "match", "response"}
        if unknown:
            raise Invalid(f"unknown {field} field(s): {', '.join(sorted(unknown))}")
        name = rule.get("name", f"rule {i + 1}")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise Invalid(f"{field}.name must be text of 1 to {MAX_NAME} characters")
        if CONTROL.search(name):
            raise Invalid(f"{field}.name has a control character")
        match = rule.get("match", {})
        check_match(match, f"{field}.match")
        response = rule.get("response", {})
        check_response(response, f"{field}.response", steps=True)
        checked.append({"name": name.strip(), "match": match, "response": response})
    return checked


def check_match(match: Any, field: str) -> None:
    if not isinstance(match, dict):
        raise Invalid(f"{field} must be an object")
    unknown = set(match) - MATCH_FIELDS
    if unknown:
        raise Invalid(f"unknown {field} condition(s): {', '.join(sorted(unknown))}")
    if "method" in match and not (
        isinstance(match["method"], str) and TOKEN.fullmatch(match["method"])
    ):
        raise Invalid(f"{field}.method must be an HTTP method, e.g. POST")
    for key in ("path", "provider", "event_type"):
        if key in match:
            value = match[key]
            if not isinstance(value, str) or len(value) > 1000 or "\x00" in value:
                raise Invalid(f"{field}.{key} must be text of at most 1000 characters")
    if "path" in match and not (match["path"] == "" or match["path"].startswith("/")):
        raise Invalid(f'{field}.path must be a sub-path prefix starting with "/"')
    if "header" in match:
        pair = match["header"]
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(x, str) for x in pair)
            and TOKEN.fullmatch(pair[0])
        ):
            raise Invalid(f"{field}.header must be [header name, text it contains]")
    if "json" in match:
        pair = match["json"]
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and (pair[0] == "" or pair[0].startswith("/"))
        ):
            raise Invalid(f'{field}.json must be [JSON pointer such as "/type", value]')


def header_problem(name: object, value: object, *, reply: bool = False) -> str | None:
    """Why a header pair cannot be sent, or None. The one check for every header this instance
    sends: a bin's reply (`reply=True`: Latin-1 text, none of the origin-wide headers) and an
    edited resend."""
    if not isinstance(name, str) or not isinstance(value, str):
        return "must be a [name, value] pair of strings"
    if not TOKEN.fullmatch(name):
        return f"name {name!r} is not a valid header name"
    if CONTROL.search(value):
        return f"{name!r} has a control character (line break, NUL, ...) in its value"
    if reply:
        lower = name.lower()
        if lower in SERVER_HEADERS:
            return f"{name!r} is set by the server"
        if lower in ORIGIN_HEADERS:
            return f"{name!r} would act on this instance's own origin; a bin's reply never sets it"
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return f"{name!r} must be Latin-1 text"
    return None


def response_headers(headers: Any, field: str = "response.headers") -> None:
    if not isinstance(headers, list):
        raise Invalid(f"{field} must be a list of [name, value] pairs")
    for i, pair in enumerate(headers):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise Invalid(f"{field}[{i}] must be a [name, value] pair of strings")
        problem = header_problem(*pair, reply=True)
        if problem:
            raise Invalid(f"{field}[{i}]: {problem}")
