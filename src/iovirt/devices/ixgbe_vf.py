"""A Virtual Function of the 82599 (82599 datasheet 7.10, 8.3; 82599 VF
registers per the ixgbevf layout in ``spec.ixgbevf``).

:class:`VirtualFunction` is one VF: its own PCI function (8086:10ED, BAR0
16 KiB, MSI-X with 3 vectors in BAR3), its own DMA requester (``dma``: its
IOMMU translator), its own interrupt block (VTEICR/VTEIMS/VTIVAR/VTEITR)
signalled through ``msi(engine, vector)``, and a register file whose queue
registers are the PF's physical queues of its pool; its mailbox is the
port's (:class:`~iovirt.devices.ixgbe_switch.SriovEngine`).
"""

from __future__ import annotations

from collections import Counter

from ..mem.dma import Dma
from ..pci.function import Bar, PciFunction
from ..sim.resource import Resource
from ..spec import ixgbe as s
from ..spec import ixgbevf as vs
from ..spec.ethernet import ETH_FCS_LEN as _FCS
from ..spec.pci import PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT
from .ixgbe import DCTL, RX, SRRCTL, TX, Msi
from .ixgbe_switch import OFF, SriovEngine, bits
from .regs import add64, narrow, widen
from .registry import ASSIGNERS, DeviceEntry
from .vmstate import ASSIGNED_DEVICE

_V = {r.name: r.offset >> 2 for r in vs.REGS}
VFCTRL, VFSTATUS, VFLINKS, VFMAILBOX, VFMBMEM0 = (_V[n] for n in ("VFCTRL", "VFSTATUS", "VFLINKS", "VFMAILBOX",
                                                                  "VFMBMEM0"))
VTEICR, VTEICS, VTEIMS, VTEIMC, VTEIAC, VTEIAM = (_V[n] for n in ("VTEICR", "VTEICS", "VTEIMS", "VTEIMC",
                                                                  "VTEIAC", "VTEIAM"))
VTIVAR0, VTIVAR_MISC, VTEITR0 = _V["VTIVAR0"], _V["VTIVAR_MISC"], _V["VTEITR0"]
VFGPRC, VFGORC, VFMPRC, VFGPTC, VFGOTC = (_V[n] for n in ("VFGPRC", "VFGORC_LSB", "VFMPRC", "VFGPTC", "VFGOTC_LSB"))
_PLAIN = frozenset([VTEIAC, VTEIAM, VTIVAR0, VTIVAR_MISC, *range(VTEITR0, VTEITR0 + vs.MSIX_VECTORS)])
_RO = frozenset(r.offset >> 2 for r in vs.REGS if r.access == "ro") - {VFSTATUS, VFLINKS}
_MBMEM = range(VFMBMEM0, VFMBMEM0 + vs.MAILBOX_SIZE)
_STATUS, _LINKS = s.REGS["STATUS"].offset, s.REGS["LINKS"].offset


class VirtualFunction:
    """VF ``index`` of ``sriov``'s port, its DMA through ``dma``."""

    NAME = "ixgbevf"
    VMSTATE = None
    MIGRATION_BLOCKER = ASSIGNED_DEVICE

    def __init__(self, sriov: SriovEngine, index: int, dma: Dma) -> None:
        if not 0 <= index < sriov.num_vfs:
            raise ValueError(f"ixgbevf: VF {index} not in [0, {sriov.num_vfs})")
        self.sriov = sriov
        self.pf = pf = sriov.pf
        self.sim = pf.sim
        self.engine = pf.engine
        self.index = index
        self.dma = dma
        self.msi: Msi | None = None
        self.errors: Counter[str] = Counter()
        self.place = self.NAME                  # where its drops are counted (the wiring names it)
        self.queues = range(index * vs.QUEUES, (index + 1) * vs.QUEUES)
        self.pci = PciFunction(vs.VENDOR_ID, vs.DEVICE_ID, vs.CLASS_ETHERNET, revision=vs.REVISION,
                               subsystem_vendor_id=s.VENDOR_ID, subsystem_id=s.SUBSYSTEM_ID, interrupt_pin=0,
                               bars=(Bar(0, vs.BAR0_SIZE, "mem64", True),
                                     Bar(vs.MSIX_BAR, vs.MSIX_BAR_SIZE, "mem64", True)))
        self.pci.add_msix(vs.MSIX_BAR, vs.MSIX_TABLE_OFFSET, vs.MSIX_BAR, vs.MSIX_PBA_OFFSET, vs.MSIX_VECTORS)
        self.pci.add_pcie_endpoint()
        self._qmap = {_V[name]: OFF[f"{pf_name}{self.queues[i]}"]
                      for name, (pf_name, i) in vs.QUEUE_REGS.items()}
        self._srrctl = {_V[f"VFSRRCTL{i}"]: q for i, q in enumerate(self.queues)}
        self.mbmem = vs.pfmbmem(index) >> 2
        self._read = {VFCTRL: lambda cpu: 0, VFSTATUS: lambda cpu: pf.mmio_read(cpu, _STATUS, 4),
                      VFLINKS: lambda cpu: pf.mmio_read(cpu, _LINKS, 4), VTEICR: self._r_eicr,
                      VTEIMS: lambda cpu: self.mask, VFMAILBOX: self._r_mailbox}
        self._write = {VFCTRL: self._w_ctrl, VTEICR: self._w_eicr, VTEICS: self._w_eics, VTEIMS: self._w_eims,
                       VTEIMC: self._w_eimc, VFMAILBOX: self._w_mailbox}
        self.r = [0] * (vs.BAR0_SIZE >> 2)
        self.epoch = 0
        self._reset_interrupts()
        sriov.attach(self)

    # ---- register access ------------------------------------------------------------------
    def bar_handlers(self, index: int):
        return (self.mmio_read, self.mmio_write) if index == 0 else (self.msix_read, self.msix_write)

    def msix_read(self, cpu: Resource, offset: int, size: int) -> int:
        return self.pci.msix.read(vs.MSIX_BAR, offset, size)

    def msix_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        self.pci.msix.write(vs.MSIX_BAR, offset, size, value)

    def mmio_read(self, cpu: Resource, offset: int, size: int) -> int:
        idx = offset >> 2
        pf_offset = self._qmap.get(idx)
        if pf_offset is not None:
            return self.pf.mmio_read(cpu, pf_offset | offset & 3, size)
        reader = self._read.get(idx)
        if reader is not None:
            value = reader(cpu)
        elif idx in _MBMEM:
            value = self.pf.r[self.mbmem + idx - VFMBMEM0]
        elif idx in _PLAIN or idx in _RO:
            value = self.r[idx]
        else:
            return 0
        return narrow(value, offset, size)

    def mmio_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        idx = offset >> 2
        pf_offset = self._qmap.get(idx)
        if pf_offset is not None:
            self.pf.mmio_write(cpu, pf_offset | offset & 3, size, value)
            q = self._srrctl.get(idx)
            if q is not None and self.sriov.qde >> q & 1:
                self.pf.r[RX[q] + SRRCTL] |= s.SRRCTL_DROP_EN
            return
        writer = self._write.get(idx)
        if writer is not None:
            writer(cpu, widen(0, value, offset, size))
        elif idx in _MBMEM:
            at = self.mbmem + idx - VFMBMEM0
            self.pf.r[at] = widen(self.pf.r[at], value, offset, size)
        elif idx in _PLAIN:
            self.r[idx] = widen(self.r[idx], value, offset, size)

    def _r_mailbox(self, cpu: Resource) -> int:
        return self.sriov.vf_mailbox_read(self.index, cpu)

    def _w_mailbox(self, cpu: Resource, value: int) -> None:
        self.sriov.vf_mailbox_write(self.index, cpu, value)

    def _w_ctrl(self, cpu: Resource, value: int) -> None:
        """VFCTRL.RST (self-clearing): the VF's queues stop, its interrupt
        registers and mailbox ownership are reset."""
        if not value & s.CTRL_RST:
            return
        pf_r = self.pf.r
        for q in self.queues:
            pf_r[RX[q] + DCTL] &= ~s.RXDCTL_ENABLE
            pf_r[TX[q] + DCTL] &= ~s.TXDCTL_ENABLE
        for idx in _PLAIN:
            self.r[idx] = 0
        self._reset_interrupts()
        self.sriov.vf_reset(self.index)

    # ---- interrupts (7.3 as the VF has them: MSI-X only, 3 vectors) ------------------------
    def _reset_interrupts(self) -> None:
        self.epoch += 1
        self.cause = self.mask = 0
        self.next_irq = [0.0] * vs.MSIX_VECTORS
        self.armed: set[int] = set()

    def _r_eicr(self, cpu: Resource) -> int:
        value, self.cause = self.cause, 0
        return value

    def _w_eicr(self, cpu: Resource, value: int) -> None:
        self.cause &= ~value

    def _w_eics(self, cpu: Resource, value: int) -> None:
        self.cause |= value & vs.VTEICR_MASK
        self._fire_pending(cpu)

    def _w_eims(self, cpu: Resource, value: int) -> None:
        self.mask |= value & vs.VTEICR_MASK
        self._fire_pending(cpu)

    def _w_eimc(self, cpu: Resource, value: int) -> None:
        self.mask &= ~value

    def _fire_pending(self, cpu: Resource) -> None:
        ready = self.cause & self.mask
        if ready:
            engine = self.engine
            engine.sync(cpu.cursor)
            for vector in bits(ready):
                self._fire(engine, vector)

    def queue_irq(self, engine: Resource, q: int, tx: int) -> None:
        """A cause of PF queue ``q`` (one of ours), routed by VTIVAR."""
        self._cause(engine, self.r[VTIVAR0] >> (16 * (q - self.queues[0]) + 8 * tx) & 0xFF)

    def mailbox_irq(self, cpu: Resource) -> None:
        """The PF posted to our mailbox: the cause VTIVAR_MISC routes."""
        engine = self.engine
        engine.sync(cpu.cursor)
        self._cause(engine, self.r[VTIVAR_MISC] & 0xFF)

    def _cause(self, engine: Resource, ivar: int) -> None:
        vector = ivar & vs.VTIVAR_VECTOR_MASK
        if ivar & s.IVAR_ALLOC_VAL and vector < vs.MSIX_VECTORS:
            self.cause |= 1 << vector
            if self.mask >> vector & 1:
                self._fire(engine, vector)

    def _fire(self, engine: Resource, vector: int) -> None:
        """VTEITR: at most one message per interval; then VTEIAC auto-clears
        the cause and VTEIAM auto-masks the vector."""
        now = engine.cursor
        if now < self.next_irq[vector]:
            if vector not in self.armed:
                self.armed.add(vector)
                self.sim.at(self.next_irq[vector], self._eitr_expired, vector, self.epoch)
            return
        r = self.r
        self.next_irq[vector] = now + ((r[VTEITR0 + vector] & s.EITR_ITR_INT_MASK) >> 3) * s.EITR_UNIT_NS
        bit = 1 << vector
        if r[VTEIAC] & bit:
            self.cause &= ~bit
        if r[VTEIAM] & bit:
            self.mask &= ~bit
        if self.msi is not None:
            self.msi(engine, vector)

    def _eitr_expired(self, vector: int, epoch: int) -> None:
        if epoch != self.epoch:
            return
        self.armed.discard(vector)
        if (self.cause & self.mask) >> vector & 1:
            engine = self.engine
            engine.sync(self.sim.now)
            self._fire(engine, vector)

    # ---- what the PF's queue engine reports for our queues ---------------------------------
    def dma_fault(self, what: str) -> None:
        """Our request got no completion: our function's STATUS, not the PF's."""
        self.errors[what] += 1
        self.pci.config.set_bits(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT, True)

    def count_tx(self, size: int) -> None:
        r = self.r
        r[VFGPTC] = (r[VFGPTC] + 1) & 0xFFFFFFFF
        add64(r, VFGOTC, size + _FCS)

    def count_rx(self, frame: bytes) -> None:
        r = self.r
        r[VFGPRC] = (r[VFGPRC] + 1) & 0xFFFFFFFF
        add64(r, VFGORC, len(frame) + _FCS)
        if frame[0] & 1:
            r[VFMPRC] = (r[VFMPRC] + 1) & 0xFFFFFFFF


DEVICE = DeviceEntry(VirtualFunction, "sriov", "Intel 82599 SR-IOV virtual function", ASSIGNERS, "ixgbevf",
                     (vs.VENDOR_ID, vs.DEVICE_ID), offloads=("rx-checksum", "tx-checksum-ipv4", "tx-tcp-segmentation"))
