"""EQL: Elastic's Event Query Language, parsed to frozen nodes, compiled to SQL, run by DuckDB.

Pipeline: ``lexer`` → ``parser`` → ``ast`` → ``plan`` (``expressions``, ``sequence``, ``groups``)
→ sqlglot expressions → ``engine`` on DuckDB. See docs/eql.md for the semantics.
"""

from .ast import Query
from .engine import (
    EqlResult,
    SequenceMatch,
    Target,
    execute,
    explain,
    over_file,
    over_ledger,
    run_eql,
    run_eql_file,
    run_eql_records,
)
from .errors import EqlError, EqlSyntaxError
from .inputs import ledger_source, load_file, load_records
from .parser import parse, parse_expression
from .plan import Plan, compile_query
from .source import EventSource

__all__ = [
    "EqlError",
    "EqlResult",
    "EqlSyntaxError",
    "EventSource",
    "Plan",
    "Query",
    "SequenceMatch",
    "Target",
    "compile_query",
    "execute",
    "explain",
    "ledger_source",
    "load_file",
    "load_records",
    "over_file",
    "over_ledger",
    "parse",
    "parse_expression",
    "run_eql",
    "run_eql_file",
    "run_eql_records",
]
