"""PCI layer: configuration space masks, BAR sizing, capability lists, MSI /
MSI-X, configuration mechanism #1, and the guest's enumeration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovirt.guest.pci import PciEnumerator, PciResourceError
from iovirt.pci import Bar, HostBridge, PciBus, PciFunction
from iovirt.spec import pci as s
from iovirt.spec.pci import Bdf


def nic(**kw) -> PciFunction:
    """An 82574-like endpoint: MMIO, I/O and a 64-bit MSI-X BAR."""
    bars = [Bar(0, 0x20000, "mem32"), Bar(2, 0x20, "io"), Bar(3, 0x4000, "mem64")]
    return PciFunction(0x8086, 0x10D3, s.PCI_CLASS_NETWORK_ETHERNET << 8, bars=bars, **kw)


def full_nic() -> PciFunction:
    fn = nic()
    fn.add_msi(vectors=4)
    fn.add_msix(table_bar=3, table_offset=0, pba_bar=3, pba_offset=0x2000, vectors=5)
    fn.add_pcie_endpoint()
    fn.add_ext_capability(s.PCI_EXT_CAP_ID_ARI, 1, s.PCI_EXT_CAP_ARI_SIZEOF)
    return fn


def size_bar(fn: PciFunction, index: int) -> int:
    reg = s.pci_base_address(index)
    fn.config_write(reg, 4, 0xFFFFFFFF)
    return fn.config_read(reg, 4)


def conf1_read(hb: HostBridge, bdf: Bdf, reg: int, size: int) -> int:
    hb.pio_write(s.PCI_CONF1_ADDRESS_PORT, 4, s.pci_conf1_address(bdf, reg))
    return hb.pio_read(s.PCI_CONF1_DATA_PORT + (reg & 3), size)


# --- BARs ----------------------------------------------------------------------
def test_bar_sizing_mem32():
    """A 128 KiB 32-bit BAR reads back 0xFFFE0000 with type bits 0 after all ones."""
    assert size_bar(nic(), 0) == 0xFFFE0000


def test_bar_sizing_io():
    """A 32-byte I/O BAR reads back 0xFFFFFFE1: size mask plus the I/O space bit."""
    assert size_bar(nic(), 2) == 0xFFFFFFE0 | s.PCI_BASE_ADDRESS_SPACE_IO


def test_bar_sizing_mem64():
    """A 64-bit BAR spans two registers: low has the type (and prefetch) bits, high the upper mask."""
    fn = nic()
    assert size_bar(fn, 3) == 0xFFFFC000 | s.PCI_BASE_ADDRESS_MEM_TYPE_64
    assert size_bar(fn, 4) == 0xFFFFFFFF
    big = PciFunction(1, 2, 0, bars=[Bar(0, 1 << 33, "mem64", prefetchable=True)])
    assert size_bar(big, 1) == 0xFFFFFFFE
    assert size_bar(big, 0) == s.PCI_BASE_ADDRESS_MEM_TYPE_64 | s.PCI_BASE_ADDRESS_MEM_PREFETCH


def test_unimplemented_bar_reads_zero():
    """A BAR the device did not declare is hardwired to zero."""
    assert size_bar(nic(), 1) == 0 and size_bar(nic(), 5) == 0


def test_bar_declaration_checks():
    """Sizes must be powers of two in range and registers may not overlap."""
    with pytest.raises(ValueError):
        Bar(0, 0x3000, "mem32")
    with pytest.raises(ValueError):
        Bar(0, 512, "io")
    with pytest.raises(ValueError):
        Bar(5, 0x1000, "mem64")
    with pytest.raises(ValueError):
        PciFunction(1, 2, 0, bars=[Bar(0, 0x1000, "mem64"), Bar(1, 0x1000, "mem32")])


def test_bar_change_reports_decode():
    """on_bar_change reports the address once decoding is on, and None when it goes off."""
    fn, seen = nic(), []
    fn.on_bar_change(lambda *event: seen.append(event))
    fn.config_write(s.pci_base_address(0), 4, 0xFEB00000)
    assert seen == []
    fn.config_write(s.PCI_COMMAND, 2, s.PCI_COMMAND_MEMORY)
    assert (0, "mem32", 0xFEB00000, 0x20000) in seen and (3, "mem64", 0, 0x4000) in seen
    fn.config_write(s.PCI_COMMAND, 2, 0)
    assert seen[-2:] == [(0, "mem32", None, 0x20000), (3, "mem64", None, 0x4000)]


def test_bus_master_notification():
    """Toggling PCI_COMMAND_MASTER notifies subscribers and gates bus_master."""
    fn, seen = nic(), []
    fn.on_bus_master(seen.append)
    fn.config_write(s.PCI_COMMAND, 2, s.PCI_COMMAND_MASTER)
    fn.config_write(s.PCI_COMMAND, 2, s.PCI_COMMAND_MASTER | s.PCI_COMMAND_MEMORY)
    fn.config_write(s.PCI_COMMAND, 2, 0)
    assert seen == [True, False] and not fn.bus_master


# --- read-only and W1C ---------------------------------------------------------
def test_read_only_fields_hold():
    """IDs, class, header type, capability pointer and pin ignore guest writes."""
    fn = full_nic()
    before = {reg: fn.config_read(reg, 4) for reg in (0x00, 0x08, 0x0C, 0x2C, 0x34)}
    for reg in before:
        fn.config_write(reg, 4, 0xFFFFFFFF)
        fn.config_write(reg, 4, 0)
    assert fn.config_read(s.PCI_VENDOR_ID, 2) == 0x8086 and fn.config_read(s.PCI_DEVICE_ID, 2) == 0x10D3
    assert fn.config_read(s.PCI_CLASS_REVISION, 4) == before[0x08]
    assert fn.config_read(s.PCI_CAPABILITY_LIST, 1) == 0x40
    fn.config_write(s.PCI_INTERRUPT_LINE, 2, 0xFF0B)
    assert fn.config_read(s.PCI_INTERRUPT_LINE, 1) == 0x0B and fn.config_read(s.PCI_INTERRUPT_PIN, 1) == 1
    fn.config_write(s.PCI_COMMAND, 2, 0xFFFF)
    assert fn.config_read(s.PCI_COMMAND, 2) == s.PCI_COMMAND_BITS


def test_status_is_write_one_to_clear():
    """STATUS error bits clear on a 1, ignore a 0, and CAP_LIST/INTERRUPT are read-only."""
    fn = full_nic()
    fn.config.set_bits(s.PCI_STATUS, 2, s.PCI_STATUS_REC_MASTER_ABORT | s.PCI_STATUS_SIG_TARGET_ABORT, True)
    fn.set_intx(True)
    fn.config_write(s.PCI_STATUS, 2, 0)
    assert fn.config_read(s.PCI_STATUS, 2) & s.PCI_STATUS_REC_MASTER_ABORT
    fn.config_write(s.PCI_STATUS, 2, s.PCI_STATUS_REC_MASTER_ABORT)
    status = fn.config_read(s.PCI_STATUS, 2)
    assert not status & s.PCI_STATUS_REC_MASTER_ABORT and status & s.PCI_STATUS_SIG_TARGET_ABORT
    fn.config_write(s.PCI_STATUS, 2, 0xFFFF)
    assert fn.config_read(s.PCI_STATUS, 2) == s.PCI_STATUS_CAP_LIST | s.PCI_STATUS_INTERRUPT


def test_out_of_range_reads_all_ones():
    """Reads past 4 KiB or across a DWORD return all ones; such writes change nothing."""
    fn = nic()
    assert fn.config_read(0x1000, 4) == 0xFFFFFFFF and fn.config_read(0x0FFF, 2) == 0xFFFF
    assert fn.config_read(0x03, 2) == 0xFFFF and fn.config_read(0, 3) == 0xFFFFFF
    assert fn.config.write(0x1000, 4, 0) is False


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-8, 0x1010), st.sampled_from([0, 1, 2, 3, 4, 8]),
                          st.integers(0, (1 << 64) - 1)), max_size=60))
def test_config_writes_never_change_read_only_bits(writes):
    """Any sequence of guest config writes leaves every read-only bit as it was and never raises."""
    fn = full_nic()
    cfg = fn.config
    read_only = bytes(~(w | c) & 0xFF for w, c in zip(cfg.wmask, cfg.w1cmask))
    before = bytes(cfg.data)
    for offset, size, value in writes:
        fn.config_write(offset, size, value)
    assert all((a ^ b) & ro == 0 for a, b, ro in zip(before, cfg.data, read_only))


# --- capability lists ----------------------------------------------------------
def test_capability_chain_walk():
    """The list from CAPABILITIES_PTR visits MSI, MSI-X, PCIe in order and ends at 0."""
    fn = full_nic()
    assert fn.config_read(s.PCI_STATUS, 2) & s.PCI_STATUS_CAP_LIST
    chain, offset = [], fn.config_read(s.PCI_CAPABILITY_LIST, 1)
    while offset:
        chain.append((fn.config_read(offset, 1), offset))
        offset = fn.config_read(offset + s.PCI_CAP_LIST_NEXT, 1)
    assert [cap for cap, _ in chain] == [s.PCI_CAP_ID_MSI, s.PCI_CAP_ID_MSIX, s.PCI_CAP_ID_EXP]
    assert all(off % 4 == 0 and off >= 0x40 for _, off in chain)
    exp = chain[2][1]
    assert fn.config_read(exp + s.PCI_EXP_FLAGS, 2) & s.PCI_EXP_FLAGS_VERS == 2
    assert fn.config_read(exp + s.PCI_EXP_FLAGS, 2) & s.PCI_EXP_FLAGS_TYPE == s.PCI_EXP_TYPE_ENDPOINT << 4
    assert fn.config_read(chain[1][1] + s.PCI_MSIX_FLAGS, 2) & s.PCI_MSIX_FLAGS_QSIZE == 4
    assert fn.config_read(chain[1][1] + s.PCI_MSIX_PBA, 4) == 0x2000 | 3


def test_extended_capability_chain():
    """Extended capabilities start at 0x100 and link through 12-bit next pointers."""
    fn = full_nic()
    sriov = fn.add_ext_capability(s.PCI_EXT_CAP_ID_SRIOV, 1, s.PCI_EXT_CAP_SRIOV_SIZEOF)
    hb = HostBridge()
    bdf = hb.bus.attach(fn, 4)
    chain, offset = [], s.PCI_EXT_CAP_START
    while offset:
        header = hb.ecam_read(s.pci_ecam_offset(bdf, offset), 4)
        chain.append((s.PCI_EXT_CAP_ID(header), s.PCI_EXT_CAP_VER(header), offset))
        offset = s.PCI_EXT_CAP_NEXT(header)
    assert chain == [(s.PCI_EXT_CAP_ID_ARI, 1, 0x100), (s.PCI_EXT_CAP_ID_SRIOV, 1, sriov)]
    assert nic().config_read(s.PCI_EXT_CAP_START, 4) == 0


# --- configuration mechanism #1 ------------------------------------------------
def test_cf8_cfc_byte_word_dword():
    """CONFIG_DATA at 0xCFC+n reads register+n at byte, word and dword size."""
    hb = HostBridge()
    bdf = hb.bus.attach(nic(), 3)
    hb.pio_write(s.PCI_CONF1_ADDRESS_PORT, 4, s.pci_conf1_address(bdf, s.PCI_VENDOR_ID))
    assert hb.pio_read(0xCFC, 4) == 0x10D38086
    assert hb.pio_read(0xCFC, 1) == 0x86 and hb.pio_read(0xCFD, 1) == 0x80
    assert hb.pio_read(0xCFE, 2) == 0x10D3 and hb.pio_read(0xCFF, 1) == 0x10
    assert hb.pio_read(0xCFD, 2) == 0xD380
    assert conf1_read(hb, bdf, s.PCI_INTERRUPT_PIN, 1) == 1


def test_cf8_latches_only_dword_writes():
    """CONFIG_ADDRESS latches full DWORD writes only; reserved bits read 0."""
    hb = HostBridge()
    hb.pio_write(s.PCI_CONF1_ADDRESS_PORT, 4, 0xFFFFFFFF)
    assert hb.pio_read(s.PCI_CONF1_ADDRESS_PORT, 4) == s.PCI_CONF1_ADDRESS_MASK
    hb.pio_write(s.PCI_CONF1_ADDRESS_PORT, 2, 0)
    assert hb.pio_read(s.PCI_CONF1_ADDRESS_PORT, 4) == s.PCI_CONF1_ADDRESS_MASK


def test_cfc_write_reaches_function():
    """A word write at 0xCFE lands on register+2 of the addressed function."""
    hb, fn = HostBridge(), nic()
    bdf = hb.bus.attach(fn, 3)
    hb.pio_write(s.PCI_CONF1_ADDRESS_PORT, 4, s.pci_conf1_address(bdf, s.PCI_CACHE_LINE_SIZE))
    hb.pio_write(0xCFC, 1, 0x10)
    hb.pio_write(s.PCI_CONF1_ADDRESS_PORT, 4, s.pci_conf1_address(bdf, s.PCI_INTERRUPT_LINE))
    hb.pio_write(0xCFC, 1, 11)
    assert fn.config_read(s.PCI_CACHE_LINE_SIZE, 1) == 0x10 and fn.config_read(s.PCI_INTERRUPT_LINE, 1) == 11


def test_absent_function_reads_all_ones():
    """Absent slots, other buses and a cleared enable bit all read as all ones."""
    hb = HostBridge()
    for size, ones in ((1, 0xFF), (2, 0xFFFF), (4, 0xFFFFFFFF)):
        assert conf1_read(hb, Bdf(0, 7, 0), 0, size) == ones
        assert conf1_read(hb, Bdf(1, 0, 0), 0, size) == ones
    hb.pio_write(s.PCI_CONF1_ADDRESS_PORT, 4, 0)
    assert hb.pio_read(0xCFC, 4) == 0xFFFFFFFF
    assert conf1_read(hb, Bdf(0, 0, 0), 0, 4) == s.PCI_DEVICE_ID_INTEL_82441 << 16 | s.PCI_VENDOR_ID_INTEL


def test_bus_attach():
    """attach returns the BDF, sets the multi-function bit, and refuses a taken slot."""
    bus = PciBus()
    first, second = nic(), nic()
    assert bus.attach(second, 5, 1) == Bdf(0, 5, 1) and str(Bdf(0, 5, 1)) == "00:05.1"
    bus.attach(first, 5, 0)
    assert first.config_read(s.PCI_HEADER_TYPE, 1) == s.PCI_HEADER_TYPE_MFD
    assert bus.lookup(5, 1) is second and bus.lookup(6) is None
    with pytest.raises(ValueError):
        bus.attach(nic(), 5, 1)


# --- guest enumeration ---------------------------------------------------------
def test_guest_enumeration_assigns_bars():
    """Enumeration finds both functions, assigns aligned disjoint BARs, and on_bar_change reports them."""
    hb = HostBridge()
    functions = [full_nic(), nic()]
    seen: dict[tuple[int, int], tuple] = {}
    for number, fn in enumerate(functions):
        fn.on_bar_change(lambda i, kind, addr, size, n=number: seen.__setitem__((n, i), (kind, addr, size)))
        hb.bus.attach(fn, 3, number)
    guest = PciEnumerator(hb)
    devices = guest.scan()
    assert [str(d.bdf) for d in devices] == ["00:00.0", "00:03.0", "00:03.1"]
    assert guest.find(s.PCI_VENDOR_ID_INTEL, s.PCI_DEVICE_ID_INTEL_82441).class_code == 0x060000
    ranges = []
    for number, info in enumerate(devices[1:]):
        assert info.caps == ({s.PCI_CAP_ID_MSI: 0x40, s.PCI_CAP_ID_MSIX: 0x58, s.PCI_CAP_ID_EXP: 0x64}
                             if number == 0 else {})
        assert info.irq_pin == 1 and info.irq_line == s.PCI_PIRQ_IRQS[s.pci_swizzle(3, 1)]
        for index, (kind, address, size) in info.bars.items():
            window = (0xC000, 0x10000) if kind == "io" else (0xFE000000, 0xFEC00000)
            assert address % size == 0 and window[0] <= address < window[1]
            assert seen[number, index] == (kind, address, size)
            ranges.append((kind == "io", address, address + size))
        assert functions[number].bus_master
    ranges.sort()
    assert all(a[0] != b[0] or a[2] <= b[1] for a, b in zip(ranges, ranges[1:]))


def test_guest_enumeration_window_exhausted():
    """A BAR larger than the MMIO window is a clear PciResourceError."""
    hb = HostBridge()
    hb.bus.attach(PciFunction(1, 2, 0, bars=[Bar(0, 1 << 30, "mem32")]), 1)
    with pytest.raises(PciResourceError):
        PciEnumerator(hb).scan()


def test_a_card_that_does_not_fit_gives_back_what_it_was_given_and_one_that_left_makes_room():
    """Hot plug into a window with room for one nic(): a card whose second BAR does not fit is
    refused and its first BAR's range goes back; the card that fits, once removed, leaves its
    ranges to the next card in the slot."""
    hb = HostBridge()
    guest = PciEnumerator(hb, mmio_window=(0xFE000000, 0xFE000000 + 0x20000 + 0x4000))
    guest.scan()
    hb.bus.attach(PciFunction(1, 2, 0, bars=[Bar(0, 0x20000, "mem32"), Bar(1, 0x8000, "mem32")]), 4)
    with pytest.raises(PciResourceError):
        guest.scan_slot(4)
    hb.bus.detach(4, 0)
    hb.bus.attach(nic(), 5)
    (first,) = guest.scan_slot(5)
    hb.bus.detach(5, 0)
    guest.remove_slot(5)
    hb.bus.attach(nic(), 6)
    (second,) = guest.scan_slot(6)
    assert {i: b[1:] for i, b in second.bars.items()} == {i: b[1:] for i, b in first.bars.items()}


# --- interrupts ----------------------------------------------------------------
def enable_msix(fn: PciFunction, flags: int = s.PCI_MSIX_FLAGS_ENABLE) -> None:
    fn.config_write(fn.msix.cap + s.PCI_MSIX_FLAGS, 2, flags)


def test_msix_masked_vector_pends_then_delivers():
    """A masked MSI-X vector sets its PBA bit and is delivered on unmask."""
    fn, delivered = full_nic(), []
    fn.on_msi(lambda address, data: delivered.append((address, data)))
    msix = fn.msix
    entry = 2 * s.PCI_MSIX_ENTRY_SIZE
    msix.write(3, entry + s.PCI_MSIX_ENTRY_LOWER_ADDR, 4, 0xFEE01000)
    msix.write(3, entry + s.PCI_MSIX_ENTRY_DATA, 4, 0x4041)
    enable_msix(fn)
    assert fn.interrupt_mode == "msix" and msix.read(3, entry + s.PCI_MSIX_ENTRY_VECTOR_CTRL, 4) == 1
    assert fn.notify(2) is None and msix.read(3, 0x2000, 8) == 1 << 2
    msix.write(3, entry + s.PCI_MSIX_ENTRY_VECTOR_CTRL, 4, 0)
    assert delivered == [(0xFEE01000, 0x4041)] and msix.read(3, 0x2000, 8) == 0
    assert fn.notify(2) == (0xFEE01000, 0x4041)


def test_msix_function_mask():
    """Function Mask holds every vector pending until it is cleared."""
    fn, delivered = full_nic(), []
    fn.on_msi(lambda address, data: delivered.append(data))
    for vector in (0, 4):
        fn.msix.write(3, vector * 16 + s.PCI_MSIX_ENTRY_DATA, 4, 0x30 + vector)
        fn.msix.write(3, vector * 16 + s.PCI_MSIX_ENTRY_VECTOR_CTRL, 4, 0)
    enable_msix(fn, s.PCI_MSIX_FLAGS_ENABLE | s.PCI_MSIX_FLAGS_MASKALL)
    assert fn.notify(0) is None and fn.notify(4) is None and fn.msix.pending(4)
    enable_msix(fn)
    assert delivered == [0x30, 0x34]


def test_msix_window_routing():
    """contains() covers the table and PBA; the PBA ignores writes; stray sizes read all ones."""
    msix = full_nic().msix
    assert msix.contains(3, 0) and msix.contains(3, 5 * 16 - 4) and not msix.contains(3, 5 * 16)
    assert msix.contains(3, 0x2000) and not msix.contains(0, 0)
    msix.write(3, 0x2000, 8, ~0)
    assert msix.read(3, 0x2000, 8) == 0 and msix.read(3, 0x0, 2) == 0xFFFF


def test_msi_vectors_and_mask():
    """MSI puts the vector in the low data bits and holds a masked vector pending."""
    fn, delivered = full_nic(), []
    fn.on_msi(lambda address, data: delivered.append((address, data)))
    cap = fn.msi.cap
    fn.config_write(cap + s.PCI_MSI_ADDRESS_LO, 4, 0xFEE00000)
    fn.config_write(cap + s.PCI_MSI_ADDRESS_HI, 4, 0)
    fn.config_write(cap + s.PCI_MSI_DATA_64, 2, 0x4060)
    fn.config_write(cap + s.PCI_MSI_FLAGS, 2, s.PCI_MSI_FLAGS_ENABLE | 2 << 4)
    assert fn.config_read(cap + s.PCI_MSI_FLAGS, 2) & s.PCI_MSI_FLAGS_QMASK == 2 << 1
    assert fn.interrupt_mode == "msi" and fn.notify(3) == (0xFEE00000, 0x4063)
    fn.config_write(cap + s.PCI_MSI_MASK_64, 4, 1 << 1)
    assert fn.notify(1) is None and fn.config_read(cap + s.PCI_MSI_PENDING_64, 4) == 1 << 1
    fn.config_write(cap + s.PCI_MSI_MASK_64, 4, 0)
    assert delivered == [(0xFEE00000, 0x4061)] and fn.config_read(cap + s.PCI_MSI_PENDING_64, 4) == 0


def test_intx_follows_command_and_msix():
    """INTx is driven only in INTx mode and while PCI_COMMAND_INTX_DISABLE is clear."""
    fn, line = full_nic(), []
    fn.on_intx(line.append)
    fn.set_intx(True)
    fn.config_write(s.PCI_COMMAND, 2, s.PCI_COMMAND_INTX_DISABLE)
    fn.config_write(s.PCI_COMMAND, 2, 0)
    enable_msix(fn)
    assert line == [True, False, True, False] and fn.notify(0) is None
    enable_msix(fn, 0)
    assert line[-1] is True and fn.interrupt_mode == "intx"
