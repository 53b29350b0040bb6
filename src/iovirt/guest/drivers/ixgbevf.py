"""Guest driver for the 82599 Virtual Function, in the order Linux's ixgbevf
does things (drivers/net/ethernet/intel/ixgbevf: vf.c reset_hw, mbx.c,
ixgbevf_main.c probe/open): stop the queues, VFCTRL.RST, wait until the
PF's reset indications (VFMailbox.RSTI/RSTD) are gone, then ask the PF over
the mailbox: VF_RESET answered with ACK and the permanent MAC (a VF has no
EEPROM; its MAC is the administrator's, through the PF).  MSI-X through
BAR3 (the queue pair's vector, the mailbox's vector), one TX and one RX ring
of advanced descriptors shared with the PF driver (``ixgbe_rings``),
SET_LPE for the frame size, VTIVAR, VTEITR, auto-clear and auto-mask.

The mailbox is polled as mbx.c does: read-to-clear bits are remembered
until checked (``v2p_mailbox``) and the vCPU waits ``udelay`` between polls,
so a request takes as long as the PF takes to answer it."""

from __future__ import annotations

from typing import ClassVar

from ...spec import ixgbe as s
from ...spec import ixgbevf as vs
from .ixgbe_rings import ITR_20K, QUEUE_VECTOR, SRRCTL_ONEBUF, IxgbeRings, ProbeError

MAILBOX_VECTOR = 1                  # MSI-X entries: TxRx-0, then the mailbox ("other")
RST_POLLS = 200                     # IXGBE_VF_INIT_TIMEOUT, udelay(5) apart
RST_DELAY_NS = 5_000
MBX_POLLS = 2000                    # IXGBE_VF_MBX_INIT_TIMEOUT
MBX_DELAY_NS = 500_000              # IXGBE_VF_MBX_INIT_DELAY: 500 us between mailbox polls
RESET_REPLY_DELAY_NS = 10_000_000   # reset_hw: mdelay(10) before reading the VF_RESET reply
MAX_FRAME = 1518                    # MTU 1500 + ETH_HLEN + ETH_FCS_LEN, for SET_LPE


class IxgbevfDriver(IxgbeRings):
    VENDOR, DEVICE = vs.VENDOR_ID, vs.DEVICE_ID
    REGS: ClassVar[dict[str, int]] = {r.name: r.offset for r in vs.REGS}
    PREFIX = "VF"
    STATUS = "VFSTATUS"
    EITR = f"VTEITR{QUEUE_VECTOR}"

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.v2p = 0                    # hw->mbx.v2p_mailbox
        self._probe()

    # ---- probe / open ------------------------------------------------------------
    def _probe(self) -> None:
        self._reset_hw()
        table = self.info.bars[vs.MSIX_BAR][1] + vs.MSIX_TABLE_OFFSET
        self.vectors = self.setup_msix(table, [(QUEUE_VECTOR, self._queue_intr),
                                               (MAILBOX_VECTOR, self._mailbox_intr)])
        self._tx_ring_up()
        self._rx_ring_up(SRRCTL_ONEBUF | s.SRRCTL_DROP_EN, s.RXDCTL_VME)
        if not self._request([vs.VF_SET_LPE, MAX_FRAME], 1):            # ixgbevf_rlpml_set_vf
            raise ProbeError(f"ixgbevf {self.info.bdf}: no answer to SET_LPE")
        self._configure_msix()

    def _reset_hw(self) -> None:
        """ixgbevf_reset_hw_vf: stop, VFCTRL.RST, wait out the PF's reset,
        VF_RESET; the reply carries our MAC."""
        self._stop_adapter()
        self.wr("VFCTRL", s.CTRL_RST)
        self.flush()
        for _ in range(RST_POLLS):
            if not self._check(vs.VFMAILBOX_RSTD | vs.VFMAILBOX_RSTI):
                break
            self._delay(RST_DELAY_NS)
        else:
            raise ProbeError(f"ixgbevf {self.info.bdf}: the PF did not finish its reset")
        if not self._send([vs.VF_RESET]):
            raise ProbeError(f"ixgbevf {self.info.bdf}: the PF did not take VF_RESET")
        self._delay(RESET_REPLY_DELAY_NS)
        words = self._receive(vs.PERMADDR_MSG_LEN)
        if words is None:
            raise ProbeError(f"ixgbevf {self.info.bdf}: no reply to VF_RESET")
        msg, lo, hi, self.mc_filter_type = vs.RESET_REPLY.unpack_from(b"".join(w.to_bytes(4, "little") for w in words))
        if msg != vs.VF_RESET | vs.VT_MSGTYPE_ACK:
            raise ProbeError(f"ixgbevf {self.info.bdf}: the PF assigned no MAC address ({msg:#x})")
        self.mac = (lo | hi << 32).to_bytes(6, "little")

    def _stop_adapter(self) -> None:
        """ixgbevf_stop_hw_vf: queues off, interrupts masked and cleared."""
        for i in range(vs.QUEUES):
            self.wr(f"VFRXDCTL{i}", self.rd(f"VFRXDCTL{i}") & ~s.RXDCTL_ENABLE)
        self.wr("VTEIMC", vs.VTEICR_MASK)
        self.rd("VTEICR")
        for i in range(vs.QUEUES):
            self.wr(f"VFTXDCTL{i}", self.rd(f"VFTXDCTL{i}") & ~s.TXDCTL_ENABLE)

    def remove(self) -> None:
        """ixgbevf_remove: down (queues and interrupts off); no VF reset here,
        the host resets the function when it takes it back."""
        self._stop_adapter()
        super().remove()

    def _configure_msix(self) -> None:
        """ixgbevf_configure_msix + ixgbevf_irq_enable."""
        valid = s.IVAR_ALLOC_VAL
        self.wr("VTIVAR0", (valid | QUEUE_VECTOR) | (valid | QUEUE_VECTOR) << 8)    # RX 0 and TX 0
        self.wr("VTIVAR_MISC", valid | MAILBOX_VECTOR)
        self.wr(self.EITR, ITR_20K | s.EITR_CNT_WDIS)
        enable = 1 << QUEUE_VECTOR | 1 << MAILBOX_VECTOR
        self.wr("VTEIAM", enable)
        self.wr("VTEIAC", enable)
        self.wr("VTEIMS", enable)

    def set_mac(self, mac: bytes) -> bool:
        """ixgbevf_set_rar_vf: ask the PF for ``mac``; True if it ACKed."""
        msg = vs.MAC_MSG.pack(vs.VF_SET_MAC_ADDR, int.from_bytes(mac[:4], "little"),
                              int.from_bytes(mac[4:6], "little"))
        reply = self._request([int.from_bytes(msg[i:i + 4], "little") for i in range(0, len(msg), 4)], 1)
        ok = reply is not None and reply[0] & ~vs.VT_MSGTYPE_CTS == vs.VF_SET_MAC_ADDR | vs.VT_MSGTYPE_ACK
        if ok:
            self.mac = bytes(mac)
        return ok

    # ---- interrupts ----------------------------------------------------------------
    def _irq_enable_queues(self) -> None:
        self.wr("VTEIMS", 1 << QUEUE_VECTOR)                 # ixgbevf_irq_enable_queues

    def _mailbox_intr(self) -> None:
        """ixgbevf_msix_other: note it for the service task, re-enable."""
        self.stats["ixgbevf_mailbox"] += 1
        self.wr("VTEIMS", 1 << MAILBOX_VECTOR)
        self.vcpu.eoi(self.vectors[MAILBOX_VECTOR])

    # ---- the mailbox (mbx.c) -----------------------------------------------------------
    def _delay(self, ns: float) -> None:
        """udelay/mdelay: the vCPU waits."""
        self.vcpu.sync(self.vcpu.cursor + ns)

    def _read_v2p(self) -> int:
        """ixgbevf_read_v2p_mailbox: VFMailbox, its read-to-clear bits kept until checked."""
        value = self.rd("VFMAILBOX") | self.v2p
        self.v2p = value & vs.VFMAILBOX_R2C
        return value

    def _check(self, mask: int) -> bool:
        """ixgbevf_check_for_bit_vf: was a bit of ``mask`` set?  Consumes it."""
        hit = self._read_v2p() & mask
        self.v2p &= ~mask
        return bool(hit)

    def _wait(self, mask: int) -> bool:
        for _ in range(MBX_POLLS):
            if self._check(mask):
                return True
            self._delay(MBX_DELAY_NS)
        return False

    def _lock(self) -> bool:
        self.wr("VFMAILBOX", vs.VFMAILBOX_VFU)
        return bool(self._read_v2p() & vs.VFMAILBOX_VFU)

    def _send(self, words: list[int]) -> bool:
        """write_posted: take the buffer, write, REQ; wait for the PF's ACK."""
        if not self._lock():
            return False
        self._check(vs.VFMAILBOX_PFSTS | vs.VFMAILBOX_PFACK)      # stale message and ack
        for i, word in enumerate(words):
            self.wr(f"VFMBMEM{i}", word)
        self.wr("VFMAILBOX", vs.VFMAILBOX_REQ)
        return self._wait(vs.VFMAILBOX_PFACK)

    def _receive(self, count: int) -> list[int] | None:
        """read_posted: wait for the PF's message, take the buffer, read, ACK."""
        if not self._wait(vs.VFMAILBOX_PFSTS) or not self._lock():
            return None
        words = [self.rd(f"VFMBMEM{i}") for i in range(count)]
        self.wr("VFMAILBOX", vs.VFMAILBOX_ACK)
        return words

    def _request(self, words: list[int], count: int) -> list[int] | None:
        return self._receive(count) if self._send(words) else None
