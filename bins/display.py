"""How a capture is shown to a person: decoded path, query table, body by kind.

Everything returned here is plain text for templates to escape; nothing is marked safe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl, unquote

from .models import Capture

PREVIEW_BYTES = 512
TEXT_LIMIT = 256 * 1024  # bigger bodies are shown cut, with the download link for the rest


@dataclass
class Body:
    kind: str  # "empty" | "json" | "form" | "multipart" | "text" | "binary"
    text: str = ""
    fields: list[tuple[str, str]] | None = None
    hex_rows: list[tuple[str, str, str]] | None = None
    truncated: bool = False


def decoded_path(capture: Capture) -> str:
    return unquote(capture.path, errors="backslashreplace") or "/"


def query_params(capture: Capture) -> list[tuple[str, str]]:
    return parse_qsl(capture.query_string, keep_blank_values=True, errors="backslashreplace")


def body_view(capture: Capture) -> Body:
    raw = capture.body_bytes
    if not raw:
        return Body("empty")
    ctype = capture.content_type.split(";")[0].strip().lower()
    text = capture.body_text
    if text is not None and (ctype.endswith("json") or ctype.endswith("+json") or not ctype):
        try:
            pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            return _text("json", pretty)
        except ValueError:
            pass
    if text is not None and ctype == "application/x-www-form-urlencoded":
        return Body("form", fields=parse_qsl(text, keep_blank_values=True), text=text)
    if ctype == "multipart/form-data":
        fields = multipart_fields(capture.content_type, raw)
        if fields is not None:
            return Body("multipart", fields=fields, text=text or "")
    if text is not None and _printable(text):
        return _text("text", text)
    return Body(
        "binary", hex_rows=hex_rows(raw[:PREVIEW_BYTES]), truncated=len(raw) > PREVIEW_BYTES
    )


def _text(kind: str, text: str) -> Body:
    if len(text) > TEXT_LIMIT:
        return Body(kind, text=text[:TEXT_LIMIT], truncated=True)
    return Body(kind, text=text)


def _printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text[:4096])


def multipart_fields(content_type: str, raw: bytes) -> list[tuple[str, str]] | None:
    """Name and value (or file name and size) of each part, or None if it does not parse."""
    try:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + raw
        )
    except Exception:
        return None
    if not message.is_multipart():
        return None
    fields: list[tuple[str, str]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        if filename is not None:
            fields.append((str(name), f"file {filename!r}, {len(payload)} bytes"))
        else:
            fields.append((str(name), payload.decode("utf-8", "backslashreplace")))
    return fields


def hex_rows(data: bytes, width: int = 16) -> list[tuple[str, str, str]]:
    rows = []
    for offset in range(0, len(data), width):
        chunk = data[offset : offset + width]
        hexed = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        rows.append((f"{offset:08x}", hexed, text))
    return rows
