"""Receipts: what an append acknowledges for each event."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import pyarrow as pa

__all__ = ["Receipt", "Receipts", "TextColumn"]


@dataclass(frozen=True)
class Receipt:
    """Where an event is stored: its writer log, seq and chained hash (hex).

    ``duplicate`` is true when the event_id was already in the writer log; the receipt is then
    the original one and nothing new was stored.
    """

    event_id: str
    writer_id: str
    seq: int
    hash: str
    duplicate: bool = False


class Receipts(Sequence[Receipt]):
    """The receipts of one append, in input order, built on demand (appends are large)."""

    def __init__(
        self,
        writer_id: str,
        event_ids: Sequence[str],
        seqs: Sequence[int],
        hashes: np.ndarray,
        duplicates: np.ndarray,
    ) -> None:
        """Receipts from parallel columns: hashes is (n, 32) uint8, duplicates n booleans."""
        self.writer_id = writer_id
        self._event_ids = event_ids
        self._seqs = seqs
        self._hashes = hashes
        self._duplicates = duplicates

    @property
    def appended(self) -> int:
        """How many events this append stored."""
        return len(self._seqs) - self.duplicates

    @property
    def duplicates(self) -> int:
        """How many events were already stored (resubmitted event_ids)."""
        return int(np.count_nonzero(self._duplicates))

    def __len__(self) -> int:
        return len(self._seqs)

    @overload
    def __getitem__(self, index: int) -> Receipt: ...
    @overload
    def __getitem__(self, index: slice) -> list[Receipt]: ...
    def __getitem__(self, index: int | slice) -> Receipt | list[Receipt]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Receipt(
            self._event_ids[index],
            self.writer_id,
            self._seqs[index],
            self._hashes[index].tobytes().hex(),
            bool(self._duplicates[index]),
        )

    def __iter__(self) -> Iterator[Receipt]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return (
            f"Receipts(writer_id={self.writer_id!r}, appended={self.appended}, "
            f"duplicates={self.duplicates})"
        )


class TextColumn(Sequence[str]):
    """An Arrow string array as a sequence of str, made on first use: most receipts are never
    read, and making ten thousand str objects a batch costs more than the rest of a receipt."""

    def __init__(self, array: pa.Array) -> None:
        self._array = array

    @functools.cached_property
    def _values(self) -> list[str]:
        values: list[str] = self._array.to_pylist()
        return values

    def __len__(self) -> int:
        return len(self._array)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self._values[index]
