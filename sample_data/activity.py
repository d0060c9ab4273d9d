"""Orchestrators, the registry of session scripts, and each agent's endless background life."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .ids import MICROS_PER_MINUTE, MICROS_PER_SECOND
from .org import EXTERNAL_SITES, Agent
from .session import Delegation, World
from .steps import Op, call, llm_step, open_session, pick
from .workers import (
    analyst_session,
    coding_session,
    devops_session,
    finance_session,
    support_session,
)

__all__ = ["SESSION_SCRIPTS", "SessionScript", "agent_life", "orchestrator_session"]

SessionScript = Callable[[World, Agent, int, Delegation | None], int]
"""Generates one whole session from its start time; returns the time it finished."""

WEB_SEARCH: Op = ("network", "web.search", "web:read")
DELEGATE: Op = ("agent", "agent.delegate", "agents:delegate")

_DELEGABLE = ("support", "coding", "devops", "analyst", "finance")
_REQUESTS = {
    "support": "Answer the escalated customer thread",
    "coding": "Patch the failing integration test",
    "devops": "Roll out the approved release",
    "analyst": "Pull the numbers for the weekly review",
    "finance": "Settle the approved vendor invoices",
}
_ASKS = (
    "Prepare the weekly operations review",
    "Follow up on yesterday's incident",
    "Onboard a new enterprise customer",
    "Close out the sprint",
)


def orchestrator_session(world: World, agent: Agent, t: int, delegation: Delegation | None) -> int:
    """Plan a person's request and hand parts of it to specialist agents."""
    rnd = world.rnd
    s = open_session(world, agent, delegation)
    search = rnd() < 0.3
    scopes = ["agents:delegate", "kb:read"]
    if search:
        scopes.append("web:read")
    s.start_task(t, delegation.intent if delegation else pick(world, _ASKS), scopes)
    t = llm_step(world, s, t)
    if search:
        fields: dict[str, object] = {
            "tool": "web_search",
            "destination": pick(world, EXTERNAL_SITES),
        }
        fields.update(external=True, input_trust="untrusted", bytes=5_000 + int(rnd() * 60_000))
        t = abs(call(world, s, t, WEB_SEARCH, fields, fail_rate=0.03))
        t = llm_step(world, s, t, untrusted=True)
    for _ in range(1 + int(rnd() * 3)):
        kind = _DELEGABLE[int(rnd() * len(_DELEGABLE))]
        members = world.org.by_kind[kind]
        target = members[int(rnd() * len(members))]
        if not world.is_free(target, t):
            continue  # busy with something else; the orchestrator does that part itself
        t += world.think()
        intent = _REQUESTS[kind]
        fields = {"target_agent": target.agent_id, "attrs": {"request": intent}}
        event_id = s.act(t, DELEGATE, fields)
        handed = Delegation(event_id, s.last_span, s.trace_id, s.on_behalf_of or "", intent)
        start = t + 50_000 + int(rnd() * 2 * MICROS_PER_SECOND)
        world.busy(target, SESSION_SCRIPTS[kind](world, target, start, handed))
        t = llm_step(world, s, t)
    t += 30 * MICROS_PER_SECOND + int(rnd() * 10 * MICROS_PER_MINUTE)  # specialists report back
    t = llm_step(world, s, t)
    s.complete_task(t)
    return t


SESSION_SCRIPTS: dict[str, SessionScript] = {
    "support": support_session,
    "coding": coding_session,
    "devops": devops_session,
    "analyst": analyst_session,
    "finance": finance_session,
    "orchestrator": orchestrator_session,
}


def agent_life(world: World, agent: Agent, t: int) -> Iterator[int]:
    """An agent's own work, forever: office-hours rates, bursts, and pauses while in a chain.

    Yields the time of its next wake-up; resumed at that time, it generates the session that
    starts then (if the agent is not paused) and yields the following wake-up.
    """
    rnd = world.rnd
    script = SESSION_SCRIPTS[agent.kind.name]
    burst = 0
    while True:
        if burst > 0:
            burst -= 1
            t += 5 * MICROS_PER_SECOND + int(rnd() * 85 * MICROS_PER_SECOND)  # queue backlog
        else:
            t = world.next_session_start(agent.kind, t)
            if rnd() < 0.2:
                burst = 1 + int(rnd() * 5)
        yield t  # resumed at the start time, so the pause check below sees the present
        until = world.paused_until.get(agent.agent_id, 0)
        if until > t:
            t = until + int(rnd() * 10 * MICROS_PER_MINUTE)
            burst = 0
            continue
        if world.refresh_credential(agent, t):
            t += 200_000
        t = script(world, agent, t, None)
        world.busy(agent, t)
