"""Parquet segments: one writer's contiguous seq range per file, written durably, compacted."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .durable import fsync_dir, fsync_file
from .schema import CLIENT_FIELDS, HASH_COLUMNS, SEGMENT_SCHEMA, Kind

__all__ = [
    "DICTIONARY_TEXT_COLUMNS",
    "STATISTICS_COLUMNS",
    "SegmentFile",
    "hash_at",
    "list_segments",
    "read_rows",
    "read_segment",
    "rows_to_table",
    "segment_name",
    "write_segment",
]

_NAME = re.compile(r"(\d{20})-(\d{20})\.parquet\Z")
ROW_GROUP_ROWS = 128 * 1024
# Footer statistics let readers skip row groups, so a forged one hides rows from a query without
# touching a hashed column. Segments carry them only where they prune well, and verify checks them.
STATISTICS_COLUMNS = ("event_id", "time", "seq", "observed_time")

# Rows arrive as canonical JSON values; timestamps are RFC 3339 strings until cast.
_ROW_STRUCT = pa.struct(
    [
        pa.field(f.name, pa.string() if f.type == pa.timestamp("us", tz="UTC") else f.type)
        for f in SEGMENT_SCHEMA
        if f.name not in HASH_COLUMNS
    ]
)
_TIME_COLUMNS = (*(f.name for f in CLIENT_FIELDS if f.kind is Kind.TIME), "observed_time")

# Encodings chosen per column, for readers (EQL scans, verify) as much as for size: times and seqs,
# which mostly rise, are delta-encoded and decode several times faster than dictionary pages; ids,
# attrs and hashes are nearly all distinct, so a dictionary is wasted work when writing and
# reading; hashes are random bytes that zstd cannot shrink. Lists name their leaf column.
_DELTA_COLUMNS = ("time", "observed_time", "seq")
_DISTINCT_COLUMNS = (
    *(f.name for f in CLIENT_FIELDS if f.kind in (Kind.ID, Kind.HEX, Kind.ATTRS)),
    "caused_by",
    *HASH_COLUMNS,
)
_DICTIONARY_COLUMNS = tuple(
    f"{field.name}.list.element" if pa.types.is_list(field.type) else field.name
    for field in SEGMENT_SCHEMA
    if field.name not in (*_DELTA_COLUMNS, *_DISTINCT_COLUMNS)
)
# Readers that go through every row (verify) read these as dictionaries: decoding a dictionary
# page into codes costs a fraction of copying each row's text out of it.
DICTIONARY_TEXT_COLUMNS = tuple(
    field.name
    for field in SEGMENT_SCHEMA
    if field.name in _DICTIONARY_COLUMNS and pa.types.is_string(field.type)
)
_COMPRESSION = {
    f"{field.name}.list.element" if pa.types.is_list(field.type) else field.name: (
        "none" if field.name in HASH_COLUMNS else "zstd"
    )
    for field in SEGMENT_SCHEMA
}


@dataclass(frozen=True)
class SegmentFile:
    """A segment on disk and the seq range its name claims."""

    path: Path
    first_seq: int
    last_seq: int

    @property
    def rows(self) -> int:
        """How many events the name claims the file holds."""
        return self.last_seq - self.first_seq + 1


def segment_name(first_seq: int, last_seq: int) -> str:
    """The file name of a segment holding seqs ``first_seq..last_seq``."""
    return f"{first_seq:020d}-{last_seq:020d}.parquet"


def list_segments(directory: Path) -> list[SegmentFile]:
    """The segment files of a writer log, ordered by seq range (temp files ignored)."""
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        match = _NAME.match(name)
        if match:
            first, last = int(match.group(1)), int(match.group(2))
            found.append(SegmentFile(directory / name, first, last))
    return sorted(found, key=lambda s: (s.first_seq, s.last_seq))


def rows_to_table(
    rows: Sequence[dict[str, Any]], chain: tuple[Sequence[bytes], Sequence[bytes], Sequence[bytes]]
) -> pa.Table:
    """An Arrow table in the segment schema from canonical rows and their (prev, leaf, hash)."""
    struct = pa.array(rows, type=_ROW_STRUCT)
    batch = pa.RecordBatch.from_struct_array(struct)
    hashes = dict(zip(HASH_COLUMNS, chain, strict=True))
    columns = []
    for field in SEGMENT_SCHEMA:
        if field.name in hashes:
            columns.append(pa.array(hashes[field.name], pa.binary(32)))
        elif field.name in _TIME_COLUMNS:
            columns.append(batch.column(field.name).cast(field.type))
        else:
            columns.append(batch.column(field.name))
    return pa.Table.from_arrays(columns, schema=SEGMENT_SCHEMA)


def write_segment(directory: Path, table: pa.Table, first_seq: int) -> SegmentFile:
    """Write a segment durably: temp file, fsync, rename, fsync the directory."""
    last_seq = first_seq + table.num_rows - 1
    final = directory / segment_name(first_seq, last_seq)
    temp = directory / f".tmp-{final.name}"
    pq.write_table(
        table,
        temp,
        compression=_COMPRESSION,
        row_group_size=ROW_GROUP_ROWS,
        write_statistics=list(STATISTICS_COLUMNS),
        use_dictionary=list(_DICTIONARY_COLUMNS),
        column_encoding=dict.fromkeys(_DELTA_COLUMNS, "DELTA_BINARY_PACKED"),
    )
    fsync_file(temp)
    os.replace(temp, final)
    from .idlookup import write_id_index  # the index module needs SegmentFile from here

    write_id_index(final, table.column("event_id"))
    fsync_dir(directory)
    return SegmentFile(final, first_seq, last_seq)


def read_segment(segment: SegmentFile, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a segment (optionally only some columns)."""
    return pq.read_table(segment.path, columns=list(columns) if columns else None)


def read_rows(
    segment: SegmentFile, rows: Sequence[int], columns: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """Some rows of a segment by position, reading only the row groups that hold them."""
    if not rows:
        return {}
    parquet = pq.ParquetFile(segment.path)
    wanted = sorted(set(rows))
    found: dict[int, dict[str, Any]] = {}
    first = 0
    for group in range(parquet.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        here = [row for row in wanted if first <= row < first + count]
        if here:
            table = parquet.read_row_group(group, columns=list(columns))
            picked = table.take(pa.array([row - first for row in here])).to_pylist()
            found.update(zip(here, picked, strict=True))
        first += count
    return found


def hash_at(segments: Sequence[SegmentFile], seq: int) -> bytes | None:
    """The stored chained hash of ``seq`` (one row group read), or None if no segment has it."""
    for segment in segments:
        if segment.first_seq <= seq <= segment.last_seq:
            row = read_rows(segment, [seq - segment.first_seq], ["hash"])
            return bytes(row[seq - segment.first_seq]["hash"]) if row else None
    return None
