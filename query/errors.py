"""The query layer's exceptions.

Exception tree (every class carries an HTTP-style ``status``)::

    QueryError                 400  root of everything the query layer raises
    ├── QuerySyntaxError       400  the statement does not parse; line, column and a caret
    ├── QueryRefusedError      403  the statement parses but is not a read-only query
    └── QueryTimeoutError      408  the statement ran past its deadline and was interrupted
"""

from __future__ import annotations

__all__ = ["QueryError", "QueryRefusedError", "QuerySyntaxError", "QueryTimeoutError"]


class QueryError(Exception):
    """Root of every exception the query layer raises."""

    status = 400


class QuerySyntaxError(QueryError):
    """A statement that does not parse, located by line and column."""

    def __init__(self, message: str, line: int = 0, column: int = 0, highlight: str = "") -> None:
        self.line = line
        self.column = column
        self.highlight = highlight
        super().__init__(message)


class QueryRefusedError(QueryError):
    """A statement that is not a single read-only query."""

    status = 403


class QueryTimeoutError(QueryError):
    """A statement interrupted at its deadline."""

    status = 408
