"""Finding an event by event_id without scanning: a sorted sidecar index per segment.

``<segment>.ids.arrow`` holds the segment's event_ids sorted, with their row numbers, as an Arrow
IPC file read through a memory map, so a lookup is a binary search touching O(log n) entries. The
index is derived data: a missing one is rebuilt from the segment, and what it points at is checked
against the segment itself, so a damaged index can hide nothing that verify would not see.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import ipc

from .segments import SegmentFile

__all__ = ["find_rows", "index_path", "write_id_index"]


def index_path(segment_path: Path) -> Path:
    """Where a segment's event_id index lives."""
    return segment_path.with_name(segment_path.name.removesuffix(".parquet") + ".ids.arrow")


def write_id_index(segment_path: Path, event_ids: pa.Array | pa.ChunkedArray) -> None:
    """Write a segment's sorted event_id index (temp file, then rename)."""
    if isinstance(event_ids, pa.ChunkedArray):
        event_ids = event_ids.combine_chunks()
    order = pc.sort_indices(event_ids)
    table = pa.table({"event_id": event_ids.take(order), "row": order.cast(pa.uint32())})
    final = index_path(segment_path)
    temp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    with pa.OSFile(str(temp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(temp, final)


class _Sorted(Sequence[str]):
    """An Arrow string array as a sequence bisect can search."""

    def __init__(self, values: pa.Array) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        value: str = self._values[index].as_py()
        return value


def find_rows(segment: SegmentFile, event_id: str) -> list[int]:
    """Row numbers in a segment whose event_id may equal ``event_id`` (callers confirm)."""
    path = index_path(segment.path)
    if not path.exists():
        write_id_index(segment.path, pq.read_table(segment.path, columns=["event_id"])["event_id"])
    batch = _open_index(path)
    sorted_ids = _Sorted(batch.column(0))
    start = bisect.bisect_left(sorted_ids, event_id)
    end = bisect.bisect_right(sorted_ids, event_id, lo=start)
    rows = batch.column(1)
    return [int(rows[i].as_py()) for i in range(start, end)]


_OPEN: dict[Path, tuple[tuple[int, int, int], pa.RecordBatch]] = {}
_MAX_OPEN = 4096


def _open_index(path: Path) -> pa.RecordBatch:
    """The index as a zero-copy batch over its memory map, kept open while the file is unchanged."""
    status = path.stat()
    identity = (status.st_ino, status.st_size, status.st_mtime_ns)
    cached = _OPEN.get(path)
    if cached is not None and cached[0] == identity:
        return cached[1]
    batch = ipc.open_file(pa.memory_map(str(path))).get_batch(0)
    if len(_OPEN) >= _MAX_OPEN:
        _OPEN.clear()
    _OPEN[path] = (identity, batch)
    return batch
