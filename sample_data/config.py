"""What a simulation run is asked for, and how big its organisation is."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["SHARDS", "SimulationConfig", "agent_count_for"]

EVENTS_PER_AGENT = 1_500
"""The organisation grows with the requested size, so any run spans about a working week."""
MIN_AGENTS = 24
MAX_AGENTS = 5_000
SHARDS = 2
"""The organisation is simulated as this many independent halves, merged in time order.

Fixed, so the output does not depend on how many processes generate it.
"""


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: how many events, from which seed and moment, delivered how."""

    events: int = 100_000
    seed: int = 7
    start: datetime = field(default_factory=lambda: datetime(2026, 11, 2, 8, 0, tzinfo=UTC))
    late_fraction: float = 0.01
    """Share of events delivered with an event time far (2 min to 6 h) behind arrival order."""
    duplicate_fraction: float = 0.005
    """Share of events delivered a second time, 0.2 s to 10 min later (same event_id)."""
    attack_rate: float = 2.0
    """Injected chains (attacks and hard negatives together) per 1,000 events."""

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError("events must not be negative")
        if not 0.0 <= self.late_fraction < 1.0:
            raise ValueError("late_fraction must be in [0, 1)")
        if not 0.0 <= self.duplicate_fraction < 1.0:
            raise ValueError("duplicate_fraction must be in [0, 1)")
        if self.attack_rate < 0:
            raise ValueError("attack_rate must not be negative")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


def agent_count_for(events: int) -> int:
    """How many agents the organisation has for a run of this many events."""
    return max(MIN_AGENTS, min(MAX_AGENTS, events // EVENTS_PER_AGENT))
