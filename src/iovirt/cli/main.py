"""The ``iovirt`` command. Bad input: one ``error: ...`` line on stderr, exit 2."""

from __future__ import annotations

import json
import os
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
from iovirt.cli.report import report
from iovirt.cli.trace import TimelineOption, trace
from iovirt.experiments.catalog import DEVICES
from iovirt.experiments.engines import ENGINES, PYPY_MIN_SIM_MS, EngineError, choose
from iovirt.experiments.scenario import (HYPERVISORS, MAX_DURATION_MS, MAX_VMS, MIN_PACKET, MTU, NR_CPUS_MAX,
                                        ScenarioError, load_scenario)
from iovirt.sim.profile import ProfileError

app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True, add_completion=False)

_WRITERS = {".parquet": "to_parquet", ".csv": "to_csv"}  # --out extension -> DataFrame method

CONNECT_TIMEOUT_S = 5       # compare --scheduler: how long to try an address before giving up
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
EngineOption = Annotated[str, typer.Option(
    help=f"The interpreter the simulation runs on: {', '.join(ENGINES)} (pypy3 in a subprocess, the same results; "
         f"auto: pypy3 when installed and the longest workload is at least {PYPY_MIN_SIM_MS:g} ms).")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)


PIPE_WIDTH = 200            # piped output keeps rows whole rather than wrapping them at 80 columns


def _print(*tables: Any) -> None:
    """Tables folded to the terminal's width (PIPE_WIDTH when not a terminal): no number is cut."""
    console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
    console.print(*render.fit(tables, console.width))


def _writable(path: Path | None, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse, before anything runs, an output file the run could not write."""
    if path is None:
        return
    if path.suffix not in suffixes:
        _fail(f"{option}: expected a file ending in {' or '.join(suffixes)}, got {str(path)!r}")
    if not path.parent.is_dir():
        _fail(f"{option}: expected a file in an existing directory, got {str(path)!r} ({str(path.parent)!r} "
              f"is not a directory)")
    if path.is_dir() or not os.access(path.parent, os.W_OK) or path.exists() and not os.access(path, os.W_OK):
        _fail(f"{option}: expected a file this user can write, got {str(path)!r}")


def _bounded(value: int, option: str, low: int, high: int, why: str) -> int:
    if not low <= value <= high:
        _fail(f"{option}: expected {low}..{high} ({why}), got {value}")
    return value


def _warn(result: dict[str, Any]) -> None:
    """A run that measured nothing says so (stderr): a flow that sent or delivered nothing."""
    for f in result["flows"]:
        what = "sent nothing" if not f["sent"] else "delivered nothing" if not f["delivered"] else None
        if what:
            typer.echo(f"warning: workload {f['workload']} ({f['type']} {f['src']}→{f['dst']}) {what} "
                       f"in {result['sim_time_s'] * 1e3:g} ms of simulated time", err=True)


@contextmanager
def _progress(what: str) -> Iterator[Any]:
    """A transient progress bar on stderr when it is a terminal, with the time left; yields
    ``advance(fraction)``, or None where there is no terminal to show it on."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(TextColumn(what), BarColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(what, total=1.0)
        yield lambda fraction: bar.update(task, completed=fraction)


def _captures(s, asked: list[str] | None):
    """The scenario with its ``capture:`` and ``--capture PORT=FILE`` ports, every file checked writable."""
    from iovirt.experiments.scenario import Capture, capture_problem

    added = []
    for item in asked or []:
        port, eq, file = item.rpartition("=")
        if not eq or not port or not file:
            _fail(f"--capture: expected PORT=FILE.pcapng, got {item!r}")
        problem = capture_problem(s, port)
        if problem:
            _fail(f"--capture: {problem}")
        added.append(Capture(port=port, file=file))
    for i, c in enumerate(s.capture):
        _writable(Path(c.file), f"{s.source}: capture[{i}].file", (".pcapng",))
    for c in added:
        _writable(Path(c.file), "--capture", (".pcapng",))
    return s.model_copy(update={"capture": [*s.capture, *added]}) if added else s


CaptureOption = Annotated[list[str] | None, typer.Option(
    "--capture", metavar="PORT=FILE", help="Capture frames at PORT (a VM, HOST/VM/tap, HOST/bridge, HOST/NIC) "
                                            "into FILE.pcapng, stamped with simulated time; repeatable.")]


def _say_engine(scenario, engine: str) -> None:
    """For ``--engine auto``, which engine ran and why (stderr); an unknown engine is bad input."""
    chosen = choose(scenario, engine)
    if engine == "auto":
        typer.echo(f"engine: {chosen.name} ({chosen.why})", err=True)


@contextmanager
def _bad_input() -> Iterator[None]:
    try:
        yield
    except (ScenarioError, ProfileError, EngineError) as exc:
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
    capture: CaptureOption = None,
    timeline: TimelineOption = None,
    engine: EngineOption = "cpython",
) -> None:
    """Run a scenario and report flows, resources and events."""
    _writable(out, "--out", tuple(_WRITERS))
    _writable(timeline, "--timeline", (".json",))
    from iovirt.experiments.runner import run as run_scenario  # lazy: heavy, and optional for validate

    with _bad_input():
        s = _captures(load_scenario(scenario), capture)
        if timeline is None:
            with _progress(f"run {s.name}") as advance:
                result = run_scenario(s, advance, engine)
            _say_engine(s, engine)
        elif engine not in ("cpython", "auto"):
            _fail(f"--timeline: the trace is recorded on the cpython engine only, got --engine {engine}")
        else:
            from iovirt.experiments.trace import run_traced

            result, recorded, _ = run_traced(s)
            timeline.write_text(json.dumps(recorded.timeline()))
    _warn(result.to_dict())
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
    capture: CaptureOption = None,
    engine: EngineOption = "cpython",
) -> None:
    """Live-migrate a VM while workloads run (exit 1: not moved)."""
    from iovirt.experiments import migrate as m

    with _bad_input():
        s = _captures(load_scenario(scenario), capture)
        if check:
            rows = m.matrix(s, vm, to)
        else:
            with _progress(f"migrate in {s.name}") as advance:
                outcome = m.migrate(s, vm, to, advance, engine)
            _say_engine(s, engine)
    if as_json:
        typer.echo(json.dumps(rows if check else outcome.to_dict()))
    elif check:
        _print(render.matrix_table(s.name, rows))
    else:
        _print(render.migration_table(outcome.to_dict()), render.flows_table(outcome.result.to_dict()))
    if not check:
        _warn(outcome.result.to_dict())
        if outcome.report.result != "ok":       # blocked or failed: the VM stayed where it was
            raise typer.Exit(1)


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


@app.command(epilog="One table per VM (its vCPUs and threads, per packet of the flows it takes part in), per host "
                    "(cores, NICs, wires, dom0) and for the wire peers; --pooled: one for everything.")
def explain(
    scenario: Path,
    pooled: Annotated[bool, typer.Option("--pooled", help="One table for every resource of the run.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Where each packet's time goes: by mechanism and by resource."""
    from iovirt.experiments.runner import run as run_scenario

    with _bad_input():
        result = run_scenario(load_scenario(scenario))
    _warn(result.to_dict())
    breakdowns = {"all": result.breakdown()} if pooled else result.breakdowns()
    if as_json:
        typer.echo(json.dumps(breakdowns["all"] if pooled else breakdowns))
    else:
        name = result.to_dict()["scenario"]
        _print(*(render.breakdown_table(name if pooled else f"{name}, {owner}", b) for owner, b in breakdowns.items()))


@app.command(epilog="The claims: emulation is the slowest and costs the most CPU; para-virtualization is much "
                    "faster but needs its own guest driver; pass-through comes near bare metal but gives the NIC to "
                    "one VM and blocks live migration; SR-IOV shares one NIC at near pass-through speed and migrates "
                    "only with a failover standby; on ESXi, VMXNET3 takes fewer exits and delivers more than E1000 "
                    "and Vlance.")
def claims(
    profile: Annotated[str, typer.Option(help="Cost profile: a bundled name or a file.")] = "default",
    vms: Annotated[int, typer.Option(help="VM count for the scaling claims.")] = 16,
    cores: Annotated[int, typer.Option(help="Host cores for the scaling claims.")] = 4,
    engine: EngineOption = "cpython",
    as_json: JsonFlag = False,
) -> None:
    """Test the common claims about the four models, one run each."""
    from iovirt.experiments.claims import check

    _bounded(vms, "--vms", 2, MAX_VMS, "the scaling claims compare 1 VM with this many")
    _bounded(cores, "--cores", 1, NR_CPUS_MAX, "a host's cores")

    with _bad_input():
        results = check(profile, vms, cores, engine=engine)
    if as_json:
        typer.echo(json.dumps([asdict(c) for c in results]))
    else:
        _print(render.claims_table(results))


def _ints(value: str, option: str, low: int, high: int, why: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        _fail(f"{option}: expected comma-separated integers, got {value!r}")
    if not numbers:
        _fail(f"{option}: expected comma-separated integers, got {value!r}")
    for n in numbers:
        _bounded(n, option, low, high, why)
    return numbers


@app.command()
def compare(
    models: Annotated[str, typer.Option(help="Comma-separated models.")] = "emulated,paravirt,passthrough",
    devices: Annotated[str | None, typer.Option(help="Only these devices (default: every implemented one).")] = None,
    hypervisors: Annotated[str | None, typer.Option(
        help="Run each device on each of these hypervisors that offers it, comma-separated (kvm, xen, esxi); "
             "default: each device on its own hypervisor, else KVM.")] = None,
    vms: Annotated[str, typer.Option(help="VM counts, comma-separated.")] = "1,4,16",
    sizes: Annotated[str, typer.Option(help="Sizes in bytes, comma-separated: IPv4 packets (udp_stream), messages "
                                            "(tcp_stream), requests and responses (tcp_rr); default 64,1500 for udp_stream, "
                                            "16384 for tcp_stream, 1 for tcp_rr, as netperf.")] = "",
    workload: Annotated[str, typer.Option(help="udp_stream, tcp_stream or tcp_rr.")] = "udp_stream",
    offloads: Annotated[bool, typer.Option(help="The guests' GSO, GRO, TSO and TX and RX checksums (ethtool -K); "
                                                "--no-offloads turns them off.")] = True,
    duration_ms: Annotated[float, typer.Option(help="Length of each stream, simulated ms.")] = 2.0,
    cores: Annotated[int, typer.Option(help="Host cores (vCPUs and host threads share them).")] = 8,
    posted_interrupts: Annotated[bool, typer.Option(help="Host with posted interrupts and APICv.")] = False,
    profile: Annotated[str, typer.Option(help="Cost profile: a bundled name or a file.")] = "default",
    workers: Annotated[int, typer.Option(help="Dask LocalCluster workers; 0 runs serially.")] = 0,
    scheduler: Annotated[str | None, typer.Option(help="Address of an existing Dask scheduler.")] = None,
    as_json: JsonFlag = False,
    out: Annotated[Path | None, typer.Option(help="Write the rows to F.parquet or F.csv.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw the comparison to F.png.")] = None,
    engine: EngineOption = "cpython",
) -> None:
    """Each model on the same workload, VMs and sizes swept."""
    from iovirt.experiments import compare as cmp

    unknown = set(models.split(",")) - {"emulated", "paravirt", "passthrough", "sriov"}
    if unknown:
        _fail(f"--models: expected emulated, paravirt, passthrough or sriov, got {', '.join(sorted(unknown))}")
    _writable(out, "--out", tuple(_WRITERS))
    _writable(plot, "--plot", (".png",))
    wanted = hypervisors.split(",") if hypervisors else None
    unknown = set(wanted or ()) - set(HYPERVISORS)
    if unknown:
        _fail(f"--hypervisors: expected {', '.join(HYPERVISORS)}, got {', '.join(sorted(unknown))}")
    chosen = cmp.configs(models.split(","), devices.split(",") if devices else None, wanted)
    if not chosen:
        _fail(f"--models/--devices/--hypervisors: no implemented device among {models} / {devices} that "
              f"{hypervisors or 'a hypervisor'} offers")
    _bounded(cores, "--cores", 1, NR_CPUS_MAX, "a host's cores")
    if not 0 < duration_ms <= MAX_DURATION_MS:
        _fail(f"--duration-ms: expected more than 0 and at most {MAX_DURATION_MS} ms of simulated time, got {duration_ms:g}")
    vm_counts = _ints(vms, "--vms", 1, MAX_VMS, "VMs one run holds")
    if workload not in cmp.WORKLOADS:
        _fail(f"--workload: expected {', '.join(cmp.WORKLOADS)}, got {workload!r}")
    sizes = sizes or cmp.DEFAULT_SIZES[workload]
    if workload == "udp_stream":
        packet_sizes = _ints(sizes, "--sizes", MIN_PACKET, MTU, "IPv4 packets that fit one 1500-byte-MTU frame")
    else:
        packet_sizes = _ints(sizes, "--sizes", 1, cmp.STREAM_CHUNK, "one write of a TCP workload")
    with _bad_input():
        todo = cmp.points(chosen, vm_counts, packet_sizes, duration_ms, cores, posted_interrupts, profile, engine,
                          workload, offloads)
        first = cmp.Scenario.from_dict(todo[0]["scenario"], source="--profile")      # bad profile: fail before running
        _say_engine(first, engine)      # every point runs as long: one choice for all
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


@contextmanager
def _client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """None to run serially, else a Dask client: of a LocalCluster of ``workers``, or of ``scheduler``."""
    if not workers and scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, ValueError, TypeError) as exc:     # a bad address, or nothing answers there
            _fail(f"--scheduler: cannot reach a Dask scheduler at {scheduler!r}: {exc}")
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def _sweep(cmp, todo: list[dict], workers: int, scheduler: str | None) -> list[dict]:
    from rich.progress import Progress

    with _client(workers, scheduler) as client, \
            Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sweep", total=len(todo))
        return cmp.sweep(todo, client, lambda row: bar.advance(task))


app.command()(trace)
app.command()(report)
