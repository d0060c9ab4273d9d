"""Queries written in another SQL dialect are transpiled to DuckDB (DESIGN.md §4, issue 5 "Tests").

A responder may write ``--dialect spark|snowflake|postgres|bigquery``. Each case below is one
question asked twice over the same real ledger (simulated agent activity): once in the foreign
dialect, using that dialect's own syntax, and once natively in DuckDB (usually with different
functions). The answers must be the same, the ``SqlResult.sql`` field must show the DuckDB text that
ran (the foreign syntax gone, its DuckDB translation present), and that text must itself run and
give the same answer.

Cases marked ``bug`` are strict xfails: the transpiled query runs but means something else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from query import Ledger, QueryError, run_sql
from query.sql import transpile
from sample_data import SimulationConfig, iter_events


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    root: Path = tmp_path_factory.mktemp("dialects") / "ledger"
    Ledger.init(root, ledger_id="dialects")
    with Ledger.open(root) as writer:
        writer.append(list(iter_events(SimulationConfig(events=300, seed=21))))
    yield Ledger.open(root)


def rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in table.to_pylist()]


def substantive(answer: list[tuple[Any, ...]]) -> bool:
    """Whether an answer has at least one row with a value that is not empty, null or zero."""
    return any(value not in (None, 0, "", []) for row in answer for value in row)


@dataclass(frozen=True)
class Ported:
    dialect: str
    sql: str  # the question in the foreign dialect
    duckdb: str  # the same question written natively for DuckDB
    shows: tuple[str, ...] = ()  # DuckDB text the transpiled SQL must contain
    hides: tuple[str, ...] = ()  # foreign syntax the transpiled SQL must no longer contain
    foreign: bool = True  # the foreign text does not run as DuckDB with the same answer


TOP_SCOPES = (
    "SELECT scope, count(*) AS n FROM (SELECT unnest(credential_scopes) AS scope FROM events) "
    "GROUP BY scope ORDER BY n DESC, scope LIMIT 5"
)

SPARK = [
    Ported(
        "spark",
        "SELECT `agent_id`, date_trunc('HOUR', `time`) AS h, count(*) AS n "
        "FROM `events` GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT agent_id, date_trunc('hour', time) AS h, count(*) AS n FROM events "
        "GROUP BY ALL ORDER BY ALL",
        shows=("DATE_TRUNC('HOUR', \"time\")",),
        hides=("`",),
    ),
    Ported(
        "spark",
        "SELECT scope, count(*) AS n FROM events "
        "LATERAL VIEW explode(credential_scopes) t AS scope "
        "GROUP BY scope ORDER BY n DESC, scope LIMIT 5",
        TOP_SCOPES,
        shows=("UNNEST(credential_scopes)", "LIMIT 5"),
        hides=("LATERAL VIEW", "EXPLODE"),
        foreign=False,  # sqlglot's DuckDB reader accepts LATERAL VIEW too
    ),
    Ported(
        "spark",
        "SELECT count_if(array_contains(credential_scopes, 'web:read')) AS n, "
        "sum(size(credential_scopes)) AS s FROM events WHERE credential_scopes IS NOT NULL",
        "SELECT count(*) FILTER (WHERE list_contains(credential_scopes, 'web:read')) AS n, "
        "sum(len(credential_scopes)) AS s FROM events WHERE credential_scopes IS NOT NULL",
        shows=("ARRAY_LENGTH(credential_scopes)",),
        hides=("SIZE(",),
    ),
    Ported(
        "spark",
        "SELECT get_json_object(attrs, '$.tests') AS tests, nvl(tool, '-') AS tool, "
        "if(outcome = 'success', 'ok', 'bad') AS o FROM events "
        "WHERE get_json_object(attrs, '$.tests') IS NOT NULL ORDER BY event_id",
        "SELECT json_extract_string(attrs, '$.tests') AS tests, coalesce(tool, '-') AS tool, "
        "CASE WHEN outcome = 'success' THEN 'ok' ELSE 'bad' END AS o FROM events "
        "WHERE attrs->>'$.tests' IS NOT NULL ORDER BY event_id",
        shows=("->>", "COALESCE(tool", "CASE WHEN"),
        hides=("GET_JSON_OBJECT", "NVL("),
    ),
    Ported(
        "spark",
        "SELECT date_format(`time`, 'yyyy-MM-dd HH:mm') AS minute, count(*) AS n FROM events "
        "GROUP BY 1 ORDER BY 1",
        "SELECT strftime(time, '%Y-%m-%d %H:%M') AS minute, count(*) AS n FROM events "
        "GROUP BY 1 ORDER BY 1",
        shows=("STRFTIME(", "'%Y-%m-%d %H:%M'"),
        hides=("DATE_FORMAT", "yyyy"),
    ),
    Ported(
        "spark",
        "SELECT agent_id, sort_array(collect_set(category)) AS cats FROM events "
        "WHERE agent_id RLIKE '^(code|devops)-' GROUP BY agent_id ORDER BY agent_id",
        "SELECT agent_id, list_sort(list(DISTINCT category)) AS cats FROM events "
        "WHERE regexp_matches(agent_id, '^(code|devops)-') GROUP BY agent_id ORDER BY agent_id",
        shows=("REGEXP_MATCHES(agent_id", "LIST_SORT("),
        hides=("RLIKE", "COLLECT_SET", "SORT_ARRAY"),
    ),
]

SNOWFLAKE = [
    Ported(
        "snowflake",
        "SELECT event_id, DATEADD(hour, 1, time) AS later, "
        "DATEDIFF(second, time, DATEADD(minute, 5, time)) AS d "
        "FROM events ORDER BY time, event_id LIMIT 10",
        "SELECT event_id, time + INTERVAL 1 HOUR AS later, "
        "date_diff('second', time, time + INTERVAL 5 MINUTE) AS d "
        "FROM events ORDER BY time, event_id LIMIT 10",
        shows=("INTERVAL 1 HOUR", "DATE_DIFF('SECOND'"),
        hides=("DATEADD", "DATEDIFF"),
    ),
    Ported(
        "snowflake",
        "SELECT TOP 5 agent_id, COUNT(*) AS n FROM events GROUP BY agent_id "
        "ORDER BY n DESC, agent_id",
        "SELECT agent_id, count(*) AS n FROM events GROUP BY agent_id "
        "ORDER BY n DESC, agent_id LIMIT 5",
        shows=("LIMIT 5",),
        hides=("TOP",),
    ),
    Ported(
        "snowflake",
        "SELECT IFF(agent_id ILIKE '%ORCHESTRATOR%', 'orchestrator', 'worker') AS kind, "
        "COUNT_IF(outcome = 'success') AS ok, COUNT(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        "SELECT CASE WHEN lower(agent_id) LIKE '%orchestrator%' THEN 'orchestrator' "
        "ELSE 'worker' END AS kind, count(*) FILTER (WHERE outcome = 'success') AS ok, "
        "count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        shows=("ILIKE", "CASE WHEN"),
        hides=("IFF(",),
    ),
    Ported(
        "snowflake",
        "SELECT agent_id, event_id FROM events QUALIFY ROW_NUMBER() OVER "
        "(PARTITION BY agent_id ORDER BY time DESC, event_id DESC) = 1 ORDER BY agent_id",
        "SELECT DISTINCT ON (agent_id) agent_id, event_id FROM events "
        "ORDER BY agent_id, time DESC, event_id DESC",
        shows=("QUALIFY ROW_NUMBER() OVER",),
        foreign=False,  # QUALIFY is DuckDB too
    ),
    Ported(
        "snowflake",
        "SELECT session_id, LISTAGG(DISTINCT category, ',') WITHIN GROUP (ORDER BY category) "
        "AS cats FROM events WHERE session_id IS NOT NULL GROUP BY session_id ORDER BY session_id",
        "SELECT session_id, array_to_string(list_sort(list(DISTINCT category)), ',') AS cats "
        "FROM events WHERE session_id IS NOT NULL GROUP BY session_id ORDER BY session_id",
        shows=("ORDER BY category)",),
        hides=("WITHIN GROUP",),
        foreign=False,  # sqlglot's DuckDB reader accepts WITHIN GROUP
    ),
    Ported(
        "snowflake",
        "SELECT SPLIT_PART(agent_id, '-', 1) AS role, NVL(tool, 'none') AS t, COUNT(*) AS n "
        "FROM events WHERE REGEXP_LIKE(agent_id, '[a-z-]+-[0-9]+') "
        "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        "SELECT split_part(agent_id, '-', 1) AS role, coalesce(tool, 'none') AS t, "
        "count(*) AS n FROM events WHERE regexp_full_match(agent_id, '[a-z-]+-[0-9]+') "
        "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        shows=("REGEXP_FULL_MATCH(agent_id",),
        hides=("REGEXP_LIKE", "NVL("),
        foreign=False,  # NVL, SPLIT_PART and REGEXP_LIKE are understood as DuckDB too
    ),
    Ported(
        "snowflake",
        "SELECT COUNT_IF(ARRAY_CONTAINS('web:read'::VARIANT, credential_scopes)) AS n, "
        "SUM(ARRAY_SIZE(credential_scopes)) AS s FROM events",
        "SELECT count(*) FILTER (WHERE list_contains(credential_scopes, 'web:read')) AS n, "
        "sum(len(credential_scopes)) AS s FROM events",
        shows=("ARRAY_LENGTH(credential_scopes)",),
        hides=("ARRAY_SIZE", "::"),
    ),
]

POSTGRES = [
    Ported(
        "postgres",
        "SELECT event_id::text AS e, bytes::float8 / 1024 AS kb FROM events "
        "WHERE agent_id ILIKE 'ANALYST%' AND bytes IS NOT NULL ORDER BY 1",
        "SELECT CAST(event_id AS VARCHAR) AS e, bytes / 1024 AS kb FROM events "
        "WHERE lower(agent_id) LIKE 'analyst%' AND bytes IS NOT NULL ORDER BY 1",
        shows=("CAST(bytes AS DOUBLE)", "CAST(event_id AS TEXT)", "ILIKE 'ANALYST%'"),
        hides=("::",),
        foreign=False,  # DuckDB reads :: and ILIKE as well
    ),
    Ported(
        "postgres",
        "SELECT DISTINCT ON (agent_id) agent_id, event_id FROM events "
        "ORDER BY agent_id, time DESC, event_id DESC",
        "SELECT agent_id, event_id FROM events QUALIFY row_number() OVER "
        "(PARTITION BY agent_id ORDER BY time DESC, event_id DESC) = 1 ORDER BY agent_id",
        shows=("DISTINCT ON (agent_id)",),
        foreign=False,
    ),
    Ported(
        "postgres",
        "SELECT date_trunc('hour', time) AS h, count(*) FILTER (WHERE outcome <> 'success') AS bad,"
        " count(*) AS n FROM events "
        "WHERE time >= (SELECT min(time) FROM events) + interval '10 minutes' "
        "GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('hour', time) AS h, sum(CASE WHEN outcome <> 'success' THEN 1 ELSE 0 "
        "END) AS bad, count(*) AS n FROM events "
        "WHERE time >= (SELECT min(time) + INTERVAL 10 MINUTE FROM events) GROUP BY 1 ORDER BY 1",
        shows=("DATE_TRUNC('HOUR', time)", "FILTER(WHERE"),
        foreign=False,
    ),
    Ported(
        "postgres",
        "SELECT count(*) AS n FROM events "
        "WHERE 'web:read' = ANY(credential_scopes) AND agent_id ~ '^[a-z]+(-agent)?-[0-9]+$'",
        "SELECT count(*) AS n FROM events WHERE list_contains(credential_scopes, 'web:read') "
        "AND regexp_matches(agent_id, '^[a-z]+(-agent)?-[0-9]+$')",
        shows=("REGEXP_MATCHES(agent_id",),
        hides=(" ~ ",),
        foreign=False,  # DuckDB has = ANY and ~ as well
    ),
    Ported(
        "postgres",
        "SELECT agent_id, EXTRACT(EPOCH FROM max(time) - min(time))::bigint AS secs "
        "FROM events GROUP BY 1 ORDER BY 1",
        "SELECT agent_id, CAST(epoch(max(time) - min(time)) AS BIGINT) AS secs "
        "FROM events GROUP BY 1 ORDER BY 1",
        shows=("EXTRACT(EPOCH FROM",),
        hides=("::",),
        foreign=False,
    ),
    Ported(
        "postgres",
        "SELECT session_id, string_agg(DISTINCT category, ',' ORDER BY category) AS cats "
        "FROM events WHERE session_id IS NOT NULL GROUP BY 1 ORDER BY 1",
        "SELECT session_id, array_to_string(list_sort(list(DISTINCT category)), ',') AS cats "
        "FROM events WHERE session_id IS NOT NULL GROUP BY 1 ORDER BY 1",
        shows=("LISTAGG(DISTINCT category",),
        foreign=False,
    ),
    Ported(
        "postgres",
        "SELECT attrs->>'gen_ai.request.model' AS model, count(*) AS n FROM events "
        "WHERE category = 'llm' GROUP BY 1 ORDER BY 2 DESC, 1",
        "SELECT json_extract_string(attrs, '$.\"gen_ai.request.model\"') AS model, "
        "count(*) AS n FROM events WHERE category = 'llm' GROUP BY 1 ORDER BY 2 DESC, 1",
        shows=("'$.\"gen_ai.request.model\"'",),
    ),
]

BIGQUERY = [
    Ported(
        "bigquery",
        "SELECT TIMESTAMP_TRUNC(time, HOUR) AS h, COUNTIF(outcome = 'success') AS ok, "
        "COUNT(*) AS n FROM `events` GROUP BY h ORDER BY h",
        "SELECT date_trunc('hour', time) AS h, count(*) FILTER (WHERE outcome = 'success') AS ok, "
        "count(*) AS n FROM events GROUP BY h ORDER BY h",
        shows=("DATE_TRUNC('HOUR', time)", "COUNT_IF(", '"events"'),
        hides=("`", "TIMESTAMP_TRUNC", "COUNTIF("),
    ),
    Ported(
        "bigquery",
        "SELECT scope, COUNT(*) AS n FROM `events`, UNNEST(credential_scopes) AS scope "
        "GROUP BY scope ORDER BY n DESC, scope LIMIT 5",
        TOP_SCOPES,
        shows=("CROSS JOIN UNNEST(credential_scopes)",),
        hides=("`",),
        foreign=False,  # the comma join with UNNEST reads the same in DuckDB
    ),
    Ported(
        "bigquery",
        "SELECT session_id, FORMAT_TIMESTAMP('%Y-%m-%d %H', MIN(time)) AS first_hour, "
        "TIMESTAMP_DIFF(MAX(time), MIN(time), SECOND) AS secs FROM events "
        "WHERE session_id IS NOT NULL GROUP BY session_id ORDER BY session_id",
        "SELECT session_id, strftime(min(time), '%Y-%m-%d %H') AS first_hour, "
        "date_diff('second', min(time), max(time)) AS secs FROM events "
        "WHERE session_id IS NOT NULL GROUP BY session_id ORDER BY session_id",
        shows=("STRFTIME(", "DATE_DIFF('SECOND'"),
        hides=("FORMAT_TIMESTAMP", "TIMESTAMP_DIFF"),
    ),
    Ported(
        "bigquery",
        "SELECT EXTRACT(HOUR FROM time) AS h, "
        "IF(JSON_VALUE(attrs, '$.ttl_s') IS NULL, 'no ttl', 'ttl') AS k, COUNT(*) AS n "
        "FROM events GROUP BY h, k ORDER BY h, k",
        "SELECT hour(time) AS h, CASE WHEN attrs->>'$.ttl_s' IS NULL THEN 'no ttl' ELSE 'ttl' "
        "END AS k, count(*) AS n FROM events GROUP BY ALL ORDER BY ALL",
        shows=("CASE WHEN",),
        hides=("IF(",),
        foreign=False,  # IF and JSON_VALUE exist in DuckDB
    ),
    Ported(
        "bigquery",
        "SELECT * EXCEPT (attrs, credential_scopes, intent_scopes, hash, prev_hash), "
        "SAFE_CAST(bytes AS STRING) AS b FROM `events` ORDER BY event_id LIMIT 20",
        "SELECT * EXCLUDE (attrs, credential_scopes, intent_scopes, hash, prev_hash), "
        "TRY_CAST(bytes AS VARCHAR) AS b FROM events ORDER BY event_id LIMIT 20",
        shows=("EXCLUDE (", "TRY_CAST(bytes AS TEXT)", "LIMIT 20"),
        hides=("EXCEPT", "SAFE_CAST", "`"),
    ),
    Ported(
        "bigquery",
        "SELECT agent_id, LOGICAL_OR(outcome != 'success') AS any_bad, "
        "STRING_AGG(DISTINCT category, ',' ORDER BY category) AS cats "
        "FROM events GROUP BY agent_id ORDER BY agent_id",
        "SELECT agent_id, bool_or(outcome <> 'success') AS any_bad, "
        "array_to_string(list_sort(list(DISTINCT category)), ',') AS cats "
        "FROM events GROUP BY agent_id ORDER BY agent_id",
        shows=("BOOL_OR(",),
        hides=("LOGICAL_OR",),
        foreign=False,  # sqlglot's DuckDB reader maps LOGICAL_OR too
    ),
]

TOP_IN_TSQL = Ported(
    "tsql",
    "SELECT TOP 3 agent_id, COUNT(*) AS n FROM events GROUP BY agent_id ORDER BY n DESC, agent_id",
    "SELECT agent_id, count(*) AS n FROM events GROUP BY agent_id "
    "ORDER BY n DESC, agent_id LIMIT 3",
    shows=("LIMIT 3",),
    hides=("TOP",),
)

CASES = [*SPARK, *SNOWFLAKE, *POSTGRES, *BIGQUERY, TOP_IN_TSQL]


def test_every_dialect_has_at_least_five_cases() -> None:
    for dialect in ("spark", "snowflake", "postgres", "bigquery"):
        assert sum(case.dialect == dialect for case in CASES) >= 5


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=f"{c.dialect}-{i}") for i, c in enumerate(CASES)]
)
def test_ported_query_gives_the_duckdb_answer(store: Ledger, case: Ported) -> None:
    result = run_sql(store, case.sql, dialect=case.dialect)
    native = run_sql(store, case.duckdb)
    answer = rows(result.table)
    assert substantive(answer), "an empty or all-zero answer proves nothing"
    assert answer == rows(native.table)
    assert result.table.column_names == native.table.column_names
    assert not result.truncated
    # The result shows the DuckDB text that ran: the dialect's syntax translated away.
    for text in case.shows:
        assert text in result.sql, (text, result.sql)
    for text in case.hides:
        assert text.lower() not in result.sql.lower(), (text, result.sql)
    assert result.sql == transpile(case.sql, case.dialect)
    # ... and that text is DuckDB SQL giving the same answer on its own.
    assert rows(run_sql(store, result.sql).table) == answer


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=f"{c.dialect}-{i}") for i, c in enumerate(CASES) if c.foreign],
)
def test_foreign_text_needs_the_dialect(store: Ledger, case: Ported) -> None:
    """Read as DuckDB, the foreign text fails or answers differently: the dialect did the work."""
    transpiled = rows(run_sql(store, case.sql, dialect=case.dialect).table)
    try:
        as_duckdb = rows(run_sql(store, case.sql).table)
    except QueryError:
        return
    assert as_duckdb != transpiled


def test_double_quotes_follow_the_dialect(store: Ledger) -> None:
    """In BigQuery and Spark "x" is a string; in DuckDB, Postgres and Snowflake an identifier."""
    query = 'SELECT "agent_id" AS a FROM events ORDER BY event_id LIMIT 3'
    agents = rows(run_sql(store, "SELECT agent_id FROM events ORDER BY event_id LIMIT 3").table)
    for dialect in ("bigquery", "spark"):
        result = run_sql(store, query, dialect=dialect)
        assert rows(result.table) == [("agent_id",)] * 3
        assert "'agent_id'" in result.sql
    for dialect in ("duckdb", "postgres", "snowflake"):
        assert rows(run_sql(store, query, dialect=dialect).table) == agents


def test_default_dialect_is_duckdb(store: Ledger) -> None:
    query = "SELECT agent_id, count(*) AS n FROM events GROUP BY ALL ORDER BY ALL"
    default = run_sql(store, query)
    explicit = run_sql(store, query, dialect="duckdb")
    assert default.sql == explicit.sql
    assert rows(default.table) == rows(explicit.table)
    assert store.sql(query, dialect="duckdb") == default.table


def test_ledger_sql_takes_a_dialect(store: Ledger) -> None:
    spark = store.sql("SELECT count(*) AS n FROM `events` WHERE `agent_id` RLIKE '^code-'", "spark")
    native = store.sql("SELECT count(*) AS n FROM events WHERE agent_id LIKE 'code-%'")
    assert spark == native
    assert native.column("n")[0].as_py() > 0


@pytest.mark.parametrize("dialect", ["klingon", "postgresql", "Spark"])
def test_unknown_dialect_is_named_in_the_error(store: Ledger, dialect: str) -> None:
    with pytest.raises((QueryError, ValueError), match=f"[Uu]nknown dialect '{dialect}'"):
        run_sql(store, "SELECT 1 AS one", dialect=dialect)


def test_unknown_dialect_is_a_query_error(store: Ledger) -> None:
    with pytest.raises(QueryError, match="klingon"):
        run_sql(store, "SELECT 1 AS one", dialect="klingon")


# -- transpilations that change the meaning -------------------------------------------------------


def test_postgres_integer_division(store: Ledger) -> None:
    result = run_sql(
        store,
        "SELECT 7 / 2 AS x, count(*) / count(DISTINCT agent_id) AS per FROM events",
        dialect="postgres",
    )
    native = run_sql(
        store, "SELECT 7 // 2 AS x, count(*) // count(DISTINCT agent_id) AS per FROM events"
    )
    assert rows(result.table) == rows(native.table)


def test_snowflake_variant_path_cast_to_string(store: Ledger) -> None:
    result = run_sql(
        store,
        'SELECT attrs:"gen_ai.request.model"::string AS model, COUNT(*) AS n FROM events '
        "WHERE category = 'llm' GROUP BY 1 ORDER BY 2 DESC, 1",
        dialect="snowflake",
    )
    native = run_sql(
        store,
        "SELECT attrs->>'$.\"gen_ai.request.model\"' AS model, count(*) AS n FROM events "
        "WHERE category = 'llm' GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    assert rows(result.table) == rows(native.table)


def test_untranslatable_construct_is_an_error_not_a_different_query(store: Ledger) -> None:
    query = "SELECT TO_CHAR(time, 'YYYY-MM-DD HH24') AS h, COUNT(*) AS n FROM events GROUP BY 1"
    try:
        result = run_sql(store, query, dialect="snowflake")
    except QueryError:
        return
    native = run_sql(
        store, "SELECT strftime(time, '%Y-%m-%d %H') AS h, count(*) AS n FROM events GROUP BY 1"
    )
    assert sorted(rows(result.table)) == sorted(rows(native.table))
