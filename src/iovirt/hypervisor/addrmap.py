"""A VM's guest-physical MMIO and I/O-port maps: which handler owns an address
and what reaching it costs (the trap path).

A guest places its BARs where it likes, overlaps included, as on a real
platform: where two regions overlap the one mapped last decodes the address
(QEMU's memory core gives the subregion added last priority among equals),
and unmapping it uncovers the other again.  Lookups go through a flat view
rebuilt on every map and unmap (QEMU's FlatView), so they stay one bisect.

Accesses reach the handlers as the bus carries them: naturally aligned and
at most a dword (``DWORD``), a wider or misaligned CPU access split into
aligned pieces, low address first (a PCIe requester's byte enables; QEMU's
``.impl.max_access_size = 4``)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

from ..sim.resource import Resource

Read = Callable[[Resource, int, int], int]
Write = Callable[[Resource, int, int, int], None]
DWORD = 4


@dataclass
class Region:
    base: int
    size: int
    read: Read
    write: Write
    path: tuple[str, ...]        # events a guest access pays before the handler runs
    owner: str
    offset: int = 0              # where the region starts in the handlers' space (its offset in a BAR)


class AddressMap:
    def __init__(self, name: str) -> None:
        self.name = name
        self._regions: list[Region] = []        # in mapping order: a later one shadows an earlier one
        self._starts: list[int] = []
        self._flat: list[tuple[int, Region]] = []   # (end, region) of each piece of the flat view

    def map(self, region: Region) -> None:
        self._regions.append(region)
        self._render()

    def unmap(self, owner: str) -> None:
        self._regions = [r for r in self._regions if r.owner != owner]
        self._render()

    def _render(self) -> None:
        edges = sorted({r.base for r in self._regions} | {r.base + r.size for r in self._regions})
        self._starts, self._flat = [], []
        for lo, hi in zip(edges, edges[1:]):
            top = next((r for r in reversed(self._regions) if r.base <= lo and hi <= r.base + r.size), None)
            if top is None:
                continue
            if self._flat and self._flat[-1][0] == lo and self._flat[-1][1] is top:
                self._flat[-1] = (hi, top)              # the same region goes on
            else:
                self._starts.append(lo)
                self._flat.append((hi, top))

    def lookup(self, addr: int) -> Region | None:
        i = bisect_right(self._starts, addr) - 1
        if i >= 0:
            end, region = self._flat[i]
            if addr < end:
                return region
        return None


def pieces(offset: int, size: int) -> Iterator[tuple[int, int, int]]:
    """The aligned accesses of at most a dword that a ``size``-byte access at
    ``offset`` becomes: (offset, size, shift of its bytes in the value)."""
    pos, end = offset, offset + size
    while pos < end:
        width = DWORD
        while width > end - pos or pos & (width - 1):
            width >>= 1
        yield pos, width, 8 * (pos - offset)
        pos += width
