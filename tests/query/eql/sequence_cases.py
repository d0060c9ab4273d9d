"""Hand-written sequence cases: each one as EQL text, as a reference spec, and the answer worked out
by hand from docs/eql.md.

The reference matcher is checked against these answers (test_reference_missing_events.py) and so is
the engine (test_conformance.py), so a hand calculation, the oracle and the engine must all agree.
Expected answers are ``(join_keys, row_ids)`` pairs, ``row_ids`` being input list indexes with
``None`` for a missing step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reference import Key, Sequence, Step

Answer = list[tuple[tuple[Any, ...], tuple[int | None, ...]]]


def ev(category: str, time: Any, **fields: Any) -> dict[str, Any]:
    """One event; every event carries every field (null where unset) so the schema is fixed."""
    record: dict[str, Any] = {"category": category, "time": time, "k": "x", "j": "x", "n": 0}
    record.update({"s": "", "tb": 0})
    record.update(fields)
    return record


def n_is(value: int) -> Any:
    return lambda r: r.get("n") == value


def s_is(value: str) -> Any:
    return lambda r: r.get("s") == value


@dataclass(frozen=True)
class SeqCase:
    name: str
    eql: str
    spec: Sequence
    records: list[dict[str, Any]]
    expected: Answer
    tiebreaker: str | None = None


A, B, C, M, U = (Step("a"), Step("b"), Step("c"), Step("m", missing=True), Step("u"))
AK, BK = Step("a", by=("k",)), Step("b", by=("k",))

CASES: list[SeqCase] = [
    # -- one event, several steps ------------------------------------------------------------
    SeqCase(
        "same_event_matches_both_steps",
        "sequence [a where true] [a where true]",
        Sequence((A, A)),
        [ev("a", 1), ev("a", 2), ev("a", 3)],
        [((), (0, 1)), ((), (1, 2))],
    ),
    SeqCase(
        "any_three_steps_overlapping_matches",
        "sequence [any where true] [any where true] [any where true]",
        Sequence((Step(), Step(), Step())),
        [ev("a", 1), ev("b", 2), ev("c", 3), ev("a", 4)],
        [((), (0, 1, 2)), ((), (1, 2, 3))],
    ),
    SeqCase(
        "newest_pending_match_replaces_older",
        "sequence [a where true] [b where true]",
        Sequence((A, B)),
        [ev("a", 1), ev("a", 2), ev("b", 3), ev("b", 4)],
        [((), (1, 2))],
    ),
    SeqCase(
        "newest_pending_at_a_middle_step",
        "sequence [a where true] [b where true] [c where true]",
        Sequence((A, B, C)),
        [ev("a", 1), ev("b", 2), ev("a", 3), ev("b", 4), ev("c", 5)],
        [((), (2, 3, 4))],
    ),
    SeqCase(
        "a_taken_match_is_not_reused",
        "sequence [a where true] [b where true]",
        Sequence((A, B)),
        [ev("a", 1), ev("b", 2), ev("b", 3), ev("a", 4), ev("b", 5)],
        [((), (0, 1)), ((), (3, 4))],
    ),
    # -- ties in time -------------------------------------------------------------------------
    SeqCase(
        "ties_without_tiebreaker_follow_input_order",
        "sequence [a where true] [b where true]",
        Sequence((A, B)),
        [ev("b", 1), ev("a", 1), ev("b", 1)],
        [((), (1, 2))],
    ),
    SeqCase(
        "ties_without_tiebreaker_a_before_b",
        "sequence [a where true] [b where true]",
        Sequence((A, B)),
        [ev("a", 5, tb=2), ev("b", 5, tb=1)],
        [((), (0, 1))],
    ),
    SeqCase(
        "tiebreaker_orders_ties",
        "sequence [a where true] [b where true]",
        Sequence((A, B)),
        [ev("a", 5, tb=2), ev("b", 5, tb=1)],
        [],
        tiebreaker="tb",
    ),
    SeqCase(
        "tiebreaker_orders_ties_against_input_order",
        "sequence [a where true] [b where true]",
        Sequence((A, B)),
        [ev("b", 5, tb=3), ev("a", 5, tb=1), ev("b", 5, tb=2)],
        [((), (1, 2))],
        tiebreaker="tb",
    ),
    SeqCase(
        "equal_tiebreakers_fall_back_to_input_order",
        "sequence [a where true] [b where true]",
        Sequence((A, B)),
        [ev("b", 5, tb=1), ev("a", 5, tb=1), ev("b", 5, tb=1)],
        [((), (1, 2))],
        tiebreaker="tb",
    ),
    SeqCase(
        "time_beats_tiebreaker",
        "sequence [a where true] [b where true]",
        Sequence((A, B)),
        [ev("b", 6, tb=0), ev("a", 5, tb=9)],
        [((), (1, 0))],
        tiebreaker="tb",
    ),
    # -- join keys and nulls ------------------------------------------------------------------
    SeqCase(
        "by_key_separates_matches",
        "sequence by k [a where true] [b where true]",
        Sequence((A, B), by=("k",)),
        [ev("a", 1, k="x"), ev("a", 2, k="y"), ev("b", 3, k="x"), ev("b", 4, k="y")],
        [(("x",), (0, 2)), (("y",), (1, 3))],
    ),
    SeqCase(
        "null_key_keeps_event_out",
        "sequence by k [a where true] [b where true]",
        Sequence((A, B), by=("k",)),
        [ev("a", 1, k=None), ev("b", 2, k=None), ev("a", 3, k="x"), ev("b", 4, k=None)],
        [],
    ),
    SeqCase(
        "optional_key_null_equals_null",
        "sequence by ?k [a where true] [b where true]",
        Sequence((A, B), by=(Key("k", optional=True),)),
        [ev("a", 1, k=None), ev("b", 2, k="x"), ev("b", 3, k=None)],
        [((None,), (0, 2))],
    ),
    SeqCase(
        "optional_key_null_differs_from_value",
        "sequence by ?k [a where true] [b where true]",
        Sequence((A, B), by=(Key("k", optional=True),)),
        [ev("a", 1, k="x"), ev("b", 2, k=None)],
        [],
    ),
    SeqCase(
        "two_shared_keys",
        "sequence by k, j [a where true] [b where true]",
        Sequence((A, B), by=("k", "j")),
        [ev("a", 1, k="x", j="y"), ev("b", 2, k="x", j="x"), ev("b", 3, k="x", j="y")],
        [(("x", "y"), (0, 2))],
    ),
    SeqCase(
        "per_step_by_matches_by_position",
        "sequence [a where true] by k [b where true] by j",
        Sequence((AK, Step("b", by=("j",)))),
        [ev("a", 1, k="x", j="y"), ev("b", 2, k="y", j="y"), ev("b", 3, k="y", j="x")],
        [(("x",), (0, 2))],
    ),
    SeqCase(
        "shared_and_per_step_by",
        "sequence by k [a where true] by j [b where true] by s",
        Sequence((Step("a", by=("j",)), Step("b", by=("s",))), by=("k",)),
        [
            ev("a", 1, k="x", j="p"),
            ev("b", 2, k="y", s="p"),
            ev("b", 3, k="x", s="q"),
            ev("b", 4, k="x", s="p"),
        ],
        [(("x", "p"), (0, 3))],
    ),
    # -- maxspan ------------------------------------------------------------------------------
    SeqCase(
        "maxspan_boundary_is_inclusive",
        "sequence with maxspan=2ms [a where true] [b where true]",
        Sequence((A, B), maxspan_ms=2),
        [ev("a", 10), ev("b", 12)],
        [((), (0, 1))],
    ),
    SeqCase(
        "maxspan_one_ms_past",
        "sequence with maxspan=2ms [a where true] [b where true]",
        Sequence((A, B), maxspan_ms=2),
        [ev("a", 10), ev("b", 13)],
        [],
    ),
    SeqCase(
        "maxspan_seconds_boundary",
        "sequence with maxspan=1s [a where true] [b where true]",
        Sequence((A, B), maxspan_ms=1000),
        [ev("a", 0), ev("b", 1000), ev("a", 2000), ev("b", 3001)],
        [((), (0, 1))],
    ),
    SeqCase(
        "bare_maxspan_is_seconds",
        "sequence with maxspan=2 [a where true] [b where true]",
        Sequence((A, B), maxspan_ms=2000),
        [ev("a", 0), ev("b", 2000), ev("a", 5000), ev("b", 7001)],
        [((), (0, 1))],
    ),
    SeqCase(
        "maxspan_in_days",
        "sequence with maxspan=1d [a where true] [b where true] [c where true]",
        Sequence((A, B, C), maxspan_ms=86_400_000),
        [
            ev("a", 0),
            ev("b", 3_600_000),
            ev("c", 86_400_000),
            ev("a", 10**9),
            ev("b", 10**9),
            ev("c", 10**9 + 86_400_001),
        ],
        [((), (0, 1, 2))],
    ),
    SeqCase(
        "maxspan_counts_from_the_first_event",
        "sequence with maxspan=2ms [a where true] [b where true] [c where true]",
        Sequence((A, B, C), maxspan_ms=2),
        [ev("a", 0), ev("b", 2), ev("c", 3), ev("a", 10), ev("b", 11), ev("c", 12)],
        [((), (3, 4, 5))],
    ),
    SeqCase(
        "maxspan_drop_loses_the_taken_match",
        "sequence with maxspan=2ms [a where true] [b where true]",
        Sequence((A, B), maxspan_ms=2),
        [ev("a", 0), ev("b", 5), ev("b", 6)],
        [],
    ),
    SeqCase(
        "maxspan_with_iso_times_microseconds",
        "sequence with maxspan=1ms [a where true] [b where true]",
        Sequence((A, B), maxspan_ms=1),
        [
            ev("a", "2024-01-01T00:00:00.000000Z"),
            ev("b", "2024-01-01T00:00:00.001000Z"),
            ev("a", "2024-01-01T00:00:01.000000Z"),
            ev("b", "2024-01-01T00:00:01.001001Z"),
        ],
        [((), (0, 1))],
    ),
    # -- until --------------------------------------------------------------------------------
    SeqCase(
        "until_before_completion_drops",
        "sequence by k [a where true] [b where true] until [u where true]",
        Sequence((A, B), by=("k",), until=U),
        [ev("a", 1), ev("u", 2), ev("b", 3)],
        [],
    ),
    SeqCase(
        "until_after_completion_is_too_late",
        "sequence by k [a where true] [b where true] until [u where true]",
        Sequence((A, B), by=("k",), until=U),
        [ev("a", 1), ev("b", 2), ev("u", 3)],
        [(("x",), (0, 1))],
    ),
    SeqCase(
        "until_on_the_completing_event",
        'sequence by k [a where true] [b where true] until [any where s == "stop"]',
        Sequence((A, B), by=("k",), until=Step(where=s_is("stop"))),
        [ev("a", 1), ev("b", 2, s="stop")],
        [(("x",), (0, 1))],
    ),
    SeqCase(
        "until_on_an_advancing_event_drops_it_too",
        'sequence by k [a where true] [b where true] [c where true] until [any where s == "stop"]',
        Sequence((A, B, C), by=("k",), until=Step(where=s_is("stop"))),
        [ev("a", 1), ev("b", 2), ev("a", 3, s="stop"), ev("c", 4), ev("b", 5), ev("c", 6)],
        [],
    ),
    SeqCase(
        "until_same_time_earlier_ordinal_drops",
        "sequence by k [a where true] [b where true] until [u where true]",
        Sequence((A, B), by=("k",), until=U),
        [ev("a", 1), ev("u", 2), ev("b", 2)],
        [],
    ),
    SeqCase(
        "until_same_time_later_ordinal_is_too_late",
        "sequence by k [a where true] [b where true] until [u where true]",
        Sequence((A, B), by=("k",), until=U),
        [ev("a", 1), ev("b", 2), ev("u", 2)],
        [(("x",), (0, 1))],
    ),
    SeqCase(
        "until_only_drops_its_own_key",
        "sequence by k [a where true] [b where true] until [u where true]",
        Sequence((A, B), by=("k",), until=U),
        [
            ev("a", 1, k="x"),
            ev("a", 1, k="y"),
            ev("u", 2, k="y"),
            ev("b", 3, k="x"),
            ev("b", 3, k="y"),
        ],
        [(("x",), (0, 3))],
    ),
    SeqCase(
        "until_with_its_own_by",
        "sequence [a where true] by k [b where true] by k until [u where true] by j",
        Sequence((AK, BK), until=Step("u", by=("j",))),
        [ev("a", 1, k="x"), ev("u", 2, k="y", j="x"), ev("b", 3, k="x")],
        [],
    ),
    SeqCase(
        "until_with_null_key_does_nothing",
        "sequence by k [a where true] [b where true] until [u where true]",
        Sequence((A, B), by=("k",), until=U),
        [ev("a", 1), ev("u", 2, k=None), ev("b", 3)],
        [(("x",), (0, 2))],
    ),
    # -- missing events -----------------------------------------------------------------------
    SeqCase(
        "missing_middle_strictly_between_rejects",
        "sequence by k with maxspan=10ms [a where true] ![m where true] [b where true]",
        Sequence((A, M, B), by=("k",), maxspan_ms=10),
        [ev("a", 1), ev("m", 2), ev("b", 3)],
        [],
    ),
    SeqCase(
        "missing_middle_at_the_same_time_is_not_between",
        "sequence by k with maxspan=10ms [a where true] ![m where true] [b where true]",
        Sequence((A, M, B), by=("k",), maxspan_ms=10),
        [ev("a", 1), ev("m", 1), ev("m", 3), ev("b", 3)],
        [(("x",), (0, None, 3))],
    ),
    SeqCase(
        "missing_middle_other_key_does_not_count",
        "sequence by k [a where true] ![m where true] [b where true]",
        Sequence((A, M, B), by=("k",)),
        [ev("a", 1), ev("m", 2, k="y"), ev("m", 2, k=None), ev("b", 3)],
        [(("x",), (0, None, 3))],
    ),
    SeqCase(
        "missing_middle_condition_counts",
        "sequence by k [a where true] ![m where n > 1] [b where true]",
        Sequence((A, Step("m", where=lambda r: r["n"] > 1, missing=True), B), by=("k",)),
        [ev("a", 1), ev("m", 2, n=1), ev("b", 3), ev("a", 4), ev("m", 5, n=2), ev("b", 6)],
        [(("x",), (0, None, 2))],
    ),
    SeqCase(
        "missing_between_later_steps",
        "sequence [a where true] [b where true] ![m where true] [c where true]",
        Sequence((A, B, M, C)),
        [
            ev("a", 1),
            ev("m", 2),
            ev("b", 3),
            ev("c", 4),
            ev("a", 5),
            ev("b", 6),
            ev("m", 7),
            ev("c", 8),
        ],
        [((), (0, 2, None, 3))],
    ),
    SeqCase(
        "leading_missing_long_ago_keeps",
        "sequence by k with maxspan=5ms ![m where true] [a where true] [b where true]",
        Sequence((M, A, B), by=("k",), maxspan_ms=5),
        [ev("m", 6), ev("a", 10), ev("b", 12)],
        [(("x",), (None, 1, 2))],
    ),
    SeqCase(
        "leading_missing_at_maxspan_rejects",
        "sequence by k with maxspan=5ms ![m where true] [a where true] [b where true]",
        Sequence((M, A, B), by=("k",), maxspan_ms=5),
        [ev("m", 7), ev("a", 10), ev("b", 12)],
        [],
    ),
    SeqCase(
        "leading_missing_at_the_first_events_time_does_not_count",
        "sequence by k with maxspan=5ms ![m where true] [a where true] [b where true]",
        Sequence((M, A, B), by=("k",), maxspan_ms=5),
        [ev("m", 10), ev("a", 10), ev("b", 12)],
        [(("x",), (None, 1, 2))],
    ),
    SeqCase(
        "leading_missing_without_maxspan_rejects_any",
        "sequence by k ![m where true] [a where true] [b where true]",
        Sequence((M, A, B), by=("k",)),
        [ev("m", 0, k="y"), ev("a", 10, k="y"), ev("b", 12, k="y"), ev("a", 20), ev("b", 30)],
        [(("x",), (None, 3, 4))],
    ),
    SeqCase(
        "trailing_missing_past_maxspan_keeps",
        "sequence by k with maxspan=5ms [a where true] [b where true] ![m where true]",
        Sequence((A, B, M), by=("k",), maxspan_ms=5),
        [ev("a", 10), ev("b", 12), ev("m", 16)],
        [(("x",), (0, 1, None))],
    ),
    SeqCase(
        "trailing_missing_at_maxspan_rejects",
        "sequence by k with maxspan=5ms [a where true] [b where true] ![m where true]",
        Sequence((A, B, M), by=("k",), maxspan_ms=5),
        [ev("a", 10), ev("b", 12), ev("m", 15)],
        [],
    ),
    SeqCase(
        "trailing_missing_is_looked_for_after_the_match",
        "sequence by k with maxspan=5ms [a where true] [b where true] ![m where true]",
        Sequence((A, B, M), by=("k",), maxspan_ms=5),
        [ev("m", 9), ev("a", 10), ev("m", 12), ev("b", 12)],
        [(("x",), (1, 3, None))],
    ),
    SeqCase(
        "leading_and_trailing_far_apart_keep",
        "sequence by k with maxspan=5ms ![m where true] [a where true] [b where true]"
        " ![m where true]",
        Sequence((M, A, B, M), by=("k",), maxspan_ms=5),
        [ev("m", 4), ev("a", 10), ev("b", 12), ev("m", 16)],
        [(("x",), (None, 1, 2, None))],
    ),
    SeqCase(
        "leading_and_trailing_close_reject",
        "sequence by k with maxspan=5ms ![m where true] [a where true] [b where true]"
        " ![m where true]",
        Sequence((M, A, B, M), by=("k",), maxspan_ms=5),
        [ev("m", 8), ev("a", 10), ev("b", 11), ev("m", 13)],
        [],
    ),
    SeqCase(
        "leading_and_trailing_only_trailing_found_keeps",
        "sequence by k with maxspan=5ms ![m where true] [a where true] [b where true]"
        " ![m where true]",
        Sequence((M, A, B, M), by=("k",), maxspan_ms=5),
        [ev("a", 10), ev("b", 11), ev("m", 12)],
        [(("x",), (None, 0, 1, None))],
    ),
    SeqCase(
        "one_positive_step_with_trailing_missing",
        "sequence with maxspan=2ms [a where true] ![m where true]",
        Sequence((A, M), maxspan_ms=2),
        [ev("a", 1), ev("m", 3), ev("a", 4), ev("m", 7)],
        [((), (2, None))],
    ),
    SeqCase(
        "interleaved_missing_with_nothing_missing",
        "sequence with maxspan=1h ![m where true] [a where true] ![m where true] [a where true]"
        " ![m where true]",
        Sequence((M, A, M, A, M), maxspan_ms=3_600_000),
        [ev("a", 1), ev("a", 2), ev("b", 3), ev("a", 4)],
        [((), (None, 0, None, 1, None)), ((), (None, 1, None, 3, None))],
    ),
    # -- runs ---------------------------------------------------------------------------------
    SeqCase(
        "runs_with_gaps",
        "sequence [a where true] with runs=2 [b where true]",
        Sequence((Step("a", runs=2), B)),
        [ev("a", 1), ev("c", 2), ev("a", 3), ev("b", 4)],
        [((), (0, 2, 3))],
    ),
    SeqCase(
        "runs_take_the_newest_events",
        "sequence [a where true] with runs=2 [b where true]",
        Sequence((Step("a", runs=2), B)),
        [ev("a", 1), ev("a", 2), ev("a", 3), ev("b", 4)],
        [((), (1, 2, 3))],
    ),
    SeqCase(
        "runs_equal_the_step_written_out",
        "sequence by k [a where true] [b where n > 0] with runs=3 [c where true]",
        Sequence((A, Step("b", where=lambda r: r["n"] > 0, runs=3), C), by=("k",)),
        [
            ev("a", 1),
            ev("b", 2, n=1),
            ev("b", 3, n=0),
            ev("b", 4, n=2),
            ev("b", 5, n=3),
            ev("c", 6),
        ],
        [(("x",), (0, 1, 3, 4, 5))],
    ),
    SeqCase(
        "runs_on_a_missing_step",
        "sequence with maxspan=1s [a where true] ![m where true] with runs=2 [b where true]",
        Sequence((A, Step("m", missing=True, runs=2), B), maxspan_ms=1000),
        [ev("a", 1), ev("b", 2), ev("m", 3), ev("b", 4)],
        [((), (0, None, None, 1))],
    ),
    # -- head and tail ------------------------------------------------------------------------
    SeqCase(
        "head_keeps_the_first",
        "sequence [a where true] [b where true] | head 2",
        Sequence((A, B), pipes=(("head", 2),)),
        [ev("a", 1), ev("b", 2), ev("a", 3), ev("b", 4), ev("a", 5), ev("b", 6)],
        [((), (0, 1)), ((), (2, 3))],
    ),
    SeqCase(
        "tail_keeps_the_last_in_ascending_order",
        "sequence [a where true] [b where true] | tail 2",
        Sequence((A, B), pipes=(("tail", 2),)),
        [ev("a", 1), ev("b", 2), ev("a", 3), ev("b", 4), ev("a", 5), ev("b", 6)],
        [((), (2, 3)), ((), (4, 5))],
    ),
    SeqCase(
        "output_order_is_by_last_event_across_keys",
        "sequence by k [a where true] [b where true]",
        Sequence((A, B), by=("k",)),
        [ev("a", 1, k="y"), ev("a", 2, k="x"), ev("b", 3, k="x"), ev("b", 4, k="y")],
        [(("x",), (1, 2)), (("y",), (0, 3))],
    ),
]
