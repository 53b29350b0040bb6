"""The guest kernel's allocator for DMA-able memory (rings, buffers): a bump
allocator over guest RAM above the first 16 MiB."""

from __future__ import annotations

from ..mem.guest_memory import PAGE_SIZE


class OutOfGuestMemory(MemoryError):
    pass


class DmaAllocator:
    def __init__(self, mem_size: int, base: int = 16 << 20) -> None:
        self.limit = mem_size
        self.next = base

    def alloc(self, size: int, align: int = PAGE_SIZE) -> int:
        gpa = (self.next + align - 1) & ~(align - 1)
        if gpa + size > self.limit:
            raise OutOfGuestMemory(f"no room for {size} bytes of guest DMA memory")
        self.next = gpa + size
        return gpa
