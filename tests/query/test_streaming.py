"""Large results stream to the output formats; the Python conveniences return frames."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from pyarrow import ipc
from typer.testing import CliRunner

from api.cli import app
from query import Ledger, QueryError, run_sql

ROWS = 300_000
QUERY = f"select range as n, 'x' || range::varchar as label from range({ROWS})"


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    Ledger.init(tmp_path / "ledger")
    return tmp_path / "ledger"


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json", "parquet", "arrow"])
def test_a_large_result_streams_whole_to_every_format(
    ledger: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"answer.{fmt}"
    args = ["sql", "--ledger", str(ledger), "-f", fmt, "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-rows", "1000000", QUERY])
    assert result.exit_code == 0, result.output
    if fmt == "parquet":
        numbers = pq.read_table(out).column("n").to_pylist()
    elif fmt == "arrow":
        numbers = ipc.open_file(str(out)).read_all().column("n").to_pylist()
    elif fmt == "json":
        numbers = [row["n"] for row in json.loads(out.read_text())]
    elif fmt == "jsonl":
        numbers = [json.loads(line)["n"] for line in out.read_text().splitlines()]
    else:
        lines = out.read_text().splitlines()
        assert lines[0] == "n,label"
        numbers = [int(line.split(",")[0]) for line in lines[1:]]
    assert numbers == list(range(ROWS))


def test_streaming_stops_at_the_row_limit_and_says_so(ledger: Path) -> None:
    seen: list[int] = []

    def consume(schema: object, batches: object) -> None:
        for batch in batches:  # type: ignore[attr-defined]
            seen.extend(batch.column(0).to_pylist())

    result = run_sql(Ledger.open(ledger), QUERY, max_rows=12_345, consume=consume)
    assert result.truncated and result.rows == 12_345
    assert seen == list(range(12_345))
    assert result.table.num_rows == 0  # streamed, not collected


def test_polars_and_pandas_conveniences(ledger: Path) -> None:
    store = Ledger.open(ledger)
    frame = store.pl("select 1 as a, 'b' as b")
    assert isinstance(frame, pl.DataFrame) and frame.to_dicts() == [{"a": 1, "b": "b"}]
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(QueryError, match="pandas is not installed"):
            store.df("select 1 as a")
    else:
        assert store.df("select 1 as a")["a"].tolist() == [1]
