"""The reference matcher against Elasticsearch's own missing-events cases.

This validates the oracle (``reference.py``) before any engine exists: each TOML query is translated
into a reference spec by the tiny translator below, which understands exactly the shapes the file
uses (``sequence [by k] with maxspan=N``, steps
``[cat where tag == "x" and `sequence` > n] by k with runs=N``, ``![...]``, ``| head N`` /
``| tail N``) and refuses anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

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
from reference import Sequence, Step, match_sequences, time_micros
from sequence_cases import CASES as SEQUENCE_CASES
from sequence_cases import SeqCase

CASES = load_cases()
EVENTS = load_events()

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_HEADER = re.compile(
    r"sequence(?:\s+by\s+(?P<by>\w+(?:\s*,\s*\w+)*))?"
    r"(?:\s+with\s+maxspan\s*=\s*(?P<span>\d+)(?P<unit>ms|s|m|h|d)?)?"
)
_STEP = re.compile(
    r"(?P<missing>!)?\[\s*(?P<category>\w+)\s+where\s+(?P<cond>[^\]]*?)\s*\]"
    r"(?:\s+by\s+(?P<by>\w+(?:\s*,\s*\w+)*))?"
    r"(?:\s+with\s+runs\s*=\s*(?P<runs>\d+))?"
)
_PIPE = re.compile(r"\|\s*(?P<name>head|tail)\s+(?P<n>\d+)")
_TAG = re.compile(r'tag\s*==\s*"(?P<value>[^"]*)"')
_SEQ_GT = re.compile(r"`sequence`\s*>\s*(?P<value>\d+)")


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",")) if text else ()


def _tag_is(value: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda record: record.get("tag") == value


def _sequence_above(bound: int) -> Callable[[Mapping[str, Any]], bool]:
    return lambda record: record.get("sequence") is not None and record["sequence"] > bound


def _condition(text: str) -> Callable[[Mapping[str, Any]], bool]:
    tests: list[Callable[[Mapping[str, Any]], bool]] = []
    for part in re.split(r"\s+and\s+", text):
        if m := _TAG.fullmatch(part):
            tests.append(_tag_is(m["value"]))
        elif m := _SEQ_GT.fullmatch(part):
            tests.append(_sequence_above(int(m["value"])))
        else:
            raise ValueError(f"translator does not know the condition {part!r}")
    return lambda record: all(test(record) for test in tests)


def translate(query: str) -> Sequence:
    """A TOML case's EQL text as a reference spec (only the shapes the file uses)."""
    text = " ".join(query.split())
    header = _HEADER.match(text)
    assert header is not None, text
    rest = text[header.end() :]
    steps = []
    while m := _STEP.match(rest.lstrip()):
        steps.append(
            Step(
                category=m["category"],
                where=_condition(m["cond"]),
                by=_names(m["by"]),
                missing=m["missing"] is not None,
                runs=int(m["runs"] or 1),
            )
        )
        rest = rest.lstrip()[m.end() :]
    pipes = []
    while m := _PIPE.match(rest.lstrip()):
        pipes.append((m["name"], int(m["n"])))
        rest = rest.lstrip()[m.end() :]
    if rest.strip():
        raise ValueError(f"translator could not read {rest!r}")
    span = None
    if header["span"] is not None:
        span = int(header["span"]) * _UNITS_MS[header["unit"] or "s"]
    return Sequence(
        steps=tuple(steps), by=_names(header["by"]), maxspan_ms=span, pipes=tuple(pipes)
    )


def run_reference(case: Case) -> list[tuple[tuple[Any, ...], tuple[int | None, ...]]]:
    return match_sequences(
        translate(case.query),
        EVENTS,
        category_field=CATEGORY_FIELD,
        time_field=TIME_FIELD,
        tiebreaker=TIEBREAKER,
    )


def test_all_cases_are_here() -> None:
    assert len(CASES) == 26
    assert len({case.name for case in CASES}) == 26


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_reference_matches_elasticsearch(case: Case) -> None:
    found = run_reference(case)
    assert event_ids(EVENTS, [row for _, row in found]) == list(case.expected_event_ids)
    if case.join_keys is not None:
        assert flat_keys(key for key, _ in found) == list(case.join_keys)


def test_translator_reads_by_runs_missing_and_pipes() -> None:
    spec = translate(
        """sequence by k1 with maxspan=2m
             [ t where tag == "a" ] by k2 with runs=2
            ![ t where tag == "b" and `sequence` > 3 ] by k2
           | tail 2"""
    )
    assert spec.by == ("k1",)
    assert spec.maxspan_ms == 120_000
    assert [(s.category, s.by, s.missing, s.runs) for s in spec.steps] == [
        ("t", ("k2",), False, 2),
        ("t", ("k2",), True, 1),
    ]
    assert spec.steps[1].where({"tag": "b", "sequence": 4})
    assert not spec.steps[1].where({"tag": "b", "sequence": 3})
    assert spec.pipes == (("tail", 2),)


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("3", 3000),
        (3, 3000),
        ("2022-05-04T12:00:00.001Z", 1_651_665_600_001_000),
        ("2022-05-04T12:00:00.001+00:00", 1_651_665_600_001_000),
    ],
)
def test_reference_reads_the_time_formats(value: Any, micros: int) -> None:
    assert time_micros(value) == micros


@pytest.mark.parametrize("case", SEQUENCE_CASES, ids=[case.name for case in SEQUENCE_CASES])
def test_reference_agrees_with_hand_worked_cases(case: SeqCase) -> None:
    found = match_sequences(case.spec, case.records, tiebreaker=case.tiebreaker)
    assert found == case.expected
