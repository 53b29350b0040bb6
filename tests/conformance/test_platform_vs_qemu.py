"""The pc platform around the NICs: which ISA IRQ a slot's INTA# reaches on
QEMU's i440FX/PIIX3 board (observed at the I/O APIC) against the routing
iovirt computes with ``iovirt.spec.pci``."""

from __future__ import annotations

import pytest

from iovirt.devices.e1000 import E1000
from iovirt.spec import e1000 as s
from iovirt.spec.pci import PCI_PIRQ_IRQS, pci_swizzle

from .nic import SLOT, NicModel, QemuNic

E1000_NIC = NicModel("e1000", E1000, bar=0)
INTA = 1


def raised_irqs(slot: int) -> list[int]:
    """Assert the e1000's INTx in ``slot`` (ICS with the cause unmasked); the IRQs QEMU raises."""
    nic = QemuNic(E1000_NIC, slot=slot)
    try:
        nic.write32(s.REGS["IMS"].offset, s.ICR_LSC)
        nic.write32(s.REGS["ICS"].offset, s.ICR_LSC)
        return sorted(n for n, up in nic.qt.irq_levels.items() if up)
    finally:
        nic.close()


@pytest.fixture(scope="module")
def qemu_irq_by_slot():
    return {slot: raised_irqs(slot) for slot in (SLOT, SLOT + 1)}


def test_first_nic_slot_reaches_the_same_irq(qemu_irq_by_slot):
    """INTA# of the first NIC slot reaches IRQ 11 on QEMU and in iovirt's routing."""
    assert qemu_irq_by_slot[SLOT] == [PCI_PIRQ_IRQS[pci_swizzle(SLOT, INTA)]] == [11]


def test_second_nic_slot_routing(qemu_irq_by_slot):
    """INTA# of slot 4 reaches the same IRQ on QEMU's pc board and in iovirt's routing."""
    # The board wires slot n's INTA# to PIRQ[(n - 1) & 3] (QEMU hw/isa/piix3.c
    # pci_slot_get_pirq; SeaBIOS piix_pci_slot_get_irq).
    assert qemu_irq_by_slot[SLOT + 1] == [PCI_PIRQ_IRQS[pci_swizzle(SLOT + 1, INTA)]] == [11]
