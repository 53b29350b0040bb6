"""Guest memory and DMA: bounds, dirty logging, faults instead of stray writes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovirt.guest.alloc import DmaAllocator, OutOfGuestMemory
from iovirt.mem.dma import Dma, DmaFault
from iovirt.mem.guest_memory import PAGE_SIZE, GuestMemory, GuestMemoryError
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource

SIZE = 64 * PAGE_SIZE


def test_untouched_guest_memory_reads_zero_and_is_clean():
    """Fresh guest memory reads as zeros and has no dirty pages."""
    mem = GuestMemory(SIZE)
    assert mem.read(0, 16) == bytes(16) and mem.take_dirty() == []


def test_writes_dirty_exactly_the_pages_they_touch():
    """A write spanning a page boundary dirties both pages; take_dirty clears the log."""
    mem = GuestMemory(SIZE)
    mem.write(3 * PAGE_SIZE - 2, b"abcd")
    mem.write(10 * PAGE_SIZE, b"x")
    assert mem.take_dirty() == [2, 3, 10]
    assert mem.take_dirty() == []


@pytest.mark.parametrize("gpa, length", [(-1, 1), (SIZE, 1), (SIZE - 1, 2), (2**64, 4)])
def test_access_outside_memory_raises(gpa, length):
    """Reads and writes outside guest memory are refused."""
    mem = GuestMemory(SIZE)
    with pytest.raises(GuestMemoryError):
        mem.read(gpa, length)
    with pytest.raises(GuestMemoryError):
        mem.write(gpa, bytes(length))


@given(st.integers(-2 * SIZE, 2 * SIZE), st.integers(0, 3 * PAGE_SIZE))
def test_dma_outside_memory_faults_and_charges_nothing(addr, length):
    """A device DMA is either inside guest memory or a DmaFault that charged and wrote nothing."""
    mem = GuestMemory(SIZE)
    cpu = Resource("dev", "host_thread", Ledger(load_profile("default")))
    dma = Dma(mem, "copy")
    inside = 0 <= addr and addr + length <= SIZE
    try:
        dma.write(cpu, addr, b"\xaa" * length)
    except DmaFault:
        assert not inside and cpu.busy_ns == 0 and mem.take_dirty() == []
    else:
        assert inside and mem.read(addr, length) == b"\xaa" * length


def test_dma_goes_through_the_translation_hook():
    """With a translation hook the device's bus address is remapped, and a refusal is a fault."""
    mem = GuestMemory(SIZE)
    cpu = Resource("dev", "host_thread", Ledger(load_profile("default")))

    def iommu(addr: int, length: int, is_write: bool) -> int:
        if addr >= 0x1000:
            raise DmaFault(addr, length, "not mapped")
        return addr + 0x8000

    dma = Dma(mem, "copy", translate=iommu)
    dma.write(cpu, 0x10, b"hello")
    assert mem.read(0x8010, 5) == b"hello"
    with pytest.raises(DmaFault, match="not mapped"):
        dma.read(cpu, 0x2000, 4)


OWNERS = st.sampled_from("abc")
ALLOC = st.tuples(st.just("alloc"), st.integers(1, 5 * PAGE_SIZE), st.sampled_from([16, 64, 128, PAGE_SIZE]), OWNERS)
RELEASE = st.tuples(st.just("release"), OWNERS)


@given(st.lists(st.one_of(ALLOC, RELEASE), max_size=40))
def test_guest_dma_memory_is_never_handed_out_twice_and_comes_back_zeroed(ops):
    """Random allocations by three drivers and detaches: live blocks are aligned, inside RAM
    above 16 MiB and never overlap; a block handed out again reads zero; when every driver
    has detached, every block it handed out is free again."""
    mem = GuestMemory(32 << 20)
    alloc = DmaAllocator(mem.size, lambda gpa, n: mem.write(gpa, bytes(n)))
    live: dict[str, list[tuple[int, int]]] = {o: [] for o in "abc"}
    ever: list[tuple[int, int]] = []
    for op in ops:
        if op[0] == "release":
            alloc.release(op[1])
            live[op[1]] = []
            continue
        _, size, align, owner = op
        try:
            gpa = alloc.alloc(size, align, owner)
        except OutOfGuestMemory:
            continue
        assert gpa % align == 0 and 16 << 20 <= gpa and gpa + size <= mem.size
        assert mem.read(gpa, size) == bytes(size)
        assert all(gpa + size <= s or e <= gpa for blocks in live.values() for s, e in blocks)
        mem.write(gpa, b"\xa5" * size)               # the driver uses it
        live[owner].append((gpa, gpa + size))
        ever.append((gpa, gpa + size))
    for owner in "abc":
        alloc.release(owner)
    assert all(any(s <= gpa and end <= e for s, e in alloc.free_extents) for gpa, end in ever)


@settings(deadline=None)
@given(first=st.integers(0, 63), pages=st.integers(1, 8), size=st.sampled_from([1, 8, 24]))
def test_stamped_pages_hold_their_heads_and_are_dirty(first, pages, size):
    """Each page gets its own head and nothing else changes; exactly those pages are logged, or, past
    the end, nothing is written at all."""
    mem = GuestMemory(SIZE)
    heads = bytes((i * 7 + 1) & 0xFF or 1 for i in range(pages * size))
    if first + pages > SIZE // PAGE_SIZE:
        with pytest.raises(GuestMemoryError):
            mem.stamp_pages(first * PAGE_SIZE, heads, size)
        assert mem.take_dirty() == [] and not any(mem.buf[:])
        return
    mem.stamp_pages(first * PAGE_SIZE, heads, size)
    for i in range(pages):
        page = mem.read((first + i) * PAGE_SIZE, PAGE_SIZE)
        assert page[:size] == heads[i * size:(i + 1) * size] and not any(page[size:])
    assert mem.take_dirty() == list(range(first, first + pages))
    assert sum(map(any, (mem.buf[at:at + PAGE_SIZE] for at in range(0, SIZE, PAGE_SIZE)))) == pages


@pytest.mark.parametrize("gpa,heads,size", [(1, b"x" * 8, 8), (0, b"x" * 7, 8), (0, b"x" * 8, 0),
                                            (0, b"x" * 2 * PAGE_SIZE, 2 * PAGE_SIZE)])
def test_stamping_refuses_what_is_not_whole_heads_on_page_starts(gpa, heads, size):
    mem = GuestMemory(SIZE)
    with pytest.raises((GuestMemoryError, ValueError)):
        mem.stamp_pages(gpa, heads, size)
    assert not any(mem.buf[:])


def test_a_large_load_reads_the_same_in_every_vm_and_each_vm_writes_its_own_copy():
    """From MERGE_PAGES up the host keeps one copy of pages loaded alike; each VM still reads exactly what
    a page-by-page load would give it, and a store lands in that VM alone."""
    from iovirt.mem.guest_memory import MERGE_PAGES
    pages, size = MERGE_PAGES + 3, 8
    heads = b"".join((i | 1 << 63).to_bytes(8, "little") for i in range(pages))
    big = 2 * pages * PAGE_SIZE
    one, two, small = GuestMemory(big), GuestMemory(big), GuestMemory(big)
    for mem in (one, two):
        mem.stamp_pages(PAGE_SIZE, heads, size)
    for first in range(0, pages, 256):                                  # page-by-page, below the threshold
        small.stamp_pages(PAGE_SIZE * (1 + first), heads[first * size:(first + 256) * size], size)
    assert one.buf[:] == two.buf[:] == small.buf[:]
    assert one.take_dirty() == list(range(1, pages + 1))
    one.write(3 * PAGE_SIZE + 5, b"mine")
    assert two.read(3 * PAGE_SIZE, 16) == small.read(3 * PAGE_SIZE, 16) != one.read(3 * PAGE_SIZE, 16)
    assert one.read(3 * PAGE_SIZE + 5, 4) == b"mine" and one.read(3 * PAGE_SIZE, 5) == heads[16:21]


def test_without_memfd_a_large_load_is_written_page_by_page(monkeypatch):
    import os

    from iovirt.mem.guest_memory import MERGE_PAGES

    def refuse(name, flags=0):
        raise OSError(38, "Function not implemented")
    monkeypatch.setattr(os, "memfd_create", refuse)
    heads = bytes(range(1, 9)) * MERGE_PAGES
    mem = GuestMemory((MERGE_PAGES + 1) * PAGE_SIZE)
    mem.stamp_pages(PAGE_SIZE, heads, 8)
    assert all(mem.read(PAGE_SIZE * (1 + i), 9) == bytes(range(1, 9)) + b"\0" for i in range(MERGE_PAGES))
