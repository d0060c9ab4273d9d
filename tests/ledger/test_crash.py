"""Crash suite: SIGKILL an appending process at random moments; nothing acknowledged is lost.

A child process appends batches of random size (1..500) and, only after ``append`` returns (the
batch is acknowledged), writes the batch's event_ids to a file. The parent kills it with SIGKILL
after a random delay, many times over one ledger, so later children recover what earlier ones left.
Half the children shrink the flush and compaction thresholds so kills also land inside flushes,
segment renames and compactions, and some are killed while recovering their predecessor's mess.

After each kill every acknowledged event_id must be stored exactly once (and every few kills the
crashed ledger must verify); at the end a recovering open and a clean close must leave it all in
Parquet segments, contiguous, verified.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ledger
from ledger import Ledger
from ledger.layout import WriterLayout
from ledger.segments import list_segments
from ledger.wal import WalFrame, scan_wal

LEDGER_SOURCE = str(Path(ledger.__file__).resolve().parents[1])  # children import the same code
DEFAULT_TRIALS = 30
SLOW_TRIALS = 200
VERIFY_EVERY = 4

APPENDER = r'''
"""Append random batches forever; record each batch's event_ids once append has returned."""
import os
import random
import sys
from datetime import UTC, datetime, timedelta

ledger_path, acked_path, prefix, seed, small_flushes, die_at = sys.argv[1:7]
import ledger.batch
import ledger.writer

if small_flushes == "1":  # flush every few batches, compact every third segment
    ledger.writer.FLUSH_ROWS = 300
    ledger.writer.COMPACT_AT = 3
    ledger.writer.SMALL_SEGMENT_ROWS = 10**9
if die_at == "after-merged-segment":  # crash between a compaction's rename and its cleanup
    real_write_segment = ledger.writer.write_segment

    def write_segment(directory, table, first_seq):
        segment = real_write_segment(directory, table, first_seq)
        if (directory.parent / "compaction.json").exists():
            os._exit(0)
        return segment

    ledger.writer.write_segment = write_segment
if die_at == "after-segment-before-wal-cleanup":  # a flush renamed its segment, then died
    def write_head(self, seq, digest):
        os._exit(0)

    ledger.writer.WriterLog._write_head = write_head

from ledger import Ledger

rng = random.Random(int(seed))
start = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
categories = [
    ("secret", "secret.read"), ("config", "config.update"), ("job", "job.trigger"),
    ("network", "http.post"), ("approval", "approval.grant"), ("agent", "agent.delegate"),
    ("llm", "llm.chat"), ("tool", "tool.call"),
]


def event(n):
    category, action = categories[n % len(categories)]
    return {
        "event_id": f"{prefix}-{n:07d}",
        "time": (start + timedelta(milliseconds=137 * n)).isoformat().replace("+00:00", "Z"),
        "agent_id": f"agent-{n % 7}",
        "category": category,
        "action": action,
        "session_id": f"{prefix}-sess-{n // 40}",
        "task_id": f"{prefix}-task-{n // 200}",
        "trace_id": f"{rng.getrandbits(128):032x}",
        "span_id": f"{rng.getrandbits(64):016x}",
        "caused_by": f"{prefix}-{n - 1:07d}" if n else None,
        "principal": "svc-release@prod.iam",
        "on_behalf_of": "dana@example.com",
        "credential_id": f"cred-{n % 3}",
        "credential_scopes": ["deploy:prod", "secrets:read"],
        "credential_expires_at": "2026-02-01T20:00:00Z",
        "scope_used": "deploy:prod",
        "tool": "kubectl",
        "resource": f"config://prod/service-{n % 11}",
        "destination": "registry.example.com",
        "external": n % 5 == 0,
        "sensitivity": "confidential",
        "bytes": rng.randrange(10**9),
        "privileged": n % 2 == 0,
        "input_trust": "trusted",
        "outcome": "success" if n % 13 else "failure",
        "authz_decision": "allow",
        "policy_id": "pol-release",
        "attrs": {"k8s": {"namespace": "payments", "replicas": n % 9}, "diff": ["+image", "-env"]},
    }


# Load the compiled loops now (from numba's cache): a kill should land in appending, not loading.
warm_up = ledger.batch.check_batch([event(0)]).parsed
warm_up.columns, warm_up.chain(warm_up.bounds[:, 0] * 0, "warm-up", 0, 0, bytes(32))

if sys.stdin.readline() != "go\n":  # imported and rigged: wait for the parent's go
    sys.exit("no go from the parent")
ledger = Ledger.open(ledger_path)
with open(acked_path, "a", buffering=1) as acked:
    acked.write("recovering\n")
    ledger.writer  # takes the writer log: recovery of the previous child's WAL happens here
    acked.write("ready\n")
    n = 0
    while True:
        size = rng.randint(1, 500)
        receipts = ledger.append([event(n + i) for i in range(size)])
        assert len(receipts) == size and receipts.duplicates == 0
        acked.write(" ".join(r.event_id for r in receipts) + "\n")  # acknowledged
        n += size
'''


@dataclass
class Appender:
    """One child appender process and the file it acknowledges batches in."""

    process: subprocess.Popen[bytes]
    acked: Path

    def lines(self) -> list[str]:
        """Complete lines written so far (a line cut by the kill is ignored)."""
        text = self.acked.read_text() if self.acked.exists() else ""
        return text.split("\n")[:-1]

    def wait_for(self, marker: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.lines():
            if self.process.poll() is not None:
                _, errors = self.process.communicate()
                raise AssertionError(f"appender exited early: {errors.decode()}")
            assert time.monotonic() < deadline, f"appender never said {marker!r}"
            time.sleep(0.002)

    def go(self) -> None:
        """Let the (already imported) child open the ledger and start appending."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """Make sure the child is gone (a failed assertion must not leave it appending)."""
        if self.process.poll() is None:
            self.kill()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=30)  # reaps it and closes the pipes

    def acknowledged(self) -> list[str]:
        return [i for line in self.lines() if line not in MARKERS for i in line.split()]


MARKERS = ("recovering", "ready")


@pytest.fixture(scope="module")
def appender_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    script = tmp_path_factory.mktemp("crash") / "appender.py"
    script.write_text(APPENDER)
    return script


def start_appender(
    script: Path, root: Path, trial: int, small_flushes: bool, die_at: str = "never"
) -> Appender:
    acked = root.parent / f"acked-{trial:04d}.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([LEDGER_SOURCE, *sys.path])}
    arguments = [str(root), str(acked), f"t{trial:04d}", str(trial), str(int(small_flushes))]
    process = subprocess.Popen(
        [sys.executable, str(script), *arguments, die_at],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return Appender(process, acked)


# -- reading back what the ledger holds -----------------------------------------------------------


def segments_in_force(layout: WriterLayout) -> list[Path]:
    """A writer log's segments, less the sources an interrupted compaction already merged."""
    paths = [s.path for s in list_segments(layout.segments)]
    if layout.compaction_journal.exists():
        plan = orjson.loads(layout.compaction_journal.read_bytes())
        if (layout.segments / plan["merged"]).exists():
            paths = [p for p in paths if p.name not in set(plan["sources"])]
    return paths


def stored_event_ids(root: Path) -> collections.Counter[str]:
    """How often each event_id is stored: Parquet segments plus WAL-only (unflushed) events."""
    opened = Ledger.open(root)
    ids: collections.Counter[str] = collections.Counter()
    for layout in opened.writer_layouts():
        for path in segments_in_force(layout):
            ids.update(pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist())
    ids.update(opened.unflushed_table().column("event_id").to_pylist())
    return ids


def assert_exactly_once(acknowledged: list[str], stored: collections.Counter[str]) -> None:
    missing = [i for i in acknowledged if stored[i] == 0]
    doubled = [i for i, n in stored.items() if n > 1]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:5]}"
    assert not doubled, f"{len(doubled)} events stored more than once, e.g. {doubled[:5]}"


def assert_verifies(root: Path) -> None:
    report = Ledger.open(root).verify()
    assert report.ok, "\n".join(str(p) for p in report.problems)


def recover_and_close(root: Path) -> None:
    """Open the writer log (recovering it) and close it cleanly, flushing everything."""
    opened = Ledger.open(root)
    assert opened.writer.next_seq >= 0
    opened.close()


def assert_nothing_unasked(acknowledged: list[str], stored: collections.Counter[str]) -> None:
    """Stored but unacknowledged events may only be a killed child's in-flight batch (≤ 500)."""
    acked_upto: dict[str, int] = {}
    for event_id in acknowledged:
        prefix, n = event_id.split("-")
        acked_upto[prefix] = max(acked_upto.get(prefix, -1), int(n))
    acked = set(acknowledged)
    for event_id in stored:
        if event_id in acked:
            continue
        prefix, n = event_id.split("-")
        after = int(n) - acked_upto.get(prefix, -1)
        assert 0 < after <= 500, f"{event_id} is stored but was never sent before the kill"


def crash_state(root: Path, stored: collections.Counter[str]) -> set[str]:
    """What a kill left behind, to show the kills land in different phases."""
    state = set()
    flushed = 0
    for layout in Ledger.open(root).writer_layouts():
        for path in segments_in_force(layout):
            flushed += pq.ParquetFile(path).metadata.num_rows
        if list(layout.segments.glob(".tmp-*")):
            state.add("half-written segment")
        if layout.compaction_journal.exists():
            state.add("interrupted compaction")
    if flushed:
        state.add("flushed segments")
    if sum(stored.values()) > flushed:
        state.add("events only in the WAL")
    return state


def kill_schedule(trials: int, seed: int) -> Iterator[tuple[int, bool, str, float]]:
    """(trial, small_flushes, marker, delay): where each kill lands, reproducibly random."""
    rng = random.Random(seed)
    for trial in range(trials):
        small_flushes = rng.random() < 0.5
        if rng.random() < 0.15:  # while recovering what the previous child left
            yield trial, small_flushes, "recovering", rng.uniform(0, 0.02)
        else:
            yield trial, small_flushes, "ready", rng.uniform(0, 0.5)


def run_crash_trials(script: Path, root: Path, trials: int, seed: int) -> list[str]:
    """Kill ``trials`` appenders in turn; check what each left, then recover and check again."""
    Ledger.init(root)
    acknowledged: list[str] = []
    schedule = list(kill_schedule(trials, seed))
    seen_states: set[str] = set()
    appender = start_appender(script, root, 0, schedule[0][1])
    try:
        for trial, _, marker, delay in schedule:
            appender.go()
            appender.wait_for(marker)
            time.sleep(delay)
            appender.kill()
            acknowledged += appender.acknowledged()
            if trial + 1 < trials:  # the next child imports while this crash is checked
                appender = start_appender(script, root, trial + 1, schedule[trial + 1][1])
            stored = stored_event_ids(root)
            seen_states |= crash_state(root, stored)
            assert_exactly_once(acknowledged, stored)
            assert_nothing_unasked(acknowledged, stored)
            if trial % VERIFY_EVERY == 0:  # verify costs more than a trial: every few crashes
                assert_verifies(root)
    finally:
        appender.stop()
    assert {"events only in the WAL", "flushed segments"} <= seen_states, seen_states
    recover_and_close(root)
    (layout,) = Ledger.open(root).writer_layouts()  # each child reused its predecessor's log
    assert not list(layout.wal_dir.glob("*.log")), "a clean close leaves no WAL behind"
    assert not layout.compaction_journal.exists()
    final: collections.Counter[str] = collections.Counter()
    expected_seq = 0
    for path in segments_in_force(layout):
        table = pq.read_table(path, columns=["event_id", "seq"])
        seqs = table.column("seq").to_pylist()
        assert seqs == list(range(expected_seq, expected_seq + len(seqs))), path.name
        expected_seq += len(seqs)
        final.update(table.column("event_id").to_pylist())
    assert_exactly_once(acknowledged, final)
    assert_nothing_unasked(acknowledged, final)
    assert_verifies(root)
    return acknowledged


def test_sigkill_at_random_moments_loses_no_acknowledged_event(
    appender_script: Path, tmp_path: Path
) -> None:
    acknowledged = run_crash_trials(appender_script, tmp_path / "ledger", DEFAULT_TRIALS, seed=7)
    assert len(acknowledged) > DEFAULT_TRIALS * 100, "the children barely appended anything"


@pytest.mark.slow
def test_sigkill_many_more_times(
    appender_script: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("200 kills take minutes: run with -m slow")
    seed = int(os.environ.get("CHAINSIGHT_CRASH_SEED", "20260131"))
    acknowledged = run_crash_trials(appender_script, tmp_path / "ledger", SLOW_TRIALS, seed)
    assert len(acknowledged) > SLOW_TRIALS * 100


def run_until_it_dies(script: Path, root: Path, die_at: str) -> list[str]:
    """Run an appender rigged to die at one precise point of a flush; return what it acked."""
    Ledger.init(root)
    appender = start_appender(script, root, 0, small_flushes=True, die_at=die_at)
    try:
        _, errors = appender.process.communicate(b"go\n", timeout=120)
    finally:
        appender.stop()
    assert appender.process.returncode == 0, errors.decode()
    return appender.acknowledged()


def test_kill_after_flush_renamed_its_segment_but_kept_the_wal(
    appender_script: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ledger"
    acknowledged = run_until_it_dies(appender_script, root, "after-segment-before-wal-cleanup")
    (layout,) = Ledger.open(root).writer_layouts()
    (segment,) = list_segments(layout.segments)
    flushed = pq.read_table(segment.path, columns=["event_id"]).column("event_id").to_pylist()
    still_in_wal = [f for w in layout.wal_files() for f in scan_wal(w).frames]
    assert {i for f in still_in_wal for i in frame_ids(f)} >= set(flushed), "WAL kept the batch"
    stored = stored_event_ids(root)
    assert_exactly_once(acknowledged, stored)
    assert_nothing_unasked(acknowledged, stored)
    assert_verifies(root)
    recover_and_close(root)
    assert_exactly_once(acknowledged, stored_event_ids(root))
    assert_verifies(root)


def test_kill_after_compaction_renamed_its_result_is_finished_on_reopen(
    appender_script: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ledger"
    acknowledged = run_until_it_dies(appender_script, root, "after-merged-segment")
    (layout,) = Ledger.open(root).writer_layouts()
    assert layout.compaction_journal.exists(), "died between the merged rename and the cleanup"
    report = Ledger.open(root).verify()
    assert report.ok, report.problems
    assert any("interrupted compaction" in note for note in report.notes)
    assert_exactly_once(acknowledged, stored_event_ids(root))
    recover_and_close(root)
    assert not layout.compaction_journal.exists()
    names = [s.path.name for s in list_segments(layout.segments)]
    assert len(names) == len(segments_in_force(layout)), "the merged sources were removed"
    assert_exactly_once(acknowledged, stored_event_ids(root))
    assert_verifies(root)


def test_readers_see_each_event_once_during_an_interrupted_compaction(
    appender_script: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ledger"
    acknowledged = run_until_it_dies(appender_script, root, "after-merged-segment")
    opened = Ledger.open(root)
    tables = [pq.read_table(s.path, columns=["event_id"]) for s in opened.segment_files()]
    tables.append(opened.unflushed_table().select(["event_id"]))
    ids = collections.Counter(pa.concat_tables(tables).column("event_id").to_pylist())
    assert_exactly_once(acknowledged, ids)


def frame_ids(frame: WalFrame) -> list[str]:
    return [orjson.loads(line)["event_id"] for line in frame.lines]
