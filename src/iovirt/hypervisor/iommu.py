"""A VT-d IOMMU (spec rev 3.x): DMA remapping through root, context and
second-level page tables, an IOTLB, fault recording, interrupt remapping and
posted interrupts.

Every structure lives in bytes of the IOMMU's own host memory, laid out as
``spec/vtd.py`` says, and is walked from there; the Python-side caches are
the hardware's caches (context cache, IOTLB), which software must invalidate.
The host memory is a :class:`GuestMemory` of its own, never a guest's, so no
guest can write a table.  A VM's pass-through DMA uses IOVA = GPA and
"host-physical" = offset into that VM's guest memory (the buffer its ``Dma``
reads), so a domain maps a VM's memory 1:1 and anything else faults::

    iommu.attach(bdf, did)
    iommu.map(did, 0, 0, vm.mem.size, page_size=PAGE_2M)
    dma = Dma(vm.mem, "dma", translate=iommu.translator(bdf, nic_engine))
"""

from __future__ import annotations

import struct
from collections import Counter, OrderedDict
from typing import NamedTuple, NoReturn

from ..mem.dma import DmaFault, Translate
from ..mem.guest_memory import GuestMemory
from ..sim.resource import Resource
from ..spec import vtd
from ..spec.apic import MSI_ADDR_BASE
from ..spec.pci import Bdf

# IOTLB tag: DID 55:40, page-size level 38:37 (0 = 4K, 1 = 2M, 2 = 1G), IOVA >> page shift
_DID_SHIFT = 40
_LEVEL_TAG_SHIFT = 37
_PFN_MASK = (1 << _LEVEL_TAG_SHIFT) - 1
_LOOKUPS = tuple((lvl << _LEVEL_TAG_SHIFT, vtd.PAGE_SHIFT + vtd.LEVEL_BITS * lvl) for lvl in range(3))
_TAG_2M, _SHIFT_2M = _LOOKUPS[1]
_SHIFT_4K = vtd.PAGE_SHIFT
_NEED = (vtd.SL_R, vtd.SL_W)        # the access right a read / a write needs
_TT_VALID = (vtd.TT_MULTI_LEVEL, vtd.TT_DEV_IOTLB, vtd.TT_PASS_THROUGH)


class Fault(NamedTuple):
    """One primary fault record (10.4.14 FRCD): requester, FI (the page
    address of a DMA fault, the interrupt index of an interrupt fault),
    reason code, request type."""

    sid: int
    addr: int
    reason: int
    is_write: bool


class Remapped(NamedTuple):
    """An interrupt after remapping.  Remapped format: ``vector`` to APIC
    ``dest``.  Posted format: ``vector`` is now pending in the descriptor's
    PIR, ``dest`` is its NDST, and ``notify`` says the IOMMU sent the
    notification event (vector NV to NDST)."""

    vector: int
    dest: int
    posted: bool
    notify: bool


class Iommu:
    def __init__(self, mem: GuestMemory, resource: Resource, iotlb_entries: int = 64, levels: int = 4,
                 irt_entries: int = 1024, fault_records: int = 8, eime: bool = True) -> None:
        if levels not in (3, 4):
            raise ValueError("levels must be 3 (39-bit AGAW) or 4 (48-bit AGAW)")
        if irt_entries < 2 or irt_entries & (irt_entries - 1) or irt_entries > 1 << 16:
            raise ValueError("irt_entries must be a power of two, 2..65536 (IRTA.S)")
        self.mem, self.resource = mem, resource
        self.iotlb_entries, self.levels, self.eime = iotlb_entries, levels, eime
        self.irt_entries, self.fault_records = irt_entries, fault_records
        self._aw = vtd.aw_for_levels(levels)
        self._limit = 1 << vtd.agaw_bits(levels)
        self._brk = 0
        self._free_pages: list[int] = []
        self.root = self._alloc(vtd.PAGE_SIZE)                      # RTADDR_REG
        self.irta = self._alloc(irt_entries * vtd.IRTE.size)        # IRTA_REG
        self._pgd: dict[int, int] = {}                          # domain -> SL-PML4 (software's domain state)
        self._ctx: dict[int, tuple[int, bool, bool, int]] = {}  # context cache: sid -> (tag, pt, fpd, slptptr)
        self._tlb: OrderedDict[int, tuple[int, int, int]] = OrderedDict()   # tag -> (hpa base, size, R/W)
        self.faults: list[Fault] = []
        self._hits = self._misses = 0
        self._events: Counter[str] = Counter()

    @property
    def stats(self) -> Counter[str]:
        """hits, misses, faults (DMA), ir_faults, remapped, posted, notifications, fault_overflow."""
        return Counter(hits=self._hits, misses=self._misses) + self._events

    # ---- host memory ----------------------------------------------------------
    def _alloc(self, size: int, align: int = vtd.PAGE_SIZE) -> int:
        """Host memory for the tables: a page-table page given back by a torn
        down domain (zeroed when it was), else fresh zeroed memory."""
        if size == vtd.PAGE_SIZE and self._free_pages:
            return self._free_pages.pop()
        addr = -(-self._brk // align) * align
        if addr + size > self.mem.size:
            raise MemoryError(f"IOMMU host memory ({self.mem.size} bytes) exhausted")
        self._brk = addr + size
        return addr

    def _domain_root(self, domain: int) -> int:
        if not 0 <= domain <= 0xFFFF:
            raise ValueError(f"domain id {domain} is not 16-bit")
        if domain not in self._pgd:
            self._pgd[domain] = self._alloc(vtd.PAGE_SIZE)
        return self._pgd[domain]

    # ---- root and context tables (3.4, 9.1, 9.3) -------------------------------
    def attach(self, bdf: Bdf | int, domain: int, passthrough: bool = False, fpd: bool = False) -> None:
        """Point requester ``bdf`` at ``domain``'s page tables (or TT=pass-through;
        with ``fpd`` its faults are blocked but not recorded)."""
        sid, buf = vtd.source_id(bdf), self.mem.buf
        root_at = self.root + (sid >> 8) * vtd.ROOT_ENTRY.size
        lo, _ = vtd.ROOT_ENTRY.unpack_from(buf, root_at)
        if not lo & vtd.ROOT_P:
            lo = self._alloc(vtd.PAGE_SIZE) | vtd.ROOT_P
            vtd.ROOT_ENTRY.pack_into(buf, root_at, lo, 0)
        tt = vtd.TT_PASS_THROUGH if passthrough else vtd.TT_MULTI_LEVEL
        ctx_lo = self._domain_root(domain) | tt << vtd.CTX_TT_SHIFT | (vtd.CTX_FPD if fpd else 0) | vtd.CTX_P
        vtd.CONTEXT_ENTRY.pack_into(buf, _context_at(lo, sid), ctx_lo, self._aw, domain)
        self._ctx.pop(sid, None)                     # device-selective context-cache invalidation

    def detach(self, bdf: Bdf | int) -> None:
        """Clear the requester's context entry: its DMA faults from now on."""
        sid, buf = vtd.source_id(bdf), self.mem.buf
        lo, _ = vtd.ROOT_ENTRY.unpack_from(buf, self.root + (sid >> 8) * vtd.ROOT_ENTRY.size)
        if lo & vtd.ROOT_P:
            vtd.CONTEXT_ENTRY.pack_into(buf, _context_at(lo, sid), 0, 0, 0)
        self._ctx.pop(sid, None)

    def _context(self, sid: int, addr: int, length: int, is_write: bool) -> tuple[int, bool, bool, int]:
        """Context-cache fill: root entry by bus, context entry by devfn."""
        buf = self.mem.buf
        lo, _ = vtd.ROOT_ENTRY.unpack_from(buf, self.root + (sid >> 8) * vtd.ROOT_ENTRY.size)
        if not lo & vtd.ROOT_P:
            self._fault(sid, addr, length, vtd.FR_ROOT_ENTRY_P, is_write, False)
        at = _context_at(lo, sid)
        if at + vtd.CONTEXT_ENTRY.size > self.mem.size:
            self._fault(sid, addr, length, vtd.FR_CONTEXT_TABLE_INV, is_write, False)
        lo, aw, did = vtd.CONTEXT_ENTRY.unpack_from(buf, at)
        if not lo & vtd.CTX_P:
            self._fault(sid, addr, length, vtd.FR_CONTEXT_ENTRY_P, is_write, False)
        tt, fpd = lo >> vtd.CTX_TT_SHIFT & 3, bool(lo & vtd.CTX_FPD)
        if tt not in _TT_VALID or aw & vtd.CTX_AW_MASK != self._aw:
            self._fault(sid, addr, length, vtd.FR_CONTEXT_ENTRY_INV, is_write, fpd)
        ctx = (did << _DID_SHIFT, tt == vtd.TT_PASS_THROUGH, fpd, lo & vtd.ADDR_MASK)
        self._ctx[sid] = ctx
        return ctx

    # ---- second-level page tables (3.6, 9.8) -----------------------------------
    def map(self, domain: int, iova: int, hpa: int, size: int, write: bool = True,
            page_size: int = vtd.PAGE_4K) -> None:
        """Map [iova, iova+size) to hpa, read-only unless ``write``, with pages
        no larger than ``page_size``: superpages where both addresses are aligned,
        4 KiB pages at unaligned ends.  Overlapping a present mapping is an error."""
        if page_size not in (vtd.PAGE_4K, vtd.PAGE_2M, vtd.PAGE_1G):
            raise ValueError(f"page size {page_size:#x} is not 4 KiB, 2 MiB or 1 GiB")
        if (iova | hpa | size) & (vtd.PAGE_4K - 1) or size <= 0 or iova < 0 or hpa < 0:
            raise ValueError("iova, hpa and size must be 4 KiB aligned, size positive")
        if iova + size > self._limit or (hpa + size - 1) & ~vtd.ADDR_MASK & ~(vtd.PAGE_4K - 1):
            raise ValueError("mapping beyond the address width")
        root, perm, done = self._domain_root(domain), vtd.SL_RW if write else vtd.SL_R, 0
        try:
            while done < size:
                done += self._fill(root, iova + done, hpa + done, size - done, page_size, perm)
        except ValueError:
            self.unmap(domain, iova, done)
            raise

    def _fill(self, root: int, iova: int, hpa: int, size: int, page_size: int, perm: int) -> int:
        """Write one run of same-size leaves within one table; the bytes it maps."""
        ps = page_size
        while ps > vtd.PAGE_4K and ((iova | hpa) & (ps - 1) or size < ps):
            ps >>= vtd.LEVEL_BITS
        level = (ps.bit_length() - 1 - vtd.PAGE_SHIFT) // vtd.LEVEL_BITS + 1
        index = iova // ps % vtd.TABLE_ENTRIES
        n = min(size // ps, vtd.TABLE_ENTRIES - index)
        at = self._table(root, iova, level) + index * vtd.SL_ENTRY.size
        buf, nbytes = self.mem.buf, n * vtd.SL_ENTRY.size
        if buf[at:at + nbytes].count(0) != nbytes:
            raise ValueError(f"IOVA range at {iova:#x} already mapped")
        first = hpa | perm | (vtd.SL_PS if level > 1 else 0)
        buf[at:at + nbytes] = struct.pack(f"<{n}Q", *range(first, first + n * ps, ps))
        return n * ps

    def _table(self, root: int, iova: int, level: int) -> int:
        """The level-``level`` table covering iova, allocating the ones above it."""
        buf, table = self.mem.buf, root
        for lvl in range(self.levels, level, -1):
            at = table + (iova >> (vtd.PAGE_SHIFT + vtd.LEVEL_BITS * (lvl - 1)) & 511) * vtd.SL_ENTRY.size
            entry, = vtd.SL_ENTRY.unpack_from(buf, at)
            if entry & vtd.SL_PS:
                raise ValueError(f"IOVA {iova:#x} lies in a mapped superpage")
            if not entry & vtd.SL_RW:
                entry = self._alloc(vtd.PAGE_SIZE) | vtd.SL_RW
                vtd.SL_ENTRY.pack_into(buf, at, entry)
            table = entry & vtd.ADDR_MASK
        return table

    def unmap(self, domain: int, iova: int, size: int, flush: bool = True) -> None:
        """Clear the leaf entries in [iova, iova+size); with ``flush`` (strict
        mode) invalidate their IOTLB entries too.  A range not 4 KiB aligned,
        past the address width (whose index would wrap) or splitting a
        superpage is refused whole, before any entry changes (Linux's
        iommu_unmap checks alignment first)."""
        if iova < 0 or size < 0 or iova + size > self._limit:
            raise ValueError("unmap beyond the address width")
        if (iova | size) & (vtd.PAGE_4K - 1):
            raise ValueError(f"unmap of [{iova:#x}, +{size:#x}) is not 4 KiB aligned")
        root, addr, end, leaves = self._pgd.get(domain), iova, iova + size, []
        while root is not None and addr < end:
            at, entry, page, _ = self._leaf(root, addr)
            if entry & vtd.SL_RW:
                if addr & (page - 1) or end - addr < page:
                    raise ValueError(f"unmap of [{iova:#x}, {end:#x}) splits a {page >> 10} KiB page")
                leaves.append(at)
            addr = (addr | (page - 1)) + 1
        for at in leaves:
            vtd.SL_ENTRY.pack_into(self.mem.buf, at, 0)
        if flush:
            self.invalidate(domain, iova, size)

    def free_domain(self, domain: int) -> None:
        """Domain teardown (Linux domain_exit), once no context entry points at
        it: the domain's IOTLB entries dropped, its page-table pages zeroed and
        kept for the next tables."""
        root = self._pgd.pop(domain, None)
        if root is not None:
            self.invalidate(domain)
            self._free_table(root, self.levels)

    def _free_table(self, table: int, level: int) -> None:
        buf = self.mem.buf
        if level > 1:
            for at in range(table, table + vtd.PAGE_SIZE, vtd.SL_ENTRY.size):
                entry, = vtd.SL_ENTRY.unpack_from(buf, at)
                if entry & vtd.SL_RW and not entry & vtd.SL_PS:
                    self._free_table(entry & vtd.ADDR_MASK, level - 1)
        buf[table:table + vtd.PAGE_SIZE] = bytes(vtd.PAGE_SIZE)
        self._free_pages.append(table)

    def _leaf(self, table: int, addr: int) -> tuple[int, int, int, int]:
        """Walk to the entry that ends the translation of addr: (where, entry,
        span, access rights = the AND of R/W over every level, 3.6.1)."""
        buf, rights = self.mem.buf, vtd.SL_RW
        for level in range(self.levels, 0, -1):
            shift = vtd.PAGE_SHIFT + vtd.LEVEL_BITS * (level - 1)
            at = table + (addr >> shift & 511) * vtd.SL_ENTRY.size
            if at + vtd.SL_ENTRY.size > self.mem.size:
                return at, 0, 1 << shift, 0
            entry, = vtd.SL_ENTRY.unpack_from(buf, at)
            rights &= entry
            if level == 1 or entry & vtd.SL_PS or not entry & vtd.SL_RW:
                return at, entry, 1 << shift, rights
            table = entry & vtd.ADDR_MASK
        raise AssertionError("unreachable")

    # ---- translation (3.6, 6.2) --------------------------------------------------
    def translator(self, bdf: Bdf | int, resource: Resource | None = None) -> Translate:
        """``translate(addr, length, is_write) -> hpa`` for ``Dma``, charging
        IOTLB events on ``resource`` (the device's DMA engine) or the IOMMU's."""
        sid, translate = vtd.source_id(bdf), self.translate

        def translator(iova: int, length: int, is_write: bool) -> int:     # a closure: PyPy inlines it, not a partial
            return translate(sid, iova, length, is_write, resource)
        return translator

    def translate(self, bdf: Bdf | int, iova: int, length: int, is_write: bool,
                  resource: Resource | None = None) -> int:
        """The host address of [iova, iova+length) for requester bdf, each page
        through the IOTLB; a fault is recorded and raised as ``DmaFault``."""
        sid = bdf if type(bdf) is int else vtd.source_id(bdf)
        ctx = self._ctx.get(sid) or self._context(sid, iova, length, is_write)
        if ctx[1]:
            return iova
        if iova < 0 or iova + (length if length > 0 else 1) > self._limit:
            self._fault(sid, iova, length, vtd.FR_ADDR_BEYOND_MGAW, is_write, ctx[2])
        tlb, tag = self._tlb, ctx[0]
        key = tag | iova >> _SHIFT_4K
        entry = tlb.get(key)
        if entry is None:
            key = tag | _TAG_2M | iova >> _SHIFT_2M
            entry = tlb.get(key)
        if entry is not None:                         # fast path: one page, a 4K or 2M hit
            base, size, perm = entry
            offset = iova & (size - 1)
            if offset + length <= size and perm & _NEED[is_write]:
                tlb.move_to_end(key)
                self._hits += 1
                (resource or self.resource).charge("iotlb_hit")
                return base + offset
        return self._span(ctx, sid, iova, length, is_write, resource or self.resource)

    def _span(self, ctx: tuple, sid: int, iova: int, length: int, is_write: bool, res: Resource) -> int:
        """Page by page; the pages must be contiguous in host memory, as ``Dma`` copies one run."""
        end = iova + (length if length > 0 else 1)
        hpa, page_end = self._page(ctx, sid, iova, length, is_write, res)
        addr, expect = page_end, hpa + page_end - iova
        while addr < end:
            next_hpa, page_end = self._page(ctx, sid, addr, length, is_write, res)
            if next_hpa != expect:
                raise DmaFault(iova, length, "IOVA range maps to discontiguous host pages")
            addr, expect = page_end, expect + page_end - addr
        return hpa

    def _page(self, ctx: tuple, sid: int, addr: int, length: int, is_write: bool,
              res: Resource) -> tuple[int, int]:
        """One page: IOTLB lookup (every page size), else a page walk."""
        tlb, tag = self._tlb, ctx[0]
        for level_tag, shift in _LOOKUPS:
            key = tag | level_tag | addr >> shift
            entry = tlb.get(key)
            if entry is not None:
                tlb.move_to_end(key)
                self._hits += 1
                res.charge("iotlb_hit")
                break
        else:
            entry = self._walk(ctx, sid, addr, length, is_write, res)
        base, size, perm = entry
        if not perm & _NEED[is_write]:
            self._fault(sid, addr, length, vtd.FR_WRITE if is_write else vtd.FR_READ, is_write, ctx[2])
        return base + (addr & (size - 1)), (addr | (size - 1)) + 1

    def _walk(self, ctx: tuple, sid: int, addr: int, length: int, is_write: bool,
              res: Resource) -> tuple[int, int, int]:
        """IOTLB miss: walk the second-level tables; a present leaf is cached, LRU evicting."""
        self._misses += 1
        res.charge("iotlb_miss")
        at, entry, size, rights = self._leaf(ctx[3], addr)
        if at + vtd.SL_ENTRY.size > self.mem.size:
            self._fault(sid, addr, length, vtd.FR_PAGING_ENTRY_INV, is_write, ctx[2])
        if not entry & vtd.SL_RW:
            self._fault(sid, addr, length, vtd.FR_WRITE if is_write else vtd.FR_READ, is_write, ctx[2])
        cached = (entry & vtd.ADDR_MASK & ~(size - 1), size, rights)
        level_tag, shift = _LOOKUPS[(size.bit_length() - 1 - vtd.PAGE_SHIFT) // vtd.LEVEL_BITS]
        self._tlb[ctx[0] | level_tag | addr >> shift] = cached
        if len(self._tlb) > self.iotlb_entries:
            self._tlb.popitem(last=False)
        return cached

    def invalidate(self, domain: int | None = None, iova: int | None = None, size: int = vtd.PAGE_4K) -> None:
        """IOTLB invalidation (6.5.1.2): global, domain-selective, or
        page-selective for the entries of ``domain`` overlapping [iova, iova+size)."""
        if domain is None:
            self._tlb.clear()
            return
        doomed = [k for k in self._tlb if k >> _DID_SHIFT == domain and (iova is None or _overlaps(k, iova, size))]
        for key in doomed:
            del self._tlb[key]

    # ---- fault recording (7.1, 10.4.14) ----------------------------------------------
    def _fault(self, sid: int, addr: int, length: int, reason: int, is_write: bool, fpd: bool) -> NoReturn:
        self._events["faults"] += 1
        if not fpd:
            self._record(Fault(sid, addr & ~(vtd.PAGE_4K - 1), reason, is_write))
        raise DmaFault(addr, length, f"VT-d fault {reason:#x}: {vtd.FAULT_NAMES[reason]}")

    def _record(self, fault: Fault) -> None:
        """Primary fault logging: NFR records; when all are full, PFO and the fault is lost."""
        if len(self.faults) < self.fault_records:
            self.faults.append(fault)
        else:
            self._events["fault_overflow"] += 1

    def take_faults(self) -> list[Fault]:
        """Software reads the fault records and clears their F bits."""
        faults, self.faults = self.faults, []
        return faults

    # ---- interrupt remapping (5.1, 9.10) -------------------------------------------------
    def set_irte(self, index: int, vector: int, dest: int, sid: Bdf | int | None = None, delivery_mode: int = 0,
                 logical: bool = False, level: bool = False) -> None:
        """Program a remapped-format IRTE; with ``sid`` only that requester may use it."""
        flags = (vtd.IRTE_P | delivery_mode << vtd.IRTE_DLM_SHIFT | (vtd.IRTE_DM if logical else 0)
                 | (vtd.IRTE_TM if level else 0))
        self._store_irte(index, vtd.IRTE.pack(flags, vector, dest if self.eime else dest << 8, *_validation(sid)))

    def set_posted_irte(self, index: int, vector: int, pda: int, sid: Bdf | int | None = None,
                        urgent: bool = False) -> None:
        """Program a posted-format IRTE: ``vector`` is posted to the descriptor at ``pda``."""
        if pda % vtd.PI_DESC_SIZE or not 0 <= pda <= self.mem.size - vtd.PI_DESC_SIZE:
            raise ValueError(f"posted-interrupt descriptor {pda:#x} not 64-byte aligned in host memory")
        flags = vtd.IRTE_P | vtd.IRTE_IM | (vtd.IRTE_URG if urgent else 0)
        entry = vtd.IRTE_POSTED.pack(flags, vector, pda & vtd.PDA_LO_MASK, *_validation(sid), pda >> 32)
        self._store_irte(index, entry)

    def clear_irte(self, index: int) -> None:
        self._store_irte(index, bytes(vtd.IRTE.size))

    def _store_irte(self, index: int, entry: bytes) -> None:
        if not 0 <= index < self.irt_entries:
            raise ValueError(f"IRTE index {index} beyond the {self.irt_entries}-entry table")
        at = self.irta + index * vtd.IRTE.size
        self.mem.buf[at:at + vtd.IRTE.size] = entry

    def remap_msi(self, bdf: Bdf | int, address: int, data: int) -> Remapped | None:
        """An interrupt request (a DMA write to FEEx_xxxxh) through the IRT;
        None when blocked, with the fault recorded."""
        sid = vtd.source_id(bdf)
        if address >> 20 != MSI_ADDR_BASE >> 20:
            return self._ir_fault(sid, 0, vtd.FR_IR_REQ_RSVD, False)
        if not address & vtd.MSI_IF_REMAPPABLE:
            return self._ir_fault(sid, 0, vtd.FR_IR_REQ_COMPAT, False)
        index = vtd.msi_handle(address, data)
        if index >= self.irt_entries:
            return self._ir_fault(sid, index, vtd.FR_IR_INDEX_OVER, False)
        at = self.irta + index * vtd.IRTE.size     # both formats share offsets; posted reads DST as PDA_L
        flags, vector, dst, want, sq_svt, pda_hi = vtd.IRTE_POSTED.unpack_from(self.mem.buf, at)
        if not flags & vtd.IRTE_P:
            return self._ir_fault(sid, index, vtd.FR_IR_ENTRY_P, False)
        svt, fpd = sq_svt >> vtd.SVT_SHIFT & 3, bool(flags & vtd.IRTE_FPD)
        if svt > vtd.SVT_BUS_RANGE:
            return self._ir_fault(sid, index, vtd.FR_IR_IRTE_RSVD, fpd)
        if not _source_valid(svt, sq_svt & 3, want, sid):
            return self._ir_fault(sid, index, vtd.FR_IR_SID_ERR, fpd)
        if flags & vtd.IRTE_IM:
            pda = dst & vtd.PDA_LO_MASK | pda_hi << 32
            self._events["posted"] += 1
            return Remapped(vector, vtd.PI_DESC.unpack_from(self.mem.buf, pda)[-1], True,
                            self.post(pda, vector, bool(flags & vtd.IRTE_URG)))
        self._events["remapped"] += 1
        return Remapped(vector, dst if self.eime else dst >> 8 & 0xFF, False, True)

    def _ir_fault(self, sid: int, index: int, reason: int, fpd: bool) -> None:
        self._events["ir_faults"] += 1
        if not fpd:
            self._record(Fault(sid, index, reason, True))

    # ---- posted interrupts (5.2, 9.12) -----------------------------------------------------
    def pi_desc(self, nv: int, ndst: int) -> int:
        """Allocate a zeroed posted-interrupt descriptor in host memory; its address."""
        pda = self._alloc(vtd.PI_DESC_SIZE, vtd.PI_DESC_SIZE)
        vtd.PI_DESC.pack_into(self.mem.buf, pda, 0, 0, 0, 0, 0, nv, ndst)
        return pda

    def post(self, pda: int, vector: int, urgent: bool = False) -> bool:
        """5.2.3: set the vector's PIR bit; unless ON is already set, or SN is set
        for a non-urgent interrupt, set ON and return True (notify NV at NDST)."""
        buf = self.mem.buf
        buf[pda + (vector >> 3)] |= 1 << (vector & 7)
        control = buf[pda + vtd.PI_CONTROL]
        if control & vtd.PI_ON or (control & vtd.PI_SN and not urgent):
            return False
        buf[pda + vtd.PI_CONTROL] = control | vtd.PI_ON
        self._events["notifications"] += 1
        return True

    def pi_take(self, pda: int) -> list[int]:
        """The CPU's side (posted-interrupt processing / KVM sync_pir_to_irr):
        clear ON, take and clear the PIR; the pending vectors, lowest first."""
        buf = self.mem.buf
        buf[pda + vtd.PI_CONTROL] &= ~vtd.PI_ON & 0xFF
        pir = int.from_bytes(buf[pda:pda + vtd.PI_PIR_BYTES], "little")
        buf[pda:pda + vtd.PI_PIR_BYTES] = bytes(vtd.PI_PIR_BYTES)
        vectors = []
        while pir:
            low = pir & -pir
            vectors.append(low.bit_length() - 1)
            pir ^= low
        return vectors

    def pi_suppress(self, pda: int, suppress: bool) -> None:
        """Set or clear SN (software does so while the vCPU is not running)."""
        buf = self.mem.buf
        buf[pda + vtd.PI_CONTROL] = buf[pda + vtd.PI_CONTROL] & ~vtd.PI_SN | (vtd.PI_SN if suppress else 0)


def _context_at(root_lo: int, sid: int) -> int:
    """The context entry of devfn ``sid & 0xFF`` in the table a root entry points at."""
    return (root_lo & vtd.ADDR_MASK) + (sid & 0xFF) * vtd.CONTEXT_ENTRY.size


def _overlaps(key: int, iova: int, size: int) -> bool:
    shift = vtd.PAGE_SHIFT + vtd.LEVEL_BITS * (key >> _LEVEL_TAG_SHIFT & 3)
    start = (key & _PFN_MASK) << shift
    return start < iova + size and iova < start + (1 << shift)


def _validation(sid: Bdf | int | None) -> tuple[int, int]:
    """IRTE SID and SQ/SVT: verify the full requester id, or no validation."""
    return (0, vtd.SVT_NONE) if sid is None else (vtd.source_id(sid), vtd.SVT_SID << vtd.SVT_SHIFT)


def _source_valid(svt: int, sq: int, want: int, sid: int) -> bool:
    """9.10 SVT/SQ: 01 compares the requester id (SQ masks function bits),
    10 checks its bus lies in [SID 15:8, SID 7:0]."""
    if svt == vtd.SVT_SID:
        ignored = vtd.SQ_IGNORED_FUNCTION_BITS[sq]
        return (want ^ sid) & ~ignored & 0xFFFF == 0
    if svt == vtd.SVT_BUS_RANGE:
        return want >> 8 <= sid >> 8 <= want & 0xFF
    return True
