"""DESIGN.md §2 written out for the tests, independently of ledger/schema.py.

The tests hold the code to this text (and a test keeps the two in step), so a change to the
schema in code that the design does not make shows up as a failing test.
"""

from __future__ import annotations

OPTIONAL_TEXT_FIELDS = (
    "session_id",
    "task_id",
    "caused_by",
    "principal",
    "on_behalf_of",
    "credential_id",
    "scope_used",
    "intent",
    "tool",
    "resource",
    "destination",
    "target_agent",
    "approval_for",
    "approver",
    "error",
    "authz_decision",
    "policy_id",
)
HEX_FIELDS = {"trace_id": 32, "span_id": 16, "parent_span_id": 16}
LIST_FIELDS = ("credential_scopes", "intent_scopes")
BOOL_FIELDS = ("external", "privileged")
TIME_FIELDS = ("time", "credential_expires_at")
ENUMS = {
    "category": (
        "task",
        "llm",
        "tool",
        "data",
        "secret",
        "config",
        "job",
        "network",
        "identity",
        "approval",
        "code",
        "agent",
        "finding",
        "ledger",
    ),
    "sensitivity": ("public", "internal", "confidential", "restricted"),
    "input_trust": ("trusted", "untrusted"),
    "outcome": ("success", "failure", "error", "denied"),
}
REQUIRED = ("event_id", "time", "agent_id", "category", "action")
