"""Pass-through end to end: a VM owns an 82599 behind VT-d; frames reach the
wire peer intact; doorbells and posted interrupts cost no exits; the IOMMU
keeps DMA inside the VM; the device has one owner."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.experiments.runner import run
from iovirt.experiments.world import World
from iovirt.guest.drivers.ixgbe import RX_RING
from iovirt.hypervisor.passthrough import AssignmentError
from iovirt.spec import ixgbe as s
from iovirt.spec import vtd
from iovirt.spec.apic import msi_destination
from iovirt.spec.pci import (PCI_COMMAND, PCI_COMMAND_MASTER, PCI_MSIX_ENTRY, PCI_MSIX_ENTRY_CTRL_MASKBIT,
                              PCI_MSIX_ENTRY_SIZE, PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT)

MAC = "52:54:00:00:00:01"


def scenario(posted: bool = True, page_kb: int = 2048, profile: str = "default", duration_ms: float = 2,
             workloads: list | None = None, extra_vms: list | None = None, vcpus: int = 1):
    return iovirt.Scenario.from_dict({
        "name": "pt", "profile": profile,
        "hosts": [{"name": "host0", "cores": 4, "posted_interrupts": posted, "iommu_page_kb": page_kb,
                   "nics": [{"name": "pnic0", "kind": "x82599", "link_gbps": 10}]}],
        "vms": [{"name": "vm1", "host": "host0", "vcpus": vcpus,
                 "nics": [{"model": "passthrough", "device": "ixgbe", "uplink": "pnic0", "mac": MAC,
                           "ip": "10.0.0.1/24"}]}] + (extra_vms or []),
        "workloads": workloads or [{"type": "udp_stream", "src": "vm1", "dst": "wire", "duration_ms": duration_ms},
                                   {"type": "ping", "src": "vm1", "dst": "wire", "count": 3}],
    })


def flows(result) -> dict:
    return {f["type"]: f for f in result.to_dict()["flows"]}


def test_stream_and_ping_to_the_wire_arrive_intact():
    """Every UDP frame reaches the peer intact and in order; pings are answered."""
    got = flows(run(scenario()))
    assert got["udp_stream"]["sent"] == got["udp_stream"]["delivered"] > 100
    assert got["udp_stream"]["corrupted"] == got["udp_stream"]["out_of_order"] == 0
    assert got["ping"]["delivered"] == got["ping"]["sent"] == 3


def test_a_fast_sender_is_held_to_the_line_rate(tmp_path):
    """With a cheap guest stack the 10 Gbit/s wire, not the CPU, sets the rate:
    close to and never above the line rate of 1500-byte packets."""
    profile = yaml.safe_load((Path(iovirt.__file__).parent / "profiles" / "default.yaml").read_text())
    profile["costs"]["guest_stack"]["value"] /= 4
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump(profile))
    stream = [{"type": "udp_stream", "src": "vm1", "dst": "wire", "duration_ms": 2}]
    result = run(scenario(profile=str(tmp_path / "fast.yaml"), workloads=stream))
    line_pps = 10e9 / ((1514 + 4 + 8 + 12) * 8)        # frame + FCS + preamble + gap
    pps = flows(result)["udp_stream"]["pps"]
    assert 0.9 * line_pps < pps <= 1.001 * line_pps
    wire = result.resources.set_index("name").loc["host0/pnic0/wire/tx", "utilization"]
    assert wire > 0.9


def test_doorbells_never_exit_and_posted_interrupts_neither():
    """TDT/RDT writes go straight to BAR0; with posted interrupts a running vCPU
    takes its interrupts without exits, without them each interrupt exits."""
    posted = flows(run(scenario(posted=True)))["udp_stream"]["events_per_packet"]
    remapped = flows(run(scenario(posted=False)))["udp_stream"]["events_per_packet"]
    assert posted.get("mmio_emulate", 0) == remapped.get("mmio_emulate", 0) == 0
    assert posted.get("posted_interrupt", 0) > 0 and posted.get("eoi_exit", 0) == 0
    assert remapped.get("vm_exit", 0) >= remapped["interrupt"] > 0
    assert remapped.get("eoi_exit", 0) > 0
    assert posted.get("vm_exit", 0) < remapped["vm_exit"]


def test_each_vector_posts_to_the_descriptor_of_the_vcpu_it_names():
    """KVM keeps a posted-interrupt descriptor per vCPU: the IRTE behind each
    MSI-X entry the guest aimed at a vCPU names that vCPU's descriptor, whose
    NDST is the core the vCPU runs on."""
    world = World(scenario(vcpus=2))
    vm, iommu = world.machines[0], world.hosts["host0"].iommu
    nic, mem = vm.nics[0], iommu.unit.mem.buf
    aimed = set()
    for entry in range(nic.vectors):
        address, _, _, control = PCI_MSIX_ENTRY.unpack_from(nic.fn.msix.table, entry * PCI_MSIX_ENTRY_SIZE)
        if control & PCI_MSIX_ENTRY_CTRL_MASKBIT or not address:
            continue
        irte = vtd.IRTE_POSTED.unpack_from(mem, iommu.unit.irta + (nic.irte_base + entry) * vtd.IRTE.size)
        assert irte[0] & vtd.IRTE_IM
        pda = irte[2] | irte[5] << 32
        vcpu = vm.vcpus[msi_destination(address)]
        assert vtd.PI_DESC.unpack_from(mem, pda)[-1] == world.hosts["host0"].cores.index(vcpu.core)
        aimed.add((vcpu.index, pda))
    assert {v for v, _ in aimed} == {0, 1} and len({pda for _, pda in aimed}) == 2


def test_small_iommu_pages_miss_the_iotlb():
    """4 KiB mappings spread the rings and buffers over more pages than the IOTLB
    holds: misses appear and DMA takes longer than with 2 MiB mappings."""
    big = run(scenario(page_kb=2048))
    small = run(scenario(page_kb=4))
    big_flow, small_flow = flows(big)["udp_stream"], flows(small)["udp_stream"]
    assert small_flow["events_per_packet"].get("iotlb_miss", 0) > big_flow["events_per_packet"].get("iotlb_miss", 0)
    engine = "host0/pnic0/engine"
    per_frame = [r.resources.set_index("name").loc[engine, "busy_s"] / f["delivered"]
                 for r, f in ((big, big_flow), (small, small_flow))]
    assert per_frame[1] > per_frame[0]


def test_a_second_owner_is_refused_naming_address_and_both_vms():
    """Assigning the port to a second VM fails in validation, and in the hypervisor."""
    vm2 = {"name": "vm2", "host": "host0",
           "nics": [{"model": "passthrough", "device": "ixgbe", "uplink": "pnic0", "mac": "52:54:00:00:00:02",
                     "ip": "10.0.0.2/24"}]}
    with pytest.raises(iovirt.ScenarioError, match=r"0000:03:00\.0.*vm1.*vm2"):
        scenario(extra_vms=[vm2])
    world = World(scenario())
    with pytest.raises(AssignmentError, match=r"0000:03:00\.0 \(pnic0\) is assigned to vm1; cannot assign it to vm2"):
        world.hosts["host0"].nics["pnic0"].claim("vm2")


def _hostile_world():
    neighbour = {"name": "vm2", "host": "host0", "nics": [
        {"model": "paravirt", "device": "virtio-net", "mac": "52:54:00:00:00:02", "ip": "10.0.1.2/24"}]}
    world = World(scenario(extra_vms=[neighbour]))
    world.settle()
    return world


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(addr=st.one_of(st.integers(256 << 20, 2**48 - 1), st.integers(2**48, 2**64 - 1)))
def test_dma_outside_the_vm_faults_and_writes_nothing(addr):
    """RX buffers pointed outside the VM's memory: the IOMMU records a fault, no
    byte lands in the other VM or the host, the VM's own memory is untouched but
    for the ring."""
    world = _hostile_world()
    vm1, vm2 = world.vms["vm1"], world.vms["vm2"]
    driver = world.guests["vm1"].netdevs[0]
    for slot in range(RX_RING):                      # a hostile driver aims every RX buffer at addr
        world.guests["vm1"].mem.store(s.RX_DESC.struct, driver.rx_ring + 16 * slot, addr, 0)
    neighbour, own = bytes(vm2.mem.buf), bytearray(vm1.mem.buf)
    peer = world.peer("vm1")
    frame = bytes.fromhex(MAC.replace(":", "")) + peer.mac + b"\x08\x00" + bytes(100)
    peer.send(frame)
    world.sim.run(until=world.sim.now + 200_000)
    unit = world.hosts["host0"].iommu.unit
    assert unit.faults and all(f.is_write for f in unit.faults)
    assert bytes(vm2.mem.buf) == neighbour
    ring = slice(driver.rx_ring, driver.rx_ring + 16 * RX_RING)
    after = bytearray(vm1.mem.buf)
    after[ring] = own[ring]
    assert after == own


def test_without_bus_master_the_nic_reaches_no_memory():
    """The guest clears PCI_COMMAND_MASTER (pci_disable_device): a frame from the wire is not
    written anywhere, the IOMMU never sees the request, the NIC counts it and sets Received
    Master Abort; setting the bit again brings reception back."""
    world = _hostile_world()
    guest, vm1 = world.guests["vm1"], world.vms["vm1"]
    driver = guest.netdevs[0]
    peer = world.peer("vm1")
    frame = bytes.fromhex(MAC.replace(":", "")) + peer.mac + b"\x08\x00" + bytes(100)
    guest.pci.disable(driver.info)
    before = bytes(vm1.mem.buf)
    peer.send(frame)
    world.sim.run(until=world.sim.now + 200_000)
    nic = vm1.nics[0].device
    assert bytes(vm1.mem.buf) == before and not world.hosts["host0"].iommu.unit.faults
    assert sum(nic.errors.values()) > 0 and nic.pci.config.get(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT
    guest.pci.config_write(driver.info.bdf, PCI_COMMAND, 2, guest.pci.config_read(driver.info.bdf, PCI_COMMAND, 2)
                           | PCI_COMMAND_MASTER)
    peer.send(frame)
    world.sim.run(until=world.sim.now + 200_000)
    assert bytes(vm1.mem.buf) != before


def many_ports(ports: int, vms: int):
    """``ports`` ports on host0; the first ``vms`` each passed through to a VM of its own."""
    return iovirt.Scenario.from_dict({
        "name": "pt-many", "profile": "default",
        "hosts": [{"name": "host0", "cores": 4, "nics": [{"name": f"pnic{i}"} for i in range(ports)]}],
        "vms": [{"name": f"vm{i}", "host": "host0", "memory_mb": 32,
                 "nics": [{"model": "passthrough", "device": "ixgbe", "uplink": f"pnic{i}",
                           "mac": f"52:54:00:00:01:{i:02x}", "ip": f"10.0.{i}.1/24"}]} for i in range(vms)],
        "workloads": [{"type": "ping", "src": "vm0", "dst": "wire", "count": 2, "duration_ms": 1}],
    }, "pt-many.yaml")


def test_seventeen_passed_through_ports_get_their_interrupt_entries():
    """17 ports x 64 MSI-X vectors is more than 1,024 IRTEs: the host's table is the 65,536 entries
    VT-d allows (IRTA.S = 15) and Linux sets up, so every port's vectors have one."""
    world = World(many_ports(17, 17))
    unit = world.hosts["host0"].iommu.unit
    assert unit.irt_entries == 1 << 16
    assert world.hosts["host0"].iommu.next_irte == 17 * s.MSIX_VECTORS
    assert flows(run(many_ports(17, 17)))["ping"]["delivered"] == 2


def test_a_host_out_of_interrupt_entries_is_a_one_line_error(monkeypatch):
    """Should a host run out of IRTEs all the same, the VM and NIC that found none are named."""
    from iovirt.experiments.scenario import ScenarioError
    from iovirt.hypervisor import passthrough

    monkeypatch.setattr(passthrough, "IRT_ENTRIES", 128)          # room for two ports' 64 vectors
    with pytest.raises(ScenarioError) as err:
        World(many_ports(3, 3))
    assert str(err.value) == ("pt-many.yaml: vms[2].nics[0]: cannot give vm2 its ixgbe: host0's interrupt "
                              "remapping table is full (128 entries, 128 in use): no 64 entries for 0000:05:00.0")
