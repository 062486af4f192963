"""How a capture is shown to a person: decoded path, query table, body by kind, the resend
form's fields, and the delivery history.

Everything returned here is plain text for templates to escape; nothing is marked safe. A body
can be anything up to MAX_BODY_BYTES, so the work is bounded whatever it holds: bodies are
laid out (JSON indented, forms and multipart parts as tables) only up to LAYOUT_LIMIT bytes and
MAX_FIELDS fields (JSON only when the whole body parsed), and text is shown up to TEXT_LIMIT,
cut at the end of a line (`cut_text`); whatever is shown in part says so first. The history
reads at most PREVIEW_LIMIT bytes of each body sent or answered, in the database.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl, unquote

from django.db import connection
from django.db.models import BinaryField, IntegerField
from django.db.models.expressions import RawSQL
from django.urls import reverse

from . import snippets
from .models import Capture, Delivery, display_pairs, display_text
from .outgoing import NOT_FORWARDED

PREVIEW_BYTES = 512
TEXT_LIMIT = 256 * 1024  # characters of text shown; the download has the rest
LAYOUT_LIMIT = 1024 * 1024  # bytes of a body parsed to lay it out (JSON, form, multipart)
MAX_FIELDS = 200  # form fields or multipart parts listed
DECODED_LIMIT = 4 * 1024 * 1024  # bytes a compressed body is inflated to, at most
EDIT_LIMIT = 256 * 1024  # bytes of a body the resend form lets a person edit
PREVIEW_LIMIT = 8 * 1024  # bytes of a body sent or answered shown in the delivery history


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


def raw_target(capture: Capture) -> str:
    """The path and query string exactly as sent (percent-encoding kept)."""
    return (capture.path or "/") + (f"?{capture.query_string}" if capture.query_string else "")


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
    shown, note = cut_text(text)
    if note:
        return Body(kind, text=shown, truncated=True, notes=[note])
    return Body(kind, text=text)


# In one long line (minified JSON, a form body), a cut is made after one of these, found in the
# last CUT_WINDOW characters before the limit: between two tokens, never inside one.
CUT_AFTER = re.compile(r"[\s,;&}\])>]")
CUT_WINDOW = 4096


def cut_text(text: str, limit: int = TEXT_LIMIT) -> tuple[str, str | None]:
    """At most `limit` characters of `text`, cut where a reader expects a cut, and the note that
    says so first (None when it is all there). The cut is after a line break where one falls in
    the second half of what is shown, else after a space or separator (a number, string or word
    is never cut in two), else at the limit (one token longer than CUT_WINDOW). Text is cut as
    characters, so never inside a UTF-8 sequence."""
    if len(text) <= limit:
        return text, None
    cut = text.rfind("\n", 0, limit) + 1
    by_line = cut > limit // 2
    if not by_line:
        # The last separator before the limit: the first one in the reversed window.
        window = text[max(0, limit - CUT_WINDOW) : limit]
        found = CUT_AFTER.search(window[::-1])
        cut = limit - found.start() if found else limit
    shown = text[:cut]
    sizes = f"{size_words(len(shown.encode()))} of {size_words(len(text.encode()))}"
    if by_line:
        first, lines = shown.count("\n"), text.count("\n") + (not text.endswith("\n"))
        note = f"Shown in part: the first {first:,} of {lines:,} lines ({sizes})."
    else:
        note = f"Shown in part: the first {sizes}."
    return shown, note


def _fields(kind: str, fields: list[tuple[str, str]], text: str, total: int = 0) -> Body:
    total = max(total, len(fields))
    body = Body(kind, fields=fields[:MAX_FIELDS], text=cut_text(text)[0])
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


# --- the resend form ------------------------------------------------------------------------


def edit_headers(capture: Capture) -> list[tuple[str, str, list[str]]]:
    """The headers the resend form shows, one `Name: value` line each: (name, value) as shown
    (bytes that are not UTF-8 as `\\xNN`) and the stored pair, whose exact bytes are sent for
    a line left as it was. Host, Content-Length and hop-by-hop headers are not shown: they
    are set for the new connection."""
    return [
        (display_text(n), display_text(v).strip(), [n, v])
        for n, v in capture.headers
        if n.lower() not in NOT_FORWARDED
    ]


def editable_body(capture: Capture) -> str | None:
    """The body as the resend form's text field holds it, or None where the field cannot hold
    it unchanged: over EDIT_LIMIT, not UTF-8, or with a NUL (HTML turns NUL into U+FFFD)."""
    if capture.body_size > EDIT_LIMIT:
        return None
    text = utf8(capture.body_bytes)
    if text is None or "\x00" in text:
        return None
    return text


def same_lines(a: str, b: str) -> bool:
    """Whether two texts differ only in their line breaks (a form sends CRLF, or LF from script,
    whatever the field was filled with; and it turns a lone CR into a line break)."""
    return _lf(a) == _lf(b)


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def with_line_breaks_of(edited: str, original: str) -> str:
    """An edited body with the line breaks of the original: CRLF if it used CRLF, else LF."""
    text = _lf(edited)
    return text.replace("\n", "\r\n") if "\r\n" in original else text


# --- the delivery history -------------------------------------------------------------------


@dataclass
class Preview:
    """The first PREVIEW_LIMIT bytes of a body sent or answered, for a person to read."""

    kind: str  # "empty" | "text" | "binary"
    size: int  # the whole body's size
    shown: int = 0  # bytes shown
    text: str = ""
    hex_rows: list[tuple[str, str, str]] | None = None

    @property
    def cut(self) -> bool:
        return self.shown < self.size


def preview(head: bytes, size: int, limit: int = PREVIEW_LIMIT) -> Preview:
    """A preview of a body of `size` bytes from its first bytes (`head`, read with a bound):
    text where it is UTF-8 (a sequence cut at the end is left out), else a short hex dump."""
    head = bytes(head[:limit])
    if not size:
        return Preview("empty", 0)
    text = utf8(head)
    if text is None and len(head) < size:
        for back in (1, 2, 3):  # the bound may fall inside a UTF-8 sequence
            text = utf8(head[:-back])
            if text is not None:
                head = head[:-back]
                break
    if text is not None and _printable(text):
        return Preview("text", size, len(head), text=text)
    shown = head[: PREVIEW_BYTES // 2]
    return Preview("binary", size, len(shown), hex_rows=hex_rows(shown))


DELIVERIES_SHOWN = 20
KIND_WORDS = {"resend": "resend", "forward": "auto-forward", "forwarder": "forwarder command"}


def delivery_rows(capture: Capture, limit: int = DELIVERIES_SHOWN) -> tuple[list[Delivery], bool]:
    """The capture's newest `limit` deliveries, each with `sent` (None where the capture went as
    captured, else its `headers` and `body` preview), `answer` (a preview) and `kind_words`, and
    whether there are more. Bodies are read only up to PREVIEW_LIMIT bytes, in the database."""
    if connection.vendor == "postgresql":
        head = "substring({} from 1 for %s)"
        length = "octet_length({})"
    else:
        head, length = "substr({}, 1, %s)", "length({})"
    rows = list(
        capture.deliveries.order_by("-id")
        .defer("sent_body", "response_body")
        .annotate(
            sent_head=RawSQL(head.format("sent_body"), (PREVIEW_LIMIT,), BinaryField()),
            sent_size=RawSQL(length.format("sent_body"), (), IntegerField()),
            answer_head=RawSQL(head.format("response_body"), (PREVIEW_LIMIT,), BinaryField()),
        )[: limit + 1]
    )
    for d in rows:
        d.kind_words = KIND_WORDS.get(d.kind, d.kind)
        d.answer = preview(d.answer_head or b"", d.response_size)
        d.sent = None
        if d.edited or d.resigned:
            d.sent = {
                "headers": display_pairs(d.sent_headers or []),
                "body": preview(d.sent_head or b"", d.sent_size or 0),
            }
    return rows[:limit], len(rows) > limit


def snippet_links(capture: Capture) -> list[tuple[str, str, str]]:
    """(kind, name, URL) of the open capture's copy-as commands (the API's snippet endpoint)."""
    args = [capture.bin.token, capture.seq]
    return [
        (kind, name, reverse("bins:api-capture-snippet", args=[*args, kind]))
        for kind, name in snippets.NAMES.items()
    ]
