"""AMD Am79C970A PCnet-PCI II, as QEMU's pcnet emulates it (VMware's "Vlance").

The guest reaches the chip through 32 bytes of I/O space (or the same bytes
memory mapped): the address PROM, and three ports that reach everything else
indirectly, RDP for the CSR and BDP for the BCR that a write to RAP selected.
So every register access a driver makes is two traps, a RAP write and a data
port access: the mechanism that makes this NIC cost more than the e1000.

Word I/O mode and software style 2 (32-bit structures, BCR20.SWSTYLE = 2):
INIT reads the 28-byte initialization block by DMA and sets IDON, STRT turns
on the transmitter and receiver, TDMD makes the chip walk the transmit ring
sending every frame it owns, a received frame fills the receive descriptors
the chip owns (MISS when there is none).  INTR is any unmasked interrupt bit
of CSR0; INTx is INTR and IENA.  Contract as :class:`~iovirt.devices.e1000.E1000`.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Callable

from ..mem.dma import Dma, DmaFault
from ..pci.function import Bar, PciFunction
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import pcnet as s
from ..spec.pci import PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT
from .discard import discard
from .registry import DeviceEntry
from .vmstate import PCI_FUNCTION, Bytes, Counts, Flag, Ints, Nested, UInt, VmState, masked

Irq = Callable[[Resource, int], None]

NUM_CSRS = 128
NUM_BCRS = 128
_CSR_READ_ONLY = frozenset(r.offset for r in s.CSRS if r.access == "ro")
_CSR_KNOWN = frozenset(r.offset for r in s.CSRS)
_BCR_KNOWN = frozenset(r.offset for r in s.BCRS)
_CMD = s.CSR0_INIT | s.CSR0_STRT | s.CSR0_STOP
_RESULT = s.OWN | s.ERR                      # TMD1 bits the chip writes back
_BROADCAST = b"\xff" * 6
# BCR20 after a write of SWSTYLE: which structures and CSR layout it implies (QEMU pcnet_bcr_writew)
_SWS = {s.SWSTYLE_LANCE: s.BCR20_CSRPCNET, s.SWSTYLE_ILACC: s.BCR20_SSIZE32,
        s.SWSTYLE_PCNET_PCI: s.BCR20_SSIZE32 | s.BCR20_CSRPCNET,
        s.SWSTYLE_PCNET_PCI_SWAPPED: s.BCR20_SSIZE32 | s.BCR20_CSRPCNET}


class PCNet:
    """Device state and behaviour of one Am79C970A function."""

    NAME = "pcnet"
    IO_SIZE = s.BAR0_SIZE               # the I/O BAR (a morphable Vlance's is larger, flexible.py)

    def __init__(self, sim: Sim, mac: bytes, dma: Dma, irq: Irq, timer_cpu: Resource) -> None:
        self.sim = sim
        self.mac = mac
        self.dma = dma
        self.irq = irq
        self.timer_cpu = timer_cpu          # the VMM thread that polls for the backend
        self.port = None                    # backend port, attached by the hypervisor
        self.aprom = s.aprom_image(mac)
        self.errors: Counter[str] = Counter()
        self.place = self.NAME                  # where its drops are counted (the wiring names it)
        self.pci = PciFunction(s.VENDOR_ID, s.DEVICE_ID, s.CLASS_ETHERNET, revision=s.REVISION, interrupt_pin=1,
                               bars=(Bar(0, self.IO_SIZE, "io"), Bar(1, s.BAR1_SIZE, "mem32")))
        self.irq_asserted = False
        self.reset()

    # ---- reset -------------------------------------------------------------
    def reset(self) -> None:
        """H_RESET: bus configuration back to its defaults, then S_RESET."""
        self.bcr = [0] * NUM_BCRS
        for reg in s.BCRS:
            self.bcr[reg.offset] = reg.reset
        self._s_reset()
        if self.irq_asserted:
            self._set_irq(self.timer_cpu, False)

    def _s_reset(self) -> None:
        """S_RESET (a read of the RESET port): CSRs to their reset values, the
        station address reloaded from the PROM, no rings, RAP cleared."""
        self.csr = [0] * NUM_CSRS
        for reg in s.CSRS:
            self.csr[reg.offset] = reg.reset
        for i in range(3):
            self.csr[s.CSR_PADR + i] = self.aprom[2 * i] | self.aprom[2 * i + 1] << 8
        self.rap = 0
        self.rdra = self.tdra = 0
        self.rx_len = self.tx_len = 0
        self.rx_idx = self.tx_idx = 0

    # ---- register access: I/O resources ------------------------------------
    def bar_handlers(self, index: int):
        return self.io_read, self.io_write

    def io_read(self, cpu: Resource, offset: int, size: int) -> int:
        if offset < s.APROM_SIZE:
            return self._aprom_read(offset, size)
        if size != 2:                       # dword I/O mode is not modelled: floats high
            return (1 << 8 * size) - 1
        if offset == s.RDP:
            return self._csr_read(self.rap)
        if offset == s.RAP:
            return self.rap
        if offset == s.BDP:
            return self.bcr[self.rap] if self.rap in _BCR_KNOWN else 0
        if offset == s.RESET:
            self._s_reset()
            self._update_irq(cpu)
            return 0
        return 0xFFFF

    def io_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        if size != 2 or offset < s.APROM_SIZE:  # the PROM is read-only (BCR2.APROMWE not modelled)
            return
        value &= 0xFFFF
        if offset == s.RAP:
            self.rap = value & s.RAP_MASK
        elif offset == s.RDP:
            self._csr_write(cpu, self.rap, value)
        elif offset == s.BDP:
            self._bcr_write(self.rap, value)

    def _aprom_read(self, offset: int, size: int) -> int:
        if size == 1:
            return self.aprom[offset]
        if size == 2 and not offset & 1:
            return self.aprom[offset] | self.aprom[offset + 1] << 8
        return (1 << 8 * size) - 1

    # ---- CSRs and BCRs -------------------------------------------------------
    def _csr_read(self, index: int) -> int:
        if index == 0:
            csr0 = self.csr[0]
            return csr0 | s.CSR0_ERR if csr0 & s.CSR0_ERRORS else csr0
        if index == s.CSR_SWS:
            return self.bcr[s.BCR_SWS]
        return self.csr[index] if index in _CSR_KNOWN else 0

    def _csr_write(self, cpu: Resource, index: int, value: int) -> None:
        if index == 0:
            self._w_csr0(cpu, value)
        elif index == s.CSR_SWS:
            self._bcr_write(s.BCR_SWS, value)
        elif self._csr_writable(index):
            self.csr[index] = value
            if index == 3:
                self._update_irq(cpu)

    def _csr_writable(self, index: int) -> bool:
        if index not in _CSR_KNOWN or index in _CSR_READ_ONLY:
            return False
        return index not in s.CSR_WRITE_WHEN_STOPPED or bool(self.csr[0] & s.CSR0_STOP)

    def _bcr_write(self, index: int, value: int) -> None:
        if index == s.BCR_SWS:
            if self.csr[0] & s.CSR0_STOP:     # "write accessible only when STOP is set"
                style = value & s.BCR20_SWSTYLE
                self.bcr[s.BCR_SWS] = style | _SWS[style] if style in _SWS else s.BCR20_CSRPCNET
        elif index == s.BCR_BSBC:
            self.bcr[index] = value & ~s.BCR18_DWIO     # read-only: word I/O stays
        elif index in _BCR_KNOWN:
            self.bcr[index] = value

    def _w_csr0(self, cpu: Resource, value: int) -> None:
        """Interrupt bits are write-1-to-clear, IENA is written as given, TDMD
        and the commands act on a 1; INIT|STRT|STOP together is STOP."""
        csr0 = self.csr[0] & ~(value & s.CSR0_W1C)
        self.csr[0] = csr0 & ~s.CSR0_IENA | value & (s.CSR0_IENA | s.CSR0_TDMD)
        cmd = value & _CMD
        if cmd == _CMD:
            cmd = s.CSR0_STOP
        if cmd & s.CSR0_STOP and not csr0 & s.CSR0_STOP:
            self.csr[0] = s.CSR0_STOP
        if cmd & s.CSR0_INIT and not csr0 & s.CSR0_INIT:
            self._init(cpu)
        if cmd & s.CSR0_STRT and not csr0 & s.CSR0_STRT:
            self._start()
        if self.csr[0] & s.CSR0_TDMD:
            self._transmit(cpu)
        self._update_irq(cpu)
        if self.port is not None and self._rx_running():
            self.port.flush(cpu)            # the chip polls its receive ring again

    def _init(self, cpu: Resource) -> None:
        """Read the initialization block at IADR (CSR2:CSR1)."""
        if self.bcr[s.BCR_SWS] & s.BCR20_SWSTYLE != s.SWSTYLE_PCNET_PCI:
            self.errors["swstyle_unsupported"] += 1
            return
        csr = self.csr
        try:
            mode, rlen, tlen, padr_lo, padr_hi, ladrf, rdra, tdra = self.dma.load(
                cpu, s.INIT_BLOCK, csr[s.CSR_IADR_HIGH] << 16 | csr[s.CSR_IADR_LOW])
        except DmaFault:
            self._dma_fault("init_block_fault")
            return
        csr[s.CSR_MODE] = mode
        for i in range(4):
            csr[s.CSR_LADRF + i] = ladrf >> 16 * i & 0xFFFF
        padr = padr_hi << 32 | padr_lo
        for i in range(3):
            csr[s.CSR_PADR + i] = padr >> 16 * i & 0xFFFF
        self.rx_len = s.ring_length(rlen >> s.LEN_SHIFT)
        self.tx_len = s.ring_length(tlen >> s.LEN_SHIFT)
        csr[s.CSR_RCVRL] = -self.rx_len & 0xFFFF
        csr[s.CSR_XMTRL] = -self.tx_len & 0xFFFF
        self.rdra, self.tdra = rdra, tdra
        self.rx_idx = self.tx_idx = 0
        csr[0] = csr[0] & ~s.CSR0_STOP | s.CSR0_INIT | s.CSR0_IDON

    def _start(self) -> None:
        mode = self.csr[s.CSR_MODE]
        csr0 = self.csr[0] & ~s.CSR0_STOP | s.CSR0_STRT
        if not mode & s.CSR15_DTX:
            csr0 |= s.CSR0_TXON
        if not mode & s.CSR15_DRX:
            csr0 |= s.CSR0_RXON
        self.csr[0] = csr0

    # ---- interrupts ----------------------------------------------------------
    def _update_irq(self, cpu: Resource) -> None:
        csr0 = self.csr[0]
        if csr0 & ~self.csr[3] & s.CSR0_INTERRUPTS:
            csr0 |= s.CSR0_INTR
        else:
            csr0 &= ~s.CSR0_INTR
        self.csr[0] = csr0
        level = csr0 & (s.CSR0_INTR | s.CSR0_IENA) == s.CSR0_INTR | s.CSR0_IENA
        if level != self.irq_asserted:
            self._set_irq(cpu, level)

    def _set_irq(self, cpu: Resource, level: bool) -> None:
        self.irq_asserted = level
        self.irq(cpu, int(level))

    def _dma_fault(self, what: str) -> None:
        """Master abort on a bus master cycle: CSR0.MERR and PCI STATUS."""
        self.errors[what] += 1
        self.csr[0] |= s.CSR0_MERR
        self.pci.config.set_bits(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT, True)

    # ---- transmit ("Transmit Descriptor Table Entry", "Transmit Operation") --
    def _transmit(self, cpu: Resource) -> None:
        """TDMD: send every frame the chip owns, one pass over the ring at most."""
        self.csr[0] &= ~s.CSR0_TDMD
        left = self.tx_len
        while left > 0 and self.csr[0] & s.CSR0_TXON:
            chain = self._tx_chain(cpu, left)
            if not chain:
                return
            left -= len(chain)
            self.tx_idx = (self.tx_idx + len(chain)) % self.tx_len
            self._tx_frame(cpu, chain)
            self.csr[0] |= s.CSR0_TINT

    def _tx_chain(self, cpu: Resource, limit: int) -> list[tuple]:
        """The owned descriptors from the current one up to ENP, to the next
        one that is not owned or starts a frame, or to ``limit``."""
        chain: list[tuple] = []
        idx = self.tx_idx
        while len(chain) < limit:
            addr = self.tdra + idx * s.DESC_SIZE
            try:
                desc = self.dma.load(cpu, s.TX_DESC, addr)
            except DmaFault:
                self._dma_fault("tx_desc_fault")
                return []
            status = desc[2]
            if not status & s.OWN or chain and status & s.STP:
                break
            chain.append((addr, *desc))
            if status & s.ENP:
                break
            idx = idx + 1 if idx + 1 < self.tx_len else 0
        return chain

    def _tx_frame(self, cpu: Resource, chain: list[tuple]) -> None:
        """Send the chain's buffers as one frame and hand its descriptors back."""
        last = chain[-1]
        misc = 0
        if not chain[0][3] & s.STP:         # not the start of a frame: handed back unsent
            discard(self, "tx_no_stp")
        elif not last[3] & s.ENP:           # the next buffer never came: underflow
            misc = s.TMD2_BUFF | s.TMD2_UFLO
            discard(self, "tx_underflow")
            if not self.csr[3] & s.CSR3_DXSUFLO:
                self.csr[0] &= ~s.CSR0_TXON
        else:
            self._tx_send(cpu, chain)
        for addr, _, _, status, _, _ in chain:
            err = s.ERR if misc and addr == last[0] else 0
            self.dma.store(cpu, s.TX_STATUS_MISC, addr + s.STATUS_OFFSET, status & ~_RESULT | err,
                           misc if err else 0)

    def _tx_send(self, cpu: Resource, chain: list[tuple]) -> None:
        lengths = [s.buffer_length(bcnt) for _, _, bcnt, _, _, _ in chain]
        if sum(lengths) > s.MAX_TX_FRAME:
            discard(self, "tx_oversize")
            return
        try:
            frame = b"".join(self.dma.read(cpu, d[1], n) for d, n in zip(chain, lengths))
        except DmaFault:
            self._dma_fault("tx_buffer_fault")
            return
        if len(frame) < s.ETH_MIN_FRAME and self.csr[4] & s.CSR4_APAD_XMT:
            frame += bytes(s.ETH_MIN_FRAME - len(frame))
        if len(frame) + s.FCS_LEN >= s.BABBLE:
            self.csr[0] |= s.CSR0_BABL
        if self.port is not None:
            self.port.send(cpu, frame)

    # ---- receive ("Receive Descriptor Table Entry", "Receive Operation") -----
    def _rx_running(self) -> bool:
        return self.csr[0] & (s.CSR0_RXON | s.CSR0_STOP) == s.CSR0_RXON and self.rx_len > 0

    def can_receive(self, size: int) -> bool:
        """The chip owns enough receive buffers from the current descriptor on
        for a frame of ``size`` bytes (padded, with FCS).  The backend holds
        frames otherwise and retries when the guest next writes CSR0.  The
        descriptor reads are the chip's ring poll, paid by the polling thread."""
        if not self._rx_running():
            return False
        need = max(size, s.ETH_MIN_FRAME) + s.FCS_LEN
        idx = self.rx_idx
        for _ in range(self.rx_len):
            try:
                _, bcnt, status, _, _ = self.dma.load(self.timer_cpu, s.RX_DESC, self.rdra + idx * s.DESC_SIZE)
            except DmaFault:
                return True                 # receive() meets the fault and reports it
            if not status & s.OWN:
                return False
            need -= s.buffer_length(bcnt)
            if need <= 0:
                return True
            idx = idx + 1 if idx + 1 < self.rx_len else 0
        return False

    def receive(self, cpu: Resource, frame: bytes) -> None:
        """Take one frame from the backend, which checked :meth:`can_receive`."""
        if not self._rx_running() or len(frame) < 6:
            return
        if len(frame) < s.ETH_MIN_FRAME:
            frame += bytes(s.ETH_MIN_FRAME - len(frame))
        match = self._accept(frame)
        if match is None:
            return
        self._rx_store(cpu, frame + zlib.crc32(frame).to_bytes(4, "little"), match)
        self._update_irq(cpu)

    def _rx_store(self, cpu: Resource, data: bytes, match: int) -> None:
        """DMA ``data`` into the owned buffers from the current descriptor on,
        STP on the first, ENP and MCNT on the last; BUFF when they run out."""
        used: list[tuple[int, int]] = []
        pos, total, idx = 0, len(data), self.rx_idx
        try:
            while pos < total and len(used) < self.rx_len:
                addr = self.rdra + idx * s.DESC_SIZE
                rbadr, bcnt, status, _, _ = self.dma.load(cpu, s.RX_DESC, addr)
                if not status & s.OWN:
                    break
                n = min(s.buffer_length(bcnt), total - pos)
                self.dma.write(cpu, rbadr, data[pos : pos + n])
                pos += n
                used.append((addr, s.STP if not used else 0))
                idx = idx + 1 if idx + 1 < self.rx_len else 0
        except DmaFault:
            self._dma_fault("rx_fault")
            return
        if not used:
            discard(self, "rx_missed", data[:-4])
            self.csr[0] |= s.CSR0_MISS
            self.csr[s.CSR_MISSC] = self.csr[s.CSR_MISSC] + 1 & 0xFFFF
            return
        self.rx_idx = idx
        for addr, status in used[:-1]:
            self.dma.store(cpu, s.RX_STATUS, addr + s.STATUS_OFFSET, status)
        addr, status = used[-1]
        if pos < total:
            discard(self, "rx_buffer_error", data[:-4])
            self.dma.store(cpu, s.RX_STATUS_MCNT, addr + s.STATUS_OFFSET, status | s.ERR | s.RMD1_BUFF, 0)
        else:
            self.dma.store(cpu, s.RX_STATUS_MCNT, addr + s.STATUS_OFFSET, status | s.ENP | match,
                           total & s.RMD2_MCNT)
        self.csr[0] |= s.CSR0_RINT

    def _accept(self, frame: bytes) -> int | None:
        """Address match ("Receive Address Match"): the RMD1 match bit, or None."""
        csr = self.csr
        if csr[s.CSR_MODE] & s.CSR15_PROM:
            return 0
        dst = frame[:6]
        padr = b"".join(csr[s.CSR_PADR + i].to_bytes(2, "little") for i in range(3))
        if dst == padr and not csr[s.CSR_MODE] & s.CSR15_DRCVPA:
            return s.RMD1_PAM
        if dst == _BROADCAST and not csr[s.CSR_MODE] & s.CSR15_DRCVBC:
            return s.RMD1_BAM
        if dst[0] & 1:
            bit = s.ladrf_bit(dst)
            if csr[s.CSR_LADRF + (bit >> 4)] >> (bit & 15) & 1:
                return s.RMD1_LAFM
        return None

    # ---- live migration (QEMU vmstate_pcnet) ---------------------------------
    def resume(self, cpu: Resource) -> None:
        """The VM runs after a load: the backend hands over frames it held."""
        if self.port is not None:
            self.port.flush(cpu)

    VMSTATE = VmState("pcnet", 1, (
        Bytes("aprom"), Ints("csr", 16), Ints("bcr", 16),
        UInt("rap", 16, check=masked(s.RAP_MASK, "RAP selects one of 128 registers")),
        UInt("rdra", 32), UInt("tdra", 32),
        UInt("rx_len", 16, check=lambda n, dev, staged: _ring_length_problem(n)),
        UInt("tx_len", 16, check=lambda n, dev, staged: _ring_length_problem(n)),
        UInt("rx_idx", 16, check=lambda i, dev, staged: _ring_index_problem(i, staged["rx_len"])),
        UInt("tx_idx", 16, check=lambda i, dev, staged: _ring_index_problem(i, staged["tx_len"])),
        Flag("irq_asserted"), Counts("errors"), Nested("pci", PCI_FUNCTION)))


# ---- live migration: what a restored state may hold ---------------------------------------
_RING_LENGTHS = frozenset(s.ring_length(code) for code in range(16)) | {0}   # 0: no init block read yet


def _ring_length_problem(n: int) -> str | None:
    """RLEN/TLEN codes give 1 to 512 descriptors, powers of two."""
    if n in _RING_LENGTHS:
        return None
    return f"{n} descriptors, not a ring length the chip takes (a power of two up to {max(_RING_LENGTHS)})"


def _ring_index_problem(index: int, length: int) -> str | None:
    return None if index < max(length, 1) else f"{index} is not below {length} (the ring's descriptors)"


DEVICE = DeviceEntry(PCNet, "emulated", "AMD Am79C970A PCnet-PCI II (VMware 'Vlance')",
                     ("QEMU/KVM", "VMware ESXi", "VirtualBox"), "pcnet", (s.VENDOR_ID, s.DEVICE_ID))
