"""The forwarder command against running servers and a real target."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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
