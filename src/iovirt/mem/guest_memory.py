"""Guest-physical memory: one flat anonymous ``mmap`` per VM, so untouched
pages cost no host memory (MAP_NORESERVE: nor any of the overcommit
reserve, so a VM larger than this machine's RAM runs as long as it touches
less), with 4 KiB pages and a dirty bitmap for live migration's dirty
logging.  Many pages loaded alike in many VMs (a booted system's image) are
held once by the host and shared copy-on-write, as KSM merges identical
pages (Linux Documentation/admin-guide/mm/ksm.rst)."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections import OrderedDict
from collections.abc import Callable

MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)   # Linux <bits/mman-map-flags-generic.h>; Python 3.13 names it
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MERGE_PAGES = 512           # loads of at least 2 MiB are merged across VMs
MERGED_IMAGES = 8           # distinct merged images kept for the next VM that loads one
MAP_FIXED = 0x10            # Linux <asm-generic/mman-common.h>


class _Merged:
    """Each distinct image once, in a memfd; a VM that loads it maps the file
    MAP_PRIVATE | MAP_FIXED over its own pages, so it reads the shared pages
    and its first store to one copies it (the pages were fresh: nothing of
    the VM's own is lost under them)."""

    def __init__(self) -> None:
        self.files: OrderedDict[tuple, int] = OrderedDict()
        self.libc_mmap = None
        if sys.platform.startswith("linux") and hasattr(os, "memfd_create"):
            try:
                self.libc_mmap = ctypes.CDLL(None, use_errno=True).mmap
            except (OSError, AttributeError):
                return
            self.libc_mmap.restype = ctypes.c_void_p
            self.libc_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                       ctypes.c_long)

    def load(self, buf: mmap.mmap, gpa: int, heads: bytes, size: int) -> bool:
        """Map the pages ``heads`` make at ``gpa`` into ``buf``; False where the host cannot."""
        if self.libc_mmap is None:
            return False
        length = len(heads) // size * PAGE_SIZE
        key = (gpa, size, heads)
        fd = self.files.get(key)
        if fd is None:
            try:
                fd = os.memfd_create("iovirt-merged", 0)
            except OSError:                     # no memfd here (a sandbox): each VM writes its own
                return False
            os.ftruncate(fd, length)
            with mmap.mmap(fd, length) as image:
                for column in range(size):
                    image[column::PAGE_SIZE] = heads[column::size]
            self.files[key] = fd
            if len(self.files) > MERGED_IMAGES:
                os.close(self.files.popitem(last=False)[1])     # its mappings keep the file
        self.files.move_to_end(key)
        anchor = ctypes.c_char.from_buffer(buf)
        at = ctypes.addressof(anchor) + gpa
        del anchor
        done = self.libc_mmap(at, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | MAP_FIXED, fd, 0)
        if done != at:
            raise MemoryError(f"cannot map {length >> 20} MiB of merged pages: {os.strerror(ctypes.get_errno())}")
        return True


_MERGED = _Merged()


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

    def stamp_pages(self, gpa: int, heads: bytes, size: int) -> None:
        """Write ``size`` bytes at the start of each page from ``gpa`` on (page
        aligned), the i-th page's from ``heads[i * size:(i + 1) * size]``,
        over pages never written (a loader's): one strided write per byte
        column, or, from MERGE_PAGES up, the merged copy of those pages."""
        if not 0 < size <= PAGE_SIZE or len(heads) % size:
            raise ValueError(f"{len(heads)} bytes are not whole heads of {size} (at most a page)")
        if not heads:
            return
        end = gpa + (len(heads) // size - 1) * PAGE_SIZE + size
        if gpa < 0 or gpa % PAGE_SIZE or end > self.size:
            raise GuestMemoryError(gpa, end - gpa, self.size)
        if len(heads) // size < MERGE_PAGES or not _MERGED.load(self.buf, gpa, heads, size):
            for column in range(size):
                self.buf[gpa + column:end:PAGE_SIZE] = heads[column::size]
        if self.write_fault is not None:
            self.write_fault(self.dirty[gpa >> PAGE_SHIFT:(end - 1 >> PAGE_SHIFT) + 1].count(0))
        self.mark_dirty(gpa, end - gpa)

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
