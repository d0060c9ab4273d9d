"""``chainsight eql`` driven for real: ledgers built with init and ingest, files via --input.

The command answers an EQL query (docs/eql.md) over the ledger's ``events`` view, or over a JSONL,
Parquet or CSV file. These tests check its output formats (table, json, jsonl; sequences as objects
with ``join_keys`` and ordered ``events``, ``{"missing": true}`` for a missing step, ``attrs``
embedded as JSON), ``--explain``/``--dialect``, ``--input`` with its field options, ``--max-rows``,
``--as-of``, and its errors and exit codes (0 ok, 1 a check failed, 2 bad usage).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from eql_helpers import MISSING_APPROVAL, THREE_STEPS, event
from typer.testing import CliRunner, Result

from api import cli
from api.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_ledger_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINSIGHT_LEDGER", raising=False)


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as a wide terminal, so cell text is not folded across lines."""
    monkeypatch.setattr(cli.console, "width", 250)


EVENTS = [
    event("chain-1", 0, "agent-chain", "secret", "secret.read", resource="secret://vault/prod/db"),
    event("llm-1", 1, "agent-chain", "llm", "llm.call",
          attrs={"model": {"name": "gpt-x"}, "tokens": 1200, "tags": ["a", "b"]}),
    event("chain-2", 20, "agent-chain", "config", "config.update"),
    event("chain-3", 50, "agent-chain", "job", "job.trigger", outcome="success"),
    # 65 minutes from first to last: outside maxspan
    event("slow-1", 0, "agent-slow", "secret", "secret.read"),
    event("slow-2", 30, "agent-slow", "config", "config.update"),
    event("slow-3", 5, "agent-slow", "job", "job.trigger", time="2026-03-01T11:05:00Z"),
    # read, approval, trigger
    event("ok-1", 0, "agent-approved", "secret", "secret.read"),
    event("ok-2", 5, "agent-approved", "approval", "approval.grant", approver="alice"),
    event("ok-3", 10, "agent-approved", "job", "job.trigger"),
]  # fmt: skip


def invoke(*args: str | Path) -> Result:
    # a wide console, so rich does not fold table cells
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def ok(*args: str | Path) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def truncation_note(stderr: str, shown: int) -> bool:
    """Whether stderr holds the note that only ``shown`` results were output."""
    text = squash(stderr)
    return (
        text.startswith("note:")
        and re.search(rf"\b{shown}\b", text) is not None
        and ("--max-rows" in text or "--size" in text)
    )


def squash(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_ledger(path: Path, records: list[dict[str, Any]]) -> Path:
    ok("init", "--ledger", path)
    ok("ingest", "--ledger", path, write_jsonl(path.parent / f"{path.name}.jsonl", records))
    return path


def eql_json(ledger: Path, query: str, *options: str) -> Any:
    return json.loads(ok("eql", "--ledger", ledger, "--format", "json", *options, query).stdout)


def sequence_ids(found: list[dict[str, Any]]) -> list[tuple[list[Any], list[str | None]]]:
    return [
        (s["join_keys"], [None if e.get("missing") else e["event_id"] for e in s["events"]])
        for s in found
    ]


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger holding EVENTS, ingested through the CLI (read-only for the tests)."""
    return make_ledger(tmp_path_factory.mktemp("eql-cli") / "ledger", EVENTS)


# -- help -----------------------------------------------------------------------------------------


def test_eql_has_help() -> None:
    text = squash(ok("eql", "--help").stdout)
    for option in ("--ledger", "--format", "--explain", "--dialect", "--input", "--as-of"):
        assert option in text
    assert "--category-field" in text and "--time-field" in text and "--tiebreaker" in text


def test_top_level_help_lists_eql() -> None:
    assert "eql" in ok("--help").stdout


# -- output formats -------------------------------------------------------------------------------


def test_table_of_events(ledger: Path) -> None:
    result = ok("eql", "--ledger", ledger, 'secret where action == "secret.read"')
    text = squash(result.stdout)
    for event_id in ("chain-1", "slow-1", "ok-1"):
        assert event_id in text
    assert "chain-2" not in text
    assert "3 events in" in text
    assert result.stderr == ""


def test_table_of_sequences_shows_steps_and_missing(ledger: Path) -> None:
    result = ok("eql", "--ledger", ledger, MISSING_APPROVAL)
    text = squash(result.stdout)
    assert "chain-1" in text and "chain-3" in text
    assert "(missing)" in text
    assert "agent-chain" in text
    assert "ok-1" not in text and "slow-1" not in text
    assert "1 sequence in" in text


def test_sequence_table_writes_times_as_the_event_table_does(ledger: Path) -> None:
    events = squash(ok("eql", "--ledger", ledger, 'any where event_id == "chain-1"').stdout)
    assert "2026-03-01T10:00:00Z" in events
    sequences = squash(ok("eql", "--ledger", ledger, THREE_STEPS).stdout)
    assert "2026-03-01T10:00:00Z" in sequences


def test_table_of_counts(ledger: Path) -> None:
    text = squash(ok("eql", "--ledger", ledger, "job where true | count agent_id").stdout)
    for agent in ("agent-chain", "agent-slow", "agent-approved"):
        assert agent in text
    assert "3 count rows" in text


def test_json_events(ledger: Path) -> None:
    found = eql_json(ledger, 'any where category == "llm" or action == "job.trigger"')
    assert isinstance(found, list)
    assert [e["event_id"] for e in found] == ["llm-1", "ok-3", "chain-3", "slow-3"]
    llm = found[0]
    # attrs is embedded as a JSON object, not a string holding JSON
    assert llm["attrs"] == {"model": {"name": "gpt-x"}, "tokens": 1200, "tags": ["a", "b"]}
    assert found[1]["attrs"] is None
    assert llm["time"] == "2026-03-01T10:01:00Z"
    assert len(llm["hash"]) == 64 and int(llm["hash"], 16) >= 0
    assert isinstance(llm["seq"], int)


def test_json_sequences_are_objects_with_join_keys_and_ordered_events(ledger: Path) -> None:
    found = eql_json(ledger, THREE_STEPS)
    assert sequence_ids(found) == [(["agent-chain"], ["chain-1", "chain-2", "chain-3"])]
    (match,) = found
    assert set(match) == {"join_keys", "events"}
    assert [e["action"] for e in match["events"]] == ["secret.read", "config.update", "job.trigger"]
    assert all(isinstance(e, dict) for e in match["events"])


def test_json_missing_step_is_a_placeholder(ledger: Path) -> None:
    found = eql_json(ledger, MISSING_APPROVAL)
    assert sequence_ids(found) == [(["agent-chain"], ["chain-1", None, "chain-3"])]
    assert found[0]["events"][1] == {"missing": True}


def test_json_attrs_inside_sequences_are_objects(ledger: Path) -> None:
    found = eql_json(ledger, "sequence by agent_id [secret where true] [llm where true]")
    assert sequence_ids(found) == [(["agent-chain"], ["chain-1", "llm-1"])]
    assert found[0]["events"][1]["attrs"]["model"] == {"name": "gpt-x"}


def test_json_samples(ledger: Path) -> None:
    found = eql_json(ledger, "sample by agent_id [secret where true] [job where true]")
    assert sequence_ids(found) == [
        (["agent-approved"], ["ok-1", "ok-3"]),
        (["agent-chain"], ["chain-1", "chain-3"]),
        (["agent-slow"], ["slow-1", "slow-3"]),
    ]


def test_json_counts(ledger: Path) -> None:
    assert eql_json(ledger, "secret where true | count") == [{"count": 3}]
    assert eql_json(ledger, "secret where false | count") == [{"count": 0}]


def test_json_unique_count(ledger: Path) -> None:
    found = eql_json(ledger, "any where true | unique_count agent_id")
    assert [(e["event_id"], e["count"]) for e in found] == [
        ("chain-1", 4),
        ("slow-1", 3),
        ("ok-1", 3),
    ]


def test_json_empty_result_is_an_empty_list(ledger: Path) -> None:
    assert eql_json(ledger, 'any where agent_id == "nobody"') == []
    assert eql_json(ledger, THREE_STEPS.replace("1h", "1m")) == []


def test_jsonl_is_one_object_per_line(ledger: Path) -> None:
    query = "secret where true | head 2"
    lines = ok("eql", "--ledger", ledger, "--format", "jsonl", query).stdout.splitlines()
    assert len(lines) == 2
    assert [json.loads(line) for line in lines] == eql_json(ledger, query)
    sequences = ok("eql", "--ledger", ledger, "-f", "jsonl", MISSING_APPROVAL).stdout
    (only,) = sequences.splitlines()
    assert json.loads(only)["events"][1] == {"missing": True}


def test_jsonl_of_nothing_is_empty(ledger: Path) -> None:
    assert ok("eql", "--ledger", ledger, "-f", "jsonl", "any where false").stdout == ""


# -- --explain ------------------------------------------------------------------------------------


def test_explain_prints_sql_and_runs_nothing(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("--explain ran the query")

    monkeypatch.setattr("api.cli.execute_eql", must_not_run)
    result = ok("eql", "--ledger", ledger, "--explain", THREE_STEPS)
    sql = result.stdout
    assert "OVER" in sql.upper()
    assert "events" in sql
    assert "chain-1" not in sql and "sequences in" not in sql
    assert sqlglot.parse_one(sql, read="duckdb") is not None


def test_explain_of_an_event_query(ledger: Path) -> None:
    sql = ok("eql", "--ledger", ledger, "--explain", 'secret where action == "secret.read"').stdout
    assert "secret.read" in sql
    assert "ORDER BY" in sql.upper()
    assert "chain-1" not in sql


def test_explain_dialect_spark(ledger: Path) -> None:
    duck = ok("eql", "--ledger", ledger, "--explain", THREE_STEPS).stdout
    spark = ok("eql", "--ledger", ledger, "--explain", "--dialect", "spark", THREE_STEPS).stdout
    assert spark != duck
    assert "`agent_id`" in spark and '"agent_id"' not in spark
    assert "OVER" in spark.upper()
    assert sqlglot.parse_one(spark, read="spark") is not None


def test_explain_unknown_dialect_is_a_clear_error(ledger: Path) -> None:
    result = invoke("eql", "--ledger", ledger, "--explain", "--dialect", "nosuch", THREE_STEPS)
    assert isinstance(result.exception, SystemExit)
    assert result.exit_code in (1, 2)
    assert "nosuch" in result.stderr


# -- --input --------------------------------------------------------------------------------------

# Two process events at the same time, in the file in the opposite order to serial_event_id.
PROCESS_RECORDS = [
    {"serial_event_id": 3, "timestamp": "2026-03-01T10:00:01Z", "event_type": "process",
     "pid": 4, "process_name": "late.exe"},
    {"serial_event_id": 1, "timestamp": "2026-03-01T10:00:01Z", "event_type": "process",
     "pid": 4, "process_name": "early.exe"},
    {"serial_event_id": 2, "timestamp": "2026-03-01T10:00:00Z", "event_type": "file",
     "pid": 4, "process_name": "file.exe"},
    {"serial_event_id": 4, "timestamp": "2026-03-01T10:00:02Z", "event_type": "process",
     "pid": 8, "process_name": "other.exe"},
]  # fmt: skip
INPUT_OPTIONS = ("--category-field", "event_type", "--time-field", "timestamp")


def write_input(directory: Path, suffix: str) -> Path:
    path = directory / f"events.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, PROCESS_RECORDS)
    elif suffix == "parquet":
        pq.write_table(pa.Table.from_pylist(PROCESS_RECORDS), path)
    else:
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(PROCESS_RECORDS[0]))
            writer.writeheader()
            writer.writerows(PROCESS_RECORDS)
    return path


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "csv"])
def test_input_file_with_tiebreaker(tmp_path: Path, suffix: str) -> None:
    source = write_input(tmp_path, suffix)
    result = ok(
        "eql", "--input", source, *INPUT_OPTIONS, "--tiebreaker", "serial_event_id",
        "--format", "json", "process where pid == 4",
    )  # fmt: skip
    found = json.loads(result.stdout)
    assert [e["serial_event_id"] for e in found] == [1, 3]
    assert [e["process_name"] for e in found] == ["early.exe", "late.exe"]
    assert set(found[0]) == {"serial_event_id", "timestamp", "event_type", "pid", "process_name"}


@pytest.mark.parametrize("suffix", ["jsonl", "parquet", "csv"])
def test_input_file_without_tiebreaker_keeps_file_order(tmp_path: Path, suffix: str) -> None:
    source = write_input(tmp_path, suffix)
    result = ok("eql", "--input", source, *INPUT_OPTIONS, "-f", "jsonl", "process where pid == 4")
    assert [json.loads(line)["serial_event_id"] for line in result.stdout.splitlines()] == [3, 1]


def test_input_file_sequence_and_table(tmp_path: Path) -> None:
    source = write_input(tmp_path, "jsonl")
    query = "sequence by pid [file where true] [process where true]"
    found = json.loads(ok("eql", "--input", source, *INPUT_OPTIONS, "-f", "json", query).stdout)
    assert [s["join_keys"] for s in found] == [[4]]
    assert [e["serial_event_id"] for e in found[0]["events"]] == [2, 3]
    table = squash(ok("eql", "--input", source, *INPUT_OPTIONS, "process where pid == 8").stdout)
    assert "other.exe" in table and "serial_event_id" in table and "1 event in" in table


def test_input_file_explain(tmp_path: Path) -> None:
    source = write_input(tmp_path, "parquet")
    sql = ok("eql", "--input", source, *INPUT_OPTIONS, "--explain", "process where pid == 4").stdout
    assert '"event_type"' in sql and '"pid"' in sql
    assert "early.exe" not in sql


def test_input_file_max_rows(tmp_path: Path) -> None:
    source = write_input(tmp_path, "csv")
    result = ok(
        "eql", "--input", source, *INPUT_OPTIONS, "--max-rows", "1", "-f", "json",
        "process where true",
    )  # fmt: skip
    assert len(json.loads(result.stdout)) == 1
    assert truncation_note(result.stderr, 1)


def test_input_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.jsonl"
    result = invoke("eql", "--input", missing, "any where true")
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    message = squash(result.stderr)
    assert "error:" in message
    assert "absent.jsonl" in message and "no such file" in message
    assert result.stdout == ""


def test_input_missing_file_is_bad_usage(tmp_path: Path) -> None:
    result = invoke("eql", "--input", tmp_path / "absent.jsonl", "any where true")
    assert result.exit_code == 2


def test_input_unknown_file_type(tmp_path: Path) -> None:
    source = tmp_path / "events.txt"
    source.write_text("x\n", encoding="utf-8")
    result = invoke("eql", "--input", source, "any where true")
    assert result.exit_code in (1, 2)
    assert "unknown file type" in squash(result.stderr)
    assert ".parquet" in result.stderr


def test_input_unknown_time_field_names_it(tmp_path: Path) -> None:
    source = write_input(tmp_path, "jsonl")
    result = invoke("eql", "--input", source, "--time-field", "ts", "any where true")
    assert result.exit_code == 1
    message = squash(result.stderr)
    assert "'ts'" in message and "timestamp" in message


# -- errors ---------------------------------------------------------------------------------------


def test_syntax_error_exits_1_with_line_column_and_caret(ledger: Path) -> None:
    bad_line = 'and agent_id == == "agent-chain"'
    result = invoke("eql", "--ledger", ledger, f"secret where true\n{bad_line}")
    # QueryError -> 1 (as for sql): the documented exit codes class a bad query as a failed check
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    column = bad_line.index("== ==") + len("== ") + 1
    assert "error:" in lines[0]
    assert f"line 2, column {column}" in lines[0]
    source = lines.index(bad_line)
    assert lines[source + 1] == " " * (column - 1) + "^"


def test_syntax_error_in_a_sequence_shows_the_query_line(ledger: Path) -> None:
    query = "sequence [secret where true] [job where action == ]"
    result = invoke("eql", "--ledger", ledger, query)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert query in lines
    caret = lines[lines.index(query) + 1]
    assert caret == " " * query.index("]", query.index("==")) + "^"


def test_syntax_error_with_a_closing_tag_in_a_string_is_reported(ledger: Path) -> None:
    result = invoke("eql", "--ledger", ledger, 'any where resource == "[/x]" and')
    assert isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    assert '"[/x]"' in result.stderr


def test_unknown_field_exits_1_and_suggests(ledger: Path) -> None:
    result = invoke("eql", "--ledger", ledger, 'secret where agent_di == "agent-chain"')
    assert result.exit_code == 1
    message = squash(result.stderr)
    assert "'agent_di'" in message and "agent_id" in message
    assert result.stdout == ""


@pytest.mark.parametrize("fmt", ["xml", "csv", "parquet"])
def test_unknown_format_is_bad_usage(ledger: Path, fmt: str) -> None:
    result = invoke("eql", "--ledger", ledger, "--format", fmt, "any where true")
    assert result.exit_code == 2
    message = squash(result.stderr)
    assert "table, json, jsonl" in message and repr(fmt) in message
    assert result.stdout == ""


def test_missing_ledger_is_bad_usage(tmp_path: Path) -> None:
    result = invoke("eql", "--ledger", tmp_path / "nope", "any where true")
    assert result.exit_code == 2
    assert "no ledger" in squash(result.stderr)
    assert not (tmp_path / "nope").exists()


def test_ledger_from_the_environment(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINSIGHT_LEDGER", str(ledger))
    found = json.loads(ok("eql", "-f", "json", "secret where true | count").stdout)
    assert found == [{"count": 3}]


# -- --max-rows and --as-of -----------------------------------------------------------------------


def test_max_rows_truncation_prints_a_note(ledger: Path) -> None:
    result = ok("eql", "--ledger", ledger, "--max-rows", "2", "-f", "json", "any where true")
    assert len(json.loads(result.stdout)) == 2  # the note goes to stderr: stdout stays JSON
    assert truncation_note(result.stderr, 2)
    table = ok("eql", "--ledger", ledger, "--max-rows", "2", "any where true")
    assert "2 events in" in squash(table.stdout)
    assert truncation_note(table.stderr, 2)


def test_no_note_when_nothing_is_cut(ledger: Path) -> None:
    result = ok("eql", "--ledger", ledger, "--max-rows", str(len(EVENTS)), "any where true")
    assert result.stderr == ""


def test_max_rows_on_sequences(ledger: Path) -> None:
    query = "sequence by agent_id [secret where true] [job where true]"
    assert len(eql_json(ledger, query)) == 3
    result = ok("eql", "--ledger", ledger, "--max-rows", "1", "-f", "json", query)
    assert sequence_ids(json.loads(result.stdout)) == [(["agent-approved"], ["ok-1", "ok-3"])]
    assert truncation_note(result.stderr, 1)


def test_as_of_a_checkpoint(tmp_path: Path) -> None:
    path = make_ledger(tmp_path / "ledger", EVENTS)
    ok("checkpoint", "--ledger", path)
    pinned = eql_json(path, THREE_STEPS, "--as-of", "1")
    late = [
        event("late-1", 0, "agent-late", "secret", "secret.read"),
        event("late-2", 1, "agent-late", "config", "config.create"),
        event("late-3", 2, "agent-late", "job", "job.trigger"),
    ]
    ok("ingest", "--ledger", path, write_jsonl(tmp_path / "late.jsonl", late))
    now = eql_json(path, THREE_STEPS)
    assert sequence_ids(now) == [
        (["agent-late"], ["late-1", "late-2", "late-3"]),
        (["agent-chain"], ["chain-1", "chain-2", "chain-3"]),
    ]
    assert eql_json(path, THREE_STEPS, "--as-of", "1") == pinned
    assert sequence_ids(pinned) == [(["agent-chain"], ["chain-1", "chain-2", "chain-3"])]
    assert eql_json(path, "any where true | count", "--as-of", "1") == [{"count": len(EVENTS)}]


def test_as_of_an_unknown_checkpoint(ledger: Path) -> None:
    result = invoke("eql", "--ledger", ledger, "--as-of", "7", "any where true")
    assert result.exit_code == 1
    assert "no checkpoint 7" in squash(result.stderr)
