"""Records the simulator hands out: labels of injected chains and summary statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SCENARIOS", "Event", "Label", "SampleStats"]

Event = dict[str, Any]
"""One simulated event: a JSON-ready dict holding only client-supplied fields of DESIGN.md §2."""

SCENARIOS: tuple[str, ...] = (
    "sensitive-read-then-external-send",
    "secret-config-trigger-chain",
    "retry-storm",
    "out-of-scope-action",
    "privileged-change-without-approval",
    "untrusted-input-to-privileged-action",
    "cross-agent-privilege-handoff",
    "low-and-slow-exfiltration",
)
"""The built-in detector ids of DESIGN.md §5, one scenario each."""


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for one injected chain: an attack, or a hard negative that must not match."""

    chain_id: str
    scenario: str
    event_ids: tuple[str, ...]
    negative: bool
    variant: str

    def to_json(self) -> dict[str, Any]:
        """Return the label as the JSON object written to the labels file."""
        record: dict[str, Any] = {
            "chain_id": self.chain_id,
            "scenario": self.scenario,
            "event_ids": list(self.event_ids),
        }
        if self.negative:
            record["negative"] = True
        record["variant"] = self.variant
        return record


@dataclass(frozen=True, slots=True)
class SampleStats:
    """What one simulation run produced."""

    events: int
    """Lines written, duplicates included."""
    duplicates: int
    """Lines that repeat an earlier event_id (client retries)."""
    late: int
    """Events delivered well after events with later event times."""
    labels: int
    positive_chains: int
    negative_chains: int
    agents: int
    first_time: str | None
    last_time: str | None
