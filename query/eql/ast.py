"""EQL syntax tree: frozen nodes that render back to EQL text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .lexer import KEYWORDS

__all__ = [
    "DURATION_UNITS",
    "Arithmetic",
    "Boolean",
    "Comparison",
    "Duration",
    "EventQuery",
    "Expr",
    "Field",
    "FunctionCall",
    "In",
    "Join",
    "Literal",
    "Match",
    "Negate",
    "Not",
    "Pipe",
    "Query",
    "Sample",
    "Sequence",
    "Step",
    "render_value",
]

Value = str | int | float | bool | None
DURATION_UNITS = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}
DURATION_UNITS["d"] = 24 * DURATION_UNITS["h"]
_PLAIN_NAME = re.compile(r"[A-Za-z_@][A-Za-z0-9_@]*\Z")


def render_value(value: Value) -> str:
    """A literal as EQL text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eEn") else text + ".0"
    return str(value)


def _render_name(part: str) -> str:
    if _PLAIN_NAME.match(part) and part.lower() not in KEYWORDS:
        return part
    return f"`{part}`"


@dataclass(frozen=True)
class Literal:
    """A constant: string, integer, float, boolean or null."""

    value: Value

    def render(self) -> str:
        """EQL text."""
        return render_value(self.value)


@dataclass(frozen=True)
class Field:
    """A field reference; dotted parts reach into nested values. ``optional`` is ``?name``."""

    path: tuple[str, ...]
    optional: bool = False

    @property
    def name(self) -> str:
        """The dotted name."""
        return ".".join(self.path)

    def render(self) -> str:
        """EQL text."""
        return ("?" if self.optional else "") + ".".join(_render_name(p) for p in self.path)


@dataclass(frozen=True)
class Comparison:
    """``left op right`` with op one of == != < <= > >=."""

    op: str
    left: Expr
    right: Expr

    def render(self) -> str:
        """EQL text."""
        return f"{_operand(self.left, 4)} {self.op} {_operand(self.right, 4)}"


@dataclass(frozen=True)
class Match:
    """``left : pattern(s)``, ``like``, ``regex`` (``insensitive`` is the ``~`` form)."""

    op: str
    left: Expr
    patterns: tuple[Expr, ...]
    insensitive: bool = False

    def render(self) -> str:
        """EQL text."""
        op = self.op + ("~" if self.insensitive and self.op != ":" else "")
        if len(self.patterns) == 1:
            right = _operand(self.patterns[0], 4)
        else:
            right = "(" + ", ".join(p.render() for p in self.patterns) + ")"
        return f"{_operand(self.left, 4)} {op} {right}"


@dataclass(frozen=True)
class In:
    """``left [not] in[~] (values)``."""

    left: Expr
    values: tuple[Expr, ...]
    negated: bool = False
    insensitive: bool = False

    def render(self) -> str:
        """EQL text."""
        op = ("not in" if self.negated else "in") + ("~" if self.insensitive else "")
        values = ", ".join(v.render() for v in self.values)
        return f"{_operand(self.left, 4)} {op} ({values})"


@dataclass(frozen=True)
class Boolean:
    """``and`` / ``or`` of two conditions."""

    op: str
    left: Expr
    right: Expr

    def render(self) -> str:
        """EQL text."""
        level = _precedence(self)
        left = _operand(self.left, level)
        # Left-associative: a right operand of equal precedence keeps its parentheses.
        right = _operand(self.right, level + 1)
        return f"{left} {self.op} {right}"


@dataclass(frozen=True)
class Not:
    """``not condition``."""

    this: Expr

    def render(self) -> str:
        """EQL text."""
        return f"not {_operand(self.this, 3)}"


@dataclass(frozen=True)
class Arithmetic:
    """``left op right`` with op one of + - * / %."""

    op: str
    left: Expr
    right: Expr

    def render(self) -> str:
        """EQL text."""
        level = _precedence(self)
        return f"{_operand(self.left, level)} {self.op} {_operand(self.right, level + 1)}"


@dataclass(frozen=True)
class Negate:
    """Unary minus."""

    this: Expr

    def render(self) -> str:
        """EQL text."""
        return f"-{_operand(self.this, 8)}"


@dataclass(frozen=True)
class FunctionCall:
    """``name(args)``; ``insensitive`` is the ``name~(args)`` form."""

    name: str
    args: tuple[Expr, ...]
    insensitive: bool = False

    def render(self) -> str:
        """EQL text."""
        args = ", ".join(a.render() for a in self.args)
        return f"{self.name}{'~' if self.insensitive else ''}({args})"


Expr = (
    Literal | Field | Comparison | Match | In | Boolean | Not | Arithmetic | Negate | FunctionCall
)


def _precedence(node: Expr) -> int:
    if isinstance(node, Boolean):
        return 1 if node.op == "or" else 2
    if isinstance(node, Not):
        return 3
    if isinstance(node, Comparison | Match | In):
        return 4
    if isinstance(node, Arithmetic):
        return 5 if node.op in "+-" else 6
    if isinstance(node, Negate):
        return 7
    return 9


def _operand(node: Expr, minimum: int) -> str:
    text = node.render()
    return text if _precedence(node) >= minimum else f"({text})"


@dataclass(frozen=True)
class Duration:
    """A span such as ``30m``, kept with its unit so it renders as written."""

    amount: int
    unit: str

    @property
    def micros(self) -> int:
        """The span in microseconds."""
        return self.amount * DURATION_UNITS[self.unit]

    def render(self) -> str:
        """EQL text."""
        return f"{self.amount}{self.unit}"


@dataclass(frozen=True)
class EventQuery:
    """``category where condition``; category ``None`` is ``any``."""

    category: str | None
    condition: Expr

    def render(self) -> str:
        """EQL text."""
        if self.category is None:
            category = "any"
        elif _PLAIN_NAME.match(self.category) and self.category.lower() not in KEYWORDS:
            category = self.category
        else:
            category = render_value(self.category)
        return f"{category} where {self.condition.render()}"


@dataclass(frozen=True)
class Step:
    """One bracketed step of a sequence, sample or join, with its own keys."""

    query: EventQuery
    by: tuple[Expr, ...] = ()
    runs: int = 1
    missing: bool = False

    def render(self) -> str:
        """EQL text."""
        text = ("!" if self.missing else "") + f"[{self.query.render()}]" + _by(self.by)
        if self.runs != 1:
            text += f" with runs={self.runs}"
        return text


def _by(keys: tuple[Expr, ...]) -> str:
    return " by " + ", ".join(k.render() for k in keys) if keys else ""


def _render_group(head: str, steps: tuple[Step, ...], until: Step | None) -> str:
    """A sequence, sample or join: its head line, a step per line, then ``until``."""
    lines = [head] + ["  " + step.render() for step in steps]
    if until is not None:
        lines.append("until " + until.render())
    return "\n".join(lines)


@dataclass(frozen=True)
class Sequence:
    """``sequence [by keys] [with maxspan=d] steps [until step]``."""

    steps: tuple[Step, ...]
    by: tuple[Expr, ...] = ()
    maxspan: Duration | None = None
    until: Step | None = None

    def render(self) -> str:
        """EQL text."""
        head = "sequence" + _by(self.by)
        if self.maxspan is not None:
            head += f" with maxspan={self.maxspan.render()}"
        return _render_group(head, self.steps, self.until)


@dataclass(frozen=True)
class Sample:
    """``sample by keys steps``: events sharing keys, in any order."""

    steps: tuple[Step, ...]
    by: tuple[Expr, ...] = ()

    def render(self) -> str:
        """EQL text."""
        return _render_group("sample" + _by(self.by), self.steps, None)


@dataclass(frozen=True)
class Join:
    """Classic EQL ``join by keys steps [until step]``."""

    steps: tuple[Step, ...]
    by: tuple[Expr, ...] = ()
    until: Step | None = None

    def render(self) -> str:
        """EQL text."""
        return _render_group("join" + _by(self.by), self.steps, self.until)


@dataclass(frozen=True)
class Pipe:
    """``| name args``: head/tail take a count, the others fields or a condition."""

    name: str
    args: tuple[Expr, ...] = ()
    descending: tuple[bool, ...] = ()

    def render(self) -> str:
        """EQL text."""
        if not self.args:
            return f"| {self.name}"
        if self.name == "sort":
            keys = [
                a.render() + (" desc" if d else "")
                for a, d in zip(self.args, self.descending, strict=True)
            ]
            return "| sort " + ", ".join(keys)
        return f"| {self.name} " + ", ".join(a.render() for a in self.args)


Body = EventQuery | Sequence | Sample | Join


@dataclass(frozen=True)
class Query:
    """A whole query: its body and pipes."""

    body: Body
    pipes: tuple[Pipe, ...] = ()

    def render(self) -> str:
        """EQL text."""
        return "\n".join([self.body.render()] + [p.render() for p in self.pipes])
