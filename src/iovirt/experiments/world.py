"""Build a running system from a scenario: hosts and their physical NICs,
VMs (or bare-metal machines) with their NICs wired by model, guests booted
(PCI enumeration, driver probe) and interfaces up, and the peer at the far
end of each physical link that a workload sends to."""

from __future__ import annotations

from ipaddress import IPv4Interface

from ..devices.ixgbe_sriov import VfConfig
from ..devices.vmstate import load_state
from ..guest.drivers.failover import FailoverMaster
from ..guest.drivers.xen_netfront import xenbus_probe
from ..guest.kernel import GuestKernel
from ..net.peer import WirePeer
from ..hypervisor.emulation import EmulatedNic, XenHvmNic
from ..hypervisor.host import Host
from ..hypervisor.migration import Migration, MigrationLink, MigrationReport
from ..hypervisor.paravirt import VirtioNic
from ..hypervisor.passthrough import AssignmentError, PassthroughNic, PhysicalNic
from ..hypervisor.sriov import SriovNic, SriovPort
from ..net.uplink import UplinkPort
from ..hypervisor.vm import VM
from ..net.fabric import Fabric
from ..hypervisor.xen import Xen
from ..sim.engine import Sim
from ..sim.resource import Ledger, Resource
from .scenario import (
    ASSIGNED,
    WIRE,
    Scenario,
    ScenarioError,
    backed_up,
    bridge_port,
    migration_problem,
)

SETTLE_NS = 2_000_000
HOST_KERNEL_MB = 64
SOFTWARE_WIRINGS = {"emulated": EmulatedNic, "paravirt": VirtioNic}


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _xen_nic(xen: Xen, vm: VM, nic):
    """On a Xen host: a PV vif (netfront, netback in dom0), or an HVM device model in dom0's QEMU."""
    if nic.device == "xen-netfront":
        return xen.add_vif(vm, mac_bytes(nic.mac))
    return XenHvmNic(vm, nic.device, mac_bytes(nic.mac), xen.ioreq_server(vm))


def _vf_config(nic) -> VfConfig:
    """The PF driver's policy for the VF of VM NIC ``nic`` (ip link set PF vf N ...)."""
    return VfConfig(mac_bytes(nic.mac), nic.vlan or 0, nic.rate_mbps or 0, nic.spoofchk, nic.trust)


class _Refused(Exception):
    """The host could not assign NIC ``nic`` of a VM: ``why``."""

    def __init__(self, nic: int, why: str) -> None:
        super().__init__(why)
        self.nic, self.why = nic, why


class World:
    def __init__(self, scenario: Scenario, guest_drivers: dict | None = None) -> None:
        """``guest_drivers``: the drivers the guests carry, by (vendor, device)
        ID (default: every one iovirt has)."""
        self.scenario = scenario
        self.sim = Sim()
        self.ledger = Ledger(scenario.profile)
        self.host_specs = {h.name: h for h in scenario.hosts}
        self.xen: dict[str, Xen] = {}                                 # host -> its Xen, on Xen hosts
        self.fabric = Fabric(self.sim, self.ledger, buffer_bytes=scenario.fabric.buffer_kb << 10)   # the hosts' LAN
        self.hosts = {h.name: self._host(h) for h in scenario.hosts}
        self.vms: dict[str, VM] = {xen.dom0.vm.name: xen.dom0.vm for xen in self.xen.values()}
        self.guests: dict[str, GuestKernel] = {}
        self.models: dict[str, tuple[str, str, str | None]] = {}    # machine -> (model, device, backend)
        self.peers: dict = {}                                          # subnet -> its wire peer
        self.retired: list[VM] = []                                    # VMs that migrated away
        self.migration_links: list[Resource] = []
        self.busy_before: dict[str, float] = {}                       # resources' busy time before the window
        self.nic_specs: dict[int, object] = {}                         # id of a wired NIC -> its spec
        self.uplinks = {name: self._uplink(host) for name, host in self.hosts.items() if self._free_nic(name)}
        self.sriov = self._sriov_ports()
        for index, spec in enumerate(scenario.vms):
            self.vms[spec.name] = self._build(index, spec)
            first = spec.nics[0] if spec.nics else None
            model = "bare-metal" if spec.bare_metal else (first.model if first else "")
            self.models[spec.name] = (model, first.device if first else "", first.backend if first else None)
        for spec in scenario.vms:
            self.guests[spec.name] = self._boot(spec, guest_drivers)

    def _boot(self, spec, drivers: dict | None) -> GuestKernel:
        """The guest finds its NICs (PCI, or xenbus on Xen) and brings them up."""
        vm = self.vms[spec.name]
        guest = GuestKernel(spec.name, vm.vcpus[0], vm.cpu_mem, self.sim, drivers)
        guest.boot()
        if any(nic.device == "xen-netfront" for nic in spec.nics):
            xenbus_probe(guest, self.xen[spec.host])
        for nic in spec.nics:
            if not nic.standby:             # a standby is one interface with its primary (net_failover)
                guest.ifup(mac_bytes(nic.mac), str(nic.ip))
        return guest

    def _host(self, spec) -> Host:
        host = Host(spec.name, spec.cores, self.sim, self.ledger, spec.iommu_page_kb << 10, spec.iotlb_entries,
                    spec.pml)
        for index, nic in enumerate(spec.nics):
            host.nics[nic.name] = PhysicalNic(host, nic.name, index, nic.link_gbps)
            self.fabric.connect(host.nics[nic.name].link)
        if spec.hypervisor == "xen":
            self.xen[spec.name] = Xen(host)
        return host

    def _build(self, index: int, spec) -> VM:
        """``spec``'s machine; what the host cannot give it (memory, an IOMMU
        mapping, interrupt remapping entries) is an error in the scenario's terms."""
        where = f"{self.scenario.source}: vms[{index}]"
        host = self.hosts[spec.host]
        try:
            return self._machine(spec)
        except _Refused as refused:
            raise ScenarioError(f"{where}.nics[{refused.nic}]: cannot give {spec.name} its "
                                f"{spec.nics[refused.nic].device}: {refused.why}") from None
        except MemoryError as exc:
            reason = getattr(exc, "reason", None) or str(exc) or "out of memory"
            so_far = sum(vm.mem.size for vm in self.vms.values() if vm.host is host) >> 20
            raise ScenarioError(f"{where}.memory_mb: cannot reserve {spec.memory_mb} MiB of guest memory for "
                                f"{spec.name} on {spec.host} (its VMs so far: {so_far} MiB): {reason}; give it "
                                f"less, or allow this machine more overcommit (vm.overcommit_memory)") from None

    def _machine(self, spec, on: str | None = None, mem=None, slots: dict | None = None) -> VM:
        """``spec``'s machine on its host; or a migration's target on host
        ``on`` over ``mem``, with only the PCI NICs the VM still has, each in
        its slot (``slots``: id of the NIC's spec -> slot)."""
        on = on or spec.host
        posted = self.host_specs[on].posted_interrupts
        host = self.hosts[on]
        vm = VM(spec.name, host, spec.memory_mb, spec.vcpus, native=spec.bare_metal, apicv=posted, mem=mem)
        xen = self.xen.get(on)
        if xen is not None:
            xen.create_domain(vm)
        for j, nic in enumerate(spec.nics):
            slot = None if slots is None else slots.get(id(nic), -1)
            if slot == -1 and nic.device != "xen-netfront":
                continue                        # a VF the guest gave up before it moved
            if nic.model in ASSIGNED:
                try:
                    if nic.model == "passthrough":
                        made = PassthroughNic(vm, host.nics[nic.uplink], mac_bytes(nic.mac), posted=posted)
                    else:
                        made = SriovNic(vm, self.sriov[on, nic.uplink], posted=posted)
                except (AssignmentError, MemoryError) as exc:   # the IOMMU's tables or interrupt entries ran out
                    raise _Refused(j, str(exc)) from None
            elif xen is not None:
                made = _xen_nic(xen, vm, nic)
            elif nic.standby:
                made = VirtioNic(vm, nic.device, mac_bytes(nic.mac), nic.backend, standby=True, slot=slot)
            else:
                made = SOFTWARE_WIRINGS[nic.model](vm, nic.device, mac_bytes(nic.mac), nic.backend, slot=slot)
            self.nic_specs[id(made)] = nic
        return vm

    def _sriov_ports(self) -> dict[tuple[str, str], SriovPort]:
        """Ports with num_vfs: VFs enabled, each assigned VF's policy from its VM NIC
        (in scenario order), the rest left to their defaults."""
        ports = {}
        for spec in self.scenario.hosts:
            for pnic in (p for p in spec.nics if p.num_vfs):
                nics = [n for vm in self.scenario.vms if vm.host == spec.name for n in vm.nics
                        if n.model == "sriov" and n.uplink == pnic.name]
                configs = [_vf_config(n) for n in nics]
                configs += [VfConfig() for _ in range(pnic.num_vfs - len(configs))]
                host = self.hosts[spec.name]
                ports[spec.name, pnic.name] = SriovPort(host, host.nics[pnic.name], configs)
        return ports

    def _free_nic(self, host: str):
        """The port the host bridges its software-model VMs onto: the first one
        no VM NIC names, if any such VM exists or none at all (VMs may
        migrate to an empty host)."""
        vms = [vm for vm in self.scenario.vms if vm.host == host]
        if vms and not any(not vm.bare_metal and any(n.uplink is None for n in vm.nics) for vm in vms):
            return None
        name = bridge_port(host, {vm.name: vm for vm in self.scenario.vms}, self.host_specs)
        return None if name is None else self.hosts[host].nics[name]

    def _uplink(self, host: Host) -> UplinkPort:
        """The host kernel drives the free port on a core of its own (the NIC's
        softirq core) and bridges it to the taps."""
        pnic = self._free_nic(host.name)
        machine = VM(f"{host.name}-kernel", host, HOST_KERNEL_MB, native=True, dedicated=True)
        PassthroughNic(machine, pnic, bytes([0x02, 0xFF, 0, 0, 0, len(self.hosts) & 0xFF]))
        kernel = GuestKernel(machine.name, machine.vcpus[0], machine.mem, self.sim)
        kernel.boot()
        self.vms[machine.name] = machine
        self.models[machine.name] = ("host", "ixgbe", None)
        port = UplinkPort(host, machine.vcpus[0], kernel.netdevs[0])
        port.pnic = pnic
        return port

    # ---- live migration -----------------------------------------------------------------
    def migrate(self, name: str, to: str, link: MigrationLink, at: float, **limits) -> Migration:
        """Start migrating VM ``name`` to host ``to`` at ``at`` (ns), unless
        its devices cannot run there; ``limits``: downtime_ns, max_rounds.  A
        VF with a failover standby is hot-unplugged first and a VF of the
        target's port hot-plugged after the move.  The migration's report says
        how it went."""
        spec = next(v for v in self.scenario.vms if v.name == name)
        source, guest = self.vms[name], self.guests[name]
        refused = migration_problem(self.scenario, name, to)
        vfs = [] if refused else [nic for nic in source.nics if self._has_standby(spec, nic)]

        def switch_over(mem, states: list[bytes]) -> None:
            slots = {id(self.nic_specs[id(nic)]): nic.bdf.device for nic in source.nics}
            target = self._machine(spec, on=to, mem=mem, slots=slots)
            for nic, blob in zip(target.nics, states):
                load_state(nic.device, blob)
            if source.host.name in self.xen:            # the old domain goes before its dom0 runs again
                self.xen[source.host.name].destroy_domain(source)
            guest.move_to(target.vcpus[0], target.cpu_mem, xen=self.xen.get(to))
            target.irqchip.adopt(source.irqchip)
            self._retire(source)
            self.vms[name] = target
            guest.resume()
            for nic in target.nics:
                nic.resume()

        def done(report: MigrationReport) -> None:
            if report.result == "failed":
                guest.resume()
            if vfs and report.result in ("ok", "failed"):
                report.reason = self._replug(spec, report) or report.reason

        migration = Migration(source, self.hosts[to], link, switch_over, model=self.models[name][0], on_done=done,
                              **limits)
        self.migration_links.append(link.wire)
        if refused:
            migration.refuse(refused)
        if vfs:
            self.sim.at(at, self._unplug, vfs, migration)
        else:
            migration.start(at)
        return migration

    def _has_standby(self, spec, nic) -> bool:
        """``nic`` is an assigned function whose MAC a virtio-net standby of the same VM shares (net_failover)."""
        own = self.nic_specs.get(id(nic))
        return own is not None and own.model in ASSIGNED and backed_up(spec, own)

    def _unplug(self, vfs: list, migration: Migration) -> None:
        """device_del of every failover VF; pre-copy starts once the guest has ejected the last."""
        left = [len(vfs)]
        migration.report.unplugged_ns = self.sim.now

        def ejected() -> None:
            left[0] -= 1
            if not left[0]:
                migration.start(self.sim.now)
                migration.report.started_ns = migration.report.unplugged_ns
        for vf in vfs:
            vf.unplug(on_done=ejected)

    def _replug(self, spec, report: MigrationReport) -> str | None:
        """A function of the same NIC model where the VM now runs (a free VF,
        or the port of the same name) is hot-plugged and becomes primary
        again once the guest has probed it; None, or why the VM stays on its standby."""
        vm = self.vms[spec.name]
        host, posted = vm.host.name, self.host_specs[vm.host.name].posted_interrupts
        for nic in (n for n in spec.nics if n.model in ASSIGNED):
            if nic.model == "passthrough":
                pnic = self.hosts[host].nics.get(nic.uplink)
                if pnic is None or pnic.owner is not None:
                    return f"{spec.name} stays on its virtio-net standby: {host} has no free port {nic.uplink}"
                try:
                    made = PassthroughNic(vm, pnic, mac_bytes(nic.mac), posted=posted, hotplug=True)
                except (AssignmentError, MemoryError) as exc:
                    return f"{spec.name} stays on its virtio-net standby: {exc}"
            else:
                ports = sorted((p for (h, _), p in self.sriov.items() if h == host and p.free),
                               key=lambda p: p.pnic.name != nic.uplink)       # the port of the same name first
                if not ports:
                    return f"{spec.name} stays on its virtio-net standby: {host} has no x82599 port with a free VF"
                try:
                    made = SriovNic(vm, ports[0], posted=posted, config=_vf_config(nic), hotplug=True)
                except AssignmentError as exc:
                    return f"{spec.name} stays on its virtio-net standby: {exc}"
            self.nic_specs[id(made)] = nic
        self._await_failback(spec.name, report)
        return None

    def _await_failback(self, name: str, report: MigrationReport) -> None:
        """``report.failback_ns``: when the guest's bond next takes a primary (once its probe is done)."""
        guest = self.guests[name]
        for master in (n for n in guest.netdevs if isinstance(n, FailoverMaster)):
            def failback(master=master) -> None:
                report.failback_ns = guest.vcpu.cursor
                master.on_failback = None
            master.on_failback = failback

    def incarnations(self, name: str) -> list[VM]:
        """VM ``name`` on each host it ran on, the current one last."""
        return [vm for vm in self.retired if vm.name == name] + [self.vms[name]]

    def _retire(self, vm: VM) -> None:
        """The source VM after the switch-over: its taps go, its threads leave
        their cores, it never runs again."""
        for nic in vm.nics:
            close = getattr(getattr(nic, "port", None), "close", None)
            if close is not None:
                close()
        vm.leave()
        self.retired.append(vm)

    @property
    def machines(self) -> tuple[VM, ...]:
        """Every machine that ran, those that migrated away included."""
        return (*self.retired, *self.vms.values())

    def peer(self, vm: str) -> WirePeer:
        """The host at the far end of the link ``vm`` reaches the wire on (its
        own NIC's, or its host's bridge uplink); it takes the last host
        address of that VM NIC's subnet."""
        spec = next(v for v in self.scenario.vms if v.name == vm)
        nic = next((n for n in spec.nics if n.uplink), None)
        if nic is not None:
            pnic = self.hosts[spec.host].nics[nic.uplink]
        elif spec.host in self.uplinks and spec.nics:
            nic, pnic = spec.nics[0], self.uplinks[spec.host].pnic
        else:
            raise LookupError(f"{vm} has no path to a physical link to reach '{WIRE}'")
        net = nic.ip.network
        if net not in self.peers:
            address = IPv4Interface(f"{net.broadcast_address - 1}/{net.prefixlen}")
            mac = bytes([0x02, 0, 0, 0, len(self.peers) >> 8 & 0xFF, len(self.peers) & 0xFF])
            self.peers[net] = WirePeer(self.fabric, mac, str(address), name=f"peer-{net.network_address}",
                                       cores=self.scenario.peer.cores, rx_ring=self.scenario.peer.rx_ring)
        return self.peers[net]

    def drops(self) -> dict[str, int]:
        """Frames lost on the way, by where they were discarded (a full tap or
        qdisc, a NIC's packet buffer, a device's ring, a guest's stack), as
        each place counted them."""
        return dict(sorted(self.sim.drops.places.items()))

    def device_errors(self) -> dict[str, int]:
        """Each device model's own error counters (what ``ethtool -S`` shows)."""
        out = {f"{nic.device.place}/{name}": count for vm in self.machines for nic in vm.nics
               for name, count in getattr(nic.device, "errors", {}).items() if count}
        return dict(sorted(out.items()))

    @property
    def resources(self) -> list[Resource]:
        out: list[Resource] = []
        for host in self.hosts.values():
            out += host.cores + host.threads
            for pnic in host.nics.values():
                out += [pnic.engine, *pnic.link.resources]
        for vm in self.machines:
            out += vm.resources
        for peer in self.peers.values():
            out += peer.cores
        return out + self.migration_links

    def settle(self, within_ns: float = SETTLE_NS) -> float:
        """Let boot-time traffic finish (a poll-mode backend never goes idle,
        so this is bounded); returns when every resource has caught up."""
        busy_until = max([self.sim.now] + [r.cursor for r in self.resources])
        self.sim.run(until=busy_until + within_ns)          # work already queued (a probe's waits), then quiet
        return max([self.sim.now] + [r.cursor for r in self.resources])

    def start_measuring(self, at: float) -> None:
        self.ledger.reset()
        self.sim.drops.reset()
        for r in self.resources:
            r.reset(at)
        for vm in self.vms.values():
            vm.stats.clear()
        self.sim.run(until=at)
