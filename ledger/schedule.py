"""Signing checkpoints on a schedule, for long-running processes (a server, a cron-less host)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .checkpoints import LedgerCheckpoint
from .errors import LedgerError

__all__ = ["CheckpointSchedule"]


class CheckpointSchedule:
    """Calls ``sign`` every ``interval`` seconds on a background thread until stopped.

    A failed checkpoint (for instance a refused rollback) is kept in ``errors`` and the schedule
    goes on: the next attempt may succeed, and the damage is verify's to report.
    """

    def __init__(
        self,
        sign: Callable[[], LedgerCheckpoint],
        interval: float,
        on_signed: Callable[[LedgerCheckpoint], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("the checkpoint interval must be positive")
        self._sign = sign
        self._interval = interval
        self._on_signed = on_signed
        self._stopped = threading.Event()
        self.signed: list[int] = []
        self.errors: list[LedgerError] = []
        self._thread = threading.Thread(target=self._run, name="checkpoints", daemon=True)

    def start(self) -> CheckpointSchedule:
        """Begin signing on schedule."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.sign_now()

    def sign_now(self) -> None:
        """Sign one checkpoint now (also what each tick does)."""
        try:
            checkpoint = self._sign()
        except LedgerError as err:
            self.errors.append(err)
            return
        if self.signed and checkpoint.number == self.signed[-1]:
            return  # nothing changed since the last one
        self.signed.append(checkpoint.number)
        if self._on_signed is not None:
            self._on_signed(checkpoint)

    def stop(self) -> None:
        """Stop the schedule and wait for a checkpoint in progress to finish."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
