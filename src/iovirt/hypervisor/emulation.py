"""Emulation: a device model in the VMM, reached by trapping every guest
register access, backed by a tap on the host switch.

Wiring per DESIGN.md: BAR accesses exit to userspace (``KVM_USER_MMIO`` /
``KVM_USER_PIO``) and run the model on the vCPU thread; DMA is a CPU copy
charged to whichever VMM thread runs the model; the frame leaves through a
tap read by the VMM's main-loop thread; INTx is injected by the thread that
raised it."""

from __future__ import annotations

from ..devices.e1000 import E1000
from ..devices.pcnet import PCNet
from ..devices.rtl8139 import RTL8139
from ..devices.tulip import Tulip
from ..mem.dma import Dma
from .pcinic import PciNic
from .tap import TapPort
from .vm import VM

EMULATED = {"e1000": E1000, "rtl8139": RTL8139, "pcnet": PCNet, "tulip": Tulip}


class EmulatedNic(PciNic):
    """One emulated NIC plugged into a VM: device, PCI function, tap."""

    def __init__(self, vm: VM, device: str, mac: bytes, backend: str | None = None) -> None:
        vmm = vm.vmm_thread()
        model = EMULATED[device](vm.sim, mac, Dma(vm.mem, "copy"), self.irq, timer_cpu=vmm)
        super().__init__(vm, model)
        self.port = TapPort(vm, model, reader=vmm)
