"""AMD Am79C970A PCnet-PCI II (VMware's "Vlance") as data: PCI identity, the
I/O map in word I/O mode, CSR and BCR numbers and bits, the SWSTYLE 2
initialization block and descriptors.  Am79C970A data sheet, AMD publication
19436 rev. E (June 2000): "Software Access" (I/O resources, RAP/RDP/BDP,
address PROM), "Control and Status Registers", "Bus Configuration
Registers", "Initialization Block", "Receive/Transmit Descriptors".  Values
the data sheet leaves to the board (PROM bytes, chip ID) follow QEMU's
hw/net/pcnet.c and pcnet-pci.c."""

import zlib

from .ethernet import ETH_FCS_LEN as FCS_LEN  # noqa: F401
from .ethernet import ETH_MIN_FRAME  # noqa: F401 - APAD_XMT pads to it
from .fields import Layout, Register, RegisterMap

VENDOR_ID = 0x1022          # AMD
DEVICE_ID = 0x2000          # PCnet-PCI II (Linux PCI_DEVICE_ID_AMD_LANCE)
REVISION = 0x10
CLASS_ETHERNET = 0x020000
BAR0_SIZE = 0x20            # I/O resources (data sheet: 32 bytes)
BAR1_SIZE = 0x20            # the same resources, memory mapped

# "I/O Resources", word I/O mode (BCR18.DWIO = 0): 16-bit accesses
APROM = 0x00                # 16 bytes of address PROM, byte or word reads
APROM_SIZE = 16
RDP = 0x10                  # register data port: the CSR that RAP selects
RAP = 0x12                  # register address port
RESET = 0x14                # a read resets the chip (S_RESET)
BDP = 0x16                  # BCR data port: the BCR that RAP selects
RAP_MASK = 0x7F

# Address PROM contents (QEMU pcnet_common_init, after the data sheet's
# "Address PROM" and AMD driver conventions)
APROM_MAC = 0
APROM_HWID = 9
HWID = 0x11
APROM_CHECKSUM = 12         # 16-bit sum of bytes 0x00-0x0B and 0x0E-0x0F
APROM_SIGNATURE = 14
SIGNATURE = b"WW"


def aprom_checksum(prom: bytes) -> int:
    return (sum(prom[:APROM_CHECKSUM]) + sum(prom[APROM_SIGNATURE:APROM_SIZE])) & 0xFFFF


def aprom_image(mac: bytes) -> bytes:
    prom = bytearray(APROM_SIZE)
    prom[APROM_MAC : APROM_MAC + 6] = mac
    prom[APROM_HWID] = HWID
    prom[APROM_SIGNATURE:] = SIGNATURE
    prom[APROM_CHECKSUM : APROM_CHECKSUM + 2] = aprom_checksum(prom).to_bytes(2, "little")
    return bytes(prom)


# CSR0: Controller Status and Control
CSR0_INIT = 1 << 0
CSR0_STRT = 1 << 1
CSR0_STOP = 1 << 2
CSR0_TDMD = 1 << 3
CSR0_TXON = 1 << 4
CSR0_RXON = 1 << 5
CSR0_IENA = 1 << 6
CSR0_INTR = 1 << 7
CSR0_IDON = 1 << 8
CSR0_TINT = 1 << 9
CSR0_RINT = 1 << 10
CSR0_MERR = 1 << 11
CSR0_MISS = 1 << 12
CSR0_CERR = 1 << 13
CSR0_BABL = 1 << 14
CSR0_ERR = 1 << 15
CSR0_W1C = CSR0_BABL | CSR0_CERR | CSR0_MISS | CSR0_MERR | CSR0_RINT | CSR0_TINT | CSR0_IDON
CSR0_INTERRUPTS = CSR0_W1C & ~CSR0_CERR     # CERR sets ERR but never INTR
CSR0_ERRORS = CSR0_BABL | CSR0_CERR | CSR0_MISS | CSR0_MERR

# CSR3: Interrupt Masks and Deferral Control (masks share CSR0's positions)
CSR3_BABLM = CSR0_BABL
CSR3_MISSM = CSR0_MISS
CSR3_MERRM = CSR0_MERR
CSR3_RINTM = CSR0_RINT
CSR3_TINTM = CSR0_TINT
CSR3_IDONM = CSR0_IDON
CSR3_DXSUFLO = 1 << 6       # keep transmitting after an underflow
CSR3_MASKS = CSR0_INTERRUPTS

# CSR4: Test and Features Control
CSR4_APAD_XMT = 1 << 11     # pad short transmit frames to 64 bytes
CSR4_RESET = 0x0115
CSR4_PCNET32 = 0x0915       # what pcnet32 writes: APAD_XMT on top of the reset value

# CSR15: Mode (loaded from the initialization block MODE field)
CSR15_DRX = 1 << 0
CSR15_DTX = 1 << 1
CSR15_LOOP = 1 << 2
CSR15_DXMTFCS = 1 << 3
CSR15_DRCVPA = 1 << 13
CSR15_DRCVBC = 1 << 14
CSR15_PROM = 1 << 15

CHIP_ID = 0x02621003        # CSR89:CSR88: part 0x2621 (Am79C970A), AMD manufacturer 0x003
CHIP_ID_MASK = 0x0FFFFFFF   # bits 31:28 are the silicon revision

CSRS = RegisterMap("pcnet_csr", [
    Register("CSR0", 0, 2, reset=CSR0_STOP, doc="Controller Status and Control"),
    Register("CSR1", 1, 2, doc="IADR[15:0]: initialization block address, low"),
    Register("CSR2", 2, 2, doc="IADR[31:16]: initialization block address, high"),
    Register("CSR3", 3, 2, doc="Interrupt Masks and Deferral Control"),
    Register("CSR4", 4, 2, reset=CSR4_RESET, doc="Test and Features Control"),
    *[Register(f"CSR{8 + i}", 8 + i, 2, doc=f"LADRF[{16 * i + 15}:{16 * i}]: logical address filter")
      for i in range(4)],
    *[Register(f"CSR{12 + i}", 12 + i, 2, doc=f"PADR[{16 * i + 15}:{16 * i}]: physical address")
      for i in range(3)],
    Register("CSR15", 15, 2, doc="MODE"),
    Register("CSR58", 58, 2, doc="SWS: Software Style, alias of BCR20"),
    Register("CSR76", 76, 2, access="ro", doc="RCVRL: two's complement of the receive ring length"),
    Register("CSR78", 78, 2, access="ro", doc="XMTRL: two's complement of the transmit ring length"),
    Register("CSR88", 88, 2, access="ro", reset=CHIP_ID & 0xFFFF, doc="Chip ID lower"),
    Register("CSR89", 89, 2, access="ro", reset=CHIP_ID >> 16, doc="Chip ID upper"),
    Register("CSR112", 112, 2, doc="MISSC: missed frame count"),
])
CSR_IADR_LOW, CSR_IADR_HIGH, CSR_LADRF, CSR_PADR, CSR_MODE = 1, 2, 8, 12, 15
CSR_SWS, CSR_RCVRL, CSR_XMTRL, CSR_MISSC = 58, 76, 78, 112
# "Read/write accessible only when either the STOP or the SPND bit is set"
CSR_WRITE_WHEN_STOPPED = frozenset({CSR_IADR_LOW, CSR_IADR_HIGH, *range(8, 16), CSR_MISSC})

# Bus Configuration Registers
BCR2_ASEL = 1 << 1          # MC: automatic port selection
BCR18_DWIO = 1 << 7         # BSBC: double-word I/O mode, set only by a dword write to RDP
BCR20_SWSTYLE = 0x00FF      # SWS: software style
BCR20_SSIZE32 = 1 << 8      # 32-bit software structures
BCR20_CSRPCNET = 1 << 9     # PCnet-style CSR3/CSR4/CSR5
SWSTYLE_LANCE = 0           # 16-bit structures
SWSTYLE_ILACC = 1
SWSTYLE_PCNET_PCI = 2       # 32-bit structures, the one modelled here
SWSTYLE_PCNET_PCI_SWAPPED = 3

BCRS = RegisterMap("pcnet_bcr", [
    Register("BCR2", 2, 2, reset=BCR2_ASEL, doc="MC: Miscellaneous Configuration"),
    Register("BCR18", 18, 2, reset=0x9001, doc="BSBC: Burst and Bus Control"),
    Register("BCR20", 20, 2, reset=BCR20_CSRPCNET, doc="SWS: Software Style"),
])
BCR_MC, BCR_BSBC, BCR_SWS = 2, 18, 20

# Initialization block, SWSTYLE 2 (data sheet table "Initialization Block
# (SSIZE32 = 1)"): RLEN in bits 23:20, TLEN in bits 31:28 of the first DWORD
INIT_BLOCK = Layout("pcnet_init_block_ss32", 28, [
    ("mode", 0, 2), ("rlen", 2, 1), ("tlen", 3, 1), ("padr_lo", 4, 4), ("padr_hi", 8, 2),
    ("ladrf", 12, 8), ("rdra", 20, 4), ("tdra", 24, 4),
])
LEN_SHIFT = 4               # RLEN/TLEN: log2 of the ring length, in the byte's high nibble
MAX_LOG2_RING = 9           # codes 9..15 all mean 512 descriptors
INIT_BLOCK_ALIGN = 4


def ring_length(code: int) -> int:
    """RLEN/TLEN code (0-15) to descriptors in the ring."""
    return 1 << min(code, MAX_LOG2_RING)


# Descriptors, SWSTYLE 2: 16 bytes, DWORD fields (data sheet tables
# "Receive Descriptor (SWSTYLE = 2)", "Transmit Descriptor (SWSTYLE = 2)").
# RMD1/TMD1 are split into the BCNT half (bits 15:0) and the status half
# (bits 31:16), the 16-bit word at +6 that the bit constants below describe.
TX_DESC = Layout("pcnet_tmd", 16, [("tbadr", 0, 4), ("bcnt", 4, 2), ("status", 6, 2), ("misc", 8, 4),
                                   ("user", 12, 4)])
RX_DESC = Layout("pcnet_rmd", 16, [("rbadr", 0, 4), ("bcnt", 4, 2), ("status", 6, 2), ("mcnt", 8, 4),
                                   ("user", 12, 4)])
DESC_SIZE = 16
DESC_ALIGN = 16
MD1_OFFSET = 4
STATUS_OFFSET = 6
MCNT_OFFSET = 8
TX_STATUS = TX_DESC.field_struct("status")
RX_STATUS = RX_DESC.field_struct("status")
MD1 = Layout("pcnet_md1", 4, [("bcnt", 0, 2), ("status", 2, 2)]).struct          # TMD1 / RMD1 whole
TX_STATUS_MISC = Layout("pcnet_tmd_wb", 6, [("status", 0, 2), ("misc", 2, 4)]).struct   # TMD1[31:16] + TMD2
RX_STATUS_MCNT = Layout("pcnet_rmd_wb", 6, [("status", 0, 2), ("mcnt", 2, 4)]).struct   # RMD1[31:16] + RMD2

# TMD1/RMD1 bits 31:16
OWN = 1 << 15
ERR = 1 << 14
STP = 1 << 9
ENP = 1 << 8
BPE = 1 << 7
TMD1_ADD_FCS = 1 << 13
TMD1_MORE = 1 << 12         # MORE on write-back, LTINT on fetch when CSR5.LTINTEN
TMD1_ONE = 1 << 11
TMD1_DEF = 1 << 10
RMD1_FRAM = 1 << 13
RMD1_OFLO = 1 << 12
RMD1_CRC = 1 << 11
RMD1_BUFF = 1 << 10
RMD1_PAM = 1 << 6
RMD1_LAFM = 1 << 5
RMD1_BAM = 1 << 4
# TMD1/RMD1 bits 15:0: BCNT, the buffer length as a 12-bit two's complement
ONES = 0xF000
BCNT_MASK = 0x0FFF
# TMD2
TMD2_BUFF = 1 << 31
TMD2_UFLO = 1 << 30
TMD2_EXDEF = 1 << 29
TMD2_LCOL = 1 << 28
TMD2_LCAR = 1 << 27
TMD2_RTRY = 1 << 26
# RMD2
RMD2_MCNT = 0x0FFF          # message byte count, FCS included


def bcnt(length: int) -> int:
    """The BCNT field for a buffer of ``length`` (1-4096) bytes, ONES set."""
    return ONES | -length & BCNT_MASK


def buffer_length(field: int) -> int:
    """Bytes in the buffer a BCNT field describes; 0 means 4096."""
    return 4096 - (field & BCNT_MASK)


def ladrf_bit(dst: bytes) -> int:
    """Logical address filter index of a multicast address: the top six bits
    of the little-endian CRC-32 of the destination, without final inversion."""
    return (zlib.crc32(dst) ^ 0xFFFFFFFF) >> 26


BABBLE = 1519               # bytes on the wire (FCS included) that set CSR0.BABL
MAX_TX_FRAME = 4092         # QEMU's transmit buffer less the FCS: longer chains are dropped
