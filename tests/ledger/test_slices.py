"""check_batch's sliced fast path (``ingest.parse_serialised``), held to the validator.

A batch from ``SPLIT_ROWS`` records on is serialised slice after slice on the calling thread while
the shared worker parses slices from the front; the calling thread parses the rest from the back.
Whatever the slices, the threads' timing, or the failures on the way, the outcome must be the
validator's: the columns ``normalise`` builds (and the canonical bytes of a one-part parse), or a
ValidationError with the same problems as ``validate_batch``. The module's slice parameters are
patched to get many small slices out of small batches.

Hangs are detected, not waited out: anything that could block runs on a thread joined with a
timeout, and the test fails if the thread is still alive.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import FULL_EVENT, canonical_event, expected_columns

import ledger.batch
import ledger.ingest
import ledger.textscan
from ledger.batch import CheckedBatch, check_batch, normalise
from ledger.errors import BatchTooLargeError, Problem, ValidationError
from ledger.events import MAX_LIST_ITEMS, SERIALISE_OPTIONS, validate_batch
from tests.ledger.test_append_paths import (
    assert_like_one_part,
    rich_event,
    spy_part_outcomes,
    spy_parts,
)

T = TypeVar("T")

SPLIT = 2048  # ledger.ingest.SPLIT_ROWS, written out
HANG_SECONDS = 30.0  # far beyond any batch here (milliseconds): past it, a thread is stuck
ACCEPTED = ledger.textscan.ACCEPTED
REFUSED = ledger.textscan.REFUSED
MORE_ITEMS = ledger.textscan.MORE_ITEMS


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_after_the_module() -> Iterator[None]:
    """Free what reference cycles (exceptions and their tracebacks) hold once this module is done:
    they keep batches' work arrays, so the spare memory ``ingest._work_array`` hands out again
    would still be taken when the next module (test_parse_memory, say) starts."""
    yield
    gc.collect()


def sliced(
    monkeypatch: pytest.MonkeyPatch,
    split_rows: int = 4,
    slice_rows: int = 1,
    slices: int = 32,
    ahead: int = 2,
) -> None:
    """Cut batches of ``split_rows`` records or more into up to ``slices`` slices of at least
    ``slice_rows`` records (at least two slices)."""
    monkeypatch.setattr(ledger.ingest, "SPLIT_ROWS", split_rows)
    monkeypatch.setattr(ledger.ingest, "_MIN_SLICE_ROWS", slice_rows)
    monkeypatch.setattr(ledger.ingest, "_SLICES", slices)
    monkeypatch.setattr(ledger.ingest, "_AHEAD", ahead)  # slices sent to the worker, at most


def cuts(rows: int) -> list[int]:
    return ledger.ingest.slice_cuts(rows)


def edges(rows: int) -> list[int]:
    """The first and the last row of every slice."""
    at = cuts(rows)
    return sorted({*at[:-1], *(c - 1 for c in at[1:])} - {-1})


def canonical_batch(rows: int, first: int = 0) -> list[dict[str, Any]]:
    return [canonical_event(first + i) for i in range(rows)]


def rich_batch(rows: int, first: int = 0) -> list[dict[str, Any]]:
    return [rich_event(first + i) for i in range(rows)]


def finishes(run: Callable[[], T], timeout: float = HANG_SECONDS) -> T:
    """``run()`` on a thread of its own: what it returned or raised; a failure if it hangs."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = run()
        except BaseException as error:  # handed to the test's thread
            box["error"] = error

    thread = threading.Thread(target=target, name="slices-test", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"still running after {timeout} s: a hang")
    if "error" in box:
        raise box.pop("error")  # not kept in this frame: no cycle through the traceback
    result: T = box.pop("result")
    return result


def run_threads(threads: list[threading.Thread]) -> None:
    """Start the threads and wait for them all; fail if any is still running (a hang)."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"


def assert_worker_free() -> None:
    """The shared worker still takes jobs (it is not stuck in a batch's parse)."""
    assert ledger.ingest.worker().submit(lambda: 42).result(timeout=HANG_SECONDS) == 42


@contextlib.contextmanager
def worker_blocked() -> Iterator[None]:
    """The shared worker busy with another job (one that waits) until the block ends."""
    started, release = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        release.wait(HANG_SECONDS)

    job = ledger.ingest.worker().submit(block)
    assert started.wait(HANG_SECONDS), "the worker never started the blocking job"
    try:
        yield
        assert not job.done(), "the worker was blocked throughout"
    finally:
        release.set()
        job.result(timeout=HANG_SECONDS)
    assert_worker_free()


def reference(
    records: Sequence[Any], locations: Sequence[str] | None = None
) -> tuple[pa.Table | None, tuple[Problem, ...] | None]:
    """The validator's verdict: the columns normalise builds, or validate_batch's problems."""
    try:
        events = validate_batch(records, locations)
    except ValidationError as error:
        return None, error.problems
    columns = normalise(records, locations).columns
    assert columns.to_pydict() == expected_columns(events), "normalise against a plain model"
    return columns, None


def assert_agrees(
    records: Sequence[Any],
    locations: Sequence[str] | None = None,
    expected: tuple[pa.Table | None, tuple[Problem, ...] | None] | None = None,
) -> CheckedBatch | None:
    """check_batch gives the validator's verdict: equal columns, or the same problems."""
    columns, problems = reference(records, locations) if expected is None else expected
    if problems is not None:
        with pytest.raises(ValidationError) as raised:
            check_batch(records, locations)
        got = raised.value.problems
        assert [(p.index, p.field) for p in got] == [(p.index, p.field) for p in problems]
        assert got == problems, "the same reasons and locations"
        return None
    assert columns is not None
    checked = check_batch(records, locations)
    assert checked.columns.num_rows == len(records)
    assert checked.columns.equals(columns), (checked.columns.slice(0, 2), columns.slice(0, 2))
    return checked


def verdict(records: Sequence[Any]) -> tuple[str, Any]:
    """check_batch's outcome in a comparable form (for threads and oracles)."""
    try:
        return "accepted", check_batch(records).columns
    except ValidationError as error:
        return "invalid", [(p.index, p.field, p.reason) for p in error.problems]
    except BatchTooLargeError as error:
        return "too large", str(error)


def same_verdict(got: tuple[str, Any], expected: tuple[str, Any]) -> bool:
    if got[0] != expected[0]:
        return False
    if got[0] == "accepted":
        return bool(got[1].equals(expected[1]))
    return bool(got[1] == expected[1])


def named_size(error: BaseException) -> int:
    found = re.search(r"events are ([\d,]+) bytes", str(error))
    assert found is not None, str(error)
    return int(found.group(1).replace(",", ""))


def raw_size(records: Sequence[Any]) -> int:
    return len(orjson.dumps(records, option=SERIALISE_OPTIONS))


def heavy(record: dict[str, Any], items: int, row: int) -> dict[str, Any]:
    """The record with ``items`` credential_scopes (over a small slice's item capacity)."""
    return {**record, "credential_scopes": [f"scope:{row}:{n}" for n in range(items)]}


# Slice layouts: (rows, split_rows, slice_rows, slices); the ids say how each is cut.
LAYOUTS = [
    pytest.param(9, 4, 4, 32, id="2-uneven-slices"),
    pytest.param(40, 4, 1, 32, id="32-slices-of-1-or-2"),
    pytest.param(40, 4, 5, 32, id="8-slices-of-5"),
    pytest.param(41, 4, 3, 32, id="13-uneven-slices"),
    pytest.param(100, 4, 1, 7, id="7-uneven-slices"),
    pytest.param(37, 37, 1, 32, id="32-slices-at-the-split"),
    pytest.param(SPLIT + 9, SPLIT, 256, 32, id="8-default-slices"),
]


# -- 1. slice boundaries --------------------------------------------------------------------------

# Invalid edits and the field validate_batch names for each.
INVALID_EDITS: list[tuple[dict[str, Any], str]] = [
    ({"category": "shell"}, "category"),
    ({"bytes": -1}, "bytes"),
    ({"action": None}, "action"),  # a required field null: missing
    ({"surprise": 1}, "surprise"),
    ({"trace_id": "not-hex"}, "trace_id"),
    ({"seq": 3}, "seq"),  # assigned by the ledger
    ({"credential_scopes": ["ok", 7]}, "credential_scopes"),
]


@pytest.mark.parametrize(("rows", "split_rows", "slice_rows", "slices"), LAYOUTS)
def test_an_invalid_record_at_any_slice_edge_is_named_by_its_batch_index(
    monkeypatch: pytest.MonkeyPatch, rows: int, split_rows: int, slice_rows: int, slices: int
) -> None:
    sliced(monkeypatch, split_rows, slice_rows, slices)
    records = canonical_batch(rows)
    parts = spy_parts(monkeypatch)
    assert check_batch(records).records is records, "the fast path takes the valid batch"
    assert parts == np.diff(cuts(rows)).tolist() and len(parts) >= 2, "the batch is sliced"
    locations = [f"in.jsonl:{k + 1}" for k in range(rows)]
    for n, bad in enumerate(edges(rows)):
        edit, field = INVALID_EDITS[n % len(INVALID_EDITS)]
        changed = list(records)
        changed[bad] = {**records[bad], **edit}
        with pytest.raises(ValidationError) as raised:
            check_batch(changed, locations)
        assert [(p.index, p.field) for p in raised.value.problems] == [(bad, field)]
        assert [p.location for p in raised.value.problems] == [locations[bad]]
        assert_agrees(changed, locations)


@pytest.mark.parametrize(("rows", "split_rows", "slice_rows", "slices"), LAYOUTS[:5])
def test_invalid_records_at_every_slice_edge_are_all_named(
    monkeypatch: pytest.MonkeyPatch, rows: int, split_rows: int, slice_rows: int, slices: int
) -> None:
    sliced(monkeypatch, split_rows, slice_rows, slices)
    records = rich_batch(rows)
    bad = edges(rows)
    for row in bad:
        records[row] = {**records[row], "category": "shell", "bytes": "7"}
    with pytest.raises(ValidationError) as raised:
        check_batch(records)
    expected = [(row, field) for row in bad for field in ("bytes", "category")]
    assert sorted((p.index, p.field) for p in raised.value.problems) == expected
    assert_agrees(records)


# Values the validator normalises, and the canonical record each stands for.
NON_CANONICAL: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "time-with-offset",
        {"time": "2026-03-01T11:30:00+01:00"},
        {"time": "2026-03-01T10:30:00.000000Z"},
    ),
    (
        "time-without-fraction",
        {"time": "2026-03-01T10:30:00Z"},
        {"time": "2026-03-01T10:30:00.000000Z"},
    ),
    (
        "upper-case-hex",
        {"trace_id": "0AF7651916CD43DD8448EB211C80319C"},
        {"trace_id": "0af7651916cd43dd8448eb211c80319c"},
    ),
    ("null-optional", {"tool": None, "intent": None}, {}),
    ("float-in-attrs", {"attrs": {"n": 1.0, "m": [2.0, "x"]}}, {"attrs": {"m": [2, "x"], "n": 1}}),
    (
        "datetime-object",
        {"time": datetime(2026, 3, 1, 10, 30, tzinfo=UTC)},
        {"time": "2026-03-01T10:30:00.000000Z"},
    ),
]


@pytest.mark.parametrize(("rows", "split_rows", "slice_rows", "slices"), LAYOUTS)
def test_a_non_canonical_record_at_any_slice_edge_is_normalised(
    monkeypatch: pytest.MonkeyPatch, rows: int, split_rows: int, slice_rows: int, slices: int
) -> None:
    sliced(monkeypatch, split_rows, slice_rows, slices)
    records = canonical_batch(rows)
    for n, at in enumerate(edges(rows)):
        name, edit, canonical = NON_CANONICAL[n % len(NON_CANONICAL)]
        changed, fixed = list(records), list(records)
        changed[at] = {**records[at], **edit}
        fixed[at] = {**records[at], **canonical}
        from_fixed = check_batch(fixed)
        assert from_fixed.records is fixed, f"{name}: the canonical form takes the fast path"
        checked = assert_agrees(changed)
        assert checked is not None and checked.records is not changed, f"{name}: normalised"
        assert checked.columns.equals(from_fixed.columns), name
        if "time" in edit:
            assert checked.columns.column("time")[at].as_py() == datetime(
                2026, 3, 1, 10, 30, tzinfo=UTC
            )


# -- 2. records that are not plain dicts ----------------------------------------------------------


@dataclasses.dataclass
class DataclassRecord:
    event_id: str = "evt-dc"
    action: str = "tool.call"


class DictSubclass(dict[str, Any]):
    pass


class StrSubclass(str):
    __slots__ = ()


def _text(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _replace_one(kind: str, record: dict[str, Any]) -> Any:
    """A stand-in for one record (valid or not)."""
    if kind == "fragment-of-a-record":
        return orjson.Fragment(_text(record))
    if kind == "fragment-of-two-records":
        return orjson.Fragment(_text(record) + b"," + _text(record))
    if kind == "ordered-dict":
        return collections.OrderedDict(record)
    if kind == "dict-subclass":
        return DictSubclass(record)
    if kind == "dataclass":
        return DataclassRecord()
    if kind == "list":
        return list(record.items())
    if kind == "str":
        return _text(record).decode()
    if kind == "none":
        return None
    if kind == "fragment-value-injecting-a-member":
        return {**record, "action": orjson.Fragment(b'"a.b","agent_id":"x"')}
    if kind == "fragment-value-injecting-a-record":
        injected = _text(canonical_event(999))[1:-1]
        return {**record, "tool": orjson.Fragment(b'"t"},{' + injected)}
    raise AssertionError(kind)


NOT_DICTS = [
    "fragment-of-a-record",
    "fragment-of-two-records",
    "ordered-dict",
    "dict-subclass",
    "dataclass",
    "list",
    "str",
    "none",
    "fragment-value-injecting-a-member",
    "fragment-value-injecting-a-record",
]


@pytest.mark.parametrize("kind", NOT_DICTS)
@pytest.mark.parametrize("where", ["first-of-slice-3", "last-of-slice-3", "last-row"])
def test_a_record_not_a_plain_dict_in_a_later_slice_gets_the_validators_verdict(
    monkeypatch: pytest.MonkeyPatch, kind: str, where: str
) -> None:
    sliced(monkeypatch, slice_rows=5)  # 40 rows: 8 slices of 5
    records = rich_batch(40)
    at = {"first-of-slice-3": 15, "last-of-slice-3": 19, "last-row": 39}[where]
    assert at in edges(40)
    changed: list[Any] = list(records)
    changed[at] = _replace_one(kind, records[at])
    checked = assert_agrees(changed)
    valid = kind in ("fragment-of-a-record", "ordered-dict", "dict-subclass")
    valid |= kind == "fragment-value-injecting-a-member"
    assert (checked is not None) == valid
    if checked is not None:
        same = list(records)
        if kind == "fragment-value-injecting-a-member":  # agent_id's later member wins
            same[at] = {**records[at], "action": "a.b"}
        assert checked.columns.equals(check_batch(same).columns)


@pytest.mark.parametrize("boundary", [5, 20, 35])
def test_two_fragments_across_a_slice_boundary_that_only_together_are_records(
    monkeypatch: pytest.MonkeyPatch, boundary: int
) -> None:
    """Rows boundary-1 (last of a slice) and boundary (first of the next) as two Fragments whose
    joined text is exactly those two records, though neither Fragment is a record alone."""
    sliced(monkeypatch, slice_rows=5)
    assert boundary in cuts(40)
    records: list[Any] = [canonical_event(i, tool="t") for i in range(40)]
    first, second = _text(records[boundary - 1]), _text(records[boundary])
    comma = second.rindex(b",")
    head = orjson.Fragment(first + b"," + second[:comma])
    tail = orjson.Fragment(second[comma + 1 :])
    joined = orjson.dumps([head, tail])
    assert joined == b"[" + first + b"," + second + b"]", "together: the two records' text"
    changed = list(records)
    changed[boundary - 1], changed[boundary] = head, tail
    assert assert_agrees(changed) is None
    with pytest.raises(ValidationError) as raised:
        check_batch(changed)
    assert [(p.index, p.field) for p in raised.value.problems] == [
        (boundary - 1, ""),
        (boundary, ""),
    ]


# -- 3. values orjson has no form for -------------------------------------------------------------

UNSERIALISABLE: list[tuple[str, dict[Any, Any], bool]] = [
    ("set", {"credential_scopes": {"a", "b"}}, False),
    ("complex", {"bytes": 1j}, False),
    ("int-over-64-bits", {"bytes": 2**70}, False),
    ("numpy-int", {"bytes": np.int64(5)}, False),
    ("non-str-key", {1: "x"}, False),
    ("datetime", {"time": datetime(2026, 3, 1, 10, 30, tzinfo=UTC)}, True),
    ("str-subclass", {"tool": StrSubclass("t")}, True),
    ("dict-subclass-attrs", {"attrs": DictSubclass(k=1)}, True),
    ("nan-in-attrs", {"attrs": {"x": float("nan")}}, False),
]


@pytest.mark.parametrize(
    ("edit", "valid"), [c[1:] for c in UNSERIALISABLE], ids=[c[0] for c in UNSERIALISABLE]
)
@pytest.mark.parametrize("where", [17, 21, 39], ids=["middle-slice", "slice-start", "last-row"])
def test_a_value_orjson_cannot_serialise_in_a_middle_or_last_slice(
    monkeypatch: pytest.MonkeyPatch, edit: dict[Any, Any], valid: bool, where: int
) -> None:
    sliced(monkeypatch, slice_rows=3)  # 40 rows: 13 slices
    records: list[Any] = rich_batch(40)
    records[where] = {**records[where], **edit}
    checked = assert_agrees(records)
    assert (checked is not None) == valid


# -- 4. the text buffer's growth ------------------------------------------------------------------


def spy_growth(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(bytes needed, bytes given) for each time a batch's text buffer grows."""
    grown: list[tuple[int, int]] = []
    real = ledger.ingest._Slices._grow

    def spying(self: Any, needed: int, slices: int) -> None:
        real(self, needed, slices)
        grown.append((needed, len(self._text)))

    monkeypatch.setattr(ledger.ingest._Slices, "_grow", spying)
    return grown


def large_event(i: int) -> dict[str, Any]:
    """A canonical event of some 30-60 KB: long (escaped, multibyte) text and large attrs."""
    event = rich_event(i)
    event["intent"] = ('long "intent" ü\n' * (900 + 37 * (i % 11)))[:60_000]
    event["attrs"] = {"blob": "é€" * (4_000 + i % 7), "list": [str(k) for k in range(1500)]}
    event["credential_scopes"] = [f"scope:{k}" for k in range(40)]
    return event


@pytest.mark.parametrize(
    "shape", ["small-then-large", "large-then-small", "alternating", "last-slice-large"]
)
def test_slices_much_larger_or_smaller_than_the_first_grow_the_text_buffer(
    monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    sliced(monkeypatch, slice_rows=4)  # 48 rows: 12 slices of 4
    rows = 48
    if shape == "small-then-large":
        records = [canonical_event(i) if i < 8 else large_event(i) for i in range(rows)]
    elif shape == "large-then-small":
        records = [large_event(i) if i < 4 else canonical_event(i) for i in range(rows)]
    elif shape == "alternating":
        records = [large_event(i) if (i // 4) % 2 else canonical_event(i) for i in range(rows)]
    else:
        records = [canonical_event(i) if i < rows - 4 else large_event(i) for i in range(rows)]
    check_batch([FULL_EVENT] * 3000)  # spare memory holding other text, reused below
    grown = spy_growth(monkeypatch)
    checked = check_batch(records)
    assert checked.records is records, "the fast path took the batch"
    assert grown, "the buffer grew"
    assert all(given >= needed for needed, given in grown)
    assert [needed for needed, _ in grown] == sorted(needed for needed, _ in grown)
    if shape in ("small-then-large", "alternating", "last-slice-large"):
        assert len(grown) >= 2, "grown again once the large slices came"
    else:
        assert len(grown) == 1, "the first slice's size foretold enough"
    assert grown[-1][1] >= raw_size(records) - (len(cuts(rows)) - 2)
    assert_like_one_part(checked, records)
    assert_agrees(records)


def test_growth_with_an_invalid_record_after_it_falls_back_to_the_validator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sliced(monkeypatch, slice_rows=4)
    records = [canonical_event(i) if i < 8 else large_event(i) for i in range(48)]
    records[45] = {**records[45], "intent": "nul \x00 inside"}
    grown = spy_growth(monkeypatch)
    assert assert_agrees(records) is None
    assert len(grown) >= 1


# -- 5. exceptions while serialising --------------------------------------------------------------


def raising_serialiser(
    monkeypatch: pytest.MonkeyPatch, on_call: int, error: BaseException
) -> list[int]:
    """``_serialised`` raising ``error`` on call ``on_call`` (from 0); the rows of each call."""
    calls: list[int] = []
    real = ledger.batch._serialised

    def serialise(records: Sequence[object]) -> bytes | None:
        calls.append(len(records))
        if len(calls) == on_call + 1:
            raise error
        return real(records)

    monkeypatch.setattr(ledger.batch, "_serialised", serialise)
    return calls


def slice_number(which: str, slices: int) -> int:
    return {"first": 0, "second": 1, "middle": slices // 2, "last": slices - 1}[which]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, MemoryError])
@pytest.mark.parametrize("which", ["first", "second", "middle", "last"])
@pytest.mark.parametrize("busy", [False, True], ids=["worker-free", "worker-busy"])
def test_an_exception_while_serialising_a_slice_propagates_and_the_next_batch_works(
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException], which: str, busy: bool
) -> None:
    sliced(monkeypatch, slice_rows=4)  # 40 rows: 10 slices
    records = rich_batch(40)
    slices = len(cuts(40)) - 1
    expected = normalise(records).columns
    k = slice_number(which, slices)
    with monkeypatch.context() as patched, contextlib.ExitStack() as stack:
        calls = raising_serialiser(patched, k, error(f"on slice {k}"))
        if busy:
            stack.enter_context(worker_blocked())
        with pytest.raises(error, match=f"on slice {k}"):
            finishes(lambda: check_batch(records))
        assert len(calls) == k + 1, "no slice serialised after the failure"
    assert_worker_free()
    again = finishes(lambda: check_batch(records))
    assert again.records is records and again.columns.equals(expected)
    assert_like_one_part(again, records)
    assert_agrees(rich_batch(40, first=100))


def test_a_failure_waits_for_the_slices_the_worker_is_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exception surfaces only once the worker's range is parsed: nothing writes to the
    batch's arrays (reused memory) after check_batch has raised."""
    sliced(monkeypatch, slice_rows=4)
    records = rich_batch(40)
    worker_parsing = threading.Event()
    active: list[int] = []
    finished: list[int] = []
    real_parse = ledger.textscan.parse_sent_slices

    def parse(*args: Any) -> Any:
        on_worker = threading.current_thread().name.startswith("chainsight-ingest")
        if on_worker:
            active.append(1)
            worker_parsing.set()
            threading.Event().wait(0.2)  # a slow parse: still running when the failure comes
        try:
            return real_parse(*args)
        finally:
            if on_worker:
                active.pop()
                finished.append(1)

    real_serialise = ledger.batch._serialised
    calls: list[int] = []

    def serialise(part: Sequence[object]) -> bytes | None:
        calls.append(len(part))
        if len(calls) == 3:
            if not worker_parsing.wait(HANG_SECONDS / 3):
                raise AssertionError("the worker never ran ingest.parse_sent_slices")
            raise RuntimeError("failed while the worker parses")
        return real_serialise(part)

    monkeypatch.setattr(ledger.ingest, "parse_sent_slices", parse)
    monkeypatch.setattr(ledger.batch, "_serialised", serialise)
    with pytest.raises(RuntimeError, match="while the worker parses"):
        finishes(lambda: check_batch(records))
    assert active == [] and finished, "the worker's parse had ended when the error surfaced"
    monkeypatch.undo()
    assert_agrees(records)


# -- 6. the worker busy with another job ----------------------------------------------------------


def busy_cases() -> list[tuple[str, list[Any]]]:
    valid = rich_batch(60)
    invalid = list(valid)
    invalid[37] = {**invalid[37], "outcome": "maybe"}
    non_canonical = list(valid)
    non_canonical[11] = {**non_canonical[11], "time": "2026-03-01T11:30:00+01:00"}
    many_items = [heavy(r, 1000, i) if i in (9, 30) else r for i, r in enumerate(valid)]
    not_dict: list[Any] = list(valid)
    not_dict[50] = orjson.Fragment(_text(valid[50]))
    return [
        ("valid", valid),
        ("invalid", invalid),
        ("non-canonical", non_canonical),
        ("more-items", many_items),
        ("fragment", not_dict),
    ]


def test_a_split_batch_is_checked_while_the_worker_is_busy_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sliced(monkeypatch, slice_rows=3)  # 60 rows: 20 slices
    cases = busy_cases()
    expected = [reference(records) for _, records in cases]
    outcomes = spy_part_outcomes(monkeypatch)
    valid = cases[0][1]
    with worker_blocked():
        for (_, records), verdict_ in zip(cases, expected, strict=True):

            def agree(records: list[Any] = records, verdict_: Any = verdict_) -> None:
                assert_agrees(records, expected=verdict_)

            finishes(agree)
        assert MORE_ITEMS in outcomes, "the item capacity was outgrown, parsed again"
        with monkeypatch.context() as limited:
            limited.setattr(ledger.batch, "MAX_BATCH_BYTES", raw_size(valid) - 1)
            with pytest.raises(BatchTooLargeError) as raised:
                finishes(lambda: check_batch(valid))
        assert named_size(raised.value) == raw_size(valid)
    # And once the worker is back, the same verdicts.
    for (_, records), verdict_ in zip(cases, expected, strict=True):
        assert_agrees(records, expected=verdict_)


def test_a_split_batch_is_checked_on_the_worker_thread_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job on the worker that checks a batch: its share of the parse waits behind the job
    itself, so the job must parse every slice alone rather than wait for the worker."""
    sliced(monkeypatch, slice_rows=3)
    for _, records in busy_cases():
        expected = reference(records)
        job = ledger.ingest.worker().submit(verdict, records)
        got = job.result(timeout=HANG_SECONDS)
        if expected[1] is None:
            assert got[0] == "accepted" and got[1].equals(expected[0])
        else:
            assert got == ("invalid", [(p.index, p.field, p.reason) for p in expected[1]])
    assert_worker_free()


def test_the_hand_over_wait_for_a_busy_worker_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the worker busy, each slice is still added: the serialising thread does not wait for
    a hand-over that cannot come (it parses every slice itself)."""
    sliced(monkeypatch, slice_rows=1, slices=200)  # 200 slices of 1 record
    records = rich_batch(200)
    parts = spy_parts(monkeypatch)
    outcomes = spy_part_outcomes(monkeypatch)
    with worker_blocked():
        checked = finishes(lambda: check_batch(records))
    assert parts == [1] * 200
    assert outcomes == [ACCEPTED] * 200, "the calling thread parsed each slice alone"
    assert checked.records is records
    assert_like_one_part(checked, records)


# -- 7. the batch size limit ----------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "split_rows", "slice_rows", "slices"), LAYOUTS)
@pytest.mark.parametrize("busy", [False, True], ids=["worker-free", "worker-busy"])
def test_a_sliced_batch_over_the_limit_names_the_whole_batchs_size(
    monkeypatch: pytest.MonkeyPatch,
    rows: int,
    split_rows: int,
    slice_rows: int,
    slices: int,
    busy: bool,
) -> None:
    sliced(monkeypatch, split_rows, slice_rows, slices)
    records = rich_batch(rows)
    full = raw_size(records)
    limit = ledger.batch.MAX_BATCH_BYTES
    monkeypatch.setattr(ledger.batch, "MAX_BATCH_BYTES", full - 1)
    with contextlib.ExitStack() as stack:
        if busy:
            stack.enter_context(worker_blocked())
        with pytest.raises(BatchTooLargeError) as raised:
            finishes(lambda: check_batch(records))
    assert named_size(raised.value) == full, "the whole batch's text, not a slice's"
    assert f"its {rows} events" in str(raised.value)
    monkeypatch.setattr(ledger.batch, "MAX_BATCH_BYTES", full)  # at the limit: accepted
    checked = check_batch(records)
    assert checked.records is records
    assert_like_one_part(checked, records)
    monkeypatch.setattr(ledger.batch, "MAX_BATCH_BYTES", limit)
    assert_agrees(rich_batch(rows, first=rows))


def test_the_size_checked_is_the_joined_texts_for_every_number_of_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = rich_batch(64)
    full = raw_size(records)
    sizes: list[int] = []
    monkeypatch.setattr(ledger.batch, "_check_size", lambda size, rows: sizes.append(size))
    for slice_rows in (64, 32, 16, 9, 5, 2, 1):
        sliced(monkeypatch, slice_rows=slice_rows, slices=64)
        assert check_batch(records).records is records
    assert sizes == [full] * 7


def wait_for_the_first_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serialise slice 1 only once the worker has parsed slice 0 (one ordering among those the
    two threads may take; the worker being quick)."""
    batches: list[Any] = []
    real_start = ledger.ingest._Slices._start_worker
    real_serialise = ledger.batch._serialised
    calls: list[int] = []

    def start(slices: Any) -> None:
        batches.append(slices)
        real_start(slices)

    def serialise(records: Sequence[object]) -> bytes | None:
        calls.append(len(records))
        if len(calls) == 2:
            deadline = time.monotonic() + HANG_SECONDS
            while batches[-1]._outcomes[0] == ledger.ingest._PENDING:
                assert time.monotonic() < deadline, "the worker never parsed the first slice"
                time.sleep(0.001)
        return real_serialise(records)

    monkeypatch.setattr(ledger.ingest._Slices, "_start_worker", start)
    monkeypatch.setattr(ledger.batch, "_serialised", serialise)


def oversize_batch(kind: str) -> list[dict[str, Any]]:
    """40 records, the first refused by the compiled parse: null members the validator drops (its
    text shrinks when normalised), or an invalid category."""
    records = canonical_batch(40)
    if kind == "shrinks-when-normalised":
        records[0] = {**records[0], "tool": None, "principal": None, "intent": None}
    else:
        records[0] = {**records[0], "category": "shell"}
    return records


@pytest.mark.parametrize("kind", ["shrinks-when-normalised", "invalid"])
def test_a_batch_over_the_limit_as_sent_is_refused_in_one_part_and_with_a_busy_worker(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The contract of test_append_paths' "needs-normalising" case: over the limit as the client
    sent it, refused, naming that size. So it is with one slice, and with the worker busy."""
    records = oversize_batch(kind)
    full = raw_size(records)
    monkeypatch.setattr(ledger.batch, "MAX_BATCH_BYTES", full - 1)
    with pytest.raises(BatchTooLargeError) as one_part:
        check_batch(records)  # 40 rows: below SPLIT_ROWS
    assert named_size(one_part.value) == full
    sliced(monkeypatch, slice_rows=4)
    with worker_blocked(), pytest.raises(BatchTooLargeError) as busy:
        finishes(lambda: check_batch(records))
    assert named_size(busy.value) == full


@pytest.mark.parametrize("kind", ["shrinks-when-normalised", "invalid"])
def test_a_batch_over_the_limit_as_sent_is_refused_whatever_the_workers_timing(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Found by this file's author: when the worker refused a slice before the rest were
    serialised, the size was never checked, and normalise checks only the normalised text."""
    records = oversize_batch(kind)
    full = raw_size(records)
    monkeypatch.setattr(ledger.batch, "MAX_BATCH_BYTES", full - 1)
    sliced(monkeypatch, slice_rows=4)  # 10 slices
    wait_for_the_first_parse(monkeypatch)  # the worker refuses slice 0 before slice 1 is added
    with pytest.raises(BatchTooLargeError) as raised:
        finishes(lambda: check_batch(records))
    assert named_size(raised.value) == full


# -- 8. list items over a slice's item capacity ---------------------------------------------------

HEAVY_ROWS = {
    "middle-slice": [33],
    "several-slices": [0, 3, 33, 34, 62, 63],
    "every-slice": list(range(1, 64, 4)),
    "last-row": [63],
}


@pytest.mark.parametrize("where", list(HEAVY_ROWS))
@pytest.mark.parametrize("ahead", [2, 1, 64], ids=["two-ahead", "one-ahead", "all-ahead"])
def test_many_list_items_in_small_slices_are_parsed_again(
    monkeypatch: pytest.MonkeyPatch, where: str, ahead: int
) -> None:
    # 64 rows in 16 slices of 4: 80 items a slice before the parse again, 1000 in a row here.
    sliced(monkeypatch, slice_rows=4, ahead=ahead)
    records = rich_batch(64)
    for row in HEAVY_ROWS[where]:
        records[row] = heavy(records[row], 1000 - row % 3, row)
    outcomes = spy_part_outcomes(monkeypatch)
    checked = check_batch(records)
    assert checked.records is records, "the fast path took the batch"
    assert MORE_ITEMS in outcomes and REFUSED not in outcomes
    scopes = checked.columns.column("credential_scopes").to_pylist()
    assert scopes == [r.get("credential_scopes") for r in records]
    assert_like_one_part(checked, records)
    assert_agrees(records)


@pytest.mark.parametrize(
    "late",
    ["invalid", "non-canonical", "too-many-items", "max-items", "fragment"],
)
@pytest.mark.parametrize("ahead", [2, 1, 64], ids=["two-ahead", "one-ahead", "all-ahead"])
def test_a_slice_after_one_with_many_items_is_still_checked(
    monkeypatch: pytest.MonkeyPatch, late: str, ahead: int
) -> None:
    """A range's parse stops at the slice with too many items: the slices after it in the range
    wait for the parse again, which must check them (or the validator must)."""
    sliced(monkeypatch, slice_rows=4, ahead=ahead)
    records: list[Any] = rich_batch(64)
    records[5] = heavy(records[5], 1000, 5)
    records[41] = heavy(records[41], 900, 41)
    at = 46
    if late == "invalid":
        records[at] = {**records[at], "sensitivity": "top-secret"}
    elif late == "non-canonical":
        records[at] = {**records[at], "time": "2026-03-01T11:30:00+01:00"}
    elif late == "too-many-items":
        records[at] = heavy(records[at], MAX_LIST_ITEMS + 1, at)
    elif late == "max-items":
        records[at] = heavy(records[at], MAX_LIST_ITEMS, at)
    else:
        records[at] = orjson.Fragment(_text(records[at]))
    checked = assert_agrees(records)
    assert (checked is None) == (late in ("invalid", "too-many-items"))
    if late == "max-items":
        assert checked is not None and checked.records is records
        assert_like_one_part(checked, records)


def test_reused_memory_reads_as_fresh_after_a_parse_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches with every field, then minimal ones in the same (reused) memory, with many small
    slices and a parse again: nothing of an earlier batch shows through."""
    sliced(monkeypatch, slice_rows=4)
    for round_ in range(3):
        check_batch([{**FULL_EVENT, "event_id": f"full-{round_}-{i}"} for i in range(400)])
        records = [
            canonical_event(i, external=False) if i % 2 else canonical_event(i)
            for i in range(round_ * 1000, round_ * 1000 + 400)
        ]
        records[200 + round_] = heavy(records[200 + round_], 700, round_)
        checked = check_batch(records)
        assert checked.records is records
        with monkeypatch.context() as fresh:
            fresh.setattr(ledger.ingest, "_MAX_SPARE_BYTES", -1)
            assert checked.columns.equals(normalise(records).columns)
        assert_agrees(records)


# -- 9. several threads at once -------------------------------------------------------------------


def test_several_threads_check_split_batches_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sliced(monkeypatch, split_rows=16, slice_rows=8)  # 150-300 rows: 18-32 slices
    batches: list[list[Any]] = []
    for t in range(8):
        records: list[Any] = rich_batch(150 + 20 * t, first=1000 * t)
        kind = t % 4
        if kind == 1:
            records[8 * t + 7] = {**records[8 * t + 7], "category": "shell"}
        elif kind == 2:
            records[-1] = {**records[-1], "time": "2026-03-01T11:30:00+01:00"}
        elif kind == 3 and t == 3:
            records[40] = heavy(records[40], 1000, 40)
        elif kind == 3:
            records[100] = orjson.Fragment(_text(records[100]))
        batches.append(records)
    expected = [verdict(records) for records in batches]
    assert [v[0] for v in expected].count("invalid") == 2
    failures: list[str] = []
    errors: list[BaseException] = []

    def check_again(thread: int) -> None:
        try:
            for round_ in range(6):
                index = (thread + round_) % len(batches)
                if not same_verdict(verdict(batches[index]), expected[index]):
                    failures.append(f"thread {thread}, round {round_}, batch {index}")
        except BaseException as error:  # reported below
            errors.append(error)

    run_threads([threading.Thread(target=check_again, args=(t,), daemon=True) for t in range(4)])
    assert errors == [] and failures == []
    assert_worker_free()


# -- 10. a property -------------------------------------------------------------------------------

SPECIALS = ["none", "invalid", "non-canonical", "fragment", "ordered-dict", "set", "many-items"]


def special(kind: str, record: dict[str, Any], row: int) -> Any:
    if kind == "invalid":
        return {**record, "bytes": -5}
    if kind == "non-canonical":
        return {**record, "time": "2026-03-01T11:30:00+01:00", "tool": None}
    if kind == "fragment":
        return orjson.Fragment(_text(record))
    if kind == "ordered-dict":
        return collections.OrderedDict(record)
    if kind == "set":
        return {**record, "intent_scopes": {"a"}}
    if kind == "many-items":
        return heavy(record, 300, row)
    return record


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    rows=st.integers(0, 60),
    split_rows=st.integers(1, 12),
    slice_rows=st.integers(1, 6),
    slices=st.integers(2, 40),
    ahead=st.integers(1, 10),
    first=st.integers(0, 5000),
    specials=st.lists(
        st.tuples(st.sampled_from(SPECIALS), st.floats(0, 1, exclude_max=True)), max_size=3
    ),
)
def test_any_slicing_gives_the_validators_verdict(
    rows: int,
    split_rows: int,
    slice_rows: int,
    slices: int,
    ahead: int,
    first: int,
    specials: list[tuple[str, float]],
) -> None:
    base = rich_batch(rows, first)
    records: list[Any] = list(base)
    for kind, position in specials:  # a later special at the same row replaces the earlier
        if rows:
            row = int(position * rows)
            records[row] = special(kind, base[row], row)
    with pytest.MonkeyPatch.context() as patched:
        sliced(patched, split_rows, slice_rows, slices, ahead)
        expected = reference(records)
        checked = assert_agrees(records, expected=expected)
        plain = all(type(r) is dict for r in records)
        canonical = all(k in ("none", "many-items", "ordered-dict") for k, _ in specials)
        if checked is not None and plain and canonical and rows:
            assert checked.records is records, "a canonical batch takes the fast path"
            assert_like_one_part(checked, records)


# -- 11. sizes at the edges -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows", [0, 1, 2, SPLIT - 1, SPLIT, SPLIT + 1, 2 * SPLIT + 7, 33 * 256 + 5]
)
def test_batch_sizes_around_the_split_with_the_default_slices(
    monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    records = canonical_batch(rows)
    parts = spy_parts(monkeypatch)
    checked = check_batch(records)
    assert checked.records is records
    assert parts == np.diff(cuts(rows)).tolist()
    if rows < SPLIT:
        assert parts == [rows]
    else:
        assert len(parts) == max(2, min(32, rows // 256)) and max(parts) - min(parts) <= 1
    if rows:
        assert_like_one_part(checked, records)
    else:
        assert checked.columns.num_rows == 0
    assert checked.columns.equals(normalise(records).columns)
    if rows >= SPLIT:
        bad = list(records)
        bad[-1] = {**bad[-1], "agent_id": ""}
        assert assert_agrees(bad) is None


@pytest.mark.parametrize("rows", [0, 1, 2, 3, 5, 7, 31, 32, 33, 97])
@pytest.mark.parametrize("slice_rows", [1, 3])
def test_small_and_uneven_batches_with_small_slices(
    monkeypatch: pytest.MonkeyPatch, rows: int, slice_rows: int
) -> None:
    sliced(monkeypatch, split_rows=1, slice_rows=slice_rows, slices=12)
    records = rich_batch(rows)
    parts = spy_parts(monkeypatch)
    checked = check_batch(records)
    assert checked.records is records
    assert parts == np.diff(cuts(rows)).tolist() and sum(parts) == rows
    assert checked.columns.equals(normalise(records).columns)
    if rows:
        assert_like_one_part(checked, records)
        bad = list(records)
        bad[rows // 2] = {**bad[rows // 2], "external": "yes"}
        assert assert_agrees(bad) is None


@pytest.mark.parametrize("split_rows", [1, 4, 256, SPLIT])
@pytest.mark.parametrize("slice_rows", [1, 3, 256])
@pytest.mark.parametrize("slices", [2, 7, 32])
def test_slice_cuts_are_even_and_cover_the_batch(
    monkeypatch: pytest.MonkeyPatch, split_rows: int, slice_rows: int, slices: int
) -> None:
    sliced(monkeypatch, split_rows, slice_rows, slices)
    for rows in [*range(0, 70), 255, 256, 257, 511, 512, 2047, 2048, 2049, 8191, 8192, 10_007]:
        at = cuts(rows)
        sizes = np.diff(at)
        assert at[0] == 0 and at[-1] == rows
        if rows == 0:
            assert at == [0, 0]
            continue
        assert (sizes > 0).all(), "no empty slice"
        assert sizes.max() - sizes.min() <= 1, "even slices"
        if rows < split_rows:
            assert len(sizes) == 1
        else:
            wanted = max(2, min(slices, rows // slice_rows))
            assert len(sizes) == min(wanted, rows)
            if rows // slice_rows >= 2:
                assert sizes.min() >= slice_rows, "slices of at least the minimum"


@pytest.mark.parametrize("form", ["tuple", "generator"])
def test_a_tuple_or_a_one_shot_iterator_is_sliced_like_a_list(
    monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    sliced(monkeypatch, slice_rows=3)
    records = rich_batch(50)
    expected = normalise(records).columns
    parts = spy_parts(monkeypatch)
    given_records: Any = tuple(records) if form == "tuple" else (r for r in records)
    checked = check_batch(given_records)
    assert parts == np.diff(cuts(50)).tolist()
    assert checked.columns.equals(expected)
    assert_like_one_part(checked, records)
    bad = list(records)
    bad[48] = {**bad[48], "input_trust": "sort-of"}
    with pytest.raises(ValidationError) as raised:
        check_batch(tuple(bad) if form == "tuple" else (r for r in bad))
    assert [(p.index, p.field) for p in raised.value.problems] == [(48, "input_trust")]
