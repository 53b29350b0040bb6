"""Intel 82540EM gigabit controller, as QEMU's e1000 emulates it; or the
82545EM (``variant``), VMware ESXi's E1000, as QEMU's e1000-82545em does.

Register semantics per the 8254x SDM chapter 13; legacy descriptor rings per
chapter 3; interrupt moderation (ITR) per 13.4.18.  The model knows nothing of
the hypervisor hosting it: it reaches guest memory only through its
:class:`~iovirt.mem.dma.Dma` port, raises INTx through ``irq(cpu, level)``
and exchanges frames with a backend port (``send(cpu, frame)``; the port
calls :meth:`can_receive` then :meth:`receive`, and is told to ``flush`` when the guest frees descriptors).
Every method that does work takes ``cpu``: the thread that performs it pays.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Callable

from ..mem.dma import Dma, DmaFault
from ..pci.function import Bar, PciFunction
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import e1000 as s
from ..spec.pci import PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT
from .discard import discard
from .offload import rx_checksums, store_checksum, tso_segments
from .regs import add64, narrow, widen
from .registry import DeviceEntry
from .vmstate import PCI_FUNCTION, Bytes, Counts, Flag, Instant, Ints, Nested, UInt, VmState, length_at_most, masked

_IDX = {r.name: r.offset >> 2 for r in s.REGS}
CTRL, STATUS, EECD, EERD = _IDX["CTRL"], _IDX["STATUS"], _IDX["EECD"], _IDX["EERD"]
ICR, ITR, ICS, IMS, IMC = _IDX["ICR"], _IDX["ITR"], _IDX["ICS"], _IDX["IMS"], _IDX["IMC"]
RCTL, TCTL = _IDX["RCTL"], _IDX["TCTL"]
RDBAL, RDBAH, RDLEN, RDH, RDT, RDTR, RADV = (_IDX[n] for n in ("RDBAL", "RDBAH", "RDLEN", "RDH", "RDT", "RDTR", "RADV"))
TDBAL, TDBAH, TDLEN, TDH, TDT = (_IDX[n] for n in ("TDBAL", "TDBAH", "TDLEN", "TDH", "TDT"))
GPRC, GPTC, TPR, TPT, MPC = (_IDX[n] for n in ("GPRC", "GPTC", "TPR", "TPT", "MPC"))
GORCL, GORCH, GOTCL, GOTCH = (_IDX[n] for n in ("GORCL", "GORCH", "GOTCL", "GOTCH"))
RXCSUM = _IDX["RXCSUM"]
BPRC, MPRC = _IDX["BPRC"], _IDX["MPRC"]
RAL0, MTA0 = _IDX["RAL0"], _IDX["MTA0"]
_READ_CLEAR = frozenset(r.offset >> 2 for r in s.REGS if r.access == "rc")
_READ_ONLY = frozenset(r.offset >> 2 for r in s.REGS if r.access == "ro")
_WRITE_ONLY = frozenset(r.offset >> 2 for r in s.REGS if r.access == "wo")
_KNOWN = frozenset(_IDX.values())
_TX_UNPACK = s.TX_DESC.unpack_from
_OPTS_SET = 1 << 16
_TSO_FLAGS = (s.TSO_FLAGS_FIRST, s.TSO_FLAGS_MIDDLE, s.TSO_FLAGS_LAST)
_RDMTS = (2, 4, 8, 8)  # SDM 13.4.22: RXDMT0 when free descriptors come down to RDLEN / n
# Registers whose writes keep only some bits (the handlers' masks): a restored value must fit them.
_WRITE_MASKS = {RDLEN: 0xFFF80, TDLEN: 0xFFF80, RDT: 0xFFFF, TDT: 0xFFFF, IMS: s.IMS_ALL}
_NAMES = {r.offset >> 2: r.name for r in s.REGS}


def _registers_problem(r: list[int], dev: E1000, staged: dict) -> str | None:
    for idx, mask in _WRITE_MASKS.items():
        if r[idx] & ~mask:
            return f"{_NAMES[idx]} {r[idx]:#x} has bits outside {mask:#x}"
    return None

Irq = Callable[[Resource, int], None]


def _count(r: list[int], idx: int) -> None:
    """One more event in a 32-bit statistics register, which sticks at its
    maximum rather than wrap (QEMU e1000 inc_reg_if_not_full)."""
    if r[idx] != 0xFFFFFFFF:
        r[idx] += 1


def eeprom_image(mac: bytes, device_id: int = s.DEVICE_ID) -> list[int]:
    """SDM 5.6: words 0-2 the MAC (little-endian pairs), the IDs of table 5-2
    (the subsystem's the device's own, as QEMU's image has them); word 0x3F
    makes the sum of words 0x00-0x3F equal 0xBABA."""
    words = [0] * s.EEPROM_WORDS
    for i in range(3):
        words[s.EEPROM_MAC + i] = mac[2 * i] | mac[2 * i + 1] << 8
    words[s.EEPROM_SUBSYSTEM_ID] = words[s.EEPROM_DEVICE_ID] = device_id
    words[s.EEPROM_SUBSYSTEM_VENDOR] = words[s.EEPROM_VENDOR_ID] = s.VENDOR_ID
    words[s.EEPROM_CHECKSUM] = (s.EEPROM_SUM - sum(words[: s.EEPROM_CHECKSUM])) & 0xFFFF
    return words


class E1000:
    """Device state and behaviour of one 82540EM (or 82545EM) function."""

    NAME = "e1000"

    def __init__(self, sim: Sim, mac: bytes, dma: Dma, irq: Irq, timer_cpu: Resource,
                 variant: str = "82540em") -> None:
        self.sim = sim
        self.mac = mac
        self.dma = dma
        self.irq = irq
        self.timer_cpu = timer_cpu          # thread that runs the device's timers (QEMU main loop)
        self.port = None                    # backend port, attached by the hypervisor
        self.variant = variant
        device_id = s.VARIANTS[variant]
        self.eeprom = eeprom_image(mac, device_id)
        self.errors: Counter[str] = Counter()
        self.place = self.NAME                  # where its drops are counted (the wiring names it)
        self.pci = PciFunction(s.VENDOR_ID, device_id, s.CLASS_ETHERNET, interrupt_pin=1,
                               bars=(Bar(0, s.BAR0_SIZE, "mem32"), Bar(1, s.BAR1_SIZE, "io")))
        self._write = {CTRL: self._w_ctrl, EERD: self._w_eerd, ICR: self._w_icr, ICS: self._w_ics,
                       IMS: self._w_ims, IMC: self._w_imc, RDT: self._w_rdt, TDT: self._w_tdt,
                       RDLEN: self._w_len, TDLEN: self._w_len, RCTL: self._w_rctl}
        self.reset()

    # ---- reset -----------------------------------------------------------
    def reset(self) -> None:
        self.r = [0] * (s.BAR0_SIZE >> 2)
        for reg in s.REGS:
            self.r[reg.offset >> 2] = reg.reset
        mac = self.mac
        self.r[RAL0] = int.from_bytes(mac[:4], "little")
        self.r[RAL0 + 1] = int.from_bytes(mac[4:], "little") | s.RAH_AV
        self.tx_frame = bytearray()
        self.tx_discard = False             # dropping the rest of a faulted/oversize chain, up to EOP
        self.tx_ctx = bytes(s.DESC_SIZE)    # the last TCP/IP context descriptor
        self.tx_opts = 0                    # the packet's first data descriptor: set | DCMD << 8 | POPTS
        self.ioaddr = 0
        self.irq_asserted = False
        self.next_irq_ok = 0
        self.mit_timer_armed = False
        self.rx_timer_armed = False
        self.pending_rx_cause = 0
        self.rx_deadline = 0
        self.rx_abs_deadline = 0

    # ---- register access ----------------------------------------------------
    def bar_handlers(self, index: int):
        return (self.mmio_read, self.mmio_write) if index == 0 else (self.io_read, self.io_write)

    def io_read(self, cpu: Resource, offset: int, size: int) -> int:
        """SDM 13.1.2: IOADDR (offset 0) selects a register, IODATA (4) reaches it."""
        if offset == s.IODATA:
            return self.mmio_read(cpu, self.ioaddr, size)
        return narrow(self.ioaddr, offset, size) if offset < 4 else 0

    def io_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        if offset == s.IODATA:
            self.mmio_write(cpu, self.ioaddr, size, value)
        elif offset < 4:
            self.ioaddr = widen(self.ioaddr, value, offset, size) & (s.BAR0_SIZE - 4)

    def mmio_read(self, cpu: Resource, offset: int, size: int) -> int:
        idx = offset >> 2
        if idx not in _KNOWN or idx in _WRITE_ONLY:
            return 0
        value = self.r[idx]
        if idx in _READ_CLEAR:
            self.r[idx] = 0
            if idx == ICR:
                self._update_irq(cpu)
        return narrow(value, offset, size)

    def mmio_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        idx = offset >> 2
        if idx not in _KNOWN or idx in _READ_ONLY or idx in _READ_CLEAR and idx != ICR:
            return
        value = widen(0 if idx == ICR else self.r[idx], value, offset, size)   # ICR is W1C: untouched bytes write 0
        handler = self._write.get(idx)
        if handler is None:
            self.r[idx] = value
        else:
            handler(cpu, idx, value)

    def _w_ctrl(self, cpu: Resource, idx: int, value: int) -> None:
        if value & s.CTRL_RST:
            asserted = self.irq_asserted
            self.reset()                      # clears irq_asserted: lower the line ourselves
            if asserted:
                self.irq(cpu, 0)
        else:
            self.r[CTRL] = value

    def _w_eerd(self, cpu: Resource, idx: int, value: int) -> None:
        if not value & s.EERD_START:
            self.r[EERD] = value
            return
        addr = (value >> s.EERD_ADDR_SHIFT) & 0xFF
        word = self.eeprom[addr] if addr < s.EEPROM_WORDS else 0
        self.r[EERD] = (value & 0xFF00) | s.EERD_DONE | word << s.EERD_DATA_SHIFT

    def _w_icr(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[ICR] &= ~value                # SDM 13.4.17: write 1 clears
        self._update_irq(cpu)

    def _w_ics(self, cpu: Resource, idx: int, value: int) -> None:
        self.set_cause(cpu, value & s.IMS_ALL)  # SDM 13.4.19: bits 31:17 reserved

    def _w_ims(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[IMS] |= value & s.IMS_ALL
        self._update_irq(cpu)

    def _w_imc(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[IMS] &= ~value
        self._update_irq(cpu)

    def _w_len(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[idx] = value & 0xFFF80       # SDM 13.4.27: 128-byte multiples

    def _w_rctl(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[RCTL] = value
        if self.port is not None and value & s.RCTL_EN:
            self.port.flush(cpu)

    def _w_rdt(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[RDT] = value & 0xFFFF
        if self.port is not None:
            self.port.flush(cpu)             # QEMU: qemu_flush_queued_packets()

    def _w_tdt(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[TDT] = value & 0xFFFF
        if self.r[TCTL] & s.TCTL_EN:
            self._start_xmit(cpu)

    # ---- interrupts ---------------------------------------------------------
    def set_cause(self, cpu: Resource, cause: int) -> None:
        self.r[ICR] |= cause
        self._update_irq(cpu)

    def _update_irq(self, cpu: Resource) -> None:
        r = self.r
        if r[ICR] & r[IMS]:
            if self.irq_asserted:
                return
            now = cpu.cursor
            if now < self.next_irq_ok:
                if not self.mit_timer_armed:     # ITR: hold the cause until the interval ends
                    self.mit_timer_armed = True
                    self.sim.at(self.next_irq_ok, self._mit_timer)
                return
            self._set_irq(cpu, 1)
            self.next_irq_ok = now + (r[ITR] & 0xFFFF) * s.ITR_UNIT_NS
        elif self.irq_asserted:
            self._set_irq(cpu, 0)

    def _set_irq(self, cpu: Resource, level: int) -> None:
        if level != self.irq_asserted:
            self.irq_asserted = bool(level)
            self.irq(cpu, level)

    def _mit_timer(self) -> None:
        self.mit_timer_armed = False
        cpu = self.timer_cpu
        cpu.sync(self.sim.now)
        self._update_irq(cpu)

    # ---- transmit (SDM 3.3) -------------------------------------------------
    def _start_xmit(self, cpu: Resource) -> None:
        r = self.r
        base = r[TDBAH] << 32 | r[TDBAL]
        count = r[TDLEN] >> 4
        cause = s.ICR_TXQE
        for _ in range(count):                  # a ring never holds more than TDLEN/16 descriptors
            head = r[TDH]
            if head == r[TDT] or head >= count:
                break
            addr = base + (head << 4)
            try:
                desc = self.dma.load(cpu, s.TX_DESC, addr)
            except DmaFault:
                self._dma_fault("tx_desc_fault")
                break
            cmd = desc[3]
            if cmd & s.TXD_CMD_DEXT and desc[2] >> s.TXD_DTYP_SHIFT == s.TXD_DTYP_C:
                self.tx_ctx = s.TX_DESC.pack(*desc)         # SDM 3.3.6: the offload context, no data
            else:
                self._tx_data(cpu, desc)
            if cmd & (s.TXD_CMD_RS | s.TXD_CMD_RPS):
                self.dma.store(cpu, s.TX_STATUS, addr + 12, desc[4] | s.TXD_STAT_DD)
                cause |= s.ICR_TXDW
            r[TDH] = head + 1 if head + 1 < count else 0
        self.set_cause(cpu, cause)

    def _tx_data(self, cpu: Resource, desc: tuple) -> None:
        buf, length, cso, cmd, _, popts, _ = desc
        frame = self.tx_frame
        if cmd & s.TXD_CMD_DEXT:
            length |= (cso & s.TXD_DTALEN_HI) << 16
            if not self.tx_opts:                            # the first descriptor's DCMD and POPTS rule
                self.tx_opts = _OPTS_SET | cmd << 8 | popts
        if self.tx_discard:
            pass
        elif cmd & s.TXD_CMD_DEXT and cso >> s.TXD_DTYP_SHIFT != s.TXD_DTYP_D:
            discard(self, "tx_unsupported_descriptor")
        elif len(frame) + length > (s.TSO_MAX_PACKET if self.tx_opts >> 8 & s.TXD_CMD_TSE else s.MAX_FRAME):
            discard(self, "tx_oversize")
            frame.clear()
            self.tx_discard = True
        elif length:
            try:
                frame += self.dma.read(cpu, buf, length)
            except DmaFault:
                self._dma_fault("tx_buffer_fault")
                frame.clear()
                self.tx_discard = True
        if cmd & s.TXD_CMD_EOP:
            if frame:
                if self.tx_opts & (s.TXD_CMD_TSE << 8 | s.TXD_POPTS_IXSM | s.TXD_POPTS_TXSM):
                    for one in self._tx_offload(bytes(frame)):
                        self._transmit(cpu, one)
                else:
                    self._transmit(cpu, bytes(frame))
                frame.clear()
            self.tx_discard = False
            self.tx_opts = 0

    def _tx_offload(self, packet: bytes) -> list[bytes]:
        """SDM 3.3.6, 3.3.7: the checksums the context places inserted (the
        IPv4 one from IPCSS to IPCSE, the TCP/UDP one from TUCSS to TUCSE or
        the end), or with TSE the packet cut into HDRLEN bytes of headers and
        MSS of payload a segment.  A checksum whose field is past the packet
        is not inserted; a TSO packet with MSS 0 or headers not ending before
        its end, or whose payload is not PAYLEN, is dropped and counted."""
        ipcss, ipcso, ipcse, tucss, tucso, tucse, cmd_len, _, hdr_len, mss = s.TX_CTXT.unpack_from(self.tx_ctx)
        popts, size = self.tx_opts & 0xFF, len(packet)
        ip_sum = popts & s.TXD_POPTS_IXSM and ipcso + 2 <= size and ipcss < size
        l4_sum = popts & s.TXD_POPTS_TXSM and tucso + 2 <= size and tucss < size
        if self.tx_opts >> 8 & s.TXD_CMD_TSE:
            if (not mss or not cmd_len >> 24 & s.TXD_CMD_TSE or hdr_len >= size or tucss + 20 > hdr_len
                    or ipcss + 20 > hdr_len or size - hdr_len != cmd_len & 0xFFFFF):
                discard(self, "tx_bad_tso", packet)
                return []
            return tso_segments(packet, hdr_len, mss, ipcss, ipcso if ip_sum and ipcso + 2 <= hdr_len else None,
                                ipcse + 1 if ipcse else tucss, tucss,
                                tucso if l4_sum and tucso + 2 <= hdr_len else None, _TSO_FLAGS)
        frame = bytearray(packet)
        if ip_sum:
            store_checksum(frame, ipcss, min(ipcse + 1, size) if ipcse else size, ipcso)
        if l4_sum:
            store_checksum(frame, tucss, min(tucse + 1, size) if tucse else size, tucso)
        return [bytes(frame)]

    def _transmit(self, cpu: Resource, frame: bytes) -> None:
        r = self.r
        if len(frame) < s.ETH_MIN_FRAME and r[TCTL] & s.TCTL_PSP:
            frame += bytes(s.ETH_MIN_FRAME - len(frame))
        _count(r, GPTC)
        _count(r, TPT)
        add64(r, GOTCL, len(frame) + 4)
        if self.port is not None:
            self.port.send(cpu, frame)

    # ---- receive (SDM 3.2) --------------------------------------------------
    def can_receive(self, size: int) -> bool:
        """Enough free RX descriptors for a frame of ``size`` bytes (as it
        will be stored: padded, with FCS unless RCTL.SECRC)."""
        r = self.r
        rctl = r[RCTL]
        count = r[RDLEN] >> 4
        if not rctl & s.RCTL_EN or not count or r[RDH] >= count:
            return False
        size = max(size, s.ETH_MIN_FRAME) + (0 if rctl & s.RCTL_SECRC else 4)
        free = (r[RDT] - r[RDH]) % count
        return free * s.rx_buffer_size(rctl) >= size

    def receive(self, cpu: Resource, frame: bytes) -> None:
        """Take one frame from the backend, which checked :meth:`can_receive`."""
        r = self.r
        if not self._accept(frame):
            return
        if len(frame) < s.ETH_MIN_FRAME:
            frame += bytes(s.ETH_MIN_FRAME - len(frame))
        if not r[RCTL] & s.RCTL_SECRC:
            frame += zlib.crc32(frame).to_bytes(4, "little")
        self._rx_dma(cpu, frame)

    def _rx_dma(self, cpu: Resource, frame: bytes) -> None:
        r, dma = self.r, self.dma
        base = r[RDBAH] << 32 | r[RDBAL]
        count = r[RDLEN] >> 4
        bufsize = s.rx_buffer_size(r[RCTL])
        pos, total = 0, len(frame)
        checks, errors = self._rx_checksums(frame)
        while pos < total:
            head = r[RDH]
            addr = base + (head << 4)
            chunk = frame[pos : pos + bufsize]
            pos += len(chunk)
            last = pos >= total
            status = s.RXD_STAT_DD | (s.RXD_STAT_EOP | checks if last else 0)
            try:
                buf = dma.load(cpu, s.RX_DESC, addr)[0]
                if buf:
                    dma.write(cpu, buf, chunk)
                dma.store(cpu, s.RX_WRITEBACK.struct, addr + s.RX_WRITEBACK_OFFSET, len(chunk), 0, status,
                          errors if last else 0, 0)
            except DmaFault:
                self._dma_fault("rx_fault")
                _count(r, MPC)
                return
            r[RDH] = head + 1 if head + 1 < count else 0
        _count(r, GPRC)
        _count(r, TPR)
        add64(r, GORCL, total + (4 if r[RCTL] & s.RCTL_SECRC else 0))   # SDM 13.7: DA through CRC
        if frame[0] & 1:
            _count(r, BPRC if frame[:6] == b"\xff" * 6 else MPRC)
        cause = s.ICR_RXT0
        if (r[RDT] - r[RDH]) % count <= count // _RDMTS[(r[RCTL] >> 8) & 3]:
            cause |= s.ICR_RXDMT0
        self._rx_interrupt(cpu, cause)

    def _rx_checksums(self, frame: bytes) -> tuple[int, int]:
        """SDM 3.2.3, RXCSUM: the checksums it is told to check (IPOFL, TUOFL)
        and found checked (IPCS, TCPCS) and wrong (IPE, TCPE)."""
        rxcsum = self.r[RXCSUM]
        if not rxcsum & (s.RXCSUM_IPOFL | s.RXCSUM_TUOFL):
            return 0, 0
        ip_checked, ip_ok, l4_checked, l4_ok = rx_checksums(frame)
        ip_checked = ip_checked and bool(rxcsum & s.RXCSUM_IPOFL)
        l4_checked = l4_checked and bool(rxcsum & s.RXCSUM_TUOFL)
        return ((s.RXD_STAT_IPCS if ip_checked else 0) | (s.RXD_STAT_TCPCS if l4_checked else 0),
                (s.RXD_ERR_IPE if ip_checked and not ip_ok else 0) | (s.RXD_ERR_TCPE if l4_checked and not l4_ok else 0))

    def _rx_interrupt(self, cpu: Resource, cause: int) -> None:
        r = self.r
        delay = (r[RDTR] & 0xFFFF) * s.TIMER_UNIT_NS
        if not delay:
            self.set_cause(cpu, cause)
            return
        now = cpu.cursor
        if not self.pending_rx_cause:           # SDM 3.2.7.1.2: RADV starts with the first held packet
            radv = (r[RADV] & 0xFFFF) * s.TIMER_UNIT_NS
            self.rx_abs_deadline = now + radv if radv else float("inf")
        self.pending_rx_cause |= cause
        self.rx_deadline = min(now + delay, self.rx_abs_deadline)   # 3.2.7.1.1: RDTR restarts on each packet
        if not self.rx_timer_armed:
            self.rx_timer_armed = True
            self.sim.at(self.rx_deadline, self._rx_timer)

    def _rx_timer(self) -> None:
        if self.sim.now < self.rx_deadline:     # restarted by a later packet
            self.sim.at(self.rx_deadline, self._rx_timer)
            return
        self.rx_timer_armed = False
        cause, self.pending_rx_cause = self.pending_rx_cause, 0
        cpu = self.timer_cpu
        cpu.sync(self.sim.now)
        self.set_cause(cpu, cause)

    def _accept(self, frame: bytes) -> bool:
        """SDM 3.2.2 / 13.4.22 receive address filtering."""
        r = self.r
        rctl = r[RCTL]
        if len(frame) < 14:
            return False
        if rctl & s.RCTL_UPE:
            return True
        dst = frame[:6]
        if dst == b"\xff\xff\xff\xff\xff\xff":
            return bool(rctl & s.RCTL_BAM)
        if dst[0] & 1:
            if rctl & s.RCTL_MPE:
                return True
            bit = (dst[4] >> 4 | dst[5] << 4) & 0xFFF   # MO = 00: bits 47:36
            return bool(r[MTA0 + (bit >> 5)] >> (bit & 31) & 1)
        lo, hi = int.from_bytes(dst[:4], "little"), int.from_bytes(dst[4:], "little")
        for i in range(16):
            rah = r[RAL0 + 2 * i + 1]
            if rah & s.RAH_AV and r[RAL0 + 2 * i] == lo and rah & 0xFFFF == hi:
                return True
        return False

    def _dma_fault(self, what: str) -> None:
        """The bus master's request got no completion: PCI 3.0 6.2.3 STATUS bit."""
        self.errors[what] += 1
        self.pci.config.set_bits(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT, True)

    # ---- live migration (QEMU vmstate_e1000) ------------------------------------
    def post_load(self) -> None:
        """Re-arm the timers pending at save (QEMU e1000_post_load)."""
        if self.mit_timer_armed:
            self.sim.at(self.next_irq_ok, self._mit_timer)
        if self.rx_timer_armed:
            self.sim.at(self.rx_deadline, self._rx_timer)

    def resume(self, cpu: Resource) -> None:
        """The VM runs after a load: the backend hands over frames it held
        (QEMU flushes queued packets when the VM starts)."""
        if self.port is not None:
            self.port.flush(cpu)

    VMSTATE = VmState("e1000", 1, (
        Ints("r", 32, check=_registers_problem), Ints("eeprom", 16),
        Bytes("tx_frame", variable=True, check=length_at_most(s.TSO_MAX_PACKET, "the largest TSO packet")),
        Flag("tx_discard"), Bytes("tx_ctx"), UInt("tx_opts", 32),
        UInt("ioaddr", 32, check=masked(s.BAR0_SIZE - 4, "IOADDR selects a dword of the 128 KiB register BAR")),
        Flag("irq_asserted"), Instant("next_irq_ok"), Flag("mit_timer_armed"), Flag("rx_timer_armed"),
        UInt("pending_rx_cause", 32, check=masked(s.ICR_RXT0 | s.ICR_RXDMT0, "the causes the delay timers hold")),
        Instant("rx_deadline"), Instant("rx_abs_deadline", never=True),     # RADV 0: no absolute deadline
        Counts("errors"), Nested("pci", PCI_FUNCTION)), post_load=post_load)


DEVICE = DeviceEntry(E1000, "emulated", "Intel 82540EM gigabit (8254x SDM); the 82545EM on ESXi",
                     ("QEMU/KVM", "Xen HVM", "VMware ESXi", "VirtualBox"), "e1000", (s.VENDOR_ID, s.DEVICE_ID),
                     variants=tuple(s.VARIANTS), variant_ids=((s.VENDOR_ID, s.DEVICE_ID_82545EM),),
                     variant_on=(("esxi", "82545em"),),
                     offloads=("rx-checksum", "tx-checksum-ipv4", "tx-tcp-segmentation"))
