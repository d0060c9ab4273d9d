"""The ``chainsight`` command line: a thin layer over the ledger and query libraries.

Exit codes: 0 ok, 1 a check failed (verification problems, rejected input, refused query),
2 bad usage (unknown options, no ledger, unreadable input file).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import pyarrow as pa
import typer
from rich.console import Console
from rich.markup import escape

from ledger import (
    InputFormatError,
    LedgerError,
    LedgerExistsError,
    LedgerNotFoundError,
    Problem,
    ValidationError,
    VerifyReport,
)
from ledger.batch import check_batch
from ledger.checkpoints import LedgerCheckpoint
from ledger.inputs import FORMATS, read_chunks, spool_stdin
from ledger.schedule import CheckpointSchedule
from query import Ledger, QueryError, run_sql
from query.eql import EqlResult
from query.eql import explain as explain_eql
from query.eql import parse as parse_eql
from query.eql.engine import DEFAULT_SIZE, over_file, over_ledger
from query.eql.engine import execute as execute_eql

from .eql_output import EQL_FORMATS, print_eql
from .output import TABLE_FORMATS, print_records, print_table, write_batches

__all__ = ["app", "main"]

app = typer.Typer(
    name="chainsight",
    help="Tamper-evident audit ledger for AI agents: ingest, verify, and query agent actions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

LedgerOption = Annotated[
    Path | None,
    typer.Option(
        "--ledger",
        help="Ledger directory [default: $CHAINSIGHT_LEDGER, else ./chainsight-ledger].",
        show_default=False,
    ),
]
FormatOption = Annotated[
    str, typer.Option("--format", "-f", help="Output: table, json, jsonl or csv.")
]
TimeoutOption = Annotated[float, typer.Option(help="Seconds before the query is interrupted.")]
AsOfOption = Annotated[
    int | None, typer.Option("--as-of", help="Answer as of signed ledger checkpoint N.")
]

T = TypeVar("T")


def _fail(message: str, code: int) -> NoReturn:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guarded(action: Callable[[], T]) -> T:
    """Run a command body, turning library errors into messages and exit codes."""
    try:
        return action()
    except (LedgerNotFoundError, LedgerExistsError, InputFormatError) as err:
        _fail(str(err), 2)
    except ValidationError as err:
        lines = [f"  {problem}" for problem in err.problems[: ValidationError.max_listed]]
        if len(err.problems) > ValidationError.max_listed:
            lines.append(f"  ... and {len(err.problems) - ValidationError.max_listed} more")
        _fail("input rejected, nothing stored:\n" + "\n".join(lines), 1)
    except (QueryError, LedgerError) as err:
        _fail(str(err), 1)


def _ledger_path(ledger: Path | None) -> Path:
    return ledger or Path(os.environ.get("CHAINSIGHT_LEDGER") or "chainsight-ledger")


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        _fail(f"--format must be one of: {', '.join(allowed)} (got {fmt!r})", 2)


@app.command()
def init(
    ledger: LedgerOption = None,
    key: Annotated[
        Path | None,
        typer.Option(help="Use this signer key file (PRIVATE+KEY+...) instead of a new key."),
    ] = None,
    format: FormatOption = "table",
) -> None:
    """Create a new, empty ledger with its own Ed25519 signing key (mode 0600)."""
    _check_format(format, ("table", "json"))
    created = _guarded(lambda: Ledger.init(_ledger_path(ledger), key=key))
    verifier = created.keys.verifier()
    record = {
        "ledger": str(created.root),
        "ledger_id": created.ledger_id,
        "verifier_key": str(verifier) if verifier else None,
    }
    if format == "json":
        print_records([record], "jsonl", console)
    else:
        console.print(f"Created ledger [bold]{created.ledger_id}[/] at {created.root}")


@app.command()
def ingest(
    files: Annotated[
        list[str],
        typer.Argument(help="Event files (JSONL, JSON, Parquet, CSV; .gz ok) or - for stdin."),
    ],
    ledger: LedgerOption = None,
    input_format: Annotated[
        str | None,
        typer.Option(
            "--input-format", help=f"One of {', '.join(FORMATS)} [default: by file name]."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Events per durable batch.")] = 10_000,
    checkpoint: Annotated[
        bool, typer.Option("--checkpoint", help="Sign a checkpoint once the files are stored.")
    ] = False,
    format: FormatOption = "table",
) -> None:
    """Append events to the ledger. Each file is all or nothing: any bad record rejects it."""
    _check_format(format, ("table", "json"))
    if input_format is not None and input_format not in FORMATS:
        _fail(f"--input-format must be one of: {', '.join(FORMATS)}", 2)

    def run() -> dict[str, Any]:
        started = time.perf_counter()
        store = Ledger.open(_ledger_path(ledger))
        totals = {"files": 0, "appended": 0, "duplicates": 0}
        writer_id = ""
        try:
            for name in files:
                path = spool_stdin() if name == "-" else Path(name)
                try:
                    _check_file(path, input_format, batch_size)
                    for chunk in read_chunks(path, input_format, batch_size):
                        receipts = store.append(chunk.records, chunk.locations)
                        totals["appended"] += receipts.appended
                        totals["duplicates"] += receipts.duplicates
                        writer_id = receipts.writer_id
                finally:
                    if name == "-":
                        path.unlink(missing_ok=True)
                totals["files"] += 1
            if checkpoint:
                totals["checkpoint"] = store.checkpoint().number
        finally:
            store.close()
        return {
            **totals,
            "writer_id": writer_id,
            "seconds": round(time.perf_counter() - started, 3),
        }

    summary = _guarded(run)
    if format == "json":
        print_records([summary], "jsonl", console)
    else:
        console.print(
            f"Ingested {summary['appended']:,} events ({summary['duplicates']:,} already stored) "
            f"from {summary['files']} file(s) into writer {summary['writer_id'] or '-'} "
            f"in {summary['seconds']:.2f} s"
            + (f"; signed checkpoint {summary['checkpoint']}" if "checkpoint" in summary else "")
        )


def _check_file(path: Path, input_format: str | None, batch_size: int) -> None:
    """Validate a whole file before storing any of it, so a bad record rejects all of it."""
    problems: list[Problem] = []
    for chunk in read_chunks(path, input_format, batch_size):
        problems.extend(chunk.unreadable)
        readable = [i for i, r in enumerate(chunk.records) if r is not None]
        if len(readable) != len(chunk.records):
            records = [chunk.records[i] for i in readable]
            locations = [chunk.locations[i] for i in readable]
        else:
            records, locations = chunk.records, chunk.locations
        try:
            check_batch(records, locations)
        except ValidationError as err:
            problems.extend(err.problems)
    if problems:
        raise ValidationError(problems)


@app.command()
def verify(ledger: LedgerOption = None, format: FormatOption = "table") -> None:
    """Recompute every hash and link; exit 1 and name writer, seq and file for each problem."""
    _check_format(format, ("table", "json"))
    report: VerifyReport = _guarded(lambda: Ledger.open(_ledger_path(ledger)).verify())
    if format == "json":
        print_records([_report_record(report)], "jsonl", console)
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _stream_to(
    fmt: str, out: Path | None, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
) -> None:
    write_batches(fmt, schema, batches, out)


def _report_record(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "events": report.events,
        "writers": [w.__dict__ for w in report.writers],
        "problems": [p.__dict__ for p in report.problems],
        "notes": list(report.notes),
        "seconds": round(report.seconds, 3),
    }


def _print_report(report: VerifyReport) -> None:
    rate = report.events / report.seconds if report.seconds else 0.0
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for problem in report.problems:
        console.print(f"[bold red]FAIL[/] {problem}", highlight=False, soft_wrap=True)
    verdict = (
        "[bold green]OK[/]" if report.ok else f"[bold red]{len(report.problems)} problem(s)[/]"
    )
    console.print(
        f"{verdict}: {report.events:,} events in {len(report.writers)} writer log(s) verified "
        f"in {report.seconds:.2f} s ({rate:,.0f} events/s)"
    )


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One read-only SQL query (SELECT / WITH).")],
    ledger: LedgerOption = None,
    format: Annotated[
        str, typer.Option("--format", "-f", help=f"Output: {', '.join(TABLE_FORMATS)}.")
    ] = "table",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to FILE.")] = None,
    dialect: Annotated[
        str, typer.Option(help="SQL dialect of QUERY (spark, postgres, ...).")
    ] = "duckdb",
    max_rows: Annotated[int, typer.Option(help="Row limit; truncation is reported.")] = 100_000,
    timeout: TimeoutOption = 60.0,
    as_of: AsOfOption = None,
) -> None:
    """Answer a read-only SQL query over the ledger's views (events, findings, writers, ...)."""
    _check_format(format, TABLE_FORMATS)
    if format in ("parquet", "arrow") and out is None and sys.stdout.isatty():
        _fail(f"--format {format} writes binary data: give --out FILE or redirect", 2)
    stream = None if format == "table" else partial(_stream_to, format, out)
    result = _guarded(
        lambda: run_sql(
            Ledger.open(_ledger_path(ledger)),
            query,
            dialect,
            max_rows,
            timeout,
            as_of=as_of,
            consume=stream,
        )
    )
    if format == "table":
        print_table(result.table, console)
    if result.truncated:
        errors.print(f"[yellow]note:[/] output truncated at {max_rows:,} rows (--max-rows)")


@app.command()
def eql(
    query: Annotated[str, typer.Argument(help="One EQL query (event, sequence, sample or join).")],
    ledger: LedgerOption = None,
    format: Annotated[
        str, typer.Option("--format", "-f", help=f"Output: {', '.join(EQL_FORMATS)}.")
    ] = "table",
    explain: Annotated[
        bool, typer.Option("--explain", help="Print the generated SQL instead of running it.")
    ] = False,
    dialect: Annotated[
        str, typer.Option(help="SQL dialect --explain prints (duckdb, spark, ...).")
    ] = "duckdb",
    input: Annotated[
        Path | None,
        typer.Option("--input", help="Query a JSONL, JSON, Parquet or CSV file, not the ledger."),
    ] = None,
    category_field: Annotated[
        str, typer.Option(help="With --input: the event category field.")
    ] = "category",
    time_field: Annotated[str, typer.Option(help="With --input: the timestamp field.")] = "time",
    tiebreaker: Annotated[
        str | None, typer.Option(help="With --input: the field that orders equal times.")
    ] = None,
    size: Annotated[
        int,
        typer.Option(
            "--size",
            "--max-rows",
            help="Results to show, as Elasticsearch's size; the rest are counted.",
        ),
    ] = DEFAULT_SIZE,
    max_samples_per_key: Annotated[int, typer.Option(help="Samples per join key.")] = 1,
    timeout: TimeoutOption = 60.0,
    as_of: AsOfOption = None,
) -> None:
    """Answer an EQL query (docs/eql.md) over the ledger's events, or over a file with --input."""
    _check_format(format, EQL_FORMATS)
    parsed = _guarded(lambda: parse_eql(query))

    if size < 1:
        _fail("--size must be at least 1", 2)
    if input is not None and not input.is_file():
        _fail(f"--input {input}: no such file", 2)

    def run() -> EqlResult | None:
        over = (
            over_file(input, category_field, time_field, tiebreaker)
            if input is not None
            else over_ledger(Ledger.open(_ledger_path(ledger)), as_of)
        )
        with over as target:
            if explain:
                text = explain_eql(parsed, target.source, dialect)
                console.print(text, highlight=False, soft_wrap=True)
                return None
            return execute_eql(target, parsed, size, timeout, max_samples_per_key)

    result = _guarded(run)
    if result is None:
        return
    print_eql(result, format, console)
    if result.truncated:
        errors.print(
            f"[yellow]note:[/] showing {size:,} of {result.total:,} results (--size to see more)"
        )


@app.command(name="checkpoint")
def checkpoint_command(
    ledger: LedgerOption = None,
    every: Annotated[
        float | None,
        typer.Option("--every", help="Keep signing a checkpoint every SECONDS until interrupted."),
    ] = None,
    format: FormatOption = "table",
) -> None:
    """Flush, compute each writer log's Merkle root, sign, and print the checkpoint number."""
    _check_format(format, ("table", "json"))
    if every is not None:
        _checkpoint_on_schedule(_ledger_path(ledger), every, format)
        return

    def run() -> LedgerCheckpoint:
        with Ledger.open(_ledger_path(ledger)) as store:
            return store.checkpoint()

    _print_checkpoint(_guarded(run), format)


def _checkpoint_on_schedule(path: Path, every: float, format: str) -> None:
    if every <= 0:
        _fail("--every must be a positive number of seconds", 2)
    store = _guarded(partial(Ledger.open, path))
    sign = partial(store.checkpoint, only_if_changed=True)
    schedule = CheckpointSchedule(sign, every, partial(_print_checkpoint, fmt=format))
    stop = threading.Event()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: stop.set())
    schedule.sign_now()
    schedule.start()
    try:
        while not stop.wait(0.2):  # a timed wait lets the signal handlers run
            pass
    finally:
        schedule.stop()
        store.close()
    for error in schedule.errors:
        errors.print(f"[yellow]checkpoint refused:[/] {error}", highlight=False)


def _print_checkpoint(signed: LedgerCheckpoint, fmt: str) -> None:
    record = {
        "number": signed.number,
        "time": signed.time,
        "writers": [
            {"writer_id": w.writer_id, "tree_size": w.tree_size, "root": w.root.hex()}
            for w in signed.writers
        ],
    }
    if fmt == "json":
        print_records([record], "jsonl", console)
    else:
        events = sum(w.tree_size for w in signed.writers)
        console.print(
            f"Signed checkpoint {signed.number}: {len(signed.writers)} writer log(s), "
            f"{events:,} events"
        )


key_app = typer.Typer(help="The ledger's signing key.", no_args_is_help=True)
app.add_typer(key_app, name="key")


@key_app.command("show")
def key_show(ledger: LedgerOption = None) -> None:
    """Print the verifier key in signed-note form: <name>+<hex key id>+<base64(0x01||key)>."""
    store = _guarded(partial(Ledger.open, _ledger_path(ledger)))
    verifier = _guarded(store.keys.verifier)
    if verifier is None:
        _fail("this ledger has no signing key yet (it gets one at its first checkpoint)", 1)
    console.print(str(verifier), highlight=False, soft_wrap=True)


@app.command()
def proof(
    event_id: Annotated[str, typer.Argument(help="The event to prove.")],
    ledger: LedgerOption = None,
    format: FormatOption = "json",
) -> None:
    """Prove an event is in its writer log at a signed checkpoint (RFC 9162 inclusion proof)."""
    _check_format(format, ("table", "json"))
    found = _guarded(lambda: Ledger.open(_ledger_path(ledger)).proof(event_id))
    record = found.to_json()
    if format == "json":
        sys.stdout.write(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for name, value in record.items():
            shown = "\n  ".join(value) if isinstance(value, list) else value
            console.print(f"[bold]{name}[/]: {shown}", highlight=False, soft_wrap=True)


@app.command()
def sync(
    source: Annotated[Path, typer.Argument(help="The ledger to merge in.")],
    ledger: LedgerOption = None,
    format: FormatOption = "table",
) -> None:
    """Merge another ledger's writer logs into this one; refuse and report equivocations."""
    _check_format(format, ("table", "json"))
    report = _guarded(lambda: Ledger.open(_ledger_path(ledger)).sync(source))
    if format == "json":
        record = {
            "writers_added": list(report.writers_added),
            "writers_extended": list(report.writers_extended),
            "events_added": report.events_added,
            "equivocations": [e.__dict__ for e in report.equivocations],
            "skipped": list(report.skipped),
        }
        print_records([record], "jsonl", console)
    else:
        console.print(
            f"Merged {report.events_added:,} events: {len(report.writers_added)} writer log(s) "
            f"added, {len(report.writers_extended)} extended"
        )
        for equivocation in report.equivocations:
            console.print(
                f"[bold red]EQUIVOCATION[/] writer {equivocation.writer_id}, seq "
                f"{equivocation.seq}: {source} holds a different event; not merged",
                highlight=False,
            )
        for message in report.skipped:
            console.print(f"[yellow]skipped:[/] {message}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def sample(
    events: Annotated[int, typer.Option(help="How many events to simulate.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same bytes.")] = 7,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write events as JSONL (.gz compresses).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Write the injected chains' labels as JSONL.")
    ] = None,
    ledger: Annotated[
        Path | None,
        typer.Option(
            "--ledger", help="Append the events straight into this ledger (created if absent)."
        ),
    ] = None,
    late_fraction: Annotated[float, typer.Option(help="Share of events delivered late.")] = 0.01,
    duplicate_fraction: Annotated[
        float, typer.Option(help="Share of events resent with the same event_id (client retries).")
    ] = 0.005,
    format: FormatOption = "table",
) -> None:
    """Simulate agent activity with labelled attack chains and hard negatives."""
    from sample_data import Label, SimulationConfig, simulate, write_sample

    _check_format(format, ("table", "json"))
    if (out is None) == (ledger is None):
        _fail("give exactly one of --out FILE or --ledger PATH", 2)
    try:
        config = SimulationConfig(
            events=events,
            seed=seed,
            late_fraction=late_fraction,
            duplicate_fraction=duplicate_fraction,
        )
    except ValueError as err:
        _fail(str(err), 2)
    started = time.perf_counter()
    summary: dict[str, Any] = {"events": 0, "seed": seed}
    if out is not None:
        stats = write_sample(config, out, labels)
        summary.update(events=stats.events, labels=stats.labels, out=str(out))
    else:
        assert ledger is not None
        store = _guarded(lambda: Ledger.open(ledger, create=True))
        label_file = labels.open("wb") if labels is not None else None
        appended = 0
        batch: list[dict[str, Any]] = []
        try:
            for item in simulate(config):
                if isinstance(item, Label):  # a chain's label follows its last event
                    if label_file is not None:
                        label_file.write(orjson.dumps(item.to_json()) + b"\n")
                    continue
                batch.append(item)
                if len(batch) == 10_000:
                    appended += _guarded(partial(store.append, batch)).appended
                    batch = []
            if batch:
                appended += _guarded(partial(store.append, batch)).appended
        finally:
            store.close()
            if label_file is not None:
                label_file.close()
        summary.update(events=appended, ledger=str(ledger))
    summary["seconds"] = round(time.perf_counter() - started, 3)
    if format == "json":
        print_records([summary], "jsonl", console)
    else:
        where = summary.get("out") or summary.get("ledger")
        console.print(
            f"Simulated {summary['events']:,} events (seed {seed}) into {where} "
            f"in {summary['seconds']:.2f} s"
        )


@app.command()
def demo(
    ledger: Annotated[
        Path, typer.Option("--ledger", help="Where to build the demo ledger.")
    ] = Path("demo-ledger"),
    events: Annotated[
        Path | None, typer.Option(help="Events file [default: the bundled sample].")
    ] = None,
) -> None:
    """Build a fresh ledger from the bundled sample, verify it, and summarise it."""
    source = events or _bundled_sample()
    if (ledger / _DEMO_MARKER).exists():
        shutil.rmtree(ledger)  # only ever a ledger an earlier demo built
    elif ledger.exists() and any(ledger.iterdir()):
        _fail(f"{ledger} exists and was not made by demo; choose another --ledger", 2)
    console.rule("[bold]Chainsight demo")
    _guarded(lambda: Ledger.init(ledger))
    (ledger / _DEMO_MARKER).write_text("built by 'chainsight demo'; demo may delete it\n")
    console.print(f"1. created ledger at {ledger}")
    ingest([str(source)], ledger=ledger)
    console.print("2. verifying every hash and link")
    report = _guarded(lambda: Ledger.open(ledger).verify())
    _print_report(report)
    store = Ledger.open(ledger)
    console.print("3. what the agents did (sql over the events view)")
    for title, query in _DEMO_QUERIES:
        print_table(_guarded(partial(store.sql, query)), console, title=title)
    console.print("4. what they were trying to do (eql sequences)")
    for title, query in _DEMO_SEQUENCES:
        console.print(f"[bold]{title}[/]\n{query}", highlight=False)
        print_eql(_guarded(partial(store.eql, query, size=3)), "table", console)
    if not report.ok:
        raise typer.Exit(1)


_DEMO_MARKER = ".chainsight-demo"
_DEMO_QUERIES = (
    (
        "Events by category",
        "SELECT category, count(*) AS events FROM events GROUP BY 1 ORDER BY 2 DESC",
    ),
    (
        "Most active agents",
        "SELECT agent_id, count(*) AS events, count(DISTINCT session_id) AS sessions, "
        "sum(CASE WHEN outcome <> 'success' THEN 1 ELSE 0 END) AS not_successful "
        "FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 8",
    ),
    (
        "External sends after reading sensitive data, same session",
        "SELECT s.session_id, s.agent_id, s.resource AS read, n.destination AS sent_to, "
        "round(date_diff('second', s.time, n.time) / 60, 1) AS minutes_later "
        "FROM events s JOIN events n "
        "ON n.session_id = s.session_id AND n.time > s.time "
        "AND n.time <= s.time + INTERVAL 30 MINUTE "
        "WHERE s.sensitivity IN ('confidential', 'restricted') AND s.outcome = 'success' "
        "AND n.category = 'network' AND n.external AND n.outcome = 'success' "
        "ORDER BY s.time LIMIT 8",
    ),
)


_DEMO_SEQUENCES = (
    (
        "Secret read, then a config change, then a job trigger, same agent within an hour",
        "sequence by agent_id with maxspan=1h\n"
        '  [secret where action == "secret.read" and outcome == "success"]\n'
        '  [config where action : "config.*"]\n'
        '  [job where action == "job.trigger"]',
    ),
    (
        "Sensitive read, then an external send with no approval between, same session",
        "sequence by session_id with maxspan=30m\n"
        '  [data where sensitivity in ("confidential", "restricted") and outcome == "success"]\n'
        " ![approval where true]\n"
        '  [network where external == true and outcome == "success"]',
    ),
)


def _bundled_sample() -> Path:
    import sample_data

    return Path(sample_data.__file__).parent / "sample" / "events.jsonl.gz"


def main() -> None:
    """Entry point of the ``chainsight`` console script."""
    try:
        app()
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        sys.exit(0)
