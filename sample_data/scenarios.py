"""The registry of injectable scenarios: one per built-in detector id of DESIGN.md §5."""

from __future__ import annotations

from .chains import ScenarioSpec
from .records import SCENARIOS
from .scenarios_data import LOW_AND_SLOW, OUT_OF_SCOPE, RETRY_STORM, SENSITIVE_READ
from .scenarios_privilege import (
    CROSS_AGENT,
    PRIVILEGED_CHANGE,
    SECRET_CONFIG_TRIGGER,
    UNTRUSTED_INPUT,
)

__all__ = ["SCENARIO_SPECS"]

SCENARIO_SPECS: dict[str, ScenarioSpec] = {
    spec.scenario: spec
    for spec in (
        SENSITIVE_READ,
        SECRET_CONFIG_TRIGGER,
        RETRY_STORM,
        OUT_OF_SCOPE,
        PRIVILEGED_CHANGE,
        UNTRUSTED_INPUT,
        CROSS_AGENT,
        LOW_AND_SLOW,
    )
}
assert tuple(SCENARIO_SPECS) == SCENARIOS, "every detector id needs exactly one scenario"
