"""The guest operating system, as far as networking needs one: it boots by
enumerating PCI through 0xCF8/0xCFC, binds a driver to every NIC it knows by
vendor and device ID, brings interfaces up with the addresses it is given
(matched by MAC, as cloud-init does) and runs deferred work (NAPI polls,
application steps) on its vCPU."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Callable

from .alloc import DmaAllocator
from .drivers.e1000 import E1000Driver
from .drivers.ixgbe import IxgbeDriver
from .drivers.ixgbevf import IxgbevfDriver
from .drivers.pcnet import PCNetDriver
from .drivers.rtl8139 import RTL8139Driver
from .drivers.tulip import TulipDriver
from .drivers.virtio_net import VirtioNetDriver
from .net.stack import IPv4Stack
from .pci import PciEnumerator

DRIVERS = {(drv.VENDOR, drv.DEVICE): drv
           for drv in (E1000Driver, RTL8139Driver, VirtioNetDriver, PCNetDriver, TulipDriver, IxgbeDriver,
                       IxgbevfDriver)}
FIRST_VECTOR = 0x30                 # below: exceptions and legacy IRQs


class GuestKernel:
    def __init__(self, name: str, vcpu, mem, sim, drivers: dict | None = None) -> None:
        self.name = name
        self.drivers = DRIVERS if drivers is None else drivers
        self.vcpu = vcpu
        self.mem = mem
        self.sim = sim
        self.alloc = DmaAllocator(mem.size)
        self.stats: Counter[str] = Counter()
        self.netdevs: list = []
        self.interfaces: dict[bytes, IPv4Stack] = {}
        self.pci = PciEnumerator(self.vcpu)
        self._next_vector = FIRST_VECTOR

    def boot(self) -> None:
        for info in self.pci.scan():
            driver = self.drivers.get((info.vendor, info.device))
            if driver is not None:
                self.netdevs.append(driver(self, info))

    def attach_netdev(self, netdev) -> None:
        """A NIC found off the PCI bus (a xenbus frontend) joins the ones ``ifup`` configures."""
        self.netdevs.append(netdev)

    def alloc_vector(self) -> int:
        """An IDT vector for an MSI/MSI-X interrupt."""
        vector, self._next_vector = self._next_vector, self._next_vector + 1
        return vector

    def ifup(self, mac: bytes, address: str) -> IPv4Stack:
        """Configure the interface whose hardware address is ``mac``."""
        for netdev in self.netdevs:
            if netdev.mac == mac:
                stack = IPv4Stack(self.vcpu, mac, ipaddress.IPv4Interface(address), netdev)
                netdev.stack = stack
                self.interfaces[mac] = stack
                return stack
        raise LookupError(f"{self.name}: no NIC with MAC {mac.hex(':')} (found {[n.mac.hex(':') for n in self.netdevs]})")

    def run_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the vCPU once it is free (softirq, workqueue)."""
        self.sim.at(self.vcpu.cursor, self._run, fn)

    def run_at(self, when: int, fn: Callable[[], None]) -> None:
        self.sim.at(when, self._run, fn)

    def _run(self, fn: Callable[[], None]) -> None:
        vcpu, now = self.vcpu, self.sim.now
        if now > vcpu.cursor:  # noqa: PLR1730 - NOTE: vcpu.sync(now) inlined, once per deferred call
            vcpu.cursor = now
        fn()
