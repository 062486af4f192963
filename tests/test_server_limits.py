"""What a slow or hostile client can hold in a real server process (bins/server.py).

Each test starts Daphne as `make run` does, with short limits so that they bite quickly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time

import httpx
import pytest
import websockets

from .servers import Server, start_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def limited(transactional_db, tmp_path):
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = start_server(tmp_path, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        print(server.log()[-5000:])  # shown when the test failed


def read_until_closed(s: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection; (data, closed by the server)."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        pass
    return data, True


def test_a_trickling_client_is_cut_off_at_the_request_deadline(limited):
    # The idle timeout is longer than the pause between bytes: only the deadline can end it.
    server = limited(HTTP_REQUEST_TIMEOUT="2", HTTP_IDLE_TIMEOUT="10")
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(0.5)
        sent = 0
        answer = b""
        for byte in request:  # a byte every 0.5 s: 40 s for the whole request
            try:
                s.send(bytes([byte]))
                sent += 1
                answer = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            break  # the server answered or closed
        rest, closed = read_until_closed(s, 5)
    assert sent < len(request), "the whole request went through"
    assert (answer + rest).startswith(b"HTTP/1.1 408 Request Timeout")
    assert closed


def test_an_idle_keep_alive_connection_is_closed(limited):
    server = limited(HTTP_IDLE_TIMEOUT="1", HTTP_REQUEST_TIMEOUT="10")
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data, closed = read_until_closed(s, 10)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" not in data.lower()  # kept alive by HTTP/1.1, then closed
    assert closed


def test_a_reply_delayed_beyond_the_timeouts_is_still_answered(limited):
    server = limited(HTTP_REQUEST_TIMEOUT="1", HTTP_IDLE_TIMEOUT="1")
    with httpx.Client(base_url=server.base, timeout=30) as http:
        token = http.post("/api/bins").json()["token"]
        patch = {"response": {"status": 202, "body": "late", "delay_ms": 3500}}
        assert http.patch(f"/api/bins/{token}", json=patch).status_code == 200
        started = time.monotonic()
        reply = http.post(f"/{token}/hook", content=b"x" * 100_000)
        assert time.monotonic() - started >= 3.5  # the delay really happened
        assert (reply.status_code, reply.text) == (202, "late")
        # The same keep-alive connection still serves the next request.
        assert http.get(f"/api/bins/{token}/captures").json()["captures"][0]["path"] == "/hook"


def open_never_reading_stream(port: int, token: str) -> socket.socket:
    """A websocket client that completes the handshake and then never reads."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws/bins/{token}/json/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    s.settimeout(5)
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole, unmasked frame in what a server sent."""
    frames = []
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            (length,) = struct.unpack(">H", data[i : i + 2])
            i += 2
        elif length == 127:
            (length,) = struct.unpack(">Q", data[i : i + 8])
            i += 8
        if i + length > len(data):
            break
        frames.append((opcode, data[i : i + length]))
        i += length
    return frames


def test_a_websocket_client_that_does_not_read_is_closed_with_4000(limited):
    # Short HTTP timeouts too: an open websocket is not cut by them.
    server = limited(
        WS_BUFFER_BYTES=str(256 * 1024), HTTP_IDLE_TIMEOUT="1", HTTP_REQUEST_TIMEOUT="1"
    )
    asyncio.run(_slow_and_fast_readers(server))


async def _slow_and_fast_readers(server: Server) -> None:
    count = 40  # 40 frames of ~150 KB: more than the kernel's buffers and the limit together
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        token = (await http.post("/api/bins")).json()["token"]
        slow = open_never_reading_stream(server.port, token)
        url = f"{server.base.replace('http', 'ws', 1)}/ws/bins/{token}/json/"
        async with websockets.connect(url, max_size=2**22) as fast:
            received: list[int] = []

            async def read() -> None:
                async for message in fast:
                    received.append(json.loads(message)["capture"]["id"])

            reader = asyncio.create_task(read())
            body = os.urandom(48 * 1024).hex().encode()[: 64 * 1024]
            for _ in range(count):
                assert (await http.post(f"/{token}", content=body)).status_code == 200
            for _ in range(100):
                if len(received) == count:
                    break
                await asyncio.sleep(0.1)
            listed = (await http.get(f"/api/bins/{token}/captures")).json()["captures"]
            stored = sorted(c["id"] for c in listed)
            assert len(stored) == count
            assert received == stored
            await asyncio.sleep(2.5)  # longer than both HTTP timeouts
            # Still open: it gets the next capture too.
            assert (await http.post(f"/{token}", content=b"one more")).status_code == 200
            for _ in range(100):
                if len(received) == count + 1:
                    break
                await asyncio.sleep(0.1)
            assert len(received) == count + 1
            reader.cancel()
    with slow:
        data, _ = await asyncio.to_thread(read_until_closed, slow, 5)
    frames = server_frames(data)
    closes = [payload for opcode, payload in frames if opcode == 8]
    assert closes, f"no close frame in {len(data)} bytes"
    assert struct.unpack(">H", closes[0][:2])[0] == 4000
    # What it did get is every capture in order up to the close, with no gap, then nothing.
    ids = [json.loads(payload)["capture"]["id"] for opcode, payload in frames if opcode == 1]
    assert ids == stored[: len(ids)]
    assert len(ids) < count
    assert frames[len(ids)][0] == 8
