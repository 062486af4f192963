"""Many processes behave as one: the cluster `make cluster` starts (scripts/cluster), for real.

Two Daphne processes on PostgreSQL + Redis behind nginx (deploy/nginx.conf). Captures go
through nginx, which spreads them over both processes; streams and the API are read from each
process directly and through nginx.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from bins.models import Capture

from .servers import Cluster
from .targets import start_target

pytestmark = pytest.mark.django_db(transaction=True)

ROW_ID = re.compile(r'<li class="capture" id="capture-(\d+)"')


def upstreams(cluster: Cluster, fragment: str) -> list[int]:
    """The process ports nginx sent the requests whose request line contains `fragment` to."""
    ports = []
    for line in cluster.access_log_path.read_text().splitlines():
        if fragment in line:
            ports += [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line.split("upstream=")[1])]
    return ports


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1)


async def new_bin(http: httpx.AsyncClient) -> str:
    r = await http.post("/api/bins")
    assert r.status_code == 201, r.text
    return r.json()["token"]


@dataclass
class StreamRun:
    bases: list[str]  # nginx, then each process directly
    stored: list[tuple[int, str]]  # (id, path) of the bin's captures, in id (commit) order
    json_seen: list[list[tuple[int, str]]]  # per base: what its JSON stream sent, in order
    pages_seen: list[list[int]]  # per base: the ids its page stream sent, in display order


def stream_run(cluster: Cluster, clients: int, each: int) -> StreamRun:
    """`clients` clients each post `each` captures through nginx, one after the other; the
    JSON and the page stream of nginx and of each process are read live meanwhile."""
    bases = [cluster.base, *(p.base for p in cluster.processes)]
    token, sent, json_seen, pages_seen = asyncio.run(_every_stream(cluster, bases, clients, each))
    stored = list(
        Capture.objects.filter(bin__token=token).order_by("seq").values_list("seq", "path")
    )
    assert sorted(path for _, path in stored) == sorted(sent)
    # nginx spread the captures over both processes, so each stream carried captures that
    # another process stored.
    assert sorted(set(upstreams(cluster, f"POST /{token}/seq/"))) == sorted(
        p.port for p in cluster.processes
    )
    return StreamRun(bases, stored, json_seen, pages_seen)


def test_captures_through_nginx_reach_every_stream_of_every_process(cluster_up):
    run = stream_run(cluster_up, clients=8, each=10)
    for base, seen in zip(run.bases, run.json_seen, strict=True):
        assert sorted(seen) == run.stored, f"JSON stream via {base}"
    for base, seen in zip(run.bases, run.pages_seen, strict=True):
        assert sorted(seen) == [i for i, _ in run.stored], f"page stream via {base}"


def test_every_stream_of_a_cluster_sends_captures_in_commit_order(cluster_up):
    """Every stream sends the captures in commit (id) order, whichever process stored them. A
    client that keeps the last id it saw and reconnects with `?after=` would otherwise skip
    the ones still on their way."""
    run = stream_run(cluster_up, clients=8, each=10)
    ids = [i for i, _ in run.stored]
    for base, seen in zip(run.bases, run.json_seen, strict=True):
        assert [i for i, _ in seen] == ids, f"JSON stream via {base}: {[i for i, _ in seen]}"
    for base, seen in zip(run.bases, run.pages_seen, strict=True):
        assert seen == ids, f"page stream via {base}"


async def _every_stream(cluster: Cluster, bases: list[str], clients: int, each: int) -> tuple:
    async with httpx.AsyncClient(base_url=cluster.base, timeout=10) as http, AsyncExitStack() as st:
        token = await new_bin(http)
        json_streams = [
            await st.enter_async_context(websockets.connect(f"{ws_url(b)}/ws/bins/{token}/json/"))
            for b in bases
        ]
        # A browser on the page sends the page's origin: nginx's, whichever process answers.
        page_streams = [
            await st.enter_async_context(
                websockets.connect(f"{ws_url(b)}/ws/bins/{token}/", origin=cluster.base)
            )
            for b in bases
        ]
        for page in page_streams:
            assert 'id="capture-list"' in await asyncio.wait_for(page.recv(), 5)

        sent = [f"/seq/{c}/{k}" for c in range(clients) for k in range(each)]

        async def client(c: int) -> None:
            for k in range(each):
                r = await http.post(f"/{token}/seq/{c}/{k}", content=b"x")
                assert r.status_code == 200, r.text

        await asyncio.gather(*(client(c) for c in range(clients)))

        async def json_paths(stream) -> list[tuple[int, str]]:
            got = []
            while len(got) < len(sent):
                frame = json.loads(await asyncio.wait_for(stream.recv(), 10))
                assert frame["type"] == "capture", frame
                got.append((frame["capture"]["id"], frame["capture"]["path"]))
            return got

        async def page_ids(stream) -> list[int]:
            got: list[int] = []
            while len(got) < len(sent):
                fragment = await asyncio.wait_for(stream.recv(), 10)
                # Rows of one fragment come newest first (the page puts them on top).
                got += reversed([int(i) for i in ROW_ID.findall(fragment)])
            return got

        json_seen = await asyncio.gather(*(json_paths(s) for s in json_streams))
        pages_seen = await asyncio.gather(*(page_ids(s) for s in page_streams))
    return token, sent, json_seen, pages_seen


def test_the_api_through_nginx_lists_what_every_process_stored(cluster_up):
    processes = cluster_up.processes
    # Made on one process: the links it gives are nginx's (PUBLIC_URL), not the process's own.
    made = httpx.post(f"{processes[1].base}/api/bins").json()
    token = made["token"]
    assert made["capture_url"] == f"{cluster_up.base}/{token}"
    for i, process in enumerate(processes):
        for k in range(3):
            r = httpx.post(f"{process.base}/{token}/direct/{i}/{k}", content=f"{i}-{k}")
            assert r.status_code == 200, r.text
    for k in range(4):
        assert httpx.put(f"{cluster_up.base}/{token}/nginx/{k}", content=b"n").status_code == 200

    expected = list(
        Capture.objects.filter(bin__token=token).order_by("-seq").values_list("seq", "path")
    )
    assert len(expected) == 3 * len(processes) + 4
    # Through nginx until each process has answered at least once (nginx takes turns, and
    # leaves out for a few seconds a process it found down), and from each process directly.
    fragment = f"GET /api/bins/{token}/captures "
    deadline = time.monotonic() + 15
    while set(upstreams(cluster_up, fragment)) != {p.port for p in processes}:
        assert time.monotonic() < deadline, upstreams(cluster_up, fragment)
        listed = httpx.get(f"{cluster_up.base}/api/bins/{token}/captures").json()["captures"]
        assert [(c["id"], c["path"]) for c in listed] == expected
    for process in processes:
        listed = httpx.get(f"{process.base}/api/bins/{token}/captures").json()["captures"]
        assert [(c["id"], c["path"]) for c in listed] == expected, process.base
    for capture_id, path in expected:
        one = httpx.get(f"{cluster_up.base}/api/bins/{token}/captures/{capture_id}").json()
        assert one["path"] == path


def test_nginx_tells_the_processes_who_the_client_is_and_it_cannot_be_forged(cluster_up):
    # Any 127/8 address is this machine: connect from another one than nginx's own.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=cluster_up.base, transport=transport, timeout=10) as http:
        token = http.post("/api/bins").json()["token"]
        r = http.post(
            f"/{token}/who",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
        )
        assert r.status_code == 200
    capture = Capture.objects.get(bin__token=token)
    assert capture.remote_addr == "127.0.0.2"
    headers = dict(capture.headers)
    assert headers["x-forwarded-for"] == "127.0.0.2"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["host"] == f"127.0.0.1:{cluster_up.port}"


def test_a_bins_reply_passes_nginx_as_configured_and_nginx_never_acts_on_it(cluster_up):
    base = cluster_up.base
    plain = httpx.post(f"{base}/api/bins").json()["token"]
    # No Server header configured: nginx adds none (as Daphne alone).
    assert "server" not in httpx.post(f"{base}/{plain}/hook").headers

    response = {
        "status": 201,
        # X-Accel-Redirect asks nginx to serve another URL in place of this reply.
        "headers": [["X-Accel-Redirect", f"/api/bins/{plain}"], ["Server", "bin's own"]],
        "body": "the bin's body",
    }
    made = httpx.post(f"{base}/api/bins", json={"response": response})
    assert made.status_code == 201, made.text
    r = httpx.post(f"{base}/{made.json()['token']}/hook")
    assert (r.status_code, r.text) == (201, "the bin's body")
    assert r.headers["x-accel-redirect"] == f"/api/bins/{plain}"
    assert r.headers["server"] == "bin's own"


def test_nginx_refuses_a_body_over_the_limit_like_the_app(cluster_up):
    base = cluster_up.base
    limit = 10 * 1024 * 1024  # MAX_BODY_BYTES's default
    token = httpx.post(f"{base}/api/bins").json()["token"]
    r = httpx.post(f"{base}/{token}/at-limit", content=b"a" * limit, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{base}/{token}/over", content=b"a" * (limit + 1), timeout=30)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/json"
    assert "limit" in r.json()["error"]
    assert list(Capture.objects.filter(bin__token=token).values_list("path", flat=True)) == [
        "/at-limit"
    ]
    # The refusal was nginx's: no process saw the request.
    assert upstreams(cluster_up, f"POST /{token}/over ") == []


def test_a_large_capture_between_two_small_ones_reaches_streams_pages_and_the_forwarder(
    cluster_up, tmp_path
):
    """Through nginx, on PostgreSQL + Redis: a body far over the inline size between two small
    ones reaches a JSON stream and a page stream on each process, and the forwarder command
    (which follows through nginx) replays all three byte for byte."""
    target = start_target()
    token = httpx.post(f"{cluster_up.base}/api/bins").json()["token"]
    forwarder = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "webhook-inspector"),
            *("forward", f"{cluster_up.base}/bins/{token}/", "--to", target.url),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(_large_between_small(cluster_up, token, target))
    finally:
        forwarder.terminate()
        forwarder.wait(10)
        target.server.shutdown()


async def _large_between_small(cluster: Cluster, token: str, target) -> None:
    large = bytes(range(256)) * 8192  # 2 MiB, binary
    bodies = [b"small one", large, b"small two"]
    async with httpx.AsyncClient(base_url=cluster.base, timeout=30) as http:
        async with AsyncExitStack() as st:
            streams = [
                await st.enter_async_context(
                    websockets.connect(f"{ws_url(p.base)}/ws/bins/{token}/json/", max_size=2**20)
                )
                for p in cluster.processes
            ]
            pages = [
                await st.enter_async_context(
                    websockets.connect(
                        f"{ws_url(p.base)}/ws/bins/{token}/",
                        origin=cluster.base,
                        max_size=2**20,
                    )
                )
                for p in cluster.processes
            ]
            for page in pages:
                await asyncio.wait_for(page.recv(), 5)
            await asyncio.sleep(1)  # the forwarder is following
            for body in bodies:
                assert (await http.post(f"/{token}/hook", content=body)).status_code == 200
            for stream in streams:
                got = [json.loads(await asyncio.wait_for(stream.recv(), 10)) for _ in bodies]
                assert [f["capture"]["id"] for f in got] == [1, 2, 3]
                assert [f["capture"]["body_omitted"] for f in got] == [False, True, False]
            for page in pages:
                rows: list[int] = []
                while len(rows) < 3:
                    rows += [
                        int(i) for i in ROW_ID.findall(await asyncio.wait_for(page.recv(), 10))
                    ]
                assert sorted(rows) == [1, 2, 3]
        deadline = time.monotonic() + 20
        while len(target.received) < 3:
            assert time.monotonic() < deadline, "the forwarder did not replay all three"
            await asyncio.sleep(0.1)
        assert [r.body for r in target.received] == bodies


def test_a_process_killed_under_load_loses_no_answered_capture(cluster_up):
    total = 300
    token, answered, answered_after_kill, bad_gateway = asyncio.run(
        _kill_under_load(cluster_up, total)
    )

    stored = list(Capture.objects.filter(bin__token=token).values_list("path", flat=True))
    missing = {k for k in answered if f"/load/{k}" not in stored}
    report = (
        f"{total} captures, {bad_gateway} answered 502 and retried, {len(stored)} stored "
        f"({len(stored) - len(set(stored))} twice: stored, then the process died before answering)"
    )
    print(report)
    assert answered == set(range(total)), report
    assert not missing, f"answered 2xx but not stored: {sorted(missing)}; {report}"
    assert answered_after_kill > 0, "the load went on after the kill"
    assert cluster_up.processes[0].pid is None  # it stayed down: the other one took the rest


async def _kill_under_load(cluster: Cluster, total: int) -> tuple:
    clients = 16
    answered: set[int] = set()
    answered_after_kill = 0
    bad_gateway = 0
    killed = asyncio.Event()
    a_quarter_answered = asyncio.Event()
    todo: asyncio.Queue[int] = asyncio.Queue()
    for k in range(total):
        todo.put_nowait(k)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal answered_after_kill, bad_gateway
        while not todo.empty():
            k = todo.get_nowait()
            for _ in range(10):
                r = await http.post(f"/{token}/load/{k}", content=b"x" * 512)
                if r.status_code != 502:
                    break
                # nginx: the process died with this request in it. A provider retries.
                bad_gateway += 1
            assert r.status_code == 200, (k, r.status_code, r.text)
            answered.add(k)
            answered_after_kill += killed.is_set()
            if len(answered) >= total // 4:
                a_quarter_answered.set()

    async def killer() -> None:
        await a_quarter_answered.wait()
        killed.set()  # the SIGKILL goes out at once; kill() then waits for the script to see it
        await asyncio.to_thread(cluster.kill, 0)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=cluster.base, timeout=30, limits=limits) as http:
        token = await new_bin(http)
        await asyncio.gather(killer(), *(client(http) for _ in range(clients)))
    return token, answered, answered_after_kill, bad_gateway
