"""A virtual machine: guest memory, vCPUs, its MMIO/PIO maps, an interrupt
controller and a PCI bus.  A vCPU is the only way guest code reaches a device:
an access to a trapping region pays that region's exit path on the vCPU
before the device model runs (on the same thread, as in QEMU's vCPU threads).

``native=True`` makes the same machine bare metal (a host running the driver
itself): nothing traps, interrupts enter through the IDT, EOI is a plain
APIC write.  ``apicv=True`` is APIC virtualisation: MSI EOIs do not exit and
posted interrupts reach a running vCPU without an exit."""

from __future__ import annotations

from collections import Counter
from typing import Callable

from ..mem.guest_memory import GuestMemory
from ..pci.bus import HostBridge, PciBus
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec.apic import MSI_ADDR_BASE, msi_destination
from .addrmap import DWORD, AddressMap, Region, pieces

# Trap paths (docs/architecture.md, "Cost paths"): what one guest access costs before the
# device model runs.
KVM_USER_MMIO = ("vm_exit", "kvm_handle", "user_exit", "mmio_emulate")
KVM_USER_PIO = ("vm_exit", "kvm_handle", "user_exit", "pio_emulate")
PCI_CONFIG_PORTS = 0xCF8, 8
DIRTY_EXIT = ("vm_exit", "kvm_handle")  # a PML-full exit (SDM 28.2.6), a write to a write-protected page, a kick
PML_ENTRIES = 512


class VCpu(Resource):
    """A vCPU thread.  Guest drivers call these methods; nothing else."""

    __slots__ = ("vm", "index", "irq_handlers", "in_service")

    def __init__(self, vm: "VM", index: int) -> None:
        super().__init__(f"{vm.host.name}/{vm.name}/vcpu{index}", "vcpu", vm.host.ledger, vm.acct)
        self.vm = vm
        self.index = index
        self.irq_handlers: dict[int, Callable[[], None]] = {}
        self.in_service: set[int] = set()

    def mmio_read(self, addr: int, size: int = 4) -> int:
        return self._read(self.vm.mmio, addr, size, KVM_USER_MMIO)

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        self._write(self.vm.mmio, addr, size, value, KVM_USER_MMIO)

    def pio_read(self, port: int, size: int) -> int:
        return self._read(self.vm.pio, port, size, KVM_USER_PIO)

    def pio_write(self, port: int, size: int, value: int) -> None:
        self._write(self.vm.pio, port, size, value, KVM_USER_PIO)

    def _read(self, space: AddressMap, addr: int, size: int, unassigned: tuple[str, ...]) -> int:
        region = space.lookup(addr)
        if region is None:
            return self._unassigned(size, unassigned)
        self.charge_path(region.path)
        off = addr - region.base + region.offset
        if size <= DWORD and not off & (size - 1):
            return region.read(self, off, size)
        value, end = 0, region.offset + region.size
        for at, width, shift in pieces(off, size):
            part = region.read(self, at, width) if at + width <= end else (1 << 8 * width) - 1
            value |= (part & (1 << 8 * width) - 1) << shift
        return value

    def _write(self, space: AddressMap, addr: int, size: int, value: int, unassigned: tuple[str, ...]) -> None:
        region = space.lookup(addr)
        if region is None:
            self._unassigned(size, unassigned)
            return
        self.charge_path(region.path)
        value &= (1 << 8 * size) - 1
        off = addr - region.base + region.offset
        if size <= DWORD and not off & (size - 1):
            region.write(self, off, size, value)
            return
        end = region.offset + region.size
        for at, width, shift in pieces(off, size):
            if at + width <= end:                   # past the region the piece decodes nowhere here
                region.write(self, at, width, value >> shift & (1 << 8 * width) - 1)

    def _unassigned(self, size: int, path: tuple[str, ...] = KVM_USER_MMIO) -> int:
        """Nothing decodes the address: the access still exits; reads float high."""
        self.charge_path(() if self.vm.native else path)
        self.vm.stats["unassigned_access"] += 1
        return (1 << (8 * size)) - 1

    def set_irq_handler(self, key: int, handler: Callable[[], None]) -> None:
        """Program the guest's IDT entry: an IOAPIC pin (GSI < 32) or an MSI vector."""
        self.irq_handlers[key] = handler

    def eoi(self, key: int) -> None:
        """End of interrupt: a write to the local APIC's EOI register, which
        exits unless the APIC is real or virtualised (for MSIs)."""
        vm = self.vm
        if not vm.native and not (vm.apicv and key >= 32):
            self.charge("eoi_exit")
        self.in_service.discard(key)
        self.vm.irqchip.eoi(key, self.cursor)


class IrqChip:
    """Interrupt delivery.  INTx lines (IOAPIC pins, keyed by GSI) go to
    vCPU 0 and are level-triggered: a line still high at EOI is injected
    again.  MSI messages (keyed by vector, >= 32) go to the vCPU whose APIC
    ID (its index) the address names (SDM 11.11.1) and are edge-triggered:
    one arriving while its vector is in service waits in the IRR until EOI;
    one naming no vCPU is accepted by none and lost.  The thread that
    raises an interrupt pays for injecting it (KVM_IRQ_LINE, KVM_SIGNAL_MSI
    or irqfd)."""

    def __init__(self, vm: "VM") -> None:
        self.vm = vm
        self.level: dict[int, int] = {}
        self.irr: set[int] = set()
        self.held: set[int] = set()         # raised while the VM was stopped
        self.dest: dict[int, int] = {}      # MSI vector -> the APIC ID its last message named
        self.stats = vm.stats

    def adopt(self, source: "IrqChip") -> None:
        """Live migration: the IOAPIC pins, the IRR and what waited for the
        stopped vCPUs come along (KVM_GET/SET_IRQCHIP, KVM_GET/SET_LAPIC)."""
        self.level, self.irr = dict(source.level), set(source.irr)
        self.held, self.dest = set(source.held), dict(source.dest)
        self.release()

    def release(self) -> None:
        """The vCPUs run again: interrupts raised meanwhile are delivered."""
        held, self.held = self.held, set()
        for key in sorted(held):
            self.vm.sim.urgent(self.vm.sim.now, self._deliver, key)

    def set_level(self, gsi: int, cpu: Resource, level: int) -> None:
        was = self.level.get(gsi, 0)
        self.level[gsi] = level
        if level and not was:
            cpu.charge("interrupt_inject")
            self.vm.sim.urgent(cpu.cursor, self._deliver, gsi)

    def msi(self, cpu: Resource, address: int, data: int, posted: bool = False) -> None:
        """An MSI write to the LAPIC window 0xFEExxxxx: vector in data[7:0].
        A posted interrupt (VT-d posting) costs the sender no injection.  One
        the hypervisor injects (irqfd, KVM_SIGNAL_MSI) is posted to a running
        vCPU too when the APIC is virtualised (vmx_deliver_posted_interrupt):
        the sender pays the injection, the vCPU takes no exit."""
        if address >> 20 != MSI_ADDR_BASE >> 20:
            self.stats["msi_bad_address"] += 1
            return
        vm = self.vm
        vector, apic_id = data & 0xFF, msi_destination(address)
        if apic_id >= len(vm.vcpus):
            self.stats["msi_bad_destination"] += 1
            return
        self.dest[vector] = apic_id
        if not posted and not vm.native:
            cpu.charge("interrupt_inject")
        vm.sim.urgent(cpu.cursor, self._deliver, vector, posted or vm.apicv)

    def eoi(self, key: int, at: float) -> None:
        if self.level.get(key) or key in self.irr:
            self.irr.discard(key)
            self.vm.sim.urgent(at, self._deliver, key)

    def _deliver(self, key: int, posted: bool = False) -> None:
        if self.vm.paused:
            self.held.add(key)              # stays pending in the IRR/IOAPIC until the vCPU runs
            return
        vcpu = self.vm.vcpus[self.dest.get(key, 0) if key >= 32 else 0]
        handler = vcpu.irq_handlers.get(key)
        if handler is None or key < 32 and not self.level.get(key):
            return
        if key in vcpu.in_service:
            if key >= 32:
                self.irr.add(key)
            return
        now = self.vm.sim.now
        halted = vcpu.cursor < now
        if halted:
            vcpu.sync(now)
            vcpu.charge("wakeup")           # the halted (v)CPU's thread is woken
        if not self.vm.native:              # posted: recognised in guest mode; else exit, entry with injection
            vcpu.charge("posted_interrupt" if posted and not halted else "vm_exit")
        vcpu.charge("irq_entry")            # the guest's own entry through its IDT, as on bare metal
        vcpu.in_service.add(key)
        self.stats["interrupts"] += 1
        handler()


class VM:
    def __init__(self, name: str, host, memory_mb: int, vcpus: int = 1, native: bool = False,
                 apicv: bool = False, dedicated: bool = False, mem: GuestMemory | None = None) -> None:
        """``mem``: RAM that arrived with the VM (an incoming migration), else fresh."""
        self.name = name
        self.host = host
        self.native = native
        self.apicv = apicv
        self.sim: Sim = host.sim
        self.acct = host.ledger.account(name)
        self.stats: Counter[str] = Counter()
        self.mem = GuestMemory(memory_mb << 20) if mem is None else mem
        self.cpu_mem = self.mem.cpu_view()      # what guest code writes through
        self._faulted = 0                       # pages whose write-protection fault was charged
        self.mmio = AddressMap(f"{name} MMIO")
        self.pio = AddressMap(f"{name} I/O")
        self.irqchip = IrqChip(self)
        self.vcpus = [VCpu(self, i) for i in range(vcpus)]
        for vcpu in self.vcpus:
            host.place(vcpu, dedicated)
        self.pci = PciBus()
        self.host_bridge = HostBridge(self.pci)
        base, size = PCI_CONFIG_PORTS
        self.pio.map(Region(base, size, self._cfg_read, self._cfg_write, self.trap(KVM_USER_PIO), "pci-host-bridge"))
        self.resources: list[Resource] = list(self.vcpus)
        self._vmm: Resource | None = None
        self.nics: list = []
        self.paused = False
        self._on_resume: list[Callable[[], None]] = []

    # ---- run state (QEMU runstate: running / paused) ------------------------------
    def pause(self) -> None:
        """vm_stop: vCPUs stop; backends stop moving frames; interrupts wait."""
        self.paused = True

    def resume(self) -> None:
        """vm_start: what stopped for the pause picks up where it was."""
        self.paused = False
        waiting, self._on_resume = self._on_resume, []
        for fn in waiting:
            fn()
        self.irqchip.release()

    def when_resumed(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when a paused VM runs again (never, if it is migrated away)."""
        self._on_resume.append(fn)

    def log_dirty(self, on: bool) -> None:
        """KVM_MEM_LOG_DIRTY_PAGES for a migration.  Without PML the guest's
        pages are write-protected: its first store to each after every fetch
        of the log exits then and there (an EPT violation KVM fixes up)."""
        wp = on and not self.host.pml and not self.native
        self.cpu_mem.write_fault = self._write_protected if wp else None

    def _write_protected(self, pages: int) -> None:
        if pages:
            self.vcpus[0].charge_path(DIRTY_EXIT * pages)
            self._faulted += pages

    def take_dirty(self, charge: bool = True) -> list[int]:
        """KVM_GET_DIRTY_LOG and the VMM's own log: every page written since
        the last call.  The vCPUs' writes reach it through the CPU's
        page-modification log, which costs the guest an exit each time its
        512 entries fill; without PML each page's first write took its exit
        already (those the guest dirtied with stores the model does not trap,
        ring indices, are charged here).  Either way each vCPU is kicked (to
        flush its log, or its TLB of the pages protected again)."""
        written = self.cpu_mem.take_dirty()
        faulted, self._faulted = self._faulted, 0
        if charge and not self.native:
            now = self.sim.now
            for vcpu in self.vcpus:
                vcpu.sync(now)
                vcpu.charge_path(DIRTY_EXIT)
            exits = -(-len(written) // PML_ENTRIES) if self.host.pml else len(written) - faulted
            self.vcpus[0].charge_path(DIRTY_EXIT * exits)
        return sorted({*written, *self.mem.take_dirty()})

    def trap(self, path: tuple[str, ...]) -> tuple[str, ...]:
        """What an access that would take ``path`` costs on this machine."""
        return () if self.native else path

    def _cfg_read(self, cpu: Resource, off: int, size: int) -> int:
        return self.host_bridge.pio_read(PCI_CONFIG_PORTS[0] + off, size)

    def _cfg_write(self, cpu: Resource, off: int, size: int, value: int) -> None:
        self.host_bridge.pio_write(PCI_CONFIG_PORTS[0] + off, size, value)

    def leave(self) -> None:
        """The VM is gone from its host (migrated away): its threads free their cores."""
        for res in self.resources:
            if res.core is not None:
                self.host.unplace(res)

    def thread(self, role: str, dedicated: bool = False) -> Resource:
        """A host thread working for this VM (vhost worker, backend…)."""
        res = Resource(f"{self.host.name}/{self.name}/{role}", "host_thread", self.host.ledger, self.acct)
        self.host.place(res, dedicated)
        self.resources.append(res)
        return res

    def vmm_thread(self) -> Resource:
        """The VMM's main-loop thread (QEMU's iothread), one per VM."""
        if self._vmm is None:
            self._vmm = self.thread("qemu")
        return self._vmm
