"""A compact index of the event_ids already flushed to a writer log's segments.

It holds a 64-bit hash per event (8 bytes an event, sorted chunks searched vectorised), answers
"maybe present" for a batch, and the caller confirms the few candidates against the segments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["IdIndex", "id_keys"]

_MERGE_AT = 16


def id_keys(event_ids: Sequence[str] | pl.Series) -> npt.NDArray[np.uint64]:
    """64-bit keys of event_ids (stable within a process, which is all the index needs)."""
    series = (
        event_ids if isinstance(event_ids, pl.Series) else pl.Series(event_ids, dtype=pl.String)
    )
    return series.hash(seed=0).to_numpy()


class IdIndex:
    """Sorted chunks of event_id keys; merged when they grow numerous, like an LSM tree."""

    def __init__(self) -> None:
        self._chunks: list[npt.NDArray[np.uint64]] = []

    def add(self, keys: npt.NDArray[np.uint64]) -> None:
        """Add the keys of newly flushed events."""
        if len(keys) == 0:
            return
        self._chunks.append(np.sort(keys))
        if len(self._chunks) >= _MERGE_AT:
            self._chunks = [np.sort(np.concatenate(self._chunks))]

    def maybe_contains(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """For each key, whether an event with that key may already be stored."""
        found = np.zeros(len(keys), dtype=bool)
        for chunk in self._chunks:
            positions = np.searchsorted(chunk, keys)
            positions[positions == len(chunk)] = 0
            found |= chunk[positions] == keys
        return found
