"""Copy as cURL, HTTPie, Python or fetch: a capture as a command or program that sends it again.

A snippet sends the capture's method, its sub-path and raw query string appended to a target
URL, every header in order with repeated ones kept (less those a resend leaves out: see
`headers_to_send`), and the body bytes exactly, binary included. Where a tool cannot do one of
those things exactly, the snippet says so in a comment at its top.

Everything captured is hostile. A snippet pasted in a terminal must run nothing but the
request, and a program must parse as exactly the literal it shows:

- Shell words (`sh_quote`) are single-quoted, with `'` and a backslash that could pair with the
  next character written outside the quotes (`\\'`, `\\\\`), so they read the same in sh, bash,
  dash, zsh and fish (whose single quotes give `\\'` and `\\\\` a meaning; shlex.quote's output
  is safe for POSIX shells only). Characters a terminal could act on when pasted (control
  characters: a carriage return is Enter, a tab completes) and bytes that are not UTF-8 never
  appear raw: in an argument they come from `$(printf '\\ooo')`, in a body from printf's
  format escapes.
- Python and JavaScript literals escape every character that is not printable.
- Comments hold only our own words, never captured text.

Bodies over INLINE_BODY_BYTES are not inlined: the snippet reads them from the capture's `/raw`
URL when it runs (and says so), so a snippet stays a few MiB at most.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from . import hop, outgoing
from .models import text_to_wire, wire_to_text

# Each kind of snippet and its name on the page's "Copy as" buttons.
NAMES = {"curl": "cURL", "httpie": "HTTPie", "python": "Python", "fetch": "fetch"}
KINDS = tuple(NAMES)
# Larger bodies are read from the capture's /raw URL when the snippet runs.
INLINE_BODY_BYTES = 1024 * 1024
# Plain text up to this size goes on the command line as one argument (Linux takes up to 128 KiB
# per argument); larger bodies, and bodies with bytes a terminal must not see raw, are piped in
# from printf (a shell builtin: no argument limit).
ARGUMENT_BODY_BYTES = 32 * 1024


class SnippetCapture(Protocol):
    method: str
    path: str
    query_string: str
    body_size: int

    @property
    def headers(self) -> list[list[str]]: ...

    @property
    def body_bytes(self) -> bytes: ...


def snippet(capture: SnippetCapture, kind: str, target_url: str, raw_url: str | None = None) -> str:
    """The `kind` snippet (one of KINDS) that sends `capture` to `target_url` (the bin's capture
    URL, or another base) with the capture's sub-path and query appended. With `raw_url`, a
    body over INLINE_BODY_BYTES is read from there when the snippet runs instead of inlined."""
    request = Request.of(capture, target_url, raw_url)
    return {"curl": curl, "httpie": httpie, "python": python, "fetch": fetch}[kind](request)


# --- what is sent ------------------------------------------------------------------------------


def headers_to_send(pairs: list[list[str]]) -> list[tuple[bytes, bytes]]:
    """A capture's header pairs as wire bytes, less what a resend leaves out (hop-by-hop headers,
    Host, Content-Length: `outgoing.NOT_FORWARDED`) and this instance's own hop mark."""
    kept = [(n, v) for n, v in pairs if not hop.captured_from_us([(n, v)])]
    return outgoing.forwardable([(text_to_wire(n), text_to_wire(v)) for n, v in kept])


@dataclass(slots=True)
class Request:
    """What a snippet sends: plain values, the URL already ASCII."""

    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes | None  # None: read from raw_url when the snippet runs
    body_size: int
    raw_url: str | None
    # The capture said how long its body was (Content-Length, even 0): send a length too.
    had_length: bool

    @classmethod
    def of(cls, capture: SnippetCapture, target_url: str, raw_url: str | None) -> Request:
        pairs = capture.headers
        url = outgoing.with_path(
            ascii_url(target_url),
            escape_url_bytes(capture.path.encode("latin-1")),
            escape_url_bytes(capture.query_string.encode("latin-1")),
        )
        large = raw_url is not None and capture.body_size > INLINE_BODY_BYTES
        return cls(
            method=capture.method,
            url=url,
            headers=headers_to_send(pairs),
            body=None if large else capture.body_bytes,
            body_size=capture.body_size,
            raw_url=raw_url if large else None,
            had_length=any(n.lower() in ("content-length", "transfer-encoding") for n, _ in pairs),
        )

    @property
    def sends_body(self) -> bool:
        return self.body_size > 0 or self.had_length

    def has(self, name: str) -> bool:
        wanted = name.lower().encode()
        return any(n.lower() == wanted for n, _ in self.headers)

    def client_defaults(self, names: tuple[str, ...]) -> list[str]:
        """Of the headers a client adds by itself, those the capture did not have."""
        return [name for name in names if not self.has(name)]

    @property
    def path_and_query(self) -> str:
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")


def escape_url_bytes(raw: bytes) -> str:
    """URL bytes as ASCII: a byte that is not printable ASCII as %XX (the server refuses such raw
    bytes in a request line, so a capture's path and query never hold one), and `#` as %23
    (a URL's fragment, which clients never send)."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b != 0x23 else f"%{b:02X}" for b in raw)


def ascii_url(url: str) -> str:
    """A target URL in ASCII: the host IDNA-encoded, anything else percent-encoded as UTF-8."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    netloc = (f"[{host}]" if ":" in host else host) + (
        f":{parts.port}" if parts.port is not None else ""
    )
    rest = url[url.index(parts.netloc) + len(parts.netloc) :]
    return f"{parts.scheme}://{netloc}{escape_url_bytes(rest.encode('utf-8'))}"


DOT_SEGMENT = re.compile(r"/\.\.?(?=/|$|\?)|^\.\.?(?=/|$)", re.IGNORECASE)


def has_dot_segment(path: str) -> bool:
    """Whether a path holds `.` or `..` segments (also as %2e), which clients resolve away."""
    return any(DOT_SEGMENT.search(p) for p in (path, path.replace("%2e", ".").replace("%2E", ".")))


def plain_text(body: bytes) -> str | None:
    """The body as text that can be pasted as it is: UTF-8, every character printable or a line
    feed. None otherwise (a carriage return, a tab, any control or unassigned character)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.isprintable() or all(line.isprintable() for line in text.split("\n")):
        return text
    return None


def size_words(size: int) -> str:
    return f"{size:,} bytes ({size / 1024 / 1024:.1f} MiB)"


# --- shell -----------------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_./:,+=-]+")


def sh_quote(text: str) -> str:
    """One shell word for printable text (see the module docstring): the same in sh, bash, dash,
    zsh and fish."""
    if _BARE.fullmatch(text) and not text.startswith("="):  # zsh: =cmd is a path
        return text
    out: list[str] = []
    quoted: list[str] = []

    def close() -> None:
        if quoted:
            out.append("'" + "".join(quoted) + "'")
            quoted.clear()

    for i, ch in enumerate(text):
        if ch == "'":
            close()
            out.append("\\'")
        elif ch == "\\" and (i + 1 == len(text) or text[i + 1] in "\\'"):
            close()
            out.append("\\\\")
        else:
            quoted.append(ch)
    close()
    return "".join(out) or "''"


def _printable(ch: str) -> bool:
    return ch.isprintable() and not ("\udc80" <= ch <= "\udcff")


def _octal(ch: str) -> str:
    """printf's escapes for a character's bytes (a surrogate stands for one undecodable byte)."""
    if "\udc80" <= ch <= "\udcff":
        return f"\\{ord(ch) - 0xDC00:03o}"
    return "".join(f"\\{b:03o}" for b in ch.encode("utf-8"))


def sh_bytes(raw: bytes) -> str:
    """One shell word for any bytes without NUL: printable runs quoted, the rest from
    `$(printf '\\ooo')` (never a line feed, which command substitution would drop)."""
    text = wire_to_text(raw)
    pieces: list[str] = []
    run: list[str] = []
    odd: list[str] = []
    for ch in text:
        if _printable(ch):
            if odd:
                pieces.append(f"\"$(printf '{''.join(odd)}')\"")
                odd.clear()
            run.append(ch)
        else:
            if run:
                pieces.append(sh_quote("".join(run)))
                run.clear()
            odd.append(_octal(ch))
    if odd:
        pieces.append(f"\"$(printf '{''.join(odd)}')\"")
    if run:
        pieces.append(sh_quote("".join(run)))
    return "".join(pieces) or "''"


def printf_format(body: bytes) -> str:
    """A printf format that prints exactly `body`: printable text as it is (with `%` doubled and
    each backslash as \\134, so the format has no backslash pair), a line feed as a line break,
    everything else as \\ooo escapes."""
    out: list[str] = []
    for ch in wire_to_text(body):
        if ch == "%":
            out.append("%%")
        elif ch == "\\":
            out.append("\\134")
        elif ch == "\n":
            out.append("\n")
        elif _printable(ch):
            out.append(ch)
        else:
            out.append(_octal(ch))
    text = "".join(out)
    if text.startswith("-"):  # not an option of printf
        text = "\\055" + text[1:]
    return text


def _body_pipe(request: Request) -> str | None:
    """The shell command whose output is the body, for bodies not given as an argument."""
    if request.body is None:
        return f"curl -sS --fail {sh_quote(request.raw_url or '')} |"
    text = plain_text(request.body)
    if text is not None:
        return f"printf %s {sh_quote(text)} |"
    return f"printf {sh_quote(printf_format(request.body))} |"


def _argument_text(request: Request) -> str | None:
    """The body as one command-line argument where it is short printable text."""
    if not request.sends_body or request.body is None or len(request.body) > ARGUMENT_BODY_BYTES:
        return None
    return plain_text(request.body)


def _lines(first: str, args: list[str], notes: list[str], comment: str) -> str:
    head = [f"{comment} {note}" for note in notes]
    return "\n".join([*head, " \\\n  ".join([first, *args])]) + "\n"


def _shell_notes(request: Request) -> list[str]:
    notes = []
    if request.body is None:
        notes.append(
            f"The body, {size_words(request.body_size)}, is not inlined: it is read from the "
            "capture's /raw URL (its exact bytes) when this runs."
        )
    return notes


CURL_DEFAULTS = ("User-Agent", "Accept")


def curl(request: Request) -> str:
    """curl, any version from 7.43 (2015) on; a POSIX shell or fish."""
    notes = _shell_notes(request)
    method = request.method
    url = request.url
    args: list[str] = []
    if has_dot_segment(request.path_and_query):
        args.append("--path-as-is")
    if any(c in url for c in "[]{}"):
        args.append("--globoff")
    argument = _argument_text(request)
    pipe = None if argument is not None or not request.sends_body else _body_pipe(request)
    first = "curl"
    if method == "HEAD" and not request.sends_body:
        first += " --head"  # -X HEAD would wait for a body that never comes
    elif method != ("POST" if request.sends_body else "GET"):  # what curl does by itself
        first += f" -X {sh_quote(method)}"
    first += f" {sh_quote(url)}"
    for name, value in request.headers:
        # `Name;` sends an empty value (`Name:` would remove the header).
        args.append("-H " + sh_bytes(name + (b": " + value if value else b";")))
    # curl adds these of its own; an empty replacement removes them.
    suppressed = list(request.client_defaults(CURL_DEFAULTS))
    if request.sends_body:
        suppressed += request.client_defaults(("Content-Type",))
        if request.body_size > 1024:
            suppressed += request.client_defaults(("Expect",))
    args += [f"-H {sh_quote(name + ':')}" for name in suppressed]
    if argument is not None:
        args.append(f"--data-raw {sh_quote(argument)}")
    elif pipe is not None:
        args.append("--data-binary @-")
        first = f"{pipe} {first}"
    return _lines(first, args, notes, "#")


HTTPIE_DEFAULTS = ("User-Agent", "Accept-Encoding", "Accept")
HTTPIE_METHOD = re.compile(r"[A-Za-z]+")
# In an HTTPie item, a value starting with these would make `name:@file` (read a file into the
# header) or `name:=json`; a backslash escapes them.
HTTPIE_SPECIAL = ":;@="
# What requests and urllib3 leave alone in a URL; anything else they percent-encode.
URL_KEPT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _httpie_changes_url(path_and_query: str) -> bool:
    """Whether requests/urllib3 would send this path and query otherwise: they percent-encode
    characters outside URL_KEPT, upper-case escapes and decode escaped unreserved characters."""
    if not URL_KEPT.fullmatch(path_and_query):
        return True
    for match in ESCAPE.finditer(path_and_query):
        code = match.group(1)
        if code != code.upper() or int(code, 16) in UNRESERVED:
            return True
    return "%" in ESCAPE.sub("", path_and_query)


def httpie_order(names: list[bytes], with_body: bool) -> list[bytes]:
    """The order HTTPie sends header names in: its and requests' defaults first, in their
    order, whatever their place on its command line."""
    first = [b"user-agent", b"accept-encoding", b"accept"] + (
        [b"content-type"] if with_body else []
    )
    return sorted(names, key=lambda n: first.index(n) if n in first else len(first))


def httpie(request: Request) -> str:
    """HTTPie 3 (`http`, `pip install httpie`); a POSIX shell or fish."""
    notes = _shell_notes(request)
    method = request.method
    if not HTTPIE_METHOD.fullmatch(method):
        notes.append(
            "HTTPie cannot send this method (it takes letters only): this sends POST instead."
        )
        method = "POST"
    elif method != method.upper():
        notes.append("HTTPie sends the method in capitals.")
    if _httpie_changes_url(request.path_and_query):
        notes.append(
            "HTTPie (requests) normalises the URL: percent-escapes in capitals, some "
            "characters percent-encoded."
        )
    args: list[str] = []
    if has_dot_segment(request.path_and_query):
        args.append("--path-as-is")
    argument = _argument_text(request)
    pipe = None if argument is not None or not request.sends_body else _body_pipe(request)
    if pipe is None:
        # HTTPie reads a body from stdin whenever stdin is not a terminal (a script, CI).
        args.append("--ignore-stdin")
    if argument is not None:
        args.append(f"--raw={sh_quote(argument)}")
    items: list[str] = []
    for name, value in request.headers:
        if b"\\" in value and any(f"\\{c}".encode() in value for c in HTTPIE_SPECIAL):
            notes.append(
                "HTTPie drops a backslash before : ; @ or = in a header value: one value "
                "differs by that backslash."
            )
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            notes.append(
                "HTTPie sends header values as UTF-8 text: a header with bytes that are not "
                "UTF-8 is left out."
            )
            continue
        if not value:
            items.append(sh_bytes(name + b";"))
        else:
            escape = b"\\" if value[:1] in (b"@", b"=") else b""
            items.append(sh_bytes(name + b":" + escape + value))
    suppressed = list(request.client_defaults(HTTPIE_DEFAULTS))
    if request.sends_body:
        suppressed += request.client_defaults(("Content-Type",))
    items += [sh_quote(name + ":") for name in suppressed]
    names = [n.lower() for n, _ in request.headers]
    if httpie_order(names, request.body_size > 0) != names:
        notes.append(
            "HTTPie sends User-Agent, Accept-Encoding, Accept (and Content-Type with a body) "
            "before the other headers."
        )
    if any(item.lstrip("'").startswith("-") for item in items):
        args.append("--")  # a header name starting with - is not an option
    first = " ".join(["http", *args, method, sh_quote(request.url)])
    if pipe is not None:
        first = f"{pipe} {first}"
    return _lines(first, items, list(dict.fromkeys(notes)), "#")


# --- Python ------------------------------------------------------------------------------------


def _py_text(text: str) -> str:
    return _split_literal([repr(line) for line in text.splitlines(keepends=True)] or ["''"])


def _py_bytes(raw: bytes) -> str:
    return _split_literal([repr(line) for line in raw.splitlines(keepends=True)] or ["b''"])


def _split_literal(pieces: list[str]) -> str:
    if len(pieces) == 1:
        return pieces[0]
    return "(\n    " + "\n    ".join(pieces) + "\n)"


def _py_header(raw: bytes) -> str:
    """A header name or value for http.client: text where ASCII (it sends text as Latin-1), else
    the exact bytes."""
    return repr(raw.decode("ascii")) if raw.isascii() else repr(raw)


def python(request: Request) -> str:
    """Python 3 with the standard library only: http.client sends every header as captured, in
    order and repeated ones apart (urllib and requests keep headers in a dict)."""
    parts = urlsplit(request.url)
    connection = "HTTPSConnection" if parts.scheme == "https" else "HTTPConnection"
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (
        f":{parts.port}" if parts.port is not None else ""
    )
    lines = [
        "# Sends the capture again, byte for byte. Python 3, standard library only: http.client",
        "# sends every header as captured, in order and repeated ones apart.",
        "import http.client",
    ]
    if request.body is None:
        lines += [
            "import urllib.request",
            "",
            f"# The body, {size_words(request.body_size)}, is not inlined: it is read from the",
            "# capture's /raw URL (its exact bytes).",
            f"body = urllib.request.urlopen({request.raw_url!r}).read()",
        ]
    else:
        text = plain_text(request.body)
        literal = _py_bytes(request.body) if text is None else _py_text(text)
        lines += ["", f"body = {literal}" + ("" if text is None else ".encode()")]
    lines += [
        f"connection = http.client.{connection}({netloc!r})",
        f"connection.putrequest({request.method!r}, {request.path_and_query!r}, "
        "skip_accept_encoding=True)",
    ]
    lines += [
        f"connection.putheader({_py_header(name)}, {_py_header(value)})"
        for name, value in request.headers
    ]
    if request.sends_body:
        lines.append('connection.putheader("Content-Length", str(len(body)))')
    lines += [
        "connection.endheaders(body)" if request.sends_body else "connection.endheaders()",
        "response = connection.getresponse()",
        "print(response.status, response.reason)",
        'print(response.read().decode("utf-8", "replace"))',
    ]
    return "\n".join(lines) + "\n"


# --- fetch ---------------------------------------------------------------------------------------

# fetch() upper-cases these whatever case they are given in; it refuses the forbidden ones.
FETCH_NORMALISED = {"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"}
FETCH_FORBIDDEN = {"CONNECT", "TRACE", "TRACK"}
# What the WHATWG URL parser percent-encodes (or, for a backslash, turns into a slash).
FETCH_URL_CHANGED = set(' "<>`{}\\')
FETCH_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def js_string(text: str) -> str:
    """A JavaScript string literal: printable characters as they are, everything else escaped
    (control and format characters, line and paragraph separators, lone surrogates)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and ch not in "\u2028\u2029" and not 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\u{{{ord(ch):x}}}")
    out.append('"')
    return "".join(out)


def js_bytes(raw: bytes) -> str:
    """A JavaScript string whose characters are these bytes (fetch sends a header value's
    characters as bytes, Latin-1): printable ASCII as it is, the rest as \\xNN."""
    out = ['"']
    for b in raw:
        ch = chr(b)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= b <= 0x7E:
            out.append(ch)
        else:
            out.append(f"\\x{b:02x}")
    out.append('"')
    return "".join(out)


def _js_text(text: str) -> str:
    pieces = [js_string(line) for line in text.splitlines(keepends=True)] or ['""']
    return " +\n    ".join(pieces)


def fetch(request: Request) -> str:
    """fetch(), for Node 18+ or a browser's console."""
    notes = [
        "Node 18+ or a browser console (where CORS and the browser's forbidden headers apply).",
        "fetch adds headers of its own where the capture had none (user-agent, accept, ...).",
    ]
    method = request.method
    upper = method.upper()
    if upper in FETCH_FORBIDDEN:
        notes.append(f"fetch refuses the method {upper}: use the cURL or Python snippet.")
    elif upper in FETCH_NORMALISED and method != upper:
        notes.append("fetch sends this method in capitals.")
    # fetch (undici, browsers) refuses a header value with a control character other than tab.
    sendable = [(n, v) for n, v in request.headers if not FETCH_BAD_VALUE.search(v)]
    if len(sendable) < len(request.headers):
        notes.append(
            "fetch refuses header values with control characters: such a header is left out."
        )
    names = [n.lower() for n, _ in sendable]
    if len(set(names)) < len(names):
        notes.append("fetch joins a repeated header into one line, its values comma-separated.")
    if has_dot_segment(request.path_and_query) or any(
        c in FETCH_URL_CHANGED for c in request.path_and_query
    ):
        notes.append("fetch normalises the URL (dot segments resolved, some characters escaped).")
    body_allowed = upper not in ("GET", "HEAD")
    if request.sends_body and not body_allowed:
        notes.append(f"fetch sends no body with {upper}: the body is left out.")
    headers = ",\n".join(f"    [{js_bytes(name)}, {js_bytes(value)}]" for name, value in sendable)
    options = [f"  method: {js_string(method)},", f"  headers: [\n{headers}\n  ],"]
    if not sendable:
        options[1] = "  headers: [],"
    send_body = request.sends_body and body_allowed
    if send_body:
        options.append("  body,")
    call = "fetch(" + js_string(request.url) + ", {\n" + "\n".join(options) + "\n})"
    answer = ".then(async (response) => console.log(response.status, await response.text()));"
    lines = [f"// {note}" for note in notes]
    if send_body and request.body is None:
        lines += [
            f"// The body, {size_words(request.body_size)}, is not inlined: it is read from the",
            "// capture's /raw URL (its exact bytes).",
            f"fetch({js_string(request.raw_url or '')})",
            "  .then((raw) => raw.arrayBuffer())",
            "  .then((body) =>",
            "    " + call.replace("\n", "\n    ") + ",",
            "  )",
            "  " + answer,
        ]
        return "\n".join(lines) + "\n"
    if send_body:
        assert request.body is not None
        text = plain_text(request.body)
        if text is not None:
            lines.append(f"const body = new TextEncoder().encode(\n    {_js_text(text)}\n);")
        else:
            encoded = base64.b64encode(request.body).decode("ascii")
            lines.append(
                f'const body = Uint8Array.from(atob("{encoded}"), (c) => c.charCodeAt(0));'
            )
    lines.append(call + answer)
    return "\n".join(lines) + "\n"
