from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from django.conf import settings

from bins import forwarding, live, writer
from bins.models import Bin

from .browser import open_browser
from .servers import Cluster, Server, start_server

IN_CI = os.environ.get("CI") == "true"
# What a client on the instance's own machine sends: a host name the instance answers to.
HOST = [(b"host", b"localhost")]


@pytest.fixture(scope="session", autouse=True)
def _services_in_ci():
    """In CI the second run must be on PostgreSQL + Redis, never silently on the defaults."""
    if IN_CI and os.environ.get("DATABASE_URL"):
        assert settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    if IN_CI and os.environ.get("REDIS_URL"):
        assert "Redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"]
    yield


@pytest.fixture(scope="session", autouse=True)
def _no_bin_create_limit():
    """Tests make many bins from one address: the limit is off unless a test is about it."""
    settings.BIN_CREATE_RATE_LIMIT = 0
    yield


@pytest.fixture(autouse=True)
def _close_writer_connection():
    """The writer thread keeps its own connection; close it so the test database can be
    flushed and dropped."""
    yield
    writer.close_connection()


@pytest.fixture
def bin_(transactional_db) -> Bin:
    return Bin.objects.create()


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def asgi_http(
    path: str,
    method: str = "POST",
    query: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes | list[bytes] = b"",
    client: tuple[str, int] | None = ("203.0.113.7", 40000),
) -> Answer:
    """One HTTP request through the project's ASGI application, as Daphne would hand it over."""
    from inspector.asgi import application

    raw_path = path.encode("latin-1")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "client": client,
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(application, scope)
    chunks = body if isinstance(body, list) else [body]
    for i, chunk in enumerate(chunks):
        await communicator.send_input(
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        )
    start = await communicator.receive_output(10)
    parts = []
    while True:
        message = await communicator.receive_output(10)
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await communicator.wait(1)
    return Answer(start["status"], start["headers"], b"".join(parts))


@pytest.fixture
async def live_loop():
    """For async tests: stop this loop's writer and publisher and close the channel layer's
    connections before the loop goes (Redis connections belong to one loop)."""
    yield get_channel_layer()
    await writer.stop()
    await forwarding.stop()
    await live.stop()
    await get_channel_layer().flush()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Close connections after each use in tests, so that the threads Channels and asgiref run
    database calls in hold none when the test database is dropped."""
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


# --- real servers and a real browser (tests/browser.py has the helpers) ---------------------


@pytest.fixture
def servers(transactional_db, tmp_path) -> Iterator[Callable[..., Server]]:
    """Starts server processes on the test database (one data folder, so one SECRET_KEY);
    `start(port=..., **env)` starts one (again on a port it had). All are stopped at the end."""
    started: list[Server] = []

    def start(port: int | None = None, **env: str) -> Server:
        started.append(start_server(tmp_path, port=port, **env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(servers) -> Server:
    return servers()


@pytest.fixture
def page(servers, transactional_db):
    """A fresh Chromium page; gone before the servers and the database (Playwright's sync API
    marks its loop as running in this thread, and Django's ORM refuses to run then)."""
    with open_browser() as page:
        yield page


def nginx_found() -> bool:
    """As scripts/cluster looks for it."""
    if os.environ.get("NGINX"):
        return bool(shutil.which(os.environ["NGINX"]))
    return bool(shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin"))


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    """Settings for the module's cluster processes (e.g. MAX_BODY_BYTES): override this
    fixture in a test module to change them."""
    return {}


@pytest.fixture(scope="module")
def cluster_size() -> int:
    """How many processes the module's cluster runs: override in a test module for more."""
    return 2


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory, cluster_env, cluster_size) -> Iterator[Cluster]:
    """Daphne processes behind nginx on the test database and Redis, started with
    `scripts/cluster` (what `make cluster` runs) and stopped the way Ctrl-C stops it.

    Only where the tests run on PostgreSQL + Redis (scripts/test-all's second pass). nginx
    missing is a skip locally, a failure in CI.
    """
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql") or not os.environ.get(
        "REDIS_URL"
    ):
        pytest.skip("a cluster needs PostgreSQL and Redis: run in scripts/test-all's second pass")
    if not nginx_found() and not IN_CI:
        pytest.skip("nginx is not installed (apt-get install nginx); required in CI")
    running = Cluster(tmp_path_factory.mktemp("cluster"), n=cluster_size, **cluster_env)
    yield running
    running.stop()


@pytest.fixture
def cluster_up(cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster with every process running at the start of the test (and after)."""
    cluster.start_all()
    yield cluster
    cluster.start_all()
