"""VMware's Flexible adapter: a Vlance (the Am79C970A of ``pcnet.py``) whose
I/O BAR also holds a morph port and VMXNET's ports (open-vm-tools ``net.h``:
the Vlance's 0x20 bytes, the 4-byte morph port, VMXNET's 0x40).  The morph
port reads LANCE_CHIP; the guest's vmxnet driver writes VMXNET_CHIP to it,
reads it back, and from then on the adapter is a VMXNET (``vmxnet.py``) and
its Vlance registers are gone; writing LANCE_CHIP morphs it back (the
driver's remove).  A guest without the vmxnet driver never touches the morph
port and drives the Vlance as pcnet32 does.  Contract as
:class:`~iovirt.devices.e1000.E1000`."""

from __future__ import annotations

from ..mem.dma import Dma
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import vmxnet as s
from .pcnet import PCNet
from .registry import DeviceEntry
from .vmstate import Flag, VmState
from .vmxnet import VMXNET_FIELDS, Irq, VmxnetPorts


class Flexible(PCNet, VmxnetPorts):
    """A morphable Vlance: Vlance until its driver morphs it, VMXNET (v1) after."""

    NAME = "flexible"
    IO_SIZE = s.FLEXIBLE_IO_SIZE
    FEATURES = s.FEATURE_ZERO_COPY_TX            # VMXNET v1: no TSO, no jumbo frames, the smaller rings

    def __init__(self, sim: Sim, mac: bytes, dma: Dma, irq: Irq, timer_cpu: Resource) -> None:
        self.perm_mac = mac
        self.kick_hook = None
        self.morphed = False
        super().__init__(sim, mac, dma, irq, timer_cpu)
        self.vx_reset()

    def io_read(self, cpu: Resource, offset: int, size: int) -> int:
        if offset >= s.MORPHED_BASE:
            return self.vx_read(cpu, offset - s.MORPHED_BASE, size) if self.morphed else (1 << 8 * size) - 1
        if offset >= s.MORPH_PORT:
            if offset != s.MORPH_PORT or size != 2:
                return (1 << 8 * size) - 1
            return s.VMXNET_CHIP if self.morphed else s.LANCE_CHIP
        return (1 << 8 * size) - 1 if self.morphed else super().io_read(cpu, offset, size)

    def io_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        if offset >= s.MORPHED_BASE:
            if self.morphed:
                self.vx_write(cpu, offset - s.MORPHED_BASE, size, value)
        elif offset >= s.MORPH_PORT:
            if offset == s.MORPH_PORT and size == 2 and value in (s.LANCE_CHIP, s.VMXNET_CHIP):
                self._morph(cpu, value == s.VMXNET_CHIP)
        elif not self.morphed:
            super().io_write(cpu, offset, size, value)

    def _morph(self, cpu: Resource, vmxnet: bool) -> None:
        """Into VMXNET mode or back: the mode left starts over from reset, its interrupt dropped."""
        if vmxnet == self.morphed:
            return
        self.morphed = vmxnet
        self.reset()
        self.vx_reset()
        self.irq(cpu, 0)

    def can_receive(self, size: int) -> bool:
        return self.vx_can_receive(size) if self.morphed else super().can_receive(size)

    def receive(self, cpu: Resource, frame: bytes) -> None:
        if self.morphed:
            self.vx_receive(cpu, frame)
        else:
            super().receive(cpu, frame)

    VMSTATE = VmState("flexible", 1, (Flag("morphed"), *PCNet.VMSTATE.fields, *VMXNET_FIELDS))


DEVICE = DeviceEntry(Flexible, "paravirt", "VMware Flexible: a Vlance the vmxnet driver morphs into VMXNET",
                     ("VMware ESXi",), "vmxnet", (s.VLANCE_VENDOR_ID, s.VLANCE_DEVICE_ID), hypervisor="esxi")
