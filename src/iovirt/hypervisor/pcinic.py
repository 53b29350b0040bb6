"""A NIC device model plugged into a VM's PCI bus: BARs mapped into the VM's
MMIO/PIO space with the trap path each region costs, INTx routed through the
platform's PIRQ swizzle, MSI/MSI-X messages to the VM's interrupt chip."""

from __future__ import annotations

from ..devices.registry import DeviceModel
from ..sim.resource import Resource
from ..spec.pci import PCI_INTERRUPT_PIN, PCI_PIRQ_IRQS, pci_swizzle
from .addrmap import Region
from .vm import KVM_USER_MMIO, KVM_USER_PIO, VM

FIRST_SLOT = 3          # after host bridge, ISA bridge, VGA as on QEMU's pc machine


class PciNic:
    spec = None             # what asked for this NIC (a scenario's entry), set by whoever plugs it in

    def __init__(self, vm: VM, device: DeviceModel, slot: int | None = None) -> None:
        """Into ``slot`` of the VM's bus 0 (QEMU's addr=; a migration's target keeps the
        source's), or the first free one."""
        self.vm = vm
        self.device = device
        device.place = f"{vm.host.name}/{vm.name}/{device.NAME}"
        self.fn = device.pci
        self.bdf = vm.pci.attach(self.fn, vm.pci.free_slot(FIRST_SLOT) if slot is None else slot)
        self.gsi = PCI_PIRQ_IRQS[pci_swizzle(self.bdf.device, self.fn.config_read(PCI_INTERRUPT_PIN, 1))]
        self._irq_cpu: Resource | None = None
        self.fn.on_intx(self._line)
        self.fn.on_msi(self._unmasked)
        self.fn.on_bar_change(self._bar)
        vm.nics.append(self)

    # ---- interrupts ---------------------------------------------------------
    def irq(self, cpu: Resource, level: int) -> None:
        """The device's INTx condition; the function decides whether the pin follows."""
        self._irq_cpu = cpu
        self.fn.set_intx(bool(level))

    def _line(self, asserted: bool) -> None:
        self.vm.irqchip.set_level(self.gsi, self._irq_cpu or self.vm.vcpus[0], int(asserted))

    def msi(self, cpu: Resource, vector: int) -> None:
        """Signal MSI/MSI-X ``vector``; a masked one stays pending in the PBA."""
        self._irq_cpu = cpu
        message = self.fn.notify(vector)
        if message is not None:
            self.vm.irqchip.msi(cpu, *message)

    def _unmasked(self, address: int, data: int) -> None:
        self.vm.irqchip.msi(self._irq_cpu or self.vm.vcpus[0], address, data)

    # ---- BARs -------------------------------------------------------------------
    def regions(self, index: int, kind: str, size: int) -> list[tuple[int, int, tuple[str, ...]]]:
        """(offset, size, trap path) of each part of a BAR: all of it traps to the VMM."""
        return [(0, size, KVM_USER_PIO if kind == "io" else KVM_USER_MMIO)]

    def handlers(self, index: int):
        """(read, write) of BAR ``index`` as the guest reaches it."""
        return self.device.bar_handlers(index)

    def _bar(self, index: int, kind: str, address: int | None, size: int) -> None:
        space = self.vm.pio if kind == "io" else self.vm.mmio
        owner = self._owner(index)
        space.unmap(owner)
        if address is None:
            return
        read, write = self.handlers(index)
        for offset, length, path in self.regions(index, kind, size):
            base = address + offset
            space.map(Region(base, length, read, write, self.vm.trap(path), owner, offset))

    def _owner(self, index: int) -> str:
        return f"{self.device.NAME}@{self.bdf} BAR{index}"

    def resume(self) -> None:
        """The VM runs after its state was loaded (a migration's target): the
        thread that serves the backend picks up what was pending (frames the
        tap held, buffers made available before the save)."""
        reader = self.port.reader
        reader.sync(self.vm.sim.now)
        self.device.resume(reader)

    def close(self) -> None:
        """The VM has gone (it migrated away): what this wiring holds on the host goes
        too.  An assigned function holds nothing; a software model's tap leaves the bridge."""

    def detach(self) -> None:
        """The card leaves the VM: its BARs unmapped, its slot empty."""
        for index, bar in self.fn.bars.items():
            (self.vm.pio if bar.kind == "io" else self.vm.mmio).unmap(self._owner(index))
        self.vm.pci.detach(self.bdf.device, self.bdf.function)
        self.vm.nics.remove(self)

