"""Reading events from files: JSON Lines, a JSON array, Parquet, CSV, or standard input."""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputFormatError, Problem
from .schema import FIELDS_BY_NAME, Kind

__all__ = ["FORMATS", "Chunk", "detect_format", "read_chunks", "spool_stdin"]

FORMATS = ("jsonl", "json", "parquet", "csv")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}


@dataclass(frozen=True)
class Chunk:
    """Records read from a file, where each came from, and records that could not be read."""

    records: list[object]
    locations: list[str]
    first_index: int
    unreadable: tuple[Problem, ...] = ()


def detect_format(path: Path) -> str:
    """The input format a file's name implies (``.gz`` is looked through)."""
    suffixes = path.suffixes
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    found = _SUFFIXES.get(suffixes[-1].lower()) if suffixes else None
    if found is None:
        if _sniff_json_array(path):
            return "json"
        return "jsonl"
    return found


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _sniff_json_array(path: Path) -> bool:
    with _open(path) as stream:
        head = stream.read(4096).lstrip()
    return head.startswith(b"[")


def spool_stdin() -> Path:
    """Copy standard input to a temporary file so it can be read twice (check, then append)."""
    with tempfile.NamedTemporaryFile(prefix="chainsight-stdin-", delete=False) as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool)
    return Path(spool.name)


def read_chunks(path: Path, fmt: str | None = None, chunk_size: int = 10_000) -> Iterator[Chunk]:
    """Read a file's events in chunks; unreadable records are reported, never skipped silently."""
    if fmt is not None and fmt not in FORMATS:
        raise InputFormatError(f"unknown input format {fmt!r} (use one of: {', '.join(FORMATS)})")
    try:
        fmt = fmt or detect_format(path)
        if fmt == "jsonl":
            yield from _jsonl(path, chunk_size)
        elif fmt == "json":
            yield from _json_array(path, chunk_size)
        elif fmt == "parquet":
            yield from _parquet(path, chunk_size)
        else:
            yield from _csv(path, chunk_size)
    except FileNotFoundError:
        raise InputFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFormatError(f"{path}: is a directory, not a file of events") from None
    except (OSError, EOFError) as err:
        raise InputFormatError(f"{path}: cannot be read: {err}") from None


# What a line-oriented reader yields per record: its location, and the record or why it
# could not be read.
_Read = tuple[str, object, str]


def _chunked(reads: Iterator[_Read], chunk_size: int) -> Iterator[Chunk]:
    """Group records into chunks, keeping unreadable ones (as None) with their problems."""
    records: list[object] = []
    locations: list[str] = []
    unreadable: list[Problem] = []
    first = 0
    for index, (location, record, problem) in enumerate(reads):
        if problem:
            unreadable.append(Problem(index, "", problem, location))
        records.append(None if problem else record)
        locations.append(location)
        if len(records) >= chunk_size:
            yield Chunk(records, locations, first, tuple(unreadable))
            records, locations, unreadable, first = [], [], [], index + 1
    if records:
        yield Chunk(records, locations, first, tuple(unreadable))


def _jsonl(path: Path, chunk_size: int) -> Iterator[Chunk]:
    def reads() -> Iterator[_Read]:
        with _open(path) as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"line {number}", orjson.loads(line), ""
                except orjson.JSONDecodeError as err:
                    yield f"line {number}", None, f"not valid JSON ({err})"

    return _chunked(reads(), chunk_size)


def _json_array(path: Path, chunk_size: int) -> Iterator[Chunk]:
    with _open(path) as stream:
        try:
            document = orjson.loads(stream.read())
        except orjson.JSONDecodeError as err:
            raise InputFormatError(f"{path}: not valid JSON ({err})") from None
    items = document if isinstance(document, list) else [document]
    for start in range(0, len(items), chunk_size):
        part = items[start : start + chunk_size]
        locations = [f"item {start + i}" for i in range(len(part))]
        yield Chunk(part, locations, start)


def _parquet(path: Path, chunk_size: int) -> Iterator[Chunk]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:
        raise InputFormatError(f"{path}: not a readable Parquet file ({err})") from None
    first = 0
    for batch in parquet.iter_batches(batch_size=chunk_size):
        rows = _microsecond_times(batch).to_pylist()
        records: list[object] = [_from_parquet_row(row) for row in rows]
        locations = [f"row {first + i}" for i in range(len(records))]
        yield Chunk(records, locations, first)
        first += len(records)


def _microsecond_times(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Nanosecond timestamps (pandas' default) truncated to the ledger's microseconds."""
    columns = [
        column.cast(pa.timestamp("us", tz=column.type.tz), safe=False)
        if pa.types.is_timestamp(column.type) and column.type.unit == "ns"
        else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _from_parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, value in row.items():
        if value is None:
            continue
        if isinstance(value, datetime) and value.tzinfo is None:
            record[name] = value.replace(tzinfo=UTC)  # Parquet timestamps without a zone are UTC
        elif name == "attrs" and isinstance(value, str):
            record[name] = _json_or_text(value)
        else:
            record[name] = value
    return record


def _csv(path: Path, chunk_size: int) -> Iterator[Chunk]:
    def reads() -> Iterator[_Read]:
        with _open(path) as raw:
            # utf-8-sig: spreadsheets write a byte-order mark before the header.
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
            try:
                for row in reader:
                    try:
                        yield f"line {reader.line_num}", _from_csv_row(row), ""
                    except ValueError as err:
                        yield f"line {reader.line_num}", None, str(err)
            except UnicodeDecodeError as err:
                raise InputFormatError(f"{path}: not UTF-8 text ({err})") from None

    return _chunked(reads(), chunk_size)


def _from_csv_row(row: dict[str | None, str | list[str] | None]) -> dict[str, Any]:
    """Typed values from a CSV row: empty cells are absent; lists and attrs are JSON text."""
    record: dict[str, Any] = {}
    for name, cell in row.items():
        if name is None or isinstance(cell, list):
            raise ValueError("more cells than header columns")
        if cell is None or cell == "":
            continue
        field = FIELDS_BY_NAME.get(name)
        kind = field.kind if field else None
        if kind is Kind.BOOL:
            lowered = cell.strip().lower()
            record[name] = True if lowered == "true" else False if lowered == "false" else cell
        elif kind is Kind.INT:
            record[name] = int(cell) if cell.strip().lstrip("-").isdigit() else cell
        elif kind in (Kind.TEXT_LIST, Kind.ATTRS):
            record[name] = _json_or_text(cell)
        else:
            record[name] = cell
    return record


def _json_or_text(text: str) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # the validator then says what the field expected
