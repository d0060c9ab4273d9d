"""Review of 611ea9e..f6c60f3: the sliced check_batch, its worker share and the pipe it reads.

Found, and fixed after this review (f6c60f3's code fails these tests; each names its defect):

1. ``parse_serialised`` ends the worker's share (``unshare``) only when the serialising loop
   raises: ``take_from_back`` and ``parsed`` (whose parse again starts a share of its own) run
   outside that ``try``. An exception there, a KeyboardInterrupt from Ctrl-C above all (SIGINT
   is raised at whatever bytecode the main thread is at), leaves the worker blocked in read(2)
   for good: no 0x00 is ever written and the write end is never closed. The shared worker thread
   then takes no other job (every later append waits forever for its gathering), two fds leak,
   and the interpreter hangs at exit (concurrent.futures joins the worker thread).
2. ``_Slices._stop_worker`` is not exception-safe: ``_sharing`` is cleared first, so if writing
   the end byte fails (or is interrupted) the worker is never released and the fds never closed;
   if the wait for the worker is interrupted (Ctrl-C while ``parsing.exception()`` waits) both
   fds leak.
3. ``_Slices._start_worker`` leaks both pipe fds when ``worker().submit`` raises (e.g. "cannot
   schedule new futures after interpreter shutdown", for a non-daemon thread appending at exit).

Checked and found sound (these passed against f6c60f3 already): no fd leaks and no worker job
still running when check_batch returns or raises, over many batch kinds, failures, a busy worker
and threads at once (so nothing writes into the batch's arrays once their spare memory can be
handed out again); no slice accepted unparsed; a read(2) interrupted by a signal (EINTR) ends the
worker's share early and the calling thread parses the rest; ``os.pipe`` failing (no fds left)
parses on one thread; a child forked while a share is active, holding the pipe's ends, does not
hold up the parent (the share ends on 0x00, not on EOF); ``parse_batch`` and batches below
``SPLIT_ROWS`` never touch the
worker or a pipe, parse again included.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

import ledger
import ledger.batch
import ledger.ingest
import ledger.textscan
from ledger.batch import check_batch, normalise
from ledger.errors import BatchTooLargeError, ValidationError
from ledger.events import SERIALISE_OPTIONS
from tests.ledger.test_slices import (
    HANG_SECONDS,
    assert_agrees,
    canonical_batch,
    finishes,
    heavy,
    rich_batch,
    run_threads,
    sliced,
    worker_blocked,
)

ACCEPTED = ledger.textscan.ACCEPTED
STUCK_SECONDS = 2.0  # a worker that has not taken a trivial job by then is stuck, not slow
LEDGER_SOURCE = str(os.path.dirname(os.path.dirname(os.path.abspath(ledger.__file__))))


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_after_the_module() -> Iterator[None]:
    """Free what reference cycles (the exceptions raised here and their tracebacks) hold: they
    keep batches' work arrays, whose spare memory later modules expect to be free again."""
    yield
    gc.collect()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def worker_takes_a_job(timeout: float = STUCK_SECONDS) -> Future[int]:
    """A trivial job on the shared worker, waited for up to ``timeout`` (it is left queued)."""
    job = ledger.ingest.worker().submit(lambda: 42)
    with contextlib.suppress(FutureTimeout):
        job.result(timeout)
    return job


@dataclass
class Share:
    """A worker share the code under review started, with its pipe's identity (to tell its fds
    from later ones that reuse their numbers)."""

    slices: Any
    sharing: Any
    pipe_id: tuple[int, int]

    def ours(self, fd: int) -> bool:
        try:
            found = os.fstat(fd)
        except OSError:
            return False
        return (found.st_dev, found.st_ino) == self.pipe_id

    def end(self) -> None:
        """Send the end byte if the code left the share running."""
        if not self.sharing.parsing.done() and self.ours(self.sharing.write_end):
            os.write(self.sharing.write_end, b"\x00")

    def close(self) -> None:
        """Once the worker is done with it, close what the code left open."""
        with contextlib.suppress(BaseException):
            self.sharing.parsing.exception(HANG_SECONDS)
        for fd in (self.sharing.write_end, self.sharing.read_end):
            if self.ours(fd):
                os.close(fd)


def spy_shares(monkeypatch: pytest.MonkeyPatch) -> list[Share]:
    """Every worker share started (``_Slices._start_worker``), in order."""
    shares: list[Share] = []
    real = ledger.ingest._Slices._start_worker

    def start(slices: Any) -> None:
        real(slices)
        sharing = slices._sharing
        if sharing is not None:
            found = os.fstat(sharing.write_end)
            shares.append(Share(slices, sharing, (found.st_dev, found.st_ino)))

    monkeypatch.setattr(ledger.ingest._Slices, "_start_worker", start)
    return shares


@contextlib.contextmanager
def released(shares: list[Share]) -> Iterator[None]:
    """Whatever the test finds, leave no worker stuck and no fd open behind it."""
    try:
        yield
    finally:
        for share in shares:
            share.end()
        # Once the worker took a later job, what ran when its shares ended (a done-callback
        # that closes a pipe, say) has run too.
        with contextlib.suppress(BaseException):
            worker_takes_a_job(HANG_SECONDS).result(0)
        for share in shares:
            share.close()


def interrupt_while_parsing_from_the_back(
    monkeypatch: pytest.MonkeyPatch, call: int, error: type[BaseException]
) -> list[int]:
    """Raise ``error`` inside ``take_from_back`` call ``call`` (from 1), as it sends the worker
    more slices: what SIGINT would do at that bytecode. Returns the calls that raised."""
    calls = {"take_from_back": 0}
    armed: list[bool] = [False]
    fired: list[int] = []
    real_take, real_send = ledger.ingest._Slices.take_from_back, ledger.ingest._Slices._send

    def take_from_back(slices: Any) -> None:
        calls["take_from_back"] += 1
        armed[0] = calls["take_from_back"] == call
        try:
            real_take(slices)
        finally:
            armed[0] = False

    def send(slices: Any, sharing: Any) -> None:
        if armed[0]:
            armed[0] = False
            fired.append(calls["take_from_back"])
            raise error("Ctrl-C, say")
        real_send(slices, sharing)

    monkeypatch.setattr(ledger.ingest._Slices, "take_from_back", take_from_back)
    monkeypatch.setattr(ledger.ingest._Slices, "_send", send)
    return fired


class _PatchedOs:
    """``ledger.ingest.os`` with some functions replaced."""

    def __init__(self, **replaced: Callable[..., Any]) -> None:
        self._replaced = replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced.get(name, getattr(os, name))


# -- 1. an exception outside the serialising loop leaves the worker in read(2) ---------------------


@pytest.mark.parametrize(
    ("parse", "error"),
    [("first-parse", KeyboardInterrupt), ("parse-again", RuntimeError)],
)
def test_an_exception_while_parsing_from_the_back_ends_the_workers_share(
    monkeypatch: pytest.MonkeyPatch, parse: str, error: type[BaseException]
) -> None:
    sliced(monkeypatch, slice_rows=4)  # 40 rows: 10 slices
    records = rich_batch(40)
    if parse == "parse-again":  # over a slice's item capacity: parsed() parses it all again
        records[33] = heavy(records[33], 1000, 33)
    shares = spy_shares(monkeypatch)
    fired = interrupt_while_parsing_from_the_back(
        monkeypatch, 1 if parse == "first-parse" else 2, error
    )
    before = open_fds()
    with released(shares):
        with pytest.raises(error, match="Ctrl-C"):
            finishes(lambda: check_batch(records))
        assert fired, "the exception was raised inside take_from_back"
        # What the next append does after the check (on the worker): gather a batch's columns.
        gathering = check_batch(rich_batch(3)).parsed.gathering().start()
        with contextlib.suppress(FutureTimeout):
            gathering.result(STUCK_SECONDS)
        leaked = open_fds() - before
        stuck = [s for s in shares if not s.sharing.parsing.done()]
        assert gathering.done(), (
            f"the worker is stuck in read(2) ({len(stuck)} share never ended): "
            "the next append would wait for its columns forever"
        )
        assert leaked == 0, f"{leaked} pipe fds left open"
    monkeypatch.undo()
    assert_agrees(records)


_EXIT_AFTER_CTRL_C = textwrap.dedent(
    """
    import signal, sys, threading
    import orjson
    import ledger.ingest as ingest
    from ledger.batch import check_batch

    ingest.SPLIT_ROWS, ingest._MIN_SLICE_ROWS = 4, 4  # 40 records: 10 slices
    records = orjson.loads(sys.argv[1])
    check_batch(records)
    real_take, real_send = ingest._Slices.take_from_back, ingest._Slices._send
    state = {"parsing from the back": False, "sent": False}

    def take_from_back(slices):
        state["parsing from the back"] = True
        try:
            real_take(slices)
        finally:
            state["parsing from the back"] = False

    def send(slices, sharing):  # Ctrl-C while the calling thread parses from the back
        if state["parsing from the back"] and not state["sent"]:
            state["sent"] = True
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        real_send(slices, sharing)

    ingest._Slices.take_from_back, ingest._Slices._send = take_from_back, send
    try:
        check_batch(records)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    sys.exit(0)
    """
)


def test_the_process_exits_after_ctrl_c_while_parsing_from_the_back() -> None:
    records = orjson.dumps(canonical_batch(40)).decode()
    hung: str | bytes | None = None
    try:
        done = subprocess.run(
            [sys.executable, "-c", _EXIT_AFTER_CTRL_C, records],
            capture_output=True,
            text=True,
            check=False,
            timeout=8,  # it takes about a second; a hang at exit never ends
            cwd=LEDGER_SOURCE,
            env={**os.environ, "PYTHONPATH": LEDGER_SOURCE},
        )
    except subprocess.TimeoutExpired as expired:
        hung = expired.stdout or ""
    if hung is not None:
        out = hung.decode() if isinstance(hung, bytes) else hung
        assert out == "interrupted\n", "the interrupt came where it was meant to"
        pytest.fail("interrupted, then hung at exit (joining the worker stuck in read(2))")
    assert (done.returncode, done.stdout) == (0, "interrupted\n"), done.stderr


# -- 2. _stop_worker is not exception-safe --------------------------------------------------------


def test_an_interrupt_while_waiting_for_the_worker_leaks_no_fds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert threading.current_thread() is threading.main_thread()
    sliced(monkeypatch, slice_rows=4)
    records = rich_batch(40)
    shares = spy_shares(monkeypatch)
    release_worker = threading.Event()
    real_parse = ledger.textscan.parse_sent_slices

    def parse(*args: Any) -> Any:  # the worker's parse, slow until the test says
        release_worker.wait(HANG_SECONDS)
        return real_parse(*args)

    real_unshare = ledger.ingest._Slices.unshare

    def interrupt() -> None:
        main = threading.main_thread().ident
        assert main is not None
        signal.pthread_kill(main, signal.SIGINT)
        time.sleep(0.3)
        release_worker.set()  # (should the wait not be interruptible)

    def unshare(slices: Any) -> None:  # Ctrl-C shortly after the wait for the worker begins
        if slices._sharing is not None and not release_worker.is_set():
            threading.Timer(0.1, interrupt).start()
        real_unshare(slices)

    def on_sigint(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("Ctrl-C while waiting for the worker")

    monkeypatch.setattr(ledger.ingest, "parse_sent_slices", parse)
    monkeypatch.setattr(ledger.ingest._Slices, "unshare", unshare)
    previous = signal.signal(signal.SIGINT, on_sigint)
    before = open_fds()
    try:
        with released(shares):
            try:
                with pytest.raises(KeyboardInterrupt):
                    check_batch(records)
            finally:
                release_worker.set()
            assert worker_takes_a_job().done(), "the worker ended its share"
            assert all(s.sharing.parsing.done() for s in shares)
            leaked = open_fds() - before
            assert leaked == 0, f"{leaked} pipe fds left open"
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_failed_end_of_the_slices_still_releases_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sliced(monkeypatch, slice_rows=4)
    records = rich_batch(40)
    shares = spy_shares(monkeypatch)
    failed: list[int] = []

    def write(fd: int, data: bytes) -> int:
        if data == ledger.ingest._NO_MORE_SLICES and not failed:
            failed.append(fd)
            raise KeyboardInterrupt("Ctrl-C during the write")  # as os.write raises on EINTR
        return os.write(fd, data)

    before = open_fds()
    with released(shares):
        with monkeypatch.context() as patched:
            patched.setattr(ledger.ingest, "os", _PatchedOs(write=write))
            with pytest.raises(KeyboardInterrupt):
                finishes(lambda: check_batch(records))
        assert failed
        job = worker_takes_a_job()
        leaked = open_fds() - before
        assert job.done(), "the worker is stuck in read(2)"
        assert leaked == 0, f"{leaked} pipe fds left open"


# -- 3. _start_worker leaks the pipe when the worker takes no job ---------------------------------


class _ShutDownWorker:
    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


def test_a_worker_that_takes_no_jobs_leaks_no_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    sliced(monkeypatch, slice_rows=4)
    records = rich_batch(40)
    expected = normalise(records).columns
    monkeypatch.setattr(ledger.ingest, "worker", _ShutDownWorker)
    before = open_fds()
    for _ in range(3):
        try:  # either outcome is defensible: the error, or a parse on this thread alone
            assert check_batch(records).columns.equals(expected)
        except RuntimeError as error:
            assert "interpreter shutdown" in str(error)
    leaked = open_fds() - before
    assert leaked == 0, f"{leaked} pipe fds left open by 3 batches"


# -- 4. what was checked and found sound ----------------------------------------------------------


def spy_results(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], bool]]:
    """Per ``_Slices.parsed`` call: every slice's outcome after it, and whether it took the
    batch."""
    results: list[tuple[list[int], bool]] = []
    real = ledger.ingest._Slices.parsed

    def parsed(slices: Any) -> Any:
        got = real(slices)
        results.append((slices._outcomes.tolist(), got is not None))
        return got

    monkeypatch.setattr(ledger.ingest._Slices, "parsed", parsed)
    return results


def assorted_batches() -> list[tuple[str, list[Any]]]:
    valid = rich_batch(60)
    invalid, non_canonical, late_invalid = list(valid), list(valid), list(valid)
    invalid[2] = {**invalid[2], "category": "shell"}  # refused by the worker's first slice
    late_invalid[58] = {**late_invalid[58], "bytes": -1}
    non_canonical[30] = {**non_canonical[30], "time": "2026-03-01T11:30:00+01:00"}
    many_items = [heavy(r, 900, i) if i in (5, 44) else r for i, r in enumerate(valid)]
    fragment: list[Any] = list(valid)
    fragment[20] = orjson.Fragment(orjson.dumps(valid[20], option=orjson.OPT_SORT_KEYS))
    unserialisable = list(valid)
    unserialisable[50] = {**unserialisable[50], "attrs": {"big": 2**70}}
    return [
        ("valid", valid),
        ("invalid-early", invalid),
        ("invalid-late", late_invalid),
        ("non-canonical", non_canonical),
        ("many-items", many_items),
        ("fragment", fragment),
        ("unserialisable", unserialisable),
        ("empty", []),
        ("one", valid[:1]),
    ]


def test_no_fd_is_left_open_and_no_share_left_running_after_any_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the batch and however check_batch ends, every share has ended (so nothing writes
    into the batch's arrays once it returns), its fds are closed, and a batch is taken only when
    every slice was parsed and accepted."""
    sliced(monkeypatch, slice_rows=4)  # 60 rows: 15 slices
    cases = assorted_batches()
    expected = {name: assert_agrees(records) for name, records in cases}
    shares = spy_shares(monkeypatch)
    results = spy_results(monkeypatch)
    valid = cases[0][1]

    def check_all(alone: bool = True) -> None:
        for name, records in cases:
            assert_agrees(records)
            if alone:  # (with other threads checking batches, their shares may be running)
                assert all(s.sharing.parsing.done() for s in shares), f"{name}: a share runs on"

    before = open_fds()
    with released(shares):
        for _ in range(3):
            finishes(check_all)
        with worker_blocked():
            finishes(check_all)
        with monkeypatch.context() as limited:  # over the size limit
            limited.setattr(ledger.batch, "MAX_BATCH_BYTES", 1000)
            with pytest.raises(BatchTooLargeError):
                finishes(lambda: check_batch(valid))
        real = ledger.batch._serialised
        for failing_call in (0, 3, 14):  # the serialiser raising at a slice
            calls: list[int] = []

            def serialise(
                part: Sequence[object], calls: list[int] = calls, at: int = failing_call
            ) -> bytes | None:
                calls.append(1)
                if len(calls) == at + 1:
                    raise MemoryError("serialising")
                return real(part)

            with monkeypatch.context() as failing:
                failing.setattr(ledger.batch, "_serialised", serialise)
                with pytest.raises(MemoryError):
                    finishes(lambda: check_batch(valid))
        threads = [threading.Thread(target=check_all, args=(False,), daemon=True) for _ in range(3)]
        run_threads(threads)
        assert all(s.sharing.parsing.done() for s in shares)
        assert open_fds() == before, "every pipe closed"
    assert len(shares) > 50, "the batches were shared with the worker"
    taken = [outcomes for outcomes, took in results if took]
    assert taken and all(set(o) == {ACCEPTED} for o in taken), "no slice taken unparsed"
    assert expected["valid"] is not None and expected["invalid-early"] is None
    worker_takes_a_job().result(HANG_SECONDS)


def test_no_pipe_left_parses_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    sliced(monkeypatch, slice_rows=4)

    def pipe() -> tuple[int, int]:
        raise OSError(errno.EMFILE, "Too many open files")

    shares = spy_shares(monkeypatch)
    monkeypatch.setattr(ledger.ingest, "os", _PatchedOs(pipe=pipe))
    before = open_fds()
    for _, records in assorted_batches():
        assert_agrees(records)
    assert shares == [] and open_fds() == before


def worker_thread() -> threading.Thread:
    ledger.ingest.worker().submit(lambda: None).result(HANG_SECONDS)
    (thread,) = [t for t in threading.enumerate() if t.name.startswith("chainsight-ingest")]
    return thread


def test_a_signal_interrupting_the_workers_read_ends_its_share_early_and_all_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """read(2) from compiled code is not restarted after a signal with a Python handler (CPython
    installs them without SA_RESTART): the worker's share ends early and the calling thread
    parses the slices it was sent but did not parse."""
    assert threading.current_thread() is threading.main_thread()
    sliced(monkeypatch, slice_rows=4)  # 40 rows: 10 slices
    records = rich_batch(40)
    expected = normalise(records).columns
    target = worker_thread()
    shares = spy_shares(monkeypatch)
    real_serialise = ledger.batch._serialised
    calls: list[int] = []
    seen: dict[str, Any] = {}

    def serialise(part: Sequence[object]) -> bytes | None:
        calls.append(1)
        if len(calls) == 4:  # the worker has parsed what it was sent and waits in read(2)
            share = shares[-1]
            slices, sharing = share.slices, share.sharing
            for _ in range(int(HANG_SECONDS * 100)):
                if sharing.parsing.running() and int(sharing.done[0]) == slices._sent:
                    break
                time.sleep(0.01)
            time.sleep(0.05)  # in read(2) by now, waiting for the next slice
            assert not sharing.parsing.done() and target.ident is not None
            signal.pthread_kill(target.ident, signal.SIGUSR1)
            with contextlib.suppress(FutureTimeout):
                sharing.parsing.result(HANG_SECONDS)
            seen.update(ended=sharing.parsing.done(), done=int(sharing.done[0]), sent=slices._sent)
        return real_serialise(part)

    monkeypatch.setattr(ledger.batch, "_serialised", serialise)
    handled: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(signum))
    before = open_fds()
    try:
        with released(shares):
            checked = check_batch(records)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen["ended"], "the interrupted read ended the worker's share"
    assert checked.records is records and checked.columns.equals(expected)
    assert handled == [signal.SIGUSR1] and open_fds() == before
    assert worker_takes_a_job().done()


def test_a_child_forked_while_a_share_is_active_does_not_hold_up_the_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child holds copies of the pipe's ends: the share ends on 0x00, not on EOF, so the
    parent's check_batch does not wait for the child."""
    sliced(monkeypatch, slice_rows=4)
    records = rich_batch(40)
    expected = normalise(records).columns
    shares = spy_shares(monkeypatch)
    hold_read, hold_write = os.pipe()  # the child waits on this until the parent is done
    real_serialise = ledger.batch._serialised
    calls: list[int] = []
    children: list[int] = []

    def fork_elsewhere() -> None:
        pid = os.fork()
        if pid == 0:  # the child: hold the inherited fds until told, then go
            try:
                os.read(hold_read, 1)
            finally:
                os._exit(0)
        children.append(pid)

    def serialise(part: Sequence[object]) -> bytes | None:
        calls.append(1)
        if len(calls) == 3:
            assert shares and not shares[-1].sharing.parsing.done(), "a share is active"
            forker = threading.Thread(target=fork_elsewhere)
            forker.start()
            forker.join(HANG_SECONDS)
        return real_serialise(part)

    monkeypatch.setattr(ledger.batch, "_serialised", serialise)
    try:
        with released(shares):
            checked = finishes(lambda: check_batch(records))
            assert children and os.waitpid(children[0], os.WNOHANG) == (0, 0), "child alive"
            assert checked.records is records and checked.columns.equals(expected)
    finally:
        os.write(hold_write, b"x")
        for pid in children:
            os.waitpid(pid, 0)
        os.close(hold_read)
        os.close(hold_write)


def test_parse_batch_and_small_batches_never_use_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One slice: no worker job, no pipe, the parse again included (MORE_ITEMS)."""

    def no_worker() -> Any:
        raise AssertionError("the worker was asked for")

    def no_pipe() -> tuple[int, int]:
        raise AssertionError("a pipe was made")

    records = rich_batch(30)
    records[7] = heavy(records[7], 600, 7)  # over one slice's 4 items a row (plus 64)
    expected = normalise(records).columns
    text = orjson.dumps(records, option=SERIALISE_OPTIONS)
    monkeypatch.setattr(ledger.ingest, "worker", no_worker)
    monkeypatch.setattr(ledger.ingest, "os", _PatchedOs(pipe=no_pipe))
    parsed = ledger.ingest.parse_batch(text, len(records))
    assert parsed is not None and parsed.columns.equals(expected)
    assert check_batch(records).columns.equals(expected)
    assert check_batch([]).columns.num_rows == 0
    with pytest.raises(ValidationError):
        check_batch([*records[:5], {**records[5], "category": "shell"}])
