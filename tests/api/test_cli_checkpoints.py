"""The command line of issue 3: checkpoint, key show, proof, sync, sql --as-of, ingest --checkpoint,
init --key. Driven in-process through typer's CliRunner against ledgers on disk; what a command
prints is checked the way its user would check it (a proof with an RFC 9162 verifier and the key
``key show`` printed, for instance).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ledger_helpers import canonical_of
from typer.testing import CliRunner, Result

from api.cli import app
from ledger.hashing import chain_hash, leaf_hash
from ledger.merkle import root_from_leaves, verify_inclusion
from ledger.note import Signer, Verifier, key_id, open_checkpoint, open_note
from ledger.schema import SEGMENT_SCHEMA
from query import Ledger
from sample_data import SimulationConfig, iter_events

runner = CliRunner()
VERIFIER_KEY = re.compile(r"(?P<name>[^+\s]+)\+(?P<id>[0-9a-f]{8})\+(?P<key>[A-Za-z0-9+/]+=*)")


@pytest.fixture(autouse=True)
def _no_ledger_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINSIGHT_LEDGER", raising=False)


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: str | Path) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def one_json(result: Result) -> dict[str, Any]:
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def squash(text: str) -> str:
    return " ".join(text.split())


def write_events(path: Path, count: int, seed: int) -> list[dict[str, Any]]:
    events = list(iter_events(SimulationConfig(events=count, seed=seed)))
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return events


def distinct(events: list[dict[str, Any]]) -> int:
    return len({e["event_id"] for e in events})


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A ledger (id cli-ledger) holding 300 simulated events, not yet checkpointed."""
    root = tmp_path / "ledger"
    ok("init", "--ledger", root)
    events = write_events(tmp_path / "events.jsonl", 300, seed=2)
    ok("ingest", "--ledger", root, tmp_path / "events.jsonl")
    return root, events


def key_show(root: Path) -> Verifier:
    line = ok("key", "show", "--ledger", root).stdout.strip()
    match = VERIFIER_KEY.fullmatch(line)
    assert match, line
    return Verifier.parse(line)


# -- checkpoint ----------------------------------------------------------------------------------


def test_checkpoint_prints_its_number_and_signs_the_ledger(
    loaded: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, events = loaded
    first = ok("checkpoint", "--ledger", root)
    assert re.search(r"Signed checkpoint 1: 1 writer log\(s\), \d+ events", squash(first.stdout))
    assert f"{distinct(events)} events" in squash(first.stdout)
    second = one_json(ok("checkpoint", "--ledger", root, "--format", "json"))
    assert second["number"] == 2
    assert datetime.fromisoformat(second["time"]).tzinfo is not None
    (writer,) = second["writers"]
    leaves = pq.read_table(
        next((root / "writers" / writer["writer_id"] / "segments").glob("*.parquet")),
        columns=["leaf_hash"],
    ).column("leaf_hash")
    assert writer["tree_size"] == len(leaves) == distinct(events)
    assert writer["root"] == root_from_leaves(leaves.to_pylist()).hex()
    verifier = key_show(root)
    signed = open_checkpoint(
        (root / "checkpoints" / f"{2:012d}" / f"{writer['writer_id']}.note").read_text("utf-8"),
        [verifier],
    )
    assert signed.root_hash.hex() == writer["root"]
    assert (root / "checkpoints" / f"{1:012d}" / "ledger.note").exists()


def test_checkpoint_without_a_ledger_is_bad_usage(tmp_path: Path) -> None:
    result = invoke("checkpoint", "--ledger", tmp_path / "nothing")
    assert result.exit_code == 2
    assert "no ledger" in squash(result.stderr)


def test_checkpoint_refusing_a_rollback_exits_1(
    loaded: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, _ = loaded
    ok("checkpoint", "--ledger", root)
    for segment in root.glob("writers/*/segments/*.parquet"):
        segment.unlink()
    for head in root.glob("writers/*/head.json"):
        head.unlink()
    result = invoke("checkpoint", "--ledger", root)
    assert result.exit_code == 1
    assert "rollback" in squash(result.stderr)
    assert not (root / "checkpoints" / f"{2:012d}").exists()


# -- key show and init --key ---------------------------------------------------------------------


def test_key_show_prints_the_verifier_key_in_signed_note_form(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    created = one_json(ok("init", "--ledger", root, "--format", "json"))
    line = ok("key", "show", "--ledger", root).stdout.strip()
    match = VERIFIER_KEY.fullmatch(line)
    assert match, line
    assert match["name"] == f"chainsight-{created['ledger_id']}"
    raw = base64.b64decode(match["key"], validate=True)
    assert len(raw) == 33 and raw[0] == 0x01, "0x01 (Ed25519) then the 32-byte public key"
    assert int(match["id"], 16) == key_id(match["name"], raw[1:])
    assert line == created["verifier_key"]
    assert line == (root / "keys" / "ledger.vkey").read_text("utf-8").strip()
    assert stat.S_IMODE((root / "keys" / "ledger.key").stat().st_mode) == 0o600


def test_init_key_reuses_the_supplied_signer_key(tmp_path: Path) -> None:
    signer = Signer.generate("acme-audit")
    key_file = tmp_path / "signer.key"
    key_file.write_text(signer.signer_key() + "\n", encoding="utf-8")
    root = tmp_path / "ledger"
    ok("init", "--ledger", root, "--key", key_file)
    assert key_show(root) == signer.verifier()
    write_events(tmp_path / "events.jsonl", 20, seed=4)
    summary = one_json(
        ok(
            "ingest",
            "--ledger",
            root,
            "--checkpoint",
            "--format",
            "json",
            tmp_path / "events.jsonl",
        )
    )
    note = (root / "checkpoints" / f"{summary['checkpoint']:012d}" / "ledger.note").read_text(
        "utf-8"
    )
    assert open_note(note, [signer.verifier()]).verified


def test_init_key_with_an_unusable_key_file_fails(tmp_path: Path) -> None:
    bad = tmp_path / "public.key"
    bad.write_text(str(Signer.generate("acme").verifier()) + "\n", encoding="utf-8")
    result = invoke("init", "--ledger", tmp_path / "ledger", "--key", bad)
    assert result.exit_code == 1
    assert "ledger key" in squash(result.stderr)
    assert not (tmp_path / "ledger" / "ledger.json").exists()


# -- proof ---------------------------------------------------------------------------------------


def test_proof_json_verifies_with_the_published_key(
    loaded: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, events = loaded
    ok("checkpoint", "--ledger", root)
    verifier = key_show(root)
    ledger_id = json.loads((root / "ledger.json").read_bytes())["ledger_id"]
    for event in (events[0], events[151], events[-1]):
        found = one_json(ok("proof", event["event_id"], "--ledger", root, "--format", "json"))
        assert found["event_id"] == event["event_id"]
        for name in ("writer_id", "leaf_index", "tree_size", "leaf_hash", "proof", "checkpoint"):
            assert name in found
        signed = open_checkpoint(
            found["checkpoint"], [verifier], origin=f"chainsight/{ledger_id}/{found['writer_id']}"
        )
        assert signed.tree_size == found["tree_size"] == distinct(events)
        verify_inclusion(
            bytes.fromhex(found["leaf_hash"]),
            found["leaf_index"],
            found["tree_size"],
            [bytes.fromhex(h) for h in found["proof"]],
            signed.root_hash,
        )
        stored = Ledger.open(root).sql(
            f"select seq, leaf_hash from events where event_id = '{event['event_id']}'"
        )
        assert found["leaf_index"] == stored.column("seq")[0].as_py()
        assert found["leaf_hash"] == stored.column("leaf_hash")[0].as_py().hex()


def test_proof_table_format_names_every_field(loaded: tuple[Path, list[dict[str, Any]]]) -> None:
    root, events = loaded
    ok("checkpoint", "--ledger", root)
    shown = ok("proof", events[3]["event_id"], "--ledger", root, "--format", "table").stdout
    for name in ("writer_id", "leaf_index", "tree_size", "leaf_hash", "proof", "checkpoint"):
        assert f"{name}:" in shown


def test_proof_of_an_event_not_yet_checkpointed_exits_1(
    loaded: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, events = loaded
    uncovered = invoke("proof", events[0]["event_id"], "--ledger", root)
    assert uncovered.exit_code == 1
    assert "not covered by a signed checkpoint" in squash(uncovered.stderr)
    assert "chainsight checkpoint" in squash(uncovered.stderr)
    unknown = invoke("proof", "no-such-event", "--ledger", root)
    assert unknown.exit_code == 1
    assert "no event" in squash(unknown.stderr)


# -- ingest --checkpoint -------------------------------------------------------------------------


def test_ingest_checkpoint_signs_after_storing(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    ok("init", "--ledger", root)
    first = write_events(tmp_path / "one.jsonl", 120, seed=5)
    summary = one_json(
        ok("ingest", "--ledger", root, "--checkpoint", "--format", "json", tmp_path / "one.jsonl")
    )
    assert summary["checkpoint"] == 1
    assert summary["appended"] == distinct(first)
    shown = ok("ingest", "--ledger", root, "--checkpoint", write_events_path(tmp_path, 7))
    assert "signed checkpoint 2" in squash(shown.stdout)
    plain = one_json(
        ok("ingest", "--ledger", root, "--format", "json", write_events_path(tmp_path, 8))
    )
    assert "checkpoint" not in plain
    numbers = Ledger.open(root).sql("select distinct number from checkpoints order by 1")
    assert numbers.column("number").to_pylist() == [1, 2]
    found = one_json(ok("proof", first[10]["event_id"], "--ledger", root))
    assert found["tree_size"] > distinct(first), "proved against the newest covering checkpoint"


def write_events_path(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"events-{seed}.jsonl"
    write_events(path, 40, seed=seed)
    return path


# -- sql --as-of ---------------------------------------------------------------------------------


def test_sql_as_of_answers_as_of_the_checkpoint(
    loaded: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, events = loaded
    ok("checkpoint", "--ledger", root)
    query = "select count(*) as n, count(distinct agent_id) as agents from events"
    pinned = one_json_row(ok("sql", "--ledger", root, "--as-of", "1", "--format", "json", query))
    assert pinned["n"] == distinct(events)
    ok("ingest", "--ledger", root, "--checkpoint", write_events_path(tmp_path, 9))
    again = one_json_row(ok("sql", "--ledger", root, "--as-of", "1", "--format", "json", query))
    assert again == pinned
    now = one_json_row(ok("sql", "--ledger", root, "--format", "json", query))
    assert now["n"] > pinned["n"]
    table = ok("sql", "--ledger", root, "--as-of", "1", "select count(*) as n from events")
    assert str(pinned["n"]) in table.stdout
    listed = ok("sql", "--ledger", root, "--format", "csv", "select number from checkpoints")
    assert listed.stdout.split() == ["number", "1", "2"]


def one_json_row(result: Result) -> dict[str, Any]:
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and len(rows) == 1
    row = rows[0]
    assert isinstance(row, dict)
    return row


def test_sql_as_of_an_unknown_checkpoint_exits_1(
    loaded: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, _ = loaded
    result = invoke("sql", "--ledger", root, "--as-of", "7", "select count(*) from events")
    assert result.exit_code == 1
    assert "no checkpoint 7" in squash(result.stderr)


# -- sync ----------------------------------------------------------------------------------------


def test_sync_merges_and_reports(loaded: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    root, _ = loaded
    edge = tmp_path / "edge"
    ok("init", "--ledger", edge)
    ok("ingest", "--ledger", edge, write_events_path(tmp_path, 10))
    result = ok("sync", edge, "--ledger", root)
    assert re.search(
        r"Merged \d+ events: 1 writer log\(s\) added, 0 extended", squash(result.stdout)
    )
    again = one_json(ok("sync", edge, "--ledger", root, "--format", "json"))
    assert again == {
        "writers_added": [],
        "writers_extended": [],
        "events_added": 0,
        "equivocations": [],
        "skipped": [],
    }
    assert ok("verify", "--ledger", root).exit_code == 0
    assert one_json(ok("checkpoint", "--ledger", root, "--format", "json"))["number"] == 1
    self_sync = invoke("sync", root, "--ledger", root)
    assert self_sync.exit_code == 1
    assert "itself" in squash(self_sync.stderr)
    merged = Ledger.open(root).sql("select count(distinct writer_id) as n from events_raw")
    assert merged.column("n")[0].as_py() == 2


def test_sync_exits_1_on_an_equivocation(
    loaded: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    root, _ = loaded
    forged = tmp_path / "forged"
    shutil.copytree(root, forged)
    (writer_dir,) = (forged / "writers").iterdir()
    (path,) = (writer_dir / "segments").glob("*.parquet")
    rows = pq.read_table(path).to_pylist()
    at = 200
    prev = rows[at]["prev_hash"]
    for i in range(at, len(rows)):
        row = {**rows[i], "outcome": "denied"} if i == at else rows[i]
        leaf = leaf_hash(canonical_of(row))
        rows[i] = {**row, "prev_hash": prev, "leaf_hash": leaf, "hash": chain_hash(prev, leaf)}
        prev = rows[i]["hash"]
    pq.write_table(pa.Table.from_pylist(rows, schema=SEGMENT_SCHEMA), path, compression="zstd")
    head = {"seq": rows[-1]["seq"], "hash": prev.hex()}
    (writer_dir / "head.json").write_bytes(orjson.dumps(head))
    shutil.rmtree(writer_dir / "tree", ignore_errors=True)
    assert ok("verify", "--ledger", forged).exit_code == 0, "a valid ledger on its own"
    table = invoke("sync", forged, "--ledger", root)
    assert table.exit_code == 1
    assert f"EQUIVOCATION writer {writer_dir.name}, seq {at}" in squash(table.stdout)
    as_json = invoke("sync", forged, "--ledger", root, "--format", "json")
    assert as_json.exit_code == 1
    (found,) = one_json(as_json)["equivocations"]
    assert (found["writer_id"], found["seq"]) == (writer_dir.name, at)
    verdict = invoke("verify", "--ledger", root, "--format", "json")
    assert verdict.exit_code == 1
    problems = one_json(verdict)["problems"]
    assert {(p["code"], p["writer_id"], p["seq"]) for p in problems} == {
        ("equivocation", writer_dir.name, at)
    }
