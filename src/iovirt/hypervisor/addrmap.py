"""A VM's guest-physical MMIO and I/O-port maps: which handler owns an address
and what reaching it costs (the trap path)."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable

from ..sim.resource import Resource

Read = Callable[[Resource, int, int], int]
Write = Callable[[Resource, int, int, int], None]


@dataclass(slots=True)
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
        self._bases: list[int] = []
        self._regions: list[Region] = []

    def map(self, region: Region) -> None:
        for other in self._regions:
            if region.base < other.base + other.size and other.base < region.base + region.size:
                raise ValueError(
                    f"{self.name}: {region.owner} at {region.base:#x}+{region.size:#x} overlaps {other.owner}"
                )
        i = bisect_right(self._bases, region.base)
        self._bases.insert(i, region.base)
        self._regions.insert(i, region)

    def unmap(self, owner: str) -> None:
        keep = [r for r in self._regions if r.owner != owner]
        self._regions = keep
        self._bases = [r.base for r in keep]

    def lookup(self, addr: int) -> Region | None:
        i = bisect_right(self._bases, addr) - 1
        if i >= 0:
            region = self._regions[i]
            if addr < region.base + region.size:
                return region
        return None
