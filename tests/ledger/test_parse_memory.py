"""The parse's work arrays are reused once nothing refers to them, and only then.

``ingest._work_array`` hands out memory of earlier batches again (fresh memory costs a page fault
per page the parse touches). A batch still alive, or any view of its arrays, must keep its memory;
memory reused must read as fresh (zeroed where the parse relies on zeros).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from ledger_helpers import FULL_EVENT, canonical_event, tool_event

from ledger import ingest
from ledger.batch import CheckedBatch, check_batch

ROWS = 3000  # over ingest.SPLIT_ROWS: parsed in slices on two threads


def minimal(first: int, rows: int = ROWS) -> list[dict[str, Any]]:
    """Few fields, each already canonical (as the full ones are): the fast path parses them."""
    return [canonical_event(first + i) for i in range(rows)]


def full(first: int, rows: int = ROWS) -> list[dict[str, Any]]:
    return [{**FULL_EVENT, "event_id": f"full-{first + i:06d}"} for i in range(rows)]


def fresh_columns(records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> pa.Table:
    """The batch's columns parsed with newly allocated work arrays only."""
    with monkeypatch.context() as patched:
        patched.setattr(ingest, "_MAX_SPARE_BYTES", -1)
        return check_batch(records).columns


def found_arrays(checked: CheckedBatch) -> list[np.ndarray]:
    found = checked.parsed.found
    arrays = [found.starts, found.ends, found.values, found.present, found.item_starts]
    return [*arrays, checked.parsed.text]  # the slices' texts, joined in reused memory


def test_a_batch_kept_alive_keeps_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = check_batch(full(0))
    assert isinstance(kept.parsed.text.base, np.ndarray)  # the slices joined in reused memory
    before = [array.copy() for array in found_arrays(kept)]
    for round_ in range(6):
        other = check_batch(minimal(10_000 * (round_ + 1)))
        assert isinstance(other.parsed.text.base, np.ndarray)
        for array in found_arrays(other):
            for mine in found_arrays(kept):
                assert not np.shares_memory(array, mine)
        del other
    assert all(np.array_equal(a, b) for a, b in zip(found_arrays(kept), before, strict=True))
    assert kept.columns.equals(fresh_columns(full(0), monkeypatch))


def test_a_view_of_a_batch_keeps_its_memory() -> None:
    checked = check_batch(minimal(0))
    starts = checked.parsed.found.starts[:, 2]  # a view: its base is the spare buffer
    saved = starts.copy()
    del checked
    for round_ in range(4):
        check_batch(full(10_000 * (round_ + 1)))
    assert np.array_equal(starts, saved)


def test_memory_is_reused_once_batches_are_gone() -> None:
    owners = set()
    for round_ in range(10):
        checked = check_batch(minimal(10_000 * round_))
        owners.add(id(checked.parsed.found.starts.base))
        del checked
    assert len(owners) <= 2  # the same memory, batch after batch
    assert len(ingest._SPARE) <= ingest._MAX_SPARE


def test_reused_memory_reads_as_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A minimal batch parsed into the memory a full batch (every field present) used: the absent
    fields are absent, false booleans false, nothing of the full batch shows through."""
    for round_ in range(3):
        check_batch(full(50_000 * round_))  # dropped at once: its memory is spare
        records = [
            tool_event(i, external=False, privileged=False) if i % 2 else tool_event(i)
            for i in range(10_000 * round_, 10_000 * round_ + ROWS)
        ]
        assert check_batch(records).columns.equals(fresh_columns(records, monkeypatch))


def test_smaller_and_larger_batches_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    for rows in (10, 5000, 1, 2500, 7000, 0, 3):
        records = full(rows * 100, rows) if rows % 2 else minimal(rows * 100, rows)
        assert check_batch(records).columns.equals(fresh_columns(records, monkeypatch))


def test_batches_too_large_to_keep_get_their_own_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "_MAX_SPARE_BYTES", 1024)
    spare_before = [id(spare) for spare in ingest._SPARE]
    checked = check_batch(full(0))
    assert checked.parsed.found.starts.base is None  # its own array
    assert [id(spare) for spare in ingest._SPARE] == spare_before
    monkeypatch.undo()
    assert checked.columns.equals(fresh_columns(full(0), monkeypatch))


def test_parses_on_several_threads_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = [full(100_000 * t) if t % 2 else minimal(100_000 * t) for t in range(4)]
    expected = [fresh_columns(records, monkeypatch) for records in batches]
    failures: list[str] = []

    def parse_again(thread: int) -> None:
        for round_ in range(8):
            columns = check_batch(batches[thread]).columns
            if not columns.equals(expected[thread]):
                failures.append(f"thread {thread}, round {round_}")

    threads = [threading.Thread(target=parse_again, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
