"""VMware VMXNET3 as data: PCI identity, the two register BARs, the driver
shared area and queue descriptors in guest memory, the TX/RX descriptor and
completion layouts with their generation bits, the commands.  Offsets follow
``vmxnet3_defs.h`` and ``upt1_defs.h`` (Linux drivers/net/vmxnet3, the header
VMware publishes for device emulations and guest drivers alike); the values a
device answers with follow QEMU's hw/net/vmxnet3.c."""

from .fields import Layout, Register, RegisterMap

VENDOR_ID = 0x15AD                   # PCI_VENDOR_ID_VMWARE
DEVICE_ID = 0x07B0                   # PCI_DEVICE_ID_VMWARE_VMXNET3
REVISION = 0x01                      # QEMU PCI_DEVICE_ID_VMWARE_VMXNET3_REVISION
CLASS_ETHERNET = 0x020000
PT_REG_SIZE = 4096                   # BAR0: VMXNET3_PT_REG_SIZE
VD_REG_SIZE = 4096                   # BAR1: VMXNET3_VD_REG_SIZE
MSIX_BAR = 2                         # QEMU: VMXNET3_MSIX_BAR_IDX, the table at 0 and the PBA at 0x1000
MSIX_BAR_SIZE = 0x2000
MSIX_PBA_OFFSET = 0x1000
REG_ALIGN = 8                        # VMXNET3_REG_ALIGN: per-queue registers are 8 bytes apart

# BAR0, the pass-through registers: one IMR per interrupt, producers per queue
BAR0 = RegisterMap("vmxnet3-bar0", [
    Register("IMR", 0x000, doc="interrupt mask, one per interrupt index (+8 each)"),
    Register("TXPROD", 0x600, access="wo", doc="TX ring producer index, one per TX queue"),
    Register("RXPROD", 0x800, access="wo", doc="RX ring 1 producer index, one per RX queue"),
    Register("RXPROD2", 0xA00, access="wo", doc="RX ring 2 producer index, one per RX queue"),
])
# BAR1, the virtual-device registers
BAR1 = RegisterMap("vmxnet3-bar1", [
    Register("VRRS", 0x00, reset=0x1, doc="revision report / selection (bit n: revision n+1)"),
    Register("UVRS", 0x08, reset=0x1, doc="UPT version report / selection"),
    Register("DSAL", 0x10, access="wo", doc="driver shared area address, low"),
    Register("DSAH", 0x18, access="wo", doc="driver shared area address, high"),
    Register("CMD", 0x20, doc="command; a read returns its result"),
    Register("MACL", 0x28, doc="MAC address bytes 0-3"),
    Register("MACH", 0x30, doc="MAC address bytes 4-5"),
    Register("ICR", 0x38, access="rc", doc="interrupt cause (INTx: interrupt 0)"),
    Register("ECR", 0x40, access="wo", doc="event cause: a write acknowledges the bits in the shared area's ecr"),
])
R0 = {r.name: r.offset for r in BAR0}
R1 = {r.name: r.offset for r in BAR1}
MAX_INTRS = 25                       # VMXNET3_MAX_INTRS
MAX_TX_QUEUES = 8
MAX_RX_QUEUES = 16

# Commands (vmxnet3_defs.h enum): written to CMD, the GET ones read back from it
CMD_FIRST_SET = 0xCAFE0000
(CMD_ACTIVATE_DEV, CMD_QUIESCE_DEV, CMD_RESET_DEV, CMD_UPDATE_RX_MODE, CMD_UPDATE_MAC_FILTERS,
 CMD_UPDATE_VLAN_FILTERS, CMD_UPDATE_RSSIDT, CMD_UPDATE_IML, CMD_UPDATE_PMCFG,
 CMD_UPDATE_FEATURE) = range(CMD_FIRST_SET, CMD_FIRST_SET + 10)
CMD_FIRST_GET = 0xF00D0000
(CMD_GET_QUEUE_STATUS, CMD_GET_STATS, CMD_GET_LINK, CMD_GET_PERM_MAC_LO, CMD_GET_PERM_MAC_HI,
 CMD_GET_DID_LO, CMD_GET_DID_HI, CMD_GET_DEV_EXTRA_INFO, CMD_GET_CONF_INTR) = range(CMD_FIRST_GET, CMD_FIRST_GET + 9)
LINK_UP = 0x1                        # GET_LINK: bit 0 link up, bits 31:16 the speed in Mbit/s
LINK_SPEED_SHIFT = 16

# Interrupt configuration (GET_CONF_INTR: type in bits 1:0, mask mode in 3:2)
IT_AUTO, IT_INTX, IT_MSI, IT_MSIX = 0, 1, 2, 3
IMM_AUTO, IMM_ACTIVE, IMM_LAZY = 0, 1, 2
IC_DISABLE_ALL = 0x1                 # intrConf.intrCtrl

# Event cause bits (the shared area's ecr, acknowledged through ECR)
ECR_RQERR = 1 << 0
ECR_TQERR = 1 << 1
ECR_LINK = 1 << 2
ECR_DIC = 1 << 3
ECR_DEBUG = 1 << 4

# Queue errors (Vmxnet3_QueueStatus.error)
ERR_NOEOP = 0x80000000
ERR_TXD_REUSE = 0x80000001
ERR_BIG_PKT = 0x80000002
ERR_DESC_NOT_SPT = 0x80000003
ERR_SMALL_BUF = 0x80000004
ERR_STRESS = 0x80000005
ERR_SWITCH = 0x80000006
ERR_TXD_INVALID = 0x80000007

# RX mode (rxFilterConf.rxMode)
RXM_UCAST = 0x01
RXM_MCAST = 0x02
RXM_BCAST = 0x04
RXM_ALL_MULTI = 0x08
RXM_PROMISC = 0x10

# UPT1 features (upt1_defs.h)
UPT1_F_RXCSUM = 0x0001
UPT1_F_RSS = 0x0002
UPT1_F_RXVLAN = 0x0004
UPT1_F_LRO = 0x0008

REV1_MAGIC = 0xBABEFEE1              # VMXNET3_REV1_MAGIC (3133079265)
GOS_BITS_64 = 2
GOS_TYPE_LINUX = 1
INIT_GEN = 1
RING_BA_ALIGN = 512
RING_SIZE_ALIGN = 32
QUEUE_DESC_ALIGN = 128
TX_RING_MAX_SIZE = 4096
TC_RING_MAX_SIZE = 4096
RX_RING_MAX_SIZE = 4096
RC_RING_MAX_SIZE = 8192
MAX_TX_BUF_SIZE = 1 << 14            # a TX descriptor's len 0 means 16 KiB
MAX_TXD_PER_PKT = 16
MAX_CSUM_OFFSET = 1024               # VMXNET3_MAX_CSUM_OFFSET: the largest msscof of a checksum request
MAX_RX_BUF_SIZE = (1 << 14) - 1
MIN_MTU, MAX_MTU = 60, 9000

# ---- the driver shared area (struct Vmxnet3_DriverShared) -------------------
DRIVER_SHARED = Layout("Vmxnet3_DriverShared", 720, [
    ("magic", 0, 4), ("size", 4, 4),
    # devRead.misc (Vmxnet3_MiscConf) at 8
    ("driverVersion", 8, 4), ("gos", 12, 4), ("vmxnet3RevSpt", 16, 4), ("uptVerSpt", 20, 4),
    ("uptFeatures", 24, 8), ("ddPA", 32, 8), ("queueDescPA", 40, 8), ("ddLen", 48, 4),
    ("queueDescLen", 52, 4), ("mtu", 56, 4), ("maxNumRxSG", 60, 2), ("numTxQueues", 62, 1),
    ("numRxQueues", 63, 1),
    # devRead.intrConf (Vmxnet3_IntrConf) at 80: modLevels[25] at 83
    ("autoMask", 80, 1), ("numIntrs", 81, 1), ("eventIntrIdx", 82, 1), ("intrCtrl", 108, 4),
    # devRead.rxFilterConf (Vmxnet3_RxFilterConf) at 120: vfTable[128] at 136
    ("rxMode", 120, 4), ("mfTableLen", 124, 2), ("mfTablePA", 128, 8),
    # rssConfDesc 648, pmConfDesc 664, pluginConfDesc 680 (each Vmxnet3_VariableLenConfDesc)
    ("ecr", 696, 4),
])
MOD_LEVELS = 83                      # devRead.intrConf.modLevels[VMXNET3_MAX_INTRS]
VF_TABLE = 136                       # devRead.rxFilterConf.vfTable[VMXNET3_VFT_SIZE]
VFT_SIZE = 4096 // 32
DS = DRIVER_SHARED.offsets

# ---- the queue descriptors (256 bytes each, TX queues first) ------------------
QUEUE_STATUS = 80                    # Vmxnet3_QueueStatus {bool stopped; u8 pad[3]; __le32 error}
QUEUE_STATS = 88                     # UPT1_TxStats / UPT1_RxStats: ten __le64 counters
TX_QUEUE_DESC = Layout("Vmxnet3_TxQueueDesc", 256, [
    ("txNumDeferred", 0, 4), ("txThreshold", 4, 4),
    ("txRingBasePA", 16, 8), ("dataRingBasePA", 24, 8), ("compRingBasePA", 32, 8), ("ddPA", 40, 8),
    ("txRingSize", 56, 4), ("dataRingSize", 60, 4), ("compRingSize", 64, 4), ("ddLen", 68, 4),
    ("intrIdx", 72, 1), ("txDataRingDescSize", 74, 2),
    ("stopped", 80, 1), ("error", 84, 4),
])
RX_QUEUE_DESC = Layout("Vmxnet3_RxQueueDesc", 256, [
    ("updateRxProd", 0, 1),
    ("rxRingBasePA0", 16, 8), ("rxRingBasePA1", 24, 8), ("compRingBasePA", 32, 8), ("ddPA", 40, 8),
    ("rxDataRingBasePA", 48, 8), ("rxRingSize0", 56, 4), ("rxRingSize1", 60, 4), ("compRingSize", 64, 4),
    ("ddLen", 68, 4), ("intrIdx", 72, 1), ("rxDataRingDescSize", 74, 2),
    ("stopped", 80, 1), ("error", 84, 4),
])
# UPT1_TxStats: TSO packets/bytes, unicast, multicast, broadcast packets/bytes, errors, discards
TX_STATS = ("TSOPktsTxOK", "TSOBytesTxOK", "ucastPktsTxOK", "ucastBytesTxOK", "mcastPktsTxOK", "mcastBytesTxOK",
            "bcastPktsTxOK", "bcastBytesTxOK", "pktsTxError", "pktsTxDiscard")
RX_STATS = ("LROPktsRxOK", "LROBytesRxOK", "ucastPktsRxOK", "ucastBytesRxOK", "mcastPktsRxOK", "mcastBytesRxOK",
            "bcastPktsRxOK", "bcastBytesRxOK", "pktsRxOutOfBuf", "pktsRxError")
STATS = Layout("UPT1_Stats", 80, [(f"c{i}", 8 * i, 8) for i in range(10)])

# ---- descriptors and completions (16 bytes each; bitfields in dwords 2 and 3) --
DESC_SIZE = 16
TX_DESC = Layout("Vmxnet3_TxDesc", 16, [("addr", 0, 8), ("dword2", 8, 4), ("dword3", 12, 4)])
TXD_LEN_MASK = 0x3FFF                # dword2: len:14, gen:1, oco:1, dtype:1, ext1:1, msscof:14
TXD_GEN_SHIFT = 14
TXD_MSSCOF_SHIFT = 18
TXD_HLEN_MASK = 0x3FF                # dword3: hlen:10, om:2, eop:1, cq:1, ext2:1, ti:1, tci:16
TXD_OM_SHIFT = 10
TXD_EOP = 1 << 12
TXD_CQ = 1 << 13
TXD_TI = 1 << 15
OM_NONE, OM_ENCAP, OM_CSUM, OM_TSO = 0, 1, 2, 3  # om: OM_CSUM hlen = checksum start, msscof = its field;
                                                 # OM_TSO hlen = all headers, msscof = MSS (on the SOP descriptor)
TXD_OM_MASK = 0x3

TX_COMP = Layout("Vmxnet3_TxCompDesc", 16, [("dword0", 0, 4), ("ext2", 4, 4), ("ext3", 8, 4), ("dword3", 12, 4)])
TCD_TXIDX_MASK = 0xFFF               # dword0: txdIdx:12
TCD_TYPE_SHIFT = 24                  # dword3: rsvd:24, type:7, gen:1
TCD_GEN_SHIFT = 31
CDTYPE_TXCOMP = 0
CDTYPE_RXCOMP = 3

RX_DESC = Layout("Vmxnet3_RxDesc", 16, [("addr", 0, 8), ("dword2", 8, 4), ("ext1", 12, 4)])
RXD_LEN_MASK = 0x3FFF                # dword2: len:14, btype:1, dtype:1, rsvd:15, gen:1
RXD_BTYPE_SHIFT = 14
RXD_BTYPE_HEAD, RXD_BTYPE_BODY = 0, 1
RXD_GEN_SHIFT = 31

RX_COMP = Layout("Vmxnet3_RxCompDesc", 16, [("dword0", 0, 4), ("rssHash", 4, 4), ("dword2", 8, 4),
                                             ("dword3", 12, 4)])
RCD_RXIDX_MASK = 0xFFF               # dword0: rxdIdx:12, ext1:2, eop:1, sop:1, rqID:10, rssType:4, cnc:1, ext2:1
RCD_EOP = 1 << 14
RCD_SOP = 1 << 15
RCD_RQID_SHIFT = 16
RCD_CNC = 1 << 30
RCD_LEN_MASK = 0x3FFF                # dword2: len:14, err:1, ts:1, tci:16
RCD_ERR = 1 << 14
RCD_TYPE_SHIFT = 24                  # dword3: csum:16, tuc, udp, tcp, ipc, v6, v4, frg, fcs, type:7, gen:1
RCD_TUC = 1 << 16                    # the TCP/UDP checksum is correct
RCD_UDP = 1 << 17
RCD_TCP = 1 << 18
RCD_IPC = 1 << 19                    # the IPv4 header checksum is correct
RCD_V6 = 1 << 20
RCD_V4 = 1 << 21
RCD_FRG = 1 << 22
RCD_FCS = 1 << 23                    # the frame check sequence is correct
RCD_CSUM_OK = RCD_TUC | RCD_IPC      # VMXNET3_RCD_CSUM_OK: what vmxnet3_rx_csum trusts with v4
RCD_GEN_SHIFT = 31
