"""Emulation: a device model in the VMM, reached by trapping every guest
register access, backed by a tap on the host switch.

Wiring per DESIGN.md: BAR accesses exit to userspace (``KVM_USER_MMIO`` /
``KVM_USER_PIO``) and run the model on the vCPU thread; DMA is a CPU copy
charged to whichever VMM thread runs the model; the frame leaves through a
tap read by the VMM's main-loop thread; INTx is injected by the thread that
raised it."""

from __future__ import annotations

from ..devices.e1000 import E1000
from ..mem.dma import Dma
from ..sim.resource import Resource
from ..spec.pci import PCI_INTERRUPT_PIN, PCI_PIRQ_IRQS, pci_swizzle
from .addrmap import Region
from .tap import TapPort
from .vm import KVM_USER_MMIO, KVM_USER_PIO, VM

EMULATED = {"e1000": E1000}
FIRST_SLOT = 3          # after host bridge, ISA bridge, VGA as on QEMU's pc machine


class EmulatedNic:
    """One emulated NIC plugged into a VM: device, PCI function, tap."""

    def __init__(self, vm: VM, device: str, mac: bytes) -> None:
        self.vm = vm
        self.vmm = vm.vmm_thread()
        model = EMULATED[device]
        self.device = model(vm.sim, mac, Dma(vm.mem, "copy"), self._irq, timer_cpu=self.vmm)
        self.fn = self.device.pci
        self.bdf = vm.pci.attach(self.fn, FIRST_SLOT + len(vm.nics))
        self.gsi = PCI_PIRQ_IRQS[pci_swizzle(self.bdf.device, self.fn.config_read(PCI_INTERRUPT_PIN, 1))]
        self._irq_cpu: Resource | None = None
        self.fn.on_intx(self._line)
        self.fn.on_bar_change(self._bar)
        self.port = TapPort(vm, self.device, reader=self.vmm)
        vm.nics.append(self)

    def _irq(self, cpu: Resource, level: int) -> None:
        self._irq_cpu = cpu
        self.fn.set_intx(bool(level))

    def _line(self, asserted: bool) -> None:
        self.vm.irqchip.set_level(self.gsi, self._irq_cpu, int(asserted))

    def _bar(self, index: int, kind: str, address: int | None, size: int) -> None:
        space = self.vm.pio if kind == "io" else self.vm.mmio
        owner = f"{self.device.NAME}@{self.bdf} BAR{index}"
        space.unmap(owner)
        if address is not None:
            read, write = self.device.bar_handlers(index)
            space.map(Region(address, size, read, write, KVM_USER_PIO if kind == "io" else KVM_USER_MMIO, owner))
