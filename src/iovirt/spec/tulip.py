"""DEC 21143 "Tulip" (21140-compatible where simpler) as data: PCI identity,
the CSR file, descriptors, setup frame and serial ROM.  Digital
Semiconductor 21143 PCI/CardBus 10/100-Mb/s Ethernet LAN Controller Hardware
Reference Manual (HRM), chapters 3 (CSRs) and 4 (descriptors, setup frame);
"Digital Semiconductor 21X4 Serial ROM Format" v4.09; NM93C46 serial EEPROM
datasheet.  Reset values follow HRM section 3.2.2 as QEMU's hw/net/tulip.c.

The device ID is the 21143's (0x0019), not the 21140's (0x0009) that
Hyper-V's legacy NIC reports, so that the model can be compared with QEMU's
``tulip`` device, which is a 21143; Linux's tulip driver binds both."""

from .ethernet import ETH_FCS_LEN as CRC_SIZE  # noqa: F401
from .ethernet import ETH_MIN_FRAME  # noqa: F401 - the chip pads shorter frames unless TDES1.DPD
from .fields import Layout, Register, RegisterMap

VENDOR_ID = 0x1011           # Digital Equipment Corporation
DEVICE_ID = 0x0019           # DECchip 21142/21143
SUBSYSTEM_VENDOR_ID = 0x103C  # as QEMU's tulip
SUBSYSTEM_ID = 0x104F
CLASS_ETHERNET = 0x020000
BAR0_SIZE = 128              # CBIO: CSRs in I/O space (HRM 3.1.6)
BAR1_SIZE = 128              # CBMA: the same CSRs in memory space
CSR_STRIDE = 8               # CSRn at n * 8, longword accesses only (HRM 3.2)
CSR_COUNT = 16


def csr(n: int) -> int:
    return n * CSR_STRIDE


REGS = RegisterMap("tulip", [
    Register("CSR0", csr(0), reset=0xFE000000, doc="Bus mode"),
    Register("CSR1", csr(1), reset=0xFFFFFFFF, access="wo", doc="Transmit poll demand"),
    Register("CSR2", csr(2), reset=0xFFFFFFFF, access="wo", doc="Receive poll demand"),
    Register("CSR3", csr(3), doc="Receive list base address"),
    Register("CSR4", csr(4), doc="Transmit list base address"),
    Register("CSR5", csr(5), reset=0xF0000000, access="w1c", doc="Status"),
    Register("CSR6", csr(6), reset=0x32000040, doc="Operation mode"),
    Register("CSR7", csr(7), reset=0xF3FE0000, doc="Interrupt enable"),
    Register("CSR8", csr(8), reset=0xE0000000, access="rc", doc="Missed frames and overflow counter"),
    Register("CSR9", csr(9), reset=0xFFF483FF, doc="Boot ROM, serial ROM and MII management"),
    Register("CSR10", csr(10), doc="Boot ROM programming address"),
    Register("CSR11", csr(11), reset=0xFFFE0000, doc="General-purpose timer and interrupt mitigation"),
    # HRM resets CSR12 to 0xC6 (link fail until autonegotiation); with no PHY
    # modelled it reads autonegotiation complete, link up, as in QEMU
    Register("CSR12", csr(12), reset=0x5 << 12, access="ro", doc="SIA status"),
    Register("CSR13", csr(13), reset=0xFFFF0000, doc="SIA connectivity"),
    Register("CSR14", csr(14), reset=0xFFFFFFFF, doc="SIA transmit and receive"),
    Register("CSR15", csr(15), reset=0x8FF00000, doc="SIA and general-purpose port"),
])

# HRM 3.2.2.1 CSR0 bus mode
CSR0_SWR = 1 << 0            # software reset
CSR0_DSL_SHIFT = 2           # descriptor skip length, longwords (ring mode)
CSR0_DSL_MASK = 0x1F
CSR0_DEFAULT_X86 = 0x01A08000   # Linux tulip_core.c csr0 for x86: MWI|MRL|MRM, CAL 16 longwords

# HRM 3.2.2.6 CSR5 status; interrupt bits are write-one-to-clear
CSR5_TI = 1 << 0             # transmit interrupt
CSR5_TPS = 1 << 1            # transmit process stopped
CSR5_TU = 1 << 2             # transmit buffer unavailable
CSR5_TJT = 1 << 3            # transmit jabber timeout
CSR5_LNP_ANC = 1 << 4
CSR5_UNF = 1 << 5
CSR5_RI = 1 << 6             # receive interrupt
CSR5_RU = 1 << 7             # receive buffer unavailable
CSR5_RPS = 1 << 8            # receive process stopped
CSR5_RWT = 1 << 9
CSR5_ETI = 1 << 10
CSR5_GTE = 1 << 11           # general-purpose timer expired
CSR5_LNF = 1 << 12
CSR5_FBE = 1 << 13           # fatal bus error
CSR5_ERI = 1 << 14
CSR5_AIS = 1 << 15           # abnormal interrupt summary
CSR5_NIS = 1 << 16           # normal interrupt summary
CSR5_RS_SHIFT = 17           # receive process state
CSR5_TS_SHIFT = 20           # transmit process state
CSR5_STATE_MASK = 7
CSR5_EB_SHIFT = 23           # error bits: 0 parity, 1 master abort, 2 target abort
CSR5_EB_MASK = 7 << CSR5_EB_SHIFT
CSR5_EB_MASTER_ABORT = 1
CSR5_GPI = 1 << 26
CSR5_LC = 1 << 27
CSR5_W1C = 0x0001FFFF | CSR5_GPI | CSR5_LC
CSR5_NORMAL = CSR5_TI | CSR5_TU | CSR5_RI | CSR5_GTE | CSR5_ERI          # NIS sources
CSR5_ABNORMAL = (CSR5_TPS | CSR5_TJT | CSR5_LNP_ANC | CSR5_UNF | CSR5_RU | CSR5_RPS | CSR5_RWT
                 | CSR5_ETI | CSR5_LNF | CSR5_FBE | CSR5_GPI | CSR5_LC)   # AIS sources
TS_STOPPED, TS_SUSPENDED = 0, 6
RS_STOPPED, RS_WAITING, RS_SUSPENDED = 0, 3, 4

# HRM 3.2.2.7 CSR6 operation mode
CSR6_HP = 1 << 0             # hash/perfect filtering: read-only, from the setup frame
CSR6_SR = 1 << 1             # start/stop receive
CSR6_HO = 1 << 2             # hash-only filtering: read-only
CSR6_IF = 1 << 4             # inverse filtering: read-only
CSR6_PR = 1 << 6             # promiscuous
CSR6_PM = 1 << 7             # pass all multicast
CSR6_FD = 1 << 9             # full duplex
CSR6_OM_SHIFT = 10           # operating mode: 0 normal, 1 internal, 2 external loopback
CSR6_OM_MASK = 3
CSR6_ST = 1 << 13            # start/stop transmission
CSR6_RA = 1 << 30            # receive all
CSR6_FILTER_BITS = CSR6_HP | CSR6_HO | CSR6_IF

# HRM 3.2.2.8 CSR7 interrupt enable: the same bit positions as CSR5
CSR7_VALID_21143 = 0x0801FBFF   # Linux tulip_tbl[DC21143].valid_intrs

# HRM 3.2.2.9 CSR8 missed frames
CSR8_MFC_MASK = 0xFFFF
CSR8_MFO = 1 << 16
CSR8_COUNTERS = 0x1FFFFFFF      # bits cleared by a read; 31:29 read as ones

# HRM 3.2.2.10 CSR9 serial ROM interface
CSR9_SR_CS = 1 << 0
CSR9_SR_SK = 1 << 1
CSR9_SR_DI = 1 << 2
CSR9_SR_DO = 1 << 3
CSR9_SR = 1 << 11            # serial ROM select
CSR9_WR = 1 << 13
CSR9_RD = 1 << 14
CSR9_MDI = 1 << 19

# HRM 4.2 descriptors: four longwords, the second holds control and sizes
TX_DESC = Layout("tulip_tx_desc", 16, [("tdes0", 0, 4), ("tdes1", 4, 4), ("tdes2", 8, 4), ("tdes3", 12, 4)])
RX_DESC = Layout("tulip_rx_desc", 16, [("rdes0", 0, 4), ("rdes1", 4, 4), ("rdes2", 8, 4), ("rdes3", 12, 4)])
DES0 = TX_DESC.field_struct("tdes0")   # the status longword the chip writes back
DESC_SIZE = 16
BUF_SIZE_MASK = 0x7FF          # TBS1/RBS1 10:0, TBS2/RBS2 21:11
BUF2_SIZE_SHIFT = 11
DES0_OWN = 1 << 31

# HRM 4.2.1 receive descriptor
RDES0_FF = 1 << 30           # filtering fail (accepted by PR/RA only)
RDES0_FL_SHIFT = 16          # frame length incl. CRC, 29:16
RDES0_FL_MASK = 0x3FFF
RDES0_ES = 1 << 15           # error summary
RDES0_DE = 1 << 14           # descriptor error: frame truncated
RDES0_MF = 1 << 10           # multicast frame
RDES0_FS = 1 << 9
RDES0_LS = 1 << 8
RDES0_RF = 1 << 11           # runt frame
RDES0_TL = 1 << 7            # frame too long (> 1518 bytes with CRC)
RDES0_CS = 1 << 6            # collision seen
RDES0_FT = 1 << 5            # frame type: length/type field > 1500
RDES0_CE = 1 << 1            # CRC error
RDES1_RCH = 1 << 24          # second address chained
RDES1_RER = 1 << 25          # receive end of ring

# HRM 4.2.2 transmit descriptor
TDES0_ES = 1 << 15
TDES0_TO = 1 << 14           # transmit jabber timeout
TDES1_FT0 = 1 << 22          # filtering type, with FT1 (setup frames)
TDES1_DPD = 1 << 23          # disable padding
TDES1_TCH = 1 << 24
TDES1_TER = 1 << 25
TDES1_SET = 1 << 27          # setup frame
TDES1_FT1 = 1 << 28
TDES1_FS = 1 << 29
TDES1_LS = 1 << 30
TDES1_IC = 1 << 31

ETH_MAX_FRAME = 1518         # with CRC: longer received frames get TL
JABBER_BYTES = 2048          # HRM 4.2.2 TDES0<14>: transmit jabber cuts longer frames

# HRM 4.2.3 setup frame: 16 perfect-filter entries of three longwords, each
# longword carrying two address bytes in its low shortword
SETUP_FRAME_SIZE = 192
SETUP_ENTRIES = 16
SETUP_ENTRY_SIZE = 12
SETUP_ADDR_OFFSETS = (0, 1, 4, 5, 8, 9)
SETUP_FT_PERFECT, SETUP_FT_HASH, SETUP_FT_INVERSE, SETUP_FT_HASH_ONLY = 0, 1, 2, 3

# SROM format v4.09 section 3 (byte offsets) on a 93C46 (64 x 16 bits)
SROM_WORDS = 64
SROM_ADDR_BITS = 6
SROM_OP_READ = 0b10          # NM93C46 instruction set: start bit, opcode, address
SROM_CMD_READ = 1 << 2 | SROM_OP_READ
SROM_SUBSYSTEM_VENDOR_ID = 0
SROM_SUBSYSTEM_ID = 2
SROM_ID_BLOCK_CRC = 16
SROM_FORMAT_VERSION = 18
SROM_CONTROLLER_COUNT = 19
SROM_MAC = 20                # IEEE address: where Linux looks when bytes 0-7 differ from 16-23
SROM_DEVICE_NUMBER = 26
SROM_LEAF_OFFSET = 27
SROM_INFO_LEAF = 30
SROM_CRC = 126               # low 16 bits of CRC-32 over bytes 0-125
