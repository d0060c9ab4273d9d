"""The DuckDB catalog over a ledger: ``events``, ``events_raw`` and ``writers``.

The user's connection never touches the file system: segments are handed to DuckDB as a pyarrow
dataset (column and predicate pushdown still apply), acknowledged-but-unflushed events as an
Arrow table, and external access is then switched off and the configuration locked.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import sqlglot

from ledger import Ledger
from ledger.schema import SEGMENT_SCHEMA

__all__ = ["CatalogLimits", "connect"]

# Constant view definitions, parsed by sqlglot; the relations they read are registered objects.
_VIEWS = {
    "events_raw": (
        "SELECT * REPLACE (CAST(attrs AS JSON) AS attrs) FROM "
        "(SELECT * FROM _segments UNION ALL BY NAME SELECT * FROM _unflushed)"
    ),
    # One row per event_id. The same event_id reaching the ledger through several writers (client
    # retries) resolves to its earliest observed copy; writer_id and seq break ties, so every
    # replica of the same logs picks the same row.
    "events": (
        "SELECT * FROM events_raw "
        "QUALIFY row_number() OVER "
        "(PARTITION BY event_id ORDER BY observed_time, writer_id, seq) = 1"
    ),
    "writers": (
        "SELECT writer_id, count(*) AS events, min(seq) AS first_seq, max(seq) AS last_seq, "
        "arg_max(hash, seq) AS last_hash, max(observed_time) AS last_observed_time "
        "FROM events_raw GROUP BY writer_id"
    ),
}


@dataclass(frozen=True)
class CatalogLimits:
    """Resource limits of a query connection."""

    threads: int = 2
    memory_limit: str = "2GB"


def connect(ledger: Ledger, limits: CatalogLimits | None = None) -> duckdb.DuckDBPyConnection:
    """A locked-down DuckDB connection whose views show the ledger as it is now."""
    limits = limits or CatalogLimits()
    connection = duckdb.connect(
        config={"threads": limits.threads, "memory_limit": limits.memory_limit}
    )
    files = [str(s.path) for s in ledger.segment_files()]
    segments = ds.dataset(files, format="parquet", schema=SEGMENT_SCHEMA) if files else None
    connection.register("_segments", segments if segments is not None else _empty())
    connection.register("_unflushed", ledger.unflushed_table())
    for name, definition in _VIEWS.items():
        view = sqlglot.parse_one(definition, read="duckdb")
        create = sqlglot.exp.Create(
            this=sqlglot.exp.to_table(name),
            kind="VIEW",
            expression=view,
            properties=sqlglot.exp.Properties(expressions=[sqlglot.exp.TemporaryProperty()]),
        )
        connection.execute(create.sql("duckdb"))
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def _empty() -> pa.Table:
    return SEGMENT_SCHEMA.empty_table()
