"""What every NIC driver shares: its place in the guest kernel (vCPU, memory,
the IPv4 stack above it, the NAPI and queue state Linux keeps in
``struct net_device`` / ``napi_struct``), MSI-X vector setup and the PCI
side of removal."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from ...mem.guest_memory import PAGE_SIZE
from ...net.headers import IP_CHECK, IPPROTO_TCP, TCP_CHECK, pseudo_header_sum
from ...spec.ethernet import ETH_HLEN
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


def wants_csum(stack, frame: bytes) -> bool:
    """A TCP/IPv4 frame whose checksum the stack left to the device
    (CHECKSUM_PARTIAL: it does whenever the device sums TCP)."""
    return getattr(stack, "tx_csum", False) and frame[12:14] == b"\x08\x00" and frame[23] == IPPROTO_TCP


def tso_headers(frame: bytes, zero_len: bool = True) -> tuple[bytes, int, int]:
    """What e1000_tso and ixgbe_tso do to a GSO packet's headers before the
    NIC cuts it: the IPv4 total length (not with ``zero_len`` False, as
    vmxnet3_prepare_tso) and checksum zeroed, the TCP checksum
    seeded with the pseudo-header's sum without the length (the NIC adds
    each segment's); the packet, its IPv4 and TCP header lengths."""
    iplen = (frame[ETH_HLEN] & 0xF) * 4
    l4 = ETH_HLEN + iplen
    l4len = (frame[l4 + 12] >> 4) * 4
    seed = pseudo_header_sum(int.from_bytes(frame[ETH_HLEN + 12:ETH_HLEN + 16], "big"),
                             int.from_bytes(frame[ETH_HLEN + 16:ETH_HLEN + 20], "big"), IPPROTO_TCP, 0) % 0xFFFF
    head = bytearray(frame[:l4 + l4len])
    head[ETH_HLEN + IP_CHECK:ETH_HLEN + IP_CHECK + 2] = b"\0\0"
    if zero_len:
        head[ETH_HLEN + 2:ETH_HLEN + 4] = b"\0\0"
    head[l4 + TCP_CHECK:l4 + TCP_CHECK + 2] = seed.to_bytes(2, "big")
    return bytes(head) + frame[len(head):], iplen, l4len


class DescriptorRings(NetDriver):
    """Intel's descriptor rings, legacy (e1000) and advanced (ixgbe, ixgbevf):
    a TX packet is done once the NIC wrote back DD into its last descriptor
    (reclaimed at most ``TX_WORK_LIMIT`` packets a poll); cleaned RX buffers go back to the NIC with a
    tail write (:meth:`_refill`, called every few buffers by the driver's RX
    loop).  A driver sets ``tx_ring``/``tx_use``/``tx_clean``/``tx_watch``
    and ``rx_tail`` with ``_rdt``, its RDT register's address."""

    TX_RING: ClassVar[int]
    RX_RING: ClassVar[int]
    TX_WORK_LIMIT: ClassVar[int]
    DESC_SIZE: ClassVar[int]
    TX_STATUS_OFF: ClassVar[int]        # of the status byte in a written-back TX descriptor
    TXD_STAT_DD: ClassVar[int]

    def _clean_tx(self) -> None:
        """e1000_clean_tx_irq / ixgbe_clean_tx_irq: a packet's descriptors
        are free once the NIC wrote DD back into its last (next_to_watch, the
        one with RS); ``tx_watch`` holds, per packet in flight, the slot after
        its last descriptor."""
        buf, ring, watch = self.buf, self.tx_ring + self.TX_STATUS_OFF, self.tx_watch
        clean = self.tx_clean
        for _ in range(self.TX_WORK_LIMIT):
            if not watch:
                break
            eop = (watch[0] or self.TX_RING) - 1
            if not buf[ring + eop * self.DESC_SIZE] & self.TXD_STAT_DD:
                break
            self.vcpu.charge("ring_op")
            clean = watch.popleft()
        freed = clean != self.tx_clean
        self.tx_clean = clean
        if freed:
            self.wake_queue()

    def _refill(self, n: int) -> None:
        self.rx_tail = (self.rx_tail + n) % self.RX_RING
        self.vcpu.charge("ring_op", n)
        self.vcpu.mmio_write(self._rdt, 4, self.rx_tail)
