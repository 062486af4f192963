"""Faults: Redis going away, many concurrent requests. Real server, real Redis process."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time

import httpx
import pytest
import websockets

from bins.models import Capture

from .servers import free_port, start_server

pytestmark = pytest.mark.django_db(transaction=True)


class RedisProcess:
    """A redis-server of the test's own, so the test can stop and restart it."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.dir)),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required in CI")
        pytest.skip("redis-server not installed")
    redis = RedisProcess(tmp_path)
    redis.start()
    yield redis
    if redis.proc.poll() is None:
        redis.stop()


def test_redis_down_captures_are_stored_and_clients_catch_up(
    transactional_db, tmp_path, redis_server
):
    server = start_server(tmp_path, REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0")
    try:
        asyncio.run(_redis_down(server, redis_server))
    finally:
        server.stop()


async def _redis_down(server, redis):
    ws_base = server.base.replace("http", "ws", 1)
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
        token = (await http.post("/api/bins")).json()["token"]
        async with websockets.connect(f"{ws_base}/ws/bins/{token}/json/") as stream:
            r = await http.post(f"/{token}/before", content=b"1")
            assert r.status_code == 200
            first = json.loads(await asyncio.wait_for(stream.recv(), 5))["capture"]
            redis.stop()
            # Redis is gone: captures are still stored and answered.
            for i in range(3):
                r = await http.post(f"/{token}/during/{i}", content=str(i).encode())
                assert r.status_code == 200, r.text
            health = await http.get("/healthz")
            assert health.status_code == 503
            assert "channel_layer" in health.json()["errors"]
        stored = (await http.get(f"/api/bins/{token}/captures")).json()["captures"]
        assert [c["path"] for c in stored] == ["/during/2", "/during/1", "/during/0", "/before"]
        # The failed push is logged loudly (after redis-py's own retries).
        deadline = time.monotonic() + 15
        while "live push failed" not in server.log():
            assert time.monotonic() < deadline, server.log()
            await asyncio.sleep(0.1)
        # Redis is back: a client that reconnects with the last id it saw gets what it missed.
        redis.start()
        deadline = time.monotonic() + 15
        while (await http.get("/healthz")).status_code != 200:
            assert time.monotonic() < deadline, "health did not recover"
            await asyncio.sleep(0.2)
        async with websockets.connect(
            f"{ws_base}/ws/bins/{token}/json/?after={first['id']}"
        ) as again:
            missed = [json.loads(await asyncio.wait_for(again.recv(), 5)) for _ in range(3)]
            assert [m["capture"]["path"] for m in missed] == ["/during/0", "/during/1", "/during/2"]
            await http.post(f"/{token}/after", content=b"x")
            live = json.loads(await asyncio.wait_for(again.recv(), 5))
            assert live["capture"]["path"] == "/after"


def test_concurrent_requests_to_one_bin_are_all_stored(transactional_db, tmp_path):
    server = start_server(tmp_path)
    try:
        n = 400
        token = httpx.post(f"{server.base}/api/bins").json()["token"]

        async def fire():
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits) as http:
                return await asyncio.gather(
                    *(http.post(f"/{token}/{i}", content=str(i).encode()) for i in range(n))
                )

        answers = asyncio.run(fire())
        assert [a.status_code for a in answers] == [200] * n
        bodies = sorted(bytes(b) for b in Capture.objects.values_list("body", flat=True))
        assert bodies == sorted(str(i).encode() for i in range(n))
    finally:
        server.stop()
