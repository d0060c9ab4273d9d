"""The read-only guard: a statement passes only if its sqlglot AST is one read-only query.

Judged on the syntax tree, never on the text: exactly one statement, a SELECT / WITH / set
operation at the root, no data-changing or session-changing node anywhere inside (CTEs and
subqueries included), table functions only from an allow-list, and no file paths.
"""

from __future__ import annotations

import sqlglot
import sqlglot.errors
import sqlglot.expressions as exp

from .errors import QueryRefusedError, QuerySyntaxError

__all__ = ["ALLOWED_TABLE_FUNCTIONS", "DENIED_FUNCTIONS", "check_read_only"]

ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
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


def check_read_only(sql: str, dialect: str = "duckdb") -> exp.Expr:
    """Parse ``sql`` and return its one read-only query, or raise naming what was refused."""
    try:
        statements = sqlglot.parse(sql, read=dialect)
    except sqlglot.errors.ParseError as err:
        raise _syntax_error(sql, err) from None
    except sqlglot.errors.SqlglotError as err:
        raise QuerySyntaxError(str(err)) from None
    present = [s for s in statements if s is not None]
    if len(present) != 1:
        raise QueryRefusedError(f"exactly one statement is allowed, found {len(present)}")
    statement = present[0]
    if not isinstance(statement, exp.Query):
        raise QueryRefusedError(f"only read-only queries are allowed, not {_describe(statement)}")
    for node in statement.walk():
        _refuse_node(node)
    return statement


def _refuse_node(node: exp.Expr) -> None:
    if isinstance(node, _WRITE_NODES):
        raise QueryRefusedError(f"{_describe(node)} is not allowed in a read-only query")
    if isinstance(node, exp.Func):
        name = _function_name(node)
        if name in DENIED_FUNCTIONS:
            raise QueryRefusedError(f"function {name}() is not allowed")
    if isinstance(node, exp.Table):
        _refuse_table(node)


def _refuse_table(table: exp.Table) -> None:
    source = table.this
    if isinstance(source, exp.Literal) and source.is_string:
        raise QueryRefusedError(f"reading files is not allowed ({source.this!r})")
    if isinstance(source, exp.Func):
        name = _function_name(source)
        if name not in ALLOWED_TABLE_FUNCTIONS:
            raise QueryRefusedError(f"table function {name}() is not allowed")
    if isinstance(source, exp.Identifier) and ("/" in source.name or "." in source.name):
        raise QueryRefusedError(f"reading files is not allowed ({source.name!r})")
    if table.args.get("catalog") is not None:
        raise QueryRefusedError("other databases are not reachable from a query")


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return node.sql_name().lower()


def _describe(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return f"{str(node.this).upper()} statement"
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
