"""Device access to guest memory.  Every device read or write of guest memory
goes through a :class:`Dma` port: it translates the bus address (identity, or
an IOMMU later), bounds-checks it and charges the copy to whoever performs it
(a CPU thread for a device model, the NIC's DMA engine for real hardware)."""

from __future__ import annotations

from typing import Callable

from ..sim.resource import Resource
from .guest_memory import GuestMemory

# translate(bus_addr, length, is_write) -> guest-physical address, or raise DmaFault
Translate = Callable[[int, int, bool], int]


class DmaFault(Exception):
    """A DMA the platform refused: outside guest memory or not mapped."""

    def __init__(self, addr: int, length: int, reason: str) -> None:
        super().__init__(f"DMA {addr:#x}+{length}: {reason}")
        self.addr = addr
        self.length = length
        self.reason = reason


class Dma:
    __slots__ = ("mem", "event", "translate", "buf", "size")

    def __init__(self, mem: GuestMemory, event: str = "copy", translate: Translate | None = None) -> None:
        self.mem = mem
        self.event = event
        self.translate = translate
        self.buf = mem.buf
        self.size = mem.size

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
        cpu.charge(self.event, nbytes=length)
        return self.buf[gpa : gpa + length]

    def write(self, cpu: Resource, addr: int, data: bytes) -> None:
        length = len(data)
        translate = self.translate
        gpa = translate(addr, length, True) if translate else addr
        if gpa < 0 or gpa + length > self.size:
            raise DmaFault(addr, length, "outside guest memory")
        cpu.charge(self.event, nbytes=length)
        self.buf[gpa : gpa + length] = data
        self.mem.mark_dirty(gpa, length)

    def load(self, cpu: Resource, layout, addr: int) -> tuple:
        """Fetch one record (a descriptor) laid out by a spec ``Layout``."""
        size = layout.size
        translate = self.translate
        gpa = translate(addr, size, False) if translate else addr
        if gpa < 0 or gpa + size > self.size:
            raise DmaFault(addr, size, "outside guest memory")
        cpu.charge(self.event, nbytes=size)
        return layout.unpack_from(self.buf, gpa)

    def store(self, cpu: Resource, st, addr: int, *values) -> None:
        """Write back a record or one field with a precompiled ``struct``."""
        size = st.size
        translate = self.translate
        gpa = translate(addr, size, True) if translate else addr
        if gpa < 0 or gpa + size > self.size:
            raise DmaFault(addr, size, "outside guest memory")
        cpu.charge(self.event, nbytes=size)
        st.pack_into(self.buf, gpa, *values)
        self.mem.mark_dirty(gpa, size)
