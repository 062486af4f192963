"""What a bin answers each capture: its rules, its default response, and their steps.

A bin's settings (`response`, `rules`, see the contract) become a `Plan` once, when the capture
path loads the bin; the writer asks it for each capture once that capture has its number, inside
the transaction that stores it, so "the Nth capture" and "the Nth delivery of an event" are
exact however many requests arrive together and however many processes store them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .models import full_response
from .validation import header_problem

# Rules read a JSON body only up to this size (a JSON pointer condition on a larger body fails).
JSON_MATCH_LIMIT = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    delay_ms: int = 0


def reply_from(config: dict[str, Any]) -> Reply:
    """A reply from a full response config (status, headers, body, delay_ms).

    The API refuses what a reply may not be (see `validation`); this holds for settings stored
    before those rules too: a status outside 200-599 is answered as 200, a header that may not
    be sent is left out.
    """
    status = config.get("status")
    status = status if type(status) is int and 200 <= status <= 599 else 200
    headers = [
        (n.encode("latin-1"), v.encode("latin-1"))
        for n, v in config.get("headers") or []
        if header_problem(n, v, reply=True) is None
    ]
    delay = config.get("delay_ms")
    body = str(config.get("body", "")).encode("utf-8")
    return Reply(status, headers, body, delay if type(delay) is int else 0)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one capture is answered, and the record of it (`answer` in its JSON, kept as text
    too: the writer stores the same few answers over and over)."""

    reply: Reply
    record: dict[str, Any]
    record_json: str


def answer_of(reply: Reply, rule: str | None) -> Answer:
    record = {"status": reply.status, "rule": rule}
    return Answer(reply, record, orjson.dumps(record).decode())


@dataclass(frozen=True, slots=True)
class Answerer:
    """One response (the default, or a rule's): its steps, and whether they count the bin's
    captures or each event's deliveries."""

    steps: tuple[tuple[Answer, int], ...]  # (answer, times); the last repeats
    per: str  # "bin" or "event"

    def answer(self, seq: int, delivery: int) -> Answer:
        if len(self.steps) == 1:
            return self.steps[0][0]
        n = seq if self.per == "bin" else delivery
        upto = 0
        for answer, times in self.steps:
            upto += times
            if n <= upto:
                return answer
        return self.steps[-1][0]


def answerer(config: dict[str, Any], label: str | None) -> Answerer:
    """An Answerer from a full response config; each step is that response with the step's own
    fields over it."""
    steps = config.get("steps") or []
    if not steps:
        return Answerer(((answer_of(reply_from(config), label), 1),), "bin")
    made = []
    for i, step in enumerate(steps, 1):
        merged = {**config, **{k: v for k, v in step.items() if k != "times"}}
        times = step.get("times", 1)
        where = f"step {i} of {len(steps)}"
        made.append(
            (
                answer_of(reply_from(merged), f"{label}, {where}" if label else where),
                times if type(times) is int and times > 0 else 1,
            )
        )
    return Answerer(tuple(made), config.get("per") or "bin")


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: dict[str, Any]
    answerer: Answerer

    def matches(self, c: Any, parsed: list[Any]) -> bool:
        m = self.match
        if "method" in m and c.method.upper() != str(m["method"]).upper():
            return False
        if "path" in m and not c.path.startswith(m["path"]):
            return False
        if "header" in m:
            name, part = m["header"]
            name = name.lower()
            if not any(n == name and part in v for n, v in c.headers):
                return False
        if "provider" in m and c.provider != m["provider"]:
            return False
        if "event_type" in m and c.event_type != m["event_type"]:
            return False
        if "json" in m:
            pointer, wanted = m["json"]
            if not parsed:  # the body is parsed once per capture, for the first rule that asks
                parsed.append(_json_body(c.body))
            if resolve_pointer(parsed[0], pointer) != (True, wanted):
                return False
        return True


_MISSING = object()


def _json_body(body: bytes) -> Any:
    if len(body) > JSON_MATCH_LIMIT:
        return _MISSING
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _MISSING


def resolve_pointer(document: Any, pointer: str) -> tuple[bool, Any]:
    """(found, value) of an RFC 6901 JSON pointer in a parsed document."""
    if document is _MISSING:
        return False, None
    if pointer == "":
        return True, document
    current = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            return False, None
    return True, current


@dataclass(frozen=True, slots=True)
class Plan:
    rules: tuple[Rule, ...]
    default: Answerer

    @property
    def fixed(self) -> Reply | None:
        """The one reply every capture gets (no rules, no steps), or None."""
        if not self.rules and len(self.default.steps) == 1:
            return self.default.steps[0][0].reply
        return None

    def answer(self, c: Any, seq: int, delivery: int) -> Answer:
        """The reply for capture number `seq` of the bin, the `delivery`-th of its event."""
        parsed: list[Any] = []
        for rule in self.rules:
            if rule.matches(c, parsed):
                return rule.answerer.answer(seq, delivery)
        return self.default.answer(seq, delivery)


def plan_for(response: dict[str, Any] | None, rules: list[dict[str, Any]] | None) -> Plan:
    """A bin's Plan. A rule's response is the bin's response with the rule's fields over it
    (its own steps, or none)."""
    base = full_response(response)
    plain = {k: v for k, v in base.items() if k not in ("steps", "per")}
    made = []
    for i, rule in enumerate(rules or [], 1):
        if not isinstance(rule, dict):
            continue
        name = str(rule.get("name") or f"rule {i}")
        config = {**plain, **(rule.get("response") or {})}
        made.append(Rule(name, rule.get("match") or {}, answerer(config, name)))
    return Plan(tuple(made), answerer(base, None))
