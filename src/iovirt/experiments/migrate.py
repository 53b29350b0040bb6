"""Live-migrate one VM of a scenario while its workloads run, and the
compatibility matrix: which VM can go to which host, and why not."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..hypervisor.migration import MigrationLink, MigrationReport
from .catalog import DEVICES
from .results import Result
from .runner import begin, finish
from .scenario import ASSIGNED, Migration, Scenario, ScenarioError
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
                "zero_pages": r.zero_pages, "bytes_sent": r.bytes_sent, "frames_lost": self.frames_lost,
                "standby_ms": None if r.replugged_ns is None else round((r.replugged_ns - r.unplugged_ns) / 1e6, 4),
                "flows": self.result.to_dict()["flows"]}


def _target(scenario: Scenario, vm: str | None, to: str | None) -> tuple[str, str]:
    m = scenario.migration or Migration()
    vm, to = vm or m.vm, to or m.to
    vms = {v.name: v for v in scenario.vms}
    hosts = [h.name for h in scenario.hosts]
    if vm not in vms:
        raise ScenarioError(f"migrate: --vm: expected one of the VMs ({', '.join(vms)}), got {vm!r}")
    if to not in hosts or to == vms[vm].host:
        others = ", ".join(h for h in hosts if h != vms[vm].host) or "none: the scenario has one host"
        raise ScenarioError(f"migrate: --to: expected a host other than {vm}'s ({others}), got {to!r}")
    return vm, to


def compatibility(scenario: Scenario, vm: str, to: str) -> str | None:
    """Why ``vm`` cannot run on host ``to`` (None: it can), from the devices alone."""
    spec = next(v for v in scenario.vms if v.name == vm)
    host = next(h for h in scenario.hosts if h.name == to)
    if spec.bare_metal:
        return "a bare-metal machine has no hypervisor to migrate it"
    for nic in spec.nics:
        need = DEVICES[nic.device].hypervisor
        if need is not None and host.hypervisor != need:
            return f"{nic.device} needs a {need} host; {to} runs {host.hypervisor}"
        if nic.model in ASSIGNED and not any(n.standby and n.mac == nic.mac for n in spec.nics):
            what = "passed through" if nic.model == "passthrough" else "a VF"
            return (f"{nic.device} ({what} of {nic.uplink}) has no failover standby to carry the VM while it is "
                    f"unplugged: its state lives in the NIC and its DMA writes are not dirty-logged; give the VM "
                    f"a virtio-net NIC with standby: true and the same MAC")
    return None


def _note(scenario: Scenario, vm: str, to: str) -> str:
    """What an allowed move will not bring along."""
    spec = next(v for v in scenario.vms if v.name == vm)
    host = next(h for h in scenario.hosts if h.name == to)
    if any(n.model == "sriov" for n in spec.nics) and not any(p.num_vfs for p in host.nics):
        return f"stays on its virtio-net standby: {to} has no port with VFs"
    ports = {p.name for p in host.nics}
    if any(n.model == "passthrough" and n.uplink not in ports for n in spec.nics):
        return f"stays on its virtio-net standby: {to} has no port of the same name to pass through"
    return ""


def migrate(scenario: Scenario, vm: str | None = None, to: str | None = None) -> MigrationOutcome:
    """Run the scenario's workloads and migrate ``vm`` to host ``to`` during them."""
    vm, to = _target(scenario, vm, to)
    m = scenario.migration or Migration()
    wall = time.perf_counter()
    world = World(scenario)
    start, stop, flows = begin(world)
    source = world.vms[vm].host.name
    fail_at = None if m.fail_at_ms is None else start + m.fail_at_ms * 1e6
    link = MigrationLink(world.ledger, f"{source}->{to}/migration", m.link_gbps, fail_at)
    migration = world.migrate(vm, to, link, start + m.at_ms * 1e6, downtime_ns=m.downtime_ms * 1e6,
                              max_rounds=m.max_rounds)
    reason = compatibility(scenario, vm, to)
    if reason is not None:
        migration.refuse(reason)
    world.sim.run(until=stop)
    while migration.report.result == "running" and world.sim.now < stop + SETTLE_LIMIT_NS:
        world.sim.run(until=world.sim.now + SETTLE_STEP_NS)
    result = finish(world, start, stop, flows, wall)
    return MigrationOutcome(migration.report, flows, result)


def matrix(scenario: Scenario) -> list[dict]:
    """Every VM against every other host: ok, or the reason it cannot go."""
    rows = []
    for spec in scenario.vms:
        for host in scenario.hosts:
            if host.name != spec.host:
                reason = compatibility(scenario, spec.name, host.name)
                rows.append({"vm": spec.name, "from": spec.host, "to": host.name,
                             "result": "ok" if reason is None else "blocked",
                             "reason": _note(scenario, spec.name, host.name) if reason is None else reason})
    return rows
