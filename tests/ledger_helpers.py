"""Helpers several test modules share: simulated events, forged rows, file-tree digests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from design_schema import TIME_FIELDS

import ledger
from ledger.canonical import canonical_event_bytes, parse_timestamp
from ledger.errors import ValidationError
from ledger.schema import CLIENT_FIELDS
from sample_data import SimulationConfig, iter_events

# A minimal valid event, and one with every field, all in canonical form.
VALID_EVENT: dict[str, Any] = {
    "event_id": "evt-0001",
    "time": "2026-01-31T12:00:00.000000Z",
    "agent_id": "agent-7",
    "category": "secret",
    "action": "secret.read",
}
FULL_EVENT: dict[str, Any] = {
    **VALID_EVENT,
    "session_id": "s-1",
    "task_id": "t-1",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "parent_span_id": "00f067aa0ba902b7",
    "caused_by": "evt-0000",
    "principal": "svc-deployer",
    "on_behalf_of": "alice@example.com",
    "credential_id": "tok-1",
    "credential_scopes": ["secrets:read", "deploy:write"],
    "credential_expires_at": "2026-02-01T00:00:00.000000Z",
    "scope_used": "secrets:read",
    "intent": "rotate the db password",
    "intent_scopes": ["secrets:read"],
    "tool": "vault",
    "resource": "secret://vault/prod/db",
    "destination": "api.example.com",
    "external": False,
    "sensitivity": "restricted",
    "bytes": 1024,
    "privileged": True,
    "input_trust": "trusted",
    "target_agent": "agent-8",
    "approval_for": "secret://vault/prod/db",
    "approver": "bob@example.com",
    "outcome": "success",
    "error": "",
    "authz_decision": "allow",
    "policy_id": "pol-9",
    # no floats or nulls in attrs: it takes the compiled fast path
    "attrs": {"model": "m-1", "tokens": 12, "tags": ["a", "b"], "ok": True},
}


def tool_event(i: int, **fields: Any) -> dict[str, Any]:
    """A minimal valid event, number ``i``, with ``fields`` added or replaced."""
    record: dict[str, Any] = {
        "event_id": f"evt-{i:04d}",
        "time": f"2026-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "agent_id": f"agent-{i % 3}",
        "category": "tool",
        "action": "tool.call",
    }
    record.update(fields)
    return record


def canonical_time(i: int) -> str:
    """A time for event ``i`` in the parser's canonical form (tool_event's "...:SSZ" is not),
    distinct for each i below 86,400."""
    return f"2026-03-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i % 997:06d}Z"


def canonical_event(i: int, **fields: Any) -> dict[str, Any]:
    """tool_event ``i`` in canonical form (the compiled parse's fast path accepts it as it is)."""
    return tool_event(i, time=canonical_time(i), **fields)


def unique_events(count: int, seed: int) -> list[dict[str, Any]]:
    """Simulated agent activity, client retries (repeated event_ids) left out."""
    seen: set[str] = set()
    found = []
    for event in iter_events(SimulationConfig(events=count + count // 10 + 20, seed=seed)):
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            found.append(event)
    assert len(found) >= count
    return found[:count]


def canonical_of(row: dict[str, Any]) -> bytes:
    """An event's canonical bytes rebuilt from its stored columns (as a forger would)."""
    fields = {}
    for name, value in row.items():
        if name in ("prev_hash", "leaf_hash", "hash") or value is None:
            continue
        fields[name] = parse_timestamp(value) if isinstance(value, datetime) else value
    return canonical_event_bytes(fields)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and directory under ``root``: a SHA-256 of each file's bytes, "/" for dirs."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }


def outcome(run: Callable[[], Any]) -> tuple[Any, ValidationError | None]:
    """What ``run`` returned, or the ValidationError it raised."""
    try:
        return run(), None
    except ValidationError as error:
        return None, error


def expected_columns(events: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The client columns validated events imply, built without Arrow or the parser."""
    columns: dict[str, list[Any]] = {}
    for field in CLIENT_FIELDS:
        values = [event.get(field.name) for event in events]
        if field.name in TIME_FIELDS:
            values = [
                None if v is None else datetime.fromisoformat(v.replace("Z", "+00:00"))
                for v in values
            ]
        columns[field.name] = values
    return columns


LEDGER_SOURCE = str(Path(ledger.__file__).resolve().parents[1])


def run_python(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script in a fresh interpreter from the checkout (for crashes and allocator
    settings a test process must not share), with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=LEDGER_SOURCE,
        env={**os.environ, "PYTHONPATH": LEDGER_SOURCE, **env},
    )
