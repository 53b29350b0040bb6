"""A hostile guest against the host: each way one was found to crash or
freeze the simulator, or write outside its memory, reproduced.  The guest is
the test, issuing raw accesses on the VM's vCPU and writing its own memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.devices.registry import registry
from iovirt.experiments.world import World
from iovirt.hypervisor.addrmap import AddressMap, Region, pieces
from iovirt.hypervisor.iommu import Iommu
from iovirt.experiments import runner
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import ixgbe as s
from iovirt.spec import virtio as v
from iovirt.spec import vtd
from iovirt.spec import xen as x
from iovirt.spec.pci import PCI_BASE_ADDRESS_0

EMULATED = [name for name, entry in registry().items() if entry.kind == "emulated"]
NICS = {
    **{name: {"model": "emulated", "device": name} for name in EMULATED},
    "virtio": {"model": "paravirt", "device": "virtio-net", "backend": "qemu"},
    "vhost-net": {"model": "paravirt", "device": "virtio-net", "backend": "vhost-net"},
    "vhost-user": {"model": "paravirt", "device": "virtio-net", "backend": "vhost-user"},
    "ixgbe": {"model": "passthrough", "device": "ixgbe", "uplink": "pnic0"},
    "ixgbevf": {"model": "sriov", "device": "ixgbevf", "uplink": "pnic0"},
}


def scenario(nic: dict, hypervisor: str = "kvm", workloads: list | None = None, others: int = 1) -> iovirt.Scenario:
    """vm1 with ``nic``, ``others`` VMs from vm2 on beside it on the same LAN (e1000s, or netfronts on Xen)."""
    peer = {"model": "paravirt", "device": "xen-netfront"} if hypervisor == "xen" else NICS["e1000"]
    pnic = {"name": "pnic0", "kind": "x82599", "link_gbps": 10, **({"num_vfs": 2} if nic["model"] == "sriov" else {})}
    return iovirt.Scenario.from_dict({
        "name": "hostile", "hosts": [{"name": "host0", "cores": 8, "hypervisor": hypervisor,
                                      "nics": [pnic, {"name": "pnic1", "kind": "x82599", "link_gbps": 10}]}],
        "vms": [{"name": f"vm{i}", "host": "host0", "memory_mb": 32,
                 "nics": [{**n, "mac": f"52:54:00:00:00:0{i}", "ip": f"10.0.0.{i}/24"}]}
                for i, n in ((1, nic), *((i, peer) for i in range(2, 2 + others)))],
        "workloads": workloads or []})


def world(nic: dict, **kw) -> World:
    w = World(scenario(nic, **kw))
    w.settle()
    return w


def ping(w: World, src: str, dst: str, count: int = 3) -> list:
    """Pings ``count`` times from ``src`` to ``dst`` (one every 100 µs); the replies' RTTs."""
    got: list = []
    a, b = (w.guests[n] for n in (src, dst))
    sif, dif = next(iter(a.interfaces.values())), next(iter(b.interfaces.values()))
    for i in range(count):
        a.run_at(w.sim.now + i * 100_000, lambda i=i: sif.ping(dif.ip.ip, 7, i, b"x" * 56, lambda *r: got.append(r)))
    w.sim.run(until=w.sim.now + count * 100_000 + 2_000_000)
    return got


# ---- BAR placement: overlaps are the guest's business ----------------------------------------
def test_overlapping_regions_resolve_by_mapping_order_and_unmap_uncovers():
    space = AddressMap("mmio")
    for owner, base, size in (("a", 0x1000, 0x1000), ("b", 0x1800, 0x1000), ("c", 0x1c00, 0x100)):
        space.map(Region(base, size, None, None, (), owner))
    assert [space.lookup(a).owner for a in (0x1000, 0x17ff, 0x1800, 0x1c00, 0x1cff, 0x1d00, 0x27ff)] == \
        ["a", "a", "b", "c", "c", "b", "b"]
    assert space.lookup(0x2800) is None and space.lookup(0xfff) is None
    space.unmap("b")
    assert [space.lookup(a).owner if space.lookup(a) else None for a in (0x1800, 0x1c00, 0x1d00, 0x2100)] == ["a", "c", "a", None]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 64), st.integers(1, 64)), max_size=30),
       st.lists(st.integers(0, 140), max_size=20))
def test_address_map_agrees_with_the_last_mapped_region_covering_an_address(ops, probes):
    space, live = AddressMap("mmio"), []
    for is_map, owner, base, size in ops:
        if is_map:
            region = Region(base, size, None, None, (), str(owner))
            space.map(region)
            live.append(region)
        else:
            space.unmap(str(owner))
            live = [r for r in live if r.owner != str(owner)]
    for addr in probes:
        want = next((r for r in reversed(live) if r.base <= addr < r.base + r.size), None)
        assert space.lookup(addr) is want


@given(st.integers(0, 64), st.sampled_from([1, 2, 3, 4, 8, 16]))
def test_an_access_splits_into_aligned_pieces_of_at_most_a_dword(offset, size):
    got = list(pieces(offset, size))
    assert sum(n for _, n, _ in got) == size and got[0][0] == offset
    assert all(n in (1, 2, 4) and not at % n for at, n, _ in got)
    assert all(shift == 8 * (at - offset) for at, _, shift in got)


@pytest.mark.parametrize("name", [*EMULATED, "virtio", "vhost-net", "vhost-user", "ixgbe", "ixgbevf"])
def test_bars_stacked_on_each_other_and_on_the_config_ports_never_raise(name):
    """The guest moves every BAR of its NIC onto one address (I/O BARs onto 0xCF8 too), then pings: the
    host raises nothing and its other VM still answers its neighbour."""
    w = world(NICS[name])
    guest = w.guests["vm1"]
    info = next(i for i in guest.pci.devices if i.driver is not None)
    first_mem = next(addr for kind, addr, _ in info.bars.values() if kind != "io")
    for index, (kind, _, size) in sorted(info.bars.items()):
        target = 0xCF8 & ~(size - 1) | 1 if kind == "io" else first_mem
        guest.pci.config_write(info.bdf, PCI_BASE_ADDRESS_0 + 4 * index, 4, target)
    start = w.sim.now
    ping(w, "vm1", "vm2")
    ping(w, "vm2", "vm1")
    assert w.sim.now > start


# ---- wide accesses reach 32-bit registers as two dwords ------------------------------------
def test_a_qword_store_to_an_82599_register_is_two_dword_writes():
    """One 8-byte store at RSSRK(4) sets RSSRK4 and RSSRK5; an RSS-hashed frame afterwards is received."""
    w = world(NICS["ixgbe"], workloads=[{"type": "udp_stream", "src": "vm1", "dst": "wire", "duration_ms": 0.2}])
    guest = w.guests["vm1"]
    driver = guest.netdevs[0]
    dev = w.vms["vm1"].nics[0].device
    rssrk4 = s.REGS["RSSRK4"].offset
    guest.vcpu.mmio_write(driver.bar + rssrk4, 8, 0xFFFF_FFFF_FFFF_FFFF)
    guest.vcpu.mmio_write(driver.bar + s.REGS["MRQC"].offset, 4,
                          s.MRQC_RSSEN | s.MRQC_RSS_FIELD_IPV4 | s.MRQC_RSS_FIELD_IPV4_UDP)
    assert dev.r[rssrk4 >> 2] == dev.r[(rssrk4 >> 2) + 1] == 0xFFFFFFFF
    assert guest.vcpu.mmio_read(driver.bar + rssrk4, 8) == 0xFFFF_FFFF_FFFF_FFFF
    result = runner.finish(w, *runner.begin(w), 0.0)
    assert result.to_dict()["flows"][0]["delivered"] > 0


# ---- virtio: a used ring past the end of memory -------------------------------------------------
@pytest.mark.parametrize("name", ["virtio", "vhost-net"])
def test_a_used_ring_past_memory_sets_needs_reset_when_the_device_wants_kicks(name):
    """The guest points its RX used ring past the end of RAM; frames keep arriving for it: the device
    sets DEVICE_NEEDS_RESET (2.1.2) instead of raising in the backend's thread."""
    w = world(NICS[name])
    dev = w.vms["vm1"].nics[0].device
    q = dev.queues[v.RX_QUEUE]
    q.used = w.vms["vm1"].mem.size - 4
    q.last_avail = _avail_idx(w, q)         # as if the guest had no buffers left: the device asks for kicks
    ping(w, "vm2", "vm1")
    assert dev.status & v.DEVICE_NEEDS_RESET


def _avail_idx(w: World, q) -> int:
    return v.U16.unpack_from(w.vms["vm1"].mem.buf, q.avail + v.VIRTQ_AVAIL_IDX)[0]


# ---- Xen ------------------------------------------------------------------------------------------
PV = {"model": "paravirt", "device": "xen-netfront"}


def test_a_netfront_rsp_prod_far_ahead_marks_it_broken_and_time_goes_on():
    """The guest writes its RX ring's rsp_prod a ring and more ahead: netfront counts it once, stops
    using the device (Linux: "Illegal number of responses", info->broken), and simulated time advances."""
    w = world(PV, hypervisor="xen")
    guest = w.guests["vm1"]
    front = guest.netdevs[0]
    guest.mem.store(x.U32, front.rx_ring + x.RSP_PROD, (front.rx_cons + x.NET_RX_RING_SIZE + 5) & x.RING_IDX_MASK)
    guest.netdevs[0]._interrupt()
    start, ran = w.sim.now, 0
    while w.sim.pending and ran < 100_000 and w.sim.now < start + 1_000_000:
        w.sim.run(until=w.sim._heap[0][0])
        ran += 1
    assert ran < 100_000
    assert guest.stats["xennet_bad_rx_rsp_prod"] == 1 and front.broken


def test_moving_the_grant_table_keeps_mapped_grants_inside_memory():
    """dom0 maps a grant; the guest asks for its grant table again at its last page (one frame): Xen refuses
    to shrink or overflow the table; moved to a place with room, it brings the entry's flags, and the unmap
    (as a vif's disconnect does it) clears them there."""
    w = world(PV, hypervisor="xen")
    xen, guest = w.xen["host0"], w.guests["vm1"]
    plat = guest.netdevs[0].platform
    size = guest.mem.size
    ref = 16 * x.GRANT_ENTRIES_PER_FRAME - 1                      # the table's last entry
    page = guest.netdevs[0].tx_bufs[0] & ~(x.PAGE_SIZE - 1)
    plat.grant(ref, 0, page, readonly=True)
    status, mapped = xen.grant_map(xen.dom0_kernel.vcpu, 1, ref, True)
    assert status == x.GNTST_okay
    assert xen.setup_grant_table(guest.vcpu, size - x.PAGE_SIZE, 1) < 0
    new = size - 16 * x.PAGE_SIZE
    assert xen.setup_grant_table(guest.vcpu, new, 1) == 0
    entry = new + ref * x.GRANT_ENTRY_V1.size
    assert x.GRANT_ENTRY_FLAGS.unpack_from(guest.mem.buf, entry)[0] & x.GTF_reading
    assert xen.grant_unmap(xen.dom0_kernel.vcpu, mapped) == x.GNTST_okay
    assert not x.GRANT_ENTRY_FLAGS.unpack_from(guest.mem.buf, entry)[0] & x.GTF_reading


# ---- IOMMU ----------------------------------------------------------------------------------------
def test_unmap_past_the_address_width_is_refused_and_low_mappings_stay():
    """An unmap whose range passes the top of the address width would wrap the table index onto IOVA 0:
    refused, as map refuses such ranges; IOVA 0 still translates."""
    iommu = Iommu(GuestMemory(2 << 20), Resource("iommu", "nic", Ledger(load_profile("default"))), levels=3)
    iommu.map(7, 0, 0x100000, 2 * vtd.PAGE_4K)
    top = iommu._limit
    with pytest.raises(ValueError):
        iommu.unmap(7, top - vtd.PAGE_4K, 2 * vtd.PAGE_4K)
    at, entry, _, _ = iommu._leaf(iommu._pgd[7], 0)
    assert entry & vtd.SL_RW and entry & vtd.ADDR_MASK == 0x100000


# ---- guest drivers check what they read back; what they cannot check stops only their VM ------------------
def test_e1000_driver_takes_its_buffer_address_from_its_own_books_not_the_descriptor():
    """The guest scribbles a done RX descriptor: buffer address past RAM, length 0xFFFF. Its driver uses
    buffer_info (its own record) and counts the oversize frame as an error; nothing raises."""
    w = world(NICS["e1000"])
    guest = w.guests["vm1"]
    driver = guest.netdevs[0]
    at = driver.rx_ring + driver.rx_clean * 16
    guest.mem.write(at, (guest.mem.size + 4096).to_bytes(8, "little") + (0xFFFF).to_bytes(2, "little")
                    + bytes(2) + bytes([0x03, 0]) + bytes(2))                    # DD | EOP, no errors
    driver._poll()
    assert guest.stats["rx_errors"] == 1 and guest.fault is None


def test_virtio_driver_drops_a_used_length_beyond_its_buffer():
    """The device (here the guest scribbling its own used ring) says a buffer holds more than it can:
    Linux's "rx error: len %u exceeds max size"; the frame is dropped and counted, nothing raises."""
    w = world(NICS["virtio"])
    guest = w.guests["vm1"]
    rx = guest.netdevs[0].rx
    head = next(iter(rx.tokens))
    idx = v.U16.unpack_from(guest.mem.buf, rx.used + v.VIRTQ_USED_IDX)[0]
    guest.mem.write(rx.used + v.VIRTQ_USED_RING + 8 * (idx % rx.size), head.to_bytes(4, "little") + (1 << 31).to_bytes(4, "little"))
    guest.mem.write(rx.used + v.VIRTQ_USED_IDX, ((idx + 1) & 0xFFFF).to_bytes(2, "little"))
    guest.netdevs[0]._poll()
    assert guest.stats["rx_length_errors"] == 1 and guest.fault is None


def test_a_fault_in_guest_code_stops_that_guest_only_and_is_reported():
    """vm1's driver state is corrupt (its RX buffers point past RAM): the first frame it takes faults in its
    own code; vm1 stops with the fault in the results, vm3 -> vm4 delivers everything."""
    w = World(scenario(NICS["virtio"], others=3, workloads=[
        {"type": "udp_stream", "src": a, "dst": b, "duration_ms": 1, "rate_pps": 20_000}
        for a, b in (("vm2", "vm1"), ("vm3", "vm4"))]))
    driver = w.guests["vm1"].netdevs[0]
    driver.rx_bufs = [w.guests["vm1"].mem.size] * len(driver.rx_bufs)
    flows = runner.finish(w, *runner.begin(w), 0.0).to_dict()
    assert list(flows["guest_faults"]) == ["vm1"] and flows["guest_faults"]["vm1"].startswith("struct.error")
    victim = flows["flows"][1]
    assert victim["sent"] == victim["delivered"] > 10 and victim["corrupted"] == 0


def test_an_exception_in_host_code_a_guest_called_into_is_not_taken_for_a_guest_fault(monkeypatch):
    """A device model that raises inside a trap is the simulator's bug: it propagates, it is never
    blamed on the guest that made the access."""
    w = world(NICS["e1000"])
    dev = w.vms["vm1"].nics[0].device

    def broken(*args):
        raise ValueError("device model bug")
    monkeypatch.setattr(dev, "mmio_write", broken)
    w.vms["vm1"].nics[0]._bar(0, "mem", None, 0)
    w.vms["vm1"].nics[0]._bar(0, "mem", w.guests["vm1"].netdevs[0].bar, 0x20000)
    w.guests["vm1"].run_soon(w.guests["vm1"].netdevs[0].flush)
    w.guests["vm1"].run_soon(lambda: w.guests["vm1"].netdevs[0].wr("IMS", 1))
    with pytest.raises(ValueError, match="device model bug"):
        w.sim.run(until=w.sim.now + 1000)


def test_a_refused_unmap_changes_nothing():
    """An unaligned unmap, or one that would split a 2 MiB page after clearing 4 KiB pages before it,
    is refused whole: every mapping still translates (a half-done unmap left the IOTLB and the tables
    disagreeing with what the caller was told)."""
    iommu = Iommu(GuestMemory(8 << 20), Resource("iommu", "nic", Ledger(load_profile("default"))), levels=4)
    iommu.attach(3, 1)
    iommu.map(1, 0x1FF000, 0x1000, vtd.PAGE_4K)                           # a 4 KiB page below...
    iommu.map(1, 0x200000, 0x400000, vtd.PAGE_2M, page_size=vtd.PAGE_2M)  # ...a 2 MiB page
    for iova, size in ((0x1FF6F4, 0x2000), (0x1FF000, 0x2000)):
        with pytest.raises(ValueError):
            iommu.unmap(1, iova, size)
    assert iommu.translate(3, 0x1FF010, 8, False) == 0x1010
    assert iommu.translate(3, 0x200010, 8, False) == 0x400010
