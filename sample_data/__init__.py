"""Agent-activity simulator with labelled attack chains and hard negatives (issue 4).

from sample_data import SimulationConfig, write_sample
config = SimulationConfig(events=1_000_000, seed=7)
write_sample(config, Path("activity.jsonl"), Path("labels.jsonl"))
"""

from .records import SCENARIOS, Event, Label, SampleStats
from .simulator import SimulationConfig, agent_count_for, iter_events, simulate, write_sample

__all__ = [
    "SCENARIOS",
    "Event",
    "Label",
    "SampleStats",
    "SimulationConfig",
    "agent_count_for",
    "iter_events",
    "simulate",
    "write_sample",
]
