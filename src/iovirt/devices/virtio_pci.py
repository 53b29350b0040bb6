"""virtio over PCI, modern interface (virtio 1.1 section 4.1), laid out as
QEMU's virtio-pci does: MSI-X table in BAR1, and in BAR4 the common
configuration, ISR, device configuration and notification regions, each
announced by a vendor-specific capability.

The transport owns the status state machine (2.1), feature negotiation
(2.2) and queue configuration; a device subclass (virtio-net) supplies its
features, configuration space and queue handlers.  Hooks set by the
hypervisor wiring: ``kick_hook(cpu, queue)`` for a doorbell write,
``msi_hook(cpu, vector)`` for MSI-X, ``irq(cpu, level)`` for INTx."""

from __future__ import annotations

from collections import Counter
from typing import Callable

from ..mem.dma import Dma
from ..pci.function import Bar, PciFunction
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import virtio as v
from ..spec.pci import PCI_CAP_ID_VNDR
from .virtqueue import Virtqueue
from .vmstate import PCI_FUNCTION, Counts, Nested, NestedList, UInt

_C = v.COMMON
_RING_ADDR = {_C["queue_desc"]: "desc", _C["queue_driver"]: "avail", _C["queue_device"]: "used"}
_QUEUE_FIELDS = {_C["queue_size"], _C["queue_msix_vector"], _C["queue_enable"], _C["queue_notify_off"],
                 _C["queue_desc"], _C["queue_desc"] + 4, _C["queue_driver"], _C["queue_driver"] + 4,
                 _C["queue_device"], _C["queue_device"] + 4}


class VirtioPciDevice:
    DEVICE_ID = 0
    CLASS = 0
    FEATURES = 1 << v.VIRTIO_F_VERSION_1 | 1 << v.VIRTIO_RING_F_EVENT_IDX | 1 << v.VIRTIO_RING_F_INDIRECT_DESC

    def __init__(self, sim: Sim, dma: Dma, num_queues: int) -> None:
        self.sim = sim
        self.dma = dma
        self.errors: Counter[str] = Counter()
        self.place = self.NAME                  # where its drops are counted (the wiring names it)
        self.kick_hook: Callable[[Resource, int], None] | None = None
        self.msi_hook: Callable[[Resource, int], None] | None = None
        self.irq: Callable[[Resource, int], None] | None = None
        self.queues = [Virtqueue(i, dma, v.QUEUE_SIZE_MAX) for i in range(num_queues)]
        self.pci = PciFunction(v.VENDOR_ID, self.DEVICE_ID, self.CLASS, revision=v.REVISION,
                               subsystem_vendor_id=v.VENDOR_ID, subsystem_id=0x1100,
                               bars=(Bar(v.MSIX_BAR, v.MSIX_BAR_SIZE, "mem32"),
                                     Bar(v.MODERN_BAR, v.MODERN_BAR_SIZE, "mem64", prefetchable=True)))
        self.pci.add_msix(v.MSIX_BAR, 0, v.MSIX_BAR, v.MSIX_PBA_OFFSET, num_queues + 1)
        for cfg_type, offset in ((v.VIRTIO_PCI_CAP_COMMON_CFG, v.COMMON_OFFSET), (v.VIRTIO_PCI_CAP_ISR_CFG, v.ISR_OFFSET),
                                 (v.VIRTIO_PCI_CAP_DEVICE_CFG, v.DEVICE_OFFSET),
                                 (v.VIRTIO_PCI_CAP_NOTIFY_CFG, v.NOTIFY_OFFSET)):
            self._vendor_cap(cfg_type, offset)
        self.reset()

    def _vendor_cap(self, cfg_type: int, offset: int) -> None:
        """4.1.4: a virtio_pci_cap (the notify one 4 bytes longer) pointing into BAR4."""
        notify = cfg_type == v.VIRTIO_PCI_CAP_NOTIFY_CFG
        size = v.PCI_CAP.size + 4 * notify
        at = self.pci.add_capability(PCI_CAP_ID_VNDR, size)
        cfg = self.pci.config
        for field, value in (("cap_len", size), ("cfg_type", cfg_type), ("bar", v.MODERN_BAR),
                             ("offset", offset), ("length", v.REGION_SIZE)):
            cfg.set(at + v.PCI_CAP.offset(field), v.PCI_CAP.widths[field], value)
        if notify:
            cfg.set(at + v.NOTIFY_OFF_MULTIPLIER, 4, v.NOTIFY_MULTIPLIER)

    # ---- 2.1 status / 2.2 features / reset -----------------------------------
    def reset(self) -> None:
        self.status = 0
        self.isr = 0
        self.config_generation = 0
        self.device_feature_select = self.driver_feature_select = 0
        self.driver_features = 0
        self.queue_select = 0
        self.config_msix_vector = v.VIRTIO_MSI_NO_VECTOR
        for q in self.queues:
            q.reset()

    def has(self, bit: int) -> bool:
        return bool(self.driver_features >> bit & 1)

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        self._status = value
        self.live = bool(value & v.DRIVER_OK and not value & v.DEVICE_NEEDS_RESET)    # the queues run

    def _write_status(self, cpu: Resource, value: int) -> None:
        value &= 0xFF
        if value == 0:
            self.reset()
            self._irq_level(cpu, 0)
            return
        if value & v.FEATURES_OK and not self.status & v.FEATURES_OK:
            if self.driver_features & ~self.FEATURES or not self.has(v.VIRTIO_F_VERSION_1):
                value &= ~v.FEATURES_OK            # 2.2.2: refuse; the driver re-reads and gives up
            else:
                for q in self.queues:
                    q.event_idx = self.has(v.VIRTIO_RING_F_EVENT_IDX)
                    q.indirect = self.has(v.VIRTIO_RING_F_INDIRECT_DESC)
        self.status = value | (self.status & v.DEVICE_NEEDS_RESET)

    def needs_reset(self, cpu: Resource, reason: str) -> None:
        """2.1.2: the device has hit an error it cannot recover from."""
        self.errors[reason.split(":")[0]] += 1
        self.errors["needs_reset"] += 1
        if not self.status & v.DEVICE_NEEDS_RESET:
            self.status |= v.DEVICE_NEEDS_RESET
            self.config_generation = (self.config_generation + 1) & 0xFF
            self._interrupt(cpu, self.config_msix_vector, v.VIRTIO_PCI_ISR_CONFIG)

    # ---- BAR accesses ------------------------------------------------------------
    def bar_handlers(self, index: int):
        return (self.msix_read, self.msix_write) if index == v.MSIX_BAR else (self.modern_read, self.modern_write)

    def msix_read(self, cpu: Resource, offset: int, size: int) -> int:
        return self.pci.msix.read(v.MSIX_BAR, offset, size)

    def msix_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        self.pci.msix.write(v.MSIX_BAR, offset, size, value)

    def modern_read(self, cpu: Resource, offset: int, size: int) -> int:
        region, off = offset & ~(v.REGION_SIZE - 1), offset & (v.REGION_SIZE - 1)
        if region == v.COMMON_OFFSET:
            return self._common_read(off, size)
        if region == v.ISR_OFFSET:
            isr, self.isr = self.isr, 0            # 4.1.4.5.1: reading clears, deasserts INTx
            self._irq_level(cpu, 0)
            return isr
        if region == v.DEVICE_OFFSET:
            return self.config_read(off, size)
        return 0

    def modern_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        region, off = offset & ~(v.REGION_SIZE - 1), offset & (v.REGION_SIZE - 1)
        if region == v.COMMON_OFFSET:
            self._common_write(cpu, off, size, value)
        elif region == v.NOTIFY_OFFSET:
            q = off // v.NOTIFY_MULTIPLIER
            if q < len(self.queues) and self.kick_hook is not None:
                self.kick_hook(cpu, q)

    def _queue(self) -> Virtqueue | None:
        return self.queues[self.queue_select] if self.queue_select < len(self.queues) else None

    def _common_read(self, off: int, size: int) -> int:
        q = self._queue()
        if off in _QUEUE_FIELDS and q is None:
            return 0
        value = {
            _C["device_feature_select"]: self.device_feature_select,
            _C["device_feature"]: (self.FEATURES >> (32 * self.device_feature_select)) & 0xFFFFFFFF
            if self.device_feature_select < 2 else 0,
            _C["driver_feature_select"]: self.driver_feature_select,
            _C["driver_feature"]: (self.driver_features >> (32 * self.driver_feature_select)) & 0xFFFFFFFF,
            _C["config_msix_vector"]: self.config_msix_vector,
            _C["num_queues"]: len(self.queues),
            _C["device_status"]: self.status,
            _C["config_generation"]: self.config_generation,
            _C["queue_select"]: self.queue_select,
        }.get(off)
        if value is not None:
            return value
        if q is None:
            return 0
        if (attr := _RING_ADDR.get(off & ~7)) is not None:
            return getattr(q, attr) >> (off & 4) * 8 & 0xFFFFFFFF
        return {_C["queue_size"]: q.size, _C["queue_msix_vector"]: q.msix_vector,
                _C["queue_enable"]: int(q.enabled), _C["queue_notify_off"]: q.notify_off}.get(off, 0)

    def _common_write(self, cpu: Resource, off: int, size: int, value: int) -> None:
        if off == _C["device_feature_select"]:
            self.device_feature_select = value
        elif off == _C["driver_feature_select"]:
            self.driver_feature_select = value
        elif off == _C["driver_feature"] and self.driver_feature_select < 2 and not self.status & v.FEATURES_OK:
            shift = 32 * self.driver_feature_select
            self.driver_features = self.driver_features & ~(0xFFFFFFFF << shift) | (value & 0xFFFFFFFF) << shift
        elif off == _C["config_msix_vector"]:
            self.config_msix_vector = self._vector(value)
        elif off == _C["device_status"]:
            self._write_status(cpu, value)
        elif off == _C["queue_select"]:
            self.queue_select = value & 0xFFFF
        elif (q := self._queue()) is not None:
            self._queue_write(q, off, value)

    def _vector(self, value: int) -> int:
        """4.1.5.1.2.1: a vector beyond the MSI-X table cannot be mapped; the
        field then reads NO_VECTOR, which is how the driver learns it failed."""
        value &= 0xFFFF
        return value if value < self.pci.msix.vectors else v.VIRTIO_MSI_NO_VECTOR

    def _queue_write(self, q: Virtqueue, off: int, value: int) -> None:
        if off == _C["queue_msix_vector"]:
            q.msix_vector = self._vector(value)
            return
        if q.enabled:                              # 4.1.4.3.2: fixed once enabled
            return
        if off == _C["queue_size"]:
            if value and not value & (value - 1) and value <= q.max_size:
                q.size = value
        elif off == _C["queue_enable"]:
            q.enabled = value == 1
        elif (attr := _RING_ADDR.get(off & ~7)) is not None:
            shift = (off & 4) * 8                  # 64-bit fields written as two dwords
            setattr(q, attr, getattr(q, attr) & ~(0xFFFFFFFF << shift) | (value & 0xFFFFFFFF) << shift)

    # ---- interrupts (4.1.5.4 / 4.1.5.5) ------------------------------------------
    def notify_queue(self, cpu: Resource, q: Virtqueue) -> None:
        self._interrupt(cpu, q.msix_vector, v.VIRTIO_PCI_ISR_QUEUE)

    def _interrupt(self, cpu: Resource, vector: int, isr_bit: int) -> None:
        if self.pci.interrupt_mode == "msix":
            if vector != v.VIRTIO_MSI_NO_VECTOR and self.msi_hook is not None:
                self.msi_hook(cpu, vector)
            return
        self.isr |= isr_bit
        self._irq_level(cpu, 1)

    def _irq_level(self, cpu: Resource, level: int) -> None:
        if self.irq is not None:
            self.irq(cpu, level)

    def config_read(self, offset: int, size: int) -> int:
        raise NotImplementedError

    # ---- live migration ----------------------------------------------------------------
    def resume(self, cpu: Resource) -> None:
        """The VM runs after a load: ring each enabled queue's doorbell, so the
        backend takes what the driver made available before the save (QEMU
        virtio_device_start_ioeventfd: "kick right away to begin processing
        requests already in vring")."""
        if self.live and self.kick_hook is not None:
            for q in self.queues:
                if q.enabled:
                    self.kick_hook(cpu, q.index)


# ---- live migration: what a restored transport may hold (QEMU virtio_load and virtio_pci_load_config) ----
def _vector_problem(vector: int, dev: VirtioPciDevice) -> str | None:
    """4.1.5.1.2.1: a vector the MSI-X table has, or NO_VECTOR (QEMU: msix_vector_use fails the load)."""
    vectors = dev.pci.msix.vectors
    if vector < vectors or vector == v.VIRTIO_MSI_NO_VECTOR:
        return None
    return f"MSI-X vector {vector}, the function has {vectors} (or NO_VECTOR)"


def _features_problem(features: int, dev: VirtioPciDevice, staged: dict) -> str | None:
    """Once FEATURES_OK is set the driver's features are a subset of the device's (2.2.2;
    QEMU virtio_load: "Features ... unsupported")."""
    if staged["status"] & v.FEATURES_OK and features & ~dev.FEATURES:
        return f"{features:#x} accepted (FEATURES_OK) with bits the device does not offer ({dev.FEATURES:#x})"
    return None


def _queues_problem(queues: list[dict], dev: VirtioPciDevice, staged: dict) -> str | None:
    """Each queue's size is what a write of queue_size could leave (a power of two up to the
    device's maximum: a 0 would divide), its vector one of the table's."""
    for q, target in zip(queues, dev.queues):
        size = q["size"]
        if not size or size & (size - 1) or size > target.max_size:
            return f"queue {target.index}: size {size}, not a power of two up to {target.max_size}"
        problem = _vector_problem(q["msix_vector"], dev)
        if problem:
            return f"queue {target.index}: {problem}"
    return None


TRANSPORT_STATE = (                      # what a virtio-pci device's VMSTATE starts with
    UInt("status", 8), UInt("isr", 8), UInt("config_generation", 8), UInt("device_feature_select", 32),
    UInt("driver_feature_select", 32), UInt("driver_features", 64, check=_features_problem),
    UInt("queue_select", 16),
    UInt("config_msix_vector", 16, check=lambda vector, dev, staged: _vector_problem(vector, dev)),
    Counts("errors"), NestedList("queues", Virtqueue.VMSTATE, check=_queues_problem),
    Nested("pci", PCI_FUNCTION))
