"""Intel 8254x (82540EM, 82545EM) as data: PCI identity, register map, legacy TX/RX
descriptors, EEPROM layout.  Intel PCI/PCI-X Family of Gigabit Ethernet
Controllers Software Developer's Manual (8254x SDM, rev. 4.0), chapters 3, 5,
13.  Reset values the SDM leaves to the EEPROM follow QEMU's hw/net/e1000.c."""

from .ethernet import ETH_MIN_FRAME  # noqa: F401 - shorter frames are padded (TCTL.PSP)
from .fields import Layout, Register, RegisterMap

VENDOR_ID = 0x8086
DEVICE_ID = 0x100E          # 82540EM-A desktop (SDM table 5-1)
DEVICE_ID_82545EM = 0x100F  # 82545EM-A copper (SDM table 5-1): VMware ESXi's "E1000"
# The variants a model can be, by the name a scenario gives them: each is its device ID (the
# register map and descriptors are the same; the 82545EM's PCI-X bus interface is not modelled,
# and on a conventional PCI bus, STATUS.PCIX_MODE 0, Linux's e1000 takes the 82540EM's paths)
VARIANTS = {"82540em": DEVICE_ID, "82545em": DEVICE_ID_82545EM}
CLASS_ETHERNET = 0x020000
BAR0_SIZE = 0x20000         # 128 KiB memory BAR (SDM 4.1.1)
BAR1_SIZE = 0x40            # I/O BAR: IOADDR/IODATA indirect access (SDM 13.1)
IOADDR = 0x00
IODATA = 0x04

# SDM 13.4.1 CTRL
CTRL_FD = 1 << 0
CTRL_ASDE = 1 << 5
CTRL_SLU = 1 << 6
CTRL_SPD_1000 = 1 << 9
CTRL_RST = 1 << 26
CTRL_SWDPIN0 = 1 << 18
CTRL_SWDPIN2 = 1 << 20
# SDM 13.4.2 STATUS
STATUS_FD = 1 << 0
STATUS_LU = 1 << 1
STATUS_SPEED_1000 = 1 << 7
STATUS_ASDV_1000 = 1 << 9
STATUS_GIO_MASTER_ENABLE = 1 << 19
# SDM 13.4.3 EECD (table 13-6); EE_SIZE (bit 9) reads 0: a 64-word EEPROM
EECD_FWE_DISABLED = 1 << 4  # FWE = 01b, the reset value
EECD_PRES = 1 << 8
# SDM 13.4.4 EERD (82540EM: address in bits 15:8, data in 31:16)
EERD_START = 1 << 0
EERD_DONE = 1 << 4
EERD_ADDR_SHIFT = 8
EERD_DATA_SHIFT = 16
# SDM 13.4.17 ICR / ICS / IMS / IMC cause bits
ICR_TXDW = 1 << 0
ICR_TXQE = 1 << 1
ICR_LSC = 1 << 2
ICR_RXSEQ = 1 << 3
ICR_RXDMT0 = 1 << 4
ICR_RXO = 1 << 6
ICR_RXT0 = 1 << 7
ICR_INT_ASSERTED = 1 << 31  # 82547EI and later only: reserved, reads 0, on the 82540EM
IMS_ALL = 0x0001F6DF
# SDM 13.4.22 RCTL
RCTL_EN = 1 << 1
RCTL_SBP = 1 << 2
RCTL_UPE = 1 << 3
RCTL_MPE = 1 << 4
RCTL_LPE = 1 << 5
RCTL_BAM = 1 << 15
RCTL_BSIZE_SHIFT = 16
RCTL_BSEX = 1 << 25
RCTL_SECRC = 1 << 26
# SDM 13.4.33 TCTL
TCTL_EN = 1 << 1
TCTL_PSP = 1 << 3
TCTL_CT_SHIFT = 4
TCTL_COLD_SHIFT = 12
# SDM 13.4.31 RAH
RAH_AV = 1 << 31
# SDM 13.4.18 ITR: minimum inter-interrupt interval in 256 ns units
ITR_UNIT_NS = 256
# SDM 13.4.29 RDTR / 13.4.30 RADV timers count in 1.024 us units
TIMER_UNIT_NS = 1024


def rx_buffer_size(rctl: int) -> int:
    """SDM table 13-67: BSIZE with BSEX."""
    bsize = (rctl >> RCTL_BSIZE_SHIFT) & 3
    if rctl & RCTL_BSEX:
        return (0, 16384, 8192, 4096)[bsize]
    return (2048, 1024, 512, 256)[bsize]


REGS = RegisterMap("e1000", [
    Register("CTRL", 0x0000, reset=CTRL_SWDPIN2 | CTRL_SWDPIN0 | CTRL_SPD_1000 | CTRL_SLU, doc="Device Control"),
    Register("STATUS", 0x0008, access="ro", doc="Device Status",
             reset=0x80000000 | STATUS_GIO_MASTER_ENABLE | STATUS_ASDV_1000 | STATUS_SPEED_1000 | STATUS_FD | STATUS_LU),
    Register("EECD", 0x0010, reset=EECD_FWE_DISABLED | EECD_PRES, doc="EEPROM/Flash Control"),
    Register("EERD", 0x0014, doc="EEPROM Read"),
    Register("CTRL_EXT", 0x0018, doc="Extended Device Control"),
    Register("MDIC", 0x0020, doc="MDI Control"),
    Register("FCAL", 0x0028), Register("FCAH", 0x002C), Register("FCT", 0x0030),
    Register("VET", 0x0038, doc="VLAN Ether Type"),
    Register("ICR", 0x00C0, access="rc", doc="Interrupt Cause Read"),
    Register("ITR", 0x00C4, doc="Interrupt Throttling"),
    Register("ICS", 0x00C8, access="wo", doc="Interrupt Cause Set"),
    Register("IMS", 0x00D0, doc="Interrupt Mask Set/Read"),
    Register("IMC", 0x00D8, access="wo", doc="Interrupt Mask Clear"),
    Register("RCTL", 0x0100, doc="Receive Control"),
    Register("FCTTV", 0x0170),
    Register("TCTL", 0x0400, doc="Transmit Control"),
    Register("TIPG", 0x0410, doc="Transmit IPG"),
    Register("LEDCTL", 0x0E00),
    Register("PBA", 0x1000, reset=0x00100030, doc="Packet Buffer Allocation"),
    Register("FCRTL", 0x2160), Register("FCRTH", 0x2168),
    Register("RDBAL", 0x2800, doc="RX Descriptor Base Low"),
    Register("RDBAH", 0x2804, doc="RX Descriptor Base High"),
    Register("RDLEN", 0x2808, doc="RX Descriptor Length"),
    Register("RDH", 0x2810, doc="RX Descriptor Head"),
    Register("RDT", 0x2818, doc="RX Descriptor Tail"),
    Register("RDTR", 0x2820, doc="RX Delay Timer"),
    Register("RADV", 0x282C, doc="RX Interrupt Absolute Delay Timer"),
    Register("RSRPD", 0x2C00),
    Register("TDBAL", 0x3800, doc="TX Descriptor Base Low"),
    Register("TDBAH", 0x3804, doc="TX Descriptor Base High"),
    Register("TDLEN", 0x3808, doc="TX Descriptor Length"),
    Register("TDH", 0x3810, doc="TX Descriptor Head"),
    Register("TDT", 0x3818, doc="TX Descriptor Tail"),
    Register("TIDV", 0x3820, doc="TX Interrupt Delay Value"),
    Register("TXDCTL", 0x3828), Register("TADV", 0x382C),
    Register("RXCSUM", 0x5000),
    # SDM 13.7 statistics: read to clear
    *[Register(name, off, access="rc") for name, off in (
        ("CRCERRS", 0x4000), ("MPC", 0x4010), ("COLC", 0x4028), ("RNBC", 0x40A0), ("ROC", 0x40AC),
        ("GPRC", 0x4074), ("BPRC", 0x4078), ("MPRC", 0x407C), ("GPTC", 0x4080),
        ("GORCL", 0x4088), ("GORCH", 0x408C), ("GOTCL", 0x4090), ("GOTCH", 0x4094),
        ("TORL", 0x40C0), ("TORH", 0x40C4), ("TOTL", 0x40C8), ("TOTH", 0x40CC),
        ("TPR", 0x40D0), ("TPT", 0x40D4), ("MPTC", 0x40F0), ("BPTC", 0x40F4))],
    *[Register(f"MTA{i}", 0x5200 + 4 * i, doc="Multicast Table Array") for i in range(128)],
    *[Register(f"{n}{i}", 0x5400 + 8 * i + 4 * (n == "RAH"), doc="Receive Address")
      for i in range(16) for n in ("RAL", "RAH")],
])

# SDM 3.3.3 legacy transmit descriptor
TX_DESC = Layout("e1000_tx_desc", 16, [
    ("buffer_addr", 0, 8), ("length", 8, 2), ("cso", 10, 1), ("cmd", 11, 1),
    ("status", 12, 1), ("css", 13, 1), ("special", 14, 2),
])
TXD_CMD_EOP = 1 << 0
TXD_CMD_IFCS = 1 << 1
TXD_CMD_IC = 1 << 2
TXD_CMD_RS = 1 << 3
TXD_CMD_RPS = 1 << 4
TXD_CMD_DEXT = 1 << 5
TXD_CMD_VLE = 1 << 6
TXD_CMD_IDE = 1 << 7
TXD_STAT_DD = 1 << 0
TX_STATUS = TX_DESC.field_struct("status")
# SDM 3.3.5-3.3.7 extended descriptors (DEXT): the type in bits 23:20 of the
# second dword, the high nibble of the legacy ``cso`` byte; a data
# descriptor's length takes 20 bits, its POPTS the legacy ``css`` byte
TXD_DTYP_SHIFT = 4          # of the cso byte
TXD_DTYP_C = 0x0            # TCP/IP context descriptor
TXD_DTYP_D = 0x1            # TCP/IP data descriptor
TXD_DTALEN_HI = 0x0F        # cso byte: bits 19:16 of DTALEN / PAYLEN
TXD_CMD_TCP = 1 << 0        # context TUCMD (the EOP bit of a data descriptor): TCP, else UDP
TXD_CMD_IP = 1 << 1         # context TUCMD: IPv4, else IPv6
TXD_CMD_TSE = 1 << 2        # TUCMD and DCMD: TCP segmentation
TXD_POPTS_IXSM = 1 << 0     # data POPTS: insert the IPv4 checksum
TXD_POPTS_TXSM = 1 << 1     # insert the TCP/UDP checksum
# SDM 3.3.6 TCP/IP context descriptor (Linux struct e1000_context_desc)
TX_CTXT = Layout("e1000_context_desc", 16, [
    ("ipcss", 0, 1), ("ipcso", 1, 1), ("ipcse", 2, 2), ("tucss", 4, 1), ("tucso", 5, 1), ("tucse", 6, 2),
    ("cmd_and_length", 8, 4), ("status", 12, 1), ("hdr_len", 13, 1), ("mss", 14, 2),
])
TX_CTXT_DEXT = TXD_CMD_DEXT << 24     # cmd_and_length: TUCMD in 31:24, DTYP in 23:20, PAYLEN in 19:0
TSO_MAX_PACKET = 0x10000    # what the packet buffer holds of one TSO packet (QEMU's e1000_tx data[])
# SDM 3.3.6: the TCP flags a segment keeps: FIN and PSH in the last only
TSO_FLAGS_FIRST = TSO_FLAGS_MIDDLE = 0xF6
TSO_FLAGS_LAST = 0xFF

# SDM 3.2.3 receive descriptor
RX_DESC = Layout("e1000_rx_desc", 16, [
    ("buffer_addr", 0, 8), ("length", 8, 2), ("csum", 10, 2),
    ("status", 12, 1), ("errors", 13, 1), ("special", 14, 2),
])
RXD_STAT_DD = 1 << 0
RXD_STAT_EOP = 1 << 1
RXD_STAT_IXSM = 1 << 2     # ignore the checksum indications
RXD_STAT_TCPCS = 1 << 5    # SDM 3.2.3: the TCP/UDP checksum was checked
RXD_STAT_IPCS = 1 << 6     # the IPv4 header checksum was checked
RXD_ERR_TCPE = 1 << 5      # errors: the TCP/UDP checksum is wrong
RXD_ERR_IPE = 1 << 6       # the IPv4 header checksum is wrong
RXCSUM_IPOFL = 1 << 8      # RXCSUM (SDM 13): check IPv4 header checksums
RXCSUM_TUOFL = 1 << 9      # check TCP/UDP checksums
RX_WRITEBACK = Layout("e1000_rx_writeback", 8, [
    ("length", 0, 2), ("csum", 2, 2), ("status", 4, 1), ("errors", 5, 1), ("special", 6, 2),
])
RX_WRITEBACK_OFFSET = 8

DESC_SIZE = 16
MAX_FRAME = 16384           # SDM 3.3.1: largest legacy TX packet (bytes, without FCS)

# SDM 5.6 EEPROM map
EEPROM_WORDS = 64
EEPROM_MAC = 0x00           # words 0-2: Ethernet address
EEPROM_SUBSYSTEM_ID = 0x0B  # SDM table 5-2: subsystem ID, subsystem vendor ID, device ID, vendor ID
EEPROM_SUBSYSTEM_VENDOR = 0x0C
EEPROM_DEVICE_ID = 0x0D
EEPROM_VENDOR_ID = 0x0E
EEPROM_CHECKSUM = 0x3F
EEPROM_SUM = 0xBABA
