"""Play the receiver: rules, steps ("fail three times, then succeed") and what each capture was
answered, against a real server process."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def new_bin(base: str, **settings) -> str:
    r = httpx.post(f"{base}/api/bins", json=settings)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def captures(base: str, token: str) -> list[dict]:
    r = httpx.get(f"{base}/api/bins/{token}/captures", params={"limit": 500})
    return r.json()["captures"][::-1]


async def fire(requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as http:
        return await asyncio.gather(*(http.post(url, **kw) for url, kw in requests))


FAIL_THREE = {
    "steps": [{"status": 500, "times": 3, "body": "try again"}, {"status": 200}],
}


def test_fail_three_times_per_bin_under_fifty_concurrent_requests(servers):
    a, b = servers(), servers()
    token = new_bin(a.base, response={**FAIL_THREE, "per": "bin"})
    answers = asyncio.run(
        fire([(f"{(a, b)[i % 2].base}/{token}/{i}", {"content": b"x"}) for i in range(50)])
    )
    statuses = [r.status_code for r in answers]
    assert statuses.count(500) == 3 and statuses.count(200) == 47
    assert {r.text for r in answers if r.status_code == 500} == {"try again"}
    got = captures(a.base, token)
    # The captures numbered 1-3 in commit order got the failures, whichever request they were.
    assert [c["answer"]["status"] for c in got] == [500] * 3 + [200] * 47
    assert [c["answer"]["rule"] for c in got[:4]] == [
        "step 1 of 2",
        "step 1 of 2",
        "step 1 of 2",
        "step 2 of 2",
    ]
    # Each capture's answer is what its client got.
    by_path = {c["path"]: c["answer"]["status"] for c in got}
    assert all(by_path[f"/{i}"] == r.status_code for i, r in enumerate(answers))


def test_fail_three_times_per_event_counts_each_events_deliveries(servers):
    server = servers()
    token = new_bin(server.base, response={**FAIL_THREE, "per": "event"})
    requests = [
        (
            f"{server.base}/{token}/{e}/{k}",
            {
                "content": b"{}",
                "headers": {"x-github-event": "push", "x-github-delivery": f"ev-{e}"},
            },
        )
        for e in range(10)
        for k in range(5)
    ]
    answers = asyncio.run(fire(requests))
    assert [r.status_code for r in answers].count(500) == 30
    got = captures(server.base, token)
    for e in range(10):
        mine = sorted(
            (c for c in got if c["event_id"] == f"ev-{e}"), key=lambda c: c["event_delivery"]
        )
        assert [c["answer"]["status"] for c in mine] == [500, 500, 500, 200, 200]
    by_path = {c["path"]: c["answer"]["status"] for c in got}
    assert all(
        by_path[url.split(token)[1]] == r.status_code
        for (url, _), r in zip(requests, answers, strict=True)
    )


def test_rules_answer_in_order_first_match_wins_else_the_default(servers):
    server = servers()
    rules = [
        {
            "name": "stripe paid",
            "match": {"json": ["/type", "invoice.paid"]},
            "response": {"status": 201},
        },
        {
            "name": "posts to /a",
            "match": {"method": "POST", "path": "/a"},
            "response": {"status": 202},
        },
        {
            "name": "tagged",
            "match": {"header": ["x-tag", "yes"]},
            "response": {"status": 203, "body": "tagged"},
        },
        {
            "name": "github",
            "match": {"provider": "github", "event_type": "ping"},
            "response": {"status": 204},
        },
    ]
    token = new_bin(server.base, rules=rules, response={"status": 299})
    base = f"{server.base}/{token}"
    cases = [
        ("POST", "/a/b", {"content": json.dumps({"type": "invoice.paid"})}, 201, "stripe paid"),
        ("POST", "/a/b", {"content": b"{}", "headers": {"x-tag": "yes"}}, 202, "posts to /a"),
        ("PUT", "/a", {"headers": {"x-tag": "oh yes indeed"}}, 203, "tagged"),
        (
            "POST",
            "/",
            {"headers": {"x-github-event": "ping", "x-github-delivery": "d1"}},
            204,
            "github",
        ),
        ("GET", "/other", {}, 299, None),
    ]
    for method, path, kwargs, status, _rule in cases:
        r = httpx.request(method, base + path, **kwargs)
        assert r.status_code == status, (method, path, r.status_code)
    got = captures(server.base, token)
    assert [(c["answer"]["status"], c["answer"]["rule"]) for c in got] == [
        (status, rule) for *_, status, rule in cases
    ]
    assert got[3]["provider"] == "github"
    # Rules are part of the bin's settings, as given.
    assert [r["name"] for r in httpx.get(f"{server.base}/api/bins/{token}").json()["rules"]] == [
        r["name"] for r in rules
    ]


def test_a_delayed_reply_holds_one_request_never_the_server(servers):
    server = servers()
    slow = new_bin(server.base, response={"delay_ms": 3000, "body": "slow"})
    quick = new_bin(server.base)

    async def race() -> tuple[float, list[float]]:
        async with httpx.AsyncClient(timeout=30) as http:
            started = time.monotonic()
            slow_task = asyncio.create_task(http.post(f"{server.base}/{slow}", content=b"s"))
            await asyncio.sleep(0.2)
            quick_times = []
            for i in range(20):
                r = await http.post(f"{server.base}/{quick}/{i}", content=b"q")
                assert r.status_code == 200
                quick_times.append(time.monotonic() - started)
            slow_answer = await slow_task
            assert slow_answer.text == "slow"
            return time.monotonic() - started, quick_times

    slow_done, quick_times = asyncio.run(race())
    # The other bin was answered, all twenty, while the slow reply was still being held.
    assert max(quick_times) < 3.0 <= slow_done


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"response": {"steps": [{"status": 700}]}}, "response.steps[0].status"),
        ({"response": {"steps": [{"times": 0}]}}, "response.steps[0].times"),
        ({"response": {"steps": "fail"}}, "response.steps"),
        ({"response": {"per": "day"}}, "response.per"),
        (
            {"response": {"steps": [{"headers": [["Set-Cookie", "a=1"]]}]}},
            "response.steps[0].headers[0]",
        ),
        ({"rules": [{"match": {"path": "no-slash"}}]}, "rules[0].match.path"),
        ({"rules": [{"match": {"json": ["type", 1]}}]}, "rules[0].match.json"),
        ({"rules": [{"match": {"header": ["x"]}}]}, "rules[0].match.header"),
        ({"rules": [{"match": {"colour": "red"}}]}, "rules[0].match"),
        ({"rules": [{"name": "", "match": {}}]}, "rules[0].name"),
        ({"rules": [{"response": {"status": 101}}]}, "rules[0].response.status"),
        ({"rules": {"name": "x"}}, "rules"),
        ({"name": "x" * 101}, "name"),
        ({"signature": {"scheme": "stripe"}}, "signature.secret"),
        ({"signature": {"scheme": "carrier-pigeon", "secret": "s"}}, "signature.scheme"),
    ],
)
def test_invalid_settings_are_a_400_naming_the_field_and_change_nothing(servers, settings, field):
    server = servers()
    token = new_bin(server.base, name="kept", rules=[{"name": "r", "match": {}}])
    before = httpx.get(f"{server.base}/api/bins/{token}").json()
    r = httpx.patch(f"{server.base}/api/bins/{token}", json=settings)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"], r.json()
    assert httpx.get(f"{server.base}/api/bins/{token}").json() == before
