"""Live-migrate one VM of a scenario while its workloads run, and the
compatibility matrix: which VM can go to which host, and why not."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..hypervisor.migration import MigrationLink, MigrationReport
from .results import Result
from . import engines
from .runner import begin, run_to, settle
from .scenario import Migration, Scenario, ScenarioError, migration_note, migration_problem
from .workloads import FlowStats
from .world import World

SETTLE_STEP_NS = 1_000_000
SETTLE_LIMIT_NS = 10_000_000_000    # a migration still running 10 s after the workloads stopped is reported as is


@dataclass
class MigrationOutcome:
    report: MigrationReport
    flows: list[FlowStats]
    result: Result

    @property
    def frames_lost(self) -> int:
        """Frames of the moved VM's flows that never arrived."""
        return sum(f.sent - f.delivered for f in self.flows if self.report.vm in (f.src, f.dst))

    def to_dict(self) -> dict:
        r = self.report
        return {"vm": r.vm, "from": r.source, "to": r.target, "model": r.model, "result": r.result,
                "reason": r.reason, "downtime_ms": round(r.downtime_ns / 1e6, 4),
                "total_time_ms": round(r.total_ns / 1e6, 4), "rounds": r.rounds, "pages_sent": r.pages_sent,
                "zero_pages": r.zero_pages, "bytes_sent": r.bytes_sent, "state_bytes": r.state_bytes,
                "vcpu_state_bytes": r.vcpu_state_bytes, "frames_lost": self.frames_lost,
                "standby_ms": None if r.failback_ns is None else round((r.failback_ns - r.unplugged_ns) / 1e6, 4),
                "flows": self.result.to_dict()["flows"]}


def _target(scenario: Scenario, vm: str | None, to: str | None) -> tuple[str, str]:
    m = scenario.migration or Migration()
    vm, to = vm or m.vm, to or m.to
    vms = {v.name: v for v in scenario.vms}
    hosts = [h.name for h in scenario.hosts]
    if vm is None or to is None:
        raise ScenarioError(f"migrate: give --vm and --to, or migration.vm and migration.to in the scenario "
                            f"(missing: {'--vm' if vm is None else '--to'})")
    if vm not in vms:
        raise ScenarioError(f"migrate: --vm: expected one of the VMs ({', '.join(vms)}), got {vm!r}")
    if to not in hosts or to == vms[vm].host:
        others = ", ".join(h for h in hosts if h != vms[vm].host) or "none: the scenario has one host"
        raise ScenarioError(f"migrate: --to: expected a host other than {vm}'s ({others}), got {to!r}")
    return vm, to


def migrate(scenario: Scenario, vm: str | None = None, to: str | None = None,
            progress: Callable[[float], None] | None = None, engine: str = "cpython") -> MigrationOutcome:
    """Run the scenario's workloads and migrate ``vm`` to host ``to`` during them, on ``engine``."""
    vm, to = _target(scenario, vm, to)
    report, flows, measured = engines.run_on(engines.choose(scenario, engine), moved, scenario, vm, to,
                                             progress=progress)
    return MigrationOutcome(report, flows, Result.of(scenario, *measured))


def moved(scenario: Scenario, vm: str, to: str, progress: Callable[[float], None] | None = None
          ) -> tuple[MigrationReport, list[FlowStats], tuple]:
    """:func:`migrate` on the interpreter running this: the report, the flows and what the run measured."""
    m = scenario.migration or Migration()
    wall = time.perf_counter()
    world = World(scenario)
    start, stop, flows = begin(world)
    source = world.vms[vm].host.name
    fail_at = None if m.fail_at_ms is None else start + m.fail_at_ms * 1e6
    link = MigrationLink(world.ledger, f"{source}->{to}/migration", m.link_gbps, fail_at)
    migration = world.migrate(vm, to, link, start + m.at_ms * 1e6, downtime_ns=m.downtime_ms * 1e6,
                              max_rounds=m.max_rounds)
    run_to(world, stop, progress)
    while migration.report.result == "running" and world.sim.now < stop + SETTLE_LIMIT_NS:
        world.sim.run(until=world.sim.now + SETTLE_STEP_NS)
    return migration.report, flows, settle(world, start, stop, flows, wall)


def matrix(scenario: Scenario, vm: str | None = None, to: str | None = None) -> list[dict]:
    """Every VM (or ``vm``) against every other host (or ``to``): ok, or the reason it cannot go."""
    if len(scenario.hosts) < 2:
        raise ScenarioError(f"migrate --check: {scenario.name} has one host; a migration needs another")
    rows = []
    for spec in scenario.vms:
        for host in scenario.hosts:
            if host.name != spec.host and vm in (None, spec.name) and to in (None, host.name):
                reason = migration_problem(scenario, spec.name, host.name)
                rows.append({"vm": spec.name, "from": spec.host, "to": host.name,
                             "result": "ok" if reason is None else "blocked",
                             "reason": migration_note(scenario, spec.name, host.name) if reason is None else reason})
    return rows
