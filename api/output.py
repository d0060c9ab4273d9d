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

__all__ = ["TABLE_FORMATS", "json_default", "print_records", "print_table", "write_table"]

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


def write_table(table: pa.Table, fmt: str, out: Path | None = None) -> None:
    """Write an Arrow table in a machine format to a file or standard output."""
    if fmt in BINARY_FORMATS:
        if out is None and sys.stdout.isatty():
            raise ValueError(f"--format {fmt} writes binary data: give --out FILE or redirect")
        sink: Any = str(out) if out is not None else sys.stdout.buffer
        if fmt == "parquet":
            pq.write_table(table, sink, compression="zstd")
        else:
            with ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        return
    stream: IO[bytes] = open(out, "wb") if out is not None else sys.stdout.buffer  # noqa: SIM115
    try:
        _write_text(table, fmt, stream)
    finally:
        if out is not None:
            stream.close()
        else:
            stream.flush()


def _write_text(table: pa.Table, fmt: str, stream: IO[bytes]) -> None:
    options = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
    if fmt == "json":
        stream.write(orjson.dumps(_json_ready(table), default=json_default, option=options))
        stream.write(b"\n")
    elif fmt == "jsonl":
        for row in _json_ready(table):
            stream.write(orjson.dumps(row, default=json_default, option=options) + b"\n")
    elif fmt == "csv":
        text = _TextSink(stream)
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(table.column_names)
        for values in _positional_rows(table):
            writer.writerow([_csv_cell(v) for v in values])
    else:
        raise ValueError(f"unknown format {fmt!r}")


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


def _csv_cell(value: object) -> str:
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
        view.add_row(*(_csv_cell(v) for v in row))
    console.print(view)


def print_records(records: Iterable[Mapping[str, Any]], fmt: str, console: Console) -> None:
    """Write plain records (already JSON-ready) in json / jsonl / csv, or as a table."""
    rows = list(records)
    if fmt == "table":
        if rows:
            print_table(pa.Table.from_pylist(rows), console)
        return
    write_table(pa.Table.from_pylist(rows) if rows else pa.table({}), fmt)
