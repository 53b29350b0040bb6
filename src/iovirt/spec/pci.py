"""PCI configuration space as data: PCI Local Bus 3.0 (type-0 header, MSI,
MSI-X, configuration mechanism #1) and PCI Express Base 3.0 (PCI Express
capability, extended capabilities).  Names follow Linux
``include/uapi/linux/pci_regs.h``.

Register maps list every field with its access; where only some bits of a
register are writable (or write-1-to-clear) the ``*_BITS`` table next to the
map gives them by register name.  Registers absent from a map read as zero
and are read-only.
"""

from __future__ import annotations

from typing import NamedTuple

from .fields import Layout, Register, RegisterMap

PCI_CFG_SPACE_SIZE = 256
PCI_CFG_SPACE_EXP_SIZE = 4096
PCI_STD_HEADER_SIZEOF = 64
PCI_STD_NUM_BARS = 6
PCI_MAX_DEVICES = 32  # device number is 5 bits
PCI_MAX_FUNCTIONS = 8  # function number is 3 bits

# --- type-0 configuration header (PCI 3.0 §6.1, Figure 6-1) -----------------
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_COMMAND_IO = 0x0001
PCI_COMMAND_MEMORY = 0x0002
PCI_COMMAND_MASTER = 0x0004
PCI_COMMAND_PARITY = 0x0040
PCI_COMMAND_SERR = 0x0100
PCI_COMMAND_INTX_DISABLE = 0x0400
PCI_STATUS = 0x06
PCI_STATUS_INTERRUPT = 0x0008
PCI_STATUS_CAP_LIST = 0x0010
PCI_STATUS_PARITY = 0x0100
PCI_STATUS_SIG_TARGET_ABORT = 0x0800
PCI_STATUS_REC_TARGET_ABORT = 0x1000
PCI_STATUS_REC_MASTER_ABORT = 0x2000
PCI_STATUS_SIG_SYSTEM_ERROR = 0x4000
PCI_STATUS_DETECTED_PARITY = 0x8000
PCI_CLASS_REVISION = 0x08  # class code in bits 31:8, revision in 7:0
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09
PCI_CLASS_DEVICE = 0x0A
PCI_CACHE_LINE_SIZE = 0x0C
PCI_LATENCY_TIMER = 0x0D
PCI_HEADER_TYPE = 0x0E
PCI_HEADER_TYPE_MASK = 0x7F
PCI_HEADER_TYPE_NORMAL = 0x00
PCI_HEADER_TYPE_MFD = 0x80
PCI_BIST = 0x0F
PCI_BASE_ADDRESS_0 = 0x10
PCI_BASE_ADDRESS_5 = 0x24
PCI_CARDBUS_CIS = 0x28
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_ROM_ADDRESS = 0x30
PCI_CAPABILITY_LIST = 0x34
PCI_INTERRUPT_LINE = 0x3C
PCI_INTERRUPT_PIN = 0x3D  # 0 none, 1..4 INTA#..INTD#
PCI_MIN_GNT = 0x3E
PCI_MAX_LAT = 0x3F

# Base Address Register low bits (PCI 3.0 §6.2.5.1)
PCI_BASE_ADDRESS_SPACE_IO = 0x01
PCI_BASE_ADDRESS_MEM_TYPE_MASK = 0x06
PCI_BASE_ADDRESS_MEM_TYPE_32 = 0x00
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08
PCI_BASE_ADDRESS_MEM_MASK = 0xFFFFFFF0
PCI_BASE_ADDRESS_IO_MASK = 0xFFFFFFFC

PCI_COMMAND_BITS = (PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY
                    | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE)
PCI_STATUS_ERROR_BITS = (PCI_STATUS_PARITY | PCI_STATUS_SIG_TARGET_ABORT | PCI_STATUS_REC_TARGET_ABORT
                         | PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_SIG_SYSTEM_ERROR
                         | PCI_STATUS_DETECTED_PARITY)


def pci_base_address(index: int) -> int:
    """Config offset of BAR ``index`` (0..5)."""
    return PCI_BASE_ADDRESS_0 + 4 * index


def _ro(name: str, offset: int, width: int, doc: str = "") -> Register:
    return Register(name, offset, width, access="ro", doc=doc)


def _rw(name: str, offset: int, width: int, reset: int = 0, doc: str = "") -> Register:
    return Register(name, offset, width, reset=reset, access="rw", doc=doc)


PCI_TYPE0_HEADER = RegisterMap("pci_type0_header", [
    _ro("VENDOR_ID", PCI_VENDOR_ID, 2),
    _ro("DEVICE_ID", PCI_DEVICE_ID, 2),
    _rw("COMMAND", PCI_COMMAND, 2),
    Register("STATUS", PCI_STATUS, 2, access="w1c", doc="error bits RW1C, the rest RO"),
    _ro("REVISION_ID", PCI_REVISION_ID, 1),
    _ro("CLASS_PROG", PCI_CLASS_PROG, 1),
    _ro("SUBCLASS", PCI_CLASS_DEVICE, 1),
    _ro("CLASS", PCI_CLASS_DEVICE + 1, 1),
    _rw("CACHE_LINE_SIZE", PCI_CACHE_LINE_SIZE, 1),
    _ro("LATENCY_TIMER", PCI_LATENCY_TIMER, 1, "hardwired 0 on PCIe (PCIe 3.0 §7.5.1.3)"),
    _ro("HEADER_TYPE", PCI_HEADER_TYPE, 1),
    _ro("BIST", PCI_BIST, 1),
    *(_rw(f"BAR{i}", pci_base_address(i), 4, doc="writable bits follow the declared size")
      for i in range(PCI_STD_NUM_BARS)),
    _ro("CARDBUS_CIS", PCI_CARDBUS_CIS, 4),
    _ro("SUBSYSTEM_VENDOR_ID", PCI_SUBSYSTEM_VENDOR_ID, 2),
    _ro("SUBSYSTEM_ID", PCI_SUBSYSTEM_ID, 2),
    _ro("EXPANSION_ROM", PCI_ROM_ADDRESS, 4, "no ROM: hardwired 0"),
    _ro("CAPABILITIES_PTR", PCI_CAPABILITY_LIST, 1),
    _rw("INTERRUPT_LINE", PCI_INTERRUPT_LINE, 1),
    _ro("INTERRUPT_PIN", PCI_INTERRUPT_PIN, 1),
    _ro("MIN_GNT", PCI_MIN_GNT, 1),
    _ro("MAX_LAT", PCI_MAX_LAT, 1),
])
PCI_TYPE0_HEADER_BITS = {
    "COMMAND": PCI_COMMAND_BITS,
    "STATUS": PCI_STATUS_ERROR_BITS,
    **{f"BAR{i}": 0 for i in range(PCI_STD_NUM_BARS)},  # unimplemented BARs are hardwired 0
}

# --- capability list (PCI 3.0 §6.7) ------------------------------------------
PCI_CAP_LIST_ID = 0
PCI_CAP_LIST_NEXT = 1
PCI_CAP_FLAGS = 2
PCI_CAP_LIST_TTL = 48  # (256 - 64) / 4: a walk longer than this is a loop
PCI_CAP_ID_PM = 0x01
PCI_CAP_ID_MSI = 0x05
PCI_CAP_ID_VNDR = 0x09
PCI_CAP_ID_EXP = 0x10
PCI_CAP_ID_MSIX = 0x11
_CAP_HEADER = (_ro("CAP_ID", PCI_CAP_LIST_ID, 1), _ro("CAP_NEXT", PCI_CAP_LIST_NEXT, 1))

# --- MSI capability (PCI 3.0 §6.8.1) -----------------------------------------
PCI_MSI_FLAGS = 0x02
PCI_MSI_FLAGS_ENABLE = 0x0001
PCI_MSI_FLAGS_QMASK = 0x000E  # Multiple Message Capable, log2
PCI_MSI_FLAGS_QSIZE = 0x0070  # Multiple Message Enable, log2
PCI_MSI_FLAGS_64BIT = 0x0080
PCI_MSI_FLAGS_MASKBIT = 0x0100
PCI_MSI_ADDRESS_LO = 0x04
PCI_MSI_ADDRESS_HI = 0x08
PCI_MSI_DATA_32 = 0x08
PCI_MSI_MASK_32 = 0x0C
PCI_MSI_PENDING_32 = 0x10
PCI_MSI_DATA_64 = 0x0C
PCI_MSI_MASK_64 = 0x10
PCI_MSI_PENDING_64 = 0x14
PCI_MSI_BITS = {"FLAGS": PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE, "ADDRESS_LO": 0xFFFFFFFC}


def pci_msi_cap(is64: bool, maskbit: bool) -> RegisterMap:
    """The MSI capability: its layout depends on the 64-bit and per-vector
    masking flags (PCI 3.0 §6.8.1, Figure 6-9)."""
    data = PCI_MSI_DATA_64 if is64 else PCI_MSI_DATA_32
    regs = [*_CAP_HEADER, _rw("FLAGS", PCI_MSI_FLAGS, 2), _rw("ADDRESS_LO", PCI_MSI_ADDRESS_LO, 4)]
    if is64:
        regs.append(_rw("ADDRESS_HI", PCI_MSI_ADDRESS_HI, 4))
    regs.append(_rw("DATA", data, 2))
    if maskbit:
        regs += [_rw("MASK", data + 4, 4), _ro("PENDING", data + 8, 4)]
    return RegisterMap("pci_msi_cap", regs)


# --- MSI-X capability and table (PCI 3.0 §6.8.2) ------------------------------
PCI_MSIX_FLAGS = 0x02
PCI_MSIX_FLAGS_QSIZE = 0x07FF  # Table Size, encoded as N-1
PCI_MSIX_FLAGS_MASKALL = 0x4000
PCI_MSIX_FLAGS_ENABLE = 0x8000
PCI_MSIX_TABLE = 0x04
PCI_MSIX_PBA = 0x08
PCI_MSIX_TABLE_BIR = 0x00000007
PCI_MSIX_TABLE_OFFSET = 0xFFFFFFF8
PCI_MSIX_PBA_BIR = 0x00000007
PCI_MSIX_PBA_OFFSET = 0xFFFFFFF8
PCI_CAP_MSIX_SIZEOF = 12
PCI_MSIX_CAP = RegisterMap("pci_msix_cap", [
    *_CAP_HEADER,
    _rw("FLAGS", PCI_MSIX_FLAGS, 2, doc="Table Size RO; Function Mask, MSI-X Enable RW"),
    _ro("TABLE", PCI_MSIX_TABLE, 4, "offset | BIR"),
    _ro("PBA", PCI_MSIX_PBA, 4, "offset | BIR"),
])
PCI_MSIX_CAP_BITS = {"FLAGS": PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE}

PCI_MSIX_ENTRY_SIZE = 16
PCI_MSIX_ENTRY_LOWER_ADDR = 0x0
PCI_MSIX_ENTRY_UPPER_ADDR = 0x4
PCI_MSIX_ENTRY_DATA = 0x8
PCI_MSIX_ENTRY_VECTOR_CTRL = 0xC
PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x00000001  # set at reset (PCI 3.0 §6.8.2.9)
PCI_MSIX_ENTRY = Layout("pci_msix_entry", PCI_MSIX_ENTRY_SIZE, [
    ("msg_addr_lo", PCI_MSIX_ENTRY_LOWER_ADDR, 4),
    ("msg_addr_hi", PCI_MSIX_ENTRY_UPPER_ADDR, 4),
    ("msg_data", PCI_MSIX_ENTRY_DATA, 4),
    ("vector_ctrl", PCI_MSIX_ENTRY_VECTOR_CTRL, 4),
])

# --- PCI Express capability (PCIe 3.0 §7.8) -----------------------------------
PCI_EXP_FLAGS = 0x02
PCI_EXP_FLAGS_VERS = 0x000F
PCI_EXP_FLAGS_TYPE = 0x00F0
PCI_EXP_TYPE_ENDPOINT = 0x0
PCI_EXP_DEVCAP = 0x04
PCI_EXP_DEVCAP_PAYLOAD = 0x00000007
PCI_EXP_DEVCTL = 0x08
PCI_EXP_DEVCTL_RELAX_EN = 0x0010
PCI_EXP_DEVCTL_NOSNOOP_EN = 0x0800
PCI_EXP_DEVCTL_READRQ_512B = 0x2000
PCI_EXP_DEVSTA = 0x0A
PCI_EXP_DEVSTA_CED = 0x0001
PCI_EXP_DEVSTA_NFED = 0x0002
PCI_EXP_DEVSTA_FED = 0x0004
PCI_EXP_DEVSTA_URD = 0x0008
PCI_EXP_LNKCAP = 0x0C
PCI_EXP_LNKCAP_SLS_8_0GB = 0x00000003
PCI_EXP_LNKCAP_MLW = 0x000003F0
PCI_EXP_LNKCTL = 0x10
PCI_EXP_LNKCTL_ASPMC = 0x0003
PCI_EXP_LNKCTL_RCB = 0x0008
PCI_EXP_LNKCTL_CCC = 0x0040
PCI_EXP_LNKCTL_ES = 0x0080
PCI_EXP_LNKSTA = 0x12
PCI_EXP_LNKSTA_CLS_8_0GB = 0x0003
PCI_EXP_LNKSTA_NLW_X8 = 0x0080
PCI_EXP_DEVCAP2 = 0x24
PCI_EXP_DEVCTL2 = 0x28
PCI_EXP_DEVSTA2 = 0x2A
PCI_EXP_LNKCAP2 = 0x2C
PCI_EXP_LNKCAP2_SLS_2_5_TO_8_0GB = 0x0000000E  # Supported Link Speeds Vector, bits 1..3
PCI_EXP_LNKCTL2 = 0x30
PCI_EXP_LNKCTL2_TLS = 0x000F
PCI_EXP_LNKSTA2 = 0x32
PCI_CAP_EXP_ENDPOINT_SIZEOF_V2 = 0x34
PCI_EXP_FLAGS_V2_ENDPOINT = 2 | PCI_EXP_TYPE_ENDPOINT << 4
# An x8 8 GT/s endpoint, 256-byte Max_Payload_Size; slot and root registers
# (0x14-0x23) are reserved for endpoints and read as zero.
PCI_EXP_ENDPOINT_CAP = RegisterMap("pci_exp_endpoint_cap", [
    *_CAP_HEADER,
    Register("FLAGS", PCI_EXP_FLAGS, 2, reset=PCI_EXP_FLAGS_V2_ENDPOINT, access="ro"),
    Register("DEVCAP", PCI_EXP_DEVCAP, 4, reset=0x1, access="ro", doc="Max_Payload_Size 256B"),
    _rw("DEVCTL", PCI_EXP_DEVCTL, 2,
        PCI_EXP_DEVCTL_RELAX_EN | PCI_EXP_DEVCTL_NOSNOOP_EN | PCI_EXP_DEVCTL_READRQ_512B,
        "defaults per PCIe 3.0 §7.8.4"),
    Register("DEVSTA", PCI_EXP_DEVSTA, 2, access="w1c"),
    Register("LNKCAP", PCI_EXP_LNKCAP, 4, reset=PCI_EXP_LNKCAP_SLS_8_0GB | 8 << 4, access="ro"),
    _rw("LNKCTL", PCI_EXP_LNKCTL, 2),
    Register("LNKSTA", PCI_EXP_LNKSTA, 2, reset=PCI_EXP_LNKSTA_CLS_8_0GB | PCI_EXP_LNKSTA_NLW_X8,
             access="ro"),
    _ro("DEVCAP2", PCI_EXP_DEVCAP2, 4),
    _ro("DEVCTL2", PCI_EXP_DEVCTL2, 2, "no DEVCAP2 feature, so all RsvdP"),
    _ro("DEVSTA2", PCI_EXP_DEVSTA2, 2),
    Register("LNKCAP2", PCI_EXP_LNKCAP2, 4, reset=PCI_EXP_LNKCAP2_SLS_2_5_TO_8_0GB, access="ro"),
    _rw("LNKCTL2", PCI_EXP_LNKCTL2, 2, PCI_EXP_LNKSTA_CLS_8_0GB, "Target Link Speed"),
    _ro("LNKSTA2", PCI_EXP_LNKSTA2, 2),
])
PCI_EXP_ENDPOINT_CAP_BITS = {
    "DEVCTL": 0x7FFF,  # bit 15 Initiate FLR: FLR not implemented
    "DEVSTA": PCI_EXP_DEVSTA_CED | PCI_EXP_DEVSTA_NFED | PCI_EXP_DEVSTA_FED | PCI_EXP_DEVSTA_URD,
    "LNKCTL": PCI_EXP_LNKCTL_ASPMC | PCI_EXP_LNKCTL_RCB | PCI_EXP_LNKCTL_CCC | PCI_EXP_LNKCTL_ES,
    "LNKCTL2": PCI_EXP_LNKCTL2_TLS,
}

# --- extended capabilities (PCIe 3.0 §7.9.3) -----------------------------------
PCI_EXT_CAP_START = PCI_CFG_SPACE_SIZE
PCI_EXT_CAP_HEADER_SIZEOF = 4
PCI_EXT_CAP_ID_ERR = 0x01
PCI_EXT_CAP_ID_ARI = 0x0E
PCI_EXT_CAP_ID_SRIOV = 0x10
PCI_EXT_CAP_ARI_SIZEOF = 8
PCI_EXT_CAP_SRIOV_SIZEOF = 0x40
PCI_EXT_CAP_LIST_TTL = (PCI_CFG_SPACE_EXP_SIZE - PCI_CFG_SPACE_SIZE) // 8  # a longer walk is a loop (Linux)


def PCI_EXT_CAP_ID(header: int) -> int:  # noqa: N802 - the pci_regs.h macro names
    return header & 0xFFFF


def PCI_EXT_CAP_VER(header: int) -> int:  # noqa: N802
    return (header >> 16) & 0xF


def PCI_EXT_CAP_NEXT(header: int) -> int:  # noqa: N802
    return (header >> 20) & 0xFFC


def pci_ext_cap_header(cap_id: int, version: int, next_offset: int) -> int:
    return (cap_id & 0xFFFF) | (version & 0xF) << 16 | (next_offset & 0xFFC) << 20


# --- SR-IOV extended capability (PCIe 4.0 §9.3.3; SR-IOV 1.1 §3.3) ---------------
PCI_SRIOV_CAP = 0x04
PCI_SRIOV_CAP_VFM = 0x00000001  # VF Migration Capable
PCI_SRIOV_CAP_ARI_PRESERVED = 0x00000002  # ARI Capable Hierarchy Preserved
PCI_SRIOV_CAP_INTR = 0xFFE00000  # VF Migration Interrupt Message Number
PCI_SRIOV_CTRL = 0x08
PCI_SRIOV_CTRL_VFE = 0x0001  # VF Enable
PCI_SRIOV_CTRL_VFM = 0x0002  # VF Migration Enable
PCI_SRIOV_CTRL_INTR = 0x0004  # VF Migration Interrupt Enable
PCI_SRIOV_CTRL_MSE = 0x0008  # VF Memory Space Enable
PCI_SRIOV_CTRL_ARI = 0x0010  # ARI Capable Hierarchy
PCI_SRIOV_STATUS = 0x0A
PCI_SRIOV_STATUS_VFM = 0x0001  # VF Migration Status
PCI_SRIOV_INITIAL_VF = 0x0C
PCI_SRIOV_TOTAL_VF = 0x0E
PCI_SRIOV_NUM_VF = 0x10
PCI_SRIOV_FUNC_LINK = 0x12
PCI_SRIOV_VF_OFFSET = 0x14
PCI_SRIOV_VF_STRIDE = 0x16
PCI_SRIOV_VF_DID = 0x1A
PCI_SRIOV_SUP_PGSIZE = 0x1C
PCI_SRIOV_SYS_PGSIZE = 0x20
PCI_SRIOV_BAR = 0x24
PCI_SRIOV_NUM_BARS = 6
PCI_SRIOV_VFM = 0x3C  # VF Migration State Array Offset, BIR in bits 2:0
PCI_SRIOV_SUP_PGSIZE_MINREQ = 0x553  # 4K, 8K, 64K, 256K, 1M, 4M: required of every PF (§9.3.3.12)
PCI_SRIOV_PGSIZE_SHIFT = 12  # bit n of the page-size fields stands for 2**(n + 12) bytes


def pci_sriov_bar(index: int) -> int:
    """Offset of VF BAR ``index`` (0..5) inside the capability."""
    return PCI_SRIOV_BAR + 4 * index


# What a write mask cannot say, iovirt.pci.sriov enforces: NumVFs and System
# Page Size take a write only while VF Enable is clear (§9.3.3.7, §9.3.3.13);
# First VF Offset and VF Stride may change with NumVFs and ARI Capable
# Hierarchy (§9.3.3.9-10), so software reads them after writing NumVFs; a VF
# BAR sizes like a BAR (write all ones, read the mask) for one VF, and decodes
# that size times NumVFs (§9.3.3.14).
PCI_SRIOV_CAP_REGS = RegisterMap("pci_sriov_cap", [
    _ro("HEADER", 0x00, 4),
    _ro("CAP", PCI_SRIOV_CAP, 4, "HwInit"),
    _rw("CTRL", PCI_SRIOV_CTRL, 2, doc="VF Migration (Interrupt) Enable RsvdP unless VF Migration Capable; "
                                       "ARI Capable Hierarchy RW in the lowest-numbered PF only"),
    Register("STATUS", PCI_SRIOV_STATUS, 2, access="w1c"),
    _ro("INITIAL_VF", PCI_SRIOV_INITIAL_VF, 2, "HwInit; equals TotalVFs unless VF Migration Capable"),
    _ro("TOTAL_VF", PCI_SRIOV_TOTAL_VF, 2, "HwInit"),
    _rw("NUM_VF", PCI_SRIOV_NUM_VF, 2, doc="undefined above TotalVFs or when written with VF Enable set"),
    _ro("FUNC_LINK", PCI_SRIOV_FUNC_LINK, 1, "the PF's own function number when it depends on no other"),
    _ro("VF_OFFSET", PCI_SRIOV_VF_OFFSET, 2, "Routing ID of VF 0 minus the PF's"),
    _ro("VF_STRIDE", PCI_SRIOV_VF_STRIDE, 2, "Routing ID step from one VF to the next"),
    _ro("VF_DID", PCI_SRIOV_VF_DID, 2, "Device ID of every VF (the VF's own reads FFFFh)"),
    _ro("SUP_PGSIZE", PCI_SRIOV_SUP_PGSIZE, 4),
    Register("SYS_PGSIZE", PCI_SRIOV_SYS_PGSIZE, 4, reset=1, access="rw",
             doc="one bit of SUP_PGSIZE; each VF BAR is a multiple of this page"),
    *(_rw(f"BAR{i}", pci_sriov_bar(i), 4, doc="writable bits follow the VF BAR's size")
      for i in range(PCI_SRIOV_NUM_BARS)),
    _ro("VFM", PCI_SRIOV_VFM, 4, "0 unless VF Migration Capable"),
])
PCI_SRIOV_CAP_BITS = {
    "CTRL": PCI_SRIOV_CTRL_VFE | PCI_SRIOV_CTRL_MSE | PCI_SRIOV_CTRL_ARI,
    "STATUS": PCI_SRIOV_STATUS_VFM,
    **{f"BAR{i}": 0 for i in range(PCI_SRIOV_NUM_BARS)},  # unimplemented VF BARs are hardwired 0
}


# --- INTx routing (PCI-to-PCI Bridge 1.2 §9.1; PIIX PIRQ defaults of SeaBIOS) --
PCI_PIRQ_IRQS = (10, 10, 11, 11)  # ISA IRQ of PIRQA..PIRQD


def pci_swizzle(device: int, pin: int) -> int:
    """Which of PIRQA..D (0..3) INTx ``pin`` (1..4) of slot ``device`` drives,
    as the PIIX board wires it (QEMU hw/isa/piix3.c pci_slot_get_pirq,
    SeaBIOS piix_pci_slot_get_irq): slot n's INTA# on PIRQ[(n - 1) & 3]."""
    return (device - 1 + pin - 1) & 3


# --- class codes and IDs (PCI Code and ID Assignment; Linux pci_ids.h) ---------
PCI_CLASS_NETWORK_ETHERNET = 0x0200  # base class << 8 | subclass
PCI_CLASS_BRIDGE_HOST = 0x0600
PCI_VENDOR_ID_INTEL = 0x8086
PCI_DEVICE_ID_INTEL_82441 = 0x1237  # 440FX host bridge, as QEMU's i440FX

# --- configuration mechanism #1 (PCI 3.0 §3.2.2.3.2) ---------------------------
PCI_CONF1_ADDRESS_PORT = 0xCF8
PCI_CONF1_DATA_PORT = 0xCFC
PCI_CONF1_ENABLE = 0x80000000
PCI_CONF1_ADDRESS_MASK = 0x80FFFFFC  # bits 30:24 reserved and 1:0 read as 0


class Bdf(NamedTuple):
    """Bus:Device.Function, the routing ID of a function."""

    bus: int
    device: int
    function: int

    def __str__(self) -> str:
        return f"{self.bus:02x}:{self.device:02x}.{self.function:x}"


def pci_routing_id(bdf: Bdf) -> int:
    """The 16-bit Routing ID: bus 15:8, device 7:3, function 2:0 (PCIe 3.0 §2.2.4.2)."""
    return bdf.bus << 8 | bdf.device << 3 | bdf.function


def pci_routing_id_bdf(rid: int) -> Bdf:
    """Under ARI (§6.13) bits 7:0 are one 8-bit function number; as device
    7:3 and function 2:0 they name the same slot."""
    return Bdf((rid >> 8) & 0xFF, (rid >> 3) & 0x1F, rid & 0x7)


def pci_conf1_address(bdf: Bdf, reg: int) -> int:
    """CONFIG_ADDRESS: enable 31, bus 23:16, device 15:11, function 10:8,
    register 7:2."""
    return PCI_CONF1_ENABLE | bdf.bus << 16 | bdf.device << 11 | bdf.function << 8 | (reg & 0xFC)


def pci_conf1_decode(address: int) -> tuple[Bdf, int]:
    return Bdf((address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 0x7), address & 0xFC


# --- Enhanced Configuration Access Mechanism, ECAM (PCIe 3.0 §7.2.2) -----------
def pci_ecam_offset(bdf: Bdf, reg: int) -> int:
    """Offset in the ECAM window: bus 27:20, device 19:15, function 14:12,
    register 11:0."""
    return bdf.bus << 20 | bdf.device << 15 | bdf.function << 12 | (reg & 0xFFF)


def pci_ecam_decode(offset: int) -> tuple[Bdf, int]:
    return Bdf((offset >> 20) & 0xFF, (offset >> 15) & 0x1F, (offset >> 12) & 0x7), offset & 0xFFF
