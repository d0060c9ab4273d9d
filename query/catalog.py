"""The DuckDB catalog over a ledger: ``events``, ``events_raw`` and ``writers``.

The user's connection never touches the file system: the segments and the acknowledged but
unflushed events are handed to DuckDB as one pyarrow dataset (column and predicate pushdown
still apply), and external access is then switched off and the configuration locked.

Each segment's fragment carries the value ranges of its footer statistics as a guarantee, so a
filter on time, seq, observed_time or event_id drops a segment before any work on its file;
without it pyarrow opened or filtered every segment on every query (~10 ms for 72 of them).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs
import pyarrow.parquet as pq
import sqlglot

from ledger import Ledger, LedgerError
from ledger.layout import segments_in_force
from ledger.schema import SEGMENT_SCHEMA
from ledger.segments import STATISTICS_COLUMNS, SegmentFile

__all__ = [
    "VIEW_NAMES",
    "VIEW_TYPES",
    "CatalogLimits",
    "CatalogSession",
    "catalog",
    "catalog_session",
    "connect",
    "create_temporary",
]

# Constant view definitions, parsed by sqlglot; the relations they read are registered objects.
# _rows is every stored row: the segments and the acknowledged events not yet flushed to one.
_VIEWS = {
    # _bounds holds, per writer log, how many of its events are in view: all of them, or as many
    # as a checkpoint signed (--as-of).
    "events_raw": (
        "SELECT e.* REPLACE (CAST(e.attrs AS JSON) AS attrs) FROM _rows AS e "
        "JOIN _bounds AS b ON e.writer_id = b.writer_id AND e.seq < b.tree_size"
    ),
    # One row per event_id: every copy but the chosen one is listed in _shadowed (built once
    # per catalog), so filters on events still reach the segment scan.
    "events": (
        "SELECT e.* FROM events_raw AS e "
        "ANTI JOIN _shadowed AS s ON e.writer_id = s.writer_id AND e.seq = s.seq"
    ),
    "writers": (
        "SELECT writer_id, count(*) AS events, min(seq) AS first_seq, max(seq) AS last_seq, "
        "arg_max(hash, seq) AS last_hash, max(observed_time) AS last_observed_time "
        "FROM events_raw GROUP BY writer_id"
    ),
    "checkpoints": "SELECT * FROM _checkpoints",
    # Detectors append their findings to the ledger as category 'finding' events (DESIGN.md §5),
    # so a finding is as tamper-evident as what it points at; this is their view.
    "findings": "SELECT * FROM events WHERE category = 'finding'",
}
# Simpler definitions where they mean the same, so every query binds and plans less:
# with every event in view there are no bounds to join, and one writer log never stores an
# event_id twice, so nothing is shadowed.
_ALL_EVENTS_RAW = "SELECT * REPLACE (CAST(attrs AS JSON) AS attrs) FROM _rows"
_ONE_WRITER_EVENTS = "SELECT * FROM events_raw"
VIEW_NAMES = tuple(_VIEWS)
"""The tables a query may read."""


def _sql_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ"
    if pa.types.is_list(arrow_type):
        return "ARRAY<VARCHAR>"
    simple = {pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR"}
    return simple.get(arrow_type, "BLOB")


_EVENT_TYPES = {f.name: _sql_type(f.type) for f in SEGMENT_SCHEMA} | {"attrs": "JSON"}
VIEW_TYPES: dict[str, object] = {
    "events": _EVENT_TYPES,
    "events_raw": _EVENT_TYPES,
    "findings": _EVENT_TYPES,
    "writers": {
        "writer_id": "VARCHAR",
        "events": "BIGINT",
        "first_seq": "BIGINT",
        "last_seq": "BIGINT",
        "last_hash": "BLOB",
        "last_observed_time": "TIMESTAMPTZ",
    },
    "checkpoints": {
        "number": "BIGINT",
        "time": "TIMESTAMPTZ",
        "writer_id": "VARCHAR",
        "tree_size": "BIGINT",
        "root": "VARCHAR",
    },
}
"""Column types of the views, so a query from another dialect is transpiled with its types."""
_UNBOUNDED = 2**62  # a writer log's bound when every event is in view
_BOUNDS_SCHEMA = pa.schema([("writer_id", pa.string()), ("tree_size", pa.int64())])
_CHECKPOINTS_SCHEMA = pa.schema(
    [
        ("number", pa.int64()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("writer_id", pa.string()),
        ("tree_size", pa.int64()),
        ("root", pa.string()),
    ]
)


@dataclass(frozen=True)
class CatalogLimits:
    """Resource limits and reader of a query connection.

    ``native_reader`` scans the segments with DuckDB's own Parquet reader (late materialisation,
    page skipping) instead of a registered Arrow dataset. The connection may then open exactly
    those files (``allowed_paths``) and nothing else; since an allowed path could also be written,
    it is only for SQL the engine itself generates (EQL), never for a responder's SQL text.
    """

    threads: int = 2
    memory_limit: str = "2GB"
    native_reader: bool = False


def connect(
    ledger: Ledger, limits: CatalogLimits | None = None, as_of: int | None = None
) -> duckdb.DuckDBPyConnection:
    """A locked-down DuckDB connection whose views show the ledger now, or as of a checkpoint."""
    limits = limits or CatalogLimits()
    checkpoints = _checkpoints(ledger, as_of)
    layouts = ledger.writer_layouts()
    if as_of is None:
        bounds = {layout.writer_id: _UNBOUNDED for layout in layouts}
    else:
        signed = ledger.checkpoints.load(as_of, ledger.keys.verifiers())
        bounds = {w.writer_id: w.tree_size for w in signed.writers}
    segments = [
        segment
        for layout in layouts
        if layout.writer_id in bounds
        for segment in segments_in_force(layout)[0]
        if segment.first_seq < bounds[layout.writer_id]
    ]
    unflushed = ledger.unflushed_table()
    connection = duckdb.connect(
        config={"threads": limits.threads, "memory_limit": limits.memory_limit}
    )
    if limits.native_reader:
        _create_native_rows(connection, segments, unflushed)
    else:
        connection.register("_rows", _rows_dataset(segments, unflushed))
    connection.register(
        "_bounds",
        pa.table([list(bounds), list(bounds.values())], schema=_BOUNDS_SCHEMA),
    )
    connection.register("_checkpoints", checkpoints)
    single_writer = len(bounds) <= 1
    definitions = dict(_VIEWS)
    if as_of is None:
        definitions["events_raw"] = _ALL_EVENTS_RAW
    if single_writer:
        definitions["events"] = _ONE_WRITER_EVENTS
    for name, text in definitions.items():
        if name == "events" and not single_writer:
            _create_shadowed(connection)
        create_temporary(connection, "VIEW", name, sqlglot.parse_one(text, read="duckdb"))
    if limits.native_reader and segments:
        connection.execute(f"SET allowed_paths = {_segment_paths(segments).sql('duckdb')}")
        # Segments never change once written, so their footers can be parsed once per catalog.
        connection.execute("SET parquet_metadata_cache = true")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def _create_native_rows(
    connection: duckdb.DuckDBPyConnection, segments: list[SegmentFile], unflushed: pa.Table
) -> None:
    """``_rows`` as a view: DuckDB reads the segment files itself, plus the unflushed events."""
    connection.register("_unflushed", unflushed.cast(SEGMENT_SCHEMA))
    rows: sqlglot.exp.Query = sqlglot.exp.select("*").from_("_unflushed")
    if segments:
        files = sqlglot.exp.func("READ_PARQUET", _segment_paths(segments))
        stored = sqlglot.exp.select("*").from_(files)
        # With nothing unflushed the segments are the rows, and no union is planned.
        rows = (
            sqlglot.exp.Union(this=stored, expression=rows, distinct=False, by_name=True)
            if unflushed.num_rows
            else stored
        )
    create_temporary(connection, "VIEW", "_rows", rows)


def _segment_paths(segments: list[SegmentFile]) -> sqlglot.exp.Array:
    """The segment files' paths as a SQL list."""
    return sqlglot.exp.Array(
        expressions=[sqlglot.exp.Literal.string(str(s.path)) for s in segments]
    )


def create_temporary(
    connection: duckdb.DuckDBPyConnection, kind: str, name: str, query: sqlglot.exp.Expr
) -> None:
    """``CREATE TEMPORARY <kind> name AS query``, built as a sqlglot expression."""
    create = sqlglot.exp.Create(
        this=sqlglot.exp.to_table(name),
        kind=kind,
        expression=query,
        properties=sqlglot.exp.Properties(expressions=[sqlglot.exp.TemporaryProperty()]),
    )
    connection.execute(create.sql("duckdb"))


@dataclass
class _Cached:
    state: tuple[object, ...]
    connection: duckdb.DuckDBPyConnection
    lock: threading.Lock = field(default_factory=threading.Lock)
    relations: OrderedDict[str, duckdb.DuckDBPyRelation] = field(default_factory=OrderedDict)
    retired: bool = False  # replaced in the cache: closed once no query is using it
    closed: bool = False


_CACHE: dict[tuple[str, int | None, CatalogLimits], _Cached] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16
_RELATIONS_SIZE = 256


class CatalogSession:
    """A catalog connection checked out for one query, and the relations already bound on it."""

    def __init__(self, cached: _Cached) -> None:
        self._cached = cached

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The locked-down connection."""
        return self._cached.connection

    def relation(self, sql: str) -> duckdb.DuckDBPyRelation | None:
        """A lazy relation over ``sql`` (None if it returns no rows), bound once per catalog.

        Making a relation binds the statement, and running it binds it again: for a query asked
        again, the first bind is spent only once. The relation runs afresh on every read.
        """
        relations = self._cached.relations
        relation = relations.get(sql)
        if relation is not None:
            relations.move_to_end(sql)
            return relation
        relation = self._cached.connection.sql(sql)
        if relation is not None:
            relations[sql] = relation
            if len(relations) > _RELATIONS_SIZE:
                relations.popitem(last=False)
        return relation


@contextmanager
def catalog(
    ledger: Ledger, limits: CatalogLimits | None = None, as_of: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A catalog connection for one query, reused while the ledger's files are unchanged."""
    with catalog_session(ledger, limits, as_of) as session:
        yield session.connection


@contextmanager
def catalog_session(
    ledger: Ledger, limits: CatalogLimits | None = None, as_of: int | None = None
) -> Iterator[CatalogSession]:
    """The catalog for one query, reused while the ledger's files are unchanged.

    Building the catalog (listing segments, reading WAL tails and checkpoints) costs more than
    a small query; a long-running process asking many questions pays it once per change.
    """
    limits = limits or CatalogLimits()
    key = (str(ledger.root.resolve()), as_of, limits)
    while True:
        cached = _current(ledger, key)
        try:
            with cached.lock:
                if cached.closed:
                    continue  # replaced and closed while this query waited for it
                yield CatalogSession(cached)
                return
        finally:
            _close_if_retired(cached)


def _current(ledger: Ledger, key: tuple[str, int | None, CatalogLimits]) -> _Cached:
    """The cached catalog for ``key``, built afresh if the ledger's files changed."""
    state = _ledger_state(ledger)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached.state == state:
            return cached
        _, as_of, limits = key
        fresh = _Cached(state, connect(ledger, limits, as_of))
        replaced = [cached] if cached is not None else []
        if cached is None and len(_CACHE) >= _CACHE_SIZE:
            replaced += _CACHE.values()
            _CACHE.clear()
        _CACHE[key] = fresh
        for stale in replaced:
            stale.retired = True
    for stale in replaced:
        _close_if_retired(stale)
    return fresh


def _close_if_retired(cached: _Cached) -> None:
    """Close a replaced catalog unless a query holds it; that query closes it when it ends.

    DuckDB refuses to close a connection another thread is running a statement on.
    """
    if cached.retired and not cached.closed and cached.lock.acquire(blocking=False):
        try:
            if not cached.closed:
                cached.closed = True
                cached.connection.close()
        finally:
            cached.lock.release()


def _ledger_state(ledger: Ledger) -> tuple[object, ...]:
    """What the catalog shows depends on: segment and WAL files, and the checkpoint numbers."""
    entries: list[object] = []
    for layout in ledger.writer_layouts():
        # A segment's event_id index beside it and half-written temporary files are not read.
        entries += _file_identities(layout.segments, ".parquet")
        entries += _file_identities(layout.wal_dir, "")
    return (tuple(entries), tuple(ledger.checkpoints.numbers()))


def _file_identities(directory: Path, suffix: str) -> list[tuple[str, int, int, int]]:
    """Path, inode, size and modification time of each file in ``directory`` named ``*suffix``."""
    try:
        with os.scandir(directory) as found:
            chosen = [entry for entry in found if entry.name.endswith(suffix)]
    except FileNotFoundError:
        return []
    identities = []
    for entry in chosen:
        try:
            status = entry.stat()
        except FileNotFoundError:
            continue  # gone since the listing: the next state check sees it gone too
        identities.append((entry.path, status.st_ino, status.st_size, status.st_mtime_ns))
    return sorted(identities)


# The same event_id reaching the ledger through several writers (client retries) resolves to
# its earliest observed copy; writer_id and seq break ties, so every replica of the same logs
# picks the same row. Within one writer log an event_id is never stored twice.
_SHADOWED = (
    "SELECT writer_id, seq FROM ("
    "SELECT writer_id, seq, row_number() OVER "
    "(PARTITION BY event_id ORDER BY observed_time, writer_id, seq) AS copy "
    "FROM events_raw WHERE event_id IN "
    "(SELECT event_id FROM events_raw GROUP BY event_id HAVING count(*) > 1)"
    ") WHERE copy > 1"
)


def _create_shadowed(connection: duckdb.DuckDBPyConnection) -> None:
    """Materialise the copies the ``events`` view leaves out."""
    create_temporary(connection, "TABLE", "_shadowed", sqlglot.parse_one(_SHADOWED, read="duckdb"))


_PARQUET = ds.ParquetFileFormat()
_LOCAL = pyarrow.fs.LocalFileSystem()
# Segments never change once renamed into place; a file's identity below also changes if one is
# replaced, so a cached fragment is never used for other bytes.
_FRAGMENTS: OrderedDict[tuple[str, int, int, int], ds.ParquetFileFragment] = OrderedDict()
_FRAGMENTS_LOCK = threading.Lock()
_FRAGMENTS_SIZE = 65536


def _rows_dataset(segments: list[SegmentFile], unflushed: pa.Table) -> ds.Dataset:
    """The segments and the unflushed events as one dataset, so a filter reaches both scans."""
    parts: list[ds.Dataset] = []
    if segments:
        parts.append(_segments_dataset(segments))
    if unflushed.num_rows:
        parts.append(ds.InMemoryDataset(unflushed.cast(SEGMENT_SCHEMA)))
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return ds.InMemoryDataset(SEGMENT_SCHEMA.empty_table())
    return ds.UnionDataset(SEGMENT_SCHEMA, parts)


def _segments_dataset(segments: list[SegmentFile]) -> ds.FileSystemDataset:
    """The segments as one dataset whose fragments know their column ranges."""
    fragments = [_fragment(str(segment.path)) for segment in segments]
    return ds.FileSystemDataset(fragments, SEGMENT_SCHEMA, _PARQUET, _LOCAL)


def _fragment(path: str) -> ds.ParquetFileFragment:
    """A segment's fragment, its footer read once per file rather than once per catalog."""
    status = os.stat(path)
    identity = (path, status.st_ino, status.st_size, status.st_mtime_ns)
    with _FRAGMENTS_LOCK:
        fragment = _FRAGMENTS.get(identity)
        if fragment is not None:
            _FRAGMENTS.move_to_end(identity)
            return fragment
    fragment = _PARQUET.make_fragment(path, _LOCAL, partition_expression=_column_ranges(path))
    with _FRAGMENTS_LOCK:
        _FRAGMENTS[identity] = fragment
        while len(_FRAGMENTS) > _FRAGMENTS_SIZE:
            _FRAGMENTS.popitem(last=False)
    return fragment


def _column_ranges(path: str) -> ds.Expression | None:
    """What every row of a segment satisfies: min <= column <= max, from its footer statistics.

    The same statistics already let the scan skip row groups (and verify checks them), so a
    guarantee built from them hides nothing a row-group skip would not.
    """
    try:
        metadata = pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return None  # the scan reports the damaged file
    leaves = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    guarantee: ds.Expression | None = None
    for name in STATISTICS_COLUMNS:
        if name not in leaves:
            continue
        bounds = _bounds(metadata, leaves.index(name))
        if bounds is None:
            continue
        arrow_type = SEGMENT_SCHEMA.field(name).type
        try:
            low, high = pa.scalar(bounds[0], arrow_type), pa.scalar(bounds[1], arrow_type)
        except (pa.ArrowException, TypeError, ValueError):
            continue
        in_range = (ds.field(name) >= low) & (ds.field(name) <= high)
        guarantee = in_range if guarantee is None else guarantee & in_range
    return guarantee


def _bounds(metadata: pq.FileMetaData, column: int) -> tuple[object, object] | None:
    """A column's range over all row groups; None unless each group states one, null-free."""
    lows, highs = [], []
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(column).statistics
        if (
            statistics is None
            or not statistics.has_min_max
            or not statistics.has_null_count
            or statistics.null_count != 0
        ):
            return None
        lows.append(statistics.min)
        highs.append(statistics.max)
    if not lows:
        return None
    return min(lows), max(highs)


def _checkpoints(ledger: Ledger, as_of: int | None) -> pa.Table:
    """Signed checkpoints' writer states, up to ``as_of``; ones failing their signature left out."""
    rows = []
    verifiers = ledger.keys.verifiers()
    for number in ledger.checkpoints.numbers():
        if as_of is not None and number > as_of:
            break
        try:
            signed = ledger.checkpoints.load(number, verifiers)
        except LedgerError:
            continue  # verify reports it; a query shows only what is signed
        moment = datetime.fromisoformat(signed.time)
        for writer in signed.writers:
            rows.append((number, moment, writer.writer_id, writer.tree_size, writer.root.hex()))
    columns = [[row[i] for row in rows] for i in range(len(_CHECKPOINTS_SCHEMA))]
    return pa.table(columns, schema=_CHECKPOINTS_SCHEMA)
