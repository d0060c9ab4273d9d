"""Injecting labelled chains: agent selection, reservations, pacing, and a builder for scripts.

A chain is built completely when it is injected (its events lie in the future), pushed onto the
scheduler, and labelled once its last event has been generated. The agents it uses are reserved
so that nothing else can complete or break its pattern:

* no two chains share an agent within a cool-down (25 h around low-and-slow chains, whose
  window is a day, 2 h otherwise);
* unless the scenario is low-and-slow (whose hosts never send anything external in the
  background), the agents' own background sessions pause from injection until an hour after
  the chain, and the chain starts only after any background session already under way must
  have ended plus the longest detector window (60 min); background work is generated a whole
  session ahead, so an agent whose generated work (a delegated sub-task, say) ends later than
  that is not chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .ids import MICROS_PER_HOUR, MICROS_PER_MINUTE
from .org import Agent, Credential, issue_credential
from .records import SCENARIOS, Label
from .session import MAX_BACKGROUND_SESSION, ChainTag, Delegation, Scheduled, Session, World

__all__ = ["Chain", "ChainInjector", "ChainPlan", "NoAgentAvailableError", "ScenarioSpec"]

LOW_AND_SLOW = "low-and-slow-exfiltration"
_COOL_DOWN = 2 * MICROS_PER_HOUR
_COOL_DOWN_AROUND_DAY_WINDOW = 25 * MICROS_PER_HOUR
_RESUME_AFTER = 65 * MICROS_PER_MINUTE
_CLEAR_OF_BACKGROUND = 61 * MICROS_PER_MINUTE
"""Longer than any detector window but the day-long one."""
_LEAD = MAX_BACKGROUND_SESSION + _CLEAR_OF_BACKGROUND
_CHAIN_STEP = ChainTag()
_FILLER_SCOPE = "kb:read"
_FILLER_OP = ("tool", "kb.search", _FILLER_SCOPE)


class NoAgentAvailableError(Exception):
    """Every agent that could host this chain is busy; try another chain later."""


@dataclass(frozen=True, slots=True)
class ChainPlan:
    """A fully built chain: its events in time order, tagged, and its label."""

    events: list[Scheduled]
    label: Label
    agents: tuple[Agent, ...]


class Chain:
    """Collects one chain's events; builders call session/task/add/fill to script it."""

    def __init__(self, world: World, injector: ChainInjector, now: int, start: int) -> None:
        self.world = world
        self.rnd = world.rnd
        self.injector = injector
        self.now = now
        self.start = start
        self.steps: list[Scheduled] = []
        self.key: list[tuple[int, str]] = []
        self.clock: dict[str, int] = {}  # session_id -> time of its latest event so far
        self.agents: list[Agent] = []

    # -- people ------------------------------------------------------------------------------

    def agent(self, kinds: tuple[str, ...]) -> Agent:
        """Reserve a free agent of one of these kinds for this chain."""
        chosen = self.injector.find_agent(kinds, self.now, self.start, exclude=self.agents)
        self.agents.append(chosen)
        return chosen

    def human(self, role: str) -> str:
        """Email of a person with this role."""
        people = self.world.org.humans_by_role[role]
        return people[int(self.rnd() * len(people))].email

    def credential(
        self, agent: Agent, extra: tuple[str, ...] = (), drop: tuple[str, ...] = ()
    ) -> Credential:
        """A credential for this chain: the agent's usual scopes, plus extra, minus drop."""
        scopes = [s for s in self.world.org.scopes_of(agent) if s not in drop]
        scopes += [s for s in extra if s not in scopes]
        return issue_credential(self.world.ids, scopes, self.start - MICROS_PER_HOUR, 12)

    def session(
        self,
        agent: Agent,
        extra: tuple[str, ...] = (),
        *,
        drop: tuple[str, ...] = (),
        delegation: Delegation | None = None,
    ) -> Session:
        """Open a session for agent, acting for its owner or for whoever delegated the work."""
        on_behalf_of = delegation.on_behalf_of if delegation else agent.owner.email
        credential = self.credential(agent, extra, drop)
        return Session(self.world, agent, credential, on_behalf_of, delegation, sink=self.steps)

    # -- events ------------------------------------------------------------------------------

    def add(self, t: int, s: Session, event_id: str, key: bool = False) -> str:
        """Check the event s just made at t; key events are the ones the label lists. Return it."""
        if t < self.clock.get(s.session_id, self.start) or t <= self.now:
            # Scripts must run forward in time, or caused_by would point into the future.
            raise ValueError(f"chain event {event_id} scripted out of time order")
        self.clock[s.session_id] = t
        if key:
            self.key.append((t, event_id))
        return event_id

    def task(self, s: Session, t: int, intent: str, scopes: list[str]) -> str:
        """Start a task declaring scopes (the benign filler's scope is always declared)."""
        declared = list(scopes)
        if _FILLER_SCOPE not in declared:
            declared.append(_FILLER_SCOPE)
        return self.add(t, s, s.start_task(t, intent, declared))

    def llm(self, s: Session, t: int, untrusted: bool = False, key: bool = False) -> str:
        """A model call in the chain."""
        return self.add(t, s, s.llm(t, untrusted), key)

    def act(
        self,
        s: Session,
        t: int,
        op: tuple[str, str, str],
        fields: Mapping[str, object],
        *,
        key: bool = False,
        outcome: str = "success",
        error: str | None = None,
        caused_by: str | None = None,
    ) -> str:
        """An action in the chain: op is (category, action, scope_used)."""
        event_id = s.act(t, op, fields, outcome=outcome, error=error, caused_by=caused_by)
        return self.add(t, s, event_id, key)

    def approval(
        self,
        s: Session,
        t: int,
        resource: str,
        approver: str,
        *,
        key: bool = False,
        request: bool = True,
    ) -> str:
        """A human approves resource (optionally after a request a minute or more earlier)."""
        if request:
            earliest = self.clock.get(s.session_id, self.start) + 1
            asked = max(earliest, t - 60_000_000 - int(self.rnd() * 240_000_000))
            if asked < t:
                request_id = s.approval(asked, "approval.request", resource, approver, "by agent")
                self.add(asked, s, request_id)
        grant = s.approval(t, "approval.grant", resource, approver, "approved")
        return self.add(t, s, grant, key)

    def fill(self, s: Session, after: int, before: int, count: int) -> None:
        """count benign steps (model calls, knowledge-base look-ups) strictly between two times."""
        after = max(after, self.clock.get(s.session_id, after))
        if count <= 0 or before - after < 2 * count + 2:
            return
        span = before - after
        times = sorted(after + 1 + int(self.rnd() * (span - 2)) for _ in range(count))
        for t in times:
            if self.rnd() < 0.5:
                self.add(t, s, s.llm(t))
            else:
                fields = {"tool": "kb_search", "resource": "kb://internal/handbook", "bytes": 1_800}
                self.add(t, s, s.act(t, _FILLER_OP, fields))

    def complete(self, s: Session, t: int) -> int:
        """Close the session's task; return the time."""
        self.add(t, s, s.complete_task(t))
        return t

    def minutes(self, low: float, high: float) -> int:
        """A random duration between low and high minutes."""
        return int((low + (high - low) * self.rnd()) * MICROS_PER_MINUTE)


ChainBuilder = Callable[[Chain, str, bool], None]


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """How to inject one scenario: its variants and its builder."""

    scenario: str
    positive_variants: tuple[str, ...]
    negative_variants: tuple[str, ...]
    build: ChainBuilder
    """build(chain, variant, negative) scripts the chain starting at chain.start."""


class ChainInjector:
    """Decides when to inject which chain, on which agents; keeps chains out of each other's way."""

    def __init__(
        self,
        world: World,
        rate: float,
        specs: dict[str, ScenarioSpec],
        *,
        part: int = 0,
        parts: int = 1,
    ) -> None:
        self.world = world
        self.rnd = world.rnd
        self.mean_gap = 1_000.0 / rate if rate > 0 else 0.0
        self.specs = specs
        # The parts (shards) of a run share the (scenario, polarity) pairs out, a positive and
        # a negative of each scenario to different parts, so each pair's variants take turns in
        # one part and appear as often as when one injector deals all the pairs.
        self.pairs = [
            (scenario, negative)
            for index, scenario in enumerate(SCENARIOS)
            for negative in (False, True)
            if (index + negative) % parts == part
        ]
        self.deck: list[tuple[str, bool]] = []
        self.variant_turn: dict[tuple[str, bool], int] = {}
        self.chain_count = 0
        # agent_id -> (end of its last chain, whether that chain needed a day-long window)
        self.last_chain: dict[str, tuple[int, bool]] = {}
        self._current_scenario = ""

    def next_gap(self) -> int:
        """Events to wait before the next injection."""
        if self.mean_gap <= 0:
            return 1 << 62
        return 1 + int(self.world.rng.expovariate(1.0) * self.mean_gap)

    def find_agent(
        self, kinds: tuple[str, ...], now: int, start: int, exclude: list[Agent]
    ) -> Agent:
        """A random agent of these kinds that is free of chains and background pauses."""
        by_kind = self.world.org.by_kind
        pool = [agent for kind in kinds for agent in by_kind[kind]]
        day_window = self._current_scenario == LOW_AND_SLOW
        busy_until = self.world.busy_until
        for _ in range(24):
            agent = pool[int(self.rnd() * len(pool))]
            if agent in exclude or not self.world.is_free(agent, now):
                continue
            if not day_window and busy_until.get(agent.agent_id, 0) + _CLEAR_OF_BACKGROUND > start:
                continue
            previous = self.last_chain.get(agent.agent_id)
            if previous is not None:
                end, was_day_window = previous
                gap = _COOL_DOWN_AROUND_DAY_WINDOW if day_window or was_day_window else _COOL_DOWN
                if end + gap > start:
                    continue
            return agent
        raise NoAgentAvailableError(self._current_scenario)

    def _draw(self) -> tuple[str, bool]:
        if not self.deck:
            self.deck = list(self.pairs)
            self.world.rng.shuffle(self.deck)
            # Low-and-slow chains fit only while a day of the run is left: deal them first.
            self.deck.sort(key=lambda pair: pair[0] == LOW_AND_SLOW)
        return self.deck.pop()

    def inject(self, now: int, room: int, events_per_micro: float) -> list[ChainPlan]:
        """Build the next chain if it fits in room events and finishes before the run ends."""
        scenario, negative = self._draw()
        spec = self.specs[scenario]
        variants = spec.negative_variants if negative else spec.positive_variants
        turn = self.variant_turn.get((scenario, negative), 0)
        variant = variants[turn % len(variants)]
        pause = scenario != LOW_AND_SLOW
        lead = (
            _LEAD + int(self.rnd() * 60 * MICROS_PER_MINUTE)
            if pause
            else int(self.rnd() * 30 * MICROS_PER_MINUTE)
        )
        chain = Chain(self.world, self, now, now + 1 + lead)
        self._current_scenario = scenario
        try:
            spec.build(chain, variant, negative)
        except NoAgentAvailableError:
            self.deck.insert(0, (scenario, negative))  # retry it once the rest is dealt
            return []
        chain.steps.sort(key=lambda step: step[0])
        end = chain.steps[-1][0]
        # Keep the tail of the stream realistic: only inject what finishes well before the end.
        expected_background = (end - now) * events_per_micro * 1.5
        if len(chain.steps) + expected_background > room:
            return []
        self.variant_turn[(scenario, negative)] = turn + 1
        self.chain_count += 1
        for agent in chain.agents:
            self.last_chain[agent.agent_id] = (end, not pause)
            if pause:
                self.world.paused_until[agent.agent_id] = end + _RESUME_AFTER
        chain.key.sort()
        label = Label(
            chain_id=f"chain-{self.chain_count:06d}",  # the merged run renumbers across shards
            scenario=scenario,
            event_ids=tuple(event_id for _, event_id in chain.key),
            negative=negative,
            variant=variant,
        )
        events: list[Scheduled] = [(t, line, _CHAIN_STEP) for t, line, _ in chain.steps]
        events[-1] = (end, events[-1][1], ChainTag(label))
        return [ChainPlan(events, label, tuple(chain.agents))]
