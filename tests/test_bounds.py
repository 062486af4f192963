"""A 2xx is always true and nothing gives a 500: what happens after a capture's commit never
changes its answer, a resend of a capture deleted meanwhile still answers, limits of 0 mean
unlimited, and a group of large bodies is bounded by bytes. Real databases, real servers."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from channels.db import database_sync_to_async
from django.db import connection

from bins import writer
from bins.capture import build_capture
from bins.models import Bin, Capture

from .conftest import asgi_http
from .targets import start_target

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.usefixtures("live_loop")
async def test_a_failure_after_the_commit_never_changes_the_answer(bin_, settings):
    """Pruning fails (its table is gone for a moment): the capture is stored and answered 200,
    not 503 "nothing was kept" (a provider would retry and duplicate it)."""
    settings.CAPTURES_PER_BIN = 1
    await asgi_http(f"/{bin_.token}/first", body=b"1")

    def break_pruning(rename: str) -> None:
        # In the writer's thread, on its connection: a real failure of the DELETE it runs.
        with connection.cursor() as cursor:
            cursor.execute(rename)

    await writer.run_in_writer_thread(
        break_pruning, "ALTER TABLE bins_forward RENAME TO bins_forward_away"
    )
    try:
        answer = await asgi_http(f"/{bin_.token}/second", body=b"2")
        assert answer.status == 200, answer.body
    finally:
        await writer.run_in_writer_thread(
            break_pruning, "ALTER TABLE bins_forward_away RENAME TO bins_forward"
        )
    paths = await database_sync_to_async(
        lambda: list(
            Capture.objects.filter(bin=bin_).order_by("seq").values_list("path", flat=True)
        )
    )()
    assert "/second" in paths


def test_a_resend_of_a_capture_deleted_meanwhile_still_answers(servers):
    server = servers()
    target = start_target()
    target.delay = 1.0
    try:
        token = httpx.post(f"{server.base}/api/bins").json()["token"]
        httpx.post(f"{server.base}/{token}", content=b"x")

        async def race() -> httpx.Response:
            async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
                resend = asyncio.create_task(
                    http.post(
                        f"/api/bins/{token}/captures/1/resend", json={"target_url": target.url}
                    )
                )
                await asyncio.sleep(0.5)  # the target has it and takes its time to answer
                assert (await http.delete(f"/api/bins/{token}/captures/1")).status_code == 204
                return await resend

        answer = asyncio.run(race())
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == 200 and answer.json()["id"] is None
        assert len(target.received) == 1
    finally:
        target.server.shutdown()


@pytest.mark.usefixtures("live_loop")
async def test_captures_per_bin_zero_keeps_every_capture(bin_, settings):
    settings.CAPTURES_PER_BIN = 0
    for i in range(30):
        assert (await asgi_http(f"/{bin_.token}/{i}", body=b"x")).status == 200
    await writer.run_in_writer_thread(lambda: None)  # pruning has run, if it were to
    assert await database_sync_to_async(Capture.objects.filter(bin=bin_).count)() == 30


def test_a_writer_group_is_bounded_by_bytes(monkeypatch):
    """Big bodies never queue up by the hundred in one group."""
    monkeypatch.setattr(writer, "MAX_BATCH_BYTES", 3 * 1024 * 1024)

    async def groups() -> list[int]:
        queue: asyncio.Queue = asyncio.Queue()
        shell = writer.CaptureWriter.__new__(writer.CaptureWriter)
        shell.queue = queue
        info = None
        for _ in range(6):
            c = build_capture(info, "POST", "", b"", [], b"x" * 1024 * 1024, "")  # type: ignore[arg-type]
            queue.put_nowait((c, None))
        sizes = []
        while not queue.empty():
            sizes.append(len(shell._next_batch(queue.get_nowait())))
        return sizes

    assert asyncio.run(groups()) == [3, 3]


def test_postgresql_commits_wait_for_the_flush_by_default():
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL setting")
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def test_bins_json_counts_captures_received_and_kept(client, settings):
    bin_ = Bin.objects.create()
    for i in range(5):
        Capture.objects.create(bin=bin_, method="POST", path=f"/{i}")
    bin_.delete_captures([1, 2])
    data = client.get(f"/api/bins/{bin_.token}").json()
    assert (data["captures_received"], data["captures_kept"]) == (5, 3)
    assert json.dumps(data)
