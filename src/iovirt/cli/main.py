"""The ``iovirt`` command. Bad input: one ``error: ...`` line on stderr, exit 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from iovirt.cli import render
from iovirt.experiments.catalog import DEVICES
from iovirt.experiments.scenario import ScenarioError, load_scenario
from iovirt.sim.profile import ProfileError

app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True, add_completion=False)

_WRITERS = {".parquet": "to_parquet", ".csv": "to_csv"}  # --out extension -> DataFrame method

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)


def _print(*tables: Any) -> None:
    # Piped output keeps rows whole rather than wrapping them at 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(*tables)


@contextmanager
def _bad_input() -> Iterator[None]:
    try:
        yield
    except (ScenarioError, ProfileError) as exc:
        _fail(str(exc))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"iovirt {version('iovirt')}")
        raise typer.Exit()


@app.callback()
def main(_: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                         help="Print the version and exit.")] = False) -> None:
    """Network I/O virtualization models, simulated and measured."""


@app.command()
def validate(scenario: Path) -> None:
    """Check a scenario file: schema and wiring, nothing is run."""
    with _bad_input():
        s = load_scenario(scenario)
    typer.echo(f"ok: {s.name} ({len(s.hosts)} hosts, {len(s.vms)} VMs, {len(s.workloads)} workloads)")


@app.command()
def devices(as_json: JsonFlag = False) -> None:
    """List every device: its model, what it emulates, its status."""
    if as_json:
        typer.echo(json.dumps([asdict(d) for d in DEVICES.values()]))
    else:
        _print(render.devices_table(DEVICES.values()))


@app.command()
def run(
    scenario: Path,
    as_json: JsonFlag = False,
    out: Annotated[Path | None, typer.Option(help="Write the flows table to F.parquet or F.csv.")] = None,
) -> None:
    """Run a scenario and report flows, resources and events."""
    if out is not None and out.suffix not in _WRITERS:
        _fail(f"--out: expected a file ending in .parquet or .csv, got {str(out)!r}")
    from iovirt.experiments.runner import run as run_scenario  # lazy: heavy, and optional for validate

    with _bad_input():
        result = run_scenario(load_scenario(scenario))
    if out is not None:
        getattr(result.flows, _WRITERS[out.suffix])(out, index=False)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        _print(*render.result_tables(result.to_dict()))
