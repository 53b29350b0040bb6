"""A small client for QEMU's qtest protocol (QEMU ``system/qtest.c``,
``docs/devel/qtest.rst``), PCI configuration mechanism #1 on top of it, and
a virtual clock.

One command per line on QEMU's stdin, one ``OK ...`` / ``FAIL ...`` /
``ERR ...`` line back per command; ``IRQ raise N`` / ``IRQ lower N`` lines
arrive in between, at any time, once ``irq_intercept_in`` is in force.  A
reader thread sorts the two apart, so the IRQ state is current whenever a
command's answer comes back (QEMU prints the IRQ line before the answer of
the access that caused it).

Debian's QEMU ships the protocol server but not the qtest accelerator module
(``accel-qtest-*.so``), and without it there is no ``clock_step``.  So QEMU
runs under TCG with a 64 KiB firmware image holding ``cli; hlt`` at the reset
vector: the vCPU never touches a device and every device access comes from
this client.  ``-icount shift=0,sleep=off`` makes virtual time move only by
jumping to the next timer deadline while the vCPU idles, and
:class:`VirtualClock` steps it through the HPET.
"""

from __future__ import annotations

import base64
import math
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

from iovirt.spec.pci import (
    PCI_BASE_ADDRESS_IO_MASK, PCI_BASE_ADDRESS_MEM_MASK, PCI_BASE_ADDRESS_MEM_TYPE_64, PCI_BASE_ADDRESS_SPACE_IO,
    PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, PCI_CONF1_ADDRESS_PORT,
    PCI_CONF1_DATA_PORT, PCI_PIRQ_IRQS, PCI_STD_NUM_BARS, Bdf, pci_base_address, pci_conf1_address,
)

QEMU = "qemu-system-x86_64"
TIMEOUT_S = 5.0
MACHINE = "pc,accel=tcg,pit=off,usb=off,smbus=off,vmport=off"
ICOUNT = "shift=0,sleep=off"
RESET_VECTOR = 0xFFF0
HALT = bytes([0xFA, 0xF4, 0xEB, 0xFD])      # cli; 1: hlt; jmp 1b
FIRMWARE_SIZE = 0x10000                     # QEMU wants a multiple of 64 KiB
PIIX = Bdf(0, 1, 0)                         # PIIX3 PCI-to-ISA bridge of the pc machine
PIIX_PIRQRC = 0x60                          # PIIX3 datasheet 2.2.9: PIRQ[A:D] route control, 60h-63h
# IA-PC HPET specification 1.0a, 2.3: the block at its usual pc address
HPET_BASE = 0xFED00000
HPET_PERIOD = 0x004                         # upper half of GCAP_ID: tick length in femtoseconds
HPET_CFG = 0x010
HPET_CFG_ENABLE = 1
HPET_COUNTER = 0x0F0
HPET_T0_CMP = 0x108
_SIZES = {1: "b", 2: "w", 4: "l", 8: "q"}
_POLL_S = 0.0002


class QtestError(RuntimeError):
    """QEMU is missing, died, answered FAIL, or did not answer in time."""


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise QtestError(f"{QEMU} not found: the conformance tests need QEMU "
                         "(apt-get install qemu-system-x86)")
    return path


def halt_firmware(directory: Path) -> Path:
    image = bytearray(FIRMWARE_SIZE)
    image[RESET_VECTOR:RESET_VECTOR + len(HALT)] = HALT
    path = directory / "halt.bin"
    path.write_bytes(image)
    return path


class Qtest:
    """One QEMU process driven over the qtest protocol on its stdin/stdout."""

    def __init__(self, args: list[str], workdir: Path, timeout: float = TIMEOUT_S) -> None:
        self.timeout = timeout
        self.irq_levels: dict[int, bool] = {}
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[bytes] = []
        cmd = [qemu_binary(), "-machine", MACHINE, "-icount", ICOUNT, "-bios", str(halt_firmware(workdir)),
               "-nodefaults", "-display", "none", "-m", "64", "-qtest", "stdio", "-qtest-log", "none", *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    # --- process ------------------------------------------------------------
    def _read_stdout(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("[vmxnet3]"):       # hw/net/vmxnet_debug.h: VMW_ERPRN prints to stdout
                continue
            if line.startswith("IRQ "):
                _, what, num = line.split()
                self.irq_levels[int(num)] = what == "raise"
            else:
                self._answers.put(line)
        self._answers.put(None)

    def _read_stderr(self) -> None:
        self._stderr.extend(self.proc.stderr)

    def close(self) -> None:
        """Stop QEMU (SIGTERM, then SIGKILL) and wait for the readers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for thread in self._threads:
            thread.join(self.timeout)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            pipe.close()

    # --- protocol -----------------------------------------------------------
    def cmd(self, line: str) -> str:
        """Send one command; return what follows ``OK`` in the answer."""
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
            answer = self._answers.get(timeout=self.timeout)
        except (BrokenPipeError, queue.Empty):
            answer = None
        if answer is None:
            raise QtestError(f"qtest {line!r}: QEMU gave no answer (exit code {self.proc.poll()}): "
                             + b"".join(self._stderr).decode(errors="replace").strip())
        if answer != "OK" and not answer.startswith("OK "):
            raise QtestError(f"qtest {line!r}: {answer}")
        return answer[3:]

    def out(self, port: int, size: int, value: int) -> None:
        self.cmd(f"out{_SIZES[size]} {port:#x} {value:#x}")

    def in_(self, port: int, size: int) -> int:
        return int(self.cmd(f"in{_SIZES[size]} {port:#x}"), 16)

    def writex(self, addr: int, size: int, value: int) -> None:
        """A ``size``-byte access to the physical address space (MMIO or RAM)."""
        self.cmd(f"write{_SIZES[size]} {addr:#x} {value:#x}")

    def readx(self, addr: int, size: int) -> int:
        return int(self.cmd(f"read{_SIZES[size]} {addr:#x}"), 16)

    def memwrite(self, addr: int, data: bytes) -> None:
        if data:
            self.cmd(f"b64write {addr:#x} {len(data):#x} {base64.b64encode(data).decode()}")

    def memread(self, addr: int, length: int) -> bytes:
        return base64.b64decode(self.cmd(f"b64read {addr:#x} {length:#x}")) if length else b""

    def irq_intercept_in(self, qom_path: str) -> None:
        self.cmd(f"irq_intercept_in {qom_path}")

    def irq(self, num: int) -> bool:
        return self.irq_levels.get(num, False)


class VirtualClock:
    """QEMU's virtual clock, read from the HPET main counter.  With the vCPU
    halted under ``-icount sleep=off`` virtual time jumps to the next timer
    deadline whenever QEMU's main loop runs; :meth:`step` arms HPET timer 0
    (its interrupt left disabled) at the target, so there is always one, and
    polls until the counter has passed it.  Device timers due earlier have
    fired by then; time may also run ahead on its own, never behind."""

    def __init__(self, qt: Qtest) -> None:
        self.qt = qt
        self.tick_fs = qt.readx(HPET_BASE + HPET_PERIOD, 4)
        qt.writex(HPET_BASE + HPET_CFG, 4, HPET_CFG_ENABLE)

    def _reg64(self, offset: int) -> int:
        """A 64-bit HPET register through QEMU's 32-bit-only accesses, re-read across a carry."""
        while True:
            high = self.qt.readx(HPET_BASE + offset + 4, 4)
            low = self.qt.readx(HPET_BASE + offset, 4)
            if self.qt.readx(HPET_BASE + offset + 4, 4) == high:
                return high << 32 | low

    def ticks(self) -> int:
        return self._reg64(HPET_COUNTER)

    def step(self, ns: int) -> None:
        target = self.ticks() + max(1, math.ceil(ns * 1_000_000 / self.tick_fs))
        self.qt.writex(HPET_BASE + HPET_T0_CMP + 4, 4, target >> 32)
        self.qt.writex(HPET_BASE + HPET_T0_CMP, 4, target & 0xFFFFFFFF)
        deadline = time.monotonic() + self.qt.timeout
        while self.ticks() < target:
            if time.monotonic() > deadline:
                raise QtestError(f"QEMU's virtual clock did not reach +{ns} ns")
            time.sleep(_POLL_S)


class PciConfig:
    """Configuration space of one function through mechanism #1 (0xCF8/0xCFC)."""

    def __init__(self, qt: Qtest, bdf: Bdf) -> None:
        self.qt = qt
        self.bdf = bdf

    def read(self, reg: int, size: int = 4) -> int:
        self.qt.out(PCI_CONF1_ADDRESS_PORT, 4, pci_conf1_address(self.bdf, reg))
        return self.qt.in_(PCI_CONF1_DATA_PORT + (reg & 3), size)

    def write(self, reg: int, value: int, size: int = 4) -> None:
        self.qt.out(PCI_CONF1_ADDRESS_PORT, 4, pci_conf1_address(self.bdf, reg))
        self.qt.out(PCI_CONF1_DATA_PORT + (reg & 3), size, value)

    def bar_size(self, index: int) -> tuple[int, bool, bool]:
        """Size probe (PCI 3.0 6.2.5.1: write all ones, read back the mask):
        ``(size, is_io, is_64)``; size 0 for an unimplemented BAR.  A 64-bit
        BAR takes this register and the next (its upper half)."""
        reg = pci_base_address(index)
        self.write(reg, 0xFFFFFFFF)
        value = self.read(reg)
        is_io = bool(value & PCI_BASE_ADDRESS_SPACE_IO)
        is_64 = not is_io and bool(value & PCI_BASE_ADDRESS_MEM_TYPE_64)
        mask = value & (PCI_BASE_ADDRESS_IO_MASK if is_io else PCI_BASE_ADDRESS_MEM_MASK)
        if is_io:
            mask |= 0xFFFF0000          # I/O BARs may hardwire the upper 16 bits to 0
        if is_64:
            self.write(reg + 4, 0xFFFFFFFF)
            mask |= self.read(reg + 4) << 32
            return (-mask) & 0xFFFFFFFFFFFFFFFF, is_io, is_64
        return (-mask) & 0xFFFFFFFF if mask else 0, is_io, is_64

    def map_bars(self, mem_base: int, io_base: int) -> dict[int, tuple[int, bool]]:
        """Give every implemented BAR a naturally aligned address, memory BARs
        from ``mem_base`` up (64-bit ones below 4 GiB too) and I/O BARs from
        ``io_base`` up: ``{index: (address, is_io)}``."""
        bars = {}
        bases = {False: mem_base, True: io_base}
        index = 0
        while index < PCI_STD_NUM_BARS:
            size, is_io, is_64 = self.bar_size(index)
            if size:
                address = (bases[is_io] + size - 1) & -size
                self.write(pci_base_address(index), address)
                if is_64:
                    self.write(pci_base_address(index + 1), 0)
                bars[index] = (address, is_io)
                bases[is_io] = address + size
            index += 2 if is_64 else 1
        return bars

    def enable(self) -> None:
        """Decode memory and I/O, and let the function master the bus (DMA)."""
        self.write(PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2)


def route_pirqs(qt: Qtest) -> None:
    """Route PIRQA..D to ISA IRQs as SeaBIOS does (the firmware we replace)."""
    piix = PciConfig(qt, PIIX)
    for i, irq in enumerate(PCI_PIRQ_IRQS):
        piix.write(PIIX_PIRQRC + i, irq, 1)


def piix_pirq(slot: int, pin: int) -> int:
    """Which of PIRQA..D (0..3) INTx ``pin`` (1..4) of root-bus ``slot`` drives
    on the pc board (QEMU hw/isa/piix3.c ``pci_slot_get_pirq``; SeaBIOS
    ``piix_pci_slot_get_irq``)."""
    return (slot - 1 + pin - 1) & 3
