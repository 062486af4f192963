"""Is the inspector page smooth with a full bin receiving 100 captures/s? `make bench-page`.

    .venv/bin/python bench/page.py [--seconds 20] [--rate 100] [--pin] [--tries 2]
                                   [--no-trace-file] [--try-css CSS] [--try-js JS]

The real server, started as `make run` starts it (bench/run.py's helpers: daphne with the
Makefile's flags, a temporary DATA_DIR, CAPTURES_PER_BIN=500, the default), gets a bin filled
with 500 captures of mixed kinds (1 KiB JSON, some from GitHub and Stripe with retries, forms,
binary bodies, a few of 100 KiB). Debian's Chromium (Playwright, 1366x850) opens the inspector
`/bins/<token>/` and, once the 500 rows are in, a Performance trace is recorded (the DevTools
timeline categories) while an open-loop sender (bench/latency.py's client) POSTs 1 KiB JSON
captures to the bin at 100/s for 20 s. During the second half a row is clicked about twice a
second (10 clicks: the detail pane shows a capture, and the time from the click to the detail
painted is taken); near the end a search is typed into the page's search box, if it has one.
After the sends, the page must show exactly the newest 500 captures (it trims to
CAPTURES_PER_BIN), the newest among them. Then 10 more clicks with nothing arriving.

From the trace, on the page's renderer main thread (CrRendererMain): the tasks (RunTask /
ThreadControllerImpl::RunTask) over 50 ms, and how much CPU time each had (the rest it waited
for a CPU), the longest, the main thread's busy share, where its time went (self time by trace
event), and for each long task what it spent its time on. A PerformanceObserver('longtask') in
the page counts long tasks too, as a cross-check.

Prints a table, writes bench/results/page-<timestamp>.json (and the trace, gzipped, which the
DevTools Performance panel opens), and exits 1 when a task took over 50 ms, a row is missing,
or a step could not be measured. Steps whose elements the page lacks (a search box) are skipped
and reported as such. Nothing is pinned unless --pin (server and sender on CPU 0, Chromium on
CPU 1): Chromium's own threads need more than one CPU. The CPU use of the server, Chromium, the
sender and other processes is reported; a failed run during which other processes used over
0.25 CPUs is made once more and the quieter kept. --try-css and --try-js measure a change to
the page without making it (the page's CSP is bypassed for them). Only 127.0.0.1; everything
started here is stopped at the end, on error too. About 40 s a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import random
import sys
import tempfile
import threading
import time
from bisect import bisect_left, bisect_right
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from latency import Client, percentile, summarize
from run import (
    ALL_CPUS,
    APP,
    HOST,
    RESULTS,
    ROOT,
    base_env,
    cpu_busy_seconds,
    cpu_seconds,
    log,
    machine,
    machine_busy_seconds,
    make_run_flags,
    migrate,
    start_daphne,
)
from websockets.asyncio.client import connect

sys.path.insert(0, str(ROOT))
from tests.browser import CHROMIUM, CHROMIUM_ARGS  # after ROOT is importable

SERVER_CPU = 0  # the server and the sender
BROWSER_CPU = 1  # Chromium, all its processes
CAPTURES = 500  # CAPTURES_PER_BIN's default: the page keeps as many rows
LONG_TASK_MS = 50.0
# A run during which other processes used more CPU than this (CPU seconds per second) is noisy:
# its tasks may have waited for a CPU. A failed noisy run is made again (--tries).
NOISY_CPUS = 0.25
VIEWPORT = {"width": 1366, "height": 850}
CLICKS = 10
SEARCH_TERM = "invoice"
ROWS = "#capture-list li.capture"
TASK_NAMES = {"RunTask", "ThreadControllerImpl::RunTask"}
CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "toplevel"]

# Runs in the page before its own scripts (init scripts are the browser's, outside the CSP):
# long tasks as the page sees them, and click -> detail painted. A click on a row arms a watch
# for that row's capture in #detail; once it is there, the time is taken after the next frame
# (a requestAnimationFrame, then a message: the frame with the detail has been produced).
PAGE_PROBE = """
window.__bench = {long: [], clicks: [], armed: null, rowClicks: 0};
try {
  new PerformanceObserver(function (list) {
    list.getEntries().forEach(function (e) { __bench.long.push([e.startTime, e.duration]); });
  }).observe({type: 'longtask', buffered: true});
} catch (e) { __bench.longError = String(e); }
document.addEventListener('click', function (event) {
  var row = event.target.closest && event.target.closest('li.capture');
  if (!row || !row.getAttribute('data-id')) { return; }
  var armed = {id: row.getAttribute('data-id'), t0: event.timeStamp};
  __bench.armed = armed;
  __bench.rowClicks += 1;
  var done = function () {
    var box = document.getElementById('detail');
    return box && box.querySelector('[data-id="' + armed.id + '"]');
  };
  var observer = new MutationObserver(function () {
    if (__bench.armed !== armed || !done()) { return; }
    observer.disconnect();
    requestAnimationFrame(function () {
      var channel = new MessageChannel();
      channel.port1.onmessage = function () {
        __bench.clicks.push({id: armed.id, ms: performance.now() - armed.t0});
      };
      channel.port2.postMessage(0);
    });
  });
  observer.observe(document.body, {childList: true, subtree: true});
  setTimeout(function () { observer.disconnect(); }, 10000);
}, true);
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of live captures")
    parser.add_argument("--rate", type=float, default=100.0, help="live captures per second")
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"server and sender on CPU {SERVER_CPU}, Chromium on CPU {BROWSER_CPU}",
    )
    parser.add_argument(
        "--no-trace-file", action="store_true", help="do not keep the trace in bench/results"
    )
    parser.add_argument(
        "--tries",
        type=int,
        default=2,
        help=f"runs at most, when other processes used over {NOISY_CPUS} CPUs during a run "
        "that failed (the quietest is kept)",
    )
    parser.add_argument(
        "--try-css",
        help="an experiment: CSS added to the page (its CSP bypassed), to measure a change "
        "without making it",
    )
    parser.add_argument(
        "--try-js", help="an experiment: JS run in the page before its own (its CSP bypassed)"
    )
    args = parser.parse_args()
    if args.pin and not {SERVER_CPU, BROWSER_CPU} <= ALL_CPUS:
        log(f"CPUs {SERVER_CPU} and {BROWSER_CPU} not both available: not pinning")
        args.pin = False
    return args


# The bin's 500 captures -------------------------------------------------------------------------


def prefill_request(i: int, rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    """The i-th capture of the bin: method, sub-path with query, headers, body."""
    if i % 60 == 30:  # a few large bodies (lists leave them out; the detail shows 256 KiB)
        text = json.dumps({"invoice": i, "lines": ["x" * 90] * 1100})
        return "POST", f"/invoice/{i}/export", {"content-type": "application/json"}, text.encode()
    if i % 10 == 3:  # binary
        body = bytes(rng.getrandbits(8) for _ in range(2048))
        return "PUT", f"/upload/{i}.bin", {"content-type": "application/octet-stream"}, body
    if i % 10 == 1:  # urlencoded form
        body = f"name=Ann+{i}&email=ann{i}%40example.com&note=" + "hello+" * 40
        headers = {"content-type": "application/x-www-form-urlencoded"}
        return "POST", f"/forms/contact?ref={i}", headers, body.encode()
    if i % 10 == 6:  # multipart form
        boundary = "benchboundary"
        body = (
            f'--{boundary}\r\ncontent-disposition: form-data; name="field"\r\n\r\nvalue {i}\r\n'
            f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="a.txt"\r\n'
            f"content-type: text/plain\r\n\r\n{'line of text ' * 30}\r\n--{boundary}--\r\n"
        )
        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        return "POST", "/forms/upload", headers, body.encode()
    if i % 10 == 8:  # GitHub, every fifth one a redelivery of the one before
        delivery = f"72d3162e-cc78-11e3-81ab-{i // 50:012d}"
        headers = {
            "content-type": "application/json",
            "user-agent": "GitHub-Hookshot/044aadd",
            "x-github-event": "push",
            "x-github-delivery": delivery,
        }
        payload = {"ref": "refs/heads/main", "commits": [{"id": f"{i:040x}", "msg": "x" * 600}]}
        return "POST", "/hooks/github", headers, json.dumps(payload).encode()
    if i % 10 == 9:  # Stripe-like invoice events, some retried
        event = f"evt_{i // 20:024d}"
        body = json.dumps(
            {"id": event, "object": "event", "type": "invoice.paid", "data": {"pad": "y" * 800}}
        )
        headers = {"content-type": "application/json", "stripe-signature": f"t=1,v1={'0' * 64}"}
        return "POST", "/hooks/stripe", headers, body.encode()
    method = ("POST", "POST", "PATCH", "GET", "DELETE")[i % 5]
    payload = {"order": i, "status": "paid", "items": [{"sku": f"S{k}", "n": k} for k in range(20)]}
    body = json.dumps(payload).encode() if method != "GET" else b""
    return method, f"/orders/{i}?attempt=1&src=bench", {"content-type": "application/json"}, body


def prefill(base: str, token: str, count: int) -> dict[str, Any]:
    rng = random.Random(19)
    statuses: dict[int, int] = defaultdict(int)
    started = time.monotonic()
    with httpx.Client(trust_env=False, timeout=30) as client:
        for i in range(count):
            method, path, headers, body = prefill_request(i, rng)
            response = client.request(
                method, f"{base}/{token}{path}", headers=headers, content=body
            )
            statuses[response.status_code] += 1
    return {"count": count, "statuses": dict(statuses), "seconds": time.monotonic() - started}


# The live sender ------------------------------------------------------------------------------


class Sender(threading.Thread):
    """bench/latency.py's open-loop client at `rate` for `seconds`, with a JSON-stream listener
    (so it knows every capture was pushed), in a thread with its own event loop."""

    def __init__(self, port: int, token: str, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.token, self.rate, self.seconds = port, token, rate, seconds
        self.result: dict[str, Any] = {}
        self.error: str | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._send())
        except Exception as exc:  # reported in the results
            self.error = f"{type(exc).__name__}: {exc}"

    async def _send(self) -> None:
        client = Client(HOST, self.port, self.token, 16)
        url = f"ws://{HOST}:{self.port}/ws/bins/{self.token}/json/"
        async with connect(url, max_size=None, open_timeout=10, proxy=None) as ws:
            listener = asyncio.create_task(client.listen(ws))
            await client.open()
            try:
                count = round(self.rate * self.seconds)
                run = await client.run_rate(self.rate, count, 0)
                self.result = summarize(self.rate, self.seconds, run, client.received)
            finally:
                await client.close()
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener


# CPU use ----------------------------------------------------------------------------------------


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        found += children
        todo += children
    return found


def cpus_allowed(pids: list[int]) -> list[str]:
    """The CPU lists these processes may run on (a check that pinning took)."""
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    found.add(line.split(":", 1)[1].strip())
    return sorted(found)


class CpuUse:
    """CPU seconds per second over a window: the server, Chromium (with Playwright's driver),
    this process (the sender) and the rest of the machine; with pinning, also what else ran on
    the browser's CPU."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.start = self._read()

    def _read(self) -> dict[str, Any]:
        browser = {}
        for pid in descendants(os.getpid()):
            if pid != self.server_pid:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    browser[pid] = cpu_seconds(pid)
        own = os.times()
        return {
            "wall": time.monotonic(),
            "machine": machine_busy_seconds(),
            "browser_cpu": cpu_busy_seconds(BROWSER_CPU),
            "server": cpu_seconds(self.server_pid),
            "browser": browser,
            "self": own.user + own.system,
        }

    def stop(self) -> dict[str, float]:
        end = self._read()
        wall = end["wall"] - self.start["wall"]
        browser = sum(t - self.start["browser"].get(pid, 0.0) for pid, t in end["browser"].items())
        server = end["server"] - self.start["server"]
        sender = end["self"] - self.start["self"]
        busy = end["machine"] - self.start["machine"]
        return {
            "seconds": wall,
            "server_cpus": server / wall,
            "browser_cpus": browser / wall,
            "sender_cpus": sender / wall,
            "machine_busy_cpus": busy / wall,
            "other_cpus": max(0.0, busy - server - browser - sender) / wall,
            "browser_cpu_other_load": max(
                0.0, end["browser_cpu"] - self.start["browser_cpu"] - browser
            )
            / wall,
        }


# The trace --------------------------------------------------------------------------------------


def renderer_main(events: list[dict[str, Any]], path: str) -> tuple[int, int] | None:
    """The (pid, tid) of the page's renderer main thread."""
    mains = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M"
        and e.get("name") == "thread_name"
        and e.get("args", {}).get("name") == "CrRendererMain"
    }
    pids = set()
    for e in events:
        if e.get("name") in ("TracingStartedInBrowser", "TracingStartedInPage"):
            for frame in e.get("args", {}).get("data", {}).get("frames", []):
                if path in frame.get("url", "") and frame.get("processId"):
                    pids.add(frame["processId"])
    candidates = [m for m in mains if m[0] in pids] or list(mains)
    if not candidates:
        return None
    busy: dict[tuple[int, int], float] = defaultdict(float)
    for e in events:
        key = (e.get("pid"), e.get("tid"))
        if key in candidates and e.get("name") in TASK_NAMES and e.get("ph") == "X":
            busy[key] += e.get("dur", 0)
    return max(candidates, key=lambda k: busy[k])


def intervals(events: list[dict[str, Any]]) -> list[tuple[float, float, str, dict[str, Any]]]:
    """The thread's complete events (X, and B/E pairs), as (start, end, name, args) in µs,
    sorted so that a parent comes before what it contains."""
    found = []
    open_: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        ph = e.get("ph")
        if ph == "X" and "dur" in e:
            args = e.get("args", {})
            if e["name"] in TASK_NAMES:  # a task's thread (CPU) time, where the trace has it
                args = {**args, "cpu_us": e.get("tdur")}
            found.append((e["ts"], e["ts"] + e["dur"], e["name"], args))
        elif ph == "B":
            open_[e["name"]].append(e)
        elif ph == "E" and open_[e.get("name", "")]:
            begin = open_[e["name"]].pop()
            args = {**begin.get("args", {}), **e.get("args", {})}
            found.append((begin["ts"], e["ts"], begin["name"], args))
    found.sort(key=lambda x: (x[0], -x[1]))
    return found


def label(name: str, args: dict[str, Any]) -> str:
    """A trace event named with what it ran: the function and script, the DOM event's type."""
    data = args.get("data") or args.get("beginData") or {}
    if name == "FunctionCall":
        script = (data.get("url") or "").rsplit("/", 1)[-1] or "?"
        where = f"{script}:{data.get('lineNumber', '?')}:{data.get('columnNumber', '?')}"
        return f"FunctionCall {data.get('functionName') or '(anonymous)'} {where}"
    if name == "EventDispatch":
        return f"EventDispatch {data.get('type', '?')}"
    if name == "TimerFire":
        return "TimerFire"
    return name


def analyse_trace(trace: dict[str, Any], path: str) -> dict[str, Any]:
    events = trace.get("traceEvents", trace if isinstance(trace, list) else [])
    main = renderer_main(events, path)
    if main is None:
        return {"error": "no CrRendererMain thread in the trace"}
    mine = [e for e in events if (e.get("pid"), e.get("tid")) == main]
    marks = sorted(
        (e["ts"], e["args"]["data"]["message"])
        for e in mine
        if e.get("name") == "TimeStamp" and "message" in e.get("args", {}).get("data", {})
    )
    spans = intervals(mine)
    tasks: list[tuple[float, float, str, dict[str, Any]]] = []
    for span in spans:  # outermost tasks only (a RunTask may hold a nested one)
        if span[2] in TASK_NAMES and not (tasks and span[0] < tasks[-1][1]):
            tasks.append(span)
    if not tasks:
        names = sorted({e.get("name", "") for e in mine})[:40]
        return {"error": f"no RunTask events on the renderer main thread; saw {names}"}

    def phase(ts: float) -> str:
        before = [m for t, m in marks if t <= ts]
        return before[-1].removeprefix("bench:") if before else "before the run"

    start = next((t for t, m in marks if m == "bench:live"), tasks[0][0])
    end = next((t for t, m in marks if m == "bench:sent"), tasks[-1][1])
    # Self time by event, over the tasks of the live window: where the main thread's time went.
    self_us: dict[str, float] = defaultdict(float)
    times: dict[str, int] = defaultdict(int)
    stack: list[list[Any]] = []  # [end, label, child time]

    def close(item: list[Any]) -> None:
        self_us[item[1]] += item[3] - item[2]
        times[item[1]] += 1

    for s, e, name, args in spans:
        while stack and stack[-1][0] <= s:
            close(stack.pop())
        if not (start <= s < end):
            continue
        if not stack and name not in TASK_NAMES:
            continue  # outside any task (e.g. a stray instant slice): not main-thread work
        if stack:
            stack[-1][2] += min(e, stack[-1][0]) - s
        stack.append([e, "(task, untraced)" if name in TASK_NAMES else label(name, args), 0, e - s])
    while stack:
        close(stack.pop())

    starts = [span[0] for span in spans]

    def describe(task: tuple[float, float, str, dict[str, Any]]) -> dict[str, Any]:
        """A task: how long, when, and the events inside it by inclusive time (nested events
        count in their parents too)."""
        s, e = task[0], task[1]
        inside: dict[str, float] = defaultdict(float)
        for cs, ce, name, args in spans[bisect_left(starts, s) : bisect_right(starts, e)]:
            if ce <= e and name not in TASK_NAMES:
                inside[label(name, args)] += ce - cs
        top = sorted(inside.items(), key=lambda kv: -kv[1])[:8]
        cpu = task[3].get("cpu_us")
        return {
            "ms": (e - s) / 1000,
            # Below `ms`: the thread waited for a CPU (other processes, Chromium's other threads).
            "cpu_ms": None if cpu is None else cpu / 1000,
            "at_s": (s - start) / 1000000,
            "during": phase(s),
            "inside_ms_inclusive": {k: round(v / 1000, 1) for k, v in top},
        }

    long_tasks = [describe(t) for t in tasks if (t[1] - t[0]) / 1000 > LONG_TASK_MS]
    by_length = sorted(tasks, key=lambda t: t[0] - t[1])
    shorter = [t for t in by_length if (t[1] - t[0]) / 1000 <= LONG_TASK_MS]
    longest_others = [describe(t) for t in shorter[:3]]
    live = [t for t in tasks if start <= t[0] < end]
    window_us = max(1.0, end - start)
    durations = sorted(((e - s) / 1000 for s, e, _, _ in tasks), reverse=True)
    longest = max(tasks, key=lambda t: t[1] - t[0])
    busy_total = sum(self_us.values())
    return {
        "renderer_main": {"pid": main[0], "tid": main[1]},
        "trace_seconds": (tasks[-1][1] - tasks[0][0]) / 1e6,
        "live_seconds": window_us / 1e6,
        "tasks": len(tasks),
        "tasks_over_50ms": len(long_tasks),
        "tasks_over_50ms_of_cpu": sum(1 for t in long_tasks if (t["cpu_ms"] or 0) > LONG_TASK_MS),
        "longest_task_ms": durations[0],
        "longest_task_during": phase(longest[0]),
        "task_p99_ms": percentile(durations, 99),
        "tasks_over_16ms": sum(1 for d in durations if d > 16.7),
        "live_busy_share": sum(e - s for s, e, _, _ in live) / window_us,
        # The same from the thread's CPU time: what the page's work took without the waits.
        "live_cpu_share": sum(a.get("cpu_us") or 0 for _, _, _, a in live) / window_us,
        "live_self_ms_by_event": {
            k: [round(v / 1000, 1), times[k]]
            for k, v in sorted(self_us.items(), key=lambda kv: -kv[1])[:15]
            if busy_total
        },
        "long_tasks": long_tasks,
        "longest_tasks_under_50ms": longest_others,
        "marks": len(marks),
    }


# The page ---------------------------------------------------------------------------------------


def timestamp(page: Any, message: str) -> None:
    """A mark in the trace (a TimeStamp event on the renderer main thread)."""
    page.evaluate("m => console.timeStamp(m)", f"bench:{message}")


def click_row(page: Any, index: int = 3) -> dict[str, Any] | None:
    """Click the list where its `index`-th row is; the page probe says which row it was and how
    long until its capture was painted in #detail. None when no detail came within 5 s.

    While rows arrive, the list moves under the pointer: when the press and the release land on
    different rows there is no click on a row at all. Such a click is made again (at most 5
    times) and counted in `off_row`."""
    before = page.evaluate("__bench.clicks.length")
    attempt = 0
    for attempt in range(5):  # noqa: B007 (the attempts made are reported)
        box = page.evaluate(
            "([sel, i]) => { const r = document.querySelectorAll(sel)[i];"
            " if (!r) return null; const b = r.getBoundingClientRect();"
            " return {x: b.left + b.width / 2, y: b.top + Math.min(b.height / 2, 12)}; }",
            [ROWS, index],
        )
        if box is None:
            return None
        on_row = page.evaluate("__bench.rowClicks")
        page.mouse.click(box["x"], box["y"])
        if page.evaluate("__bench.rowClicks") > on_row:
            break
        page.wait_for_timeout(100)
        if page.evaluate("__bench.rowClicks") > on_row:
            break
    else:
        return {"off_row": attempt + 1}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        clicks = page.evaluate("__bench.clicks")
        if len(clicks) > before:
            return {**clicks[-1], "off_row": attempt}
        page.wait_for_timeout(20)
    return None


def find_search(page: Any) -> Any | None:
    box = (
        page.get_by_role("searchbox", name="Search")
        .or_(page.get_by_label("Search", exact=True))
        .or_(page.locator("input[type=search]"))
    )
    return box.first if box.count() else None


def search(page: Any) -> dict[str, Any]:
    box = find_search(page)
    if box is None:
        return {"skipped": "the page has no search box (a field labelled Search)"}
    timestamp(page, "search")
    started = time.monotonic()
    box.click()
    page.keyboard.type(SEARCH_TERM, delay=80)
    page.wait_for_timeout(1500)
    shown = page.evaluate(
        "sel => [...document.querySelectorAll(sel)].filter(r => r.checkVisibility()).length", ROWS
    )
    timestamp(page, "search cleared")
    box.press("Control+a")
    box.press("Backspace")
    page.wait_for_timeout(1000)
    return {"term": SEARCH_TERM, "rows_shown": shown, "seconds": time.monotonic() - started}


def list_ids(page: Any) -> list[int]:
    return [
        int(x)
        for x in page.evaluate(
            "sel => [...document.querySelectorAll(sel)].map(r => r.getAttribute('data-id'))", ROWS
        )
        if x and x.isdigit()
    ]


def newest_id(base: str, token: str) -> int:
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(f"{base}/api/bins/{token}/captures", params={"limit": 1})
        response.raise_for_status()
        captures = response.json()["captures"]
    return int(captures[0]["id"]) if captures else 0


def wait_rows(page: Any, newest: int, seconds: float) -> float | None:
    """Wait until the list holds the newest capture and CAPTURES rows; seconds taken or None."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        ids = list_ids(page)
        if ids and newest in ids and len(ids) == CAPTURES:
            return time.monotonic() - started
        page.wait_for_timeout(100)
    return None


def click_series(page: Any, count: int, every: float, until: float) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        if time.monotonic() > until:
            break
        began = time.monotonic()
        timestamp(page, f"click {i + 1}")
        got = click_row(page)
        out.append(got or {"missed": True})
        time.sleep(max(0.0, every - (time.monotonic() - began)))
    return out


def click_figures(clicks: list[dict[str, Any]]) -> dict[str, Any]:
    times = [c["ms"] for c in clicks if "ms" in c]
    return {
        "clicks": len(clicks),
        "painted": len(times),
        "off_row": sum(c.get("off_row", 0) for c in clicks),
        "p50_ms": percentile(times, 50),
        "max_ms": max(times) if times else None,
        "all_ms": [round(t, 1) for t in times],
    }


def run_page(args: argparse.Namespace, base: str, token: str, server_pid: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    result: dict[str, Any] = {"skipped": []}
    # Playwright's driver, Chromium and everything they start inherit this process's CPUs.
    if args.pin:
        os.sched_setaffinity(0, {BROWSER_CPU})
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
        finally:
            if args.pin:
                os.sched_setaffinity(0, {SERVER_CPU})
        try:
            result["chromium"] = browser.version
            result["browser_cpus_allowed"] = cpus_allowed(
                [p for p in descendants(os.getpid()) if p != server_pid]
            )
            experiment = bool(args.try_css or args.try_js)
            page = browser.new_context(viewport=VIEWPORT, bypass_csp=experiment).new_page()
            if args.try_js:
                page.add_init_script(args.try_js)
            if args.try_css:
                page.add_init_script(
                    "document.addEventListener('DOMContentLoaded', function () {"
                    " var s = document.createElement('style'); s.textContent = "
                    + json.dumps(args.try_css)
                    + "; document.head.appendChild(s); });"
                )
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.add_init_script(PAGE_PROBE)
            started = time.monotonic()
            page.goto(f"{base}/bins/{token}/")
            loaded = wait_rows(page, newest_id(base, token), 30)
            if loaded is None:
                raise RuntimeError(f"the page did not show {CAPTURES} rows in 30 s")
            result["load"] = {
                "seconds_to_rows": time.monotonic() - started,
                "long_tasks_ms": [round(d, 1) for _, d in page.evaluate("__bench.long")],
            }
            page.wait_for_timeout(1000)  # let the load settle before the trace
            path = f"/bins/{token}/"
            live_from = page.evaluate("performance.now()")
            browser.start_tracing(page=page, categories=CATEGORIES)
            cpu = CpuUse(server_pid)
            timestamp(page, "live")
            sender = Sender(int(base.rsplit(":", 1)[1]), token, args.rate, args.seconds)
            begin = time.monotonic()
            sender.start()
            time.sleep(args.seconds / 2)
            # Second half: a capture open in the detail pane, a click a second.
            search_at = begin + args.seconds - 4.5
            every = max(0.3, (search_at - time.monotonic()) / CLICKS)
            result["clicks_live"] = click_figures(click_series(page, CLICKS, every, search_at))
            timestamp(page, "live, a capture open")
            time.sleep(max(0.0, search_at - time.monotonic()))
            log("search")
            result["search"] = search(page)
            if "skipped" in result["search"]:
                result["skipped"].append(f"search: {result['search']['skipped']}")
            sender.join(args.seconds + 30)
            timestamp(page, "sent")
            result["cpu"] = cpu.stop()
            result["sender"] = {**sender.result, "error": sender.error}
            newest = newest_id(base, token)
            waited = wait_rows(page, newest, 10)
            log("sends done; stopping the trace")
            timestamp(page, "end")
            raw = browser.stop_tracing()
            ids = list_ids(page)
            result["rows"] = {
                "count": len(ids),
                "newest": newest,
                "newest_shown": newest in ids,
                "newest_500_in_order": ids == list(range(newest, newest - CAPTURES, -1)),
                "seconds_after_sends": waited,
            }
            result["page_long_tasks_ms"] = [
                round(d, 1) for t, d in page.evaluate("__bench.long") if t >= live_from
            ]
            result["page_long_task_observer_error"] = page.evaluate("__bench.longError || null")
            log("10 clicks with nothing arriving")
            # Quiet: nothing arriving, the same clicks.
            result["clicks_quiet"] = click_figures(
                click_series(page, CLICKS, 0.3, time.monotonic() + 30)
            )
            result["page_errors"] = errors[:20]
            # htmx keeps snapshots of the page for Back in sessionStorage: how big they got.
            result["htmx_history_cache_chars"] = page.evaluate(
                "(sessionStorage.getItem('htmx-history-cache') || '').length"
            )
            log(f"analysing the trace ({len(raw) / 1e6:.0f} MB)")
            trace = json.loads(raw)
            result["trace"] = analyse_trace(trace, path)
            result["_raw_trace"] = raw
        finally:
            browser.close()
    return result


# Report -----------------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(r: dict[str, Any], args: argparse.Namespace) -> str:
    t = r.get("trace", {})
    rows = r.get("rows", {})
    s = r.get("sender", {})
    cpu = r.get("cpu", {})
    lines = [
        (
            "main-thread tasks over 50 ms (trace)",
            f"{t.get('tasks_over_50ms', '-')} ({t.get('tasks_over_50ms_of_cpu', '-')} of them with "
            "over 50 ms of CPU)",
        ),
        (
            "longest task (trace)",
            f"{t['longest_task_ms']:.1f} ms, during {t['longest_task_during']}"
            if "longest_task_ms" in t
            else t.get("error", "-"),
        ),
        (
            "tasks, p99, over 16.7 ms",
            f"{t.get('tasks', 0):,}, {t.get('task_p99_ms') or 0:.1f} ms, "
            f"{t.get('tasks_over_16ms')}",
        ),
        (
            "main thread busy while live (wall, CPU)",
            f"{t.get('live_busy_share', 0):.0%}, {t.get('live_cpu_share', 0):.0%}",
        ),
        ("long tasks (PerformanceObserver)", str(len(r.get("page_long_tasks_ms", [])))),
        (
            "rows at the end",
            f"{rows.get('count')} (the newest {CAPTURES} in order: "
            f"{'yes' if rows.get('newest_500_in_order') else 'NO'})",
        ),
        (
            "newest capture's row",
            f"{'yes' if rows.get('newest_shown') else 'NO'} (#{rows.get('newest')})",
        ),
    ]
    for key, name in (("clicks_live", "while live"), ("clicks_quiet", "quiet")):
        c = r.get(key, {})
        lines.append(
            (
                f"click -> detail painted, {name}: p50 / max",
                f"{ms(c.get('p50_ms'))} / {ms(c.get('max_ms'))} ms "
                f"({c.get('painted', 0)} of {c.get('clicks', 0)} clicks"
                + (f"; {c['off_row']} more fell between rows" if c.get("off_row") else "")
                + ")",
            )
        )
    sr = r.get("search", {})
    lines.append(
        (
            "search",
            f"skipped: {sr['skipped']}"
            if "skipped" in sr
            else f"'{sr.get('term')}': {sr.get('rows_shown')} rows shown",
        )
    )
    lines += [
        (
            "live captures sent / 2xx / pushed",
            f"{s.get('sent', 0):,} / {s.get('answered_2xx', 0):,} / {s.get('delivered', 0):,}"
            + (f" ({s['error']})" if s.get("error") else ""),
        ),
        (
            "page load: rows in, long tasks",
            f"{r.get('load', {}).get('seconds_to_rows', 0):.1f} s, "
            f"{len(r.get('load', {}).get('long_tasks_ms', []))} "
            f"(max {max(r.get('load', {}).get('long_tasks_ms', [0]) or [0]):.0f} ms)",
        ),
        (
            "CPUs: server / Chromium / sender / other",
            f"{cpu.get('server_cpus', 0):.2f} / {cpu.get('browser_cpus', 0):.2f} / "
            f"{cpu.get('sender_cpus', 0):.2f} / {cpu.get('other_cpus', 0):.2f}"
            + (
                f" (other load on Chromium's CPU {cpu.get('browser_cpu_other_load', 0):.0%})"
                if args.pin
                else ""
            ),
        ),
        ("page errors", str(len(r.get("page_errors", [])))),
    ]
    width = max(len(a) for a, _ in lines)
    out = [f"{a.ljust(width)}  {b}" for a, b in lines]
    tries = r.get("tries", [])
    if len(tries) > 1:
        others = ", ".join(f"{x['other_cpus']:.2f}" for x in tries)
        out.append(f"\n{len(tries)} runs (other processes' CPUs: {others}): the quietest shown")
    if cpu.get("other_cpus", 0.0) > NOISY_CPUS:
        out.append(
            f"\nnoisy: other processes used {cpu['other_cpus']:.2f} CPUs during the run; tasks "
            "may have waited for a CPU (see the CPU time of each)"
        )
    by_event = t.get("live_self_ms_by_event")
    if by_event:
        secs = t["live_seconds"]
        out.append(f"\nmain thread while live, self time by trace event (of {secs:.1f} s):")
        out += [
            f"  {v:8.1f} ms {n:7,} x {v / n:5.1f} ms  {k}"
            for k, (v, n) in list(by_event.items())[:10]
        ]
    shown = [("long task", lt) for lt in t.get("long_tasks", [])[:10]]
    shown += [("task", lt) for lt in t.get("longest_tasks_under_50ms", [])[: 3 - len(shown)]]
    for name, lt in shown:
        inside = ", ".join(f"{k} {v:.0f}" for k, v in list(lt["inside_ms_inclusive"].items())[:5])
        cpu_ms = "?" if lt["cpu_ms"] is None else f"{lt['cpu_ms']:.0f}"
        out.append(
            f"\n{name} {lt['ms']:.0f} ms ({cpu_ms} ms CPU) at {lt['at_s']:.1f} s ({lt['during']}), "
            f"inside (ms, inclusive): {inside}"
        )
    return "\n".join(out)


def failures(r: dict[str, Any]) -> list[str]:
    found = []
    t = r.get("trace", {})
    if "error" in t or "tasks_over_50ms" not in t:
        found.append(f"trace: {t.get('error', 'not analysed')}")
    elif t["tasks_over_50ms"]:
        found.append(f"{t['tasks_over_50ms']} main-thread tasks over {LONG_TASK_MS:g} ms")
    if r.get("page_long_tasks_ms"):
        found.append(f"{len(r['page_long_tasks_ms'])} long tasks seen by the page")
    rows = r.get("rows", {})
    if rows.get("count") != CAPTURES or not rows.get("newest_500_in_order"):
        found.append(f"rows: {rows.get('count')} (want the newest {CAPTURES}, in order)")
    if not rows.get("newest_shown"):
        found.append("the newest capture's row is missing")
    for key in ("clicks_live", "clicks_quiet"):
        c = r.get(key, {})
        if c.get("painted", 0) < c.get("clicks", 0) or not c.get("clicks"):
            found.append(f"{key}: {c.get('painted', 0)} of {c.get('clicks', 0)} details painted")
    s = r.get("sender", {})
    if s.get("error") or s.get("answered_2xx", 0) < s.get("sent", 1):
        found.append(f"sender: {s.get('error') or 'not every POST answered 2xx'}")
    return found


def one_try(args: argparse.Namespace, base: str, server_pid: int) -> dict[str, Any]:
    """A new bin filled with CAPTURES captures, then the page's run."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        token = client.post(f"{base}/api/bins", json={}).json()["token"]
    result: dict[str, Any] = {"prefill": prefill(base, token, CAPTURES)}
    log(f"bin filled: {CAPTURES} captures in {result['prefill']['seconds']:.1f} s")
    log(
        f"Chromium at {VIEWPORT['width']}x{VIEWPORT['height']}, {args.rate:g}/s for "
        f"{args.seconds:g} s, tracing"
    )
    result.update(run_page(args, base, token, server_pid))
    return result


def main() -> int:
    args = parse_args()
    started = datetime.now()
    host = machine()
    log(f"app at commit {host['git_commit'][:9]}{' (uncommitted changes)' * host['git_dirty']}")
    flags = make_run_flags()
    # run.py's start_daphne reads these two settings of its Config.
    server_config = SimpleNamespace(pin=args.pin, daphne_flags=flags)
    result: dict[str, Any] = {}
    tries: list[dict[str, Any]] = []
    error = None
    with tempfile.TemporaryDirectory(prefix="inspector-page-") as tmp:
        env = {**base_env(), "DATA_DIR": tmp, "CAPTURES_PER_BIN": str(CAPTURES)}
        migrate(env)
        server = start_daphne("page", APP, env, Path(tmp), server_config, "/healthz")  # type: ignore[arg-type]
        try:
            for attempt in range(1, args.tries + 1):
                found = one_try(args, server.base, server.pid)
                other = found.get("cpu", {}).get("other_cpus", 0.0)
                tries.append(
                    {
                        "other_cpus": other,
                        "tasks_over_50ms": found.get("trace", {}).get("tasks_over_50ms"),
                        "problems": failures(found),
                    }
                )
                if not result or other < result.get("cpu", {}).get("other_cpus", 0.0):
                    result = found
                if other <= NOISY_CPUS or not failures(found):
                    break
                if attempt < args.tries:
                    log(f"other processes used {other:.2f} CPUs meanwhile: once more")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log(f"failed: {error}\n{server.log_tail()}")
        finally:
            server.stop()
            os.sched_setaffinity(0, ALL_CPUS)
    result["tries"] = tries
    raw = result.pop("_raw_trace", None)
    elapsed = (datetime.now() - started).total_seconds()
    problems = ([error] if error else []) + failures(result)
    text = table(result, args)
    pinning = (
        f"server + sender on CPU {SERVER_CPU}, Chromium on CPU {BROWSER_CPU}"
        if args.pin
        else "nothing pinned"
    )
    head = (
        f"machine: {host['cpus']} CPUs ({host['cpu_model']}); {pinning}; Chromium "
        f"{result.get('chromium', '?')} at {VIEWPORT['width']}x{VIEWPORT['height']}; a bin of "
        f"{CAPTURES} captures receiving {args.rate:g}/s for {args.seconds:g} s"
    )
    if args.try_css or args.try_js:
        head += f"\nEXPERIMENT, the page changed: css {args.try_css!r}, js {args.try_js!r}"
    print(f"\n{head}\n\n{text}\n", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"page-{started:%Y%m%d-%H%M%S}"
    if raw is not None and not args.no_trace_file:
        (RESULTS / f"{stem}.trace.json.gz").write_bytes(gzip.compress(raw, 6))
        result["trace_file"] = f"bench/results/{stem}.trace.json.gz"
    report = {
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": elapsed,
        "config": {
            "seconds": args.seconds,
            "rate": args.rate,
            "pin": args.pin,
            "flags": flags,
            "try_css": args.try_css,
            "try_js": args.try_js,
        },
        "machine": host,
        "result": result,
        "problems": problems,
        "summary": f"{head}\n\n{text}",
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    for problem in problems:
        log(f"FAIL: {problem}")
    log(f"done in {elapsed:.0f} s; results in bench/results/{stem}.json")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
