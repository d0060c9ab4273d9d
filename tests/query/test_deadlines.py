"""Query deadlines kept by one watchdog thread for the whole process.

Each query registers its deadline instead of starting a thread. A passed deadline interrupts only
its own query, a stopped one never interrupts whatever the connection runs next, and a forked
child keeps deadlines of its own.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import duckdb
import pytest

from query import Ledger, QueryTimeoutError, run_sql
from query.sql import _Deadline

HEAVY = "SELECT count(*) AS n FROM range(30000) a, range(30000) b WHERE a.range + b.range = 7"
MODERATE = "SELECT count(*) AS n FROM range(6000) a, range(6000) b WHERE a.range + b.range = 7"


def _ledger(path: Path) -> Ledger:
    Ledger.init(path)
    return Ledger.open(path)


@pytest.mark.timeout(60)
def test_a_passed_deadline_stops_only_its_own_query(tmp_path: Path) -> None:
    slow, other = _ledger(tmp_path / "slow"), _ledger(tmp_path / "other")
    outcome: list[BaseException | None] = []

    def heavy() -> None:
        try:
            run_sql(slow, HEAVY, timeout=0.3)
            outcome.append(None)
        except BaseException as err:  # reported to the main thread, which asserts on it
            outcome.append(err)

    worker = threading.Thread(target=heavy)
    worker.start()
    answers = [run_sql(other, MODERATE, timeout=60).table.to_pylist() for _ in range(5)]
    worker.join()
    assert answers == [[{"n": 8}]] * 5
    assert len(outcome) == 1
    assert isinstance(outcome[0], QueryTimeoutError)


@pytest.mark.timeout(60)
def test_a_stopped_deadline_never_interrupts_the_next_statement() -> None:
    connection = duckdb.connect()
    deadlines = [_Deadline(connection, 0.05) for _ in range(20)]
    for deadline in deadlines:
        deadline.stop()
    time.sleep(0.2)  # past every deadline
    started = time.perf_counter()
    while time.perf_counter() - started < 0.3:
        assert connection.execute(MODERATE).fetchall() == [(8,)]
    assert not any(deadline.passed for deadline in deadlines)


@pytest.mark.timeout(60)
def test_deadlines_of_any_length_are_kept_together() -> None:
    connection = duckdb.connect()
    far = _Deadline(connection, 3600)
    near = _Deadline(connection, 0.1)
    try:
        with pytest.raises(duckdb.InterruptException):
            connection.execute(HEAVY).fetchall()
        assert near.passed
        assert not far.passed
    finally:
        near.stop()
        far.stop()


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_keeps_deadlines_of_its_own() -> None:
    _Deadline(duckdb.connect(), 3600).stop()  # the parent's watchdog is running
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which reports by exit status
        status = 1
        try:
            connection = duckdb.connect()
            deadline = _Deadline(connection, 0.1)
            try:
                connection.execute(HEAVY).fetchall()
            except duckdb.InterruptException:
                status = 0 if deadline.passed else 2
            finally:
                deadline.stop()
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
