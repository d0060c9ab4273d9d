"""Everyday sessions of the specialist agents (support, coding, devops, analyst, finance).

Background work is kept clean with respect to the built-in detectors, so that the labels are
the whole truth about what should match:

* sessions that read confidential/restricted data or secrets never reach external hosts;
* no agent kind both reads secrets and changes configuration;
* every privileged action directly follows an `approval.grant` for its resource in the same
  task, with nothing in between, so no untrusted input or stale approval precedes it;
* retries stop short of five failures of one action on one resource within ten minutes;
* every scope used inside a task is declared by its `task.start`;
* external traffic per agent stays far below the low-and-slow volumes.
"""

from __future__ import annotations

from .ids import MICROS_PER_SECOND
from .org import CUSTOMER_DOMAINS, EXTERNAL_SITES, Agent
from .session import MAX_BACKGROUND_SESSION, Delegation, World
from .steps import Op, approved, call, llm_step, open_session, pick

__all__ = [
    "analyst_session",
    "coding_session",
    "devops_session",
    "finance_session",
    "support_session",
]

TICKET_READ: Op = ("data", "ticket.read", "tickets:read")
TICKET_UPDATE: Op = ("tool", "ticket.update", "tickets:write")
KB_SEARCH: Op = ("tool", "kb.search", "kb:read")
EMAIL_SEND: Op = ("network", "email.send", "email:send")
REFUND: Op = ("tool", "refund.issue", "refunds:write")
CODE_READ: Op = ("code", "code.read", "repo:read")
CODE_WRITE: Op = ("code", "code.write", "repo:write")
TESTS_RUN: Op = ("tool", "tests.run", "repo:read")
WEB_FETCH: Op = ("network", "http.get", "web:read")
GIT_PUSH: Op = ("code", "git.push", "repo:write")
PR_OPEN: Op = ("code", "pr.open", "repo:write")
CI_TRIGGER: Op = ("job", "job.trigger", "ci:trigger")
METRICS: Op = ("tool", "metrics.query", "metrics:read")
HEALTH_CHECK: Op = ("network", "http.get", "metrics:read")
CONFIG_READ: Op = ("config", "config.read", "config:read")
RUNBOOK: Op = ("tool", "runbook.read", "kb:read")
IAM_GRANT: Op = ("identity", "iam.role.grant", "iam:write")
WAREHOUSE_SECRET: Op = ("secret", "secret.read", "secrets:read:analytics")
WAREHOUSE_QUERY: Op = ("data", "warehouse.query", "warehouse:read")
REPORT_WRITE: Op = ("data", "report.write", "reports:write")
ETL_TRIGGER: Op = ("job", "job.trigger", "etl:trigger")
INVOICE_READ: Op = ("data", "invoice.read", "invoices:read")
LEDGER_WRITE: Op = ("data", "ledger.write", "ledger:write")
PAYMENTS_SECRET: Op = ("secret", "secret.read", "secrets:read:payments")
PAYMENT: Op = ("tool", "payment.create", "payments:write")

_TABLES = (
    ("orders", "confidential"),
    ("customers", "confidential"),
    ("payments", "restricted"),
    ("web_sessions", "internal"),
    ("inventory", "internal"),
    ("marketing_spend", "internal"),
)
_CODE_DIRS = ("api", "core", "db", "util")
_CODE_FILES = ("handlers", "models", "client", "retry")
_CHORES = ("Fix flaky test in", "Add pagination to", "Upgrade dependencies of", "Refactor")
_TOPICS = ("weekly revenue by region", "churn cohort", "refund rate", "conversion funnel")
_MAILBOXES = ("orders", "help", "it", "accounts", "ops")


def support_session(world: World, agent: Agent, t: int, delegation: Delegation | None) -> int:
    """Answer one customer ticket; sometimes an approved refund."""
    rnd = world.rnd
    s = open_session(world, agent, delegation)
    ticket = f"TCK-{int(rnd() * 900_000) + 100_000}"
    refund = rnd() < 0.08
    scopes = ["tickets:read", "tickets:write", "kb:read", "email:send"]
    if refund:
        scopes.append("refunds:write")
    s.start_task(t, delegation.intent if delegation else f"Resolve ticket {ticket}", scopes)
    resource = f"ticket://helpdesk/{ticket}"
    read: dict[str, object] = {"tool": "helpdesk", "resource": resource, "sensitivity": "internal"}
    read["bytes"] = 800 + int(rnd() * 30_000)
    t = abs(call(world, s, t, TICKET_READ, read, fail_rate=0.02))
    t = llm_step(world, s, t, untrusted=True)  # the model reads the customer's own words
    for _ in range(int(rnd() * 4)):
        kb = {"tool": "kb_search", "resource": "kb://support/articles", "bytes": 2_000}
        t = abs(call(world, s, t, KB_SEARCH, kb, fail_rate=0.03))
        t = llm_step(world, s, t)
    if refund:
        order = f"payment://refunds/ORD-{int(rnd() * 9_000_000) + 1_000_000}"
        granted = approved(world, s, t, order, "support-lead", reason="refund")
        t = abs(granted)
        if granted > 0:
            pay = {"tool": "payments_api", "resource": order, "privileged": True}
            pay.update(authz_decision="allow", policy_id="pol-refunds-approved")
            pay["attrs"] = {"amount_eur": 20 + int(rnd() * 480)}
            t = abs(call(world, s, t, REFUND, pay, fail_rate=0.03))
    customer = f"{pick(world, _MAILBOXES)}@{pick(world, CUSTOMER_DOMAINS)}"
    mail = {"tool": "email", "destination": customer, "external": True}
    mail["bytes"] = 1_500 + int(rnd() * 40_000)
    t = abs(call(world, s, t, EMAIL_SEND, mail, fail_rate=0.02))
    update = {"tool": "helpdesk", "resource": resource}
    t = abs(call(world, s, t, TICKET_UPDATE, update, fail_rate=0.02))
    t += world.think()
    s.complete_task(t)
    return t


def coding_session(world: World, agent: Agent, t: int, delegation: Delegation | None) -> int:
    """Make a code change: read, edit, test, sometimes look things up on the web, push, CI."""
    rnd = world.rnd
    s = open_session(world, agent, delegation)
    service = agent.services[int(rnd() * len(agent.services))]
    research = rnd() < 0.35
    scopes = ["repo:read", "repo:write", "ci:trigger", "kb:read"]
    if research:
        scopes.append("web:read")
    intent = delegation.intent if delegation else f"{pick(world, _CHORES)} {service}"
    deadline = t + MAX_BACKGROUND_SESSION // 2
    s.start_task(t, intent, scopes)
    t = llm_step(world, s, t)
    repo = f"repo://acme/{service}"
    for _ in range(3 + int(rnd() * 8)):
        if t > deadline:
            break
        r = rnd()
        untrusted = False
        if r < 0.4:
            path = f"{repo}/src/{pick(world, _CODE_DIRS)}/{pick(world, _CODE_FILES)}.py"
            read: dict[str, object] = {
                "tool": "read_file",
                "resource": path,
                "sensitivity": "internal",
            }
            read["bytes"] = 500 + int(rnd() * 20_000)
            t = abs(call(world, s, t, CODE_READ, read))
        elif r < 0.65:
            edit: dict[str, object] = {"tool": "edit_file", "resource": f"{repo}/src/core/retry.py"}
            edit["bytes"] = 200 + int(rnd() * 4_000)
            t = abs(call(world, s, t, CODE_WRITE, edit))
        elif r < 0.85 or not research:
            tests: dict[str, object] = {"tool": "pytest", "resource": f"{repo}/tests"}
            tests["attrs"] = {"tests": 20 + int(rnd() * 400)}
            t = abs(call(world, s, t, TESTS_RUN, tests, fail_rate=0.15, max_attempts=2))
        else:
            fetch: dict[str, object] = {
                "tool": "web_fetch",
                "destination": pick(world, EXTERNAL_SITES),
            }
            fetch.update(external=True, input_trust="untrusted", bytes=3_000 + int(rnd() * 120_000))
            t = abs(call(world, s, t, WEB_FETCH, fetch, fail_rate=0.04))
            untrusted = True  # the model now reads a web page
        t = llm_step(world, s, t, untrusted)
    push = {"tool": "git", "resource": f"{repo}/branches/agent-{int(rnd() * 10_000)}"}
    t = abs(call(world, s, t, GIT_PUSH, push, fail_rate=0.03))
    ci = {"tool": "ci", "resource": f"job://ci/{service}"}
    t = abs(call(world, s, t, CI_TRIGGER, ci, fail_rate=0.03))
    pr = {"tool": "github", "resource": f"{repo}/pulls"}
    t = abs(call(world, s, t, PR_OPEN, pr, fail_rate=0.02))
    s.complete_task(t)
    return t


def devops_session(world: World, agent: Agent, t: int, delegation: Delegation | None) -> int:
    """Operate a service: metrics, rollouts (approved in prod), runbooks, access grants."""
    rnd = world.rnd
    s = open_session(world, agent, delegation)
    service = agent.services[int(rnd() * len(agent.services))]
    plan = rnd()
    prod = plan < 0.45
    if prod:
        scopes = ["metrics:read", "config:read", "config:write:prod", "deploy:prod"]
        intent = f"Roll out {service} v1.{int(rnd() * 90)} to production"
    elif plan < 0.75:
        scopes = ["metrics:read", "config:read", "config:write:staging", "deploy:staging"]
        intent = f"Deploy {service} to staging"
    elif plan < 0.95:
        scopes = ["metrics:read", "kb:read"]
        intent = f"Investigate latency alert on {service}"
    else:
        scopes = ["metrics:read", "iam:write"]
        intent = f"Grant on-call read access for {service}"
    s.start_task(t, delegation.intent if delegation else intent, scopes)
    metrics = {"tool": "prometheus", "resource": f"metrics://prod/{service}"}
    for _ in range(1 + int(rnd() * 3)):
        t = abs(call(world, s, t, METRICS, metrics, fail_rate=0.03))
        t = llm_step(world, s, t)
    if plan < 0.75:
        env = "prod" if prod else "staging"
        config = f"config://{env}/{service}"
        t = abs(call(world, s, t, CONFIG_READ, {"tool": "config_api", "resource": config}))
        t = llm_step(world, s, t)
        change: dict[str, object] = {"tool": "config_api", "resource": config}
        change["attrs"] = {"keys_changed": 1 + int(rnd() * 4)}
        job = f"job://deploy/{service}/{env}"
        trigger: dict[str, object] = {"tool": "deployer", "resource": job}
        update_op: Op = ("config", "config.update", f"config:write:{env}")
        deploy_op: Op = ("job", "job.trigger", f"deploy:{env}")
        if prod:
            granted = approved(world, s, t, config, "sre-lead", reason="prod config")
            if granted < 0:
                s.complete_task(-granted, "failure")
                return -granted
            change.update(privileged=True, authz_decision="allow", policy_id="pol-prod-change")
            t = abs(call(world, s, granted, update_op, change, fail_rate=0.03))
            t = llm_step(world, s, t)
            granted = approved(world, s, t, job, "sre-lead", reason="deploy", deny=0.02)
            if granted < 0:
                s.complete_task(-granted, "failure")
                return -granted
            trigger.update(privileged=True, authz_decision="allow", policy_id="pol-prod-deploy")
            t = abs(call(world, s, granted, deploy_op, trigger, fail_rate=0.06))
        else:
            t = abs(call(world, s, t, update_op, change, fail_rate=0.03))
            t = abs(call(world, s, t, deploy_op, trigger, fail_rate=0.06))
        t += 60 * MICROS_PER_SECOND + int(rnd() * 240 * MICROS_PER_SECOND)  # let it settle
        health = {"tool": "http", "destination": f"{service}.internal.acme", "external": False}
        health["bytes"] = 400
        t = abs(call(world, s, t, HEALTH_CHECK, health, fail_rate=0.05))
    elif plan >= 0.95:
        role = f"iam://roles/{service}-oncall-read"
        granted = approved(world, s, t, role, "sre-lead", reason="on-call access")
        t = abs(granted)
        if granted > 0:
            grant = {"tool": "iam_api", "resource": role, "privileged": True}
            grant.update(authz_decision="allow", policy_id="pol-iam-change")
            t = abs(call(world, s, t, IAM_GRANT, grant, fail_rate=0.02))
    else:
        runbook = {"tool": "log_search", "resource": f"kb://runbooks/{service}"}
        t = abs(call(world, s, t, RUNBOOK, runbook))
    t = llm_step(world, s, t)
    t += world.think()
    s.complete_task(t)
    return t


def analyst_session(world: World, agent: Agent, t: int, delegation: Delegation | None) -> int:
    """Answer a data question: warehouse queries, a report, sometimes an ETL refresh."""
    rnd = world.rnd
    s = open_session(world, agent, delegation)
    fetch_secret = rnd() < 0.3
    refresh = rnd() < 0.2
    scopes = ["warehouse:read", "reports:write"]
    if fetch_secret:
        scopes.append("secrets:read:analytics")
    if refresh:
        scopes.append("etl:trigger")
    topic = pick(world, _TOPICS)
    s.start_task(t, delegation.intent if delegation else f"Analyse {topic}", scopes)
    if fetch_secret:
        secret = {"tool": "vault", "resource": "secret://vault/analytics/warehouse-ro"}
        secret.update(sensitivity="restricted", authz_decision="allow", policy_id="pol-vault")
        t = abs(call(world, s, t, WAREHOUSE_SECRET, secret, fail_rate=0.01))
    t = llm_step(world, s, t)
    for _ in range(2 + int(rnd() * 5)):
        table, sensitivity = _TABLES[int(rnd() * len(_TABLES))]
        r = rnd()
        query: dict[str, object] = {"tool": "sql", "resource": f"warehouse://analytics/{table}"}
        query.update(sensitivity=sensitivity, bytes=10_000 + int(r * r * r * 40_000_000))
        t = abs(call(world, s, t, WAREHOUSE_QUERY, query, fail_rate=0.08))
        t = llm_step(world, s, t)
    report: dict[str, object] = {
        "tool": "drive",
        "resource": f"drive://reports/{topic.replace(' ', '-')}",
    }
    report.update(sensitivity="internal", bytes=5_000 + int(rnd() * 200_000))
    t = abs(call(world, s, t, REPORT_WRITE, report, fail_rate=0.02))
    if refresh:
        job = {"tool": "airflow", "resource": f"job://etl/refresh-{topic.split()[0]}"}
        t = abs(call(world, s, t, ETL_TRIGGER, job, fail_rate=0.05))
    s.complete_task(t)
    return t


def finance_session(world: World, agent: Agent, t: int, delegation: Delegation | None) -> int:
    """Process a vendor invoice: read it, book it, and pay it after a controller approves."""
    rnd = world.rnd
    s = open_session(world, agent, delegation)
    pay = rnd() < 0.35
    scopes = ["invoices:read", "ledger:write"]
    if pay:
        scopes += ["secrets:read:payments", "payments:write"]
    invoice = f"INV-{int(rnd() * 90_000) + 10_000}"
    intent = delegation.intent if delegation else f"Process vendor invoice {invoice}"
    s.start_task(t, intent, scopes)
    read: dict[str, object] = {
        "tool": "ap_inbox",
        "resource": f"invoice://ap/{invoice}",
        "sensitivity": "confidential",
    }
    read["bytes"] = 20_000 + int(rnd() * 400_000)
    t = abs(call(world, s, t, INVOICE_READ, read, fail_rate=0.02))
    t = llm_step(world, s, t, untrusted=True)  # a vendor-supplied document
    book = {"tool": "erp", "resource": f"ledger://gl/ap/{invoice}", "sensitivity": "internal"}
    t = abs(call(world, s, t, LEDGER_WRITE, book, fail_rate=0.03))
    if pay:
        key = {"tool": "vault", "resource": "secret://vault/finance/payments-api"}
        key.update(sensitivity="restricted", authz_decision="allow", policy_id="pol-vault")
        t = abs(call(world, s, t, PAYMENTS_SECRET, key, fail_rate=0.01))
        vendor = f"payment://vendors/V-{int(rnd() * 9000) + 1000}/{invoice}"
        granted = approved(world, s, t, vendor, "finance-controller", reason="payment")
        t = abs(granted)
        if granted > 0:
            payment = {"tool": "payments_api", "resource": vendor, "privileged": True}
            payment.update(authz_decision="allow", policy_id="pol-payments-approved")
            payment["attrs"] = {"amount_eur": 100 + int(rnd() * 20_000)}
            t = abs(call(world, s, t, PAYMENT, payment, fail_rate=0.03))
    t = llm_step(world, s, t)
    s.complete_task(t)
    return t
