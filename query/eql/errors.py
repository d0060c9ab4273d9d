"""EQL's exceptions, under the query layer's root.

Exception tree::

    QueryError (query.errors)       400
    ├── QuerySyntaxError            400
    │   └── EqlSyntaxError          400  the query does not parse; line, column and a caret
    └── EqlError                    400  it parses but cannot run: unknown field, bad type, bad pipe
"""

from __future__ import annotations

from ..errors import QueryError, QuerySyntaxError

__all__ = ["EqlError", "EqlSyntaxError", "caret"]


class EqlError(QueryError):
    """A query that parses but cannot be compiled or run."""


class EqlSyntaxError(QuerySyntaxError):
    """A query that does not parse, located by 1-based line and column."""


def caret(text: str, offset: int) -> tuple[int, int, str]:
    """The 1-based line and column of ``offset`` in ``text``, and its line with a caret under it."""
    offset = max(0, min(offset, len(text)))
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    if line_end < 0:
        line_end = len(text)
    line = text.count("\n", 0, offset) + 1
    column = offset - line_start + 1
    highlight = text[line_start:line_end] + "\n" + " " * (column - 1) + "^"
    return line, column, highlight
