"""Small reusable steps that background scripts and attack chains are built from.

Each step appends its events to the session's sink and returns the time it finished.
"""

from __future__ import annotations

from collections.abc import Mapping

from .org import Agent
from .session import Delegation, Op, Session, World

__all__ = ["Op", "approved", "call", "human", "llm_step", "open_session", "pick"]

_ERRORS_FAILURE = (
    "HTTP 503 Service Unavailable",
    "HTTP 429 Too Many Requests",
    "HTTP 409 Conflict",
)
_ERRORS_ERROR = ("timeout after 30s", "connection reset by peer", "TLS handshake failed")


def pick(world: World, options: tuple[str, ...]) -> str:
    """Pick one option uniformly."""
    return options[int(world.rnd() * len(options))]


def human(world: World, role: str) -> str:
    """Pick a person with the given role; return their email."""
    people = world.org.humans_by_role[role]
    return people[int(world.rnd() * len(people))].email


def call(
    world: World,
    s: Session,
    t: int,
    op: Op,
    fields: Mapping[str, object],
    *,
    fail_rate: float = 0.0,
    max_attempts: int = 3,
) -> int:
    """Perform op, retrying failures with exponential backoff; return the finishing time.

    The returned time is negative when every attempt failed.
    """
    rnd = world.rnd
    for attempt in range(max_attempts):
        r = rnd()
        t += int((0.03 + 2.5 * r * r) * 1_000_000)  # the tool's latency: 30 ms to 2.5 s
        if not fail_rate or rnd() >= fail_rate:
            s.act(t, op, fields)
            return t
        resource = fields.get("resource")
        if not world.may_fail(
            s.agent_id, op[1], resource if isinstance(resource, str) else None, t
        ):
            s.act(t, op, fields)
            return t
        if rnd() < 0.5:
            outcome, error = "failure", pick(world, _ERRORS_FAILURE)
        else:
            outcome, error = "error", pick(world, _ERRORS_ERROR)
        s.act(t, op, fields, outcome=outcome, error=error)
        # Exponential backoff with jitter: about 1 s, 2 s, 4 s.
        t += int((1 << attempt) * (0.8 + 0.4 * rnd()) * 1_000_000)
    return -t


def approved(
    world: World, s: Session, t: int, resource: str, role: str, *, reason: str, deny: float = 0.05
) -> int:
    """Ask a person with role to approve resource; return the grant time, negative if denied."""
    approver = human(world, role)
    t += world.think()
    s.approval(t, "approval.request", resource, approver, reason)
    t += world.human_wait()
    if world.rnd() < deny:
        s.approval(t, "approval.deny", resource, approver, reason)
        return -t
    s.approval(t, "approval.grant", resource, approver, reason)
    return t


def open_session(world: World, agent: Agent, delegation: Delegation | None) -> Session:
    """Start a session for agent with its current credential, for its owner or the delegator."""
    on_behalf_of = delegation.on_behalf_of if delegation else agent.owner.email
    return Session(world, agent, agent.credential, on_behalf_of, delegation)


def llm_step(world: World, s: Session, t: int, untrusted: bool = False) -> int:
    """Think, then call the model; return the new time."""
    t += world.think()
    r = world.rnd()
    t += int((0.5 + 9.0 * r * r * r) * 1_000_000)  # the model: mostly a second or two
    s.llm(t, untrusted)
    return t
