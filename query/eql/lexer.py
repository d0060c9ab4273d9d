"""EQL text to tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .errors import EqlSyntaxError, caret

__all__ = ["KEYWORDS", "Kind", "Token", "tokenize"]


class Kind(Enum):
    """What a token is."""

    NAME = "name"
    QUOTED_NAME = "quoted name"
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "number"
    OPERATOR = "operator"
    END = "end of query"


KEYWORDS = frozenset(
    {
        "and",
        "any",
        "by",
        "false",
        "in",
        "join",
        "like",
        "not",
        "null",
        "or",
        "regex",
        "sample",
        "sequence",
        "true",
        "until",
        "where",
        "with",
    }
)


@dataclass(frozen=True)
class Token:
    """One token, with its offset in the query text."""

    kind: Kind
    text: str
    value: object
    offset: int

    def is_op(self, *ops: str) -> bool:
        """Whether this is one of the operators ``ops``."""
        return self.kind is Kind.OPERATOR and self.text in ops

    def is_word(self, *words: str) -> bool:
        """Whether this is an unquoted name equal (ignoring case) to one of ``words``."""
        return self.kind is Kind.NAME and self.text.lower() in words


_OPERATORS: tuple[str, ...] = ("==", "!=", "<=", ">=", "<", ">", ":", "~", "(", ")", "[", "]")
_OPERATORS += (",", "|", "!", "+", "-", "*", "/", "%", ".", "=", "?")
_NAME = re.compile(r"[A-Za-z_@][A-Za-z0-9_@]*")
_NUMBER = re.compile(r"(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_SPACE = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)+", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "0": "\0"}


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an END token."""
    tokens: list[Token] = []
    position = 0
    while True:
        space = _SPACE.match(text, position)
        if space:
            position = space.end()
        if position >= len(text):
            tokens.append(Token(Kind.END, "", None, position))
            return tokens
        token = _next_token(text, position)
        tokens.append(token)
        position = token.offset + len(token.text)


def _next_token(text: str, position: int) -> Token:
    char = text[position]
    if text.startswith('"""', position):
        end = text.find('"""', position + 3)
        if end < 0:
            _fail(text, position, 'unterminated raw string: """ has no closing """')
        raw = text[position : end + 3]
        return Token(Kind.STRING, raw, raw[3:-3], position)
    if char == '"' or (char == "?" and text.startswith('?"', position)):
        return _string(text, position)
    if char == "'":
        _fail(text, position, "strings are written in double quotes")
    if char == "`":
        end = text.find("`", position + 1)
        if end < 0:
            _fail(text, position, "unterminated quoted name: ` has no closing `")
        if end == position + 1:
            _fail(text, position, "a quoted name cannot be empty")
        raw = text[position : end + 1]
        return Token(Kind.QUOTED_NAME, raw, raw[1:-1], position)
    number = _NUMBER.match(text, position)
    if number and (char.isdigit() or char == "."):
        raw = number.group()
        if _NAME.match(text, number.end()) and not raw.isdigit():
            _fail(text, number.end(), "a number is followed by a name")
        is_float = any(c in raw for c in ".eE")
        return Token(Kind.FLOAT if is_float else Kind.INTEGER, raw, _number(raw), position)
    name = _NAME.match(text, position)
    if name:
        return Token(Kind.NAME, name.group(), name.group(), position)
    for op in _OPERATORS:
        if text.startswith(op, position):
            return Token(Kind.OPERATOR, op, op, position)
    _fail(text, position, f"unexpected character {char!r}")
    raise AssertionError  # pragma: no cover - _fail raises


def _number(raw: str) -> int | float:
    return float(raw) if any(c in raw for c in ".eE") else int(raw)


def _string(text: str, start: int) -> Token:
    raw_string = text[start] == "?"
    position = start + (2 if raw_string else 1)
    chars: list[str] = []
    while position < len(text):
        char = text[position]
        if char == '"':
            return Token(Kind.STRING, text[start : position + 1], "".join(chars), start)
        if char == "\n":
            break
        if char == "\\" and not raw_string:
            position, decoded = _escape(text, position)
            chars.append(decoded)
            continue
        chars.append(char)
        position += 1
    _fail(text, start, 'unterminated string: " has no closing " on its line')
    raise AssertionError  # pragma: no cover - _fail raises


def _escape(text: str, position: int) -> tuple[int, str]:
    """Decode the escape at ``position`` (a backslash); return the next position and the text."""
    code = text[position + 1 : position + 2]
    if code in _ESCAPES:
        return position + 2, _ESCAPES[code]
    if code == "u":
        match = re.compile(r"\\u\{([0-9A-Fa-f]{1,8})\}|\\u([0-9A-Fa-f]{4})").match(text, position)
        if match:
            value = int(match.group(1) or match.group(2), 16)
            if value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF:
                return match.end(), chr(value)
    _fail(text, position, f"unknown escape \\{code} in a string")
    raise AssertionError  # pragma: no cover - _fail raises


def _fail(text: str, offset: int, message: str) -> None:
    line, column, highlight = caret(text, offset)
    raise EqlSyntaxError(
        f"{message} at line {line}, column {column}\n{highlight}", line, column, highlight
    )
