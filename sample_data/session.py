"""Shared simulation state and the Session helper that builds every event the same way."""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from .ids import MICROS_PER_HOUR, MICROS_PER_MINUTE, Ids
from .org import Agent, AgentKind, Credential, Organisation, issue_credential
from .records import Event

__all__ = [
    "MAX_BACKGROUND_SESSION",
    "Delegation",
    "Session",
    "Step",
    "Steps",
    "World",
]

Step = tuple[int, Event | None]
"""(event time in microseconds, event); a None event is a wake-up that emits nothing."""
Steps = Generator[Step, None, int]
"""A script of steps in time order; its return value is the time it finished."""

MAX_BACKGROUND_SESSION = 90 * MICROS_PER_MINUTE
"""No background session or delegated sub-task lasts longer; chain placement relies on it."""

_MODELS = ("gpt-4.1", "claude-sonnet-4", "gemini-2.5-pro", "llama-3.3-70b", "gpt-4.1-mini")
_RETRY_STORM_SAFE_FAILURES = 3
"""Background work never fails more often than this per agent, action and resource in 10 min."""
_FAILURE_WINDOW = 10 * MICROS_PER_MINUTE


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
    """Everything the scripts share: randomness, ids, the organisation and the scheduler hooks."""

    def __init__(
        self,
        rng: random.Random,
        ids: Ids,
        org: Organisation,
        spawn: Callable[[Iterator[Step]], None],
    ) -> None:
        self.rng = rng
        self.rnd = rng.random
        self.ids = ids
        self.org = org
        self.spawn = spawn
        # Agents busy with an injected chain start no background sessions until this time.
        self.paused_until: dict[str, int] = {}
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

    def llm_latency(self) -> int:
        """Model round trip: mostly a second or two, sometimes much longer."""
        r = self.rnd()
        return int((0.5 + 9.0 * r * r * r) * 1_000_000)

    def tool_latency(self) -> int:
        """A tool or API call: tens of milliseconds to a few seconds."""
        r = self.rnd()
        return int((0.03 + 2.5 * r * r) * 1_000_000)

    def think(self) -> int:
        """Agent-side pause between steps."""
        return int((0.1 + 3.0 * self.rnd()) * 1_000_000)

    def human_wait(self) -> int:
        """How long a person takes to answer an approval request: 30 s to 15 min."""
        return int(30_000_000 * 30 ** self.rnd())

    # -- retries -----------------------------------------------------------------------------

    def may_fail(self, agent_id: str, action: str, resource: str | None, now: int) -> bool:
        """Whether background work may fail here without ever forming a retry storm."""
        key = (agent_id, action, resource)
        recent = self._failures.get(key)
        if recent is None:
            recent = self._failures[key] = []
        else:
            recent[:] = [t for t in recent if t > now - _FAILURE_WINDOW]
            if len(recent) >= _RETRY_STORM_SAFE_FAILURES:
                return False
        recent.append(now)
        self._failure_checks += 1
        if self._failure_checks % 4096 == 0:
            # Forget quiet keys so memory stays bounded however long the run.
            horizon = now - _FAILURE_WINDOW
            self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > horizon}
        return True

    # -- credentials and sessions ------------------------------------------------------------

    def refresh_credential(self, agent: Agent, now: int) -> Event | None:
        """Rotate the agent's credential if it would expire during a session; return the event."""
        if agent.credential.expires_micros > now + 2 * MAX_BACKGROUND_SESSION:
            return None
        ttl_hours = (2, 4, 8, 12)[int(self.rnd() * 4)]
        credential = issue_credential(self.ids, agent.credential.scopes, now, ttl_hours)
        agent.credential = credential
        return {
            "event_id": self.ids.event_id(now),
            "time": self.ids.time_text(now),
            "agent_id": agent.agent_id,
            "category": "identity",
            "action": "credential.refresh",
            "trace_id": self.ids.trace_id(),
            "span_id": self.ids.span_id(),
            "principal": agent.principal,
            "credential_id": credential.credential_id,
            "credential_scopes": credential.scopes,
            "credential_expires_at": credential.expires_text,
            "outcome": "success",
            "attrs": {"ttl_s": ttl_hours * 3600},
        }

    def is_free(self, agent: Agent, now: int) -> bool:
        """Whether the agent may take background work (no injected chain holds it)."""
        return self.paused_until.get(agent.agent_id, 0) <= now

    def model(self) -> str:
        """Pick the model an LLM call used."""
        return _MODELS[int(self.rnd() * len(_MODELS))]


class Session:
    """One agent's conversation/run: keeps ids, trace context and the caused_by thread."""

    __slots__ = (
        "agent_id",
        "credential",
        "ids",
        "last",
        "on_behalf_of",
        "parent_span",
        "principal",
        "rnd",
        "root_span",
        "session_id",
        "task_id",
        "trace_id",
        "world",
    )

    def __init__(
        self,
        world: World,
        agent: Agent,
        credential: Credential,
        on_behalf_of: str | None,
        delegation: Delegation | None = None,
    ) -> None:
        self.world = world
        self.ids = world.ids
        self.rnd = world.rnd
        self.agent_id = agent.agent_id
        self.principal = agent.principal
        self.credential = credential
        self.on_behalf_of = on_behalf_of
        self.session_id = self.ids.token("sess-")
        self.task_id: str | None = None
        self.trace_id = delegation.trace_id if delegation else self.ids.trace_id()
        self.parent_span: str | None = delegation.span_id if delegation else None
        self.root_span = self.ids.span_id()
        self.last: str | None = delegation.event_id if delegation else None

    def _base(self, t: int, category: str, action: str, caused_by: str | None) -> Event:
        event_id, time_text, span_id = self.ids.stamp(t)
        event: Event = {
            "event_id": event_id,
            "time": time_text,
            "agent_id": self.agent_id,
            "category": category,
            "action": action,
            "session_id": self.session_id,
            "task_id": self.task_id,
            "trace_id": self.trace_id,
            "span_id": span_id,
            "parent_span_id": self.root_span,
            "caused_by": caused_by,
            "on_behalf_of": self.on_behalf_of,
        }
        # One literal then rare deletions is faster than building the dict key by key.
        if self.task_id is None:
            del event["task_id"]
        if caused_by is None:
            del event["caused_by"]
        if self.on_behalf_of is None:
            del event["on_behalf_of"]
        self.last = event_id
        return event

    def start_task(
        self, t: int, intent: str, scopes: list[str], caused_by: str | None = None
    ) -> Event:
        """Open a task: `task.start` with the declared intent and the scopes it says it needs."""
        ids = self.ids
        self.task_id = ids.token("task-")
        self.root_span = ids.span_id()
        event_id = ids.event_id(t)
        event: Event = {
            "event_id": event_id,
            "time": ids.time_text(t),
            "agent_id": self.agent_id,
            "category": "task",
            "action": "task.start",
            "session_id": self.session_id,
            "task_id": self.task_id,
            "trace_id": self.trace_id,
            "span_id": self.root_span,
        }
        if self.parent_span is not None:
            event["parent_span_id"] = self.parent_span
        cause = caused_by if caused_by is not None else self.last
        if cause is not None:
            event["caused_by"] = cause
        if self.on_behalf_of is not None:
            event["on_behalf_of"] = self.on_behalf_of
        event["intent"] = intent
        event["intent_scopes"] = scopes
        event["outcome"] = "success"
        self.last = event_id
        return event

    def join_task(self, task_id: str) -> None:
        """Work inside another agent's task (a hand-off that keeps the task id)."""
        self.task_id = task_id

    def complete_task(self, t: int, outcome: str = "success") -> Event:
        """Close the current task."""
        event = self._base(t, "task", "task.complete", self.last)
        event["outcome"] = outcome
        return event

    def llm(self, t: int, untrusted: bool = False, caused_by: str | None = None) -> Event:
        """A model call; untrusted when the context it read came from outside (mail, web, PRs)."""
        event = self._base(t, "llm", "llm.chat", caused_by or self.last)
        rnd = self.rnd
        r = rnd()
        event["input_trust"] = "untrusted" if untrusted else "trusted"
        event["outcome"] = "success"
        event["attrs"] = {
            "gen_ai.request.model": _MODELS[int(rnd() * len(_MODELS))],
            "gen_ai.usage.input_tokens": 400 + int(r * r * 24_000),
            "gen_ai.usage.output_tokens": 30 + int(rnd() * 900),
        }
        return event

    def act(
        self,
        t: int,
        category: str,
        action: str,
        scope: str,
        fields: Mapping[str, object],
        *,
        outcome: str = "success",
        error: str | None = None,
        caused_by: str | None = None,
    ) -> Event:
        """An action performed with the session's credential, exercising one scope."""
        credential = self.credential
        event = self._base(t, category, action, caused_by or self.last)
        event["principal"] = self.principal
        event["credential_id"] = credential.credential_id
        event["credential_scopes"] = credential.scopes
        event["credential_expires_at"] = credential.expires_text
        event["scope_used"] = scope
        event.update(fields)
        event["outcome"] = outcome
        if error is not None:
            event["error"] = error
        return event

    def approval(self, t: int, action: str, approval_for: str, approver: str, reason: str) -> Event:
        """A human decision recorded in this session: approval.request/grant/deny."""
        event = self._base(t, "approval", action, self.last)
        event["approval_for"] = approval_for
        event["approver"] = approver
        event["outcome"] = "success"
        event["attrs"] = {"reason": reason}
        return event

    @staticmethod
    def day(t: int) -> str:
        """The calendar day of t, for human-readable names."""
        return datetime.fromtimestamp(t // 1_000_000, UTC).strftime("%Y-%m-%d")
