"""Regression tests for defects found reviewing the in-place Arrow reads and the WAL thread.

1. ``WriterLog._append_checked`` submits the WAL frame to its thread and only then gathers the
   columns and waits: an exception raised in between (outside the hashing ``try``) or while
   waiting for the write leaves the frame to be written behind the caller's back, the log not
   released and ``next_seq`` not advanced. The next append reuses the same seqs, so the WAL holds
   two frames that start at the same seq, and recovery refuses the log: an acknowledged batch is
   no longer recoverable.
2. The compiled canonical writer reads a value's bytes with ``put_bytes``, whose word-at-a-time
   copy is bounded by ``len(memory)`` (the span of *all* the arrays' buffers), not by the end of
   the buffer the value lies in: it reads up to seven bytes past a buffer into whatever lies
   between buffers, which may be unmapped.
"""

from __future__ import annotations

import shutil
import signal
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import canonical_event, run_python

import ledger
import ledger.ingest
import ledger.wal
from ledger import Ledger
from ledger.layout import WriterLayout
from ledger.writer import WriterLog


def events(start: int, count: int) -> list[dict[str, Any]]:
    """Canonical events (the compiled fast path, which is the path with the WAL thread)."""
    return [canonical_event(i) for i in range(start, start + count)]


def recovered_after_crash(root: Path, tmp_path: Path) -> tuple[WriterLog, WriterLayout]:
    """What a crash now would leave: the ledger's files copied, its writer log opened there."""
    copy = tmp_path / "after-crash"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("LOCK"))
    (layout,) = Ledger.open(copy).writer_layouts()
    layout.lock.touch()
    return WriterLog.open(layout), layout


# -- 1. an exception after the WAL frame was submitted ---------------------------------------------


def assert_next_batch_survives_a_crash(opened: Ledger, root: Path, tmp_path: Path) -> None:
    """The next acknowledged batch comes back from the WAL after a crash (the ledger is copied
    as a crash would leave it and its writer log recovered)."""
    acknowledged = opened.append(events(200, 4))
    assert acknowledged.appended == 4
    recovered, _ = recovered_after_crash(root, tmp_path)
    try:
        seqs = {r.seq for r in acknowledged}
        assert max(seqs) < recovered.next_seq
    finally:
        recovered._abandon()
    opened.close()


def opened_with_a_wal_thread(tmp_path: Path) -> tuple[Path, Ledger]:
    """A new ledger, opened, with one batch appended: a writer log with its WAL thread."""
    root = tmp_path / "ledger"
    Ledger.init(root)
    opened = Ledger.open(root)
    opened.append(events(0, 3))
    return root, opened


def test_an_error_gathering_columns_after_the_wal_write_was_submitted_keeps_the_log_recoverable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, opened = opened_with_a_wal_thread(tmp_path)

    real_gathering = ledger.ingest.ParsedBatch.gathering
    calls = {"n": 0}

    def failing_gathering(self: ledger.ingest.ParsedBatch) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("allocating the column buffers")
        return real_gathering(self)

    monkeypatch.setattr(ledger.ingest.ParsedBatch, "gathering", failing_gathering)
    with pytest.raises((MemoryError, ledger.LedgerError)):
        opened.append(events(100, 5))  # not acknowledged
    assert_next_batch_survives_a_crash(opened, root, tmp_path)


def test_an_interrupt_while_waiting_for_the_wal_write_keeps_the_log_recoverable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (SIGINT) arriving while the appending thread waits for the WAL thread's fsync."""
    root, opened = opened_with_a_wal_thread(tmp_path)

    main = threading.main_thread().ident
    assert threading.current_thread().ident == main
    real_append = ledger.wal.WriteAheadLog.append
    interrupt = {"armed": True}

    def slow_append(self: ledger.wal.WriteAheadLog, *args: Any) -> None:
        if interrupt["armed"]:
            interrupt["armed"] = False
            time.sleep(0.2)  # the appending thread is waiting for this write by now
            assert main is not None
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.2)  # the interrupt is raised while the frame is still being written
        real_append(self, *args)

    def on_sigint(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    monkeypatch.setattr(ledger.wal.WriteAheadLog, "append", slow_append)
    try:
        with pytest.raises((KeyboardInterrupt, ledger.LedgerError)):
            opened.append(events(100, 5))  # interrupted: not acknowledged
    finally:
        signal.signal(signal.SIGINT, previous)
    assert_next_batch_survives_a_crash(opened, root, tmp_path)


# -- 2. reading past the end of an Arrow buffer

_GUARDED_READ = textwrap.dedent(
    """
    import ctypes, mmap, struct, sys
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ledger.rebuild import canonical_texts

    batch = pq.read_table(sys.argv[1]).to_batches()[0].slice(0, 1)
    text = batch.column("action")[0].as_py().encode()
    page = mmap.PAGESIZE
    # Three pages: the value's bytes end where the first ends, the second is unmapped (a gap
    # between two allocations), the third holds the value's offsets (a buffer above the gap).
    memory = mmap.mmap(-1, 3 * page)
    memory[page - len(text) : page] = text
    memory[2 * page : 2 * page + 8] = struct.pack("<ii", 0, len(text))
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(address + page, page, 0) == 0  # PROT_NONE
    data = pa.foreign_buffer(address + page - len(text), len(text), base=memory)
    offsets = pa.foreign_buffer(address + 2 * page, 8, base=memory)
    action = pa.Array.from_buffers(pa.string(), 1, [None, offsets, data])
    assert action.to_pylist() == [text.decode()]  # a valid array: Arrow reads it
    columns = [action if n == "action" else batch.column(n) for n in batch.schema.names]
    forged = pa.RecordBatch.from_arrays(columns, schema=batch.schema)
    assert canonical_texts(forged) == canonical_texts(batch)
    print("ok")
    """
)


def test_values_are_not_read_past_the_end_of_their_buffer(tmp_path: Path) -> None:
    """A string buffer that ends at the end of a mapping, with other buffers above the gap."""
    root = tmp_path / "ledger"
    Ledger.init(root)
    with Ledger.open(root) as opened:
        opened.append(events(0, 1))
    (segment,) = Ledger.open(root).segment_files()
    done = run_python(_GUARDED_READ, str(segment.path))
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "ok"
