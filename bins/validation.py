"""Validation of a bin's settings as the API takes them (POST /api/bins, PATCH)."""

from __future__ import annotations

from typing import Any

from .models import full_response
from .outgoing import BadTarget, check_url

RESPONSE_FIELDS = {"status", "headers", "body", "delay_ms"}
MAX_DELAY_MS = 30_000
# Framing headers are the server's to set: a wrong Content-Length would break the reply.
SERVER_HEADERS = {"content-length", "transfer-encoding", "connection"}


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
        if token and token in changes["forward_url"]:
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
        if type(status) is not int or not 100 <= status <= 599:
            raise Invalid("response.status must be an integer from 100 to 599")
    if "headers" in response:
        response_headers(response["headers"])
    if "body" in response and not isinstance(response["body"], str):
        raise Invalid("response.body must be a string")
    if "delay_ms" in response:
        delay = response["delay_ms"]
        if type(delay) is not int or not 0 <= delay <= MAX_DELAY_MS:
            raise Invalid(f"response.delay_ms must be an integer from 0 to {MAX_DELAY_MS}")
    return {**merged, **response}


def response_headers(headers: Any) -> None:
    if not isinstance(headers, list):
        raise Invalid("response.headers must be a list of [name, value] pairs")
    for pair in headers:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(part, str) for part in pair)
        ):
            raise Invalid("response.headers must be a list of [name, value] string pairs")
        name, value = pair
        if (
            not name
            or not name.isascii()
            or any(c in name for c in " :\r\n\t")
            or not name.isprintable()
        ):
            raise Invalid(f"response header name {name!r} is not a valid header name")
        if any(c in value for c in "\r\n\0"):
            raise Invalid(f"response header {name!r} has a line break or NUL in its value")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise Invalid(f"response header {name!r} must be Latin-1 text") from exc
        if name.lower() in SERVER_HEADERS:
            raise Invalid(f"response header {name!r} is set by the server")
