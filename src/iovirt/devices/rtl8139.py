"""Realtek RTL8139C(L) in C mode, as QEMU's rtl8139 emulates it.

One register file sits behind both BARs (I/O BAR0 and memory BAR1).  An
access reaches the register starting at its offset when its size is that
register's width; otherwise it is split into byte lanes, which only one-byte
registers take (QEMU's ``rtl8139_io_write{b,w,l}`` dispatch): so TSD, TSAD,
RBSTART, RCR and TCR change on dword writes only (the datasheet's rule for
TSD).  Reads have no side effects and return the bytes as laid out.

Transmit (datasheet 9.1): four slots used in round-robin order; writing TSDn
with OWN=0 DMAs SIZE bytes from TSADn, then sets OWN and TOK and raises
ISR.TOK.  Receive (9.2): a ring at RBSTART; each frame is stored as a 4-byte
header (status, length with CRC), the frame, its CRC, then the write offset
(CBR) moves to the next dword.  The driver frees space by writing CAPR (16
bytes short of its read offset).  The 93C46 EEPROM is reached bit by bit
through 9346CR.  The model knows nothing of its hypervisor: guest memory via
:class:`~iovirt.mem.dma.Dma`, INTx via ``irq(cpu, level)``, frames via a
backend port, which asks :meth:`can_receive` before :meth:`receive`.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable

from ..mem.dma import Dma, DmaFault
from ..pci.function import Bar, PciFunction
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import rtl8139 as s
from ..spec.pci import PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT
from .discard import discard
from .registry import DeviceEntry
from .vmstate import PCI_FUNCTION, Bytes, Choice, Counts, Flag, Instant, Ints, Nested, UInt, VmState, below

_OFF = {r.name: r.offset for r in s.REGS}
IDR0, MAR0, TSD0, TSAD0, RBSTART = (_OFF[n] for n in ("IDR0", "MAR0", "TSD0", "TSAD0", "RBSTART"))
CR, CAPR, CBR, IMR, ISR, TCR, RCR = (_OFF[n] for n in ("CR", "CAPR", "CBR", "IMR", "ISR", "TCR", "RCR"))
TCTR, MPC, CR9346, TSAD = _OFF["TCTR"], _OFF["MPC"], _OFF["9346CR"], _OFF["TSAD"]
_ACCEPTS = {(r.offset, r.width): r for r in s.REGS if r.access != "ro"}
_WMASK = {r.offset: s.WRITABLE.get(r.name, (1 << 8 * r.width) - 1) for r in s.REGS}
_LOCKED = frozenset(_OFF[n] for n in s.CONFIG_LOCKED)
_IDS = slice(IDR0, MAR0 + 8)
PCI_CLOCK_HZ = 33_000_000   # TCTR counts PCI clocks
BROADCAST = b"\xff" * 6
MPC_MASK = 0xFFFFFF

Irq = Callable[[Resource, int], None]


def eeprom_image(mac: bytes) -> list[int]:
    """Datasheet 6: ID code, PCI IDs, and the MAC as little-endian words 7-9."""
    words = [0] * s.EEPROM_WORDS
    words[s.EEPROM_ID] = s.EEPROM_ID_CODE
    words[s.EEPROM_VID] = words[s.EEPROM_SVID] = s.VENDOR_ID
    words[s.EEPROM_DID] = words[s.EEPROM_SMID] = s.DEVICE_ID
    for i in range(3):
        words[s.EEPROM_MAC + i] = mac[2 * i] | mac[2 * i + 1] << 8
    return words


def stored_length(size: int) -> int:
    """Ring bytes a frame of ``size`` takes: header, padded frame, CRC, dword aligned."""
    return (4 + max(size, s.ETH_MIN_FRAME) + s.CRC_LEN + 3) & ~3


# ---- live migration: what a restored state may hold ---------------------------------------
def _eeprom_count_problem(count: int, staged: dict) -> str | None:
    """A command is 8 bits (start bit excluded), a word 16: past them the
    counter would run on and the shift register overflow its 16 bits."""
    command = s.EE_OP_BITS + s.EEPROM_ADDR_BITS
    state, shift = staged["state"], staged["shift"]
    if state == Eeprom93C46._COMMAND and count >= command:
        return f"{count} bits clocked in, a command has {command}"
    if state == Eeprom93C46._DATA and count >= 16:
        return f"{count} bits shifted out, a word has 16"
    if count > 16:
        return f"{count} is not below 17 (bits of a word)"
    width = count if state == Eeprom93C46._COMMAND else command
    if shift >> width:
        return f"shift register {shift:#x} holds more than the {width} bits clocked in"
    return None


def _ring_size_problem(size: int, staged: dict) -> str | None:
    ring = s.rx_ring_size(int.from_bytes(staged["regs"][RCR:RCR + 4], "little"))
    return None if size == ring else f"{size}, the ring RCR.RBLEN selects is {ring} bytes"


def _rx_offset_problem(offset: int, staged: dict, dword: bool = False) -> str | None:
    """Inside the ring; the chip writes records at dword offsets (datasheet 9.2)."""
    if offset >= staged["ring_size"]:
        return f"{offset} is not below {staged['ring_size']} (the ring's bytes)"
    return f"{offset} is not a dword offset" if dword and offset & 3 else None


class Eeprom93C46:
    """A 93C46 (64 x 16 bit) on its serial pins.  With CS high, each rising
    SK clocks DI in: a start bit, a 2-bit opcode, a 6-bit address.  READ then
    shifts the word out on DO, MSB first, one bit per clock, after a dummy 0;
    after 16 bits the part waits for the next start bit (QEMU's
    ``prom9346_shift_clock``).  Write, erase and enable opcodes are ignored:
    the contents are read only."""

    _IDLE, _START, _COMMAND, _DATA, _IGNORE = range(5)

    def __init__(self, words: list[int]) -> None:
        self.words = words
        self.deselect()

    def deselect(self) -> None:
        self.cs = self.sk = False
        self.state, self.shift, self.count, self.out, self.do = self._IDLE, 0, 0, 0, 0

    @property
    def dout(self) -> int:
        return self.do if self.cs else 0

    def set_wires(self, cs: bool, sk: bool, di: bool) -> None:
        if not cs:
            self.deselect()
            return
        if not self.cs:
            self.state, self.do = self._START, 0
        rising = sk and not self.sk
        self.cs, self.sk = True, sk
        if rising:
            self._clock(int(di))

    def _clock(self, di: int) -> None:
        if self.state == self._START:
            if di:
                self.state, self.shift, self.count = self._COMMAND, 0, 0
        elif self.state == self._COMMAND:
            self.shift = self.shift << 1 | di
            self.count += 1
            if self.count == s.EE_OP_BITS + s.EEPROM_ADDR_BITS:
                self._decode()
        elif self.state == self._DATA:
            self.do = self.out >> 15 & 1
            self.out = self.out << 1 & 0xFFFF
            self.count += 1
            if self.count == 16:
                self.state = self._START

    def _decode(self) -> None:
        if self.shift >> s.EEPROM_ADDR_BITS == s.EE_OP_READ:
            self.out = self.words[self.shift & (s.EEPROM_WORDS - 1)]
            self.state, self.count, self.do = self._DATA, 0, 0
        else:
            self.state = self._IGNORE

    VMSTATE = VmState("93c46", 1, (
        Ints("words", 16), Flag("cs"), Flag("sk"), Choice("state", (_IDLE, _START, _COMMAND, _DATA, _IGNORE)),
        UInt("shift", 16), UInt("count", 8, check=lambda count, eeprom, staged: _eeprom_count_problem(count, staged)),
        UInt("out", 16), UInt("do", 8, check=below(2, "a pin"))))


class RTL8139:
    """Device state and behaviour of one RTL8139C function in C mode."""

    NAME = "rtl8139"

    def __init__(self, sim: Sim, mac: bytes, dma: Dma, irq: Irq, timer_cpu: Resource) -> None:
        self.sim = sim
        self.mac = mac
        self.dma = dma
        self.irq = irq
        self.timer_cpu = timer_cpu          # the VMM main loop; this model arms no timers
        self.port = None                    # backend port, attached by the hypervisor
        self.eeprom = Eeprom93C46(eeprom_image(mac))
        self.errors: Counter[str] = Counter()
        self.place = self.NAME                  # where its drops are counted (the wiring names it)
        self.pci = PciFunction(s.VENDOR_ID, s.DEVICE_ID, s.CLASS_ETHERNET, revision=s.REVISION,
                               subsystem_vendor_id=s.VENDOR_ID, subsystem_id=s.DEVICE_ID, interrupt_pin=1,
                               bars=(Bar(0, s.BAR0_SIZE, "io"), Bar(1, s.BAR1_SIZE, "mem32")))
        self._write = {CR: self._w_cr, CAPR: self._w_capr, IMR: self._w_imr, ISR: self._w_isr,
                       TCR: self._w_tcr, RCR: self._w_rcr, TCTR: self._w_tctr, MPC: self._w_mpc,
                       CR9346: self._w_9346cr, **{TSD0 + 4 * i: self._w_tsd for i in range(s.NUM_TX_DESC)}}
        self.regs = bytearray(s.BAR0_SIZE)
        self.irq_asserted = False
        self.reset()

    # ---- reset --------------------------------------------------------------
    def reset(self) -> None:
        """Power-on or PCI reset: every register to its default, IDR0-5
        auto-loaded from EEPROM words 7-9."""
        self._reset(keep_ids=False)

    def _reset(self, keep_ids: bool) -> None:
        """CR.RST keeps IDR0-5 and MAR0-7 (datasheet: CR); the rest resets,
        the RX ring is empty and transmission restarts at TSD0."""
        ids = bytes(self.regs[_IDS])
        for reg in s.REGS:
            self._put(reg.offset, reg.width, reg.reset)
        if keep_ids:
            self.regs[_IDS] = ids
        else:
            words = self.eeprom.words[s.EEPROM_MAC : s.EEPROM_MAC + 3]
            self.regs[IDR0 : IDR0 + 6] = b"".join(w.to_bytes(2, "little") for w in words)
            self.eeprom.deselect()
        self.tx_next = 0
        self.ring_size = s.rx_ring_size(0)
        self.rx_read = self.rx_write = 0
        self.tctr_base = self.sim.now

    # ---- register file ------------------------------------------------------
    def bar_handlers(self, index: int):
        """Both BARs decode the same 256-byte register file."""
        return self.read, self.write

    def read(self, cpu: Resource, offset: int, size: int) -> int:
        end = offset + size
        if offset < TCTR + 4 and end > TCTR:
            self._put(TCTR, 4, int((cpu.cursor - self.tctr_base) * PCI_CLOCK_HZ / 1e9))
        return int.from_bytes(self.regs[offset:end], "little")

    def write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        reg = _ACCEPTS.get((offset, size))
        if reg is not None:
            self._write_reg(cpu, reg, value)
            return
        for lane in range(size):                 # byte lanes reach one-byte registers only
            reg = _ACCEPTS.get((offset + lane, 1))
            if reg is not None:
                self._write_reg(cpu, reg, value >> 8 * lane & 0xFF)

    def _write_reg(self, cpu: Resource, reg, value: int) -> None:
        if reg.offset in _LOCKED and self.regs[CR9346] & s.EEM_MASK != s.EEM_CONFIG_WRITE:
            return
        handler = self._write.get(reg.offset)
        if handler is None:
            self._store(reg.offset, reg.width, value)
        else:
            handler(cpu, reg, value)

    def _get(self, offset: int, width: int) -> int:
        return int.from_bytes(self.regs[offset : offset + width], "little")

    def _put(self, offset: int, width: int, value: int) -> None:
        self.regs[offset : offset + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "little")

    def _store(self, offset: int, width: int, value: int) -> int:
        """Write the register's writable bits; returns the new value."""
        mask = _WMASK[offset]
        new = self._get(offset, width) & ~mask | value & mask
        self._put(offset, width, new)
        return new

    def _w_cr(self, cpu: Resource, reg, value: int) -> None:
        if value & s.CR_RST:
            self._reset(keep_ids=True)           # completes at once: RST reads back 0
        cr = self._store(CR, 1, value & ~s.CR_RST)
        self._update_irq(cpu)
        if cr & s.CR_TE:
            self._transmit(cpu)
        if cr & s.CR_RE:
            self._flush(cpu)

    def _w_capr(self, cpu: Resource, reg, value: int) -> None:
        self.rx_read = (value + s.RX_RING_PAD) % self.ring_size    # the historical 16-byte offset
        self._sync_rx()
        self._flush(cpu)

    def _w_imr(self, cpu: Resource, reg, value: int) -> None:
        self._store(IMR, 2, value)
        self._update_irq(cpu)

    def _w_isr(self, cpu: Resource, reg, value: int) -> None:
        self._put(ISR, 2, self._get(ISR, 2) & ~value)
        self._update_irq(cpu)

    def _w_tcr(self, cpu: Resource, reg, value: int) -> None:
        if self.regs[CR] & s.CR_TE:              # QEMU: ignored while the transmitter is off
            self._store(TCR, 4, value)

    def _w_rcr(self, cpu: Resource, reg, value: int) -> None:
        self.ring_size = s.rx_ring_size(self._store(RCR, 4, value))
        self.rx_read = self.rx_write = 0         # QEMU rtl8139_reset_rxring()
        self._sync_rx()
        if self.regs[CR] & s.CR_RE:
            self._flush(cpu)

    def _w_tctr(self, cpu: Resource, reg, value: int) -> None:
        self.tctr_base = cpu.cursor

    def _w_mpc(self, cpu: Resource, reg, value: int) -> None:
        self._put(MPC, 4, 0)

    def _w_9346cr(self, cpu: Resource, reg, value: int) -> None:
        mode = value & s.EEM_MASK
        if mode == s.EEM_AUTOLOAD:
            self.reset()
            self._update_irq(cpu)
            return
        cr = self._store(CR9346, 1, value)
        if mode == s.EEM_PROGRAM:
            self.eeprom.set_wires(bool(cr & s.EECS), bool(cr & s.EESK), bool(cr & s.EEDI))
        else:
            self.eeprom.deselect()
        self.regs[CR9346] = cr & ~s.EEDO | (s.EEDO if self.eeprom.dout else 0)

    def _w_tsd(self, cpu: Resource, reg, value: int) -> None:
        self._put(reg.offset, 4, value & s.TSD_WRITABLE)     # status bits clear when SIZE is written
        self._sync_tsad()
        self._transmit(cpu)

    def _sync_rx(self) -> None:
        self._put(CAPR, 2, self.rx_read - s.RX_RING_PAD)
        self._put(CBR, 2, self.rx_write)
        empty = s.CR_BUFE if self.rx_read == self.rx_write else 0
        self.regs[CR] = self.regs[CR] & ~s.CR_BUFE | empty

    def _sync_tsad(self) -> None:
        tsad = 0
        for i in range(s.NUM_TX_DESC):
            tsd = self._get(TSD0 + 4 * i, 4)
            for bit, shift in ((s.TSD_OWN, s.TSAD_OWN_SHIFT), (s.TSD_TABT, s.TSAD_TABT_SHIFT),
                               (s.TSD_TUN, s.TSAD_TUN_SHIFT), (s.TSD_TOK, s.TSAD_TOK_SHIFT)):
                if tsd & bit:
                    tsad |= 1 << (shift + i)
        self._put(TSAD, 2, tsad)

    # ---- interrupts -----------------------------------------------------------
    def _raise(self, cpu: Resource, cause: int) -> None:
        self._put(ISR, 2, self._get(ISR, 2) | cause)
        self._update_irq(cpu)

    def _update_irq(self, cpu: Resource) -> None:
        level = bool(self._get(ISR, 2) & self._get(IMR, 2))
        if level != self.irq_asserted:
            self.irq_asserted = level
            self.irq(cpu, int(level))

    # ---- transmit (datasheet 9.1) -------------------------------------------
    def _transmit(self, cpu: Resource) -> None:
        if not self.regs[CR] & s.CR_TE:
            return
        cause = 0
        for _ in range(s.NUM_TX_DESC):           # round robin from the current slot while the driver owns none
            slot = self.tx_next
            tsd = self._get(TSD0 + 4 * slot, 4)
            if tsd & s.TSD_OWN:
                break
            status, why = self._tx_one(cpu, tsd & s.TSD_SIZE, self._get(TSAD0 + 4 * slot, 4))
            self._put(TSD0 + 4 * slot, 4, tsd | s.TSD_OWN | status)
            cause |= why
            self.tx_next = (slot + 1) % s.NUM_TX_DESC
        if cause:
            self._sync_tsad()
            self._raise(cpu, cause)

    def _tx_one(self, cpu: Resource, size: int, addr: int) -> tuple[int, int]:
        """Send one slot's buffer; returns (TSD status bits, ISR causes)."""
        if size > s.TX_MAX_SIZE:
            discard(self, "tx_oversize")
            return s.TSD_TABT, s.INT_TER
        try:
            frame = self.dma.read(cpu, addr, size)
        except DmaFault:
            self._dma_fault("tx_dma_fault")
            return s.TSD_TABT, s.INT_TER | s.INT_SERR
        if frame:
            self._send(cpu, frame)
        return s.TSD_TOK, s.INT_TOK

    def _send(self, cpu: Resource, frame: bytes) -> None:
        if self._get(TCR, 4) & s.TCR_LBK == s.TCR_LBK:
            self.receive(cpu, frame)
        elif self.port is not None:
            self.port.send(cpu, frame)

    # ---- receive (datasheet 9.2) --------------------------------------------
    def can_receive(self, size: int) -> bool:
        """Room in the ring for a frame of ``size`` bytes.  A stopped receiver
        takes (and drops) frames, as QEMU's does, so the backend never waits on it."""
        if not self.regs[CR] & s.CR_RE:
            return True
        return self._fits(stored_length(size))

    def _fits(self, need: int) -> bool:
        """The write offset may not reach the read offset: equal means empty."""
        free = (self.rx_read - self.rx_write) % self.ring_size
        return need < (free or self.ring_size)

    def receive(self, cpu: Resource, frame: bytes) -> None:
        if not self.regs[CR] & s.CR_RE:
            discard(self, "rx_disabled", frame)
            return
        if len(frame) < s.ETH_MIN_FRAME:
            frame += bytes(s.ETH_MIN_FRAME - len(frame))
        if len(frame) + s.CRC_LEN > s.RX_MAX_LENGTH:
            discard(self, "rx_long", frame)
            return
        rcr = self._get(RCR, 4)
        status = self._accept(frame, rcr)
        if not status:
            return
        if not self._fits(stored_length(len(frame))):
            discard(self, "rx_overflow", frame)      # the ring would overrun CAPR: RX stops
            self._missed(cpu, s.INT_RXOVW)
            return
        record = s.RX_HEADER.pack(status, len(frame) + s.CRC_LEN) + frame + zlib.crc32(frame).to_bytes(4, "little")
        try:
            self._ring_write(cpu, rcr, record)
        except DmaFault:
            self._dma_fault("rx_dma_fault")
            self._missed(cpu, s.INT_SERR)
            return
        self.rx_write = ((self.rx_write + len(record) + 3) & ~3) % self.ring_size
        self._sync_rx()
        self._raise(cpu, s.INT_ROK)

    def _ring_write(self, cpu: Resource, rcr: int, record: bytes) -> None:
        """RCR.WRAP=0 (or the 64K ring): the rest of a packet that meets the
        end goes to the ring start; WRAP=1: it runs on past the end."""
        base, pos, ring = self._get(RBSTART, 4), self.rx_write, self.ring_size
        room = ring - pos
        if len(record) > room and (ring == s.RX_RING_MAX or not rcr & s.RCR_WRAP):
            self.dma.write(cpu, base + pos, record[:room])
            self.dma.write(cpu, base, record[room:])
        else:
            self.dma.write(cpu, base + pos, record)

    def _accept(self, frame: bytes, rcr: int) -> int:
        """RCR address filter; returns the header status, or 0 to drop."""
        dst = frame[:6]
        if dst == BROADCAST:
            kind, needs = s.RSR_BAR, s.RCR_AB
        elif dst[0] & 1:
            bit = s.mcast_hash(dst)
            kind, needs = s.RSR_MAR, s.RCR_AM if self.regs[MAR0 + (bit >> 3)] >> (bit & 7) & 1 else 0
        elif dst == self.regs[IDR0 : IDR0 + 6]:
            kind, needs = s.RSR_PAM, s.RCR_APM
        else:
            kind, needs = 0, 0
        return kind | s.RSR_ROK if rcr & (needs | s.RCR_AAP) else 0

    def _missed(self, cpu: Resource, cause: int) -> None:
        self._put(MPC, 4, (self._get(MPC, 4) + 1) & MPC_MASK)
        self._raise(cpu, cause)

    def _flush(self, cpu: Resource) -> None:
        if self.port is not None:
            self.port.flush(cpu)             # QEMU: qemu_flush_queued_packets()

    def _dma_fault(self, what: str) -> None:
        """The bus master's request got no completion: PCI 3.0 6.2.3 STATUS bit."""
        self.errors[what] += 1
        self.pci.config.set_bits(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT, True)

    # ---- live migration (QEMU vmstate_rtl8139) ------------------------------
    def resume(self, cpu: Resource) -> None:
        """The VM runs after a load: the backend hands over frames it held."""
        self._flush(cpu)

    VMSTATE = VmState("rtl8139", 1, (
        Bytes("regs"), Nested("eeprom", Eeprom93C46.VMSTATE), Flag("irq_asserted"),
        UInt("tx_next", 8, check=below(s.NUM_TX_DESC, "transmit slots")),
        UInt("ring_size", 32, check=lambda size, dev, staged: _ring_size_problem(size, staged)),
        UInt("rx_read", 32, check=lambda offset, dev, staged: _rx_offset_problem(offset, staged)),
        UInt("rx_write", 32, check=lambda offset, dev, staged: _rx_offset_problem(offset, staged, dword=True)),
        Instant("tctr_base"), Counts("errors"),
        Nested("pci", PCI_FUNCTION)))


DEVICE = DeviceEntry(RTL8139, "emulated", "Realtek RTL8139C+ 100 Mbit", ("QEMU/KVM", "Xen HVM"), "rtl8139",
                     (s.VENDOR_ID, s.DEVICE_ID))
