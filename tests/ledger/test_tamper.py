"""Tamper suite: mutate a real ledger on disk, one way at a time; verify must catch and locate it.

The ledger under attack is built through the public API (three appends separated by close and
reopen, so one writer log with three Parquet segments). Each mutation rewrites files the way an
attacker with write access would: a Parquet file read with pyarrow, changed, and written back in
place with the segment schema, or raw bytes. Every case states where the damage must be reported:
the writer log, the file, the seq where one applies, and what kind of problem it is.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ledger
from ledger import Ledger, VerifyReport
from ledger.canonical import canonical_event_bytes, canonical_json, parse_timestamp
from ledger.hashing import chain_hash, leaf_hash
from ledger.schema import CANONICAL_FIELDS, HASH_COLUMNS, REQUIRED_FIELDS, SEGMENT_SCHEMA
from ledger.wal import scan_wal

# The attacked writer log: three appends, one segment each (seqs 0..119, 120..219, 220..299).
BATCH_SIZES = (120, 100, 80)
MIDDLE = 1  # index of the segment most mutations hit
ROW = 37  # row of the middle segment most mutations hit: seq 157
TARGET_SEQ = sum(BATCH_SIZES[:MIDDLE]) + ROW
LAST_SEQ = sum(BATCH_SIZES) - 1
HEAD = "head.json"
LEDGER_SOURCE = str(Path(ledger.__file__).resolve().parents[1])  # children import the same code

ACTIONS = (
    ("task", "task.start"),
    ("llm", "llm.chat"),
    ("secret", "secret.read"),
    ("config", "config.update"),
    ("approval", "approval.grant"),
    ("job", "job.trigger"),
    ("agent", "agent.delegate"),
    ("network", "email.send"),
    ("data", "data.read"),
    ("tool", "tool.call"),
)


def realistic_events(count: int, batch: int) -> list[dict[str, Any]]:
    """Agent activity using every DESIGN.md §2 field, attrs nested, values varied per event."""
    rng = random.Random(batch)
    start = datetime(2026, 1, 31, 9, 0, tzinfo=UTC) + timedelta(hours=batch)
    events = []
    for i in range(count):
        category, action = ACTIONS[i % len(ACTIONS)]
        moment = start + timedelta(seconds=7 * i, microseconds=rng.randrange(1_000_000))
        events.append(
            {
                "event_id": f"evt-{batch}-{i:05d}",
                "time": moment.isoformat().replace("+00:00", "Z"),
                "agent_id": f"agent-{rng.randrange(6)}",
                "category": category,
                "action": action,
                "session_id": f"sess-{batch}-{i // 25}",
                "task_id": f"task-{batch}-{i // 50}",
                "trace_id": f"{rng.getrandbits(128):032x}",
                "span_id": f"{rng.getrandbits(64):016x}",
                "parent_span_id": f"{rng.getrandbits(64):016x}",
                "caused_by": f"evt-{batch}-{i - 1:05d}" if i else f"evt-{batch}-root",
                "principal": f"svc-agent-{i % 3}@prod.iam",
                "on_behalf_of": "alice@example.com",
                "credential_id": f"cred-{rng.randrange(4)}",
                "credential_scopes": ["secrets:read", "config:write", "jobs:trigger"][: 1 + i % 3],
                "credential_expires_at": (start + timedelta(hours=8)).isoformat(),
                "scope_used": "secrets:read",
                "intent": "rotate the payments database password",
                "intent_scopes": ["secrets:read", "config:write"],
                "tool": "vault-cli",
                "resource": f"secret://vault/prod/db{i % 4}",
                "destination": "api.partner.example",
                "external": i % 2 == 1,
                "sensitivity": ("internal", "confidential", "restricted")[i % 3],
                "bytes": rng.randrange(1, 10_000_000),
                "privileged": i % 3 == 0,
                "input_trust": "untrusted" if i % 5 == 0 else "trusted",
                "target_agent": "agent-9",
                "approval_for": "config://prod/payments",
                "approver": "bob@example.com",
                "outcome": ("success", "failure", "error", "denied")[i % 4],
                "error": "timeout after 30s" if i % 4 == 2 else "",
                "authz_decision": "allow",
                "policy_id": f"pol-{i % 7}",
                "attrs": {
                    "model": "gpt-4.1",
                    "tokens": {"input": rng.randrange(5000), "output": rng.randrange(2000)},
                    "labels": ["prod", "paiement-ü", "☃"],
                    "retry": {"attempt": i % 3, "backoff_ms": [100, 200, 400]},
                },
            }
        )
    return events


# -- the ledger under attack --------------------------------------------------------------------

BYSTANDER_EVENTS = 50  # a second writer log, appended at the same time: it must stay blameless


@dataclass(frozen=True)
class Target:
    """A fresh copy of the built ledger, and where the attacked writer log's files are."""

    root: Path
    writer_id: str
    bystander_id: str

    @property
    def writer_dir(self) -> Path:
        return self.root / "writers" / self.writer_id

    def segments(self) -> list[Path]:
        return sorted((self.writer_dir / "segments").glob("*.parquet"))

    def segment(self, index: int) -> Path:
        return self.segments()[index]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Target:
    root = tmp_path_factory.mktemp("pristine") / "ledger"
    Ledger.init(root)
    writer_ids = set()
    bystander_id = ""
    bystander = Ledger.open(root)
    try:
        for batch, count in enumerate(BATCH_SIZES):
            with Ledger.open(root) as opened:
                writer_ids.add(opened.append(realistic_events(count, batch)).writer_id)
                if batch == 0:  # taken while the first log is held, so it is a second log
                    events = realistic_events(BYSTANDER_EVENTS, 99)
                    bystander_id = bystander.append(events).writer_id
    finally:
        bystander.close()
    assert len(writer_ids) == 1, "a closed writer log is reused by the next opener"
    target = Target(root, writer_ids.pop(), bystander_id)
    assert target.bystander_id != target.writer_id
    assert len(target.segments()) == len(BATCH_SIZES)
    report = Ledger.open(root).verify()
    assert report.ok, report.problems
    assert report.events == sum(BATCH_SIZES) + BYSTANDER_EVENTS
    return target


@pytest.fixture
def target(pristine: Target, tmp_path: Path) -> Target:
    copy = tmp_path / "ledger"
    shutil.copytree(pristine.root, copy)
    return Target(copy, pristine.writer_id, pristine.bystander_id)


# -- helpers that rewrite a segment ---------------------------------------------------------------


def read(path: Path) -> pa.Table:
    return pq.read_table(path)


def write_in_place(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path, compression="zstd")


def rows(table: pa.Table) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = table.to_pylist()
    return listed


def table_of(rows_: list[dict[str, Any]], schema: pa.Schema = SEGMENT_SCHEMA) -> pa.Table:
    return pa.Table.from_pylist(rows_, schema=schema)


def edit_cell(path: Path, column: str, row: int, change: Callable[[Any], Any]) -> None:
    """Replace one value of one column in place, keeping the column's type and nullability."""
    table = read(path)
    index = table.schema.get_field_index(column)
    values = table.column(column).to_pylist()
    values[row] = change(values[row])
    field = table.schema.field(index)
    write_in_place(path, table.set_column(index, field, pa.array(values, field.type)))


def edit_column(path: Path, column: str, change: Callable[[pa.Array], pa.Array]) -> None:
    """Replace a whole column in place (for values Python's datetime cannot hold)."""
    table = read(path)
    index = table.schema.get_field_index(column)
    changed = change(table.column(column).combine_chunks())
    write_in_place(path, table.set_column(index, table.schema.field(index), changed))


def canonical_bytes_of(row: dict[str, Any]) -> bytes:
    """The canonical bytes DESIGN.md §3 defines, rebuilt from one stored row (as a forger would)."""
    fields: dict[str, Any] = {}
    for name, value in row.items():
        if name in HASH_COLUMNS or value is None:
            continue
        fields[name] = parse_timestamp(value) if isinstance(value, datetime) else value
    return canonical_event_bytes(fields)


def rechain(row: dict[str, Any], prev_hash: bytes) -> dict[str, Any]:
    """The row with prev_hash set and its hashes recomputed from its (possibly edited) columns."""
    leaf = leaf_hash(canonical_bytes_of(row))
    hashes = {"prev_hash": prev_hash, "leaf_hash": leaf, "hash": chain_hash(prev_hash, leaf)}
    return {**row, **{name: hashes[name] for name in HASH_COLUMNS}}


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def footer_start(path: Path) -> int:
    data = path.read_bytes()
    footer_length = int.from_bytes(data[-8:-4], "little")
    return len(data) - 8 - footer_length


# -- mutations: each returns where the damage must be reported -----------------------------------


@dataclass(frozen=True)
class Expected:
    """Where verify must report the damage.

    ``codes``: acceptable problem codes; ``file``: the file that must be named; ``seqs``: the
    acceptable values of the lowest seq named there (empty: no seq applies); ``writer_id``: the
    blamed writer log when it is not the usual one; ``other_files``: files that may also be named.
    """

    codes: frozenset[str]
    file: str
    seqs: frozenset[int]
    writer_id: str | None = None
    other_files: frozenset[str] = frozenset()


def expect(
    *codes: str,
    file: str,
    seq: int | tuple[int, ...] = (),
    writer_id: str | None = None,
    also: tuple[str, ...] = (),
) -> Expected:
    seqs = frozenset((seq,) if isinstance(seq, int) else seq)
    return Expected(frozenset(codes), file, seqs, writer_id, frozenset(also))


def change_agent_id(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "agent_id", ROW, lambda _: "agent-innocent")
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def change_time(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "time", ROW, lambda v: v - timedelta(hours=3))
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def change_bool(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "privileged", ROW, lambda v: not v)
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def change_list(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "credential_scopes", ROW, lambda v: [*v, "admin:*"])
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def change_attrs(t: Target) -> Expected:
    def more_output_tokens(text: str) -> str:
        attrs = json.loads(text)
        attrs["tokens"]["output"] += 1
        return canonical_json(attrs).decode()

    edit_cell(t.segment(MIDDLE), "attrs", ROW, more_output_tokens)
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def shift_time_by_ten_thousand_years(t: Target) -> Expected:
    """Queries would read year 12026: a rebuild printing years modulo 10,000 would not notice."""
    ten_thousand_years = 3_652_425 * 86_400 * 10**6  # µs in 10,000 Gregorian years

    def shifted(values: pa.Array) -> pa.Array:
        micros = values.cast(pa.int64()).to_numpy().copy()
        micros[ROW] += ten_thousand_years
        return pa.array(micros).cast(values.type)

    edit_column(t.segment(MIDDLE), "time", shifted)
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def null_list_items(t: Target) -> Expected:
    """A million null items: each is written as null, which the rebuild must make room for."""
    edit_cell(t.segment(MIDDLE), "intent_scopes", ROW, lambda _: [None] * 1_000_000)
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def attrs_absorbs_the_next_member(t: Target) -> Expected:
    """attrs text that closes early and carries the next member, which is then erased.

    The canonical bytes would be unchanged: attrs is embedded as its text, so verify must insist
    the text is exactly one JSON object.
    """
    path = t.segment(MIDDLE)
    listed = rows(read(path))
    after_attrs = [f.name for f in CANONICAL_FIELDS if f.name > "attrs"]
    row, name = next(
        (index, name)
        for index, stored in enumerate(listed)
        if stored["attrs"] is not None
        for name in [next(n for n in after_attrs if stored[n] is not None)]
        if not isinstance(stored[name], datetime | list) and name not in REQUIRED_FIELDS
    )
    value = listed[row][name]
    listed[row]["attrs"] += f',"{name}":{canonical_json(value).decode()}'
    listed[row][name] = None
    write_in_place(path, table_of(listed))
    return expect("content-changed", file=path.name, seq=sum(BATCH_SIZES[:MIDDLE]) + row)


def change_int(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "bytes", ROW, lambda v: v // 1000)
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def change_observed_time(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "observed_time", ROW, lambda v: v + timedelta(microseconds=1))
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def change_writer_id(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "writer_id", ROW, lambda _: t.bystander_id)
    return expect("writer-changed", "content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def erase_optional_value(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "on_behalf_of", ROW, lambda _: None)
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def change_seq(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "seq", ROW, lambda v: v + 1000)
    # the lowest seq named should be 157, the edited row; see test_seq_named_is_the_chain_position
    return expect("seq-out-of-place", "content-changed", file=t.segment(MIDDLE).name)


def change_hash(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "hash", ROW, lambda v: bytes(x ^ 0xFF for x in v))
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def change_leaf_hash(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "leaf_hash", ROW, lambda v: bytes(reversed(v)))
    return expect("content-changed", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def change_prev_hash(t: Target) -> Expected:
    edit_cell(t.segment(MIDDLE), "prev_hash", ROW, lambda _: bytes(32))
    return expect("content-changed", "chain-broken", file=t.segment(MIDDLE).name, seq=TARGET_SEQ)


def rehash_edited_row(t: Target) -> Expected:
    """Edit a row and recompute its own hash: only the link to the next row breaks."""
    path = t.segment(MIDDLE)
    stored = rows(read(path))
    edited = {**stored[ROW], "destination": "attacker.example", "external": True}
    stored[ROW] = rechain(edited, stored[ROW]["prev_hash"])
    write_in_place(path, table_of(stored))
    return expect("chain-broken", file=path.name, seq=TARGET_SEQ + 1)


def rehash_last_row(t: Target) -> Expected:
    """The same on the very last event: no next link, so the head recorded at flush catches it."""
    path = t.segment(-1)
    stored = rows(read(path))
    edited = {**stored[-1], "outcome": "success", "error": None}
    stored[-1] = rechain(edited, stored[-1]["prev_hash"])
    write_in_place(path, table_of(stored))
    return expect("head-mismatch", file=HEAD, seq=LAST_SEQ)


def rehash_rest_of_log(t: Target) -> Expected:
    """Rewrite one row and re-chain every later row of every later segment: only head.json knows."""
    prev = b""
    for index in range(MIDDLE, len(BATCH_SIZES)):
        path = t.segment(index)
        stored = rows(read(path))
        for i, row in enumerate(stored):
            if index == MIDDLE and i < ROW:
                continue
            if index == MIDDLE and i == ROW:
                prev = row["prev_hash"]
                stored[i] = rechain({**row, "approver": "mallory@example.com"}, prev)
            else:
                stored[i] = rechain(row, prev)
            prev = stored[i]["hash"]
        write_in_place(path, table_of(stored))
    return expect("head-mismatch", file=HEAD, seq=LAST_SEQ)


def delete_row(t: Target) -> Expected:
    path = t.segment(MIDDLE)
    stored = rows(read(path))
    del stored[ROW]
    write_in_place(path, table_of(stored))
    # 157 is the deleted seq; 158 is the first row out of place (see the xfail test below)
    return expect(
        "row-count",
        "seq-out-of-place",
        "chain-broken",
        file=path.name,
        seq=(TARGET_SEQ, TARGET_SEQ + 1),
    )


def insert_forged_row(t: Target) -> Expected:
    """A new event slipped in before seq 157, claiming that seq, with a correctly chained hash."""
    path = t.segment(MIDDLE)
    stored = rows(read(path))
    forged = {
        **stored[ROW],
        "event_id": "evt-forged-approval",
        "category": "approval",
        "action": "approval.grant",
        "approval_for": "secret://vault/prod/db0",
    }
    stored.insert(ROW, rechain(forged, stored[ROW]["prev_hash"]))
    write_in_place(path, table_of(stored))
    # the forged row itself looks perfect; the displaced original (seq 157, now at 158) does not
    return expect(
        "row-count",
        "seq-out-of-place",
        "chain-broken",
        file=path.name,
        seq=(TARGET_SEQ, TARGET_SEQ + 1),
    )


def swap_rows(t: Target) -> Expected:
    path = t.segment(MIDDLE)
    stored = rows(read(path))
    stored[ROW], stored[ROW + 1] = stored[ROW + 1], stored[ROW]
    write_in_place(path, table_of(stored))
    return expect("seq-out-of-place", "chain-broken", file=path.name, seq=(TARGET_SEQ,))


def drop_middle_segment(t: Target) -> Expected:
    gone = t.segment(MIDDLE)
    after = t.segment(MIDDLE + 1).name
    gone.unlink()
    return expect("missing-events", file=after, seq=sum(BATCH_SIZES[:MIDDLE]))


def drop_last_segment(t: Target) -> Expected:
    t.segment(-1).unlink()
    return expect("missing-events", file=HEAD, seq=sum(BATCH_SIZES[:-1]))


def truncate_last_segment(t: Target) -> Expected:
    path = t.segment(-1)
    os.truncate(path, path.stat().st_size * 2 // 3)
    return expect("unreadable-segment", file=path.name, also=(HEAD,))


def duplicate_segment_overlapping(t: Target) -> Expected:
    source = t.segment(MIDDLE)
    first = sum(BATCH_SIZES[:MIDDLE]) + 30
    copy = source.with_name(f"{first:020d}-{first + BATCH_SIZES[MIDDLE] - 1:020d}.parquet")
    shutil.copyfile(source, copy)
    return expect("overlapping-segment", file=copy.name)


def flip_byte_in_data_page(t: Target) -> Expected:
    """One bit of row 157's stored hash, flipped where Parquet keeps it (raw bytes, no pyarrow)."""
    path = t.segment(MIDDLE)
    digest = read(path).column("hash")[ROW].as_py()
    column = SEGMENT_SCHEMA.get_field_index("hash")
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(column)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    offset = path.read_bytes().find(digest, start, start + chunk.total_compressed_size)
    assert offset > 0, "hashes are incompressible, so zstd stores them verbatim"
    flip_byte(path, offset + 5)
    return expect("content-changed", file=path.name, seq=TARGET_SEQ)


def add_column(t: Target) -> Expected:
    path = t.segment(MIDDLE)
    table = read(path)
    flags = pa.array([i == ROW for i in range(table.num_rows)])
    write_in_place(path, table.append_column("approved_by_ciso", flags))
    return expect("schema-changed", file=path.name)


def drop_column(t: Target) -> Expected:
    path = t.segment(MIDDLE)
    write_in_place(path, read(path).drop_columns(["input_trust"]))
    return expect("schema-changed", file=path.name)


def retype_column(t: Target) -> Expected:
    path = t.segment(MIDDLE)
    table = read(path)
    index = table.schema.get_field_index("bytes")
    as_text = pa.array([str(v) for v in table.column("bytes").to_pylist()], pa.string())
    write_in_place(path, table.set_column(index, pa.field("bytes", pa.string()), as_text))
    return expect("schema-changed", file=path.name)


CRASHING_APPENDER = """
import os, sys, json
from ledger import Ledger
sys.path.insert(0, sys.argv[2])
from test_tamper import realistic_events
ledger = Ledger.open(sys.argv[1])
for batch in range(3):
    receipts = ledger.append(realistic_events(40, 50 + batch))
print(json.dumps({"writer_id": receipts.writer_id, "last_seq": receipts[-1].seq}), flush=True)
os._exit(0)  # no close: the events live only in the WAL
"""


def crash_with_unflushed_events(root: Path, tmp: Path) -> dict[str, Any]:
    """Run a child that appends three batches and dies without closing; return what it said."""
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
    said: dict[str, Any] = json.loads(done.stdout)
    return said


def flip_byte_in_wal(t: Target) -> Expected:
    """An acknowledged batch of a crashed writer, still only in its WAL, has a byte flipped."""
    crashed = crash_with_unflushed_events(t.root, t.root.parent)
    wal_dir = t.root / "writers" / crashed["writer_id"] / "wal"
    (wal,) = wal_dir.glob("*.log")
    frames = scan_wal(wal).frames
    assert len(frames) == 3 and not scan_wal(wal).torn
    middle = frames[1]
    flip_byte(wal, middle.offset + 40)  # inside the payload of the second of three frames
    return expect(
        "wal-damaged",
        "wal-changed",
        file=wal.name,
        seq=middle.first_seq,
        writer_id=crashed["writer_id"],
    )


MUTATIONS = [
    change_agent_id,
    change_time,
    change_bool,
    change_list,
    change_attrs,
    shift_time_by_ten_thousand_years,
    null_list_items,
    attrs_absorbs_the_next_member,
    change_int,
    change_observed_time,
    change_writer_id,
    erase_optional_value,
    change_seq,
    change_hash,
    change_leaf_hash,
    change_prev_hash,
    rehash_edited_row,
    rehash_last_row,
    rehash_rest_of_log,
    delete_row,
    insert_forged_row,
    swap_rows,
    drop_middle_segment,
    drop_last_segment,
    truncate_last_segment,
    duplicate_segment_overlapping,
    flip_byte_in_data_page,
    add_column,
    drop_column,
    retype_column,
    flip_byte_in_wal,
]


def assert_localised(report: VerifyReport, writer_id: str, expected: Expected) -> None:
    assert not report.ok, "the tampering went unnoticed"
    shown = "\n".join(str(p) for p in report.problems)
    blamed = expected.writer_id or writer_id
    assert {p.writer_id for p in report.problems} == {blamed}, shown
    assert {p.file for p in report.problems} <= {expected.file, *expected.other_files}, shown
    at_file = [p for p in report.problems if p.file == expected.file]
    assert at_file, f"nothing reported against {expected.file}:\n{shown}"
    assert {p.code for p in at_file} & expected.codes, shown
    named = [p.seq for p in at_file if p.seq is not None]
    if expected.seqs:
        assert named, f"no seq named:\n{shown}"
        assert min(named) in expected.seqs, shown


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda m: m.__name__)
def test_tampering_is_detected_and_localised(
    target: Target, mutate: Callable[[Target], Expected]
) -> None:
    expected = mutate(target)
    report = Ledger.open(target.root).verify()
    assert_localised(report, target.writer_id, expected)


def test_forger_helpers_reproduce_the_stored_hashes(target: Target) -> None:
    """The re-chaining mutations are only meaningful if they compute hashes as the ledger does."""
    stored = rows(read(target.segment(MIDDLE)))
    for row in stored[:5]:
        assert rechain(row, row["prev_hash"]) == row


@pytest.mark.parametrize("mutate", [change_seq, delete_row], ids=lambda m: m.__name__)
def test_seq_named_is_the_chain_position(
    target: Target, mutate: Callable[[Target], Expected]
) -> None:
    mutate(target)
    report = Ledger.open(target.root).verify()
    named = [p.seq for p in report.problems if p.seq is not None]
    assert named and min(named) == TARGET_SEQ, "\n".join(str(p) for p in report.problems)


def test_forged_footer_statistics_are_detected(target: Target) -> None:
    path = target.segment(MIDDLE)
    statistics = pq.ParquetFile(path).metadata.row_group(0)
    carried = {
        statistics.column(i).path_in_schema
        for i in range(statistics.num_columns)
        if statistics.column(i).statistics is not None
    }
    assert "resource" not in carried, "statistics only where they prune, fewer to forge"
    hidden = max(pq.read_table(path, columns=["event_id"]).column("event_id").to_pylist())
    lowered = hidden[:-1] + chr(ord(hidden[-1]) - 1)  # same length, sorts just below
    data = path.read_bytes()
    footer = footer_start(path)
    forged = data[footer:].replace(hidden.encode(), lowered.encode())
    assert forged != data[footer:]
    path.write_bytes(data[:footer] + forged)
    query = "SELECT count(*) FROM read_parquet(?) WHERE event_id = ?"
    seen = duckdb.connect().execute(query, [str(path), hidden]).fetchone()
    assert seen == (0,), "the forged statistics hide the row from a filtered query"
    report = Ledger.open(target.root).verify()
    assert_localised(report, target.writer_id, expect("statistics-changed", file=path.name))


def test_cli_verify_exits_1_and_names_writer_seq_and_file(target: Target) -> None:
    pytest.importorskip("api.cli")
    command = [sys.executable, "-c", "from api.cli import main; main()", "verify"]
    env = {**os.environ, "PYTHONPATH": LEDGER_SOURCE}
    clean = subprocess.run(
        [*command, "--ledger", str(target.root)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    expected = change_agent_id(target)
    tampered = subprocess.run(
        [*command, "--ledger", str(target.root)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = tampered.stdout + tampered.stderr
    assert tampered.returncode == 1, output
    assert target.writer_id in output
    assert expected.file in output
    assert str(TARGET_SEQ) in output
