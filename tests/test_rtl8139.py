"""RTL8139 (C mode): the device model's registers, 93C46 EEPROM, TX slots, RX
ring buffer and interrupts; hostile guests; the 8139too-style driver end to
end, and what its register interface costs next to e1000's.  Everything is
real iovirt code; only the backend port in device tests is a recorder."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.devices.rtl8139 import RTL8139, stored_length
from iovirt.experiments.world import World
from iovirt.mem.dma import Dma
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import rtl8139 as s
from iovirt.spec.pci import PCI_CLASS_REVISION
from recording import Port, RigState, deliver

MAC = bytes.fromhex("525400123456")
OTHER = bytes.fromhex("525400abcdef")
BCAST = b"\xff" * 6
SRC = bytes.fromhex("020000000001")
MEM = 1 << 18
PROFILE = load_profile("default")
RING = 0x10000                      # RBSTART in device tests
TXBUF = 0x30000                     # TX buffers, 0x800 apart
REGS = {r.name: r for r in s.REGS}
EXAMPLE = Path(__file__).parent.parent / "examples" / "emulated-rtl8139.yaml"
PATTERN = bytes((i * 37) & 0xFF for i in range(MEM))


@dataclass
class Rig(RigState):
    mem: GuestMemory
    cpu: Resource
    dev: RTL8139
    port: Port
    irqs: list[int] = field(default_factory=list)

    def rd(self, reg: str, size: int | None = None, at: int = 0) -> int:
        return self.dev.read(self.cpu, REGS[reg].offset + at, size or REGS[reg].width)

    def wr(self, reg: str, value: int, size: int | None = None, at: int = 0) -> None:
        self.dev.write(self.cpu, REGS[reg].offset + at, size or REGS[reg].width, value)

    def start(self, rcr: int = s.RCR_APM | s.RCR_AB, imr: int = s.INT_ALL, base: int = RING) -> None:
        """What a driver's open does: ring, enable, configure, unmask."""
        self.wr("RBSTART", base)
        self.wr("CR", s.CR_RE | s.CR_TE)
        self.wr("RCR", rcr)
        self.wr("IMR", imr)

    def send(self, slot: int, data: bytes, addr: int | None = None, size: int | None = None) -> None:
        addr = TXBUF + slot * 0x800 if addr is None else addr
        if addr + len(data) <= MEM:
            self.mem.write(addr, data)
        self.wr(f"TSAD{slot}", addr)
        self.wr(f"TSD{slot}", len(data) if size is None else size)

    def deliver(self, frame: bytes) -> bool:
        return deliver(self.dev, self.cpu, frame)

    def ring_packet(self, offset: int) -> tuple[int, int, bytes, bytes]:
        """(status, length, frame, crc) of the packet at ring ``offset``."""
        status, length = s.RX_HEADER.unpack_from(self.mem.buf, RING + offset)
        body = self.mem.read(RING + offset + 4, length)
        return status, length, body[:-4], body[-4:]

    def consume(self) -> None:
        """The driver frees everything received: CAPR = CBR - 16."""
        self.wr("CAPR", (self.rd("CBR") - s.RX_RING_PAD) & 0xFFFF)


def rig(mem_size: int = MEM) -> Rig:
    ledger = Ledger(PROFILE)
    mem = GuestMemory(mem_size)
    cpu = Resource("cpu", "vcpu", ledger)
    irqs: list[int] = []
    dev = RTL8139(Sim(), MAC, Dma(mem, "copy"), irq=lambda c, level: irqs.append(level),
                  timer_cpu=Resource("timer", "host_thread", ledger))
    port = Port()
    dev.port = port
    return Rig(mem, cpu, dev, port, irqs)


def frame(dst: bytes = MAC, size: int = 64, seed: int = 0) -> bytes:
    return dst + SRC + b"\x08\x00" + bytes((seed + i * 7) & 0xFF for i in range(size - 14))


def ee_read(r: Rig, bits: list[int], clocks: int = 16) -> int:
    """Drive the EEPROM pins through 9346CR: select, clock ``bits`` in, then
    ``clocks`` bits out, sampling EEDO after each rising edge."""
    program = s.EEM_PROGRAM | s.EECS
    r.wr("9346CR", s.EEM_PROGRAM)
    for bit in bits:
        r.wr("9346CR", program | bit * s.EEDI)
        r.wr("9346CR", program | bit * s.EEDI | s.EESK)
    value = 0
    for _ in range(clocks):
        r.wr("9346CR", program)
        r.wr("9346CR", program | s.EESK)
        value = value << 1 | r.rd("9346CR") & s.EEDO
    r.wr("9346CR", s.EEM_NORMAL)
    return value


def read_cmd(addr: int, addr_bits: int = s.EEPROM_ADDR_BITS) -> list[int]:
    return [1, 1, 0] + [addr >> i & 1 for i in reversed(range(addr_bits))]


# ---- identity, reset, register file -------------------------------------------------
def test_pci_identity_and_bars():
    """Vendor 10EC, device 8139, Ethernet class, revision below the C+ range; BAR0 256 B I/O, BAR1 256 B memory."""
    dev = rig().dev
    assert dev.pci.config_read(0, 4) == s.DEVICE_ID << 16 | s.VENDOR_ID
    assert dev.pci.config_read(PCI_CLASS_REVISION, 4) == s.CLASS_ETHERNET << 8 | s.REVISION
    assert s.REVISION < 0x20
    assert {(b.index, b.kind, b.size) for b in dev.pci.bars.values()} == {(0, "io", 256), (1, "mem32", 256)}
    assert dev.bar_handlers(0) == dev.bar_handlers(1)


@pytest.mark.parametrize("reg, value", [
    ("TSD0", s.TSD_OWN), ("TSD3", s.TSD_OWN), ("TSAD", 0xF), ("CR", s.CR_BUFE), ("CAPR", 0xFFF0),
    ("CBR", 0), ("IMR", 0), ("ISR", 0), ("RCR", 0), ("MPC", 0), ("9346CR", 0),
    ("CONFIG1", s.CONFIG1_IOMAP | s.CONFIG1_MEMMAP), ("RERID", s.REVISION),
])
def test_reset_value(reg, value):
    """Registers come out of reset with the datasheet's values."""
    assert rig().rd(reg) == value


def test_reset_loads_idr_from_mac_and_tcr_names_the_chip():
    """IDR0-5 hold the MAC from the EEPROM; TCR's HWVERID says RTL8139C; the PHY reports link up."""
    r = rig()
    assert bytes(r.rd(f"IDR{i}") for i in range(6)) == MAC
    assert r.rd("IDR0", 4) == int.from_bytes(MAC[:4], "little")
    assert r.rd("TCR") & s.TCR_HWVERID_MASK == s.TCR_HWVERID_RTL8139C
    assert r.rd("BMSR") & 0x0004 and not r.rd("MSR") & s.MSR_LINKB


def test_access_widths_follow_the_chip():
    """Dword writes alone reach TSD/TSAD/RBSTART/RCR; a dword write at IDR0 fills IDR0-3;
    byte lanes reach only one-byte registers; reads of any width return the bytes."""
    r = rig()
    r.wr("CR", s.CR_TE)
    r.wr("RBSTART", 0x1234, size=2)
    r.wr("RCR", s.RCR_AAP, size=1)
    r.wr("TSAD0", 0x5678, size=2)
    assert r.rd("RBSTART") == r.rd("RCR") == r.rd("TSAD0") == 0
    r.wr("IDR0", 0x44332211, size=4)
    assert [r.rd(f"IDR{i}") for i in range(4)] == [0x11, 0x22, 0x33, 0x44]
    r.wr("IMR", 0xFFFFFFFF, size=4)              # IMR+ISR as one dword: neither takes it
    assert r.rd("IMR") == 0
    r.wr("TSD0", 64, size=2)
    assert r.rd("TSD0") == s.TSD_OWN and not r.port.frames
    assert r.rd("CR", size=4, at=-3) == r.rd("CR") << 24          # ERBCR, ERSR, CR read as one dword


def test_read_only_registers_ignore_writes():
    """CBR, TSAD, BMSR, MSR and RERID keep their values whatever is written."""
    r = rig()
    for reg in ("CBR", "TSAD", "BMSR", "MSR", "RERID"):
        before = r.rd(reg)
        r.wr(reg, 0x5A5A)
        assert r.rd(reg) == before


def test_config_registers_need_config_write_mode():
    """CONFIG0-4 change only while 9346CR is in config-write mode."""
    r = rig()
    r.wr("CONFIG3", s.CONFIG3_MAGIC)
    assert not r.rd("CONFIG3") & s.CONFIG3_MAGIC
    r.wr("9346CR", s.EEM_CONFIG_WRITE)
    r.wr("CONFIG3", s.CONFIG3_MAGIC | s.CONFIG3_FBTBEN)
    r.wr("9346CR", s.EEM_NORMAL)
    assert r.rd("CONFIG3") & s.CONFIG3_MAGIC


def test_soft_reset_keeps_idr_and_mar_and_self_clears():
    """CR.RST resets TX slots, the ring and interrupts, keeps IDR/MAR, and reads back 0."""
    r = rig()
    r.start()
    r.wr("IDR0", 0x0A0B0C0D, size=4)
    r.wr("MAR0", 0xFFFF, size=2)
    r.send(0, frame(OTHER))
    r.deliver(frame())
    assert r.level == 1
    r.wr("CR", s.CR_RST)
    assert r.rd("CR") == s.CR_BUFE and r.rd("TSD0") == s.TSD_OWN and r.rd("CBR") == 0
    assert r.rd("IDR0", 4) == 0x0A0B0C0D and r.rd("MAR0", 2) == 0xFFFF
    assert r.level == 0


# ---- 93C46 EEPROM ---------------------------------------------------------------------
def test_eeprom_serial_read_returns_mac_words():
    """The READ instruction clocked through 9346CR returns words 7-9 = the MAC, and the ID code at word 0."""
    r = rig()
    words = [ee_read(r, read_cmd(s.EEPROM_MAC + i)) for i in range(3)]
    assert b"".join(w.to_bytes(2, "little") for w in words) == MAC
    assert ee_read(r, read_cmd(s.EEPROM_ID)) == s.EEPROM_ID_CODE
    assert ee_read(r, read_cmd(s.EEPROM_DID)) == s.DEVICE_ID


def test_eeprom_is_a_93c46_not_a_93c56():
    """Clocked with 8 address bits (as 8139too probes) the ID code does not come back: 6-bit part."""
    r = rig()
    assert ee_read(r, [0, 0] + read_cmd(s.EEPROM_ID, 8)) != s.EEPROM_ID_CODE


def test_eeprom_output_needs_chip_select_and_ignores_writes():
    """EEDO reads 0 without CS; a WRITE instruction changes nothing."""
    r = rig()
    r.wr("9346CR", s.EEM_PROGRAM | s.EEDI)
    assert not r.rd("9346CR") & s.EEDO
    ee_read(r, [1, 0, 1] + [0, 0, 0, 1, 1, 1] + [1] * 16, clocks=0)   # WRITE 0xFFFF to word 7
    assert ee_read(r, read_cmd(s.EEPROM_MAC)) == MAC[0] | MAC[1] << 8


def test_eeprom_autoload_reloads_idr():
    """9346CR auto-load mode reloads IDR0-5 from the EEPROM and returns to normal mode."""
    r = rig()
    r.wr("IDR0", 0, size=4)
    r.wr("9346CR", s.EEM_AUTOLOAD)
    assert bytes(r.rd(f"IDR{i}") for i in range(6)) == MAC and r.rd("9346CR") == 0


# ---- transmit --------------------------------------------------------------------------
def test_tx_slot_cycle_sets_own_and_tok():
    """Writing TSDn with OWN=0 sends SIZE bytes from TSADn, then OWN and TOK are set and ISR.TOK raised."""
    r = rig()
    r.start(imr=s.INT_TOK)
    data = frame(OTHER, 100)
    r.send(0, data)
    assert r.port.frames == [data]
    tsd = r.rd("TSD0")
    assert tsd & s.TSD_OWN and tsd & s.TSD_TOK and tsd & s.TSD_SIZE == 100
    assert r.rd("ISR") == s.INT_TOK and r.level == 1
    assert r.rd("TSAD") == 0xF | 1 << s.TSAD_TOK_SHIFT
    r.wr("TSD0", 100 | s.TSD_ERTXTH)        # rewriting SIZE clears the status bits; slot 1 is next in turn
    assert r.rd("TSD0") == 100 | s.TSD_ERTXTH and len(r.port.frames) == 1


def test_tx_slots_go_round_robin():
    """Slots are sent in order 0-3; a slot written out of turn waits for the current one."""
    r = rig()
    r.start()
    frames = [frame(OTHER, 64, seed=i) for i in range(6)]
    r.send(0, frames[0])
    r.send(2, frames[2])
    assert r.port.frames == [frames[0]]
    r.send(1, frames[1])
    assert r.port.frames == frames[:3]
    r.send(3, frames[3])
    r.send(0, frames[4])
    assert r.port.frames == frames[:5]


def test_tx_waits_for_transmit_enable():
    """A slot handed over while CR.TE is off is sent when TE comes on."""
    r = rig()
    data = frame(OTHER)
    r.send(0, data)
    assert not r.port.frames and not r.rd("TSD0") & s.TSD_OWN
    r.wr("CR", s.CR_TE)
    assert r.port.frames == [data]


def test_tx_loopback_receives_own_frame():
    """TCR loopback feeds the frame to the receiver instead of the port."""
    r = rig()
    r.start()
    r.wr("TCR", s.TCR_LBK)
    data = frame(MAC, 80)
    r.send(0, data)
    assert not r.port.frames and r.ring_packet(0)[2] == data


# ---- receive ----------------------------------------------------------------------------
def test_rx_header_length_and_crc():
    """A frame lands as header (ROK|PAM, length incl. 4-byte CRC), frame, CRC; CBR moves; ISR.ROK."""
    r = rig()
    r.start(imr=s.INT_ROK)
    data = frame(MAC, 100)
    assert r.deliver(data)
    status, length, body, crc = r.ring_packet(0)
    assert status == s.RSR_ROK | s.RSR_PAM and length == 104
    assert body == data and crc == zlib.crc32(data).to_bytes(4, "little")
    assert r.rd("CBR") == stored_length(100) and not r.rd("CR") & s.CR_BUFE
    assert r.rd("ISR") == s.INT_ROK and r.level == 1


@pytest.mark.parametrize("dst, rcr, status", [
    (BCAST, s.RCR_AB, s.RSR_BAR), (BCAST, s.RCR_APM, None),
    (OTHER, s.RCR_APM | s.RCR_AB, None), (OTHER, s.RCR_AAP, 0),
    (MAC, s.RCR_AB, None), (bytes.fromhex("01005e000001"), s.RCR_AM, s.RSR_MAR),
])
def test_rx_address_filter(dst, rcr, status):
    """RCR accepts broadcast (AB), own address (APM), hashed multicast (AM), anything (AAP)."""
    r = rig()
    r.start(rcr=rcr)
    bit = s.mcast_hash(dst)
    r.wr(f"MAR{bit >> 3}", 1 << (bit & 7))
    r.deliver(frame(dst))
    if status is None:
        assert r.rd("CBR") == 0
    else:
        assert r.ring_packet(0)[0] == s.RSR_ROK | status


def test_rx_multicast_needs_its_hash_bit():
    """A multicast frame whose MAR bit is clear is dropped even with AM."""
    r = rig()
    r.start(rcr=s.RCR_AM)
    r.deliver(frame(bytes.fromhex("01005e000001")))
    assert r.rd("CBR") == 0


@given(st.lists(st.integers(14, 1514), min_size=1, max_size=12))
@settings(max_examples=50, deadline=None)
def test_rx_packets_are_dword_aligned_and_runts_padded(sizes):
    """Each packet starts on a dword; frames under 60 bytes are padded; all follow one another."""
    r = rig()
    r.start(rcr=s.RCR_APM | s.RCR_WRAP | s.RCR_RBLEN_32K)
    offset = 0
    for i, size in enumerate(sizes):
        data = frame(MAC, size, seed=i)
        assert r.deliver(data)
        status, length, body, _ = r.ring_packet(offset)
        assert offset % 4 == 0 and status == s.RSR_ROK | s.RSR_PAM and length == max(size, 60) + 4
        assert body == data + bytes(max(0, 60 - size))
        offset = (offset + stored_length(size)) % 32768
    assert r.rd("CBR") == offset


def fill_to(r: Rig, offset: int) -> None:
    """Receive and consume frames until the write offset is ``offset`` (a dword)."""
    while (left := offset - r.rd("CBR")) > 0:
        size = left - 8 if 68 <= left <= 1508 else min(1500, left - 8 - 68)
        assert r.deliver(frame(MAC, size))
        r.consume()


@pytest.mark.parametrize("rcr, size", [(0, 8192), (s.RCR_WRAP | 3 << s.RCR_RBLEN_SHIFT, 65536)])
def test_rx_wrap_0_continues_at_ring_start(rcr, size):
    """With WRAP=0, or the 64K ring whatever WRAP says, a packet meeting the end continues at the ring
    start; nothing lands past the end."""
    r = rig(1 << 20)
    r.start(rcr=s.RCR_APM | rcr)
    fill_to(r, size - 100)
    data = frame(MAC, 300, seed=9)
    record = s.RX_HEADER.pack(s.RSR_ROK | s.RSR_PAM, 304) + data + zlib.crc32(data).to_bytes(4, "little")
    assert r.deliver(data)
    assert r.mem.read(RING + size - 100, 100) + r.mem.read(RING, len(record) - 100) == record
    assert r.mem.read(RING + size, 512) == bytes(512)
    assert r.rd("CBR") == stored_length(300) - 100


def test_rx_wrap_1_runs_past_the_end():
    """With WRAP=1 the packet stays contiguous past the ring end; the next one starts at the ring start."""
    r = rig()
    r.start(rcr=s.RCR_APM | s.RCR_WRAP)
    fill_to(r, 8192 - 100)
    start = r.mem.read(RING, 512)
    data = frame(MAC, 300, seed=9)
    assert r.deliver(data)
    assert r.ring_packet(8192 - 100)[2] == data and r.mem.read(RING, 512) == start
    assert r.rd("CBR") == stored_length(300) - 100


def test_rblen_selects_ring_size_and_rcr_write_resets_pointers():
    """RBLEN picks 8/16/32/64K; writing RCR empties the ring."""
    r = rig(1 << 20)
    for rblen, size in enumerate((8192, 16384, 32768, 65536)):
        r.start(rcr=s.RCR_APM | rblen << s.RCR_RBLEN_SHIFT)
        assert s.rx_ring_size(r.rd("RCR")) == size
        r.deliver(frame())
        assert r.rd("CBR") == stored_length(64)
    r.wr("RCR", s.RCR_APM)
    assert r.rd("CBR") == 0 and r.rd("CR") & s.CR_BUFE


def test_capr_has_the_16_byte_offset_and_bufe_follows():
    """CAPR reads back as written; the device's read offset is CAPR+16; BUFE when it meets CBR."""
    r = rig()
    r.start()
    r.deliver(frame())
    r.deliver(frame())
    end = r.rd("CBR")
    r.wr("CAPR", stored_length(64) - 16)
    assert r.rd("CAPR") == stored_length(64) - 16 and not r.rd("CR") & s.CR_BUFE
    r.wr("CAPR", end - 16)
    assert r.rd("CR") & s.CR_BUFE and r.port.flushes >= 2


def test_buffer_full_stops_rx_with_rxovw():
    """When a frame would overrun CAPR, can_receive says no; one pushed anyway sets RXOVW and MPC, writes nothing."""
    r = rig()
    r.start(imr=s.INT_RXOVW)
    count = 0
    while r.deliver(frame(MAC, 1000, seed=count)):
        count += 1
    assert count == 8192 // stored_length(1000)
    cbr = r.rd("CBR")
    before = r.mem.read(RING, 8192)
    r.dev.receive(r.cpu, frame(MAC, 1000))
    assert r.rd("ISR") & s.INT_RXOVW and r.rd("MPC") == 1 and r.level == 1
    assert r.rd("CBR") == cbr and r.mem.read(RING, 8192) == before
    free = 8192 - count * stored_length(1000)             # a packet may not fill it exactly: full would read as empty
    assert not r.dev.can_receive(free - 8) and r.dev.can_receive(free - 12)
    r.consume()
    assert r.dev.can_receive(1000)


def test_rx_disabled_drops_without_holding_the_queue():
    """With CR.RE off the device takes frames and drops them, as QEMU's does."""
    r = rig()
    r.wr("RCR", s.RCR_APM)
    assert r.deliver(frame()) and r.rd("CBR") == 0


# ---- interrupts ------------------------------------------------------------------------
def test_isr_write_one_clears():
    """Writing 1s to ISR clears those causes only; 0s leave them."""
    r = rig()
    r.start()
    r.send(0, frame(OTHER))
    r.deliver(frame())
    assert r.rd("ISR") == s.INT_TOK | s.INT_ROK
    r.wr("ISR", 0)
    r.wr("ISR", s.INT_ROK)
    assert r.rd("ISR") == s.INT_TOK


def test_intx_level_is_isr_and_imr():
    """The line is high exactly while ISR & IMR is non-zero."""
    r = rig()
    r.start(imr=0)
    r.deliver(frame())
    assert r.level == 0
    r.wr("IMR", s.INT_TOK)
    assert r.level == 0
    r.wr("IMR", s.INT_ROK)
    assert r.level == 1
    r.wr("ISR", s.INT_ROK)
    assert r.irqs == [1, 0]


# ---- hostile guests ----------------------------------------------------------------------
def test_tsad_outside_memory_aborts_the_slot():
    """TSAD past guest memory: no frame, TSD.TABT with OWN, ISR.TER|SERR, master abort, counter."""
    r = rig()
    r.start()
    r.send(0, frame(OTHER), addr=MEM - 10)
    assert not r.port.frames and r.master_abort and r.dev.errors["tx_dma_fault"] == 1
    assert r.rd("TSD0") & (s.TSD_OWN | s.TSD_TABT) == s.TSD_OWN | s.TSD_TABT
    assert r.rd("ISR") == s.INT_TER | s.INT_SERR


def test_tx_size_over_1792_aborts_without_dma():
    """SIZE above 1792 bytes: the slot aborts (TABT, TER), nothing is read or sent."""
    r = rig()
    r.start()
    copies = r.cpu.acct["copy"]
    r.send(0, frame(OTHER, 1800))
    assert not r.port.frames and r.dev.errors["tx_oversize"] == 1
    assert r.rd("TSD0") & s.TSD_TABT and r.rd("ISR") == s.INT_TER and r.cpu.acct["copy"] == copies


@pytest.mark.parametrize("base", [MEM, MEM - 100, 0xFFFFFFF0])
def test_rbstart_beyond_memory_drops_frames(base):
    """A ring outside guest memory: frames dropped, MPC and SERR, master abort, the ring stays empty."""
    r = rig()
    r.start(base=base, rcr=s.RCR_APM | s.RCR_WRAP)
    r.deliver(frame(MAC, 200))
    assert r.dev.errors["rx_dma_fault"] == 1 and r.master_abort
    assert r.rd("MPC") == 1 and r.rd("ISR") == s.INT_SERR and r.rd("CBR") == 0


@given(st.sampled_from([0, s.RCR_WRAP]), st.integers(0, 3),
       st.lists(st.tuples(st.integers(14, 1514), st.booleans()), min_size=1, max_size=80))
@settings(max_examples=100, deadline=None)
def test_ring_consumer_reads_every_frame_back(wrap, rblen, arrivals):
    """A consumer following CBR/CAPR as 8139too does reads every frame back intact, wrapped or run past
    the end as RCR.WRAP says, and the device writes nothing outside the ring (plus one packet with WRAP=1)."""
    r = rig(1 << 20)
    r.mem.buf[: len(PATTERN)] = PATTERN
    r.start(rcr=s.RCR_APM | wrap | rblen << s.RCR_RBLEN_SHIFT)
    size = r.dev.ring_size
    runs_past = wrap and size < s.RX_RING_MAX
    cur, pending = 0, []

    def consume() -> None:
        nonlocal cur
        while pending:
            assert not r.rd("CR") & s.CR_BUFE
            at = [RING + (cur + i) % size if not runs_past else RING + cur + i for i in range(4 + len(pending[0]) + 4)]
            packet = bytes(r.mem.buf[a] for a in at)
            assert s.RX_HEADER.unpack_from(packet) == (s.RSR_ROK | s.RSR_PAM, len(pending[0]) + 4)
            assert packet[4:-4] == pending.pop(0)
            cur = (cur + len(packet) + 3 & ~3) % size
            r.wr("CAPR", (cur - 16) & 0xFFFF)
        assert r.rd("CR") & s.CR_BUFE

    for i, (length, read_now) in enumerate(arrivals):
        data = frame(MAC, length, seed=i) + bytes(max(0, 60 - length))
        if not r.deliver(data):
            consume()
            assert r.deliver(data)
        pending.append(data)
        if read_now:
            consume()
    consume()
    end = RING + size + (1600 if runs_past else 0)
    assert r.mem.buf[:RING] == PATTERN[:RING] and r.mem.buf[end : len(PATTERN)] == PATTERN[end:]


def window(r: Rig) -> tuple[int, int]:
    """Where the current RX configuration may write: the ring, plus one longest packet past its end."""
    start = r.rd("RBSTART")
    return start, start + s.rx_ring_size(r.rd("RCR")) + s.RX_MAX_LENGTH + 8


REG_WRITE = st.tuples(st.just("reg"), st.integers(0, 255), st.sampled_from([1, 2, 4]), st.integers(0, 0xFFFFFFFF))
TX = st.tuples(st.just("tx"), st.integers(0, 3), st.integers(0, MEM + 4096), st.integers(0, 0x1FFF))
RX = st.tuples(st.just("rx"), st.sampled_from([MAC, BCAST, OTHER, bytes.fromhex("01005e000001")]),
               st.one_of(st.integers(14, 1600), st.integers(0, 5000)), st.booleans(), st.integers(1, 8))
CAPR = st.tuples(st.just("capr"), st.one_of(st.none(), st.integers(0, 0xFFFF)))
SETUP = st.tuples(st.just("setup"), st.sampled_from([RING, 0, MEM - 9000, MEM - 20, 1 << 31]),
                  st.one_of(st.integers(0, 0xFFFFFFFF),
                            st.builds(int.__or__, st.sampled_from([s.RCR_APM | s.RCR_AB, s.RCR_AAP]),
                                      st.sampled_from([0, s.RCR_WRAP, 3 << s.RCR_RBLEN_SHIFT]))))


@given(st.lists(st.one_of(REG_WRITE, TX, RX, RX, CAPR, SETUP), max_size=60))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_guest_never_crashes_or_writes_outside_the_ring(ops):
    """Random register writes, TX slots, RX frames and CAPR moves never raise, and the device
    writes guest memory only inside the RX ring window it was given (TX only reads)."""
    r = rig()
    r.start()
    r.mem.buf[:] = PATTERN
    before = PATTERN
    windows = {window(r)}
    for op in ops:
        if op[0] == "reg":
            r.dev.write(r.cpu, op[1], op[2], op[3])
        elif op[0] == "tx":
            r.wr(f"TSAD{op[1]}", op[2])
            r.wr(f"TSD{op[1]}", op[3])
        elif op[0] == "rx":                       # a burst, from a backend that asks first or one that does not
            data = frame(op[1], max(op[2], 14))
            for _ in range(op[4]):
                r.dev.receive(r.cpu, data) if op[3] else r.deliver(data)
        elif op[0] == "capr":
            r.consume() if op[1] is None else r.wr("CAPR", op[1])
        else:
            r.start(base=op[1], rcr=op[2], imr=op[2] >> 16)
        windows.add(window(r))
        r.dev.read(r.cpu, op[1] if op[0] == "reg" else 0x37, 4)
    after = bytearray(r.mem.buf)
    expected = bytearray(before)
    for lo, hi in windows:
        lo, hi = min(lo, MEM), min(hi, MEM)
        after[lo:hi] = expected[lo:hi] = bytes(hi - lo)
    assert after == expected
    assert r.rd("ISR") & ~s.INT_ALL == 0


# ---- the 8139too-style driver, end to end ---------------------------------------------------
def scenario(device: str = "rtl8139", packet_size: int = 1500, duration_ms: float = 2, ping: bool = True):
    vms = [{"name": f"vm{i}", "host": "host0",
            "nics": [{"model": "emulated", "device": device, "mac": f"52:54:00:00:00:{i:02x}", "ip": f"10.0.0.{i}/24"}]}
           for i in (1, 2)]
    workloads = [{"type": "udp_stream", "src": "vm1", "dst": "vm2", "packet_size": packet_size,
                  "duration_ms": duration_ms}]
    if ping:
        workloads.insert(0, {"type": "ping", "src": "vm1", "dst": "vm2", "count": 5})
    return iovirt.Scenario.from_dict({"name": "t", "profile": "default", "hosts": [{"name": "host0", "cores": 8}],
                                      "vms": vms, "workloads": workloads})


def test_two_vms_deliver_every_frame_intact_in_order_and_answer_pings():
    """Two rtl8139 VMs: every UDP frame arrives intact and in order; every ping is answered."""
    ping, stream = iovirt.run(scenario()).to_dict()["flows"]
    assert ping["sent"] == ping["delivered"] == 5
    assert stream["sent"] == stream["delivered"] > 50
    assert stream["corrupted"] == stream["out_of_order"] == stream["dropped"] == 0
    assert stream["device"] == "rtl8139"


def test_example_scenario_runs():
    """examples/emulated-rtl8139.yaml runs clean."""
    for flow in iovirt.run(iovirt.load_scenario(EXAMPLE)).to_dict()["flows"]:
        assert flow["sent"] == flow["delivered"] > 0 and flow["device"] == "rtl8139"


def test_driver_reads_mac_by_bit_banging_the_eeprom():
    """The guest's MAC comes from the EEPROM: four 16-clock serial reads, each bit a trapped access."""
    world = World(scenario())
    driver = world.guests["vm1"].netdevs[0]
    assert driver.mac == bytes.fromhex("525400000001")
    assert driver.version == s.TCR_HWVERID_RTL8139C
    assert world.vms["vm1"].acct["vm_exit"] > 4 * 16 * 3     # per data bit: SK high, read EEDO, SK low


def test_io_and_memory_bars_reach_one_register_file():
    """A write through the I/O BAR (a PIO exit) reads back through the memory BAR (an MMIO exit)."""
    world = World(scenario())
    vm = world.vms["vm1"]
    vcpu, nic = vm.vcpus[0], vm.nics[0]
    io, mem = nic.fn.bar_address(0), nic.fn.bar_address(1)
    pio, mmio = vm.acct["pio_emulate"], vm.acct["mmio_emulate"]
    vcpu.pio_write(io + REGS["MAR0"].offset, 4, 0x12345678)
    assert vcpu.mmio_read(mem + REGS["MAR0"].offset, 4) == 0x12345678
    assert (vm.acct["pio_emulate"], vm.acct["mmio_emulate"]) == (pio + 1, mmio + 1)


def test_transmit_is_two_register_writes_and_a_copy():
    """One frame costs the sending vCPU exactly two exits (TSAD, TSD) and one bounce-buffer copy."""
    world = World(scenario())
    world.settle()
    driver, vm = world.guests["vm1"].netdevs[0], world.vms["vm1"]
    sent = []
    vm.nics[0].port.send = lambda cpu, f: sent.append(f)
    exits, copies = vm.acct["vm_exit"], vm.acct["copy_hot"]
    data = bytes.fromhex("525400000002525400000001") + b"\x08\x00" + bytes(100)
    assert driver.transmit(data)
    assert vm.acct["vm_exit"] == exits + 2 and sent == [data]
    assert vm.acct["copy_hot"] == copies + 2  # the driver's copy, the device's DMA read: of what this vCPU just wrote


def test_transmit_refuses_a_fifth_frame_until_tx_completes():
    """Four slots: the fifth transmit is refused until the TOK interrupt cleans a slot and wakes the queue."""
    world = World(scenario())
    world.settle()
    driver = world.guests["vm1"].netdevs[0]
    world.vms["vm1"].nics[0].port.send = lambda cpu, f: None
    data = bytes.fromhex("525400000002525400000001") + b"\x08\x00" + bytes(100)
    assert all(driver.transmit(data) for _ in range(4))
    assert not driver.transmit(data) and driver.tx_queue_stopped
    world.settle()
    assert not driver.tx_queue_stopped and driver.dirty_tx == driver.cur_tx == 4


def test_driver_recovers_from_a_corrupt_ring_header():
    """A bad packet header makes the driver restart the receiver (8139too rtl8139_rx_err); traffic goes on."""
    world = World(scenario(ping=False))
    world.settle()
    guest, vm = world.guests["vm2"], world.vms["vm2"]
    driver, nic = guest.netdevs[0], vm.nics[0]
    received = []
    driver.stack = type("Stack", (), {"receive": staticmethod(received.append)})()
    data = [bytes.fromhex("525400000002525400000001") + b"\x08\x00" + bytes([i]) * 60 for i in range(2)]
    header = driver.rx_ring + driver.cur_rx
    nic.device.receive(vm.vmm_thread(), data[0])
    guest.mem.write(header, b"\x00\x00\xff\xff")
    world.settle()
    assert guest.stats["rx_errors"] == 1 and driver.cur_rx == 0 and not received
    assert nic.device.rx_read == nic.device.rx_write == 0
    nic.device.receive(vm.vmm_thread(), data[1])
    world.settle()
    assert received == [data[1]]


def test_rtl8139_costs_more_exits_per_packet_than_e1000():
    """Per 1500-byte frame the rtl8139 interface (TSAD+TSD, per-frame CAPR and ISR) exits more than e1000's (TDT)."""
    per_packet = {}
    for device in ("e1000", "rtl8139"):
        flow = iovirt.run(scenario(device, ping=False)).to_dict()["flows"][0]
        assert flow["delivered"] == flow["sent"] > 0
        per_packet[device] = flow["events_per_packet"]["vm_exit"]
    assert per_packet["rtl8139"] > 2 * per_packet["e1000"]
