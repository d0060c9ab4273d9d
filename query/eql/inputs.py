"""Event sources: the ledger's ``events`` view, or records and files loaded into DuckDB."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import sqlglot.expressions as exp

from ..catalog import create_temporary
from .errors import EqlError
from .source import EventSource

__all__ = ["ROW_COLUMN", "TIME_COLUMN", "describe", "ledger_source", "load_file", "load_records"]

ROW_COLUMN = "__row"
TIME_COLUMN = "__time"
INPUT_TABLE = "eql_input"
_READERS = {
    ".jsonl": "read_json",
    ".ndjson": "read_json",
    ".json": "read_json",
    ".parquet": "read_parquet",
    ".csv": "read_csv",
}


def describe(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column names and DuckDB types of ``table``."""
    relation = connection.table(table)
    return {name: str(kind) for name, kind in zip(relation.columns, relation.types, strict=True)}


def ledger_source(connection: duckdb.DuckDBPyConnection) -> EventSource:
    """The ledger's logical ``events`` view, ordered by time, then writer and seq."""
    return EventSource(
        table="events",
        columns=describe(connection, "events"),
        category_field="category",
        time_column="time",
        tiebreaker=None,
        order_columns=("writer_id", "seq"),
        id_column="event_id",
    )


def load_records(
    records: Iterable[Mapping[str, object]],
    category_field: str | None,
    time_field: str,
    tiebreaker: str | None,
) -> tuple[duckdb.DuckDBPyConnection, EventSource]:
    """A locked connection holding ``records`` (JSON-like dicts) as the input table."""
    with tempfile.TemporaryDirectory(prefix="chainsight-eql-") as directory:
        path = Path(directory) / "records.jsonl"
        with path.open("wb") as out:
            count = 0
            for record in records:
                out.write(orjson.dumps(record, option=orjson.OPT_NAIVE_UTC) + b"\n")
                count += 1
        if count == 0:
            table = pa.table({time_field: pa.array([], pa.string())})
        else:
            table = _read(path, "read_json")
    return _locked(table, category_field, time_field, tiebreaker)


def load_file(
    path: str | os.PathLike[str],
    category_field: str | None,
    time_field: str,
    tiebreaker: str | None,
) -> tuple[duckdb.DuckDBPyConnection, EventSource]:
    """A locked connection holding the events of a JSONL, JSON, Parquet or CSV file."""
    file = Path(path)
    reader = _READERS.get(file.suffix.lower())
    if reader is None:
        raise EqlError(f"--input {file}: unknown file type (use {', '.join(_READERS)})")
    if not file.is_file():
        raise EqlError(f"--input {file}: no such file")
    return _locked(_read(file, reader), category_field, time_field, tiebreaker)


def _read(path: Path, reader: str) -> pa.Table:
    connection = duckdb.connect()
    try:
        result = getattr(connection, reader)(str(path)).arrow()
        return result.read_all() if isinstance(result, pa.RecordBatchReader) else result
    except duckdb.Error as err:
        raise EqlError(f"cannot read {path.name}: {err}") from None
    finally:
        connection.close()


def _time_sql(arrow_type: pa.DataType, column: str) -> exp.Expr:
    """The input's time field as a TIMESTAMP: ISO 8601 text, epoch milliseconds, or a timestamp."""
    value = exp.column(column, quoted=True)
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return exp.cast(value, "TIMESTAMP")

    def from_millis(number: exp.Expr) -> exp.Expr:
        micros = exp.Mul(this=number, expression=exp.Literal.number(1000))
        return exp.func("MAKE_TIMESTAMP", exp.cast(micros, "BIGINT"))

    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return from_millis(value)
    text = exp.cast(value, "VARCHAR")
    zoned = exp.TryCast(this=text, to=exp.DataType.build("TIMESTAMPTZ"))
    utc = exp.cast(exp.AtTimeZone(this=zoned, zone=exp.Literal.string("UTC")), "TIMESTAMP")
    millis = exp.TryCast(this=text, to=exp.DataType.build("DOUBLE"))
    return exp.func("COALESCE", utc, from_millis(millis))


def _whole_numbers_as_integers(table: pa.Table) -> pa.Table:
    """Columns DuckDB's JSON reader typed DECIMAL(p, 0) (mixed-sign integers) as BIGINT."""
    for index, column in enumerate(table.schema):
        if pa.types.is_decimal(column.type) and column.type.scale == 0:
            try:
                integers = table.column(index).cast(pa.int64())
            except pa.ArrowInvalid:  # beyond 64 bits: keep the exact decimal
                continue
            table = table.set_column(index, column.name, integers)
    return table


def _locked(
    table: pa.Table, category_field: str | None, time_field: str, tiebreaker: str | None
) -> tuple[duckdb.DuckDBPyConnection, EventSource]:
    for role, name in (
        ("time", time_field),
        ("category", category_field),
        ("tiebreaker", tiebreaker),
    ):
        if name is not None and name not in table.column_names:
            known = ", ".join(table.column_names[:20])
            raise EqlError(f"the {role} field {name!r} is not in the input (it has {known})")
    table = _whole_numbers_as_integers(table)
    table = table.append_column(ROW_COLUMN, pa.array(range(table.num_rows), pa.int64()))
    connection = duckdb.connect(config={"threads": 2})
    connection.register("eql_raw", table)
    time_type = table.schema.field(time_field).type
    loaded = exp.select(exp.Star(), exp.alias_(_time_sql(time_type, time_field), TIME_COLUMN))
    create_temporary(connection, "TABLE", INPUT_TABLE, loaded.from_("eql_raw"))
    connection.unregister("eql_raw")
    missing_time = exp.Is(this=exp.column(TIME_COLUMN), expression=exp.null())
    first_unparsed = exp.select(ROW_COLUMN).from_(INPUT_TABLE).where(missing_time).limit(1)
    unparsed = connection.execute(first_unparsed.sql("duckdb")).fetchone()
    if unparsed is not None:
        raise EqlError(
            f"record {unparsed[0]}: the time field {time_field!r} is missing or not a timestamp"
        )
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    source = EventSource(
        table=INPUT_TABLE,
        columns=describe(connection, INPUT_TABLE),
        category_field=category_field,
        time_column=TIME_COLUMN,
        tiebreaker=tiebreaker,
        order_columns=(ROW_COLUMN,),
        id_column=ROW_COLUMN,
        hidden=frozenset({ROW_COLUMN, TIME_COLUMN}),
    )
    return connection, source
