"""Guest-physical memory: one flat anonymous ``mmap`` per VM, so untouched
pages cost no host memory (MAP_NORESERVE: nor any of the overcommit
reserve, so a VM larger than this machine's RAM runs as long as it touches
less), with 4 KiB pages and a dirty bitmap for live
migration's dirty logging."""

from __future__ import annotations

import mmap
from collections.abc import Callable

MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)   # Linux <bits/mman-map-flags-generic.h>; Python 3.13 names it
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


class GuestMemoryError(Exception):
    """An access outside guest-physical memory."""

    def __init__(self, gpa: int, length: int, size: int) -> None:
        super().__init__(f"guest-physical access {gpa:#x}+{length} outside 0..{size:#x}")
        self.gpa = gpa
        self.length = length


class GuestMemory:
    """``size`` bytes, reserved (not touched) at once; MemoryError when the
    host will not reserve them."""

    __slots__ = ("size", "buf", "dirty", "write_fault")

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"guest memory size {size} is not a positive multiple of {PAGE_SIZE}")
        self.size = size
        try:
            self.buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        except OSError as exc:          # ENOMEM: more than the host's overcommit policy lets one process reserve
            error = MemoryError(f"cannot reserve {size >> 20} MiB of guest memory: {exc.strerror}")
            error.reason = exc.strerror
            raise error from None
        self.dirty = bytearray(size >> PAGE_SHIFT)
        self.write_fault: Callable[[int], None] | None = None     # told how many clean pages a store dirties

    def check(self, gpa: int, length: int) -> None:
        if gpa < 0 or length < 0 or gpa + length > self.size:
            raise GuestMemoryError(gpa, length, self.size)

    # NOTE: check() and mark_dirty() inlined in read and write, several calls per frame
    def read(self, gpa: int, length: int) -> bytes:
        if gpa < 0 or length < 0 or gpa + length > self.size:
            raise GuestMemoryError(gpa, length, self.size)
        return self.buf[gpa : gpa + length]

    def write(self, gpa: int, data: bytes) -> None:
        length = len(data)
        end = gpa + length
        if gpa < 0 or end > self.size:
            raise GuestMemoryError(gpa, length, self.size)
        self.buf[gpa:end] = data
        first, last = gpa >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        if self.write_fault is not None and length:
            self.write_fault(self.dirty[first : last + 1].count(0))
        if first == last:
            self.dirty[first] = 1
        elif length:
            self.dirty[first : last + 1] = b"\x01" * (last - first + 1)

    def store(self, st, gpa: int, *values) -> None:
        """Write one record with a precompiled ``struct`` (a CPU store)."""
        end = gpa + st.size
        if gpa < 0 or end > self.size:
            raise GuestMemoryError(gpa, st.size, self.size)
        st.pack_into(self.buf, gpa, *values)
        # NOTE: inlined mark_dirty; records are small, at most two pages.
        first, last = gpa >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        if self.write_fault is not None:
            self.write_fault(self.dirty[first : last + 1].count(0))
        self.dirty[first] = self.dirty[last] = 1

    def mark_dirty(self, gpa: int, length: int) -> None:
        first, last = gpa >> PAGE_SHIFT, (gpa + length - 1) >> PAGE_SHIFT
        if first == last:
            self.dirty[first] = 1
        elif length:
            self.dirty[first : last + 1] = b"\x01" * (last - first + 1)

    def cpu_view(self) -> GuestMemory:
        """The same RAM as the vCPUs write it, with a dirty log of its own:
        the one the CPU keeps (Intel PML), apart from the one the VMM and
        vhost keep for the writes they and the devices make."""
        view = object.__new__(GuestMemory)
        view.size, view.buf, view.dirty, view.write_fault = self.size, self.buf, bytearray(len(self.dirty)), None
        return view

    def take_dirty(self) -> list[int]:
        """Page frame numbers dirtied since the last call; clears the log."""
        pages = [pfn for pfn, d in enumerate(self.dirty) if d]
        self.dirty[:] = bytes(len(self.dirty))
        return pages
