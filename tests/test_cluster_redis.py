"""A cluster (two processes behind nginx, PostgreSQL) on a Redis of its own that the test
stops and starts: connected streams on both processes get every capture, in order, or are
closed with 4000 and catch up with ?after=. Never a silent gap."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from .test_faults import RedisProcess

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    redis = RedisProcess(tmp_path_factory.mktemp("redis"))
    redis.start()
    yield redis
    if redis.proc.poll() is None:
        redis.stop()


@pytest.fixture(scope="module")
def cluster_env(own_redis) -> dict[str, str]:
    return {"REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}


def ws_url(base: str) -> str:
    return base.replace("http", "ws", 1)


def test_streams_of_a_cluster_stay_complete_across_a_redis_restart(cluster_up, own_redis):
    asyncio.run(_across_a_restart(cluster_up, own_redis))


async def _across_a_restart(cluster, redis) -> None:
    total = 60
    async with httpx.AsyncClient(base_url=cluster.base, timeout=10) as http:
        token = (await http.post("/api/bins")).json()["token"]
        seen: dict[str, list[int]] = {p.base: [] for p in cluster.processes}
        closed_4000 = []

        async def follow(base: str) -> None:
            after = 0
            while len(seen[base]) < total:
                url = f"{ws_url(base)}/ws/bins/{token}/json/?after={after}"
                try:
                    async with websockets.connect(url) as stream:
                        async for frame in stream:
                            capture = json.loads(frame)["capture"]
                            seen[base].append(capture["id"])
                            after = capture["id"]
                            if len(seen[base]) == total:
                                return
                except websockets.ConnectionClosedError as exc:
                    assert exc.rcvd is not None and exc.rcvd.code == 4000, exc
                    closed_4000.append(base)
                except (OSError, websockets.InvalidStatus):
                    await asyncio.sleep(0.2)  # Redis down: a new stream may be refused

        followers = [asyncio.create_task(follow(p.base)) for p in cluster.processes]
        await asyncio.sleep(0.5)
        for i in range(total):
            if i == 10:
                redis.stop()
            if i == 40:
                redis.start()
            # Through nginx: both processes store some, while Redis is down too.
            assert (await http.post(f"/{token}/{i}", content=b"x")).status_code == 200
            await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(*followers), 30)
    for base, ids in seen.items():
        assert ids == list(range(1, total + 1)), (base, ids, closed_4000)
