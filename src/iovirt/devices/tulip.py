"""DEC 21143 "Tulip" (the Hyper-V legacy NIC's family), as QEMU's
hw/net/tulip.c emulates it, with the HRM's semantics where QEMU simplifies:
only status longwords are written back, a truncated frame closes with DE,
a frame that finds no descriptor is counted in CSR8, broadcast passes only
through the filter, CSR8 clears on read, a bus error halts the chip.

CSRs 0-15 at an 8-byte stride in both BARs (HRM chapter 3); TX and RX
descriptor lists in ring or chained mode (HRM 4.2); the setup frame programs
the 16-entry perfect filter (HRM 4.2.3); the serial ROM is a 93C46 read by
bit-banging CSR9 (HRM 3.2.2.10, NM93C46 datasheet).  Same contract as
:class:`~iovirt.devices.e1000.E1000`: guest memory only through ``dma``,
INTx through ``irq(cpu, level)``, frames through ``port`` (``send``;
the port calls :meth:`can_receive` then :meth:`receive`; ``flush`` when the
receiver starts).  Every method that does work takes ``cpu``: it pays.

Not modelled: MII management and the PHY (CSR12 reads autonegotiation
complete), the general-purpose timer and interrupt mitigation (CSR11 is
storage), hash filtering setup frames (counted in ``errors``), big-endian
descriptors (CSR0 DBO), SROM write instructions.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from typing import Callable

from ..mem.dma import Dma, DmaFault
from ..pci.function import Bar, PciFunction
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import tulip as s
from ..spec.pci import PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT
from .discard import discard
from .registry import DeviceEntry
from .vmstate import (PCI_FUNCTION, ByteSet, Bytes, Choice, Counts, Flag, Ints, Nested, UInt, VmState, below,
                      length_at_most, masked)

CSR0, CSR1, CSR2, CSR3, CSR4, CSR5, CSR6, CSR7, CSR8, CSR9 = range(10)
CSR12 = 12
WALK_LIMIT = 128            # descriptors per poll demand or per frame (QEMU: TULIP_DESC_MAX)
_TS_FIELD = s.CSR5_STATE_MASK << s.CSR5_TS_SHIFT
_RS_FIELD = s.CSR5_STATE_MASK << s.CSR5_RS_SHIFT
_SUMMARY = s.CSR5_NIS | s.CSR5_AIS
_TRUNCATED = s.RDES0_LS | s.RDES0_ES | s.RDES0_DE

Irq = Callable[[Resource, int], None]

# SROM format 4.09 section 4.3: 21143 info leaf, autosense, one MII PHY block
# (extended type 3: PHY 0, no GPR/reset sequences, 10/100 half and full duplex)
_INFO_LEAF = struct.pack("<HBBBBBBHHHHB", 0x0800, 1, 0x80 | 13, 3, 0, 0, 0, 0x7800, 0x01E0, 0x5000, 0x1800, 0)


def srom_image(mac: bytes) -> list[int]:
    """The 64 SROM words: ID block, one controller, the MAC at byte 20, the
    info leaf, the ID block CRC-8 and the CRC-16 in the last word."""
    image = bytearray(s.SROM_WORDS * 2)
    struct.pack_into("<HH", image, s.SROM_SUBSYSTEM_VENDOR_ID, s.SUBSYSTEM_VENDOR_ID, s.SUBSYSTEM_ID)
    image[s.SROM_FORMAT_VERSION] = 4
    image[s.SROM_CONTROLLER_COUNT] = 1
    image[s.SROM_MAC : s.SROM_MAC + 6] = mac
    image[s.SROM_DEVICE_NUMBER] = 0
    struct.pack_into("<H", image, s.SROM_LEAF_OFFSET, s.SROM_INFO_LEAF)
    image[s.SROM_INFO_LEAF : s.SROM_INFO_LEAF + len(_INFO_LEAF)] = _INFO_LEAF
    image[s.SROM_ID_BLOCK_CRC] = id_block_crc(image)
    struct.pack_into("<H", image, s.SROM_CRC, zlib.crc32(image[: s.SROM_CRC]) & 0xFFFF)
    return list(struct.unpack(f"<{s.SROM_WORDS}H", image))


def id_block_crc(image: bytes) -> int:
    """SROM format 4.09 section 3: CRC-8 (x^8 + x^2 + x + 1, preset 0xFF) over
    the ID block's first nine words, most significant bit first, up to the
    CRC byte itself (the low byte of word 8)."""
    crc = 0xFF
    for word in range(9):
        value = image[2 * word] | image[2 * word + 1] << 8
        for bit in range(15, 7 if word == 8 else -1, -1):
            feedback = (value >> bit & 1) ^ (crc >> 7)
            crc = (crc << 1 ^ (0x07 if feedback else 0)) & 0xFF
    return crc


class Srom93c46:
    """NM93C46 serial EEPROM, x16, write-protected: only READ (with
    sequential read) is decoded.  DI is clocked in on SK's rising edge; DO is
    high impedance (reads 1) until the last address bit, then a dummy 0,
    then D15..D0 one per rising edge."""

    def __init__(self, words: list[int]) -> None:
        self.words = words
        self.cs = self.sk = False
        self.addr = self.left = 0           # the word being read and its bits still to shift out
        self._deselect()

    def _deselect(self) -> None:
        self.state = "start"
        self.shift = self.count = 0
        self.do = 1

    def pins(self, cs: bool, sk: bool, di: bool) -> None:
        rising = sk and not self.sk
        self.sk = sk
        if cs != self.cs:
            self.cs = cs
            self._deselect()
        if cs and rising:
            self._clock(di)

    def _clock(self, di: bool) -> None:
        if self.state == "start":
            if di:                                  # leading zeros are ignored
                self.state = "command"
        elif self.state == "command":
            self.shift = self.shift << 1 | di
            self.count += 1
            if self.count == 2 + s.SROM_ADDR_BITS:
                self.addr, self.left = self.shift & (s.SROM_WORDS - 1), 16
                if self.shift >> s.SROM_ADDR_BITS == s.SROM_OP_READ:
                    self.state, self.do = "read", 0     # the dummy bit
                else:
                    self.state = "ignore"
        elif self.state == "read":
            if not self.left:
                self.addr, self.left = (self.addr + 1) % s.SROM_WORDS, 16
            self.left -= 1
            self.do = self.words[self.addr] >> self.left & 1

    VMSTATE = VmState("93c46", 1, (
        Ints("words", 16), Flag("cs"), Flag("sk"), Choice("state", ("start", "command", "read", "ignore")),
        UInt("shift", 16), UInt("count", 8, check=lambda count, srom, staged: _srom_count_problem(count, staged)),
        UInt("do", 8, check=below(2, "a pin")), UInt("addr", 8, check=below(s.SROM_WORDS, "SROM words")),
        UInt("left", 8, check=below(17, "bits of a word still to shift out"))))


def _srom_count_problem(count: int, staged: dict) -> str | None:
    """READ's command is a 2-bit opcode and the address: past it the counter
    would run on and the shift register overflow its 16 bits."""
    command = 2 + s.SROM_ADDR_BITS
    if staged["state"] == "command" and count >= command:
        return f"{count} bits clocked in, a command has {command}"
    if count > command:
        return f"{count} is not below {command + 1} (bits of a command)"
    width = count if staged["state"] == "command" else command
    if staged["shift"] >> width:
        return f"shift register {staged['shift']:#x} holds more than the {width} bits clocked in"
    return None


class Tulip:
    """Device state and behaviour of one 21143 function."""

    NAME = "tulip"

    def __init__(self, sim: Sim, mac: bytes, dma: Dma, irq: Irq, timer_cpu: Resource) -> None:
        self.sim = sim
        self.mac = mac
        self.dma = dma
        self.irq = irq
        self.timer_cpu = timer_cpu          # no device timers are modelled; kept for the common contract
        self.port = None
        self.srom = Srom93c46(srom_image(mac))
        self.errors: Counter[str] = Counter()
        self.place = self.NAME                  # where its drops are counted (the wiring names it)
        self.pci = PciFunction(s.VENDOR_ID, s.DEVICE_ID, s.CLASS_ETHERNET, interrupt_pin=1,
                               subsystem_vendor_id=s.SUBSYSTEM_VENDOR_ID, subsystem_id=s.SUBSYSTEM_ID,
                               bars=(Bar(0, s.BAR0_SIZE, "io"), Bar(1, s.BAR1_SIZE, "mem32")))
        self._write = {CSR0: self._w_csr0, CSR1: self._w_csr1, CSR2: self._w_csr2, CSR3: self._w_csr3,
                       CSR4: self._w_csr4, CSR5: self._w_csr5, CSR6: self._w_csr6, CSR7: self._w_csr7,
                       CSR8: _ignore, CSR9: self._w_csr9, CSR12: _ignore}
        self.irq_asserted = False
        self.reset()

    # ---- reset (HRM 3.2.2.1 CSR0<0> SWR) -------------------------------------
    def reset(self) -> None:
        self.csr = [r.reset for r in s.REGS]
        self.filter: frozenset[bytes] = frozenset()
        self.tx_cur = self.rx_cur = 0
        self.tx_frame = bytearray()
        self.tx_discard = False             # jabber: dropping the rest of a frame, up to LS
        self.bus_error = False              # FBE halts the chip until the next reset
        self.irq_asserted = False

    # ---- register access (HRM 3.2: longword CSRs at 8-byte stride) -------------
    def bar_handlers(self, index: int):
        return self.csr_read, self.csr_write

    def csr_read(self, cpu: Resource, offset: int, size: int) -> int:
        idx, lane = divmod(offset, s.CSR_STRIDE)
        if lane >= 4:
            return 0
        value = self.csr[idx]
        if idx == CSR8:
            self.csr[CSR8] = value & ~s.CSR8_COUNTERS
        elif idx == CSR9 and value & s.CSR9_SR:
            value = value & ~s.CSR9_SR_DO | (s.CSR9_SR_DO if self.srom.do else 0)
        return value >> (8 * lane) & ((1 << (8 * size)) - 1)

    def csr_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        idx, lane = divmod(offset, s.CSR_STRIDE)
        if lane >= 4:
            return
        value = value << (8 * lane) & 0xFFFFFFFF       # a narrow write reaches the longword, rest zero
        handler = self._write.get(idx)
        if handler is None:
            self.csr[idx] = value
        else:
            handler(cpu, value)

    def _w_csr0(self, cpu: Resource, value: int) -> None:
        if value & s.CSR0_SWR:
            asserted = self.irq_asserted
            self.reset()
            if asserted:
                self.irq(cpu, 0)
        else:
            self.csr[CSR0] = value

    def _w_csr1(self, cpu: Resource, value: int) -> None:
        if self._ts() != s.TS_STOPPED:
            self._transmit_poll(cpu)

    def _w_csr2(self, cpu: Resource, value: int) -> None:
        if self._rs() != s.RS_STOPPED:
            self._set_rs(s.RS_WAITING)
            self._flush(cpu)

    def _w_csr3(self, cpu: Resource, value: int) -> None:
        self.csr[CSR3] = self.rx_cur = value & ~3

    def _w_csr4(self, cpu: Resource, value: int) -> None:
        self.csr[CSR4] = self.tx_cur = value & ~3

    def _w_csr5(self, cpu: Resource, value: int) -> None:
        self.csr[CSR5] &= ~(value & s.CSR5_W1C)
        self._update_irq(cpu)

    def _w_csr6(self, cpu: Resource, value: int) -> None:
        """HRM 3.2.2.7: SR and ST start and stop the processes; the filtering
        mode bits are read-only, set by the last setup frame."""
        old = self.csr[CSR6]
        self.csr[CSR6] = value & ~s.CSR6_FILTER_BITS | old & s.CSR6_FILTER_BITS
        changed = (old ^ value) if not self.bus_error else 0
        cause = 0
        if changed & s.CSR6_SR:
            self._set_rs(s.RS_WAITING if value & s.CSR6_SR else s.RS_STOPPED)
            cause |= 0 if value & s.CSR6_SR else s.CSR5_RPS
        if changed & s.CSR6_ST:
            self._set_ts(s.TS_SUSPENDED if value & s.CSR6_ST else s.TS_STOPPED)
            cause |= 0 if value & s.CSR6_ST else s.CSR5_TPS
        self._raise(cpu, cause)
        if changed & value & s.CSR6_SR:
            self._flush(cpu)
        if changed & value & s.CSR6_ST:
            self._transmit_poll(cpu)

    def _w_csr7(self, cpu: Resource, value: int) -> None:
        self.csr[CSR7] = value
        self._update_irq(cpu)

    def _w_csr9(self, cpu: Resource, value: int) -> None:
        self.csr[CSR9] = value
        selected = bool(value & s.CSR9_SR and value & s.CSR9_SR_CS)
        self.srom.pins(selected, bool(value & s.CSR9_SR_SK), bool(value & s.CSR9_SR_DI))

    # ---- status and interrupts (HRM 3.2.2.6, 3.2.2.8) ------------------------
    def _ts(self) -> int:
        return self.csr[CSR5] >> s.CSR5_TS_SHIFT & s.CSR5_STATE_MASK

    def _rs(self) -> int:
        return self.csr[CSR5] >> s.CSR5_RS_SHIFT & s.CSR5_STATE_MASK

    def _set_ts(self, state: int) -> None:
        self.csr[CSR5] = self.csr[CSR5] & ~_TS_FIELD | state << s.CSR5_TS_SHIFT

    def _set_rs(self, state: int) -> None:
        self.csr[CSR5] = self.csr[CSR5] & ~_RS_FIELD | state << s.CSR5_RS_SHIFT

    def _raise(self, cpu: Resource, cause: int) -> None:
        self.csr[CSR5] |= cause
        self._update_irq(cpu)

    def _update_irq(self, cpu: Resource) -> None:
        """NIS and AIS summarise the enabled normal and abnormal causes; INTA#
        is asserted while an enabled summary bit is set."""
        csr5, csr7 = self.csr[CSR5] & ~_SUMMARY, self.csr[CSR7]
        enabled = csr5 & csr7
        csr5 |= (s.CSR5_NIS if enabled & s.CSR5_NORMAL else 0) | (s.CSR5_AIS if enabled & s.CSR5_ABNORMAL else 0)
        self.csr[CSR5] = csr5
        level = bool(csr5 & csr7 & _SUMMARY)
        if level != self.irq_asserted:
            self.irq_asserted = level
            self.irq(cpu, int(level))

    def _bus_error(self, cpu: Resource, what: str) -> None:
        """A master abort: PCI STATUS bit, CSR5 FBE with EB = master abort, and
        both processes stop until a software reset (HRM 3.2.2.6 FBE)."""
        self.errors[what] += 1
        self.pci.config.set_bits(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT, True)
        self.bus_error = True
        self.tx_frame.clear()
        self.csr[CSR5] = self.csr[CSR5] & ~s.CSR5_EB_MASK | s.CSR5_EB_MASTER_ABORT << s.CSR5_EB_SHIFT
        self._set_ts(s.TS_STOPPED)
        self._set_rs(s.RS_STOPPED)
        self._raise(cpu, s.CSR5_FBE | s.CSR5_TPS | s.CSR5_RPS)

    def _next(self, addr: int, des1: int, end_of_ring: int, chained: int, link: int, base: int) -> int:
        """HRM 4.1: TER/RER wraps to the list base, else TCH/RCH follows
        buffer address 2, else the next descriptor after the skip length."""
        if des1 & end_of_ring:
            nxt = self.csr[base]
        elif des1 & chained:
            nxt = link
        else:
            nxt = addr + s.DESC_SIZE + (self.csr[CSR0] >> s.CSR0_DSL_SHIFT & s.CSR0_DSL_MASK) * 4
        return nxt & 0xFFFFFFFC

    def _flush(self, cpu: Resource) -> None:
        if self.port is not None:
            self.port.flush(cpu)

    # ---- transmit (HRM 4.2.2, 4.3) ------------------------------------------------
    def _transmit_poll(self, cpu: Resource) -> None:
        """Process chip-owned descriptors from the current one; suspend with TU
        at the first one the host owns."""
        cause = 0
        try:
            for _ in range(WALK_LIMIT):
                addr = self.tx_cur
                tdes0, tdes1, buf1, buf2 = self.dma.load(cpu, s.TX_DESC, addr)
                if not tdes0 & s.DES0_OWN:
                    cause |= s.CSR5_TU
                    break
                if tdes1 & s.TDES1_SET:
                    status = self._setup_frame(cpu, tdes1, buf1)
                else:
                    status = self._tx_gather(cpu, tdes1, buf1, buf2)
                self.dma.store(cpu, s.DES0, addr, status)
                if tdes1 & s.TDES1_IC and tdes1 & (s.TDES1_LS | s.TDES1_SET):
                    cause |= s.CSR5_TI
                cause |= s.CSR5_TJT if status & s.TDES0_TO else 0
                self.tx_cur = self._next(addr, tdes1, s.TDES1_TER, s.TDES1_TCH, buf2, CSR4)
            else:
                discard(self, "tx_walk_limit")
        except DmaFault:
            self.csr[CSR5] |= cause
            self._bus_error(cpu, "tx_dma_fault")
            return
        self._raise(cpu, cause)

    def _tx_gather(self, cpu: Resource, tdes1: int, buf1: int, buf2: int) -> int:
        """Append this descriptor's buffers to the frame (FS starts one, LS
        sends it); returns TDES0."""
        frame = self.tx_frame
        if tdes1 & s.TDES1_FS:
            frame.clear()
            self.tx_discard = False
        size2 = 0 if tdes1 & s.TDES1_TCH else tdes1 >> s.BUF2_SIZE_SHIFT & s.BUF_SIZE_MASK
        for buf, size in ((buf1, tdes1 & s.BUF_SIZE_MASK), (buf2, size2)):
            if not size or self.tx_discard:
                continue
            if len(frame) + size > s.JABBER_BYTES:
                discard(self, "tx_jabber")
                self.tx_discard = True
                frame.clear()
            else:
                frame += self.dma.read(cpu, buf, size)
        if not tdes1 & s.TDES1_LS:
            return 0
        status = s.TDES0_ES | s.TDES0_TO if self.tx_discard else 0
        if frame:
            self._send(cpu, bytes(frame), tdes1)
        frame.clear()
        self.tx_discard = False
        return status

    def _send(self, cpu: Resource, frame: bytes, tdes1: int) -> None:
        if len(frame) < s.ETH_MIN_FRAME and not tdes1 & s.TDES1_DPD:
            frame += bytes(s.ETH_MIN_FRAME - len(frame))
        if self.csr[CSR6] >> s.CSR6_OM_SHIFT & s.CSR6_OM_MASK:
            self.receive(cpu, frame)                        # internal or external loopback
        elif self.port is not None:
            self.port.send(cpu, frame)

    def _setup_frame(self, cpu: Resource, tdes1: int, buf1: int) -> int:
        """HRM 4.2.3: a 192-byte setup frame loads the 16 perfect-filter
        entries; it is not transmitted."""
        ftype = (2 if tdes1 & s.TDES1_FT1 else 0) | (1 if tdes1 & s.TDES1_FT0 else 0)
        if ftype in (s.SETUP_FT_HASH, s.SETUP_FT_HASH_ONLY):
            self.errors["setup_hash_filter_unsupported"] += 1
            return 0
        if tdes1 & s.BUF_SIZE_MASK != s.SETUP_FRAME_SIZE:
            self.errors["setup_frame_size"] += 1
            return 0
        data = self.dma.read(cpu, buf1, s.SETUP_FRAME_SIZE)
        self.filter = frozenset(bytes(data[i * s.SETUP_ENTRY_SIZE + o] for o in s.SETUP_ADDR_OFFSETS)
                                for i in range(s.SETUP_ENTRIES))
        inverse = s.CSR6_IF if ftype == s.SETUP_FT_INVERSE else 0
        self.csr[CSR6] = self.csr[CSR6] & ~s.CSR6_FILTER_BITS | inverse
        return 0

    # ---- receive (HRM 4.2.1, 4.4) --------------------------------------------------
    def can_receive(self, size: int) -> bool:
        """The receive process runs (waiting or suspended).  A frame that then
        finds no descriptor is missed, as on the wire."""
        return self._rs() != s.RS_STOPPED

    def receive(self, cpu: Resource, frame: bytes) -> None:
        """Take one frame from the backend: filter, pad, append the CRC, store."""
        if self._rs() == s.RS_STOPPED or len(frame) < 14:
            return
        bits = self._filter(frame)
        if bits is None:
            return
        if len(frame) < s.ETH_MIN_FRAME:
            frame += bytes(s.ETH_MIN_FRAME - len(frame))
        frame += zlib.crc32(frame).to_bytes(s.CRC_SIZE, "little")
        if len(frame) > s.ETH_MAX_FRAME:
            bits |= s.RDES0_TL | s.RDES0_ES
        self._rx_store(cpu, frame, bits)

    def _filter(self, frame: bytes) -> int | None:
        """HRM 4.2.3 / 3.2.2.7: perfect filter (inverted by IF), then PR, PM for
        multicast, RA with FF; returns RDES0 bits for an accepted frame."""
        dst = frame[:6]
        bits = (s.RDES0_MF if dst[0] & 1 else 0) | (s.RDES0_FT if frame[12] << 8 | frame[13] > 1500 else 0)
        csr6 = self.csr[CSR6]
        if (dst in self.filter) != bool(csr6 & s.CSR6_IF) or csr6 & s.CSR6_PR or csr6 & s.CSR6_PM and dst[0] & 1:
            return bits
        return bits | s.RDES0_FF if csr6 & s.CSR6_RA else None

    def _rx_store(self, cpu: Resource, frame: bytes, bits: int) -> None:
        try:
            desc = self.dma.load(cpu, s.RX_DESC, self.rx_cur)
            if not desc[0] & s.DES0_OWN:
                discard(self, "rx_missed", frame)
                self._missed(cpu)
            else:
                self._set_rs(s.RS_WAITING)
                self._rx_walk(cpu, frame, bits, desc)
        except DmaFault:
            self._bus_error(cpu, "rx_dma_fault")

    def _rx_walk(self, cpu: Resource, frame: bytes, bits: int, desc: tuple) -> None:
        """Fill chip-owned descriptors from the current one, FS on the first,
        LS and FL on the last; the frame is dropped, truncated, at a host-owned
        descriptor or at the walk limit."""
        addr, total, first, pos = self.rx_cur, len(frame), s.RDES0_FS, 0
        for step in range(WALK_LIMIT):
            _, rdes1, buf1, buf2 = desc
            nxt = self._next(addr, rdes1, s.RDES1_RER, s.RDES1_RCH, buf2, CSR3)
            pos = self._rx_fill(cpu, frame, pos, rdes1, buf1, buf2)
            if pos >= total:
                self._rx_close(cpu, addr, nxt, first | s.RDES0_LS | bits, total)
                return
            if step + 1 == WALK_LIMIT:
                discard(self, "rx_walk_limit", frame)
                self._rx_close(cpu, addr, nxt, first | bits | _TRUNCATED, pos)
                return
            desc = self.dma.load(cpu, s.RX_DESC, nxt)
            if not desc[0] & s.DES0_OWN:
                self._set_rs(s.RS_SUSPENDED)
                self._rx_close(cpu, addr, nxt, first | bits | _TRUNCATED, pos, s.CSR5_RU)
                return
            self.dma.store(cpu, s.DES0, addr, first)
            addr, first = nxt, 0

    def _rx_fill(self, cpu: Resource, frame: bytes, pos: int, rdes1: int, buf1: int, buf2: int) -> int:
        size2 = 0 if rdes1 & s.RDES1_RCH else rdes1 >> s.BUF2_SIZE_SHIFT & s.BUF_SIZE_MASK
        for buf, size in ((buf1, rdes1 & s.BUF_SIZE_MASK), (buf2, size2)):
            chunk = frame[pos : pos + size]
            if chunk:
                self.dma.write(cpu, buf, chunk)
                pos += len(chunk)
        return pos

    def _rx_close(self, cpu: Resource, addr: int, nxt: int, status: int, length: int, cause: int = 0) -> None:
        """Write the last descriptor's RDES0 (FL counts the CRC); HRM 4.2.1
        RDES0<14> DE marks a frame truncated for want of descriptors."""
        if status & s.RDES0_DE:
            self.errors["rx_truncated"] += 1
        self.dma.store(cpu, s.DES0, addr, status | (length & s.RDES0_FL_MASK) << s.RDES0_FL_SHIFT)
        self.rx_cur = nxt
        self._raise(cpu, s.CSR5_RI | cause)

    def _missed(self, cpu: Resource) -> None:
        """HRM 4.4: no descriptor for the frame: RU, the receive process
        suspends, the frame is missed and counted in CSR8."""
        csr8 = self.csr[CSR8]
        count = (csr8 & s.CSR8_MFC_MASK) + 1
        overflow = s.CSR8_MFO if count > s.CSR8_MFC_MASK else 0
        self.csr[CSR8] = csr8 & ~s.CSR8_MFC_MASK | count & s.CSR8_MFC_MASK | overflow
        self._set_rs(s.RS_SUSPENDED)
        self._raise(cpu, s.CSR5_RU)

    # ---- live migration (QEMU vmstate_pci_tulip) ---------------------------------------
    def resume(self, cpu: Resource) -> None:
        """The VM runs after a load: the backend hands over frames it held."""
        self._flush(cpu)

    VMSTATE = VmState("tulip", 1, (
        Ints("csr", 32),
        ByteSet("filter", 6, check=lambda addresses, dev, staged: None if len(addresses) <= s.SETUP_ENTRIES else
                f"{len(addresses)} addresses, the perfect filter holds {s.SETUP_ENTRIES}"),
        UInt("tx_cur", 32, check=masked(0xFFFFFFFC, "descriptors are dword aligned")),
        UInt("rx_cur", 32, check=masked(0xFFFFFFFC, "descriptors are dword aligned")),
        Bytes("tx_frame", variable=True, check=length_at_most(s.JABBER_BYTES, "the transmit jabber limit")),
        Flag("tx_discard"), Flag("bus_error"), Flag("irq_asserted"), Nested("srom", Srom93c46.VMSTATE),
        Counts("errors"), Nested("pci", PCI_FUNCTION)))


def _ignore(cpu: Resource, value: int) -> None:
    """A read-only CSR: writes have no effect."""


DEVICE = DeviceEntry(Tulip, "emulated", "DEC 21140/21143 Tulip (Hyper-V's legacy NIC; 21143 PCI ID as in QEMU)",
                     ("Hyper-V",), "tulip", (s.VENDOR_ID, s.DEVICE_ID))
