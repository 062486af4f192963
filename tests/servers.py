"""Real server processes for tests, started the way `make run` starts them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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


@dataclass
class ClusterProcess:
    """One Daphne process of a running cluster (as scripts/cluster's cluster.json has it)."""

    name: str
    port: int
    pid: int | None
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Cluster:
    """A cluster started with `scripts/cluster`, the command `make cluster` runs.

    `base` is nginx; `processes[i].base` is each Daphne process directly. `kill(i)` SIGKILLs a
    process (it stays down), `start(i)` starts it again through the script (SIGUSR1).
    """

    def __init__(self, run_dir: Path, n: int = 2, **env: str) -> None:
        self.run_dir = run_dir
        self.port = free_port()
        self.app_ports = [free_port() for _ in range(n)]
        self.output_path = run_dir / "cluster-output.log"
        full_env = {
            **{k: v for k, v in os.environ.items() if k not in {"PUBLIC_URL", "SECRET_KEY"}},
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(run_dir),
            **env,
        }
        command = [
            *(sys.executable, str(ROOT / "scripts" / "cluster")),
            *("--port", str(self.port), "--app-ports", ",".join(map(str, self.app_ports))),
        ]
        with open(self.output_path, "wb") as out:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self._wait(lambda state: state["ready"], "the cluster to start", timeout=60)
        except BaseException:
            self.stop()
            raise

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def processes(self) -> list[ClusterProcess]:
        return [
            ClusterProcess(p["name"], p["port"], p["pid"], Path(p["log"]))
            for p in self.state()["processes"]
        ]

    @property
    def access_log_path(self) -> Path:
        return self.run_dir / "cluster" / "logs" / "nginx-access.log"

    def state(self) -> dict:
        try:
            return json.loads((self.run_dir / "cluster" / "cluster.json").read_text())
        except FileNotFoundError:
            return {"ready": False, "processes": []}

    def output(self) -> str:
        """What the script printed (its own messages and every process's log lines)."""
        return self.output_path.read_text(errors="replace")

    def _wait(self, done: Callable[[dict], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"scripts/cluster exited while waiting for {what}:\n" + self.output()
                )
            if done(self.state()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"timed out waiting for {what}:\n" + self.output())

    def kill(self, i: int) -> None:
        """SIGKILL process i and wait until the script has seen it go."""
        pid = self.processes[i].pid
        assert pid is not None, f"process {i} is not running"
        os.kill(pid, signal.SIGKILL)
        self._wait(lambda state: state["processes"][i]["pid"] is None, f"process {i} to exit")

    def start(self, i: int) -> None:
        """Start process i again (the script starts every process that is down) and wait until
        it answers /healthz."""
        if self.processes[i].pid is None:
            os.kill(self.proc.pid, signal.SIGUSR1)
        self._wait(lambda state: state["processes"][i]["pid"] is not None, f"process {i} to start")

    def start_all(self) -> None:
        for i, process in enumerate(self.processes):
            if process.pid is None:
                self.start(i)

    def stop(self) -> None:
        """Stop it the way Ctrl-C does; every process of the cluster must be gone after."""
        pids = [p.pid for p in self.processes if p.pid] + [
            (self.state().get("nginx") or {}).get("pid")
        ]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in pids:
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"pid {pid} outlived scripts/cluster:\n{self.output()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def raw_request(port: int, data: bytes) -> bytes:
    """Send bytes as they are to a server on 127.0.0.1 and read its whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
