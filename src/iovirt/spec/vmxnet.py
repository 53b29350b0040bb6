"""VMware VMXNET (the Flexible adapter once morphed) and Enhanced VMXNET
(VMXNET2) as data: PCI identities, the morph port, the I/O ports, commands,
capability and feature bits, and the ``Vmxnet2_DriverData`` shared area with
its RX and TX ring entries.  Names and values follow open-vm-tools' vmxnet
driver headers (``vmxnet_def.h``, ``vmxnet2_def.h``, ``vmnet_def.h``,
``net_sg.h``, ``vm_device_version.h``, ``net.h``); offsets are the C structs'
with natural alignment, worked out field by field below."""

from .fields import Layout

VENDOR_ID = 0x15AD                  # PCI_VENDOR_ID_VMWARE
DEVICE_ID = 0x0720                  # PCI_DEVICE_ID_VMWARE_NET: a VMXNET adapter from power-on (VMXNET2)
VLANCE_VENDOR_ID = 0x1022           # PCI_VENDOR_ID_AMD
VLANCE_DEVICE_ID = 0x2000           # PCI_DEVICE_ID_AMD_VLANCE: the Flexible adapter before the morph
CLASS_ETHERNET = 0x020000

# net.h: the morph port sits between the Vlance's ports and VMXNET's in a morphable Vlance's I/O space
LANCE_CHIP = 0x2934                 # what the morph port reads in Vlance mode
VMXNET_CHIP = 0x4392                # ... and in VMXNET mode; writing it morphs the adapter
LANCE_CHIP_IO_RESV_SIZE = 0x20
VMXNET_CHIP_IO_RESV_SIZE = 0x40
MORPH_PORT_SIZE = 4
MORPH_PORT = LANCE_CHIP_IO_RESV_SIZE                    # offset of the morph port in the Flexible's BAR0
MORPHED_BASE = MORPH_PORT + MORPH_PORT_SIZE             # VMXNET's ports, once morphed
# a Vlance whose I/O BAR holds all three is morphable (vmxnet_probe_device); BARs are powers of two
FLEXIBLE_IO_SIZE = 0x80
assert FLEXIBLE_IO_SIZE >= MORPHED_BASE + VMXNET_CHIP_IO_RESV_SIZE

# vmxnet_def.h: the ports, from VMXNET's base
INIT_ADDR = 0x00                    # the shared area's physical address (0: the driver closed the device)
INIT_LENGTH = 0x04                  # its length: the write that hands the area over
TX_ADDR = 0x08                      # a read asks the device to transmit what the driver put in the TX ring
COMMAND_ADDR = 0x0C                 # a command; a GET command's answer is read back here
MAC_ADDR = 0x10                     # 6 bytes: the station address (byte access)
LOW_VERSION = 0x18
HIGH_VERSION = 0x1C
STATUS_ADDR = 0x20
TOE_INIT_ADDR = 0x24
APROM_ADDR = 0x28                   # 6 bytes: the permanent address (VMNET_CAP_VMXNET_APROM)
INT_ENABLE_ADDR = 0x30
WAKE_PKT_PATTERNS = 0x34

CMD_INTR_ACK = 0x0001
CMD_UPDATE_LADRF = 0x0002
CMD_UPDATE_IFF = 0x0004
CMD_INTR_DISABLE = 0x0020
CMD_INTR_ENABLE = 0x0040
CMD_CHECK_TX_DONE = 0x0100
CMD_GET_NUM_RX_BUFFERS = 0x0200
CMD_GET_NUM_TX_BUFFERS = 0x0400
CMD_PIN_TX_BUFFERS = 0x0800
CMD_GET_CAPABILITIES = 0x1000
CMD_GET_FEATURES = 0x2000

STATUS_CONNECTED = 0x0001
STATUS_ENABLED = 0x0002

IFF_PROMISC = 0x01
IFF_BROADCAST = 0x02
IFF_MULTICAST = 0x04
IFF_DIRECTED = 0x08
MAX_LADRF = 2

# vmxnet_def.h: what a driver implements, as the device reports it (GET_FEATURES)
FEATURE_ZERO_COPY_TX = 0x01
FEATURE_TSO = 0x02
FEATURE_JUMBO_FRAME = 0x04
FEATURE_LPD = 0x08
# vmnet_def.h: what the virtual hardware can do (GET_CAPABILITIES)
CAP_SG = 0x0001
CAP_IP4_CSUM = 0x0002
CAP_HW_CSUM = 0x0004
CAP_TSO = 0x0020
CAP_VMXNET_APROM = 0x0080
CAP_TX_CHAIN = 0x4000
CAP_RX_CHAIN = 0x8000

# vmxnet2_def.h
MAGIC = 0xBABE864F                  # VMXNET2_MAGIC: the protocol version, in LOW/HIGH_VERSION and the area
MAX_NUM_RX_BUFFERS = 128
DEFAULT_NUM_RX_BUFFERS = 100
ENHANCED_MAX_NUM_RX_BUFFERS = 512
ENHANCED_DEFAULT_NUM_RX_BUFFERS = 150
MAX_NUM_RX_BUFFERS2 = 2048
MAX_NUM_TX_BUFFERS = 128
DEFAULT_NUM_TX_BUFFERS = 100
MAX_NUM_TX_BUFFERS_TSO = 512        # the TX ring when TSO or jumbo frames are on
DEFAULT_NUM_TX_BUFFERS_TSO = 256
# who owns a ring entry; the _FRAG ones are the second RX ring's body buffers of a frame longer than one RX buffer
(OWNERSHIP_DRIVER, OWNERSHIP_DRIVER_PENDING, OWNERSHIP_NIC, OWNERSHIP_NIC_PENDING, OWNERSHIP_NIC_FRAG,
 OWNERSHIP_DRIVER_FRAG) = range(6)
SG_DEFAULT_LENGTH = 6               # VMXNET2_SG_DEFAULT_LENGTH: buffers per TX entry
NET_SG_PHYS_ADDR = 1                # net_sg.h NetSG_AddrType
RX_HW_XSUM_OK = 0x01
RX_WITH_FRAG = 0x02                 # more of the frame is in the second ring
RX_FRAG_EOP = 0x04                  # the frame's last body buffer
TX_CAN_KEEP = 0x0001
TX_RING_LOW = 0x0002
TX_HW_XSUM = 0x0004
TX_TSO = 0x0008
PKT_BUF_SZ = 1536                   # vmxnetInt.h: the driver's receive buffers
JUMBO_MTU = 9000                    # the largest MTU the Linux vmxnet driver takes with jumbo frames on
MAX_FRAME = JUMBO_MTU + 18          # with the Ethernet header and a VLAN tag

# Vmxnet2_DriverData: 4-byte fields but rxBufferPhysStart (uint64 at 72), then Vmxnet2_DriverStats
# (10 uint32); 176 bytes, 8-aligned
_DD_WORDS = ("magic", "rxRingLength", "rxDriverNext", "rxRingLength2", "rxDriverNext2", "notUsed1", "ifflags",
             "LADRF0", "LADRF1", "txDontClusterSize", "txRingLength", "txDriverCur", "txDriverNext", "txStopped",
             "txClusterLength", "txNumDeferred", "notUsed3", "totalRxBuffers")
_DD_AFTER = ("extra0", "extra1", "extra2", "savedRxNICNext", "savedRxNICNext2", "savedTxNICNext", "length",
             "rxRingOffset", "rxRingOffset2", "txRingOffset", "debugLevel", "txBufferPhysStart",
             "txBufferPhysLength", "txPktMaxSize", "transmits", "pktsTransmitted", "noCopyTransmits",
             "copyTransmits", "maxTxsPending", "statsTxStopped", "txRingOverflow", "interrupts", "pktsReceived",
             "rxBuffersLow")
DRIVER_DATA = Layout("Vmxnet2_DriverData", 176, [
    *((name, 4 * i, 4) for i, name in enumerate(_DD_WORDS)),
    ("rxBufferPhysStart", 72, 8),
    *((name, 80 + 4 * i, 4) for i, name in enumerate(_DD_AFTER)),
])
DD = DRIVER_DATA.offsets

# Vmxnet2_RxRingEntry: paddr, bufferLength, actualLength, ownership, flags, index
RX_ENTRY = Layout("Vmxnet2_RxRingEntry", 24, [
    ("paddr", 0, 8), ("bufferLength", 8, 4), ("actualLength", 12, 4), ("ownership", 16, 2), ("flags", 18, 2),
    ("index", 20, 4),
])
# Vmxnet2_TxRingEntry: flags, ownership, extra, tsoMss, then Vmxnet2_SG_Array {addrType, length,
# NetSG_Elem sg[6] {addrLow u32, addrHi u16, length u16}}
TX_ENTRY = Layout("Vmxnet2_TxRingEntry", 16 + 8 * SG_DEFAULT_LENGTH, [
    ("flags", 0, 2), ("ownership", 2, 2), ("extra", 4, 4), ("tsoMss", 8, 4), ("addrType", 12, 2),
    ("sgLength", 14, 2),
    *((f"sg{i}{part}", 16 + 8 * i + off, width) for i in range(SG_DEFAULT_LENGTH)
      for part, off, width in (("addrLow", 0, 4), ("addrHi", 4, 2), ("length", 6, 2))),
])
TX_OWNERSHIP = TX_ENTRY.field_struct("ownership")
RX_OWNERSHIP = RX_ENTRY.field_struct("ownership")
RX_ENTRY_DONE = Layout("Vmxnet2_RxRingEntry.done", 8, [     # what the device writes back (Vmxnet2_PutRx)
    ("actualLength", 0, 4), ("ownership", 4, 2), ("flags", 6, 2)])
RX_DONE_OFFSET = RX_ENTRY.offset("actualLength")


def sg_elements(entry: tuple) -> list[tuple[int, int]]:
    """(address, length) of a TX entry's used scatter-gather elements (``entry`` as TX_ENTRY unpacks it)."""
    count = min(entry[5], SG_DEFAULT_LENGTH)
    return [(entry[6 + 3 * i] | entry[7 + 3 * i] << 32, entry[8 + 3 * i]) for i in range(count)]
