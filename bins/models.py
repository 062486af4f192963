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


def capture_json(c: Any) -> dict[str, Any]:
    """A capture's JSON shape: the one place it is built, for the API, the JSON stream and the
    page. `c` is a stored Capture or a capture on its way to the database (`capture.Pending`)."""
    body = c.body_bytes
    return {
        "id": c.pk,
        "method": c.method,
        "path": c.path,
        "query_string": c.query_string,
        "headers": display_pairs(c.headers),
        "body_size": c.body_size,
        "body_base64": base64.b64encode(body).decode("ascii"),
        "body_text": utf8_or_none(body),
        "content_type": c.content_type,
        "remote_addr": c.remote_addr,
        "received_at": c.received_at.isoformat().replace("+00:00", "Z"),
        "signature": None,
        "event_id": None,
        "duplicate_of": None,
    }


class Bin(models.Model):
    token = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    # Last capture or visit; bins unused for BIN_EXPIRE_DAYS are deleted (see `delete_expired`).
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)
    response = models.JSONField(default=dict)
    # Every new capture is also sent here (auto-forward), or nowhere when null.
    forward_url = models.TextField(blank=True, default="")
    # The last resend target, prefilled on the page so resending is one click.
    last_target_url = models.TextField(blank=True, default="")

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
            "capture_url": self.capture_url(bases),
            "inspect_url": bases.app + self.inspect_path(),
            "created_at": self.created_at.isoformat(),
            "response": self.response_config,
            "forward_url": self.forward_url or None,
            "last_target_url": self.last_target_url or None,
            "signature": None,
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

    @classmethod
    def delete_expired(cls, now: datetime | None = None) -> int:
        """Delete bins unused for BIN_EXPIRE_DAYS (0: bins never expire); returns how many."""
        days = settings.BIN_EXPIRE_DAYS
        if days <= 0:
            return 0
        cutoff = (now or timezone.now()) - timedelta(days=days)
        expired = list(cls.objects.filter(last_used_at__lt=cutoff).values_list("id", flat=True))
        capture, delivery = Capture._meta.db_table, Delivery._meta.db_table
        for bin_id in expired:
            # A bin at a time, in plain SQL: short transactions that never hold the database
            # (SQLite's one write lock) long enough to stall the capture writer.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {delivery} WHERE capture_id IN "
                    f"(SELECT id FROM {capture} WHERE bin_id = %s)",
                    [bin_id],
                )
                cursor.execute(f"DELETE FROM {capture} WHERE bin_id = %s", [bin_id])
                cursor.execute(f"DELETE FROM {cls._meta.db_table} WHERE id = %s", [bin_id])
        return len(expired)


class Capture(models.Model):
    bin = models.ForeignKey(Bin, on_delete=models.CASCADE, related_name="captures")
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

    class Meta:
        indexes = [models.Index(fields=["bin", "-id"], name="capture_bin_newest")]

    def __str__(self) -> str:
        return f"{self.method} {self.path or '/'}"

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
        return capture_json(self)

    @classmethod
    def prune_bins(
        cls, bin_ids: list[int], keep: int | None = None, floors: dict[int, int] | None = None
    ) -> int:
        """Keep the newest `keep` captures of each bin; returns how many were deleted.

        `floors` (bin id -> id already pruned up to, kept by the caller and updated here) bounds
        the deletes from below, so they never walk the bin's dead rows again before a vacuum.

        Runs after every group of captures the writer commits, so it is plain SQL: one index
        lookup per bin when nothing is due (the ORM's delete() would first load the rows to
        cascade to their deliveries).
        """
        keep = settings.CAPTURES_PER_BIN if keep is None else keep
        if keep <= 0:
            return 0  # 0 = unlimited: nothing is ever pruned
        capture, delivery = cls._meta.db_table, Delivery._meta.db_table
        deleted = 0
        with connection.cursor() as cursor:
            for bin_id in bin_ids:
                cursor.execute(
                    f"SELECT id FROM {capture} WHERE bin_id = %s "
                    "ORDER BY id DESC LIMIT 1 OFFSET %s",
                    [bin_id, keep],
                )
                row = cursor.fetchone()
                if row is None:
                    continue
                floor = floors.get(bin_id, 0) if floors is not None else 0
                bounds = [bin_id, floor, row[0]]
                cursor.execute(
                    f"DELETE FROM {delivery} WHERE capture_id IN (SELECT id FROM {capture} "
                    "WHERE bin_id = %s AND id > %s AND id <= %s)",
                    bounds,
                )
                cursor.execute(
                    f"DELETE FROM {capture} WHERE bin_id = %s AND id > %s AND id <= %s", bounds
                )
                deleted += cursor.rowcount
                if floors is not None:
                    floors[bin_id] = row[0]
        return deleted


class Delivery(models.Model):
    """One send of a capture to a target (a resend from the page or API, or an auto-forward)."""

    RESEND = "resend"
    FORWARD = "forward"

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="deliveries")
    kind = models.CharField(max_length=10, default=RESEND)
    target_url = models.TextField()
    method = models.TextField()
    # True when method, headers or body were changed for this send only.
    edited = models.BooleanField(default=False)
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

    def as_json(self) -> dict[str, Any]:
        body = bytes(self.response_body)
        return {
            "id": self.pk,
            "capture_id": self.capture_id,
            "kind": self.kind,
            "target_url": self.target_url,
            "method": self.method,
            "edited": self.edited,
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
