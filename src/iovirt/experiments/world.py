"""Build a running system from a scenario: hosts and their physical NICs,
VMs (or bare-metal machines) with their NICs wired by model (one factory per
model), guests booted (PCI enumeration, driver probe) and interfaces up, and
the peer at the far end of each physical link that a workload sends to.  A
migration with net_failover is orchestrated in ``failover.py``."""

from __future__ import annotations

from functools import partial
from ipaddress import IPv4Address

from ..devices.registry import registry
from ..devices.vmstate import load_state
from ..guest.drivers.netvsc import vmbus_probe
from ..guest.drivers.xen_netfront import xenbus_probe
from ..guest.drivers.ixgbe import MAX_RSS_INDICES, IxgbeDriver
from ..guest.drivers.ixgbe_rings import RX_BUFFER, TX_RING
from ..guest.kernel import DRIVERS, GuestKernel
from ..hypervisor.emulation import EmulatedNic, XenHvmNic
from ..hypervisor.esxi import VMK_ASSIGNED_IRQ, VMK_VSWITCH, EsxiNic
from ..hypervisor.host import Host
from ..hypervisor.hyperv import VMSWITCH, HyperV, WorkerNic
from ..hypervisor.ixgbe_pf import VfConfig
from ..hypervisor.migration import Migration, MigrationLink, MigrationReport
from ..hypervisor.paravirt import VirtioNic
from ..hypervisor.passthrough import VFIO_IRQ, AssignmentError, PassthroughNic, PhysicalNic
from ..hypervisor.pcinic import PciNic
from ..hypervisor.sriov import SriovNic, SriovPort
from ..hypervisor.vm import VM
from ..hypervisor.xen import Xen
from ..net.fabric import Fabric
from ..net.tester import TesterSink
from ..net.uplink import UplinkPort
from ..sim.engine import Sim
from ..sim.resource import Ledger, Resource
from ..spec.ixgbe import DEVICE_ID, VENDOR_ID
from . import failover
from .scenario import (ASSIGNED, WIRE, Scenario, ScenarioError, bridge_port, far_end_moderation, migration_problem,
                       save_records)

SETTLE_NS = 2_000_000
HOST_KERNEL_MB = 64
FAR_END_GBPS = 10                   # the far end's 82599 port
VMBUS_BRING_UP_NS = 5_000_000       # bound on a guest's VMBus and netvsc bring-up at boot (ns)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _vf_config(nic) -> VfConfig:
    """The PF driver's policy for the VF of VM NIC ``nic`` (ip link set PF vf N ...)."""
    return VfConfig(mac_bytes(nic.mac), nic.vlan or 0, nic.rate_mbps or 0, nic.spoofchk, nic.trust)


class FarEndHost:
    """The far end of the wire as a bare-metal machine: its 82599 run by the
    ixgbe driver with a queue pair per CPU, the kernel's stack above it, and
    a traffic tester taking one-way streams through XDP (``net/tester.py``);
    its CPUs count as the far end's (kind ``peer``)."""

    def __init__(self, vm: VM, kernel: GuestKernel, stack, pnic: PhysicalNic) -> None:
        self.kernel, self.stack, self.mac = kernel, stack, stack.mac
        self.cores = vm.vcpus
        for vcpu in self.cores:
            vcpu.kind = "peer"
        self.link = pnic.link                   # the cable to the LAN
        self.resources = [*self.cores, pnic.engine, pnic.rx_engine, *pnic.link.resources]
        self.tester = TesterSink(stack)
        self._port = pnic.link.nic              # its NIC's end of the cable

    def sink(self, port: int) -> None:
        """A one-way stream to ``port`` is taken by the tester: the XDP
        program goes on the NIC's queues, the NIC timestamps the stream."""
        if not self.tester.ports:
            self.kernel.netdevs[0].xdp_setup(self.tester)
            self._timestamp()
        self.tester.ports.add(port)

    def _timestamp(self) -> None:
        arrive, stamp, sim = self._port.arrive, self.tester.stamp, self.kernel.sim

        def arrived(frame: bytes) -> None:
            stamp(frame, sim.now)
            arrive(frame)
        self._port.arrive = arrived

    def send(self, frame: bytes) -> None:
        """A raw frame from a packet socket (AF_PACKET), through its driver, now."""
        self.cores[0].sync(self.kernel.sim.now)
        self.kernel.netdevs[0].transmit(frame)

    def receive_time(self) -> float:
        stamp = self.tester.rx_stamp
        return self.kernel.receive_time() if stamp is None else stamp


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
        self.hyperv: dict[str, HyperV] = {}                           # host -> its Hyper-V, on Hyper-V hosts
        self.fabric = Fabric(self.sim, self.ledger, buffer_bytes=scenario.fabric.buffer_kb << 10)   # the hosts' LAN
        self.hosts = {h.name: self._host(h) for h in scenario.hosts}
        self.vms: dict[str, VM] = {xen.dom0.vm.name: xen.dom0.vm for xen in self.xen.values()}
        self.vms |= {hv.root.vm.name: hv.root.vm for hv in self.hyperv.values()}
        self.guests: dict[str, GuestKernel] = {}
        self.models: dict[str, tuple[str, str, str | None]] = {}    # machine -> (model, device, backend)
        self.peers: dict = {}                                          # (host, port) -> its far end
        self.retired: list[VM] = []                                    # VMs that migrated away
        self.migration_links: list[Resource] = []
        self.busy_before: dict[str, float] = {}                       # resources' busy time before the window
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
        override = {nic.bdf: nic.spec.guest_driver for nic in vm.nics if getattr(nic.spec, "guest_driver", None)}
        guest = GuestKernel(spec.name, vm.vcpus[0], vm.cpu_mem, self.sim, drivers, resident_mb=spec.resident_mb or 0,
                            driver_override=override)
        guest.boot()
        if any(nic.device == "xen-netfront" for nic in spec.nics):
            xenbus_probe(guest, self.xen[spec.host])
        if any(nic.device == "netvsc" for nic in spec.nics):
            self._vmbus_bring_up(guest, self.hyperv[spec.host], {mac_bytes(nic.mac): nic.channels
                                                                  for nic in spec.nics if nic.channels})
        for nic in spec.nics:
            if not nic.standby:             # a standby is one interface with its primary (net_failover)
                guest.ifup(mac_bytes(nic.mac), str(nic.ip))
                o = nic.offloads
                guest.ethtool_features(mac_bytes(nic.mac), gso=o.gso, gro=o.gro, tso=o.tso, tx=o.tx, rx=o.rx)
            if nic.interrupt_moderation != "adaptive":
                guest.coalesce(mac_bytes(nic.mac), nic.interrupt_moderation)
        return guest

    def _vmbus_bring_up(self, guest: GuestKernel, hv: HyperV, channels: dict[bytes, int]) -> None:
        """VMBus and each netvsc (with at most ``channels`` by MAC) come up through messages and channel
        events, as the guest's boot waits for them (vmbus_connect, netvsc_probe): events run until every
        synthetic NIC is up, or the bound passes."""
        vmbus_probe(guest, hv, channels)
        until = max(self.sim.now, guest.vcpu.cursor) + VMBUS_BRING_UP_NS     # from where its boot has got to
        while self.sim.pending and self.sim.now < until:
            bus = guest.vmbus
            if bus.offered and len(bus.drivers) == bus.primaries() and all(n.ready for n in bus.drivers):
                return
            self.sim.run_bounded(until, 1)
        why = guest.fault or next((d.failed for d in guest.vmbus.drivers if d.failed), "no answer")
        raise LookupError(f"{guest.name}: its synthetic NIC did not come up ({why})")

    def _host(self, spec) -> Host:
        host = Host(spec.name, spec.cores, self.sim, self.ledger, spec.iommu_page_kb << 10, spec.iotlb_entries,
                    spec.pml)
        for index, nic in enumerate(spec.nics):
            host.nics[nic.name] = PhysicalNic(host, nic.name, index, nic.link_gbps, nic.frame_error_rate)
            self.fabric.connect(host.nics[nic.name].link)
        if spec.hypervisor == "xen":
            self.xen[spec.name] = Xen(host)
        if spec.hypervisor == "hyperv":
            self.hyperv[spec.name] = HyperV(host)
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
        its slot (``slots``: index in ``spec.nics`` -> slot)."""
        on = on or spec.host
        host = self.hosts[on]
        vm = VM(spec.name, host, spec.memory_mb, spec.vcpus, native=spec.bare_metal,
                apicv=self.host_specs[on].posted_interrupts, mem=mem)
        xen = self.xen.get(on)
        if xen is not None:
            xen.create_domain(vm)
        if on in self.hyperv:
            self.hyperv[on].create_partition(vm)
        for j, nic in enumerate(spec.nics):
            slot = None if slots is None else slots.get(j, -1)
            if slot == -1 and registry()[nic.device].pci_id is not None:
                continue                        # a VF the guest gave up before it moved
            try:
                self.plug(vm, nic, slot)
            except (AssignmentError, MemoryError) as exc:
                if nic.model not in ASSIGNED:
                    raise
                raise _Refused(j, str(exc)) from None      # the IOMMU's tables or interrupt entries ran out
        return vm

    # ---- one factory per NIC model ----------------------------------------------------
    def plug(self, vm: VM, nic, slot: int | None = None, hotplug: bool = False):
        """Scenario NIC ``nic`` into ``vm``, wired as its model is on ``vm``'s
        host; ``hotplug``: into the running VM (an assigned function, after a migration)."""
        made = self.FACTORIES[nic.model](self, vm, nic, slot, hotplug)
        if isinstance(made, PciNic):
            made.spec = nic
        return made

    def _emulated(self, vm: VM, nic, slot: int | None, hotplug: bool):
        """QEMU's device model; on a Xen host, dom0's QEMU serving an HVM guest;
        on an ESXi host, the VMM's and the vmkernel's; on a Hyper-V host, the
        VM's worker process in the root."""
        if self._esxi(vm):
            return EsxiNic(vm, nic.device, mac_bytes(nic.mac), slot=slot, variant=nic.variant)
        if vm.host.name in self.hyperv:
            return WorkerNic(vm, nic.device, mac_bytes(nic.mac), slot=slot)
        xen = self.xen.get(vm.host.name)
        if xen is not None:
            return XenHvmNic(vm, nic.device, mac_bytes(nic.mac), xen.ioreq_server(vm), variant=nic.variant)
        return EmulatedNic(vm, nic.device, mac_bytes(nic.mac), slot=slot, variant=nic.variant)

    def _paravirt(self, vm: VM, nic, slot: int | None, hotplug: bool):
        """virtio-net with its backend; on a Xen host, a PV vif (netfront, netback
        in dom0); on an ESXi host, VMXNET3 in the vmkernel; on a Hyper-V host,
        the synthetic NIC (netvsc, netvsp in the root)."""
        if self._esxi(vm):
            return EsxiNic(vm, nic.device, mac_bytes(nic.mac), slot=slot)
        if vm.host.name in self.hyperv:
            return self.hyperv[vm.host.name].add_netvsc(vm, mac_bytes(nic.mac))
        xen = self.xen.get(vm.host.name)
        if xen is not None:
            return xen.add_vif(vm, mac_bytes(nic.mac))
        return VirtioNic(vm, nic.device, mac_bytes(nic.mac), nic.backend, standby=nic.standby, slot=slot,
                         guest_tso4=nic.offloads.gro_hw and nic.offloads.rx)

    def _passthrough(self, vm: VM, nic, slot: int | None, hotplug: bool):
        """The host's port of that name, assigned whole."""
        host = vm.host.name
        pnic = self.hosts[host].nics.get(nic.uplink)
        if hotplug and (pnic is None or pnic.owner is not None):
            raise AssignmentError(f"{host} has no free port {nic.uplink}")
        return PassthroughNic(vm, pnic, mac_bytes(nic.mac), posted=self.host_specs[host].posted_interrupts,
                              hotplug=hotplug, irq_path=self._irq_path(vm))

    def _sriov(self, vm: VM, nic, slot: int | None, hotplug: bool):
        """A VF of the port of that name; hot-plugged: a free VF of any x82599
        port of the host, the port of the same name first."""
        host, posted = vm.host.name, self.host_specs[vm.host.name].posted_interrupts
        if not hotplug:
            return SriovNic(vm, self.sriov[host, nic.uplink], posted=posted, irq_path=self._irq_path(vm))
        ports = sorted((p for (h, _), p in self.sriov.items() if h == host and p.free),
                       key=lambda p: p.pnic.name != nic.uplink)       # the port of the same name first
        if not ports:
            raise AssignmentError(f"{host} has no x82599 port with a free VF")
        return SriovNic(vm, ports[0], posted=posted, config=_vf_config(nic), hotplug=True,
                        irq_path=self._irq_path(vm))

    def _esxi(self, vm: VM) -> bool:
        return self.host_specs[vm.host.name].hypervisor == "esxi"

    def _irq_path(self, vm: VM) -> tuple[str, ...]:
        """What the host pays for an assigned function's remapped interrupt: the vmkernel's path, or VFIO's."""
        return VMK_ASSIGNED_IRQ if self._esxi(vm) else VFIO_IRQ

    FACTORIES = {"emulated": _emulated, "paravirt": _paravirt, "passthrough": _passthrough, "sriov": _sriov}

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
                bridged = tuple(mac_bytes(n.mac) for vm in self.scenario.vms if vm.host == spec.name
                                for n in vm.nics if n.uplink is None)
                ports[spec.name, pnic.name] = SriovPort(host, host.nics[pnic.name], configs,
                                                        self.uplinks.get(spec.name), bridged)
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
        softirq core) and bridges it to the taps; a port with VFs is its PF
        driver's too (``SriovPort`` moves its traffic to the default pool)."""
        pnic = self._free_nic(host.name)
        machine = VM(f"{host.name}-kernel", host, HOST_KERNEL_MB, native=True, dedicated=True)
        spec = next(p for p in self.host_specs[host.name].nics if p.name == pnic.name)
        nic = PassthroughNic(machine, pnic, bytes([0x02, 0xFF, 0, 0, 0, len(self.hosts) & 0xFF]), num_vfs=spec.num_vfs)
        kernel = GuestKernel(machine.name, machine.vcpus[0], machine.mem, self.sim)
        kernel.boot()
        self.vms[machine.name] = machine
        self.models[machine.name] = ("host", "ixgbe", None)
        hypervisor = self.host_specs[host.name].hypervisor
        # Linux's GRO under a Linux bridge (KVM, Xen's dom0); the vmkernel's and the root's coalescing are not modelled
        port = UplinkPort(host, machine.vcpus[0], kernel.netdevs[0], gro=spec.gro and hypervisor in ("kvm", "xen"))
        port.pnic, port.pf = pnic, nic.device
        if hypervisor == "esxi":
            port.switch_event = VMK_VSWITCH         # the physical NIC is the vmkernel vSwitch's uplink
        if hypervisor == "hyperv":
            port.switch_event = VMSWITCH            # the root's NIC driver under the Hyper-V switch
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
        vfs = [] if refused else failover.with_standby(spec, source)

        def switch_over(mem, states: list[bytes]) -> None:
            slots = {j: nic.bdf.device for nic in source.nics for j, n in enumerate(spec.nics) if n is nic.spec}
            target = self._machine(spec, on=to, mem=mem, slots=slots)
            for nic, blob in zip(target.nics, states):
                load_state(nic.device, blob)
            if source.host.name in self.xen:            # the old domain goes before its dom0 runs again
                self.xen[source.host.name].destroy_domain(source)
            if to in self.hyperv:                       # Hyper-V moves the VMBus and SynIC state along
                self._move_partition(source, target, guest)
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
                hotplug = partial(self.plug, hotplug=True)
                report.reason = failover.replug(spec, self.vms[name], guest, hotplug, report) or report.reason

        migration = Migration(source, self.hosts[to], link, switch_over, model=self.models[name][0], on_done=done,
                              platform=save_records(spec, source.host.name in self.xen), **limits)
        self.migration_links.append(link.wire)
        if refused:
            migration.refuse(refused)
        if vfs:
            self.sim.at(at, failover.unplug, vfs, migration)
        else:
            migration.start(at)
        return migration

    def _move_partition(self, source: VM, target: VM, guest: GuestKernel) -> None:
        """The source host's Hyper-V hands the partition's state to the target's and drops it."""
        old, new = self.hyperv[source.host.name], self.hyperv[target.host.name]
        new.restore_partition(target, old, source)
        old.destroy_partition(source)
        if getattr(guest, "vmbus", None) is not None:
            guest.vmbus.move_to(new, target.cpu_mem)

    def incarnations(self, name: str) -> list[VM]:
        """VM ``name`` on each host it ran on, the current one last."""
        return [vm for vm in self.retired if vm.name == name] + [self.vms[name]]

    def _retire(self, vm: VM) -> None:
        """The source VM after the switch-over: its taps go, its threads leave
        their cores, it never runs again."""
        for nic in vm.nics:
            nic.close()
        vm.leave()
        self.retired.append(vm)

    @property
    def machines(self) -> tuple[VM, ...]:
        """Every machine that ran, those that migrated away included."""
        return (*self.retired, *self.vms.values())

    def peer(self, vm: str) -> FarEndHost:
        """The host at the far end of the physical link ``vm`` reaches the wire
        on (its own NIC's, or its host's bridge uplink), one per port as a test
        bed cables one to each port it measures: on that VM NIC's subnet, at
        its highest address no VM and no other far end holds."""
        spec = next(v for v in self.scenario.vms if v.name == vm)
        nic = next((n for n in spec.nics if n.uplink), None)
        if nic is not None:
            port = nic.uplink
        elif spec.host in self.uplinks and spec.nics:
            nic, port = spec.nics[0], self._free_nic(spec.host).name
        else:
            raise LookupError(f"{vm} has no path to a physical link to reach '{WIRE}'")
        key = (spec.host, port)
        if key not in self.peers:
            n = len(self.peers)
            mac = bytes([0x02, 0, 0, 0, n >> 8 & 0xFF, n & 0xFF])
            self.peers[key] = self._far_end_host(f"peer-{spec.host}-{port}", mac, self._far_end_address(nic.ip.network))
        return self.peers[key]

    def _far_end_address(self, net) -> str:
        taken = {n.ip.ip for v in self.scenario.vms for n in v.nics} | {p.stack.ip.ip for p in self.peers.values()}
        address = next((a for a in range(int(net.broadcast_address) - 1, int(net.network_address), -1)
                        if IPv4Address(a) not in taken), None)
        if address is None:
            raise ScenarioError(f"vms: expected a free address on {net} for the host at the far end of the wire, "
                                f"got none")
        return f"{IPv4Address(address)}/{net.prefixlen}"

    def _far_end_host(self, name: str, mac: bytes, address: str) -> FarEndHost:
        """A host of ``cores`` cores whose bare-metal OS owns its 82599 port on
        the LAN, its RX rings ``rx_ring`` descriptors long."""
        spec = self.scenario.peer
        host = Host(name, spec.cores, self.sim, self.ledger)
        pnic = PhysicalNic(host, "pnic0", 0, FAR_END_GBPS)
        self.fabric.connect(pnic.link)
        queues = min(spec.cores, MAX_RSS_INDICES)
        buffers_mb = -(-queues * (spec.rx_ring + TX_RING) * RX_BUFFER >> 20)
        vm = VM("host", host, HOST_KERNEL_MB + buffers_mb, len(host.cores), native=True, dedicated=True)
        PassthroughNic(vm, pnic, mac)
        driver = type(IxgbeDriver.__name__, (IxgbeDriver,), {"RX_RING": spec.rx_ring})
        kernel = GuestKernel(name, vm.vcpus[0], vm.mem, self.sim, drivers={**DRIVERS, (VENDOR_ID, DEVICE_ID): (driver,)})
        kernel.boot()
        stack = kernel.ifup(mac, address)
        moderation = far_end_moderation(self.scenario)
        if moderation != "adaptive":
            kernel.coalesce(mac, moderation)
        return FarEndHost(vm, kernel, stack, pnic)

    def drops(self) -> dict[str, int]:
        """Frames lost on the way, by where they were discarded (a full tap or
        qdisc, a NIC's packet buffer, a device's ring, a guest's stack), as
        each place counted them."""
        return dict(sorted(self.sim.drops.places.items()))

    def device_errors(self) -> dict[str, int]:
        """Each device model's own error counters (what ``ethtool -S`` shows)."""
        out = {f"{nic.device.place}/{name}": count for vm in self.machines for nic in vm.nics
               for name, count in nic.device.errors.items() if count}
        return dict(sorted(out.items()))

    @property
    def resources(self) -> list[Resource]:
        out: list[Resource] = []
        for host in self.hosts.values():
            out += host.cores + host.threads
            for pnic in host.nics.values():
                out += [pnic.engine, pnic.rx_engine, *pnic.link.resources]
        for vm in self.machines:
            out += vm.resources
        for peer in self.peers.values():
            out += peer.resources
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
