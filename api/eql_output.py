"""Writing EQL results: events, sequences with placeholders for missing steps, and counts."""

from __future__ import annotations

import sys
from typing import IO, Any

import orjson
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from query.eql import EqlResult

from .output import cell_text, json_default, print_table

__all__ = ["EQL_FORMATS", "print_eql"]

EQL_FORMATS = ("table", "json", "jsonl")
_JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_NOUNS = {
    "events": ("event", "events"),
    "sequences": ("sequence", "sequences"),
    "samples": ("sample", "samples"),
    "counts": ("count row", "count rows"),
}
_SUMMARY_FIELDS = ("time", "action", "agent_id", "outcome", "resource", "destination", "event_id")


def _json_ready(event: dict[str, Any]) -> dict[str, Any]:
    """An event for JSON output: ``attrs`` (JSON text in the ledger) embedded as JSON."""
    attrs = event.get("attrs")
    if isinstance(attrs, str):
        return {**event, "attrs": orjson.Fragment(attrs)}
    return event


def _objects(result: EqlResult) -> list[Any]:
    if result.kind in ("sequences", "samples"):
        return [
            {
                "join_keys": list(s.join_keys),
                "events": [_json_ready(e) for e in s.events],
            }
            for s in result.sequences
        ]
    if result.kind == "counts":
        return list(result.counts)
    return [_json_ready(e) for e in result.events]


def _summary_fields(events: list[dict[str, Any]]) -> list[str]:
    """The columns a table shows: the ledger's summary fields, else every field of the input."""
    present = list(dict.fromkeys(k for e in events for k, v in e.items() if v is not None))
    summary = [f for f in _SUMMARY_FIELDS if f in present]
    return summary if len(summary) >= 4 else present


def _sequence_table(result: EqlResult) -> Table:
    events = [e for s in result.sequences for e in s.events if "missing" not in e]
    fields = _summary_fields(events)
    view = Table(show_lines=False, header_style="bold")
    for name in ("#", "step", "join_keys", *fields):
        view.add_column(name, overflow="fold")
    for number, match in enumerate(result.sequences, 1):
        keys = ", ".join(str(k) for k in match.join_keys)
        for step, event in enumerate(match.events, 1):
            if "missing" in event:
                view.add_row(str(number), str(step), keys, "(missing)", *[""] * (len(fields) - 1))
            else:
                view.add_row(
                    str(number), str(step), keys, *[cell_text(event.get(f)) for f in fields]
                )
    return view


def print_eql(
    result: EqlResult, fmt: str, console: Console, stream: IO[bytes] | None = None
) -> None:
    """Write ``result`` as a table for people, or as JSON / JSON lines."""
    out = stream or sys.stdout.buffer
    if fmt == "table":
        if result.kind in ("sequences", "samples"):
            console.print(_sequence_table(result))
        elif result.kind == "counts":
            print_table(
                pa.Table.from_pylist(list(result.counts)) if result.counts else pa.table({}),
                console,
            )
        else:
            fields = _summary_fields(list(result.events))
            rows = [{f: e.get(f) for f in fields} for e in result.events]
            print_table(pa.Table.from_pylist(rows) if rows else pa.table({}), console)
        shown = len(_objects(result))
        noun = _NOUNS[result.kind][shown != 1]
        console.print(f"{shown} {noun} in {result.seconds * 1000:.0f} ms")
        return
    objects = _objects(result)
    if fmt == "jsonl":
        for item in objects:
            out.write(orjson.dumps(item, default=json_default, option=_JSON_OPTIONS) + b"\n")
    else:
        out.write(orjson.dumps(objects, default=json_default, option=_JSON_OPTIONS) + b"\n")
    out.flush()
