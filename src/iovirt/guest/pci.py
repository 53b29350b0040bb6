"""PCI enumeration the way firmware does it (SeaBIOS ``pciinit.c``, Linux
``drivers/pci/probe.c``), through configuration mechanism #1 only: the guest
sees nothing but I/O ports 0xCF8/0xCFC and the spec tables.

Scan bus 0, size every BAR by writing all ones, place BARs largest first
(so natural alignment leaves no holes) in a 32-bit MMIO window and an I/O
window, route INTx, enable decoding and bus mastering, and walk the
capability list.  After boot, one slot at a time (``pci_scan_slot`` and
``pci_stop_and_remove_bus_device`` on hot plug): a card that arrives gets
the ranges a card that left gave back (of the same size), else room after
what is placed.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

from iovirt.spec.pci import (
    PCI_BASE_ADDRESS_IO_MASK, PCI_BASE_ADDRESS_MEM_MASK, PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_BASE_ADDRESS_MEM_TYPE_MASK, PCI_BASE_ADDRESS_SPACE_IO, PCI_CAP_ID_MSIX, PCI_CAP_LIST_TTL,
    PCI_CAPABILITY_LIST,
    PCI_CLASS_REVISION, PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY,
    PCI_CONF1_ADDRESS_PORT, PCI_CONF1_DATA_PORT, PCI_HEADER_TYPE, PCI_HEADER_TYPE_MASK,
    PCI_HEADER_TYPE_MFD, PCI_HEADER_TYPE_NORMAL, PCI_INTERRUPT_LINE, PCI_INTERRUPT_PIN, PCI_MAX_DEVICES,
    PCI_MAX_FUNCTIONS, PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, PCI_PIRQ_IRQS, PCI_STATUS, PCI_STATUS_CAP_LIST,
    PCI_STD_HEADER_SIZEOF,
    PCI_STD_NUM_BARS, PCI_VENDOR_ID, Bdf, pci_base_address, pci_conf1_address, pci_swizzle,
)

MMIO_WINDOW = (0xFE000000, 0xFEC00000)  # up to the I/O APIC
IO_WINDOW = (0xC000, 0x10000)


class PortIO(Protocol):
    def pio_read(self, port: int, size: int) -> int: ...
    def pio_write(self, port: int, size: int, value: int) -> None: ...


class PciResourceError(RuntimeError):
    """A BAR does not fit in its window."""


@dataclass
class PciDeviceInfo:
    bdf: Bdf
    vendor: int
    device: int
    class_code: int  # base class << 16 | subclass << 8 | prog-if
    revision: int
    bars: dict[int, tuple[str, int, int]] = field(default_factory=dict)  # index: (kind, address, size)
    caps: dict[int, int] = field(default_factory=dict)  # capability ID: offset of the first one
    irq_pin: int = 0
    irq_line: int = 0
    driver: object = None  # the driver bound to it (pci_dev->driver)


class _Window:
    """Naturally aligned ranges: one a removed device gave back (the lowest
    of the same size), else the next one up."""

    def __init__(self, name: str, base: int, limit: int) -> None:
        self.name, self.next, self.limit = name, base, limit
        self.released: list[tuple[int, int]] = []      # (size, address), sorted

    def allocate(self, size: int) -> int:
        for i, (freed, address) in enumerate(self.released):
            if freed == size:
                del self.released[i]
                return address
        address = (self.next + size - 1) & ~(size - 1)
        if address + size > self.limit:
            raise PciResourceError(f"{self.name} window exhausted: {size:#x} bytes at {address:#x}")
        self.next = address + size
        return address

    def release(self, address: int, size: int) -> None:
        insort(self.released, (size, address))


class PciEnumerator:
    def __init__(self, io: PortIO, mmio_window: tuple[int, int] = MMIO_WINDOW,
                 io_window: tuple[int, int] = IO_WINDOW) -> None:
        self.io = io
        self.windows = {"mem": _Window("MMIO", *mmio_window), "io": _Window("I/O", *io_window)}
        self.devices: list[PciDeviceInfo] = []

    # --- mechanism #1 ---------------------------------------------------------
    def config_read(self, bdf: Bdf, reg: int, size: int) -> int:
        self.io.pio_write(PCI_CONF1_ADDRESS_PORT, 4, pci_conf1_address(bdf, reg))
        return self.io.pio_read(PCI_CONF1_DATA_PORT + (reg & 3), size)

    def config_write(self, bdf: Bdf, reg: int, size: int, value: int) -> None:
        self.io.pio_write(PCI_CONF1_ADDRESS_PORT, 4, pci_conf1_address(bdf, reg))
        self.io.pio_write(PCI_CONF1_DATA_PORT + (reg & 3), size, value)

    # --- enumeration ------------------------------------------------------------
    def scan(self, bus: int = 0) -> list[PciDeviceInfo]:
        return self._add([self._probe(bdf) for bdf in self._present(bus)])

    def scan_slot(self, device: int, bus: int = 0) -> list[PciDeviceInfo]:
        """The functions in slot ``device`` not known yet, set up as ``scan`` does."""
        known = {info.bdf for info in self.devices}
        return self._add([self._probe(bdf) for bdf in self._present(bus, (device,)) if bdf not in known])

    def remove_slot(self, device: int, bus: int = 0) -> list[PciDeviceInfo]:
        """Forget the functions in slot ``device`` and give back their BAR
        ranges (pci_stop_and_remove_bus_device); returns them."""
        slot = (bus, device)
        gone = [info for info in self.devices if (info.bdf.bus, info.bdf.device) == slot]
        self.devices = [info for info in self.devices if (info.bdf.bus, info.bdf.device) != slot]
        for info in gone:
            for kind, address, size in info.bars.values():
                self._window(kind).release(address, size)
        return gone

    def disable(self, info: PciDeviceInfo) -> None:
        """pci_disable_device with its MSI-X off: no message and no DMA from the function any more."""
        cap = info.caps.get(PCI_CAP_ID_MSIX)
        if cap is not None:
            flags = self.config_read(info.bdf, cap + PCI_MSIX_FLAGS, 2)
            self.config_write(info.bdf, cap + PCI_MSIX_FLAGS, 2, flags & ~PCI_MSIX_FLAGS_ENABLE)
        self.config_write(info.bdf, PCI_COMMAND, 2, self.config_read(info.bdf, PCI_COMMAND, 2) & ~PCI_COMMAND_MASTER)

    def _add(self, found: list[PciDeviceInfo]) -> list[PciDeviceInfo]:
        self._assign(found)
        for info in found:
            self.enable(info)
        self.devices += found
        return found

    def find(self, vendor: int, device: int) -> PciDeviceInfo | None:
        return next((d for d in self.devices if (d.vendor, d.device) == (vendor, device)), None)

    def _present(self, bus: int, devices: Iterable[int] = range(PCI_MAX_DEVICES)) -> Iterator[Bdf]:
        """Function 0 of each device, and 1-7 when HEADER_TYPE says multi-function."""
        for device in devices:
            for function in range(PCI_MAX_FUNCTIONS):
                bdf = Bdf(bus, device, function)
                if self.config_read(bdf, PCI_VENDOR_ID, 2) != 0xFFFF:
                    yield bdf
                if function == 0 and not self.config_read(bdf, PCI_HEADER_TYPE, 1) & PCI_HEADER_TYPE_MFD:
                    break

    def _probe(self, bdf: Bdf) -> PciDeviceInfo:
        ids = self.config_read(bdf, PCI_VENDOR_ID, 4)
        class_rev = self.config_read(bdf, PCI_CLASS_REVISION, 4)
        info = PciDeviceInfo(bdf, ids & 0xFFFF, ids >> 16, class_rev >> 8, class_rev & 0xFF,
                             irq_pin=self.config_read(bdf, PCI_INTERRUPT_PIN, 1))
        if self.config_read(bdf, PCI_HEADER_TYPE, 1) & PCI_HEADER_TYPE_MASK == PCI_HEADER_TYPE_NORMAL:
            info.bars = self._size_bars(bdf)
        info.caps = self._walk_caps(bdf)
        return info

    # --- BAR sizing (PCI 3.0 §6.2.5.1, implementation note) ----------------------
    def _size_bars(self, bdf: Bdf) -> dict[int, tuple[str, int, int]]:
        """Decoding is off while a BAR holds all ones."""
        command = self.config_read(bdf, PCI_COMMAND, 2)
        self.config_write(bdf, PCI_COMMAND, 2, command & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY))
        bars, index = {}, 0
        while index < PCI_STD_NUM_BARS:
            kind, size = self._size_bar(bdf, index)
            if size:
                bars[index] = (kind, 0, size)
            index += 2 if kind == "mem64" else 1
        self.config_write(bdf, PCI_COMMAND, 2, command)
        return bars

    def _size_bar(self, bdf: Bdf, index: int) -> tuple[str, int]:
        """The size is the lowest writable address bit; 0 means no BAR."""
        reg = pci_base_address(index)
        original, mask = self._write_ones(bdf, reg)
        if original & PCI_BASE_ADDRESS_SPACE_IO:
            kind, mask = "io", mask & PCI_BASE_ADDRESS_IO_MASK
        elif original & PCI_BASE_ADDRESS_MEM_TYPE_MASK == PCI_BASE_ADDRESS_MEM_TYPE_64:
            kind, mask = "mem64", self._write_ones(bdf, reg + 4)[1] << 32 | mask & PCI_BASE_ADDRESS_MEM_MASK
        else:
            kind, mask = "mem32", mask & PCI_BASE_ADDRESS_MEM_MASK
        return kind, mask & -mask

    def _write_ones(self, bdf: Bdf, reg: int) -> tuple[int, int]:
        """(original value, value read back after writing all ones); restores it."""
        original = self.config_read(bdf, reg, 4)
        self.config_write(bdf, reg, 4, 0xFFFFFFFF)
        readback = self.config_read(bdf, reg, 4)
        self.config_write(bdf, reg, 4, original)
        return original, readback

    def _assign(self, found: list[PciDeviceInfo]) -> None:
        """Every BAR of ``found`` placed, or none (what was placed goes back)."""
        requests = [(size, info, index, kind) for info in found for index, (kind, _, size) in info.bars.items()]
        placed: list[tuple[str, int, int]] = []
        for size, info, index, kind in sorted(requests, key=lambda r: -r[0]):
            window = self._window(kind)
            try:
                address = window.allocate(size)
            except PciResourceError:
                for kind_placed, at, length in placed:
                    self._window(kind_placed).release(at, length)
                raise
            placed.append((kind, address, size))
            self.config_write(info.bdf, pci_base_address(index), 4, address & 0xFFFFFFFF)
            if kind == "mem64":
                self.config_write(info.bdf, pci_base_address(index) + 4, 4, address >> 32)
            info.bars[index] = (kind, address, size)

    def _window(self, kind: str) -> _Window:
        return self.windows["io" if kind == "io" else "mem"]

    def enable(self, info: PciDeviceInfo) -> None:
        """pci_enable_device and pci_set_master: decoding its BARs, mastering the bus, its INTx line."""
        kinds = {kind for kind, _, _ in info.bars.values()}
        command = (PCI_COMMAND_MASTER | (PCI_COMMAND_IO if "io" in kinds else 0)
                   | (PCI_COMMAND_MEMORY if kinds - {"io"} else 0))
        self.config_write(info.bdf, PCI_COMMAND, 2, self.config_read(info.bdf, PCI_COMMAND, 2) | command)
        if info.irq_pin:
            info.irq_line = PCI_PIRQ_IRQS[pci_swizzle(info.bdf.device, info.irq_pin)]
            self.config_write(info.bdf, PCI_INTERRUPT_LINE, 1, info.irq_line)

    # --- capability list (PCI 3.0 §6.7), bounded as Linux does against loops -----
    def _walk_caps(self, bdf: Bdf) -> dict[int, int]:
        caps: dict[int, int] = {}
        if not self.config_read(bdf, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST:
            return caps
        offset = self.config_read(bdf, PCI_CAPABILITY_LIST, 1)
        for _ in range(PCI_CAP_LIST_TTL):
            offset &= ~3
            if offset < PCI_STD_HEADER_SIZEOF:
                break
            header = self.config_read(bdf, offset, 2)
            if header & 0xFF == 0xFF:
                break
            caps.setdefault(header & 0xFF, offset)
            offset = header >> 8
        return caps
