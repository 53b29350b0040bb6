"""A PCI function as the guest sees it through configuration space: BARs,
COMMAND decode, INTx, and the capability lists with MSI and MSI-X.

The device model declares its BARs and capabilities at construction; the
hypervisor subscribes to what the guest does with them (``on_bar_change``,
``on_bus_master``, ``on_intx``, ``on_msi``) to map BARs, gate DMA and deliver
interrupts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from iovirt.spec.fields import RegisterMap
from iovirt.spec.pci import (
    PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_5, PCI_BASE_ADDRESS_IO_MASK, PCI_BASE_ADDRESS_MEM_MASK,
    PCI_BASE_ADDRESS_MEM_PREFETCH, PCI_BASE_ADDRESS_MEM_TYPE_32, PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_BASE_ADDRESS_SPACE_IO, PCI_CAP_EXP_ENDPOINT_SIZEOF_V2, PCI_CAP_ID_EXP, PCI_CAP_ID_MSI,
    PCI_CAP_ID_MSIX, PCI_CAP_LIST_NEXT, PCI_CAP_MSIX_SIZEOF, PCI_CAPABILITY_LIST, PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE, PCI_CLASS_REVISION, PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_IO,
    PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, PCI_EXP_ENDPOINT_CAP, PCI_EXP_ENDPOINT_CAP_BITS, PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_MFD,
    PCI_EXT_CAP_ID, PCI_EXT_CAP_START, PCI_EXT_CAP_VER, PCI_MSI_BITS, PCI_MSI_FLAGS,
    PCI_MSIX_CAP, PCI_MSIX_CAP_BITS, PCI_MSIX_FLAGS, PCI_STATUS, PCI_STATUS_CAP_LIST,
    PCI_STATUS_INTERRUPT, PCI_STD_HEADER_SIZEOF, PCI_STD_NUM_BARS, PCI_TYPE0_HEADER,
    PCI_TYPE0_HEADER_BITS, pci_base_address, pci_ext_cap_header, pci_msi_cap,
)

from .config import ConfigSpace
from .msi import Message, Msi
from .msix import MsixTable

BarListener = Callable[[int, str, "int | None", int], None]
BAR_KINDS = ("mem32", "mem64", "io")


@dataclass(frozen=True)
class Bar:
    """A Base Address Register (PCI 3.0 §6.2.5.1): a naturally aligned,
    power-of-two window in memory or I/O space."""

    index: int
    size: int
    kind: str
    prefetchable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BAR_KINDS:
            raise ValueError(f"BAR{self.index}: kind {self.kind!r} not one of {BAR_KINDS}")
        low, high = (4, 256) if self.kind == "io" else (16, 1 << 31 if self.kind == "mem32" else 1 << 63)
        if self.size & (self.size - 1) or not low <= self.size <= high:
            raise ValueError(f"BAR{self.index}: size {self.size:#x} not a power of two in [{low:#x}, {high:#x}]")
        if not 0 <= self.index <= PCI_STD_NUM_BARS - self.slots:
            raise ValueError(f"BAR{self.index}: index out of range for {self.kind}")

    @property
    def slots(self) -> int:
        """A 64-bit BAR takes two consecutive registers."""
        return 2 if self.kind == "mem64" else 1

    @property
    def flags(self) -> int:
        """The read-only low bits: space, type, prefetchable."""
        if self.kind == "io":
            return PCI_BASE_ADDRESS_SPACE_IO
        kind = PCI_BASE_ADDRESS_MEM_TYPE_64 if self.kind == "mem64" else PCI_BASE_ADDRESS_MEM_TYPE_32
        return kind | (PCI_BASE_ADDRESS_MEM_PREFETCH if self.prefetchable else 0)

    @property
    def address_mask(self) -> int:
        return PCI_BASE_ADDRESS_IO_MASK if self.kind == "io" else PCI_BASE_ADDRESS_MEM_MASK


class PciFunction:
    __slots__ = ("config", "bars", "msi", "msix", "_cap_tail", "_ext_tail", "_cap_free", "_ext_free", "_decoded",
                 "_bus_master", "_intx_level", "_intx_line", "_bar_listeners", "_bus_master_listeners",
                 "_intx_listeners", "_msi_listeners", "_hooks")

    def __init__(self, vendor_id: int, device_id: int, class_code: int, *, revision: int = 0,
                 subsystem_vendor_id: int = 0, subsystem_id: int = 0, interrupt_pin: int = 1,
                 bars: Iterable[Bar] = ()) -> None:
        self.config = cfg = ConfigSpace(PCI_CFG_SPACE_EXP_SIZE)
        cfg.apply(PCI_TYPE0_HEADER, bits=PCI_TYPE0_HEADER_BITS)
        for name, value in (("VENDOR_ID", vendor_id), ("DEVICE_ID", device_id), ("INTERRUPT_PIN", interrupt_pin),
                            ("SUBSYSTEM_VENDOR_ID", subsystem_vendor_id), ("SUBSYSTEM_ID", subsystem_id)):
            cfg.set_reg(PCI_TYPE0_HEADER[name], value)
        cfg.set(PCI_CLASS_REVISION, 4, class_code << 8 | revision)
        self.bars: dict[int, Bar] = {}
        for bar in bars:
            self._declare_bar(bar)
        self.msi: Msi | None = None
        self.msix: MsixTable | None = None
        self._cap_tail = self._ext_tail = None
        self._cap_free, self._ext_free = PCI_STD_HEADER_SIZEOF, PCI_EXT_CAP_START
        self._decoded: dict[int, int | None] = dict.fromkeys(self.bars)
        self._bus_master = self._intx_level = self._intx_line = False
        self._bar_listeners: list[BarListener] = []
        self._bus_master_listeners: list[Callable[[bool], None]] = []
        self._intx_listeners: list[Callable[[bool], None]] = []
        self._msi_listeners: list[Callable[[int, int], None]] = []
        self._hooks: list[tuple[int, int, Callable[[], None]]] = [
            (PCI_COMMAND, PCI_COMMAND + 2, self._command_written),
            (PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_5 + 4, self._update_bars),
        ]

    # --- configuration access (what the host bridge forwards) ------------
    def config_read(self, offset: int, size: int) -> int:
        return self.config.read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        if self.config.write(offset, size, value):
            for lo, hi, hook in self._hooks:
                if offset < hi and offset + size > lo:
                    hook()

    def add_config_hook(self, start: int, end: int, hook: Callable[[], None]) -> None:
        """Run ``hook`` after each configuration write touching [start, end)."""
        self._hooks.append((start, end, hook))

    # --- hypervisor subscriptions ----------------------------------------
    def on_bar_change(self, callback: BarListener) -> None:
        """``callback(index, kind, address, size)``; address None while decode is off."""
        self._bar_listeners.append(callback)

    def on_bus_master(self, callback: Callable[[bool], None]) -> None:
        self._bus_master_listeners.append(callback)

    def on_intx(self, callback: Callable[[bool], None]) -> None:
        """``callback(asserted)`` when the INTx line the function drives changes."""
        self._intx_listeners.append(callback)

    def on_msi(self, callback: Callable[[int, int], None]) -> None:
        """``callback(address, data)`` for a message that was pending and got unmasked."""
        self._msi_listeners.append(callback)

    # --- BARs and COMMAND decode (PCI 3.0 §6.2.2, §6.2.5.1) --------------
    def _declare_bar(self, bar: Bar) -> None:
        taken = {i for b in self.bars.values() for i in range(b.index, b.index + b.slots)}
        if taken & set(range(bar.index, bar.index + bar.slots)):
            raise ValueError(f"BAR{bar.index}: register already used")
        self.bars[bar.index] = bar
        size_mask = ~(bar.size - 1) & ((1 << 64) - 1)
        offset = pci_base_address(bar.index)
        self.config.set(offset, 4, bar.flags)
        self.config.set_wmask(offset, 4, size_mask & bar.address_mask)
        if bar.kind == "mem64":
            self.config.set_wmask(offset + 4, 4, size_mask >> 32)

    @property
    def command(self) -> int:
        return self.config.get(PCI_COMMAND, 2)

    @property
    def bus_master(self) -> bool:
        """DMA is allowed only while PCI_COMMAND_MASTER is set."""
        return self._bus_master

    def bar_address(self, index: int) -> int | None:
        """Where the guest decodes BAR ``index``, or None while decoding is off."""
        bar = self.bars[index]
        if not self.command & (PCI_COMMAND_IO if bar.kind == "io" else PCI_COMMAND_MEMORY):
            return None
        offset = pci_base_address(index)
        high = self.config.get(offset + 4, 4) if bar.kind == "mem64" else 0
        return high << 32 | self.config.get(offset, 4) & bar.address_mask

    def _update_bars(self) -> None:
        for index, bar in self.bars.items():
            address = self.bar_address(index)
            if address != self._decoded[index]:
                self._decoded[index] = address
                for callback in self._bar_listeners:
                    callback(index, bar.kind, address, bar.size)

    def _command_written(self) -> None:
        self._update_bars()
        master = bool(self.command & PCI_COMMAND_MASTER)
        if master != self._bus_master:
            self._bus_master = master
            for callback in self._bus_master_listeners:
                callback(master)
        self._update_intx()

    # --- INTx (PCI 3.0 §2.2.6, §6.8.3.3) ----------------------------------
    def set_intx(self, level: bool) -> None:
        """The device raises or lowers its interrupt condition; STATUS.INTERRUPT
        follows it even while the pin is disabled."""
        self._intx_level = level
        self.config.set_bits(PCI_STATUS, 2, PCI_STATUS_INTERRUPT, level)
        self._update_intx()

    def _update_intx(self) -> None:
        line = (self._intx_level and self.interrupt_mode == "intx"
                and not self.command & PCI_COMMAND_INTX_DISABLE)
        if line != self._intx_line:
            self._intx_line = line
            for callback in self._intx_listeners:
                callback(line)

    # --- capability lists (PCI 3.0 §6.7, PCIe 3.0 §7.9) ------------------
    def add_capability(self, cap_id: int, size: int, layout: RegisterMap | None = None,
                       bits: dict[str, int] | None = None) -> int:
        """Append a capability of ``size`` bytes to the list; returns its offset."""
        offset = self._cap_free
        self._lay_out(f"capability {cap_id:#x}", offset, size, PCI_CFG_SPACE_SIZE, layout, bits)
        self.config.set(offset, 2, cap_id)
        if self._cap_tail is None:
            self.config.set(PCI_CAPABILITY_LIST, 1, offset)
            self.config.set_bits(PCI_STATUS, 2, PCI_STATUS_CAP_LIST, True)
        else:
            self.config.set(self._cap_tail + PCI_CAP_LIST_NEXT, 1, offset)
        self._cap_tail, self._cap_free = offset, (offset + size + 3) & ~3
        return offset

    def add_ext_capability(self, cap_id: int, version: int, size: int, layout: RegisterMap | None = None,
                           bits: dict[str, int] | None = None) -> int:
        """Append an extended capability (the list starts at 0x100); returns its offset."""
        offset = self._ext_free
        self._lay_out(f"extended capability {cap_id:#x}", offset, size, PCI_CFG_SPACE_EXP_SIZE, layout, bits)
        self.config.set(offset, 4, pci_ext_cap_header(cap_id, version, 0))
        if self._ext_tail is not None:
            header = self.config.get(self._ext_tail, 4)
            self.config.set(self._ext_tail, 4,
                            pci_ext_cap_header(PCI_EXT_CAP_ID(header), PCI_EXT_CAP_VER(header), offset))
        self._ext_tail, self._ext_free = offset, (offset + size + 3) & ~3
        return offset

    def _lay_out(self, what: str, offset: int, size: int, limit: int, layout: RegisterMap | None,
                 bits: dict[str, int] | None) -> None:
        if offset + size > limit:
            raise ValueError(f"{what}: no room in configuration space")
        if layout is not None:
            self.config.apply(layout, offset, bits)

    def add_pcie_endpoint(self) -> int:
        """PCI Express capability, version 2, Endpoint (PCIe 3.0 §7.8)."""
        return self.add_capability(PCI_CAP_ID_EXP, PCI_CAP_EXP_ENDPOINT_SIZEOF_V2,
                                   PCI_EXP_ENDPOINT_CAP, PCI_EXP_ENDPOINT_CAP_BITS)

    # --- MSI (PCI 3.0 §6.8.1) --------------------------------------------
    def add_msi(self, vectors: int = 1, is64: bool = True, per_vector_mask: bool = True) -> Msi:
        if vectors & (vectors - 1) or not 1 <= vectors <= 32:
            raise ValueError(f"MSI: {vectors} vectors, not a power of two up to 32")
        regs = pci_msi_cap(is64, per_vector_mask)
        size = max(r.offset + r.width for r in regs)
        cap = self.add_capability(PCI_CAP_ID_MSI, size, regs, {**PCI_MSI_BITS, "MASK": (1 << vectors) - 1})
        self.msi = Msi(self.config, cap, regs, vectors, self._deliver)
        self._hooks.append((cap + PCI_MSI_FLAGS, cap + PCI_MSI_FLAGS + 2, self._update_intx))
        if per_vector_mask:
            mask_at = cap + regs["MASK"].offset
            self._hooks.append((mask_at, mask_at + 4, self.msi.deliver_pending))
        return self.msi

    # --- MSI-X (PCI 3.0 §6.8.2) ------------------------------------------
    def add_msix(self, table_bar: int, table_offset: int, pba_bar: int, pba_offset: int,
                 vectors: int) -> MsixTable:
        """The table and PBA live in memory BARs; the device model routes its
        BAR accesses inside ``msix.contains(bar, offset)`` to ``msix``."""
        cap = self.add_capability(PCI_CAP_ID_MSIX, PCI_CAP_MSIX_SIZEOF, PCI_MSIX_CAP, PCI_MSIX_CAP_BITS)
        self.msix = MsixTable(self.config, cap, table_bar, table_offset, pba_bar, pba_offset, vectors,
                              self._deliver)
        for bar, end in ((table_bar, self.msix.table_end), (pba_bar, self.msix.pba_end)):
            if bar not in self.bars or self.bars[bar].kind == "io" or end > self.bars[bar].size:
                raise ValueError(f"MSI-X: BAR{bar} missing, not memory, or smaller than {end:#x}")
        self._hooks.append((cap + PCI_MSIX_FLAGS, cap + PCI_MSIX_FLAGS + 2, self._msix_control_written))
        return self.msix

    def _msix_control_written(self) -> None:
        self._update_intx()
        self.msix.deliver_pending()

    # --- live migration ----------------------------------------------------
    def config_problem(self, data: bytes) -> str | None:
        """A restored configuration space may differ from this function's only
        where a guest writes (the write and RW1C masks) or the function itself
        sets bits (STATUS.INTERRUPT, MSI Pending Bits, the slot's multi-function
        bit): IDs, BAR types and sizes, capability lists and the MSI-X table
        size are this function's (QEMU get_pci_config_device: "Bad config data")."""
        cfg = self.config
        free = bytearray(len(cfg.data))
        free[PCI_STATUS] |= PCI_STATUS_INTERRUPT
        free[PCI_HEADER_TYPE] |= PCI_HEADER_TYPE_MFD
        if self.msi is not None and "PENDING" in self.msi.regs.by_name:
            pending = self.msi.cap + self.msi.regs["PENDING"].offset
            free[pending:pending + 4] = b"\xff" * 4
        fixed = ~(int.from_bytes(cfg.wmask, "little") | int.from_bytes(cfg.w1cmask, "little")
                  | int.from_bytes(free, "little"))
        differ = (int.from_bytes(data, "little") ^ int.from_bytes(cfg.data, "little")) & fixed
        if not differ:
            return None
        at = ((differ & -differ).bit_length() - 1) // 8
        return (f"byte {at:#05x} is {data[at]:#04x}, the device's {cfg.data[at]:#04x} in read-only bits "
                f"{(differ >> 8 * at) & 0xFF:#04x}")

    def reload(self) -> None:
        """Configuration space and the MSI-X table were restored (a migrated
        function): tell the subscribers what the guest had programmed (BAR
        decode, bus mastering, the INTx line the device drives) and deliver
        the messages left pending that are no longer masked."""
        self._intx_level = bool(self.config.get(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT)
        self._command_written()
        mode = self.interrupt_mode
        if mode == "msix":
            self.msix.deliver_pending()
        elif mode == "msi" and "MASK" in self.msi.regs.by_name:
            self.msi.deliver_pending()

    # --- signalling --------------------------------------------------------
    @property
    def interrupt_mode(self) -> str:
        """"msix", "msi" or "intx": enabling MSI or MSI-X disables INTx (§6.8.3.3)."""
        if self.msix is not None and self.msix.enabled:
            return "msix"
        if self.msi is not None and self.msi.enabled:
            return "msi"
        return "intx"

    def notify(self, vector: int = 0) -> Message | None:
        """Signal ``vector``: returns the (address, data) message to deliver, or
        None when it is masked (kept pending, delivered through ``on_msi`` on
        unmask) or when the function is in INTx mode (use :meth:`set_intx`)."""
        mode = self.interrupt_mode
        if mode == "msix":
            return self.msix.notify(vector)
        return self.msi.notify(vector) if mode == "msi" else None

    def _deliver(self, address: int, data: int) -> None:
        for callback in self._msi_listeners:
            callback(address, data)
