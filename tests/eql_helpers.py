"""Events and queries shared by the EQL tests that run over a ledger or the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)

THREE_STEPS = (
    "sequence by agent_id with maxspan=1h "
    '[secret where action == "secret.read"] '
    '[config where action : "config.*"] '
    '[job where action == "job.trigger"]'
)
MISSING_APPROVAL = (
    "sequence by agent_id with maxspan=1h "
    '[secret where action == "secret.read"] '
    "![approval where true] "
    '[job where action == "job.trigger"]'
)


def at(minutes: float) -> str:
    """RFC 3339 time ``minutes`` after T0."""
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def event(
    event_id: str, minutes: float, agent: str, category: str, action: str, **fields: Any
) -> dict[str, Any]:
    """One schema-valid event at ``minutes`` after T0, with any further fields."""
    record: dict[str, Any] = {
        "event_id": event_id,
        "time": at(minutes),
        "agent_id": agent,
        "category": category,
        "action": action,
    }
    record.update(fields)
    return record
