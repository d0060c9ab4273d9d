"""Shared simulation state and the Session helper that builds every event the same way."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from .ids import MICROS_PER_HOUR, MICROS_PER_MINUTE, Ids
from .org import Agent, AgentKind, Credential, Organisation, issue_credential
from .records import Label

__all__ = [
    "MAX_BACKGROUND_SESSION",
    "ChainTag",
    "Delegation",
    "Op",
    "Scheduled",
    "Session",
    "World",
    "json_text",
]

MAX_BACKGROUND_SESSION = 90 * MICROS_PER_MINUTE
"""No background session or delegated sub-task lasts longer; chain placement relies on it."""

_MODELS = ("gpt-4.1", "claude-sonnet-4", "gemini-2.5-pro", "llama-3.3-70b", "gpt-4.1-mini")
_RETRY_STORM_SAFE_FAILURES = 3
"""Background work never fails more often than this per agent, action and resource in 10 min."""
_FAILURE_WINDOW = 10 * MICROS_PER_MINUTE


@dataclass(frozen=True, slots=True)
class ChainTag:
    """Marks an event of an injected chain; the chain's last event carries the chain's label."""

    label: Label | None = None


Op = tuple[str, str, str]
"""(category, action, scope_used) of one kind of action."""
Scheduled = tuple[int, str, ChainTag | None]
"""(event time in microseconds, the event as one line of JSON, its chain tag or None)."""


@dataclass(frozen=True, slots=True)
class Delegation:
    """Context an `agent.delegate` event hands to the agent that takes the work."""

    event_id: str
    span_id: str
    trace_id: str
    on_behalf_of: str
    intent: str


def _activity_table(night_shift: bool) -> tuple[float, ...]:
    """Relative busyness for each hour of the week, Monday 00:00 UTC first."""
    table = []
    for hour in range(168):
        day, clock = divmod(hour, 24)
        weekend = day >= 5
        if 8 <= clock < 18:
            level = 1.0 if not weekend else 0.08
        elif 6 <= clock < 8 or 18 <= clock < 21:
            level = 0.25 if not weekend else 0.05
        else:
            level = 0.02
        if night_shift and (clock < 6 or clock >= 21):
            level = max(level, 0.12)  # nightly batch and maintenance windows
        table.append(level)
    return tuple(table)


_OFFICE_HOURS = _activity_table(night_shift=False)
_NIGHT_SHIFT_HOURS = _activity_table(night_shift=True)
# The Unix epoch fell on a Thursday: 72 hours after the Monday that starts the table.
_EPOCH_HOUR_OF_WEEK = 72


class World:
    """Everything the scripts share: randomness, ids, the organisation and the schedule.

    Background work is generated a whole session at a time, when the session starts: its
    events go to `pending`, in time order per session, for the engine to merge with the rest.
    """

    def __init__(self, rng: random.Random, ids: Ids, org: Organisation) -> None:
        self.rng = rng
        self.rnd = rng.random
        self.ids = ids
        self.org = org
        self.pending: list[Scheduled] = []
        self.clock = 0
        """The start of the session being generated: no later event is generated before it."""
        # Agents busy with an injected chain start no background sessions until this time.
        self.paused_until: dict[str, int] = {}
        # When each agent's generated background work ends; chains keep clear of it.
        self.busy_until: dict[str, int] = {}
        self._failures: dict[tuple[str, str, str | None], list[int]] = {}
        self._failure_checks = 0

    # -- timing ------------------------------------------------------------------------------

    def next_session_start(self, kind: AgentKind, now: int) -> int:
        """Draw the next session start after now, busier in office hours (Poisson thinning)."""
        table = _NIGHT_SHIFT_HOURS if kind.night_shift else _OFFICE_HOURS
        mean_gap = MICROS_PER_HOUR / kind.sessions_per_hour
        expo = self.rng.expovariate
        rnd = self.rnd
        while True:
            now += int(expo(1.0) * mean_gap) + 1
            if rnd() < table[(now // MICROS_PER_HOUR + _EPOCH_HOUR_OF_WEEK) % 168]:
                return now

    def think(self) -> int:
        """Agent-side pause between steps."""
        return int((0.1 + 3.0 * self.rnd()) * 1_000_000)

    def human_wait(self) -> int:
        """How long a person takes to answer an approval request: 30 s to 15 min."""
        return int(30_000_000 * 30 ** self.rnd())

    # -- retries -----------------------------------------------------------------------------

    def may_fail(self, agent_id: str, action: str, resource: str | None, now: int) -> bool:
        """Whether background work may fail here without ever forming a retry storm."""
        # Sessions are generated whole and delegated sub-tasks run beside the agent's own work,
        # so failures are not recorded in time order: count those on both sides of now.
        key = (agent_id, action, resource)
        recent = self._failures.get(key)
        if recent is None:
            recent = self._failures[key] = []
        else:
            horizon = self.clock - _FAILURE_WINDOW
            recent[:] = [t for t in recent if t >= horizon]
            close = sum(1 for t in recent if abs(t - now) <= _FAILURE_WINDOW)
            if close >= _RETRY_STORM_SAFE_FAILURES:
                return False
        recent.append(now)
        self._failure_checks += 1
        if self._failure_checks % 4096 == 0:
            # Forget quiet keys so memory stays bounded however long the run.
            horizon = self.clock - _FAILURE_WINDOW
            self._failures = {k: v for k, v in self._failures.items() if max(v) >= horizon}
        return True

    # -- credentials and sessions ------------------------------------------------------------

    def refresh_credential(self, agent: Agent, now: int) -> bool:
        """Rotate the agent's credential if it would expire during a session (an event)."""
        if agent.credential.expires_micros > now + 2 * MAX_BACKGROUND_SESSION:
            return False
        ttl_hours = (2, 4, 8, 12)[int(self.rnd() * 4)]
        credential = issue_credential(self.ids, agent.credential.scopes, now, ttl_hours)
        agent.credential = credential
        event_id, time_text, span_id = self.ids.stamp(now)
        event = {
            "event_id": event_id,
            "time": time_text,
            "agent_id": agent.agent_id,
            "category": "identity",
            "action": "credential.refresh",
            "trace_id": self.ids.trace_id(),
            "span_id": span_id,
            "principal": agent.principal,
            "credential_id": credential.credential_id,
            "credential_scopes": credential.scopes,
            "credential_expires_at": credential.expires_text,
            "outcome": "success",
            "attrs": {"ttl_s": ttl_hours * 3600},
        }
        self.pending.append((now, json_text(event), None))
        return True

    def is_free(self, agent: Agent, now: int) -> bool:
        """Whether the agent may take background work (no injected chain holds it)."""
        return self.paused_until.get(agent.agent_id, 0) <= now

    def busy(self, agent: Agent, until: int) -> None:
        """Note that background work generated for the agent lasts until then."""
        if self.busy_until.get(agent.agent_id, 0) < until:
            self.busy_until[agent.agent_id] = until


class Session:
    """One agent's conversation/run: keeps ids, trace context and the caused_by thread.

    Each method appends its event to `sink` as a line of JSON and returns the event's id. The
    members all events of the session's current task share (agent, session, task, trace, root
    span, on whose behalf) are serialised once, when the session or its task starts, and each
    line is one f-string around them: this is the simulator's hot path.
    """

    __slots__ = (
        "_acting",
        "_agent",
        "_behalf",
        "_shared",
        "agent_id",
        "credential",
        "ids",
        "last",
        "last_span",
        "on_behalf_of",
        "parent_span",
        "rnd",
        "root_span",
        "session_id",
        "sink",
        "task_id",
        "trace_id",
    )

    def __init__(
        self,
        world: World,
        agent: Agent,
        credential: Credential,
        on_behalf_of: str | None,
        delegation: Delegation | None = None,
        sink: list[Scheduled] | None = None,
    ) -> None:
        ids = world.ids
        self.sink = world.pending if sink is None else sink
        self.ids = ids
        self.rnd = world.rnd
        self.agent_id = agent.agent_id
        self.credential = credential
        self.on_behalf_of = on_behalf_of
        self.session_id = ids.token("sess-")
        self.task_id: str | None = None
        self.trace_id = delegation.trace_id if delegation else ids.trace_id()
        self.parent_span: str | None = delegation.span_id if delegation else None
        self.root_span = ids.span_id()
        self.last: str | None = delegation.event_id if delegation else None
        """The id of the session's latest event: what the next one is caused by."""
        self.last_span = ""
        """The span id of the session's latest event."""
        self._agent = agent.json_agent
        self._acting = f"{agent.json_principal},{credential.json_fields}"
        self._behalf = "" if on_behalf_of is None else _behalf_text(on_behalf_of)
        self._shared = ""
        self._share()

    def _share(self) -> None:
        """Serialise the members every event of the current task repeats, with a comma after."""
        # Ids (session, task, trace, span, event) are hex digits and dashes: no JSON escaping.
        task = "" if self.task_id is None else f'"task_id":"{self.task_id}",'
        self._shared = (
            f'{self._agent}"session_id":"{self.session_id}",{task}"trace_id":"{self.trace_id}",'
            f'"parent_span_id":"{self.root_span}"{self._behalf},'
        )

    def start_task(
        self, t: int, intent: str, scopes: list[str], caused_by: str | None = None
    ) -> str:
        """Open a task: `task.start` with the declared intent and the scopes it says it needs."""
        ids = self.ids
        self.task_id = ids.token("task-")
        self.root_span = ids.span_id()
        event_id, time_text, _ = ids.stamp(t)
        self._share()
        task = f'"task_id":"{self.task_id}",'
        parent = "" if self.parent_span is None else f',"parent_span_id":"{self.parent_span}"'
        cause = caused_by if caused_by is not None else self.last
        self.last = event_id
        self.last_span = self.root_span
        line = (
            f'{{"event_id":"{event_id}","time":"{time_text}",{self._agent}'
            f'"session_id":"{self.session_id}",{task}"trace_id":"{self.trace_id}"{parent}'
            f'{self._behalf},"category":"task","action":"task.start","span_id":"{self.root_span}"'
            f'{_cause_text(cause)},"intent":{json_text(intent)},"intent_scopes":{json_text(scopes)},'
            f'"outcome":"success"}}'
        )
        self.sink.append((t, line, None))
        return event_id

    def join_task(self, task_id: str) -> None:
        """Work inside another agent's task (a hand-off that keeps the task id)."""
        self.task_id = task_id
        self._share()

    def complete_task(self, t: int, outcome: str = "success") -> str:
        """Close the current task."""
        event_id, time_text, span_id = self.ids.stamp(t)
        cause = self.last
        self.last = event_id
        self.last_span = span_id
        self.sink.append(
            (
                t,
                f'{{"event_id":"{event_id}","time":"{time_text}",{self._shared}'
                f'"category":"task","action":"task.complete","span_id":"{span_id}"'
                f"{_cause_text(cause)}{_OUTCOME_TEXTS[outcome]}}}",
                None,
            )
        )
        return event_id

    def llm(self, t: int, untrusted: bool = False, caused_by: str | None = None) -> str:
        """A model call; untrusted when the context it read came from outside (mail, web, PRs)."""
        event_id, time_text, span_id = self.ids.stamp(t)
        cause = caused_by or self.last
        cause_text = "" if cause is None else f',"caused_by":"{cause}"'
        self.last = event_id
        self.last_span = span_id
        rnd = self.rnd
        r = rnd()
        model = _MODELS[int(rnd() * len(_MODELS))]
        input_tokens = 400 + int(r * r * 24_000)
        output_tokens = 30 + int(rnd() * 900)
        self.sink.append(
            (
                t,
                f'{{"event_id":"{event_id}","time":"{time_text}",{self._shared}'
                f'"category":"llm","action":"llm.chat","span_id":"{span_id}"{cause_text}'
                f"{_UNTRUSTED_LLM if untrusted else _TRUSTED_LLM}"
                f'"gen_ai.request.model":"{model}","gen_ai.usage.input_tokens":{input_tokens},'
                f'"gen_ai.usage.output_tokens":{output_tokens}}}}}',
                None,
            )
        )
        return event_id

    def act(
        self,
        t: int,
        op: Op,
        fields: Mapping[str, object],
        *,
        outcome: str = "success",
        error: str | None = None,
        caused_by: str | None = None,
    ) -> str:
        """An action performed with the session's credential; op is (category, action, scope)."""
        texts = _OP_TEXTS.get(op)
        if texts is None:
            texts = _op_texts(op)
        event_id, time_text, span_id = self.ids.stamp(t)
        cause = caused_by or self.last
        cause_text = "" if cause is None else f',"caused_by":"{cause}"'
        self.last = event_id
        self.last_span = span_id
        members = orjson.dumps(fields)[1:-1].decode()
        failure = "" if error is None else f',"error":{json_text(error)}'
        self.sink.append(
            (
                t,
                f'{{"event_id":"{event_id}","time":"{time_text}",{self._shared}{texts[0]}'
                f'"span_id":"{span_id}"{cause_text}{self._acting}{texts[1]}'
                f"{',' if members else ''}{members}{_OUTCOME_TEXTS[outcome]}{failure}}}",
                None,
            )
        )
        return event_id

    def approval(self, t: int, action: str, approval_for: str, approver: str, reason: str) -> str:
        """A human decision recorded in this session: approval.request/grant/deny."""
        event_id, time_text, span_id = self.ids.stamp(t)
        cause = self.last
        self.last = event_id
        self.last_span = span_id
        self.sink.append(
            (
                t,
                f'{{"event_id":"{event_id}","time":"{time_text}",{self._shared}'
                f'"category":"approval","action":{json_text(action)},"span_id":"{span_id}"'
                f"{_cause_text(cause)},"
                f'"approval_for":{json_text(approval_for)},"approver":{json_text(approver)},'
                f'"outcome":"success","attrs":{{"reason":{json_text(reason)}}}}}',
                None,
            )
        )
        return event_id


def json_text(value: object) -> str:
    """Return value as JSON text, spelled exactly as orjson spells it inside a whole event."""
    return orjson.dumps(value).decode()


def _operation_text(category: str, action: str) -> str:
    """The category and action members, with a trailing comma."""
    return f'"category":{json_text(category)},"action":{json_text(action)},'


_OP_TEXTS: dict[Op, tuple[str, str]] = {}
_OUTCOME_TEXTS = {
    outcome: f',"outcome":"{outcome}"' for outcome in ("success", "failure", "error", "denied")
}
"""The outcome member for each outcome of DESIGN.md §2."""
_BEHALF_TEXTS: dict[str, str] = {}


def _op_texts(op: Op) -> tuple[str, str]:
    """The category and action members, and the scope_used member, serialised once per op."""
    category, action, scope = op
    texts = _OP_TEXTS[op] = (_operation_text(category, action), f',"scope_used":{json_text(scope)}')
    return texts


def _behalf_text(on_behalf_of: str) -> str:
    text = _BEHALF_TEXTS.get(on_behalf_of)
    if text is None:
        if len(_BEHALF_TEXTS) >= 65_536:
            _BEHALF_TEXTS.clear()  # bounded however many organisations a process simulates
        text = _BEHALF_TEXTS[on_behalf_of] = f',"on_behalf_of":{json_text(on_behalf_of)}'
    return text


def _cause_text(cause: str | None) -> str:
    return "" if cause is None else f',"caused_by":"{cause}"'


_TRUSTED_LLM = ',"input_trust":"trusted","outcome":"success","attrs":{'
_UNTRUSTED_LLM = ',"input_trust":"untrusted","outcome":"success","attrs":{'
