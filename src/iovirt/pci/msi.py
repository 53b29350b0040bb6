"""MSI capability state (PCI 3.0 §6.8.1): message address and data in
configuration space, optional per-vector Mask and Pending bits."""

from __future__ import annotations

from typing import Callable

from iovirt.spec.fields import RegisterMap
from iovirt.spec.pci import (
    PCI_MSI_FLAGS, PCI_MSI_FLAGS_64BIT, PCI_MSI_FLAGS_ENABLE, PCI_MSI_FLAGS_MASKBIT, PCI_MSI_FLAGS_QSIZE,
)

from .config import ConfigSpace

Message = tuple[int, int]  # (address, data) of the memory write that signals an interrupt


class Msi:
    __slots__ = ("config", "cap", "regs", "_deliver")

    def __init__(self, config: ConfigSpace, cap: int, regs: RegisterMap, vectors: int,
                 deliver: Callable[[int, int], None]) -> None:
        self.config, self.cap, self.regs, self._deliver = config, cap, regs, deliver
        flags = ((vectors.bit_length() - 1) << 1 | (PCI_MSI_FLAGS_64BIT if "ADDRESS_HI" in regs.by_name else 0)
                 | (PCI_MSI_FLAGS_MASKBIT if "MASK" in regs.by_name else 0))
        config.set(cap + PCI_MSI_FLAGS, 2, flags)

    def _reg(self, name: str) -> int:
        return self.config.get_reg(self.regs[name], self.cap)

    @property
    def enabled(self) -> bool:
        return bool(self._reg("FLAGS") & PCI_MSI_FLAGS_ENABLE)

    def message(self, vector: int) -> Message | None:
        """Multiple Message Enable allocates 2**QSIZE vectors; the function
        signals vector v by replacing the low bits of Message Data (§6.8.1.6)."""
        allocated = 1 << ((self._reg("FLAGS") & PCI_MSI_FLAGS_QSIZE) >> 4)
        if not 0 <= vector < allocated:
            return None
        address = self._reg("ADDRESS_LO")
        if "ADDRESS_HI" in self.regs.by_name:
            address |= self._reg("ADDRESS_HI") << 32
        return address, (self._reg("DATA") & ~(allocated - 1)) | vector

    def notify(self, vector: int) -> Message | None:
        """The message, or None with the Pending bit set while the vector is masked."""
        if "MASK" in self.regs.by_name and self._reg("MASK") >> vector & 1:
            self.config.set_bits(self.cap + self.regs["PENDING"].offset, 4, 1 << vector, True)
            return None
        return self.message(vector)

    def deliver_pending(self) -> None:
        """After a Mask write: send and clear each pending vector now unmasked."""
        pending_at = self.cap + self.regs["PENDING"].offset
        ready = self.config.get(pending_at, 4) & ~self._reg("MASK")
        self.config.set_bits(pending_at, 4, ready, False)
        while ready:
            vector = (ready & -ready).bit_length() - 1
            ready &= ready - 1
            if message := self.message(vector):
                self._deliver(*message)
