"""Benchmark the capture path on both backends; `make bench` runs this.

    .venv/bin/python bench/run.py [--quick] [--only sqlite|postgres] [--duration SECONDS]
    .venv/bin/python bench/run.py --processes 1,2,4 [--fanout]     # `make bench-scale`
    .venv/bin/python bench/run.py --fanout [--only sqlite|postgres]

For each mode, the embedded default (SQLite + in-memory channel layer, a fresh temporary
DATA_DIR) and PostgreSQL + Redis (a fresh database created for the run and dropped after; Redis
db 14), it measures:

1. Throughput: the real server started as `make run` starts it (daphne, same flags) pinned to
   CPU 0, wrk pinned to CPU 1 sending 1 KiB JSON POSTs to one bin over 32 connections, while a
   JSON-stream listener (a separate process on CPU 1) counts frames. The bare ASGI app of
   bench/bare_app.py under the same daphne flags is the yardstick: stored/s ÷ bare req/s.
2. Latency: open-loop POST -> websocket frame latency at fixed rates (bench/latency.py).
3. Memory: the server's RSS after a warm-up and after 100k more captures, pruning on.
4. Database bytes per capture.

--processes N1,N2,... measures instead, for each N, N app processes on PostgreSQL + Redis under
N load generators (a bin, a wrk and a JSON-stream listener each; the listener on another
process than its wrk's, so every capture crosses Redis): stored/s in total, its ratio to the
first N, whether every listener got ids 1..n in order, errors. --fanout measures 100 listeners
on one bin at 200 captures/s (bench/fanout.py) on each mode. Those runs pin nothing: N
processes on one CPU would say nothing about scaling; the CPU use of the app, the clients,
PostgreSQL and Redis and of anything else is reported beside the figures.

The machine may be shared: each measurement also records how much of CPU 0 other processes
used meanwhile, and one where that exceeds 10% is taken again (3 tries at most, the quietest
kept). A summary table is printed at the end and written as JSON to
bench/results/<timestamp>.json.
Only 127.0.0.1 is used. Every server, listener and database made here is stopped or dropped at
the end, on error too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BIN = ROOT / ".venv" / "bin"
PYTHON = str(BIN / "python")
DAPHNE = str(BIN / "daphne")
HOST = "127.0.0.1"
SERVER_CPU = 0
ALL_CPUS = os.sched_getaffinity(0)  # what this process may use when it starts
CLIENT_CPU = 1

APP = "inspector.asgi:application"
BARE_APP = "bench.bare_app:application"
NO_PRUNING = "10000000"

RATIO_TARGET = {"sqlite": 0.7, "postgres": 0.6}
LATENCY_P99_TARGET_MS = {200.0: 10.0, 800.0: 25.0}
MEMORY_GROWTH_TARGET_MB = 20.0
# A measurement during which other processes used more than this share of the server's CPU is
# taken again (MAX_TRIES in all, the quietest kept): the machine may be shared.
NOISY = 0.10
MAX_TRIES = 3

# Variables that would change what is measured; the servers get none of them from the caller.
SCRUBBED_ENV = {
    "DATABASE_URL",
    "REDIS_URL",
    "DATA_DIR",
    "CAPTURES_PER_BIN",
    "BIN_RATE_LIMIT",
    "MAX_BODY_BYTES",
    "DEBUG",
    "PUBLIC_URL",
    "SECRET_KEY",
    "CONN_MAX_AGE",
    "LOG_LEVEL",
    "ALLOWED_HOSTS",
    "DJANGO_SETTINGS_MODULE",
    "BENCH_MAX_REQUESTS",
    "BENCH_BARE_NO_FORM_PARSING",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
}


class BenchError(Exception):
    pass


@dataclass
class Config:
    quick: bool
    modes: list[str]
    duration: float
    warmup: float
    connections: int
    rates: list[float]
    latency_seconds: float
    memory_warmup: int
    memory_captures: int
    pg_url: str
    redis_url: str
    pin: bool
    form_parsing_yardstick: bool
    profile: bool
    memory_seconds: float
    retry_budget_s: float
    daphne_flags: list[str]
    processes: list[int]
    fanout_modes: list[str]
    fanout_listeners: int
    fanout_rate: float
    fanout_seconds: float


def parse_args() -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases (under 2 minutes)")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="run one mode only")
    parser.add_argument(
        "--processes",
        help="instead of the modes: N app processes on PostgreSQL + Redis with N load "
        "generators, for each N of this comma-separated list (e.g. 1,2,4)",
    )
    parser.add_argument(
        "--fanout",
        action="store_true",
        help="instead of the modes: many JSON-stream listeners on one bin (bench/fanout.py), "
        "on each mode (--only picks one)",
    )
    parser.add_argument("--fanout-listeners", type=int, default=100)
    parser.add_argument("--fanout-rate", type=float, default=200.0, help="captures per second")
    parser.add_argument("--fanout-seconds", type=float, help="seconds at that rate")
    parser.add_argument("--duration", type=float, help="seconds of each measured wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--rates", help="latency rates per second, comma separated")
    parser.add_argument("--latency-seconds", type=float, help="seconds at each latency rate")
    parser.add_argument("--memory-captures", type=int, help="captures between the RSS readings")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    parser.add_argument(
        "--form-parsing-yardstick",
        action="store_true",
        help="also measure the bare app with Twisted's form parsing off",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the server during the throughput run (speedscope file in results)",
    )
    args = parser.parse_args()
    quick = bool(args.quick)
    for url in (args.pg_url, args.redis_url):
        if urlsplit(url).hostname != HOST:
            parser.error(f"{url}: only {HOST} may be used")
    rates = args.rates or ("200,800" if quick else "100,200,400,800")
    modes = [args.only] if args.only else ["sqlite", "postgres"]
    processes = [int(n) for n in (args.processes or "").split(",") if n.strip()]
    if any(n < 1 for n in processes):
        parser.error("--processes: counts of at least 1")
    # --processes and --fanout are runs of their own: the modes run when neither is asked for.
    own_runs = bool(processes or args.fanout)
    return Config(
        quick=quick,
        modes=[] if own_runs else modes,
        duration=args.duration or (4.0 if quick else 10.0),
        warmup=1.0 if quick else 2.0,
        connections=args.connections,
        rates=[float(r) for r in rates.split(",") if r.strip()],
        latency_seconds=args.latency_seconds or (3.0 if quick else 5.0),
        memory_warmup=4_000 if quick else 10_000,
        memory_captures=args.memory_captures or (10_000 if quick else 100_000),
        pg_url=args.pg_url.rstrip("/"),
        redis_url=args.redis_url,
        pin=not args.no_pin,
        form_parsing_yardstick=bool(args.form_parsing_yardstick),
        profile=bool(args.profile),
        memory_seconds=40.0 if quick else 150.0,
        retry_budget_s=10.0 if quick else 60.0,
        daphne_flags=make_run_flags(),
        processes=processes,
        fanout_modes=modes if args.fanout else [],
        fanout_listeners=args.fanout_listeners,
        fanout_rate=args.fanout_rate,
        fanout_seconds=args.fanout_seconds or (5.0 if quick else 10.0),
    )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# Processes ------------------------------------------------------------------------------------


def pinned(cpu: int, config: Config) -> list[str]:
    if config.pin:
        return ["taskset", "-c", str(cpu)]
    return []


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def make_run_flags() -> list[str]:
    """The daphne options of `make run`, read from the Makefile so the bench serves the app
    exactly as it is served (--bind and --port aside, which the bench chooses)."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if "/daphne " not in line or APP not in line:
            continue
        words = shlex.split(line.replace("$(HOST)", HOST).replace("$(PORT)", "0"))
        start = next(i for i, w in enumerate(words) if w.endswith("/daphne"))
        flags: list[str] = []
        rest = iter(words[start + 1 : words.index(APP)])
        for word in rest:
            if word in ("--bind", "-b", "--port", "-p"):
                next(rest, None)
            else:
                flags.append(word)
        return flags
    log("no daphne line for `make run` in the Makefile: using --server-name ''")
    return ["--server-name", ""]


def start_daphne(
    name: str, app: str, env: dict[str, str], workdir: Path, config: Config, ready_path: str
) -> Server:
    """Start daphne the way `make run` does, pinned to the server CPU; wait until it answers."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    command = [
        *pinned(SERVER_CPU, config),
        DAPHNE,
        "--bind",
        HOST,
        "--port",
        str(port),
        *config.daphne_flags,
        app,
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, proc, port, log_path)
    deadline = time.monotonic() + 40
    with httpx.Client(trust_env=False, timeout=2) as client:
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                if client.get(server.base + ready_path).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise BenchError(f"{name} did not answer in 40 s:\n{server.log_tail()}")
            time.sleep(0.2)


def migrate(env: dict[str, str]) -> None:
    done = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise BenchError(f"migrate failed:\n{done.stdout}\n{done.stderr}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds(cpu: int) -> float:
    """Non-idle time of one CPU since boot (user, nice, system, irq, softirq, steal)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(x) for x in line.split()[1:]]
            return sum(ticks[i] for i in (0, 1, 2, 5, 6, 7)) / os.sysconf("SC_CLK_TCK")
    return 0.0


class CpuWindow:
    """The server's CPU time over a window, what else ran on the server's CPU meanwhile, and how
    busy the client CPU was."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.server = cpu_seconds(pid)
        self.cpu = cpu_busy_seconds(SERVER_CPU)
        self.client_cpu = cpu_busy_seconds(CLIENT_CPU)
        self.wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        server = cpu_seconds(self.pid) - self.server
        other = max(0.0, cpu_busy_seconds(SERVER_CPU) - self.cpu - server)
        client = cpu_busy_seconds(CLIENT_CPU) - self.client_cpu
        wall = time.monotonic() - self.wall
        return {
            "server_cpu_s": server,
            "server_cpu_busy": server / wall if wall else 0.0,
            "other_load_on_server_cpu": other / wall if wall else 0.0,
            # Load generator, listener and anything else there (PostgreSQL, Redis are unpinned):
            # near 100%, the client side, not the server, limits the figure.
            "client_cpu_busy": client / wall if wall else 0.0,
        }


def machine_busy_seconds() -> float:
    """Non-idle time of all CPUs since boot (user, nice, system, irq, softirq, steal)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(ticks[i] for i in (0, 1, 2, 5, 6, 7)) / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    """CPU time of the children this process has waited for (wrk, fanout.py and its workers)."""
    times = os.times()
    return times.children_user + times.children_system


def redis_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "redis-server":
                    pids.append(int(entry.name))
    return pids


class MachineWindow:
    """CPU use over a window of a run that pins nothing: the whole machine's, the app servers',
    what this bench started besides them (load generators, listeners: children reaped by the
    end of the window, or `client_pids`), PostgreSQL's (the backends of the bench database and
    the server's own background processes) and Redis's; "other" is the rest: load that is not
    this run's (e.g. another user's tests). All in CPUs, i.e. CPU seconds per second."""

    def __init__(
        self, servers: list[Server], client_pids: list[int], store: Store | None, redis: bool
    ) -> None:
        self.servers = [s.pid for s in servers]
        self.client_pids = client_pids
        self.store = store
        self.redis = redis
        self.start = self._read()

    def _services(self) -> list[int]:
        pids = redis_pids() if self.redis else []
        if self.store is not None and self.store.kind == "postgres":
            rows = self.store.query(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() OR backend_type <> 'client backend'"
            )
            pids += [int(r[0]) for r in rows]
        return pids

    def _read(self) -> dict[str, Any]:
        def cpu_of(pids: list[int]) -> dict[int, float]:
            found = {}
            for pid in pids:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    found[pid] = cpu_seconds(pid)
            return found

        return {
            "wall": time.monotonic(),
            "busy": machine_busy_seconds(),
            "children": children_seconds(),
            "servers": cpu_of(self.servers),
            "clients": cpu_of(self.client_pids),
            "services": cpu_of(self._services()),
        }

    def stop(self) -> dict[str, float]:
        end = self._read()
        wall = end["wall"] - self.start["wall"]

        def used(name: str) -> float:
            # Processes alive at both ends; one that came and went meanwhile is missed (small).
            return sum(
                t - self.start[name][pid] for pid, t in end[name].items() if pid in self.start[name]
            )

        servers = used("servers")
        clients = used("clients") + end["children"] - self.start["children"]
        services = used("services")
        busy = end["busy"] - self.start["busy"]
        other = max(0.0, busy - servers - clients - services)
        cpus = os.cpu_count() or 1
        return {
            "wall_s": wall,
            "machine_cpus": cpus,
            "machine_busy_cpus": busy / wall,
            "servers_cpus": servers / wall,
            "clients_cpus": clients / wall,
            "db_redis_cpus": services / wall,
            "other_cpus": other / wall,
            # What `quietest` judges: the share of the machine that other load took.
            "other_load_share": other / wall / cpus,
        }


def rss_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            values[name] = int(rest.split()[0])
    return values


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    responses: int
    status_2xx: int
    non2xx: int
    socket_errors: int
    latency_p50_ms: float
    latency_p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def run_wrk(
    url: str,
    seconds: float,
    config: Config,
    max_requests: int | None = None,
    until: Callable[[], bool] | None = None,
) -> WrkResult:
    """Run wrk for `seconds`, or with `max_requests`/`until` stop it as soon as that is reached.

    wrk's own main thread sleeps the whole -d duration even when its Lua script stops the load
    thread, so an early end is a SIGINT (wrk then prints its summary as usual).
    """
    env = base_env()
    if max_requests is not None:
        env["BENCH_MAX_REQUESTS"] = str(max_requests)
    seconds_arg = max(1, round(seconds))
    command = [
        *pinned(CLIENT_CPU, config),
        "wrk",
        "-t1",
        f"-c{config.connections}",
        f"-d{seconds_arg}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "post.lua"),
        url,
    ]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        if until is not None:
            deadline = time.monotonic() + seconds_arg + 5
            while proc.poll() is None and time.monotonic() < deadline:
                if until():
                    proc.send_signal(signal.SIGINT)
                    break
                time.sleep(0.25)
        stdout, stderr = proc.communicate(timeout=seconds_arg + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line.removeprefix("BENCH_RESULT "))
            return WrkResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                responses=data["responses"],
                status_2xx=data["status_2xx"],
                non2xx=data["non2xx"],
                socket_errors=data["connect_errors"]
                + data["read_errors"]
                + data["write_errors"]
                + data["timeouts"],
                latency_p50_ms=data["latency_p50_us"] / 1000,
                latency_p99_ms=data["latency_p99_us"] / 1000,
            )
    raise BenchError(f"wrk printed no result (exit {proc.returncode}):\n{stdout}{stderr}")


class Listener:
    """bench/ws_listener.py in its own process on the client CPU, driven over stdin/stdout."""

    def __init__(self, url: str, config: Config) -> None:
        command = [*pinned(CLIENT_CPU, config), PYTHON, str(BENCH / "ws_listener.py"), url]
        self.proc = subprocess.Popen(
            command,
            env=base_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._next(15)
        if ready.get("event") != "ready":
            raise BenchError(f"listener not ready: {ready}")
        self.extensions: list[str] = ready.get("extensions", [])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty as exc:
            raise BenchError("listener did not answer") from exc
        if line is None:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise BenchError(f"listener exited: {err[-2000:]}")
        return dict(json.loads(line))

    def _command(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._next(10)

    def count(self) -> dict[str, Any]:
        return self._command("count")

    def close(self) -> dict[str, Any] | None:
        result = None
        if self.proc.poll() is None:
            with contextlib.suppress(BenchError, OSError, ValueError):
                result = self._command("quit")
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return result


# Databases ------------------------------------------------------------------------------------


@dataclass
class Store:
    """One fresh database (and data folder) for one server instance."""

    kind: str
    data_dir: Path
    pg_url: str | None = None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "inspector.sqlite3"

    def env(self, config: Config, **extra: str) -> dict[str, str]:
        env = base_env()
        env["DATA_DIR"] = str(self.data_dir)
        if self.kind == "postgres":
            assert self.pg_url is not None
            env["DATABASE_URL"] = self.pg_url
            env["REDIS_URL"] = config.redis_url
        env.update(extra)
        return env

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            uri = f"file:{self.sqlite_path}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
                return db.execute(sql.replace("%s", "?"), params).fetchall()
        import psycopg

        assert self.pg_url is not None
        with psycopg.connect(self.pg_url, connect_timeout=5) as db:
            return db.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def bin_id(self, token: str) -> int:
        value = uuid.UUID(token).hex if self.kind == "sqlite" else token
        rows = self.query("SELECT id FROM bins_bin WHERE token = %s", (value,))
        if not rows:
            raise BenchError(f"bin {token} not in the database")
        return int(rows[0][0])

    def captures(self, bin_id: int) -> tuple[int, int]:
        """(rows, highest number) of a bin's captures: the number (`seq`) is the public id the
        streams send, 1, 2, 3... per bin, never reused, so it also counts the bin's captures
        stored so far, pruned ones included."""
        rows = self.query(
            "SELECT count(*), coalesce(max(seq), 0) FROM bins_capture WHERE bin_id = %s",
            (bin_id,),
        )
        return int(rows[0][0]), int(rows[0][1])

    def size(self) -> dict[str, Any]:
        rows = self.query("SELECT count(*) FROM bins_capture")
        count = int(rows[0][0])
        if self.kind == "sqlite":
            files = {
                suffix or "db": self.sqlite_path.with_name(self.sqlite_path.name + suffix)
                for suffix in ("", "-wal")
            }
            file_bytes = sum(p.stat().st_size for p in files.values() if p.exists())
            names = [
                r[0]
                for r in self.query(
                    "SELECT name FROM sqlite_master WHERE tbl_name = %s", ("bins_capture",)
                )
            ]
            marks = ",".join("?" for _ in names)
            table_bytes = int(
                self.query(
                    f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({marks})",
                    tuple(names),
                )[0][0]
            )
            page_size = int(self.query("PRAGMA page_size")[0][0])
            page_count = int(self.query("PRAGMA page_count")[0][0])
            freelist = int(self.query("PRAGMA freelist_count")[0][0])
            return {
                "captures": count,
                "files_db_wal_bytes": file_bytes,
                "capture_table_and_indexes_bytes": table_bytes,
                "used_pages_bytes": (page_count - freelist) * page_size,
                "free_pages_bytes": freelist * page_size,
                "bytes_per_capture_files": file_bytes / count if count else None,
                "bytes_per_capture_table": table_bytes / count if count else None,
            }
        row = self.query(
            "SELECT pg_total_relation_size('bins_capture'), pg_relation_size('bins_capture'), "
            "pg_indexes_size('bins_capture'), pg_database_size(current_database())"
        )[0]
        total = int(row[0])
        return {
            "captures": count,
            "total_relation_bytes": total,
            "heap_bytes": int(row[1]),
            "index_bytes": int(row[2]),
            "database_bytes": int(row[3]),
            "bytes_per_capture_table": total / count if count else None,
        }


def pg_admin(config: Config, statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{config.pg_url}/postgres", autocommit=True, connect_timeout=5) as db:
        db.execute(statement)  # type: ignore[arg-type]


def reachable(url: str) -> bool:
    parsed = httpx.URL(url)
    try:
        socket.create_connection((parsed.host, parsed.port or 0), timeout=2).close()
        return True
    except OSError:
        return False


def make_store(
    kind: str, label: str, workdir: Path, config: Config, stack: contextlib.ExitStack
) -> Store:
    data_dir = workdir / label
    data_dir.mkdir()
    if kind == "sqlite":
        return Store("sqlite", data_dir)
    name = f"bench_{datetime.now():%Y%m%d_%H%M%S}_{os.getpid()}_{label}"
    pg_admin(config, f'CREATE DATABASE "{name}"')
    stack.callback(pg_admin, config, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return Store("postgres", data_dir, f"{config.pg_url}/{name}")


# Phases ---------------------------------------------------------------------------------------


def create_bin(server: Server) -> str:
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.post(server.base + "/api/bins", json={})
        response.raise_for_status()
        return str(response.json()["token"])


@dataclass
class Settled:
    rows: int
    max_id: int
    listener: dict[str, Any]
    settled: bool


def settle(store: Store, bin_id: int, listener: Listener, timeout: float = 30.0) -> Settled:
    """Wait until the bin stops changing and the listener has seen its newest capture."""
    deadline = time.monotonic() + timeout
    previous: tuple[int, int] | None = None
    while True:
        rows, max_id = store.captures(bin_id)
        frames = listener.count()
        seen = frames.get("max_id") or 0
        if (rows, max_id) == previous and seen >= max_id:
            return Settled(rows, max_id, frames, True)
        if time.monotonic() > deadline:
            return Settled(rows, max_id, frames, False)
        previous = (rows, max_id)
        time.sleep(0.3)


def in_order(count: dict[str, Any], rows: int) -> bool:
    """A listener that connected to a new, unpruned bin got captures 1..rows, each once, in
    order (its count from bench/ws_listener.py)."""
    return (
        count["frames"] == count["distinct"] == rows
        and (count["max_id"] or 0) == rows
        and count["gaps"] == 0
        and count["out_of_order"] == 0
    )


# Seconds that repeated measurements may still take in this run (set from the config in main).
_retry_budget_left = 0.0


def quietest(
    name: str,
    measure: Callable[[], dict[str, Any]],
    key: str = "other_load_on_server_cpu",
    where: str = f"CPU {SERVER_CPU}",
) -> dict[str, Any]:
    """Run a measurement; while other processes took over NOISY of the server's CPU (`key`: of
    the whole machine for the unpinned runs) during it, run it again (at most MAX_TRIES in all)
    and keep the quietest run."""
    global _retry_budget_left
    best: dict[str, Any] | None = None
    for attempt in range(1, MAX_TRIES + 1):
        started = time.monotonic()
        result = measure()
        if attempt > 1:
            _retry_budget_left -= time.monotonic() - started
        result["attempt"] = attempt
        other = result.get(key, 0.0)
        if best is None or other < best.get(key, 0.0):
            best = result
        if other <= NOISY:
            break
        if attempt == MAX_TRIES or _retry_budget_left <= 0:
            log(f"{name}: other processes used {other:.0%} of {where}: kept as noisy")
            break
        log(f"{name}: other processes used {other:.0%} of {where}: measuring again")
    assert best is not None
    return best


def measure_bare(config: Config, workdir: Path, no_form_parsing: bool = False) -> dict[str, Any]:
    env = base_env()
    if no_form_parsing:
        env["BENCH_BARE_NO_FORM_PARSING"] = "1"
    name = "bare-noform" if no_form_parsing else "bare"
    server = start_daphne(name, BARE_APP, env, workdir, config, "/healthz")
    url = f"{server.base}/{uuid.uuid4()}"

    def measure() -> dict[str, Any]:
        window = CpuWindow(server.pid)
        result = run_wrk(url, config.duration, config)
        cpu = window.stop()
        return {
            "requests_per_s": result.rps,
            "cpu_us_per_request": cpu["server_cpu_s"] / result.requests * 1e6
            if result.requests
            else None,
            **cpu,
            **asdict(result),
        }

    try:
        run_wrk(url, config.warmup, config)
        return quietest(name, measure)
    finally:
        server.stop()


def measure_throughput(
    mode: str, config: Config, workdir: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    store = make_store(mode, "throughput", workdir, config, stack)
    env = store.env(config, CAPTURES_PER_BIN=NO_PRUNING)
    migrate(env)
    server = start_daphne(f"{mode}-throughput", APP, env, workdir, config, "/healthz")
    stack.callback(server.stop)
    token = create_bin(server)
    bin_id = store.bin_id(token)
    listener = Listener(f"ws://{HOST}:{server.port}/ws/bins/{token}/json/", config)
    stack.callback(listener.close)
    url = f"{server.base}/{token}"

    def measure() -> dict[str, Any]:
        before = settle(store, bin_id, listener)
        rss_before = rss_kib(server.pid)
        profiler = start_profiler(server, mode, config) if config.profile else None
        window = CpuWindow(server.pid)
        result = run_wrk(url, config.duration, config)
        cpu = window.stop()
        profile_path = stop_profiler(profiler)
        after = settle(store, bin_id, listener)
        rss_after = rss_kib(server.pid)
        stored = after.rows - before.rows
        frames = after.listener["frames"] - before.listener["frames"]
        return {
            "stored": stored,
            "answered_2xx": result.status_2xx,
            "stored_minus_answered": stored - result.status_2xx,
            # wrk stops with up to one request per connection in flight: stored, not counted.
            "stored_matches_answered": 0 <= stored - result.status_2xx <= config.connections,
            "frames": frames,
            "frames_total": after.listener["frames"],
            "frames_distinct_total": after.listener["distinct"],
            "rows_total": after.rows,
            # The bin is new and never pruned here, so the listener must have seen 1..rows,
            # each once, in order.
            "frames_match_stored": frames == stored and in_order(after.listener, after.rows),
            "settled": before.settled and after.settled,
            "stored_per_s": stored / result.duration_s,
            "cpu_us_per_capture": cpu["server_cpu_s"] / stored * 1e6 if stored else None,
            **cpu,
            "rss_kib_before": rss_before.get("VmRSS"),
            "rss_kib_after": rss_after.get("VmRSS"),
            "profile": str(profile_path) if profile_path else None,
            "wrk": asdict(result),
        }

    run_wrk(url, config.warmup, config)
    measured = quietest(f"{mode} throughput", measure)
    measured["db"] = store.size()
    measured["ws_extensions"] = listener.extensions
    listener.close()
    server.stop()
    return measured


def start_profiler(
    server: Server, mode: str, config: Config
) -> tuple[subprocess.Popen[bytes], Path] | None:
    py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(py_spy).exists():
        log("py-spy not installed: no profile (.venv/bin/pip install py-spy)")
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{datetime.now():%Y%m%d-%H%M%S}-{mode}-profile.speedscope.json"
    command = [
        *pinned(CLIENT_CPU, config),
        py_spy,
        "record",
        "--nonblocking",
        "--format",
        "speedscope",
        "--duration",
        str(round(config.duration)),
        "--output",
        str(path),
        "--pid",
        str(server.pid),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, path


def stop_profiler(profiler: tuple[subprocess.Popen[bytes], Path] | None) -> Path | None:
    if profiler is None:
        return None
    proc, path = profiler
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=10)
    return path if path.exists() else None


def measure_latency_and_memory(
    mode: str, config: Config, workdir: Path, stack: contextlib.ExitStack
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """On a default-configured server (pruning at 500): the latency run, then the memory run."""
    store = make_store(mode, "default", workdir, config, stack)
    env = store.env(config)
    migrate(env)
    server = start_daphne(f"{mode}-default", APP, env, workdir, config, "/healthz")
    stack.callback(server.stop)
    latency = measure_latency(server, config)
    memory = measure_memory(server, store, config, stack)
    server.stop()
    return latency, memory


def measure_latency(server: Server, config: Config) -> list[dict[str, Any]]:
    """One latency client run per rate (fresh bin each), with the server's CPU use at that rate."""
    rates: list[dict[str, Any]] = []
    for rate in config.rates:
        rates.append(quietest(f"latency {rate:g}/s", partial(latency_at, server, config, rate)))
        time.sleep(0.5)
    return rates


def latency_at(server: Server, config: Config, rate: float) -> dict[str, Any]:
    token = create_bin(server)
    command = [
        *pinned(CLIENT_CPU, config),
        PYTHON,
        str(BENCH / "latency.py"),
        "--port",
        str(server.port),
        "--token",
        token,
        "--rates",
        f"{rate:g}",
        "--seconds",
        str(config.latency_seconds),
        "--pause",
        "0.5",
    ]
    window = CpuWindow(server.pid)
    done = subprocess.run(
        command,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=config.latency_seconds + 60,
    )
    cpu = window.stop()
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    found = [r for r in lines if r.get("event") == "rate"]
    if done.returncode != 0 or not found:
        raise BenchError(f"latency client failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = found[0]
    target = LATENCY_P99_TARGET_MS.get(rate)
    result["p99_target_ms"] = target
    result["ok"] = (
        None
        if target is None
        else result["ws_p99_ms"] is not None
        and result["ws_p99_ms"] < target
        and result["delivered"] == result["sent"]
    )
    result.update(cpu)
    return result


def measure_memory(
    server: Server, store: Store, config: Config, stack: contextlib.ExitStack
) -> dict[str, Any]:
    token = create_bin(server)
    bin_id = store.bin_id(token)
    listener = Listener(f"ws://{HOST}:{server.port}/ws/bins/{token}/json/", config)
    stack.callback(listener.close)
    url = f"{server.base}/{token}"

    # (seconds, captures since the phase began, RSS KiB, frames behind), about once a second.
    samples: list[tuple[float, int, int, int]] = []
    began = time.monotonic()

    def reached(count: int) -> Callable[[], bool]:
        def check() -> bool:
            done = store.captures(bin_id)[1]  # a new bin: its captures are numbered from 1
            now = time.monotonic() - began
            if not samples or now - samples[-1][0] >= 1.0:
                behind = done - (listener.count().get("max_id") or 0)
                samples.append((round(now, 1), done, rss_kib(server.pid)["VmRSS"], behind))
            return done >= count

        return check

    # A wrk warm-up even after the latency phase: full concurrency makes the big batches.
    warmup = config.memory_warmup
    total = warmup + config.memory_captures
    # Bounded in time: the figure says how many captures the second reading came after.
    warm = run_wrk(url, config.memory_seconds / 4, config, warmup, reached(warmup))
    first = settle(store, bin_id, listener)
    rss_first = rss_kib(server.pid)
    load = run_wrk(url, config.memory_seconds, config, config.memory_captures, reached(total))
    second = settle(store, bin_id, listener)
    rss_second = rss_kib(server.pid)
    listener.close()
    size = store.size()
    growth_mb = (rss_second["VmRSS"] - rss_first["VmRSS"]) / 1024
    frames = second.listener["frames"] - first.listener["frames"]
    stored = second.max_id - first.max_id
    return {
        "captures_at_first_reading": first.max_id,
        "captures_at_second_reading": second.max_id,
        "captures_between": second.max_id - first.max_id,
        "captures_target": config.memory_captures,
        "reached_target": second.max_id - first.max_id >= config.memory_captures,
        "rows_kept": second.rows,
        "rss_mb_first": rss_first["VmRSS"] / 1024,
        "rss_mb_second": rss_second["VmRSS"] / 1024,
        "rss_kib_first": rss_first,
        "rss_kib_second": rss_second,
        "samples_s_captures_rsskib_framesbehind": samples,
        "max_frames_behind": max((x[3] for x in samples), default=0),
        "hwm_mb": rss_second["VmHWM"] / 1024,
        "growth_mb": growth_mb,
        "growth_target_mb": MEMORY_GROWTH_TARGET_MB,
        # Judged on the growth; `reached_target` says whether the time bound cut the load short.
        "ok": growth_mb < MEMORY_GROWTH_TARGET_MB,
        "stored_between": stored,
        "frames_between": frames,
        "frames_match_stored": frames == stored,
        "non2xx": warm.non2xx + load.non2xx,
        "socket_errors": warm.socket_errors + load.socket_errors,
        "rps": load.rps,
        "settled": first.settled and second.settled,
        "db_after_pruning": size,
        "pg_autovacuum": store.query("SHOW autovacuum")[0][0] if store.kind == "postgres" else None,
    }


# Several processes, fan-out (nothing pinned) --------------------------------------------------


def start_processes(
    label: str,
    count: int,
    env: dict[str, str],
    workdir: Path,
    config: Config,
    stack: contextlib.ExitStack,
) -> list[Server]:
    """`count` app processes as `make run` starts one, all with the same environment
    (DATABASE_URL, REDIS_URL, SECRET_KEY, DATA_DIR), none pinned."""
    unpinned = replace(config, pin=False)
    servers = []
    for i in range(1, count + 1):
        server = start_daphne(f"{label}-{i}", APP, env, workdir, unpinned, "/healthz")
        stack.callback(server.stop)
        servers.append(server)
    return servers


def logged_errors(servers: list[Server]) -> int:
    """Tracebacks and ERROR lines the servers logged (stderr, Django's logging)."""
    count = 0
    for server in servers:
        with contextlib.suppress(OSError):
            for line in server.log_path.read_text(errors="replace").splitlines():
                count += "Traceback" in line or " ERROR " in line or line.startswith("ERROR")
    return count


def measure_processes(
    count: int, config: Config, workdir: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    """`count` app processes on PostgreSQL + Redis, and `count` load generators: one bin each,
    wrk posting to process i, the bin's JSON-stream listener connected to process i+1 (so every
    capture reaches its listener through Redis; with one process, through Redis to itself)."""
    unpinned = replace(config, pin=False)
    store = make_store("postgres", f"processes{count}", workdir, config, stack)
    env = store.env(config, CAPTURES_PER_BIN=NO_PRUNING, SECRET_KEY=secrets.token_urlsafe(40))
    migrate(env)
    servers = start_processes(f"postgres-p{count}", count, env, workdir, config, stack)
    tokens = [create_bin(server) for server in servers]
    bin_ids = [store.bin_id(token) for token in tokens]
    listeners = []
    for i, token in enumerate(tokens):
        other = servers[(i + 1) % count]
        listener = Listener(f"ws://{HOST}:{other.port}/ws/bins/{token}/json/", unpinned)
        stack.callback(listener.close)
        listeners.append(listener)
    urls = [f"{server.base}/{token}" for server, token in zip(servers, tokens, strict=True)]

    def load(seconds: float) -> list[WrkResult]:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(lambda url: run_wrk(url, seconds, unpinned), urls))

    def measure() -> dict[str, Any]:
        before = [settle(store, b, x) for b, x in zip(bin_ids, listeners, strict=True)]
        window = MachineWindow(servers, [x.proc.pid for x in listeners], store, redis=True)
        results = load(config.duration)
        cpu = window.stop()
        after = [settle(store, b, x) for b, x in zip(bin_ids, listeners, strict=True)]
        generators = []
        for wrk, b, a in zip(results, before, after, strict=True):
            stored = a.rows - b.rows
            frames = a.listener["frames"] - b.listener["frames"]
            generators.append(
                {
                    "stored": stored,
                    "answered_2xx": wrk.status_2xx,
                    # wrk stops with up to one request per connection in flight: stored.
                    "stored_matches_answered": 0 <= stored - wrk.status_2xx <= config.connections,
                    "frames": frames,
                    "frames_match_stored": frames == stored and in_order(a.listener, a.rows),
                    "listener": a.listener,
                    "settled": b.settled and a.settled,
                    "stored_per_s": stored / wrk.duration_s if wrk.duration_s else 0.0,
                    "wrk": asdict(wrk),
                }
            )
        stored = sum(g["stored"] for g in generators)
        return {
            "processes": count,
            "stored": stored,
            "stored_per_s": sum(g["stored_per_s"] for g in generators),
            "stored_matches_answered": all(g["stored_matches_answered"] for g in generators),
            "frames_match_stored": all(g["frames_match_stored"] for g in generators),
            "frames": sum(g["frames"] for g in generators),
            "closes_4000": sum(g["listener"]["closes_4000"] for g in generators),
            "non2xx": sum(g["wrk"]["non2xx"] for g in generators),
            "socket_errors": sum(g["wrk"]["socket_errors"] for g in generators),
            "streams_ended": [
                g["listener"]["closed"] for g in generators if g["listener"]["closed"]
            ],
            "settled": all(g["settled"] for g in generators),
            **cpu,
            "generators": generators,
        }

    load(config.warmup)
    measured = quietest(f"{count} processes", measure, key="other_load_share", where="the machine")
    measured["server_errors_logged"] = logged_errors(servers)
    measured["errors"] = (
        measured["non2xx"]
        + measured["socket_errors"]
        + len(measured["streams_ended"])
        + measured["server_errors_logged"]
    )
    return measured


def run_processes(config: Config, workdir: Path) -> list[dict[str, Any]]:
    """The --processes series; each count on a fresh database, the ratio to the first count."""
    series: list[dict[str, Any]] = []
    for url in (config.pg_url, config.redis_url):
        if not reachable(url):
            return [{"processes": None, "failed": f"{url} is not reachable"}]
    for count in config.processes:
        log(f"{count} processes on PostgreSQL + Redis, {count} load generators")
        try:
            with contextlib.ExitStack() as stack:
                run_dir = workdir / f"processes{count}"
                run_dir.mkdir()
                result = measure_processes(count, config, run_dir, stack)
        except Exception as exc:  # recorded; the next count still runs
            log(f"{count} processes failed: {type(exc).__name__}: {exc}")
            series.append({"processes": count, "failed": f"{type(exc).__name__}: {exc}"})
            continue
        log(f"{count} processes: {result['stored_per_s']:,.0f} stored/s")
        series.append(result)
    ok = [r for r in series if "stored_per_s" in r]
    for r in ok:
        r["ratio_to_first"] = (
            r["stored_per_s"] / ok[0]["stored_per_s"] if ok[0]["stored_per_s"] else None
        )
        r["ratio_base_processes"] = ok[0]["processes"]
    return series


def measure_fanout(
    mode: str, config: Config, workdir: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    """bench/fanout.py against a default-configured instance: one process on SQLite with the
    in-memory layer, two on PostgreSQL + Redis (POSTs to the first, listeners on both)."""
    count = 1 if mode == "sqlite" else 2
    store = make_store(mode, "fanout", workdir, config, stack)
    env = store.env(config, SECRET_KEY=secrets.token_urlsafe(40))
    migrate(env)
    servers = start_processes(f"{mode}-fanout", count, env, workdir, config, stack)

    def measure() -> dict[str, Any]:
        token = create_bin(servers[0])  # a new bin per try: the listeners check ids 1..n
        command = [
            PYTHON,
            str(BENCH / "fanout.py"),
            "--ports",
            ",".join(str(s.port) for s in servers),
            "--token",
            token,
            "--listeners",
            str(config.fanout_listeners),
            "--rate",
            f"{config.fanout_rate:g}",
            "--seconds",
            str(config.fanout_seconds),
        ]
        # The CPU accounting covers the timed part only, which fanout.py announces.
        window: MachineWindow | None = None
        cpu: dict[str, float] = {}
        found: dict[str, Any] = {}
        stderr_path = workdir / "fanout.stderr"
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(
                command, env=base_env(), stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        watchdog = threading.Timer(config.fanout_seconds + 180, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                data = json.loads(line)
                if data["event"] == "measuring":
                    window = MachineWindow(servers, data["pids"], store, mode == "postgres")
                elif data["event"] == "measured" and window is not None:
                    cpu = window.stop()
                elif data["event"] == "fanout":
                    found = data
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0 or not found:
            error = stderr_path.read_text(errors="replace")[-3000:]
            raise BenchError(f"fanout.py failed ({proc.returncode}):\n{error}")
        return {**found, **cpu}

    result = quietest(f"{mode} fan-out", measure, key="other_load_share", where="the machine")
    result["mode"] = mode
    result["server_errors_logged"] = logged_errors(servers)
    return result


def run_fanout(config: Config, workdir: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for mode in config.fanout_modes:
        if mode == "postgres" and not all(map(reachable, (config.pg_url, config.redis_url))):
            results.append({"mode": mode, "failed": "PostgreSQL or Redis is not reachable"})
            continue
        log(
            f"{mode}: fan-out, {config.fanout_listeners} listeners at "
            f"{config.fanout_rate:g} captures/s for {config.fanout_seconds:g} s"
        )
        try:
            with contextlib.ExitStack() as stack:
                run_dir = workdir / f"fanout-{mode}"
                run_dir.mkdir()
                result = measure_fanout(mode, config, run_dir, stack)
        except Exception as exc:
            log(f"{mode} fan-out failed: {type(exc).__name__}: {exc}")
            results.append({"mode": mode, "failed": f"{type(exc).__name__}: {exc}"})
            continue
        log(f"{mode}: fan-out p99 {result['p99_ms'] or 0:.1f} ms")
        results.append(result)
    return results


def run_mode(mode: str, config: Config, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"mode": mode, "errors": []}
    if mode == "postgres":
        for url in (config.pg_url, config.redis_url):
            if not reachable(url):
                result["errors"].append(f"{url} is not reachable")
                return result

    def bare(stack: contextlib.ExitStack) -> None:
        log(f"{mode}: bare app yardstick")
        result["bare"] = measure_bare(config, workdir)
        log(f"{mode}: bare {result['bare']['requests_per_s']:,.0f} req/s")
        if config.form_parsing_yardstick:
            result["bare_no_form_parsing"] = measure_bare(config, workdir, no_form_parsing=True)
            rps = result["bare_no_form_parsing"]["requests_per_s"]
            log(f"{mode}: bare, form parsing off {rps:,.0f} req/s")

    def throughput(stack: contextlib.ExitStack) -> None:
        log(f"{mode}: throughput")
        result["throughput"] = tp = measure_throughput(mode, config, workdir, stack)
        log(f"{mode}: {tp['stored_per_s']:,.0f} stored/s")

    def bare_again(stack: contextlib.ExitStack) -> None:
        # The yardstick again, after the app: the machine's speed drifts (other load, turbo).
        result["bare_after"] = measure_bare(config, workdir)
        log(f"{mode}: bare again {result['bare_after']['requests_per_s']:,.0f} req/s")

    def latency_memory(stack: contextlib.ExitStack) -> None:
        log(f"{mode}: latency at {', '.join(f'{r:g}/s' for r in config.rates)}, then memory")
        result["latency"], result["memory"] = measure_latency_and_memory(
            mode, config, workdir, stack
        )
        log(f"{mode}: memory growth {result['memory']['growth_mb']:.1f} MB")

    phases: list[tuple[str, Callable[[contextlib.ExitStack], None]]] = [
        ("bare", bare),
        ("throughput", throughput),
        ("bare again", bare_again),
        ("latency+memory", latency_memory),
    ]
    for name, phase in phases:
        try:
            with contextlib.ExitStack() as stack:
                phase(stack)
        except Exception as exc:  # recorded; the next phase still runs
            log(f"{mode}: {name} failed: {type(exc).__name__}: {exc}")
            result["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
    add_ratios(mode, result)
    return result


def add_ratios(mode: str, result: dict[str, Any]) -> None:
    """stored/s ÷ bare req/s, against the mean of the bare runs before and after the app."""
    tp = result.get("throughput")
    bares = [result[k] for k in ("bare", "bare_after") if k in result]
    if not tp or not bares:
        return
    bare_rps = sum(b["requests_per_s"] for b in bares) / len(bares)
    tp["bare_requests_per_s"] = bare_rps
    tp["ratio"] = tp["stored_per_s"] / bare_rps if bare_rps else None
    tp["ratio_target"] = RATIO_TARGET[mode]
    tp["ratio_ok"] = tp["ratio"] is not None and tp["ratio"] >= RATIO_TARGET[mode]
    # The same ratio from server CPU time per request: steadier on a machine with other load.
    cpu = [b["cpu_us_per_request"] for b in bares if b.get("cpu_us_per_request")]
    if cpu and tp.get("cpu_us_per_capture"):
        tp["cpu_ratio"] = (sum(cpu) / len(cpu)) / tp["cpu_us_per_capture"]
    log(f"{mode}: ratio {tp['ratio'] or 0:.2f} (target ≥{RATIO_TARGET[mode]:.2f})")


# Report ---------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def verdict(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " MISS")


def rows_for(result: dict[str, Any], config: Config) -> dict[str, str]:
    rows: dict[str, str] = {}
    bares = [result[k] for k in ("bare", "bare_after") if k in result]
    rows["bare daphne req/s (before, after)"] = ", ".join(
        fmt(b.get("requests_per_s")) for b in bares
    )
    rows["  bare server CPU µs/request"] = ", ".join(
        fmt(b.get("cpu_us_per_request")) for b in bares
    )
    if "bare_no_form_parsing" in result:
        rows["bare, form parsing off, req/s"] = fmt(
            result["bare_no_form_parsing"].get("requests_per_s")
        )
    tp = result.get("throughput")
    if tp:
        wrk = tp["wrk"]
        rows["app answered req/s"] = fmt(wrk["requests"] / wrk["duration_s"])
        rows["app stored/s"] = fmt(tp["stored_per_s"])
        rows["  app server CPU µs/capture"] = fmt(tp.get("cpu_us_per_capture"))
        rows["  server CPU busy (bare, app)"] = ", ".join(
            f"{x['server_cpu_busy']:.0%}" for x in [*bares[:1], tp] if "server_cpu_busy" in x
        )
        rows["  client CPU 1 busy (bare, app)"] = ", ".join(
            f"{x['client_cpu_busy']:.0%}" for x in [*bares[:1], tp] if "client_cpu_busy" in x
        )
        rows["  other load on CPU 0 (bare, app, bare)"] = ", ".join(
            f"{x['other_load_on_server_cpu']:.0%}"
            for x in [*bares[:1], tp, *bares[1:]]
            if "other_load_on_server_cpu" in x
        )
        rows["non-2xx / socket errors"] = f"{wrk['non2xx']} / {wrk['socket_errors']}"
        rows["stored == answered (2xx)"] = (
            f"{fmt(tp['stored_matches_answered'])} ({tp['stored']:,} vs {tp['answered_2xx']:,})"
        )
        rows["frames == stored"] = f"{fmt(tp['frames_match_stored'])} ({tp['frames']:,})"
        if "ratio" in tp:
            ratio = tp["ratio"]
            rows["stored/s ÷ bare req/s"] = (
                f"{fmt(ratio, '.2f')} (≥{tp['ratio_target']:.2f}){verdict(tp['ratio_ok'])}"
            )
            rows["  same ratio from CPU µs"] = fmt(tp.get("cpu_ratio"), ".2f")
        rows["app wrk p50 / p99 ms"] = f"{wrk['latency_p50_ms']:.1f} / {wrk['latency_p99_ms']:.1f}"
        db = tp["db"]
        if "bytes_per_capture_files" in db:
            rows["db bytes/capture (db+wal files)"] = fmt(db["bytes_per_capture_files"])
        rows["db bytes/capture (table+indexes)"] = fmt(db["bytes_per_capture_table"])
        rows["  counted over captures"] = fmt(db["captures"])
    for lat in result.get("latency", []):
        rate = lat["rate"]
        target = lat.get("p99_target_ms")
        target_text = f" (<{target:g}){verdict(lat['ok'])}" if target else ""
        rows[f"latency {rate:g}/s p50/p99/max ms"] = (
            f"{fmt(lat['ws_p50_ms'], '.1f')} / {fmt(lat['ws_p99_ms'], '.1f')} / "
            f"{fmt(lat['ws_max_ms'], '.1f')}{target_text}"
        )
        rows[f"  {rate:g}/s delivered/sent, non-2xx"] = (
            f"{lat['delivered']}/{lat['sent']}, {lat['non2xx'] + lat['errors']}"
        )
        rows[f"  {rate:g}/s http p99, send lag p99 ms"] = (
            f"{fmt(lat['http_p99_ms'], '.1f')}, {fmt(lat['send_lag_p99_ms'], '.1f')}"
        )
        if "server_cpu_busy" in lat:
            rows[f"  {rate:g}/s server CPU, other load"] = (
                f"{lat['server_cpu_busy']:.0%}, {lat['other_load_on_server_cpu']:.0%}"
            )
    mem = result.get("memory")
    if mem:
        rows["RSS MB at captures"] = (
            f"{mem['rss_mb_first']:.1f} @{mem['captures_at_first_reading']:,} -> "
            f"{mem['rss_mb_second']:.1f} @{mem['captures_at_second_reading']:,}"
        )
        short = "" if mem["reached_target"] else f", only {mem['captures_between']:,} captures"
        rows["RSS growth MB"] = (
            f"{mem['growth_mb']:+.2f} (<{mem['growth_target_mb']:g}{short}){verdict(mem['ok'])}"
        )
        rows["  stored/s with pruning, non-2xx"] = (
            f"{fmt(mem['rps'])}, {mem['non2xx'] + mem['socket_errors']}"
        )
        rows["  frames == stored; listener max behind"] = (
            f"{fmt(mem['frames_match_stored'])}; {mem.get('max_frames_behind', 0):,}"
        )
        db = mem["db_after_pruning"]
        size = db.get("files_db_wal_bytes") or db.get("total_relation_bytes")
        vacuum = " autovacuum OFF" if mem.get("pg_autovacuum") == "off" else ""
        rows["db MB after pruning (rows kept)"] = f"{size / 1e6:.1f} ({db['captures']:,}){vacuum}"
    for error in result.get("errors", []):
        rows[f"ERROR {len(rows)}"] = error.splitlines()[0][:60]
    return rows


def measured(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The timed measurements of a mode's result, by name."""
    found = [(k, result[k]) for k in ("bare", "throughput", "bare_after") if k in result]
    found += [(f"latency {lat['rate']:g}/s", lat) for lat in result.get("latency", [])]
    return found


def print_summary(results: list[dict[str, Any]], config: Config) -> str:
    tables = [rows_for(r, config) for r in results]
    names: list[str] = []
    for table in tables:
        for key in table:
            if key not in names:
                names.append(key)
    header = ["", *[r["mode"] for r in results]]
    lines = [[name, *[t.get(name, "") for t in tables]] for name in names]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    out = []
    for i, row in enumerate([header, *lines]):
        out.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    noisy = sorted(
        {
            f"{r['mode']} {name}"
            for r in results
            for name, m in measured(r)
            if m.get("other_load_on_server_cpu", 0.0) > NOISY
        }
    )
    if noisy:
        out.append(
            f"\nnoisy (other processes used >{NOISY:.0%} of CPU {SERVER_CPU} even after "
            f"{MAX_TRIES} tries): {', '.join(noisy)}"
        )
    text = "\n".join(out)
    print("\n" + text + "\n", flush=True)
    return text


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_cells(m: dict[str, Any]) -> list[str]:
    """CPUs busy (CPU seconds per second) during the timed part: see MachineWindow."""
    if "machine_busy_cpus" not in m:
        return ["-", "-"]
    return [
        f"{m['servers_cpus']:.1f} / {m['clients_cpus']:.1f} / {m['db_redis_cpus']:.1f} / "
        f"{m['machine_busy_cpus']:.1f}",
        f"{m['other_cpus']:.1f}",
    ]


def series_table(series: list[dict[str, Any]]) -> str:
    base = next((r for r in series if "stored_per_s" in r), None)
    ratio_name = (
        f"ratio to {base['processes']} process{'es' if base['processes'] > 1 else ''}"
        if base
        else "ratio"
    )
    header = [
        "processes",
        "stored/s",
        ratio_name,
        "stored == answered",
        "frames == stored, ids 1..n in order",
        "4000 closes",
        "errors",
        "CPUs: app / clients / db+redis / all",
        "CPUs: other load",
    ]
    rows = []
    for r in series:
        if "failed" in r:
            rows.append([str(r["processes"]), f"FAILED: {r['failed'][:80]}", *[""] * 7])
            continue
        rows.append(
            [
                str(r["processes"]),
                fmt(r["stored_per_s"]),
                fmt(r.get("ratio_to_first"), ".2f") + "x",
                fmt(r["stored_matches_answered"]),
                f"{fmt(r['frames_match_stored'])} ({r['frames']:,})",
                str(r["closes_4000"]),
                str(r["errors"]),
                *cpu_cells(r),
            ]
        )
    return markdown(header, rows)


FANOUT_NAMES = {
    "sqlite": "SQLite + in-memory layer, 1 process",
    "postgres": "PostgreSQL + Redis, 2 processes",
}


def fanout_table(results: list[dict[str, Any]]) -> str:
    header = [
        "instance",
        "listeners, captures/s",
        "p50 / p99 / max ms",
        "delivered / expected",
        "listeners with 1..n in order",
        "4000 closes",
        "errors",
        "CPUs: app / clients / db+redis / all",
        "CPUs: other load",
    ]
    rows = []
    for r in results:
        name = FANOUT_NAMES.get(r["mode"], r["mode"])
        if "failed" in r:
            rows.append([name, f"FAILED: {r['failed'][:80]}", *[""] * 7])
            continue
        errors = r["non2xx"] + r["errors"] + len(r["streams_ended"]) + r["server_errors_logged"]
        rows.append(
            [
                name,
                f"{r['listeners']}, {r['rate']:g}/s",
                f"{fmt(r['p50_ms'], '.1f')} / {fmt(r['p99_ms'], '.1f')} / "
                f"{fmt(r['max_ms'], '.1f')}",
                f"{r['delivered']:,} / {r['expected']:,}",
                f"{r['listeners_complete_in_order']} of {r['listeners']}",
                str(r["closes_4000"]),
                str(errors),
                *cpu_cells(r),
            ]
        )
    return markdown(header, rows)


def machine_line(host: dict[str, Any]) -> str:
    usable = "" if host["cpus_usable"] == host["cpus"] else f", {host['cpus_usable']} usable"
    dirty = " (uncommitted changes)" if host["git_dirty"] else ""
    return (
        f"machine: {host['cpus']} CPUs ({host['cpu_model'] or 'model unknown'}){usable}, app at "
        f"{host['git_commit'][:9]}{dirty}; nothing pinned: app processes, wrk, listeners, "
        "PostgreSQL and Redis share all CPUs"
    )


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(ALL_CPUS),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "load_avg_at_start": os.getloadavg(),
    }


def check_tools(config: Config) -> None:
    missing = [t for t in ("wrk",) if shutil.which(t) is None]
    if config.pin and shutil.which("taskset") is None:
        missing.append("taskset")
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (apt-get install -y wrk util-linux)")
    if not Path(DAPHNE).exists():
        raise SystemExit(f"{DAPHNE} missing: run `make run` once to build the venv")
    if config.pin:
        available = os.sched_getaffinity(0)
        if not {SERVER_CPU, CLIENT_CPU} <= available:
            log(f"CPUs {SERVER_CPU} and {CLIENT_CPU} not both available: not pinning")
            config.pin = False
        else:
            # This process mostly waits; keep it off the server's CPU all the same.
            os.sched_setaffinity(0, {CLIENT_CPU})


def main() -> int:
    global _retry_budget_left
    config = parse_args()
    check_tools(config)
    _retry_budget_left = config.retry_budget_s
    log(f"daphne as `make run` serves it: {shlex.join(config.daphne_flags)}")

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = datetime.now()
    host = machine()  # before the run: the commit measured, the load average at the start
    dirty = " with uncommitted changes" if host["git_dirty"] else ""
    log(f"app at commit {host['git_commit'][:9]}{dirty}")
    runs = [f"modes {', '.join(config.modes)}"] if config.modes else []
    runs += [f"{','.join(map(str, config.processes))} processes"] if config.processes else []
    runs += [f"fan-out on {','.join(config.fanout_modes)}"] if config.fanout_modes else []
    log(f"bench: {'; '.join(runs)}{' (quick)' if config.quick else ''}")
    log(f"{host['cpus']} CPUs ({host['cpu_model']})")
    results: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    fanouts: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="inspector-bench-") as tmp:
        for mode in config.modes:
            workdir = Path(tmp) / mode
            workdir.mkdir()
            results.append(run_mode(mode, config, workdir))
        # The unpinned runs: this process and all it starts may use every CPU again (the
        # modes kept it off the server's CPU, and children inherit that).
        os.sched_setaffinity(0, ALL_CPUS)
        if config.processes:
            series = run_processes(config, Path(tmp))
        if config.fanout_modes:
            fanouts = run_fanout(config, Path(tmp))
    elapsed = (datetime.now() - started).total_seconds()
    table = print_summary(results, config) if results else ""
    if series or fanouts:
        parts = [machine_line(host)]
        if series:
            parts.append(
                f"{len(config.processes)} runs of {config.duration:g} s, wrk -t1 "
                f"-c{config.connections} per load generator; every listener on another "
                "process than its bin's load:\n\n" + series_table(series)
            )
        if fanouts:
            parts.append(
                f"fan-out, {config.fanout_seconds:g} s at the rate, default settings:\n\n"
                + fanout_table(fanouts)
            )
        text = "\n\n".join(parts)
        print("\n" + text + "\n", flush=True)
        table = "\n\n".join(x for x in (table, text) if x)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{started:%Y%m%d-%H%M%S}.json"
    report = {
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": elapsed,
        "config": asdict(config),
        "machine": host,
        "results": results,
        "processes": series,
        "fanout": fanouts,
        "summary": table,
    }
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"done in {elapsed:.0f} s; results in {path.relative_to(ROOT)}")
    failed = any(r["errors"] for r in results) or any(
        "failed" in r or r["errors"] or not r["frames_match_stored"] for r in series
    )
    failed = failed or any(
        "failed" in r
        or r["delivered"] < r["expected"]
        or r["listeners_complete_in_order"] < r["listeners"]
        or r["non2xx"] + r["errors"] + r["server_errors_logged"]
        for r in fanouts
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
