"""VMware's other virtual NICs on an ESXi host: the E1000 that is an 82545EM,
Flexible (a Vlance that the guest's vmxnet driver morphs into VMXNET),
Enhanced VMXNET (VMXNET2), and the assigned devices (DirectPath I/O, SR-IOV)
with the vmkernel's interrupt path.  Everything is real iovirt code."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovirt.experiments.migrate import matrix
from iovirt.experiments.runner import begin, finish
from iovirt.experiments.scenario import Scenario, ScenarioError
from iovirt.experiments.world import World
from iovirt.guest.drivers.pcnet import PCNetDriver
from iovirt.guest.drivers.vmxnet import VmxnetDriver
from iovirt.guest.kernel import DRIVERS
from iovirt.spec import e1000 as e
from iovirt.spec import vmxnet as x
from iovirt.spec.pci import PCI_DEVICE_ID
from iovirt.spec.pcnet import CSR0_STOP as PCNET_CSR0_STOP
from test_hostile import ping, scenario, world
from test_migration import migrate
from test_migration import scenario as migration_scenario

E1000 = {"model": "emulated", "device": "e1000"}


def _config_device_id(w: World, vm: str = "vm1") -> int:
    guest = w.guests[vm]
    return guest.pci.config_read(guest.netdevs[0].info.bdf, PCI_DEVICE_ID, 2)


def _one_nic(nic: dict, hypervisor: str = "esxi") -> Scenario:
    return Scenario.from_dict({"name": "x", "hosts": [{"name": "h", "cores": 2, "hypervisor": hypervisor}],
                               "vms": [{"name": "vm1", "host": "h", "nics": [
                                   {**nic, "mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24"}]}]})


# ---- E1000: the 82545EM on ESXi -------------------------------------------------------
@pytest.mark.parametrize("hypervisor, device_id", [("esxi", e.DEVICE_ID_82545EM), ("kvm", e.DEVICE_ID)])
def test_an_e1000_is_the_82545em_on_esxi_and_the_82540em_elsewhere(hypervisor, device_id):
    """The guest reads the chip's ID from configuration space and its EEPROM; the driver binds both and talks."""
    w = world(E1000, hypervisor=hypervisor)
    drv = w.guests["vm1"].netdevs[0]
    assert _config_device_id(w) == device_id
    assert drv._eeprom_read(e.EEPROM_DEVICE_ID) == device_id and drv._eeprom_read(e.EEPROM_VENDOR_ID) == e.VENDOR_ID
    assert len(ping(w, "vm1", "vm2")) == 3


def test_a_scenario_picks_the_82540em_on_esxi_and_is_told_a_variant_no_device_has():
    assert _one_nic({**E1000, "variant": "82540em"}).vms[0].nics[0].variant == "82540em"
    assert _one_nic(E1000).vms[0].nics[0].variant == "82545em"
    assert _one_nic(E1000, "kvm").vms[0].nics[0].variant == "82540em"
    with pytest.raises(ScenarioError, match=r"vms\[0\]\.nics\[0\]\.variant: expected one of 82540em, 82545em "
                                            r"for e1000, got '82544gc'"):
        _one_nic({**E1000, "variant": "82544gc"})
    with pytest.raises(ScenarioError, match=r"nics\[0\]\.variant: expected no variant for vmxnet3"):
        _one_nic({"model": "paravirt", "device": "vmxnet3", "variant": "82545em"})


def test_the_e1000_driver_binds_both_chips():
    assert all(any(d.__name__ == "E1000Driver" for d in DRIVERS[e.VENDOR_ID, dev]) for dev in e.VARIANTS.values())


# ---- Flexible: a Vlance the vmxnet driver morphs; VMXNET2 ------------------------------------
FLEXIBLE = {"model": "paravirt", "device": "flexible"}
VMXNET2 = {"model": "paravirt", "device": "vmxnet2"}


def _no_vmxnet() -> dict:
    """A guest's drivers without VMware's vmxnet (no VMware Tools)."""
    return {ids: tuple(d for d in drivers if d is not VmxnetDriver) for ids, drivers in DRIVERS.items()
            if any(d is not VmxnetDriver for d in drivers)}


def test_the_vmxnet_driver_morphs_a_flexible_adapter_into_vmxnet():
    w = world(FLEXIBLE, hypervisor="esxi")
    dev, drv = w.vms["vm1"].nics[0].device, w.guests["vm1"].netdevs[0]
    assert isinstance(drv, VmxnetDriver) and drv.morphed and dev.morphed and dev.vx_enabled
    assert (drv.num_rx, drv.num_tx, drv.jumbo, drv.tso) == (x.DEFAULT_NUM_RX_BUFFERS, x.DEFAULT_NUM_TX_BUFFERS,
                                                             False, False)
    w.ledger.reset()
    assert len(ping(w, "vm1", "vm2", count=5)) == 5
    assert dev.csr[0] == PCNET_CSR0_STOP                      # the Vlance side never ran
    assert w.ledger.events["pio_emulate"] > 0 and w.ledger.events["vmk_vswitch"] > 0


@pytest.mark.parametrize("how", ["no vmxnet driver", "guest_driver: pcnet"])
def test_a_guest_without_the_vmxnet_driver_keeps_the_vlance(how):
    """No VMware Tools, or a NIC whose guest_driver keeps pcnet32: the adapter stays a Vlance and works as one."""
    if how == "no vmxnet driver":
        w = World(scenario(FLEXIBLE, hypervisor="esxi"), guest_drivers=_no_vmxnet())
    else:
        w = World(scenario({**FLEXIBLE, "guest_driver": "pcnet"}, hypervisor="esxi"))
    w.settle()
    dev, drv = w.vms["vm1"].nics[0].device, w.guests["vm1"].netdevs[0]
    assert isinstance(drv, PCNetDriver) and not dev.morphed and not dev.vx_enabled
    assert len(ping(w, "vm1", "vm2", count=5)) == 5


def test_a_plain_vlance_is_not_morphable_and_pcnet32_takes_it():
    """The pcnet device's 32-byte I/O BAR has no morph port: vmxnet declines before touching it."""
    w = world({"model": "emulated", "device": "pcnet"}, hypervisor="esxi")
    assert isinstance(w.guests["vm1"].netdevs[0], PCNetDriver)
    assert len(ping(w, "vm1", "vm2")) == 3


def test_vmxnet2_is_enhanced_vmxnet_with_the_larger_rings():
    w = world(VMXNET2, hypervisor="esxi")
    drv = w.guests["vm1"].netdevs[0]
    assert (drv.num_rx, drv.num_tx, drv.jumbo, drv.tso, drv.morphed) == (
        x.ENHANCED_DEFAULT_NUM_RX_BUFFERS, x.DEFAULT_NUM_TX_BUFFERS_TSO, True, True, False)
    assert drv.num_rx2 == x.ENHANCED_DEFAULT_NUM_RX_BUFFERS * 4
    assert len(ping(w, "vm1", "vm2", count=300)) == 300                  # more than the TX ring: it wraps


@pytest.mark.parametrize("device", ["flexible", "vmxnet2"])
@pytest.mark.parametrize("hypervisor", ["kvm", "xen"])
def test_flexible_and_vmxnet2_are_refused_off_esxi_naming_the_path(device, hypervisor):
    with pytest.raises(ScenarioError, match=rf"vms\[0\]\.nics\[0\]\.device: expected a device h \(hypervisor: "
                                            rf"{hypervisor}\) can host, got '{device}', which needs hypervisor: esxi"):
        _one_nic({"model": "paravirt", "device": device}, hypervisor)


def test_a_guest_driver_that_does_not_bind_the_device_is_refused():
    with pytest.raises(ScenarioError, match=r"nics\[0\]\.guest_driver: expected one of the guest drivers that bind "
                                            r"flexible \(vmxnet, pcnet\), got 'e1000'"):
        _one_nic({**FLEXIBLE, "guest_driver": "e1000"})


def test_the_driver_data_layout_has_the_offsets_of_vmxnet2_def_h():
    """Worked out by hand from the C struct: 18 uint32, a uint64 at 72, 24 uint32 (the last ten the stats)."""
    assert x.DD["totalRxBuffers"] == 68 and x.DD["rxBufferPhysStart"] == 72 and x.DD["length"] == 104
    assert x.DRIVER_DATA.size == 176 and x.RX_ENTRY.size == 24 and x.TX_ENTRY.size == 64
    assert x.TX_ENTRY.offset("sg0addrLow") == 16 and x.FLEXIBLE_IO_SIZE >= 0x20 + 4 + 0x40


# ---- a hostile VMXNET guest ----------------------------------------------------------------
def _vx(w: World):
    return w.vms["vm1"].nics[0].device, w.guests["vm1"].netdevs[0], w.vms["vm1"].vcpus[0]


@pytest.mark.parametrize("device", ["flexible", "vmxnet2"])
def test_a_shared_area_outside_memory_or_with_rings_past_its_length_is_not_taken(device):
    w = world({"model": "paravirt", "device": device}, hypervisor="esxi")
    dev, drv, vcpu = _vx(w)
    for addr, length in ((w.vms["vm1"].mem.size - 64, drv.length), (drv.dd, x.DRIVER_DATA.size)):
        drv.outl(addr, x.INIT_ADDR)
        drv.outl(length, x.INIT_LENGTH)
        assert not drv.inl(x.STATUS_ADDR) & x.STATUS_ENABLED and not dev.vx_enabled
    assert dev.errors["init_error"] == 2
    drv.outl(drv.dd, x.INIT_ADDR)                         # the real area again: taken
    drv.outl(drv.length, x.INIT_LENGTH)
    assert drv.inl(x.STATUS_ADDR) & x.STATUS_ENABLED
    assert len(ping(w, "vm1", "vm2", count=2)) == 2         # the NIC's indices came back from the area


def test_a_tx_entry_pointing_outside_memory_is_dropped_and_the_ring_goes_on():
    w = world(VMXNET2, hypervisor="esxi")
    dev, drv, _ = _vx(w)
    slot = drv.tx_next
    drv.mem.store(x.TX_ENTRY.struct, drv.tx_ring + slot * x.TX_ENTRY.size,
                  *drv._tx_entry(0, x.OWNERSHIP_NIC, w.vms["vm1"].mem.size + 4096, 100))
    drv.tx_next, drv.tx_pending = (slot + 1) % drv.num_tx, drv.tx_pending + 1
    drv.inl(x.TX_ADDR)
    w.sim.run(until=w.sim.now + 100_000)
    assert dev.errors["tx_buffer_fault"] == 1 and w.sim.drops.places[f"{dev.place}/tx_buffer_fault"] == 1
    assert len(ping(w, "vm1", "vm2", count=3)) == 3       # the entry came back; the next ones send


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["port", "morph", "area", "ring"]), st.integers(0, 0x7F),
                          st.integers(0, 2**32 - 1)), min_size=1, max_size=12))
def test_a_hostile_flexible_guest_never_stops_the_other_vms(ops):
    """Random port writes, morphs and scribbles over the shared area and TX ring: no exception reaches
    the host, time goes on, vm2 and vm3 still talk."""
    w = world(FLEXIBLE, hypervisor="esxi", others=2)
    dev, drv, vcpu = _vx(w)
    base = drv.io - (x.LANCE_CHIP_IO_RESV_SIZE + x.MORPH_PORT_SIZE)
    for where, offset, value in ops:
        if where == "port":
            vcpu.pio_write(base + (offset & ~3), 4, value)
        elif where == "morph":
            vcpu.pio_write(base + x.MORPH_PORT, 2, (x.LANCE_CHIP, x.VMXNET_CHIP)[value & 1])
        else:
            at, size = (drv.dd, x.DRIVER_DATA.size) if where == "area" else (drv.tx_ring, drv.num_tx * 64)
            drv.mem.store(x.DRIVER_DATA.field_struct("magic"), at + (offset * 4) % size, value)
        vcpu.pio_read(base + x.MORPHED_BASE + x.TX_ADDR, 4)
    now = w.sim.now
    assert len(ping(w, "vm2", "vm3")) == 3 and w.sim.now > now


# ---- vMotion --------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["flexible", "vmxnet2"])
def test_a_vmxnet_vm_moves_between_esxi_hosts_and_is_refused_to_kvm(device):
    outcome = migrate(migration_scenario(device, "paravirt", source="esxi", target="esxi", rate_pps=20_000,
                                         duration_ms=16))
    m, flow = outcome.to_dict(), outcome.to_dict()["flows"][0]
    assert m["result"] == "ok" and flow["corrupted"] == flow["out_of_order"] == 0 and flow["delivered"] > 100
    row = {(r["vm"], r["to"]): r for r in matrix(migration_scenario(device, "paravirt", source="esxi",
                                                                      target="kvm"))}["vm1", "host1"]
    assert row["result"] == "blocked" and row["reason"] == f"{device} needs a esxi host; host1 runs kvm"


# ---- DirectPath I/O and SR-IOV on ESXi ------------------------------------------------------
def _assigned(hypervisor: str, posted: bool = False) -> Scenario:
    """vm1 with a port passed through, vm2 with a VF of another, both streaming to the wire."""
    nic = {"mac": "52:54:00:00:00:0{}", "ip": "10.0.0.{}/24"}
    return Scenario.from_dict({
        "name": "assigned", "hosts": [{"name": "h", "cores": 4, "hypervisor": hypervisor,
                                       "posted_interrupts": posted,
                                       "nics": [{"name": "p0", "num_vfs": 2}, {"name": "p1"}, {"name": "p2"}]}],
        "vms": [{"name": f"vm{i}", "host": "h", "nics": [{"model": model, "device": device, "uplink": uplink,
                                                           **{k: v.format(i) for k, v in nic.items()}}]}
                for i, model, device, uplink in ((1, "passthrough", "ixgbe", "p1"), (2, "sriov", "ixgbevf", "p0"))],
        "workloads": [{"type": "udp_stream", "src": vm, "dst": "wire", "duration_ms": 3} for vm in ("vm1", "vm2")]})


@pytest.mark.parametrize("hypervisor", ["esxi", "kvm"])
def test_an_assigned_functions_interrupts_take_the_vmkernels_path_on_esxi_only(hypervisor):
    """The same IOMMU, rings and DMA; each remapped interrupt costs the vmkernel's forward on ESXi, none on KVM."""
    w = World(_assigned(hypervisor))
    start, stop, flows = begin(w)
    result = finish(w, start, stop, flows, 0.0).to_dict()
    assert all(f["delivered"] > 1000 for f in result["flows"])
    events = w.ledger.events
    assert events["iotlb_hit"] > 0 and events["interrupt_inject"] > 0
    assert events["vmk_intr_forward"] == (events["interrupt_inject"] if hypervisor == "esxi" else 0)


def test_posted_interrupts_skip_the_vmkernels_path():
    w = World(_assigned("esxi", posted=True))
    start, stop, flows = begin(w)
    finish(w, start, stop, flows, 0.0)
    assert w.ledger.events["vmk_intr_forward"] == 0 and w.ledger.events["iotlb_hit"] > 0


@pytest.mark.parametrize("vm, what", [("vm1", "DirectPath I/O"), ("vm2", "an SR-IOV passthrough adapter")])
def test_vmotion_is_blocked_for_directpath_and_sriov_with_the_reason(vm, what):
    s_ = _assigned("esxi").model_dump(mode="json", by_alias=True, exclude_none=True)
    s_["hosts"].append({**s_["hosts"][0], "name": "h2"})
    s_["migration"] = {"vm": vm, "to": "h2"}
    row = {(r["vm"], r["to"]): r for r in matrix(Scenario.from_dict(s_))}[vm, "h2"]
    assert row["result"] == "blocked" and "blocks vMotion" in row["reason"] and what in row["reason"]


class _Sink:
    """A stack that keeps what its driver hands it."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def receive(self, frame: bytes, csum_valid: bool = False) -> None:
        self.frames.append(frame)


def _jumbo(w: World, size: int) -> tuple[bytes, list[bytes], object]:
    dev, drv, _ = _vx(w)
    stack, drv.stack = drv.stack, _Sink()
    frame = drv.mac + bytes.fromhex("020000000099") + b"\x88\xb5" + bytes(i * 7 & 0xFF for i in range(size - 14))
    dev.receive(w.vms["vm1"].nics[0].world, frame)
    w.sim.run(until=w.sim.now + 200_000)
    got, drv.stack = drv.stack.frames, stack
    return frame, got, dev


def test_a_jumbo_frame_reaches_an_enhanced_vmxnet_guest_over_the_second_ring():
    """9000 bytes: 1536 in the RX buffer, the rest in three 4 KiB body buffers, RX_FRAG_EOP on the last;
    the driver reassembles it byte for byte and gives the buffers back."""
    w = world(VMXNET2, hypervisor="esxi")
    frame, got, dev = _jumbo(w, 9000)
    drv = w.guests["vm1"].netdevs[0]
    assert got == [frame] and dev.vx_rx_next2 == drv.rx_next2 == 2
    owners = [drv.buf[drv.rx_ring2 + i * x.RX_ENTRY.size + x.RX_ENTRY.offset("ownership")] for i in range(3)]
    assert owners == [x.OWNERSHIP_NIC_FRAG] * 3


def test_without_jumbo_frames_a_long_frame_is_dropped_and_counted():
    """VMXNET v1 (Flexible) has no body buffers: a frame longer than an RX buffer is dropped, the ring untouched."""
    w = world(FLEXIBLE, hypervisor="esxi")
    _, got, dev = _jumbo(w, 4000)
    assert got == [] and dev.errors["rx_oversize"] == 1
    assert len(ping(w, "vm1", "vm2")) == 3
