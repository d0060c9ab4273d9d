"""Elasticsearch's missing-events conformance cases (data/, Elastic License 2.0).

See data/LICENSE-NOTE.md.

Shared by the reference-matcher and the engine tests: the cases, the events, and how a result is
written the way the TOML file writes it (the events' ``sequence`` ids, ``-1`` for a missing step).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"

CATEGORY_FIELD = "event_type"
TIME_FIELD = "@timestamp"
TIEBREAKER = "sequence"


@dataclass(frozen=True)
class Case:
    name: str
    query: str
    expected_event_ids: tuple[int, ...]
    join_keys: tuple[Any, ...] | None  # None when the case does not state them


def load_cases() -> list[Case]:
    with (DATA / "test_missing_events.toml").open("rb") as handle:
        document = tomllib.load(handle)
    return [
        Case(
            name=entry["name"],
            query=entry["query"],
            expected_event_ids=tuple(entry["expected_event_ids"]),
            join_keys=tuple(entry["join_keys"]) if "join_keys" in entry else None,
        )
        for entry in document["queries"]
    ]


def load_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((DATA / "missing-events.json").read_text())
    return events


def event_ids(
    events: Sequence[dict[str, Any]], matches: Iterable[Sequence[int | None]]
) -> list[int]:
    """Every match's row ids as the events' ``sequence`` ids, concatenated; ``-1`` if missing."""
    return [-1 if i is None else int(events[i]["sequence"]) for row in matches for i in row]


def flat_keys(keys: Iterable[Sequence[Any]]) -> list[Any]:
    return [value for key in keys for value in key]
