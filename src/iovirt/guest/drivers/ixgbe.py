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
ring handling is shared with the VF driver (``ixgbe_rings``).  The driver
makes no assumption about whether its register accesses trap.

With VFs enabled on its port (:meth:`enable_vmdq`, what ixgbe_sriov_reinit
does when sriov_numvfs is written) its queue pair moves to the first of its
default pool (the VMDq offset), and addresses the bridge above it serves are
added to the NIC's filters for its pool (:meth:`fdb_add`, ixgbe_ndo_fdb_add).
The VFs' mailboxes are the SR-IOV part's, on the host."""

from __future__ import annotations

from typing import ClassVar

from ...spec import ixgbe as s
from ...spec import ixgbevf as vs
from .ixgbe_rings import (
    ITR_20K,
    QUEUE_VECTOR,
    RX_RING,
    SRRCTL_ONEBUF,
    TX_RING,
    IxgbeRings,
    ProbeError,
)

__all__ = ["RX_RING", "TX_RING", "IxgbeDriver", "IxgbeProbeError"]

OTHER_EITR = 1950                   # ixgbe_configure_msix: EITR of the other-causes vector
OTHER_VECTOR = 1                    # MSI-X entries: TxRx-0, then "other"
IxgbeProbeError = ProbeError


class IxgbeDriver(IxgbeRings):
    VENDOR, DEVICE = s.VENDOR_ID, s.DEVICE_ID
    REGS: ClassVar[dict[str, int]] = {r.name: r.offset for r in (*s.REGS, *vs.PF_REGS)}

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.pool = 0                       # its VMDq pool, with VFs enabled
        self._probe()

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
        q = self.queue
        self.wr(f"TXDCTL{q}", s.TXDCTL_SWFLSH)
        self.wr(f"RXDCTL{q}", self.rd(f"RXDCTL{q}") & ~s.RXDCTL_ENABLE)

    def remove(self) -> None:
        """ixgbe_remove: down, then ixgbe_release_hw_control (CTRL_EXT.DRV_LOAD off)."""
        self._stop_adapter()
        self.wr("CTRL_EXT", self.rd("CTRL_EXT") & ~s.CTRL_EXT_DRV_LOAD)
        super().remove()

    def _setup_msix(self) -> None:
        table = self.info.bars[s.MSIX_BAR][1] + s.MSIX_TABLE_OFFSET
        self.vectors = self.setup_msix(table, [(QUEUE_VECTOR, self._queue_intr), (OTHER_VECTOR, self._other_intr)])

    def _configure_tx(self) -> None:
        """ixgbe_configure_tx: DMATXCTL.TE, then the ring and TXDCTL.ENABLE."""
        self.wr("DMATXCTL", self.rd("DMATXCTL") | s.DMATXCTL_TE)
        self._tx_ring_up()

    def _configure_rx(self) -> None:
        """ixgbe_configure_rx: receiver off, CRC strip, RSS, filters, the ring,
        RXDCTL.ENABLE, buffers, receiver on."""
        self.wr("RXCTRL", self.rd("RXCTRL") & ~s.RXCTRL_RXEN)
        self.wr("RDRXCTL", self.rd("RDRXCTL") | s.RDRXCTL_CRCSTRIP)
        self.wr("HLREG0", (self.rd("HLREG0") | s.HLREG0_RXCRCSTRP) & ~s.HLREG0_JUMBOEN)
        self._setup_mrqc()
        self._set_rx_mode()
        self._rx_ring_up(SRRCTL_ONEBUF, 0)
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
        q = self.queue                      # RX q and TX q: the IVAR of the pair, the half of the queue
        self.wr(f"IVAR{q >> 1}", ((valid | QUEUE_VECTOR) | (valid | QUEUE_VECTOR) << 8) << 16 * (q & 1))
        self.wr("EITR0", ITR_20K | s.EITR_CNT_WDIS)
        self.wr("IVAR_MISC", (valid | OTHER_VECTOR) << s.IVAR_MISC_OTHER_SHIFT)
        self.wr("EITR1", OTHER_EITR)
        self.wr("EIAC", s.EIMS_ENABLE_MASK & ~(s.EICR_OTHER | s.EICR_MAILBOX | s.EICR_LSC))
        self.wr("GPIE", s.GPIE_MSIX_MODE | s.GPIE_PBA_SUPPORT | s.GPIE_OCD | s.GPIE_EIAME)
        self.wr("EIAM_EX0", 0xFFFFFFFF)
        self.wr("EIAM_EX1", 0xFFFFFFFF)

    def enable_vmdq(self, pool: int) -> None:
        """ixgbe_sriov_reinit, the netdev's side: its queues stop, and come
        up again as the first pair of ``pool`` (the PF's default pool, which
        the SR-IOV part configures)."""
        self._stop_adapter()
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
        self.wr("EIMS_EX0", 1 << QUEUE_VECTOR)
        self.flush()

    # ---- interrupts ----------------------------------------------------------------
    def _irq_enable_queues(self) -> None:
        self.wr("EIMS_EX0", 1 << QUEUE_VECTOR)               # ixgbe_irq_enable_queues

    def _other_intr(self) -> None:
        """ixgbe_msix_other: read the other causes through EICS (not the queue
        bits 15:0), clear them by writing EICR, re-enable."""
        eicr = self.rd("EICS") & 0xFFFF0000
        self.wr("EICR", eicr)
        if eicr & s.EICR_RX_MISS:
            self.stats["ixgbe_rx_missed"] += 1
        self.wr("EIMS", s.EICR_OTHER)
        self.vcpu.eoi(self.vectors[OTHER_VECTOR])
