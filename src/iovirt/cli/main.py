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


@app.command()
def migrate(
    scenario: Path,
    vm: Annotated[str | None, typer.Option(help="The VM to move (default: the scenario's migration.vm).")] = None,
    to: Annotated[str | None, typer.Option(help="The target host (default: the scenario's migration.to).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only print which VM can go to which host, and why not.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Live-migrate one VM while the scenario's workloads run."""
    from iovirt.experiments import migrate as m

    with _bad_input():
        s = load_scenario(scenario)
        if check:
            rows = m.matrix(s, vm, to)
        else:
            outcome = m.migrate(s, vm, to)
    if as_json:
        typer.echo(json.dumps(rows if check else outcome.to_dict()))
    elif check:
        _print(render.matrix_table(s.name, rows))
    else:
        _print(render.migration_table(outcome.to_dict()), render.flows_table(outcome.result.to_dict()))


profile_app = typer.Typer(help="Cost profiles: each event's price and its source.",
                          no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@profile_app.command("list")
def profile_list() -> None:
    """The bundled profiles."""
    from iovirt.sim.profile import bundled_profiles

    for name in bundled_profiles():
        typer.echo(name)


@profile_app.command("show")
def profile_show(name: Annotated[str, typer.Argument(help="A bundled name or a file.")] = "default",
                 as_json: JsonFlag = False) -> None:
    """Every cost of a profile: value, unit, ns, source."""
    from iovirt.sim.profile import load_profile

    with _bad_input():
        profile = load_profile(name)
    if as_json:
        typer.echo(json.dumps(profile.spec.model_dump()))
    else:
        _print(render.profile_table(profile))


@app.command()
def explain(scenario: Path, as_json: JsonFlag = False) -> None:
    """Where each packet's time goes: by mechanism and by resource."""
    from iovirt.experiments.runner import run as run_scenario

    with _bad_input():
        result = run_scenario(load_scenario(scenario))
    breakdown = result.breakdown()
    if as_json:
        typer.echo(json.dumps(breakdown))
    else:
        _print(render.breakdown_table(result.to_dict()["scenario"], breakdown))


@app.command()
def claims(
    profile: Annotated[str, typer.Option(help="Cost profile: a bundled name or a file.")] = "default",
    vms: Annotated[int, typer.Option(help="VM count for the scaling claims.")] = 16,
    cores: Annotated[int, typer.Option(help="Host cores for the scaling claims.")] = 4,
    as_json: JsonFlag = False,
) -> None:
    """Test each claim of the seed with an experiment."""
    from iovirt.experiments.claims import check

    with _bad_input():
        results = check(profile, vms, cores)
    if as_json:
        typer.echo(json.dumps([asdict(c) for c in results]))
    else:
        _print(render.claims_table(results))


def _ints(value: str, option: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        _fail(f"{option}: expected comma-separated integers, got {value!r}")
    if not numbers or min(numbers) < 1:
        _fail(f"{option}: expected positive integers, got {value!r}")
    return numbers


@app.command()
def compare(
    models: Annotated[str, typer.Option(help="Comma-separated models.")] = "emulated,paravirt,passthrough",
    devices: Annotated[str | None, typer.Option(help="Only these devices (default: every implemented one).")] = None,
    vms: Annotated[str, typer.Option(help="VM counts, comma-separated.")] = "1,4,16",
    sizes: Annotated[str, typer.Option(help="IPv4 packet sizes in bytes, comma-separated.")] = "64,1500",
    duration_ms: Annotated[float, typer.Option(help="Length of each stream, simulated ms.")] = 2.0,
    cores: Annotated[int, typer.Option(help="Host cores (vCPUs and host threads share them).")] = 8,
    posted_interrupts: Annotated[bool, typer.Option(help="Host with posted interrupts and APICv.")] = False,
    profile: Annotated[str, typer.Option(help="Cost profile: a bundled name or a file.")] = "default",
    workers: Annotated[int, typer.Option(help="Dask LocalCluster workers; 0 runs serially.")] = 0,
    scheduler: Annotated[str | None, typer.Option(help="Address of an existing Dask scheduler.")] = None,
    as_json: JsonFlag = False,
    out: Annotated[Path | None, typer.Option(help="Write the rows to F.parquet or F.csv.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw the comparison to F.png.")] = None,
) -> None:
    """Each model on the same workload, VMs and sizes swept."""
    from iovirt.experiments import compare as cmp

    unknown = set(models.split(",")) - {"emulated", "paravirt", "passthrough", "sriov"}
    if unknown:
        _fail(f"--models: expected emulated, paravirt, passthrough or sriov, got {', '.join(sorted(unknown))}")
    if out is not None and out.suffix not in _WRITERS:
        _fail(f"--out: expected a file ending in .parquet or .csv, got {str(out)!r}")
    chosen = cmp.configs(models.split(","), devices.split(",") if devices else None)
    if not chosen:
        _fail(f"--models/--devices: no implemented device among {models} / {devices}")
    if cores < 1:
        _fail(f"--cores: expected a positive number of cores, got {cores}")
    with _bad_input():
        todo = cmp.points(chosen, _ints(vms, "--vms"), _ints(sizes, "--sizes"), duration_ms, cores,
                          posted_interrupts, profile)
        cmp.Scenario.from_dict(todo[0]["scenario"], source="--profile")      # bad profile: fail before running
        rows = _sweep(cmp, todo, workers, scheduler)
    import pandas as pd

    frame = pd.json_normalize(rows, sep=".")
    if out is not None:
        getattr(frame, _WRITERS[out.suffix])(out, index=False)
    if plot is not None:
        from iovirt.cli.plot import comparison_png

        comparison_png(rows, plot)
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        _print(render.compare_table(rows))


@app.command()
def sensitivity(
    scenario: Path,
    costs: Annotated[str | None, typer.Option(
        help="Only these costs, comma-separated: an event's fixed part, or EVENT/B for its per-byte part.")] = None,
    factor: Annotated[float, typer.Option(help="Run each cost at 1 - F and 1 + F times its price.")] = 0.5,
    duration_ms: Annotated[float | None, typer.Option(
        help="Measure each workload this long after its warm-up, simulated ms (default: as the scenario says).")] = None,
    workers: Annotated[int, typer.Option(help="Dask LocalCluster workers; 0 runs serially.")] = 0,
    scheduler: Annotated[str | None, typer.Option(help="Address of an existing Dask scheduler.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Each cost at ±F: how much each flow's figures move."""
    from iovirt.experiments import sensitivity as sens

    with _bad_input():
        s = load_scenario(scenario)
        todo = sens.points(s, costs.split(",") if costs else None, factor, duration_ms)
        result = sens.table(s, _sweep(sens, todo, workers, scheduler), factor)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _print(*render.sensitivity_table(result))


def _sweep(cmp, todo: list[dict], workers: int, scheduler: str | None) -> list[dict]:
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sweep", total=len(todo))
        advance = lambda row: bar.advance(task)  # noqa: E731
        if not workers and scheduler is None:
            return cmp.sweep(todo, progress=advance)
        from distributed import Client, LocalCluster

        if scheduler is not None:
            with Client(scheduler) as client:
                return cmp.sweep(todo, client, advance)
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            return cmp.sweep(todo, client, advance)
