"""What every NIC driver shares: its place in the guest kernel (vCPU, memory,
the IPv4 stack above it, the NAPI and queue state Linux keeps in
``struct net_device`` / ``napi_struct``), MSI-X vector setup and the PCI
side of removal."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from ...mem.guest_memory import PAGE_SIZE
from ...spec.apic import msi_address
from ...spec.pci import (
    PCI_CAP_ID_MSIX, PCI_MSIX_ENTRY_DATA, PCI_MSIX_ENTRY_LOWER_ADDR, PCI_MSIX_ENTRY_SIZE,
    PCI_MSIX_ENTRY_UPPER_ADDR, PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE,
)


class NetDriver:
    VENDOR: int                     # the (vendor, device) ID a driver binds (its id_table)
    DEVICE: int
    REGS: dict[str, int] = {}       # register name -> offset in ``self.bar``, for rd/wr
    standby = False                 # a failover standby (virtio-net with VIRTIO_NET_F_STANDBY)

    def __init__(self, kernel, info) -> None:
        self.kernel = kernel
        self.info = info
        self.vcpu = kernel.vcpu
        self.mem = kernel.mem
        self.buf = kernel.mem.buf
        self.irq = info.irq_line
        self.stack = None
        self.stats = kernel.stats
        self.tx_queue_stopped = False
        self.poll_scheduled = False
        self.napi_disabled = False
        self.vectors: dict[int, int] = {}   # MSI-X table entry -> IDT vector

    def rebind(self, vcpu, mem) -> None:
        """Live migration: the same driver state, on another machine's vCPU and memory."""
        self.vcpu, self.mem, self.buf = vcpu, mem, mem.buf

    def resume(self) -> None:
        """After the switch-over: the device's state came along, nothing to redo."""

    def napi_schedule(self) -> None:
        """napi_schedule: the driver's ``_poll`` runs once the vCPU is free; one at a time."""
        if not self.poll_scheduled:
            self.poll_scheduled = True
            self.kernel.run_soon(self._poll)

    def wake_queue(self) -> None:
        """netif_wake_queue: a stopped queue restarts once descriptors are free."""
        if self.tx_queue_stopped:
            self.tx_queue_stopped = False
            self.stack.tx_wake()

    def rd(self, reg: str) -> int:
        """A 32-bit MMIO register read (it traps or not: the driver can't tell)."""
        return self.vcpu.mmio_read(self.bar + self.REGS[reg], 4)

    def wr(self, reg: str, value: int) -> None:
        self.vcpu.mmio_write(self.bar + self.REGS[reg], 4, value)

    def setup_msix(self, table: int, handlers: list[tuple[int, Callable[[], None]]],
                   affinity: dict[int, int] | None = None) -> dict[int, int]:
        """pci_alloc_irq_vectors: program MSI-X table entries (at guest-physical
        ``table``) with fresh IDT vectors, each message to the vCPU
        ``affinity`` gives its entry (else vCPU 0), then set MSI-X Enable;
        returns {table entry: vector}."""
        cap = self.info.caps.get(PCI_CAP_ID_MSIX)
        if cap is None:
            raise RuntimeError(f"{self.info.bdf}: no MSI-X capability")
        vectors = {}
        for entry, handler in handlers:
            vector = self.kernel.alloc_vector(self.info.bdf)
            at = table + entry * PCI_MSIX_ENTRY_SIZE
            address = msi_address(affinity.get(entry, 0) if affinity else 0)
            for off, value in ((PCI_MSIX_ENTRY_LOWER_ADDR, address), (PCI_MSIX_ENTRY_UPPER_ADDR, 0),
                               (PCI_MSIX_ENTRY_DATA, vector), (PCI_MSIX_ENTRY_VECTOR_CTRL, 0)):
                self.vcpu.mmio_write(at + off, 4, value)
            self.kernel.request_irq(vector, handler)
            vectors[entry] = vector
        pci, bdf = self.kernel.pci, self.info.bdf
        pci.config_write(bdf, cap + PCI_MSIX_FLAGS, 2, pci.config_read(bdf, cap + PCI_MSIX_FLAGS, 2) | PCI_MSIX_FLAGS_ENABLE)
        return vectors

    def remove(self) -> None:
        """How every PCI driver's remove() ends: NAPI disabled (a poll already
        scheduled does not run), then pci_free_irq_vectors, pci_disable_device
        and devres giving back its DMA memory."""
        self.napi_disabled = True
        self.vectors = {}
        self.kernel.pci_release(self.info)

    def dma_alloc(self, size: int, align: int = PAGE_SIZE) -> int:
        """dmam_alloc_coherent: DMA memory given back when the driver detaches."""
        return self.kernel.alloc.alloc(size, align, owner=self.info.bdf)


class DescriptorRings(NetDriver):
    """Intel's descriptor rings, legacy (e1000) and advanced (ixgbe, ixgbevf):
    a TX descriptor is done once the NIC wrote back DD (reclaimed at most
    ``TX_WORK_LIMIT`` a poll); cleaned RX buffers go back to the NIC with a
    tail write (:meth:`_refill`, called every few buffers by the driver's RX
    loop).  A driver sets ``tx_ring``/``tx_use``/``tx_clean`` and ``rx_tail``
    with ``_rdt``, its RDT register's address."""

    TX_RING: ClassVar[int]
    RX_RING: ClassVar[int]
    TX_WORK_LIMIT: ClassVar[int]
    DESC_SIZE: ClassVar[int]
    TX_STATUS_OFF: ClassVar[int]        # of the status byte in a written-back TX descriptor
    TXD_STAT_DD: ClassVar[int]

    def _clean_tx(self) -> None:
        buf, ring, charge, ring_size = self.buf, self.tx_ring + self.TX_STATUS_OFF, self.vcpu.charge, self.TX_RING
        clean, use = self.tx_clean, self.tx_use
        for _ in range(self.TX_WORK_LIMIT):
            if clean == use or not buf[ring + clean * self.DESC_SIZE] & self.TXD_STAT_DD:
                break
            charge("ring_op")
            clean = clean + 1 if clean + 1 < ring_size else 0
        freed = clean != self.tx_clean
        self.tx_clean = clean
        if freed:
            self.wake_queue()

    def _refill(self, n: int) -> None:
        self.rx_tail = (self.rx_tail + n) % self.RX_RING
        self.vcpu.charge("ring_op", n)
        self.vcpu.mmio_write(self._rdt, 4, self.rx_tail)
