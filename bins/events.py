"""What the open capture shows about its sender and its event (see _capture_event.html)."""

from __future__ import annotations

from typing import Any

from .models import Capture


def detail_extras(capture: Capture) -> dict[str, Any]:
    """More context for the open capture: its event's deliveries, and the like."""
    return {}
