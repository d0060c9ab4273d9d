"""The ``findings`` view: the ledger's category-'finding' events, as the SQL issue lists it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from api.cli import app
from query import Ledger


def event(event_id: str, category: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": event_id,
        "time": "2026-03-01T10:00:00Z",
        "agent_id": "detector",
        "category": category,
        "action": f"{category}.raise" if category == "finding" else "tool.call",
    }
    record.update(fields)
    return record


def test_findings_holds_only_finding_events_once_each(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger.init(path)
    finding = event("f-1", "finding", attrs={"rule": "retry-storm", "severity": "high"})
    with Ledger.open(path) as store:
        store.append([finding, event("t-1", "tool")])
    with Ledger.open(path) as other_writer:  # the same finding delivered again
        other_writer.append([finding])
    ledger = Ledger.open(path)
    rows = ledger.sql("SELECT event_id, attrs->>'rule' AS rule FROM findings").to_pylist()
    assert rows == [{"event_id": "f-1", "rule": "retry-storm"}]
    ledger.close()


def test_findings_as_json_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    Ledger.init(path)
    with Ledger.open(path) as store:
        store.append([event("f-1", "finding", attrs={"rule": "retry-storm"})])
    result = CliRunner().invoke(
        app, ["sql", "--ledger", str(path), "--format", "json", "select * from findings"]
    )
    assert result.exit_code == 0, result.output
    assert '"event_id":"f-1"' in result.stdout and '"rule":"retry-storm"' in result.stdout
