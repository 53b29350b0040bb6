"""Guest (or host) driver for the 82599, in the order Linux's ixgbe does things
(drivers/net/ethernet/intel/ixgbe: ixgbe_82599.c reset_hw, ixgbe_main.c
probe/open): stop the adapter, CTRL.RST and wait for it to clear, MAC from
RAR[0] as the NVM loaded it, one TX/RX queue pair per CPU up to 16
(ixgbe_set_rss_queues), MSI-X table through BAR4 (one vector per queue pair,
its message to that pair's CPU as ixgbe's affinity hint places it, then one
for other causes), TX rings with DMATXCTL.TE and TXDCTL.ENABLE, RX rings
with SRRCTL, RSS (the key, a redirection table spreading the queues round
robin, the hash types Linux enables), filters and RXDCTL.ENABLE, IVAR, EITR
per vector, GPIE with auto-mask, EIMS.

TX writes one advanced data descriptor per frame and TDT, on the queue of
the CPU sending (XPS, as ixgbe_configure_tx_ring maps each queue to its
vector's CPU).  A queue vector's interrupt is auto-masked by the device
(GPIE.EIAME); the handler only schedules that queue's NAPI on the CPU it
ran on; the poll cleans TX, receives up to 64 frames, refills RX (RDT every
16 buffers), moves its EITR (adaptive moderation) and re-enables the vector
through EIMS_EX.  The ring handling is shared with the VF driver
(``ixgbe_rings``).  The driver makes no assumption about whether its
register accesses trap.

With VFs enabled on its port (:meth:`enable_vmdq`, what ixgbe_sriov_reinit
does when sriov_numvfs is written) it keeps one queue pair, which moves to
the first of its default pool (the VMDq offset), and addresses the bridge above it serves are
added to the NIC's filters for its pool (:meth:`fdb_add`, ixgbe_ndo_fdb_add).
The VFs' mailboxes are the SR-IOV part's, on the host."""

from __future__ import annotations

from typing import ClassVar

from ...spec import ixgbe as s
from ...spec import ixgbevf as vs
from .ixgbe_rings import (
    ITR_20K,
    RX_RING,
    SRRCTL_ONEBUF,
    TX_RING,
    IxgbeRings,
    ProbeError,
)

__all__ = ["RX_RING", "TX_RING", "IxgbeDriver", "IxgbeProbeError"]

OTHER_EITR = 1950                   # ixgbe_configure_msix: EITR of the other-causes vector
MAX_RSS_INDICES = 16                # IXGBE_MAX_RSS_INDICES: RSS queues of the 82599
IxgbeProbeError = ProbeError
_REGS = {r.name: r.offset for r in (*s.REGS, *vs.PF_REGS)}


class IxgbeQueue(IxgbeRings):
    """A further TX/RX queue pair of the port (RSS): its rings, its MSI-X
    entry (entry n for pair n), its EITR and its NAPI context."""
    REGS: ClassVar[dict[str, int]] = _REGS

    def __init__(self, driver: "IxgbeDriver", q: int) -> None:
        super().__init__(driver.kernel, driver.info)
        self.RX_RING = driver.RX_RING
        self.queue = self.entry = q
        self.EITR = f"EITR{q}"

    def _irq_enable_queues(self) -> None:
        self.wr("EIMS_EX0", 1 << self.entry)                # ixgbe_irq_enable_queues


class IxgbeDriver(IxgbeRings):
    """The port's netdev, and its first queue pair."""
    VENDOR, DEVICE = s.VENDOR_ID, s.DEVICE_ID
    REGS: ClassVar[dict[str, int]] = _REGS

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self._rx_csum = True
        self.pool = 0                       # its VMDq pool, with VFs enabled
        rss = min(len(kernel.vcpus), MAX_RSS_INDICES)       # ixgbe_set_rss_queues
        self.rings: list[IxgbeRings] = [self, *(IxgbeQueue(self, q) for q in range(1, rss))]
        self.other = rss                    # MSI-X entries: TxRx-0 .. TxRx-(n-1), then "other"
        self._probe()

    @property
    def stack(self):
        return self._stack

    @stack.setter
    def stack(self, stack) -> None:
        """The IPv4 stack above the port receives from every queue."""
        self._stack = stack
        for ring in getattr(self, "rings", ())[1:]:
            ring.stack = stack

    @property
    def rx_csum(self) -> bool:
        return self._rx_csum

    @rx_csum.setter
    def rx_csum(self, on: bool) -> None:
        """ethtool -K rx: every queue alike."""
        self._rx_csum = on
        for ring in getattr(self, "rings", ())[1:]:
            ring.rx_csum = on

    def xdp_setup(self, prog) -> None:
        """ixgbe_xdp_setup: ``prog`` runs on every RX queue's frames."""
        for ring in self.rings:
            ring.xdp_prog = prog

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
        self._stop_adapter()
        self.wr("CTRL", self.rd("CTRL") | s.CTRL_RST)
        self.flush()
        self._poll_reg("CTRL", s.CTRL_RST, False, "reset")

    def _stop_adapter(self) -> None:
        """ixgbe_stop_adapter: receiver off, interrupts masked and cleared, queues off."""
        self.wr("RXCTRL", self.rd("RXCTRL") & ~s.RXCTRL_RXEN)
        self.wr("EIMC", 0x7FFFFFFF)
        self.wr("EIMC_EX0", 0xFFFFFFFF)
        self.wr("EIMC_EX1", 0xFFFFFFFF)
        self.rd("EICR")
        for ring in self.rings:
            q = ring.queue
            self.wr(f"TXDCTL{q}", s.TXDCTL_SWFLSH)
            self.wr(f"RXDCTL{q}", self.rd(f"RXDCTL{q}") & ~s.RXDCTL_ENABLE)

    def remove(self) -> None:
        """ixgbe_remove: down, then ixgbe_release_hw_control (CTRL_EXT.DRV_LOAD off)."""
        self._stop_adapter()
        self.wr("CTRL_EXT", self.rd("CTRL_EXT") & ~s.CTRL_EXT_DRV_LOAD)
        for ring in self.rings[1:]:
            ring.napi_disabled = True
        super().remove()

    def _setup_msix(self) -> None:
        """A vector per queue pair, its message to CPU n (ixgbe_alloc_q_vector's
        affinity hint), then the other causes' vector."""
        table = self.info.bars[s.MSIX_BAR][1] + s.MSIX_TABLE_OFFSET
        handlers = [(ring.entry, ring._queue_intr) for ring in self.rings] + [(self.other, self._other_intr)]
        self.vectors = self.setup_msix(table, handlers, {ring.entry: ring.entry for ring in self.rings})
        for ring in self.rings[1:]:
            ring.vectors = self.vectors

    def transmit(self, frame: bytes) -> bool:
        """ixgbe_xmit_frame on the queue XPS gives the sending CPU."""
        cpu = self.kernel.cpu
        ring = self.rings[cpu.index % len(self.rings)]
        ring.vcpu = cpu
        return IxgbeRings.transmit(ring, frame)

    def _configure_tx(self) -> None:
        """ixgbe_configure_tx: DMATXCTL.TE, then each ring and TXDCTL.ENABLE."""
        self.wr("DMATXCTL", self.rd("DMATXCTL") | s.DMATXCTL_TE)
        for ring in self.rings:
            ring._tx_ring_up()

    def _configure_rx(self) -> None:
        """ixgbe_configure_rx: receiver off, CRC strip, RSS, filters, the ring,
        RXDCTL.ENABLE, buffers, receiver on."""
        self.wr("RXCTRL", self.rd("RXCTRL") & ~s.RXCTRL_RXEN)
        self.wr("RDRXCTL", self.rd("RDRXCTL") | s.RDRXCTL_CRCSTRIP)
        self.wr("HLREG0", (self.rd("HLREG0") | s.HLREG0_RXCRCSTRP) & ~s.HLREG0_JUMBOEN)
        self._setup_mrqc()
        self._set_rx_mode()
        for ring in self.rings:
            ring._rx_ring_up(SRRCTL_ONEBUF, 0)
        self.wr("RXCTRL", self.rd("RXCTRL") | s.RXCTRL_RXEN)

    def _setup_mrqc(self) -> None:
        """ixgbe_setup_mrqc: the key (netdev_rss_key_fill's random key; here
        the fixed one the 82599 documents, for repeatable runs), the
        redirection table over the queues round robin (ixgbe_setup_reta:
        entry i to queue i mod n, four 8-bit entries a register) and the hash
        types Linux enables by default (UDP ports only with ethtool -N)."""
        key = s.RSS_DEFAULT_KEY
        for i in range(s.RSS_KEY_SIZE // 4):
            self.wr(f"RSSRK{i}", int.from_bytes(key[4 * i:4 * i + 4], "little"))
        n = len(self.rings)
        for i in range(s.RETA_ENTRIES // 4):
            self.wr(f"RETA{i}", sum((4 * i + j) % n << 8 * j for j in range(4)))
        self.wr("MRQC", s.MRQC_RSSEN | s.MRQC_RSS_FIELD_IPV4 | s.MRQC_RSS_FIELD_IPV4_TCP)
        self.wr("RXCSUM", self.rd("RXCSUM") | s.RXCSUM_PCSD)    # the RSS hash in the write-back

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
        ivar: dict[int, int] = {}           # RX q and TX q: the IVAR of the pair, the half of the queue
        for ring in self.rings:
            q, entry = ring.queue, valid | ring.entry
            ivar[q >> 1] = ivar.get(q >> 1, 0) | (entry | entry << 8) << 16 * (q & 1)
        for reg, value in ivar.items():
            self.wr(f"IVAR{reg}", value)
        for ring in self.rings:
            self.wr(f"EITR{ring.entry}", ITR_20K | s.EITR_CNT_WDIS)
        self.wr("IVAR_MISC", (valid | self.other) << s.IVAR_MISC_OTHER_SHIFT)
        self.wr(f"EITR{self.other}", OTHER_EITR)
        self.wr("EIAC", s.EIMS_ENABLE_MASK & ~(s.EICR_OTHER | s.EICR_MAILBOX | s.EICR_LSC))
        self.wr("GPIE", s.GPIE_MSIX_MODE | s.GPIE_PBA_SUPPORT | s.GPIE_OCD | s.GPIE_EIAME)
        self.wr("EIAM_EX0", 0xFFFFFFFF)
        self.wr("EIAM_EX1", 0xFFFFFFFF)

    def enable_vmdq(self, pool: int) -> None:
        """ixgbe_sriov_reinit, the netdev's side: its queues stop, and come
        up again as the first pair of ``pool`` (the PF's default pool, which
        the SR-IOV part configures); further RSS queues stay off."""
        self._stop_adapter()
        del self.rings[1:]
        self.pool, self.queue = pool, pool * 2
        self._tx_ring_up()
        self._rx_ring_up(SRRCTL_ONEBUF, 0)
        self._configure_msix()
        self.wr("RXCTRL", self.rd("RXCTRL") | s.RXCTRL_RXEN)
        self._up()

    def fdb_add(self, mac: bytes) -> None:
        """ixgbe_ndo_fdb_add (``bridge fdb add MAC dev PF self``): ``mac`` in a
        free receive address register, from the top (the VFs' are at the
        bottom), for our pool only: the NIC's switch then delivers it to us."""
        rar = next(i for i in range(s.RAR_ENTRIES - 1, 0, -1) if not self.rd(f"RAH{i}") & s.RAH_AV)
        self.wr(f"RAL{rar}", int.from_bytes(mac[:4], "little"))
        self.wr(f"RAH{rar}", int.from_bytes(mac[4:], "little") | s.RAH_AV)
        pool = self.pool
        self.wr(f"MPSAR_LO{rar}", 1 << pool if pool < 32 else 0)
        self.wr(f"MPSAR_HI{rar}", 1 << pool - 32 if pool >= 32 else 0)

    def _up(self) -> None:
        """ixgbe_up_complete: clear causes, ixgbe_irq_enable."""
        self.rd("EICR")
        self.wr("EIMS", s.EIMS_ENABLE_MASK & ~s.EICR_RTX_QUEUE)
        self.wr("EIMS_EX0", sum(1 << ring.entry for ring in self.rings))
        self.flush()

    # ---- interrupts ----------------------------------------------------------------
    _irq_enable_queues = IxgbeQueue._irq_enable_queues

    def set_coalesce(self, rate: int | str) -> None:
        """ethtool -C: every queue vector alike."""
        for ring in self.rings:
            IxgbeRings.set_coalesce(ring, rate)

    def _other_intr(self) -> None:
        """ixgbe_msix_other: read the other causes through EICS (not the queue
        bits 15:0), clear them by writing EICR, re-enable."""
        self.vcpu = self.kernel.cpu
        eicr = self.rd("EICS") & 0xFFFF0000
        self.wr("EICR", eicr)
        if eicr & s.EICR_RX_MISS:
            self.stats["ixgbe_rx_missed"] += 1
        self.wr("EIMS", s.EICR_OTHER)
        self.vcpu.eoi(self.vectors[self.other])
