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
"""

from __future__ import annotations

from ..devices.ixgbe import Ixgbe
from ..mem.dma import Dma
from ..mem.guest_memory import GuestMemory
from ..sim.resource import Resource
from ..spec import ixgbe as ixs
from ..spec import vtd
from ..spec.pci import PCI_MSIX_ENTRY, PCI_MSIX_ENTRY_SIZE, Bdf
from .iommu import Iommu
from .pcinic import PciNic
from .vm import KVM_USER_MMIO, VM
from .wire import Link

HOST_NIC_BUS = 3                # each physical NIC behind its own root port, from bus 03
IOMMU_HOST_MEMORY = 64 << 20    # where the remapping tables live (untouched pages cost nothing)
POSTED_INTR_VECTOR = 0xF2       # Linux POSTED_INTR_VECTOR: the notification vector (NV)
LAPIC_MSI = 0xFEE00000


class AssignmentError(ValueError):
    pass


class PhysicalNic:
    """One port of a host's physical NIC: PCI address, DMA engine, link."""

    def __init__(self, host, name: str, index: int, gbps: float) -> None:
        self.host = host
        self.name = name
        self.bdf = Bdf(HOST_NIC_BUS + index, 0, 0)
        self.address = f"0000:{self.bdf}"
        self.engine = Resource(f"{host.name}/{name}/engine", "nic", host.ledger, host.ledger.account(host.name))
        self.link = Link(host.sim, host.ledger, f"{host.name}/{name}/wire", gbps)
        self.owner: str | None = None

    def claim(self, owner: str) -> None:
        """The host driver lets go of the function for ``owner`` (vfio-pci bind)."""
        if self.owner is not None:
            raise AssignmentError(f"{self.address} ({self.name}) is assigned to {self.owner}; "
                                  f"cannot assign it to {owner} as well")
        self.owner = owner


class HostIommu:
    """The host's VT-d unit and its per-VM domains, mapped with ``page_size``
    pages (2 MiB hugepages, or 4 KiB)."""

    def __init__(self, host, page_size: int = vtd.PAGE_2M, iotlb_entries: int = 64) -> None:
        self.page_size = page_size
        self.unit = Iommu(GuestMemory(IOMMU_HOST_MEMORY), Resource(f"{host.name}/iommu", "iommu", host.ledger),
                          iotlb_entries=iotlb_entries)
        self.domains: dict[str, int] = {}
        self.pi_desc: dict[str, int] = {}
        self.next_irte = 0

    def domain(self, vm: VM) -> int:
        """The VM's domain, its memory pinned and mapped IOVA = GPA in 2 MiB pages."""
        if vm.name not in self.domains:
            did = self.domains[vm.name] = len(self.domains) + 1
            self.unit.map(did, 0, 0, vm.mem.size, page_size=self.page_size)
        return self.domains[vm.name]

    def pi(self, vm: VM) -> int:
        """vCPU 0's posted-interrupt descriptor."""
        if vm.name not in self.pi_desc:
            self.pi_desc[vm.name] = self.unit.pi_desc(POSTED_INTR_VECTOR, 0)
        return self.pi_desc[vm.name]

    def irtes(self, count: int) -> int:
        base, self.next_irte = self.next_irte, self.next_irte + count
        return base


class AssignedFunction(PciNic):
    """A physical function or VF handed to a VM (or owned by a bare-metal
    machine): DMA as ``requester`` through the VM's IOMMU domain, BAR0
    direct, the MSI-X BAR trapped and its entries turned into IRTEs."""

    def __init__(self, vm: VM, requester: Bdf, engine: Resource, msix_bar: int, vectors: int,
                 posted: bool = False) -> None:
        self.requester = requester
        self.msix_bar = msix_bar
        self.vectors = vectors
        self.posted = posted
        engine.acct = vm.acct
        if vm.native:
            self.iommu = None
            self.dma = Dma(vm.mem, "dma")
        else:
            self.iommu = vm.host.iommu
            self.iommu.unit.attach(requester, self.iommu.domain(vm))
            self.dma = Dma(vm.mem, "dma", translate=self.iommu.unit.translator(requester, engine))
            self.irte_base = self.iommu.irtes(vectors)

    def plug(self, vm: VM, device) -> None:
        super().__init__(vm, device)
        device.msi = self.msi

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
        _, _, data, _ = PCI_MSIX_ENTRY.unpack_from(self.fn.msix.table, entry * PCI_MSIX_ENTRY_SIZE)
        unit, index = self.iommu.unit, self.irte_base + entry
        if self.posted:
            unit.set_posted_irte(index, data & 0xFF, self.iommu.pi(self.vm), sid=self.requester)
        else:
            unit.set_irte(index, data & 0xFF, 0, sid=self.requester)

    def msi(self, cpu: Resource, vector: int) -> None:
        """The function signals MSI-X entry ``vector``: natively to the CPU, or
        as a remappable interrupt through the IOMMU."""
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
        if remapped.posted:
            unit.pi_take(self.iommu.pi(self.vm))         # the running vCPU syncs its PIR
            self.vm.irqchip.msi(cpu, LAPIC_MSI, remapped.vector, posted=True)
            return
        core = self.vm.vcpus[0].core or cpu              # VFIO's handler on the host, then irqfd
        core.sync(cpu.cursor)
        core.charge("irq_entry")
        self.vm.irqchip.msi(core, LAPIC_MSI, remapped.vector)


class PassthroughNic(AssignedFunction):
    """A whole physical port, PF and all."""

    def __init__(self, vm: VM, pnic: PhysicalNic, mac: bytes, posted: bool = False) -> None:
        pnic.claim(vm.name)
        self.pnic = pnic
        super().__init__(vm, pnic.bdf, pnic.engine, ixs.MSIX_BAR, ixs.MSIX_VECTORS, posted)
        self.plug(vm, Ixgbe(vm.sim, mac, self.dma, pnic.engine))
        pnic.link.attach(self.device)
