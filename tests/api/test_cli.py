"""The ``chainsight`` command line, driven for real.

Most tests run ``api.cli.app`` in-process through typer's ``CliRunner`` against ledgers on disk;
a few run the installed console script in a subprocess to check the entry point and exit codes end
to end (0 ok, 1 a check failed, 2 bad usage).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ledger_helpers import tree_digest as snapshot
from pyarrow import ipc
from typer.testing import CliRunner, Result

from api.cli import app
from query import Ledger

CONSOLE_SCRIPT = Path(sys.executable).with_name("chainsight")
COMMANDS = ("init", "ingest", "verify", "sql", "demo")

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_ledger_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINSIGHT_LEDGER", raising=False)


def event(i: int, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": f"evt-{i:04d}",
        "time": f"2026-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "agent_id": f"agent-{i % 3}",
        "category": "secret" if i % 2 else "tool",
        "action": "secret.read" if i % 2 else "tool.call",
        "session_id": f"s-{i % 4}",
        "outcome": "success",
    }
    record.update(fields)
    return record


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def invoke(*args: str | Path, input: str | bytes | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], input=input)


def squash(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def one_json(result: Result) -> dict[str, Any]:
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def count(ledger: Path, view: str = "events") -> int:
    value = Ledger.open(ledger).sql(f"SELECT count(*) AS n FROM {view}").column("n")[0].as_py()
    assert isinstance(value, int)
    return value


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """An initialised, empty ledger."""
    path = tmp_path / "ledger"
    result = invoke("init", "--ledger", path)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def loaded(ledger: Path, tmp_path: Path) -> Path:
    """A ledger holding events 0..5 (flushed to Parquet by the CLI)."""
    source = write_jsonl(tmp_path / "loaded.jsonl", [event(i) for i in range(6)])
    result = invoke("ingest", "--ledger", ledger, source)
    assert result.exit_code == 0, result.output
    return ledger


# -- help and usage -------------------------------------------------------------------------------


def test_top_level_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
    assert "--ledger" in result.stdout
    assert command in result.stdout


def test_no_arguments_shows_help() -> None:
    result = invoke()
    assert "Usage" in result.output
    assert result.exit_code in (0, 2)


@pytest.mark.parametrize(
    "args",
    [
        ("init", "--no-such-option"),
        ("no-such-command",),
        ("ingest",),  # FILE is required
        ("init", "--format", "xml"),
        ("verify", "--format", "yaml"),
        ("sql", "--format", "xlsx", "SELECT 1"),
        ("ingest", "--input-format", "xml", "x.jsonl"),
    ],
)
def test_bad_usage_exits_2(args: tuple[str, ...], ledger: Path) -> None:
    result = invoke(*args, "--ledger", ledger) if args[0] != "no-such-command" else invoke(*args)
    assert result.exit_code == 2, result.output


# -- init -----------------------------------------------------------------------------------------


def test_init_creates_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "new" / "ledger"
    result = invoke("init", "--ledger", path)
    assert result.exit_code == 0, result.output
    assert (path / "ledger.json").is_file()
    ledger_id = Ledger.open(path).ledger_id
    assert ledger_id in squash(result.stdout)
    assert count(path) == 0


def test_init_twice_is_bad_usage_and_leaves_the_ledger(ledger: Path) -> None:
    before = snapshot(ledger)
    result = invoke("init", "--ledger", ledger)
    assert result.exit_code == 2
    assert "already exists" in squash(result.stderr)
    assert str(ledger) in squash(result.stderr)
    assert snapshot(ledger) == before


def test_init_json(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    result = invoke("init", "--ledger", path, "--format", "json")
    assert result.exit_code == 0, result.output
    record = one_json(result)
    assert {"ledger", "ledger_id"} <= set(record)
    assert record["ledger_id"] == Ledger.open(path).ledger_id
    assert Path(record["ledger"]) == path


# -- ingest: formats ------------------------------------------------------------------------------


def test_ingest_jsonl(ledger: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "events.jsonl", [event(i) for i in range(5)])
    result = invoke("ingest", "--ledger", ledger, source, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = one_json(result)
    assert {"files", "appended", "duplicates", "writer_id", "seconds"} <= set(summary)
    assert summary["files"] == 1
    assert summary["appended"] == 5
    assert summary["duplicates"] == 0
    table = Ledger.open(ledger).sql("SELECT event_id, writer_id FROM events ORDER BY event_id")
    assert table.column("event_id").to_pylist() == [f"evt-{i:04d}" for i in range(5)]
    assert set(table.column("writer_id").to_pylist()) == {summary["writer_id"]}


def test_ingest_table_output_is_a_summary(ledger: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "events.jsonl", [event(i) for i in range(3)])
    result = invoke("ingest", "--ledger", ledger, source)
    assert result.exit_code == 0, result.output
    text = squash(result.stdout)
    assert "Ingested 3 events (0 already stored) from 1 file(s)" in text


def test_ingest_json_array(ledger: Path, tmp_path: Path) -> None:
    source = tmp_path / "events.json"
    source.write_text(json.dumps([event(i) for i in range(4)], indent=2), encoding="utf-8")
    result = invoke("ingest", "--ledger", ledger, source, "--format", "json")
    assert result.exit_code == 0, result.output
    assert one_json(result)["appended"] == 4
    assert count(ledger) == 4


def test_ingest_parquet(ledger: Path, tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["p0", "p1"],
            "time": pa.array(
                [datetime(2026, 3, 1, 10, 0, 0, 123456), datetime(2026, 3, 1, 11)],
                pa.timestamp("us"),  # no zone: read as UTC
            ),
            "agent_id": ["a", "b"],
            "category": ["identity", "network"],
            "action": ["identity.assume", "email.send"],
            "credential_scopes": pa.array([["read", "write"], None], pa.list_(pa.string())),
            "intent_scopes": pa.array([[], ["deploy"]], pa.list_(pa.string())),
            "attrs": ['{"model":"m1","n":2}', None],
            "external": pa.array([None, True]),
            "bytes": pa.array([None, 10], pa.int64()),
        }
    )
    source = tmp_path / "events.parquet"
    pq.write_table(table, source)
    result = invoke("ingest", "--ledger", ledger, source, "--format", "json")
    assert result.exit_code == 0, result.output
    assert one_json(result)["appended"] == 2
    rows = (
        Ledger.open(ledger)
        .sql(
            "SELECT event_id, strftime(time, '%Y-%m-%dT%H:%M:%S.%fZ') AS t, credential_scopes, "
            "intent_scopes, attrs->>'$.model' AS model, external, bytes "
            "FROM events ORDER BY event_id"
        )
        .to_pylist()
    )
    assert rows == [
        {
            "event_id": "p0",
            "t": "2026-03-01T10:00:00.123456Z",
            "credential_scopes": ["read", "write"],
            "intent_scopes": [],
            "model": "m1",
            "external": None,
            "bytes": None,
        },
        {
            "event_id": "p1",
            "t": "2026-03-01T11:00:00.000000Z",
            "credential_scopes": None,
            "intent_scopes": ["deploy"],
            "model": None,
            "external": True,
            "bytes": 10,
        },
    ]


def test_ingest_csv(ledger: Path, tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    header = [
        "event_id",
        "time",
        "agent_id",
        "category",
        "action",
        "credential_scopes",
        "attrs",
        "external",
        "privileged",
        "bytes",
        "session_id",
    ]
    base = ["2026-03-01T10:00:00Z", "a", "network", "email.send"]
    with source.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerow(
            ["c0", *base, '["x","y"]', '{"k":[1,2],"model":"m"}', "true", "FALSE", "42", "s"]
        )
        writer.writerow(["c1", *base, "", "", "false", "", "", ""])
    result = invoke("ingest", "--ledger", ledger, source, "--format", "json")
    assert result.exit_code == 0, result.output
    assert one_json(result)["appended"] == 2
    rows = (
        Ledger.open(ledger)
        .sql(
            "SELECT event_id, credential_scopes, attrs->>'$.model' AS model, "
            "CAST(attrs->'$.k' AS INTEGER[]) AS k, external, privileged, bytes, session_id "
            "FROM events ORDER BY event_id"
        )
        .to_pylist()
    )
    assert rows == [
        {
            "event_id": "c0",
            "credential_scopes": ["x", "y"],
            "model": "m",
            "k": [1, 2],
            "external": True,
            "privileged": False,
            "bytes": 42,
            "session_id": "s",
        },
        {
            "event_id": "c1",
            "credential_scopes": None,
            "model": None,
            "k": None,
            "external": False,
            "privileged": None,
            "bytes": None,
            "session_id": None,  # an empty cell is an absent field, not ""
        },
    ]


def test_ingest_jsonl_gz(ledger: Path, tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl.gz"
    with gzip.open(source, "wt", encoding="utf-8") as out:
        for i in range(3):
            out.write(json.dumps(event(i)) + "\n")
    result = invoke("ingest", "--ledger", ledger, source, "--format", "json")
    assert result.exit_code == 0, result.output
    assert one_json(result)["appended"] == 3
    assert count(ledger) == 3


@pytest.mark.parametrize("shape", ["ndjson", "array"])
def test_ingest_stdin(ledger: Path, shape: str) -> None:
    records = [event(i) for i in range(3)]
    if shape == "ndjson":
        payload = "".join(json.dumps(r) + "\n" for r in records)
    else:
        payload = json.dumps(records)
    result = invoke("ingest", "--ledger", ledger, "-", "--format", "json", input=payload)
    assert result.exit_code == 0, result.output
    assert one_json(result)["appended"] == 3
    assert count(ledger) == 3


def test_ingest_several_files(ledger: Path, tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", [event(i) for i in range(3)])
    second = tmp_path / "b.json"
    second.write_text(json.dumps([event(i) for i in range(3, 5)]), encoding="utf-8")
    third = write_jsonl(tmp_path / "c.jsonl", [event(i) for i in (4, 5, 6)])  # evt-0004 again
    result = invoke("ingest", "--ledger", ledger, first, second, third, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = one_json(result)
    assert (summary["files"], summary["appended"], summary["duplicates"]) == (3, 7, 1)
    assert count(ledger) == 7
    assert count(ledger, "events_raw") == 7


def test_ingest_same_file_twice_stores_nothing_new(ledger: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "events.jsonl", [event(i) for i in range(5)])
    assert invoke("ingest", "--ledger", ledger, source).exit_code == 0
    before = snapshot(ledger)
    result = invoke("ingest", "--ledger", ledger, source, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = one_json(result)
    assert (summary["appended"], summary["duplicates"]) == (0, 5)
    assert count(ledger, "events_raw") == 5
    assert snapshot(ledger) == before
    text = invoke("ingest", "--ledger", ledger, source)
    assert "Ingested 0 events (5 already stored)" in squash(text.stdout)


def test_ingest_missing_ledger_is_bad_usage(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "events.jsonl", [event(0)])
    result = invoke("ingest", "--ledger", tmp_path / "nope", source)
    assert result.exit_code == 2
    assert "no ledger" in squash(result.stderr)
    assert not (tmp_path / "nope").exists()


def test_ingest_missing_file_is_bad_usage(ledger: Path, tmp_path: Path) -> None:
    result = invoke("ingest", "--ledger", ledger, tmp_path / "missing.jsonl")
    assert result.exit_code == 2
    assert "missing.jsonl" in squash(result.stderr)


def test_ingest_missing_file_without_suffix_is_bad_usage(ledger: Path, tmp_path: Path) -> None:
    result = invoke("ingest", "--ledger", ledger, tmp_path / "events")
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)


# -- ingest: rejected input -----------------------------------------------------------------------


def test_bad_record_rejects_the_file_and_changes_nothing(loaded: Path, tmp_path: Path) -> None:
    records = [event(i) for i in range(10, 15)]
    records[2]["category"] = "teleport"  # line 3
    source = write_jsonl(tmp_path / "bad.jsonl", records)
    before = snapshot(loaded)
    result = invoke("ingest", "--ledger", loaded, source)
    assert result.exit_code == 1
    message = squash(result.stderr)
    assert "nothing stored" in message
    assert "line 3" in message
    assert "category" in message
    assert "teleport" in message
    assert "line 1" not in message and "line 2:" not in message
    assert snapshot(loaded) == before
    assert count(loaded) == 6


def test_invalid_json_line_rejects_the_file(loaded: Path, tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    lines = [json.dumps(event(20)), json.dumps(event(21)), '{"event_id": "evt-x", ']
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = snapshot(loaded)
    result = invoke("ingest", "--ledger", loaded, source, "--format", "json")
    assert result.exit_code == 1
    message = squash(result.stderr)
    assert "line 3" in message
    assert "not valid JSON" in message
    assert result.stdout == ""  # no summary on failure
    assert snapshot(loaded) == before


def test_every_problem_is_listed_with_its_location(ledger: Path, tmp_path: Path) -> None:
    records = [event(i) for i in range(4)]
    del records[0]["agent_id"]
    records[2]["time"] = "yesterday"
    records[3]["colour"] = "blue"
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(records), encoding="utf-8")
    result = invoke("ingest", "--ledger", ledger, source)
    assert result.exit_code == 1
    message = squash(result.stderr)
    assert "item 0: field 'agent_id'" in message
    assert "item 2: field 'time'" in message
    assert "item 3: field 'colour'" in message
    assert "item 1" not in message
    assert count(ledger) == 0


def test_bad_csv_cell_is_named_by_line_and_field(ledger: Path, tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text(
        "event_id,time,agent_id,category,action,bytes\n"
        "c0,2026-03-01T10:00:00Z,a,data,data.read,10\n"
        "c1,2026-03-01T10:00:00Z,a,data,data.read,lots\n",
        encoding="utf-8",
    )
    result = invoke("ingest", "--ledger", ledger, source)
    assert result.exit_code == 1
    message = squash(result.stderr)
    assert "line 3" in message
    assert "'bytes'" in message
    assert count(ledger) == 0


def test_bad_stdin_rejects_everything(loaded: Path) -> None:
    before = snapshot(loaded)
    payload = json.dumps(event(30)) + "\n" + json.dumps({**event(31), "outcome": "maybe"}) + "\n"
    result = invoke("ingest", "--ledger", loaded, "-", input=payload)
    assert result.exit_code == 1
    assert "line 2" in squash(result.stderr)
    assert "outcome" in squash(result.stderr)
    assert snapshot(loaded) == before


def test_each_file_is_all_or_nothing(ledger: Path, tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [event(i) for i in range(3)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [event(10), {**event(11), "category": "?"}])
    result = invoke("ingest", "--ledger", ledger, good, bad)
    assert result.exit_code == 1
    assert "line 2" in squash(result.stderr)
    ids = Ledger.open(ledger).sql("SELECT event_id FROM events ORDER BY 1").column(0).to_pylist()
    assert ids == ["evt-0000", "evt-0001", "evt-0002"]  # the good file, none of the bad one


# -- where the ledger is --------------------------------------------------------------------------


def test_default_ledger_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert invoke("init").exit_code == 0
    assert (tmp_path / "chainsight-ledger" / "ledger.json").is_file()
    write_jsonl(tmp_path / "events.jsonl", [event(0), event(1)])
    assert invoke("ingest", "events.jsonl").exit_code == 0
    assert invoke("verify").exit_code == 0
    result = invoke("sql", "--format", "csv", "SELECT count(*) AS n FROM events")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["n", "2"]


def test_environment_variable_names_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "from-env"
    monkeypatch.setenv("CHAINSIGHT_LEDGER", str(target))
    assert invoke("init").exit_code == 0
    assert (target / "ledger.json").is_file()
    assert not (tmp_path / "chainsight-ledger").exists()
    write_jsonl(tmp_path / "events.jsonl", [event(0)])
    assert invoke("ingest", "events.jsonl").exit_code == 0
    assert count(target) == 1


def test_ledger_option_beats_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    from_env = tmp_path / "from-env"
    from_option = tmp_path / "from-option"
    monkeypatch.setenv("CHAINSIGHT_LEDGER", str(from_env))
    assert invoke("init").exit_code == 0
    assert invoke("init", "--ledger", from_option).exit_code == 0
    write_jsonl(tmp_path / "events.jsonl", [event(0), event(1)])
    assert invoke("ingest", "--ledger", from_option, "events.jsonl").exit_code == 0
    assert count(from_option) == 2
    assert count(from_env) == 0
    result = invoke("sql", "--format", "csv", "SELECT count(*) AS n FROM events")
    assert result.stdout.splitlines() == ["n", "0"]  # the environment's ledger


def test_empty_environment_variable_falls_back_to_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHAINSIGHT_LEDGER", "")
    assert invoke("init").exit_code == 0
    assert (tmp_path / "chainsight-ledger" / "ledger.json").is_file()


# -- verify ---------------------------------------------------------------------------------------


def test_verify_ok(loaded: Path) -> None:
    result = invoke("verify", "--ledger", loaded)
    assert result.exit_code == 0, result.output
    text = squash(result.stdout)
    assert "OK" in text
    assert "6 events in 1 writer log(s)" in text


def test_verify_json(loaded: Path) -> None:
    result = invoke("verify", "--ledger", loaded, "--format", "json")
    assert result.exit_code == 0, result.output
    report = one_json(result)
    assert {"ok", "events", "writers", "problems", "notes", "seconds"} <= set(report)
    assert report["ok"] is True
    assert report["events"] == 6
    assert report["problems"] == []
    (writer,) = report["writers"]
    assert writer["events"] == 6
    assert writer["last_seq"] == 5


def test_verify_empty_ledger(ledger: Path) -> None:
    result = invoke("verify", "--ledger", ledger, "--format", "json")
    assert result.exit_code == 0, result.output
    assert one_json(result)["events"] == 0


def test_verify_missing_ledger_is_bad_usage(tmp_path: Path) -> None:
    result = invoke("verify", "--ledger", tmp_path / "nope")
    assert result.exit_code == 2
    assert "no ledger" in squash(result.stderr)


def _rewrite_cell(ledger: Path, column: str, row: int, value: str) -> tuple[Path, str]:
    """Change one cell of the ledger's only segment in place; return the file and its writer."""
    (segment,) = sorted(ledger.glob("writers/*/segments/*.parquet"))
    table = pq.read_table(segment)
    cells = table.column(column).to_pylist()
    cells[row] = value
    index = table.schema.get_field_index(column)
    field = table.schema.field(index)
    table = table.set_column(index, field, pa.array(cells, field.type))
    pq.write_table(table, segment, compression="zstd")
    return segment, segment.parent.parent.name


def test_verify_detects_a_rewritten_parquet_cell(loaded: Path) -> None:
    segment, writer_id = _rewrite_cell(loaded, "agent_id", 3, "agent-evil")
    assert count(loaded) == 6  # the file is still a readable segment
    result = invoke("verify", "--ledger", loaded)
    assert result.exit_code == 1
    text = squash(result.stdout)
    assert "FAIL" in text
    assert writer_id in text
    assert "seq 3" in text
    assert segment.name in text
    assert "1 problem(s)" in text

    as_json = invoke("verify", "--ledger", loaded, "--format", "json")
    assert as_json.exit_code == 1
    report = one_json(as_json)
    assert report["ok"] is False
    (problem,) = report["problems"]
    assert problem["writer_id"] == writer_id
    assert problem["seq"] == 3
    assert problem["file"] == segment.name


# -- sql ------------------------------------------------------------------------------------------

RESULT_QUERY = (
    "SELECT event_id, time, agent_id, credential_scopes, attrs, external, bytes "
    "FROM events ORDER BY event_id"
)


@pytest.fixture
def varied(ledger: Path, tmp_path: Path) -> Path:
    """A ledger with lists, attrs, bools, ints and nulls to check every output format on."""
    records = [
        event(0, credential_scopes=["a", "b"], attrs={"model": "m", "n": [1, 2]}, bytes=5),
        event(1, external=True, time="2026-03-01T10:00:01.5Z"),
        event(2, external=False, attrs={"quote": 'say "hi", ok'}),
    ]
    source = write_jsonl(tmp_path / "varied.jsonl", records)
    assert invoke("ingest", "--ledger", ledger, source).exit_code == 0
    return ledger


EXPECTED_ROWS: list[dict[str, Any]] = [
    {
        "event_id": "evt-0000",
        "time": "2026-03-01T10:00:00Z",
        "agent_id": "agent-0",
        "credential_scopes": ["a", "b"],
        "attrs": {"model": "m", "n": [1, 2]},
        "external": None,
        "bytes": 5,
    },
    {
        "event_id": "evt-0001",
        "time": "2026-03-01T10:00:01.500000Z",
        "agent_id": "agent-1",
        "credential_scopes": None,
        "attrs": None,
        "external": True,
        "bytes": None,
    },
    {
        "event_id": "evt-0002",
        "time": "2026-03-01T10:00:02Z",
        "agent_id": "agent-2",
        "credential_scopes": None,
        "attrs": {"quote": 'say "hi", ok'},
        "external": False,
        "bytes": None,
    },
]


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _same_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "time": _iso(r["time"])} for r in rows]


def test_sql_table(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "SELECT event_id, agent_id FROM events ORDER BY 1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("event_id" in line and "agent_id" in line for line in lines)
    for i in range(3):
        assert any(f"evt-000{i}" in line and f"agent-{i}" in line for line in lines)


def test_sql_json(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "--format", "json", RESULT_QUERY)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert _same_time(rows) == _same_time(EXPECTED_ROWS)  # attrs is JSON, not a string


def test_sql_jsonl(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "--format", "jsonl", RESULT_QUERY)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert _same_time(rows) == _same_time(EXPECTED_ROWS)


def test_sql_json_hashes_are_hex(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "--format", "jsonl", "SELECT hash FROM events")
    assert result.exit_code == 0, result.output
    stored = Ledger.open(varied).sql("SELECT hash FROM events").column("hash").to_pylist()
    printed = [json.loads(line)["hash"] for line in result.stdout.splitlines()]
    assert sorted(printed) == sorted(h.hex() for h in stored)


def test_sql_csv(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "--format", "csv", RESULT_QUERY)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == list(EXPECTED_ROWS[0])
    assert [r["event_id"] for r in rows] == ["evt-0000", "evt-0001", "evt-0002"]
    assert [_iso(r["time"]) for r in rows] == [_iso(r["time"]) for r in EXPECTED_ROWS]
    assert json.loads(rows[0]["credential_scopes"]) == ["a", "b"]
    assert json.loads(rows[0]["attrs"]) == {"model": "m", "n": [1, 2]}
    assert json.loads(rows[2]["attrs"]) == {"quote": 'say "hi", ok'}
    assert [r["external"] for r in rows] == ["", "true", "false"]
    assert [r["bytes"] for r in rows] == ["5", "", ""]
    assert rows[1]["attrs"] == ""


def test_sql_csv_to_file(varied: Path, tmp_path: Path) -> None:
    out = tmp_path / "answer.csv"
    result = invoke(
        "sql",
        "--ledger",
        varied,
        "--format",
        "csv",
        "--out",
        out,
        "SELECT event_id FROM events ORDER BY 1",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert out.read_text(encoding="utf-8").splitlines() == [
        "event_id",
        "evt-0000",
        "evt-0001",
        "evt-0002",
    ]


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_sql_binary_formats_to_file(varied: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"answer.{fmt}"
    result = invoke("sql", "--ledger", varied, "--format", fmt, "--out", out, RESULT_QUERY)
    assert result.exit_code == 0, result.output
    if fmt == "parquet":
        written = pq.read_table(out)
    else:
        with ipc.open_file(out) as reader:
            written = reader.read_all()
    expected = Ledger.open(varied).sql(RESULT_QUERY)
    assert written.column_names == expected.column_names
    assert written.to_pylist() == expected.to_pylist()
    assert written.schema.field("time").type == expected.schema.field("time").type
    assert pa.types.is_list(written.schema.field("credential_scopes").type)


def test_sql_parquet_to_stdout(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "--format", "parquet", RESULT_QUERY)
    assert result.exit_code == 0, result.output
    written = pq.read_table(pa.BufferReader(result.stdout_bytes))
    assert written.to_pylist() == Ledger.open(varied).sql(RESULT_QUERY).to_pylist()


def test_sql_max_rows_truncates_with_a_note(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "--format", "csv", "--max-rows", "2", RESULT_QUERY)
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 2
    assert "truncated at 2 rows" in squash(result.stderr)
    whole = invoke("sql", "--ledger", varied, "--format", "csv", "--max-rows", "3", RESULT_QUERY)
    assert len(list(csv.DictReader(io.StringIO(whole.stdout)))) == 3
    assert "truncated" not in whole.stderr


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("DROP VIEW events", "DROP"),
        ("COPY (SELECT * FROM events) TO '{out}'", "COPY"),
        ("ATTACH '{out}' AS other", "ATTACH"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM '/etc/passwd'", "reading files"),
        ("SELECT 1; SELECT * FROM events", "exactly one statement"),
        ("INSERT INTO events_raw SELECT * FROM events_raw", "INSERT"),
    ],
)
def test_sql_refused(varied: Path, tmp_path: Path, statement: str, reason: str) -> None:
    out = tmp_path / "out.parquet"
    copied = tmp_path / "copied"
    before = snapshot(varied)
    result = invoke(
        "sql",
        "--ledger",
        varied,
        "--format",
        "parquet",
        "--out",
        out,
        statement.format(out=copied),
    )
    assert result.exit_code == 1
    assert reason in squash(result.stderr)
    assert not out.exists()
    assert not copied.exists()
    assert snapshot(varied) == before


def test_sql_syntax_error_has_line_column_and_caret(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "SELECT event_id\nFROM events WHERE = = 1")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert "syntax error at line 2, column" in lines[0]
    source_line = next(i for i, line in enumerate(lines) if "FROM events WHERE = = 1" in line)
    assert lines[source_line + 1].strip() == "^"
    caret = lines[source_line + 1].index("^")
    assert 0 <= caret - lines[source_line].index("FROM") < len("FROM events WHERE = = 1")


def test_sql_runtime_error_is_a_failed_check(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "SELECT CAST(event_id AS INTEGER) FROM events")
    assert result.exit_code == 1
    assert "Conversion" in result.stderr


def test_sql_postgres_dialect(varied: Path) -> None:
    result = invoke(
        "sql",
        "--ledger",
        varied,
        "--dialect",
        "postgres",
        "--format",
        "csv",
        "SELECT event_id::text AS e FROM events WHERE agent_id ILIKE 'AGENT-%' ORDER BY 1 LIMIT 2",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["e", "evt-0000", "evt-0001"]


def test_sql_missing_ledger_is_bad_usage(tmp_path: Path) -> None:
    result = invoke("sql", "--ledger", tmp_path / "nope", "SELECT 1")
    assert result.exit_code == 2
    assert "no ledger" in squash(result.stderr)


def test_sql_duplicate_column_names_keep_every_value(varied: Path) -> None:
    result = invoke("sql", "--ledger", varied, "--format", "csv", "SELECT 1 AS a, 2 AS a")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["a,a", "1,2"]


# -- demo -----------------------------------------------------------------------------------------


def test_demo_builds_verifies_and_summarises(tmp_path: Path) -> None:
    records = [
        event(0, category="data", action="data.read", sensitivity="restricted", agent_id="x"),
        event(1, category="network", action="email.send", external=True, agent_id="x"),
        event(2, category="tool", action="tool.call", outcome="failure", agent_id="y"),
    ]
    for record in records:
        record["session_id"] = "s-1"
    source = write_jsonl(tmp_path / "small.jsonl", records)
    target = tmp_path / "demo"
    result = invoke("demo", "--ledger", target, "--events", source)
    assert result.exit_code == 0, result.output
    text = squash(result.stdout)
    assert "Ingested 3 events" in text
    assert "OK: 3 events" in text
    assert "Events by category" in text
    assert "Most active agents" in text
    assert "External sends after reading sensitive data" in text
    assert count(target) == 3
    # Run again: the demo ledger is rebuilt, not appended to.
    again = invoke("demo", "--ledger", target, "--events", source)
    assert again.exit_code == 0, again.output
    assert count(target, "events_raw") == 3


def test_demo_refuses_a_directory_that_is_not_a_ledger(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me", encoding="utf-8")
    source = write_jsonl(tmp_path / "small.jsonl", [event(0)])
    result = invoke("demo", "--ledger", target, "--events", source)
    assert result.exit_code == 2
    assert (target / "notes.txt").read_text(encoding="utf-8") == "keep me"


# -- the console script, end to end --------------------------------------------------------------


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CHAINSIGHT_LEDGER"}
    env["COLUMNS"] = "200"
    return env


def _run(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
        check=False,
    )


def test_console_script_end_to_end(tmp_path: Path) -> None:
    assert CONSOLE_SCRIPT.exists(), f"console script not installed at {CONSOLE_SCRIPT}"
    created = _run(tmp_path, "init")
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "chainsight-ledger" / "ledger.json").is_file()

    payload = "".join(json.dumps(event(i)) + "\n" for i in range(4))
    ingested = _run(tmp_path, "ingest", "-", "--format", "json", stdin=payload)
    assert ingested.returncode == 0, ingested.stderr
    assert json.loads(ingested.stdout)["appended"] == 4

    write_jsonl(tmp_path / "bad.jsonl", [event(9), {**event(10), "bogus": 1}])
    rejected = _run(tmp_path, "ingest", "bad.jsonl")
    assert rejected.returncode == 1
    assert "line 2" in rejected.stderr and "bogus" in rejected.stderr
    assert "Traceback" not in rejected.stderr

    # Independent read-only commands, run at once to keep the suite fast.
    commands = {
        "help": (["--help"], 0),
        "init-again": (["init"], 2),
        "verify": (["verify"], 0),
        "sql": (["sql", "--format", "csv", "SELECT count(*) AS n FROM events"], 0),
        "refused": (["sql", "DROP VIEW events"], 1),
        "no-ledger": (["sql", "--ledger", "nowhere", "SELECT 1"], 2),
        "bad-option": (["verify", "--frobnicate"], 2),
    }
    running = {
        name: subprocess.Popen(
            [str(CONSOLE_SCRIPT), *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environment(),
        )
        for name, (args, _) in commands.items()
    }
    outputs: dict[str, tuple[int, str, str]] = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=60)
        outputs[name] = (process.returncode, stdout, stderr)
    for name, (_, expected) in commands.items():
        code, stdout, stderr = outputs[name]
        assert code == expected, (name, stdout, stderr)
        assert "Traceback" not in stderr, name
    assert "verify" in outputs["help"][1] and "ingest" in outputs["help"][1]
    assert "already exists" in outputs["init-again"][2]
    assert "OK" in outputs["verify"][1]
    assert outputs["sql"][1].splitlines() == ["n", "4"]
    assert "DROP" in outputs["refused"][2]
    assert "no ledger" in outputs["no-ledger"][2]


def test_intervals_print_as_iso_8601_durations(tmp_path: Path) -> None:
    from query import Ledger as QueryLedger

    QueryLedger.init(tmp_path / "ledger")
    query = "select interval 25 minute + interval 6.5 second as a, interval 3 day as b"
    table = CliRunner().invoke(app, ["sql", "--ledger", str(tmp_path / "ledger"), query])
    assert table.exit_code == 0, table.output
    assert "PT25M6.5S" in table.output and "P3D" in table.output
    as_json = CliRunner().invoke(
        app, ["sql", "--ledger", str(tmp_path / "ledger"), "-f", "json", query]
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == [{"a": "PT25M6.5S", "b": "P3D"}]
