"""Guest (or host) driver for the 82599, in the order Linux's ixgbe does things
(drivers/net/ethernet/intel/ixgbe: ixgbe_82599.c reset_hw, ixgbe_main.c
probe/open): stop the adapter, CTRL.RST and wait for it to clear, MAC from
RAR[0] as the NVM loaded it, MSI-X table through BAR4 (one vector for the
TX/RX queue pair, one for other causes), TX ring with DMATXCTL.TE and
TXDCTL.ENABLE, RX ring with SRRCTL, RSS, filters and RXDCTL.ENABLE, IVAR,
EITR, GPIE with auto-mask, EIMS.

TX writes one advanced data descriptor per frame and TDT.  The queue
vector's interrupt is auto-masked by the device (GPIE.EIAME); the handler
only schedules NAPI; the poll cleans TX, receives up to 64 frames, refills
RX (RDT every 16 buffers) and re-enables the vector through EIMS_EX.  The
driver makes no assumption about whether its register accesses trap."""

from __future__ import annotations

from ...spec import ixgbe as s
from .base import NetDriver

R = {r.name: r.offset for r in s.REGS}
TX_RING = 512                       # IXGBE_DEFAULT_TXD
RX_RING = 512                       # IXGBE_DEFAULT_RXD
RX_BUFFER = 2048                    # IXGBE_RXBUFFER_2K
RX_HDR_SIZE = 256                   # IXGBE_RX_HDR_SIZE (BSIZEHDR, unused with one buffer)
RX_BUFFER_WRITE = 16                # IXGBE_RX_BUFFER_WRITE
NAPI_WEIGHT = 64
TX_WORK_LIMIT = 256                 # IXGBE_DEFAULT_TX_WORK
ITR_20K = 200                       # IXGBE_20K_ITR: EITR for 20,000 interrupts/s (50 us)
OTHER_EITR = 1950                   # ixgbe_configure_msix: EITR of the other-causes vector
POLLS = 10                          # CTRL.RST / queue enable polls before giving up
QUEUE_VECTOR, OTHER_VECTOR = 0, 1   # MSI-X entries: TxRx-0, then "other"
TXD_CMD = s.ADVTXD_DTYP_DATA | s.TXD_CMD_DEXT | s.TXD_CMD_IFCS | s.TXD_CMD_EOP | s.TXD_CMD_RS
_TX = s.TX_DESC.struct
_RX = s.RX_DESC.struct
_RX_WB_UNPACK = s.RX_WB.unpack_from
_TX_STATUS_OFF = s.TX_WB.offset("status")


class IxgbeProbeError(RuntimeError):
    pass


class IxgbeDriver(NetDriver):
    VENDOR, DEVICE = s.VENDOR_ID, s.DEVICE_ID
    REGS = R

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.bar = info.bars[0][1]
        self._probe()

    # ---- register access --------------------------------------------------
    def flush(self) -> None:
        self.rd("STATUS")                   # IXGBE_WRITE_FLUSH()

    def _poll_reg(self, reg: str, bit: int, want: bool, what: str) -> None:
        for _ in range(POLLS):
            if bool(self.rd(reg) & bit) == want:
                return
        raise IxgbeProbeError(f"ixgbe {self.info.bdf}: {what} timed out")

    # ---- probe / open ------------------------------------------------------------
    def _probe(self) -> None:
        self._reset_hw()
        self.mac = (self.rd("RAL0") | (self.rd("RAH0") & 0xFFFF) << 32).to_bytes(6, "little")
        if self.mac[0] & 1 or not any(self.mac):
            raise IxgbeProbeError(f"ixgbe {self.info.bdf}: invalid MAC address {self.mac.hex(':')}")
        self.wr("CTRL_EXT", self.rd("CTRL_EXT") | s.CTRL_EXT_DRV_LOAD)     # ixgbe_get_hw_control
        self._setup_msix()
        self._configure_tx()
        self._configure_rx()
        self._configure_msix()
        self._up()

    def _reset_hw(self) -> None:
        """ixgbe_stop_adapter, then CTRL.RST (self-clearing)."""
        self.wr("RXCTRL", self.rd("RXCTRL") & ~s.RXCTRL_RXEN)
        self.wr("EIMC", 0x7FFFFFFF)
        self.wr("EIMC_EX0", 0xFFFFFFFF)
        self.wr("EIMC_EX1", 0xFFFFFFFF)
        self.rd("EICR")
        self.wr("TXDCTL0", s.TXDCTL_SWFLSH)
        self.wr("RXDCTL0", self.rd("RXDCTL0") & ~s.RXDCTL_ENABLE)
        self.wr("CTRL", self.rd("CTRL") | s.CTRL_RST)
        self.flush()
        self._poll_reg("CTRL", s.CTRL_RST, False, "reset")

    def _setup_msix(self) -> None:
        table = self.info.bars[s.MSIX_BAR][1] + s.MSIX_TABLE_OFFSET
        self.vectors = self.setup_msix(table, [(QUEUE_VECTOR, self._queue_intr), (OTHER_VECTOR, self._other_intr)])

    def _configure_tx(self) -> None:
        """ixgbe_configure_tx: DMATXCTL.TE, then the ring and TXDCTL.ENABLE."""
        alloc = self.kernel.alloc
        self.tx_ring = alloc.alloc(TX_RING * s.DESC_SIZE, 128)
        self.tx_bufs = [alloc.alloc(RX_BUFFER, 64) for _ in range(TX_RING)]
        self.tx_use = self.tx_clean = 0
        self.wr("DMATXCTL", self.rd("DMATXCTL") | s.DMATXCTL_TE)
        self.wr("TXDCTL0", 0)
        self.flush()
        self.wr("TDBAL0", self.tx_ring & 0xFFFFFFFF)
        self.wr("TDBAH0", self.tx_ring >> 32)
        self.wr("TDLEN0", TX_RING * s.DESC_SIZE)
        self.wr("TDH0", 0)
        self.wr("TDT0", 0)
        self.wr("TXDCTL0", 1 << s.TXDCTL_WTHRESH_SHIFT | s.TXDCTL_ENABLE)
        self._poll_reg("TXDCTL0", s.TXDCTL_ENABLE, True, "TX queue 0 enable")

    def _configure_rx(self) -> None:
        """ixgbe_configure_rx: receiver off, CRC strip, RSS, filters, the ring,
        RXDCTL.ENABLE, buffers, receiver on."""
        self.wr("RXCTRL", self.rd("RXCTRL") & ~s.RXCTRL_RXEN)
        self.wr("RDRXCTL", self.rd("RDRXCTL") | s.RDRXCTL_CRCSTRIP)
        self.wr("HLREG0", (self.rd("HLREG0") | s.HLREG0_RXCRCSTRP) & ~s.HLREG0_JUMBOEN)
        self._setup_mrqc()
        self._set_rx_mode()
        alloc = self.kernel.alloc
        self.rx_ring = alloc.alloc(RX_RING * s.DESC_SIZE, 128)
        self.rx_bufs = [alloc.alloc(RX_BUFFER, 64) for _ in range(RX_RING)]
        self.rx_clean = 0
        self.rx_partial: list[bytes] = []
        self.wr("RXDCTL0", self.rd("RXDCTL0") & ~s.RXDCTL_ENABLE)
        self._poll_reg("RXDCTL0", s.RXDCTL_ENABLE, False, "RX queue 0 disable")
        self.wr("RDBAL0", self.rx_ring & 0xFFFFFFFF)
        self.wr("RDBAH0", self.rx_ring >> 32)
        self.wr("RDLEN0", RX_RING * s.DESC_SIZE)
        self.wr("RDH0", 0)
        self.wr("RDT0", 0)
        self.wr("SRRCTL0", (RX_HDR_SIZE >> 6) << s.SRRCTL_BSIZEHDR_SHIFT
                | RX_BUFFER >> s.SRRCTL_BSIZEPKT_SHIFT | s.SRRCTL_DESCTYPE_ADV_ONEBUF)
        self.wr("RXDCTL0", self.rd("RXDCTL0") | s.RXDCTL_ENABLE)
        self._poll_reg("RXDCTL0", s.RXDCTL_ENABLE, True, "RX queue 0 enable")
        for i, buf in enumerate(self.rx_bufs):
            self.mem.store(_RX, self.rx_ring + i * s.DESC_SIZE, buf, 0)
        self.rx_tail = RX_RING - 1          # ixgbe_desc_unused: one slot stays empty
        self.wr("RDT0", self.rx_tail)
        self.wr("RXCTRL", self.rd("RXCTRL") | s.RXCTRL_RXEN)

    def _setup_mrqc(self) -> None:
        """ixgbe_setup_mrqc: key, a redirection table over our one queue, and
        the hash types Linux enables by default."""
        key = s.RSS_DEFAULT_KEY
        for i in range(s.RSS_KEY_SIZE // 4):
            self.wr(f"RSSRK{i}", int.from_bytes(key[4 * i:4 * i + 4], "little"))
        for i in range(s.RETA_ENTRIES // 4):
            self.wr(f"RETA{i}", 0)
        self.wr("MRQC", s.MRQC_RSSEN | s.MRQC_RSS_FIELD_IPV4 | s.MRQC_RSS_FIELD_IPV4_TCP)

    def _set_rx_mode(self) -> None:
        """ixgbe_init_rx_addrs + ixgbe_set_rx_mode: RAR[0], empty MTA, broadcast."""
        self.wr("RAL0", int.from_bytes(self.mac[:4], "little"))
        self.wr("RAH0", int.from_bytes(self.mac[4:], "little") | s.RAH_AV)
        for i in range(128):
            self.wr(f"MTA{i}", 0)
        self.wr("MCSTCTRL", s.MCSTCTRL_MFE)
        fctrl = self.rd("FCTRL") & ~(s.FCTRL_UPE | s.FCTRL_MPE)
        self.wr("FCTRL", fctrl | s.FCTRL_BAM | s.FCTRL_DPF | s.FCTRL_PMCF)


    def set_promiscuous(self) -> None:
        """ixgbe_set_rx_mode with IFF_PROMISC, as a bridge port wants (FCTRL.UPE, MPE)."""
        self.wr("FCTRL", self.rd("FCTRL") | s.FCTRL_UPE | s.FCTRL_MPE)
    def _configure_msix(self) -> None:
        """ixgbe_configure_msix + ixgbe_setup_gpie: IVAR, EITR, auto-clear, auto-mask."""
        valid = s.IVAR_ALLOC_VAL
        self.wr("IVAR0", (valid | QUEUE_VECTOR) | (valid | QUEUE_VECTOR) << 8)     # RX 0 and TX 0
        self.wr("EITR0", ITR_20K | s.EITR_CNT_WDIS)
        self.wr("IVAR_MISC", (valid | OTHER_VECTOR) << s.IVAR_MISC_OTHER_SHIFT)
        self.wr("EITR1", OTHER_EITR)
        self.wr("EIAC", s.EIMS_ENABLE_MASK & ~(s.EICR_OTHER | s.EICR_MAILBOX | s.EICR_LSC))
        self.wr("GPIE", s.GPIE_MSIX_MODE | s.GPIE_PBA_SUPPORT | s.GPIE_OCD | s.GPIE_EIAME)
        self.wr("EIAM_EX0", 0xFFFFFFFF)
        self.wr("EIAM_EX1", 0xFFFFFFFF)

    def _up(self) -> None:
        """ixgbe_up_complete: clear causes, ixgbe_irq_enable."""
        self.rd("EICR")
        self.wr("EIMS", s.EIMS_ENABLE_MASK & ~s.EICR_RTX_QUEUE)
        self.wr("EIMS_EX0", 1 << QUEUE_VECTOR)
        self.flush()

    # ---- transmit ------------------------------------------------------------------
    def transmit(self, frame: bytes) -> bool:
        """ixgbe_xmit_frame_ring: one data descriptor, then TDT."""
        use = self.tx_use
        nxt = use + 1 if use + 1 < TX_RING else 0
        if nxt == self.tx_clean:
            self.tx_queue_stopped = True                     # netif_stop_subqueue
            return False
        buf = self.tx_bufs[use]
        self.mem.write(buf, frame)
        self.vcpu.charge("ring_op")
        size = len(frame)
        self.mem.store(_TX, self.tx_ring + use * s.DESC_SIZE, buf, TXD_CMD | size, size << s.ADVTXD_PAYLEN_SHIFT)
        self.tx_use = nxt
        self.wr("TDT0", nxt)
        return True

    # ---- interrupts and NAPI ----------------------------------------------------
    def _queue_intr(self) -> None:
        """ixgbe_msix_clean_rings: the vector is already masked (EIAM)."""
        self.vcpu.eoi(self.vectors[QUEUE_VECTOR])
        if not self.poll_scheduled:
            self.poll_scheduled = True
            self.kernel.run_soon(self._poll)

    def _other_intr(self) -> None:
        """ixgbe_msix_other: read the other causes through EICS (not the queue
        bits 15:0), clear them by writing EICR, re-enable."""
        eicr = self.rd("EICS") & 0xFFFF0000
        self.wr("EICR", eicr)
        if eicr & s.EICR_RX_MISS:
            self.stats["ixgbe_rx_missed"] += 1
        self.wr("EIMS", s.EICR_OTHER)
        self.vcpu.eoi(self.vectors[OTHER_VECTOR])

    def _poll(self) -> None:
        """ixgbe_poll."""
        self.poll_scheduled = False
        self._clean_tx()
        if self._clean_rx() < NAPI_WEIGHT:
            self.wr("EIMS_EX0", 1 << QUEUE_VECTOR)           # napi_complete_done + ixgbe_irq_enable_queues
        else:
            self.poll_scheduled = True
            self.kernel.run_soon(self._poll)

    def _clean_tx(self) -> None:
        buf, ring, charge = self.buf, self.tx_ring, self.vcpu.charge
        clean, use = self.tx_clean, self.tx_use
        for _ in range(TX_WORK_LIMIT):
            if clean == use or not buf[ring + clean * s.DESC_SIZE + _TX_STATUS_OFF] & s.TXD_STAT_DD:
                break
            charge("ring_op")
            clean = clean + 1 if clean + 1 < TX_RING else 0
        freed = clean != self.tx_clean
        self.tx_clean = clean
        if freed and self.tx_queue_stopped:
            self.tx_queue_stopped = False                    # netif_wake_subqueue
            self.stack.tx_wake()

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
            self.rx_clean = i + 1 if i + 1 < RX_RING else 0
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
            self.stack.receive(parts[0] if len(parts) == 1 else b"".join(parts))

    def _refill(self, n: int) -> None:
        self.rx_tail = (self.rx_tail + n) % RX_RING
        self.vcpu.charge("ring_op", n)
        self.wr("RDT0", self.rx_tail)
