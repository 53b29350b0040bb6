"""The guest operating system, as far as networking needs one: it boots by
enumerating PCI through 0xCF8/0xCFC, binds a driver to every NIC it knows by
vendor and device ID, brings interfaces up with the addresses it is given
(matched by MAC, as cloud-init does) and runs deferred work (NAPI polls,
application steps) on its vCPUs: an interrupt's handler runs on the vCPU
that took it, and work it defers (``run_soon``: softirq, NAPI) runs on that
same vCPU afterwards, as Linux raises a softirq on the CPU it is on.
``cpu`` is the vCPU running kernel code now; outside it, the boot vCPU."""

from __future__ import annotations

import ipaddress
import os
import pkgutil
import struct
from collections import Counter
from functools import partial
from heapq import heappop, heappush
from importlib import import_module
from types import TracebackType
from typing import Callable

from ..mem import guest_memory
from ..mem.guest_memory import PAGE_SHIFT
from ..net.stack import IPv4Stack
from ..spec.pci import Bdf
from . import drivers
from .acpiphp import Acpiphp
from .alloc import DmaAllocator
from .drivers.failover import register_netdev, unregister_netdev
from .pci import PciEnumerator



def pci_drivers() -> dict[tuple[int, int], tuple[type, ...]]:
    """Every PCI NIC driver in guest/drivers by the (vendor, device) IDs it
    binds (its ``ID_TABLE``, else its ``VENDOR`` and ``DEVICE``), as a Linux
    driver's id_table names them; where several bind one ID, in the order
    they are tried (``PROBE_ORDER``, lowest first: the order their modules load)."""
    found: dict[tuple[int, int], list[type]] = {}
    for info in pkgutil.iter_modules(drivers.__path__):
        module = import_module(f"{drivers.__name__}.{info.name}")
        for driver in vars(module).values():
            if isinstance(driver, type) and driver.__module__ == module.__name__ and "VENDOR" in vars(driver):
                for ids in vars(driver).get("ID_TABLE", ((driver.VENDOR, driver.DEVICE),)):
                    found.setdefault(ids, []).append(driver)
    return {ids: tuple(sorted(candidates, key=lambda d: getattr(d, "PROBE_ORDER", 0)))
            for ids, candidates in found.items()}


DRIVERS = pci_drivers()
FIRST_VECTOR = 0x30                 # below: exceptions and legacy IRQs
FIRST_SYSTEM_VECTOR = 0xEC          # from here up: the local APIC's own vectors (arch/x86 irq_vectors.h)
IA32_SYSCALL_VECTOR = 0x80          # int $0x80, never a device's


class GuestKernel:
    def __init__(self, name: str, vcpu, mem, sim, drivers: dict | None = None, resident_mb: int = 0,
                 driver_override: dict | None = None) -> None:
        """``drivers``: the drivers it carries by ID (default: all); ``driver_override``:
        PCI function -> the only driver's module name that may bind it (sysfs driver_override)."""
        self.name = name
        self.resident_mb = resident_mb
        self.drivers = DRIVERS if drivers is None else drivers
        self.driver_override = driver_override or {}
        self.vcpu = self.cpu = vcpu         # the boot vCPU; the one running kernel code
        self.vcpus = vcpu.vm.vcpus
        self.mem = mem
        self.sim = sim
        self.alloc = DmaAllocator(mem.size, self._zero)
        self.stats: Counter[str] = Counter()
        self.netdevs: list = []
        self.interfaces: dict[bytes, IPv4Stack] = {}
        self.pci = PciEnumerator(self.vcpu)
        self._next_vector = FIRST_VECTOR
        self._free_vectors: list[int] = []     # given back, lowest first (the vector matrix)
        self._vectors: dict[Bdf, list[int]] = {}   # each PCI function's vectors
        self._parked: list[tuple[Callable[[], None], int]] = []     # (work, index of its vCPU)
        self._idt: dict[int, Callable[[], None]] = {}
        self.xen_platform = None            # a Xen guest's events and grants layer (xenbus_probe)
        self.fault: str | None = None       # the oops that stopped this kernel

    def boot(self) -> None:
        self.image = self._load_image()
        for info in self.pci.scan():
            self._bind(info)
        Acpiphp(self)

    def _bind(self, info) -> None:
        """__device_attach: each driver that binds the ID (and its override
        allows) probes in turn until one takes the function.  really_probe: a
        probe that fails leaves the function disabled and gives back what it
        took (devres_release_all); the next driver may try; the last one's
        failure stands."""
        override = self.driver_override.get(info.bdf)
        candidates = [d for d in self.drivers.get((info.vendor, info.device), ())
                      if override is None or d.__module__.rsplit(".", 1)[-1] == override]
        for n, driver in enumerate(candidates, 1):
            try:
                info.driver = driver(self, info)
            except (RuntimeError, MemoryError):
                self.pci_release(info)
                if n == len(candidates):
                    raise
                self.pci.enable(info)
                continue
            register_netdev(self, info.driver)
            return

    # ---- PCI hot plug (entered from the ACPI GPE method, guest/acpiphp.py) ----------
    def pci_hotplug(self, slot: int) -> None:
        """A card arrived in ``slot`` of bus 0: scan it, probe its drivers.  A
        device that finds no room for its BARs or whose probe fails stays unbound."""
        try:
            for info in self.pci.scan_slot(slot):
                self._bind(info)
        except (RuntimeError, MemoryError):     # PciResourceError, a driver's probe error, no DMA memory left
            self.stats["pci_hotplug_failed"] += 1

    def pci_remove(self, slot: int) -> None:
        """The card in ``slot`` is to go: each function's netdev unregistered,
        its driver's remove(), the function forgotten."""
        for info in self.pci.remove_slot(slot):
            if info.driver is not None:
                unregister_netdev(self, info.driver)
                info.driver.remove()

    def attach_netdev(self, netdev) -> None:
        """A NIC found off the PCI bus (a xenbus frontend) joins the ones ``ifup`` configures."""
        self.netdevs.append(netdev)

    def alloc_vector(self, owner: Bdf | None = None) -> int:
        """An IDT vector for an MSI/MSI-X interrupt: the lowest free one
        (IA32_SYSCALL_VECTOR excepted); ``owner``'s release frees it."""
        if self._free_vectors:
            vector = heappop(self._free_vectors)
        elif self._next_vector >= FIRST_SYSTEM_VECTOR:
            raise RuntimeError(f"{self.name}: no free IDT vector for another MSI-X entry")
        else:
            vector = self._next_vector
            self._next_vector += 2 if vector + 1 == IA32_SYSCALL_VECTOR else 1
        if owner is not None:
            self._vectors.setdefault(owner, []).append(vector)
        return vector

    def pci_release(self, info) -> None:
        """The function's driver is gone (removed, or its probe failed): the
        function disabled, its vectors free (an interrupt still arriving on
        one is spurious: acknowledged and counted), its DMA memory given back."""
        self.pci.disable(info)
        for vector in self._vectors.pop(info.bdf, ()):
            self.request_irq(vector, partial(self._spurious, vector))
            heappush(self._free_vectors, vector)
        self.alloc.release(info.bdf)

    def request_irq(self, key: int, handler: Callable[[], None]) -> None:
        """The IDT entry for an IOAPIC pin or MSI vector ``key`` (one table
        for every vCPU); the handler runs as the kernel's own code on the
        vCPU that took the interrupt (a fault in it is an oops)."""
        self._idt[key] = handler
        for vcpu in self.vcpus:
            vcpu.set_irq_handler(key, self._handler_on(vcpu, handler))

    def _handler_on(self, vcpu, handler: Callable[[], None]) -> Callable[[], None]:
        on = self._on

        def entry() -> None:          # a closure, not a partial: PyPy's partial is interpreted Python
            on(vcpu, handler)
        return entry

    def _on(self, vcpu, fn: Callable[[], None]) -> None:
        """Run ``fn`` as kernel code on ``vcpu``."""
        if vcpu is self.cpu:
            self._guarded(fn)
            return
        self._enter(vcpu)
        try:
            self._guarded(fn)
        finally:
            self._enter(self.vcpu)

    def _enter(self, vcpu) -> None:
        """``vcpu`` runs kernel code: what it does and what the stacks above it do is its."""
        self.cpu = vcpu
        for stack in self.interfaces.values():
            stack.cpu = vcpu

    def _guarded(self, fn: Callable[[], None]) -> None:
        if self.fault is None:
            try:
                fn()
            except Exception as exc:
                self._oops(exc)

    def _oops(self, exc: Exception) -> None:
        """The kernel's own code faulted (a driver trusted what a device or
        its own scribbled rings handed it): the kernel panics, this VM's
        vCPU does nothing more, the simulator and the other VMs go on.  An
        exception raised in host code the guest called into (a trap, a
        hypercall) is the simulator's and goes on up."""
        if not _raised_by_guest(exc.__traceback__):
            raise exc
        kind = type(exc)
        where = "" if kind.__module__ == "builtins" else kind.__module__.rsplit(".", 1)[-1] + "."
        self.fault = f"{where}{kind.__qualname__}: {exc}"
        self.stats["guest_fault"] += 1
        self._parked.clear()

    def dropped(self, why: str, frame: bytes | None = None, n: int = 1) -> None:
        """A driver discards ``n`` frames (``frame``, if one is whole): its
        counter, and the run's ledger under this machine's name."""
        self.stats[why] += n
        for _ in range(n):
            self.sim.drops.count(f"{self.name}/{why}", frame)

    def _spurious(self, vector: int) -> None:
        self.stats["spurious_interrupts"] += 1
        self.cpu.eoi(vector)

    def _load_image(self) -> int:
        """The booted system's resident memory (kernel text and data, page
        cache, processes): ``resident_mb`` of pages taken first, each holding
        its own frame number with the top bit set in its first 8 bytes (so
        no page of it is a zero page); returns where it starts."""
        pages = self.resident_mb << 8
        base = self.alloc.alloc(pages << PAGE_SHIFT)
        first = base >> PAGE_SHIFT
        self.mem.stamp_pages(base, struct.pack(f"<{pages}Q", *range(first | 1 << 63, (first + pages) | 1 << 63)), 8)
        return base

    def _zero(self, gpa: int, size: int) -> None:
        self.mem.write(gpa, bytes(size))

    def coalesce(self, mac: bytes, rate: int | str) -> None:
        """ethtool -C on the NIC with ``mac``: its interrupt moderation fixed
        at ``rate`` interrupts/s, or ``off``."""
        next(n for n in self.netdevs if n.mac == mac).set_coalesce(rate)

    def ethtool_features(self, mac: bytes, gso: bool, gro: bool, tso: bool, tx: bool, rx: bool = True) -> None:
        """ethtool -K on the interface with ``mac``: its software GSO and GRO
        on or off, its device's TSO and TX checksum where the driver has
        them (TSO needs the checksum: netdev_fix_features), and whether the
        driver trusts the device's receive checksums where it has them."""
        stack = self.interfaces[mac]
        netdev = stack.netdev
        offloads = getattr(netdev, "offloads", frozenset())
        stack.gso, stack.gro = gso, gro
        stack.tx_csum = tx and "tx_csum" in offloads
        stack.tso = tso and stack.tx_csum and "tso" in offloads
        if hasattr(netdev, "rx_csum"):
            netdev.rx_csum = rx

    def ifup(self, mac: bytes, address: str) -> IPv4Stack:
        """Configure the interface whose hardware address is ``mac``."""
        for netdev in self.netdevs:
            if netdev.mac == mac:
                stack = IPv4Stack(self.vcpu, mac, ipaddress.IPv4Interface(address), netdev,
                                  drops=self.sim.drops, place=f"{self.name}/stack", sched=self)
                netdev.stack = stack
                self.interfaces[mac] = stack
                return stack
        raise LookupError(f"{self.name}: no NIC with MAC {mac.hex(':')} (found {[n.mac.hex(':') for n in self.netdevs]})")

    def receive_time(self) -> float:
        """When the datagram being delivered reached its socket."""
        return self.cpu.cursor

    def run_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the vCPU running kernel code now, once it is free (softirq, workqueue)."""
        cpu = self.cpu
        self.sim.at(cpu.cursor, self._run, fn, cpu.index)

    def run_at(self, when: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the boot vCPU at ``when``."""
        self.sim.at(when, self._run, fn, 0)

    def _run(self, fn: Callable[[], None], index: int) -> None:
        """``fn`` on vCPU ``index`` of the machine the kernel is on when it is due."""
        vcpu = self.vcpus[index]
        if vcpu.vm.paused:                      # the vCPU is stopped: the work waits for it
            self._parked.append((fn, index))
            return
        vcpu.sync(self.sim.now)
        self._on(vcpu, fn)

    def resume(self) -> None:
        """The vCPUs run again: work that waited for each runs there, in order."""
        parked, self._parked = self._parked, []
        for fn, index in parked:
            self.sim.at(self.vcpus[index].cursor, self._run, fn, index)

    # ---- live migration: this OS image continues on another machine ----------------
    def move_to(self, vcpu, mem, xen=None) -> None:
        """The switch-over: CPU state (the IDT, interrupts in service) and the
        drivers continue on ``vcpu`` over ``mem``, a copy of the old memory;
        a Xen guest's hypercalls reach ``xen``, the target's hypervisor.
        First thing when it runs: drivers reconnect where they must, then each
        interface announces itself (gratuitous ARP, as netdev_notify_peers
        after a migration) so switches relearn its MAC."""
        olds, self.vcpu, self.cpu, self.vcpus, self.mem = self.vcpus, vcpu, vcpu, vcpu.vm.vcpus, mem
        for old, new in zip(olds, self.vcpus):
            new.in_service, old.in_service = old.in_service, set()
            old.irq_handlers = {}
        for key, handler in self._idt.items():
            self.request_irq(key, handler)
        self.pci.io = vcpu
        if xen is not None and self.xen_platform is not None:
            self.xen_platform.move_to(vcpu, mem, xen)
        for netdev in self.netdevs:
            netdev.rebind(vcpu, mem)
        for stack in self.interfaces.values():
            stack.cpu = vcpu
        announce = [stack.announce for stack in self.interfaces.values()]
        self._parked[:0] = [(fn, 0) for fn in [netdev.resume for netdev in self.netdevs] + announce]


_GUEST = os.path.dirname(__file__) + os.sep
_MEMORY = os.path.dirname(guest_memory.__file__) + os.sep


def _raised_by_guest(tb: TracebackType | None) -> bool:
    """Whether the innermost frame that raised, past the guest's accesses to
    its own memory, is the guest kernel's code."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    frames = [f for f in frames if not f.startswith(_MEMORY)]
    return bool(frames) and frames[-1].startswith(_GUEST)
