"""The device catalogue: every NIC a scenario can give a VM, and the physical
NICs a host can have.  The implemented ones are the device registry's; the
planned ones are listed here until their model lands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..devices.registry import DeviceEntry, registry

Model = Literal["emulated", "paravirt", "passthrough", "sriov"]
MODELS: tuple[str, ...] = get_args(Model)
UPLINK_MODELS = ("passthrough", "sriov")  # the models that take a physical NIC
NicKind = Literal["x82599"]


@dataclass(frozen=True)
class Device:
    name: str
    model: Model
    emulates: str
    used_by: tuple[str, ...]
    implemented: bool = False
    backends: tuple[str, ...] = ()  # the first is the default
    hypervisor: str | None = None  # the only hypervisor that offers it, if one
    offloads: tuple[str, ...] = ()  # what the device does for the guest's stack (ethtool -k names)

    @property
    def status(self) -> str:
        return "implemented" if self.implemented else "planned"

    def offered_on(self, hypervisor: str) -> bool:
        """Whether a ``hypervisor`` host offers this device: its own hypervisor's
        only, if it has one; on a host with a closed catalogue (ESXi), the ones that
        list it in ``used_by``."""
        if self.hypervisor is not None:
            return hypervisor == self.hypervisor
        closed = CLOSED_CATALOGUES.get(hypervisor)
        return closed is None or any(user.split(" (")[0] in closed for user in self.used_by)   # "VMware ESXi (DirectPath I/O)"

    def needs(self) -> str:
        """Why a host may not offer it, in a scenario error's words."""
        if self.hypervisor is not None:
            return f"needs hypervisor: {self.hypervisor}"
        return f"is offered by {', '.join(self.used_by)} only"


@dataclass(frozen=True)
class PhysicalNic:
    kind: NicKind
    describes: str
    link_gbps: float
    max_vfs: int


# Hypervisors that offer their own list of virtual devices only, by the names their devices' ``used_by`` give them
# (Hyper-V assigns an 82599 function, or a VF for accelerated networking, by Discrete Device Assignment)
CLOSED_CATALOGUES = {"esxi": ("VMware ESXi",), "hyperv": ("Hyper-V", "Hyper-V (DDA)")}

PLANNED: tuple[Device, ...] = ()


def _device(entry: DeviceEntry) -> Device:
    return Device(entry.name, entry.kind, entry.emulates, entry.used_by, entry.status == "implemented",
                  entry.backends, entry.hypervisor, entry.offloads)


# Every device model as its module declares it (devices/registry.py), then the planned ones, by I/O model.
DEVICES: dict[str, Device] = {
    d.name: d for model in MODELS
    for d in (*map(_device, registry().values()), *PLANNED) if d.model == model
}

PHYSICAL_NICS: dict[str, PhysicalNic] = {
    # 64 pools, one kept for the PF: Linux ixgbe's IXGBE_MAX_VFS_DRV_LIMIT is 63
    "x82599": PhysicalNic("x82599", "Intel 82599 10 GbE, SR-IOV", link_gbps=10.0, max_vfs=63),
}


def devices_for(model: str) -> list[str]:
    return [d.name for d in DEVICES.values() if d.model == model]


def implemented_devices() -> list[str]:
    return [d.name for d in DEVICES.values() if d.implemented]
