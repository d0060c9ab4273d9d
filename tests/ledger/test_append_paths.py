"""The append path's newer parts, each held to a plain model of what it must do.

* WAL frames: ``CSW2`` frames end on 4096-byte boundaries (for O_DIRECT), ``CSW1`` frames (no
  padding) are still read, a cut in the padding loses nothing, a cut in the payload is a torn tail;
  the buffered fallback (no O_DIRECT, or a direct write refused) writes the same recoverable WAL.
* A failure after the WAL write: the batch is durable, the log is released, reopening recovers it.
* The batch size limit, on the compiled parse's fast path and on the validator's path.
* The two-part parse of a large batch: the same columns, canonical bytes and hashes as one part.
* Parallel leaf hashing: the same leaves and chain as one thread and as hashlib.
* The writer's KeySet of unflushed event_ids, and the dedup it feeds (no false duplicates).

Crashes here are in-process: ``crash`` releases a writer log without flushing, as the writer does
itself when a batch fails after its WAL write; the WAL is then all that holds the batches.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ledger_helpers import canonical_event, canonical_time, tool_event, tree_digest

import ledger.batch
import ledger.ingest
import ledger.segments
import ledger.textscan
import ledger.wal
import ledger.writer
from ledger import Ledger, LedgerError, Receipts, ValidationError
from ledger.batch import CheckedBatch, check_batch, normalise
from ledger.errors import BatchTooLargeError
from ledger.events import SERIALISE_OPTIONS, validate_batch
from ledger.ingest import ParsedBatch, parse_batch
from ledger.keyset import KeySet, id_keys
from ledger.layout import WriterLayout, try_lock
from ledger.rebuild import Chained, chained
from ledger.wal import WriteAheadLog, scan_wal

BLOCK = 4096
HEADER = 24  # magic, first_seq u64, count u32, payload_len u32, crc32 u32
SPLIT = 2048  # ledger.ingest.SPLIT_ROWS, written out
WRITER = "w-1"
OBSERVED = 1_700_000_000_000_000


# -- events ---------------------------------------------------------------------------------------


def rich_event(i: int) -> dict[str, Any]:
    """A canonical event with optional fields varying by i: escapes, multibyte text, lists."""
    event = canonical_event(i)
    if i % 2:
        event["intent"] = ('say "hi"\n', "plain", "ключ 🔐", "back\\slash", "tab\there")[i % 5]
    if i % 3:
        event["external"] = i % 4 == 1  # false as well as true
        event["bytes"] = i * 1_000_003
    if i % 5 == 0:
        event["credential_scopes"] = [f"scope:{k}" for k in range(i % 7)]
    if i % 7 == 0:
        event["attrs"] = {"n": i, "path": ["a", {"b": "ü"}]}
    if i % 11 == 0:
        event["trace_id"] = hashlib.md5(str(i).encode()).hexdigest()
    return event


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in events]


# -- ledgers --------------------------------------------------------------------------------------


def new_ledger(tmp_path: Path) -> Path:
    root = tmp_path / "ledger"
    Ledger.init(root)
    return root


def only_layout(root: Path) -> WriterLayout:
    (layout,) = Ledger.open(root).writer_layouts()
    return layout


def crash(opened: Ledger) -> None:
    """Release the ledger's writer log without flushing: its unflushed batches are WAL-only."""
    opened.writer._abandon()
    opened._writer = None


def stored(root: Path) -> dict[str, list[tuple[int, str]]]:
    """event_id -> each (seq, hash hex) it is stored under: segments plus WAL-only events."""
    opened = Ledger.open(root)
    tables = [pq.read_table(s.path) for s in opened.segment_files()]
    tables.append(opened.unflushed_table())
    found: dict[str, list[tuple[int, str]]] = {}
    for table in tables:
        rows = table.select(["event_id", "seq", "hash"]).to_pydict()
        for event_id, seq, digest in zip(*rows.values(), strict=True):
            found.setdefault(event_id, []).append((seq, digest.hex()))
    return found


def assert_stored_once(root: Path, receipts: dict[str, tuple[int, str]]) -> None:
    """Exactly the receipted events are stored, each once, where its receipt says."""
    found = stored(root)
    doubled = {k: v for k, v in found.items() if len(v) > 1}
    assert not doubled, f"stored more than once: {list(doubled)[:5]}"
    assert {k: v[0] for k, v in found.items()} == receipts
    seqs = sorted(seq for seq, _ in receipts.values())
    assert seqs == list(range(len(seqs))), "seqs are contiguous from 0"


def assert_verifies(root: Path) -> None:
    report = Ledger.open(root).verify()
    assert report.ok, "\n".join(str(p) for p in report.problems)


def receipted(*batches: Any) -> dict[str, tuple[int, str]]:
    return {r.event_id: (r.seq, r.hash) for receipts in batches for r in receipts}


# -- WAL frames -----------------------------------------------------------------------------------


def unpadded_frame(magic: bytes, first_seq: int, lines: list[bytes]) -> bytes:
    """A frame as the wal module's docstring lays it out, without padding."""
    payload = b"\n".join(lines)
    numbers = struct.pack("<QII", first_seq, len(lines), len(payload))
    crc = zlib.crc32(numbers + payload)
    return magic + numbers + struct.pack("<I", crc) + payload


def csw1_frame(first_seq: int, lines: list[bytes]) -> bytes:
    return unpadded_frame(b"CSW1", first_seq, lines)


def csw2_frame(at: int, first_seq: int, lines: list[bytes]) -> bytes:
    """A padded frame written at byte ``at``: zeros to the next multiple of 4096 from the start."""
    frame = unpadded_frame(b"CSW2", first_seq, lines)
    return frame + bytes(-(at + len(frame)) % BLOCK)


def no_direct_io(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger.wal, "_open_direct", lambda path: None)


def payload_end(path: Path, frame_index: int) -> int:
    frame = scan_wal(path).frames[frame_index]
    return frame.offset + HEADER + len(b"\n".join(frame.lines))


@pytest.mark.parametrize("direct", [True, False], ids=["direct-if-possible", "buffered"])
def test_wal_frames_are_padded_to_4096_bytes_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    if not direct:
        no_direct_io(monkeypatch)
    path = tmp_path / "00000000000000000000.log"
    wal = WriteAheadLog(path)
    # Payloads ending a frame exactly on a boundary, one byte past it, one short, several blocks.
    payloads = [[b"x"], [b"y" * (BLOCK - HEADER)], [b"z" * (BLOCK - HEADER + 1)], [b"a", b""]]
    payloads += [[b"w" * (BLOCK - HEADER - 1)], [b"v" * 3000] * 5, [b"{}"] * 700]
    seq = 0
    for lines in payloads:
        wal.append(seq, len(lines), b"\n".join(lines))
        seq += len(lines)
        assert wal.length % BLOCK == 0 and path.stat().st_size == wal.length
    wal.close()
    scan = scan_wal(path)
    assert not scan.torn and not scan.damage and scan.valid_length == path.stat().st_size
    assert [list(f.lines) for f in scan.frames] == payloads
    assert [f.first_seq for f in scan.frames] == list(np.cumsum([0, *map(len, payloads)])[:-1])
    data = path.read_bytes()
    for k, frame in enumerate(scan.frames):
        assert frame.offset % BLOCK == 0
        assert data[frame.offset : frame.offset + 4] == b"CSW2"
        end = payload_end(path, k)
        header = data[frame.offset : frame.offset + HEADER]
        (crc,) = struct.unpack_from("<I", header, 20)
        assert crc == zlib.crc32(header[4:20] + data[frame.offset + HEADER : end]), "zlib's CRC"
        next_offset = scan.frames[k + 1].offset if k + 1 < len(scan.frames) else len(data)
        assert next_offset - end < BLOCK and not any(data[end:next_offset]), "zero padding"


def test_a_ledgers_wal_frames_end_on_4096_byte_boundaries(tmp_path: Path) -> None:
    root = new_ledger(tmp_path)
    batches = [[tool_event(0)], [tool_event(i) for i in range(1, 8)]]
    batches.append([tool_event(i, intent="i" * 500) for i in range(8, 68)])  # several blocks
    batches.append([canonical_event(i) for i in range(68, 70)])
    with Ledger.open(root) as opened:
        for k, batch in enumerate(batches):
            opened.append(batch)
            (wal,) = opened.writer.layout.wal_files()
            scan = scan_wal(wal)
            assert wal.stat().st_size % BLOCK == 0 and not scan.torn
            assert [f.offset % BLOCK for f in scan.frames] == [0] * (k + 1)
            assert [[orjson.loads(x)["event_id"] for x in f.lines] for f in scan.frames] == [
                ids(b) for b in batches[: k + 1]
            ]
    assert_verifies(root)


def test_scan_reads_csw1_frames_followed_by_csw2_frames(tmp_path: Path) -> None:
    lines = [f'{{"n":{n}}}'.encode() for n in range(9)]
    data = csw1_frame(0, lines[0:3]) + csw1_frame(3, lines[3:4])
    data += csw2_frame(len(data), 4, lines[4:6])
    data += csw2_frame(len(data), 6, lines[6:9])
    path = tmp_path / "mixed.log"
    path.write_bytes(data)
    assert len(data) == 2 * BLOCK
    scan = scan_wal(path)
    assert not scan.torn and not scan.damage and scan.valid_length == len(data)
    assert [(f.first_seq, list(f.lines)) for f in scan.frames] == [
        (0, lines[0:3]),
        (3, lines[3:4]),
        (4, lines[4:6]),
        (6, lines[6:9]),
    ]
    second = len(csw1_frame(0, lines[0:3]))
    third = second + len(csw1_frame(3, lines[3:4]))
    assert [f.offset for f in scan.frames] == [0, second, third, BLOCK]

    # The module's own writer, given such a file, pads its frames from the file's start too.
    wal = WriteAheadLog(path)
    wal.append(9, 2, b"\n".join([b'{"n":9}', b'{"n":10}']))
    wal.close()
    assert path.stat().st_size == 3 * BLOCK
    assert [f.first_seq for f in scan_wal(path).frames] == [0, 3, 4, 6, 9]


def test_csw2_frames_appended_after_csw1_frames_end_on_boundaries_from_the_files_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.log"
    old = csw1_frame(0, [b'{"n":0}', b'{"n":1}']) + csw1_frame(2, [b'{"n":2}'])
    path.write_bytes(old)
    wal = WriteAheadLog(path)  # an unaligned file: buffered writes
    wal.append(3, 1, b'{"n":3}')
    wal.append(4, 2, b'{"n":4}\n' + b"x" * 5000)
    wal.close()
    scan = scan_wal(path)
    assert not scan.torn and not scan.damage
    assert [(f.first_seq, len(f.lines)) for f in scan.frames] == [(0, 2), (2, 1), (3, 1), (4, 2)]
    assert [f.offset for f in scan.frames] == [
        0,
        len(old) - len(csw1_frame(2, [b'{"n":2}'])),
        len(old),
        BLOCK,
    ]
    assert path.stat().st_size == 3 * BLOCK


CUTS: dict[str, tuple[Callable[[Path], int], int, bool]] = {
    # where the last frame is cut, how many frames survive, and whether that is a torn tail
    "padding-cut-to-nothing": (lambda p: payload_end(p, -1), 3, False),
    "padding-cut-after-one-byte": (lambda p: payload_end(p, -1) + 1, 3, False),
    "padding-missing-its-last-byte": (lambda p: p.stat().st_size - 1, 3, False),
    "cut-inside-the-payload": (lambda p: payload_end(p, -1) - 1, 2, True),
    "cut-inside-the-header": (lambda p: scan_wal(p).frames[-1].offset + HEADER - 1, 2, True),
}


@pytest.mark.parametrize("cut", CUTS, ids=str)
def test_a_cut_in_the_padding_keeps_the_frame_a_cut_in_the_payload_tears_it(
    tmp_path: Path, cut: str
) -> None:
    path = tmp_path / "00000000000000000000.log"
    wal = WriteAheadLog(path)
    for seq in range(3):
        wal.append(seq, 1, f'{{"n":{seq}}}'.encode())
    wal.close()
    where, survivors, torn = CUTS[cut]
    last_offset = scan_wal(path).frames[-1].offset
    os.truncate(path, where(path))
    scan = scan_wal(path)
    assert len(scan.frames) == survivors
    assert scan.torn is torn
    assert scan.valid_length == (last_offset if torn else path.stat().st_size)
    assert bool(scan.damage) is torn and not scan.intact_after_damage


def test_a_cut_csw1_payload_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    first = csw1_frame(0, [b'{"n":0}'])
    path.write_bytes(first + csw1_frame(1, [b'{"n":1}', b'{"n":2}'])[:-1])
    scan = scan_wal(path)
    assert [f.first_seq for f in scan.frames] == [0]
    assert scan.torn and scan.valid_length == len(first)


def rewrite_wal(wal: Path, how: str) -> int:
    """Rewrite a WAL's frames: CSW1 for all but the last, and the last as ``how`` says.

    Returns how many frames recovery must keep.
    """
    frames = scan_wal(wal).frames
    data = b"".join(csw1_frame(f.first_seq, list(f.lines)) for f in frames[:-1])
    last = frames[-1]
    if how == "csw1-then-csw2":
        data += csw2_frame(len(data), last.first_seq, list(last.lines))
    elif how == "csw1-only":
        data += csw1_frame(last.first_seq, list(last.lines))
    elif how == "csw2-padding-cut":
        data += unpadded_frame(b"CSW2", last.first_seq, list(last.lines)) + bytes(5)
    elif how == "csw1-payload-cut":
        data += csw1_frame(last.first_seq, list(last.lines))[:-3]
        wal.write_bytes(data)
        return len(frames) - 1
    wal.write_bytes(data)
    return len(frames)


@pytest.mark.parametrize(
    "how", ["csw1-then-csw2", "csw1-only", "csw2-padding-cut", "csw1-payload-cut"]
)
def test_a_ledger_recovers_csw1_and_cut_padding_wal_frames(tmp_path: Path, how: str) -> None:
    root = new_ledger(tmp_path)
    opened = Ledger.open(root)
    flushed = opened.append([tool_event(i) for i in range(20)])
    opened.flush()
    batches = [[tool_event(i) for i in range(20 + 10 * k, 30 + 10 * k)] for k in range(3)]
    receipts = [opened.append(b) for b in batches]
    (wal,) = opened.writer.layout.wal_files()
    crash(opened)
    kept = rewrite_wal(wal, how)
    expected = receipted(flushed, *receipts[:kept])

    assert {k: v[0] for k, v in stored(root).items()} == expected, "read before recovery"
    assert_verifies(root)
    with Ledger.open(root) as reopened:
        assert reopened.writer.next_seq == 20 + 10 * kept
        after = reopened.append([tool_event(i) for i in range(100, 103)])
    assert [r.seq for r in after] == [20 + 10 * kept + k for k in range(3)]
    assert_stored_once(root, {**expected, **receipted(after)})
    assert_verifies(root)


# -- the buffered fallback ------------------------------------------------------------------------


def test_without_direct_io_the_wal_is_buffered_padded_and_recoverable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_direct_io(monkeypatch)
    root = new_ledger(tmp_path)
    opened = Ledger.open(root)
    first = opened.append([tool_event(i) for i in range(12)])
    assert opened.writer._wal is not None and opened.writer._wal._direct is None
    second = opened.append([canonical_event(i) for i in range(12, 40)])
    (wal,) = opened.writer.layout.wal_files()
    assert wal.stat().st_size % BLOCK == 0 == scan_wal(wal).frames[1].offset % BLOCK
    opened.close()
    assert_stored_once(root, receipted(first, second))

    # A buffered WAL that recovery has to replay.
    opened = Ledger.open(root)
    third = opened.append([tool_event(i) for i in range(40, 45)])
    fourth = opened.append([tool_event(i) for i in range(45, 47)])
    crash(opened)
    assert_verifies(root)
    with Ledger.open(root) as reopened:
        assert reopened.writer.next_seq == 47
    assert_stored_once(root, receipted(first, second, third, fourth))
    assert_verifies(root)


def test_a_refused_direct_write_falls_back_to_buffered_writes_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = new_ledger(tmp_path)
    opened = Ledger.open(root)
    assert opened.writer._wal is not None
    if opened.writer._wal._direct is None:
        opened.close()
        pytest.skip("this filesystem takes no O_DIRECT writes")
    first = opened.append([tool_event(i) for i in range(5)])  # a direct write
    refused: list[int] = []
    real_pwrite = os.pwrite

    def pwrite_refused_once(fd: int, data: Any, offset: int) -> int:
        if not refused:
            refused.append(fd)
            raise OSError(errno.EINVAL, "direct write refused")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite_refused_once)  # only the direct path calls it
    second = opened.append([tool_event(i) for i in range(5, 25)])
    assert len(refused) == 1 and opened.writer._wal._direct is None
    third = opened.append([tool_event(i, intent="x" * 5000) for i in range(25, 28)])
    assert len(refused) == 1, "no direct write is tried again"
    (wal,) = opened.writer.layout.wal_files()
    scan = scan_wal(wal)
    assert wal.stat().st_size % BLOCK == 0 and not scan.torn
    assert [len(f.lines) for f in scan.frames] == [5, 20, 3]
    assert [f.offset % BLOCK for f in scan.frames] == [0, 0, 0]
    crash(opened)
    assert_verifies(root)
    with Ledger.open(root) as reopened:
        assert reopened.writer.next_seq == 28
    assert_stored_once(root, receipted(first, second, third))
    assert_verifies(root)


# -- a failure after the WAL write ----------------------------------------------------------------


def fail_once(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, error: Exception | None = None
) -> list[int]:
    """Make ``owner.name`` raise on its next call only; returns the list of failed calls."""
    real = getattr(owner, name)
    failed: list[int] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(1)
            raise error or RuntimeError(f"injected failure in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
    return failed


@pytest.mark.parametrize("history", [True, False], ids=["after-flushed-and-pending", "first"])
@pytest.mark.parametrize("failing", ["_assigned", "_with_hashes"])
def test_a_failure_after_the_wal_write_is_recovered_on_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str, history: bool
) -> None:
    root = new_ledger(tmp_path)
    opened = Ledger.open(root)
    before = []
    if history:
        before.append(opened.append([tool_event(i) for i in range(30)]))
        opened.flush()
        before.append(opened.append([canonical_event(i) for i in range(30, 40)]))
    first_seq = 40 if history else 0
    batch = [tool_event(i) for i in range(100, 115)]
    failed = fail_once(monkeypatch, ledger.writer, failing)
    with pytest.raises(LedgerError) as raised:
        opened.append(batch)
    assert failed == [1]
    message = str(raised.value)
    assert "durable" in message and "reopening the ledger recovers it" in message
    assert f"seq {first_seq}" in message
    assert isinstance(raised.value.__cause__, RuntimeError)
    layout = only_layout(root)
    lock = try_lock(layout.lock)
    assert lock is not None, "the failed writer log's lock is released"
    os.close(lock)
    (wal,) = layout.wal_files()
    assert [orjson.loads(x)["event_id"] for x in scan_wal(wal).frames[-1].lines] == ids(batch)
    opened.close()  # closing the failed appender is harmless

    with Ledger.open(root) as reopened:
        assert reopened.writer.writer_id == layout.writer_id, "the same log is recovered"
        assert reopened.writer.next_seq == first_seq + len(batch)
        again = reopened.append(batch)
        after = reopened.append([tool_event(i) for i in range(200, 204)])
    assert all(r.duplicate for r in again), "the recovered batch is not stored twice"
    assert [r.seq for r in again] == list(range(first_seq, first_seq + len(batch)))
    assert [r.seq for r in after] == [first_seq + len(batch) + k for k in range(4)]
    assert not any(r.duplicate for r in after)
    assert_stored_once(root, receipted(*before, again, after))
    assert_verifies(root)


def test_the_same_ledger_object_recovers_a_log_released_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived Ledger (a server's) keeps appending: its next append recovers the log."""
    root = new_ledger(tmp_path)
    opened = Ledger.open(root)
    first = opened.append([tool_event(i) for i in range(5)])
    fail_once(monkeypatch, ledger.writer, "_assigned")
    with pytest.raises(LedgerError, match="durable in the WAL"):
        opened.append([tool_event(i) for i in range(5, 10)])
    again = opened.append([tool_event(i) for i in range(5, 12)])
    assert [r.duplicate for r in again] == [True] * 5 + [False] * 2, "the durable batch is found"
    assert [r.seq for r in again] == list(range(5, 12))
    opened.flush()
    opened.close()
    assert_stored_once(root, receipted(first, again))
    assert_verifies(root)


# -- the batch size limit -------------------------------------------------------------------------


def normalised_size(records: list[dict[str, Any]]) -> int:
    """The bytes of the validator's normalised text of a batch (no attrs here)."""
    assert not any("attrs" in r for r in records)
    return len(orjson.dumps(validate_batch(records), option=orjson.OPT_SORT_KEYS))


def raw_size(records: list[dict[str, Any]]) -> int:
    return len(orjson.dumps(records, option=SERIALISE_OPTIONS))


def oversize(kind: str) -> tuple[list[dict[str, Any]], int, int, int]:
    """A batch; a limit it is over; the size the error must name; the least limit taking it."""
    if kind == "fast-path":
        batch = [canonical_event(i) for i in range(50, 62)]
        return batch, raw_size(batch) - 1, raw_size(batch), raw_size(batch)
    if kind == "datetime-values":  # orjson has no form for them: the validator's path at once
        batch = [
            tool_event(i, time=datetime(2026, 3, 1, 11, 0, i - 50, tzinfo=UTC))
            for i in range(50, 62)
        ]
        size = normalised_size(batch)
        return batch, size - 1, size, size
    batch = [tool_event(i) for i in range(50, 62)]  # "...:SSZ" times: normalised, longer
    raw, size = raw_size(batch), normalised_size(batch)
    assert raw < size
    if kind == "needs-normalising":  # over the limit as the client sent it
        return batch, raw - 1, raw, size
    return batch, raw, size, size  # "grows-when-normalised": only the normalised text is over


OVERSIZE = ["fast-path", "needs-normalising", "grows-when-normalised", "datetime-values"]


@pytest.mark.parametrize("fresh", [False, True], ids=["with-events", "empty-ledger"])
@pytest.mark.parametrize("kind", OVERSIZE, ids=str)
def test_a_batch_over_the_size_limit_is_refused_and_nothing_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, fresh: bool
) -> None:
    root = new_ledger(tmp_path)
    opened = Ledger.open(root)
    kept = []
    if not fresh:
        kept.append(opened.append([tool_event(i) for i in range(20)]))
        opened.flush()
        kept.append(opened.append([tool_event(i) for i in range(20, 25)]))
    events_before = Ledger.open(root).verify().events
    files_before = tree_digest(root)
    batch, limit, size, accepting = oversize(kind)
    monkeypatch.setattr(ledger.batch, "MAX_BATCH_BYTES", limit)
    with pytest.raises(BatchTooLargeError) as raised:
        opened.append(batch)
    assert raised.value.status == 413
    message = str(raised.value)
    assert f"{size:,} bytes" in message and f"{limit:,}" in message, message
    assert f"{len(batch)} events" in message and "nothing stored" in message
    assert tree_digest(root) == files_before, "nothing written, no writer log created"
    assert Ledger.open(root).verify().events == events_before

    monkeypatch.setattr(ledger.batch, "MAX_BATCH_BYTES", accepting)  # at the limit: accepted
    receipts = opened.append(batch)
    assert [r.seq for r in receipts] == [events_before + k for k in range(len(batch))]
    opened.close()
    assert_stored_once(root, receipted(*kept, receipts))
    assert_verifies(root)


@pytest.mark.parametrize("slice_rows", [256, 1])  # 2 slices, 12 slices
def test_a_split_batch_over_the_size_limit_names_its_size(
    monkeypatch: pytest.MonkeyPatch, slice_rows: int
) -> None:
    monkeypatch.setattr(ledger.ingest, "SPLIT_ROWS", 4)
    monkeypatch.setattr(ledger.ingest, "_MIN_SLICE_ROWS", slice_rows)
    batch = [canonical_event(i) for i in range(12)]
    full = raw_size(batch)
    monkeypatch.setattr(ledger.batch, "MAX_BATCH_BYTES", full - 10)
    with pytest.raises(BatchTooLargeError) as raised:
        check_batch(batch)
    named = re.search(r"([\d,]+) bytes", str(raised.value))
    assert named is not None
    assert int(named.group(1).replace(",", "")) == full, "the whole batch's text, not a slice's"


# -- the two-part parse ---------------------------------------------------------------------------


def spy_parts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the row count of each slice check_batch serialises (to parse it as a part)."""
    counts: list[int] = []
    real = ledger.batch._serialised

    def spying(records: Any) -> Any:
        counts.append(len(records))
        return real(records)

    monkeypatch.setattr(ledger.batch, "_serialised", spying)
    return counts


def spy_part_outcomes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each slice's outcome as each parse of a batch ends: every slice's outcome of the
    first parse, then, if it ran out of item capacity, every slice's of the parse again."""
    outcomes: list[int] = []
    real = ledger.ingest._Slices.parsed

    def spying(slices: Any) -> Any:
        first = slices._outcomes.tolist()
        outcomes.extend(first)
        parsed = real(slices)
        if ledger.textscan.MORE_ITEMS in first:
            outcomes.extend(slices._outcomes.tolist())
        return parsed

    monkeypatch.setattr(ledger.ingest._Slices, "parsed", spying)
    return outcomes


def chain_of(parsed: ParsedBatch, positions: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    result: Chained = parsed.chain(positions, WRITER, 5, OBSERVED, bytes(32))
    # The lines live in a per-thread scratch buffer that the next chain reuses: copy them now.
    return bytes(result.lines), result.leaves.copy(), result.hashes.copy()


def assert_like_one_part(checked: CheckedBatch, records: list[dict[str, Any]]) -> None:
    """The columns normalise builds; the canonical bytes and hashes of a one-part parse."""
    rows = len(records)
    expected = normalise(records).columns
    assert checked.columns.num_rows == rows
    assert checked.columns.equals(expected), (checked.columns.to_pylist()[:2], expected.schema)
    single = parse_batch(orjson.dumps(records, option=SERIALISE_OPTIONS), rows)
    assert single is not None
    every_third = np.arange(0, rows, 3, dtype=np.int64)
    for positions in (np.arange(rows, dtype=np.int64), every_third):
        lines, leaves, hashes = chain_of(checked.parsed, positions)
        one_lines, one_leaves, one_hashes = chain_of(single, positions)
        assert lines == one_lines
        assert np.array_equal(leaves, one_leaves) and np.array_equal(hashes, one_hashes)
    lines, leaves, hashes = chain_of(checked.parsed, np.arange(rows, dtype=np.int64))
    split = lines.split(b"\n")
    assert [orjson.loads(x)["event_id"] for x in split] == ids(records)
    assert [orjson.loads(x)["seq"] for x in split] == list(range(5, 5 + rows))
    expected_leaves, expected_hashes = hashlib_chain(split, bytes(32))
    assert [x.tobytes() for x in leaves] == expected_leaves
    assert [x.tobytes() for x in hashes] == expected_hashes


def test_a_large_batch_is_parsed_in_slices_like_one(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [rich_event(i) for i in range(SPLIT + 53)]
    parts = spy_parts(monkeypatch)
    checked = check_batch(records)
    assert checked.records is records, "the compiled fast path took the batch"
    assert parts == np.diff(ledger.ingest.slice_cuts(len(records))).tolist()
    assert len(parts) == (SPLIT + 53) // 256 and sum(parts) == len(records)
    assert_like_one_part(checked, records)


def test_a_batch_just_below_the_split_is_parsed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = spy_parts(monkeypatch)
    records = [canonical_event(i) for i in range(SPLIT - 1)]
    assert check_batch(records).records is records
    records.append(canonical_event(SPLIT - 1))
    assert check_batch(records).records is records
    assert parts == [SPLIT - 1, *[SPLIT // 8] * 8]


@pytest.mark.parametrize(
    ("split_rows", "slice_rows", "rows"),
    [
        (4, 256, 4),
        (4, 256, 5),
        (4, 256, 9),
        (2, 256, 3),
        (1, 256, 1),
        (1, 256, 2),
        (4, 1, 9),
        (4, 2, 9),
        (4, 1, 40),
        (4, 3, 100),
    ],
)
def test_small_batches_split_early_parse_like_one(
    monkeypatch: pytest.MonkeyPatch, split_rows: int, slice_rows: int, rows: int
) -> None:
    monkeypatch.setattr(ledger.ingest, "SPLIT_ROWS", split_rows)
    monkeypatch.setattr(ledger.ingest, "_MIN_SLICE_ROWS", slice_rows)
    records = [rich_event(i) for i in range(rows)]
    parts = spy_parts(monkeypatch)
    checked = check_batch(records)
    assert checked.records is records
    slices = max(2, min(32, rows // slice_rows))
    expected = [rows * (k + 1) // slices - rows * k // slices for k in range(slices)]
    assert parts == [part for part in expected if part], "slices of (nearly) even sizes"
    assert_like_one_part(checked, records)


def test_a_small_split_batch_appends_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger.ingest, "SPLIT_ROWS", 4)
    root = new_ledger(tmp_path)
    with Ledger.open(root) as opened:
        receipts = [
            opened.append([rich_event(i) for i in range(k * 10, k * 10 + 9)]) for k in (0, 1)
        ]
        receipts.append(opened.append([tool_event(i) for i in range(20, 27)]))  # normalised
    assert_stored_once(root, receipted(*receipts))
    assert_verifies(root)


INVALID_AT = [
    (SPLIT + 10, SPLIT, 1500),
    (SPLIT + 10, SPLIT, 7),
    (SPLIT + 10, SPLIT, (SPLIT + 10) // 8),  # the first record of the second slice
    (SPLIT + 10, SPLIT, SPLIT + 9),
    (9, 4, 6),
    (9, 4, 1),
    (9, 4, 4),
]


@pytest.mark.parametrize(("rows", "split_rows", "bad"), INVALID_AT)
def test_an_invalid_record_in_any_slice_is_named_by_its_batch_index(
    monkeypatch: pytest.MonkeyPatch, rows: int, split_rows: int, bad: int
) -> None:
    monkeypatch.setattr(ledger.ingest, "SPLIT_ROWS", split_rows)
    records = [canonical_event(i) for i in range(rows)]
    records[bad] = {**records[bad], "category": "shell"}
    locations = [f"input.jsonl:{k + 1}" for k in range(rows)]
    with pytest.raises(ValidationError) as raised:
        check_batch(records)
    assert [(p.index, p.field) for p in raised.value.problems] == [(bad, "category")]
    assert f"record {bad}:" in str(raised.value)
    with pytest.raises(ValidationError) as located:
        check_batch(records, locations)
    assert [p.location for p in located.value.problems] == [locations[bad]]


@pytest.mark.parametrize("slices", ["first", "last", "both"])
def test_many_list_items_in_a_slice_outgrow_its_item_capacity(
    monkeypatch: pytest.MonkeyPatch, slices: str
) -> None:
    rows = SPLIT
    records = [canonical_event(i) for i in range(rows)]
    # Rows of 1000 items in a slice of 256 rows: over its 4 items a row (plus 64).
    heavy = {
        "first": [3, 4, 5, 500, 1001],
        "last": [1030, 1031, 1500, 2046, 2047],
        "both": [0, 1, 2, 3, 4, 1024, 1025, 1026, 1027, 2047],
    }[slices]
    for row in heavy:
        scopes = [f"scope:{row}:{n}" for n in range(1000 - row % 3)]
        records[row] = {**records[row], "credential_scopes": scopes}
    records[700] = {**records[700], "credential_scopes": ["one"]}
    outcomes = spy_part_outcomes(monkeypatch)
    checked = check_batch(records)
    assert checked.records is records, "the compiled fast path took the batch"
    assert ledger.textscan.MORE_ITEMS in outcomes, "the item capacity was outgrown"
    assert outcomes[-2:] == [ledger.textscan.ACCEPTED] * 2
    scopes_column = checked.columns.column("credential_scopes").to_pylist()
    assert scopes_column == [r.get("credential_scopes") for r in records]
    assert_like_one_part(checked, records)


@pytest.mark.parametrize("where", [5, SPLIT - 1, SPLIT + 1, SPLIT * 2 - 3])
def test_a_batch_needing_normalisation_in_one_slice_only_is_valid(where: int) -> None:
    records = [canonical_event(i) for i in range(SPLIT * 2)]
    fixed = [dict(r) for r in records]
    records[where] = {**records[where], "time": "2026-03-01T09:00:00+01:00"}  # not canonical
    fixed[where]["time"] = "2026-03-01T08:00:00.000000Z"
    checked = check_batch(records)
    assert checked.records is not records, "the validator normalised the batch"
    assert checked.columns.num_rows == len(records)
    assert checked.columns.equals(check_batch(fixed).columns)
    times = checked.columns.column("time").to_pylist()
    assert times[where] == datetime(2026, 3, 1, 8, tzinfo=UTC)


# -- parallel leaf hashing ------------------------------------------------------------------------


def hashlib_chain(rows: list[bytes], prev: bytes) -> tuple[list[bytes], list[bytes]]:
    leaves = [hashlib.sha256(b"\x00" + row).digest() for row in rows]
    hashes = []
    for leaf in leaves:
        prev = hashlib.sha256(prev + leaf).digest()
        hashes.append(prev)
    return leaves, hashes


@pytest.mark.parametrize("count", [0, 1, 2047, 2048, 2049, 5001])
def test_leaves_hashed_on_a_pool_match_one_thread_and_hashlib(count: int) -> None:
    rng = np.random.default_rng(count)
    rows = [rng.bytes(int(n)) for n in rng.integers(0, 300, count)]
    rows = [row.replace(b"\n", b" ") for row in rows]
    if count > 10:
        rows[3] = rows[count // 2] = b""  # empty rows, one at the split
    text = b"".join(row + b"\n" for row in rows)
    lines = np.frombuffer(bytearray(text + b"scratch beyond the rows"), np.uint8)
    offsets = np.cumsum([0, *(len(row) + 1 for row in rows)], dtype=np.int64)
    prev = rng.bytes(32)
    leaves, hashes = hashlib_chain(rows, prev)
    with ThreadPoolExecutor(1) as pool:
        results = [chained(lines, offsets, prev, p) for p in (pool, ledger.ingest.worker(), None)]
    for result in results:
        assert bytes(result.lines) == b"\n".join(rows)
        assert [bytes(x) for x in result.leaves] == leaves
        assert [bytes(x) for x in result.hashes] == hashes


# -- the KeySet -----------------------------------------------------------------------------------


def keys(*values: int) -> np.ndarray:
    return np.array(values, np.uint64)


def test_id_keys_are_the_same_for_every_form_of_the_same_ids() -> None:
    ids = [f"evt-{i:05d}" for i in range(300)] + ["", "é€😀", "x" * 1000, "a", ""]
    expected = id_keys(ids)
    array = pa.array(ids, pa.string())
    assert (id_keys(array) == expected).all()
    assert (id_keys(array.cast(pa.large_string())) == expected).all()
    assert (id_keys(pa.chunked_array([array[:7], array[7:]])) == expected).all()
    for start in (0, 1, 7, 8, 299):
        assert (id_keys(array.slice(start, 3)) == expected[start : start + 3]).all()
    assert id_keys([]).tolist() == [] and len(set(id_keys(["", ""]).tolist())) == 1
    distinct = id_keys([str(i) for i in range(100_000)])
    assert len(np.unique(distinct)) == 100_000, "no collisions among small distinct ids"
    # One byte changed anywhere, or one byte more, gives another key.
    text = "0123456789abcdef-0123456789"
    variants = [text[:i] + "#" + text[i + 1 :] for i in range(len(text))] + [text, text + "\x00"]
    assert len(set(id_keys(variants).tolist())) == len(variants)


def test_keyset_add_reports_keys_seen_before_or_earlier_in_the_call() -> None:
    found = KeySet()
    assert found.add(keys(5, 7, 5, 9, 7, 5)).tolist() == [False, False, True, False, True, True]
    assert len(found) == 3
    assert found.add(keys(7, 11, 11, 2**64 - 1)).tolist() == [True, False, True, False]
    assert len(found) == 5
    assert (
        found.contains(keys(5, 7, 9, 11, 2**64 - 1, 6, 2**63)).tolist() == [True] * 5 + [False] * 2
    )
    assert found.add(keys()).tolist() == [] and found.contains(keys()).tolist() == []


def test_keyset_holds_key_zero() -> None:
    found = KeySet()
    assert not found.contains(keys(0))[0]
    assert found.add(keys(0, 0)).tolist() == [False, True]
    assert found.contains(keys(0))[0] and len(found) == 1
    assert found.add(keys(0)).tolist() == [True]
    assert found.add(keys(2)).tolist() == [False]
    assert found.contains(keys(0, 2, 3)).tolist() == [True, True, False]


def test_keyset_probes_wrap_around_a_full_run_of_collisions() -> None:
    found = KeySet(16)
    colliding = keys(*((k << 40) | 15 for k in range(1, 8)))  # all start at the last slot
    assert not found.add(colliding).any()
    assert found.contains(colliding).all()
    assert not found.contains(keys(*((k << 40) | 15 for k in range(8, 20)))).any()
    assert found.add(colliding[::-1]).all() and len(found) == 7


@pytest.mark.parametrize("capacity", [1 << 16, 1])
def test_keyset_grows_past_its_capacity_and_keeps_every_key(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    everything = rng.integers(2, 2**64 - 1, 260_000, np.uint64, endpoint=True)
    everything = np.unique(everything)
    rng.shuffle(everything)
    members, strangers = everything[:200_000], everything[200_000:]
    found = KeySet(capacity)
    for start in range(0, len(members), 25_000):
        chunk = members[start : start + 25_000]
        repeats = chunk[::1000]
        seen = found.add(np.concatenate([chunk, repeats, members[:10]]))
        assert not seen[: len(chunk)].any()
        assert seen[len(chunk) :].all(), "keys earlier in the call, or already added"
        assert len(found) == start + len(chunk)
        assert found.contains(members[: start + len(chunk)]).all()
    assert not found.contains(strangers).any()


# -- the writer's dedup ---------------------------------------------------------------------------


def test_reappended_event_ids_from_segments_pending_and_the_batch_itself_are_stored_once(
    tmp_path: Path,
) -> None:
    root = new_ledger(tmp_path)
    events = [tool_event(i) for i in range(120)]
    opened = Ledger.open(root)
    flushed = opened.append(events[:60])
    opened.flush()
    pending = opened.append(events[60:100])
    original = receipted(flushed, pending)
    order = [10, 70, 100, 100, 10, 101, 99, 101, 0, 59, 60]
    mixed = opened.append([events[i] for i in order])
    assert [r.duplicate for r in mixed] == [True, True, False, True, True, False] + [True] * 5
    assert mixed.appended == 2 and mixed.duplicates == 9
    assert [r.seq for r in mixed] == [10, 70, 100, 100, 10, 101, 99, 101, 0, 59, 60]
    for position, receipt in zip(order, mixed, strict=True):
        if position < 100:
            assert (receipt.seq, receipt.hash) == original[receipt.event_id]
    assert mixed[3].hash == mixed[2].hash and mixed[7].hash == mixed[5].hash

    wal_length = opened.writer._wal.length if opened.writer._wal else -1
    again = opened.append([events[i] for i in (101, 5, 100, 65)])
    assert again.appended == 0 and [r.seq for r in again] == [101, 5, 100, 65]
    assert opened.writer._wal is not None and opened.writer._wal.length == wal_length

    opened.writer.flush(wait=False)  # in flight, or just flushed: either way found
    late = opened.append([events[i] for i in (100, 102, 101, 102, 80)])
    assert [r.duplicate for r in late] == [True, False, True, True, True]
    assert [r.seq for r in late] == [100, 102, 101, 102, 80]
    opened.flush()
    last = opened.append([events[i] for i in (102, 103, 55)])
    assert [r.seq for r in last] == [102, 103, 55]
    opened.close()
    assert_stored_once(root, receipted(flushed, pending, mixed, late, last))
    assert_verifies(root)


def test_keys_of_failed_appends_make_no_false_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = new_ledger(tmp_path)
    events = [tool_event(i) for i in range(80)]
    opened = Ledger.open(root)
    kept = [opened.append(events[:20])]
    opened.flush()
    kept.append(opened.append(events[20:30]))

    # Rejected by validation.
    with pytest.raises(ValidationError):
        opened.append([*events[30:40], {**events[40], "category": "shell"}])
    retried = opened.append(events[30:40])
    assert not any(r.duplicate for r in retried) and [r.seq for r in retried] == list(range(30, 40))
    kept.append(retried)

    # Failed at the WAL's sync, after the batch's keys went into the writer's KeySet: nothing
    # is acknowledged, the frame is dropped and the log released; the next append recovers it.
    writer = opened.writer
    assert writer._wal is not None
    wal_path, length = writer._wal.path, writer._wal.length
    failed = fail_once(monkeypatch, os, "fdatasync", OSError(errno.EIO, "I/O error"))
    with pytest.raises(LedgerError, match="writing the WAL failed"):
        opened.append([*events[40:50], events[25]])
    assert failed == [1]
    assert writer.closed and wal_path.stat().st_size == length, "frame dropped, log released"
    retried = opened.append([*events[40:50], events[25]])
    assert opened.writer.writer_id == writer.writer_id, "the same log, recovered"
    assert [r.duplicate for r in retried] == [False] * 10 + [True]
    assert [r.seq for r in retried] == [*range(40, 50), 25]
    kept.append(retried)

    # Again, then flushed: the stale keys move with the pending ones, still only a "maybe".
    failed = fail_once(monkeypatch, os, "fdatasync", OSError(errno.EIO, "I/O error"))
    with pytest.raises(LedgerError, match="writing the WAL failed"):
        opened.append(events[50:60])
    opened.flush()
    retried = opened.append(events[50:60])
    assert not any(r.duplicate for r in retried) and [r.seq for r in retried] == list(range(50, 60))
    kept.append(retried)
    opened.close()
    assert_stored_once(root, receipted(*kept))
    assert_verifies(root)


def test_events_of_a_failed_flush_are_still_found_and_flushed_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = new_ledger(tmp_path)
    events = [tool_event(i) for i in range(20)]
    opened = Ledger.open(root)
    first = opened.append(events[:10])
    fail_once(monkeypatch, ledger.writer, "write_segment", OSError(errno.ENOSPC, "disk full"))
    with pytest.raises(LedgerError):
        opened.flush()  # the events stay safe in the WAL
    second = opened.append(events[10:])
    opened.flush()
    again = opened.append(events[:10])
    writer_id = opened.writer.writer_id
    opened.close()
    assert again.duplicates == 10, "the failed flush's events are no longer found"
    assert_stored_once(root, receipted(first, second))
    assert_verifies(root)
    with Ledger.open(root) as reopened:
        assert reopened.writer.writer_id == writer_id, "the log reopens"


# -- one-shot iterators ---------------------------------------------------------------------------


def records_of(make: Callable[[int], dict[str, Any]], count: int, bad: int | None) -> Iterator[Any]:
    for i in range(count):
        yield {**make(i), "category": "shell"} if i == bad else make(i)


@pytest.mark.parametrize("split_rows", [SPLIT, 4])
@pytest.mark.parametrize("make", [tool_event, canonical_event], ids=["normalised", "canonical"])
def test_check_batch_reads_every_record_of_a_one_shot_iterator(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[int], dict[str, Any]], split_rows: int
) -> None:
    monkeypatch.setattr(ledger.ingest, "SPLIT_ROWS", split_rows)
    count = 9
    checked = check_batch(records_of(make, count, None))
    assert len(checked.records) == count and checked.columns.num_rows == count
    assert checked.columns.column("event_id").to_pylist() == [f"evt-{i:04d}" for i in range(count)]
    expected = [datetime.fromisoformat(canonical_time(i)) for i in range(count)]
    if make is tool_event:
        expected = [datetime.fromisoformat(tool_event(i)["time"]) for i in range(count)]
    assert checked.columns.column("time").to_pylist() == expected
    for bad in (0, 5, count - 1):
        with pytest.raises(ValidationError) as raised:
            check_batch(records_of(make, count, bad))
        assert [p.index for p in raised.value.problems] == [bad]


def test_a_ledger_appends_a_one_shot_iterator(tmp_path: Path) -> None:
    root = new_ledger(tmp_path)
    with Ledger.open(root) as opened:
        receipts = opened.append(records_of(tool_event, 6, None))
        with pytest.raises(ValidationError):
            opened.append(records_of(tool_event, 6, 3))
    assert [r.seq for r in receipts] == list(range(6))
    assert_stored_once(root, receipted(receipts))
    assert_verifies(root)


def test_a_two_part_batch_appends_with_the_hashes_its_wal_lines_have(tmp_path: Path) -> None:
    """A two-part batch through the whole append: what the WAL holds hashes to the receipts."""
    root = new_ledger(tmp_path)
    records = [rich_event(i) for i in range(SPLIT + 1)]
    opened = Ledger.open(root)
    receipts = opened.append(records)
    (wal,) = opened.writer.layout.wal_files()
    (frame,) = scan_wal(wal).frames
    _, hashes = hashlib_chain(list(frame.lines), bytes(32))
    assert [h.hex() for h in hashes] == [r.hash for r in receipts]
    # Half of it again with as many new events: the new ones are chained from the second half.
    more = [*records[1000:], *(rich_event(i) for i in range(SPLIT + 1, SPLIT + 1100))]
    again = opened.append(more)
    assert [r.duplicate for r in again] == [True] * (SPLIT + 1 - 1000) + [False] * 1099
    assert [r.seq for r in again] == list(range(1000, SPLIT + 1100))
    assert [r.hash for r in again[: SPLIT + 1 - 1000]] == [r.hash for r in receipts[1000:]]
    opened.close()
    table = pa.concat_tables([pq.read_table(s.path) for s in Ledger.open(root).segment_files()])
    assert table.column("event_id").to_pylist() == ids(records) + ids(more[SPLIT + 1 - 1000 :])
    assert_stored_once(root, receipted(receipts, again))
    assert_verifies(root)


# -- failures found in review ---------------------------------------------------------------------


def segment_ranges(root: Path) -> list[tuple[int, int]]:
    """(first seq, last seq) of each segment file of the ledger's one writer log."""
    names = sorted(p.name for p in only_layout(root).segments.glob("*.parquet"))
    return [(int(n[:20]), int(n[21:41])) for n in names]


def assert_recovered(root: Path, writer_id: str, *batches: Any) -> None:
    """Every receipted event stored once, the ledger verifying, and the log reopening (and
    verifying after its recovery)."""
    assert_stored_once(root, receipted(*batches))
    assert_verifies(root)
    with Ledger.open(root) as reopened:
        assert reopened.writer.writer_id == writer_id, "the log reopens (no new writer log)"
    assert_verifies(root)


def appends_around_a_failed_flush(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: tuple[Any, str, OSError],
    match: str,
    size: int,
) -> tuple[Path, Ledger, Receipts, Receipts]:
    """A batch appended, a flush failing once (``failing``: module, function, error), and a
    second batch appended after it."""
    root = new_ledger(tmp_path)
    opened = Ledger.open(root)
    first = opened.append([tool_event(i) for i in range(size)])
    fail_once(monkeypatch, *failing)
    with pytest.raises(LedgerError, match=match):
        opened.flush()
    second = opened.append([tool_event(i) for i in range(size, 2 * size)])
    return root, opened, first, second


def test_a_flush_failing_after_its_segment_is_in_place_counts_the_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head file write fails after the segment's rename: no overlapping segment follows."""
    disk_full = (ledger.writer, "write_atomically", OSError(errno.ENOSPC, "disk full"))
    root, opened, first, second = appends_around_a_failed_flush(
        tmp_path, monkeypatch, disk_full, "disk full", 10
    )
    again = opened.append([tool_event(i) for i in range(10)])
    opened.flush()
    writer_id = opened.writer.writer_id
    opened.close()
    assert again.duplicates == 10
    assert segment_ranges(root) == [(0, 9), (10, 19)]
    assert_recovered(root, writer_id, first, second)


def test_a_failed_wal_rotation_keeps_the_current_wal_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making the next WAL file fails: the flush raises, and later appends stay recoverable."""
    io_error = (ledger.wal, "fsync_dir", OSError(errno.EIO, "I/O error"))
    root, opened, first, second = appends_around_a_failed_flush(
        tmp_path, monkeypatch, io_error, "cannot start a new WAL file", 5
    )
    writer_id = opened.writer.writer_id
    crash(opened)  # the acknowledged batches must be recoverable from the WAL alone
    assert_recovered(root, writer_id, first, second)


@pytest.mark.parametrize("fails", ["before-the-flush-check", "while-it-is-checked"])
def test_an_append_is_not_failed_by_an_earlier_background_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """The background flush fails after the next batch is durable (once its WAL frame is
    written): that append returns its receipts, and the failure is reported by a later call."""
    monkeypatch.setattr(ledger.writer, "FLUSH_ROWS", 5)
    real_segment, real_wal_append = ledger.segments.write_segment, WriteAheadLog.append
    release, failed = threading.Event(), threading.Event()

    def failing_segment(*args: Any, **kwargs: Any) -> Any:
        if not failed.is_set():
            release.wait(10)
            failed.set()
            raise OSError(errno.EIO, "I/O error")
        return real_segment(*args, **kwargs)

    def wal_append(wal: WriteAheadLog, first_seq: int, count: int, payload: Any) -> None:
        real_wal_append(wal, first_seq, count, payload)
        if first_seq == 5:  # the second batch is durable: now the first flush fails
            release.set()
            if fails == "before-the-flush-check":
                failed.wait(10)
                time.sleep(0.05)  # the flush thread finishes raising

    monkeypatch.setattr(ledger.writer, "write_segment", failing_segment)
    monkeypatch.setattr(WriteAheadLog, "append", wal_append)
    root = new_ledger(tmp_path)
    opened = Ledger.open(root)
    first = opened.append([tool_event(i) for i in range(5)])  # starts the background flush
    second = opened.append([tool_event(i) for i in range(5, 10)])  # durable: must not raise
    assert [r.seq for r in second] == list(range(5, 10))
    assert failed.wait(10)
    with pytest.raises(LedgerError, match="I/O error"):
        opened.flush()  # reported here, before anything else is written
    opened.flush()  # the failed flush's events were pending again: written now
    opened.close()
    assert segment_ranges(root) == [(0, 9)]
    assert_stored_once(root, receipted(first, second))
    assert_verifies(root)


def test_a_compaction_that_failed_part_way_is_finished_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger.writer, "COMPACT_AT", 3)
    fail_once(monkeypatch, ledger.writer, "_remove_segment", OSError(errno.EIO, "I/O error"))
    root = new_ledger(tmp_path)
    opened = Ledger.open(root)
    kept = []
    for batch in range(8):
        kept.append(opened.append([tool_event(batch * 10 + i) for i in range(10)]))
        try:
            opened.flush()
        except LedgerError as err:  # the one failed compaction
            assert "I/O error" in str(err)
    writer_id = opened.writer.writer_id
    opened.close()
    ranges = segment_ranges(root)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), ranges
    assert ranges[0][0] == 0 and ranges[-1][1] == 79
    assert_recovered(root, writer_id, *kept)


def test_attrs_nested_past_the_recursion_limit_are_a_validation_error(tmp_path: Path) -> None:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    with pytest.raises(ValidationError, match="nested deeper than 64 levels"):
        check_batch([tool_event(0, attrs={"k": value})])


def test_a_forked_child_appends_with_its_own_worker_thread(tmp_path: Path) -> None:
    """The parent's worker thread does not exist in a fork: the child must not wait for it."""
    root = new_ledger(tmp_path)
    with Ledger.open(root) as parent:
        parent.append([tool_event(i) for i in range(3)])
    big = [canonical_event(i) for i in range(10, 10 + ledger.ingest.SPLIT_ROWS)]
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if a split batch appends
        code = 1
        try:
            with Ledger.open(root) as child:
                code = 0 if child.append(big).appended == len(big) else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("the forked child hung appending")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert_verifies(root)
