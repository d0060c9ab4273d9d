"""Elasticsearch's 26 missing-events cases through the real EQL engine.

Data: data/test_missing_events.toml and data/missing-events.json (Elastic License 2.0, see
data/LICENSE-NOTE.md). Each case runs over all the events with ``event_type`` as the category,
``@timestamp`` as the time (epoch-millisecond strings and ISO dates mixed) and ``sequence`` as
the tiebreaker. The matched row ids are written as the events' ``sequence`` ids (``-1`` for a
missing step) and compared with ``expected_event_ids``; the join keys with ``join_keys``.
"""

from __future__ import annotations

import pytest
from es_missing_events import (
    CATEGORY_FIELD,
    TIEBREAKER,
    TIME_FIELD,
    Case,
    event_ids,
    flat_keys,
    load_cases,
    load_events,
)

from query.eql import EqlResult, parse, run_eql_records

CASES = load_cases()
EVENTS = load_events()
IDS = [case.name for case in CASES]


def run(case: Case) -> EqlResult:
    return run_eql_records(
        case.query,
        EVENTS,
        category_field=CATEGORY_FIELD,
        time_field=TIME_FIELD,
        tiebreaker=TIEBREAKER,
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_engine_matches_elasticsearch(case: Case) -> None:
    result = run(case)
    assert result.kind == "sequences"
    assert event_ids(EVENTS, [m.row_ids for m in result.sequences]) == list(case.expected_event_ids)
    if case.join_keys is not None:
        assert flat_keys(m.join_keys for m in result.sequences) == list(case.join_keys)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_missing_steps_show_as_missing_events(case: Case) -> None:
    for match in run(case).sequences:
        assert len(match.events) == len(match.row_ids)
        for row, event in zip(match.row_ids, match.events, strict=True):
            if row is None:
                assert event == {"missing": True}
            else:
                assert event["sequence"] == EVENTS[row]["sequence"]
                assert event["event_type"] == EVENTS[row]["event_type"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_query_renders_back_to_itself(case: Case) -> None:
    node = parse(case.query)
    assert parse(node.render()) == node
