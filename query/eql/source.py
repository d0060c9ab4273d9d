"""What an EQL query runs over: a relation, its column types, and how its events are ordered."""

from __future__ import annotations

import difflib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import Enum

import sqlglot.expressions as exp

from .ast import Field
from .errors import EqlError

__all__ = ["EventSource", "Kind", "Resolved", "kind_of"]


class Kind(Enum):
    """The type of a value, as far as EQL needs to know it."""

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "number"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    JSON = "JSON"
    LIST = "list"
    STRUCT = "object"
    NULL = "null"
    OTHER = "value"

    @property
    def numeric(self) -> bool:
        """Whether values of this kind are numbers."""
        return self in (Kind.INTEGER, Kind.FLOAT)


def kind_of(type_text: str) -> Kind:
    """The kind of a DuckDB column type."""
    upper = type_text.upper()
    if upper.endswith("[]") or upper.startswith(("LIST", "ARRAY")):
        return Kind.LIST
    if upper.startswith(("STRUCT", "MAP", "UNION")):
        return Kind.STRUCT
    if upper == "JSON":
        return Kind.JSON
    if upper in ("VARCHAR", "TEXT", "STRING", "UUID") or upper.startswith("VARCHAR"):
        return Kind.STRING
    if upper in ("BOOLEAN", "BOOL"):
        return Kind.BOOLEAN
    if upper.startswith("TIMESTAMP") or upper in ("DATE", "TIME"):
        return Kind.TIMESTAMP
    if upper in ("FLOAT", "DOUBLE", "REAL") or upper.startswith("DECIMAL"):
        return Kind.FLOAT
    if upper in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT") or upper.startswith("U"):
        return Kind.INTEGER
    if upper in ('"NULL"', "NULL"):
        return Kind.NULL
    return Kind.OTHER


@dataclass(frozen=True)
class Resolved:
    """A field as SQL, with its kind."""

    sql: exp.Expr
    kind: Kind


@dataclass(frozen=True)
class EventSource:
    """A relation of events: its name, columns (name to DuckDB type) and ordering columns.

    ``time_column`` is a TIMESTAMP column; events are ordered by it, then ``tiebreaker``, then
    ``order_columns`` (which make the order total); ``id_column`` identifies an event in results.
    """

    table: str
    columns: Mapping[str, str]
    category_field: str | None
    time_column: str
    tiebreaker: str | None
    order_columns: tuple[str, ...]
    id_column: str
    hidden: frozenset[str] = frozenset()

    def column(self, name: str) -> exp.Column:
        """A reference to one of the relation's columns."""
        return exp.column(name, quoted=True)

    def order_keys(self) -> list[exp.Expr]:
        """The columns of the total event order, first to last."""
        names = [self.time_column]
        if self.tiebreaker is not None:
            names.append(self.tiebreaker)
        names.extend(self.order_columns)
        return [self.column(n) for n in names]

    def locator(self) -> exp.Expr:
        """The expression that finds one stored row again: the implicit order columns."""
        if len(self.order_columns) == 1:
            return self.column(self.order_columns[0])
        fields = [
            exp.PropertyEQ(this=exp.to_identifier(name), expression=self.column(name))
            for name in self.order_columns
        ]
        return exp.Struct(expressions=fields)

    def locator_key(self, value: object) -> Hashable:
        """A locator value as returned by DuckDB, as a dictionary key."""
        if isinstance(value, dict):
            return tuple(value[name] for name in self.order_columns)
        assert isinstance(value, Hashable)
        return value

    def visible_columns(self) -> list[str]:
        """The columns a result shows."""
        return [c for c in self.columns if c not in self.hidden]

    def resolve(self, field: Field) -> Resolved:
        """A field as SQL: a column, a path into a JSON or struct column, or null if optional."""
        whole = field.name
        if whole in self.columns and whole not in self.hidden:
            return Resolved(self.column(whole), kind_of(self.columns[whole]))
        head, rest = field.path[0], field.path[1:]
        if rest and head in self.columns and head not in self.hidden:
            kind = kind_of(self.columns[head])
            if kind is Kind.JSON or (kind is Kind.STRING and head == "attrs"):
                path = [exp.JSONPathRoot()] + [exp.JSONPathKey(this=p) for p in rest]
                extract = exp.JSONExtract(
                    this=self.column(head), expression=exp.JSONPath(expressions=path)
                )
                return Resolved(extract, Kind.JSON)
            if kind is Kind.STRUCT:
                return self._struct_path(head, rest, field.optional)
        if field.optional:
            return Resolved(exp.null(), Kind.NULL)
        raise EqlError(self._unknown(whole))

    def _struct_path(self, head: str, rest: tuple[str, ...], optional: bool) -> Resolved:
        data_type = exp.DataType.build(self.columns[head], dialect="duckdb")
        sql: exp.Expr = self.column(head)
        for part in rest:
            children = {c.name: c for c in data_type.expressions if isinstance(c, exp.ColumnDef)}
            child = children.get(part)
            if child is None or not isinstance(child.args.get("kind"), exp.DataType):
                if optional:
                    return Resolved(exp.null(), Kind.NULL)
                raise EqlError(self._unknown(".".join((head, *rest))))
            sql = exp.Dot(this=sql, expression=exp.to_identifier(part, quoted=True))
            data_type = child.args["kind"]
        return Resolved(sql, kind_of(data_type.sql("duckdb")))

    def _unknown(self, name: str) -> str:
        known = self.visible_columns()
        near = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        attrs = " (extra fields live under attrs.NAME)" if "attrs" in self.columns else ""
        return f"unknown field {name!r}{hint}{attrs}; write ?{name} if it may be absent"
