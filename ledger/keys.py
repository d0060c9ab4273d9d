"""The ledger's signing key and the verifier keys it trusts.

``keys/ledger.key`` holds the Ed25519 signer key in signed-note form (``PRIVATE+KEY+...``, mode
0600); ``keys/ledger.vkey`` its verifier key; ``keys/trusted/*.vkey`` verifier keys of other
ledgers whose signatures this ledger accepts (pinned by their key ids).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LedgerError, NoteError
from .note import Signer, Verifier

__all__ = ["KeyStore", "key_name"]


def key_name(ledger_id: str) -> str:
    """The signed-note key name of a ledger's key."""
    return f"chainsight-{ledger_id}"


class KeyStore:
    """A ledger's keys directory."""

    def __init__(self, root: Path, ledger_id: str) -> None:
        self.directory = root / "keys"
        self.ledger_id = ledger_id

    @property
    def signer_path(self) -> Path:
        """The secret key file."""
        return self.directory / "ledger.key"

    @property
    def verifier_path(self) -> Path:
        """The public verifier key file."""
        return self.directory / "ledger.vkey"

    @property
    def trusted_dir(self) -> Path:
        """Verifier keys of other ledgers this one accepts."""
        return self.directory / "trusted"

    def create(self, supplied: Path | None = None) -> Signer:
        """Store a new key (or the supplied signer key file) as this ledger's key."""
        if supplied is not None:
            try:
                signer = Signer.parse(supplied.read_text(encoding="utf-8").strip())
            except (OSError, NoteError) as err:
                raise LedgerError(f"cannot use {supplied} as the ledger key: {err}") from None
        else:
            signer = Signer.generate(key_name(self.ledger_id))
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.signer_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(signer.signer_key() + "\n")
            out.flush()
            os.fsync(out.fileno())
        self.verifier_path.write_text(str(signer.verifier()) + "\n", encoding="utf-8")
        return signer

    def signer(self) -> Signer:
        """This ledger's signer, creating the key if the ledger has none yet."""
        if not self.signer_path.exists():
            return self.create()
        try:
            return Signer.parse(self.signer_path.read_text(encoding="utf-8").strip())
        except NoteError as err:
            raise LedgerError(f"{self.signer_path} is not a signer key: {err}") from None

    def verifier(self) -> Verifier | None:
        """This ledger's verifier key, if it has a key."""
        if not self.verifier_path.exists():
            return None
        return Verifier.parse(self.verifier_path.read_text(encoding="utf-8").strip())

    def verifiers(self) -> list[Verifier]:
        """Every verifier key whose signatures this ledger accepts: its own and the trusted."""
        found = [v for v in [self.verifier()] if v is not None]
        if self.trusted_dir.is_dir():
            for path in sorted(self.trusted_dir.glob("*.vkey")):
                found.append(Verifier.parse(path.read_text(encoding="utf-8").strip()))
        return found

    def trust(self, verifier: Verifier) -> Path:
        """Accept another ledger's signatures from now on."""
        self.trusted_dir.mkdir(parents=True, exist_ok=True)
        path = self.trusted_dir / f"{verifier.name}+{verifier.key_id:08x}.vkey"
        path.write_text(str(verifier) + "\n", encoding="utf-8")
        return path
