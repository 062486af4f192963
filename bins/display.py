"""How a capture is shown to a person: decoded path, query table, body by kind.

Everything returned here is plain text for templates to escape; nothing is marked safe. A body
can be anything up to MAX_BODY_BYTES, so the work is bounded whatever it holds: bodies are
laid out (JSON indented, forms and multipart parts as tables) only up to LAYOUT_LIMIT bytes and
MAX_FIELDS fields, and text is shown up to TEXT_LIMIT; whatever is shown in part says so first.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl, unquote

from .models import Capture

PREVIEW_BYTES = 512
TEXT_LIMIT = 256 * 1024  # characters of text shown; the download has the rest
LAYOUT_LIMIT = 1024 * 1024  # bytes of a body parsed to lay it out (JSON, form, multipart)
MAX_FIELDS = 200  # form fields or multipart parts listed
DECODED_LIMIT = 4 * 1024 * 1024  # bytes a compressed body is inflated to, at most


@dataclass
class Body:
    kind: str  # "empty" | "json" | "form" | "multipart" | "text" | "binary"
    text: str = ""
    fields: list[tuple[str, str]] | None = None
    hex_rows: list[tuple[str, str, str]] | None = None
    truncated: bool = False
    # What the person should know first: shown in part, decoded, not laid out, and why.
    notes: list[str] = field(default_factory=list)


def decoded_path(capture: Capture) -> str:
    return unquote(capture.path, errors="backslashreplace") or "/"


def query_params(capture: Capture) -> list[tuple[str, str]]:
    return parse_qsl(capture.query_string, keep_blank_values=True, errors="backslashreplace")


def size_words(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def body_view(capture: Capture) -> Body:
    raw = capture.body_bytes
    if not raw:
        return Body("empty")
    notes: list[str] = []
    encoding = header(capture, "content-encoding").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflated = inflate(raw, encoding)
        if inflated is None:
            notes.append(f"Content-Encoding {encoding}, but it does not decode: shown as sent.")
        else:
            raw, whole = inflated
            notes.append(
                f"Decoded from {encoding} ({size_words(capture.body_size)} as sent"
                + (f", the first {size_words(len(raw))} decoded)" if not whole else ")")
                + "; the download is the bytes as sent."
            )
    body = lay_out(raw, capture.content_type)
    body.notes[:0] = notes
    return body


def header(capture: Capture, name: str) -> str:
    return next((v for n, v in capture.headers if n == name), "")


def inflate(raw: bytes, encoding: str) -> tuple[bytes, bool] | None:
    """The decompressed body, at most DECODED_LIMIT bytes (a small body can inflate to
    gigabytes), and whether that is all of it; None if it does not decompress."""
    wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(raw, DECODED_LIMIT)
        return out, not inflater.unconsumed_tail and inflater.eof
    except zlib.error:
        if encoding == "deflate":  # some senders use raw deflate, without the zlib header
            try:
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                out = inflater.decompress(raw, DECODED_LIMIT)
                return out, not inflater.unconsumed_tail and inflater.eof
            except zlib.error:
                return None
        return None


def lay_out(raw: bytes, content_type: str) -> Body:
    ctype = content_type.split(";")[0].strip().lower()
    text = utf8(raw)
    small = len(raw) <= LAYOUT_LIMIT
    if text is not None and (ctype.endswith("json") or not ctype):
        if small:
            try:
                pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
                return _text("json", pretty)
            except RecursionError:
                body = _text("text", text)
                body.notes.insert(0, "Nested too deep to lay out: shown as sent.")
                return body
            except ValueError:
                pass
        elif ctype.endswith("json"):
            body = _text("text", text)
            body.notes.insert(0, f"Too large to lay out ({size_words(len(raw))}): shown as sent.")
            return body
    if text is not None and ctype == "application/x-www-form-urlencoded" and small:
        fields = parse_qsl(text, keep_blank_values=True, max_num_fields=None)
        return _fields("form", fields, text)
    if ctype == "multipart/form-data" and small:
        parts = multipart_fields(content_type, raw)
        if parts is not None:
            return _fields("multipart", parts[0], text or "", parts[1])
    if text is not None and _printable(text):
        return _text("text", text)
    return Body(
        "binary",
        hex_rows=hex_rows(raw[:PREVIEW_BYTES]),
        truncated=len(raw) > PREVIEW_BYTES,
    )


def utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _text(kind: str, text: str) -> Body:
    if len(text) > TEXT_LIMIT:
        return Body(
            kind,
            text=text[:TEXT_LIMIT],
            truncated=True,
            notes=[f"Shown in part: the first {TEXT_LIMIT // 1024} KiB of the text."],
        )
    return Body(kind, text=text)


def _fields(kind: str, fields: list[tuple[str, str]], text: str, total: int = 0) -> Body:
    total = max(total, len(fields))
    body = Body(kind, fields=fields[:MAX_FIELDS], text=text[:TEXT_LIMIT])
    if total > MAX_FIELDS:
        what = "parts" if kind == "multipart" else "fields"
        body.notes.append(f"Shown in part: the first {MAX_FIELDS} of {total:,} {what}.")
        body.truncated = True
    return body


def _printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text[:4096])


BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def multipart_fields(content_type: str, raw: bytes) -> tuple[list[tuple[str, str]], int] | None:
    """Name and value (or file name and size) of the first MAX_FIELDS parts, and how many
    parts there are; None if it does not parse."""
    match = BOUNDARY.search(content_type)
    if match is None:
        return None
    delimiter = b"--" + match.group(1).encode("utf-8", "surrogateescape")
    total = max(0, raw.count(delimiter) - 1)
    if total > MAX_FIELDS:
        # Parse only the parts that are shown: cut after the last of them and close the body.
        cut = -1
        for _ in range(MAX_FIELDS + 1):
            cut = raw.find(delimiter, cut + 1)
        raw = raw[:cut] + delimiter + b"--\r\n"
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
            fields.append((str(name), payload[:TEXT_LIMIT].decode("utf-8", "backslashreplace")))
    return fields, total


def hex_rows(data: bytes, width: int = 16) -> list[tuple[str, str, str]]:
    rows = []
    for offset in range(0, len(data), width):
        chunk = data[offset : offset + width]
        hexed = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        rows.append((f"{offset:08x}", hexed, text))
    return rows
