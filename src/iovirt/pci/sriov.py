"""Single Root I/O Virtualization (PCIe 4.0 §9; SR-IOV 1.1): the PF's SR-IOV
extended capability, the Virtual Functions it brings onto the bus, and the
host kernel's side of it.

Device side: :func:`add_sriov` installs the capability in a PF that sits on
a bus.  Setting VF Enable creates NumVFs fresh VFs through the device
model's ``make_vf(n)`` and plugs VF n in at Routing ID PF + First VF Offset
+ n * VF Stride; clearing it unplugs them all.  A VF's own header follows
§9.3.4.1: Vendor and Device ID read FFFFh (software takes the PF's Vendor ID
and the capability's VF Device ID), its BARs are RO zero (the PF's VF BARn
places VF n's BAR n at VF BARn + n * size), memory decoding is the PF's VF
MSE, and there is no INTx.  The hypervisor learns where each VF BAR decodes
through :meth:`Sriov.on_vf_bar_change`.

Host side: :class:`HostSriov` is Linux ``drivers/pci/iov.c`` for one PF,
through configuration accesses only: at probe it picks the System Page Size,
sizes the VF BARs and places each for TotalVFs in an MMIO window
(``sriov_init``); :meth:`HostSriov.enable_vfs` is ``sriov_numvfs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from iovirt.spec.pci import (
    PCI_BASE_ADDRESS_MEM_MASK, PCI_BASE_ADDRESS_MEM_TYPE_64, PCI_BASE_ADDRESS_MEM_TYPE_MASK, PCI_COMMAND,
    PCI_COMMAND_MASTER, PCI_EXT_CAP_ID, PCI_EXT_CAP_ID_SRIOV, PCI_EXT_CAP_LIST_TTL, PCI_EXT_CAP_NEXT,
    PCI_EXT_CAP_SRIOV_SIZEOF, PCI_EXT_CAP_START, PCI_INTERRUPT_PIN, PCI_SRIOV_CAP_BITS, PCI_SRIOV_CAP_REGS,
    PCI_SRIOV_CTRL, PCI_SRIOV_CTRL_ARI, PCI_SRIOV_CTRL_MSE, PCI_SRIOV_CTRL_VFE, PCI_SRIOV_NUM_BARS,
    PCI_SRIOV_NUM_VF, PCI_SRIOV_PGSIZE_SHIFT, PCI_SRIOV_SUP_PGSIZE, PCI_SRIOV_SUP_PGSIZE_MINREQ,
    PCI_SRIOV_SYS_PGSIZE, PCI_SRIOV_TOTAL_VF, PCI_SRIOV_VF_DID, PCI_SRIOV_VF_OFFSET, PCI_SRIOV_VF_STRIDE,
    PCI_STD_NUM_BARS, PCI_VENDOR_ID, Bdf, pci_base_address, pci_routing_id, pci_routing_id_bdf, pci_sriov_bar,
)

from .bus import PciBus
from .config import ConfigSpace
from .function import Bar, PciFunction

VfFactory = Callable[[int], PciFunction]
VfListener = Callable[[int, Bdf, "PciFunction | None"], None]
VfBarListener = Callable[[int, int, "int | None", int], None]
_DECODE = PCI_SRIOV_CTRL_VFE | PCI_SRIOV_CTRL_MSE
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class SriovParams:
    """The PF's SR-IOV capability as its datasheet gives it.  Without VF
    Migration, InitialVFs equals TotalVFs (§9.3.3.5)."""

    total_vfs: int
    vf_device_id: int
    first_vf_offset: int
    vf_stride: int
    vf_bars: tuple[Bar, ...] = ()
    supported_page_sizes: int = PCI_SRIOV_SUP_PGSIZE_MINREQ

    def __post_init__(self) -> None:
        object.__setattr__(self, "vf_bars", tuple(self.vf_bars))
        if not 1 <= self.total_vfs <= 0xFFFF or not 0 <= self.vf_device_id <= 0xFFFF:
            raise ValueError(f"SR-IOV: TotalVFs {self.total_vfs} / VF Device ID {self.vf_device_id:#x} out of range")
        if not 1 <= self.first_vf_offset <= 0xFFFF or not (self.total_vfs == 1 or 1 <= self.vf_stride <= 0xFFFF):
            raise ValueError(f"SR-IOV: First VF Offset {self.first_vf_offset:#x} / VF Stride {self.vf_stride} "
                             "would put a VF on the PF or two VFs on one Routing ID")
        taken: set[int] = set()
        for bar in self.vf_bars:
            regs = set(range(bar.index, bar.index + bar.slots))
            if bar.kind == "io" or taken & regs:
                raise ValueError(f"SR-IOV: VF BAR{bar.index} is I/O or overlaps another "
                                 "(VF BARs are memory, §9.3.3.14)")
            taken |= regs
        if self.supported_page_sizes & PCI_SRIOV_SUP_PGSIZE_MINREQ != PCI_SRIOV_SUP_PGSIZE_MINREQ:
            raise ValueError(f"SR-IOV: Supported Page Sizes {self.supported_page_sizes:#x} lacks the required "
                             f"{PCI_SRIOV_SUP_PGSIZE_MINREQ:#x} (§9.3.3.12)")


def add_sriov(pf: PciFunction, bus: PciBus, make_vf: VfFactory, params: SriovParams) -> Sriov:
    """Install the SR-IOV capability in ``pf`` (already attached to ``bus``),
    at the next free offset of its extended list; VFs go on ``bus``."""
    return Sriov(pf, bus, make_vf, params)


class Sriov:
    """One PF's SR-IOV capability and the VFs it has brought up.

    Writes the spec leaves undefined are ignored (the register keeps its
    value): NumVFs above TotalVFs or while VF Enable is set, and a System
    Page Size that is not exactly one supported page or comes while VF
    Enable is set.
    """

    def __init__(self, pf: PciFunction, bus: PciBus, make_vf: VfFactory, params: SriovParams) -> None:
        self.pf, self.bus, self.params, self._make_vf = pf, bus, params, make_vf
        self.pf_bdf = _slot_of(bus, pf)
        self._check_routing()
        bits = dict(PCI_SRIOV_CAP_BITS)
        if self.pf_bdf.function:  # ARI Capable Hierarchy is RW in the lowest-numbered PF only (§9.3.3.3.5)
            bits["CTRL"] &= ~PCI_SRIOV_CTRL_ARI
        self.cap = pf.add_ext_capability(PCI_EXT_CAP_ID_SRIOV, 1, PCI_EXT_CAP_SRIOV_SIZEOF, PCI_SRIOV_CAP_REGS, bits)
        for name, value in (("INITIAL_VF", params.total_vfs), ("TOTAL_VF", params.total_vfs),
                            ("FUNC_LINK", pci_routing_id(self.pf_bdf) & 0xFF), ("VF_OFFSET", params.first_vf_offset),
                            ("VF_STRIDE", params.vf_stride), ("VF_DID", params.vf_device_id),
                            ("SUP_PGSIZE", params.supported_page_sizes)):
            self._set(name, value)
        self.vf_bars = {bar.index: bar for bar in params.vf_bars}
        self.vfs: list[tuple[Bdf, PciFunction]] = []
        self._ctrl = self._num_vfs = 0
        self._page = self._get("SYS_PGSIZE")
        self._decoded: dict[tuple[int, int], int | None] = {}
        self._vf_listeners: list[VfListener] = []
        self._bar_listeners: list[VfBarListener] = []
        self._size_vf_bars()
        pf.add_config_hook(self.cap, self.cap + PCI_EXT_CAP_SRIOV_SIZEOF, self._written)

    # --- hypervisor subscriptions ----------------------------------------
    def on_vf_change(self, callback: VfListener) -> None:
        """``callback(n, bdf, fn)`` once VF ``n`` is plugged in, ``callback(n, bdf, None)`` once it is gone."""
        self._vf_listeners.append(callback)

    def on_vf_bar_change(self, callback: VfBarListener) -> None:
        """``callback(n, index, address, size)`` when VF ``n``'s BAR ``index``
        starts decoding, moves, or stops (address None)."""
        self._bar_listeners.append(callback)

    # --- state ---------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return bool(self._ctrl & PCI_SRIOV_CTRL_VFE)

    @property
    def num_vfs(self) -> int:
        return self._num_vfs

    @property
    def page_size(self) -> int:
        return self._page << PCI_SRIOV_PGSIZE_SHIFT

    def vf_identity(self) -> tuple[int, int]:
        """(vendor, device) software gives every VF: the PF's Vendor ID and the VF Device ID."""
        return self.pf.config.get(PCI_VENDOR_ID, 2), self.params.vf_device_id

    def vf_bdf(self, n: int) -> Bdf:
        return pci_routing_id_bdf(pci_routing_id(self.pf_bdf) + self.params.first_vf_offset + n * self.params.vf_stride)

    def vf_bar_size(self, index: int) -> int:
        """One VF's share: a VF BAR consumes whole System Pages (§9.3.3.13)."""
        return max(self.vf_bars[index].size, self.page_size)

    def aperture(self, index: int) -> int:
        """What VF BAR ``index`` decodes in all: the per-VF size times NumVFs."""
        return self.vf_bar_size(index) * self._num_vfs

    def vf_bar_base(self, index: int) -> int:
        at = self.cap + pci_sriov_bar(index)
        high = self.pf.config.get(at + 4, 4) if self.vf_bars[index].kind == "mem64" else 0
        return high << 32 | self.pf.config.get(at, 4) & PCI_BASE_ADDRESS_MEM_MASK

    def vf_bar_address(self, n: int, index: int) -> int | None:
        """Where VF ``n`` decodes BAR ``index``, or None unless VF Enable and VF MSE are set."""
        if self._ctrl & _DECODE != _DECODE or not 0 <= n < len(self.vfs):
            return None
        return self.vf_bar_base(index) + n * self.vf_bar_size(index)

    # --- configuration writes ------------------------------------------------
    def _get(self, name: str) -> int:
        return self.pf.config.get_reg(PCI_SRIOV_CAP_REGS[name], self.cap)

    def _set(self, name: str, value: int) -> None:
        self.pf.config.set_reg(PCI_SRIOV_CAP_REGS[name], value, self.cap)

    def _written(self) -> None:
        """After a write into the capability.  NumVFs, System Page Size and
        SR-IOV Control sit in different DWORDs, so one write changes at most
        one of them and ``enabled`` is still the state before it."""
        self._num_vfs = self._take("NUM_VF", self._num_vfs, lambda n: n <= self.params.total_vfs)
        page = self._take("SYS_PGSIZE", self._page,
                          lambda p: not p & (p - 1) and bool(p & self.params.supported_page_sizes))
        if page != self._page:
            self._page = page
            self._size_vf_bars()
        ctrl = self._get("CTRL")
        rising, falling = ctrl & ~self._ctrl & PCI_SRIOV_CTRL_VFE, self._ctrl & ~ctrl & PCI_SRIOV_CTRL_VFE
        self._ctrl = ctrl
        if rising:
            self._plug_vfs()
        self._update_vf_bars()
        if falling:
            self._unplug_vfs()

    def _take(self, name: str, current: int, valid: Callable[[int], bool]) -> int:
        """The register's new value, or ``current`` put back when the write is refused."""
        value = self._get(name)
        if value != current and (self.enabled or not valid(value)):
            self._set(name, current)
            return current
        return value

    def _size_vf_bars(self) -> None:
        """A VF BAR's writable address bits start at the per-VF size; low bits already written are dropped."""
        cfg = self.pf.config
        for index, bar in self.vf_bars.items():
            mask = ~(self.vf_bar_size(index) - 1) & _U64
            at = self.cap + pci_sriov_bar(index)
            cfg.set(at, 4, bar.flags | cfg.get(at, 4) & mask & PCI_BASE_ADDRESS_MEM_MASK)
            cfg.set_wmask(at, 4, mask & PCI_BASE_ADDRESS_MEM_MASK)
            if bar.kind == "mem64":
                cfg.set_wmask(at + 4, 4, mask >> 32)

    # --- VFs -------------------------------------------------------------------
    def _plug_vfs(self) -> None:
        """VF Enable: NumVFs VFs, fresh from reset, at their Routing IDs (§9.3.3.3.1)."""
        for n in range(self._num_vfs):
            fn = self._make_vf(n)
            self._conform(fn)
            bdf = self.vf_bdf(n)
            self.bus.attach(fn, bdf.device, bdf.function)
            self.vfs.append((bdf, fn))
            for callback in self._vf_listeners:
                callback(n, bdf, fn)

    def _unplug_vfs(self) -> None:
        while self.vfs:
            bdf, _ = self.vfs.pop()
            self.bus.detach(bdf.device, bdf.function)
            for callback in self._vf_listeners:
                callback(len(self.vfs), bdf, None)
        self._decoded.clear()

    def _update_vf_bars(self) -> None:
        for n in range(len(self.vfs)):
            for index in self.vf_bars:
                address = self.vf_bar_address(n, index)
                if address != self._decoded.get((n, index)):
                    self._decoded[n, index] = address
                    for callback in self._bar_listeners:
                        callback(n, index, address, self.vf_bar_size(index))

    def _conform(self, fn: PciFunction) -> None:
        """The factory declares the VF's BARs as the PF's VF BARs describe
        them (for its MSI-X table and its register handlers); what the VF's
        own header shows is fixed by §9.3.4.1."""
        declared = {i: (bar.kind, bar.size) for i, bar in fn.bars.items()}
        expected = {i: (bar.kind, bar.size) for i, bar in self.vf_bars.items()}
        if declared != expected:
            raise ValueError(f"make_vf: the VF declares BARs {declared}, the PF's VF BARs are {expected}")
        _conform_vf_header(fn.config)

    def _check_routing(self) -> None:
        """iovirt models one bus per PF: every VF up to TotalVFs must land on it."""
        last = self.params.total_vfs - 1
        rid = pci_routing_id(self.pf_bdf) + self.params.first_vf_offset + last * self.params.vf_stride
        if rid >> 8 != self.pf_bdf.bus:
            raise ValueError(f"SR-IOV on {self.pf_bdf}: VF {last} would have Routing ID {rid:#06x}, "
                             f"off bus {self.pf_bdf.bus:02x}")


def _conform_vf_header(cfg: ConfigSpace) -> None:
    """Vendor and Device ID read FFFFh, BARs are RO zero, COMMAND keeps only
    Bus Master Enable (memory decoding is the PF's VF MSE; VFs have no I/O
    space), Interrupt Pin 0: VFs have no INTx (§9.3.4.1)."""
    cfg.set(PCI_VENDOR_ID, 4, 0xFFFFFFFF)
    cfg.set_wmask(PCI_VENDOR_ID, 4, 0)
    for index in range(PCI_STD_NUM_BARS):
        cfg.set(pci_base_address(index), 4, 0)
        cfg.set_wmask(pci_base_address(index), 4, 0)
    cfg.set(PCI_COMMAND, 2, cfg.get(PCI_COMMAND, 2) & PCI_COMMAND_MASTER)
    cfg.set_wmask(PCI_COMMAND, 2, PCI_COMMAND_MASTER)
    cfg.set(PCI_INTERRUPT_PIN, 1, 0)


def _slot_of(bus: PciBus, fn: PciFunction) -> Bdf:
    for bdf, present in bus.functions():
        if present is fn:
            return bdf
    raise ValueError("SR-IOV: attach the PF to its bus before adding the capability")


# --- host side: Linux drivers/pci/iov.c --------------------------------------------
class ConfigAccess(Protocol):
    """The PF's configuration space as the host kernel reaches it (a
    PciFunction, or a bridge bound to the PF's address)."""

    def config_read(self, offset: int, size: int) -> int: ...
    def config_write(self, offset: int, size: int, value: int) -> None: ...


class VfResourceError(RuntimeError):
    """The VF BAR apertures do not fit in the MMIO window."""


@dataclass(frozen=True)
class HostVf:
    """One enabled VF as the host kernel records it (``pci_iov_add_virtfn``)."""

    index: int
    bdf: Bdf
    vendor: int
    device: int
    bars: dict[int, tuple[str, int, int]]  # BAR index: (kind, address, size)


def find_ext_capability(config: ConfigAccess, cap_id: int) -> int | None:
    """Offset of the first extended capability ``cap_id``, walking from 0x100
    with a bound against loops (Linux ``pci_find_ext_capability``)."""
    offset = PCI_EXT_CAP_START
    for _ in range(PCI_EXT_CAP_LIST_TTL):
        header = config.config_read(offset, 4)
        if header in (0, 0xFFFFFFFF):
            return None
        if PCI_EXT_CAP_ID(header) == cap_id:
            return offset
        offset = PCI_EXT_CAP_NEXT(header)
        if offset < PCI_EXT_CAP_START:
            return None
    return None


class HostSriov:
    """The host kernel's SR-IOV support for one PF.  At probe (``sriov_init``)
    VFs are switched off, the System Page Size becomes the smallest supported
    page at least ``host_page_size``, each VF BAR is sized by writing all ones
    and gets an aperture for TotalVFs in ``window``, aligned to the per-VF
    size so every VF's BAR is naturally aligned."""

    def __init__(self, config: ConfigAccess, pf_bdf: Bdf, window: tuple[int, int],
                 host_page_size: int = 1 << PCI_SRIOV_PGSIZE_SHIFT) -> None:
        self.config, self.pf_bdf = config, pf_bdf
        cap = find_ext_capability(config, PCI_EXT_CAP_ID_SRIOV)
        if cap is None:
            raise ValueError(f"{pf_bdf}: no SR-IOV capability")
        self.cap = cap
        self._write(PCI_SRIOV_CTRL, 2, self._read(PCI_SRIOV_CTRL, 2) & ~_DECODE)
        self.total_vfs = self._read(PCI_SRIOV_TOTAL_VF, 2)
        self.page_size = self._choose_page_size(host_page_size)
        self.bars = self._size_vf_bars()
        self.bases = self._place(window)
        self.vfs: list[HostVf] = []

    def _read(self, reg: int, size: int) -> int:
        return self.config.config_read(self.cap + reg, size)

    def _write(self, reg: int, size: int, value: int) -> None:
        self.config.config_write(self.cap + reg, size, value)

    def _choose_page_size(self, host_page_size: int) -> int:
        supported = self._read(PCI_SRIOV_SUP_PGSIZE, 4) & ~((host_page_size >> PCI_SRIOV_PGSIZE_SHIFT) - 1)
        if not supported:
            raise ValueError(f"{self.pf_bdf}: no supported VF page of {host_page_size} bytes or more")
        page = supported & -supported
        self._write(PCI_SRIOV_SYS_PGSIZE, 4, page)
        return page << PCI_SRIOV_PGSIZE_SHIFT

    def _probe(self, reg: int) -> int:
        """What a VF BAR register reads after all ones are written; restored after."""
        original = self._read(reg, 4)
        self._write(reg, 4, 0xFFFFFFFF)
        mask = self._read(reg, 4)
        self._write(reg, 4, original)
        return mask

    def _size_vf_bars(self) -> dict[int, tuple[str, int]]:
        """BAR index: (kind, per-VF size); the size is the lowest writable address bit."""
        bars, index = {}, 0
        while index < PCI_SRIOV_NUM_BARS:
            reg = pci_sriov_bar(index)
            low = self._probe(reg)
            is64 = low & PCI_BASE_ADDRESS_MEM_TYPE_MASK == PCI_BASE_ADDRESS_MEM_TYPE_64
            mask = (self._probe(reg + 4) << 32 if is64 else 0) | low & PCI_BASE_ADDRESS_MEM_MASK
            if mask:
                bars[index] = ("mem64" if is64 else "mem32", mask & -mask)
            index += 2 if is64 else 1
        return bars

    def _place(self, window: tuple[int, int]) -> dict[int, int]:
        """Apertures largest first, so natural alignment leaves no holes."""
        start, limit = window
        bases = {}
        for index, (kind, size) in sorted(self.bars.items(), key=lambda item: -item[1][1]):
            base = (start + size - 1) & ~(size - 1)
            end = base + size * self.total_vfs
            if end > limit or (kind == "mem32" and end > 1 << 32):
                raise VfResourceError(f"{self.pf_bdf}: VF BAR{index} needs {self.total_vfs} x {size:#x} bytes "
                                      f"from {base:#x}, past the window's end {limit:#x}")
            self._write(pci_sriov_bar(index), 4, base & 0xFFFFFFFF)
            if kind == "mem64":
                self._write(pci_sriov_bar(index) + 4, 4, base >> 32)
            bases[index], start = base, end
        return bases

    def enable_vfs(self, count: int) -> list[HostVf]:
        """``echo count > sriov_numvfs``: 0 disables; a different non-zero
        count needs a disable first (Linux answers EBUSY)."""
        if not 0 <= count <= self.total_vfs:
            raise ValueError(f"{self.pf_bdf}: {count} VFs requested, but TotalVFs is {self.total_vfs}")
        if count == len(self.vfs):
            return self.vfs
        if count and self.vfs:
            raise ValueError(f"{self.pf_bdf}: {len(self.vfs)} VFs already enabled; disable before enabling {count}")
        if not count:
            self._write(PCI_SRIOV_CTRL, 2, self._read(PCI_SRIOV_CTRL, 2) & ~_DECODE)
            self._write(PCI_SRIOV_NUM_VF, 2, 0)
            self.vfs = []
            return self.vfs
        self._write(PCI_SRIOV_NUM_VF, 2, count)
        offset, stride = self._read(PCI_SRIOV_VF_OFFSET, 2), self._read(PCI_SRIOV_VF_STRIDE, 2)  # may follow NumVFs
        self._write(PCI_SRIOV_CTRL, 2, self._read(PCI_SRIOV_CTRL, 2) | _DECODE)
        vendor, device = self.config.config_read(PCI_VENDOR_ID, 2), self._read(PCI_SRIOV_VF_DID, 2)
        first = pci_routing_id(self.pf_bdf) + offset
        self.vfs = [HostVf(n, pci_routing_id_bdf(first + n * stride), vendor, device,
                           {i: (kind, self.bases[i] + n * size, size) for i, (kind, size) in self.bars.items()})
                    for n in range(count)]
        return self.vfs
