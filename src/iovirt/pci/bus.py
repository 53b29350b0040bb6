"""A PCI bus addressed by Bus:Device.Function and the host bridge through
which the CPU reaches configuration space: mechanism #1 at I/O ports
0xCF8/0xCFC (PCI 3.0 §3.2.2.3.2) and the memory-mapped ECAM window
(PCIe 3.0 §7.2.2) for the extended space."""

from __future__ import annotations

from iovirt.spec.pci import (
    PCI_CLASS_BRIDGE_HOST, PCI_CONF1_ADDRESS_MASK, PCI_CONF1_ADDRESS_PORT, PCI_CONF1_DATA_PORT,
    PCI_CONF1_ENABLE, PCI_DEVICE_ID_INTEL_82441, PCI_HEADER_TYPE, PCI_HEADER_TYPE_MFD, PCI_MAX_DEVICES,
    PCI_MAX_FUNCTIONS, PCI_VENDOR_ID_INTEL, Bdf, pci_conf1_decode, pci_ecam_decode,
)

from .config import all_ones
from .function import PciFunction


class PciBus:
    def __init__(self, number: int = 0) -> None:
        self.number = number
        self._functions: dict[tuple[int, int], PciFunction] = {}

    def attach(self, fn: PciFunction, device: int, function: int = 0) -> Bdf:
        """Plug ``fn`` in at ``device.function``; a device with more than one
        function gets the multi-function bit in function 0's HEADER_TYPE."""
        if not (0 <= device < PCI_MAX_DEVICES and 0 <= function < PCI_MAX_FUNCTIONS):
            raise ValueError(f"no slot {device:#x}.{function}")
        if (device, function) in self._functions:
            raise ValueError(f"slot {Bdf(self.number, device, function)} already taken")
        self._functions[device, function] = fn
        head = self._functions.get((device, 0))
        if head is not None and sum(d == device for d, _ in self._functions) > 1:
            head.config.set_bits(PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_MFD, True)
        return Bdf(self.number, device, function)

    def detach(self, device: int, function: int = 0) -> None:
        """Empty a slot (hot unplug, or a VF going away with VF Enable)."""
        self._functions.pop((device, function), None)

    def free_slot(self, first: int = 0) -> int:
        """The lowest empty device number from ``first``: where a card goes."""
        taken = {d for d, _ in self._functions}
        slot = next((d for d in range(first, PCI_MAX_DEVICES) if d not in taken), None)
        if slot is None:
            raise ValueError(f"bus {self.number:02x}: no free slot from {first:#x}")
        return slot

    def lookup(self, device: int, function: int = 0) -> PciFunction | None:
        return self._functions.get((device, function))

    def functions(self) -> list[tuple[Bdf, PciFunction]]:
        return [(Bdf(self.number, d, f), fn) for (d, f), fn in sorted(self._functions.items())]


class HostBridge:
    """The root of bus 0, itself function 00:00.0 (an i440FX host bridge),
    forwarding the CPU's configuration accesses to the functions on the bus."""

    def __init__(self, bus: PciBus | None = None) -> None:
        self.bus = bus if bus is not None else PciBus(0)
        self.function = PciFunction(PCI_VENDOR_ID_INTEL, PCI_DEVICE_ID_INTEL_82441, PCI_CLASS_BRIDGE_HOST << 8,
                                    revision=0x02, interrupt_pin=0)
        self.bus.attach(self.function, 0)
        self.config_address = 0

    def _target(self, bdf: Bdf) -> PciFunction | None:
        return self.bus.lookup(bdf.device, bdf.function) if bdf.bus == self.bus.number else None

    def config_read(self, bdf: Bdf, reg: int, size: int) -> int:
        """A read no function claims ends in master abort: all ones."""
        fn = self._target(bdf)
        return fn.config_read(reg, size) if fn is not None else all_ones(size)

    def config_write(self, bdf: Bdf, reg: int, size: int, value: int) -> None:
        fn = self._target(bdf)
        if fn is not None:
            fn.config_write(reg, size, value)

    # --- configuration mechanism #1 ----------------------------------------
    def _data_target(self, port: int, size: int) -> tuple[Bdf, int] | None:
        """CONFIG_DATA byte n (0xCFC + n) is register + n, within the DWORD."""
        n = port - PCI_CONF1_DATA_PORT
        if not (0 <= n and n + size <= 4 and self.config_address & PCI_CONF1_ENABLE):
            return None
        bdf, reg = pci_conf1_decode(self.config_address)
        return bdf, reg + n

    def pio_read(self, port: int, size: int) -> int:
        if port == PCI_CONF1_ADDRESS_PORT and size == 4:
            return self.config_address
        target = self._data_target(port, size)
        return self.config_read(*target, size) if target else all_ones(size)

    def pio_write(self, port: int, size: int, value: int) -> None:
        """Only a full DWORD write to CONFIG_ADDRESS latches it."""
        if port == PCI_CONF1_ADDRESS_PORT and size == 4:
            self.config_address = value & PCI_CONF1_ADDRESS_MASK
        elif target := self._data_target(port, size):
            self.config_write(*target, size, value)

    # --- ECAM: offset within the memory-mapped window ----------------------
    def ecam_read(self, offset: int, size: int) -> int:
        return self.config_read(*pci_ecam_decode(offset), size)

    def ecam_write(self, offset: int, size: int, value: int) -> None:
        self.config_write(*pci_ecam_decode(offset), size, value)
