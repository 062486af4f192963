"""Where resend and auto-forward may send: the policy against the addresses an attacker writes.

The server under test runs fenced in by tests/guard/sitecustomize.py: a connect to an address
that is not loopback, or a DNS lookup of a name that is not, is refused and written to a log
that every test here asserts is empty. So a policy that lets `[::127.0.0.1]` through (which,
on a machine with an IPv6 route, is not loopback at all) fails a test here without anything
leaving the machine. Targets point at a real loopback sink that must receive nothing.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bins.outgoing import BadTarget, check_url, embedded_ipv4, host_header, is_metadata, is_private

from .servers import Server, start_server
from .targets import Target, start_target

pytestmark = pytest.mark.django_db(transaction=True)

GUARD_DIR = Path(__file__).resolve().parent / "guard"


@pytest.fixture
def sink() -> Iterator[Target]:
    t = start_target()
    yield t
    t.server.shutdown()


@pytest.fixture
def guard_log(tmp_path: Path) -> Path:
    path = tmp_path / "guard.log"
    path.touch()
    return path


def guarded_server(tmp_path: Path, guard_log: Path, **env: str) -> Server:
    # Many targets are tried per capture here: the resend rate limit is another test's subject.
    env.setdefault("RESEND_RATE_LIMIT", "0")
    return start_server(tmp_path, pythonpath=[GUARD_DIR], SSRF_GUARD_LOG=str(guard_log), **env)


def one_capture(http: httpx.Client) -> tuple[str, int]:
    """A new bin on the server with one capture in it: (token, capture id)."""
    token = http.post("/api/bins").json()["token"]
    assert http.post(f"/{token}/hook", content=b'{"a": 1}').status_code == 200
    return token, http.get(f"/api/bins/{token}/captures").json()["captures"][0]["id"]


def resend_errors(server: Server, urls: list[str]) -> dict[str, str | None]:
    """Resend one capture to each URL through the server's API: URL -> the delivery's error."""
    with httpx.Client(base_url=server.base, timeout=30) as http:
        token, capture_id = one_capture(http)
        errors = {}
        for url in urls:
            r = http.post(
                f"/api/bins/{token}/captures/{capture_id}/resend", json={"target_url": url}
            )
            assert r.status_code == 201, (url, r.status_code, r.text)
            errors[url] = r.json()["error"]
        return errors


# IPv6 spellings that carry a private IPv4 address (and the port of the sink is appended).
EMBEDDED_PRIVATE = [
    "[::127.0.0.1]",  # IPv4-compatible ::/96
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:0:7f00:1]",  # IPv4-translated ::ffff:0:0:0/96
    "[64:ff9b::a00:5]",  # NAT64 well-known prefix: 10.0.0.5
    "[64:ff9b::7f00:1]",  # NAT64 well-known prefix: 127.0.0.1
    "[64:ff9b:1::7f00:1]",  # NAT64 local-use prefix
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[2002:a9fe:a9fe::]",  # 6to4 of 169.254.169.254
    "[::169.254.169.254]",  # IPv4-compatible metadata
    "[2001:0:5db8:d70e::8000:fffe]",  # Teredo, server public, client 127.255.0.1
    "[2001:0:7f00:1::a247:28f1]",  # Teredo, server 127.0.0.1, client public
]

# Cloud metadata and host agents, directly and embedded in IPv6.
METADATA_FORMS = [
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "[::169.254.169.254]",
    "[::ffff:0:a9fe:a9fe]",  # IPv4-translated
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::a9fe:a9fe]",
    "[2002:a9fe:a9fe::]",
    "[2001:0:a9fe:a9fe::a247:28f1]",  # Teredo server 169.254.169.254, client public
    "[2001:0:5db8:d70e::5601:5601]",  # Teredo server public, client 169.254.169.254
    "169.254.170.2",
    "169.254.170.23",
    "[fd00:ec2::254]",
    "[fd00:ec2::23]",
    "168.63.129.16",
    "100.100.100.200",
    "192.0.0.192",
    "[fe80::1]",
]


def test_deny_mode_refuses_every_ipv6_form_that_embeds_a_private_ipv4(tmp_path, guard_log, sink):
    server = guarded_server(tmp_path, guard_log, RESEND_PRIVATE_TARGETS="deny")
    try:
        port = sink.server.server_port
        errors = resend_errors(server, [f"http://{h}:{port}/" for h in EMBEDDED_PRIVATE])
    finally:
        server.stop()
    # Refused as private, or as metadata (that check comes first): either way "forbid...".
    let_through = {u: e for u, e in errors.items() if "forbid" not in (e or "")}
    assert let_through == {}
    assert guard_log.read_text() == ""
    assert sink.received == []


def test_metadata_is_refused_in_every_form_even_when_private_targets_are_allowed(
    tmp_path, guard_log, sink
):
    server = guarded_server(tmp_path, guard_log, RESEND_PRIVATE_TARGETS="allow")
    try:
        port = sink.server.server_port
        errors = resend_errors(server, [f"http://{h}:{port}/" for h in METADATA_FORMS])
    finally:
        server.stop()
    let_through = {u: e for u, e in errors.items() if "cloud metadata" not in (e or "")}
    assert let_through == {}
    assert guard_log.read_text() == ""
    assert sink.received == []


def test_the_host_header_never_carries_userinfo(tmp_path, guard_log, sink):
    server = guarded_server(tmp_path, guard_log, RESEND_PRIVATE_TARGETS="allow")
    port = sink.server.server_port
    try:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            token, capture_id = one_capture(http)
            for url, host in [
                (f"http://user:secret@127.0.0.1:{port}/x", f"127.0.0.1:{port}"),
                (f"http://user:secret@LocalHost:{port}/x", f"localhost:{port}"),
                (f"http://a@b:c@127.0.0.1:{port}/x", f"127.0.0.1:{port}"),
            ]:
                r = http.post(
                    f"/api/bins/{token}/captures/{capture_id}/resend", json={"target_url": url}
                )
                assert r.json()["status"] == 200, r.json()
                hosts = [v for n, v in sink.received[-1].headers if n.lower() == "host"]
                assert hosts == [host], url
    finally:
        server.stop()
    assert guard_log.read_text() == ""


def test_proxy_settings_in_the_servers_environment_are_ignored(tmp_path, guard_log, sink):
    proxy = start_target()
    proxy_env = {
        name: proxy.url
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
    }
    server = guarded_server(
        tmp_path, guard_log, RESEND_PRIVATE_TARGETS="allow", NO_PROXY="", no_proxy="", **proxy_env
    )
    try:
        errors = resend_errors(server, [sink.url + "/direct"])
    finally:
        server.stop()
        proxy.server.shutdown()
    assert errors == {sink.url + "/direct": None}
    assert proxy.received == []
    assert [r.path for r in sink.received] == ["/direct"]
    assert guard_log.read_text() == ""


BAD_TARGETS = [
    (5, "must be a string (an http:// or https:// URL), not int"),
    (["http://x.test"], "not list"),
    ("http://x.test/\x00", "control characters"),
    ("http://x\x00.test/", "control characters"),
    ("http://x.test/a\x7fb", "control characters"),
    ("http://x.test/a\x1bb", "control characters"),
    ("http://x.test/a\x0bb", "control characters"),
]


def test_a_bad_target_url_is_a_400_naming_the_problem(tmp_path, guard_log):
    server = guarded_server(tmp_path, guard_log)
    answers = {}
    try:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            token, capture_id = one_capture(http)
            for target_url, _ in BAD_TARGETS:
                resend = http.post(
                    f"/api/bins/{token}/captures/{capture_id}/resend",
                    json={"target_url": target_url},
                )
                # Auto-forward targets go through the same check.
                forward = http.patch(f"/api/bins/{token}", json={"forward_url": target_url})
                answers[repr(target_url)] = [
                    (r.status_code, r.json()["error"] if r.status_code == 400 else r.text)
                    for r in (resend, forward)
                ]
    finally:
        server.stop()
    wrong = {
        url: got
        for (target_url, message), (url, got) in zip(BAD_TARGETS, answers.items(), strict=True)
        if any(status != 400 or message not in text for status, text in got)
    }
    assert wrong == {}
    assert guard_log.read_text() == ""  # refused before any lookup of x.test


def test_check_url_refuses_control_characters_and_non_strings():
    for bad in [None, 1, b"http://x.test/", "http://x.test/\x00", "http://x.test/\x7f"]:
        with pytest.raises(BadTarget):
            check_url(bad)
    for control in [chr(c) for c in range(0x20)] + ["\x7f"]:
        with pytest.raises(BadTarget):
            check_url(f"http://x.test/a{control}b")
    # Surrounding whitespace is trimmed as before; what is used holds no control character.
    assert check_url("  http://x.test/a  \n") == "http://x.test/a"


# address, private (deny mode refuses it; None: either), metadata (refused in both modes)
POLICY_TABLE = [
    ("93.184.215.14", False, False),
    ("2606:4700::1111", False, False),
    ("2002:5db8:d70e::", False, False),  # 6to4 of a public IPv4
    ("64:ff9b::5db8:d70e", False, False),  # NAT64 of a public IPv4
    ("::ffff:93.184.215.14", False, False),
    ("::ffff:0:5db8:d70e", False, False),  # IPv4-translated public
    ("127.0.0.1", True, False),
    ("10.0.0.5", True, False),
    ("::1", True, False),
    ("::127.0.0.1", True, False),
    ("::ffff:127.0.0.1", True, False),
    ("::ffff:0:7f00:1", True, False),
    ("64:ff9b::a00:5", True, False),
    ("64:ff9b::7f00:1", True, False),
    ("64:ff9b:1::5db8:d70e", True, False),  # local-use NAT64 is not public itself
    ("2002:7f00:1::", True, False),
    ("2002:c0a8:101::", True, False),  # 6to4 of 192.168.1.1
    ("2001:0:5db8:d70e::8000:fffe", True, False),  # Teredo client 127.255.0.1
    ("169.254.169.254", True, True),
    ("169.254.170.2", True, True),
    ("169.254.170.23", True, True),
    ("169.254.1.1", True, True),
    ("::ffff:169.254.169.254", True, True),
    ("::169.254.169.254", True, True),
    ("::ffff:0:a9fe:a9fe", True, True),
    ("64:ff9b::a9fe:a9fe", True, True),
    ("64:ff9b:1::a9fe:a9fe", True, True),
    ("64:ff9b:1:a9fe:a9:fe00::", True, True),  # local-use NAT64, /48 layout (RFC 6052)
    ("2002:a9fe:a9fe::", True, True),
    ("2001:0:a9fe:a9fe::a247:28f1", True, True),  # Teredo server
    ("2001:0:5db8:d70e::5601:5601", True, True),  # Teredo client
    ("fd00:ec2::254", True, True),
    ("fd00:ec2::23", True, True),
    ("fd00:ec2:1::1", True, True),
    ("fe80::1", True, True),
    ("168.63.129.16", False, True),
    ("::ffff:168.63.129.16", False, True),
    ("64:ff9b::a83f:8110", False, True),  # NAT64 of 168.63.129.16
    ("100.100.100.200", True, True),
    ("192.0.0.192", None, True),  # whether 192.0.0.0/24 is global varies with Python
]


@pytest.mark.parametrize(("address", "private", "metadata"), POLICY_TABLE)
def test_policy_table(address, private, metadata):
    assert is_metadata(address) == metadata
    if private is not None:
        assert is_private(address) == private


def test_embedded_ipv4_finds_every_form():
    def found(address: str) -> list[str]:
        return [str(ip) for ip in embedded_ipv4(ipaddress.ip_address(address))]

    assert found("::127.0.0.1") == ["127.0.0.1"]
    assert found("::ffff:10.0.0.1") == ["10.0.0.1"]
    assert found("::ffff:0:10.0.0.1") == ["10.0.0.1"]
    assert found("64:ff9b::10.0.0.1") == ["10.0.0.1"]
    assert found("2002:a00:1::") == ["10.0.0.1"]
    assert found("2001:0:a00:1::f5ff:fffe") == ["10.0.0.1"]  # Teredo server = client
    assert found("2001:0:a00:1::f5ff:fffd") == ["10.0.0.1", "10.0.0.2"]
    assert found("2606:4700::1111") == []
    assert found("10.0.0.1") == []


def test_host_header_is_host_and_port_only():
    assert host_header("http://u:p@Example.com:8080/x") == b"example.com:8080"
    assert host_header("https://u@[2001:db8::1]/") == b"[2001:db8::1]"
    assert host_header("http://user@bücher.example:81/") == b"xn--bcher-kva.example:81"
    assert host_header("http://h:80/") == b"h:80"


def test_the_guard_refuses_and_records_what_would_leave_the_machine(tmp_path, guard_log):
    """The fence the tests above rely on: it must refuse (and record) a connect to an address
    that is not loopback and a lookup of a name, and let loopback through. Nothing here can
    leave the machine even without the guard: 0.0.0.0 connects locally, and the lookup is
    numeric-only."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    script = f"""
import socket
socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
socket.getaddrinfo("::127.0.0.1", 80)
try:
    socket.create_connection(("0.0.0.0", {port}), timeout=5)
except PermissionError:
    print("connect refused")
try:
    socket.getaddrinfo("guard-check.invalid", 80, flags=socket.AI_NUMERICHOST)
except socket.gaierror as exc:
    print("lookup refused" if "test guard" in str(exc) else "lookup failed")
"""
    env = {"PYTHONPATH": str(GUARD_DIR), "SSRF_GUARD_LOG": str(guard_log), "PATH": ""}
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
        )
    finally:
        listener.close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["connect refused", "lookup refused"]
    assert guard_log.read_text().splitlines() == [
        f"connect ('0.0.0.0', {port})",
        "getaddrinfo 'guard-check.invalid'",
    ]
