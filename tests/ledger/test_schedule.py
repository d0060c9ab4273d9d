"""Checkpoints on a schedule: the library schedule and `chainsight checkpoint --every`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ledger import Ledger, LedgerError
from ledger.checkpoints import LedgerCheckpoint
from ledger.schedule import CheckpointSchedule
from sample_data import SimulationConfig, iter_events


def test_a_schedule_signs_checkpoints_while_another_thread_appends(tmp_path: Path) -> None:
    ledger = Ledger.init(tmp_path / "ledger")
    events = list(iter_events(SimulationConfig(events=3000, seed=5, duplicate_fraction=0.0)))
    schedule = CheckpointSchedule(ledger.checkpoint, 0.05).start()
    appender = threading.Thread(
        target=lambda: [ledger.append(events[i : i + 100]) for i in range(0, 3000, 100)]
    )
    appender.start()
    appender.join()
    time.sleep(0.2)
    schedule.stop()
    assert len(schedule.signed) >= 2
    assert schedule.signed == sorted(schedule.signed)
    assert not schedule.errors
    final = ledger.checkpoint()
    assert sum(w.tree_size for w in final.writers) == 3000
    ledger.close()
    assert Ledger.open(tmp_path / "ledger").verify().ok


def test_a_refused_checkpoint_is_kept_and_the_schedule_goes_on(tmp_path: Path) -> None:
    calls: list[int] = []

    def flaky() -> LedgerCheckpoint:
        calls.append(1)
        if len(calls) == 1:
            raise LedgerError("refusing to sign a rollback")
        return LedgerCheckpoint("l", len(calls), b"", "t", (), "")

    seen: list[int] = []
    schedule = CheckpointSchedule(flaky, 0.02, on_signed=lambda c: seen.append(c.number))
    schedule.start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    schedule.stop()
    assert [str(e) for e in schedule.errors] == ["refusing to sign a rollback"]
    assert seen and seen == schedule.signed


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        CheckpointSchedule(lambda: LedgerCheckpoint("l", 1, b"", "t", (), ""), 0)


def test_cli_checkpoint_every_signs_until_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    ledger = Ledger.init(path)
    feeder = iter_events(SimulationConfig(events=10_000, seed=9, duplicate_fraction=0.0))
    process = subprocess.Popen(
        [sys.executable, "-m", "chainsight", "checkpoint", "--ledger", str(path), "--every", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(Ledger.open(path).checkpoints.numbers()) < 3 and time.monotonic() < deadline:
            ledger.append([next(feeder) for _ in range(50)])  # something new to sign each time
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    ledger.close()
    assert len(Ledger.open(path).checkpoints.numbers()) >= 3, err
    assert "Signed checkpoint 1" in out
    assert process.returncode == 0, err
    assert Ledger.open(path).verify().ok


def test_an_unchanged_ledger_is_not_signed_again(tmp_path: Path) -> None:
    ledger = Ledger.init(tmp_path / "ledger")
    ledger.append(list(iter_events(SimulationConfig(events=200, seed=2))))
    first = ledger.checkpoint(only_if_changed=True)
    assert ledger.checkpoint(only_if_changed=True).number == first.number
    assert ledger.checkpoint().number == first.number + 1  # asked for: signed anyway
