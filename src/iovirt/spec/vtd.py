"""Intel VT-d as data: the remapping structures an IOMMU walks in host memory.
Intel Virtualization Technology for Directed I/O Architecture Specification
rev 3.x: 3.4-3.7 and 9.1-9.3 (legacy-mode root/context entries, second-level
paging), 5.1-5.2 and 9.10-9.12 (interrupt remapping, posted interrupts),
7.1 and 10.4.14 (fault reasons and records).  Bit names follow the spec and
Linux's include/linux/dmar.h / QEMU's hw/i386/intel_iommu_internal.h."""

from __future__ import annotations

from .apic import MSI_ADDR_BASE
from .fields import Layout
from .pci import Bdf

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
TABLE_ENTRIES = 512                 # 9 address bits per paging level (3.6)
LEVEL_BITS = 9
PAGE_4K, PAGE_2M, PAGE_1G = 1 << 12, 1 << 21, 1 << 30
ADDR_MASK = 0x000F_FFFF_FFFF_F000   # bits 51:12 of every table pointer (HAW <= 52)

# 9.1 Root entry (legacy mode), 256 per 4 KiB root table, indexed by bus
ROOT_ENTRY = Layout("root_entry", 16, [("lo", 0, 8), ("hi", 8, 8)])
ROOT_P = 1 << 0                     # Present; CTP in bits 63:12 of lo

# 9.3 Context entry (legacy mode), 256 per context table, indexed by devfn.
# lo: P 0, FPD 1, TT 3:2, SLPTPTR 63:12; hi: AW 2:0 (+AVAIL 6:3), DID 23:8.
CONTEXT_ENTRY = Layout("context_entry", 16, [("lo", 0, 8), ("aw", 8, 1), ("did", 9, 2)])
CTX_P = 1 << 0
CTX_FPD = 1 << 1                    # Fault Processing Disable: faults not recorded
CTX_TT_SHIFT = 2
TT_MULTI_LEVEL = 0                  # untranslated requests walk second-level tables
TT_DEV_IOTLB = 1                    # ... and translated requests (ATS) are allowed
TT_PASS_THROUGH = 2                 # untranslated requests pass unremapped (ECAP.PT)
CTX_AW_MASK = 0x7
AW_39 = 1                           # 39-bit AGAW, 3-level table (CAP.SAGAW bit 1)
AW_48 = 2                           # 48-bit AGAW, 4-level table (CAP.SAGAW bit 2)


def aw_for_levels(levels: int) -> int:
    """Context-entry AW encoding for a 3- or 4-level second-level table."""
    return levels - 2


def agaw_bits(levels: int) -> int:
    return PAGE_SHIFT + LEVEL_BITS * levels


# 9.8 Second-level paging entry (SL-PML4E, SL-PDPE, SL-PDE, SL-PTE): 64 bits
SL_ENTRY = Layout("sl_entry", 8, [("entry", 0, 8)])
SL_R = 1 << 0
SL_W = 1 << 1
SL_PS = 1 << 7                      # in SL-PDPE (1 GiB) / SL-PDE (2 MiB): maps a superpage
SL_RW = SL_R | SL_W                 # not present when both are clear

# 9.10 Interrupt Remapping Table Entry, remapped format (IM=0), 128 bits.
# flags: P 0, FPD 1, DM 2, RH 3, TM 4, DLM 7:5, AVAIL 11:8, IM 15.
# dst: x2APIC ID 31:0 (EIME=1) or xAPIC ID in bits 15:8 (EIME=0).
# sq_svt: SQ 1:0, SVT 3:2 (source validation of requester id `sid`).
IRTE = Layout("irte", 16, [("flags", 0, 2), ("vector", 2, 1), ("dst", 4, 4), ("sid", 8, 2), ("sq_svt", 10, 1)])
# 9.11 posted format (IM=1): URG 14; PDA[31:6] in bits 63:38 (the dst dword with
# its low 6 bits reserved), PDA[63:32] in bits 127:96.
IRTE_POSTED = Layout("irte_posted", 16, [("flags", 0, 2), ("vector", 2, 1), ("pda_lo", 4, 4),
                                         ("sid", 8, 2), ("sq_svt", 10, 1), ("pda_hi", 12, 4)])
IRTE_P = 1 << 0
IRTE_FPD = 1 << 1
IRTE_DM = 1 << 2                    # destination mode: logical
IRTE_RH = 1 << 3
IRTE_TM = 1 << 4                    # level triggered
IRTE_DLM_SHIFT = 5                  # delivery mode 7:5 (0 fixed, 1 lowest priority)
IRTE_URG = 1 << 14
IRTE_IM = 1 << 15
PDA_LO_MASK = 0xFFFF_FFC0
SVT_NONE, SVT_SID, SVT_BUS_RANGE = 0, 1, 2
SVT_SHIFT = 2
SQ_IGNORED_FUNCTION_BITS = (0b000, 0b100, 0b110, 0b111)   # SQ 00..11 under SVT=01

# 9.12 Posted-interrupt descriptor, 64 bytes, 64-byte aligned
PI_DESC = Layout("pi_desc", 64, [("pir0", 0, 8), ("pir1", 8, 8), ("pir2", 16, 8), ("pir3", 24, 8),
                                 ("control", 32, 2), ("nv", 34, 1), ("ndst", 36, 4)])
PI_DESC_SIZE = 64
PI_PIR_BYTES = 32                   # PIR: one bit per vector 0..255
PI_CONTROL = 32
PI_ON = 1 << 0                      # Outstanding Notification
PI_SN = 1 << 1                      # Suppress Notification

# 5.1.2.2 Remappable-format MSI: address 31:20 = FEEh, handle[14:0] 19:5,
# IF (interrupt format) 4, SHV 3, handle[15] 2; data 15:0 = subhandle if SHV.
MSI_IF_REMAPPABLE = 1 << 4
MSI_SHV = 1 << 3
MSI_HANDLE_SHIFT = 5
MSI_HANDLE15_SHIFT = 2


def remappable_msi(handle: int, shv: bool = False) -> tuple[int, int]:
    """The (address, data) a function is programmed with to signal IRTE
    ``handle``; with ``shv`` the data's subhandle is added to it (multi-message MSI)."""
    address = (MSI_ADDR_BASE | (handle & 0x7FFF) << MSI_HANDLE_SHIFT | MSI_IF_REMAPPABLE
               | (handle >> 15 & 1) << MSI_HANDLE15_SHIFT | (MSI_SHV if shv else 0))
    return address, 0


def msi_handle(address: int, data: int) -> int:
    """The interrupt index a remappable-format request names (5.1.3)."""
    handle = (address >> MSI_HANDLE_SHIFT & 0x7FFF) | (address >> MSI_HANDLE15_SHIFT & 1) << 15
    return handle + (data & 0xFFFF) if address & MSI_SHV else handle


# 7.1.3 Fault reasons (table 7-27: DMA remapping; 7-28 interrupt remapping)
FR_ROOT_ENTRY_P = 0x1               # root entry Present clear
FR_CONTEXT_ENTRY_P = 0x2            # context entry Present clear
FR_CONTEXT_ENTRY_INV = 0x3          # invalid programming of a context entry (TT, AW)
FR_ADDR_BEYOND_MGAW = 0x4           # input address above 2^AGAW - 1
FR_WRITE = 0x5                      # write without W permission (or not present)
FR_READ = 0x6                       # read without R permission (or not present)
FR_PAGING_ENTRY_INV = 0x7           # a second-level table pointer could not be read
FR_ROOT_TABLE_INV = 0x8             # the root table could not be read
FR_CONTEXT_TABLE_INV = 0x9          # a context table could not be read
FR_IR_REQ_RSVD = 0x20               # interrupt request with reserved fields set
FR_IR_INDEX_OVER = 0x21             # interrupt index beyond the IRT size
FR_IR_ENTRY_P = 0x22                # IRTE Present clear
FR_IR_IRTE_RSVD = 0x24              # IRTE reserved field / encoding
FR_IR_REQ_COMPAT = 0x25             # compatibility-format interrupt while blocked
FR_IR_SID_ERR = 0x26                # requester fails the IRTE's source validation

FAULT_NAMES = {
    FR_ROOT_ENTRY_P: "root entry not present", FR_CONTEXT_ENTRY_P: "context entry not present",
    FR_CONTEXT_ENTRY_INV: "invalid context entry", FR_ADDR_BEYOND_MGAW: "address beyond AGAW",
    FR_WRITE: "write not allowed", FR_READ: "read not allowed",
    FR_PAGING_ENTRY_INV: "paging entry unreadable", FR_ROOT_TABLE_INV: "root table unreadable",
    FR_CONTEXT_TABLE_INV: "context table unreadable", FR_IR_REQ_RSVD: "interrupt request reserved bits",
    FR_IR_INDEX_OVER: "interrupt index beyond IRT", FR_IR_ENTRY_P: "IRTE not present",
    FR_IR_IRTE_RSVD: "IRTE reserved encoding", FR_IR_REQ_COMPAT: "compatibility-format interrupt blocked",
    FR_IR_SID_ERR: "IRTE source-id check failed",
}


def source_id(bdf: Bdf | int) -> int:
    """The 16-bit requester id (bus 15:8, device 7:3, function 2:0)."""
    if isinstance(bdf, int):
        return bdf
    return bdf.bus << 8 | bdf.device << 3 | bdf.function
