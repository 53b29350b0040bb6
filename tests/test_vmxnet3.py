"""VMXNET3 on an ESXi host: the layouts against vmxnet3_defs.h, the Linux-order
driver bringing the device up, the generation-bit rings moving frames both
ways, the INTx cause register, the commands; a hostile guest's shared area,
producer indices and descriptor addresses giving the queue errors the device
reports while the other VMs run on; the device state moving between ESXi
hosts and refused to KVM and Xen.  Everything is real iovirt code."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovirt.devices.vmstate import load_state, save_state
from iovirt.devices.vmxnet3 import LINK, Vmxnet3
from iovirt.experiments.migrate import matrix
from iovirt.experiments.runner import begin, finish
from iovirt.experiments.scenario import Scenario, ScenarioError
from iovirt.experiments.world import World
from iovirt.guest.drivers.vmxnet3 import TX_RING, Vmxnet3Driver, Vmxnet3Error
from iovirt.hypervisor.esxi import ESXI_MMIO, NETWORLD
from iovirt.hypervisor.migration import MigrationLink
from iovirt.spec import vmxnet3 as s
from test_hostile import ping, scenario, world
from test_migration import scenario as migration_scenario

VMXNET3 = {"model": "paravirt", "device": "vmxnet3"}
_U32, _U8 = struct.Struct("<I"), struct.Struct("<B")


def esxi(**kw) -> World:
    """vm1 with a VMXNET3 vNIC, vm2 and vm3 with e1000s beside it, on one ESXi host."""
    return world(VMXNET3, hypervisor="esxi", others=2, **kw)


def parts(w: World, vm: str = "vm1") -> tuple[Vmxnet3, Vmxnet3Driver, object]:
    nic = w.vms[vm].nics[0]
    return nic.device, w.guests[vm].netdevs[0], w.vms[vm].vcpus[0]


def test_the_layouts_have_the_sizes_and_offsets_of_vmxnet3_defs_h():
    """Sizes and offsets worked out by hand from the C structs (natural alignment, no packing)."""
    assert s.TX_QUEUE_DESC.size == s.RX_QUEUE_DESC.size == 256
    assert s.DS["queueDescPA"] == 8 + 16 + 8 + 8             # after driverInfo, uptFeatures, ddPA
    assert s.DS["autoMask"] == 8 + 72                          # Vmxnet3_MiscConf is 72 bytes
    assert s.DS["rxMode"] == 80 + 40                           # Vmxnet3_IntrConf is 40 bytes
    assert s.DS["ecr"] == 120 + 528 + 3 * 16                   # RxFilterConf (vfTable of 128 u32), 3 conf descs
    assert s.VF_TABLE + 4 * s.VFT_SIZE == s.DS["ecr"] - 48
    assert s.CMD_GET_CONF_INTR == 0xF00D0008 and s.CMD_UPDATE_FEATURE == 0xCAFE0009
    assert all(layout.size == 16 for layout in (s.TX_DESC, s.TX_COMP, s.RX_DESC, s.RX_COMP))


def test_the_driver_brings_the_device_up_in_linux_order():
    """Probe and open: the handshakes, ACTIVATE_DEV accepted, the MAC as configured, link up at 10 Gbit/s."""
    w = esxi()
    dev, drv, _ = parts(w)
    assert dev.active and drv.link_up and drv.mac == bytes.fromhex("525400000001")
    assert dev.rx_mode == s.RXM_UCAST | s.RXM_BCAST
    assert dev.masked & 1 == 0                                 # the driver unmasked interrupt 0
    assert LINK >> s.LINK_SPEED_SHIFT == 10000
    assert w.vms["vm1"].nics[0].world.name.endswith(NETWORLD)


def test_frames_go_both_ways_through_the_rings_and_wrap_their_generations():
    """More pings than the TX ring has slots: both gens are used, every reply comes back."""
    w = esxi()
    dev, drv, _ = parts(w)
    got = ping(w, "vm1", "vm2", count=TX_RING + 40)
    assert len(got) == TX_RING + 40
    assert drv.tx_gen != s.INIT_GEN or drv.tx_fill < 40        # the ring wrapped at least once
    assert dev.tx_stats[2] >= TX_RING + 40 and dev.rx_stats[2] >= TX_RING + 40


def test_an_incompatible_revision_fails_the_probe(monkeypatch):
    """VRRS without bit 0 (revision 1): Linux's "Incompatible h/w version" and no netdev."""
    original = Vmxnet3.bar1_read
    monkeypatch.setattr(Vmxnet3, "bar1_read",
                        lambda self, cpu, off, size: 2 if off == s.R1["VRRS"] else original(self, cpu, off, size))
    with pytest.raises(Vmxnet3Error, match="Incompatible h/w version"):
        World(scenario(VMXNET3, hypervisor="esxi"))


def test_an_msix_interrupt_masks_itself_and_waits_for_the_unmask():
    """autoMask: a vector fires once and is masked; what comes meanwhile is held until IMR is written 0."""
    w = esxi()
    dev, drv, vcpu = parts(w)
    assert drv.msix and dev.auto_mask and dev.intr_idx == [0, 0, 1]
    dev.coalesce_ns = dev.next_intr_ok = 0                     # the host's coalescing off (QEMU has none)
    fired = []
    dev.msi_hook = lambda cpu, index: fired.append(index)
    dev._trigger(vcpu, 0)
    dev._trigger(vcpu, 0)
    assert fired == [0] and dev.masked & 1 and dev.pending & 1
    drv.wr0("IMR", 0)
    assert fired == [0, 0] and not dev.pending & 1


def test_the_hosts_coalescing_spaces_a_vnics_interrupts_at_its_rate():
    """ESXi's default rbc, 4,000 interrupts/s: a second interrupt 10 µs after the first waits until 250 µs have passed."""
    w = esxi()
    dev, drv, vcpu = parts(w)
    assert dev.coalesce_ns == 250_000
    fired = []
    dev.msi_hook = lambda cpu, index: fired.append(cpu.cursor)
    w.sim.run(until=w.sim.now + 1_000_000)
    vcpu.sync(w.sim.now)
    drv.wr0("IMR", 0)
    dev._trigger(vcpu, 0)
    first = fired[-1]
    vcpu.sync(first + 10_000)
    drv.wr0("IMR", 0)                                           # the guest unmasks at once: nothing yet
    dev._trigger(vcpu, 0)
    assert len(fired) == 1 and dev.held & 1
    w.sim.run(until=first + 300_000)
    assert len(fired) == 2 and fired[1] >= first + 250_000 and not dev.held


def test_intx_when_the_device_offers_only_intx(monkeypatch):
    """GET_CONF_INTR saying INTx: the driver takes the line and reads ICR; frames still flow."""
    original = Vmxnet3._command_status
    monkeypatch.setattr(Vmxnet3, "_command_status", lambda self: s.IT_INTX if self.last_cmd == s.CMD_GET_CONF_INTR
                        else original(self))
    w = esxi()
    dev, drv, vcpu = parts(w)
    assert not drv.msix and len(ping(w, "vm1", "vm2")) == 3
    dev.coalesce_ns = dev.next_intr_ok = 0
    dev._trigger(vcpu, 0)
    assert dev.asserted
    assert vcpu.mmio_read(w.guests["vm1"].netdevs[0].bar1 + s.R1["ICR"], 4) == 1
    assert not dev.asserted
    assert vcpu.mmio_read(w.guests["vm1"].netdevs[0].bar1 + s.R1["ICR"], 4) == 0


def test_get_stats_counts_the_frames_the_guest_sent():
    w = esxi()
    dev, drv, vcpu = parts(w)
    before = dev.tx_stats[2]
    ping(w, "vm1", "vm2", count=5)
    drv.wr1("CMD", s.CMD_GET_STATS)
    ucast = struct.unpack_from("<Q", drv.buf, drv.queue_desc + s.QUEUE_STATS + 16)[0]   # ucastPktsTxOK
    assert ucast - before == 5


def test_register_accesses_exit_to_the_vmm_without_a_user_process():
    w = esxi()
    path = w.vms["vm1"].nics[0].regions(0, "mem32", s.PT_REG_SIZE)[0][2]
    assert path == ESXI_MMIO and "user_exit" not in path and "kvm_handle" not in path
    ping(w, "vm1", "vm2", count=2)
    assert w.ledger.events["vmm_handle"] > 0 and w.ledger.events["vmk_vswitch"] > 0


# ---- a hostile guest ------------------------------------------------------------------
def _status(drv, q: int) -> tuple[int, int]:
    base = drv.queue_desc + q * s.TX_QUEUE_DESC.size + s.QUEUE_STATUS
    return _U8.unpack_from(drv.buf, base)[0], _U32.unpack_from(drv.buf, base + 4)[0]


def test_a_bad_shared_area_address_fails_activation():
    w = esxi()
    dev, drv, _ = parts(w)
    drv.wr1("CMD", s.CMD_QUIESCE_DEV)
    drv.wr1("DSAL", 0xFFFF0000)
    drv.wr1("DSAH", 0x7)
    assert drv.command(s.CMD_ACTIVATE_DEV) == 1 and not dev.active
    assert dev.errors["activate_bad_shared_area"] == 1
    drv.wr1("DSAL", drv.shared & 0xFFFFFFFF)                  # the good one: activation succeeds again
    drv.wr1("DSAH", drv.shared >> 32)
    assert drv.command(s.CMD_ACTIVATE_DEV) == 0 and dev.active


def test_a_producer_index_past_the_ring_stops_the_queue_with_its_error():
    w = esxi()
    dev, drv, _ = parts(w)
    drv.wr0("TXPROD", TX_RING)
    assert _status(drv, 0) == (1, s.ERR_TXD_INVALID) and _status(drv, 1) == (0, 0)
    w.sim.run(until=w.sim.now + 1_000_000)
    assert drv.queue_errors == 1 and drv.stats["tx_errors"] == 1      # ECR.TQERR, read back by GET_QUEUE_STATUS
    assert len(ping(w, "vm2", "vm3")) == 3                       # the others run on


def test_a_descriptor_pointing_outside_memory_stops_the_queue_and_nothing_leaves():
    w = esxi()
    dev, drv, _ = parts(w)
    sent = dev.tx_stats[2]
    slot = drv.tx_ring + drv.tx_fill * s.DESC_SIZE
    drv.mem.store(s.TX_DESC.struct, slot, 1 << 40, 100 | drv.tx_gen << s.TXD_GEN_SHIFT, s.TXD_EOP)
    drv.wr0("TXPROD", (drv.tx_fill + 1) % TX_RING)
    w.sim.run(until=w.sim.now + 1_000_000)
    assert _status(drv, 0) == (1, s.ERR_TXD_INVALID) and dev.errors["tx_buffer_fault"] == 1
    assert dev.tx_stats[2] == sent
    assert len(ping(w, "vm2", "vm3")) == 3


def test_an_rx_producer_past_the_ring_stops_the_rx_queue():
    w = esxi()
    _, drv, _ = parts(w)
    drv.wr0("RXPROD2", 4096)
    assert _status(drv, 1) == (1, s.ERR_DESC_NOT_SPT) and _status(drv, 0) == (0, 0)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["bar0", "bar1", "ring", "shared"]), st.integers(0, 4095),
                          st.integers(0, 2**32 - 1)), min_size=1, max_size=12))
def test_a_hostile_vmxnet3_guest_never_stops_the_other_vms(ops):
    """Random register writes and scribbles over the rings and shared area: no
    exception reaches the host, time goes on, vm2 and vm3 still talk."""
    w = esxi()
    dev, drv, vcpu = parts(w)
    for where, offset, value in ops:
        if where in ("bar0", "bar1"):
            vcpu.mmio_write((drv.bar0 if where == "bar0" else drv.bar1) + (offset & ~3), 4, value)
        else:
            base = drv.tx_ring if where == "ring" else drv.shared
            drv.mem.store(_U32, base + (offset & ~3) % (TX_RING * s.DESC_SIZE if where == "ring" else 700), value)
    ping(w, "vm1", "vm2", count=2)
    now = w.sim.now
    assert len(ping(w, "vm2", "vm3")) == 3 and w.sim.now > now


# ---- vMotion -------------------------------------------------------------------------
def test_the_device_state_round_trips():
    w = esxi()
    dev, _, _ = parts(w)
    ping(w, "vm1", "vm2", count=3)
    blob = save_state(dev)
    other = World(scenario(VMXNET3, hypervisor="esxi"))
    target = other.vms["vm1"].nics[0].device
    load_state(target, blob)
    assert save_state(target) == blob and target.ring_next == dev.ring_next


def test_a_vmxnet3_vm_moves_between_esxi_hosts_and_keeps_streaming():
    s_ = migration_scenario("vmxnet3", "paravirt", source="esxi", target="esxi", duration_ms=30)
    w = World(s_)
    start, stop, flows = begin(w)
    migration = w.migrate("vm1", "host1", MigrationLink(w.ledger, "mig", 10), start + 2e6, downtime_ns=1e6)
    result = finish(w, start, stop, flows, 0.0).to_dict()
    assert migration.report.result == "ok" and w.vms["vm1"].host.name == "host1"
    flow = result["flows"][0]
    assert flow["delivered"] > 0 and flow["corrupted"] == 0 and flow["out_of_order"] == 0
    assert w.vms["vm1"].nics[0].device.active


@pytest.mark.parametrize("target", ["kvm", "xen"])
def test_a_vmxnet3_vm_is_refused_to_kvm_and_xen_with_the_reason(target):
    row = {(r["vm"], r["to"]): r for r in matrix(migration_scenario("vmxnet3", "paravirt", source="esxi",
                                                                      target=target))}["vm1", "host1"]
    assert row["result"] == "blocked" and row["reason"] == f"vmxnet3 needs a esxi host; host1 runs {target}"


def test_an_e1000_vm_on_esxi_is_refused_to_kvm_but_goes_to_another_esxi_host():
    refused = {(r["vm"], r["to"]): r for r in matrix(migration_scenario(source="esxi", target="kvm"))}["vm1", "host1"]
    assert refused["result"] == "blocked" and "vMotion moves a VM between ESXi hosts only" in refused["reason"]
    ok = {(r["vm"], r["to"]): r for r in matrix(migration_scenario(source="esxi", target="esxi"))}["vm1", "host1"]
    assert ok["result"] == "ok"


@pytest.mark.parametrize("device", ["e1000", "pcnet"])
def test_the_emulated_devices_esxi_offers_run_in_the_vmkernel(device):
    """e1000 and Vlance on ESXi: the VMM's trap path and the vSwitch, no tap syscall, no return to a user process."""
    w = world({"model": "emulated", "device": device}, hypervisor="esxi")
    w.ledger.reset()                          # boot's PCI configuration cycles take the platform's path
    assert len(ping(w, "vm1", "vm2")) == 3
    events = w.ledger.events
    assert events["vmm_handle"] > 0 and events["vmk_vswitch"] > 0
    assert events["tap"] == events["user_exit"] == events["kvm_handle"] == events["vswitch"] == 0


def test_vmxnet3_refuses_an_interrupt_rate_its_revision_1_driver_cannot_set():
    """Linux's vmxnet3 sets coalescing only on device revision 3 and later (VMXNET3_CMD_SET_COALESCE)."""
    nic = {**VMXNET3, "mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24", "interrupt_moderation": 4000}
    with pytest.raises(ScenarioError, match=r"nics\[0\]\.interrupt_moderation: expected 'adaptive' for vmxnet3"):
        Scenario.from_dict({"name": "x", "hosts": [{"name": "h", "cores": 2, "hypervisor": "esxi"}],
                            "vms": [{"name": "vm1", "host": "h", "nics": [nic]}]})
    nic["interrupt_moderation"] = "adaptive"
    assert Scenario.from_dict({"name": "x", "hosts": [{"name": "h", "cores": 2, "hypervisor": "esxi"}],
                               "vms": [{"name": "vm1", "host": "h", "nics": [nic]}]}).vms[0].nics[0].device == "vmxnet3"
