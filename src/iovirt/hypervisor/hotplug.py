"""ACPI PCI hot plug of a VM's bus 0, as QEMU's PIIX4 PM and ``hw/acpi/pcihp.c``
do it.

- Hot add (``device_add``): the card is on the bus; its slot's bit goes up in
  PCIU and GPE.1 in GPE0_STS, which raises the SCI.  The guest's GPE method
  reads PCIU (reading clears it), scans the slot and probes its drivers.
- Hot remove (``device_del``): a removal request: the slot's bit in PCID and
  GPE.1.  The guest removes its drivers, then its _EJ0 writes the slot's bit
  to B0EJ; only then does the platform take the card out (the slot's
  ``eject`` callback) and PCID's bit clears.  A guest that never ejects keeps
  the card; one that ejects unasked loses it.

The management thread (QEMU's main loop, which runs monitor commands) pays
for raising the SCI; every register access the guest makes is a port I/O
exit to QEMU.  One controller per VM, set up with its first hot-pluggable
function (:meth:`PciHotplug.of`)."""

from __future__ import annotations

from collections.abc import Callable

from ..sim.resource import Resource
from ..spec import acpi as a
from .addrmap import Region
from .vm import KVM_USER_PIO, VM

_PCIU, _PCID, _B0EJ, _PCIRMV = (a.PCIHP[n].offset for n in ("PCIU", "PCID", "B0EJ", "PCIRMV"))

Eject = Callable[[Resource], None]


class PciHotplug:
    def __init__(self, vm: VM) -> None:
        self.vm = vm
        self.up = self.down = 0         # PCIU, PCID
        self.sts = 0                    # GPE0_STS
        self.en = a.GPE0["GPE0_EN"].reset
        self.slots: dict[int, Eject] = {}
        path = vm.trap(KVM_USER_PIO)
        vm.pio.map(Region(a.GPE0_BLK, a.GPE0_BLK_LEN, self._gpe_read, self._gpe_write, path, "acpi-gpe0"))
        vm.pio.map(Region(a.PCIHP_ADDR, a.PCIHP_LEN, self._read, self._write, path, "acpi-pcihp"))

    @classmethod
    def of(cls, vm: VM) -> PciHotplug:
        """``vm``'s controller, created on first use."""
        ctl = getattr(vm, "pcihp", None)
        if ctl is None:
            ctl = vm.pcihp = cls(vm)
        return ctl

    # ---- the platform's side -------------------------------------------------------
    def register(self, slot: int, eject: Eject) -> None:
        """A removable card sits in ``slot``; ``eject(cpu)`` takes it out."""
        self.slots[slot] = eject

    def insert(self, slot: int) -> None:
        """device_add: tell the guest a card arrived in ``slot``."""
        self.up |= 1 << slot
        self._event()

    def request_removal(self, slot: int) -> None:
        """device_del: ask the guest to let go of the card in ``slot``."""
        self.down |= 1 << slot
        self._event()

    def _event(self) -> None:
        """acpi_send_gpe_event: GPE.1 status, the SCI follows it."""
        vmm = self.vm.vmm_thread()
        vmm.sync(self.vm.sim.now)
        self.sts |= a.GPE_PCI_HOTPLUG
        self._sci(vmm)

    def _sci(self, cpu: Resource) -> None:
        self.vm.irqchip.set_level(a.SCI_IRQ, cpu, int(bool(self.sts & self.en)))

    # ---- GPE0 block (byte access) ----------------------------------------------------
    def _gpe_read(self, cpu: Resource, offset: int, size: int) -> int:
        return ((self.sts | self.en << 16) >> 8 * offset) & ((1 << 8 * size) - 1)

    def _gpe_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        """GPE0_STS bits are write-one-to-clear, GPE0_EN bits plain; the SCI follows STS & EN."""
        mask = ((1 << 8 * size) - 1) << 8 * offset
        bits = value << 8 * offset & mask
        self.sts &= ~bits & 0xFFFF
        self.en = (self.en & ~(mask >> 16) | bits >> 16) & 0xFFFF
        self._sci(cpu)

    # ---- PCI hot-plug registers ---------------------------------------------------------
    def _read(self, cpu: Resource, offset: int, size: int) -> int:
        reg = offset & ~3
        if reg == _PCIU:
            value, self.up = self.up, 0
        elif reg == _PCID:
            value = self.down
        elif reg == _PCIRMV:
            value = sum(1 << slot for slot in self.slots)
        else:
            value = 0                   # B0EJ: no optional features; BNUM: bus 0
        return (value >> 8 * (offset & 3)) & ((1 << 8 * size) - 1)

    def _write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        """B0EJ: acpi_pcihp_eject_slot, the lowest slot bit written (ctz32);
        the rest is read-only or bus 0."""
        bits = (value << 8 * (offset & 3)) & 0xFFFFFFFF
        if offset & ~3 != _B0EJ or not bits:
            return
        slot = (bits & -bits).bit_length() - 1
        self.up &= ~(1 << slot)
        self.down &= ~(1 << slot)
        eject = self.slots.pop(slot, None)
        if eject is not None:
            eject(cpu)
