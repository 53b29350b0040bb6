"""The device registry: each device model's module declares it once, as a
module-level ``DEVICE = DeviceEntry(...)``; :func:`registry` finds them all.
The wirings, the catalogue, the claims and the tests read the device list
from here, so a new model needs no edit anywhere else.

:class:`DeviceModel` is the contract a PCI device model keeps with the wiring
that hosts it (docs/architecture.md, "The device contract")."""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import import_module
from typing import Any, ClassVar, Protocol

from ..pci.function import PciFunction
from ..sim.resource import Resource
from .vmstate import VmState

# The hypervisors that assign a PCI function to a VM, and how
ASSIGNERS = ("QEMU/KVM (VFIO)", "Xen (pciback)", "VMware ESXi (DirectPath I/O)", "Hyper-V (DDA)")

Read = Callable[[Resource, int, int], int]                 # (cpu, offset, size) -> value
Write = Callable[[Resource, int, int, int], None]          # (cpu, offset, size, value)


class DeviceModel(Protocol):
    """What a wiring uses of a PCI device model."""

    NAME: ClassVar[str]                         # the catalogue name
    VMSTATE: ClassVar[VmState | None]           # its state as a table; None: MIGRATION_BLOCKER says why not
    pci: PciFunction                            # configuration space, BARs, MSI / MSI-X
    port: Any                                   # the backend, set by the wiring: send(cpu, frame), flush(cpu)
    place: str                                  # where its drops are counted (host/vm/device), set by the wiring
    errors: Mapping[str, int]                   # its own counters, what ``ethtool -S`` shows

    def bar_handlers(self, index: int) -> tuple[Read, Write]: ...

    def can_receive(self, size: int) -> bool: ...

    def receive(self, cpu: Resource, frame: bytes) -> None: ...

    def resume(self, cpu: Resource) -> None: ...


@dataclass(frozen=True)
class DeviceEntry:
    """One device model as the catalogue offers it."""

    model: type                                 # the device model's class
    kind: str                                   # the I/O model: emulated, paravirt, passthrough, sriov
    emulates: str
    used_by: tuple[str, ...]                    # the hypervisors that offer it
    driver: str                                 # the guest driver's module: guest/drivers/<driver>.py
    pci_id: tuple[int, int] | None = None       # (vendor, device) the guest's driver binds; None: not PCI (xenbus)
    backends: tuple[str, ...] = ()              # the first is the default
    hypervisor: str | None = None               # the only hypervisor that offers it, if one
    offloads: tuple[str, ...] = ()              # what the device does for the guest's stack (ethtool -k names)
    status: str = "implemented"
    variants: tuple[str, ...] = ()              # the chips it can be (the model's ``variant``); the first is the default
    variant_ids: tuple[tuple[int, int], ...] = ()  # the other variants' PCI IDs, which its driver binds too
    variant_on: tuple[tuple[str, str], ...] = ()   # (hypervisor, variant): the one a hypervisor's hosts offer

    def variant_for(self, hypervisor: str) -> str | None:
        """The variant a ``hypervisor`` host gives a NIC that names none (None: the model has none)."""
        return dict(self.variant_on).get(hypervisor, self.variants[0]) if self.variants else None

    @property
    def name(self) -> str:
        return self.model.NAME

    @property
    def pci_ids(self) -> tuple[tuple[int, int], ...]:
        """Every (vendor, device) ID the model answers with, its variants' included."""
        return () if self.pci_id is None else (self.pci_id, *self.variant_ids)

    @property
    def vmstate(self) -> VmState | None:
        return self.model.VMSTATE


@lru_cache(maxsize=None)
def registry() -> dict[str, DeviceEntry]:
    """Every declared device model by name, in module order."""
    package = import_module(__package__)
    entries = (vars(import_module(f"{__package__}.{info.name}")).get("DEVICE")
               for info in pkgutil.iter_modules(package.__path__))
    return {entry.name: entry for entry in entries if isinstance(entry, DeviceEntry)}
