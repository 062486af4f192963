"""Copy as cURL / HTTPie / Python / fetch: every snippet is run for real (bash or dash, the venv's
Python, node) against a real server, and what it sends is compared with the original capture,
byte for byte, less what each tool documents it cannot do (said in the snippet itself)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bins import hop
from bins.outgoing import NOT_FORWARDED
from bins.snippets import INLINE_BODY_BYTES, KINDS, sh_quote

from .servers import Server, raw_request

VENV_BIN = Path(sys.executable).parent
# Headers a tool adds of its own where the capture had none (and cannot be told not to).
CLIENT_ADDED = {
    "curl": set(),
    "httpie": set(),
    "python": set(),
    "fetch": {"user-agent", "accept", "accept-language", "sec-fetch-mode", "accept-encoding"},
}


@pytest.fixture
def work(tmp_path) -> Path:
    """Where snippets run (tmp_path itself is the server's data folder): a stray `touch pwned`
    would leave its file here."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@dataclass
class Case:
    name: str
    method: str
    target: str  # sub-path and query, after the token
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    notes: dict[str, str] = field(default_factory=dict)  # kind -> words its snippet must hold
    url_changed: set[str] = field(default_factory=set)  # kinds that cannot keep the URL as is


BINARY = bytes(range(256)) * 3 + b"\x00\xff\x00'$(touch pwned)\r\n\xff"
MULTIPART = (
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="note"\r\n\r\n'
    b"h\xc3\xa9llo $(touch pwned) `touch pwned`\r\n"
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="file"; filename="a.bin"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
    b"\x00\x01\xff\xfe\r\n\x7f\x80%s%%\\\\'\r\n"
    b"--XyZ--\r\n"
)
HOSTILE_VALUE = (
    b"$(touch pwned) `touch pwned`; touch pwned | touch pwned ' \" \\ \\' \\\\ %s !! $HOME"
)

CASES = [
    Case(
        "json",
        "POST",
        "/hooks/stripe?a=1&b=two%20words&c=%C3%A9&d=",
        [
            (b"content-type", b"application/json"),
            (b"user-agent", b"Stripe/1.0 (+https://stripe.com/docs/webhooks)"),
            (b"accept", b"*/*; q=0.5"),
            (b"stripe-signature", b"t=1700000000,v1=abc"),
            (b"x-dup", b"first"),
            (b"x-dup", b"second"),
        ],
        b'{\n  "id": "evt_1",\n  "text": "caf\xc3\xa9 \\"quoted\\" \\\\ \\n",\n  "n": 1\n}',
        {"fetch": "joins a repeated header", "httpie": "before the other headers"},
    ),
    Case(
        "form",
        "POST",
        "/form",
        [(b"content-type", b"application/x-www-form-urlencoded")],
        b"a=1&b=%26x&c=hello+world&d=%E2%82%AC",
    ),
    Case(
        "multipart",
        "POST",
        "/upload",
        [(b"content-type", b"multipart/form-data; boundary=XyZ")],
        MULTIPART,
    ),
    Case(
        "binary",
        "PUT",
        "/blob",
        [(b"content-type", b"application/octet-stream")],
        BINARY,
    ),
    Case(
        "header bytes",
        "POST",
        "/bytes",
        [
            (b"x-latin", b"caf\xe9 \xff\xfe"),
            (b"x-utf8", b"caf\xc3\xa9"),
            (b"x-control", b"a\x01b\x7fc\td"),
            (b"content-type", b"text/plain; charset=iso-8859-1"),
        ],
        b"caf\xe9",
        {
            "httpie": "not UTF-8 is left out",
            "fetch": "control characters",
        },
    ),
    Case(
        "hostile",
        "POST",
        "/it's/$(touch%20pwned)/*!?q=$(touch%20pwned)&s=;&",
        [
            (b"x-'$quote|pipe&amp`tick`!bang#~", HOSTILE_VALUE),
            (b"x-at", b"@/etc/passwd"),
            (b"x-eq", b"=1"),
            (b"x-empty", b""),
            (b"content-type", b"text/plain"),
        ],
        b"$(touch pwned)\n`touch pwned`\n'; touch pwned; '\n\"$(touch pwned)\" %s %% \\ \\\\\n",
    ),
    Case(
        "hostile binary",
        "POST",
        "/hostile-binary",
        [(b"x-evil", b"'\"$(touch pwned)\"'")],
        b"-n \x00'; touch pwned; '$(touch pwned)\x00`touch pwned`\xff\\'\\\\%s%%\n",
    ),
    Case("purge", "PURGE", "/cache/item?all=1", [(b"x-reason", b"stale")], b"purge it"),
    Case(
        "lowercase method",
        "patch",
        "/lower",
        [(b"content-type", b"application/json")],
        b'{"op": "replace"}',
        {"httpie": "in capitals"},
    ),
    Case(
        "odd method",
        "M-SEARCH",
        "/ssdp",
        [(b"man", b'"ssdp:discover"')],
        b"",
        {"httpie": "cannot send this method"},
    ),
    Case(
        "url characters",
        "GET",
        "/a`b/c'd|e/x[1]{a,b}?q='x'&r=`y`&s=a|b&t=\"z\"&u=[0]",
        [],
        notes={"httpie": "normalises the URL", "fetch": "normalises the URL"},
        url_changed={"httpie", "fetch"},
    ),
    Case(
        "dot segments",
        "POST",
        "/a/./b/../c/%2E%2E/d?x=1",
        [(b"content-type", b"text/plain")],
        b"dots",
        {"fetch": "normalises the URL"},
        url_changed={"fetch"},
    ),
    Case("get", "GET", "/status?verbose=1&page=2", [(b"x-request-id", b"r-1")]),
    Case("head", "HEAD", "/exists", [(b"x-request-id", b"r-2")]),
    Case("empty post", "POST", "/empty", [(b"content-length", b"0")]),
]


def send_original(server: Server, token: str, case: Case) -> dict:
    lines = [f"{case.method} /{token}{case.target} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in case.headers]
    if case.body and not any(n == b"content-length" for n, _ in case.headers):
        lines.append(b"Content-Length: %d" % len(case.body))
    lines.append(b"Connection: close")
    answer = raw_request(server.port, b"\r\n".join(lines) + b"\r\n\r\n" + case.body)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return latest(server, token)


def latest(server: Server, token: str) -> dict:
    captures = httpx.get(f"{server.base}/api/bins/{token}/captures?limit=1").json()["captures"]
    assert captures, "nothing was captured"
    capture = httpx.get(f"{server.base}/api/bins/{token}/captures/{captures[0]['id']}").json()
    capture["body"] = base64.b64decode(capture["body_base64"])
    return capture


def wire_headers(capture: dict) -> list[tuple[bytes, bytes]]:
    if capture["headers_base64"] is not None:
        return [(base64.b64decode(n), base64.b64decode(v)) for n, v in capture["headers_base64"]]
    return [(n.encode(), v.encode()) for n, v in capture["headers"]]


def new_bin(server: Server) -> str:
    return httpx.post(f"{server.base}/api/bins").json()["token"]


def get_snippet(server: Server, token: str, capture_id: int, kind: str, to: str | None) -> str:
    params = {"to": to} if to is not None else {}
    response = httpx.get(
        f"{server.base}/api/bins/{token}/captures/{capture_id}/snippet/{kind}", params=params
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    return response.text


def run(kind: str, text: str, cwd: Path, shell: str = "bash") -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    if kind in ("curl", "httpie"):
        command = [shell, "-c", text]
    elif kind == "python":
        (cwd / "snippet.py").write_text(text)
        command = [sys.executable, "snippet.py"]
    else:
        (cwd / "snippet.js").write_text(text)
        command = ["node", "snippet.js"]
    done = subprocess.run(
        command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60
    )
    assert done.returncode == 0, f"{kind} failed:\n{text}\n{done.stdout!r}\n{done.stderr!r}"
    return done


def expected(kind: str, original: dict) -> tuple[str, list[tuple[bytes, bytes]]]:
    """What `kind` can send of the original: its method and headers (as its notes say)."""
    method = original["method"]
    headers = [
        (n, v)
        for n, v in wire_headers(original)
        if n.decode("latin-1") not in NOT_FORWARDED and n != hop.HEADER
    ]
    if kind == "httpie":
        method = method.upper() if method.isalpha() else "POST"
        headers = [(n, v) for n, v in headers if _utf8(v)]
        # requests' session defaults come first, then HTTPie's Content-Type for a body.
        first = [b"user-agent", b"accept-encoding", b"accept"]
        if original["body_size"]:
            first.append(b"content-type")
        headers = [h for name in first for h in headers if h[0] == name] + [
            h for h in headers if h[0] not in first
        ]
    if kind == "fetch":
        if method.upper() in ("DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"):
            method = method.upper()
        headers = [(n, v) for n, v in headers if not any(b < 0x20 and b != 9 for b in v)]
        headers = [(n, v) for n, v in headers if b"\x7f" not in v]
        joined: dict[bytes, bytes] = {}
        for n, v in headers:
            joined[n] = joined[n] + b", " + v if n in joined else v
        headers = list(joined.items())
    return method, headers


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def sent_headers(kind: str, original: dict, copy: dict) -> list[tuple[bytes, bytes]]:
    had = {n for n, _ in wire_headers(original)}
    return [
        (n, v)
        for n, v in wire_headers(copy)
        if n.decode("latin-1") not in NOT_FORWARDED
        and not (n.decode("latin-1") in CLIENT_ADDED[kind] and n not in had)
    ]


def check_copy(kind: str, case: Case, original: dict, copy: dict) -> None:
    method, headers = expected(kind, original)
    where = f"{kind}, {case.name}"
    assert copy["method"] == method, where
    if kind not in case.url_changed:
        assert copy["path"] == original["path"], where
        assert copy["query_string"] == original["query_string"], where
    assert sent_headers(kind, original, copy) == headers, where
    if kind == "fetch" and method in ("GET", "HEAD"):
        assert copy["body"] == b"", where
    else:
        assert copy["body"] == original["body"], where


@pytest.mark.parametrize("kind", KINDS)
def test_each_snippet_sends_the_capture_again_byte_for_byte(server, kind, work):
    source, landing = new_bin(server), new_bin(server)
    for case in CASES:
        original = send_original(server, source, case)
        text = get_snippet(server, source, original["id"], kind, f"{server.base}/{landing}")
        for words in [case.notes.get(kind)] if case.notes.get(kind) else []:
            assert words in text, f"{kind}, {case.name}: the snippet must say so:\n{text}"
        before = httpx.get(f"{server.base}/api/bins/{landing}").json()["captures_received"]
        run(kind, text, work)
        after = httpx.get(f"{server.base}/api/bins/{landing}").json()["captures_received"]
        assert after == before + 1, f"{kind}, {case.name}: not one new capture"
        check_copy(kind, case, original, latest(server, landing))
        assert not (work / "pwned").exists(), f"{kind}, {case.name} ran a command"
    assert sorted(p.name for p in work.iterdir()) in ([], ["snippet.py"], ["snippet.js"])


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_shell_snippets_run_nothing_else_in_a_posix_shell_too(server, shell, work):
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    source, landing = new_bin(server), new_bin(server)
    for case in [c for c in CASES if c.name in ("hostile", "hostile binary", "header bytes")]:
        original = send_original(server, source, case)
        for kind in ("curl", "httpie"):
            text = get_snippet(server, source, original["id"], kind, f"{server.base}/{landing}")
            run(kind, text, work, shell=shell)
            check_copy(kind, case, original, latest(server, landing))
            assert not (work / "pwned").exists()
    assert list(work.iterdir()) == []


def test_by_default_a_snippet_sends_to_the_bins_own_capture_url(server, work):
    token = new_bin(server)
    original = send_original(server, token, CASES[0])
    text = get_snippet(server, token, original["id"], "curl", None)
    assert f"'{server.base}/{token}/hooks/stripe?a=1&" in text
    run("curl", text, work)
    copy = latest(server, token)
    assert copy["id"] == original["id"] + 1
    check_copy("curl", CASES[0], original, copy)


def test_to_replaces_the_bins_base_and_keeps_path_and_query(server):
    token = new_bin(server)
    original = send_original(server, token, CASES[0])
    text = get_snippet(server, token, original["id"], "python", "http://localhost:3000/webhooks")
    assert "HTTPConnection('localhost:3000')" in text
    assert "'/webhooks/hooks/stripe?a=1&b=two%20words&c=%C3%A9&d='" in text
    text = get_snippet(server, token, original["id"], "curl", "https://example.com:8443")
    assert "'https://example.com:8443/hooks/stripe?a=1&b=two%20words&c=%C3%A9&d='" in text


@pytest.mark.parametrize("kind", KINDS)
def test_a_body_over_a_mib_is_read_from_raw_when_the_snippet_runs(server, kind, work):
    source, landing = new_bin(server), new_bin(server)
    body = os.urandom(INLINE_BODY_BYTES + 300_000) + b"\x00\xff"
    case = Case("large", "POST", "/large", [(b"content-type", b"application/octet-stream")], body)
    original = send_original(server, source, case)
    text = get_snippet(server, source, original["id"], kind, f"{server.base}/{landing}")
    assert len(text) < 10_000  # not inlined
    assert "/raw" in text and "is not inlined" in text
    run(kind, text, work)
    check_copy(kind, case, original, latest(server, landing))


def test_the_hop_mark_of_this_instance_is_left_out(server, work):
    """A capture this instance sent (a resend to one of its own bins) carries its hop mark; the
    snippet leaves that out (and another instance's mark in)."""
    source, landing = new_bin(server), new_bin(server)
    own = server_mark(server, source)
    case = Case("marked", "POST", "/m", [(hop.HEADER, own), (hop.HEADER, b"other-instance")])
    original = send_original(server, source, case)
    for kind in KINDS:
        text = get_snippet(server, source, original["id"], kind, f"{server.base}/{landing}")
        assert own.decode() not in text
        run(kind, text, work)
        assert (hop.HEADER, b"other-instance") in wire_headers(latest(server, landing))
        assert (hop.HEADER, own) not in wire_headers(latest(server, landing))


def server_mark(server: Server, token: str) -> bytes:
    """The server's hop mark, as it stamps a resend (to a bin of its own)."""
    send_original(server, token, Case("seed", "POST", "/seed", [], b"x"))
    first = latest(server, token)
    answer = httpx.post(
        f"{server.base}/api/bins/{token}/captures/{first['id']}/resend",
        json={"target_url": f"{server.base}/{token}/resent"},
    )
    assert answer.status_code == 201, answer.text
    stamped = dict(wire_headers(latest(server, token)))
    return stamped[hop.HEADER]


def test_unknown_bin_capture_or_kind_is_404_and_a_bad_to_is_400(server):
    token = new_bin(server)
    original = send_original(server, token, CASES[1])
    base = f"{server.base}/api/bins/{token}/captures/{original['id']}/snippet"
    assert httpx.get(f"{base}/curl").status_code == 200
    for url in (
        f"{base}/wget",
        f"{base}/CURL",
        f"{server.base}/api/bins/{token}/captures/999/snippet/curl",
        f"{server.base}/api/bins/00000000-0000-4000-8000-000000000000/captures/1/snippet/curl",
    ):
        answer = httpx.get(url)
        assert answer.status_code == 404, url
        assert "error" in answer.json()
    for to in ("ftp://example.com", "http://user:pw@example.com", "not a url", "javascript:x"):
        answer = httpx.get(f"{base}/curl", params={"to": to})
        assert answer.status_code == 400, to
        assert "to" in answer.json()["error"]
    assert httpx.get(f"{base}/curl", params={"too": "x"}).status_code == 400
    assert httpx.post(f"{base}/curl").status_code == 405


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("plain", "plain"),
        ("", "''"),
        ("it's", "'it'\\''s'"),
        ("a\\b", "'a\\b'"),
        ("a\\\\b", "'a'\\\\'\\b'"),
        ("end\\", "'end'\\\\"),
        ("=ls", "'=ls'"),
        ("$(x) `y`", "'$(x) `y`'"),
    ],
)
def test_shell_words_read_the_same_in_posix_shells_and_fish(text, word):
    """No backslash inside single quotes may pair with a quote or another backslash (fish reads
    those as escapes), and a word that zsh would expand (=cmd) is quoted."""
    assert sh_quote(text) == word
    out = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True)
    assert out.stdout.decode() == text


def test_a_hash_in_a_captured_path_is_sent_as_percent_23(server, work):
    """A raw `#` in a request target is stored as sent; in a URL it would start a fragment,
    which no client sends, so every snippet writes it %23."""
    source, landing = new_bin(server), new_bin(server)
    original = send_original(server, source, Case("hash", "POST", "/a#b?c=#d", [], b"x"))
    assert (original["path"], original["query_string"]) == ("/a#b", "c=#d")
    for kind in KINDS:
        text = get_snippet(server, source, original["id"], kind, f"{server.base}/{landing}")
        run(kind, text, work)
        copy = latest(server, landing)
        assert (copy["path"], copy["query_string"]) == ("/a%23b", "c=%23d"), kind
