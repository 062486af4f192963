"""The forwarder command against running servers and a real target."""

import base64
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trustme

from bins.cli import parse_bin_url

from .servers import ROOT, start_server
from .targets import start_target

TOKEN = "3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f"


@pytest.mark.parametrize(
    ("url", "base"),
    [
        (f"https://hooks.example.com/{TOKEN}", "https://hooks.example.com"),
        (f"https://hooks.example.com/{TOKEN}/sub/path", "https://hooks.example.com"),
        (f"http://127.0.0.1:8000/bins/{TOKEN}/", "http://127.0.0.1:8000"),
        (f"https://example.com/inspector/{TOKEN}", "https://example.com/inspector"),
    ],
)
def test_parse_bin_url(url, base):
    assert parse_bin_url(url) == (base, TOKEN)


def test_parse_bin_url_refuses_other_urls():
    for url in ["https://example.com/", f"ftp://x/{TOKEN}", "not a url"]:
        with pytest.raises(ValueError):
            parse_bin_url(url)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_forwarder_replays_live_and_catches_up_after_a_lost_connection(tmp_path):
    target = start_target()
    a = start_server(tmp_path)
    b = start_server(tmp_path)
    log = tmp_path / "forwarder.log"
    forwarder = None
    try:
        token = httpx.post(f"{a.base}/api/bins").json()["token"]
        httpx.post(f"{a.base}/{token}/before-start", content=b"old")  # not replayed
        with open(log, "wb") as out:
            forwarder = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "webhook-inspector"),
                    *("forward", f"{a.base}/{token}", "--to", target.url + "/local", "--keep-path"),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: "following" in log.read_text(), 15, "forwarder did not connect")
        httpx.post(f"{a.base}/{token}/one?x=1", content=b"first", headers={"X-Sig": "s1"})
        wait_for(lambda: len(target.received) == 1, 10, "first capture not forwarded")
        got = target.received[0]
        assert (got.method, got.path, got.body) == ("POST", "/local/one?x=1", b"first")
        assert target.header("x-sig") == "s1"

        # Server A goes away; captures keep arriving through server B meanwhile.
        a.stop()
        wait_for(lambda: "connection lost" in log.read_text(), 10, "loss not reported")
        for i in range(3):
            httpx.put(f"{b.base}/{token}/missed/{i}", content=str(i).encode())
        a = start_server(tmp_path, port=a.port)
        wait_for(lambda: len(target.received) == 4, 20, "missed captures not caught up")
        assert [r.path for r in target.received[1:]] == [f"/local/missed/{i}" for i in range(3)]
        assert [r.method for r in target.received[1:]] == ["PUT"] * 3
        text = log.read_text()
        assert "#" in text and "-> 200 in" in text
        assert "before-start" not in text
    finally:
        if forwarder is not None:
            forwarder.terminate()
            forwarder.wait(10)
        a.stop()
        b.stop()
        target.server.shutdown()


def start_forwarder(tmp_path, *args: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"forwarder-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "webhook-inspector"), "forward", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: "following" in log.read_text(), 15, "forwarder did not connect")
    return proc, log


@pytest.mark.django_db(transaction=True)
def test_a_large_capture_between_two_small_ones_is_replayed_byte_exact(tmp_path):
    """A body above the inline size is left out of the stream: the forwarder fetches /raw, and
    replays exact header bytes (headers_base64), then records the delivery on the server."""
    target = start_target()
    server = start_server(tmp_path)
    proc = None
    try:
        token = httpx.post(f"{server.base}/api/bins").json()["token"]
        proc, log = start_forwarder(tmp_path, f"{server.base}/bins/{token}/", "--to", target.url)
        big = bytes(range(256)) * 2000  # 512,000 bytes: far over the 64 KiB inline size
        sent = [b"small one", big, b"small two"]
        for body in sent:
            r = httpx.post(
                f"{server.base}/{token}", content=body, headers=[(b"x-bytes", b"caf\xe9")]
            )
            assert r.status_code == 200
        wait_for(lambda: len(target.received) == 3, 20, "not all replayed:\n" + log.read_text())
        assert [r.body for r in target.received] == sent
        # The header's byte that is not UTF-8 arrives as that byte (latin-1 to http.server).
        assert all(dict(r.headers)["x-bytes"] == "caf\xe9" for r in target.received)
        lines = log.read_text().splitlines()
        assert re.match(r"\d\d:\d\d:\d\d #2 POST / -> 200 in \d+ ms", lines[-2]), lines
        # Each replay is in the capture's delivery history on the server.
        history = httpx.get(f"{server.base}/api/bins/{token}/captures/2/deliveries").json()
        [delivery] = history["deliveries"]
        assert (delivery["kind"], delivery["status"], delivery["target_url"]) == (
            "forwarder",
            200,
            target.url,
        )
        assert base64.b64decode(delivery["body_base64"]) == b"thanks"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        server.stop()
        target.server.shutdown()


@pytest.mark.django_db(transaction=True)
def test_the_forwarder_stops_with_a_clear_message_when_the_bin_is_gone(tmp_path):
    target = start_target()
    server = start_server(tmp_path)
    try:
        token = httpx.post(f"{server.base}/api/bins").json()["token"]
        proc, log = start_forwarder(tmp_path, f"{server.base}/{token}", "--to", target.url)
        assert httpx.delete(f"{server.base}/api/bins/{token}").status_code == 204
        server.stop()  # the stream drops; on reconnect the bin is gone
        server = start_server(tmp_path, port=server.port)
        assert proc.wait(30) == 1
        text = log.read_text()
        assert "connection lost" in text and "retrying in" in text
        assert f"stopped: no bin {token}" in text or "does not exist" in text, text
    finally:
        server.stop()
        target.server.shutdown()


@pytest.mark.django_db(transaction=True)
def test_local_https_targets_with_insecure_or_a_ca_file(tmp_path):
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    target = start_target(tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = start_server(tmp_path)
    procs = []
    try:
        token = httpx.post(f"{server.base}/api/bins").json()["token"]
        bin_url = f"{server.base}/{token}"
        for extra in ([], ["--insecure"], ["--ca-file", str(ca_file)]):
            proc, log = start_forwarder(tmp_path, bin_url, "--to", target.url, *extra)
            procs.append((proc, log, extra))
        httpx.post(bin_url, content=b"over tls")
        wait_for(lambda: len(target.received) == 2, 20, "not replayed over TLS")
        time.sleep(0.5)
        for _proc, log, extra in procs:
            text = log.read_text()
            if extra:
                assert "#1 POST / -> 200" in text, (extra, text)
            else:  # the default checks the certificate: a self-signed one fails, in words
                assert "#1 POST / -> failed: TLS error: certificate" in text, text
    finally:
        for proc, _, _ in procs:
            proc.terminate()
            proc.wait(10)
        server.stop()
        target.server.shutdown()
