"""SR-IOV: the PF's extended capability, VFs plugged in and out at their
Routing IDs, VF BAR sizing and apertures, the VF header rules, and the host
kernel's side (Linux sriov_init / sriov_numvfs)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovirt.guest.pci import PciEnumerator
from iovirt.pci import Bar, HostBridge, PciBus, PciFunction
from iovirt.pci.sriov import HostSriov, SriovParams, VfResourceError, add_sriov, find_ext_capability
from iovirt.spec import pci as s
from iovirt.spec.pci import Bdf

# Intel 82599: lspci of its PF shows "VF offset: 128, stride: 2, Device ID: 10ed", Initial/Total VFs 64,
# Supported Page Size 553, VF BAR0 and VF BAR3 64-bit prefetchable 16 KiB (MSI-X in BAR3).
VF_DEVICE_ID = 0x10ED
TOTAL_VFS = 64
VF_BAR_SIZE = 0x4000
VF_BARS = (Bar(0, VF_BAR_SIZE, "mem64", prefetchable=True), Bar(3, VF_BAR_SIZE, "mem64", prefetchable=True))
X82599 = SriovParams(TOTAL_VFS, VF_DEVICE_ID, first_vf_offset=0x80, vf_stride=2, vf_bars=VF_BARS)
PF_BUS = 3
WINDOW = (0x3F_0000_0000, 0x3F_1000_0000)  # a 64-bit host MMIO window
ENABLE = s.PCI_SRIOV_CTRL_VFE | s.PCI_SRIOV_CTRL_MSE


def make_vf(n: int) -> PciFunction:
    """An 82599-like VF: registers in BAR0, a 3-vector MSI-X table in BAR3, a PCIe endpoint."""
    fn = PciFunction(0x8086, VF_DEVICE_ID, s.PCI_CLASS_NETWORK_ETHERNET << 8, interrupt_pin=0, bars=VF_BARS)
    fn.add_msix(table_bar=3, table_offset=0, pba_bar=3, pba_offset=0x2000, vectors=3)
    fn.add_pcie_endpoint()
    return fn


def plug_pf(bus: PciBus, device: int = 0, function: int = 0, params: SriovParams = X82599, factory=make_vf):
    """An 82599-like PF (ARI first in its extended list) with SR-IOV on ``bus``."""
    pf = PciFunction(0x8086, 0x10FB, s.PCI_CLASS_NETWORK_ETHERNET << 8,
                     bars=[Bar(0, 0x20000, "mem64"), Bar(4, 0x4000, "mem64")])
    pf.add_pcie_endpoint()
    pf.add_ext_capability(s.PCI_EXT_CAP_ID_ARI, 1, s.PCI_EXT_CAP_ARI_SIZEOF)
    bus.attach(pf, device, function)
    return pf, add_sriov(pf, bus, factory, params)


def setup(params: SriovParams = X82599):
    bus = PciBus(PF_BUS)
    pf, sriov = plug_pf(bus, params=params)
    return bus, pf, sriov


def write(pf, sriov, reg: int, size: int, value: int) -> None:
    pf.config_write(sriov.cap + reg, size, value)


def read(pf, sriov, reg: int, size: int) -> int:
    return pf.config_read(sriov.cap + reg, size)


def enable(pf, sriov, count: int, ctrl: int = ENABLE) -> None:
    write(pf, sriov, s.PCI_SRIOV_NUM_VF, 2, count)
    write(pf, sriov, s.PCI_SRIOV_CTRL, 2, ctrl)


def vf_slots(bus: PciBus) -> list[Bdf]:
    return [bdf for bdf, fn in bus.functions() if fn.config_read(s.PCI_VENDOR_ID, 2) == 0xFFFF]


def expected_bdf(pf_bdf: Bdf, n: int, offset: int = 0x80, stride: int = 2) -> Bdf:
    rid = (pf_bdf.bus << 8 | pf_bdf.device << 3 | pf_bdf.function) + offset + n * stride
    return Bdf(rid >> 8, (rid >> 3) & 0x1F, rid & 7)


def program_vf_bars(pf, sriov, bases: dict[int, int]) -> None:
    for index, base in bases.items():
        write(pf, sriov, s.pci_sriov_bar(index), 4, base & 0xFFFFFFFF)
        write(pf, sriov, s.pci_sriov_bar(index) + 4, 4, base >> 32)


# --- the capability -----------------------------------------------------------------
def test_capability_in_extended_list():
    """SR-IOV (ID 0x10, version 1) follows ARI in the list from 0x100 with the 82599's fields."""
    _, pf, sriov = setup()
    assert sriov.cap >= s.PCI_EXT_CAP_START and find_ext_capability(pf, s.PCI_EXT_CAP_ID_SRIOV) == sriov.cap
    ari = pf.config_read(s.PCI_EXT_CAP_START, 4)
    assert s.PCI_EXT_CAP_ID(ari) == s.PCI_EXT_CAP_ID_ARI and s.PCI_EXT_CAP_NEXT(ari) == sriov.cap
    header = read(pf, sriov, 0, 4)
    assert (s.PCI_EXT_CAP_ID(header), s.PCI_EXT_CAP_VER(header), s.PCI_EXT_CAP_NEXT(header)) == (0x10, 1, 0)
    fields = {r.name: read(pf, sriov, r.offset, r.width) for r in s.PCI_SRIOV_CAP_REGS}
    assert {k: fields[k] for k in ("INITIAL_VF", "TOTAL_VF", "NUM_VF", "VF_OFFSET", "VF_STRIDE", "VF_DID")} == {
        "INITIAL_VF": 64, "TOTAL_VF": 64, "NUM_VF": 0, "VF_OFFSET": 0x80, "VF_STRIDE": 2, "VF_DID": 0x10ED}
    assert fields["SUP_PGSIZE"] == 0x553 and fields["SYS_PGSIZE"] == 1 and fields["FUNC_LINK"] == 0
    assert fields["CAP"] == fields["CTRL"] == fields["STATUS"] == fields["VFM"] == 0
    flags = s.PCI_BASE_ADDRESS_MEM_TYPE_64 | s.PCI_BASE_ADDRESS_MEM_PREFETCH
    assert [fields[f"BAR{i}"] for i in range(6)] == [flags, 0, 0, flags, 0, 0]


def test_read_only_fields_hold():
    """Every RO field of the SR-IOV table ignores writes of all ones and of zero."""
    _, pf, sriov = setup()
    read_only = [r for r in s.PCI_SRIOV_CAP_REGS if r.access == "ro"]
    before = {r.name: read(pf, sriov, r.offset, r.width) for r in read_only}
    for reg in read_only:
        for value in ((1 << 8 * reg.width) - 1, 0):
            write(pf, sriov, reg.offset, reg.width, value)
    assert {r.name: read(pf, sriov, r.offset, r.width) for r in read_only} == before


def test_control_writable_bits():
    """CTRL keeps VF Enable, VF MSE and ARI Capable Hierarchy; VF Migration bits are RsvdP without the capability."""
    _, pf, sriov = setup()
    write(pf, sriov, s.PCI_SRIOV_CTRL, 2, 0xFFFF)
    assert read(pf, sriov, s.PCI_SRIOV_CTRL, 2) == ENABLE | s.PCI_SRIOV_CTRL_ARI


def test_num_vfs_writes():
    """NumVFs takes values up to TotalVFs while VF Enable is clear; other writes are ignored."""
    _, pf, sriov = setup()
    write(pf, sriov, s.PCI_SRIOV_NUM_VF, 2, 8)
    assert read(pf, sriov, s.PCI_SRIOV_NUM_VF, 2) == 8 == sriov.num_vfs
    write(pf, sriov, s.PCI_SRIOV_NUM_VF, 2, TOTAL_VFS + 1)
    assert read(pf, sriov, s.PCI_SRIOV_NUM_VF, 2) == 8
    write(pf, sriov, s.PCI_SRIOV_CTRL, 2, s.PCI_SRIOV_CTRL_VFE)
    write(pf, sriov, s.PCI_SRIOV_NUM_VF, 2, 4)
    assert read(pf, sriov, s.PCI_SRIOV_NUM_VF, 2) == 8 and len(sriov.vfs) == 8
    write(pf, sriov, s.PCI_SRIOV_CTRL, 2, 0)
    write(pf, sriov, s.PCI_SRIOV_NUM_VF, 2, 4)
    assert read(pf, sriov, s.PCI_SRIOV_NUM_VF, 2) == 4


def test_num_vfs_above_total_refused():
    """NumVFs 65 against TotalVFs 64 is dropped by the device and refused by the host naming the limit."""
    bus, pf, sriov = setup()
    enable(pf, sriov, TOTAL_VFS + 1)
    assert read(pf, sriov, s.PCI_SRIOV_NUM_VF, 2) == 0 and vf_slots(bus) == []
    write(pf, sriov, s.PCI_SRIOV_CTRL, 2, 0)
    host = HostSriov(pf, Bdf(PF_BUS, 0, 0), WINDOW)
    with pytest.raises(ValueError, match="65 VFs requested, but TotalVFs is 64"):
        host.enable_vfs(65)
    assert vf_slots(bus) == []


# --- VFs on the bus -------------------------------------------------------------------
def test_vf_enable_plugs_vfs_at_routing_ids():
    """VF Enable plugs exactly NumVFs VFs at PF + 0x80 + 2n: 03:10.0, 03:10.2 ... 03:1f.6."""
    bus, pf, sriov = setup()
    made = []
    sriov.on_vf_change(lambda n, bdf, fn: made.append((n, bdf, fn)))
    enable(pf, sriov, TOTAL_VFS)
    slots = [expected_bdf(Bdf(PF_BUS, 0, 0), n) for n in range(TOTAL_VFS)]
    assert vf_slots(bus) == slots and len(bus.functions()) == TOTAL_VFS + 1
    assert [str(b) for b in slots[:5]] == ["03:10.0", "03:10.2", "03:10.4", "03:10.6", "03:11.0"]
    assert str(slots[-1]) == "03:1f.6"
    assert [(n, bdf) for n, bdf, _ in made] == list(enumerate(slots))
    assert all(bus.lookup(bdf.device, bdf.function) is fn for _, bdf, fn in made)


def test_two_pfs_interleave_their_vfs():
    """The 82599's two ports each bring 64 VFs onto one bus: port 0 on even functions, port 1 on odd."""
    bus = PciBus(PF_BUS)
    pf0, sriov0 = plug_pf(bus, function=0)
    pf1, sriov1 = plug_pf(bus, function=1)
    enable(pf0, sriov0, TOTAL_VFS)
    enable(pf1, sriov1, TOTAL_VFS)
    assert len(bus.functions()) == 2 + 2 * TOTAL_VFS
    assert str(sriov0.vf_bdf(0)) == "03:10.0" and str(sriov1.vf_bdf(0)) == "03:10.1"
    assert read(pf1, sriov1, s.PCI_SRIOV_FUNC_LINK, 1) == 1
    write(pf1, sriov1, s.PCI_SRIOV_CTRL, 2, ENABLE | s.PCI_SRIOV_CTRL_ARI)
    write(pf0, sriov0, s.PCI_SRIOV_CTRL, 2, ENABLE | s.PCI_SRIOV_CTRL_ARI)
    assert not read(pf1, sriov1, s.PCI_SRIOV_CTRL, 2) & s.PCI_SRIOV_CTRL_ARI
    assert read(pf0, sriov0, s.PCI_SRIOV_CTRL, 2) & s.PCI_SRIOV_CTRL_ARI


def test_vf_header_rules():
    """A VF reads FFFFh IDs and zero BARs, decodes no memory of its own, has no INTx, keeps MSI-X and Bus Master."""
    _, pf, sriov = setup()
    enable(pf, sriov, 2)
    assert sriov.vf_identity() == (0x8086, VF_DEVICE_ID)
    for _, vf in sriov.vfs:
        assert vf.config_read(s.PCI_VENDOR_ID, 4) == 0xFFFFFFFF
        vf.config_write(s.PCI_VENDOR_ID, 4, 0x12345678)
        assert vf.config_read(s.PCI_VENDOR_ID, 4) == 0xFFFFFFFF
        for index in range(6):
            vf.config_write(s.pci_base_address(index), 4, 0xFFFFFFFF)
            assert vf.config_read(s.pci_base_address(index), 4) == 0
        masters = []
        vf.on_bus_master(masters.append)
        vf.config_write(s.PCI_COMMAND, 2, 0xFFFF)
        assert vf.config_read(s.PCI_COMMAND, 2) == s.PCI_COMMAND_MASTER and masters == [True]
        assert vf.bar_address(0) is None and vf.config_read(s.PCI_INTERRUPT_PIN, 1) == 0
        assert vf.config_read(vf.msix.cap, 1) == s.PCI_CAP_ID_MSIX


def test_vfs_invisible_to_a_bus_scan():
    """Enumeration by scanning finds the PF but no VF: their Vendor ID reads FFFFh."""
    hb = HostBridge()
    params = SriovParams(8, VF_DEVICE_ID, 0x80, 2, VF_BARS)
    pf, sriov = plug_pf(hb.bus, device=2, params=params)
    enable(pf, sriov, 8)
    assert len(hb.bus.functions()) == 2 + 8
    found = PciEnumerator(hb).scan()
    assert [str(d.bdf) for d in found] == ["00:00.0", "00:02.0"]


def test_disable_removes_all_vfs():
    """Clearing VF Enable unplugs every VF and tells subscribers, leaving only the PF."""
    bus, pf, sriov = setup()
    events = []
    sriov.on_vf_change(lambda n, bdf, fn: events.append((n, bdf, fn is not None)))
    enable(pf, sriov, 8)
    write(pf, sriov, s.PCI_SRIOV_CTRL, 2, 0)
    assert [fn for _, fn in bus.functions()] == [pf] and sriov.vfs == []
    assert sorted((n, b) for n, b, added in events if added) == sorted((n, b) for n, b, added in events if not added)


def test_enable_disable_cycles_leave_nothing_stale():
    """Each enable brings exactly NumVFs fresh VFs; each disable leaves only the PF."""
    bus, pf, sriov = setup()
    earlier: list[PciFunction] = []  # kept alive so that no id is reused
    for count in (8, 64, 1, 0, 3, 64):
        enable(pf, sriov, count)
        vfs = [fn for _, fn in sriov.vfs]
        assert len(bus.functions()) == 1 + count and len(vfs) == count
        assert not {id(fn) for fn in earlier} & {id(fn) for fn in vfs}
        earlier += vfs
        write(pf, sriov, s.PCI_SRIOV_CTRL, 2, 0)
        assert [fn for _, fn in bus.functions()] == [pf]


# --- VF BARs ----------------------------------------------------------------------------
def test_vf_bar_sizing_and_aperture():
    """A VF BAR sizes like a BAR for one VF; its aperture is that size times NumVFs; a larger page grows it."""
    _, pf, sriov = setup()
    flags = s.PCI_BASE_ADDRESS_MEM_TYPE_64 | s.PCI_BASE_ADDRESS_MEM_PREFETCH
    write(pf, sriov, s.pci_sriov_bar(0), 4, 0xFFFFFFFF)
    write(pf, sriov, s.pci_sriov_bar(1), 4, 0xFFFFFFFF)
    assert read(pf, sriov, s.pci_sriov_bar(0), 4) == 0xFFFFC000 | flags
    assert read(pf, sriov, s.pci_sriov_bar(1), 4) == 0xFFFFFFFF
    write(pf, sriov, s.PCI_SRIOV_NUM_VF, 2, 8)
    assert sriov.vf_bar_size(0) == VF_BAR_SIZE and sriov.aperture(0) == 8 * VF_BAR_SIZE
    write(pf, sriov, s.PCI_SRIOV_SYS_PGSIZE, 4, 1 << 4)  # 64 KiB pages
    assert read(pf, sriov, s.pci_sriov_bar(0), 4) == 0xFFFF0000 | flags
    assert sriov.vf_bar_size(3) == 0x10000 and sriov.aperture(3) == 8 * 0x10000


def test_system_page_size_rules():
    """System Page Size takes one supported page while VF Enable is clear; other writes are ignored."""
    _, pf, sriov = setup()
    for bad in (0, 0x3, 1 << 2, 1 << 12):  # none, two pages, 16 KiB and 16 MiB (unsupported)
        write(pf, sriov, s.PCI_SRIOV_SYS_PGSIZE, 4, bad)
        assert read(pf, sriov, s.PCI_SRIOV_SYS_PGSIZE, 4) == 1
    enable(pf, sriov, 1)
    write(pf, sriov, s.PCI_SRIOV_SYS_PGSIZE, 4, 1 << 1)
    assert read(pf, sriov, s.PCI_SRIOV_SYS_PGSIZE, 4) == 1 and sriov.page_size == 4096


def test_vf_bar_decode_notifications():
    """VF n's BARs decode at VF BARn + n * size only with VF Enable and VF MSE; moves and stops are reported."""
    _, pf, sriov = setup()
    seen: dict[tuple[int, int], tuple[int | None, int]] = {}
    sriov.on_vf_bar_change(lambda n, index, address, size: seen.__setitem__((n, index), (address, size)))
    bases = {0: 0x3F_0000_0000, 3: 0x3F_0010_0000}
    program_vf_bars(pf, sriov, bases)
    enable(pf, sriov, 4, s.PCI_SRIOV_CTRL_VFE)
    assert seen == {} and len(sriov.vfs) == 4
    write(pf, sriov, s.PCI_SRIOV_CTRL, 2, ENABLE)
    assert seen == {(n, i): (bases[i] + n * VF_BAR_SIZE, VF_BAR_SIZE) for n in range(4) for i in bases}
    program_vf_bars(pf, sriov, {0: 0x3F_0020_0000})
    assert [seen[n, 0][0] for n in range(4)] == [0x3F_0020_0000 + n * VF_BAR_SIZE for n in range(4)]
    write(pf, sriov, s.PCI_SRIOV_CTRL, 2, s.PCI_SRIOV_CTRL_VFE)
    assert all(address is None for address, _ in seen.values()) and len(sriov.vfs) == 4


# --- host side: Linux iov.c ---------------------------------------------------------------
def test_host_enables_vfs_like_linux():
    """HostSriov sizes and places VF BARs for TotalVFs, enables VFs, and agrees with what the device decodes."""
    bus, pf, sriov = setup()
    decoded = {}
    sriov.on_vf_bar_change(lambda n, index, address, size: decoded.__setitem__((n, index), (address, size)))
    host = HostSriov(pf, Bdf(PF_BUS, 0, 0), WINDOW)
    assert host.page_size == 4096 and read(pf, sriov, s.PCI_SRIOV_SYS_PGSIZE, 4) == 1
    assert host.bars == {0: ("mem64", VF_BAR_SIZE), 3: ("mem64", VF_BAR_SIZE)}
    spans = sorted((host.bases[i], host.bases[i] + TOTAL_VFS * VF_BAR_SIZE) for i in host.bars)
    assert all(WINDOW[0] <= lo and hi <= WINDOW[1] and lo % VF_BAR_SIZE == 0 for lo, hi in spans)
    assert spans[0][1] <= spans[1][0]
    vfs = host.enable_vfs(8)
    assert [vf.bdf for vf in vfs] == vf_slots(bus) == [expected_bdf(Bdf(PF_BUS, 0, 0), n) for n in range(8)]
    assert {(vf.vendor, vf.device) for vf in vfs} == {(0x8086, VF_DEVICE_ID)}
    assert decoded == {(vf.index, i): (address, size) for vf in vfs for i, (_, address, size) in vf.bars.items()}
    with pytest.raises(ValueError, match="8 VFs already enabled"):
        host.enable_vfs(4)
    assert host.enable_vfs(0) == [] and vf_slots(bus) == [] and read(pf, sriov, s.PCI_SRIOV_NUM_VF, 2) == 0
    assert all(address is None for address, _ in decoded.values())
    assert len(host.enable_vfs(4)) == 4 == len(vf_slots(bus))


def test_host_page_size_follows_the_host():
    """A 64 KiB-page host picks 64 KiB System Pages and so gets 64 KiB VF BARs."""
    _, pf, sriov = setup()
    host = HostSriov(pf, Bdf(PF_BUS, 0, 0), WINDOW, host_page_size=0x10000)
    assert read(pf, sriov, s.PCI_SRIOV_SYS_PGSIZE, 4) == 1 << 4
    assert host.bars == {0: ("mem64", 0x10000), 3: ("mem64", 0x10000)}


def test_host_window_exhausted():
    """VF BAR apertures that overflow the window are a clear VfResourceError."""
    _, pf, _ = setup()
    with pytest.raises(VfResourceError, match="VF BAR"):
        HostSriov(pf, Bdf(PF_BUS, 0, 0), (WINDOW[0], WINDOW[0] + TOTAL_VFS * VF_BAR_SIZE))


def test_host_needs_the_capability():
    """A function without SR-IOV is refused by name."""
    fn = PciFunction(0x8086, 0x10D3, 0)
    with pytest.raises(ValueError, match="no SR-IOV capability"):
        HostSriov(fn, Bdf(0, 3, 0), WINDOW)


# --- wiring checks -----------------------------------------------------------------------
def test_routing_off_the_bus_refused():
    """A First VF Offset that would carry VFs past the PF's bus (0x180 from 03:00.0) is refused at wiring."""
    with pytest.raises(ValueError, match="off bus 03"):
        setup(SriovParams(TOTAL_VFS, VF_DEVICE_ID, 0x180, 2, VF_BARS))


def test_params_checks():
    """I/O or overlapping VF BARs, a zero stride, missing mandatory page sizes and an unplugged PF are refused."""
    for bad in (dict(vf_bars=(Bar(0, 0x100, "io"),)),
                dict(vf_bars=(Bar(0, 0x4000, "mem64"), Bar(1, 0x4000, "mem32"))),
                dict(vf_stride=0), dict(supported_page_sizes=0x1)):
        with pytest.raises(ValueError):
            SriovParams(**{**dict(total_vfs=8, vf_device_id=1, first_vf_offset=0x80, vf_stride=2), **bad})
    with pytest.raises(ValueError, match="attach the PF"):
        add_sriov(PciFunction(1, 2, 0), PciBus(), make_vf, X82599)


def test_factory_must_match_vf_bars():
    """A factory whose VF declares other BARs than the PF's VF BARs is caught at VF Enable."""
    def wrong(n: int) -> PciFunction:
        return PciFunction(0x8086, VF_DEVICE_ID, 0, bars=[Bar(0, 0x8000, "mem32")])
    bus = PciBus(PF_BUS)
    pf, sriov = plug_pf(bus, factory=wrong)
    with pytest.raises(ValueError, match="VF BARs"):
        enable(pf, sriov, 1)


# --- hostile configuration writes ------------------------------------------------------
_WRITES = st.lists(st.one_of(
    st.tuples(st.just(s.PCI_SRIOV_NUM_VF), st.just(2), st.integers(0, 80)),
    st.tuples(st.just(s.PCI_SRIOV_CTRL), st.just(2), st.integers(0, 0xFFFF)),
    st.tuples(st.just(s.PCI_SRIOV_SYS_PGSIZE), st.just(4), st.sampled_from([1 << i for i in range(13)])),
    st.tuples(st.sampled_from([s.pci_sriov_bar(i) for i in range(6)]), st.just(4), st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.integers(-4, 0x44), st.sampled_from([1, 2, 4]), st.integers(0, 0xFFFFFFFF)),
), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_WRITES)
def test_random_capability_writes(writes):
    """Random writes never raise; VFs are on the bus only while VF Enable is set, NumVFs of them, at their IDs."""
    bus, pf, sriov = setup()
    decoded: dict[tuple[int, int], int | None] = {}
    sriov.on_vf_bar_change(lambda n, index, address, size: decoded.__setitem__((n, index), address))
    read_only = [r for r in s.PCI_SRIOV_CAP_REGS if r.access == "ro"]
    before = {r.name: read(pf, sriov, r.offset, r.width) for r in read_only}
    for offset, size, value in writes:
        write(pf, sriov, offset, size, value)
        num = read(pf, sriov, s.PCI_SRIOV_NUM_VF, 2)
        on = read(pf, sriov, s.PCI_SRIOV_CTRL, 2) & s.PCI_SRIOV_CTRL_VFE
        assert num <= TOTAL_VFS
        assert vf_slots(bus) == ([expected_bdf(Bdf(PF_BUS, 0, 0), n) for n in range(num)] if on else [])
        assert len(bus.functions()) == 1 + len(vf_slots(bus))
        live = {key: address for key, address in decoded.items() if address is not None}
        assert live == {(n, i): sriov.vf_bar_address(n, i) for n in range(len(sriov.vfs)) for i in sriov.vf_bars
                        if sriov.vf_bar_address(n, i) is not None}
    assert {r.name: read(pf, sriov, r.offset, r.width) for r in read_only} == before
