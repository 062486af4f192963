"""Export of a bin as HAR 1.2 and as JSON lines, through a real server: every body back to its
exact bytes, oldest first, the list's filters, and a download that streams (read a batch at a
time, no faster than the client reads)."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import httpx
import pytest

from .servers import Server, raw_request
from .test_snippets import new_bin, wire_headers

CAPTURES = [
    # method, sub-path and query, headers, body
    (
        "POST",
        "/stripe?x=1&y=two%20words&z=%C3%A9&e=",
        [
            (b"content-type", b"application/json"),
            (b"x-dup", b"one"),
            (b"x-dup", b"two"),
            (b"x-latin", b"caf\xe9"),
        ],
        b'{"id": "evt_1", "text": "caf\xc3\xa9"}',
    ),
    ("PUT", "/blob", [(b"content-type", b"application/octet-stream")], bytes(range(256)) * 5),
    ("GET", "/status?verbose", [(b"x-request-id", b"r-1")], b""),
    (
        "POST",
        "/form",
        [(b"content-type", b"application/x-www-form-urlencoded")],
        b"a=1&b=%26x&needle=yes",
    ),
    ("patch", "/lower", [], b"\x00\xff\x00 not UTF-8 \xfe"),
]


def capture(server: Server, token: str, method: str, target: str, headers, body: bytes) -> None:
    lines = [f"{method} /{token}{target} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [n + b": " + v for n, v in headers]
    lines += [b"Content-Length: %d" % len(body), b"Connection: close"]
    answer = raw_request(server.port, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    assert answer.split(b" ", 2)[1] in (b"200", b"201"), answer[:200]


def fill(server: Server) -> tuple[str, list[dict]]:
    """A bin holding CAPTURES (the last two answered 201), and their API records, oldest first."""
    token = new_bin(server)
    for i, (method, target, headers, body) in enumerate(CAPTURES):
        if i == 3:
            answer = httpx.patch(
                f"{server.base}/api/bins/{token}", json={"response": {"status": 201}}
            )
            assert answer.status_code == 200, answer.text
        capture(server, token, method, target, headers, body)
    return token, records(server, token)


def records(server: Server, token: str) -> list[dict]:
    listed = httpx.get(f"{server.base}/api/bins/{token}/captures?limit=500").json()["captures"]
    return [
        httpx.get(f"{server.base}/api/bins/{token}/captures/{c['id']}").json()
        for c in reversed(listed)
    ]


def body_of(record: dict) -> bytes:
    return base64.b64decode(record["body_base64"])


# --- HAR 1.2, checked against the spec (http://www.softwareishard.com/blog/har-12-spec/) -----

# Each object's fields: name -> (required, JSON types). Fields the spec does not name must start
# with "_" (custom fields); postData's `encoding` is the one extension we write (see
# bins/export.py), with the same meaning as on a response's content.
STR, NUM, OBJ, ARR = (str,), (int, float), (dict,), (list,)
HAR = {
    "log": {
        "version": (True, STR),
        "creator": (True, OBJ),
        "browser": (False, OBJ),
        "pages": (False, ARR),
        "entries": (True, ARR),
        "comment": (False, STR),
    },
    "creator": {"name": (True, STR), "version": (True, STR), "comment": (False, STR)},
    "entry": {
        "pageref": (False, STR),
        "startedDateTime": (True, STR),
        "time": (True, NUM),
        "request": (True, OBJ),
        "response": (True, OBJ),
        "cache": (True, OBJ),
        "timings": (True, OBJ),
        "serverIPAddress": (False, STR),
        "connection": (False, STR),
        "comment": (False, STR),
    },
    "request": {
        "method": (True, STR),
        "url": (True, STR),
        "httpVersion": (True, STR),
        "cookies": (True, ARR),
        "headers": (True, ARR),
        "queryString": (True, ARR),
        "postData": (False, OBJ),
        "headersSize": (True, NUM),
        "bodySize": (True, NUM),
        "comment": (False, STR),
    },
    "response": {
        "status": (True, NUM),
        "statusText": (True, STR),
        "httpVersion": (True, STR),
        "cookies": (True, ARR),
        "headers": (True, ARR),
        "content": (True, OBJ),
        "redirectURL": (True, STR),
        "headersSize": (True, NUM),
        "bodySize": (True, NUM),
        "comment": (False, STR),
    },
    "pair": {"name": (True, STR), "value": (True, STR), "comment": (False, STR)},
    "postData": {
        "mimeType": (True, STR),
        "params": (False, ARR),
        "text": (False, STR),
        "comment": (False, STR),
        "encoding": (False, STR),
    },
    "content": {
        "size": (True, NUM),
        "compression": (False, NUM),
        "mimeType": (True, STR),
        "text": (False, STR),
        "encoding": (False, STR),
        "comment": (False, STR),
    },
    "cache": {"beforeRequest": (False, OBJ), "afterRequest": (False, OBJ), "comment": (False, STR)},
    "timings": {
        "blocked": (False, NUM),
        "dns": (False, NUM),
        "connect": (False, NUM),
        "send": (True, NUM),
        "wait": (True, NUM),
        "receive": (True, NUM),
        "ssl": (False, NUM),
        "comment": (False, STR),
    },
}
ISO_8601 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)\Z")


def check(kind: str, obj: object, where: str, problems: list[str]) -> None:
    if not isinstance(obj, dict):
        problems.append(f"{where}: not an object")
        return
    fields = HAR[kind]
    for name, (required, types) in fields.items():
        if name not in obj:
            if required:
                problems.append(f"{where}.{name}: missing")
        elif not isinstance(obj[name], types) or isinstance(obj[name], bool):
            problems.append(f"{where}.{name}: {type(obj[name]).__name__}")
    problems += [f"{where}.{n}: not in HAR 1.2" for n in obj if n not in fields and n[0] != "_"]


def har_problems(doc: object) -> list[str]:
    """Every way `doc` breaks HAR 1.2's required fields and types."""
    problems: list[str] = []
    if not isinstance(doc, dict) or set(doc) != {"log"}:
        return ["the document is not {log: ...}"]
    log = doc["log"]
    check("log", log, "log", problems)
    if log.get("version") != "1.2":
        problems.append("log.version is not 1.2")
    check("creator", log.get("creator"), "log.creator", problems)
    for i, entry in enumerate(log.get("entries") or []):
        at = f"entries[{i}]"
        check("entry", entry, at, problems)
        if not ISO_8601.match(str(entry.get("startedDateTime"))):
            problems.append(f"{at}.startedDateTime: not ISO 8601 with a zone")
        for part in ("request", "response"):
            check(part, entry.get(part), f"{at}.{part}", problems)
            for list_name in ("headers", "cookies") + (
                ("queryString",) if part == "request" else ()
            ):
                for j, pair in enumerate(entry[part].get(list_name) or []):
                    check("pair", pair, f"{at}.{part}.{list_name}[{j}]", problems)
        post = entry["request"].get("postData")
        if post is not None:
            check("postData", post, f"{at}.request.postData", problems)
            if ("text" in post) == ("params" in post):
                problems.append(f"{at}.request.postData: text and params are exclusive")
        check("content", entry["response"].get("content"), f"{at}.response.content", problems)
        check("cache", entry.get("cache"), f"{at}.cache", problems)
        check("timings", entry.get("timings"), f"{at}.timings", problems)
        timings = entry.get("timings") or {}
        spent = sum(v for v in timings.values() if isinstance(v, int | float) and v != -1)
        if spent != entry.get("time"):
            problems.append(f"{at}.time is not the sum of its timings")
    return problems


def har_body(entry: dict) -> bytes:
    post = entry["request"].get("postData")
    if post is None:
        return b""
    if post.get("encoding") == "base64":
        return base64.b64decode(post["text"], validate=True)
    assert "encoding" not in post
    return post["text"].encode("utf-8")


def test_har_export_is_har_1_2_with_every_capture_exact_oldest_first(server):
    token, originals = fill(server)
    answer = httpx.get(f"{server.base}/api/bins/{token}/export.har")
    assert answer.status_code == 200
    day = datetime.now(UTC).date().isoformat()
    assert answer.headers["content-disposition"] == (
        f'attachment; filename="bin-{token[:8]}-{day}.har"'
    )
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["x-content-type-options"] == "nosniff"
    doc = answer.json()
    assert har_problems(doc) == []
    entries = doc["log"]["entries"]
    assert [e["_id"] for e in entries] == [r["id"] for r in originals] == [1, 2, 3, 4, 5]
    for entry, record in zip(entries, originals, strict=True):
        request = entry["request"]
        query = record["query_string"]
        assert request["method"] == record["method"]
        assert request["url"] == f"{server.base}/{token}{record['path']}" + (
            f"?{query}" if query else ""
        )
        assert [[h["name"], h["value"]] for h in request["headers"]] == record["headers"]
        assert [(q["name"], q["value"]) for q in request["queryString"]] == parse_qsl(
            query, keep_blank_values=True
        )
        assert request["bodySize"] == record["body_size"]
        assert har_body(entry) == body_of(record)
        received = datetime.fromisoformat(record["received_at"])
        started = datetime.fromisoformat(entry["startedDateTime"])
        assert abs((started - received).total_seconds()) < 0.001
        assert entry["response"]["status"] == record["answer"]["status"]
    assert [e["response"]["status"] for e in entries] == [200, 200, 200, 201, 201]
    # The duplicate header is two headers, in place; the byte that is not UTF-8 is marked.
    names = [h["name"] for h in entries[0]["request"]["headers"]]
    assert names.count("x-dup") == 2
    latin = next(h for h in entries[0]["request"]["headers"] if h["name"] == "x-latin")
    assert latin["value"] == "caf\\xe9" and "comment" in latin
    assert entries[4]["request"]["postData"]["encoding"] == "base64"
    assert entries[0]["request"]["postData"]["mimeType"] == "application/json"
    assert "postData" not in entries[2]["request"]  # the GET without a body


def test_an_empty_bin_exports_an_empty_har_and_jsonl(server):
    token = new_bin(server)
    doc = httpx.get(f"{server.base}/api/bins/{token}/export.har").json()
    assert har_problems(doc) == [] and doc["log"]["entries"] == []
    assert httpx.get(f"{server.base}/api/bins/{token}/export.jsonl").content == b""


def test_jsonl_is_the_api_shape_with_every_body_whole_oldest_first(server):
    token, _ = fill(server)
    # A body over the lists' inline limit (64 KiB): a list leaves it out, the export never.
    large = os.urandom(300_000)
    capture(server, token, "POST", "/large", [(b"content-type", b"image/png")], large)
    listed = httpx.get(f"{server.base}/api/bins/{token}/captures?limit=1").json()["captures"]
    assert listed[0]["body_omitted"] is True
    answer = httpx.get(f"{server.base}/api/bins/{token}/export.jsonl")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    day = datetime.now(UTC).date().isoformat()
    assert answer.headers["content-disposition"] == (
        f'attachment; filename="bin-{token[:8]}-{day}.jsonl"'
    )
    assert answer.content.endswith(b"\n")
    lines = [json.loads(line) for line in answer.content.splitlines()]
    # Exactly what one capture's GET answers, line for line.
    assert lines == records(server, token)
    assert [line["id"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert all(line["body_omitted"] is False for line in lines)
    assert body_of(lines[-1]) == large
    assert [body_of(line) for line in lines[:5]] == [c[3] for c in CAPTURES]
    assert dict(wire_headers(lines[0]))[b"x-latin"] == b"caf\xe9"


@pytest.mark.parametrize("kind", ["har", "jsonl"])
def test_exports_take_the_lists_filters(server, kind):
    token, _ = fill(server)

    def ids(**params: str) -> list[int]:
        answer = httpx.get(f"{server.base}/api/bins/{token}/export.{kind}", params=params)
        assert answer.status_code == 200, answer.text
        if kind == "har":
            return [e["_id"] for e in answer.json()["log"]["entries"]]
        return [json.loads(line)["id"] for line in answer.content.splitlines()]

    assert ids() == [1, 2, 3, 4, 5]
    assert ids(method="PUT") == [2]
    assert ids(q="needle") == [4]
    assert ids(path="/st") == [1, 3]
    assert ids(q="x-dup") == [1]
    assert ids(method="POST", q="caf") == [1]
    base = f"{server.base}/api/bins/{token}/export.{kind}"
    for params in ({"valid": "maybe"}, {"limit": "1"}, {"q": "a\x00b"}):
        answer = httpx.get(base, params=params)
        assert answer.status_code == 400, params
        assert answer.json()["error"]
    missing = f"{server.base}/api/bins/00000000-0000-4000-8000-000000000000/export.{kind}"
    assert httpx.get(missing).status_code == 404
    assert httpx.get(missing).json()["error"]
    assert httpx.post(base).status_code == 405
    assert httpx.get(f"{server.base}/api/bins/not-a-token/export.{kind}").status_code == 404


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_large_export_streams_a_batch_at_a_time_as_fast_as_it_is_read(server):
    """Twelve 4 MiB captures (an export of about 64 MiB): the download is chunked, the server
    holds little of it while the client reads nothing, and it reads the captures as it goes
    (captures deleted while the client waits never come; one arriving after the start is not
    waited for)."""
    token = new_bin(server)
    bodies = [os.urandom(4 * 1024 * 1024) for _ in range(12)]
    for body in bodies:
        capture(server, token, "POST", "/big", [(b"content-type", b"image/png")], body)
    time.sleep(1)
    before = rss_mib(server.proc.pid)

    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    client.connect(("127.0.0.1", server.port))
    client.settimeout(30)
    client.sendall(
        f"GET /api/bins/{token}/export.jsonl HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += client.recv(65536)
    head, _, received = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head

    # The client reads nothing for a while: the server waits instead of buffering the export.
    time.sleep(3)
    held = rss_mib(server.proc.pid) - before
    assert held < 24, f"the server took {held:.0f} MiB for a client reading nothing"
    for seq in range(6, 13):
        assert httpx.delete(f"{server.base}/api/bins/{token}/captures/{seq}").status_code == 204
    capture(server, token, "POST", "/later", [], b"after the export began")

    while not received.endswith(b"\r\n0\r\n\r\n"):
        chunk = client.recv(1024 * 1024)
        assert chunk, "the connection closed before the last chunk"
        received += chunk
    client.close()
    lines = [json.loads(line) for line in dechunk(received).splitlines()]
    ids = [line["id"] for line in lines]
    assert 1 <= len(ids) <= 5, ids  # 6..12 were deleted before the server got to them
    assert ids == list(range(1, len(ids) + 1))
    for line in lines:
        assert body_of(line) == bodies[line["id"] - 1]


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


def test_a_client_that_stops_reading_is_disconnected_after_the_idle_timeout(servers):
    server = servers(HTTP_IDLE_TIMEOUT="2")
    token = new_bin(server)
    for _ in range(4):
        capture(server, token, "POST", "/big", [], os.urandom(4 * 1024 * 1024))
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    client.connect(("127.0.0.1", server.port))
    client.sendall(f"GET /api/bins/{token}/export.har HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert client.recv(65536).startswith(b"HTTP/1.1 200")
    time.sleep(5)  # reads nothing: the server gives up on it after 2 s
    client.settimeout(10)
    received = 0
    try:
        while chunk := client.recv(1024 * 1024):
            received += len(chunk)
    except ConnectionResetError:
        pass
    client.close()
    assert received < 12 * 1024 * 1024  # far from the whole export (about 22 MiB)
    assert "read nothing for 2 s" in server.log()
    assert httpx.get(f"{server.base}/healthz").status_code == 200
