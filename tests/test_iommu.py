"""VT-d IOMMU: tables in host memory as the spec lays them out, IOTLB hits and
misses and what they cost, invalidation, fault recording with no byte moved,
interrupt remapping and posting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovirt.hypervisor.iommu import Fault, Iommu
from iovirt.mem.dma import Dma, DmaFault
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import vtd
from iovirt.spec.pci import Bdf
from iovirt.spec.vtd import PAGE_2M, PAGE_4K

PROFILE = load_profile("default")
NIC = Bdf(3, 0, 0)
OTHER = Bdf(3, 0, 1)


def make(iotlb_entries: int = 64, levels: int = 4, **kw) -> tuple[Iommu, Resource]:
    engine = Resource("nic", "nic", Ledger(PROFILE))
    return Iommu(GuestMemory(2 << 20), engine, iotlb_entries=iotlb_entries, levels=levels, **kw), engine


def assigned(size: int = 8 << 20, page_size: int = PAGE_4K, **kw) -> tuple[Iommu, Resource, GuestMemory]:
    """A VM's memory mapped 1:1 into domain 1, the NIC attached to it."""
    iommu, engine = make(**kw)
    vm = GuestMemory(size)
    iommu.attach(NIC, 1)
    iommu.map(1, 0, 0, size, page_size=page_size)
    return iommu, engine, vm


def walk(iommu: Iommu, bdf: Bdf, iova: int) -> list[tuple[int, int]]:
    """Read root, context and second-level entries back with the spec layouts:
    (address, entry) per level walked."""
    buf = iommu.mem.buf
    lo, _ = vtd.ROOT_ENTRY.unpack_from(buf, iommu.root + bdf.bus * 16)
    ctx_lo, _, _ = vtd.CONTEXT_ENTRY.unpack_from(buf, (lo & vtd.ADDR_MASK) + (bdf.device << 3 | bdf.function) * 16)
    table, entries = ctx_lo & vtd.ADDR_MASK, []
    for level in range(iommu.levels, 0, -1):
        at = table + (iova >> (12 + 9 * (level - 1)) & 511) * 8
        entry, = vtd.SL_ENTRY.unpack_from(buf, at)
        entries.append((at, entry))
        if entry & vtd.SL_PS:
            break
        table = entry & vtd.ADDR_MASK
    return entries


def sweep(translate, pages: list[int], rounds: int) -> None:
    for _ in range(rounds):
        for page in pages:
            translate(page, 64, False)


# ---- structures in memory ---------------------------------------------------------


@pytest.mark.parametrize("levels, aw", [(3, vtd.AW_39), (4, vtd.AW_48)])
def test_root_and_context_entries_are_in_host_memory_as_laid_out(levels, aw):
    """attach writes a present root entry for the bus and a context entry
    (P, TT multi-level, AW for the table depth, DID) for the devfn."""
    iommu, _ = make(levels=levels)
    bdf = Bdf(2, 3, 1)
    iommu.attach(bdf, 7)
    lo, hi = vtd.ROOT_ENTRY.unpack_from(iommu.mem.buf, iommu.root + 2 * 16)
    assert lo & vtd.ROOT_P and hi == 0
    ctx_lo, ctx_aw, did = vtd.CONTEXT_ENTRY.unpack_from(iommu.mem.buf, (lo & vtd.ADDR_MASK) + (3 << 3 | 1) * 16)
    assert ctx_lo & vtd.CTX_P and not ctx_lo & vtd.CTX_FPD
    assert ctx_lo >> vtd.CTX_TT_SHIFT & 3 == vtd.TT_MULTI_LEVEL
    assert ctx_aw & vtd.CTX_AW_MASK == aw and did == 7
    assert ctx_lo & vtd.ADDR_MASK and ctx_lo & vtd.ADDR_MASK % PAGE_4K == 0


def test_page_table_entries_carry_permissions_superpage_bit_and_address():
    """A 4 KiB read-only page is an SL-PTE with R only; a 2 MiB page an SL-PDE with PS, R and W."""
    iommu, _ = make()
    iommu.attach(NIC, 1)
    iommu.map(1, 0x5000, 0x9000, PAGE_4K, write=False)
    iommu.map(1, 0x4000_0000, 0x20_0000, PAGE_2M, page_size=PAGE_2M)
    *upper, (_, pte) = walk(iommu, NIC, 0x5000)
    assert len(upper) == 3 and all(e & vtd.SL_RW == vtd.SL_RW for _, e in upper)
    assert pte & vtd.SL_RW == vtd.SL_R and not pte & vtd.SL_PS and pte & vtd.ADDR_MASK == 0x9000
    *upper, (_, pde) = walk(iommu, NIC, 0x4000_0000 + 0x1234)
    assert len(upper) == 2 and pde & vtd.SL_PS and pde & vtd.SL_RW == vtd.SL_RW
    assert pde & vtd.ADDR_MASK == 0x20_0000


def test_map_uses_superpages_only_where_both_addresses_are_aligned():
    """Asked for 2 MiB pages over an unaligned range, map fills the ends with 4 KiB pages."""
    iommu, _ = make()
    iommu.attach(NIC, 1)
    iommu.map(1, PAGE_2M - PAGE_4K, PAGE_2M - PAGE_4K, 2 * PAGE_2M, page_size=PAGE_2M)
    assert not walk(iommu, NIC, PAGE_2M - PAGE_4K)[-1][1] & vtd.SL_PS
    assert walk(iommu, NIC, PAGE_2M)[-1][1] & vtd.SL_PS
    assert not walk(iommu, NIC, 2 * PAGE_2M)[-1][1] & vtd.SL_PS
    assert iommu.translate(NIC, 2 * PAGE_2M + 8, 4, True) == 2 * PAGE_2M + 8


def test_overlapping_map_is_refused_and_leaves_earlier_mappings():
    """Mapping over a present page raises and undoes the part of the new range it had mapped."""
    iommu, _ = make()
    iommu.attach(NIC, 1)
    iommu.map(1, 0x3000, 0x3000, PAGE_4K)
    with pytest.raises(ValueError, match="already mapped"):
        iommu.map(1, 0, 0x10_0000, 0x8000)
    assert iommu.translate(NIC, 0x3000, 4, True) == 0x3000
    with pytest.raises(DmaFault):
        iommu.translate(NIC, 0x1000, 4, True)


def test_irte_and_posted_descriptor_layouts():
    """Remapped and posted IRTEs and the PI descriptor parse back field by field."""
    iommu, _ = make()
    iommu.set_irte(5, vector=0x31, dest=0x12, sid=NIC)
    flags, vector, dst, sid, sq_svt = vtd.IRTE.unpack_from(iommu.mem.buf, iommu.irta + 5 * 16)
    assert flags & vtd.IRTE_P and not flags & vtd.IRTE_IM
    assert (vector, dst, sid, sq_svt >> vtd.SVT_SHIFT) == (0x31, 0x12, vtd.source_id(NIC), vtd.SVT_SID)
    pda = iommu.pi_desc(nv=0xF2, ndst=4)
    assert pda % 64 == 0 and vtd.PI_DESC.unpack_from(iommu.mem.buf, pda) == (0, 0, 0, 0, 0, 0xF2, 4)
    iommu.set_posted_irte(6, vector=0x41, pda=pda, urgent=True)
    flags, vector, pda_lo, _, _, pda_hi = vtd.IRTE_POSTED.unpack_from(iommu.mem.buf, iommu.irta + 6 * 16)
    assert flags & vtd.IRTE_IM and flags & vtd.IRTE_URG and vector == 0x41
    assert pda_lo & vtd.PDA_LO_MASK | pda_hi << 32 == pda


# ---- IOTLB and what it costs ----------------------------------------------------------


def test_a_miss_walks_then_the_same_page_hits_each_charging_its_event():
    """The first DMA to a page walks the tables (iotlb_miss), the next hits (iotlb_hit)."""
    iommu, engine, _ = assigned()
    iommu.translate(NIC, 0x2000, 64, True)
    iommu.translate(NIC, 0x2100, 64, False)
    assert (iommu.stats["misses"], iommu.stats["hits"]) == (1, 1)
    assert engine.acct["iotlb_miss"] == engine.acct["iotlb_hit"] == 1
    assert engine.busy_ns == pytest.approx(PROFILE.fixed_ns["iotlb_miss"] + PROFILE.fixed_ns["iotlb_hit"])


def test_translator_charges_the_resource_it_is_given():
    """A translator bound to a DMA engine charges that engine, not the IOMMU's default."""
    iommu, default, _ = assigned()
    engine = Resource("vf0", "nic", default.ledger)
    iommu.translator(NIC, engine)(0x1000, 8, False)
    assert engine.acct["iotlb_miss"] == 1 and default.busy_ns == 0


def test_working_set_beyond_the_iotlb_misses_more_and_costs_more():
    """Same number of DMAs: a working set larger than the IOTLB misses more, and the engine is busier."""
    results = []
    for pages in (8, 64):
        iommu, engine, _ = assigned(iotlb_entries=16)
        sweep(iommu.translator(NIC), [i * PAGE_4K for i in range(pages)], 512 // pages)
        results.append((iommu.stats["misses"], engine.busy_ns))
    (fit_misses, fit_ns), (big_misses, big_ns) = results
    assert fit_misses < big_misses and fit_ns < big_ns


def test_superpages_take_fewer_misses_than_4k_pages_for_the_same_working_set():
    """Touching 4 MiB page by page: 2 MiB mappings miss once per superpage, 4 KiB ones once per page."""
    results = []
    for page_size in (PAGE_4K, PAGE_2M):
        iommu, engine, _ = assigned(page_size=page_size, iotlb_entries=16)
        sweep(iommu.translator(NIC), list(range(0, 4 << 20, PAGE_4K)), 2)
        results.append((iommu.stats["misses"], engine.busy_ns))
    (small_misses, small_ns), (super_misses, super_ns) = results
    assert super_misses < small_misses and super_ns < small_ns


def test_a_dma_spanning_pages_translates_each_page():
    """A transfer over three 4 KiB pages takes three walks and lands contiguously."""
    iommu, engine, vm = assigned()
    dma = Dma(vm, "dma", translate=iommu.translator(NIC, engine))
    data = bytes(range(256)) * 24
    dma.write(engine, 0x1F00, data)
    assert iommu.stats["misses"] == 3 and vm.read(0x1F00, len(data)) == data


def test_iotlb_is_lru():
    """With room for two entries, re-touching a page keeps it; the least recently used is evicted."""
    iommu, _, _ = assigned(iotlb_entries=2)
    translate = iommu.translator(NIC)
    for page in (0x1000, 0x2000, 0x1000, 0x3000, 0x1000):
        translate(page, 8, False)
    assert (iommu.stats["misses"], iommu.stats["hits"]) == (3, 2)
    translate(0x2000, 8, False)
    assert iommu.stats["misses"] == 4


# ---- invalidation ------------------------------------------------------------------------


def two_domains() -> tuple[Iommu, Resource]:
    iommu, engine = make()
    for bdf, domain in ((NIC, 1), (OTHER, 2)):
        iommu.attach(bdf, domain)
        iommu.map(domain, 0, 0, 4 * PAGE_2M, page_size=PAGE_2M if domain == 2 else PAGE_4K)
    return iommu, engine


def misses_after(iommu: Iommu, accesses: list[tuple[Bdf, int]]) -> list[bool]:
    result = []
    for bdf, iova in accesses:
        before = iommu.stats["misses"]
        iommu.translate(bdf, iova, 8, False)
        result.append(iommu.stats["misses"] > before)
    return result


def test_invalidation_forces_rewalks_at_its_granularity():
    """Page-selective drops one page of one domain, domain-selective all of that
    domain, global everything; whatever remains still hits."""
    iommu, _ = two_domains()
    accesses = [(NIC, 0x1000), (NIC, 0x5000), (OTHER, 0x1000), (OTHER, 3 * PAGE_2M)]
    misses_after(iommu, accesses)
    iommu.invalidate(1, 0x1000)
    assert misses_after(iommu, accesses) == [True, False, False, False]
    iommu.invalidate(2, 3 * PAGE_2M + 0x8000)
    assert misses_after(iommu, accesses) == [False, False, False, True]
    iommu.invalidate(2, 0, 4 * PAGE_2M)
    assert misses_after(iommu, accesses) == [False, False, True, True]
    iommu.invalidate(1)
    assert misses_after(iommu, accesses) == [True, True, False, False]
    iommu.invalidate()
    assert misses_after(iommu, accesses) == [True] * 4


def test_lazy_unmap_leaves_a_stale_iotlb_entry_until_invalidated():
    """Without the flush a cached translation outlives the unmap; strict unmap or invalidate ends it."""
    iommu, _, _ = assigned()
    iommu.translate(NIC, 0x1000, 8, True)
    iommu.unmap(1, 0x1000, PAGE_4K, flush=False)
    assert iommu.translate(NIC, 0x1000, 8, True) == 0x1000
    iommu.invalidate(1, 0x1000)
    with pytest.raises(DmaFault):
        iommu.translate(NIC, 0x1000, 8, True)
    iommu.translate(NIC, 0x2000, 8, True)
    iommu.unmap(1, 0x2000, PAGE_4K)
    with pytest.raises(DmaFault):
        iommu.translate(NIC, 0x2000, 8, True)


def test_access_rights_are_the_and_of_every_level():
    """A read-only upper-level entry makes every page below it read-only, whatever the leaf says."""
    iommu, engine, vm = assigned()
    pde_at, pde = walk(iommu, NIC, 0x1000)[-2]
    vtd.SL_ENTRY.pack_into(iommu.mem.buf, pde_at, pde & ~vtd.SL_W)
    assert iommu.translate(NIC, 0x1000, 8, False) == 0x1000
    faulting_write(iommu, engine, vm, NIC, 0x1000)


def test_unmap_refuses_to_split_a_superpage():
    """Unmapping 4 KiB out of a 2 MiB page is an error, not a silent half-unmap."""
    iommu, _, _ = assigned(page_size=PAGE_2M)
    with pytest.raises(ValueError, match="splits"):
        iommu.unmap(1, PAGE_4K, PAGE_4K)


# ---- faults ---------------------------------------------------------------------------------


def faulting_write(iommu: Iommu, engine: Resource, vm: GuestMemory, bdf: Bdf, addr: int) -> DmaFault:
    """A device write that must fault: returns the fault after checking no byte moved."""
    vm.take_dirty()
    copies = engine.acct["dma"]
    with pytest.raises(DmaFault) as exc:
        Dma(vm, "dma", translate=iommu.translator(bdf, engine)).write(engine, addr, b"\xAA" * 64)
    assert vm.take_dirty() == [] and engine.acct["dma"] == copies
    return exc.value


def test_unmapped_dma_faults_records_the_reason_and_moves_no_byte():
    """A write past the VM's mapped memory is refused with reason 5 and logged (SID, page, write)."""
    iommu, engine, _ = assigned(size=1 << 20)
    big = GuestMemory(2 << 20)
    exc = faulting_write(iommu, engine, big, NIC, (1 << 20) + 0x10)
    assert "write not allowed" in exc.reason
    assert iommu.take_faults() == [Fault(vtd.source_id(NIC), 1 << 20, vtd.FR_WRITE, True)]
    assert big.read(1 << 20, 0x100) == bytes(0x100)
    with pytest.raises(DmaFault):
        Dma(big, "dma", translate=iommu.translator(NIC)).read(engine, 3 << 19, 4)
    assert iommu.take_faults()[0].reason == vtd.FR_READ


def test_read_only_mapping_allows_reads_and_faults_writes():
    """DMA reads of a read-only page work; a write faults with reason 5."""
    iommu, engine = make()
    vm = GuestMemory(1 << 20)
    vm.write(0x3000, b"ro")
    iommu.attach(NIC, 1)
    iommu.map(1, 0x3000, 0x3000, PAGE_4K, write=False)
    assert Dma(vm, "dma", translate=iommu.translator(NIC)).read(engine, 0x3000, 2) == b"ro"
    faulting_write(iommu, engine, vm, NIC, 0x3000)
    assert [f.reason for f in iommu.take_faults()] == [vtd.FR_WRITE]
    assert vm.read(0x3000, 2) == b"ro"


def test_unattached_and_detached_devices_fault_at_root_or_context():
    """A bus without a context table faults at the root entry, an absent devfn at the context entry."""
    iommu, engine, vm = assigned()
    faulting_write(iommu, engine, vm, Bdf(9, 0, 0), 0x1000)
    faulting_write(iommu, engine, vm, OTHER, 0x1000)
    iommu.translate(NIC, 0x1000, 8, True)
    iommu.detach(NIC)
    faulting_write(iommu, engine, vm, NIC, 0x1000)
    assert [f.reason for f in iommu.take_faults()] == [vtd.FR_ROOT_ENTRY_P, vtd.FR_CONTEXT_ENTRY_P,
                                                       vtd.FR_CONTEXT_ENTRY_P]


def test_a_device_in_another_domain_cannot_reach_this_domains_memory():
    """Two VMs, two domains: each NIC's DMA lands in its own VM's memory and
    an address only the other domain maps faults."""
    iommu, engine = make()
    vm1, vm2 = GuestMemory(1 << 20), GuestMemory(1 << 20)
    iommu.attach(NIC, 1)
    iommu.map(1, 0, 0, vm1.size)
    iommu.attach(OTHER, 2)
    iommu.map(2, 0, 0, vm2.size // 2)
    Dma(vm1, "dma", translate=iommu.translator(NIC)).write(engine, 0xC0000, b"one")
    Dma(vm2, "dma", translate=iommu.translator(OTHER)).write(engine, 0x1000, b"two")
    assert vm1.read(0xC0000, 3) == b"one" and vm2.read(0x1000, 3) == b"two" and vm1.read(0x1000, 3) == bytes(3)
    faulting_write(iommu, engine, vm2, OTHER, 0xC0000)
    assert iommu.take_faults() == [Fault(vtd.source_id(OTHER), 0xC0000, vtd.FR_WRITE, True)]


def test_address_beyond_the_address_width_faults():
    """With a 3-level table (39-bit AGAW) an IOVA at 2^39 faults with reason 4."""
    iommu, _, _ = assigned(levels=3)
    with pytest.raises(DmaFault):
        iommu.translate(NIC, 1 << 39, 8, False)
    assert iommu.take_faults()[0].reason == vtd.FR_ADDR_BEYOND_MGAW


def test_fault_records_fill_then_overflow_and_fpd_blocks_without_recording():
    """NFR records fill, further faults only count as overflow; an FPD context faults silently."""
    iommu, _, _ = assigned(fault_records=2)
    for addr in (1 << 30, 2 << 30, 3 << 30):
        with pytest.raises(DmaFault):
            iommu.translate(NIC, addr, 8, True)
    assert len(iommu.take_faults()) == 2 and iommu.stats["fault_overflow"] == 1
    iommu.attach(OTHER, 1, fpd=True)
    with pytest.raises(DmaFault):
        iommu.translate(OTHER, 1 << 30, 8, True)
    assert iommu.faults == [] and iommu.stats["faults"] == 4


def test_passthrough_context_uses_the_bus_address_unremapped():
    """TT=pass-through: the IOVA is the host address and no IOTLB is consulted."""
    iommu, engine = make()
    iommu.attach(NIC, 1, passthrough=True)
    assert iommu.translate(NIC, 0x12345, 8, True) == 0x12345 and engine.busy_ns == 0


def test_guest_scribbling_its_whole_memory_cannot_change_its_dma_reach():
    """The tables live in the IOMMU's memory: a guest overwriting all of its own changes nothing."""
    iommu, engine, vm = assigned(size=1 << 20)
    vm.write(0, b"\xFF" * vm.size)
    iommu.invalidate()
    assert iommu.translate(NIC, 0x1000, 8, True) == 0x1000
    faulting_write(iommu, engine, GuestMemory(2 << 20), NIC, 1 << 20)


SLOTS = 8


@st.composite
def scenarios(draw):
    """Per 2 MiB slot: nothing, a 2 MiB page, or a run of 4 KiB pages (random host
    address and W); then DMAs near the mappings' edges or anywhere."""
    plan = []
    for slot in range(SLOTS):
        kind = draw(st.sampled_from(["none", "2m", "4k"]))
        if kind == "2m":
            plan.append((slot * PAGE_2M, draw(st.integers(0, 7)) * PAGE_2M, PAGE_2M, PAGE_2M, draw(st.booleans())))
        elif kind == "4k":
            first, n = draw(st.integers(0, 500)), draw(st.integers(1, 12))
            plan.append((slot * PAGE_2M + first * PAGE_4K, draw(st.integers(0, 4000)) * PAGE_4K, n * PAGE_4K,
                         PAGE_4K, draw(st.booleans())))
    anywhere = st.integers(0, SLOTS * PAGE_2M + PAGE_4K)
    if plan:
        near = st.builds(lambda m, off: max(0, m[0] + off), st.sampled_from(plan), st.integers(-PAGE_4K, 14 * PAGE_4K))
        anywhere = st.one_of(anywhere, near)
    accesses = draw(st.lists(st.tuples(anywhere, st.integers(0, 3 * PAGE_4K), st.booleans()), min_size=1, max_size=25))
    return plan, accesses


def expected(plan, iova: int, length: int, is_write: bool) -> int | None:
    """Reference model: the host address of a fully mapped, permitted, contiguous range, else None."""
    pages = {}
    for start, hpa, size, _, write in plan:
        for off in range(0, size, PAGE_4K):
            pages[(start + off) >> 12] = (hpa + off, write)
    first = pages.get(iova >> 12)
    for page in range(iova >> 12, ((iova + max(length, 1) - 1) >> 12) + 1):
        hpa, write = pages.get(page, (None, False))
        if hpa is None or (is_write and not write) or hpa != first[0] + ((page - (iova >> 12)) << 12):
            return None
    return first[0] + (iova & 0xFFF)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_translation_lands_in_a_mapping_at_its_offset_or_faults(scenario):
    """Random DMAs against random mappings, each twice (walk, then IOTLB): the host
    address is exactly the mapping's, or the DMA faults; never anything outside them."""
    plan, accesses = scenario
    iommu, _ = make(iotlb_entries=4)
    iommu.attach(NIC, 1)
    for start, hpa, size, page_size, write in plan:
        iommu.map(1, start, hpa, size, write=write, page_size=page_size)
    for iova, length, is_write in accesses:
        want = expected(plan, iova, length, is_write)
        for _ in range(2):
            try:
                got = iommu.translate(NIC, iova, length, is_write)
            except DmaFault:
                got = None
            assert got == want


# ---- interrupt remapping and posting --------------------------------------------------------


@pytest.mark.parametrize("eime", [True, False])
def test_remapped_irte_gives_vector_and_destination(eime):
    """A remappable MSI naming a present IRTE is delivered with that entry's vector and APIC id."""
    iommu, _ = make(eime=eime)
    iommu.set_irte(9, vector=0x45, dest=0x12, sid=NIC)
    assert iommu.remap_msi(NIC, *vtd.remappable_msi(9)) == (0x45, 0x12, False, True)
    dst = vtd.IRTE.unpack_from(iommu.mem.buf, iommu.irta + 9 * 16)[2]
    assert dst == (0x12 if eime else 0x12 << 8)


def test_subhandle_selects_the_entry_for_multi_message_msi():
    """With SHV the data's subhandle is added to the address handle."""
    iommu, _ = make()
    iommu.set_irte(13, vector=0x50, dest=1)
    address, _ = vtd.remappable_msi(10, shv=True)
    assert iommu.remap_msi(NIC, address, 3).vector == 0x50


@pytest.mark.parametrize("address, data, reason", [
    (vtd.remappable_msi(20)[0], 0, vtd.FR_IR_ENTRY_P),
    (vtd.remappable_msi(5000)[0], 0, vtd.FR_IR_INDEX_OVER),
    (0xFEE0_0000, 0x41, vtd.FR_IR_REQ_COMPAT),
    (0xFED0_0010, 0, vtd.FR_IR_REQ_RSVD),
])
def test_blocked_interrupts_are_recorded(address, data, reason):
    """Missing IRTE, index beyond the table, compatibility format, wrong address: blocked and logged."""
    iommu, _ = make()
    assert iommu.remap_msi(NIC, address, data) is None
    assert [f.reason for f in iommu.take_faults()] == [reason] and iommu.stats["ir_faults"] == 1


def test_irte_source_validation_rejects_another_requester():
    """An IRTE bound to one requester id blocks the same message from another device."""
    iommu, _ = make()
    iommu.set_irte(3, vector=0x60, dest=0, sid=NIC)
    iommu.set_irte(4, vector=0x61, dest=0)
    assert iommu.remap_msi(OTHER, *vtd.remappable_msi(3)) is None
    assert iommu.take_faults() == [Fault(vtd.source_id(OTHER), 3, vtd.FR_IR_SID_ERR, True)]
    assert iommu.remap_msi(OTHER, *vtd.remappable_msi(4)).vector == 0x61


def pir(iommu: Iommu, pda: int) -> int:
    words = vtd.PI_DESC.unpack_from(iommu.mem.buf, pda)[:4]
    return sum(w << (64 * i) for i, w in enumerate(words))


def control(iommu: Iommu, pda: int) -> int:
    return vtd.PI_DESC.unpack_from(iommu.mem.buf, pda)[4]


def test_posted_irte_sets_the_pir_bit_and_on_and_notifies_once():
    """Posting sets the vector's PIR bit and ON with one notification; more
    vectors accumulate without one; the CPU takes them and clears ON."""
    iommu, _ = make()
    pda = iommu.pi_desc(nv=0xF2, ndst=7)
    iommu.set_posted_irte(1, vector=0x41, pda=pda, sid=NIC)
    iommu.set_posted_irte(2, vector=0xE0, pda=pda, sid=NIC)
    assert iommu.remap_msi(NIC, *vtd.remappable_msi(1)) == (0x41, 7, True, True)
    assert pir(iommu, pda) == 1 << 0x41 and control(iommu, pda) & vtd.PI_ON
    assert iommu.remap_msi(NIC, *vtd.remappable_msi(2)) == (0xE0, 7, True, False)
    assert pir(iommu, pda) == 1 << 0x41 | 1 << 0xE0
    assert iommu.pi_take(pda) == [0x41, 0xE0]
    assert pir(iommu, pda) == 0 and not control(iommu, pda) & vtd.PI_ON
    assert iommu.stats["notifications"] == 1 and iommu.stats["posted"] == 2


def test_suppressed_descriptor_posts_without_notification_unless_urgent():
    """With SN set a posted vector waits in the PIR without ON; an urgent IRTE still notifies."""
    iommu, _ = make()
    pda = iommu.pi_desc(nv=0xF2, ndst=0)
    iommu.pi_suppress(pda, True)
    assert not iommu.post(pda, 0x30)
    assert pir(iommu, pda) == 1 << 0x30 and not control(iommu, pda) & vtd.PI_ON
    iommu.set_posted_irte(8, vector=0x31, pda=pda, urgent=True)
    assert iommu.remap_msi(NIC, *vtd.remappable_msi(8)).notify
    iommu.pi_suppress(pda, False)
    assert control(iommu, pda) == vtd.PI_ON


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_any_interrupt_request_is_remapped_or_blocked(address, data):
    """Whatever message a device sends, remapping returns a route or None, never raises."""
    iommu, _ = make(irt_entries=64)
    iommu.set_irte(1, vector=0x41, dest=0)
    result = iommu.remap_msi(NIC, address, data)
    assert result is None or result.vector == 0x41
