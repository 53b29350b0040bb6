"""Device access to guest memory.  Every device read or write of guest memory
goes through a :class:`Dma` port: it translates the bus address (identity, or
an IOMMU later), bounds-checks it and charges the copy to whoever performs it
(a CPU thread for a device model, the NIC's DMA engine for real hardware).

A device model's read of data its own thread has just written (a frame the
guest's vCPU built, read by the model running on that vCPU) hits that core's
cache: ``copy_hot``.  A real device's ``dma`` is priced by the bytes its
transaction layer packets put on the PCIe link, headers and framing included
(PCIe 3.0 §2.2, §2.3.1.1; Intel AN 690, "Understanding PCI Express
Throughput"): a write goes out in Max_Payload_Size TLPs, a read comes back in
completions split at the root complex's Read Completion Boundary."""

from __future__ import annotations

from typing import Callable

from ..sim.resource import Resource
from .guest_memory import GuestMemory

# translate(bus_addr, length, is_write) -> guest-physical address, or raise DmaFault
Translate = Callable[[int, int, bool], int]

TLP_FRAMING = 8     # STP/END framing symbols 2 + sequence number 2 + LCRC 4 (PCIe 3.0 §3.5.2, §4.2.2)
MWR_HEADER = 16     # 4 DW memory write header: 64-bit addresses (§2.2.4.1)
CPLD_HEADER = 12    # 3 DW completion header (§2.2.9)
MAX_PAYLOAD = 256   # the endpoint's Max_Payload_Size (spec/pci.py PCI_EXP_ENDPOINT_CAP DEVCAP)
RCB = 64            # a root complex's Read Completion Boundary, 64 or 128 B (§2.3.1.1); Intel's is 64


def pcie_bytes(addr: int, length: int, is_write: bool) -> int:
    """What a DMA of ``length`` bytes at bus address ``addr`` puts on the link
    in the direction its data travels (a read's requests travel the other way)."""
    if is_write:
        return length + -(-length // MAX_PAYLOAD) * (MWR_HEADER + TLP_FRAMING)
    return length + ((addr + length - 1) // RCB - addr // RCB + 1) * (CPLD_HEADER + TLP_FRAMING)


class DmaFault(Exception):
    """A DMA the platform refused: outside guest memory or not mapped."""

    def __init__(self, addr: int, length: int, reason: str) -> None:
        super().__init__(f"DMA {addr:#x}+{length}: {reason}")
        self.addr = addr
        self.length = length
        self.reason = reason


class Dma:
    __slots__ = ("mem", "event", "translate", "buf", "size", "hot", "pcie")

    def __init__(self, mem: GuestMemory, event: str = "copy", translate: Translate | None = None,
                 hot: frozenset[Resource] = frozenset()) -> None:
        """``hot``: the threads that write what this port reads (a VM's vCPUs);
        ``event`` ``dma`` is a bus master on PCIe."""
        self.mem = mem
        self.event = event
        self.translate = translate
        self.buf = mem.buf
        self.size = mem.size
        self.hot = hot
        self.pcie = event == "dma"

    def _charge(self, cpu: Resource, addr: int, length: int, is_write: bool) -> None:
        if self.pcie:
            cpu.charge("dma", nbytes=pcie_bytes(addr, length, is_write))
        else:
            cpu.charge("copy_hot" if not is_write and cpu in self.hot else self.event, nbytes=length)

    def gpa(self, addr: int, length: int, is_write: bool) -> int:
        """Translate and bounds-check a bus address without moving data."""
        gpa = self.translate(addr, length, is_write) if self.translate else addr
        if gpa < 0 or gpa + length > self.size:
            raise DmaFault(addr, length, "outside guest memory")
        return gpa

    # NOTE: gpa() inlined below; these run several times per frame.
    def read(self, cpu: Resource, addr: int, length: int) -> bytes:
        translate = self.translate
        gpa = translate(addr, length, False) if translate else addr
        if gpa < 0 or gpa + length > self.size:
            raise DmaFault(addr, length, "outside guest memory")
        self._charge(cpu, addr, length, False)
        return self.buf[gpa : gpa + length]

    def write(self, cpu: Resource, addr: int, data: bytes) -> None:
        length = len(data)
        translate = self.translate
        gpa = translate(addr, length, True) if translate else addr
        if gpa < 0 or gpa + length > self.size:
            raise DmaFault(addr, length, "outside guest memory")
        self._charge(cpu, addr, length, True)
        self.buf[gpa : gpa + length] = data
        self.mem.mark_dirty(gpa, length)

    def load(self, cpu: Resource, layout, addr: int) -> tuple:
        """Fetch one record (a descriptor) laid out by a spec ``Layout``."""
        size = layout.size
        translate = self.translate
        gpa = translate(addr, size, False) if translate else addr
        if gpa < 0 or gpa + size > self.size:
            raise DmaFault(addr, size, "outside guest memory")
        self._charge(cpu, addr, size, False)
        return layout.unpack_from(self.buf, gpa)

    def store(self, cpu: Resource, st, addr: int, *values) -> None:
        """Write back a record or one field with a precompiled ``struct``."""
        size = st.size
        translate = self.translate
        gpa = translate(addr, size, True) if translate else addr
        if gpa < 0 or gpa + size > self.size:
            raise DmaFault(addr, size, "outside guest memory")
        self._charge(cpu, addr, size, True)
        st.pack_into(self.buf, gpa, *values)
        self.mem.mark_dirty(gpa, size)
