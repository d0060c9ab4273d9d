"""Shared test setup: tests may import the helper modules beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_sessionstart(session: object) -> None:
    """Compile (or load) the ledger's numba loops once, before workers and child processes start.

    numba caches the machine code beside the modules; a fresh clone compiles it on first use. A
    child process the crash suite kills while it is still compiling would prove nothing.
    """
    if hasattr(getattr(session, "config", None), "workerinput"):
        return  # an xdist worker: the controller did this before starting it
    import tempfile

    from ledger_helpers import tool_event

    from ledger import Ledger

    with tempfile.TemporaryDirectory() as directory:
        canonical = tool_event(
            0,
            time="2026-03-01T10:00:00.000000Z",
            credential_scopes=["deploy:prod"],
            bytes=5,
            external=True,
            attrs={"k": [1, "v"]},
        )
        with Ledger.init(Path(directory) / "warm-up") as ledger:
            ledger.append([canonical])  # the compiled parse's fast path
            ledger.append([tool_event(1)])  # the validator's, then the trusted parse
        if not Ledger.open(Path(directory) / "warm-up").verify().ok:
            raise RuntimeError("the warm-up ledger does not verify")
