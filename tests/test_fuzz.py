"""Fuzzing with hypothesis: the capture path and the API never answer 500, and what they
accept is stored byte-exact or cleanly refused."""

import asyncio
import json
import string
import threading

import pytest
from channels.layers import get_channel_layer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bins import live, writer
from bins.models import Bin, Capture, text_to_wire

from .conftest import asgi_http

pytestmark = pytest.mark.django_db(transaction=True)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^`|~"
methods = st.text(TOKEN_CHARS, min_size=1, max_size=12)
# What Daphne can hand over: ASCII paths and queries (percent-encoding kept), header names
# without "_", header values of any byte but CR, LF and NUL.
path_chars = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%"
sub_paths = st.text(path_chars, max_size=40).map(lambda p: "/" + p if p else "")
queries = st.text(string.ascii_letters + string.digits + "=&%+-._~[]", max_size=60)
header_names = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=20)
header_values = st.binary(max_size=40).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
)
headers = st.lists(st.tuples(header_names.map(str.encode), header_values), max_size=8)
bodies = st.binary(max_size=2048)


@pytest.fixture(scope="module")
def loop():
    """One event loop for all examples, as in a server process (one writer, one publisher)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop

    async def close():
        await writer.stop()
        await live.stop()
        await get_channel_layer().flush()

    asyncio.run_coroutine_threadsafe(close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@FUZZ
@given(method=methods, sub_path=sub_paths, query=queries, headers=headers, body=bodies)
def test_capture_path_stores_anything_byte_exact(
    loop, bin_, method, sub_path, query, headers, body
):
    request = asgi_http(
        f"/{bin_.token}{sub_path}", method=method, query=query.encode(), headers=headers, body=body
    )
    answer = asyncio.run_coroutine_threadsafe(request, loop).result(10)
    assert answer.status == 200
    c = Capture.objects.filter(bin=bin_).latest("id")
    assert (c.method, c.path, c.query_string) == (method, sub_path, query)
    assert [(text_to_wire(n), text_to_wire(v)) for n, v in c.headers] == headers
    assert c.body_bytes == body
    shape = c.as_json()
    json.dumps(shape)  # always serialisable
    assert shape["body_size"] == len(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
patches = st.one_of(
    st.dictionaries(st.sampled_from(["response", "forward_url", "signature", "x"]), json_values),
    st.fixed_dictionaries(
        {
            "response": st.dictionaries(
                st.sampled_from(["status", "headers", "body", "delay_ms", "other"]), json_values
            )
        }
    ),
    json_values,
)


@FUZZ
@given(patch=patches)
def test_api_patch_never_fails_and_never_half_applies(client, bin_, patch):
    before = Bin.objects.get(pk=bin_.pk).response_config
    r = client.patch(f"/api/bins/{bin_.token}", json.dumps(patch), "application/json")
    assert r.status_code in (200, 400), r.content
    if r.status_code == 400:
        assert r.json()["error"]
        assert Bin.objects.get(pk=bin_.pk).response_config == before
    else:
        assert r.json()["response"] == Bin.objects.get(pk=bin_.pk).response_config


@FUZZ
@given(raw=st.binary(max_size=200))
def test_api_create_with_any_body_is_201_or_400(client, transactional_db, raw):
    r = client.generic("POST", "/api/bins", raw, content_type="application/json")
    assert r.status_code in (201, 400), r.content
    assert "error" in r.json() or "token" in r.json()
