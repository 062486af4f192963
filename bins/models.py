"""Bins and the requests captured in them.

A capture is stored exactly as it arrived. Header values are bytes on the wire; they are kept
as text decoded with UTF-8 and `surrogateescape`, so any byte sequence round-trips exactly
(`encode("utf-8", "surrogateescape")` gives back the bytes), and serialised with JSON escapes so
that every database accepts them (PostgreSQL refuses NUL in text and lone surrogates in jsonb).
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models, transaction
from django.urls import reverse
from django.utils import timezone

if TYPE_CHECKING:
    from .hosts import Bases

DEFAULT_RESPONSE: dict[str, Any] = {
    "status": 200,
    "headers": [["content-type", "application/json"]],
    "body": '{"ok": true}',
    "delay_ms": 0,
}


def wire_to_text(raw: bytes) -> str:
    """Bytes from the wire as text that encodes back to the same bytes."""
    return raw.decode("utf-8", "surrogateescape")


def text_to_wire(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def display_text(text: str) -> str:
    """Readable form of wire text: bytes that are not UTF-8 show as `\\xNN`."""
    if text.isascii():  # nearly every header: nothing to do
        return text
    return text_to_wire(text).decode("utf-8", "backslashreplace")


def display_pairs(pairs: list[list[str]]) -> list[list[str]]:
    return [[display_text(n), display_text(v)] for n, v in pairs]


def utf8_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


# The inspector page lists at most this many captures of a bin (newest first); the API pages on.
PAGE_LIST_MAX = 500


def page_list_limit() -> int:
    """How many captures the page lists: what the bin keeps, up to PAGE_LIST_MAX."""
    return min(settings.CAPTURES_PER_BIN or PAGE_LIST_MAX, PAGE_LIST_MAX)


def full_response(stored: dict[str, Any] | None) -> dict[str, Any]:
    """A bin's `response` settings with the defaults filled in."""
    return {**DEFAULT_RESPONSE, **(stored or {})}


def headers_base64(pairs: list[list[str]]) -> list[list[str]] | None:
    """The exact header bytes, base64, where a header is not valid UTF-8 (else None): the
    `headers` pairs show such bytes as `\\xNN`, which a replay must not send."""
    if not any(_has_surrogates(n) or _has_surrogates(v) for n, v in pairs):
        return None
    return [
        [base64.b64encode(text_to_wire(n)).decode(), base64.b64encode(text_to_wire(v)).decode()]
        for n, v in pairs
    ]


def _has_surrogates(text: str) -> bool:
    return not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text)


def capture_json(c: Any, body: bytes | None) -> dict[str, Any]:
    """A capture's JSON shape: the one place it is built, for the API, the JSON stream and the
    page. `c` is a stored Capture or a capture on its way to the database (`capture.Pending`);
    `body` is its body, or None where a list or stream leaves a large body out
    (`body_omitted`: fetch the capture or its /raw)."""
    pairs = c.headers
    return {
        "id": c.seq,
        "method": c.method,
        "path": c.path,
        "query_string": c.query_string,
        "headers": display_pairs(pairs),
        "headers_base64": headers_base64(pairs),
        "body_size": c.body_size,
        "body_base64": None if body is None else base64.b64encode(body).decode("ascii"),
        "body_text": None if body is None else utf8_or_none(body),
        "body_omitted": body is None,
        "content_type": c.content_type,
        "remote_addr": c.remote_addr,
        "received_at": c.received_at.isoformat().replace("+00:00", "Z"),
        "provider": c.provider or None,
        "event_type": c.event_type or None,
        "signature": c.signature,
        "event_id": c.event_id or None,
        "duplicate_of": c.duplicate_of,
        "event_delivery": c.event_delivery or None,
        "event_after_s": None if c.event_after_ms is None else c.event_after_ms / 1000,
        "answer": c.answer,
    }


class Bin(models.Model):
    token = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    # A short label the owner gives the bin (shown in the page's list of bins).
    name = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    # Last capture or visit; bins unused for BIN_EXPIRE_DAYS are deleted (see `delete_expired`).
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)
    response = models.JSONField(default=dict)
    # Ordered `{"name", "match", "response"}` rules; the first that matches answers.
    rules = models.JSONField(default=list)
    # `{"scheme", "secret", ...}`: how captures' signatures are checked, or null.
    signature = models.JSONField(null=True, default=None)
    # Every new capture is also sent here (auto-forward), or nowhere when empty.
    forward_url = models.TextField(blank=True, default="")
    # The last resend target, prefilled on the page so resending is one click.
    last_target_url = models.TextField(blank=True, default="")
    # The number of the bin's last capture: captures are numbered 1, 2, 3... per bin, in commit
    # order (the writer takes the next numbers and holds this row until it commits).
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return str(self.token)

    @property
    def response_config(self) -> dict[str, Any]:
        return full_response(self.response)

    def capture_url(self, bases: Bases) -> str:
        return f"{bases.capture}/{self.token}"

    def inspect_path(self) -> str:
        return reverse("bins:inspect", args=[self.token])

    def settings_json(self, bases: Bases) -> dict[str, Any]:
        return {
            "token": str(self.token),
            "name": self.name or None,
            "capture_url": self.capture_url(bases),
            "inspect_url": bases.app + self.inspect_path(),
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "response": self.response_config,
            "rules": self.rules,
            "forward_url": self.forward_url or None,
            "last_target_url": self.last_target_url or None,
            "signature": self.signature,
            # Captures received in all (numbered 1 to this) and kept now: the difference was
            # pruned (CAPTURES_PER_BIN) or deleted.
            "captures_received": self.last_seq,
            "captures_kept": self.captures.count(),
        }

    def remember_target(self, url: str) -> None:
        if self.last_target_url != url:
            self.last_target_url = url
            Bin.objects.filter(pk=self.pk).update(last_target_url=url)

    def touch(self) -> None:
        """Mark the bin as used now (at most once a minute: it is a write)."""
        now = timezone.now()
        if (now - self.last_used_at).total_seconds() >= 60:
            self.last_used_at = now
            Bin.objects.filter(pk=self.pk).update(last_used_at=now)

    def delete_captures(self, seqs: list[int] | None = None) -> int:
        """Delete the bin's captures (or those numbered `seqs`) without loading them: the ORM's
        delete() would read every body to cascade. Returns how many were deleted."""
        capture, delivery, forward = (
            Capture._meta.db_table,
            Delivery._meta.db_table,
            Forward._meta.db_table,
        )
        where, params = "bin_id = %s", [self.pk]
        if seqs is not None:
            if not seqs:
                return 0
            where += f" AND seq IN ({', '.join(['%s'] * len(seqs))})"
            params += list(seqs)
        with transaction.atomic(), connection.cursor() as cursor:
            for table in (delivery, forward):
                cursor.execute(
                    f"DELETE FROM {table} WHERE capture_id IN "
                    f"(SELECT id FROM {capture} WHERE {where})",
                    params,
                )
            cursor.execute(f"DELETE FROM {capture} WHERE {where}", params)
            return cursor.rowcount

    @classmethod
    def delete_expired(cls, now: datetime | None = None) -> int:
        """Delete bins unused for BIN_EXPIRE_DAYS (0: bins never expire); returns how many."""
        days = settings.BIN_EXPIRE_DAYS
        if days <= 0:
            return 0
        cutoff = (now or timezone.now()) - timedelta(days=days)
        expired = list(cls.objects.filter(last_used_at__lt=cutoff).values_list("id", flat=True))
        for bin_id in expired:
            # A bin at a time, in plain SQL: short transactions that never hold the database
            # (SQLite's one write lock) long enough to stall the capture writer.
            bin_ = cls(pk=bin_id)
            with transaction.atomic():
                bin_.delete_captures()
                cls.objects.filter(pk=bin_id).delete()
        return len(expired)


def take_numbers(
    cursor: Any, bin_id: int, count: int, touch: datetime | None = None, mark: str = "%s"
) -> int | None:
    """Take the next `count` capture numbers of a bin, in a transaction (and mark it used at
    `touch`, if given); the first of them, or None if the bin is gone. The bin's row stays
    locked until the transaction ends: captures of one bin commit in number order, whatever
    process stores them. `mark` is the cursor's parameter mark (a plain sqlite3 cursor's is
    "?")."""
    table = Bin._meta.db_table
    if touch is None:
        # No indexed column changes: PostgreSQL updates the row in place (HOT), cheaply.
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + {mark} WHERE id = {mark} RETURNING last_seq",
            [count, bin_id],
        )
    else:
        used = connection.ops.adapt_datetimefield_value(touch)
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + {mark}, last_used_at = {mark} "
            f"WHERE id = {mark} RETURNING last_seq",
            [count, used, bin_id],
        )
    row = cursor.fetchone()
    return None if row is None else row[0] - count + 1


class Capture(models.Model):
    # No index of its own: the (bin, seq) unique index serves every lookup by bin.
    bin = models.ForeignKey(Bin, on_delete=models.CASCADE, related_name="captures", db_index=False)
    # The capture's number in its bin (1, 2, 3... in commit order): its public id.
    seq = models.BigIntegerField(default=None)
    method = models.TextField()
    # The sub-path after the token, as sent (percent-encoding kept), starting with "/" or empty.
    path = models.TextField(blank=True)
    query_string = models.TextField(blank=True)
    # JSON list of [name, value] pairs in received order (see the module docstring).
    headers_json = models.TextField(default="[]")
    body = models.BinaryField(default=b"")
    body_size = models.PositiveBigIntegerField(default=0)
    content_type = models.TextField(blank=True)
    remote_addr = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    # Who sent it and what, where recognised (see `providers`), and the provider's event or
    # delivery id, by which retries of one event are told apart.
    provider = models.TextField(blank=True, default="")
    event_type = models.TextField(blank=True, default="")
    event_id = models.TextField(blank=True, default="")
    # The number of the bin's first capture with the same event_id (a retry), else null.
    duplicate_of = models.BigIntegerField(null=True, default=None)
    # Which delivery of its event this is (1 for the first; 0 without an event id), and how
    # long after the first it arrived: a provider's retry schedule, read off the captures.
    event_delivery = models.PositiveIntegerField(default=0)
    event_after_ms = models.BigIntegerField(null=True, default=None)
    # `{"scheme", "valid", "reason"}` when the bin checks signatures, else null.
    signature = models.JSONField(null=True, default=None)
    # `{"status", "rule"}`: what it was answered, and by which rule or step.
    answer = models.JSONField(null=True, default=None)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bin", "seq"], name="capture_bin_seq")]
        # Only captures with an event id are indexed by it (retries are found by it).
        indexes = [
            models.Index(
                fields=["bin", "event_id"],
                name="capture_bin_event",
                condition=~models.Q(event_id=""),
            )
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.method} {self.path or '/'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A capture made through the ORM (tests, fixtures) takes its bin's next number too."""
        if self.seq is None:
            with transaction.atomic(), connection.cursor() as cursor:
                self.seq = take_numbers(cursor, self.bin_id, 1, timezone.now())
                if self.seq is None:
                    raise Bin.DoesNotExist(f"no bin {self.bin_id}")
                super().save(*args, **kwargs)
        else:
            super().save(*args, **kwargs)

    @property
    def headers(self) -> list[list[str]]:
        return json.loads(self.headers_json)

    @property
    def display_headers(self) -> list[list[str]]:
        return display_pairs(self.headers)

    @property
    def body_bytes(self) -> bytes:
        # PostgreSQL hands BinaryField back as memoryview.
        return bytes(self.body)

    @property
    def body_text(self) -> str | None:
        return utf8_or_none(self.body_bytes)

    def as_json(self) -> dict[str, Any]:
        """The whole capture (one capture's GET): the body always inline."""
        return capture_json(self, self.body_bytes)

    @classmethod
    def prune(cls, bin_id: int, upto: int, floor: int = 0) -> int:
        """Delete a bin's captures numbered above `floor` up to `upto` (plain SQL, bodies never
        loaded); returns how many were deleted. `floor` (what was pruned before) keeps the
        delete off rows already gone."""
        capture, delivery, forward = (
            cls._meta.db_table,
            Delivery._meta.db_table,
            Forward._meta.db_table,
        )
        bounds = [bin_id, floor, upto]
        with transaction.atomic(), connection.cursor() as cursor:
            for table in (delivery, forward):
                cursor.execute(
                    f"DELETE FROM {table} WHERE capture_id IN (SELECT id FROM {capture} "
                    "WHERE bin_id = %s AND seq > %s AND seq <= %s)",
                    bounds,
                )
            cursor.execute(
                f"DELETE FROM {capture} WHERE bin_id = %s AND seq > %s AND seq <= %s", bounds
            )
            return cursor.rowcount

    @classmethod
    def prune_all(cls) -> int:
        """Keep CAPTURES_PER_BIN captures in every bin (the `prune` command)."""
        keep = settings.CAPTURES_PER_BIN
        if keep <= 0:
            return 0  # 0 = unlimited: nothing is ever pruned
        deleted = 0
        for bin_id, last_seq in Bin.objects.filter(last_seq__gt=keep).values_list("id", "last_seq"):
            deleted += cls.prune(bin_id, last_seq - keep)
        return deleted


class Delivery(models.Model):
    """One send of a capture to a target: a resend from the page or API, an auto-forward
    attempt, or a replay by the forwarder command on someone's laptop (reported back)."""

    RESEND = "resend"
    FORWARD = "forward"
    FORWARDER = "forwarder"

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="deliveries")
    kind = models.CharField(max_length=10, default=RESEND)
    target_url = models.TextField()
    method = models.TextField()
    # True when method, headers or body were changed for this send only.
    edited = models.BooleanField(default=False)
    # True when the signature headers were made anew for the bytes sent (see `providers`).
    resigned = models.BooleanField(default=False)
    # What was sent, when it was not the capture as captured (edited or re-signed): the header
    # pairs as JSON and the body; empty/null otherwise.
    sent_headers_json = models.TextField(blank=True, default="")
    sent_body = models.BinaryField(null=True, default=None)
    # Auto-forward: which attempt this was (1 for the first; retried with backoff).
    attempt = models.IntegerField(default=1)
    sent_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.FloatField(default=0)
    status = models.IntegerField(null=True)
    response_headers_json = models.TextField(default="[]")
    # The first bytes of the answer (see outgoing.KEEP_RESPONSE_BYTES); size is the whole.
    response_body = models.BinaryField(default=b"")
    response_size = models.PositiveBigIntegerField(default=0)
    # Why no answer came, in plain words; empty when the target answered.
    error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["capture", "-id"], name="delivery_capture_newest")]

    def __str__(self) -> str:
        return f"{self.method} {self.target_url}: {self.status or self.error}"

    @property
    def response_text(self) -> str:
        return bytes(self.response_body).decode("utf-8", "backslashreplace")

    @property
    def response_headers(self) -> list[list[str]]:
        return json.loads(self.response_headers_json)

    @property
    def sent_headers(self) -> list[list[str]] | None:
        return json.loads(self.sent_headers_json) if self.sent_headers_json else None

    def as_json(self, capture_seq: int | None = None) -> dict[str, Any]:
        body = bytes(self.response_body)
        sent_body = None if self.sent_body is None else bytes(self.sent_body)
        sent_headers = self.sent_headers
        return {
            "id": self.pk,
            "capture_id": capture_seq if capture_seq is not None else self.capture.seq,
            "kind": self.kind,
            "target_url": self.target_url,
            "method": self.method,
            "edited": self.edited,
            "resigned": self.resigned,
            "attempt": self.attempt,
            "sent_headers": None if sent_headers is None else display_pairs(sent_headers),
            "sent_body_base64": (
                None if sent_body is None else base64.b64encode(sent_body).decode("ascii")
            ),
            "sent_at": self.sent_at.isoformat().replace("+00:00", "Z"),
            "duration_ms": self.duration_ms,
            "status": self.status,
            "headers": self.response_headers,
            "body_base64": base64.b64encode(body).decode("ascii"),
            "body_text": self.response_text,
            "body_size": self.response_size,
            "body_truncated": len(body) < self.response_size,
            "error": self.error or None,
        }


class Forward(models.Model):
    """A capture waiting to be auto-forwarded (the outbox): written in the same transaction as
    the capture, so it survives a restart, and claimed by one process at a time, so a capture
    is forwarded once however many processes run. Gone once delivered or given up."""

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="+")
    target_url = models.TextField()
    attempts = models.IntegerField(default=0)
    # When the next attempt is due.
    due_at = models.DateTimeField(default=timezone.now, db_index=True)
    # A process that claimed it is sending it until then; after that it is due again (a
    # process that died while sending).
    claimed_until = models.DateTimeField(null=True, default=None)

    def __str__(self) -> str:
        return f"forward of capture {self.capture_id} to {self.target_url}"
