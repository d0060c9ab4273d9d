"""Concurrency: several appenders on one ledger each get their own writer log, and nothing mixes.

Four processes append 20,000 events each (batches of 1,000) to one ledger at the same moment;
afterwards every event is stored exactly once, in the writer log its receipts named, each log's
seqs run contiguously from 0, and the whole ledger verifies. Within one process, two Ledger objects
get two logs; a closed log is reused by the next opener; a log copied in from another ledger is
never appended to.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import ledger
from ledger import Ledger, WriterBusyError
from ledger.segments import list_segments
from ledger.writer import WriterLog

LEDGER_SOURCE = str(Path(ledger.__file__).resolve().parents[1])  # children import the same code
PROCESSES = 4
EVENTS_PER_PROCESS = 20_000
BATCH = 1_000

APPENDER = r'''
"""Append EVENTS events in batches once the parent says go; report the receipts in JSON."""
import json
import sys
import time
from datetime import UTC, datetime, timedelta

from ledger import Ledger

ledger_path, prefix, events, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
start = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


def event(n):
    return {
        "event_id": f"{prefix}-{n:06d}",
        "time": (start + timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z"),
        "agent_id": f"{prefix}-agent-{n % 5}",
        "category": ("data", "network", "secret", "approval")[n % 4],
        "action": ("data.read", "http.post", "secret.read", "approval.request")[n % 4],
        "session_id": f"{prefix}-session-{n // 100}",
        "task_id": f"{prefix}-task-{n // 1000}",
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "parent_span_id": f"{n + 1:016x}",
        "principal": "svc-analytics@prod.iam",
        "on_behalf_of": "erin@example.com",
        "credential_id": "cred-analytics",
        "credential_scopes": ["warehouse:read", "egress:partner"],
        "scope_used": "warehouse:read",
        "tool": "sql-runner",
        "resource": f"data://warehouse/customers/{n % 50}",
        "destination": "sftp.partner.example",
        "external": n % 4 == 1,
        "sensitivity": "restricted",
        "bytes": 4096 + n,
        "privileged": False,
        "input_trust": "untrusted" if n % 9 == 0 else "trusted",
        "outcome": "success",
        "authz_decision": "allow",
        "policy_id": "pol-egress",
        "attrs": {"query": {"rows": n % 1000, "tables": ["customers", "orders"]}, "dry_run": False},
    }


print("ready", flush=True)
if sys.stdin.readline() != "go\n":  # start together
    sys.exit("no go from the parent")
ledger = Ledger.open(ledger_path)
writer_ids, seqs = set(), []
started = time.time()
for first in range(0, events, batch):
    receipts = ledger.append([event(n) for n in range(first, min(first + batch, events))])
    writer_ids.add(receipts.writer_id)
    seqs.extend(r.seq for r in receipts)
finished = time.time()
ledger.close()
summary = {"prefix": prefix, "writer_ids": sorted(writer_ids), "seqs": seqs}
print(json.dumps({**summary, "started": started, "finished": finished}))
'''


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([LEDGER_SOURCE, *sys.path])}


def stored_rows(root: Path) -> dict[str, list[tuple[str, int]]]:
    """event_id -> every (writer_id, seq) it is stored at, read straight from the Parquet files."""
    found: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for layout in Ledger.open(root).writer_layouts():
        for segment in list_segments(layout.segments):
            table = pq.read_table(segment.path, columns=["event_id", "writer_id", "seq"])
            for event_id, writer_id, seq in zip(*table.to_pydict().values(), strict=True):
                found[event_id].append((writer_id, seq))
    return found


def realistic_events(prefix: str, count: int) -> list[dict[str, Any]]:
    start = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)
    return [
        {
            "event_id": f"{prefix}-{n:04d}",
            "time": (start + timedelta(seconds=n)).isoformat(),
            "agent_id": "agent-ops",
            "category": "job",
            "action": "job.trigger",
            "session_id": f"{prefix}-session",
            "task_id": "task-nightly-deploy",
            "principal": "svc-ci@prod.iam",
            "credential_id": "cred-ci",
            "credential_scopes": ["jobs:trigger"],
            "scope_used": "jobs:trigger",
            "resource": f"job://ci/deploy-{n % 3}",
            "privileged": True,
            "outcome": "success",
            "attrs": {"pipeline": {"id": n, "stages": ["build", "test", "deploy"]}},
        }
        for n in range(count)
    ]


def tree_digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def run_together(children: list[subprocess.Popen[bytes]]) -> list[dict[str, Any]]:
    """Wait until every child has imported, release them at once, collect their reports."""
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n", "the appender failed to start"
    for child in children:  # all imported and waiting: release them together
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
    reports: list[dict[str, Any]] = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err.decode()
        reports.append(json.loads(out))
    return reports


def test_four_processes_appending_at_once_each_get_their_own_writer_log(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    script = tmp_path / "appender.py"
    script.write_text(APPENDER)
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), f"p{k}", str(EVENTS_PER_PROCESS), str(BATCH)],
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k in range(PROCESSES)
    ]
    try:
        reports = run_together(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert max(r["started"] for r in reports) < min(r["finished"] for r in reports), (
        "the four appenders were not all appending at the same time"
    )
    receipt_writer = {}
    for report in reports:
        assert len(report["writer_ids"]) == 1, "one process appends to one writer log"
        assert report["seqs"] == list(range(EVENTS_PER_PROCESS)), "seqs contiguous from 0"
        receipt_writer[report["prefix"]] = report["writer_ids"][0]
    assert len(set(receipt_writer.values())) == PROCESSES, "4 distinct writer logs"

    stored = stored_rows(root)
    assert len(stored) == PROCESSES * EVENTS_PER_PROCESS
    by_writer: dict[str, list[int]] = collections.defaultdict(list)
    for event_id, places in stored.items():
        assert len(places) == 1, f"{event_id} stored {len(places)} times: {places}"
        writer_id, seq = places[0]
        assert writer_id == receipt_writer[event_id.split("-")[0]], "where its receipt said"
        assert seq == int(event_id.split("-")[1])
        by_writer[writer_id].append(seq)
    assert len(by_writer) == PROCESSES
    for seqs in by_writer.values():
        assert sorted(seqs) == list(range(EVENTS_PER_PROCESS))

    verified = Ledger.open(root).verify()
    assert verified.ok, verified.problems
    assert verified.events == PROCESSES * EVENTS_PER_PROCESS
    assert {w.writer_id for w in verified.writers} == set(by_writer)
    assert all(w.last_seq == EVENTS_PER_PROCESS - 1 for w in verified.writers)


def test_two_ledger_objects_in_one_process_get_different_writer_logs(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    with Ledger.open(root) as first, Ledger.open(root) as second:
        a = first.append(realistic_events("a1", 30))
        b = second.append(realistic_events("b1", 20))
        a2 = first.append(realistic_events("a2", 10))  # interleaved appends stay in their logs
        assert a.writer_id != b.writer_id
        assert a2.writer_id == a.writer_id
        assert [r.seq for r in a2] == list(range(30, 40))
        assert [r.seq for r in b] == list(range(20))
    stored = stored_rows(root)
    assert {stored[r.event_id][0][0] for r in [*a, *a2]} == {a.writer_id}
    assert {stored[r.event_id][0][0] for r in b} == {b.writer_id}
    assert Ledger.open(root).verify().ok


def test_a_held_writer_log_cannot_be_taken(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    with Ledger.open(root) as holder:
        holder.append(realistic_events("h", 3))
        (layout,) = holder.writer_layouts()
        with pytest.raises(WriterBusyError):
            WriterLog.open(layout)


def test_a_closed_writer_log_is_reused_by_the_next_opener(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    Ledger.init(root)
    with Ledger.open(root) as ledger_:
        first = ledger_.append(realistic_events("first", 25))
    with Ledger.open(root) as ledger_:
        second = ledger_.append(realistic_events("second", 25))
    assert second.writer_id == first.writer_id
    assert [r.seq for r in second] == list(range(25, 50))
    assert second[0].hash != first[-1].hash
    assert len(Ledger.open(root).writer_layouts()) == 1
    report = Ledger.open(root).verify()
    assert report.ok and report.events == 50


def test_an_idle_writer_log_from_another_ledger_is_never_appended_to(tmp_path: Path) -> None:
    elsewhere = tmp_path / "edge-node"
    Ledger.init(elsewhere)
    with Ledger.open(elsewhere) as edge:
        foreign_id = edge.append(realistic_events("edge", 40)).writer_id
    root = tmp_path / "central"
    Ledger.init(root)
    foreign = root / "writers" / foreign_id
    shutil.copytree(elsewhere / "writers" / foreign_id, foreign)
    before = tree_digest(foreign)

    for round_ in range(2):  # idle and unlocked, yet never taken: its appender lives elsewhere
        with Ledger.open(root) as central:
            receipts = central.append(realistic_events(f"central{round_}", 15))
        assert receipts.writer_id != foreign_id
    assert tree_digest(foreign) == before, "the foreign writer log was touched"
    assert len(Ledger.open(root).writer_layouts()) == 2, "one local log, reused; one foreign"
    report = Ledger.open(root).verify()
    assert report.ok, report.problems
    assert report.events == 40 + 2 * 15


def test_parallel_verify_works_from_a_script_without_a_main_guard(tmp_path: Path) -> None:
    """Verify's worker processes must not re-run the caller's script (or choke on stdin)."""
    import subprocess
    import sys

    import ledger.verify as verify_module

    path = tmp_path / "store"  # not "ledger": the script's folder is first on sys.path
    store = Ledger.init(path)
    events = [
        {
            "event_id": f"e-{i}",
            "time": "2026-11-02T08:00:00Z",
            "agent_id": f"agent-{i % 7}",
            "category": "tool",
            "action": "tool.call",
        }
        for i in range(3000)
    ]
    for start in range(0, 3000, 1000):
        store.append(events[start : start + 1000])
        store.flush()
    store.close()
    script = (
        "import ledger.verify as v\n"
        "from ledger import Ledger\n"
        "v.PARALLEL_FROM_ROWS = 1\n"
        f"report = Ledger.open({str(path)!r}).verify(workers=2)\n"
        "print('RESULT', report.ok, report.events)\n"
    )
    file_script = tmp_path / "no_guard.py"
    file_script.write_text(script)
    for command in ([sys.executable, str(file_script)], [sys.executable, "-"]):
        done = subprocess.run(
            command,
            input=script if command[-1] == "-" else None,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("RESULT") == 1, done.stdout  # the script ran once, not per worker
        assert "RESULT True 3000" in done.stdout
        assert "Traceback" not in done.stderr, done.stderr
    assert verify_module.PARALLEL_FROM_ROWS > 1  # the module default is untouched here
