"""The read-only guard: a statement passes only if its sqlglot AST is one read-only query.

Judged on the syntax tree, never on the text: exactly one statement, a SELECT / WITH / set
operation at the root, no data-changing or session-changing node anywhere inside (CTEs and
subqueries included), table functions only from an allow-list, and no file paths.
"""

from __future__ import annotations

from collections.abc import Collection

import sqlglot
import sqlglot.errors
import sqlglot.expressions as exp

from .errors import QueryError, QueryRefusedError, QuerySyntaxError

__all__ = ["ALLOWED_TABLE_FUNCTIONS", "DEFAULT_TABLES", "DENIED_FUNCTIONS", "check_read_only"]

DEFAULT_TABLES = ("events", "events_raw", "writers", "checkpoints")

ALLOWED_TABLE_FUNCTIONS = frozenset(
    {"range", "generate_series", "unnest", "explode", "explode_outer", "posexplode", "flatten"}
)
_FILE_SUFFIXES = frozenset(
    {"csv", "tsv", "json", "jsonl", "ndjson", "parquet", "txt", "gz", "zst", "arrow", "db"}
)
DENIED_FUNCTIONS = frozenset(
    {
        "getenv",
        "current_setting",
        "read_text",
        "read_blob",
        "read_csv",
        "read_csv_auto",
        "read_json",
        "read_json_auto",
        "read_ndjson",
        "read_ndjson_auto",
        "read_parquet",
        "parquet_scan",
        "parquet_metadata",
        "parquet_schema",
        "glob",
        "sniff_csv",
        "query_table",
        "query",
        "duckdb_secrets",
        "duckdb_settings",
        "duckdb_extensions",
        "install",
        "load",
        "read_json_objects",
        "read_json_objects_auto",
        "read_ndjson_objects",
        "pg_settings",
        "which_secret",
    }
)

_WRITE_NODES: tuple[type[exp.Expr], ...] = tuple(
    node
    for node in (
        getattr(exp, name, None)
        for name in (
            "Insert",
            "Update",
            "Delete",
            "Merge",
            "Create",
            "Drop",
            "Alter",
            "AlterTable",
            "TruncateTable",
            "Copy",
            "Command",
            "Set",
            "Pragma",
            "Use",
            "Attach",
            "Detach",
            "Install",
            "Load",
            "Export",
            "Summarize",
            "Describe",
            "Into",
            "Transaction",
            "Commit",
            "Rollback",
            "LoadData",
            "Grant",
            "Revoke",
            "Analyze",
            "Cache",
            "Uncache",
            "Refresh",
        )
    )
    if isinstance(node, type)
)


def check_read_only(
    sql: str, dialect: str = "duckdb", tables: Collection[str] = DEFAULT_TABLES
) -> exp.Expr:
    """Parse ``sql`` and return its one read-only query, or raise naming what was refused.

    Only the catalog's ``tables`` (and the query's own CTEs) may be read, unqualified.
    """
    try:
        reader = sqlglot.Dialect.get_or_raise(dialect)
    except ValueError as err:
        raise QueryError(f"unknown SQL dialect: {err}") from None
    try:
        statements = sqlglot.parse(sql, read=reader)
    except sqlglot.errors.ParseError as err:
        raise _syntax_error(sql, err) from None
    except sqlglot.errors.SqlglotError as err:
        raise QuerySyntaxError(str(err)) from None
    # A comment after the last ';' parses as an empty statement of its own.
    present = [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]
    if len(present) != 1:
        raise QueryRefusedError(f"exactly one statement is allowed, found {len(present)}")
    statement = present[0]
    if not isinstance(statement, exp.Query):
        raise QueryRefusedError(
            f"only read-only queries are allowed, not {_describe(statement, sql)}"
        )
    readable = {t.lower() for t in tables} | {
        cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)
    }
    for node in statement.walk():
        _refuse_node(node, readable, sql)
    return statement


def _refuse_node(node: exp.Expr, readable: set[str], sql: str) -> None:
    if isinstance(node, _WRITE_NODES):
        raise QueryRefusedError(f"{_describe(node, sql)} is not allowed in a read-only query")
    if isinstance(node, exp.Func):
        name = _function_name(node)
        if name in DENIED_FUNCTIONS:
            raise QueryRefusedError(f"function {name}() is not allowed")
    if isinstance(node, exp.Table):
        _refuse_table(node, readable)
    if isinstance(node, exp.Lateral) and isinstance(node.this, exp.Func):
        _refuse_table_function(node.this)


def _refuse_table(table: exp.Table, readable: set[str]) -> None:
    source = table.this
    if isinstance(source, exp.Literal) and source.is_string:
        raise QueryRefusedError(f"reading files is not allowed ({source.this!r})")
    if isinstance(source, exp.Func):
        _refuse_table_function(source)
        return
    qualified = table.args.get("catalog") is not None or table.args.get("db") is not None
    name = table.name
    if qualified or name.lower() not in readable:
        shown = ".".join(part.name for part in table.parts)
        # DuckDB reads `data.csv` or "/path/x".json as files (a replacement scan).
        looks_like_file = "/" in shown or "." in name or name.lower() in _FILE_SUFFIXES
        if looks_like_file:
            raise QueryRefusedError(f"reading files is not allowed ({shown!r})")
        if table.args.get("catalog") is not None:
            raise QueryRefusedError(f"other databases are not reachable from a query ({shown!r})")
        raise QueryRefusedError(
            f"table {shown!r} cannot be queried; the views are: {', '.join(sorted(readable))}"
        )


def _refuse_table_function(function: exp.Func) -> None:
    name = _function_name(function)
    if name not in ALLOWED_TABLE_FUNCTIONS:
        raise QueryRefusedError(f"table function {name}() is not allowed")


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()  # unquoted: "current_setting"(...) names the same function
    return node.sql_name().lower()


def _describe(node: exp.Expr, sql: str) -> str:
    if isinstance(node, exp.Command):
        return f"{str(node.this).upper()} statement"
    if isinstance(node, exp.Column | exp.Identifier):  # a bare keyword sqlglot does not know
        words = sql.split()
        return f"{words[0].upper()} statement" if words else "an empty statement"
    return f"{type(node).__name__.upper()} statement"


def _syntax_error(sql: str, err: sqlglot.errors.ParseError) -> QuerySyntaxError:
    detail = err.errors[0] if err.errors else {}
    line = int(detail.get("line") or 0)
    column = int(detail.get("col") or 0)
    message = str(detail.get("description") or err)
    caret = ""
    lines = sql.splitlines()
    if 0 < line <= len(lines):
        caret = f"\n  {lines[line - 1]}\n  {' ' * max(column - 1, 0)}^"
    where = f" at line {line}, column {column}" if line else ""
    return QuerySyntaxError(f"syntax error{where}: {message}{caret}", line, column, caret)
