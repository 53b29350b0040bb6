"""Which prices matter: scale one cost of the profile at a time, rerun the
scenario, and see how each flow's headline figures move.

A cost is an event's fixed part (``copy``) or its per-byte part
(``copy/B``).  Each runs twice more, at 1 - f and 1 + f times its price, with
everything else — the mechanism, the workloads, the other prices — as in the
baseline run.  The simulation is deterministic, so a cost that is not on a
flow's path leaves that flow's figures exactly where they were.  Points are
a scenario and a price in, figures out, so they run serially or as tasks on a
Dask cluster with identical results.
"""

from __future__ import annotations

from collections.abc import Callable

from iovirt.sim.profile import EVENTS, CostProfile

from .runner import run, run_all
from .scenario import Scenario, ScenarioError

PER_BYTE = "/B"
FIGURES = ("throughput_gbps", "p50_us", "cpu_per_gbps")   # cpu: host cores busy per Gbit/s delivered


def costs(profile: CostProfile) -> list[str]:
    """Every non-zero price of ``profile``: the fixed parts, then the per-byte parts."""
    return ([e for e in EVENTS if profile.fixed_ns[e]]
            + [e + PER_BYTE for e in EVENTS if profile.per_byte_ns[e]])


def scaled(profile: CostProfile, cost: str, factor: float) -> CostProfile:
    event = cost[:-len(PER_BYTE)] if cost.endswith(PER_BYTE) else cost
    return profile.scaled(event, factor, per_byte=cost.endswith(PER_BYTE))


def measured_for(scenario: Scenario, duration_ms: float) -> Scenario:
    """``scenario`` with every workload measured for ``duration_ms`` after its warm-up."""
    copy = scenario.with_profile(scenario.profile)
    for w in copy.workloads:
        w.duration_ms = w.warmup_ms + duration_ms
    return copy


def _label(index: int, w) -> str:
    return f"{index}:{w.src}\u2192{w.dst}" if w.dst else f"{index}:{w.src}"


def figures(scenario: Scenario, data: dict) -> dict[str, dict]:
    """Each flow's headline figures from a run's ``to_dict()``: throughput,
    median latency, and the host cores busy on the hosts its machines run on
    per Gbit/s that the flows touching those hosts delivered."""
    host_of = {vm.name: vm.host for vm in scenario.vms}
    flows = data["flows"]
    hosts_of = [{host_of[m] for m in (f["src"], f["dst"]) if m in host_of} for f in flows]
    busy = {}
    for r in data["resources"]:
        if r["kind"] == "host_core":
            host = r["name"].split("/", 1)[0]
            busy[host] = busy.get(host, 0.0) + r["busy_s"]
    out = {}
    for f, hosts in zip(flows, hosts_of):
        gbit = sum(g["throughput_gbps"] for g, theirs in zip(flows, hosts_of) if theirs & hosts) * data["sim_time_s"]
        cores = sum(busy.get(h, 0.0) for h in hosts)
        out[_label(f["workload"], scenario.workloads[f["workload"]])] = {
            "throughput_gbps": f["throughput_gbps"], "p50_us": f["latency_us"]["p50"],
            "cpu_per_gbps": round(cores / gbit, 6) if gbit else None}
    return out


def run_point(point: dict) -> dict:
    """One run: the scenario with ``cost`` (None: none) times ``factor``."""
    scenario = point["scenario"]
    if point["cost"] is not None:
        scenario = scenario.with_profile(scaled(scenario.profile, point["cost"], point["factor"]))
    return {"cost": point["cost"], "factor": point["factor"], "flows": figures(scenario, run(scenario).to_dict())}


def points(scenario: Scenario, chosen: list[str] | None = None, factor: float = 0.5,
           duration_ms: float | None = None) -> list[dict]:
    """The baseline and, for each cost (every non-zero one, or ``chosen``), a
    run at 1 - ``factor`` and one at 1 + ``factor`` times its price."""
    if not 0 < factor <= 1:
        raise ScenarioError(f"--factor: expected a fraction in (0, 1], got {factor:g}")
    if duration_ms is not None:
        if duration_ms <= 0:
            raise ScenarioError(f"--duration-ms: expected a positive number of ms, got {duration_ms:g}")
        scenario = measured_for(scenario, duration_ms)
    every = costs(scenario.profile)
    unknown = [c for c in chosen or () if c not in every]
    if unknown:
        raise ScenarioError(f"--costs: expected costs of profile '{scenario.profile.name}' ({', '.join(every)}), "
                            f"got {', '.join(unknown)}")
    todo = [{"scenario": scenario, "cost": None, "factor": 1.0}]
    for cost in chosen or every:
        todo += [{"scenario": scenario, "cost": cost, "factor": 1 - factor},
                 {"scenario": scenario, "cost": cost, "factor": 1 + factor}]
    return todo


def _change(base: float | None, value: float | None) -> float | None:
    """Percent change from ``base``; None where either is missing."""
    if base is None or value is None:
        return None
    if base == value:
        return 0.0
    return round((value - base) / base * 100, 3) if base else None


def table(scenario: Scenario, runs: list[dict], factor: float) -> dict:
    """From the runs of :func:`points`: one row per cost and flow whose figures
    moved, biggest change first, and the costs that moved nothing."""
    base, rest = runs[0]["flows"], runs[1:]
    rows, unaffected = [], []
    for low, high in zip(rest[::2], rest[1::2]):
        moved = []
        for flow, figs in base.items():
            row = {"cost": low["cost"], "flow": flow, "figures": {}}
            for name in FIGURES:
                lo, hi = low["flows"][flow][name], high["flows"][flow][name]
                row["figures"][name] = {"base": figs[name], "low": lo, "high": hi,
                                        "low_pct": _change(figs[name], lo), "high_pct": _change(figs[name], hi)}
            changes = [abs(c) for f in row["figures"].values() for c in (f["low_pct"], f["high_pct"]) if c]
            if changes or any(f["low"] != f["base"] or f["high"] != f["base"] for f in row["figures"].values()):
                row["impact_pct"] = max(changes, default=0.0)
                moved.append(row)
        rows += moved
        if not moved:
            unaffected.append(low["cost"])
    rows.sort(key=lambda r: (-r["impact_pct"], r["cost"], r["flow"]))
    return {"scenario": scenario.name, "profile": scenario.profile.name, "factor": factor,
            "base": base, "rows": rows, "unaffected": unaffected}


def sweep(todo: list[dict], client=None, progress: Callable[[dict], None] | None = None) -> list[dict]:
    return run_all(run_point, todo, client, progress)


def sensitivity(scenario: Scenario, chosen: list[str] | None = None, factor: float = 0.5,
                duration_ms: float | None = None, client=None) -> dict:
    """Every cost (or ``chosen``) of the scenario's profile at ±``factor``: how each flow's figures move."""
    return table(scenario, sweep(points(scenario, chosen, factor, duration_ms), client), factor)
