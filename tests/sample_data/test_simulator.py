"""Tests of the agent-activity simulator (issue 4).

The reference checks below are plain-Python readings of the DESIGN.md §5 definitions, written
independently of the simulator: labels must agree with them, hard negatives must not match, and
nothing outside a positive label may match either. Where §5 leaves a unit open (MB vs MiB,
whether "≤ 3 hops" counts links or intermediate events), both readings must agree.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sample_data import (
    SCENARIOS,
    Label,
    SimulationConfig,
    iter_events,
    simulate,
    write_sample,
)

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data" / "sample"
MINUTE = 60_000_000
HOUR = 60 * MINUTE

Event = dict[str, Any]
Match = tuple[str, ...]

# -- the schema of DESIGN.md §2, checked strictly ------------------------------------------------

CATEGORIES = {
    "task", "llm", "tool", "data", "secret", "config", "job", "network", "identity", "approval",
    "code", "agent", "finding", "ledger",
}  # fmt: skip
ENUMS = {
    "category": CATEGORIES,
    "sensitivity": {"public", "internal", "confidential", "restricted"},
    "input_trust": {"trusted", "untrusted"},
    "outcome": {"success", "failure", "error", "denied"},
}
TEXT_FIELDS = {
    "session_id", "task_id", "caused_by", "principal", "on_behalf_of", "credential_id",
    "scope_used", "intent", "tool", "resource", "destination", "target_agent", "approval_for",
    "approver", "error", "authz_decision", "policy_id", "agent_id",
}  # fmt: skip
BOOL_FIELDS = {"external", "privileged"}
LIST_FIELDS = {"credential_scopes", "intent_scopes"}
HEX_FIELDS = {"trace_id": 32, "span_id": 16, "parent_span_id": 16}
TIME_FIELDS = {"time", "credential_expires_at"}
ALLOWED = (
    {"event_id", "action", "bytes", "attrs"}
    | set(ENUMS)
    | TEXT_FIELDS
    | BOOL_FIELDS
    | LIST_FIELDS
    | set(HEX_FIELDS)
    | TIME_FIELDS
)
REQUIRED = {"event_id", "time", "agent_id", "category", "action"}
UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")


def _check_json_value(value: object) -> None:
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _check_json_value(item)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item)
    else:
        assert value is None or isinstance(value, str | int | bool)


def check_event(event: Event) -> None:
    """Raise AssertionError unless event is a valid client event of DESIGN.md §2."""
    assert event.keys() >= REQUIRED, event
    assert event.keys() <= ALLOWED, event.keys() - ALLOWED
    for name, value in event.items():
        assert value is not None, f"{name} is null: optional fields must be omitted"
        if name in ENUMS:
            assert value in ENUMS[name], (name, value)
        elif name in TEXT_FIELDS:
            assert isinstance(value, str) and value and len(value) <= 1024, (name, value)
        elif name in BOOL_FIELDS:
            assert isinstance(value, bool), (name, value)
        elif name in LIST_FIELDS:
            assert isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        elif name in HEX_FIELDS:
            assert re.fullmatch(f"[0-9a-f]{{{HEX_FIELDS[name]}}}", value), (name, value)
            assert value.strip("0"), f"{name} is all zeros"
        elif name in TIME_FIELDS:
            assert TIME.match(value), (name, value)
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif name == "bytes":
            assert type(value) is int and 0 <= value < 2**53, value
        elif name == "attrs":
            assert isinstance(value, dict)
            _check_json_value(value)
            assert len(orjson.dumps(value)) <= 64 * 1024
    assert UUID7.match(event["event_id"]), event["event_id"]
    assert ACTION.match(event["action"]), event["action"]
    action = event["action"]
    # Fields that belong to one kind of event appear only there.
    assert ("intent" in event) == (action == "task.start")
    assert ("intent_scopes" in event) == (action == "task.start")
    assert ("target_agent" in event) == (action == "agent.delegate")
    assert ("approval_for" in event) == (event["category"] == "approval")
    assert ("approver" in event) == (event["category"] == "approval")
    if event["category"] == "network":
        assert "destination" in event and "external" in event
    if "error" in event:
        assert event["outcome"] != "success"
    if "scope_used" in event:
        assert event["scope_used"] in event["credential_scopes"]


# -- fixtures -----------------------------------------------------------------------------------


def _micros(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Sample:
    """A generated run, parsed: arrival-ordered lines, unique events, labels."""

    def __init__(self, events_bytes: bytes, labels_bytes: bytes) -> None:
        self.events_bytes = events_bytes
        self.labels_bytes = labels_bytes
        self.lines = events_bytes.splitlines()
        self.arrivals = [orjson.loads(line) for line in self.lines]
        self.by_id: dict[str, Event] = {}
        self.first_line: dict[str, bytes] = {}
        for line, event in zip(self.lines, self.arrivals, strict=True):
            if event["event_id"] not in self.by_id:
                event["_t"] = _micros(event["time"])
                self.by_id[event["event_id"]] = event
                self.first_line[event["event_id"]] = line
        self.events = sorted(self.by_id.values(), key=lambda e: (e["_t"], e["event_id"]))
        self.labels = [orjson.loads(line) for line in labels_bytes.splitlines()]


def _generate(config: SimulationConfig) -> Sample:
    events, labels = io.BytesIO(), io.BytesIO()
    write_sample(config, events, labels)
    return Sample(events.getvalue(), labels.getvalue())


@pytest.fixture(scope="module")
def sample() -> Sample:
    return _generate(SimulationConfig(events=50_000, seed=7))


# -- reference checks of DESIGN.md §5 --------------------------------------------------------------

READ_VERBS = {"read", "query", "get", "export", "download", "list"}
TRIGGER_VERBS = {"trigger", "run", "dispatch", "start"}


def _verb(event: Event) -> str:
    return str(event["action"]).rsplit(".", 1)[-1]


def _ok(event: Event) -> bool:
    return event.get("outcome") == "success"


def _group(events: Iterable[Event], key: Callable[[Event], object]) -> dict[object, list[Event]]:
    groups: dict[object, list[Event]] = defaultdict(list)
    for event in events:
        k = key(event)
        if k is not None:
            groups[k].append(event)
    return groups


def _is_sensitive_read(e: Event) -> bool:
    if not _ok(e) or _verb(e) not in READ_VERBS:
        return False
    if e["category"] == "secret":
        return True
    return e["category"] == "data" and e.get("sensitivity") in ("confidential", "restricted")


def ref_sensitive_read(events: list[Event], **_: object) -> set[Match]:
    found = set()
    for session in _group(events, lambda e: e.get("session_id")).values():
        reads = [e for e in session if _is_sensitive_read(e)]
        sends = [
            e
            for e in session
            if e["category"] == "network" and e.get("external") is True and _ok(e)
        ]
        approvals = [e for e in session if e["category"] == "approval"]
        for send in sends:
            for read in reads:
                if not 0 <= send["_t"] - read["_t"] <= 30 * MINUTE or read is send:
                    continue
                if any(
                    a.get("approval_for") == send.get("destination")
                    and read["_t"] <= a["_t"] <= send["_t"]
                    for a in approvals
                ):
                    continue
                found.add((read["event_id"], send["event_id"]))
    return found


def ref_secret_config_trigger(events: list[Event], **_: object) -> set[Match]:
    found = set()
    for chain in _group(events, lambda e: e["agent_id"]).values():
        secrets = [
            e for e in chain if e["category"] == "secret" and _verb(e) in READ_VERBS and _ok(e)
        ]
        if not secrets:
            continue
        changes = [e for e in chain if e["category"] == "config" and _verb(e) not in READ_VERBS]
        triggers = [e for e in chain if e["category"] == "job" and _verb(e) in TRIGGER_VERBS]
        for s in secrets:
            for c in changes:
                if not s["_t"] < c["_t"] <= s["_t"] + 60 * MINUTE:
                    continue
                for j in triggers:
                    if c["_t"] < j["_t"] <= s["_t"] + 60 * MINUTE:
                        found.add((s["event_id"], c["event_id"], j["event_id"]))
    return found


def ref_retry_storm(events: list[Event], **_: object) -> set[Match]:
    found = set()
    failures = [e for e in events if e.get("outcome") in ("failure", "error")]
    for group in _group(
        failures, lambda e: (e["agent_id"], e["action"], e.get("resource"))
    ).values():
        for i, first in enumerate(group):
            window = [e for e in group[i:] if e["_t"] - first["_t"] <= 10 * MINUTE]
            if len(window) >= 5:
                found.add(tuple(e["event_id"] for e in window))
    return found


def ref_out_of_scope(events: list[Event], **_: object) -> set[Match]:
    starts = {e["task_id"]: e for e in events if e["action"] == "task.start"}
    found = set()
    for e in events:
        start = starts.get(e.get("task_id"))
        if start is None or "scope_used" not in e or e is start:
            continue
        if e["scope_used"] not in start["intent_scopes"]:
            found.add((start["event_id"], e["event_id"]))
    return found


def ref_privileged_change(events: list[Event], **_: object) -> set[Match]:
    grants = [e for e in events if e["category"] == "approval" and e["action"] == "approval.grant"]
    by_resource = _group(grants, lambda e: e.get("approval_for"))
    found = set()
    for p in events:
        if p.get("privileged") is not True or not _ok(p):
            continue
        approved = any(
            (
                a["agent_id"] == p["agent_id"]
                or (a.get("task_id") and a.get("task_id") == p.get("task_id"))
            )
            and p["_t"] - 60 * MINUTE <= a["_t"] <= p["_t"]
            for a in by_resource.get(p.get("resource"), [])
        )
        if not approved:
            found.add((p["event_id"],))
    return found


def ref_untrusted_input(events: list[Event], **_: object) -> set[Match]:
    found = set()
    for session in _group(events, lambda e: e.get("session_id")).values():
        untrusted = [e for e in session if e.get("input_trust") == "untrusted"]
        privileged = [e for e in session if e.get("privileged") is True and _ok(e)]
        approvals = [e for e in session if e["category"] == "approval"]
        for u in untrusted:
            for p in privileged:
                if p is u or not u["_t"] <= p["_t"] <= u["_t"] + 15 * MINUTE:
                    continue
                if any(u["_t"] <= a["_t"] <= p["_t"] for a in approvals):
                    continue
                found.add((u["event_id"], p["event_id"]))
    return found


def ref_cross_agent(events: list[Event], *, max_links: int = 3, **_: object) -> set[Match]:
    by_id = {e["event_id"]: e for e in events}
    found = set()
    for p in events:
        if p.get("privileged") is not True or "scope_used" not in p:
            continue
        current = p
        for _hop in range(max_links):
            current = by_id.get(current.get("caused_by", ""))  # type: ignore[assignment]
            if current is None:
                break
            if (
                current["action"] == "agent.delegate"
                and current.get("target_agent") == p["agent_id"]
            ):
                if p["scope_used"] not in current.get("credential_scopes", []):
                    found.add((current["event_id"], p["event_id"]))
                break
    return found


def ref_low_and_slow(
    events: list[Event], *, each_max: int = 5_000_000, total_min: int = 100_000_000, **_: object
) -> set[Match]:
    found = set()
    sends = [
        e
        for e in events
        if e["category"] == "network"
        and e.get("external") is True
        and _ok(e)
        and e.get("bytes", each_max + 1) <= each_max
    ]
    for group in _group(sends, lambda e: e["agent_id"]).values():
        for i, first in enumerate(group):
            window = [e for e in group[i:] if e["_t"] - first["_t"] <= 24 * HOUR]
            total = sum(e["bytes"] for e in window)
            if total >= total_min and len({e.get("session_id") for e in window}) >= 3:
                found.add(tuple(e["event_id"] for e in window))
    return found


REFERENCE: dict[str, Callable[..., set[Match]]] = {
    "sensitive-read-then-external-send": ref_sensitive_read,
    "secret-config-trigger-chain": ref_secret_config_trigger,
    "retry-storm": ref_retry_storm,
    "out-of-scope-action": ref_out_of_scope,
    "privileged-change-without-approval": ref_privileged_change,
    "untrusted-input-to-privileged-action": ref_untrusted_input,
    "cross-agent-privilege-handoff": ref_cross_agent,
    "low-and-slow-exfiltration": ref_low_and_slow,
}
# Each ambiguous reading of §5: (MB = 10^6 or 2^20; "≤ 3 hops" = 3 or 4 caused_by links).
READINGS = [
    {"each_max": 5_000_000, "total_min": 100_000_000, "max_links": 3},
    {"each_max": 5 << 20, "total_min": 100 << 20, "max_links": 4},
]


@pytest.fixture(scope="module")
def matches(sample: Sample) -> dict[tuple[str, int], set[Match]]:
    return {
        (scenario, reading): check(sample.events, **READINGS[reading])
        for scenario, check in REFERENCE.items()
        for reading in range(len(READINGS))
    }


# -- tests ----------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = _generate(SimulationConfig(events=5_000, seed=11))
    again = _generate(SimulationConfig(events=5_000, seed=11))
    other = _generate(SimulationConfig(events=5_000, seed=12))
    assert first.events_bytes == again.events_bytes
    assert first.labels_bytes == again.labels_bytes
    assert first.events_bytes != other.events_bytes


def test_exact_event_count_and_stats() -> None:
    events, labels = io.BytesIO(), io.BytesIO()
    stats = write_sample(SimulationConfig(events=3_333, seed=3), events, labels)
    assert stats.events == 3_333 == len(events.getvalue().splitlines())
    assert stats.labels == len(labels.getvalue().splitlines())
    assert stats.labels == stats.positive_chains + stats.negative_chains
    assert sum(1 for _ in iter_events(SimulationConfig(events=777, seed=3))) == 777
    assert list(iter_events(SimulationConfig(events=0))) == []


def test_simulate_yields_events_and_labels_after_their_events() -> None:
    seen: set[str] = set()
    labels = 0
    for item in simulate(SimulationConfig(events=20_000, seed=5, late_fraction=0.0)):
        if isinstance(item, Label):
            labels += 1
            assert set(item.event_ids) <= seen
        else:
            seen.add(item["event_id"])
    assert labels > 0


@pytest.mark.parametrize(
    "bad",
    [
        {"events": -1},
        {"late_fraction": 1.0},
        {"duplicate_fraction": -0.1},
        {"attack_rate": -1.0},
        {"start": datetime(2026, 1, 1)},
    ],
)
def test_config_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimulationConfig(**bad)


def test_every_event_is_schema_valid(sample: Sample) -> None:
    for event in sample.arrivals:
        check_event({k: v for k, v in event.items() if k != "_t"})


def test_events_ingest_with_the_ledger_validator(sample: Sample) -> None:
    events_module = pytest.importorskip("ledger.events")
    validate_batch = getattr(events_module, "validate_batch", None)
    if validate_batch is None:
        pytest.skip("ledger.events.validate_batch is not there yet")
    records = [orjson.loads(line) for line in sample.lines[:20_000]]
    assert len(validate_batch(records)) == 20_000


def test_references_resolve(sample: Sample) -> None:
    for event in sample.events:
        if "caused_by" in event:
            cause = sample.by_id.get(event["caused_by"])
            assert cause is not None, event
            assert cause["_t"] <= event["_t"], (cause, event)
        if event["action"] == "agent.delegate":
            assert event["target_agent"] != event["agent_id"]
    starts = {e["task_id"] for e in sample.events if e["action"] == "task.start"}
    dangling = {e["task_id"] for e in sample.events if "task_id" in e} - starts
    assert not dangling, "every task id used has its task.start"


def test_labels_are_complete_and_consistent(sample: Sample) -> None:
    assert sample.labels
    chain_ids = [label["chain_id"] for label in sample.labels]
    assert len(chain_ids) == len(set(chain_ids))
    for label in sample.labels:
        assert label["scenario"] in SCENARIOS
        assert label.get("negative", False) in (True, False)
        assert set(label) <= {"chain_id", "scenario", "event_ids", "negative", "variant"}
        ids = label["event_ids"]
        assert ids and len(ids) == len(set(ids))
        for event_id in ids:
            assert event_id in sample.by_id, (label["chain_id"], event_id)
        times = [sample.by_id[i]["_t"] for i in ids]
        assert times == sorted(times), "event_ids are in time order"


def test_every_scenario_has_several_positives_and_negatives(sample: Sample) -> None:
    counts: dict[tuple[str, bool], int] = defaultdict(int)
    for label in sample.labels:
        counts[(label["scenario"], label.get("negative", False))] += 1
    for scenario in SCENARIOS:
        assert counts[(scenario, False)] >= 3, scenario
        assert counts[(scenario, True)] >= 3, scenario


@pytest.mark.parametrize("reading", range(len(READINGS)))
def test_positive_labels_match_the_definition(
    sample: Sample, matches: dict[tuple[str, int], set[Match]], reading: int
) -> None:
    for label in sample.labels:
        if label.get("negative"):
            continue
        found = matches[(label["scenario"], reading)]
        ids = set(label["event_ids"])
        assert any(set(m) <= ids for m in found), label


@pytest.mark.parametrize("reading", range(len(READINGS)))
def test_hard_negatives_do_not_match(
    sample: Sample, matches: dict[tuple[str, int], set[Match]], reading: int
) -> None:
    for label in sample.labels:
        if not label.get("negative"):
            continue
        ids = set(label["event_ids"])
        found = matches[(label["scenario"], reading)]
        assert not any(ids & set(m) for m in found), label


@pytest.mark.parametrize("reading", range(len(READINGS)))
def test_nothing_matches_outside_positive_labels(
    sample: Sample, matches: dict[tuple[str, int], set[Match]], reading: int
) -> None:
    for scenario in SCENARIOS:
        labelled = set()
        for label in sample.labels:
            if label["scenario"] == scenario and not label.get("negative"):
                labelled |= set(label["event_ids"])
        stray = [m for m in matches[(scenario, reading)] if not set(m) & labelled]
        assert not stray, (scenario, stray[:3])


def test_late_and_duplicate_fractions(sample: Sample) -> None:
    seen: dict[str, bytes] = {}
    duplicates = late = 0
    newest = 0
    for line, event in zip(sample.lines, sample.arrivals, strict=True):
        if event["event_id"] in seen:
            duplicates += 1
            assert seen[event["event_id"]] == line, "a retry resends the identical event"
            continue
        seen[event["event_id"]] = line
        t = _micros(event["time"])
        if t < newest - 60_000_000:
            late += 1
        newest = max(newest, t)
    total = len(sample.lines)
    assert 0.5 * 0.005 <= duplicates / total <= 1.5 * 0.005
    assert 0.5 * 0.01 <= late / total <= 1.5 * 0.01
    quiet = _generate(SimulationConfig(events=5_000, late_fraction=0.0, duplicate_fraction=0.0))
    assert len(quiet.by_id) == len(quiet.lines)
    times = [_micros(e["time"]) for e in quiet.arrivals]
    assert times == sorted(times), "without late delivery, arrival order is time order"


def test_committed_sample_is_what_the_code_generates(sample: Sample) -> None:
    committed = gzip.decompress((SAMPLE_DIR / "events.jsonl.gz").read_bytes())
    assert committed == sample.events_bytes
    assert (SAMPLE_DIR / "labels.jsonl").read_bytes() == sample.labels_bytes


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    config = SimulationConfig(events=2_000, seed=9)
    write_sample(config, tmp_path / "a.jsonl.gz", tmp_path / "a-labels.jsonl")
    write_sample(config, tmp_path / "b.jsonl.gz", None)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    plain = io.BytesIO()
    write_sample(config, plain)
    assert gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()) == plain.getvalue()


def test_worker_processes_write_the_same_bytes() -> None:
    config = SimulationConfig(events=30_000, seed=13)
    here, here_labels = io.BytesIO(), io.BytesIO()
    there, there_labels = io.BytesIO(), io.BytesIO()
    alone = write_sample(config, here, here_labels, parallel=False)
    shared = write_sample(config, there, there_labels, parallel=True)
    assert here.getvalue() == there.getvalue()
    assert here_labels.getvalue() == there_labels.getvalue()
    assert alone == shared


def test_simulate_yields_the_lines_write_sample_writes() -> None:
    config = SimulationConfig(events=4_000, seed=21, attack_rate=8.0)
    events, labels = io.BytesIO(), io.BytesIO()
    write_sample(config, events, labels)
    items = list(simulate(config))
    assert [i for i in items if not isinstance(i, Label)] == [
        orjson.loads(line) for line in events.getvalue().splitlines()
    ]
    assert [orjson.loads(line) for line in labels.getvalue().splitlines()] == [
        i.to_json() for i in items if isinstance(i, Label)
    ]


def test_lines_have_no_repeated_keys(sample: Sample) -> None:
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), keys
        return dict(pairs)

    for line in sample.lines[:20_000]:
        json.loads(line, object_pairs_hook=no_repeats)


def test_every_variant_is_in_the_sample(sample: Sample) -> None:
    from sample_data.scenarios import SCENARIO_SPECS

    seen = {
        (label["scenario"], label.get("negative", False), label["variant"])
        for label in sample.labels
    }
    for spec in SCENARIO_SPECS.values():
        for variant in spec.positive_variants:
            assert (spec.scenario, False, variant) in seen
        for variant in spec.negative_variants:
            assert (spec.scenario, True, variant) in seen


def test_a_failing_worker_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from sample_data.engine import ShardEngine

    original = ShardEngine.run

    def run_or_fail(self: ShardEngine) -> Any:
        if self.budget < 1_000:  # the second, smaller shard of 1,999 events
            raise OSError("disk on fire")
        return original(self)

    monkeypatch.setattr(ShardEngine, "run", run_or_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_sample(SimulationConfig(events=1_999, seed=1), io.BytesIO(), parallel=True)


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_worker_processes_write_the_same_files(tmp_path: Path, name: str) -> None:
    config = SimulationConfig(events=20_000, seed=17, late_fraction=0.05)
    for parallel in (False, True):
        folder = tmp_path / str(parallel)
        folder.mkdir()
        write_sample(config, folder / name, folder / "labels.jsonl", parallel=parallel)
    for file in (name, "labels.jsonl"):
        assert (tmp_path / "False" / file).read_bytes() == (tmp_path / "True" / file).read_bytes()
