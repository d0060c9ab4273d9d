"""EQL tokens to a syntax tree: a hand-written recursive-descent parser."""

from __future__ import annotations

from .ast import (
    DURATION_UNITS,
    Arithmetic,
    Boolean,
    Comparison,
    Duration,
    EventQuery,
    Expr,
    Field,
    FunctionCall,
    In,
    Join,
    Literal,
    Match,
    Negate,
    Not,
    Pipe,
    Query,
    Sample,
    Sequence,
    Step,
)
from .errors import EqlSyntaxError, caret
from .lexer import KEYWORDS, Kind, Token, tokenize

__all__ = ["PIPES", "parse", "parse_expression"]

PIPES = frozenset({"head", "tail", "count", "unique", "unique_count", "filter", "sort"})
_COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")


def parse(text: str) -> Query:
    """Parse one EQL query; raise EqlSyntaxError (line, column, caret) if it is not valid."""
    parser = _Parser(text)
    query = parser.query()
    parser.expect_end()
    return query


def parse_expression(text: str) -> Expr:
    """Parse one EQL condition or value expression."""
    parser = _Parser(text)
    expression = parser.expression()
    parser.expect_end()
    return expression


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    # -- token helpers -------------------------------------------------------------------

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.token
        if token.kind is not Kind.END:
            self.index += 1
        return token

    def fail(self, message: str, token: Token | None = None) -> EqlSyntaxError:
        token = token or self.token
        line, column, highlight = caret(self.text, token.offset)
        found = "the end of the query" if token.kind is Kind.END else repr(token.text)
        return EqlSyntaxError(
            f"{message}, found {found} at line {line}, column {column}\n{highlight}",
            line,
            column,
            highlight,
        )

    def expect_op(self, op: str) -> Token:
        if not self.token.is_op(op):
            raise self.fail(f"expected {op!r}")
        return self.advance()

    def expect_word(self, word: str) -> Token:
        if not self.token.is_word(word):
            raise self.fail(f"expected {word!r}")
        return self.advance()

    def accept_word(self, word: str) -> bool:
        if self.token.is_word(word):
            self.advance()
            return True
        return False

    def expect_end(self) -> None:
        if self.token.kind is not Kind.END:
            raise self.fail("expected the end of the query or a pipe '|'")

    def integer(self, what: str) -> int:
        if self.token.kind is not Kind.INTEGER:
            raise self.fail(f"expected {what} (a whole number)")
        value = self.advance().value
        assert isinstance(value, int)
        return value

    # -- queries -------------------------------------------------------------------------

    def query(self) -> Query:
        if self.token.is_word("sequence"):
            body: EventQuery | Sequence | Sample | Join = self.sequence()
        elif self.token.is_word("sample"):
            body = self.sample()
        elif self.token.is_word("join"):
            body = self.join()
        else:
            body = self.event_query()
        pipes: list[Pipe] = []
        while self.token.is_op("|"):
            self.advance()
            pipes.append(self.pipe())
        return Query(body, tuple(pipes))

    def event_query(self) -> EventQuery:
        token = self.token
        if token.kind is Kind.STRING:
            category: str | None = str(self.advance().value)
        elif token.is_word("any"):
            self.advance()
            category = None
        elif token.kind is Kind.NAME and token.text.lower() not in KEYWORDS:
            category = self.advance().text
        elif token.kind is Kind.QUOTED_NAME:
            category = str(self.advance().value)
        else:
            raise self.fail("expected an event category, 'any', 'sequence', 'sample' or 'join'")
        self.expect_word("where")
        return EventQuery(category, self.expression())

    def keys(self) -> tuple[Expr, ...]:
        keys = [self.additive()]
        while self.token.is_op(","):
            self.advance()
            keys.append(self.additive())
        return tuple(keys)

    def step(self, allow_missing: bool, allow_runs: bool) -> Step:
        missing = False
        if self.token.is_op("!") and allow_missing:
            missing = True
            self.advance()
        self.expect_op("[")
        query = self.event_query()
        self.expect_op("]")
        by = self.keys() if self.accept_word("by") else ()
        runs = 1
        if allow_runs and self.token.is_word("with") and self.peek().is_word("runs"):
            self.advance()
            self.advance()
            self.expect_op("=")
            token = self.token
            runs = self.integer("the number of runs")
            if not 1 <= runs <= 100:
                raise self.fail("runs must be between 1 and 100", token)
        return Step(query, by, runs, missing)

    def steps(self, allow_missing: bool, allow_runs: bool) -> tuple[Step, ...]:
        steps = []
        while self.token.is_op("[") or (allow_missing and self.token.is_op("!")):
            steps.append(self.step(allow_missing, allow_runs))
        return tuple(steps)

    def sequence(self) -> Sequence:
        start = self.advance()
        by: tuple[Expr, ...] = ()
        maxspan = None
        for _ in range(2):
            if self.token.is_word("by") and not by:
                self.advance()
                by = self.keys()
            elif self.token.is_word("with") and maxspan is None:
                self.advance()
                self.expect_word("maxspan")
                self.expect_op("=")
                maxspan = self.duration()
        steps = self.steps(allow_missing=True, allow_runs=True)
        if sum(s.runs for s in steps) < 2:
            raise self.fail("a sequence needs at least two steps", start)
        if all(s.missing for s in steps):
            raise self.fail("a sequence needs at least one step that is not missing ![...]", start)
        until = self.step(False, False) if self.accept_word("until") else None
        return Sequence(steps, by, maxspan, until)

    def duration(self) -> Duration:
        token = self.token
        amount = self.integer("a duration such as 30m")
        unit = "s"
        if self.token.kind is Kind.NAME and self.token.offset == token.offset + len(token.text):
            unit = self.advance().text
            if unit not in DURATION_UNITS:
                known = ", ".join(DURATION_UNITS)
                raise self.fail(f"unknown duration unit {unit!r} (use {known})", token)
        return Duration(amount, unit)

    def sample(self) -> Sample:
        start = self.advance()
        by = self.keys() if self.accept_word("by") else ()
        steps = self.steps(allow_missing=False, allow_runs=False)
        if len(steps) < 2:
            raise self.fail("a sample needs at least two filters", start)
        return Sample(steps, by)

    def join(self) -> Join:
        start = self.advance()
        by = self.keys() if self.accept_word("by") else ()
        steps = self.steps(allow_missing=False, allow_runs=False)
        if len(steps) < 2:
            raise self.fail("a join needs at least two queries", start)
        until = self.step(False, False) if self.accept_word("until") else None
        return Join(steps, by, until)

    def pipe(self) -> Pipe:
        token = self.token
        if token.kind is not Kind.NAME or token.text.lower() not in PIPES:
            raise self.fail("expected a pipe: " + ", ".join(sorted(PIPES)))
        name = self.advance().text.lower()
        if name in ("head", "tail"):
            count = self.integer(f"the number of results for {name}")
            return Pipe(name, (Literal(count),))
        if name == "filter":
            return Pipe(name, (self.expression(),))
        if name == "sort":
            keys: list[Expr] = []
            descending: list[bool] = []
            while True:
                keys.append(self.additive())
                descending.append(self.accept_word("desc"))
                if not descending[-1]:
                    self.accept_word("asc")
                if not self.token.is_op(","):
                    break
                self.advance()
            return Pipe(name, tuple(keys), tuple(descending))
        if name == "count" and (self.token.kind is Kind.END or self.token.is_op("|")):
            return Pipe(name)
        return Pipe(name, self.keys())

    # -- expressions ---------------------------------------------------------------------

    def expression(self) -> Expr:
        left = self.conjunction()
        while self.token.is_word("or"):
            self.advance()
            left = Boolean("or", left, self.conjunction())
        return left

    def conjunction(self) -> Expr:
        left = self.negation()
        while self.token.is_word("and"):
            self.advance()
            left = Boolean("and", left, self.negation())
        return left

    def negation(self) -> Expr:
        if self.token.is_word("not"):
            self.advance()
            return Not(self.negation())
        return self.predicate()

    def predicate(self) -> Expr:
        left = self.additive()
        token = self.token
        if token.kind is Kind.OPERATOR and token.text in _COMPARISONS:
            self.advance()
            return Comparison(token.text, left, self.additive())
        if token.is_op(":"):
            self.advance()
            return Match(":", left, self.patterns(), insensitive=True)
        if token.is_word("like", "regex"):
            self.advance()
            insensitive = self.tilde()
            return Match(token.text.lower(), left, self.patterns(), insensitive)
        if token.is_word("not") and self.peek().is_word("in"):
            self.advance()
            self.advance()
            insensitive = self.tilde()
            return In(left, self.value_list(), negated=True, insensitive=insensitive)
        if token.is_word("in"):
            self.advance()
            insensitive = self.tilde()
            return In(left, self.value_list(), insensitive=insensitive)
        return left

    def tilde(self) -> bool:
        previous = self.tokens[self.index - 1]
        if self.token.is_op("~") and self.token.offset == previous.offset + len(previous.text):
            self.advance()
            return True
        return False

    def patterns(self) -> tuple[Expr, ...]:
        if self.token.is_op("("):
            return self.value_list()
        return (self.additive(),)

    def value_list(self) -> tuple[Expr, ...]:
        self.expect_op("(")
        values = [self.expression()]
        while self.token.is_op(","):
            self.advance()
            values.append(self.expression())
        self.expect_op(")")
        return tuple(values)

    def additive(self) -> Expr:
        left = self.multiplicative()
        while self.token.is_op("+", "-"):
            op = self.advance().text
            left = Arithmetic(op, left, self.multiplicative())
        return left

    def multiplicative(self) -> Expr:
        left = self.unary()
        while self.token.is_op("*", "/", "%"):
            op = self.advance().text
            left = Arithmetic(op, left, self.unary())
        return left

    def unary(self) -> Expr:
        if self.token.is_op("-"):
            self.advance()
            operand = self.unary()
            if isinstance(operand, Literal) and type(operand.value) in (int, float):
                assert isinstance(operand.value, int | float)
                return Literal(-operand.value)
            return Negate(operand)
        return self.primary()

    def primary(self) -> Expr:
        token = self.token
        if token.kind in (Kind.STRING, Kind.INTEGER, Kind.FLOAT):
            self.advance()
            assert isinstance(token.value, str | int | float)
            return Literal(token.value)
        if token.is_word("true", "false"):
            self.advance()
            return Literal(token.text.lower() == "true")
        if token.is_word("null"):
            self.advance()
            return Literal(None)
        if token.is_op("("):
            self.advance()
            inner = self.expression()
            self.expect_op(")")
            return inner
        if token.kind is Kind.NAME and token.text.lower() not in KEYWORDS:
            after = self.peek()
            if after.is_op("(") or (after.is_op("~") and self.peek(2).is_op("(")):
                return self.function_call()
        return self.field()

    def function_call(self) -> FunctionCall:
        name = self.advance().text
        insensitive = self.tilde()
        self.expect_op("(")
        args: list[Expr] = []
        if not self.token.is_op(")"):
            args.append(self.expression())
            while self.token.is_op(","):
                self.advance()
                args.append(self.expression())
        self.expect_op(")")
        return FunctionCall(name, tuple(args), insensitive)

    def field(self) -> Field:
        optional = False
        if self.token.is_op("?"):
            optional = True
            self.advance()
        parts = [self.name_part(first=True)]
        while self.token.is_op(".") and self.peek().kind in (Kind.NAME, Kind.QUOTED_NAME):
            self.advance()
            parts.append(self.name_part(first=False))
        return Field(tuple(parts), optional)

    def name_part(self, first: bool) -> str:
        token = self.token
        if token.kind is Kind.QUOTED_NAME:
            self.advance()
            return str(token.value)
        if token.kind is Kind.NAME and (not first or token.text.lower() not in KEYWORDS):
            self.advance()
            return token.text
        raise self.fail("expected a value, a field name or a function call")
