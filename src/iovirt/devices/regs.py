"""Register-file helpers shared by the device models: sub-dword accesses
to 32-bit registers (wider ones arrive split, hypervisor/addrmap.py) and
64-bit statistics counters kept as low/high pairs."""

from __future__ import annotations


def narrow(value: int, offset: int, size: int) -> int:
    """The ``size`` bytes of a 32-bit register a read at ``offset`` sees."""
    shift = (offset & 3) * 8
    return (value >> shift) & ((1 << (size * 8)) - 1)


def widen(old: int, value: int, offset: int, size: int) -> int:
    """The register after a ``size``-byte write at ``offset`` (other bytes kept)."""
    if size == 4:
        return value & 0xFFFFFFFF
    shift = (offset & 3) * 8
    mask = ((1 << (size * 8)) - 1) << shift
    return (old & ~mask) | ((value << shift) & mask)


def add64(r: list[int], lo: int, n: int) -> None:
    """Add ``n`` to the counter in r[lo] (low dword) and r[lo + 1] (high)."""
    total = (r[lo + 1] << 32 | r[lo]) + n
    r[lo], r[lo + 1] = total & 0xFFFFFFFF, (total >> 32) & 0xFFFFFFFF
