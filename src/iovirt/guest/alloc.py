"""The guest kernel's allocator for DMA-able memory (rings, buffers) over
guest RAM above the first 16 MiB: first fit among the extents given back,
else fresh memory above everything ever handed out.

A block taken for a driver is managed (``dmam_alloc_coherent``, devres): the
driver's detach gives back all of its blocks at once.  Memory handed out
again is zeroed first, as ``dma_alloc_coherent`` returns it; fresh memory
has never been written."""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Hashable

from ..mem.guest_memory import PAGE_SIZE


class OutOfGuestMemory(MemoryError):
    pass


class DmaAllocator:
    def __init__(self, mem_size: int, zero: Callable[[int, int], None], base: int = 16 << 20) -> None:
        self.limit = mem_size
        self.base = self.next = base
        self.zero = zero                                    # memset(0) of [gpa, gpa + size)
        self.free_extents: list[tuple[int, int]] = []       # (start, end), sorted, coalesced
        self.owned: dict[Hashable, list[tuple[int, int]]] = {}

    def alloc(self, size: int, align: int = PAGE_SIZE, owner: Hashable | None = None) -> int:
        gpa = start = self._reuse(size, align)
        if gpa is None:
            gpa = (self.next + align - 1) & ~(align - 1)
            if gpa + size > self.limit:
                raise OutOfGuestMemory(f"no room for {size} bytes of guest DMA memory")
            start, self.next = self.next, gpa + size      # the alignment padding goes back with the block
        if owner is not None:
            self.owned.setdefault(owner, []).append((start, gpa + size))
        return gpa

    def release(self, owner: Hashable) -> None:
        """devres_release_all: every block ``owner`` took goes back."""
        for start, end in self.owned.pop(owner, ()):
            self._give_back(start, end)

    def _reuse(self, size: int, align: int) -> int | None:
        for i, (start, end) in enumerate(self.free_extents):
            gpa = (start + align - 1) & ~(align - 1)
            if gpa + size <= end:
                del self.free_extents[i]
                if start < gpa:
                    self.free_extents.insert(i, (start, gpa))
                if gpa + size < end:
                    insort(self.free_extents, (gpa + size, end))
                self.zero(gpa, size)
                return gpa
        return None

    def _give_back(self, start: int, end: int) -> None:
        insort(self.free_extents, (start, end))
        merged: list[tuple[int, int]] = []
        for s, e in self.free_extents:
            if merged and merged[-1][1] >= s:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        self.free_extents = merged
