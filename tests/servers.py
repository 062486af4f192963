"""Real server processes for tests, started the way `make run` starts them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The test database (pytest-django's), as a URL a server process can use."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_server(
    data_dir: Path, port: int | None = None, *, pythonpath: Sequence[Path] = (), **env: str
) -> Server:
    """A server process; `env` adds to (or overrides) its environment, and `pythonpath` puts
    directories first on its import path (e.g. tests/guard, whose sitecustomize fences it in)."""
    port = port or free_port()
    log_path = data_dir / f"server-{port}-{time.monotonic_ns()}.log"
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(data_dir),
        # Every test server makes bins from 127.0.0.1, and with Redis they share one count:
        # the limit is off unless a test is about it.
        "BIN_CREATE_RATE_LIMIT": "0",
        **env,
    }
    if pythonpath:
        paths = [str(p) for p in pythonpath] + [full_env.get("PYTHONPATH", "")]
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    daphne = Path(sys.executable).parent / "daphne"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *(str(daphne), "--bind", "127.0.0.1", "--port", str(port)),
                *("--server-name", "", "--verbosity", "0", "inspector.asgi:application"),
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            httpx.get(f"{server.base}/static/bins/app.css", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("server did not start:\n" + server.log())
