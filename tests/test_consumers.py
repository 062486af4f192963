"""The live streams with Channels' WebsocketCommunicator, on the project's real ASGI app."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from bins.live import group_name, live_item
from bins.models import Capture
from inspector.asgi import application

from .conftest import HOST, asgi_http

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_loop")]


def add_capture(bin_, path):
    return Capture.objects.create(bin=bin_, method="POST", path=path, body=b"x", body_size=1)


async def connect(path, headers=None):
    ws = WebsocketCommunicator(application, path, headers=headers or HOST)
    connected, _ = await ws.connect(timeout=5)
    return ws, connected


async def test_unknown_bin_is_refused(transactional_db):
    for path in [
        "/ws/bins/3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f/json/",
        "/ws/bins/3f2b8c1e-9d4a-4c6b-8e2f-1a2b3c4d5e6f/",
    ]:
        _, connected = await connect(path)
        assert not connected


async def test_json_stream_catches_up_after_an_id_then_goes_live(bin_):
    first = await database_sync_to_async(add_capture)(bin_, "/old")
    missed = [await database_sync_to_async(add_capture)(bin_, f"/missed{i}") for i in range(3)]
    ws, connected = await connect(f"/ws/bins/{bin_.token}/json/?after={first.seq}")
    assert connected
    frames = [json.loads(await ws.receive_from(timeout=5)) for _ in missed]
    assert [f["capture"]["id"] for f in frames] == [c.seq for c in missed]
    assert all(f["type"] == "capture" for f in frames)
    await asgi_http(f"/{bin_.token}/new", body=b"live")
    frame = json.loads(await ws.receive_from(timeout=5))
    assert frame["capture"]["path"] == "/new"
    assert frame["capture"]["body_text"] == "live"
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_json_stream_without_after_sends_only_new_captures(bin_):
    await database_sync_to_async(add_capture)(bin_, "/old")
    ws, connected = await connect(f"/ws/bins/{bin_.token}/json/")
    assert connected
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_what_the_catch_up_sent_is_not_sent_again(bin_):
    c = await database_sync_to_async(add_capture)(bin_, "/once")
    ws, _ = await connect(f"/ws/bins/{bin_.token}/json/?after=0")
    assert json.loads(await ws.receive_from(timeout=5))["capture"]["id"] == c.seq
    # The same capture announced after the catch-up read it (a commit racing the connect).
    await get_channel_layer().group_send(
        group_name(bin_.token), {"type": "captures.new", "captures": [live_item(c.as_json())]}
    )
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_bad_after_is_an_error_frame(bin_):
    ws, connected = await connect(f"/ws/bins/{bin_.token}/json/?after=abc")
    assert connected
    assert json.loads(await ws.receive_from(timeout=5))["type"] == "error"
    await ws.disconnect()


async def test_page_stream_sends_the_list_then_new_rows(bin_):
    await database_sync_to_async(add_capture)(bin_, "/before")
    ws, connected = await connect(f"/ws/bins/{bin_.token}/")
    assert connected
    listing = await ws.receive_from(timeout=5)
    assert 'id="capture-list"' in listing and 'hx-swap-oob="outerHTML"' in listing
    assert "/before" in listing
    await asgi_http(f"/{bin_.token}/<img src=x onerror=alert(1)>", method="<b>X</b>")
    row = await ws.receive_from(timeout=5)
    assert 'hx-swap-oob="afterbegin:#capture-list"' in row
    assert "<img" not in row and "&lt;img src=x onerror=alert(1)&gt;" in row
    assert "<b>" not in row and "&lt;b&gt;X&lt;/b&gt;" in row
    await ws.disconnect()


async def test_page_stream_resends_the_list_when_captures_are_deleted(bin_):
    await database_sync_to_async(add_capture)(bin_, "/gone")
    ws, _ = await connect(f"/ws/bins/{bin_.token}/")
    assert "/gone" in await ws.receive_from(timeout=5)
    await database_sync_to_async(lambda: Capture.objects.all().delete())()
    await get_channel_layer().group_send(
        group_name(bin_.token), {"type": "captures.deleted", "ids": None}
    )
    listing = await ws.receive_from(timeout=5)
    assert "/gone" not in listing and 'id="capture-list"' in listing
    await ws.disconnect()


async def test_origin_of_another_site_is_refused(bin_):
    path = f"/ws/bins/{bin_.token}/json/"
    _, connected = await connect(
        path, [(b"host", b"localhost:8000"), (b"origin", b"https://evil.test")]
    )
    assert not connected
    ws, connected = await connect(
        path, [(b"host", b"localhost:8000"), (b"origin", b"http://localhost:8000")]
    )
    assert connected
    await ws.disconnect()


async def test_numbers_a_push_skips_are_read_from_the_database_in_order(bin_):
    """With several processes, one push may carry two groups of one process with another
    process's captures between them: the stream sends every number, in order."""
    stored = [await database_sync_to_async(add_capture)(bin_, f"/{i}") for i in range(1, 4)]
    ws, _ = await connect(f"/ws/bins/{bin_.token}/json/?after=1")
    got = [json.loads(await ws.receive_from(timeout=5))["capture"]["id"] for _ in range(2)]
    assert got == [2, 3]
    later = [await database_sync_to_async(add_capture)(bin_, f"/{i}") for i in range(4, 7)]
    push = [live_item(later[0].as_json()), live_item(later[2].as_json())]  # 4 and 6, not 5
    await get_channel_layer().group_send(
        group_name(bin_.token), {"type": "captures.new", "captures": push}
    )
    frames = [json.loads(await ws.receive_from(timeout=5))["capture"] for _ in range(3)]
    assert [(f["id"], f["path"]) for f in frames] == [(4, "/4"), (5, "/5"), (6, "/6")]
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()
    assert [c.seq for c in stored] == [1, 2, 3]
