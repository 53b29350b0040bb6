"""Emulation: a device model in the VMM, reached by trapping every guest
register access, backed by a tap on the host switch.

Wiring (docs/architecture.md, "The models as wirings"): BAR accesses exit to userspace (``KVM_USER_MMIO`` /
``KVM_USER_PIO``) and run the model on the vCPU thread; DMA is a CPU copy
charged to whichever VMM thread runs the model; the frame leaves through a
tap read by the VMM's main-loop thread; INTx is injected by the thread that
raised it.  On a Xen host the same models serve HVM guests from dom0
(:class:`XenHvmNic`)."""

from __future__ import annotations

from ..devices.registry import registry
from ..mem.dma import Dma
from ..sim.resource import Resource
from .pcinic import PciNic
from .tap import TapPort
from .vm import VM
from .xen import XEN_IOREQ, IoreqServer

EMULATED = {name: entry.model for name, entry in registry().items() if entry.kind == "emulated"}


class EmulatedNic(PciNic):
    """One emulated NIC plugged into a VM: device, PCI function, tap; the
    model runs on ``vmm`` (default: the VM's own QEMU main-loop thread)."""

    def __init__(self, vm: VM, device: str, mac: bytes, backend: str | None = None,
                 vmm: Resource | None = None, slot: int | None = None, syscall: bool = True,
                 variant: str | None = None) -> None:
        """``syscall``: the backend reaches the switch through the tap's fd (a user-space VMM);
        ``variant``: the chip, for a model that has several."""
        vmm = vmm or vm.vmm_thread()
        chip = {} if variant is None else {"variant": variant}
        model = registry()[device].model(vm.sim, mac, Dma(vm.mem, "copy", hot=frozenset(vm.vcpus)), self.irq,
                                         timer_cpu=vmm, **chip)
        super().__init__(vm, model, slot)
        self.port = TapPort(vm, model, reader=vmm, syscall=syscall)

    def close(self) -> None:
        self.port.close()


class XenHvmNic(EmulatedNic):
    """The same device model for an HVM guest on Xen: QEMU runs in dom0 and
    each BAR access is an ioreq (``XEN_IOREQ`` on the vCPU, the model on
    QEMU's thread while the vCPU waits); its tap is on dom0's bridge."""

    def __init__(self, vm: VM, device: str, mac: bytes, ioreq: IoreqServer, variant: str | None = None) -> None:
        self.ioreq = ioreq
        super().__init__(vm, device, mac, vmm=ioreq.thread, variant=variant)

    def regions(self, index: int, kind: str, size: int) -> list[tuple[int, int, tuple[str, ...]]]:
        return [(0, size, XEN_IOREQ)]

    def handlers(self, index: int):
        emulate = "pio_emulate" if self.fn.bars[index].kind == "io" else "mmio_emulate"
        return tuple(self.ioreq.forward(handler, emulate) for handler in super().handlers(index))
