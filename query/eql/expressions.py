"""Compile EQL conditions and values to typed sqlglot expressions with bound parameters."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlglot.expressions as exp

from .ast import (
    Arithmetic,
    Boolean,
    Comparison,
    EventQuery,
    Expr,
    Field,
    FunctionCall,
    In,
    Literal,
    Match,
    Negate,
    Not,
)
from .errors import EqlError
from .source import EventSource, Kind, Resolved

__all__ = ["Compiler", "Parameters", "Typed"]

_SQL_TYPES = {
    Kind.STRING: "VARCHAR",
    Kind.INTEGER: "BIGINT",
    Kind.FLOAT: "DOUBLE",
    Kind.BOOLEAN: "BOOLEAN",
    Kind.TIMESTAMP: "TIMESTAMP",
}


@dataclass
class Parameters:
    """Values bound to ``$n`` placeholders, in placeholder order."""

    values: list[object] = field(default_factory=list)

    def bind(self, value: object, kind: Kind) -> exp.Expr:
        """A typed placeholder for ``value``."""
        if value is None:
            return exp.null()
        self.values.append(value)
        placeholder = exp.Parameter(this=exp.Literal.number(len(self.values)))
        return exp.cast(placeholder, _SQL_TYPES.get(kind, "VARCHAR"))

    def inline(self, expression: exp.Expr) -> exp.Expr:
        """``expression`` with every placeholder replaced by its value, for display."""

        def substitute(node: exp.Expr) -> exp.Expr:
            if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal):
                return exp.convert(self.values[int(node.this.this) - 1])
            return node

        return expression.transform(substitute)


@dataclass(frozen=True)
class Typed:
    """A compiled expression and its kind."""

    sql: exp.Expr
    kind: Kind


def _literal_kind(value: object) -> Kind:
    if value is None:
        return Kind.NULL
    if isinstance(value, bool):
        return Kind.BOOLEAN
    if isinstance(value, int):
        return Kind.INTEGER
    if isinstance(value, float):
        return Kind.FLOAT
    return Kind.STRING


def _like_pattern(text: str, single: str | None = "?") -> str:
    """An EQL wildcard pattern as a LIKE pattern with ``\\`` escapes."""
    out = []
    for char in text:
        if char in "%_\\":
            out.append("\\" + char)
        elif char == "*":
            out.append("%")
        elif single is not None and char == single:
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


def _case(condition: exp.Expr, then: exp.Expr, otherwise: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=condition, true=then)], default=otherwise)


class Compiler:
    """Compiles expressions against one event source, binding literals as parameters."""

    def __init__(self, source: EventSource, parameters: Parameters) -> None:
        self.source = source
        self.parameters = parameters

    def condition(self, node: Expr) -> exp.Expr:
        """A WHERE condition (null counts as false)."""
        typed = self.compile(node)
        if typed.kind not in (Kind.BOOLEAN, Kind.NULL, Kind.JSON):
            raise EqlError(
                f"the condition {node.render()!r} is a {typed.kind.value}, not a boolean"
            )
        if typed.kind is Kind.JSON:
            return exp.cast(exp.cast(typed.sql, "VARCHAR"), "BOOLEAN")
        return typed.sql

    def event_query(self, query: EventQuery) -> exp.Expr:
        """The condition of ``category where condition`` (``any`` tests no category)."""
        condition = self.condition(query.condition)
        if query.category is None:
            return condition
        if self.source.category_field is None:
            raise EqlError("this input has no category field: use 'any where ...'")
        column = self.source.column(self.source.category_field)
        category = self.parameters.bind(query.category, Kind.STRING)
        return exp.and_(exp.EQ(this=column, expression=category), condition)

    def compile(self, node: Expr) -> Typed:
        """A typed SQL expression for ``node``."""
        if isinstance(node, Literal):
            kind = _literal_kind(node.value)
            return Typed(self.parameters.bind(node.value, kind), kind)
        if isinstance(node, Field):
            resolved: Resolved = self.source.resolve(node)
            return Typed(resolved.sql, resolved.kind)
        if isinstance(node, Boolean):
            left, right = self.condition(node.left), self.condition(node.right)
            joined = exp.and_(left, right) if node.op == "and" else exp.or_(left, right)
            return Typed(joined, Kind.BOOLEAN)
        if isinstance(node, Not):
            return Typed(exp.not_(self.condition(node.this)), Kind.BOOLEAN)
        if isinstance(node, Comparison):
            return self._comparison(node)
        if isinstance(node, In):
            return self._in(node)
        if isinstance(node, Match):
            return self._match(node)
        if isinstance(node, Arithmetic):
            return self._arithmetic(
                node.op, self.compile(node.left), self.compile(node.right), node
            )
        if isinstance(node, Negate):
            operand = self._numeric(self.compile(node.this), node)
            return Typed(exp.Neg(this=operand.sql), operand.kind)
        return self._function(node)

    # -- typing helpers ------------------------------------------------------------------

    def _as(self, typed: Typed, kind: Kind) -> exp.Expr:
        """``typed`` read as ``kind``: JSON values are cast to it, others must already match."""
        if typed.kind is Kind.JSON:
            text = self.json_text(typed.sql)
            if kind is Kind.STRING:
                return text
            return exp.TryCast(
                this=text, to=exp.DataType.build(_SQL_TYPES.get(kind, "VARCHAR")), safe=True
            )
        return typed.sql

    @staticmethod
    def json_text(sql: exp.Expr) -> exp.Expr:
        """A JSON value as text: the string itself for a string, else its JSON text."""
        if isinstance(sql, exp.JSONExtract):
            return exp.JSONExtractScalar(this=sql.this, expression=sql.expression)
        return exp.cast(sql, "VARCHAR")

    def _string(self, typed: Typed, node: Expr) -> exp.Expr:
        if typed.kind in (Kind.STRING, Kind.NULL):
            return typed.sql
        if typed.kind is Kind.JSON:
            return self.json_text(typed.sql)
        raise EqlError(f"{node.render()!r} needs a string, but is a {typed.kind.value}")

    def _numeric(self, typed: Typed, node: Expr) -> Typed:
        if typed.kind.numeric or typed.kind is Kind.NULL:
            return typed
        if typed.kind is Kind.JSON:
            return Typed(self._as(typed, Kind.FLOAT), Kind.FLOAT)
        raise EqlError(f"{node.render()!r} needs a number, but is a {typed.kind.value}")

    def _unify(self, left: Typed, right: Typed, node: Expr) -> tuple[exp.Expr, exp.Expr]:
        """Both sides of a comparison as one comparable type, or a clear error."""
        if left.kind is Kind.JSON and right.kind is not Kind.JSON:
            target = Kind.FLOAT if right.kind.numeric else right.kind
            return self._as(left, target if target is not Kind.NULL else Kind.STRING), right.sql
        if right.kind is Kind.JSON and left.kind is not Kind.JSON:
            target = Kind.FLOAT if left.kind.numeric else left.kind
            return left.sql, self._as(right, target if target is not Kind.NULL else Kind.STRING)
        if left.kind is Kind.JSON and right.kind is Kind.JSON:
            return self.json_text(left.sql), self.json_text(right.sql)
        kinds = {left.kind, right.kind}
        if Kind.NULL in kinds or len(kinds) == 1 or all(k.numeric for k in kinds):
            return left.sql, right.sql
        if kinds == {Kind.TIMESTAMP, Kind.STRING}:
            cast_left = exp.cast(left.sql, "TIMESTAMP") if left.kind is Kind.STRING else left.sql
            cast_right = (
                exp.cast(right.sql, "TIMESTAMP") if right.kind is Kind.STRING else right.sql
            )
            return cast_left, cast_right
        raise EqlError(
            f"cannot compare a {left.kind.value} with a {right.kind.value} in {node.render()!r}"
        )

    # -- predicates ----------------------------------------------------------------------

    def _comparison(self, node: Comparison) -> Typed:
        left, right = self.compile(node.left), self.compile(node.right)
        literal_null = [
            isinstance(side, Literal) and side.value is None for side in (node.left, node.right)
        ]
        if node.op in ("==", "!=") and any(literal_null):
            other = right if literal_null[0] else left
            test: exp.Expr = exp.Is(this=other.sql, expression=exp.null())
            return Typed(test if node.op == "==" else exp.not_(test), Kind.BOOLEAN)
        if Kind.LIST in (left.kind, right.kind):
            return self._list_comparison(node, left, right)
        a, b = self._unify(left, right, node)
        operators: dict[str, Callable[..., exp.Expr]] = {
            "==": exp.EQ,
            "!=": exp.NEQ,
            "<": exp.LT,
            "<=": exp.LTE,
            ">": exp.GT,
            ">=": exp.GTE,
        }
        return Typed(operators[node.op](this=a, expression=b), Kind.BOOLEAN)

    def _list_comparison(self, node: Comparison, left: Typed, right: Typed) -> Typed:
        listed, other = (left, right) if left.kind is Kind.LIST else (right, left)
        if node.op not in ("==", "!=") or other.kind is Kind.LIST:
            raise EqlError(f"a list field can only be tested with == or != in {node.render()!r}")
        contains: exp.Expr = exp.ArrayContains(this=listed.sql, expression=other.sql)
        return Typed(contains if node.op == "==" else exp.not_(contains), Kind.BOOLEAN)

    def _in(self, node: In) -> Typed:
        left = self.compile(node.left)
        values = [self.compile(v) for v in node.values]
        if left.kind is Kind.LIST:
            tests = [exp.ArrayContains(this=left.sql, expression=v.sql) for v in values]
            found: exp.Expr = exp.or_(*tests)
        elif node.insensitive:
            needle: exp.Expr = exp.Lower(this=self._string(left, node.left))
            found = exp.In(
                this=needle,
                expressions=[
                    exp.Lower(this=self._string(v, n))
                    for v, n in zip(values, node.values, strict=True)
                ],
            )
        else:
            pairs = [self._unify(left, v, node) for v in values]
            found = exp.In(this=pairs[0][0], expressions=[b for _, b in pairs])
        return Typed(exp.not_(found) if node.negated else found, Kind.BOOLEAN)

    def _match(self, node: Match) -> Typed:
        left = self.compile(node.left)
        tests = [self._match_one(node, left, pattern) for pattern in node.patterns]
        return Typed(exp.or_(*tests) if len(tests) > 1 else tests[0], Kind.BOOLEAN)

    def _match_one(self, node: Match, left: Typed, pattern: Expr) -> exp.Expr:
        if node.op == ":" and (
            not isinstance(pattern, Literal) or not isinstance(pattern.value, str)
        ):
            compiled = self.compile(pattern)
            if compiled.kind is Kind.STRING and left.kind in (Kind.STRING, Kind.JSON):
                lowered = exp.Lower(this=self._string(left, node.left))
                return exp.EQ(this=lowered, expression=exp.Lower(this=compiled.sql))
            a, b = self._unify(left, compiled, node)
            return exp.EQ(this=a, expression=b)
        if not isinstance(pattern, Literal) or not isinstance(pattern.value, str):
            raise EqlError(f"the pattern of {node.op!r} must be a string in {node.render()!r}")
        subject = self._string(left, node.left)
        text = pattern.value
        if node.op == "regex":
            # Anchored, so a partial-match operator (DuckDB regexp_matches, Spark RLIKE) matches
            # the whole string, as EQL's regex does.
            regex = ("(?i)" if node.insensitive else "") + "^(?:" + text + ")$"
            bound = self.parameters.bind(regex, Kind.STRING)
            return exp.RegexpLike(this=subject, expression=bound)
        if node.op == ":" and "*" not in text and "?" not in text:
            bound = self.parameters.bind(text.lower(), Kind.STRING)
            return exp.EQ(this=exp.Lower(this=subject), expression=bound)
        like_text = _like_pattern(text)
        bound = self.parameters.bind(like_text, Kind.STRING)
        like_class = exp.ILike if node.insensitive else exp.Like
        like = like_class(this=subject, expression=bound)
        return exp.Escape(this=like, expression=exp.Literal.string("\\"))

    # -- arithmetic and functions ----------------------------------------------------------

    def _arithmetic(self, op: str, left: Typed, right: Typed, node: Expr) -> Typed:
        a, b = self._numeric(left, node), self._numeric(right, node)
        both_integer = a.kind is Kind.INTEGER and b.kind is Kind.INTEGER
        kind = Kind.INTEGER if both_integer else Kind.FLOAT
        if op in "+-*":
            classes: dict[str, type[exp.Binary]] = {"+": exp.Add, "-": exp.Sub, "*": exp.Mul}
            return Typed(exp.Paren(this=classes[op](this=a.sql, expression=b.sql)), kind)
        if op == "/":
            division: exp.Expr = (
                exp.IntDiv(this=a.sql, expression=b.sql)
                if both_integer
                else exp.Div(this=a.sql, expression=b.sql)
            )
        else:
            division = exp.Mod(this=a.sql, expression=b.sql)
        # DuckDB raises on a zero divisor; EQL's answer is null.
        zero = exp.EQ(this=b.sql, expression=exp.Literal.number(0))
        return Typed(_case(zero, exp.null(), exp.Paren(this=division)), kind)

    def _function(self, node: FunctionCall) -> Typed:
        name = node.name.lower()
        handler = _FUNCTIONS.get(name)
        if handler is None:
            known = ", ".join(sorted(_FUNCTIONS))
            raise EqlError(f"unknown function {node.name!r}; EQL has {known}")
        arity, insensitive_ok, method = handler
        low, high = arity
        if not low <= len(node.args) <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            raise EqlError(
                f"{node.name}() takes {wanted} arguments, got {len(node.args)} in {node.render()!r}"
            )
        if node.insensitive and not insensitive_ok:
            raise EqlError(f"{node.name}() has no case-insensitive ~ form")
        # Arguments a function reads as constants (CIDR blocks, a base, a flag) are not bound.
        constants_from = _CONSTANT_ARGUMENTS.get(name, len(node.args))
        args = [self.compile(a) for a in node.args[:constants_from]]
        return method(self, node, args)

    def _strings(
        self, node: FunctionCall, args: list[Typed], nodes: tuple[Expr, ...] | None = None
    ) -> list[exp.Expr]:
        sources = node.args if nodes is None else nodes
        values = [self._string(a, n) for a, n in zip(args, sources, strict=True)]
        if node.insensitive:
            return [exp.Lower(this=v) for v in values]
        return values

    def _starts_with(self, node: FunctionCall, args: list[Typed]) -> Typed:
        text, prefix = self._strings(node, args)
        return Typed(exp.StartsWith(this=text, expression=prefix), Kind.BOOLEAN)

    def _ends_with(self, node: FunctionCall, args: list[Typed]) -> Typed:
        text, suffix = self._strings(node, args)
        tail = exp.Right(this=text, expression=exp.Length(this=suffix))
        return Typed(exp.EQ(this=tail, expression=suffix), Kind.BOOLEAN)

    def _contains(self, node: FunctionCall, args: list[Typed]) -> Typed:
        text, part = self._strings(node, args)
        position = exp.StrPosition(this=text, substr=part)
        return Typed(exp.GT(this=position, expression=exp.Literal.number(0)), Kind.BOOLEAN)

    def _index_of(self, node: FunctionCall, args: list[Typed]) -> Typed:
        text, part = self._strings(node, args[:2], node.args[:2])
        start: exp.Expr = exp.Literal.number(0)
        if len(args) == 3:
            start = exp.func("GREATEST", self._numeric(args[2], node.args[2]).sql, start)
        rest = exp.Substring(this=text, start=exp.Add(this=start, expression=exp.Literal.number(1)))
        found = exp.StrPosition(this=rest, substr=part)
        position = exp.Add(
            this=exp.Sub(this=found, expression=exp.Literal.number(1)), expression=start
        )
        absent = exp.EQ(this=found, expression=exp.Literal.number(0))
        return Typed(_case(absent, exp.null(), position), Kind.INTEGER)

    def _length(self, node: FunctionCall, args: list[Typed]) -> Typed:
        if args[0].kind is Kind.LIST:
            return Typed(exp.ArraySize(this=args[0].sql), Kind.INTEGER)
        return Typed(exp.Length(this=self._string(args[0], node.args[0])), Kind.INTEGER)

    def _concat(self, node: FunctionCall, args: list[Typed]) -> Typed:
        parts = [
            exp.cast(self.json_text(a.sql) if a.kind is Kind.JSON else a.sql, "VARCHAR")
            for a in args
        ]
        return Typed(exp.Concat(expressions=parts, safe=True, coalesce=True), Kind.STRING)

    def _to_string(self, node: FunctionCall, args: list[Typed]) -> Typed:
        value = args[0]
        text = (
            self.json_text(value.sql) if value.kind is Kind.JSON else exp.cast(value.sql, "VARCHAR")
        )
        return Typed(text, Kind.STRING)

    def _to_number(self, node: FunctionCall, args: list[Typed]) -> Typed:
        base = node.args[1] if len(node.args) == 2 else Literal(10)
        if base not in (Literal(10), Literal(16)):
            raise EqlError("number() reads base 10 or base 16")
        if args[0].kind.numeric:
            return args[0]
        text = self._string(args[0], node.args[0])
        if base == Literal(16):
            digits = exp.func(
                "REGEXP_REPLACE", text, exp.Literal.string("^0[xX]"), exp.Literal.string("")
            )
            hexadecimal = exp.Concat(expressions=[exp.Literal.string("0x"), digits])
            return Typed(
                exp.TryCast(this=hexadecimal, to=exp.DataType.build("BIGINT"), safe=True),
                Kind.INTEGER,
            )
        return Typed(exp.TryCast(this=text, to=exp.DataType.build("DOUBLE"), safe=True), Kind.FLOAT)

    def _substring(self, node: FunctionCall, args: list[Typed]) -> Typed:
        text = self._string(args[0], node.args[0])
        length: exp.Expr = exp.Length(this=text)
        zero = exp.Literal.number(0)

        def clamp(index: exp.Expr) -> exp.Expr:
            # Python slice indexes: negative counts from the end; both ends clamp to the string.
            negative = exp.LT(this=index, expression=zero)
            from_end = exp.func("GREATEST", exp.Add(this=length, expression=index), zero)
            return _case(negative, from_end, exp.func("LEAST", index, length))

        start = clamp(self._numeric(args[1], node.args[1]).sql)
        end = clamp(self._numeric(args[2], node.args[2]).sql) if len(args) == 3 else length
        size = exp.func("GREATEST", exp.Sub(this=end, expression=start), zero)
        piece = exp.Substring(
            this=text, start=exp.Add(this=start, expression=exp.Literal.number(1)), length=size
        )
        return Typed(piece, Kind.STRING)

    def _between(self, node: FunctionCall, args: list[Typed]) -> Typed:
        text = self._string(args[0], node.args[0])
        left, right = (self._string(a, n) for a, n in zip(args[1:3], node.args[1:3], strict=True))
        greedy = False
        if len(node.args) >= 4:
            flag = node.args[3]
            if not isinstance(flag, Literal) or not isinstance(flag.value, bool):
                raise EqlError("the greedy argument of between() must be true or false")
            greedy = flag.value
        search_text = exp.Lower(this=text) if node.insensitive else text
        search_left = exp.Lower(this=left) if node.insensitive else left
        search_right = exp.Lower(this=right) if node.insensitive else right
        one = exp.Literal.number(1)
        left_at = exp.StrPosition(this=search_text, substr=search_left)
        after = exp.Add(this=left_at, expression=exp.Length(this=left))
        rest = exp.Substring(this=text, start=after)
        search_rest = exp.Substring(this=search_text, start=after)
        if greedy:
            reversed_at = exp.StrPosition(
                this=exp.func("REVERSE", search_rest), substr=exp.func("REVERSE", search_right)
            )
            right_at = _case(
                exp.EQ(this=reversed_at, expression=exp.Literal.number(0)),
                exp.Literal.number(0),
                exp.Sub(
                    this=exp.Add(this=exp.Length(this=search_rest), expression=one),
                    expression=exp.paren(
                        exp.Sub(
                            this=exp.Add(this=reversed_at, expression=exp.Length(this=right)),
                            expression=one,
                        )
                    ),
                ),
            )
        else:
            right_at = exp.StrPosition(this=search_rest, substr=search_right)
        piece = exp.Substring(this=rest, start=one, length=exp.Sub(this=right_at, expression=one))
        missing = exp.or_(
            exp.EQ(this=left_at, expression=exp.Literal.number(0)),
            exp.EQ(this=right_at, expression=exp.Literal.number(0)),
        )
        return Typed(_case(missing, exp.Literal.string(""), piece), Kind.STRING)

    def _cidr_match(self, node: FunctionCall, args: list[Typed]) -> Typed:
        address = self._string(args[0], node.args[0])
        octets = [
            exp.TryCast(
                this=exp.SplitPart(
                    this=address,
                    delimiter=exp.Literal.string("."),
                    part_index=exp.Literal.number(i),
                ),
                to=exp.DataType.build("BIGINT"),
            )
            for i in range(1, 5)
        ]
        number: exp.Expr = octets[0]
        for octet in octets[1:]:
            shifted = exp.Mul(this=exp.Paren(this=number), expression=exp.Literal.number(256))
            number = exp.Paren(this=exp.Add(this=shifted, expression=octet))
        tests = []
        for block in node.args[1:]:
            if not isinstance(block, Literal) or not isinstance(block.value, str):
                raise EqlError("cidrMatch() takes CIDR blocks as string literals")
            try:
                network = ipaddress.ip_network(block.value, strict=False)
            except ValueError as err:
                raise EqlError(f"cidrMatch(): {err}") from None
            if network.version != 4:
                raise EqlError("cidrMatch() supports IPv4 blocks only")
            low = self.parameters.bind(int(network.network_address), Kind.INTEGER)
            high = self.parameters.bind(int(network.broadcast_address), Kind.INTEGER)
            tests.append(exp.Between(this=number, low=low, high=high))
        shaped = exp.RegexpLike(
            this=address, expression=self.parameters.bind(r"^\d{1,3}(\.\d{1,3}){3}$", Kind.STRING)
        )
        return Typed(exp.and_(shaped, exp.or_(*tests)), Kind.BOOLEAN)


def _math(op: str) -> Callable[[Compiler, FunctionCall, list[Typed]], Typed]:
    def apply(compiler: Compiler, node: FunctionCall, args: list[Typed]) -> Typed:
        return compiler._arithmetic(op, args[0], args[1], node)

    return apply


_CONSTANT_ARGUMENTS = {"between": 3, "cidrmatch": 1, "number": 1}
_Handler = tuple[tuple[int, int], bool, Callable[[Compiler, FunctionCall, list[Typed]], Typed]]
_FUNCTIONS: dict[str, _Handler] = {
    "add": ((2, 2), False, _math("+")),
    "subtract": ((2, 2), False, _math("-")),
    "multiply": ((2, 2), False, _math("*")),
    "divide": ((2, 2), False, _math("/")),
    "modulo": ((2, 2), False, _math("%")),
    "between": ((3, 4), True, Compiler._between),
    "cidrmatch": ((2, 64), False, Compiler._cidr_match),
    "concat": ((1, 64), False, Compiler._concat),
    "endswith": ((2, 2), True, Compiler._ends_with),
    "indexof": ((2, 3), True, Compiler._index_of),
    "length": ((1, 1), False, Compiler._length),
    "number": ((1, 2), False, Compiler._to_number),
    "startswith": ((2, 2), True, Compiler._starts_with),
    "string": ((1, 1), False, Compiler._to_string),
    "stringcontains": ((2, 2), True, Compiler._contains),
    "substring": ((2, 3), False, Compiler._substring),
}
