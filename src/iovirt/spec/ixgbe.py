"""Intel 82599 10 GbE controller (82599ES, SFP+) as data: PCI identity, the
register map of the memory CSR BAR, advanced RX/TX descriptors and the RSS
hash.  82599 10 GbE Controller Datasheet rev. 3.x: 7.1 receive, 7.2
transmit, 7.3 interrupts, 8.2 register descriptions; names and bit values as
Linux ``drivers/net/ethernet/intel/ixgbe/ixgbe_type.h`` spells them.

Registers the 82599 also decodes at their 82598 addresses (Linux's
``IXGBE_SRRCTL(n<16)``, ``IXGBE_RAL(n<16)``, ``IXGBE_MRQC``, ``IXGBE_RETA``,
``IXGBE_RSSRK``) are listed in ``ALIASES``."""

from .ethernet import ETH_MIN_FRAME  # noqa: F401 - shorter frames are padded (HLREG0.TXPADEN)
from .fields import Layout, Register, RegisterMap
from .rss import RSS_DEFAULT_KEY, RSS_KEY_SIZE, toeplitz, toeplitz_tables  # noqa: F401 - the hash RETA indexes

VENDOR_ID = 0x8086
DEVICE_ID = 0x10FB          # IXGBE_DEV_ID_82599_SFP
SUBSYSTEM_ID = 0x11A9       # IXGBE_SUBDEV_ID_82599_SFP
CLASS_ETHERNET = 0x020000
REVISION = 0x01
BAR0_SIZE = 0x20000         # memory CSR space, 64-bit (flash window not mapped)
MSIX_BAR = 4                # 64-bit BAR4: MSI-X table at 0, PBA at 0x2000
MSIX_BAR_SIZE = 0x4000
MSIX_TABLE_OFFSET = 0x0000  # IXGBE_MSIXT
MSIX_PBA_OFFSET = 0x2000    # IXGBE_MSIXPBA
MSIX_VECTORS = 64           # IXGBE_MAX_MSIX_VECTORS_82599
NUM_QUEUES = 128            # RX and TX queues each

# CTRL
CTRL_GIO_DIS = 1 << 2
CTRL_LNK_RST = 1 << 3
CTRL_RST = 1 << 26
# STATUS
STATUS_LAN_ID_SHIFT = 2
STATUS_LU = 1 << 7
STATUS_GIO = 1 << 19
# CTRL_EXT
CTRL_EXT_PFRSTD = 1 << 14
CTRL_EXT_NS_DIS = 1 << 16
CTRL_EXT_DRV_LOAD = 1 << 28
# LINKS
LINKS_SPEED_10G = 0x30000000
LINKS_UP = 1 << 30
# EICR / EICS / EIMS / EIMC: bits 15:0 are interrupt vectors (queue
# causes mapped through IVAR), bits 31:16 the other causes
EICR_RTX_QUEUE = 0x0000FFFF
EICR_FLOW_DIR = 1 << 16
EICR_RX_MISS = 1 << 17
EICR_PCI = 1 << 18
EICR_MAILBOX = 1 << 19
EICR_LSC = 1 << 20
EICR_TCP_TIMER = 1 << 30
EICR_OTHER = 1 << 31
EIMS_ENABLE_MASK = EICR_RTX_QUEUE | EICR_LSC | EICR_TCP_TIMER | EICR_OTHER
# GPIE
GPIE_MSIX_MODE = 1 << 4
GPIE_OCD = 1 << 5
GPIE_EIMEN = 1 << 6
GPIE_EIAME = 1 << 30
GPIE_PBA_SUPPORT = 1 << 31
# IVAR: one byte per queue and direction, INT_ALLOC in 5:0, valid in bit 7
IVAR_ALLOC_VAL = 0x80
IVAR_VECTOR_MASK = 0x3F
IVAR_MISC_OTHER_SHIFT = 8   # IVAR_MISC byte 1: other causes; byte 0: TCP timer
# EITR: interval in bits 11:3, in 2.048 us units at 10 Gb/s
EITR_ITR_INT_MASK = 0x00000FF8
EITR_UNIT_NS = 2048
EITR_CNT_WDIS = 1 << 31
# RXCTRL / FCTRL / HLREG0 / RDRXCTL / MCSTCTRL / VLNCTRL
RXCTRL_RXEN = 1 << 0
FCTRL_SBP = 1 << 1
FCTRL_MPE = 1 << 8
FCTRL_UPE = 1 << 9
FCTRL_BAM = 1 << 10
FCTRL_PMCF = 1 << 12
FCTRL_DPF = 1 << 13
HLREG0_TXCRCEN = 1 << 0
HLREG0_RXCRCSTRP = 1 << 1
HLREG0_JUMBOEN = 1 << 2
HLREG0_TXPADEN = 1 << 10
HLREG0_RXLNGTHERREN = 1 << 27
RDRXCTL_CRCSTRIP = 1 << 1
RDRXCTL_DMAIDONE = 1 << 3
MCSTCTRL_MO_MASK = 0x3
MCSTCTRL_MFE = 1 << 2
VLNCTRL_VET = 0x8100
RAH_AV = 1 << 31
RAR_ENTRIES = 128          # receive address registers RAL/RAH[0..127] (8.2.3.7.9)
# MRQC (7.1.2.8): MRQE in 3:0, RSS field enables in 31:16
MRQC_MRQE_MASK = 0xF
MRQC_RSSEN = 0x1
MRQC_RSS_FIELD_IPV4_TCP = 1 << 16
MRQC_RSS_FIELD_IPV4 = 1 << 17
MRQC_RSS_FIELD_IPV4_UDP = 1 << 22
RETA_ENTRIES = 128
RETA_QUEUE_MASK = 0xF       # RSS output index, 4 bits per entry
# SRRCTL
SRRCTL_BSIZEPKT_MASK = 0x1F
SRRCTL_BSIZEPKT_SHIFT = 10  # 1 KiB units
SRRCTL_BSIZEHDR_SHIFT = 8   # 64-byte units (bits 13:8)
SRRCTL_DESCTYPE_MASK = 0x0E000000
SRRCTL_DESCTYPE_ADV_ONEBUF = 0x02000000
SRRCTL_DROP_EN = 1 << 28
# RXDCTL / TXDCTL
RXDCTL_ENABLE = 1 << 25
RXDCTL_SWFLSH = 1 << 26
RXDCTL_VME = 1 << 30
TXDCTL_WTHRESH_SHIFT = 16
TXDCTL_ENABLE = 1 << 25
TXDCTL_SWFLSH = 1 << 26
# DMATXCTL
DMATXCTL_TE = 1 << 0
DMATXCTL_VT_SHIFT = 16
# packet buffers (RXPBSIZE0 / TXPBSIZE0 reset: one TC owns all of it)
RXPBSIZE_SHIFT = 10
TXPBSIZE_SHIFT = 10
RXPB_SIZE = 0x80000         # 512 KiB
TXPB_SIZE = 0x28000         # 160 KiB

MAX_TX_FRAME = 15872        # 15.5 KB: the largest packet without TSO
DESC_SIZE = 16
TX_DESC_CACHE = 40         # TX descriptors the 82599 holds on chip per queue: the largest fetch burst
RX_DESC_CACHE = 32         # RX descriptors prefetched per queue


def _queue(base_lo: int, base_hi: int, n: int) -> int:
    """Per-queue block: 0x40 apart; queues 64-127 in the upper bank."""
    return base_lo + 0x40 * n if n < 64 else base_hi + 0x40 * (n - 64)


def eitr_offset(n: int) -> int:
    return 0x00820 + 4 * n if n <= 23 else 0x12300 + 4 * (n - 24)


def rx_buffer_size(srrctl: int) -> int:
    """SRRCTL.BSIZEPKT: receive buffer size in 1 KiB units."""
    return (srrctl & SRRCTL_BSIZEPKT_MASK) << SRRCTL_BSIZEPKT_SHIFT


_RX_QUEUE_REGS = (("RDBAL", 0x00), ("RDBAH", 0x04), ("RDLEN", 0x08), ("RDH", 0x10), ("SRRCTL", 0x14),
                  ("RDT", 0x18), ("RXDCTL", 0x28), ("QPRC", 0x30), ("QBRC_L", 0x34), ("QBRC_H", 0x38))
_TX_QUEUE_REGS = (("TDBAL", 0x00), ("TDBAH", 0x04), ("TDLEN", 0x08), ("TDH", 0x10), ("TDT", 0x18),
                  ("TXDCTL", 0x28), ("QPTC", 0x30), ("TDWBAL", 0x38), ("TDWBAH", 0x3C))
_QUEUE_COUNTERS = frozenset(("QPRC", "QBRC_L", "QBRC_H", "QPTC"))
_RESET = {"SRRCTL": 0x00000402}   # BSIZEPKT 2 KiB, BSIZEHDR 256 B
_STATS = (("CRCERRS", 0x04000), ("ILLERRC", 0x04004), ("ERRBC", 0x04008), ("RLEC", 0x04040),
          ("PRC64", 0x0405C), ("GPRC", 0x04074), ("BPRC", 0x04078), ("MPRC", 0x0407C), ("GPTC", 0x04080),
          ("GORCL", 0x04088), ("GORCH", 0x0408C), ("GOTCL", 0x04090), ("GOTCH", 0x04094),
          ("RUC", 0x040A4), ("ROC", 0x040AC), ("TORL", 0x040C0), ("TORH", 0x040C4),
          ("TPR", 0x040D0), ("TPT", 0x040D4), ("MPTC", 0x040F0), ("BPTC", 0x040F4))


def _queue_regs(n: int) -> list[Register]:
    regs = []
    for table, lo, hi in ((_RX_QUEUE_REGS, 0x01000, 0x0D000), (_TX_QUEUE_REGS, 0x06000, 0x06000 + 0x40 * 64)):
        for name, off in table:
            access = "rc" if name in _QUEUE_COUNTERS else "rw"
            if name in _QUEUE_COUNTERS and n >= 16:
                continue                                   # 16 queue statistics sets
            regs.append(Register(f"{name}{n}", _queue(lo, hi, n) + off, reset=_RESET.get(name, 0), access=access))
    return regs


REGS = RegisterMap("ixgbe", [
    Register("CTRL", 0x00000, doc="Device Control"),
    Register("STATUS", 0x00008, access="ro", reset=STATUS_GIO, doc="Device Status (LU follows the link)"),
    Register("CTRL_EXT", 0x00018, doc="Extended Device Control"),
    Register("ESDP", 0x00020), Register("LEDCTL", 0x00200),
    Register("EICR", 0x00800, doc="Extended Interrupt Cause (read clears, write 1 clears)"),
    Register("EICS", 0x00808, doc="Extended Interrupt Cause Set; reads EICR without clearing it"),
    Register("EIAC", 0x00810, doc="Extended Interrupt Auto Clear"),
    *[Register(f"EITR{n}", eitr_offset(n), doc="Interrupt Throttle") for n in range(MSIX_VECTORS)],
    Register("EIMS", 0x00880, doc="Extended Interrupt Mask Set/Read"),
    Register("EIMC", 0x00888, access="wo", doc="Extended Interrupt Mask Clear"),
    Register("EIAM", 0x00890, doc="Extended Interrupt Auto Mask"),
    Register("GPIE", 0x00898, doc="General Purpose Interrupt Enable"),
    *[Register(f"IVAR{n}", 0x00900 + 4 * n, doc="Interrupt Vector Allocation") for n in range(64)],
    Register("IVAR_MISC", 0x00A00),
    *[Register(f"EICS_EX{i}", 0x00A90 + 4 * i, access="wo") for i in range(2)],
    *[Register(f"EIMS_EX{i}", 0x00AA0 + 4 * i) for i in range(2)],
    *[Register(f"EIMC_EX{i}", 0x00AB0 + 4 * i, access="wo") for i in range(2)],
    *[Register(f"EIAM_EX{i}", 0x00AD0 + 4 * i) for i in range(2)],
    *[reg for n in range(NUM_QUEUES) for reg in _queue_regs(n)],
    Register("RDRXCTL", 0x02F00, reset=RDRXCTL_DMAIDONE, doc="Receive DMA Control"),
    Register("RXCTRL", 0x03000, doc="Receive Control"),
    *[Register(f"MPC{i}", 0x03FA0 + 4 * i, access="rc", doc="Missed Packets") for i in range(8)],
    *[Register(f"RNBC{i}", 0x03FC0 + 4 * i, access="rc", doc="Receive No Buffers") for i in range(8)],
    *[Register(f"QPRDC{n}", 0x01430 + 0x40 * n, access="rc", doc="Queue Packets Received Drop") for n in range(16)],
    *[Register(f"RXPBSIZE{i}", 0x03C00 + 4 * i, reset=RXPB_SIZE if i == 0 else 0) for i in range(8)],
    *[Register(name, off, access="rc") for name, off in _STATS],
    Register("HLREG0", 0x04240, reset=HLREG0_TXCRCEN | HLREG0_RXCRCSTRP | HLREG0_TXPADEN | HLREG0_RXLNGTHERREN),
    Register("MAXFRS", 0x04268, reset=1518 << 16),
    Register("LINKS", 0x042A4, access="ro", doc="Link Status"),
    Register("DMATXCTL", 0x04A80, reset=VLNCTRL_VET << DMATXCTL_VT_SHIFT, doc="DMA TX Control"),
    Register("RXCSUM", 0x05000),
    Register("FCTRL", 0x05080, doc="Filter Control"),
    Register("VLNCTRL", 0x05088, reset=VLNCTRL_VET, doc="VLAN Control"),
    Register("MCSTCTRL", 0x05090, doc="Multicast Control"),
    *[Register(f"MTA{i}", 0x05200 + 4 * i, doc="Multicast Table Array") for i in range(128)],
    *[Register(f"{n}{i}", 0x0A200 + 8 * i + 4 * (n == "RAH"), doc="Receive Address")
      for i in range(RAR_ENTRIES) for n in ("RAL", "RAH")],
    *[Register(f"TXPBSIZE{i}", 0x0CC00 + 4 * i, reset=TXPB_SIZE if i == 0 else 0) for i in range(8)],
    *[Register(f"RETA{i}", 0x0EB00 + 4 * i, doc="Redirection Table") for i in range(RETA_ENTRIES // 4)],
    *[Register(f"RSSRK{i}", 0x0EB80 + 4 * i, doc="RSS Random Key") for i in range(RSS_KEY_SIZE // 4)],
    Register("MRQC", 0x0EC80, doc="Multiple Receive Queues Command"),
])

# 82598-compatible addresses the 82599 decodes too: alias offset -> register name
# Each queue's registers as a block of dwords: the block's first index per
# queue (RDBAL[n], TDBAL[n]; 8.2.3.8, 8.2.3.9) and the registers' places in it
RX_BLOCK = tuple(_queue(0x01000, 0x0D000, n) >> 2 for n in range(NUM_QUEUES))
TX_BLOCK = tuple(_queue(0x06000, 0x06000 + 0x40 * 64, n) >> 2 for n in range(NUM_QUEUES))
BLOCK_BAH, BLOCK_LEN, BLOCK_HEAD, BLOCK_SRRCTL, BLOCK_TAIL, BLOCK_DCTL, BLOCK_QBRC = 1, 2, 4, 5, 6, 10, 13

ALIASES = {
    **{0x02100 + 4 * n: f"SRRCTL{n}" for n in range(16)},
    **{0x05400 + 8 * i + 4 * (n == "RAH"): f"{n}{i}" for i in range(16) for n in ("RAL", "RAH")},
    **{0x05C00 + 4 * i: f"RETA{i}" for i in range(RETA_ENTRIES // 4)},
    **{0x05C80 + 4 * i: f"RSSRK{i}" for i in range(RSS_KEY_SIZE // 4)},
    0x05818: "MRQC",
}

# 7.1.6.1 advanced receive descriptor, read format
RX_DESC = Layout("ixgbe_adv_rx_desc_read", DESC_SIZE, [("pkt_addr", 0, 8), ("hdr_addr", 8, 8)])
# 7.1.6.2 write-back format
RX_WB = Layout("ixgbe_adv_rx_desc_wb", DESC_SIZE, [
    ("pkt_info", 0, 2), ("hdr_info", 2, 2), ("rss", 4, 4),
    ("status_error", 8, 4), ("length", 12, 2), ("vlan", 14, 2),
])
RXD_STAT_DD = 1 << 0
RXD_STAT_EOP = 1 << 1
RXDADV_ERR_FRAME_ERR_MASK = 0x3B000000  # CE | LE | PE | OSE | USE
RXDADV_RSSTYPE_NONE = 0x0
RXDADV_RSSTYPE_IPV4_TCP = 0x1
RXDADV_RSSTYPE_IPV4 = 0x2
RXDADV_RSSTYPE_IPV4_UDP = 0x7
RXD_STAT_L4CS = 1 << 5                  # 7.1.11: the L4 (TCP/UDP) checksum was checked
RXD_STAT_IPCS = 1 << 6                  # the IPv4 header checksum was checked
RXDADV_ERR_TCPE = 1 << 30               # ... and the L4 checksum is wrong
RXDADV_ERR_IPE = 1 << 31                # ... and the IPv4 header checksum is wrong
# RXCSUM (8.2.3.7.5): fragment checksum in the write-back, or (PCSD) the RSS hash
RXCSUM_IPPCSE = 1 << 12
RXCSUM_PCSD = 1 << 13
RXDADV_PKTTYPE_IPV4 = 0x010
RXDADV_PKTTYPE_TCP = 0x100
RXDADV_PKTTYPE_UDP = 0x200

# 7.2.3.2.4 advanced transmit data descriptor, read format
TX_DESC = Layout("ixgbe_adv_tx_desc_read", DESC_SIZE, [
    ("buffer_addr", 0, 8), ("cmd_type_len", 8, 4), ("olinfo_status", 12, 4),
])
# write-back format: only STA in the last dword carries information
TX_WB = Layout("ixgbe_adv_tx_desc_wb", DESC_SIZE, [("rsvd", 0, 8), ("nxtseq_seed", 8, 4), ("status", 12, 4)])
TX_STATUS = TX_WB.field_struct("status")
ADVTXD_DTALEN_MASK = 0x0000FFFF
ADVTXD_DTYP_MASK = 0x00F00000
ADVTXD_DTYP_CTXT = 0x00200000
ADVTXD_DTYP_DATA = 0x00300000
TXD_CMD_EOP = 1 << 24
TXD_CMD_IFCS = 1 << 25
TXD_CMD_RS = 1 << 27
TXD_CMD_DEXT = 1 << 29
TXD_CMD_VLE = 1 << 30
ADVTXD_DCMD_TSE = 1 << 31
ADVTXD_PAYLEN_SHIFT = 14              # olinfo_status 31:14: the packet's payload after HDRLEN
ADVTXD_PAYLEN_MAX = (1 << 18) - 1     # 256 KB - 1: the largest TSO payload
ADVTXD_CC = 1 << 7                    # olinfo: check (use) the context IDX names
ADVTXD_IDX_SHIFT = 4                  # olinfo and mss_l4len_idx: the context slot (two a queue)
ADVTXD_POPTS_IXSM = 1 << 8            # olinfo: insert the IPv4 header checksum
ADVTXD_POPTS_TXSM = 1 << 9            # olinfo: insert the TCP/UDP checksum
TXD_STAT_DD = 1 << 0

# 7.2.3.2.3 advanced transmit context descriptor: the offload parameters of
# the packets after it that name its slot (IDX) with CC; DTYP and DEXT sit in
# type_tucmd_mlhl where a data descriptor has them in cmd_type_len
TX_CTXT = Layout("ixgbe_adv_tx_context_desc", DESC_SIZE, [
    ("vlan_macip_lens", 0, 4), ("seqnum_seed", 4, 4), ("type_tucmd_mlhl", 8, 4), ("mss_l4len_idx", 12, 4),
])
ADVTXD_IPLEN_MASK = 0x1FF             # vlan_macip_lens 8:0: IP header length
ADVTXD_MACLEN_SHIFT = 9               # 15:9: MAC header length
ADVTXD_MACLEN_MASK = 0x7F
ADVTXD_TUCMD_IPV4 = 1 << 10           # type_tucmd_mlhl: IPv4 (else IPv6)
ADVTXD_TUCMD_L4T_TCP = 1 << 11        # L4 type TCP (0: UDP)
ADVTXD_L4LEN_SHIFT = 8                # mss_l4len_idx 15:8: L4 header length (TSO)
ADVTXD_MSS_SHIFT = 16                 # 31:16: maximum segment size (TSO)
ADVTXD_TSO_CONTEXTS = 2
# 7.2.4 TCP segmentation: the TCP flags a segment keeps (DTXTCPFLGL/H):
# FIN and PSH in the last segment only, CWR in the first only
TSO_FLAGS_FIRST, TSO_FLAGS_MIDDLE, TSO_FLAGS_LAST = 0xFF6, 0xF76, 0xF7F

def eitr_interval_ns(eitr: int) -> int:
    """The minimum time between two interrupts of a vector that EITR holds."""
    return ((eitr & EITR_ITR_INT_MASK) >> 3) * EITR_UNIT_NS
