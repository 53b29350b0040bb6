"""A function's configuration space: 4096 bytes (256 conventional, the rest
PCI Express extended space) with a per-byte write mask and a per-byte
write-1-to-clear mask, so that the guest sees read-only fields as read-only
and RW1C status bits clear on a 1 (PCI 3.0 §6.1, PCIe 3.0 §7.4).

The guest side is :meth:`ConfigSpace.read` / :meth:`ConfigSpace.write`; the
device model sets fields with :meth:`get` / :meth:`set` / :meth:`apply`,
which ignore the masks.
"""

from __future__ import annotations

from iovirt.spec.fields import Register, RegisterMap
from iovirt.spec.pci import PCI_CFG_SPACE_EXP_SIZE

_SIZES = (1, 2, 4)


def all_ones(size: int) -> int:
    """What a read nobody claims returns (master abort)."""
    return (1 << 8 * size) - 1


class ConfigSpace:
    __slots__ = ("data", "wmask", "w1cmask")

    def __init__(self, size: int = PCI_CFG_SPACE_EXP_SIZE) -> None:
        self.data = bytearray(size)
        self.wmask = bytearray(size)
        self.w1cmask = bytearray(size)

    def valid(self, offset: int, size: int) -> bool:
        """A configuration access carries byte enables within one DWORD."""
        return size in _SIZES and 0 <= offset and (offset & 3) + size <= 4 and offset + size <= len(self.data)

    # --- guest side -----------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """Out-of-range or DWORD-crossing reads return all ones."""
        if not self.valid(offset, size):
            return all_ones(size)
        return self.get(offset, size)

    def write(self, offset: int, size: int, value: int) -> bool:
        """Applies the masks; returns False (and changes nothing) when the
        access is not a valid one."""
        if not self.valid(offset, size):
            return False
        value &= all_ones(size)
        old = self.get(offset, size)
        wmask = int.from_bytes(self.wmask[offset:offset + size], "little")
        w1c = int.from_bytes(self.w1cmask[offset:offset + size], "little")
        self.set(offset, size, ((old & ~wmask) | (value & wmask)) & ~(value & w1c))
        return True

    # --- device-model side ----------------------------------------------
    def get(self, offset: int, size: int) -> int:
        return int.from_bytes(self.data[offset:offset + size], "little")

    def set(self, offset: int, size: int, value: int) -> None:
        self.data[offset:offset + size] = (value & all_ones(size)).to_bytes(size, "little")

    def set_wmask(self, offset: int, size: int, mask: int) -> None:
        self.wmask[offset:offset + size] = mask.to_bytes(size, "little")

    def set_w1cmask(self, offset: int, size: int, mask: int) -> None:
        self.w1cmask[offset:offset + size] = mask.to_bytes(size, "little")

    def set_bits(self, offset: int, size: int, bits: int, on: bool) -> None:
        value = self.get(offset, size)
        self.set(offset, size, value | bits if on else value & ~bits)

    def apply(self, regmap: RegisterMap, base: int = 0, bits: dict[str, int] | None = None) -> None:
        """Lay out ``regmap`` at ``base``: reset values, and write masks from
        each register's access; ``bits`` narrows an access to some bits."""
        bits = bits or {}
        for reg in regmap:
            mask = bits.get(reg.name, all_ones(reg.width))
            self.set(base + reg.offset, reg.width, reg.reset)
            self.set_wmask(base + reg.offset, reg.width, mask if reg.access == "rw" else 0)
            self.set_w1cmask(base + reg.offset, reg.width, mask if reg.access == "w1c" else 0)

    def get_reg(self, reg: Register, base: int = 0) -> int:
        return self.get(base + reg.offset, reg.width)

    def set_reg(self, reg: Register, value: int, base: int = 0) -> None:
        self.set(base + reg.offset, reg.width, value)
