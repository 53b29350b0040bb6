"""Pass-through: a physical NIC given whole to one VM, VFIO style.

- The host releases the function by its PCI address; a second owner is
  refused (:class:`AssignmentError` names the address and both owners).
- The VM's memory is pinned and mapped into the device's VT-d domain
  (IOVA = guest-physical), so every DMA goes through the IOMMU: IOTLB hits
  and misses are charged on the NIC's DMA engine, and an address outside the
  VM faults without moving a byte.
- The guest sees the function's config space; BAR0 is mapped straight into
  its address space (no exit on any register access, doorbells included);
  the MSI-X table is trapped and virtualised: each guest write reprograms the
  function's interrupt-remapping entry, posted (to the vCPU's PI descriptor,
  no exit) when the host has posted interrupts, remapped (a host interrupt,
  VFIO's eventfd, irqfd injection and an exit) when it has not.

A bare-metal machine (``VM(native=True)``) owns its NIC the same way, minus
the hypervisor: identity DMA, native interrupts.

An assigned function can leave a running VM and another arrive (ACPI hot
plug, ``hotplug.py``): :meth:`AssignedFunction.unplug` asks the guest to let
go; once its driver is removed and the slot ejected, the host takes the
function back: BARs unmapped, IRTEs cleared and freed, the requester
detached from the VM's domain (the domain torn down and the VM's memory
unpinned with its last function), the device returned for the next VM.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

from ..devices.ixgbe import Ixgbe
from ..mem.dma import Dma, DmaFault
from ..mem.guest_memory import GuestMemory
from ..net.wire import Link
from ..sim.resource import Resource
from ..spec import ixgbe as ixs
from ..spec import vtd
from ..spec.apic import msi_address, msi_destination
from ..spec.pci import PCI_MAX_DEVICES, PCI_MSIX_ENTRY, PCI_MSIX_ENTRY_SIZE, Bdf
from .hotplug import PciHotplug
from .iommu import Iommu
from .pcinic import FIRST_SLOT, PciNic
from .vm import KVM_USER_MMIO, VM

HOST_NIC_BUS = 3                # each physical NIC behind its own root port, from bus 03
IOMMU_HOST_MEMORY = 64 << 20    # where the remapping tables live (untouched pages cost nothing)
# The host's interrupt remapping table: as large as VT-d allows (IRTA_REG.S = 15: 2^(S+1) entries, VT-d
# spec 11.4.7.2), as Linux sets it up (INTR_REMAP_TABLE_ENTRIES, drivers/iommu/intel/iommu.h): 1 MiB.
IRT_ENTRIES = 1 << 16
POSTED_INTR_VECTOR = 0xF2       # Linux POSTED_INTR_VECTOR: the notification vector (NV)


VFIO_IRQ = ("irq_entry",)          # vfio_msihandler signalling the irqfd


class AssignmentError(ValueError):
    pass


def _no_bus_master(addr: int, length: int, is_write: bool) -> int:
    raise DmaFault(addr, length, "bus master disabled")


class PhysicalNic:
    """One port of a host's physical NIC: PCI address, DMA engines, link.
    PCIe is full duplex: the transmit side's reads (descriptors, frames) and
    the receive side's writes travel opposite directions, each at the link's
    rate, so receive DMA has an engine of its own (``rx_engine``)."""

    def __init__(self, host, name: str, index: int, gbps: float, frame_error_rate: float = 0.0) -> None:
        self.host = host
        self.name = name
        self.bdf = Bdf(HOST_NIC_BUS + index, 0, 0)
        self.address = f"0000:{self.bdf}"
        self.engine = Resource(f"{host.name}/{name}/engine", "nic", host.ledger, host.ledger.account(host.name))
        self.rx_engine = Resource(f"{host.name}/{name}/rx-engine", "nic", host.ledger, self.engine.acct)
        self.link = Link(host.sim, host.ledger, f"{host.name}/{name}/wire", gbps, frame_error_rate=frame_error_rate)
        self.owner: str | None = None

    def claim(self, owner: str) -> None:
        """The host driver lets go of the function for ``owner`` (vfio-pci bind)."""
        if self.owner is not None:
            raise AssignmentError(f"{self.address} ({self.name}) is assigned to {self.owner}; "
                                  f"cannot assign it to {owner} as well")
        self.owner = owner

    def release(self) -> None:
        """The function is free again (vfio-pci unbind)."""
        self.owner = None


class HostIommu:
    """The host's VT-d unit and its per-VM domains, mapped with ``page_size``
    pages (2 MiB hugepages, or 4 KiB)."""

    def __init__(self, host, page_size: int = vtd.PAGE_2M, iotlb_entries: int = 64) -> None:
        self.name = host.name
        self.page_size = page_size
        self.unit = Iommu(GuestMemory(IOMMU_HOST_MEMORY), Resource(f"{host.name}/iommu", "iommu", host.ledger),
                          iotlb_entries=iotlb_entries, irt_entries=IRT_ENTRIES)
        self.domains: dict[str, int] = {}
        self.members: dict[str, set[Bdf]] = {}       # the requesters in each VM's domain
        self.pi_desc: dict[tuple[str, int], int] = {}    # (VM, vCPU) -> its posted-interrupt descriptor
        self.next_irte = 0
        self.free_irtes: dict[int, list[int]] = {}   # block size -> bases given back

    def attach(self, vm: VM, requester: Bdf) -> None:
        """Put ``requester`` in the VM's domain; the first one creates it, the
        VM's memory pinned and mapped IOVA = GPA."""
        if vm.name not in self.domains:
            did = self.domains[vm.name] = next(d for d in count(1) if d not in self.domains.values())
            self.unit.map(did, 0, 0, vm.mem.size, page_size=self.page_size)
        self.members.setdefault(vm.name, set()).add(requester)
        self.unit.attach(requester, self.domains[vm.name])

    def detach(self, vm: VM, requester: Bdf) -> None:
        """``requester``'s DMA faults from now on; with the VM's last one the
        domain is torn down (its tables freed, the IOTLB flushed, the memory
        unpinned) and its id free for the next domain."""
        self.unit.detach(requester)
        members = self.members[vm.name]
        members.discard(requester)
        if not members:
            del self.members[vm.name]
            self.unit.free_domain(self.domains.pop(vm.name))

    def pi(self, vm: VM, vcpu: int) -> int:
        """``vcpu``'s posted-interrupt descriptor: KVM keeps one per vCPU
        (vmx_pi_update_irte), its NDST the core the vCPU runs on."""
        key = (vm.name, vcpu)
        if key not in self.pi_desc:
            core, cores = vm.vcpus[vcpu].core, vm.host.cores
            self.pi_desc[key] = self.unit.pi_desc(POSTED_INTR_VECTOR, cores.index(core) if core in cores else 0)
        return self.pi_desc[key]

    def irtes(self, count: int, requester: str) -> int:
        """``count`` consecutive IRT entries for ``requester``: a block given
        back, else fresh ones; AssignmentError when the table has no room."""
        if self.free_irtes.get(count):
            return self.free_irtes[count].pop()
        if self.next_irte + count > self.unit.irt_entries:
            in_use = self.next_irte - sum(size * len(bases) for size, bases in self.free_irtes.items())
            raise AssignmentError(f"{self.name}'s interrupt remapping table is full ({self.unit.irt_entries} "
                                  f"entries, {in_use} in use): no {count} entries for {requester}")
        base, self.next_irte = self.next_irte, self.next_irte + count
        return base

    def free(self, base: int, count: int) -> None:
        """The entries are cleared (no interrupt passes them) and can be handed out again."""
        for index in range(base, base + count):
            self.unit.clear_irte(index)
        self.free_irtes.setdefault(count, []).append(base)


class AssignedFunction(PciNic):
    """A physical function or VF handed to a VM (or owned by a bare-metal
    machine): DMA as ``requester`` through the VM's IOMMU domain, BAR0
    direct, the MSI-X BAR trapped and its entries turned into IRTEs.  In a
    VM it sits in a hot-pluggable slot."""

    def __init__(self, vm: VM, requester: Bdf, engine: Resource, msix_bar: int, vectors: int,
                 posted: bool = False, irq_path: tuple[str, ...] = VFIO_IRQ) -> None:
        """``irq_path``: what the host's core pays for a remapped interrupt before injecting it."""
        self.requester = requester
        self.irq_path = irq_path
        self.msix_bar = msix_bar
        self.vectors = vectors
        self.posted = posted
        self.pda: dict[int, int] = {}          # MSI-X entry -> the posted-interrupt descriptor its IRTE names
        engine.acct = vm.acct
        if vm.native:
            self.iommu = None
            self.dma = Dma(vm.mem, "dma")
        else:
            self.iommu = vm.host.iommu
            self.irte_base = self.iommu.irtes(vectors, f"0000:{requester}")
            try:
                self.iommu.attach(vm, requester)
            except MemoryError:                 # no room for the domain's page tables: the entries go back
                self.iommu.free(self.irte_base, vectors)
                raise
            self._translate = self.iommu.unit.translator(requester, engine)
            self.dma = Dma(vm.mem, "dma", translate=_no_bus_master)
        self.hotplug = None if vm.native else PciHotplug.of(vm)
        self.plugged = self.unplugging = False
        self._unplugged: Callable[[], None] | None = None

    @staticmethod
    def slot_for(vm: VM, slot: int | None) -> int:
        """``slot`` if it is empty, else an error; None: the first free one.
        Checked before the function is taken from the host."""
        if slot is None:
            return vm.pci.free_slot(FIRST_SLOT)
        if not 0 <= slot < PCI_MAX_DEVICES or vm.pci.lookup(slot) is not None:
            raise AssignmentError(f"{vm.name}: no free slot {slot:#x} on bus 0 (taken, or not a slot)")
        return slot

    def plug(self, vm: VM, device, hotplug: bool = False, slot: int | None = None) -> None:
        """Into ``slot`` (the first free one if None): present at boot, or
        hot-plugged (``hotplug``: the guest is told a card arrived)."""
        super().__init__(vm, device, slot)
        device.msi = self.msi
        if self.iommu is not None:
            self.fn.on_bus_master(self._bus_master)
            self._bus_master(self.fn.bus_master)
        self.plugged = True
        if self.hotplug is not None:
            self.hotplug.register(self.bdf.device, self._ejected)
            if hotplug:
                self.hotplug.insert(self.bdf.device)

    def _bus_master(self, on: bool) -> None:
        """PCI_COMMAND_MASTER (PCI 3.0 6.2.2): the function issues DMA only while it is set."""
        self.dma.translate = self._translate if on else _no_bus_master

    def unplug(self, on_done: Callable[[], None] | None = None) -> None:
        """device_del: ask the guest to give the function up; the host takes
        it back once the guest has ejected it, then ``on_done()`` runs."""
        where = f"{self.device.NAME} at {self.bdf} of {self.vm.name}"
        if self.hotplug is None:
            raise AssignmentError(f"{where}: a bare-metal machine has no hot plug")
        if not self.plugged:
            raise AssignmentError(f"{where}: already unplugged")
        if self.unplugging:
            raise AssignmentError(f"{where}: already being unplugged (the guest has not ejected it yet)")
        self.unplugging, self._unplugged = True, on_done
        self.hotplug.request_removal(self.bdf.device)

    def _ejected(self, cpu: Resource) -> None:
        """The guest ejected the slot: no more interrupts or BAR accesses reach
        the function, its IRTEs and its place in the VM's domain go, and the
        device returns to the host."""
        self.device.msi = None
        self.detach()
        self.iommu.free(self.irte_base, self.vectors)
        self.iommu.detach(self.vm, self.requester)
        self.give_back()
        self.plugged = self.unplugging = False
        if self._unplugged is not None:
            self.vm.sim.at(cpu.cursor, self._unplugged)

    def give_back(self) -> None:
        """Reset the device and return it to the host (per kind of function)."""
        raise NotImplementedError

    def regions(self, index: int, kind: str, size: int) -> list[tuple[int, int, tuple[str, ...]]]:
        """BAR0 straight through; the MSI-X BAR trapped (VFIO virtualises the table)."""
        return [(0, size, KVM_USER_MMIO if index == self.msix_bar else ())]

    def handlers(self, index: int):
        read, write = self.device.bar_handlers(index)
        if index != self.msix_bar or self.iommu is None:
            return read, write
        table = self.fn.msix.table_offset

        def msix_write(cpu: Resource, offset: int, size: int, value: int) -> None:
            write(cpu, offset, size, value)
            entry = (offset - table) // PCI_MSIX_ENTRY_SIZE
            if 0 <= entry < self.vectors:
                self._program_irte(entry)
        return read, msix_write

    def _program_irte(self, entry: int) -> None:
        """VFIO: the guest's (address, data) becomes an IRTE for the function."""
        address, _, data, _ = PCI_MSIX_ENTRY.unpack_from(self.fn.msix.table, entry * PCI_MSIX_ENTRY_SIZE)
        unit, index = self.iommu.unit, self.irte_base + entry
        if self.posted:
            dest = msi_destination(address)
            self.pda[entry] = self.iommu.pi(self.vm, dest if dest < len(self.vm.vcpus) else 0)
            unit.set_posted_irte(index, data & 0xFF, self.pda[entry], sid=self.requester)
        else:
            unit.set_irte(index, data & 0xFF, 0, sid=self.requester)

    def msi(self, cpu: Resource, vector: int) -> None:
        """The function signals MSI-X entry ``vector``: natively to the CPU, or
        as a remappable interrupt through the IOMMU; KVM then delivers the
        guest's vector to the vCPU the guest's message names (its MSI routing)."""
        self._irq_cpu = cpu
        message = self.fn.notify(vector)
        if message is None:
            return
        if self.iommu is None:
            self.vm.irqchip.msi(cpu, *message)
            return
        unit = self.iommu.unit
        remapped = unit.remap_msi(self.requester, *vtd.remappable_msi(self.irte_base + vector))
        if remapped is None:
            return                                       # blocked: recorded in the fault log
        address = msi_address(msi_destination(message[0]))
        if remapped.posted:
            unit.pi_take(self.pda[vector])               # the destination vCPU syncs its PIR
            self.vm.irqchip.msi(cpu, address, remapped.vector, posted=True)
            return
        self.vm.sim.urgent(cpu.cursor, self._host_irq, remapped.vector, address)

    def _host_irq(self, vector: int, address: int) -> None:
        """The remapped interrupt reaches the host when the function sends it:
        its handler on the core the target vCPU runs on (VFIO's, then irqfd;
        on ESXi the vmkernel's, then its forward to the VM's monitor), then the injection."""
        vcpus = self.vm.vcpus
        dest = msi_destination(address)
        core = vcpus[dest if dest < len(vcpus) else 0].core or self._irq_cpu
        core.sync(self.vm.sim.now)
        core.charge_path(self.irq_path)
        self.vm.irqchip.msi(core, address, vector)


class PassthroughNic(AssignedFunction):
    """A whole physical port, PF and all (``num_vfs``: with its VFs, for the
    host kernel that is also their PF driver)."""

    def __init__(self, vm: VM, pnic: PhysicalNic, mac: bytes, posted: bool = False, hotplug: bool = False,
                 slot: int | None = None, num_vfs: int = 0, irq_path: tuple[str, ...] = VFIO_IRQ) -> None:
        slot = self.slot_for(vm, slot)
        pnic.claim(vm.name)
        self.pnic = pnic
        try:
            super().__init__(vm, pnic.bdf, pnic.engine, ixs.MSIX_BAR, ixs.MSIX_VECTORS, posted, irq_path)
        except (AssignmentError, MemoryError):  # no interrupt entries or page tables for it: the port stays the host's
            pnic.release()
            raise
        pnic.rx_engine.acct = vm.acct
        self.plug(vm, Ixgbe(vm.sim, mac, self.dma, pnic.engine, num_vfs=num_vfs, rx_engine=pnic.rx_engine),
                  hotplug, slot)
        pnic.link.attach(self.device)

    def give_back(self) -> None:
        """VFIO's function reset on release; the cable no longer ends in this
        VM's device; the port is free."""
        self.device.reset()
        self.device.port = None
        self.pnic.link.nic = None
        self.pnic.release()
