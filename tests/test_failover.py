"""PCI hot plug of assigned functions and the guest's net_failover bond: a VM
whose VF (primary) and virtio-net (standby, VIRTIO_NET_F_STANDBY) share a MAC
keeps sending while the VF is unplugged, sends through a hot-plugged VF again,
and the host gets back everything the VF held."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.experiments.runner import begin, finish
from iovirt.experiments.world import World, mac_bytes
from iovirt.guest.drivers.failover import FailoverMaster
from iovirt.guest.drivers.virtio_net import VirtioNetDriver
from iovirt.guest.alloc import OutOfGuestMemory
from iovirt.mem.guest_memory import PAGE_SIZE
from iovirt.hypervisor.ixgbe_pf import VfConfig
from iovirt.hypervisor.passthrough import AssignedFunction, AssignmentError, PassthroughNic
from iovirt.hypervisor.sriov import SriovNic
from iovirt.spec import acpi as a
from iovirt.spec import ixgbevf as vs
from iovirt.spec import virtio as v
from iovirt.spec import vtd

MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"
PEER = "10.0.0.254"                 # the wire peer: the last host address of 10.0.0.0/24
MS = 1_000_000


def vf(mac: str = MAC1, ip: str = "10.0.0.1/24") -> dict:
    return {"model": "sriov", "device": "ixgbevf", "uplink": "pnic0", "mac": mac, "ip": ip}


def standby(mac: str = MAC1, ip: str = "10.0.0.1/24", **more) -> dict:
    return {"model": "paravirt", "device": "virtio-net", "backend": "vhost-net", "mac": mac, "ip": ip,
            "standby": True, **more}


def vm(name: str, nics: list[dict]) -> dict:
    return {"name": name, "host": "host0", "memory_mb": 64, "nics": nics}


def scenario(vms: list[dict], workloads: list[dict] = (), num_vfs: int = 2) -> iovirt.Scenario:
    """host0: pnic0 (SR-IOV, or passed through with num_vfs 0), pnic1 bridged by the host for the
    virtio-net taps; both cabled to the one fabric, where the wire peer is."""
    pnic0 = {"name": "pnic0"} | ({"num_vfs": num_vfs} if num_vfs else {})
    return iovirt.Scenario.from_dict({
        "name": "failover", "hosts": [{"name": "host0", "cores": 4, "posted_interrupts": True,
                                        "nics": [pnic0, {"name": "pnic1"}]}],
        "vms": vms, "workloads": list(workloads)})


def stream(ms: float = 40, rate: float = 100_000) -> dict:
    return {"type": "udp_stream", "src": "vm1", "dst": "wire", "duration_ms": ms, "rate_pps": rate}


class Run:
    """A world with its workloads started; ``at(ms)`` runs it to that time after the start."""

    def __init__(self, s: iovirt.Scenario) -> None:
        self.world = World(s)
        self.start, self.stop, self.flows = begin(self.world)
        self.sim = self.world.sim

    def at(self, ms: float) -> None:
        self.sim.run(until=self.start + ms * MS)

    def assigned(self, vm: str = "vm1") -> AssignedFunction:
        return next(nic for nic in self.world.vms[vm].nics if isinstance(nic, AssignedFunction))

    def unplug(self, vm: str = "vm1") -> list[float]:
        """Unplug the VM's assigned function; the list fills when it is done."""
        done: list[float] = []
        self.assigned(vm).unplug(on_done=lambda: done.append(self.sim.now))
        return done

    def hotplug_vf(self, vm: str, mac: str, slot: int | None = None) -> SriovNic:
        return SriovNic(self.world.vms[vm], self.world.sriov["host0", "pnic0"], posted=True,
                        config=VfConfig(mac_bytes(mac)), hotplug=True, slot=slot)

    def flow(self) -> dict:
        return finish(self.world, self.start, self.stop, self.flows, 0.0).to_dict()["flows"][0]


def master_of(run: Run, vm: str = "vm1") -> FailoverMaster:
    (master,) = run.world.guests[vm].netdevs
    return master


def test_the_failover_pair_is_one_interface_over_two_slaves():
    """The guest sees one netdev, the failover master, over the VF (primary) and the virtio-net
    (standby); only a NIC configured as standby offers VIRTIO_NET_F_STANDBY."""
    world = World(scenario([vm("vm1", [vf(), standby()]),
                            vm("vm2", [standby(MAC2, "10.0.0.2/24", standby=False)])]))
    master, (plain,) = world.guests["vm1"].netdevs[0], world.guests["vm2"].netdevs
    assert isinstance(master, FailoverMaster) and master.mac == mac_bytes(MAC1)
    assert master.primary.info.device == vs.DEVICE_ID and isinstance(master.standby, VirtioNetDriver)
    assert master.standby.standby and master.stack is world.guests["vm1"].interfaces[mac_bytes(MAC1)]
    assert isinstance(plain, VirtioNetDriver) and not plain.features >> v.VIRTIO_NET_F_STANDBY & 1


def test_a_stream_moves_to_the_standby_while_the_vf_is_away_and_back_to_a_new_one():
    """UDP to the wire: through the VF, over virtio-net once it is unplugged, through a hot-plugged
    VF again; below the line rate the NIC has fetched whatever the VF took, so no frame is lost,
    and none is reordered."""
    run = Run(scenario([vm("vm1", [vf(), standby()])], [stream()]))
    master = master_of(run)
    run.at(2)
    assert master.stats["tx_primary"] > 0 and master.stats["tx_standby"] == 0
    done = run.unplug()
    run.at(4)
    assert done and master.primary is None and master.stats["failovers"] == 1
    over_vf, over_standby = master.stats["tx_primary"], master.stats["tx_standby"]
    assert over_standby > 0
    run.hotplug_vf("vm1", MAC1)
    run.at(30)
    assert master.primary is not None and master.stats["failbacks"] == 1
    assert master.stats["tx_primary"] > over_vf and master.stats["tx_standby"] == over_standby
    flow = run.flow()
    assert flow["delivered"] == flow["sent"] > 0
    assert flow["corrupted"] == flow["out_of_order"] == 0


def test_no_napi_poll_outlives_the_removed_driver():
    """A poll scheduled just before the unplug does not run after the eject (napi_disable): no access to the gone BAR."""
    run = Run(scenario([vm("vm1", [vf(), standby()])], [stream(ms=2000, rate=20000)]))
    run.unplug()
    run.at(1)
    assert run.world.vms["vm1"].stats["unassigned_access"] == 0 and master_of(run).primary is None


def test_the_host_gets_back_everything_the_vf_held():
    """Once ejected: the VM's slot is empty and its BARs unmapped, the VF is free, its IRTEs are
    cleared and handed out again, the VM's IOMMU domain is gone; a new VF lands in the same slot."""
    run = Run(scenario([vm("vm1", [vf(), standby()])]))
    world, port = run.world, run.world.sriov["host0", "pnic0"]
    nic, iommu = run.assigned(), world.hosts["host0"].iommu
    slot, irtes, bar0 = nic.bdf.device, nic.irte_base, master_of(run).primary.bar
    run.unplug()
    run.at(1)
    assert world.vms["vm1"].pci.lookup(slot) is None and world.vms["vm1"].mmio.lookup(bar0) is None
    assert port.free == [0, 1] and "vm1" not in iommu.domains
    assert iommu.unit.remap_msi(nic.requester, *vtd.remappable_msi(irtes)) is None
    again = run.hotplug_vf("vm1", MAC1)
    run.at(20)
    assert again.bdf.device == slot and again.irte_base == irtes and "vm1" in iommu.domains


def test_a_vf_is_hot_plugged_into_the_slot_asked_for():
    """device_add addr=: the VF lands in the slot named and the guest probes it there; a taken
    slot is refused before the host gives up a VF."""
    run = Run(scenario([vm("vm1", [vf(), standby()])]))
    port = run.world.sriov["host0", "pnic0"]
    run.unplug()
    run.at(1)
    (virtio,) = run.world.vms["vm1"].nics
    with pytest.raises(AssignmentError, match=f"vm1: no free slot {virtio.bdf.device:#x} on bus 0"):
        run.hotplug_vf("vm1", MAC1, slot=virtio.bdf.device)
    assert port.free == [0, 1]
    nic = run.hotplug_vf("vm1", MAC1, slot=9)
    run.at(20)
    assert nic.bdf.device == 9 and master_of(run).primary.info.bdf == nic.bdf


def test_replies_come_back_over_whichever_slave_is_up():
    """Pings to the wire: answered through the VF, then through the standby once the guest's
    own frames over it have moved its MAC in the fabric; at most the one in flight is lost."""
    ping = {"type": "ping", "src": "vm1", "dst": "wire", "count": 20, "duration_ms": 10}
    run = Run(scenario([vm("vm1", [vf(), standby()])], [ping]))
    master = master_of(run)
    run.at(3)
    assert master.stats["rx_primary"] > 0 and master.stats["rx_standby"] == 0
    run.unplug()
    flow = run.flow()
    assert master.stats["rx_standby"] > 0
    assert flow["delivered"] >= flow["sent"] - 1 and flow["corrupted"] == 0


def test_a_vm_without_standby_loses_its_network_with_its_vf_until_one_comes_back():
    """A VF alone: after the unplug its interface has no device; what it sends is dropped in the
    guest kernel and counted, nothing arrives; a VF hot-plugged with its MAC carries it again."""
    run = Run(scenario([vm("vm1", [vf()])], [stream(ms=30)]))
    run.at(2)
    run.unplug()
    run.at(4)
    delivered, dropped = run.flows[0].delivered, run.world.guests["vm1"].stats["tx_no_device"]
    assert dropped > 0
    run.hotplug_vf("vm1", MAC1)
    flow = run.flow()
    assert flow["delivered"] > delivered
    assert flow["sent"] - flow["delivered"] == run.world.guests["vm1"].stats["tx_no_device"] >= dropped


def test_a_released_vf_goes_to_another_vm_and_none_is_taken_twice():
    """With one VF: a second VM cannot have one while the first holds it; once ejected, the
    second VM hot-plugs it (with its own MAC) and reaches the wire through it."""
    run = Run(scenario([vm("vm1", [vf(), standby()]), vm("vm2", [])], num_vfs=1))
    with pytest.raises(AssignmentError, match="every VF is assigned; none left for vm2"):
        run.hotplug_vf("vm2", MAC2)
    run.unplug()
    run.at(1)
    nic = run.hotplug_vf("vm2", MAC2)
    run.at(20)
    assert nic.index == 0
    assert_reaches_the_wire(run, "vm2", MAC2)


def assert_reaches_the_wire(run: Run, vm: str, mac: str) -> None:
    """Bring the VM's new NIC up as 10.0.0.2 and ping the wire peer (vm1's, on the same fabric)."""
    run.world.peer("vm1")
    guest = run.world.guests[vm]
    stack = guest.ifup(mac_bytes(mac), "10.0.0.2/24")
    replies = []
    guest.run_soon(lambda: stack.ping(PEER, 7, 1, b"after hot plug", lambda *r: replies.append(r)))
    run.at(30)
    assert replies == [(7, 1, b"after hot plug")]


def test_a_passed_through_port_unplugs_and_goes_to_another_vm():
    """A whole 82599 unplugs the same way: its VM loses the network (counted), the port is free
    (a second owner was refused before), and hot-plugged into another VM it carries its traffic."""
    pt = {"model": "passthrough", "device": "ixgbe", "uplink": "pnic0", "mac": MAC1, "ip": "10.0.0.1/24"}
    run = Run(scenario([vm("vm1", [pt]), vm("vm2", [])], [stream(ms=6)], num_vfs=0))
    pnic, vm2 = run.world.hosts["host0"].nics["pnic0"], run.world.vms["vm2"]
    with pytest.raises(AssignmentError, match="is assigned to vm1"):
        PassthroughNic(vm2, pnic, mac_bytes(MAC2), hotplug=True)
    run.at(2)
    done = run.unplug()
    run.at(3)
    assert done and pnic.owner is None and "vm1" not in run.world.hosts["host0"].iommu.domains
    PassthroughNic(vm2, pnic, mac_bytes(MAC2), posted=True, hotplug=True)
    run.at(10)
    assert_reaches_the_wire(run, "vm2", MAC2)
    flow = run.flow()
    assert flow["sent"] - flow["delivered"] == run.world.guests["vm1"].stats["tx_no_device"] > 0


def test_unplugging_twice_is_refused():
    """A second unplug while the guest has not ejected yet, or after, is refused, naming the function."""
    run = Run(scenario([vm("vm1", [vf(), standby()])]))
    nic = run.assigned()
    nic.unplug()
    with pytest.raises(AssignmentError, match="already being unplugged"):
        nic.unplug()
    run.at(1)
    with pytest.raises(AssignmentError, match=r"ixgbevf at 00:03\.0 of vm1: already unplugged"):
        nic.unplug()


def test_a_guest_that_never_ejects_keeps_its_vf():
    """A guest that acknowledges the event but never ejects: the VF stays its (and keeps
    carrying its frames); the host takes nothing back."""
    run = Run(scenario([vm("vm1", [vf(), standby()])], [stream(ms=6)]))
    vcpu = run.world.vms["vm1"].vcpus[0]

    def ignore() -> None:
        vcpu.pio_write(a.GPE0_BLK, 2, a.GPE_PCI_HOTPLUG)
        vcpu.eoi(a.SCI_IRQ)
    vcpu.set_irq_handler(a.SCI_IRQ, ignore)
    run.at(1)
    done = run.unplug()
    run.at(5)
    master = master_of(run)
    assert not done and master.primary is not None and master.stats["tx_standby"] == 0
    assert run.world.sriov["host0", "pnic0"].free == [1] and run.assigned().unplugging
    assert run.flow()["delivered"] == run.flows[0].sent


def test_unplug_costs_an_sci_and_port_io_only():
    """The unplug: QEMU injects one SCI; the guest's handler, ACPI method and PCI teardown are
    port I/O exits; stopping the VF goes straight to its BAR (no MMIO emulation).  The hot plug
    also traps the MSI-X table writes, four per vector."""
    run = Run(scenario([vm("vm1", [vf(), standby()])]))
    acct = run.world.ledger.accounts["vm1"]
    run.at(1)
    before = dict(acct)
    run.unplug()
    run.at(2)
    spent = {k: acct[k] - before.get(k, 0) for k in acct}
    assert spent["interrupt_inject"] == 1 and spent["pio_emulate"] > 0 and spent.get("mmio_emulate", 0) == 0
    before = dict(acct)
    run.hotplug_vf("vm1", MAC1)
    run.at(30)
    spent = {k: acct[k] - before.get(k, 0) for k in acct}
    assert spent["mmio_emulate"] == 4 * len(master_of(run).primary.vectors)


def test_repeated_unplug_and_hot_plug_reuse_the_host_resources():
    """Three unplug / hot-plug cycles: each moves the stream and back, nothing is lost, and the
    IRTEs and the slot come back to the same place each time."""
    run = Run(scenario([vm("vm1", [vf(), standby()])], [stream(ms=100, rate=20_000)]))
    master, iommu = master_of(run), run.world.hosts["host0"].iommu
    irtes = run.assigned().irte_base
    for cycle in range(3):
        run.at(1 + 30 * cycle)
        run.unplug()
        run.at(3 + 30 * cycle)
        nic = run.hotplug_vf("vm1", MAC1)
        assert (nic.bdf.device, nic.irte_base) == (3, irtes)
    flow = run.flow()
    assert master.stats["failovers"] == master.stats["failbacks"] == 3 and iommu.next_irte == vs.MSIX_VECTORS
    assert flow["delivered"] == flow["sent"] and flow["out_of_order"] == 0


REGISTERS = [a.GPE0_BLK + r.offset for r in a.GPE0] + [a.PCIHP_ADDR + r.offset for r in a.PCIHP]
PORTS = st.one_of(st.sampled_from(REGISTERS), st.integers(a.PCIHP_ADDR, a.PCIHP_ADDR + a.PCIHP_LEN - 1),
                  st.integers(a.GPE0_BLK, a.GPE0_BLK + a.GPE0_BLK_LEN - 1))
VALUES = st.one_of(st.sampled_from([1 << 3, 1 << 4, a.GPE_PCI_HOTPLUG]), st.integers(0, 0xFFFFFFFF))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(PORTS, st.sampled_from([1, 2, 4]), VALUES, st.booleans()), max_size=12))
def test_a_hostile_guest_on_the_hot_plug_registers_can_only_eject_its_own_vf(accesses):
    """Any port I/O to the GPE block and the hot-plug registers, traffic going on: nothing raises;
    the virtio-net (not removable) stays; if the guest ejected the VF's slot, the host has it back."""
    run = Run(scenario([vm("vm1", [vf(), standby()])], [stream(ms=2, rate=20_000)]))
    vcpu, machine = run.world.vms["vm1"].vcpus[0], run.world.vms["vm1"]
    for port, size, value, write in accesses:
        if write:
            vcpu.pio_write(port, size, value)
        else:
            vcpu.pio_read(port, size)
    run.at(3)
    kinds = [type(nic).__name__ for nic in machine.nics]
    assert "VirtioNic" in kinds
    vf_free = run.world.sriov["host0", "pnic0"].free == [0, 1]
    assert vf_free == ("SriovNic" not in kinds)


@pytest.mark.parametrize("change, where, message", [
    ({"ip": "10.0.0.9/24"}, "vms[0].nics[1].ip", "expected 10.0.0.1/24 (its primary's"),
    ({"mac": "52:54:00:00:00:09"}, "vms[0].nics[1].mac", "expected the MAC of an sriov or passthrough NIC of vm1"),
    ({"model": "emulated", "device": "e1000", "backend": None},
     "vms[0].nics[1].standby", "expected standby only on a paravirt virtio-net NIC"),
])
def test_a_standby_must_pair_with_an_sriov_nic_of_its_vm(change, where, message):
    """A standby is a virtio-net with the MAC and address of an sriov NIC of the same VM."""
    with pytest.raises(iovirt.ScenarioError, match=re.escape(f"{where}: {message}")):
        scenario([vm("vm1", [vf(), standby(**change)])])


def test_only_a_standby_may_repeat_a_mac():
    """Two NICs sharing a MAC is still an error unless one is the other's standby; one standby per MAC."""
    with pytest.raises(iovirt.ScenarioError, match=r"vms\[0\].nics\[1\].mac: expected a unique MAC"):
        scenario([vm("vm1", [vf(), vf(ip="10.0.0.1/24") | {"ip": "10.0.0.3/24"}])])
    with pytest.raises(iovirt.ScenarioError, match=r"vms\[0\].nics\[2\].mac: expected a unique standby MAC"):
        scenario([vm("vm1", [vf(), standby(), standby()])])


def test_hot_plug_cycles_give_back_what_each_probe_took():
    """Forty unplug / hot-plug cycles with 4 KiB IOMMU pages: the guest frees the VF driver's
    IDT vectors and DMA memory at its remove() and the VF's BAR ranges at the eject, the host
    frees the VM's domain page tables when its last function leaves; each new VF gets the
    same vectors, BARs, guest memory and table pages, and the stream still runs over it at the end."""
    s = scenario([vm("vm1", [vf(), standby()])], [stream(ms=1000, rate=2_000)])
    s.hosts[0].iommu_page_kb = 4
    run = Run(s)
    guest, iommu = run.world.guests["vm1"], run.world.hosts["host0"].iommu.unit
    seen = []
    for cycle in range(40):
        run.at(1 + 20 * cycle)
        run.unplug()
        run.at(3 + 20 * cycle)
        run.hotplug_vf("vm1", MAC1)
        run.at(20 + 20 * cycle)
        primary = master_of(run).primary
        seen.append((sorted(primary.vectors.values()), primary.info.bars, guest.alloc.next, iommu._brk))
    assert seen[-1] == seen[0] and guest.stats["pci_hotplug_failed"] == 0
    assert master_of(run).stats["failbacks"] == 40
    sent = master_of(run).stats["tx_primary"]
    run.at(900)
    assert master_of(run).stats["tx_primary"] > sent


def test_a_probe_that_runs_out_of_memory_gives_back_what_it_took():
    """The guest has DMA memory for the hot-plugged VF's TX ring but not its RX ring: the probe
    fails (counted), the function is left disabled, and its vectors and the memory it took
    come back (devres); once memory is free again the next VF probes with the same vectors."""
    run = Run(scenario([vm("vm1", [vf(), standby()])], [stream(ms=200, rate=2_000)]))
    guest, master = run.world.guests["vm1"], master_of(run)
    vectors = sorted(master.primary.vectors.values())
    run.at(1)
    run.unplug()
    run.at(3)
    guest.alloc.alloc(3 << 19, PAGE_SIZE, "spare")                 # 1.5 MiB: TX ring and buffers fit, RX does not
    with pytest.raises(OutOfGuestMemory):
        while True:
            guest.alloc.alloc(64 << 10, PAGE_SIZE, "ballast")
    guest.alloc.release("spare")
    nic = run.hotplug_vf("vm1", MAC1)
    run.at(20)
    assert guest.stats["pci_hotplug_failed"] == 1 and master.primary is None
    assert nic.bdf not in guest.alloc.owned and not nic.fn.bus_master
    guest.alloc.release("ballast")
    run.unplug()
    run.at(25)
    run.hotplug_vf("vm1", MAC1)
    run.at(45)
    assert master.primary is not None and sorted(master.primary.vectors.values()) == vectors
    assert master.stats["failbacks"] == 1
