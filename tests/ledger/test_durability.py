"""Durability: the WAL brings back what a crashed appender acknowledged, and nothing else.

Crashes are real: a child process appends and leaves with ``os._exit`` (no close, no flush), so its
acknowledged events exist only in its WAL. Torn tails are made by cutting or extending that WAL.
Also here: idempotency across reopen and crash, and rejected batches leaving no trace on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from ledger_helpers import tree_digest

import ledger
from ledger import Ledger, ValidationError
from ledger.layout import WriterLayout
from ledger.segments import list_segments
from ledger.wal import scan_wal

LEDGER_SOURCE = str(Path(ledger.__file__).resolve().parents[1])  # children import the same code
BATCHES = (7, 120, 33)  # the crashed child's batches: one WAL frame each


def realistic_events(prefix: str, count: int) -> list[dict[str, Any]]:
    """A secret read, config change, job trigger, external send... with every §2 field in use."""
    start = datetime(2026, 1, 31, 22, 15, 0, 250_000, tzinfo=UTC)
    steps = (
        ("task", "task.start"),
        ("secret", "secret.read"),
        ("config", "config.update"),
        ("job", "job.trigger"),
        ("network", "email.send"),
        ("approval", "approval.grant"),
        ("agent", "agent.delegate"),
    )
    events = []
    for n in range(count):
        category, action = steps[n % len(steps)]
        events.append(
            {
                "event_id": f"{prefix}-{n:05d}",
                "time": (start + timedelta(seconds=n, microseconds=n)).isoformat(),
                "agent_id": f"agent-{prefix}",
                "category": category,
                "action": action,
                "session_id": f"{prefix}-session",
                "task_id": f"{prefix}-task-{n // 10}",
                "trace_id": hashlib.md5(f"{prefix}{n}".encode()).hexdigest(),
                "span_id": f"{n + 1:016x}",
                "parent_span_id": f"{n:016x}",
                "caused_by": f"{prefix}-{n - 1:05d}" if n else None,
                "principal": "svc-payments@prod.iam",
                "on_behalf_of": "frank@example.com",
                "credential_id": "cred-7f3a",
                "credential_scopes": ["secrets:read", "config:write", "jobs:trigger"],
                "credential_expires_at": "2026-02-01T06:00:00+01:00",
                "scope_used": ("secrets:read", "config:write", "jobs:trigger")[n % 3],
                "intent": "rotate the payments database credentials" if n == 0 else None,
                "intent_scopes": ["secrets:read", "config:write"] if n == 0 else None,
                "tool": "vault",
                "resource": f"secret://vault/prod/payments-db-{n % 3}",
                "destination": "smtp.mail-relay.example" if category == "network" else None,
                "external": category == "network",
                "sensitivity": "restricted",
                "bytes": 1024 * n,
                "privileged": category in ("config", "job"),
                "input_trust": "untrusted" if n % 6 == 5 else "trusted",
                "target_agent": "agent-deployer" if category == "agent" else None,
                "approval_for": "config://prod/payments" if category == "approval" else None,
                "approver": "grace@example.com" if category == "approval" else None,
                "outcome": "success",
                "error": None,
                "authz_decision": "allow",
                "policy_id": "pol-rotation",
                "attrs": {
                    "vault": {"path": "prod/payments", "version": n, "lease": {"ttl_s": 3600}},
                    "notes": ["rotated", "ключ", "🔐"],
                },
            }
        )
    return events


CRASHING_APPENDER = r"""
import json
import os
import sys

from ledger import Ledger

sys.path.insert(0, sys.argv[2])
from test_durability import BATCHES, realistic_events

ledger = Ledger.open(sys.argv[1])
receipts = []
for k, count in enumerate(BATCHES):
    receipts += ledger.append(realistic_events(f"crash{k}", count))
print(json.dumps([[r.event_id, r.writer_id, r.seq, r.hash] for r in receipts]), flush=True)
os._exit(0)  # crash: no close, no flush; acknowledged events live only in the WAL
"""


def crash_after_appending(root: Path, tmp: Path) -> list[tuple[str, str, int, str]]:
    """Run a child that appends BATCHES and dies without closing; return its receipts."""
    script = tmp / "crashing_appender.py"
    script.write_text(CRASHING_APPENDER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([LEDGER_SOURCE, *sys.path])}
    done = subprocess.run(
        [sys.executable, str(script), str(root), str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [tuple(r) for r in json.loads(done.stdout)]


def ledger_with_crashed_writer(tmp_path: Path) -> tuple[Path, list[tuple[str, str, int, str]]]:
    """A ledger with 50 flushed events, then a crash with BATCHES only in the WAL."""
    root = tmp_path / "ledger"
    Ledger.init(root)
    with Ledger.open(root) as before:
        before.append(realistic_events("flushed", 50))
    return root, crash_after_appending(root, tmp_path)


def only_layout(root: Path) -> WriterLayout:
    (layout,) = Ledger.open(root).writer_layouts()
    return layout


def only_wal(root: Path) -> Path:
    (wal,) = only_layout(root).wal_files()
    return wal


def segment_rows(root: Path) -> dict[str, tuple[str, int, str]]:
    """event_id -> (writer_id, seq, hash hex) of every event in the Parquet segments."""
    rows = {}
    for layout in Ledger.open(root).writer_layouts():
        for segment in list_segments(layout.segments):
            table = pq.read_table(segment.path, columns=["event_id", "writer_id", "seq", "hash"])
            for event_id, writer_id, seq, digest in zip(*table.to_pydict().values(), strict=True):
                assert event_id not in rows, f"{event_id} stored twice"
                rows[event_id] = (writer_id, seq, digest.hex())
    return rows


# -- recovery after a crash -----------------------------------------------------------------------


def test_crashed_appenders_acknowledged_events_are_readable_before_recovery(
    tmp_path: Path,
) -> None:
    root, receipts = ledger_with_crashed_writer(tmp_path)
    unflushed = Ledger.open(root).unflushed_table()
    assert unflushed.column("event_id").to_pylist() == [r[0] for r in receipts]
    assert unflushed.column("seq").to_pylist() == [r[2] for r in receipts]
    assert [h.hex() for h in unflushed.column("hash").to_pylist()] == [r[3] for r in receipts]
    report = Ledger.open(root).verify()
    assert report.ok, report.problems
    assert report.events == 50 + sum(BATCHES)
    assert report.writers[0].wal_events == sum(BATCHES)


def test_reopening_recovers_a_crashed_appenders_wal_into_segments(tmp_path: Path) -> None:
    root, receipts = ledger_with_crashed_writer(tmp_path)
    assert [r[2] for r in receipts] == list(range(50, 50 + sum(BATCHES)))
    with Ledger.open(root) as reopened:
        assert reopened.writer.writer_id == receipts[0][1], "the dead appender's log is reused"
        assert reopened.writer.next_seq == 50 + sum(BATCHES)
        more = reopened.append(realistic_events("after", 5))
    assert [r.seq for r in more] == list(range(50 + sum(BATCHES), 55 + sum(BATCHES)))
    stored = segment_rows(root)
    for event_id, writer_id, seq, digest in receipts:
        assert stored[event_id] == (writer_id, seq, digest), "recovered exactly as acknowledged"
    assert len(stored) == 50 + sum(BATCHES) + 5
    assert not only_layout(root).wal_files(), "a clean close leaves no WAL behind"
    assert Ledger.open(root).verify().ok


def cut_inside_last_frame(wal: Path) -> None:
    last = scan_wal(wal).frames[-1]
    os.truncate(wal, last.offset + 24 + 100)  # header (24 bytes) plus part of the payload


def cut_inside_last_header(wal: Path) -> None:
    os.truncate(wal, scan_wal(wal).frames[-1].offset + 9)


def append_garbage(wal: Path) -> None:
    with wal.open("ab") as out:
        out.write(b"CSW1\x00\x01garbage of a write the crash interrupted")


def append_zeros(wal: Path) -> None:
    """What a filesystem may show after a crash: the file extended, the data never written."""
    with wal.open("ab") as out:
        out.write(bytes(4096))


TORN_TAILS: dict[str, tuple[Callable[[Path], None], int]] = {
    # how the tail is torn, and how many of the batches survive (the torn one was never acked)
    "cut-inside-last-frame": (cut_inside_last_frame, len(BATCHES) - 1),
    "cut-inside-last-header": (cut_inside_last_header, len(BATCHES) - 1),
    "garbage-after-last-frame": (append_garbage, len(BATCHES)),
    "zeros-after-last-frame": (append_zeros, len(BATCHES)),
}


@pytest.mark.parametrize("tear", TORN_TAILS, ids=str)
def test_a_torn_wal_tail_is_a_note_for_verify_and_dropped_on_reopen(
    tmp_path: Path, tear: str
) -> None:
    root, receipts = ledger_with_crashed_writer(tmp_path)
    damage, surviving_batches = TORN_TAILS[tear]
    wal = only_wal(root)
    damage(wal)
    kept = receipts[: sum(BATCHES[:surviving_batches])]
    lost = receipts[len(kept) :]
    valid_length = scan_wal(wal).valid_length

    report = Ledger.open(root).verify()
    assert report.ok, report.problems
    assert any(wal.name in note and "tail" in note for note in report.notes), report.notes
    assert report.events == 50 + len(kept)

    with Ledger.open(root) as reopened:
        assert reopened.writer.next_seq == 50 + len(kept)
        assert wal.stat().st_size == valid_length, "the torn tail is cut off, the frames kept"
        after = reopened.append(realistic_events("after", 3))
    assert after[0].seq == 50 + len(kept), "seqs continue after the last intact frame"
    stored = segment_rows(root)
    for event_id, writer_id, seq, digest in kept:
        assert stored[event_id] == (writer_id, seq, digest)
    assert not any(r[0] in stored for r in lost)
    report = Ledger.open(root).verify()
    assert report.ok and not report.notes, (report.problems, report.notes)


def test_damage_before_intact_frames_is_not_silently_truncated_away(tmp_path: Path) -> None:
    root, receipts = ledger_with_crashed_writer(tmp_path)
    wal = only_wal(root)
    middle = scan_wal(wal).frames[1]
    data = bytearray(wal.read_bytes())
    data[middle.offset + 60] ^= 0x20  # one bit inside an acknowledged batch, two frames intact
    wal.write_bytes(bytes(data))
    with Ledger.open(root) as reopened:
        reopened.append(realistic_events("after", 3))
    last_batch = [r[0] for r in receipts[-BATCHES[-1] :]]
    kept_aside = wal.exists() and wal.read_bytes() == bytes(data)
    recovered = set(last_batch) <= set(segment_rows(root))
    assert kept_aside or recovered, "the intact, acknowledged last batch was discarded"


# -- durability of an acknowledgement -------------------------------------------------------------


def test_each_append_is_fsynced_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def recording_fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)  # what ledger.wal calls
    with Ledger.open(root) as opened:
        for k in range(3):
            opened.append(realistic_events(f"sync{k}", 10))
            wal = opened.writer.layout.wal_files()[-1]
            assert len(synced) == k + 1, "one fdatasync per appended batch"
            assert synced[-1] == wal.stat().st_size, "the whole frame was on disk at the sync"
        opened.append(realistic_events("sync0", 10))  # all duplicates: nothing to write
        assert len(synced) == 3


# -- idempotency ----------------------------------------------------------------------------------


def test_reappending_after_reopen_returns_the_original_receipts(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    events = realistic_events("idem", 40)
    with Ledger.open(root) as opened:
        original = list(opened.append(events))
    files_before = tree_digest(root)
    with Ledger.open(root) as reopened:
        again = reopened.append(events)
    assert again.duplicates == 40 and again.appended == 0
    assert [(r.seq, r.hash, r.writer_id) for r in again] == [
        (r.seq, r.hash, r.writer_id) for r in original
    ]
    assert all(r.duplicate for r in again)
    assert tree_digest(root) == files_before, "nothing new stored"


def test_a_batch_mixing_old_and_new_event_ids_stores_only_the_new(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    events = realistic_events("mix", 30)
    with Ledger.open(root) as opened:
        original = {r.event_id: r for r in opened.append(events[:20])}
    retried = [*events[10:20], *events[20:30]]
    retried[0] = {**retried[0], "outcome": "failure"}  # same id, other content: still a no-op
    with Ledger.open(root) as reopened:
        receipts = reopened.append(retried)
    assert [r.duplicate for r in receipts] == [True] * 10 + [False] * 10
    for receipt in receipts[:10]:
        assert (receipt.seq, receipt.hash) == (
            original[receipt.event_id].seq,
            original[receipt.event_id].hash,
        )
    assert [r.seq for r in receipts[10:]] == list(range(20, 30))
    stored = segment_rows(root)
    assert len(stored) == 30
    assert Ledger.open(root).verify().ok


def test_a_repeated_event_id_within_one_batch_is_stored_once(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    events = realistic_events("twice", 3)
    with Ledger.open(root) as opened:
        receipts = opened.append([events[0], events[1], events[0], events[2]])
    assert [r.duplicate for r in receipts] == [False, False, True, False]
    assert receipts[2].seq == receipts[0].seq and receipts[2].hash == receipts[0].hash
    assert [r.seq for r in receipts] == [0, 1, 0, 2]
    assert len(segment_rows(root)) == 3


def test_reappending_a_crashed_appenders_events_finds_them_in_its_wal(tmp_path: Path) -> None:
    root, receipts = ledger_with_crashed_writer(tmp_path)
    resent = [e for k, count in enumerate(BATCHES) for e in realistic_events(f"crash{k}", count)]
    with Ledger.open(root) as reopened:
        again = reopened.append(resent)
        assert again.appended == 0
        assert [(r.event_id, r.writer_id, r.seq, r.hash) for r in again] == receipts
    assert len(segment_rows(root)) == 50 + sum(BATCHES)


# -- rejected batches leave no trace --------------------------------------------------------------

BAD_BATCHES: dict[str, Callable[[list[dict[str, Any]]], list[object]]] = {
    "unknown-field": lambda ev: [*ev[:5], {**ev[5], "prompt": "ignore previous instructions"}],
    "missing-required": lambda ev: [*ev[:5], {k: v for k, v in ev[5].items() if k != "agent_id"}],
    "bad-timestamp": lambda ev: [*ev[:5], {**ev[5], "time": "2026-02-30T25:00:00Z"}],
    "wrong-type": lambda ev: [*ev[:5], {**ev[5], "bytes": "a lot"}],
    "bad-enum": lambda ev: [*ev[:5], {**ev[5], "category": "shell"}],
    "ledger-field": lambda ev: [*ev[:5], {**ev[5], "seq": 0}],
    "oversize-attrs": lambda ev: [*ev[:5], {**ev[5], "attrs": {"blob": "x" * 70_000}}],
    "invalid-utf8": lambda ev: [*ev[:5], {**ev[5], "intent": "broken \udc80 surrogate"}],
    "not-an-object": lambda ev: [*ev[:5], ["event", "as", "a", "list"]],
    "last-record-bad": lambda ev: [*ev, {**ev[0], "event_id": ""}],
}


@pytest.mark.parametrize("bad_batch", BAD_BATCHES, ids=str)
def test_a_rejected_batch_leaves_the_ledger_byte_for_byte_unchanged(
    tmp_path: Path, bad_batch: str
) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    with Ledger.open(root) as opened:
        opened.append(realistic_events("kept", 25))
        opened.flush()
        opened.append(realistic_events("walonly", 5))  # some events only in the WAL, too
        before = tree_digest(root)
        batch = BAD_BATCHES[bad_batch](realistic_events("rejected", 10))
        with pytest.raises(ValidationError) as rejected:
            opened.append(batch)
        assert rejected.value.problems, "the error names the record and field"
        assert tree_digest(root) == before
        after = opened.append(realistic_events("next", 2))
        assert [r.seq for r in after] == [30, 31], "no seq was spent on the rejected batch"
    stored = segment_rows(root)
    assert not any(event_id.startswith("rejected") for event_id in stored)
    assert len(stored) == 32
    assert Ledger.open(root).verify().ok


def test_a_rejected_first_batch_creates_no_writer_log(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    before = tree_digest(root)
    with Ledger.open(root) as opened, pytest.raises(ValidationError):
        opened.append(BAD_BATCHES["unknown-field"](realistic_events("rejected", 10)))
    assert tree_digest(root) == before
