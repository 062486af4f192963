"""Limits with clear answers: rate limit, pruning, expiry, the prune command."""

import json
import time
from datetime import timedelta

import httpx
import psycopg
import pytest
from channels.db import database_sync_to_async
from django.conf import settings as settings_module
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from bins import background
from bins.models import Bin, Capture, Delivery
from bins.ratelimit import Bucket

from . import servers
from .conftest import asgi_http
from .servers import start_server


def test_rate_limiter_allows_the_rate_then_says_when():
    limiter = Bucket(2, 2)
    assert limiter.retry_after("a", 100.0) == 0
    assert limiter.retry_after("a", 100.0) == 0
    assert limiter.retry_after("a", 100.0) == 1
    assert limiter.retry_after("b", 100.0) == 0  # per key
    assert limiter.retry_after("a", 100.6) == 0  # refilled
    slow = Bucket(0.1, 1)
    assert slow.retry_after("a", 0.0) == 0
    assert slow.retry_after("a", 0.0) == 10


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_loop")
async def test_rate_limit_answers_429_and_stores_nothing_over_it(bin_, settings):
    settings.BIN_RATE_LIMIT = 3
    answers = [await asgi_http(f"/{bin_.token}", body=b"x") for _ in range(5)]
    assert [a.status for a in answers] == [200, 200, 200, 429, 429]
    assert (b"retry-after", b"1") in answers[3].headers
    assert "Too many requests" in json.loads(answers[3].body)["error"]
    assert await database_sync_to_async(Capture.objects.filter(bin=bin_).count)() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_loop")
async def test_rate_limit_is_off_by_default(bin_, settings):
    assert settings.BIN_RATE_LIMIT == 0
    answers = [await asgi_http(f"/{bin_.token}", body=b"x") for _ in range(50)]
    assert {a.status for a in answers} == {200}


def make_captures(bin_, n):
    for i in range(n):
        Capture.objects.create(bin=bin_, method="GET", path=f"/{i}")


@pytest.mark.django_db(transaction=True)
def test_prune_command_expires_unused_bins_and_prunes_captures(settings):
    settings.CAPTURES_PER_BIN = 3
    settings.BIN_EXPIRE_DAYS = 7
    old, recent = Bin.objects.create(), Bin.objects.create()
    make_captures(old, 2)
    make_captures(recent, 5)
    # Captures mark their bin used: age the bins after them.
    Bin.objects.filter(pk=old.pk).update(last_used_at=timezone.now() - timedelta(days=8))
    Bin.objects.filter(pk=recent.pk).update(last_used_at=timezone.now() - timedelta(days=6))
    Delivery.objects.create(capture=old.captures.first(), target_url="http://x.test/", method="GET")
    call_command("prune")
    assert not Bin.objects.filter(id=old.id).exists()
    assert not Capture.objects.filter(bin_id=old.id).exists()
    assert not Delivery.objects.exists()
    assert list(recent.captures.order_by("id").values_list("path", flat=True)) == ["/2", "/3", "/4"]


@pytest.mark.django_db(transaction=True)
def test_bins_never_expire_when_set_to_zero(settings):
    settings.BIN_EXPIRE_DAYS = 0
    Bin.objects.create(last_used_at=timezone.now() - timedelta(days=3650))
    assert Bin.delete_expired() == 0
    assert Bin.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_visiting_the_page_marks_the_bin_used(client):
    bin_ = Bin.objects.create(last_used_at=timezone.now() - timedelta(days=5))
    client.get(f"/bins/{bin_.token}/")
    bin_.refresh_from_db()
    assert timezone.now() - bin_.last_used_at < timedelta(minutes=1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("live_loop")
async def test_a_capture_marks_the_bin_used(transactional_db):
    bin_ = await database_sync_to_async(Bin.objects.create)(
        last_used_at=timezone.now() - timedelta(days=5)
    )
    await asgi_http(f"/{bin_.token}", body=b"x")
    await database_sync_to_async(bin_.refresh_from_db)()
    assert timezone.now() - bin_.last_used_at < timedelta(minutes=1)


@pytest.mark.django_db(transaction=True)
def test_an_idle_instance_sweeps_expired_bins(tmp_path):
    expired = Bin.objects.create()
    Bin.objects.filter(pk=expired.pk).update(last_used_at=timezone.now() - timedelta(days=40))
    kept = Bin.objects.create()
    server = start_server(tmp_path, EXPIRY_SWEEP_SECONDS="1")
    try:
        deadline = time.monotonic() + 15
        while Bin.objects.filter(pk=expired.pk).exists():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert Bin.objects.filter(pk=kept.pk).exists()
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_one_process_of_a_cluster_sweeps_at_a_time(settings):
    if connection.vendor != "postgresql":
        pytest.skip("the cluster lock is PostgreSQL's (SQLite serves one process)")
    expired = Bin.objects.create()
    Bin.objects.filter(pk=expired.pk).update(last_used_at=timezone.now() - timedelta(days=40))
    other = psycopg.connect(servers.database_url(), autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [background.SWEEP_LOCK])
        assert background.sweep_once() == 0  # another process holds the sweep
        assert Bin.objects.filter(pk=expired.pk).exists()
        other.execute("SELECT pg_advisory_unlock(%s)", [background.SWEEP_LOCK])
        assert background.sweep_once() == 1
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_the_bin_rate_limit_is_per_instance_with_redis(servers):
    """With REDIS_URL, every process counts against one allowance per bin."""
    if not settings_module.REDIS_URL:
        pytest.skip("needs REDIS_URL (scripts/test-all's second pass)")
    a, b = servers(BIN_RATE_LIMIT="0.5"), servers(BIN_RATE_LIMIT="0.5")
    token = httpx.post(f"{a.base}/api/bins").json()["token"]
    statuses = [httpx.post(f"{s.base}/{token}", content=b"x").status_code for s in (a, b, a, b)]
    assert statuses == [200, 429, 429, 429]
    assert Capture.objects.filter(bin__token=token).count() == 1
