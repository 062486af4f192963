"""Validation of a bin's settings as the API takes them (POST /api/bins, PATCH)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from .models import full_response
from .outgoing import BadTarget, check_url

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


def bin_changes(
    current_response: dict[str, Any] | None, data: dict[str, Any], token: str = ""
) -> dict[str, Any]:
    """The Bin fields to set for a POST or PATCH body; raises Invalid (nothing is changed)."""
    unknown = set(data) - {"response", "forward_url", "signature"}
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    if data.get("signature") is not None:
        raise Invalid("signature is not available on this instance yet; only null is accepted")
    changes: dict[str, Any] = {}
    if "response" in data:
        changes["response"] = merge_response(current_response, data["response"])
    if "forward_url" in data:
        url = data["forward_url"]
        try:
            changes["forward_url"] = "" if url in (None, "") else check_url(url)
        except BadTarget as exc:
            raise Invalid(f"forward_url: {exc}") from exc
        if token and token in unquote(changes["forward_url"]).lower():
            raise Invalid("forward_url points at this bin: every capture would forward forever")
    return changes


def merge_response(current: dict[str, Any] | None, response: Any) -> dict[str, Any]:
    merged = full_response(current)
    if not isinstance(response, dict):
        raise Invalid("response must be an object")
    unknown = set(response) - RESPONSE_FIELDS
    if unknown:
        raise Invalid(f"unknown response field(s): {', '.join(sorted(unknown))}")
    if "status" in response:
        status = response["status"]
        if type(status) is not int or not 200 <= status <= 599:
            # 1xx would carry the reply past the sandbox header as an interim response, and 101
            # would open a raw tunnel on this origin.
            raise Invalid("response.status must be an integer from 200 to 599")
    if "headers" in response:
        response_headers(response["headers"])
    if "body" in response and not isinstance(response["body"], str):
        raise Invalid("response.body must be a string")
    if "delay_ms" in response:
        delay = response["delay_ms"]
        if type(delay) is not int or not 0 <= delay <= MAX_DELAY_MS:
            raise Invalid(f"response.delay_ms must be an integer from 0 to {MAX_DELAY_MS}")
    return {**merged, **response}


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
