"""Chains about privileged changes: secret→config→deploy, missing approvals, prompt injection
leading to privileged actions, and confused-deputy delegation.

Privileged steps in chains of *other* scenarios are approved (same task, within the hour), so
each chain matches only its own detector.
"""

from __future__ import annotations

from .chains import Chain, ScenarioSpec
from .org import SERVICES, Agent
from .session import Delegation, Session
from .steps import Op

__all__ = ["CROSS_AGENT", "PRIVILEGED_CHANGE", "SECRET_CONFIG_TRIGGER", "UNTRUSTED_INPUT"]

_ANY_KIND = ("support", "coding", "devops", "analyst", "finance", "orchestrator")


def _service(chain: Chain) -> str:
    return SERVICES[int(chain.rnd() * len(SERVICES))]


def _privileged_target(chain: Chain, kind: str) -> tuple[Op, dict[str, object], str]:
    """A privileged action an agent of this kind performs: (op, fields, approver role)."""
    n = 1_000 + int(chain.rnd() * 9_000)
    service = _service(chain)
    if kind == "finance":
        op: Op = ("tool", "payment.create", "payments:write")
        fields: dict[str, object] = {
            "tool": "payments_api",
            "resource": f"payment://vendors/V-{n}/INV-{n * 7}",
        }
        fields["attrs"] = {"amount_eur": 5_000 + int(chain.rnd() * 90_000)}
        role = "finance-controller"
    elif kind == "support":
        op = ("tool", "refund.issue", "refunds:write")
        fields = {"tool": "payments_api", "resource": f"payment://refunds/ORD-{n * 131}"}
        fields["attrs"] = {"amount_eur": 200 + int(chain.rnd() * 4_000)}
        role = "support-lead"
    else:
        choice = int(chain.rnd() * 3)
        if choice == 0:
            op = ("job", "job.trigger", "deploy:prod")
            fields = {"tool": "deployer", "resource": f"job://deploy/{service}/prod"}
        elif choice == 1:
            op = ("config", "config.update", "config:write:prod")
            fields = {"tool": "config_api", "resource": f"config://prod/{service}"}
        else:
            op = ("identity", "iam.role.grant", "iam:write")
            fields = {"tool": "iam_api", "resource": f"iam://roles/{service}-admin"}
        role = "sre-lead"
    fields.update(privileged=True, authz_decision="allow", policy_id="pol-default-allow")
    return op, fields, role


# -- secret-config-trigger-chain --------------------------------------------------------------


def build_secret_config_trigger(chain: Chain, variant: str, negative: bool) -> None:
    """Read a secret, change a config, trigger a job, all within the hour (or look-alikes)."""
    agent = chain.agent(("devops", "coding", "analyst", "orchestrator"))
    service = _service(chain)
    scopes = ("secrets:read:prod", "config:read", "config:write:prod", "deploy:prod")
    s = chain.session(agent, scopes)
    t = chain.start
    chain.task(s, t, f"Rotate the {service} upstream endpoint", list(scopes))
    secret_op: Op = ("secret", "secret.read", "secrets:read:prod")
    secret = {
        "tool": "vault",
        "resource": f"secret://vault/prod/{service}/api-key",
        "sensitivity": "restricted",
    }
    config_resource = f"config://prod/{service}"
    job_resource = f"job://deploy/{service}/prod"
    config_op: Op = ("config", "config.update", "config:write:prod")
    if variant == "config-read-only":
        config_op = ("config", "config.read", "config:read")
    config: dict[str, object] = {"tool": "config_api", "resource": config_resource}
    if config_op[1] != "config.read":
        config.update(privileged=True, authz_decision="allow", policy_id="pol-prod-change")
    job_action = "workflow.dispatch" if chain.rnd() < 0.3 else "job.trigger"
    job_op: Op = ("job", job_action, "deploy:prod")
    job = {"tool": "deployer", "resource": job_resource, "privileged": True}
    approver = chain.human("sre-lead")
    fast = variant == "fast-chain"
    t += chain.minutes(5, 8)

    def secret_read(at: int) -> None:
        if variant == "secret-read-denied":
            denied = dict(secret, authz_decision="deny", policy_id="pol-vault-prod")
            chain.act(
                s, at, secret_op, denied, key=True, outcome="denied", error="permission denied"
            )
        else:
            chain.act(s, at, secret_op, dict(secret, authz_decision="allow"), key=True)

    def change_and_trigger(at: int, gap: int) -> int:
        if config_op[1] != "config.read":
            chain.approval(
                s, at - chain.minutes(0.5, 1.5), config_resource, approver, request=not fast
            )
        chain.act(s, at, config_op, config, key=True)
        at += gap
        chain.approval(s, at - chain.minutes(0.2, 0.4), job_resource, approver, request=False)
        chain.act(s, at, job_op, job, key=True)
        return at

    if variant == "wrong-order":
        t = change_and_trigger(t, chain.minutes(3, 20))
        t += chain.minutes(2, 20)
        secret_read(t)
    elif variant == "split-across-sessions":
        secret_read(t)
        t += chain.minutes(0.5, 2)
        chain.complete(s, t)
        s = chain.session(agent, scopes)
        t += chain.minutes(5, 15)
        chain.task(s, t, f"Apply the {service} change", list(scopes))
        t = change_and_trigger(t + chain.minutes(3, 10), chain.minutes(3, 12))
    elif variant == "too-slow":
        first = t
        secret_read(t)
        t += chain.minutes(25, 40)
        chain.fill(s, first, t - chain.minutes(2, 3), 2)
        t = change_and_trigger(t, chain.minutes(38, 60))
        assert t - first > 62 * 60_000_000
    elif variant == "different-agents":
        secret_read(t)
        t += chain.minutes(1, 2)
        chain.complete(s, t)
        other = chain.agent(("devops",))
        s = chain.session(other, scopes)
        t += chain.minutes(2, 5)
        chain.task(s, t, f"Apply the {service} change", list(scopes))
        t = change_and_trigger(t + chain.minutes(3, 10), chain.minutes(3, 12))
    else:
        first = t
        secret_read(t)
        if fast:
            t = change_and_trigger(t + chain.minutes(1.6, 3), chain.minutes(1, 3))
        else:
            t += chain.minutes(8, 22)
            chain.fill(s, first, t - chain.minutes(5, 6), int(chain.rnd() * 4))
            t = change_and_trigger(t, chain.minutes(5, 22))
    chain.complete(s, t + chain.minutes(0.5, 3))


SECRET_CONFIG_TRIGGER = ScenarioSpec(
    "secret-config-trigger-chain",
    ("deploy-with-stolen-key", "split-across-sessions", "fast-chain"),
    ("wrong-order", "too-slow", "secret-read-denied", "config-read-only", "different-agents"),
    build_secret_config_trigger,
)


# -- privileged-change-without-approval -------------------------------------------------------


def build_privileged_change(chain: Chain, variant: str, negative: bool) -> None:
    """A privileged change with no fresh approval for its resource, or properly approved ones."""
    agent = chain.agent(("devops", "finance", "support"))
    op, fields, role = _privileged_target(chain, agent.kind.name)
    if variant == "staging-change":
        op = ("config", "config.update", "config:write:staging")
        fields = {"tool": "config_api", "resource": f"config://staging/{_service(chain)}"}
    resource = str(fields["resource"])
    approver = chain.human(role)
    t = chain.start
    if variant == "approved-by-task-peer":
        peer = chain.agent(("orchestrator",))
        p = chain.session(peer)
        chain.task(p, t, "Coordinate the change", [op[2]])
        t += chain.minutes(5, 10)
        chain.approval(p, t, resource, approver, key=True)
        s = chain.session(agent, (op[2],))
        assert p.task_id is not None
        s.join_task(p.task_id)
        t += chain.minutes(1, 40)
        chain.act(s, t, op, fields, key=True)
        return
    s = chain.session(agent, (op[2],))
    chain.task(s, t, f"Apply change to {resource}", [op[2]])
    if variant == "approval-in-other-task":
        other = chain.agent(("devops", "finance", "support", "orchestrator"))
        o = chain.session(other, (op[2],))
        chain.task(o, t + 1, "Prepare a similar change", [op[2]])
        chain.approval(o, t + chain.minutes(5, 10), resource, approver)
    t += chain.minutes(12, 15)
    if variant == "stale-approval":
        chain.approval(s, t, resource, approver)
        t += chain.minutes(62, 150)
    elif variant == "approval-for-other-resource":
        chain.approval(s, t, resource + "-staging", approver)
        t += chain.minutes(1, 30)
    elif variant == "approved-same-task":
        chain.approval(s, t, resource, approver, key=True)
        t += chain.minutes(1, 55)
    else:
        t += chain.minutes(0, 30)
    chain.fill(s, t - chain.minutes(10, 11), t, int(chain.rnd() * 4))
    chain.act(s, t, op, fields, key=True)
    chain.complete(s, t + chain.minutes(0.5, 2))


PRIVILEGED_CHANGE = ScenarioSpec(
    "privileged-change-without-approval",
    ("no-approval", "stale-approval", "approval-for-other-resource", "approval-in-other-task"),
    ("approved-same-task", "approved-by-task-peer", "staging-change"),
    build_privileged_change,
)


# -- untrusted-input-to-privileged-action -----------------------------------------------------


def _untrusted_input(chain: Chain, s: Session, t: int, kind: str) -> str:
    """Make the agent consume outside content at t; return the untrusted event's id."""
    if kind == "devops":
        fetch = {"tool": "web_fetch", "destination": "github.com", "external": True}
        fetch.update(input_trust="untrusted", bytes=30_000)
        chain.act(s, t, ("network", "http.get", "web:read"), fetch)
    else:
        source = "ticket://helpdesk/TCK-7" if kind == "support" else "invoice://ap/INV-77"
        read = {"tool": "inbox", "resource": source, "sensitivity": "internal", "bytes": 9_000}
        chain.act(s, t, ("data", "message.read", "inbox:read"), read)
    t += chain.minutes(0.1, 0.5)
    return chain.llm(s, t, untrusted=True, key=True)


def build_untrusted_input(chain: Chain, variant: str, negative: bool) -> None:
    """Outside content steers an agent into a privileged action within minutes."""
    agent = chain.agent(("devops", "finance", "support"))
    kind = agent.kind.name
    op, fields, role = _privileged_target(chain, kind)
    resource = str(fields["resource"])
    approver = chain.human(role)
    scopes = (op[2], "web:read", "inbox:read")
    s = chain.session(agent, scopes)
    t = chain.start
    chain.task(s, t, f"Work through the queue for {resource}", list(scopes))
    t += chain.minutes(8, 10)
    if variant == "other-session":
        _untrusted_input(chain, s, t, kind)
        t += chain.minutes(1, 2)
        chain.complete(s, t)
        s = chain.session(agent, scopes)
        t += chain.minutes(0.5, 1)
        chain.task(s, t, f"Apply {resource}", [op[2]])
        t += chain.minutes(1, 3)
        chain.approval(s, t, resource, approver)
        t += chain.minutes(1, 5)
        chain.act(s, t, op, fields, key=True)
        chain.complete(s, t + chain.minutes(0.5, 2))
        return
    if variant != "approval-in-between":
        approved_at = t
        chain.approval(s, t, resource, approver)
        t += chain.minutes(1, 10)
    _untrusted_input(chain, s, t, kind)
    t += chain.minutes(0.6, 1)
    if variant == "approval-in-between":
        t += chain.minutes(1, 5)
        chain.approval(s, t, resource, approver, key=True)
        t += chain.minutes(0.5, 5)
    elif variant == "outside-window":
        t = min(t + chain.minutes(16, 40), approved_at + chain.minutes(55, 57))
    elif variant == "injected-instructions":
        t += chain.minutes(0.2, 5)  # the injected text says "do it now"
    else:
        t += chain.minutes(8, 12)  # a poisoned document is acted on at the end of the work
    chain.fill(s, t - chain.minutes(0.5, 0.6), t, int(chain.rnd() * 3))
    chain.act(s, t, op, fields, key=True)
    chain.complete(s, t + chain.minutes(0.5, 2))


UNTRUSTED_INPUT = ScenarioSpec(
    "untrusted-input-to-privileged-action",
    ("injected-instructions", "poisoned-document"),
    ("approval-in-between", "outside-window", "other-session"),
    build_untrusted_input,
)


# -- cross-agent-privilege-handoff ------------------------------------------------------------


def _delegate(chain: Chain, a: Session, t: int, target: Agent, intent: str) -> Delegation:
    fields = {"target_agent": target.agent_id, "attrs": {"request": intent}}
    event_id = chain.act(a, t, ("agent", "agent.delegate", "agents:delegate"), fields, key=True)
    return Delegation(event_id, a.last_span, a.trace_id, a.on_behalf_of or "", intent)


def build_cross_agent(chain: Chain, variant: str, negative: bool) -> None:
    """A delegates to B, and B does something privileged that A itself could not."""
    delegator = chain.agent(("support", "coding", "analyst"))
    worker = chain.agent(("devops", "finance"))
    op, fields, role = _privileged_target(chain, worker.kind.name)
    resource = str(fields["resource"])
    extra = (
        ("agents:delegate", op[2]) if variant == "delegator-holds-scope" else ("agents:delegate",)
    )
    a = chain.session(delegator, extra)
    t = chain.start
    chain.task(a, t, "Get the customer's blocked order moving", ["agents:delegate"])
    t += chain.minutes(0.5, 5)
    chain.fill(a, chain.start, t, int(chain.rnd() * 3))
    intent = f"Please take care of {resource}"
    handover = _delegate(chain, a, t, worker, intent)
    hops = {"direct-handoff": 1, "via-task": 2, "via-model": 3}.get(
        variant, 1 + int(chain.rnd() * 3)
    )
    if variant == "not-caused-by-delegation":
        b = chain.session(worker, (op[2], "metrics:read"), delegation=handover)
        t += chain.minutes(0.05, 0.3)
        chain.task(b, t, intent, ["metrics:read"])
        t += chain.minutes(0.3, 1)
        chain.act(
            b,
            t,
            ("tool", "metrics.query", "metrics:read"),
            {"tool": "prometheus", "resource": "metrics://prod/orders"},
        )
        t += chain.minutes(0.2, 1)
        chain.complete(b, t)
        b = chain.session(worker, (op[2],))  # the worker's own, unrelated task
        b.last = None
        t += chain.minutes(1, 5)
        chain.task(b, t, f"Scheduled maintenance of {resource}", [op[2]])
    else:
        b = chain.session(worker, (op[2], "metrics:read"), delegation=handover)
        t += chain.minutes(0.05, 0.3)
        chain.task(b, t, intent, [op[2], "metrics:read"])
    start_id = b.last
    t += chain.minutes(0.3, 2)
    thought = chain.llm(b, t)
    t += chain.minutes(0.5, 3)
    if variant == "non-privileged-follow-up":
        query = {"tool": "prometheus", "resource": "metrics://prod/orders"}
        chain.act(
            b,
            t,
            ("tool", "metrics.query", "metrics:read"),
            query,
            key=True,
            caused_by=handover.event_id,
        )
        chain.complete(b, t + chain.minutes(0.2, 1))
        return
    chain.approval(b, t, resource, chain.human(role))
    t += chain.minutes(0.5, 5)
    cause = {1: handover.event_id, 2: start_id, 3: thought}[hops]
    if variant == "not-caused-by-delegation":
        cause = thought
    chain.act(b, t, op, fields, key=True, caused_by=cause)
    chain.complete(b, t + chain.minutes(0.2, 1))


CROSS_AGENT = ScenarioSpec(
    "cross-agent-privilege-handoff",
    ("direct-handoff", "via-task", "via-model"),
    ("delegator-holds-scope", "not-caused-by-delegation", "non-privileged-follow-up"),
    build_cross_agent,
)
