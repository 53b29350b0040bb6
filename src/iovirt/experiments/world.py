"""Build a running system from a scenario: hosts, VMs with their NICs wired
by model, guests booted (PCI enumeration, driver probe) and interfaces up."""

from __future__ import annotations

from ..guest.kernel import GuestKernel
from ..hypervisor.emulation import EmulatedNic
from ..hypervisor.host import Host
from ..hypervisor.paravirt import VirtioNic
from ..hypervisor.vm import VM
from ..sim.engine import Sim
from ..sim.resource import Ledger, Resource
from .scenario import Scenario

SETTLE_NS = 2_000_000
WIRINGS = {"emulated": EmulatedNic, "paravirt": VirtioNic}


class World:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.sim = Sim()
        self.ledger = Ledger(scenario.profile)
        self.hosts = {h.name: Host(h.name, h.cores, self.sim, self.ledger) for h in scenario.hosts}
        self.vms: dict[str, VM] = {}
        self.guests: dict[str, GuestKernel] = {}
        self.models: dict[str, tuple[str, str]] = {}
        for spec in scenario.vms:
            vm = VM(spec.name, self.hosts[spec.host], spec.memory_mb, spec.vcpus)
            for nic in spec.nics:
                WIRINGS[nic.model](vm, nic.device, bytes.fromhex(nic.mac.replace(":", "")), nic.backend)
            self.vms[spec.name] = vm
            self.models[spec.name] = (spec.nics[0].model, spec.nics[0].device) if spec.nics else ("", "")
        for spec in scenario.vms:
            vm = self.vms[spec.name]
            guest = GuestKernel(spec.name, vm.vcpus[0], vm.mem, self.sim)
            guest.boot()
            for nic in spec.nics:
                guest.ifup(bytes.fromhex(nic.mac.replace(":", "")), str(nic.ip))
            self.guests[spec.name] = guest

    @property
    def resources(self) -> list[Resource]:
        out: list[Resource] = []
        for host in self.hosts.values():
            out += host.cores
        for vm in self.vms.values():
            out += vm.resources
        return out

    def settle(self, within_ns: float = SETTLE_NS) -> float:
        """Let boot-time traffic finish (a poll-mode backend never goes idle,
        so this is bounded); returns when every resource has caught up."""
        self.sim.run(until=self.sim.now + within_ns)
        return max([self.sim.now] + [r.cursor for r in self.resources])

    def start_measuring(self, at: int) -> None:
        self.ledger.reset()
        for r in self.resources:
            r.reset(at)
        for vm in self.vms.values():
            vm.stats.clear()
        self.sim.run(until=at)
