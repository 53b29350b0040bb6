"""Realtek RTL8139C(L)+ in C mode, as data: PCI identity, register map, the
transmit status (TSD) bits, the receive packet header and the 93C46 serial
EEPROM.  RTL8139C(L) datasheet rev 1.4: section 5 (register descriptions,
cited below by register), 6 (EEPROM contents), 7 (PCI configuration), 9
(transmit and receive operation).  The C+ descriptor mode is not modelled.
Reset values the datasheet leaves to the EEPROM or the PHY, and which bits of
a register accept writes, follow QEMU's hw/net/rtl8139.c."""

from .ethernet import ETH_FCS_LEN as CRC_LEN  # noqa: F401
from .ethernet import ETH_MIN_FRAME  # noqa: F401
from .fields import Layout, Register, RegisterMap

VENDOR_ID = 0x10EC
DEVICE_ID = 0x8139
CLASS_ETHERNET = 0x020000
REVISION = 0x10             # below 0x20: an RTL8139 for 8139too (>= 0x20 is a C+ chip for 8139cp)
BAR0_SIZE = 0x100           # I/O BAR: the register file (section 7, IOAR)
BAR1_SIZE = 0x100           # memory BAR: the same registers (section 7, MEMAR)

# 5 CR: command
CR_BUFE = 1 << 0            # receive buffer empty (read only)
CR_TE = 1 << 2
CR_RE = 1 << 3
CR_RST = 1 << 4

# 5 IMR / ISR: interrupt mask and status
INT_ROK = 1 << 0
INT_RER = 1 << 1
INT_TOK = 1 << 2
INT_TER = 1 << 3
INT_RXOVW = 1 << 4          # receive buffer overflow
INT_PUN = 1 << 5            # packet underrun / link change
INT_FOVW = 1 << 6           # receive FIFO overflow
INT_LENCHG = 1 << 13
INT_TIMEOUT = 1 << 14       # TCTR reached TimerInt
INT_SERR = 1 << 15          # PCI system error (bus master abort)
INT_ALL = 0xE07F

# 5 TSD0-3: transmit status of descriptor
TSD_SIZE = 0x1FFF           # bits 12:0, bytes to send
TSD_OWN = 1 << 13           # 1: DMA of the buffer done, the driver may reuse it
TSD_TUN = 1 << 14
TSD_TOK = 1 << 15
TSD_ERTXTH_SHIFT = 16       # early TX threshold, bits 21:16, in 32-byte units
TSD_ERTXTH = 0x3F << TSD_ERTXTH_SHIFT
TSD_NCC_SHIFT = 24          # collision count, bits 27:24
TSD_CDH = 1 << 28
TSD_OWC = 1 << 29
TSD_TABT = 1 << 30
TSD_CRS = 1 << 31
TSD_WRITABLE = TSD_SIZE | TSD_OWN | TSD_ERTXTH   # the status bits clear when SIZE is written
TX_MAX_SIZE = 1792          # TSD: SIZE must not exceed 0700h
NUM_TX_DESC = 4

# 5 TSAD: transmit status of all descriptors
TSAD_OWN_SHIFT = 0
TSAD_TABT_SHIFT = 4
TSAD_TUN_SHIFT = 8
TSAD_TOK_SHIFT = 12

# 5 RCR: receive configuration
RCR_AAP = 1 << 0            # accept all packets with a physical destination address
RCR_APM = 1 << 1            # accept physical match
RCR_AM = 1 << 2             # accept multicast (hash in MAR0-7)
RCR_AB = 1 << 3             # accept broadcast
RCR_AR = 1 << 4
RCR_AER = 1 << 5
RCR_WRAP = 1 << 7           # 1: a packet may run past the end of the ring instead of wrapping
RCR_MXDMA_SHIFT = 8
RCR_RBLEN_SHIFT = 11        # 00 8K, 01 16K, 10 32K, 11 64K (+16 bytes)
RCR_RBLEN_32K = 2 << RCR_RBLEN_SHIFT
RCR_RXFTH_SHIFT = 13
RX_RING_PAD = 16            # the ring is 8K << RBLEN plus 16 bytes
RX_RING_MAX = 65536         # with the 64K ring WRAP is ignored: packets always wrap


def rx_ring_size(rcr: int) -> int:
    """RCR.RBLEN: the ring length the write pointer wraps at."""
    return 8192 << ((rcr >> RCR_RBLEN_SHIFT) & 3)


# 5 TCR: transmit configuration
TCR_CLRABT = 1 << 0         # write only: retransmit after an abort
TCR_TXRR_SHIFT = 4
TCR_MXDMA_SHIFT = 8
TCR_CRC = 1 << 16           # 1: do not append the CRC
TCR_LBK = 3 << 17           # 11: loopback
TCR_IFG_SHIFT = 24
TCR_IFG96 = 3 << TCR_IFG_SHIFT
TCR_HWVERID_MASK = 0x7CC00000
TCR_HWVERID_RTL8139C = 0x74000000   # bits 30:26 = 11101, 23:22 = 00

# 5 9346CR: operating mode (EEM1:0) and the EEPROM pins in programming mode
EEM_MASK = 0xC0
EEM_NORMAL = 0x00
EEM_AUTOLOAD = 0x40         # reload from the EEPROM, as at power-on
EEM_PROGRAM = 0x80          # EECS/EESK/EEDI drive the EEPROM pins, EEDO reads its output
EEM_CONFIG_WRITE = 0xC0     # unlock CONFIG0-4 and BMCR writes
EECS = 1 << 3
EESK = 1 << 2
EEDI = 1 << 1
EEDO = 1 << 0

# 5 CONFIG1/3/4, MSR
CONFIG1_PMEN = 1 << 0
CONFIG1_IOMAP = 1 << 2
CONFIG1_MEMMAP = 1 << 3
CONFIG1_LWACT = 1 << 4
CONFIG3_FBTBEN = 1 << 0
CONFIG3_MAGIC = 1 << 5
CONFIG4_LWPTN = 1 << 2
MSR_LINKB = 1 << 2          # 0: link OK
MSR_SPEED_10 = 1 << 3

# 5 receive status register in the packet header written before each frame (9.2)
RX_HEADER = Layout("rtl8139_rx_header", 4, [("status", 0, 2), ("length", 2, 2)])
RSR_ROK = 1 << 0
RSR_FAE = 1 << 1
RSR_CRC = 1 << 2
RSR_LONG = 1 << 3           # longer than 4K
RSR_RUNT = 1 << 4
RSR_ISE = 1 << 5
RSR_BAR = 1 << 13           # broadcast
RSR_PAM = 1 << 14           # physical address matched
RSR_MAR = 1 << 15           # multicast
RX_MAX_LENGTH = 4096        # RSR_LONG above this (the length counts the CRC)

# 6 93C46 EEPROM: 64 words, 6-bit addresses; MAC at words 7-9 (bytes 0Eh-13h)
EEPROM_WORDS = 64
EEPROM_ADDR_BITS = 6
EEPROM_ID = 0x00            # 8129h
EEPROM_ID_CODE = 0x8129
EEPROM_VID = 0x01
EEPROM_DID = 0x02
EEPROM_SVID = 0x03
EEPROM_SMID = 0x04
EEPROM_MAC = 0x07
# 93C46 serial instructions: start bit 1, 2-bit opcode, address, MSB first
EE_OP_BITS = 2
EE_OP_READ = 0b10
EE_READ_CMD = 0b110         # start bit and READ opcode, as 8139too shifts them out

_ISR_DOC = "Interrupt Status (write 1 to clear)"

REGS = RegisterMap("rtl8139", [
    *[Register(f"IDR{i}", i, 1, doc="ID (MAC address), loaded from the EEPROM") for i in range(6)],
    *[Register(f"MAR{i}", 0x08 + i, 1, doc="Multicast hash filter") for i in range(8)],
    *[Register(f"TSD{i}", 0x10 + 4 * i, reset=TSD_OWN, doc="Transmit Status of Descriptor") for i in range(4)],
    *[Register(f"TSAD{i}", 0x20 + 4 * i, doc="Transmit Start Address of Descriptor") for i in range(4)],
    Register("RBSTART", 0x30, doc="Receive Buffer Start Address"),
    Register("ERBCR", 0x34, 2, access="ro", doc="Early Receive Byte Count"),
    Register("ERSR", 0x36, 1, access="ro", doc="Early Rx Status"),
    Register("CR", 0x37, 1, reset=CR_BUFE, doc="Command"),
    Register("CAPR", 0x38, 2, reset=0xFFF0, doc="Current Address of Packet Read (minus 16)"),
    Register("CBR", 0x3A, 2, access="ro", doc="Current Buffer Address (RX write offset)"),
    Register("IMR", 0x3C, 2, doc="Interrupt Mask"),
    Register("ISR", 0x3E, 2, access="w1c", doc=_ISR_DOC),
    Register("TCR", 0x40, reset=TCR_HWVERID_RTL8139C, doc="Transmit Configuration"),
    Register("RCR", 0x44, doc="Receive Configuration"),
    Register("TCTR", 0x48, doc="Timer Count (PCI clocks; any write resets it)"),
    Register("MPC", 0x4C, doc="Missed Packet Counter (24 bits; any write clears it)"),
    Register("9346CR", 0x50, 1, doc="93C46 Command"),
    Register("CONFIG0", 0x51, 1, doc="Configuration 0"),
    Register("CONFIG1", 0x52, 1, reset=CONFIG1_IOMAP | CONFIG1_MEMMAP, doc="Configuration 1"),
    Register("TimerInt", 0x54, doc="Timer Interrupt at this TCTR value (0: off)"),
    Register("MSR", 0x58, 1, access="ro", reset=0xD0, doc="Media Status"),
    Register("CONFIG3", 0x59, 1, reset=CONFIG3_FBTBEN, doc="Configuration 3"),
    Register("CONFIG4", 0x5A, 1, doc="Configuration 4"),
    Register("MULINT", 0x5C, 2, doc="Multiple Interrupt Select"),
    Register("RERID", 0x5E, 1, access="ro", reset=REVISION, doc="PCI Revision ID"),
    Register("TSAD", 0x60, 2, access="ro", reset=0xF, doc="Transmit Status of All Descriptors"),
    Register("BMCR", 0x62, 2, reset=0x1000, doc="Basic Mode Control"),
    Register("BMSR", 0x64, 2, access="ro", reset=0x782D, doc="Basic Mode Status (link up, autoneg done)"),
    Register("ANAR", 0x66, 2, reset=0x05E1, doc="Auto-Negotiation Advertisement"),
    Register("ANLPAR", 0x68, 2, access="ro", reset=0x05E1, doc="Auto-Negotiation Link Partner"),
    Register("ANER", 0x6A, 2, access="ro", reset=0x0001, doc="Auto-Negotiation Expansion"),
    Register("CSCR", 0x74, 2, access="ro", reset=0x0340, doc="Chip Status and Configuration"),
    Register("CONFIG5", 0xD8, 1, doc="Configuration 5"),
])

# Bits a write changes (QEMU's SET_MASKED masks); absent: every bit of a
# writable register.
WRITABLE = {
    "CR": CR_RE | CR_TE | CR_RST,
    "IMR": INT_ALL,
    "TCR": 0x030F07F0,      # TXRR, MXDMA, CRC, LBK, IFG; HWVERID is read only
    "RCR": 0x0F03FFBF,
    "9346CR": EEM_MASK | EECS | EESK | EEDI,
    "CONFIG0": 0x07,
    "CONFIG1": 0xF3,
    "CONFIG3": 0x70,
    "CONFIG4": 0xF5,
    "CONFIG5": 0x7F,
    "MULINT": 0x0FFF,
    "BMCR": 0x8200,
}
# 9346CR: written only while EEM is config-write
CONFIG_LOCKED = frozenset({"CONFIG0", "CONFIG1", "CONFIG3", "CONFIG4"})


def mcast_hash(addr: bytes) -> int:
    """Index of a multicast address's bit in MAR0-7: the top 6 bits of the
    Ethernet CRC (big-endian CRC-32 without final inversion), as 8139too's
    ``ether_crc(ETH_ALEN, addr) >> 26``."""
    crc = 0xFFFFFFFF
    for byte in addr:
        for bit in range(8):
            top = (crc >> 31) ^ ((byte >> bit) & 1)
            crc = (crc << 1) & 0xFFFFFFFF
            if top:
                crc ^= 0x04C11DB7
    return crc >> 26
