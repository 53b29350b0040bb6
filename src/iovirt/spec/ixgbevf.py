"""Intel 82599 virtualisation as data: the Virtual Function's PCI identity
and BAR0 register map, the PF/VF mailbox and its message protocol, and the
PF's pool registers that the embedded switch reads.

82599 10 GbE Controller Datasheet rev. 3.x: 7.10 virtualisation (7.10.2
PF/VF mailbox, 7.10.3 pool filtering, anti-spoofing, VLAN insertion, the
local switch), 7.7.2 transmit rate limiting, 8.3 VF registers, 8.2.3 the
PF's virtualisation registers.  Names as the datasheet spells them (Linux's
``ixgbe_type.h`` name in the doc where it differs); message IDs and bits as
``ixgbevf/mbx.h`` and ``ixgbe/ixgbe_mbx.h`` define them.
"""

from . import ixgbe as pf
from .fields import Layout, Register, RegisterMap

VENDOR_ID = pf.VENDOR_ID
DEVICE_ID = 0x10ED          # IXGBE_DEV_ID_82599_VF
CLASS_ETHERNET = pf.CLASS_ETHERNET
REVISION = pf.REVISION
BAR0_SIZE = 0x4000          # 64-bit prefetchable, 16 KiB
MSIX_BAR = 3                # 64-bit BAR3: MSI-X table at 0, PBA at 0x2000
MSIX_BAR_SIZE = 0x4000
MSIX_TABLE_OFFSET = 0x0000
MSIX_PBA_OFFSET = 0x2000
MSIX_VECTORS = 3            # 82599 VF: up to 2 queue vectors and the mailbox
QUEUES = 2                  # queue pairs per pool with 64 pools (7.10: 64 VMs x 2 queues)
MAX_POOLS = 64
MAX_VFS = 63                # one pool stays the PF's (Linux IXGBE_MAX_VFS_DRV_LIMIT)
MAILBOX_SIZE = 16           # dwords of mailbox memory per VF (IXGBE_VFMAILBOX_SIZE)

# VFMailbox (8.3) as the VF sees it
VFMAILBOX_REQ = 1 << 0      # VF asks the PF to read its message (sets PFMBICR.VFREQ)
VFMAILBOX_ACK = 1 << 1      # VF acknowledges the PF's message (sets PFMBICR.VFACK)
VFMAILBOX_VFU = 1 << 2      # buffer taken by the VF
VFMAILBOX_PFU = 1 << 3      # buffer taken by the PF (read only)
VFMAILBOX_PFSTS = 1 << 4    # PF wrote a message (read clears)
VFMAILBOX_PFACK = 1 << 5    # PF acknowledged the VF's message (read clears)
VFMAILBOX_RSTI = 1 << 6     # PF reset in progress (read only)
VFMAILBOX_RSTD = 1 << 7     # PF reset done (read clears)
VFMAILBOX_R2C = VFMAILBOX_PFSTS | VFMAILBOX_PFACK | VFMAILBOX_RSTD
# PFMailbox[n] (8.2.3) as the PF sees VF n's mailbox
PFMAILBOX_STS = 1 << 0      # PF's message ready: VFMailbox.PFSTS and a VF mailbox interrupt
PFMAILBOX_ACK = 1 << 1      # PF acknowledges: VFMailbox.PFACK and a VF mailbox interrupt
PFMAILBOX_VFU = 1 << 2      # read only: the VF holds the buffer
PFMAILBOX_PFU = 1 << 3      # PF takes the buffer (only while the VF does not hold it)
PFMAILBOX_RVFU = 1 << 4     # reset VFU, when a VF is stuck holding the buffer
# PFMBICR[i]: VFs 16i..16i+15, write 1 to clear
PFMBICR_VFREQ_SHIFT = 0
PFMBICR_VFACK_SHIFT = 16
VFS_PER_MBICR = 16

# mailbox messages (word 0: ID in 15:0, MSGINFO in 23:16, result in 31:29)
VF_RESET = 0x01
VF_SET_MAC_ADDR = 0x02
VF_SET_MULTICAST = 0x03
VF_SET_VLAN = 0x04
VF_SET_LPE = 0x05
PF_CONTROL_MSG = 0x0100
VT_MSGTYPE_ACK = 0x80000000
VT_MSGTYPE_NACK = 0x40000000
VT_MSGTYPE_CTS = 0x20000000
VT_MSGINFO_SHIFT = 16
VT_MSGINFO_MASK = 0xFF << VT_MSGINFO_SHIFT
VT_MSGID_MASK = 0xFFFF
PERMADDR_MSG_LEN = 4        # dwords of the VF_RESET reply
MC_TYPE_WORD = 3            # reply word carrying the MTA filter type (MCSTCTRL.MO)
MAX_VF_MC_ENTRIES = 30      # 16-bit hashes after word 0
MIN_FRAME = 68              # ETH_MIN_MTU: the smallest max_frame SET_LPE accepts
LEGACY_MAX_FRAME = 1522     # mailbox API 1.0 VFs: no jumbo frames on the 82599
MAX_JUMBO_FRAME = 9728      # IXGBE_MAX_JUMBO_FRAME_SIZE

# messages laid out in the mailbox memory
RESET_REPLY = Layout("ixgbe_vf_reset_reply", 4 * PERMADDR_MSG_LEN, [
    ("msg", 0, 4), ("mac_lo", 4, 4), ("mac_hi", 8, 2), ("mc_filter_type", 12, 4)])
MAC_MSG = Layout("ixgbe_vf_set_mac", 12, [("msg", 0, 4), ("mac_lo", 4, 4), ("mac_hi", 8, 2)])
VLAN_MSG = Layout("ixgbe_vf_set_vlan", 8, [("msg", 0, 4), ("vid", 4, 4)])
LPE_MSG = Layout("ixgbe_vf_set_lpe", 8, [("msg", 0, 4), ("max_frame", 4, 4)])
MC_MSG = Layout("ixgbe_vf_set_multicast", 4 * MAILBOX_SIZE,
                [("msg", 0, 4)] + [(f"hash{i}", 4 + 2 * i, 2) for i in range(MAX_VF_MC_ENTRIES)])

# VF interrupts (8.3): VTEICR bits are the 3 MSI-X vectors
VTEICR_MASK = (1 << MSIX_VECTORS) - 1
VTIVAR_VECTOR_MASK = 0x3

# per-queue registers of the VF and the PF queue register each one is (8.3)
_RX_QUEUE = (("RDBAL", 0x00), ("RDBAH", 0x04), ("RDLEN", 0x08), ("RDH", 0x10), ("SRRCTL", 0x14),
             ("RDT", 0x18), ("RXDCTL", 0x28))
_TX_QUEUE = (("TDBAL", 0x00), ("TDBAH", 0x04), ("TDLEN", 0x08), ("TDH", 0x10), ("TDT", 0x18),
             ("TXDCTL", 0x28), ("TDWBAL", 0x38), ("TDWBAH", 0x3C))
QUEUE_REGS = {f"VF{name}{i}": (name, i) for i in range(QUEUES)
              for name, _ in _RX_QUEUE + _TX_QUEUE}


def _queue_regs() -> list[Register]:
    return [Register(f"VF{name}{i}", base + 0x40 * i + off, reset=pf.REGS[f"{name}0"].reset)
            for i in range(QUEUES) for base, table in ((0x1000, _RX_QUEUE), (0x2000, _TX_QUEUE))
            for name, off in table]


REGS = RegisterMap("ixgbevf", [
    Register("VFCTRL", 0x0000, doc="VF Control: RST resets the VF's queues and interrupts"),
    Register("VFSTATUS", 0x0008, access="ro", doc="the port's STATUS"),
    Register("VFLINKS", 0x0010, access="ro", doc="the port's LINKS"),
    Register("VTEICR", 0x0100, doc="VF Extended Interrupt Cause (read clears, write 1 clears)"),
    Register("VTEICS", 0x0104, access="wo", doc="VF Extended Interrupt Cause Set"),
    Register("VTEIMS", 0x0108, doc="VF Extended Interrupt Mask Set/Read"),
    Register("VTEIMC", 0x010C, access="wo", doc="VF Extended Interrupt Mask Clear"),
    Register("VTEIAC", 0x0110, doc="VF Extended Interrupt Auto Clear"),
    Register("VTEIAM", 0x0114, doc="VF Extended Interrupt Auto Mask"),
    Register("VTIVAR0", 0x0120, doc="VF Interrupt Vector Allocation: RX0, TX0, RX1, TX1 bytes"),
    Register("VTIVAR_MISC", 0x0140, doc="VF Interrupt Vector Allocation, mailbox in byte 0"),
    *[Register(f"VFMBMEM{i}", 0x0200 + 4 * i, doc="mailbox memory, shared with PFMBMEM") for i in range(MAILBOX_SIZE)],
    Register("VFMAILBOX", 0x02FC, doc="VF mailbox control"),
    *[Register(f"VTEITR{n}", 0x0820 + 4 * n, doc="VF Interrupt Throttle") for n in range(MSIX_VECTORS)],
    *_queue_regs(),
    Register("VFGPRC", 0x101C, access="ro", doc="VF good packets received"),
    Register("VFGORC_LSB", 0x1020, access="ro"), Register("VFGORC_MSB", 0x1024, access="ro"),
    Register("VFMPRC", 0x1034, access="ro", doc="VF multicast packets received"),
    Register("VFGPTC", 0x201C, access="ro", doc="VF good packets transmitted"),
    Register("VFGOTC_LSB", 0x2020, access="ro"), Register("VFGOTC_MSB", 0x2024, access="ro"),
    Register("VFRXMEMWRAP", 0x3190, access="ro", doc="RX packet buffer wrap-around (diagnostic)"),
])

# ---- the PF's virtualisation registers (8.2.3) ----------------------------------
# PFVTCTL (VT_CTL)
PFVTCTL_VT_ENA = 1 << 0
PFVTCTL_DEF_PL_SHIFT = 7    # default pool for unmatched unicast, bits 12:7
PFVTCTL_DEF_PL_MASK = 0x3F << PFVTCTL_DEF_PL_SHIFT
PFVTCTL_DIS_DEF_PL = 1 << 29
PFVTCTL_RPL_EN = 1 << 30    # replicate broadcast/multicast to every accepting pool
# PFVML2FLT[n] (VMOLR): what pool n accepts
PFVML2FLT_AUPE = 1 << 24    # untagged frames
PFVML2FLT_ROMPE = 1 << 25   # multicast hitting the MTA
PFVML2FLT_BAM = 1 << 27     # broadcast
PFVML2FLT_MPE = 1 << 28     # all multicast
# PFVLVF[i] (VLVF): VLAN ID the pool bits of PFVLVFB[2i], [2i+1] belong to
PFVLVF_VLANID_MASK = 0xFFF
PFVLVF_VI_EN = 1 << 31
VLVF_ENTRIES = 64
# PFVMVIR[n] (VMVIR): default VLAN inserted on pool n's transmissions
PFVMVIR_VLAN_TAG_MASK = 0xFFFF
PFVMVIR_VLANA_DEFAULT = 0x40000000      # always insert the default tag
PFVMVIR_VLANA_NEVER = 0x80000000
# PFVFSPOOF[i]: pools 8i..8i+7
PFVFSPOOF_MACAS_SHIFT = 0
PFVFSPOOF_VLANAS_SHIFT = 8
POOLS_PER_SPOOF = 8
PFDTXGSWC_LBEN = 1 << 0     # local switching between pools (VEB)
# PFQDE (QDE): indirect per-queue drop enable
PFQDE_QDE = 1 << 0
PFQDE_IDX_SHIFT = 8
PFQDE_IDX_MASK = 0x7F << PFQDE_IDX_SHIFT
PFQDE_WRITE = 1 << 16
# RTTBCNRC: rate factor RF = line rate / target rate in 10.14 fixed point, of the queue RTTDQSEL names
RTTBCNRC_RF_DEC_MASK = 0x00003FFF
RTTBCNRC_RF_INT_SHIFT = 14
RTTBCNRC_RF_INT_MASK = 0x3FF << RTTBCNRC_RF_INT_SHIFT
RTTBCNRC_RS_ENA = 1 << 31
RTTBCNRM_82599 = 0x4        # MMW_SIZE Linux programs on the 82599
VLAN_TPID = pf.VLNCTRL_VET


def pfmbmem(vf: int) -> int:
    """First dword of VF ``vf``'s mailbox memory in the PF's BAR0."""
    return 0x13000 + 64 * vf


PF_REGS = RegisterMap("ixgbe-vt", [
    *[Register(f"PFMBICR{i}", 0x00710 + 4 * i, doc="PF Mailbox Interrupt Causes (write 1 clears)") for i in range(4)],
    *[Register(f"PFMBIMR{i}", 0x00720 + 4 * i, doc="PF Mailbox Interrupt Mask") for i in range(4)],
    Register("PFQDE", 0x02F04, doc="Queue Drop Enable, indirect (QDE)"),
    Register("RTTDQSEL", 0x04904, doc="TX descriptor queue select for RTTBCNRC"),
    Register("RTTBCNRM", 0x04980, doc="rate compensation (MMW size)"),
    Register("RTTBCNRC", 0x04984, doc="rate scheduler config of the selected queue"),
    *[Register(f"PFMAILBOX{n}", 0x04B00 + 4 * n, doc="PF side of VF n's mailbox") for n in range(MAX_POOLS)],
    Register("PFVTCTL", 0x051B0, doc="Virtualisation Control (VT_CTL)"),
    *[Register(f"PFVFRE{i}", 0x051E0 + 4 * i, doc="VF receive enable, pools 32i..32i+31 (VFRE)") for i in range(2)],
    *[Register(f"PFVMVIR{n}", 0x08000 + 4 * n, doc="VM VLAN insert (VMVIR)") for n in range(MAX_POOLS)],
    *[Register(f"PFVFTE{i}", 0x08110 + 4 * i, doc="VF transmit enable (VFTE)") for i in range(2)],
    *[Register(f"PFVFSPOOF{i}", 0x08200 + 4 * i, doc="MAC and VLAN anti-spoofing") for i in range(8)],
    Register("PFDTXGSWC", 0x08220, doc="DMA TX global switch control"),
    Register("SSVPC", 0x08780, access="rc", doc="Switch Security Violation Packet Count"),
    *[Register(f"MPSAR_{h}{i}", 0x0A600 + 8 * i + 4 * (h == "HI"), doc="MAC pool select for RAR[i]")
      for i in range(128) for h in ("LO", "HI")],
    *[Register(f"PFVML2FLT{n}", 0x0F000 + 4 * n, doc="VM L2 control: accept modes (VMOLR)") for n in range(MAX_POOLS)],
    *[Register(f"PFVLVF{i}", 0x0F100 + 4 * i, doc="VLAN pool filter (VLVF)") for i in range(VLVF_ENTRIES)],
    *[Register(f"PFVLVFB{i}", 0x0F200 + 4 * i, doc="VLAN pool filter pool bits (VLVFB)") for i in range(2 * VLVF_ENTRIES)],
    *[Register(f"PFMBMEM{vf}_{w}", pfmbmem(vf) + 4 * w, doc="mailbox memory of VF vf")
      for vf in range(MAX_POOLS) for w in range(MAILBOX_SIZE)],
])
