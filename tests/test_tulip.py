"""DEC 21143 "Tulip" device model and guest driver: CSRs, the serial ROM read
bit by bit, TX and RX descriptor lists in ring and chained mode, the setup
frame and address filter, interrupts, hostile guests, and two guests talking
through it.  Everything is real iovirt code; only the backend port is a
recorder."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.devices.tulip import WALK_LIMIT, Tulip
from iovirt.experiments.world import World
from iovirt.guest.drivers.tulip import TulipDriver
from iovirt.mem.dma import Dma
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import tulip as s
from recording import Port, RigState, deliver

MAC = bytes.fromhex("525400123456")
OTHER = bytes.fromhex("525400abcdef")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")
SRC = bytes.fromhex("020000000001")
MEM = 64 << 10
TX_LIST, RX_LIST = 0x1000, 0x2000      # descriptor lists
TX_BUFS, RX_BUFS = 0x4000, 0x8000      # buffers 0x800 apart
SETUP_BUF = 0x3000
PROFILE = load_profile("default")
RXTX = s.CSR6_SR | s.CSR6_ST
OWN, FS, LS = s.DES0_OWN, s.TDES1_FS, s.TDES1_LS
SR_ENB = s.CSR9_SR | s.CSR9_RD


@dataclass
class Rig(RigState):
    mem: GuestMemory
    cpu: Resource
    dev: Tulip
    port: Port
    irqs: list[int] = field(default_factory=list)

    def rd(self, n: int) -> int:
        return self.dev.csr_read(self.cpu, s.csr(n), 4)

    def wr(self, n: int, value: int) -> None:
        self.dev.csr_write(self.cpu, s.csr(n), 4, value)

    def desc(self, addr: int, des0: int, des1: int, buf1: int = 0, buf2: int = 0) -> None:
        self.mem.store(s.TX_DESC.struct, addr, des0, des1, buf1, buf2)

    def des0(self, addr: int) -> int:
        return s.DES0.unpack_from(self.mem.buf, addr)[0]

    def start(self, csr6: int = RXTX, csr0: int = 0) -> None:
        self.wr(0, csr0)
        self.wr(3, RX_LIST)
        self.wr(4, TX_LIST)
        self.wr(6, csr6)

    def tx_ring(self, frames: list[bytes], end: int = 0) -> None:
        """One FS|LS descriptor per frame in ring mode; TER on the last of ``end`` slots."""
        for i, data in enumerate(frames):
            self.mem.write(TX_BUFS + i * 0x800, data)
            ter = s.TDES1_TER if i == end - 1 else 0
            self.desc(TX_LIST + i * s.DESC_SIZE, OWN, FS | LS | ter | len(data), TX_BUFS + i * 0x800)

    def rx_ring(self, n: int, size: int = 1536, owned: int | None = None) -> None:
        for i in range(n):
            rer = s.RDES1_RER if i == n - 1 else 0
            self.desc(RX_LIST + i * s.DESC_SIZE, OWN if owned is None or i < owned else 0, size | rer,
                      RX_BUFS + i * 0x800)

    def setup(self, addrs: list[bytes], slot: int = 0, ftype: int = 0) -> None:
        """A setup frame (perfect filtering) listing ``addrs``, padded with the first."""
        frame = bytearray(s.SETUP_FRAME_SIZE)
        for i in range(s.SETUP_ENTRIES):
            addr = addrs[min(i, len(addrs) - 1)]
            for j, off in enumerate(s.SETUP_ADDR_OFFSETS):
                frame[i * s.SETUP_ENTRY_SIZE + off] = addr[j]
        self.mem.write(SETUP_BUF, bytes(frame))
        self.desc(TX_LIST + slot * s.DESC_SIZE, OWN, s.TDES1_SET | ftype | s.SETUP_FRAME_SIZE, SETUP_BUF)
        self.wr(1, 0)

    def deliver(self, frame: bytes) -> bool:
        return deliver(self.dev, self.cpu, frame)


def rig(mem_size: int = MEM) -> Rig:
    ledger = Ledger(PROFILE)
    mem = GuestMemory(mem_size)
    cpu = Resource("cpu", "vcpu", ledger)
    irqs: list[int] = []
    dev = Tulip(Sim(), MAC, Dma(mem, "copy"), irq=lambda c, level: irqs.append(level),
                timer_cpu=Resource("timer", "host_thread", ledger))
    port = Port()
    dev.port = port
    return Rig(mem, cpu, dev, port, irqs)


def frame(dst: bytes = MAC, size: int = 64, seed: int = 0) -> bytes:
    body = bytes((seed + i * 7) & 0xFF for i in range(size - 14))
    return dst + SRC + b"\x08\x00" + body


def srom_word(r: Rig, addr: int) -> tuple[int, list[int]]:
    """NM93C46 READ by hand: start bit, opcode 10, six address bits, then 16
    clocks; returns the word and what DO showed during the command."""
    r.wr(9, SR_ENB)
    r.wr(9, SR_ENB | s.CSR9_SR_CS)
    command, shown = 1 << 8 | 0b10 << 6 | addr, []
    for i in range(8, -1, -1):
        di = s.CSR9_SR_DI if command >> i & 1 else 0
        r.wr(9, SR_ENB | s.CSR9_SR_CS | di)
        r.wr(9, SR_ENB | s.CSR9_SR_CS | di | s.CSR9_SR_SK)
        shown.append(r.rd(9) >> 3 & 1)
    word = 0
    for _ in range(16):
        r.wr(9, SR_ENB | s.CSR9_SR_CS)
        r.wr(9, SR_ENB | s.CSR9_SR_CS | s.CSR9_SR_SK)
        word = word << 1 | (r.rd(9) >> 3 & 1)
    r.wr(9, SR_ENB)
    return word, shown


# ---- PCI identity and CSR file ------------------------------------------------------
def test_pci_identity_matches_qemu_tulip():
    """Vendor DEC, device 21143 (QEMU's tulip), Ethernet class, BAR0 I/O and BAR1 memory of 128 bytes."""
    fn = rig().dev.pci
    assert fn.config_read(0x00, 4) == 0x0019 << 16 | 0x1011
    assert fn.config_read(0x08, 4) >> 8 == 0x020000
    assert fn.config_read(0x2C, 4) == 0x104F << 16 | 0x103C
    assert [(b.index, b.kind, b.size) for b in fn.bars.values()] == [(0, "io", 128), (1, "mem32", 128)]


def test_both_bars_reach_the_same_csrs():
    """A CSR written through the I/O BAR reads back through the memory BAR."""
    r = rig()
    io_read, io_write = r.dev.bar_handlers(0)
    mem_read, _ = r.dev.bar_handlers(1)
    io_write(r.cpu, s.csr(7), 4, 0x0001A5C5)
    assert mem_read(r.cpu, s.csr(7), 4) == 0x0001A5C5
    assert mem_read(r.cpu, s.csr(7) + 1, 1) == 0xA5
    assert io_read(r.cpu, s.csr(7) + 4, 4) == 0                  # the upper half of the slot is reserved


def test_swr_restores_reset_values_and_lowers_the_line():
    """CSR0 SWR puts every CSR back to its HRM reset value and drops an asserted INTA#."""
    r = rig()
    defaults = [r.rd(n) for n in range(16)]
    assert defaults[0] == 0xFE000000 and defaults[5] == 0xF0000000 and defaults[6] == 0x32000040
    assert defaults[7] == 0xF3FE0000 and defaults[8] == 0xE0000000
    r.rx_ring(1, owned=0)
    r.start(csr6=s.CSR6_SR | s.CSR6_PR)
    r.wr(7, s.CSR5_AIS | s.CSR5_RU)
    r.deliver(frame())
    assert r.level == 1
    for n, value in ((11, 0x1234), (13, 5), (15, 7)):
        r.wr(n, value)
    r.wr(0, s.CSR0_SWR)
    assert [r.rd(n) for n in range(16)] == defaults
    assert r.level == 0


def test_csr6_filter_mode_bits_are_read_only():
    """HP, HO and IF come from the setup frame, not from a CSR6 write."""
    r = rig()
    r.wr(6, 0xFFFFFFFF & ~RXTX)
    assert r.rd(6) & s.CSR6_FILTER_BITS == 0


# ---- serial ROM ---------------------------------------------------------------------------
def test_srom_serial_read_gives_the_mac_at_byte_20():
    """Bit-banging READ through CSR9 returns the MAC at SROM bytes 20-25, after a dummy 0."""
    r = rig()
    words, shown = zip(*(srom_word(r, a) for a in range(13)), strict=True)
    assert b"".join(w.to_bytes(2, "little") for w in words[10:13]) == MAC
    assert all(trace == [1] * 8 + [0] for trace in shown)       # high impedance, then the dummy bit
    assert b"".join(w.to_bytes(2, "little") for w in words[0:4]) != b"".join(
        w.to_bytes(2, "little") for w in words[8:12])           # so Linux takes sa_offset = 20


def test_srom_ignores_leading_zeros_and_reads_sequentially():
    """Leading zeros before the start bit are ignored; clocking on past D0 reads the next word."""
    r = rig()
    expected = srom_word(r, 11)[0], srom_word(r, 12)[0]
    r.wr(9, SR_ENB | s.CSR9_SR_CS)
    for bit in [0, 0, 0] + [1, 1, 0] + [0, 0, 1, 0, 1, 1]:
        di = s.CSR9_SR_DI if bit else 0
        r.wr(9, SR_ENB | s.CSR9_SR_CS | di)
        r.wr(9, SR_ENB | s.CSR9_SR_CS | di | s.CSR9_SR_SK)
    bits = []
    for _ in range(32):
        r.wr(9, SR_ENB | s.CSR9_SR_CS)
        r.wr(9, SR_ENB | s.CSR9_SR_CS | s.CSR9_SR_SK)
        bits.append(r.rd(9) >> 3 & 1)
    value = int("".join(map(str, bits)), 2)
    assert (value >> 16, value & 0xFFFF) == expected


def _crc8_msb_first(bits: list[int]) -> int:
    crc = 0xFF
    for bit in bits:
        crc = (crc << 1 ^ (0x07 if bit ^ crc >> 7 else 0)) & 0xFF
    return crc


def _crc32_bitwise(data: bytes) -> int:
    """The SROM format's CRC-32 as QEMU's tulip_srom_crc computes it, bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        for i in range(8):
            msb = crc >> 31
            crc = crc << 1 & 0xFFFFFFFF
            if msb ^ (byte >> i & 1):
                crc ^= 0x04C11DB7
    return int(f"{crc:032b}"[::-1], 2) ^ 0xFFFFFFFF


def test_srom_checksums():
    """The ID block CRC-8 checks to zero over the 18-byte ID block; word 63 is the CRC-32 of bytes 0-125."""
    r = rig()
    image = b"".join(w.to_bytes(2, "little") for w in r.dev.srom.words)
    bits = [w >> b & 1 for w in struct.unpack("<9H", image[:18]) for b in range(15, -1, -1)]
    assert _crc8_msb_first(bits) == 0
    assert r.dev.srom.words[63] == _crc32_bitwise(image[:126]) & 0xFFFF == zlib.crc32(image[:126]) & 0xFFFF
    assert image[18] == 4 and image[19] == 1 and image[27] == s.SROM_INFO_LEAF


# ---- transmit --------------------------------------------------------------------------------
def test_ring_mode_tx_sends_in_order_clears_own_and_wraps():
    """Ring mode: descriptors at base + i*16, TER wraps to CSR4; OWN cleared; TU when the list ends."""
    r = rig()
    frames = [frame(OTHER, 60 + i, seed=i) for i in range(3)]
    r.tx_ring(frames, end=3)
    r.start(csr6=s.CSR6_ST)
    assert r.port.frames == frames
    assert [r.des0(TX_LIST + i * 16) for i in range(3)] == [0, 0, 0]
    assert r.rd(5) & s.CSR5_TU and r.rd(5) >> s.CSR5_TS_SHIFT & 7 == s.TS_SUSPENDED
    assert r.dev.tx_cur == TX_LIST                                 # wrapped by TER
    again = frame(OTHER, 70, seed=9)
    r.tx_ring([again])
    r.wr(1, 0)
    assert r.port.frames[-1] == again


def test_ring_mode_honours_descriptor_skip_length():
    """CSR0 DSL longwords separate ring descriptors."""
    r = rig()
    for i in range(2):
        r.mem.write(TX_BUFS + i * 0x800, frame(OTHER, seed=i))
        r.desc(TX_LIST + i * 24, OWN, FS | LS | 64, TX_BUFS + i * 0x800)
    r.start(csr6=s.CSR6_ST, csr0=2 << s.CSR0_DSL_SHIFT)
    assert r.port.frames == [frame(OTHER, seed=0), frame(OTHER, seed=1)]


def test_chained_mode_follows_buffer_2_and_ignores_tbs2():
    """TCH: buffer 2 is the next descriptor's address and TBS2 is not a length."""
    r = rig()
    order = [0x1800, 0x1100, 0x1F00]
    for i, addr in enumerate(order):
        nxt = order[i + 1] if i + 1 < len(order) else 0x1E00
        r.mem.write(TX_BUFS + i * 0x800, frame(OTHER, seed=i))
        r.desc(addr, OWN, FS | LS | s.TDES1_TCH | 64 | 0x7FF << s.BUF2_SIZE_SHIFT, TX_BUFS + i * 0x800, nxt)
    r.wr(4, order[0])
    r.wr(6, s.CSR6_ST)
    assert r.port.frames == [frame(OTHER, seed=i) for i in range(3)]
    assert r.dev.tx_cur == 0x1E00


def test_fs_to_ls_buffers_are_gathered_into_one_frame():
    """A frame spread over both buffers of three descriptors leaves as one frame; IC on LS raises TI."""
    r = rig()
    data = frame(OTHER, 300)
    pieces = [data[i : i + 50] for i in range(0, 300, 50)]
    for i, piece in enumerate(pieces):
        r.mem.write(TX_BUFS + i * 0x100, piece)
    for d in range(3):
        flags = (FS if d == 0 else 0) | (LS | s.TDES1_IC if d == 2 else 0)
        r.desc(TX_LIST + d * 16, OWN, flags | 50 | 50 << s.BUF2_SIZE_SHIFT,
               TX_BUFS + 2 * d * 0x100, TX_BUFS + (2 * d + 1) * 0x100)
    r.start(csr6=s.CSR6_ST)
    assert r.port.frames == [data]
    assert r.rd(5) & s.CSR5_TI


def test_short_frames_are_padded_unless_dpd():
    """The chip pads frames shorter than 60 bytes unless TDES1 DPD is set."""
    r = rig()
    r.mem.write(TX_BUFS, frame(OTHER, 20))
    r.desc(TX_LIST, OWN, FS | LS | 20, TX_BUFS)
    r.desc(TX_LIST + 16, OWN, FS | LS | s.TDES1_DPD | 20, TX_BUFS)
    r.start(csr6=s.CSR6_ST)
    assert [len(f) for f in r.port.frames] == [60, 20]


def test_tx_needs_st_and_a_poll_demand():
    """Descriptors handed over while ST is clear are not sent; a poll demand while running sends them."""
    r = rig()
    r.tx_ring([frame(OTHER)])
    r.wr(4, TX_LIST)
    r.wr(1, 0)
    assert r.port.frames == []
    r.wr(6, s.CSR6_ST)
    r.tx_ring([frame(OTHER), frame(OTHER, seed=1)])
    assert len(r.port.frames) == 1
    r.wr(1, 0)
    assert len(r.port.frames) == 2


def test_setup_frame_programs_filter_and_is_not_sent():
    """A setup frame loads the perfect filter, is never transmitted, and closes its descriptor."""
    r = rig()
    r.start(csr6=s.CSR6_ST)
    r.setup([MAC, BCAST])
    assert r.port.frames == [] and r.des0(TX_LIST) == 0
    assert r.dev.filter == {MAC, BCAST}


@pytest.mark.parametrize("csr6,ftype,dst,accepted", [
    (0, 0, MAC, True), (0, 0, BCAST, True), (0, 0, OTHER, False), (0, 0, MCAST, False),
    (s.CSR6_PM, 0, MCAST, True), (s.CSR6_PM, 0, OTHER, False), (s.CSR6_PR, 0, OTHER, True),
    (0, s.TDES1_FT1, OTHER, True), (0, s.TDES1_FT1, MAC, False),       # inverse filtering
])
def test_rx_address_filter(csr6, ftype, dst, accepted):
    """Perfect filter, inverse filtering, pass-all-multicast and promiscuous, as HRM 4.2.3 and CSR6 say."""
    r = rig()
    r.rx_ring(4)
    r.start(csr6=RXTX | csr6)
    r.setup([MAC, BCAST], ftype=ftype)
    r.deliver(frame(dst))
    assert (r.des0(RX_LIST) & OWN == 0) == accepted


def test_broadcast_passes_only_through_the_filter():
    """Without the broadcast address in the setup frame, broadcast frames are not received."""
    r = rig()
    r.rx_ring(4)
    r.start()
    r.setup([MAC])
    r.deliver(frame(BCAST))
    assert r.des0(RX_LIST) & OWN
    r.setup([MAC, BCAST], slot=1)
    r.deliver(frame(BCAST))
    assert not r.des0(RX_LIST) & OWN and r.des0(RX_LIST) & s.RDES0_MF


# ---- receive -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [20, 60, 100, 1514])
def test_rx_frame_length_counts_the_fcs(size):
    """FL is the frame (padded to 60) plus the 4-byte CRC the chip stores after it; FS, LS, OWN clear, RI."""
    r = rig()
    r.rx_ring(2)
    r.start(csr6=RXTX | s.CSR6_PR)
    data = frame(size=max(size, 14))
    r.deliver(data)
    status = r.des0(RX_LIST)
    stored = data + bytes(max(0, 60 - len(data)))
    length = len(stored) + 4
    assert status >> s.RDES0_FL_SHIFT & s.RDES0_FL_MASK == length
    assert status & (OWN | s.RDES0_FS | s.RDES0_LS | s.RDES0_ES) == s.RDES0_FS | s.RDES0_LS
    assert r.mem.read(RX_BUFS, length) == stored + zlib.crc32(stored).to_bytes(4, "little")
    assert r.rd(5) & s.CSR5_RI


def test_rx_frame_spans_descriptors_with_fs_first_and_ls_last():
    """A frame larger than one buffer fills descriptors in turn; FL only on the last."""
    r = rig()
    r.rx_ring(4, size=512)
    r.start(csr6=RXTX | s.CSR6_PR)
    data = frame(size=1200)
    r.deliver(data)
    status = [r.des0(RX_LIST + i * 16) for i in range(4)]
    assert status[0] == s.RDES0_FS and status[1] == 0
    assert status[2] == s.RDES0_LS | s.RDES0_FT | 1204 << s.RDES0_FL_SHIFT and status[3] & OWN
    assert b"".join(r.mem.read(RX_BUFS + i * 0x800, 512) for i in range(3))[:1200] == data
    assert r.dev.rx_cur == RX_LIST + 48


def test_no_descriptor_sets_ru_counts_missed_frame_and_resumes_on_next_frame():
    """No descriptor: RU, RS suspended, CSR8 counts (read clears); a returned descriptor serves the next frame."""
    r = rig()
    r.rx_ring(2, owned=0)
    r.start(csr6=RXTX | s.CSR6_PR)
    assert r.deliver(frame()) and r.deliver(frame())
    assert r.rd(5) & s.CSR5_RU and r.rd(5) >> s.CSR5_RS_SHIFT & 7 == s.RS_SUSPENDED
    assert r.rd(8) & s.CSR8_MFC_MASK == 2
    assert r.rd(8) & s.CSR8_MFC_MASK == 0
    r.desc(RX_LIST, OWN, 1536, RX_BUFS)
    r.deliver(frame(seed=5))
    assert r.des0(RX_LIST) & s.RDES0_LS and r.mem.read(RX_BUFS, 64) == frame(seed=5)


def test_frame_that_does_not_fit_is_truncated_with_de():
    """The last chip-owned descriptor closes a frame that does not fit with LS, ES and DE; RU follows."""
    r = rig()
    r.rx_ring(2, size=256, owned=1)
    r.start(csr6=RXTX | s.CSR6_PR)
    r.deliver(frame(size=1000))
    closed = s.RDES0_FS | s.RDES0_LS | s.RDES0_ES | s.RDES0_DE
    assert r.des0(RX_LIST) & (OWN | closed) == closed
    assert r.rd(5) & s.CSR5_RU and r.dev.errors["rx_truncated"] == 1


def test_receiver_stopped_refuses_frames_and_start_flushes_the_port():
    """With SR clear the backend must hold frames; setting SR tells it to flush."""
    r = rig()
    r.rx_ring(2)
    assert not r.dev.can_receive(64)
    r.start()
    assert r.dev.can_receive(64) and r.port.flushes == 1


def test_internal_loopback_receives_own_frames():
    """CSR6 OM = internal loopback: transmitted frames come back through the receive list."""
    r = rig()
    r.rx_ring(2)
    r.tx_ring([frame(OTHER)])
    r.start(csr6=RXTX | s.CSR6_PR | 1 << s.CSR6_OM_SHIFT)
    assert r.port.frames == [] and r.mem.read(RX_BUFS, 64) == frame(OTHER)


# ---- status and interrupts ---------------------------------------------------------------------
def test_csr5_bits_are_write_one_to_clear():
    """Writing ones clears just those status bits; process states are untouched."""
    r = rig()
    r.rx_ring(2)
    r.tx_ring([frame(OTHER)])
    r.start(csr6=RXTX | s.CSR6_PR)
    r.deliver(frame())
    before = r.rd(5)
    assert before & s.CSR5_RI and before & s.CSR5_TU
    r.wr(5, 0)
    assert r.rd(5) == before
    r.wr(5, s.CSR5_RI)
    assert r.rd(5) == before & ~s.CSR5_RI
    r.wr(5, 0xFFFFFFFF)
    assert r.rd(5) & 0x0001FFFF == 0 and r.rd(5) >> s.CSR5_RS_SHIFT & 0x3F == before >> s.CSR5_RS_SHIFT & 0x3F


@pytest.mark.parametrize("csr7,asserted", [
    (s.CSR5_RI | s.CSR5_NIS, True), (s.CSR5_RI, False), (s.CSR5_NIS, False),
    (s.CSR5_TU | s.CSR5_NIS, False), (s.CSR7_VALID_21143, True),
])
def test_interrupt_line_is_enabled_status_with_summary(csr7, asserted):
    """INTA# is asserted while a status bit enabled in CSR7 feeds an enabled summary bit (NIS/AIS)."""
    r = rig()
    r.rx_ring(2)
    r.start(csr6=s.CSR6_SR | s.CSR6_PR)
    r.wr(7, csr7)
    r.deliver(frame())
    assert r.level == asserted
    assert bool(r.rd(5) & s.CSR5_NIS) == bool(csr7 & s.CSR5_RI)
    r.wr(5, s.CSR5_RI)
    assert r.level == 0


# ---- hostile guests ------------------------------------------------------------------------------
def test_tx_list_outside_memory_is_a_fatal_bus_error():
    """A descriptor fetch outside memory: master abort, FBE/EB, both processes stop until SWR."""
    r = rig()
    r.wr(7, s.CSR7_VALID_21143)
    r.wr(4, MEM + 0x1000)
    r.wr(6, s.CSR6_ST)
    csr5 = r.rd(5)
    assert r.master_abort and csr5 & s.CSR5_FBE and csr5 >> s.CSR5_EB_SHIFT & 7 == s.CSR5_EB_MASTER_ABORT
    assert csr5 >> s.CSR5_TS_SHIFT & 7 == s.TS_STOPPED and r.level == 1
    r.tx_ring([frame(OTHER)])
    r.wr(4, TX_LIST)
    r.wr(6, 0)
    r.wr(6, s.CSR6_ST)
    assert r.port.frames == []
    r.wr(0, s.CSR0_SWR)
    r.start(csr6=s.CSR6_ST)
    assert r.port.frames == [frame(OTHER)]


@pytest.mark.parametrize("where", ["tx_buffer", "rx_list", "rx_buffer", "setup_buffer"])
def test_dma_outside_memory_drops_the_frame_and_aborts(where):
    """Any access outside guest memory drops the frame, sets Received Master Abort and is counted."""
    r = rig()
    r.rx_ring(2)
    r.tx_ring([frame(OTHER)])
    if where == "tx_buffer":
        r.desc(TX_LIST, OWN, FS | LS | 64, MEM - 10)
    if where == "rx_buffer":
        r.desc(RX_LIST, OWN, 1536, MEM - 10)
    if where == "setup_buffer":
        r.desc(TX_LIST, OWN, s.TDES1_SET | 192, MEM - 10)
    r.start(csr6=RXTX | s.CSR6_PR)
    if where == "rx_list":
        r.wr(3, 0xFFFFFFF0)
    r.deliver(frame())
    assert r.master_abort and sum(r.dev.errors.values()) == 1
    assert frame(OTHER) not in r.port.frames or where.startswith("rx")
    assert not r.dev.can_receive(64)


def test_chained_loop_terminates():
    """A descriptor chained to itself is processed once: the chip cleared OWN, so the walk stops."""
    r = rig()
    r.mem.write(TX_BUFS, frame(OTHER))
    r.desc(TX_LIST, OWN, FS | LS | s.TDES1_TCH | 64, TX_BUFS, TX_LIST)
    r.start(csr6=s.CSR6_ST)
    assert r.port.frames == [frame(OTHER)] and r.rd(5) & s.CSR5_TU
    r.desc(RX_LIST, OWN, s.RDES1_RCH | 100, RX_BUFS, RX_LIST)
    r.wr(6, RXTX | s.CSR6_PR)
    r.deliver(frame(size=1000))
    assert r.des0(RX_LIST) & s.RDES0_DE and r.dev.errors["rx_truncated"] == 1


def test_endless_owned_list_stops_at_the_walk_limit():
    """Memory full of chip-owned empty descriptors: one poll demand walks a bounded number of them."""
    r = rig()
    for i in range(2 * WALK_LIMIT):
        r.desc(TX_LIST + i * 16, OWN, 0)
    r.start(csr6=s.CSR6_ST)
    assert r.dev.errors["tx_walk_limit"] == 1
    assert r.dev.tx_cur == TX_LIST + WALK_LIMIT * 16
    for i in range(2 * WALK_LIMIT):
        r.desc(RX_LIST + i * 16, OWN, 0)
    r.wr(6, RXTX | s.CSR6_PR)
    assert r.deliver(frame())
    assert r.dev.errors["rx_walk_limit"] == 1 and r.dev.rx_cur == RX_LIST + WALK_LIMIT * 16


def test_zero_sizes_and_jabber():
    """Empty descriptors close without sending; a frame beyond 2048 bytes is cut: ES, TO and TJT."""
    r = rig()
    r.desc(TX_LIST, OWN, FS | LS, TX_BUFS, TX_BUFS)
    for d in range(3):
        r.desc(TX_LIST + 16 * (d + 1), OWN, (FS if d == 0 else 0) | (LS if d == 2 else 0) | 1000, TX_BUFS)
    r.start(csr6=s.CSR6_ST)
    assert r.port.frames == [] and r.des0(TX_LIST) == 0
    assert r.des0(TX_LIST + 48) == s.TDES0_ES | s.TDES0_TO and r.rd(5) & s.CSR5_TJT


_SLOT = st.one_of(st.integers(0, 3), st.integers(0, 15), st.integers(0, 255))
_ADDR = st.one_of(st.integers(0, 0xFFFFFFFF), st.integers(0x8000, 0xC000), _SLOT.map(lambda i: 0x1000 + 16 * i))
_SIZE = st.one_of(st.sampled_from([0, 64, 192, 1536]), st.integers(0, 0x7FF))
_FLAGS = st.sets(st.sampled_from([FS, LS, s.TDES1_IC, s.TDES1_SET, s.TDES1_TER, s.TDES1_TCH, s.TDES1_DPD,
                                  s.TDES1_FT0, s.TDES1_FT1]), max_size=4).map(sum)
_DES1 = st.one_of(st.builds(lambda f, a, b: f | b << s.BUF2_SIZE_SHIFT | a, _FLAGS, _SIZE, _SIZE),
                  st.integers(0, 0xFFFFFFFF))
_DESC = st.tuples(_SLOT, st.booleans(), _DES1, _ADDR, _ADDR)


def _allowed_writes(mem: GuestMemory, des1_buffers: bool) -> set[int]:
    """Bytes the chip may write: the status longword of every chip-owned
    descriptor anywhere, and (RX) the buffers it names within their sizes."""
    allowed: set[int] = set()
    words = memoryview(mem.buf).cast("I")
    for i, word in enumerate(words):
        if not word & OWN:
            continue
        allowed.update(range(4 * i, 4 * i + 4))
        if des1_buffers and 4 * i + 16 <= mem.size:
            _, des1, buf1, buf2 = s.RX_DESC.unpack_from(mem.buf, 4 * i)
            size2 = 0 if des1 & s.RDES1_RCH else des1 >> 11 & 0x7FF
            allowed.update(range(buf1, buf1 + (des1 & 0x7FF)))
            allowed.update(range(buf2, buf2 + size2))
    return allowed


def _place(r: Rig, descs) -> None:
    """The first descriptor at the list base, the others at their slots."""
    for i, (slot, owned, des1, buf1, buf2) in enumerate(descs):
        r.desc(0x1000 + (slot if i else 0) * 16, OWN if owned else 0, des1, buf1, buf2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(descs=st.lists(_DESC, min_size=1, max_size=12), csr0=st.integers(0, 0xFFFFFFFF), polls=st.integers(1, 3))
def test_random_tx_lists_touch_only_status_longwords(descs, csr0, polls):
    """Random TX lists never raise, terminate, and change nothing but chip-owned TDES0 longwords."""
    r = rig()
    r.mem.write(0x8000, bytes(range(128)) * 128)
    _place(r, descs)
    allowed = _allowed_writes(r.mem, des1_buffers=False)
    before = bytes(r.mem.buf)
    r.wr(0, csr0 & ~s.CSR0_SWR)
    r.wr(4, 0x1000)
    r.wr(6, s.CSR6_ST)
    for _ in range(polls):
        r.wr(1, 0)
    after = bytes(r.mem.buf)
    assert all(i in allowed for i in range(len(after)) if after[i] != before[i])
    assert all(len(f) <= s.JABBER_BYTES for f in r.port.frames)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(descs=st.lists(_DESC, min_size=1, max_size=12), csr0=st.integers(0, 0xFFFFFFFF),
       sizes=st.lists(st.integers(14, 3000), min_size=1, max_size=4))
def test_random_rx_lists_write_only_lists_and_named_buffers(descs, csr0, sizes):
    """Random RX lists never raise, terminate, and write only owned RDES0s and the buffers they name."""
    r = rig()
    _place(r, descs)
    before = bytes(r.mem.buf)
    r.wr(0, csr0 & ~s.CSR0_SWR)
    r.wr(3, 0x1000)
    r.wr(6, s.CSR6_SR | s.CSR6_PR)
    allowed: set[int] = set()
    for i, size in enumerate(sizes):
        # A frame's FCS can land on a longword of an overlapping list and hand it
        # to the chip: what is chip-owned is judged before each frame.
        allowed |= _allowed_writes(r.mem, des1_buffers=True)
        r.deliver(bytes(b & 0x7F for b in frame(size=size, seed=i)))
    after = bytes(r.mem.buf)
    assert all(i in allowed for i in range(len(after)) if after[i] != before[i])


# ---- the driver and two guests ----------------------------------------------------------------------
def scenario(packet_size: int = 1500) -> iovirt.Scenario:
    vms = [{"name": f"vm{i}", "host": "host0", "nics": [
        {"model": "emulated", "device": "tulip", "mac": f"52:54:00:00:00:{i:02x}", "ip": f"10.0.0.{i}/24"}]}
        for i in (1, 2)]
    return iovirt.Scenario.from_dict({
        "name": "tulip", "profile": "default", "hosts": [{"name": "host0", "cores": 4}], "vms": vms,
        "workloads": [{"type": "ping", "src": "vm1", "dst": "vm2", "count": 5},
                      {"type": "udp_stream", "src": "vm1", "dst": "vm2", "packet_size": packet_size,
                       "duration_ms": 2}]})


def test_driver_probe_reads_the_mac_from_srom_and_programs_the_filter():
    """Probe bit-bangs the SROM through CSR9 (port exits) for the MAC; the setup frame filters MAC and broadcast."""
    world = World(scenario())
    vm, guest = world.vms["vm1"], world.guests["vm1"]
    driver, device = guest.netdevs[0], vm.nics[0].device
    assert isinstance(driver, TulipDriver) and driver.mac == bytes.fromhex("525400000001")
    assert device.filter == {driver.mac, BCAST}
    assert vm.acct["pio_emulate"] > 63 * 16 * 2
    assert device.csr[6] & RXTX == RXTX and device.errors == {}


def test_transmit_is_one_csr1_write():
    """The driver hands a frame over with a descriptor and exactly one register write (CSR1)."""
    world = World(scenario())
    world.settle()
    vm, driver = world.vms["vm1"], world.guests["vm1"].netdevs[0]
    sent = []
    vm.nics[0].port.send = lambda cpu, f: sent.append(f)
    exits = vm.acct["vm_exit"]
    data = frame(bytes.fromhex("525400000002"))
    assert driver.transmit(data)
    assert vm.acct["vm_exit"] == exits + 1 and sent == [data]


@pytest.mark.parametrize("packet_size", [64, 1500])
def test_two_guests_exchange_every_frame_intact_and_in_order(packet_size):
    """Two VMs with Tulips: pings answered, every UDP frame intact and in order, paid in exits and interrupts."""
    flows = iovirt.run(scenario(packet_size)).to_dict()["flows"]
    ping, stream = flows
    assert ping["sent"] == ping["delivered"] == 5
    assert stream["sent"] == stream["delivered"] > 50
    assert stream["corrupted"] == stream["out_of_order"] == stream["dropped"] == 0
    assert stream["events_per_packet"]["pio_emulate"] >= 1 and stream["events_per_packet"]["interrupt"] > 0


def test_a_full_receive_ring_is_not_read_twice():
    """A virtio-net sender outruns the tulip: its ring fills and frames are
    missed (CSR8), and the driver reads no further than the descriptors it
    gave back (tulip_rx's rx_work_limit): no frame reaches the socket
    twice, every one is delivered, dropped or still on its way."""
    doc = {"name": "t", "hosts": [{"name": "h0", "cores": 4}],
           "vms": [{"name": "vm1", "host": "h0", "nics": [{"model": "paravirt", "device": "virtio-net",
                                                            "backend": "qemu", "mac": "52:54:00:00:00:01",
                                                            "ip": "10.0.0.1/24"}]},
                   {"name": "vm2", "host": "h0", "nics": [{"model": "emulated", "device": "tulip",
                                                            "mac": "52:54:00:00:00:02", "ip": "10.0.0.2/24"}]}],
           "workloads": [{"type": "udp_stream", "src": "vm1", "dst": "vm2", "packet_size": 44, "duration_ms": 1}]}
    result = iovirt.run(iovirt.Scenario.from_dict(doc)).to_dict()
    flow = result["flows"][0]
    assert result["drops"].get("h0/vm2/tulip/rx_missed", 0) > 0
    assert flow["out_of_order"] == 0 and flow["in_flight"] >= 0
    assert flow["sent"] == flow["delivered"] + flow["dropped"] + flow["in_flight"]
