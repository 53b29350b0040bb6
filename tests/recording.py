"""Test scaffolding shared by the device suites: the backend boundary a tap
would occupy, recording what a device model sends, and handing it frames."""

from __future__ import annotations

from iovirt.sim.resource import Resource
from iovirt.spec.pci import PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT


class Port:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.flushes = 0

    def send(self, cpu: Resource, frame: bytes) -> None:
        self.frames.append(bytes(frame))

    def flush(self, cpu: Resource) -> None:
        self.flushes += 1


def deliver(dev, cpu: Resource, frame: bytes) -> bool:
    """What a tap does: ask the device, then hand the frame over."""
    if not dev.can_receive(len(frame)):
        return False
    dev.receive(cpu, frame)
    return True


class RigState:
    """What every device rig reads back: the INTx level it last saw (``irqs``)
    and the device's PCI Received Master Abort bit (``dev``)."""

    @property
    def level(self) -> int:
        return self.irqs[-1] if self.irqs else 0

    @property
    def master_abort(self) -> bool:
        return bool(self.dev.pci.config_read(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT)
