"""``iovirt trace``: the life of one frame, as a tree or JSON, and the run's
timeline in the Chrome trace-event format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.tree import Tree

TimelineOption = Annotated[Path | None, typer.Option(
    "--timeline", metavar="F.json", help="Write every charge as a Chrome/Perfetto trace-event timeline.")]


def trace(
    scenario: Path,
    flow: Annotated[int, typer.Option(help="The workload (its index in the scenario).")] = 0,
    frame: Annotated[int, typer.Option(help="Its frame: 0 is the first it sent.")] = 0,
    alone: Annotated[bool, typer.Option("--alone", help="Run that workload only, no other traffic.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a tree.")] = False,
    timeline: TimelineOption = None,
) -> None:
    """One frame's life: where it went, what it cost, who paid."""
    from iovirt.cli.main import _bad_input, _fail, _print, _writable
    from iovirt.experiments.scenario import load_scenario
    from iovirt.experiments.trace import TraceError, run_traced

    _writable(timeline, "--timeline", (".json",))
    with _bad_input():
        s = load_scenario(scenario)
        if not 0 <= flow < len(s.workloads):
            _fail(f"--flow: expected a workload 0..{len(s.workloads) - 1} of {s.name}, got {flow}")
        if alone:
            s = s.model_copy(update={"workloads": [s.workloads[flow]]})
        result, recorded, flows = run_traced(s)
    try:
        life = recorded.life(flows, 0 if alone else flow, frame)
    except TraceError as exc:
        _fail(str(exc))
    if alone:
        life["flow"] = flow
    if timeline is not None:
        timeline.write_text(json.dumps(recorded.timeline()))
    if as_json:
        typer.echo(json.dumps(life))
    else:
        _print(life_tree(life))


def life_tree(life: dict[str, Any]) -> Tree:
    """Each place the frame was seen, with the charges made until the next under it."""
    t0 = life["sent_ns"]
    root = Tree(f"[bold]flow {life['flow']} frame {life['frame']}[/]: {life['type']} {life['src']}→{life['dst']}, "
                f"built at {t0 / 1e3:,.3f} µs, last seen {(life['last_seen_ns'] - t0) / 1e3:,.3f} µs later"
                + (f" ({life['others_in_flight']} other frames passed its path meanwhile: some of this work is "
                   f"theirs)" if life["others_in_flight"] else ""))
    node = root.add("[bold]built[/] by its workload")
    for step in life["steps"]:
        at = f"+{(step['t_ns'] - t0) / 1e3:9,.3f} µs"
        if "place" in step:
            node = root.add(f"[bold]{at}  seen at {step['place']}[/] ({step['bytes']} bytes, {step['resource']})")
        else:
            node.add(f"{at}  {step['resource']:<24} {step['event']:<16} {step['ns']:>9,.1f} ns")
    return root
