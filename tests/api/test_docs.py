"""The documentation is checked: every CLI command is documented, the quick start is real."""

from __future__ import annotations

from pathlib import Path

import typer.main

from api.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> set[str]:
    group = typer.main.get_group(app)
    names = set()
    for name, command in group.commands.items():
        sub = getattr(command, "commands", None)
        names.update(f"{name} {child}" for child in sub) if sub else names.add(name)
    return names


def test_every_cli_command_has_a_section_in_docs_cli() -> None:
    sections = {
        line.removeprefix("## ").strip()
        for line in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    missing = _commands() - sections
    assert not missing, f"docs/cli.md lacks sections for {sorted(missing)}"


def test_the_design_command_names_all_exist() -> None:
    built = {name.split()[0] for name in _commands()}
    expected = {"init", "ingest", "checkpoint", "verify", "key", "proof", "sql", "sync", "sample"}
    assert expected <= built


def test_readme_quick_start_is_the_two_make_targets() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


def test_every_event_field_is_documented() -> None:
    from ledger.schema import CLIENT_FIELDS

    events = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    undocumented = [f.name for f in CLIENT_FIELDS if f.name not in events]
    assert not undocumented, f"docs/events.md does not mention {undocumented}"
