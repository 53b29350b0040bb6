"""The device catalogue: every NIC a scenario can give a VM, and the physical
NICs a host can have. Flip ``implemented`` when a device model lands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Model = Literal["emulated", "paravirt", "passthrough", "sriov"]
MODELS: tuple[str, ...] = get_args(Model)
UPLINK_MODELS = ("passthrough", "sriov")  # the models that take a physical NIC
NicKind = Literal["x82599"]

_ASSIGNERS = ("QEMU/KVM (VFIO)", "Xen (pciback)", "VMware ESXi (DirectPath I/O)", "Hyper-V (DDA)")


@dataclass(frozen=True)
class Device:
    name: str
    model: Model
    emulates: str
    used_by: tuple[str, ...]
    implemented: bool = False
    backends: tuple[str, ...] = ()  # the first is the default
    hypervisor: str | None = None  # the only hypervisor that offers it, if one

    @property
    def status(self) -> str:
        return "implemented" if self.implemented else "planned"


@dataclass(frozen=True)
class PhysicalNic:
    kind: NicKind
    describes: str
    link_gbps: float
    max_vfs: int


DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device("e1000", "emulated", "Intel 82540EM gigabit (8254x SDM)",
               ("QEMU/KVM", "Xen HVM", "VMware ESXi", "VirtualBox"), implemented=True),
        Device("rtl8139", "emulated", "Realtek RTL8139C+ 100 Mbit", ("QEMU/KVM", "Xen HVM"), implemented=True),
        Device("pcnet", "emulated", "AMD Am79C970A PCnet-PCI II (VMware 'Vlance')",
               ("QEMU/KVM", "VMware ESXi", "VirtualBox"), implemented=True),
        Device("tulip", "emulated", "DEC 21140/21143 Tulip (Hyper-V's legacy NIC; 21143 PCI ID as in QEMU)",
               ("Hyper-V",), implemented=True),
        Device("virtio-net", "paravirt", "virtio 1.x network device", ("QEMU/KVM", "Firecracker"),
               implemented=True, backends=("qemu", "vhost-net", "vhost-user"), hypervisor="kvm"),
        Device("xen-netfront", "paravirt", "Xen PV netif (shared rings, grant tables, event channels)",
               ("Xen",), implemented=True, hypervisor="xen"),
        Device("vmxnet3", "paravirt", "VMware VMXNET3 paravirtual NIC", ("VMware ESXi", "QEMU/KVM")),
        Device("netvsc", "paravirt", "Hyper-V synthetic NIC (NetVSC over VMBus)", ("Hyper-V",)),
        Device("ixgbe", "passthrough", "Intel 82599 10 GbE physical function, assigned whole via the IOMMU",
               _ASSIGNERS, implemented=True),
        Device("ixgbevf", "sriov", "Intel 82599 SR-IOV virtual function", _ASSIGNERS, implemented=True),
    )
}

PHYSICAL_NICS: dict[str, PhysicalNic] = {
    # 64 pools, one kept for the PF: Linux ixgbe's IXGBE_MAX_VFS_DRV_LIMIT is 63
    "x82599": PhysicalNic("x82599", "Intel 82599 10 GbE, SR-IOV", link_gbps=10.0, max_vfs=63),
}


def devices_for(model: str) -> list[str]:
    return [d.name for d in DEVICES.values() if d.model == model]


def implemented_devices() -> list[str]:
    return [d.name for d in DEVICES.values() if d.implemented]
