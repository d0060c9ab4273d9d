"""A set of 64-bit event_id keys in an open-addressing table, filled and probed by compiled loops.

The writer keeps the keys of the events not yet in segments here (a few hundred thousand at most):
a batch's ten thousand ids are checked in well under a millisecond, where a Python dict of strings
took several. A key that is present says "maybe": the caller confirms it against the events.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .compiled import jit

__all__ = ["KeySet"]

_EMPTY = np.uint64(0)
_ZERO_STANDS_IN = np.uint64(
    1
)  # key 0 marks an empty slot: it is stored as 1 (a "maybe" either way)


class KeySet:
    """Keys of events, answering "maybe present" for a batch of keys."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._slots = np.zeros(max(1 << (capacity - 1).bit_length(), 16), np.uint64)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """Add keys; for each, whether it was already there (or earlier among ``keys``)."""
        self._reserve(self._count + len(keys))
        seen = np.empty(len(keys), np.bool_)
        self._count += _add(self._slots, keys, seen)
        return seen

    def contains(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """For each key, whether it is there."""
        found = np.empty(len(keys), np.bool_)
        _contains(self._slots, keys, found)
        return found

    def _reserve(self, count: int) -> None:
        if count * 2 <= len(self._slots):
            return
        size = len(self._slots)
        while count * 2 > size:
            size *= 2
        old = self._slots[self._slots != _EMPTY]
        self._slots = np.zeros(size, np.uint64)
        _add(self._slots, old, np.empty(len(old), np.bool_))


@jit
def _add(slots: Any, keys: Any, seen: Any) -> int:
    """Insert keys with linear probing; returns how many were new."""
    mask = np.uint64(len(slots) - 1)
    added = 0
    for i in range(len(keys)):
        key = keys[i] if keys[i] != _EMPTY else _ZERO_STANDS_IN
        slot = key & mask
        while slots[slot] != _EMPTY and slots[slot] != key:
            slot = (slot + np.uint64(1)) & mask
        seen[i] = slots[slot] == key
        if not seen[i]:
            slots[slot] = key
            added += 1
    return added


@jit
def _contains(slots: Any, keys: Any, found: Any) -> None:
    mask = np.uint64(len(slots) - 1)
    for i in range(len(keys)):
        key = keys[i] if keys[i] != _EMPTY else _ZERO_STANDS_IN
        slot = key & mask
        while slots[slot] != _EMPTY and slots[slot] != key:
            slot = (slot + np.uint64(1)) & mask
        found[i] = slots[slot] == key
