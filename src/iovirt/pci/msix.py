"""MSI-X Table and Pending Bit Array (PCI 3.0 §6.8.2.6-§6.8.2.10): they live
in a memory BAR of the function, not in configuration space, so the device
model forwards its BAR accesses inside the two windows here."""

from __future__ import annotations

from typing import Callable

from iovirt.spec.pci import (
    PCI_MSIX_ENTRY, PCI_MSIX_ENTRY_CTRL_MASKBIT, PCI_MSIX_ENTRY_SIZE, PCI_MSIX_ENTRY_VECTOR_CTRL,
    PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, PCI_MSIX_FLAGS_MASKALL, PCI_MSIX_PBA, PCI_MSIX_TABLE,
)

from .config import ConfigSpace, all_ones
from .msi import Message

_MAX_VECTORS = 2048  # Table Size is 11 bits, N-1
# Enable and Function Mask sit in the upper byte of Message Control (§6.8.2.3).
_ENABLE_HI, _MASKALL_HI = PCI_MSIX_FLAGS_ENABLE >> 8, PCI_MSIX_FLAGS_MASKALL >> 8
_ENTRY_UNPACK = PCI_MSIX_ENTRY.unpack_from


class MsixTable:
    __slots__ = ("config", "cap", "vectors", "table_bar", "table_offset", "pba_bar", "pba_offset",
                 "table", "pba", "_deliver")

    def __init__(self, config: ConfigSpace, cap: int, table_bar: int, table_offset: int, pba_bar: int,
                 pba_offset: int, vectors: int, deliver: Callable[[int, int], None]) -> None:
        if not 1 <= vectors <= _MAX_VECTORS:
            raise ValueError(f"MSI-X: {vectors} vectors, not in [1, {_MAX_VECTORS}]")
        if table_offset & 7 or pba_offset & 7:
            raise ValueError("MSI-X: table and PBA offsets must be QWORD aligned (the low 3 bits are the BIR)")
        self.config, self.cap, self.vectors = config, cap, vectors
        self.table_bar, self.table_offset = table_bar, table_offset
        self.pba_bar, self.pba_offset = pba_bar, pba_offset
        self.table = bytearray(vectors * PCI_MSIX_ENTRY_SIZE)
        for at in range(0, len(self.table), PCI_MSIX_ENTRY_SIZE):
            PCI_MSIX_ENTRY.pack_into(self.table, at, 0, 0, 0, PCI_MSIX_ENTRY_CTRL_MASKBIT)
        self.pba = bytearray((vectors + 63) // 64 * 8)
        if table_bar == pba_bar and table_offset < self.pba_end and pba_offset < self.table_end:
            raise ValueError("MSI-X: table and PBA overlap")
        self._deliver = deliver
        config.set(cap + PCI_MSIX_FLAGS, 2, vectors - 1)
        config.set(cap + PCI_MSIX_TABLE, 4, table_offset | table_bar)
        config.set(cap + PCI_MSIX_PBA, 4, pba_offset | pba_bar)

    @property
    def table_end(self) -> int:
        return self.table_offset + len(self.table)

    @property
    def pba_end(self) -> int:
        return self.pba_offset + len(self.pba)

    @property
    def enabled(self) -> bool:
        return bool(self.config.data[self.cap + PCI_MSIX_FLAGS + 1] & _ENABLE_HI)

    def masked(self, vector: int) -> bool:
        """Function Mask or the entry's Mask Bit."""
        if self.config.data[self.cap + PCI_MSIX_FLAGS + 1] & _MASKALL_HI:
            return True
        ctrl = self.table[vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL]
        return bool(ctrl & PCI_MSIX_ENTRY_CTRL_MASKBIT)

    def pending(self, vector: int) -> bool:
        return bool(self.pba[vector >> 3] >> (vector & 7) & 1)

    # --- live migration: what a restored table and PBA may hold ---------------
    def table_problem(self, table: bytes) -> str | None:
        """Vector Control holds the Mask Bit only (writes keep no other, §6.8.2.9)."""
        for vector in range(len(table) // PCI_MSIX_ENTRY_SIZE):
            ctrl = _ENTRY_UNPACK(table, vector * PCI_MSIX_ENTRY_SIZE)[3]
            if ctrl & ~PCI_MSIX_ENTRY_CTRL_MASKBIT:
                return f"entry {vector}: Vector Control {ctrl:#x} has bits besides the Mask Bit"
        return None

    def pba_problem(self, pba: bytes) -> str | None:
        """Pending Bits only for the function's vectors: the rest of the last QWORD reads 0."""
        beyond = int.from_bytes(pba, "little") >> self.vectors
        if beyond:
            bit = self.vectors + (beyond & -beyond).bit_length() - 1
            return f"pending bit {bit} set, the function has {self.vectors} vectors"
        return None

    # --- BAR accesses ------------------------------------------------------
    def _window(self, bar: int, offset: int) -> tuple[bytearray, int] | None:
        if bar == self.table_bar and self.table_offset <= offset < self.table_end:
            return self.table, offset - self.table_offset
        if bar == self.pba_bar and self.pba_offset <= offset < self.pba_end:
            return self.pba, offset - self.pba_offset
        return None

    def contains(self, bar: int, offset: int) -> bool:
        return self._window(bar, offset) is not None

    def _access(self, bar: int, offset: int, size: int) -> tuple[bytearray, int] | None:
        """Software must use aligned DWORD or QWORD accesses (§6.8.2); others
        are refused here."""
        window = self._window(bar, offset)
        if window is None or size not in (4, 8) or offset % size or window[1] + size > len(window[0]):
            return None
        return window

    def read(self, bar: int, offset: int, size: int) -> int:
        window = self._access(bar, offset, size)
        if window is None:
            return all_ones(size)
        buf, rel = window
        return int.from_bytes(buf[rel:rel + size], "little")

    def write(self, bar: int, offset: int, size: int, value: int) -> None:
        """Table entries are RW (Vector Control: only the Mask Bit); the PBA is RO."""
        window = self._access(bar, offset, size)
        if window is None or window[0] is self.pba:
            return
        rel = window[1]
        self.table[rel:rel + size] = (value & all_ones(size)).to_bytes(size, "little")
        ctrl_at = rel - rel % PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL
        self.table[ctrl_at:ctrl_at + 4] = (self.table[ctrl_at] & PCI_MSIX_ENTRY_CTRL_MASKBIT).to_bytes(4, "little")
        self.deliver_pending()

    # --- signalling --------------------------------------------------------
    def message(self, vector: int) -> Message:
        lo, hi, data, _ = _ENTRY_UNPACK(self.table, vector * PCI_MSIX_ENTRY_SIZE)
        return hi << 32 | lo, data

    def notify(self, vector: int) -> Message | None:
        """The message for ``vector``, or None with its Pending Bit set while
        masked (§6.8.2.9)."""
        if not 0 <= vector < self.vectors:
            return None
        lo, hi, data, ctrl = _ENTRY_UNPACK(self.table, vector * PCI_MSIX_ENTRY_SIZE)
        # NOTE: masked() and message() inlined, once per interrupt
        if ctrl & PCI_MSIX_ENTRY_CTRL_MASKBIT or self.config.data[self.cap + PCI_MSIX_FLAGS + 1] & _MASKALL_HI:
            self.pba[vector >> 3] |= 1 << (vector & 7)
            return None
        return hi << 32 | lo, data

    def deliver_pending(self) -> None:
        """Send each pending message whose vector is now unmasked, clearing its
        Pending Bit."""
        if not self.enabled:
            return
        bits = int.from_bytes(self.pba, "little")
        while bits:
            vector = (bits & -bits).bit_length() - 1
            bits &= bits - 1
            if not self.masked(vector):
                self.pba[vector >> 3] &= ~(1 << (vector & 7))
                self._deliver(*self.message(vector))
