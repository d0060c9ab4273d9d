"""A ledger: a directory of writer logs. Appends go to this process's own writer log."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson
import pyarrow as pa

from .batch import check_batch
from .checkpoints import CheckpointStore, LedgerCheckpoint
from .durable import write_atomically
from .errors import CorruptLedgerError, LedgerError, LedgerExistsError, LedgerNotFoundError
from .keys import KeyStore
from .layout import WriterLayout, segments_in_force, try_lock, wal_tail
from .proofs import InclusionProof, create_checkpoint, prove_inclusion, settle_idle_logs
from .receipts import Receipts
from .schema import SEGMENT_SCHEMA
from .segments import SegmentFile
from .sync import SyncReport, recorded_equivocations, sync_writer_logs
from .verify import VerifyReport, verify_ledger
from .writer import WriterLog

__all__ = ["FORMAT_VERSION", "Ledger", "LedgerInfo", "default_ledger_path"]

FORMAT_VERSION = 1
LEDGER_FILE = "ledger.json"


def default_ledger_path() -> Path:
    """``$CHAINSIGHT_LEDGER``, else ``./chainsight-ledger``."""
    return Path(os.environ.get("CHAINSIGHT_LEDGER") or "chainsight-ledger")


@dataclass(frozen=True)
class LedgerInfo:
    """What ledger.json records."""

    ledger_id: str
    format: int
    created: float


class Ledger:
    """A hash-chained, tamper-evident event ledger stored as Parquet segments.

    Reading needs no lock. The first append takes a writer log for this object: an idle one this
    ledger created earlier, or a new one, so processes appending at once never share a log.
    """

    def __init__(self, root: Path, info: LedgerInfo) -> None:
        self.root = root
        self.info = info
        self._writer: WriterLog | None = None
        # One appender per object, but callers may share it across threads (a server appending
        # while a schedule signs checkpoints): its writes are serialised.
        self._lock = threading.RLock()

    @property
    def ledger_id(self) -> str:
        """The ledger's id, part of every checkpoint origin."""
        return self.info.ledger_id

    @property
    def writers_dir(self) -> Path:
        """The directory holding one subdirectory per writer log."""
        return self.root / "writers"

    @property
    def keys(self) -> KeyStore:
        """The ledger's signing key and trusted verifier keys."""
        return KeyStore(self.root, self.ledger_id)

    @property
    def checkpoints(self) -> CheckpointStore:
        """The ledger's signed checkpoints."""
        return CheckpointStore(self.root, self.ledger_id)

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        ledger_id: str | None = None,
        key: str | os.PathLike[str] | None = None,
    ) -> Self:
        """Create a new, empty ledger at ``path`` with a new signing key (or the given key file)."""
        root = Path(path)
        if (root / LEDGER_FILE).exists():
            raise LedgerExistsError(f"a ledger already exists at {root}")
        root.mkdir(parents=True, exist_ok=True)
        (root / "writers").mkdir(exist_ok=True)
        info = LedgerInfo(ledger_id or secrets.token_hex(8), FORMAT_VERSION, time.time())
        ledger = cls(root, info)
        ledger.keys.create(Path(key) if key is not None else None)
        # Last: a ledger exists only once it is complete.
        write_atomically(root / LEDGER_FILE, orjson.dumps(info.__dict__))
        return ledger

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, create: bool = False) -> Self:
        """Open the ledger at ``path`` (default: ``default_ledger_path()``)."""
        root = Path(path) if path is not None else default_ledger_path()
        try:
            raw = orjson.loads((root / LEDGER_FILE).read_bytes())
        except FileNotFoundError:
            if create:
                return cls.init(root)
            raise LedgerNotFoundError(
                f"no ledger at {root} (create one with 'chainsight init')"
            ) from None
        except orjson.JSONDecodeError as err:
            raise CorruptLedgerError(f"{root / LEDGER_FILE} is not valid JSON: {err}") from err
        if raw.get("format") != FORMAT_VERSION:
            raise LedgerError(f"{root} uses ledger format {raw.get('format')}, expected 1")
        return cls(
            root, LedgerInfo(str(raw["ledger_id"]), int(raw["format"]), float(raw["created"]))
        )

    # -- appending ----------------------------------------------------------------------------

    def append(self, records: Iterable[object], locations: Sequence[str] | None = None) -> Receipts:
        """Validate and durably append a batch (all or nothing); return a receipt per record."""
        batch = records if isinstance(records, Sequence) else list(records)
        checked = check_batch(batch, locations)  # before a writer log is taken or created
        with self._lock:
            return self.writer.append(batch, locations, checked)

    @property
    def writer(self) -> WriterLog:
        """This object's writer log, taken on first use (and again after a failure released it)."""
        with self._lock:
            if self._writer is None or self._writer.closed:  # released after a failure: recover
                self._writer = self._acquire_writer()
            return self._writer

    def _acquire_writer(self) -> WriterLog:
        for layout in self.writer_layouts():
            if layout.home_ledger() != self.ledger_id:
                continue  # a log merged in from another ledger keeps its own appender there
            fd = try_lock(layout.lock)
            if fd is None:
                continue
            try:
                return WriterLog(layout, fd)
            except CorruptLedgerError:
                continue  # leave a damaged log for 'verify' to report; append elsewhere
        return WriterLog.create(self.writers_dir, self.ledger_id)

    def flush(self) -> None:
        """Write this process's WAL-resident events to Parquet segments."""
        with self._lock:
            if self._writer is not None:  # one released after a failure is recovered first
                self.writer.flush()

    def close(self) -> None:
        """Flush and release this process's writer log."""
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------

    def writer_layouts(self) -> list[WriterLayout]:
        """Every writer log in the ledger, by id."""
        try:
            names = sorted(os.listdir(self.writers_dir))
        except FileNotFoundError:
            return []
        return [WriterLayout(self.writers_dir / n) for n in names if not n.startswith(".")]

    def segment_files(self) -> list[SegmentFile]:
        """Every Parquet segment of every writer log."""
        return [s for layout in self.writer_layouts() for s in segments_in_force(layout)[0]]

    def verify(self, workers: int | None = None) -> VerifyReport:
        """Recompute every hash and link of every writer log and check every checkpoint."""
        report = verify_ledger(
            self.writer_layouts(), workers, self.checkpoints, self.keys.verifiers()
        )
        refused = recorded_equivocations(self.root / "sync")
        return replace(report, problems=report.problems + tuple(refused)) if refused else report

    def checkpoint(self, only_if_changed: bool = False) -> LedgerCheckpoint:
        """Flush, then sign every writer log's current Merkle root as the next checkpoint.

        With ``only_if_changed``, a ledger unchanged since its latest checkpoint returns that one
        instead of signing the same state again (what a schedule wants).
        """
        with self._lock:
            self.flush()
            settle_idle_logs(self.writer_layouts(), self.ledger_id)
            return create_checkpoint(
                self.writer_layouts(),
                self.keys,
                self.checkpoints,
                time.time_ns() // 1000,
                only_if_changed,
            )

    def sync(self, source: str | os.PathLike[str]) -> SyncReport:
        """Merge another ledger's writer logs into this one (grow-only, order-independent)."""
        other = Ledger.open(source)
        if other.root.resolve() == self.root.resolve():
            raise LedgerError("cannot sync a ledger with itself")
        return sync_writer_logs(
            other.writer_layouts(), self.writers_dir, self.root / "sync", str(other.root)
        )

    def proof(self, event_id: str) -> InclusionProof:
        """An inclusion proof of an event against the newest checkpoint that covers it."""
        return prove_inclusion(self.writer_layouts(), self.keys, self.checkpoints, event_id)

    def unflushed_table(self) -> pa.Table:
        """Acknowledged events still only in WALs, as a table in the segment schema."""
        tables = [t for layout in self.writer_layouts() if (t := wal_tail(layout)) is not None]
        if not tables:
            return SEGMENT_SCHEMA.empty_table()
        return pa.concat_tables(tables)
