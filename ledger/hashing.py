"""The hash rules of DESIGN.md §3: leaf hashes and the per-writer hash chain."""

from __future__ import annotations

import hashlib

__all__ = ["ZERO_HASH", "chain_hash", "leaf_hash"]

ZERO_HASH = bytes(32)
"""``prev_hash`` of a writer log's first event."""

_LEAF_PREFIX = b"\x00"


def leaf_hash(canonical: bytes) -> bytes:
    """RFC 9162 leaf hash of an event's canonical bytes: SHA-256(0x00 || canonical)."""
    return hashlib.sha256(_LEAF_PREFIX + canonical).digest()


def chain_hash(prev_hash: bytes, leaf: bytes) -> bytes:
    """The chained hash of an event: SHA-256(prev_hash || leaf_hash)."""
    return hashlib.sha256(prev_hash + leaf).digest()
