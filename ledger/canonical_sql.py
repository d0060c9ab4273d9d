"""The canonical bytes of stored rows, rebuilt in SQL from the typed columns.

Verification hashes what a query reads: this expression turns a segment's columns back into the
RFC 8785 text the writer hashed, so a change to any stored column changes the recomputed hash.
It is built as a sqlglot expression and run by DuckDB (vectorised).
"""

from __future__ import annotations

import duckdb
import sqlglot.expressions as exp

from .schema import CANONICAL_FIELDS, Kind

__all__ = ["MACROS", "canonical_sql", "install_macros", "json_string_sql"]

# RFC 8785 escapes: the short forms, and \u00xx in lower case for the other control characters.
_SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}


def _str(value: str) -> exp.Literal:
    return exp.Literal.string(value)


def _concat(*parts: exp.Expr) -> exp.Expr:
    """``a || b || ...``: NULL if any part is NULL, which drops an absent member."""
    result = parts[0]
    for part in parts[1:]:
        result = exp.DPipe(this=result, expression=part, safe=False)
    return result


def _escaped_by_hand(value: exp.Expr) -> exp.Expr:
    escaped: exp.Expr = exp.func("replace", value, _str("\\"), _str("\\\\"))
    escaped = exp.func("replace", escaped, _str('"'), _str('\\"'))
    for code in range(0x20):
        replacement = _SHORT_ESCAPES.get(code, f"\\u{code:04x}")
        escaped = exp.func(
            "replace", escaped, exp.func("chr", exp.Literal.number(code)), _str(replacement)
        )
    return _concat(_str('"'), escaped, _str('"'))


def json_string_sql(value: exp.Expr) -> exp.Expr:
    """A JSON string literal of ``value`` exactly as RFC 8785 writes it."""
    # DuckDB's to_json agrees with RFC 8785 except that it writes \u001F in upper case; a string
    # whose to_json holds no \u00 escape is therefore already right, and the rare rest (control
    # characters, or the text "\u00" itself) is escaped by hand.
    as_json = exp.func("to_json", value)
    return exp.Case(
        ifs=[
            exp.If(this=exp.func("contains", as_json, _str("\\u00")), true=_escaped_by_hand(value))
        ],
        default=as_json,
    )


_JSON_STRING = "chainsight_json_string"


def _json_string_macro() -> exp.Create:
    parameter = exp.to_identifier("value")
    return exp.Create(
        this=exp.UserDefinedFunction(
            this=exp.to_table(_JSON_STRING), expressions=[parameter], wrapped=True
        ),
        kind="MACRO",
        expression=json_string_sql(exp.column(parameter)),
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )


MACROS: tuple[exp.Create, ...] = (_json_string_macro(),)
"""Temporary macros the canonical expression calls; ``install_macros`` creates them."""


def install_macros(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the macros ``canonical_sql`` relies on in a DuckDB connection."""
    for macro in MACROS:
        connection.execute(macro.sql("duckdb"))


def _json_string(value: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this=_JSON_STRING, expressions=[value])


def _member_value(kind: Kind, column: exp.Column) -> exp.Expr:
    if kind is Kind.TIME:
        micros = exp.func("make_timestamp", exp.func("epoch_us", column))
        text = exp.func("strftime", micros, _str("%Y-%m-%dT%H:%M:%S.%fZ"))
        return _concat(_str('"'), text, _str('"'))
    if kind is Kind.INT:
        return exp.cast(column, exp.DataType.build("VARCHAR"))
    if kind is Kind.BOOL:
        return exp.func("to_json", column)
    if kind is Kind.ATTRS:
        return column
    if kind is Kind.TEXT_LIST:
        item = exp.to_identifier("item")
        lambda_ = exp.Lambda(this=_json_string(exp.column(item)), expressions=[item])
        items = exp.func("array_to_string", exp.func("list_transform", column, lambda_), _str(","))
        return _concat(_str("["), items, _str("]"))
    return _json_string(column)


def canonical_sql(table: str | None = None) -> exp.Expr:
    """Each row's canonical JSON as a BLOB prefixed by 0x00: the input of its leaf hash.

    Needs ``install_macros`` on the connection.
    """
    members = [
        _concat(_str(f'"{field.name}":'), _member_value(field.kind, exp.column(field.name, table)))
        for field in CANONICAL_FIELDS
    ]
    # Anonymous: sqlglot would otherwise rewrite concat_ws to propagate NULLs, and DuckDB's
    # skipping of NULL members is exactly how an absent field drops out.
    joined = exp.Anonymous(this="concat_ws", expressions=[_str(","), *members])
    text = _concat(_str("{"), joined, _str("}"))
    return exp.DPipe(
        this=exp.cast(_str("\\x00"), exp.DataType.build("BLOB")),
        expression=exp.Anonymous(this="encode", expressions=[text]),
        safe=False,
    )
