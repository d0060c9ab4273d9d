"""Writing results for people (rich tables) and for machines (json, jsonl, csv, parquet, arrow)."""

from __future__ import annotations

import base64
import csv
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import ipc
from rich.console import Console
from rich.table import Table

__all__ = [
    "TABLE_FORMATS",
    "BatchWriter",
    "cell_text",
    "json_default",
    "print_records",
    "print_table",
    "write_batches",
    "write_table",
]

TABLE_FORMATS = ("table", "json", "jsonl", "csv", "parquet", "arrow")
BINARY_FORMATS = ("parquet", "arrow")


def json_default(value: object) -> object:
    """JSON form of values orjson leaves alone: hashes as hex, other bytes as base64."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return raw.hex() if len(raw) == 32 else base64.b64encode(raw).decode("ascii")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, pa.MonthDayNano):
        return _interval_text(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _positional_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows by position: a query may name two columns alike (``a.id, b.id``)."""
    return list(zip(*(column.to_pylist() for column in table.columns), strict=True))


def _unique_names(names: list[str]) -> list[str]:
    """Column names made unique for JSON objects: a repeated ``id`` becomes ``id_1``, ..."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def _json_ready(table: pa.Table) -> list[dict[str, Any]]:
    names = _unique_names(table.column_names)
    embedded = {i for i, f in enumerate(table.schema) if f.name == "attrs" or "json" in str(f.type)}
    return [
        {
            name: orjson.Fragment(value) if i in embedded and isinstance(value, str) else value
            for i, (name, value) in enumerate(zip(names, row, strict=True))
        }
        for row in _positional_rows(table)
    ]


class BatchWriter:
    """Writes a result batch by batch in a machine format, so large results stream."""

    def __init__(self, fmt: str, schema: pa.Schema, out: Path | None = None) -> None:
        if fmt not in TABLE_FORMATS or fmt == "table":
            raise ValueError(f"unknown format {fmt!r}")
        if fmt in BINARY_FORMATS and out is None and sys.stdout.isatty():
            raise ValueError(f"--format {fmt} writes binary data: give --out FILE or redirect")
        self.fmt = fmt
        self._stream: IO[bytes] = open(out, "wb") if out is not None else sys.stdout.buffer  # noqa: SIM115
        self._owns_stream = out is not None
        self._rows = 0
        self._binary: Any = None
        if fmt == "parquet":
            self._binary = pq.ParquetWriter(self._stream, schema, compression="zstd")
        elif fmt == "arrow":
            self._binary = ipc.new_file(self._stream, schema)
        elif fmt == "csv":
            self._csv = csv.writer(_TextSink(self._stream), lineterminator="\n")
            self._csv.writerow(schema.names)
        elif fmt == "json":
            self._stream.write(b"[")

    def write(self, batch: pa.RecordBatch) -> None:
        """Write the next batch of rows."""
        if self._binary is not None:
            self._binary.write_batch(batch)
            return
        table = pa.Table.from_batches([batch])
        if self.fmt == "csv":
            for values in _positional_rows(table):
                self._csv.writerow([cell_text(v) for v in values])
            return
        for row in _json_ready(table):
            text = orjson.dumps(row, default=json_default, option=_JSON_OPTIONS)
            if self.fmt == "jsonl":
                self._stream.write(text + b"\n")
            else:
                self._stream.write((b"," if self._rows else b"") + text)
            self._rows += 1

    def close(self) -> None:
        """Finish the output (footers, closing bracket) and release the file."""
        if self._binary is not None:
            self._binary.close()
        elif self.fmt == "json":
            self._stream.write(b"]\n")
        if self._owns_stream:
            self._stream.close()
        else:
            self._stream.flush()


_JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def write_batches(
    fmt: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], out: Path | None = None
) -> None:
    """Stream batches out in a machine format."""
    writer = BatchWriter(fmt, schema, out)
    try:
        for batch in batches:
            writer.write(batch)
    finally:
        writer.close()


def write_table(table: pa.Table, fmt: str, out: Path | None = None) -> None:
    """Write an Arrow table in a machine format to a file or standard output."""
    write_batches(fmt, table.schema, table.to_batches(), out)


def _interval_text(value: pa.MonthDayNano) -> str:
    """An interval as ISO 8601 (``P1M2DT3H4M5.5S``), not Arrow's tuple repr."""
    months, days, nanoseconds = value.months, value.days, value.nanoseconds
    seconds = nanoseconds / 1e9
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    date = f"{months}M" * bool(months) + f"{days}D" * bool(days)
    time = f"{int(hours)}H" * bool(hours) + f"{int(minutes)}M" * bool(minutes)
    time += f"{seconds:g}S" * bool(seconds or not (date or time))
    return f"P{date}" + (f"T{time}" if time else "")


class _TextSink:
    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(text.encode("utf-8"))


def cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, pa.MonthDayNano):
        return _interval_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return str(json_default(value))
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=json_default).decode("utf-8")
    return str(value)


def print_table(table: pa.Table, console: Console, title: str | None = None) -> None:
    """Show an Arrow table as a rich table."""
    view = Table(title=title, show_lines=False, header_style="bold")
    for name in table.column_names:
        view.add_column(name, overflow="fold")
    for row in _positional_rows(table):
        view.add_row(*(cell_text(v) for v in row))
    console.print(view)


def print_records(records: Iterable[Mapping[str, Any]], fmt: str, console: Console) -> None:
    """Write plain records (already JSON-ready) in json / jsonl / csv, or as a table."""
    rows = list(records)
    if fmt == "table":
        if rows:
            print_table(pa.Table.from_pylist(rows), console)
        return
    write_table(pa.Table.from_pylist(rows) if rows else pa.table({}), fmt)
