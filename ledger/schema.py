"""The event schema (DESIGN.md §2): field kinds, enums and the Parquet layout of a segment."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import pyarrow as pa

__all__ = [
    "ASSIGNED_FIELDS",
    "CANONICAL_FIELDS",
    "CATEGORIES",
    "CLIENT_FIELDS",
    "ENUMS",
    "FIELDS_BY_NAME",
    "HASH_COLUMNS",
    "REQUIRED_FIELDS",
    "SEGMENT_SCHEMA",
    "STORED_FIELDS",
    "Field",
    "Kind",
]


class Kind(Enum):
    """How a field is validated, canonicalised and stored."""

    ID = "id"  # non-empty string of at most 128 characters
    TEXT = "text"  # string
    ACTION = "action"  # dotted verb
    ENUM = "enum"  # one of a fixed set of strings
    HEX = "hex"  # lowercase hex of a fixed length
    TIME = "time"  # RFC 3339 timestamp, stored UTC with microseconds
    BOOL = "bool"
    INT = "int"  # non-negative integer within the JSON safe range
    TEXT_LIST = "text_list"  # list of strings
    ATTRS = "attrs"  # JSON object, stored as its canonical text


@dataclass(frozen=True)
class Field:
    """One top-level event field."""

    name: str
    kind: Kind
    required: bool = False
    hex_length: int = 0


CATEGORIES = (
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
)

ENUMS: dict[str, tuple[str, ...]] = {
    "category": CATEGORIES,
    "sensitivity": ("public", "internal", "confidential", "restricted"),
    "input_trust": ("trusted", "untrusted"),
    "outcome": ("success", "failure", "error", "denied"),
}

CLIENT_FIELDS: tuple[Field, ...] = (
    Field("event_id", Kind.ID, required=True),
    Field("time", Kind.TIME, required=True),
    Field("agent_id", Kind.TEXT, required=True),
    Field("category", Kind.ENUM, required=True),
    Field("action", Kind.ACTION, required=True),
    Field("session_id", Kind.TEXT),
    Field("task_id", Kind.TEXT),
    Field("trace_id", Kind.HEX, hex_length=32),
    Field("span_id", Kind.HEX, hex_length=16),
    Field("parent_span_id", Kind.HEX, hex_length=16),
    Field("caused_by", Kind.TEXT),
    Field("principal", Kind.TEXT),
    Field("on_behalf_of", Kind.TEXT),
    Field("credential_id", Kind.TEXT),
    Field("credential_scopes", Kind.TEXT_LIST),
    Field("credential_expires_at", Kind.TIME),
    Field("scope_used", Kind.TEXT),
    Field("intent", Kind.TEXT),
    Field("intent_scopes", Kind.TEXT_LIST),
    Field("tool", Kind.TEXT),
    Field("resource", Kind.TEXT),
    Field("destination", Kind.TEXT),
    Field("external", Kind.BOOL),
    Field("sensitivity", Kind.ENUM),
    Field("bytes", Kind.INT),
    Field("privileged", Kind.BOOL),
    Field("input_trust", Kind.ENUM),
    Field("target_agent", Kind.TEXT),
    Field("approval_for", Kind.TEXT),
    Field("approver", Kind.TEXT),
    Field("outcome", Kind.ENUM),
    Field("error", Kind.TEXT),
    Field("authz_decision", Kind.TEXT),
    Field("policy_id", Kind.TEXT),
    Field("attrs", Kind.ATTRS),
)

# Assigned by the ledger and covered by the canonical bytes.
ASSIGNED_FIELDS: tuple[Field, ...] = (
    Field("writer_id", Kind.TEXT),
    Field("seq", Kind.INT),
    Field("observed_time", Kind.TIME),
)

# Per event: hash = SHA-256(prev_hash || leaf_hash), leaf_hash = SHA-256(0x00 || canonical).
# leaf_hash is stored (not only recomputed) so a writer log's Merkle tree can be rebuilt from one
# column; verification still recomputes it from the other columns.
HASH_COLUMNS = ("prev_hash", "leaf_hash", "hash")

FIELDS_BY_NAME = {f.name: f for f in CLIENT_FIELDS + ASSIGNED_FIELDS}
REQUIRED_FIELDS = tuple(f.name for f in CLIENT_FIELDS if f.required)

# RFC 8785 orders members by UTF-16 code units; every field name is ASCII, so a plain sort agrees.
CANONICAL_FIELDS: tuple[Field, ...] = tuple(
    sorted(CLIENT_FIELDS + ASSIGNED_FIELDS, key=lambda f: f.name)
)

_ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.ID: pa.string(),
    Kind.TEXT: pa.string(),
    Kind.ACTION: pa.string(),
    Kind.ENUM: pa.string(),
    Kind.HEX: pa.string(),
    Kind.TIME: pa.timestamp("us", tz="UTC"),
    Kind.BOOL: pa.bool_(),
    Kind.INT: pa.int64(),
    Kind.TEXT_LIST: pa.list_(pa.string()),
    Kind.ATTRS: pa.string(),
}


def _segment_schema() -> pa.Schema:
    columns = [
        pa.field(f.name, _ARROW_TYPES[f.kind], nullable=not f.required) for f in CLIENT_FIELDS
    ]
    columns += [pa.field(f.name, _ARROW_TYPES[f.kind], nullable=False) for f in ASSIGNED_FIELDS]
    columns += [pa.field(name, pa.binary(32), nullable=False) for name in HASH_COLUMNS]
    return pa.schema(columns)


SEGMENT_SCHEMA = _segment_schema()
STORED_FIELDS = tuple(SEGMENT_SCHEMA.names)
