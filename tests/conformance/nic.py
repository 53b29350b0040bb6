"""One driver-script interface, two devices behind it: QEMU's model over qtest
and iovirt's model in-process.  A conformance test is a function of a
:class:`Nic`; it runs unchanged on both and the test compares what each
returned.

The interface is what a guest driver plus the wire see of a NIC: register
accesses on its register BAR, guest memory, time, the INTx line, frames in
from the wire and frames out to it.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import tempfile
import termios
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iovirt.mem.dma import Dma
from iovirt.net.gso import GsoFrame, segment
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec.pci import (
    PCI_CAP_LIST_NEXT, PCI_CAP_LIST_TTL, PCI_CAPABILITY_LIST, PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY, PCI_INTERRUPT_PIN, PCI_PIRQ_IRQS, PCI_STD_NUM_BARS, Bdf, pci_base_address,
)

from .qtest import TIMEOUT_S, PciConfig, Qtest, QtestError, VirtualClock, piix_pirq, route_pirqs

MAC = bytes.fromhex("525400123456")
MEM_SIZE = 64 << 20             # as QEMU's -m 64
SLOT = 3                        # where iovirt plugs a VM's first emulated NIC (hypervisor FIRST_SLOT)
MMIO_BASE = 0xE0000000          # inside the pc machine's 32-bit PCI hole
IO_BASE = 0xC000
_POLL_S = 0.0005


@dataclass(frozen=True)
class NicModel:
    """A device under test: its QEMU ``-device`` name, iovirt's model class
    (``cls(sim, mac, dma, irq, timer_cpu)``, with ``bar_handlers``,
    ``can_receive``, ``receive``) and the BAR that holds its registers."""

    qemu_device: str
    iovirt_class: Callable[..., Any]
    bar: int


class Nic:
    """What a test script may do with a NIC: ``read``/``write`` reach the
    register BAR, ``read_bar``/``write_bar`` any BAR (a device with two)."""

    bar = 0

    def read(self, offset: int, size: int = 4) -> int:
        return self.read_bar(self.bar, offset, size)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        self.write_bar(self.bar, offset, value, size)

    def read_bar(self, index: int, offset: int, size: int = 4) -> int:
        raise NotImplementedError

    def write_bar(self, index: int, offset: int, value: int, size: int = 4) -> None:
        raise NotImplementedError

    def read32(self, offset: int) -> int:
        return self.read(offset, 4)

    def write32(self, offset: int, value: int) -> None:
        self.write(offset, value, 4)

    def config_read(self, reg: int, size: int = 4) -> int:
        raise NotImplementedError

    def config_write(self, reg: int, value: int, size: int = 4) -> None:
        raise NotImplementedError

    def mem_write(self, addr: int, data: bytes) -> None:
        raise NotImplementedError

    def mem_read(self, addr: int, length: int) -> bytes:
        raise NotImplementedError

    def step(self, ns: int) -> None:
        """Let at least ``ns`` nanoseconds of device time pass; the device's
        timers due by then have fired.  (QEMU's time may also run ahead on its
        own, so a script must not rely on a timer not having fired yet.)"""
        raise NotImplementedError

    def irq_level(self) -> bool:
        """The level of the INTx line, as the interrupt controller sees it."""
        raise NotImplementedError

    def inject_frame(self, frame: bytes) -> None:
        """A frame arrives from the wire; returns once the backend handed it to
        the device (or queued it because the device could not take it)."""
        raise NotImplementedError

    def sent_frames(self) -> list[bytes]:
        """Frames the device put on the wire since the last call."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# --- QEMU ----------------------------------------------------------------------
def _unsent(sock: socket.socket) -> int:
    """Bytes of our datagrams the peer has not read yet (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]


class QemuNic(Nic):
    """QEMU's device model: registers through qtest, frames through a
    ``-netdev dgram`` pair of Unix datagram sockets (one frame a datagram)."""

    def __init__(self, model: NicModel, mac: bytes = MAC, slot: int = SLOT) -> None:
        self.slot = slot
        self._dir = tempfile.TemporaryDirectory(prefix="iovirt-conformance-")
        workdir = Path(self._dir.name)
        self._qemu_addr = str(workdir / "qemu.sock")
        self.qt: Qtest | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(str(workdir / "wire.sock"))
            self.sock.setblocking(False)
            self.qt = Qtest(self._args(model, mac, workdir), workdir)
            self._setup(model)
        except BaseException:
            self.close()
            raise

    def _args(self, model: NicModel, mac: bytes, workdir: Path) -> list[str]:
        mac_text = ":".join(f"{b:02x}" for b in mac)
        return ["-device", f"{model.qemu_device},netdev=n0,mac={mac_text},addr={self.slot:#x},romfile=",
                "-netdev", (f"dgram,id=n0,local.type=unix,local.path={self._qemu_addr},"
                            f"remote.type=unix,remote.path={workdir / 'wire.sock'}")]

    def _setup(self, model: NicModel) -> None:
        qt = self.qt
        route_pirqs(qt)
        qt.irq_intercept_in("ioapic")
        self.pci = PciConfig(qt, Bdf(0, self.slot, 0))
        self.bars = self.pci.map_bars(MMIO_BASE, IO_BASE)
        self.pci.enable()
        self.clock = VirtualClock(qt)
        self.bar = model.bar
        self.gsi = PCI_PIRQ_IRQS[piix_pirq(self.slot, self.pci.read(PCI_INTERRUPT_PIN, 1))]

    def read_bar(self, index: int, offset: int, size: int = 4) -> int:
        base, is_io = self.bars[index]
        return self.qt.in_(base + offset, size) if is_io else self.qt.readx(base + offset, size)

    def write_bar(self, index: int, offset: int, value: int, size: int = 4) -> None:
        base, is_io = self.bars[index]
        addr = base + offset
        if is_io:
            self.qt.out(addr, size, value)
        else:
            self.qt.writex(addr, size, value)

    def config_read(self, reg: int, size: int = 4) -> int:
        return self.pci.read(reg, size)

    def config_write(self, reg: int, value: int, size: int = 4) -> None:
        self.pci.write(reg, value, size)

    def mem_write(self, addr: int, data: bytes) -> None:
        self.qt.memwrite(addr, data)

    def mem_read(self, addr: int, length: int) -> bytes:
        return self.qt.memread(addr, length)

    def step(self, ns: int) -> None:
        self.clock.step(ns)
        self._sync()

    def _sync(self) -> None:
        """Two round trips, so one whole main-loop pass (fd handlers, then
        timers) ran after anything that was already under way."""
        self.qt.readx(0, 1)
        self.qt.readx(0, 1)

    def irq_level(self) -> bool:
        return self.qt.irq(self.gsi)

    def inject_frame(self, frame: bytes) -> None:
        self.sock.sendto(frame, self._qemu_addr)
        deadline = time.monotonic() + TIMEOUT_S
        while _unsent(self.sock):
            if time.monotonic() > deadline:
                raise QtestError("QEMU's netdev did not take the injected frame")
            time.sleep(_POLL_S)
        self._sync()

    def sent_frames(self) -> list[bytes]:
        frames = []
        while True:
            try:
                frames.append(self.sock.recv(65536))
            except BlockingIOError:
                return frames

    def close(self) -> None:
        if self.qt is not None:
            self.qt.close()
        self.sock.close()
        self._dir.cleanup()


# --- iovirt --------------------------------------------------------------------
class WirePort:
    """The backend port: records what the device sends; frames from the wire
    wait in a queue while the device cannot take them, and are retried on
    ``flush`` (as QEMU's net queue on ``qemu_flush_queued_packets``)."""

    def __init__(self, device, cpu: Resource) -> None:
        self.device = device
        self.cpu = cpu
        self.frames: list[bytes] = []
        self.pending: deque[bytes] = deque()

    def send(self, cpu: Resource, frame: bytes, gso_size: int = 0) -> None:
        """A TSO packet (``gso_size``) is cut as the host's software GSO cuts one for a port that cannot take it."""
        self.frames += segment(GsoFrame.of(frame, gso_size)) if gso_size else [bytes(frame)]

    def flush(self, cpu: Resource) -> None:
        while self.pending and self.device.can_receive(len(self.pending[0])):
            self.device.receive(cpu, self.pending.popleft())

    def deliver(self, frame: bytes) -> None:
        self.pending.append(frame)
        self.flush(self.cpu)


class IovirtNic(Nic):
    """iovirt's device model with real guest memory and DMA, on its own
    simulated clock; register accesses go straight to the BAR handlers."""

    def __init__(self, model: NicModel, mac: bytes = MAC) -> None:
        ledger = Ledger(load_profile("default"))
        self.sim = Sim()
        self.cpu = Resource("vcpu0", "vcpu", ledger)
        self.mem = GuestMemory(MEM_SIZE)
        self.line = False
        self.device = model.iovirt_class(self.sim, mac, Dma(self.mem), self._irq,
                                         timer_cpu=Resource("vmm", "host_thread", ledger))
        self.fn = self.device.pci
        self.fn.on_intx(self._intx)
        self.fn.config_write(PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)
        self.port = WirePort(self.device, self.cpu)
        self.device.port = self.port
        self.bar = model.bar

    def _irq(self, cpu: Resource, level: int) -> None:
        self.fn.set_intx(bool(level))

    def _intx(self, asserted: bool) -> None:
        self.line = asserted

    def read_bar(self, index: int, offset: int, size: int = 4) -> int:
        value = self.device.bar_handlers(index)[0](self.cpu, offset, size)
        self._catch_up()
        return value

    def write_bar(self, index: int, offset: int, value: int, size: int = 4) -> None:
        self.device.bar_handlers(index)[1](self.cpu, offset, size, value)
        self._catch_up()

    def config_read(self, reg: int, size: int = 4) -> int:
        return self.fn.config_read(reg, size)

    def config_write(self, reg: int, value: int, size: int = 4) -> None:
        self.fn.config_write(reg, size, value)

    def mem_write(self, addr: int, data: bytes) -> None:
        self.mem.write(addr, data)

    def mem_read(self, addr: int, length: int) -> bytes:
        return self.mem.read(addr, length)

    def _catch_up(self) -> None:
        """Run the device's timers due by the time the vCPU has got to."""
        self.sim.run(until=max(self.sim.now, self.cpu.cursor))

    def step(self, ns: int) -> None:
        until = max(self.sim.now, self.cpu.cursor) + ns
        self.sim.run(until=until)
        self.cpu.sync(until)

    def irq_level(self) -> bool:
        return self.line

    def inject_frame(self, frame: bytes) -> None:
        self.port.deliver(bytes(frame))
        self._catch_up()

    def sent_frames(self) -> list[bytes]:
        frames, self.port.frames = self.port.frames, []
        return frames


# --- configuration-space scripts ------------------------------------------------
def bar_masks(nic: Nic) -> list[int]:
    """PCI 3.0 6.2.5.1 size probe of every BAR register (the address is put back);
    a 64-bit BAR shows its upper half in the next register."""
    masks = []
    for i in range(PCI_STD_NUM_BARS):
        reg = pci_base_address(i)
        old = nic.config_read(reg)
        nic.config_write(reg, 0xFFFFFFFF)
        masks.append(nic.config_read(reg))
        nic.config_write(reg, old)
    return masks


def capabilities(nic: Nic) -> list[tuple[int, int]]:
    """(offset, capability ID) along the capability list (PCI 3.0 6.7),
    walked no further than a list without a loop can go."""
    caps, at = [], nic.config_read(PCI_CAPABILITY_LIST, 1)
    for _ in range(PCI_CAP_LIST_TTL):
        if not at:
            break
        caps.append((at, nic.config_read(at, 1)))
        at = nic.config_read(at + PCI_CAP_LIST_NEXT, 1)
    return caps


# --- running a script on both ---------------------------------------------------
@contextmanager
def both(model: NicModel, mac: bytes = MAC) -> Iterator[tuple[Nic, Nic]]:
    """QEMU's and iovirt's model of the same device, both freshly reset."""
    qemu = QemuNic(model, mac)
    try:
        yield qemu, IovirtNic(model, mac)
    finally:
        qemu.close()


def pair_fixture(model: NicModel, scope: str = "function"):
    """A pytest fixture yielding :func:`both` for ``model``: per test, or per
    module (``scope="module"``) for tests that only read."""
    @pytest.fixture(scope=scope)
    def fixture():
        with both(model) as nics:
            yield nics
    return fixture


def run(nics: tuple[Nic, Nic], script: Callable[[Nic], Any]) -> tuple[Any, Any]:
    """The script's result on QEMU and on iovirt."""
    return tuple(script(nic) for nic in nics)


def agree(nics: tuple[Nic, Nic], script: Callable[[Nic], Any]) -> Any:
    """Run the script on both; they must return the same; returns it."""
    qemu, iovirt = run(nics, script)
    assert qemu == iovirt, f"QEMU {qemu!r} != iovirt {iovirt!r}"
    return qemu
