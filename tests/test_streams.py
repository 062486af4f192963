"""Live streams that never silently stop, and forwards that are never lost: real server
processes, real websocket clients (with the usual 1 MiB frame limit), a real Redis that the
test stops and starts, a real HTTP target."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest
import websockets

from bins.models import Delivery, Forward

from .targets import start_target
from .test_faults import redis_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024
ROW_ID = re.compile(r'<li class="capture" id="capture-(\d+)"')


def ws(base: str) -> str:
    return base.replace("http", "ws", 1)


async def frames(stream, count: int) -> list[dict]:
    got = []
    while len(got) < count:
        got.append(json.loads(await asyncio.wait_for(stream.recv(), 10)))
    return got


def test_a_large_capture_never_stops_a_stream(servers):
    server = servers()
    asyncio.run(_large_capture(server.base))


async def _large_capture(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        token = (await http.post("/api/bins")).json()["token"]
        async with (
            websockets.connect(f"{ws(base)}/ws/bins/{token}/json/", max_size=MiB) as stream,
            websockets.connect(f"{ws(base)}/ws/bins/{token}/", origin=base, max_size=MiB) as page,
        ):
            assert 'id="capture-list"' in await asyncio.wait_for(page.recv(), 5)
            # 3 MiB of JSON text: as base64 and as text it would be a frame of 7 MiB.
            large = json.dumps({"blob": "x" * (3 * MiB)}).encode()
            for body in (b'{"n": 1}', large, b'{"n": 3}'):
                r = await http.post(f"/{token}/hook", content=body)
                assert r.status_code == 200
            got = [f["capture"] for f in await frames(stream, 3)]
            rows = []
            while len(rows) < 3:
                rows += ROW_ID.findall(await asyncio.wait_for(page.recv(), 5))
        assert [c["id"] for c in got] == [1, 2, 3]
        assert [c["body_omitted"] for c in got] == [False, True, False]
        assert got[1]["body_base64"] is None and got[1]["body_size"] == len(large)
        assert got[2]["body_text"] == '{"n": 3}'
        assert sorted(int(i) for i in rows) == [1, 2, 3]
        # The whole body is one request away.
        raw = await http.get(f"/api/bins/{token}/captures/2/raw")
        assert raw.content == large
        whole = (await http.get(f"/api/bins/{token}/captures/2")).json()
        assert whole["body_omitted"] is False and whole["body_text"] == large.decode()
        # Lists leave it out as well; a reconnecting client catches up past it.
        listed = (await http.get(f"/api/bins/{token}/captures")).json()["captures"]
        assert [c["body_omitted"] for c in listed] == [False, True, False]
        async with websockets.connect(
            f"{ws(base)}/ws/bins/{token}/json/?after=0", max_size=MiB
        ) as again:
            assert [f["capture"]["id"] for f in await frames(again, 3)] == [1, 2, 3]


def test_a_page_list_over_a_mebibyte_comes_in_pieces(servers):
    server = servers()
    token = httpx.post(f"{server.base}/api/bins").json()["token"]
    query = "q=" + "x" * 15_000
    for i in range(80):
        assert httpx.get(f"{server.base}/{token}/{i}?{query}").status_code == 200

    async def page() -> list[str]:
        async with websockets.connect(
            f"{ws(server.base)}/ws/bins/{token}/", origin=server.base, max_size=MiB
        ) as stream:
            pieces = [await asyncio.wait_for(stream.recv(), 5)]
            while True:
                try:
                    pieces.append(await asyncio.wait_for(stream.recv(), 1))
                except TimeoutError:
                    return pieces

    pieces = asyncio.run(page())
    assert 'id="capture-list"' in pieces[0] and 'hx-swap-oob="outerHTML"' in pieces[0]
    assert all("beforeend:#capture-list" in p for p in pieces[1:])
    assert max(len(p.encode()) for p in pieces) < MiB
    ids = [int(i) for p in pieces for i in ROW_ID.findall(p)]
    assert ids == list(range(80, 0, -1))


def test_a_stream_gets_every_capture_across_a_redis_restart(servers, redis_server):  # noqa: F811
    server = servers(REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0")
    asyncio.run(_redis_restart(server, redis_server))


async def _redis_restart(server, redis) -> None:
    """Pushes go through Redis, and are lost while it is down: the stream is kept complete
    from the database, or closed with 4000 and caught up with ?after=; never silent."""
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
        token = (await http.post("/api/bins")).json()["token"]
        seen: list[int] = []
        done = asyncio.Event()
        total = 1 + 30 + 1

        async def follow() -> None:
            after = 0
            while len(seen) < total:
                url = f"{ws(server.base)}/ws/bins/{token}/json/?after={after}"
                try:
                    async with websockets.connect(url) as stream:
                        async for frame in stream:
                            seen.append(json.loads(frame)["capture"]["id"])
                            after = seen[-1]
                            if len(seen) == total:
                                break
                except websockets.ConnectionClosedError as exc:
                    assert exc.rcvd is not None and exc.rcvd.code == 4000, exc
                except (OSError, websockets.InvalidStatus):
                    await asyncio.sleep(0.2)  # Redis down: the handshake may be refused
            done.set()

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        assert (await http.post(f"/{token}/before")).status_code == 200
        redis.stop()
        for i in range(30):
            assert (await http.post(f"/{token}/during/{i}")).status_code == 200
        await asyncio.sleep(1)
        redis.start()
        await asyncio.sleep(1)
        assert (await http.post(f"/{token}/after")).status_code == 200
        await asyncio.wait_for(done.wait(), 30)
        await follower
    assert seen == list(range(1, total + 1))


def test_forwards_are_retried_recorded_and_sent_once_by_a_cluster(servers):
    target = start_target()
    target.status = 503  # until every capture has been tried once
    a = servers()
    b = servers()
    try:
        token = httpx.post(f"{a.base}/api/bins").json()["token"]
        r = httpx.patch(f"{a.base}/api/bins/{token}", json={"forward_url": target.url + "/in"})
        assert r.status_code == 200
        time.sleep(1.1)  # the capture path caches a bin's settings for a second
        for i in range(6):
            base = (a, b)[i % 2].base
            assert httpx.post(f"{base}/{token}/{i}", content=str(i).encode()).status_code == 200
        # First attempts fail (503): each capture is tried again after a backoff...
        deadline = time.monotonic() + 15
        while len(target.received) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        target.status = 200
        deadline = time.monotonic() + 20
        while Forward.objects.exists():
            assert time.monotonic() < deadline, list(Forward.objects.values())
            time.sleep(0.2)
        # ...every attempt is a recorded delivery, and each capture got exactly one 200,
        # whichever process took it.
        ok = Delivery.objects.filter(kind="forward", status=200)
        assert sorted(ok.values_list("capture__seq", flat=True)) == [1, 2, 3, 4, 5, 6]
        failed = Delivery.objects.filter(kind="forward", status=503)
        assert failed.count() >= 6
        assert set(Delivery.objects.filter(kind="forward").values_list("attempt", flat=True)) >= {
            1,
            2,
        }
        delivered = [r.body for r in target.received]
        assert sorted(set(delivered)) == [str(i).encode() for i in range(6)]
    finally:
        target.server.shutdown()


def test_a_forward_survives_a_restart(servers):
    target = start_target()
    target.status = 503
    server = servers()
    try:
        token = httpx.post(f"{server.base}/api/bins").json()["token"]
        httpx.patch(f"{server.base}/api/bins/{token}", json={"forward_url": target.url})
        assert httpx.post(f"{server.base}/{token}", content=b"keep me").status_code == 200
        deadline = time.monotonic() + 10
        while not Delivery.objects.exists():  # the first attempt went out and was recorded
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.stop()  # the retry is due in a second: nobody is running to send it
        assert Forward.objects.count() == 1
        target.status = 200
        server = servers(port=server.port)
        deadline = time.monotonic() + 20
        while Forward.objects.exists():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert [r.body for r in target.received] == [b"keep me", b"keep me"]
        statuses = list(Delivery.objects.order_by("id").values_list("status", "attempt"))
        assert statuses == [(503, 1), (200, 2)]
    finally:
        target.server.shutdown()


def test_metrics_count_captures_refusals_streams_and_the_forward_backlog(servers):
    server = servers(MAX_BODY_BYTES="100")
    token = httpx.post(f"{server.base}/api/bins").json()["token"]
    for _ in range(3):
        assert httpx.post(f"{server.base}/{token}", content=b"x").status_code == 200
    assert httpx.post(f"{server.base}/{token}", content=b"x" * 101).status_code == 413
    unknown = "3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f"
    assert httpx.post(f"{server.base}/{unknown}").status_code == 404

    async def scrape_with_a_stream_open() -> str:
        url = f"{ws(server.base)}/ws/bins/{token}/json/"
        async with websockets.connect(url), httpx.AsyncClient() as http:
            await asyncio.sleep(0.2)
            return (await http.get(f"{server.base}/metrics")).text

    text = asyncio.run(scrape_with_a_stream_open())

    def value(name: str) -> float:
        match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
        assert match, (name, text)
        return float(match.group(1))

    assert value("inspector_captures_stored_total") == 3
    assert value('inspector_captures_refused_total{reason="too_large"}') == 1
    assert value('inspector_captures_refused_total{reason="not_found"}') == 1
    assert value('inspector_open_streams{kind="json"}') == 1
    assert value("inspector_commit_group_captures_count") == 3
    assert value("inspector_live_pushes_total") == 3
    assert value("inspector_forward_backlog") == 0
