"""The simulated organisation: people, agents of several kinds, their scopes and credentials."""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from .config import SHARDS
from .ids import MICROS_PER_HOUR, Ids

__all__ = [
    "AGENT_KINDS",
    "CUSTOMER_DOMAINS",
    "EXTERNAL_SITES",
    "SERVICES",
    "Agent",
    "AgentKind",
    "Credential",
    "Human",
    "Organisation",
    "build_organisation",
]


@dataclass(frozen=True, slots=True)
class AgentKind:
    """A family of agents: how they are named, what their credentials carry, how busy they are."""

    name: str
    id_prefix: str
    scopes: tuple[str, ...]
    share: float
    sessions_per_hour: float
    """Session starts per agent per peak working hour."""
    night_shift: bool
    """Runs scheduled work outside office hours (operations and data pipelines do)."""


AGENT_KINDS: dict[str, AgentKind] = {
    kind.name: kind
    for kind in (
        AgentKind(
            "support",
            "support-bot",
            ("tickets:read", "tickets:write", "kb:read", "email:send", "refunds:write", "crm:read"),
            0.25,
            2.2,
            False,
        ),
        AgentKind(
            "coding",
            "code-agent",
            ("repo:read", "repo:write", "ci:trigger", "web:read", "kb:read"),
            0.22,
            0.9,
            False,
        ),
        AgentKind(
            "devops",
            "devops-agent",
            (
                "config:read",
                "config:write:prod",
                "config:write:staging",
                "deploy:prod",
                "deploy:staging",
                "metrics:read",
                "iam:write",
                "kb:read",
            ),
            0.13,
            0.9,
            True,
        ),
        AgentKind(
            "analyst",
            "analyst-agent",
            ("warehouse:read", "secrets:read:analytics", "reports:write", "etl:trigger", "kb:read"),
            0.15,
            1.1,
            True,
        ),
        AgentKind(
            "finance",
            "finance-agent",
            ("invoices:read", "payments:write", "ledger:write", "secrets:read:payments", "kb:read"),
            0.10,
            0.9,
            False,
        ),
        AgentKind(
            "orchestrator",
            "orchestrator",
            ("agents:delegate", "web:read", "kb:read"),
            0.15,
            1.0,
            False,
        ),
    )
}

# Orchestrators in the background hold every scope they may hand on, so a routine delegation is
# never a confused deputy; the cross-agent scenario builds its delegators without them.
_ORCHESTRATOR_SCOPES: tuple[str, ...] = tuple(
    sorted({scope for kind in AGENT_KINDS.values() for scope in kind.scopes})
)

SERVICES: tuple[str, ...] = (
    "payments-service",
    "checkout-api",
    "search-indexer",
    "auth-gateway",
    "notifications",
    "billing-worker",
    "inventory-api",
    "feature-store",
    "pricing-engine",
    "ledger-sync",
    "user-profile",
    "shipping-quotes",
)

CUSTOMER_DOMAINS: tuple[str, ...] = (
    "globex.example",
    "initech.example",
    "umbrella.example",
    "hooli.example",
    "vandelay.example",
    "soylent.example",
    "wonka.example",
    "tyrell.example",
    "cyberdyne.example",
    "massive-dynamic.example",
)

EXTERNAL_SITES: tuple[str, ...] = (
    "docs.python.org",
    "developer.mozilla.org",
    "stackoverflow.com",
    "pypi.org",
    "github.com",
    "learn.microsoft.com",
    "kubernetes.io",
    "en.wikipedia.org",
)

_FIRST_NAMES = (
    "alice", "bruno", "chen", "dara", "elif", "farah", "goran", "hana", "ines", "jonas",
    "kofi", "lena", "mateo", "nadia", "omar", "priya", "quinn", "rosa", "sven", "tariq",
    "uma", "viktor", "wen", "ximena", "yusuf", "zoe",
)  # fmt: skip
_LAST_NAMES = (
    "nguyen", "okafor", "schmidt", "rossi", "tanaka", "silva", "kowalski", "haddad", "novak",
    "larsen", "mendes", "ito", "fischer", "osei", "petrov", "garcia", "kim", "dubois",
)  # fmt: skip
_ROLES = ("developer", "analyst", "sre-lead", "finance-controller", "support-lead", "manager")


@dataclass(frozen=True, slots=True)
class Human:
    """A person: requester, owner of delegated work, or approver."""

    email: str
    role: str


@dataclass(frozen=True, slots=True)
class Credential:
    """A token an agent acts with; scopes is shared by every event that cites it, never mutated."""

    credential_id: str
    scopes: list[str]
    expires_micros: int
    expires_text: str
    json_fields: str = ""
    """The credential_id, credential_scopes and credential_expires_at members as JSON text."""


class Agent:
    """One agent and its live state; mutable because credentials rotate as time passes."""

    __slots__ = (
        "agent_id",
        "credential",
        "json_agent",
        "json_principal",
        "kind",
        "owner",
        "principal",
        "services",
    )

    def __init__(self, agent_id: str, kind: AgentKind, owner: Human, services: tuple[str, ...]):
        self.agent_id = agent_id
        self.kind = kind
        self.owner = owner
        self.services = services
        self.principal = f"svc-{agent_id}@acme.iam"
        self.credential = Credential("", [], 0, "")
        # Serialised once here because every event of the agent repeats them.
        self.json_agent = f'"agent_id":{orjson.dumps(agent_id).decode()},'
        """The agent_id member, with a trailing comma."""
        self.json_principal = f',"principal":{orjson.dumps(self.principal).decode()}'
        """The principal member, with a leading comma."""


@dataclass(frozen=True, slots=True)
class Organisation:
    """Everyone who acts or approves in the simulation."""

    agents: tuple[Agent, ...]
    by_kind: dict[str, tuple[Agent, ...]]
    humans_by_role: dict[str, tuple[Human, ...]]

    def part(self, index: int, parts: int) -> Organisation:
        """Every parts-th agent of each kind from the index-th on, with all the people."""
        by_kind = {kind: members[index::parts] for kind, members in self.by_kind.items()}
        agents = tuple(agent for members in by_kind.values() for agent in members)
        return Organisation(agents, by_kind, self.humans_by_role)

    def scopes_of(self, agent: Agent) -> tuple[str, ...]:
        """Return the scopes an agent's own credential carries."""
        if agent.kind.name == "orchestrator":
            return _ORCHESTRATOR_SCOPES
        return agent.kind.scopes


def issue_credential(ids: Ids, scopes: list[str], now: int, ttl_hours: int) -> Credential:
    """Return a new credential valid from now for ttl_hours."""
    expires = now + ttl_hours * MICROS_PER_HOUR
    credential_id = ids.token("cred-")
    expires_text = ids.time_text(expires)
    # Serialised once here because every action the credential is used for repeats it.
    members = orjson.dumps(
        {
            "credential_id": credential_id,
            "credential_scopes": scopes,
            "credential_expires_at": expires_text,
        }
    )
    return Credential(credential_id, scopes, expires, expires_text, members[1:-1].decode())


def build_organisation(rng: random.Random, ids: Ids, agent_count: int, now: int) -> Organisation:
    """Create agent_count agents (every kind represented) and the people around them."""
    human_count = max(12, agent_count // 2)
    humans: list[Human] = []
    used: set[str] = set()
    for index in range(human_count):
        name = f"{rng.choice(_FIRST_NAMES)}.{rng.choice(_LAST_NAMES)}"
        if name in used:
            name = f"{name}{index}"
        used.add(name)
        # Cycle roles so that every role exists even in a tiny organisation.
        humans.append(Human(f"{name}@acme.example", _ROLES[index % len(_ROLES)]))
    humans_by_role = {role: tuple(h for h in humans if h.role == role) for role in _ROLES}

    kinds = list(AGENT_KINDS.values())
    # At least two of each kind in each shard: some chains need two agents of a kind.
    least = 2 * SHARDS
    counts = {kind.name: max(least, round(agent_count * kind.share)) for kind in kinds}
    owner_role = {
        "support": "support-lead",
        "coding": "developer",
        "devops": "sre-lead",
        "analyst": "analyst",
        "finance": "finance-controller",
        "orchestrator": "manager",
    }
    agents: list[Agent] = []
    by_kind: dict[str, tuple[Agent, ...]] = {}
    for kind in kinds:
        members = []
        for number in range(1, counts[kind.name] + 1):
            owner = rng.choice(humans_by_role[owner_role[kind.name]])
            services = tuple(rng.sample(SERVICES, 3))
            members.append(Agent(f"{kind.id_prefix}-{number:03d}", kind, owner, services))
        by_kind[kind.name] = tuple(members)
        agents.extend(members)
    org = Organisation(tuple(agents), by_kind, humans_by_role)
    for agent in agents:
        agent.credential = issue_credential(
            ids, list(org.scopes_of(agent)), now - rng.randrange(MICROS_PER_HOUR), 4
        )
    return org
