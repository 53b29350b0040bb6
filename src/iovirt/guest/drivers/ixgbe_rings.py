"""What the 82599 drivers share, PF (ixgbe) and VF (ixgbevf) alike: register
access by name, one TX and one RX ring of advanced descriptors brought up
the way ixgbe_configure_tx_ring / ixgbe_configure_rx_ring (and their ixgbevf
twins) do, transmit with one data descriptor per frame and a tail write,
and the NAPI poll that cleans both rings, refilling RX every 16 buffers.

A driver names its registers through ``REGS`` (name -> BAR0 offset) and
``PREFIX`` ("" for the PF's ``TDT0``, "VF" for the VF's ``VFTDT0``), its
queue pair through ``queue`` (0, or the PF's in its VMDq pool) and its
MSI-X entry through ``entry``, and re-enables its queue vector in
:meth:`_irq_enable_queues`.  The handler and the poll run on the vCPU that
took the queue's interrupt, and charge it."""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from ...mem.guest_memory import PAGE_SHIFT
from ...spec import ixgbe as s
from ...spec.ethernet import ETH_HLEN
from ...net.moderation import ITR_20K, LOWEST, NAPI_WEIGHT, next_itr
from .base import DescriptorRings, tso_headers, wants_csum

TX_RING = 512                       # IXGBE_DEFAULT_TXD
RX_RING = 512                       # IXGBE_DEFAULT_RXD
RX_BUFFER = 2048                    # IXGBE_RXBUFFER_2K
RX_HDR_SIZE = 256                   # IXGBE_RX_HDR_SIZE (BSIZEHDR, unused with one buffer)
RX_BUFFER_WRITE = 16                # IXGBE_RX_BUFFER_WRITE
TX_WORK_LIMIT = 256                 # IXGBE_DEFAULT_TX_WORK
POLLS = 10                          # reset / queue enable polls before giving up
QUEUE_VECTOR = 0                    # MSI-X entry of the TX/RX queue pair
TXD_CMD_DATA = s.ADVTXD_DTYP_DATA | s.TXD_CMD_DEXT | s.TXD_CMD_IFCS
TXD_CMD_LAST = s.TXD_CMD_EOP | s.TXD_CMD_RS            # IXGBE_TXD_CMD: on a packet's last descriptor
SRRCTL_ONEBUF = (RX_HDR_SIZE >> 6) << s.SRRCTL_BSIZEHDR_SHIFT | RX_BUFFER >> s.SRRCTL_BSIZEPKT_SHIFT \
    | s.SRRCTL_DESCTYPE_ADV_ONEBUF
_TX = s.TX_DESC.struct
_RX = s.RX_DESC.struct
_RX_WB_UNPACK = s.RX_WB.unpack_from
# ixgbe_rx_checksum: CHECKSUM_UNNECESSARY when L4CS is set and neither TCPE nor IPE
_CSUM_MASK = s.RXD_STAT_L4CS | s.RXDADV_ERR_TCPE | s.RXDADV_ERR_IPE


class ProbeError(RuntimeError):
    pass


class IxgbeRings(DescriptorRings):
    REGS: ClassVar[dict[str, int]] = {}
    TX_RING, RX_RING, TX_WORK_LIMIT = TX_RING, RX_RING, TX_WORK_LIMIT
    DESC_SIZE, TX_STATUS_OFF, TXD_STAT_DD = s.DESC_SIZE, s.TX_WB.offset("status"), s.TXD_STAT_DD
    PREFIX = ""
    STATUS = "STATUS"
    EITR = "EITR0"
    offloads = frozenset(("tx_csum", "tso"))     # NETIF_F_HW_CSUM and NETIF_F_TSO (ixgbe_probe)
    rx_csum = True                              # NETIF_F_RXCSUM: trust the NIC's receive checksums
    xdp_prog = None         # ring->xdp_prog: takes a received frame (True) before the stack does

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.bar = info.bars[0][1]
        self.queue = 0                      # the index of its queue pair in the register names
        self.entry = QUEUE_VECTOR           # its MSI-X table entry
        self.itr = ITR_20K                  # q_vector->itr, what EITR holds (dynamic mode starts at 20K)
        self.adaptive = True                # rx-usecs 1: dynamic
        self.itr_range = {"tx": LOWEST, "rx": LOWEST}     # each ring container's range
        self.work = {"tx": 0, "rx": 0}                    # bytes since the last update

    # ---- register access --------------------------------------------------
    def rd(self, reg: str) -> int:
        return self.vcpu.mmio_read(self.bar + self.REGS[reg], 4)

    def wr(self, reg: str, value: int) -> None:
        self.vcpu.mmio_write(self.bar + self.REGS[reg], 4, value)

    def flush(self) -> None:
        self.rd(self.STATUS)                # IXGBE_WRITE_FLUSH()

    def _poll_reg(self, reg: str, bit: int, want: bool, what: str) -> None:
        for _ in range(POLLS):
            if bool(self.rd(reg) & bit) == want:
                return
        raise ProbeError(f"{self.info.bdf}: {what} timed out")

    # ---- ring bring-up --------------------------------------------------------
    def _tx_ring_up(self) -> None:
        """The queue off, the ring's base, length, head and tail, then on."""
        p, q = self.PREFIX, self.queue
        self.tx_ring = self.dma_alloc(TX_RING * s.DESC_SIZE, 128)
        self.tx_bufs = [self.dma_alloc(RX_BUFFER, 64) for _ in range(TX_RING)]
        self.tx_use = self.tx_clean = 0
        self.tx_watch: deque[int] = deque()     # per packet in flight: the slot after its last descriptor
        self.wr(f"{p}TXDCTL{q}", 0)
        self.flush()
        self._ring_base(f"{p}TD", self.tx_ring, TX_RING)
        self._tdt = self.bar + self.REGS[f"{p}TDT{q}"]
        self.wr(f"{p}TXDCTL{q}", 1 << s.TXDCTL_WTHRESH_SHIFT | s.TXDCTL_ENABLE)
        self._poll_reg(f"{p}TXDCTL{q}", s.TXDCTL_ENABLE, True, f"TX queue {q} enable")

    def _rx_ring_up(self, srrctl: int, rxdctl: int) -> None:
        """The queue off, ring, SRRCTL, on with ``rxdctl`` bits, buffers, tail."""
        p, q = self.PREFIX, self.queue
        self.rx_ring = self.dma_alloc(self.RX_RING * s.DESC_SIZE, 128)
        self.rx_bufs = [self.dma_alloc(RX_BUFFER, 64) for _ in range(self.RX_RING)]
        self.rx_clean = 0
        self.rx_partial: list[bytes] = []
        self.wr(f"{p}RXDCTL{q}", self.rd(f"{p}RXDCTL{q}") & ~s.RXDCTL_ENABLE)
        self._poll_reg(f"{p}RXDCTL{q}", s.RXDCTL_ENABLE, False, f"RX queue {q} disable")
        self._ring_base(f"{p}RD", self.rx_ring, self.RX_RING)
        self.wr(f"{p}SRRCTL{q}", srrctl)
        self.wr(f"{p}RXDCTL{q}", self.rd(f"{p}RXDCTL{q}") | s.RXDCTL_ENABLE | rxdctl)
        self._poll_reg(f"{p}RXDCTL{q}", s.RXDCTL_ENABLE, True, f"RX queue {q} enable")
        for i, buf in enumerate(self.rx_bufs):
            self.mem.store(_RX, self.rx_ring + i * s.DESC_SIZE, buf, 0)
        self._rdt = self.bar + self.REGS[f"{p}RDT{q}"]
        self.rx_tail = self.RX_RING - 1          # ixgbe_desc_unused: one slot stays empty
        self.vcpu.mmio_write(self._rdt, 4, self.rx_tail)

    def _ring_base(self, kind: str, ring: int, count: int) -> None:
        """xDBAL/xDBAH/xDLEN of the queue, head and tail at 0."""
        for reg, value in (("BAL", ring & 0xFFFFFFFF), ("BAH", ring >> 32), ("LEN", count * s.DESC_SIZE),
                           ("H", 0), ("T", 0)):
            self.wr(f"{kind}{reg}{self.queue}", value)

    # ---- transmit ------------------------------------------------------------------
    def transmit(self, frame: bytes) -> bool:
        """ixgbe_xmit_frame_ring: a TSO packet (ixgbe_tso) or one whose TCP
        checksum the NIC completes (ixgbe_tx_csum) takes a context descriptor
        first; the frame goes in 2 KB buffers, a data descriptor each, the
        last with EOP and RS; then the tail."""
        mss = getattr(frame, "gso_size", 0)
        offload = mss or wants_csum(self.stack, frame)
        n = -(-len(frame) // RX_BUFFER) + (1 if offload else 0)
        use = self.tx_use
        if (self.tx_clean - use - 1) % TX_RING < n:          # ixgbe_maybe_stop_tx
            self.tx_queue_stopped = True                     # netif_stop_subqueue
            return False
        olinfo = 0
        if offload:
            frame, olinfo = self._tx_context(use, frame, mss)
            use = use + 1 if use + 1 < TX_RING else 0
        size = len(frame)
        cmd = TXD_CMD_DATA | (s.ADVTXD_DCMD_TSE if mss else 0)
        for at in range(0, size, RX_BUFFER):
            piece = frame[at:at + RX_BUFFER] if size > RX_BUFFER else frame
            buf = self.tx_bufs[use]
            self.mem.write(buf, piece)
            last = at + RX_BUFFER >= size
            self._tx_store(use, buf, cmd | (TXD_CMD_LAST if last else 0) | len(piece), olinfo)
            use = use + 1 if use + 1 < TX_RING else 0
        self.tx_use = use
        self.tx_watch.append(use)                           # first->next_to_watch, past the EOP descriptor
        self.work["tx"] += size
        self.vcpu.mmio_write(self._tdt, 4, use)
        return True

    def _tx_store(self, use: int, word0: int, word2: int, word3: int) -> None:
        """One descriptor into the ring."""
        self.vcpu.charge("ring_op")
        # NOTE: mem.store inlined: the driver's own ring, allocated in guest memory; a
        # descriptor never straddles a page of the 128-byte aligned ring
        at = self.tx_ring + use * s.DESC_SIZE
        _TX.pack_into(self.buf, at, word0, word2, word3)
        self.mem.dirty[at >> PAGE_SHIFT] = 1

    def _tx_context(self, use: int, frame: bytes, mss: int) -> tuple[bytes, int]:
        """ixgbe_tso / ixgbe_tx_csum: the context descriptor (MACLEN, IPLEN,
        TCP over IPv4, for TSO the MSS and L4LEN) at ``use``; the frame as the
        NIC wants it and the data descriptors' olinfo (the checksums to
        insert, CC, and PAYLEN: what follows the headers with TSO, the whole
        frame without)."""
        tucmd = s.ADVTXD_DTYP_CTXT | s.TXD_CMD_DEXT | s.ADVTXD_TUCMD_IPV4 | s.ADVTXD_TUCMD_L4T_TCP
        if not mss:
            self._tx_store(use, ETH_HLEN << s.ADVTXD_MACLEN_SHIFT | (frame[ETH_HLEN] & 0xF) * 4, tucmd, 0)
            return frame, s.ADVTXD_CC | s.ADVTXD_POPTS_TXSM | len(frame) << s.ADVTXD_PAYLEN_SHIFT
        frame, iplen, l4len = tso_headers(frame)
        self._tx_store(use, ETH_HLEN << s.ADVTXD_MACLEN_SHIFT | iplen, tucmd,
                       mss << s.ADVTXD_MSS_SHIFT | l4len << s.ADVTXD_L4LEN_SHIFT)
        olinfo = (s.ADVTXD_CC | s.ADVTXD_POPTS_TXSM | s.ADVTXD_POPTS_IXSM
                  | len(frame) - ETH_HLEN - iplen - l4len << s.ADVTXD_PAYLEN_SHIFT)
        return frame, olinfo

    # ---- interrupts and NAPI ----------------------------------------------------
    def _queue_intr(self) -> None:
        """The queue vector's handler: already masked by auto-mask; schedule NAPI."""
        self.vcpu = self.kernel.cpu
        self.vcpu.eoi(self.vectors[self.entry])
        self.napi_schedule()

    def _irq_enable_queues(self) -> None:
        raise NotImplementedError

    def _poll(self) -> None:
        """ixgbe_poll / ixgbevf_poll."""
        self.vcpu = self.kernel.cpu
        self.poll_scheduled = False
        if self.napi_disabled:
            return
        self._clean_tx()
        if self._clean_rx() < NAPI_WEIGHT:
            if self.adaptive:
                self._set_itr()
            self._irq_enable_queues()                        # napi_complete_done
        else:
            self.napi_schedule()

    def _clean_rx(self) -> int:
        """ixgbe_clean_rx_irq: frames whose descriptors have DD, up to the budget."""
        buf, ring, charge = self.buf, self.rx_ring, self.vcpu.charge
        done = cleaned = 0
        while done < NAPI_WEIGHT:
            i = self.rx_clean
            addr = ring + i * s.DESC_SIZE
            status, length = _RX_WB_UNPACK(buf, addr)[3:5]
            if not status & s.RXD_STAT_DD:
                break
            charge("ring_op")
            self.rx_partial.append(self.mem.read(self.rx_bufs[i], length))
            self.mem.store(_RX, addr, self.rx_bufs[i], 0)          # the buffer goes back as it was
            self.rx_clean = i + 1 if i + 1 < self.RX_RING else 0
            cleaned += 1
            if cleaned >= RX_BUFFER_WRITE:
                self._refill(cleaned)
                cleaned = 0
            if status & s.RXD_STAT_EOP:
                self._deliver(status)
                done += 1
        if cleaned:
            self._refill(cleaned)
        return done

    def _deliver(self, status: int) -> None:
        parts, self.rx_partial = self.rx_partial, []
        if status & s.RXDADV_ERR_FRAME_ERR_MASK:
            self.stats["rx_errors"] += 1
        else:
            frame = parts[0] if len(parts) == 1 else b"".join(parts)
            self.work["rx"] += len(frame)
            xdp = self.xdp_prog
            if xdp is None or not xdp(frame):                   # ixgbe_run_xdp: XDP_PASS
                self.stack.receive(frame, self.rx_csum and status & _CSUM_MASK == s.RXD_STAT_L4CS)

    # ---- adaptive interrupt moderation (ixgbe_set_itr / ixgbevf_set_itr, dynamic mode) -------
    def set_coalesce(self, rate: int | str) -> None:
        """ixgbe_set_coalesce (ethtool -C rx-usecs): ``off`` (0) interrupts at
        every cause; a rate (interrupts/s) fixes the interval, in EITR's
        2.048 us units as q_vector->itr holds it."""
        self.adaptive = False
        self.itr = 0 if rate == "off" else (1_000_000 // int(rate)) << 2
        self.wr(self.EITR, self.itr & s.EITR_ITR_INT_MASK | s.EITR_CNT_WDIS)

    def _set_itr(self) -> None:
        """At the end of a poll: move EITR if the vector's rate moved."""
        new = next_itr(self.itr, self.itr_range, self.work)
        if new != self.itr:
            self.itr = new
            self.wr(self.EITR, new & s.EITR_ITR_INT_MASK | s.EITR_CNT_WDIS)

