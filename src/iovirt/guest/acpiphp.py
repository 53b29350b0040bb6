"""ACPI PCI hot plug from inside the guest: what Linux does running QEMU's
DSDT (the GPE.1 method _E01 -> PCNT, each slot's _EJ0) with acpiphp
(drivers/pci/hotplug/acpiphp_glue.c).

The SCI arrives on its IOAPIC pin; the handler reads GPE0_STS and, GPE.1
being an edge GPE, clears it before its method runs, deferred to a
workqueue (kacpi_notify).  The method reads PCIU and PCID: a slot whose card
is to go has its drivers removed (acpiphp_disable_and_eject_slot) and then
its bit written to B0EJ, upon which the platform takes the card; a slot that
gained a card is scanned and its drivers probed (enable_slot).  Every
register access is a port I/O by the vCPU."""

from __future__ import annotations

from ..spec import acpi as a

_GPE0_STS = a.GPE0_BLK + a.GPE0["GPE0_STS"].offset
_PCIU, _PCID, _B0EJ = (a.PCIHP_ADDR + a.PCIHP[n].offset for n in ("PCIU", "PCID", "B0EJ"))


def _slots(mask: int) -> list[int]:
    return [slot for slot in range(32) if mask >> slot & 1]


class Acpiphp:
    def __init__(self, kernel) -> None:
        self.kernel = kernel
        kernel.request_irq(a.SCI_IRQ, self._sci)

    def _sci(self) -> None:
        """acpi_irq -> acpi_ev_gpe_detect: GPE.1 cleared, its method queued."""
        vcpu = self.kernel.vcpu
        if vcpu.pio_read(_GPE0_STS, 2) & a.GPE_PCI_HOTPLUG:
            vcpu.pio_write(_GPE0_STS, 2, a.GPE_PCI_HOTPLUG)
            self.kernel.run_soon(self._pcnt)
        vcpu.eoi(a.SCI_IRQ)

    def _pcnt(self) -> None:
        """PCNT: eject requests first (acpiphp's eject), then device checks."""
        kernel = self.kernel
        up = kernel.vcpu.pio_read(_PCIU, 4)
        down = kernel.vcpu.pio_read(_PCID, 4)
        for slot in _slots(down):
            kernel.pci_remove(slot)
            kernel.vcpu.pio_write(_B0EJ, 4, 1 << slot)
        for slot in _slots(up):
            kernel.pci_hotplug(slot)
