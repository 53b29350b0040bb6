"""e1000 (82540EM) device model: registers, EEPROM, interrupts and ITR, TX and
RX rings in guest memory, hostile guests, and the costs the mechanism charges.
Everything is real iovirt code; only the backend port is a recorder."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iovirt.devices.e1000 import E1000
from iovirt.guest.kernel import GuestKernel
from iovirt.hypervisor.emulation import EmulatedNic
from iovirt.hypervisor.host import Host
from iovirt.hypervisor.vm import VM
from iovirt.mem.dma import Dma
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import e1000 as s
from recording import Port, RigState, deliver

MAC = bytes.fromhex("525400123456")
OTHER = bytes.fromhex("525400abcdef")
BCAST = b"\xff" * 6
SRC = bytes.fromhex("020000000001")
MEM = 1 << 20
PROFILE = load_profile("default")
TX_RING, RX_RING = 0x1000, 0x2000      # descriptor rings
TX_BUFS, RX_BUFS = 0x10000, 0x40000    # buffers, 0x1000 apart (TX) / 2048 apart (RX)
RX_ON = s.RCTL_EN | s.RCTL_BAM | s.RCTL_SECRC


@dataclass
class Rig(RigState):
    sim: Sim
    ledger: Ledger
    mem: GuestMemory
    cpu: Resource
    dev: E1000
    port: Port
    irqs: list[int] = field(default_factory=list)

    def rd(self, reg: str, size: int = 4, at: int = 0) -> int:
        return self.dev.mmio_read(self.cpu, s.REGS[reg].offset + at, size)

    def wr(self, reg: str, value: int, size: int = 4, at: int = 0) -> None:
        self.dev.mmio_write(self.cpu, s.REGS[reg].offset + at, size, value)


    # ---- TX ring --------------------------------------------------------
    def tx_ring(self, n: int = 8, head: int = 0, tctl: int = s.TCTL_EN | s.TCTL_PSP, base: int = TX_RING) -> None:
        self.wr("TDBAL", base & 0xFFFFFFFF)
        self.wr("TDBAH", base >> 32)
        self.wr("TDLEN", n * s.DESC_SIZE)
        self.wr("TDH", head)
        self.wr("TDT", head)
        self.wr("TCTL", tctl)

    def tx_desc(self, i: int, data: bytes, cmd: int = s.TXD_CMD_EOP | s.TXD_CMD_RS, buf: int | None = None) -> int:
        buf = TX_BUFS + i * 0x1000 if buf is None else buf
        if buf + len(data) <= MEM:
            self.mem.write(buf, data)
        s.TX_DESC.pack_into(self.mem.buf, TX_RING + i * s.DESC_SIZE, buf, len(data), 0, cmd, 0, 0, 0)
        return buf

    def tx_status(self, i: int) -> int:
        return s.TX_DESC.unpack_from(self.mem.buf, TX_RING + i * s.DESC_SIZE)[4]

    # ---- RX ring --------------------------------------------------------
    def rx_ring(self, n: int = 8, free: int | None = None, rctl: int = RX_ON, base: int = RX_RING,
                bufs: list[int] | None = None) -> None:
        bufs = [RX_BUFS + i * 2048 for i in range(n)] if bufs is None else bufs
        for i, buf in enumerate(bufs):
            if base + i * s.DESC_SIZE + s.DESC_SIZE <= MEM:
                s.RX_DESC.pack_into(self.mem.buf, base + i * s.DESC_SIZE, buf, 0, 0, 0, 0, 0)
        self.wr("RDBAL", base & 0xFFFFFFFF)
        self.wr("RDBAH", base >> 32)
        self.wr("RDLEN", n * s.DESC_SIZE)
        self.wr("RDH", 0)
        self.wr("RCTL", rctl)
        self.wr("RDT", n - 1 if free is None else free)

    def rx_desc(self, i: int) -> tuple:
        """(buffer_addr, length, csum, status, errors, special)."""
        return s.RX_DESC.unpack_from(self.mem.buf, RX_RING + i * s.DESC_SIZE)

    def deliver(self, frame: bytes) -> bool:
        return deliver(self.dev, self.cpu, frame)


def rig(mem_size: int = MEM) -> Rig:
    sim = Sim()
    ledger = Ledger(PROFILE)
    mem = GuestMemory(mem_size)
    cpu = Resource("cpu", "vcpu", ledger)
    irqs: list[int] = []
    dev = E1000(sim, MAC, Dma(mem, "copy"), irq=lambda c, level: irqs.append(level),
                timer_cpu=Resource("timer", "host_thread", ledger))
    port = Port()
    dev.port = port
    return Rig(sim, ledger, mem, cpu, dev, port, irqs)


def frame(dst: bytes = MAC, size: int = 64, seed: int = 0) -> bytes:
    body = bytes((seed + i * 7) & 0xFF for i in range(size - 14))
    return dst + SRC + b"\x08\x00" + body


def eerd(r: Rig, addr: int) -> int:
    r.wr("EERD", addr << 8 | 1)
    return r.rd("EERD")


# ---- reset values ------------------------------------------------------------
@pytest.mark.parametrize("reg,value", [
    ("CTRL", 0x00140240),      # SLU | SPD_1000 | SWDPIN0 | SWDPIN2 (QEMU mac_reg_init)
    ("EECD", 0x00000110),      # PRES | FWE = 01b, Flash writes disabled (SDM 13.4.3)
    ("PBA", 0x00100030),       # 48 KB RX / 16 KB TX
    ("RAL0", 0x12005452),      # 52:54:00:12
    ("RAH0", 0x80005634),      # 34:56 | AV
    ("RAL1", 0), ("RAH1", 0), ("ICR", 0), ("IMS", 0), ("RCTL", 0), ("TCTL", 0), ("ITR", 0),
])
def test_reset_value(reg, value):
    """Registers come out of reset with the SDM/QEMU values, the MAC in RAL0/RAH0 with AV."""
    assert rig().rd(reg) == value


def test_status_reset_reports_link_up_1000_full_duplex():
    """STATUS at reset: FD, LU, SPEED=1000 (bits 7:6 = 10b), GIO master enabled."""
    status = rig().rd("STATUS")
    assert status & 0b11 == 0b11
    assert (status >> 6) & 3 == 0b10
    assert status & 1 << 19


def test_status_is_read_only():
    """A write to STATUS changes nothing."""
    r = rig()
    before = r.rd("STATUS")
    r.wr("STATUS", 0)
    r.wr("STATUS", 0xFFFFFFFF)
    assert r.rd("STATUS") == before


def test_ctrl_rst_restores_defaults_and_self_clears():
    """CTRL.RST brings every register back to its reset value; RST reads back 0."""
    r = rig()
    defaults = {reg.name: r.rd(reg.name) for reg in s.REGS if reg.access in ("rw", "ro")}
    for name, value in (("IMS", 0xFF), ("RCTL", RX_ON), ("TCTL", s.TCTL_EN), ("RAL0", 1), ("RAH0", 2),
                        ("TDLEN", 0x1000), ("RDT", 5), ("ITR", 100), ("MTA3", 0xDEAD)):
        r.wr(name, value)
    r.wr("CTRL", r.rd("CTRL") | s.CTRL_RST)
    assert {name: r.rd(name) for name in defaults} == defaults
    assert not r.rd("CTRL") & s.CTRL_RST


def test_ctrl_rst_lowers_asserted_interrupt():
    """A reset while INTx is asserted drops the line (else the guest sees an endless interrupt)."""
    r = rig()
    r.wr("IMS", s.ICR_TXDW)
    r.wr("ICS", s.ICR_TXDW)
    assert r.irqs == [1]
    r.wr("CTRL", s.CTRL_RST)
    assert r.irqs == [1, 0]
    r.wr("IMS", s.ICR_TXDW)                          # ICR was cleared by the reset too
    assert r.irqs == [1, 0]


# ---- EEPROM --------------------------------------------------------------------
def test_eeprom_through_eerd():
    """EERD: DONE set, data in 31:16; words 0-2 are the MAC; words 0..0x3F sum to 0xBABA."""
    r = rig()
    values = [eerd(r, a) for a in range(64)]
    assert all(v & 1 << 4 for v in values)
    assert all((v >> 8) & 0xFF == a for a, v in enumerate(values))
    words = [v >> 16 for v in values]
    assert b"".join(w.to_bytes(2, "little") for w in words[:3]) == MAC
    assert sum(words) & 0xFFFF == 0xBABA


def test_eerd_without_start_is_plain_storage():
    """Writing EERD without START does not read the EEPROM (DONE stays clear)."""
    r = rig()
    r.wr("EERD", 0x0100)
    assert r.rd("EERD") == 0x0100


def test_io_bar_reaches_registers_through_ioaddr_iodata():
    """I/O BAR: IOADDR selects a register, IODATA reads and writes it."""
    r = rig()
    r.dev.io_write(r.cpu, s.IOADDR, 4, s.REGS["EERD"].offset)
    assert r.dev.io_read(r.cpu, s.IOADDR, 4) == s.REGS["EERD"].offset
    r.dev.io_write(r.cpu, s.IODATA, 4, 1 << 8 | 1)
    assert r.dev.io_read(r.cpu, s.IODATA, 4) >> 16 == MAC[2] | MAC[3] << 8
    r.dev.io_write(r.cpu, s.IOADDR, 4, s.REGS["RAH0"].offset)
    assert r.dev.io_read(r.cpu, s.IODATA, 4) == 0x80005634


# ---- interrupts ----------------------------------------------------------------
def test_icr_read_clears_and_ics_sets():
    """ICS sets causes; ICR returns them once (read-to-clear); masked causes don't assert."""
    r = rig()
    r.wr("ICS", s.ICR_TXDW | s.ICR_LSC)
    assert r.irqs == []
    assert r.rd("ICR") == s.ICR_TXDW | s.ICR_LSC
    assert r.rd("ICR") == 0
    assert r.rd("ICS") == 0 and r.rd("IMC") == 0        # write-only registers read 0


def test_ims_imc_mask_and_level_follows():
    """INTx follows ICR & IMS: IMS unmasks a pending cause, IMC masks it, ICR read drops it."""
    r = rig()
    r.wr("ICS", s.ICR_RXT0)
    assert r.level == 0
    r.wr("IMS", s.ICR_RXT0 | s.ICR_TXDW)
    assert r.irqs == [1] and r.rd("IMS") == s.ICR_RXT0 | s.ICR_TXDW
    r.wr("IMC", s.ICR_RXT0)
    assert r.irqs == [1, 0] and r.rd("IMS") == s.ICR_TXDW
    r.wr("IMS", s.ICR_RXT0)
    assert r.irqs == [1, 0, 1]
    assert r.rd("ICR") == s.ICR_RXT0
    assert r.irqs == [1, 0, 1, 0]


def test_icr_write_one_clears():
    """Writing 1s to ICR clears those causes only; the line drops when none is left unmasked."""
    r = rig()
    r.wr("IMS", s.ICR_TXDW | s.ICR_RXT0)
    r.wr("ICS", s.ICR_TXDW | s.ICR_RXT0)
    r.wr("ICR", s.ICR_TXDW)
    assert r.level == 1
    r.wr("ICR", s.ICR_RXT0)
    assert r.irqs == [1, 0]
    assert r.rd("ICR") == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ICS", "IMS", "IMC", "ICR_W", "ICR_R"]),
                          st.integers(0, 0xFFFFFFFF)), max_size=30))
def test_interrupt_line_is_icr_and_ims(ops):
    """For any sequence of ICS/IMS/IMC/ICR accesses (no ITR) the line equals bool(ICR & IMS)."""
    r = rig()
    icr = ims = 0
    for op, v in ops:
        if op == "ICS":
            r.wr("ICS", v)
            icr |= v & s.IMS_ALL
        elif op == "IMS":
            r.wr("IMS", v)
            ims |= v & s.IMS_ALL
        elif op == "IMC":
            r.wr("IMC", v)
            ims &= ~v
        elif op == "ICR_W":
            r.wr("ICR", v)
            icr &= ~v
        else:
            assert r.rd("ICR") == icr
            icr = 0
        assert r.level == bool(icr & ims)
        assert all(a != b for a, b in zip(r.irqs, r.irqs[1:]))   # only edges are signalled


def test_itr_holds_second_interrupt_until_interval_ends():
    """With ITR, a second cause within ITR*256 ns is held until the mitigation timer fires."""
    r = rig()
    itr = 40
    r.wr("ITR", itr)
    r.wr("IMS", s.ICR_TXDW)
    r.wr("ICS", s.ICR_TXDW)
    assert r.irqs == [1]
    r.rd("ICR")
    r.cpu.sync(itr * 256 // 2)                       # half the interval later
    r.wr("ICS", s.ICR_TXDW)
    assert r.irqs == [1, 0]
    r.sim.run()
    assert r.irqs == [1, 0, 1]
    assert r.sim.now == itr * 256
    assert r.rd("ICR") == s.ICR_TXDW


def test_no_itr_interrupts_immediately():
    """Without ITR every cause asserts at once and no timer is armed."""
    r = rig()
    r.wr("IMS", s.ICR_TXDW)
    for _ in range(3):
        r.wr("ICS", s.ICR_TXDW)
        r.rd("ICR")
    assert r.irqs == [1, 0] * 3
    assert r.sim.pending == 0


# ---- register access widths -----------------------------------------------------
def test_sub_dword_reads_and_writes():
    """1- and 2-byte accesses inside a register read and write exactly those bytes."""
    r = rig()
    r.wr("TIPG", 0x11223344)
    assert [r.rd("TIPG", 1, i) for i in range(4)] == [0x44, 0x33, 0x22, 0x11]
    assert [r.rd("TIPG", 2, i) for i in (0, 2)] == [0x3344, 0x1122]
    r.wr("TIPG", 0xAA, 1, 1)
    assert r.rd("TIPG") == 0x1122AA44
    r.wr("TIPG", 0xBEEF, 2, 2)
    assert r.rd("TIPG") == 0xBEEFAA44


def test_byte_write_to_icr_clears_only_that_byte():
    """A 1-byte write-1-to-clear on ICR leaves the causes in the other bytes alone."""
    r = rig()
    r.wr("ICS", 0x281)                               # TXDW | RXT0 | bit 9 (MDAC)
    r.wr("ICR", s.ICR_TXDW, 1, 0)
    assert r.rd("ICR") == 0x280


@pytest.mark.parametrize("offset", [0x0004, 0x0050, 0x0104, 0x3000, 0x5600, 0x1FFFC])
def test_unknown_offsets_read_zero_and_ignore_writes(offset):
    """An offset no register decodes reads 0 and a write to it changes nothing."""
    r = rig()
    regs = [reg for reg in s.REGS if reg.access in ("rw", "ro")]
    before = [r.rd(reg.name) for reg in regs]
    r.dev.mmio_write(r.cpu, offset, 4, 0xFFFFFFFF)
    assert r.dev.mmio_read(r.cpu, offset, 4) == 0
    assert [r.rd(reg.name) for reg in regs] == before


# ---- transmit -------------------------------------------------------------------
def test_tx_frames_reach_port_with_writeback_and_wrap():
    """EOP|RS descriptors: frames leave byte-exact, DD written back, TDH wraps to TDT, TXDW raised."""
    r = rig()
    r.tx_ring(n=8, head=5)
    r.wr("IMS", s.ICR_TXDW)
    slots = [5, 6, 7, 0, 1]
    sent = [frame(OTHER, 60 + 100 * k, seed=k) for k in range(len(slots))]
    for i, data in zip(slots, sent):
        r.tx_desc(i, data)
    r.wr("TDT", 2)
    assert r.port.frames == sent
    assert [r.mem.read(TX_BUFS + i * 0x1000, len(d)) for i, d in zip(slots, sent)] == r.port.frames
    assert all(r.tx_status(i) & s.TXD_STAT_DD for i in slots)
    assert r.tx_status(2) == 0
    assert r.rd("TDH") == 2
    assert r.irqs == [1]
    assert r.rd("ICR") & (s.ICR_TXDW | s.ICR_TXQE) == s.ICR_TXDW | s.ICR_TXQE


def test_tx_multi_descriptor_frame_is_concatenated():
    """A frame spread over descriptors (EOP on the last only) leaves as one frame."""
    r = rig()
    r.tx_ring()
    whole = frame(OTHER, 1514)
    parts = [whole[:14], whole[14:700], whole[700:]]
    for i, part in enumerate(parts):
        r.tx_desc(i, part, s.TXD_CMD_RS | (s.TXD_CMD_EOP if i == 2 else 0))
    r.wr("TDT", 3)
    assert r.port.frames == [whole]
    assert r.rd("TDH") == 3


def test_tx_without_rs_has_no_writeback():
    """Without RS the descriptor is not written back and TXDW is not raised (TXQE is)."""
    r = rig()
    r.tx_ring()
    r.tx_desc(0, frame(OTHER), s.TXD_CMD_EOP)
    r.wr("TDT", 1)
    assert len(r.port.frames) == 1
    assert r.tx_status(0) == 0
    assert r.rd("ICR") == s.ICR_TXQE


@pytest.mark.parametrize("tctl,out", [(s.TCTL_EN | s.TCTL_PSP, 60), (s.TCTL_EN, 20)])
def test_tx_short_frame_padding(tctl, out):
    """TCTL.PSP pads a short frame with zeros to 60 bytes; without PSP it leaves as is."""
    r = rig()
    r.tx_ring(tctl=tctl)
    data = frame(OTHER, 20)
    r.tx_desc(0, data)
    r.wr("TDT", 1)
    assert r.port.frames == [data + bytes(out - 20)]


def test_tx_disabled_sends_nothing():
    """With TCTL.EN clear a TDT write moves nothing."""
    r = rig()
    r.tx_ring(tctl=0)
    r.tx_desc(0, frame(OTHER))
    r.wr("TDT", 1)
    assert r.port.frames == [] and r.rd("TDH") == 0


def test_tx_statistics_count_and_clear_on_read():
    """GPTC/TPT count frames, GOTCL octets with FCS (after padding); reads clear them."""
    r = rig()
    r.tx_ring()
    sizes = [20, 100, 1514]
    for i, size in enumerate(sizes):
        r.tx_desc(i, frame(OTHER, size))
    r.wr("TDT", 3)
    assert (r.rd("GPTC"), r.rd("TPT")) == (3, 3)
    assert r.rd("GOTCL") == sum(max(n, 60) + 4 for n in sizes)
    assert (r.rd("GPTC"), r.rd("TPT"), r.rd("GOTCL"), r.rd("GOTCH")) == (0, 0, 0, 0)
    r.wr("GPTC", 5)                                  # statistics are not writable
    assert r.rd("GPTC") == 0


# ---- receive --------------------------------------------------------------------
def test_rx_frame_lands_in_buffer_with_writeback():
    """RX: frame DMA'd into the buffer, length and DD|EOP written back, RDH advances, RXT0."""
    r = rig()
    r.rx_ring()
    r.wr("IMS", s.ICR_RXT0)
    data = frame(MAC, 1000)
    assert r.deliver(data)
    buf, length, _, status, errors, _ = r.rx_desc(0)
    assert r.mem.read(buf, length) == data and length == len(data)
    assert status == s.RXD_STAT_DD | s.RXD_STAT_EOP and errors == 0
    assert r.rd("RDH") == 1
    assert r.irqs == [1]
    assert r.rd("ICR") & s.ICR_RXT0
    assert (r.rd("GPRC"), r.rd("TPR"), r.rd("GORCL")) == (1, 1, len(data) + 4)   # octets count the CRC


@pytest.mark.parametrize("size", [100, 30])
def test_rx_without_secrc_appends_fcs(size):
    """RCTL.SECRC clear: a CRC-32 FCS (over the frame padded to 60) follows the data."""
    r = rig()
    r.rx_ring(rctl=s.RCTL_EN)
    data = frame(MAC, size)
    assert r.deliver(data)
    buf, length, _, status, _, _ = r.rx_desc(0)
    padded = data + bytes(max(0, 60 - size))
    assert length == len(padded) + 4
    assert r.mem.read(buf, length) == padded + zlib.crc32(padded).to_bytes(4, "little")


def test_rx_frame_spans_descriptors():
    """A frame larger than the buffer takes several descriptors, EOP on the last only."""
    r = rig()
    r.rx_ring(rctl=RX_ON | 3 << s.RCTL_BSIZE_SHIFT)      # 256-byte buffers
    data = frame(MAC, 600)
    assert r.deliver(data)
    descs = [r.rx_desc(i) for i in range(3)]
    assert [d[1] for d in descs] == [256, 256, 88]
    assert [d[3] for d in descs] == [s.RXD_STAT_DD] * 2 + [s.RXD_STAT_DD | s.RXD_STAT_EOP]
    assert b"".join(r.mem.read(d[0], d[1]) for d in descs) == data
    assert r.rd("RDH") == 3


def mta_bit(dst: bytes) -> int:
    return (dst[4] >> 4 | dst[5] << 4) & 0xFFF


MCAST = bytes.fromhex("01005e000001")


@pytest.mark.parametrize("dst,rctl,mta,accepted", [
    (MAC, 0, False, True),
    (OTHER, 0, False, False),
    (OTHER, s.RCTL_UPE, False, True),
    (BCAST, s.RCTL_BAM, False, True),
    (BCAST, 0, False, False),
    (MCAST, 0, False, False),
    (MCAST, 0, True, True),
    (MCAST, s.RCTL_MPE, False, True),
])
def test_rx_address_filter(dst, rctl, mta, accepted):
    """Unicast matches RAL/RAH, broadcast needs BAM, multicast MTA or MPE, UPE takes all."""
    r = rig()
    r.rx_ring(rctl=s.RCTL_EN | s.RCTL_SECRC | rctl)
    if mta:
        bit = mta_bit(dst)
        r.wr(f"MTA{bit >> 5}", 1 << (bit & 31))
    assert r.deliver(frame(dst, 64))
    assert r.rd("RDH") == (1 if accepted else 0)
    assert r.rx_desc(0)[3] == (s.RXD_STAT_DD | s.RXD_STAT_EOP if accepted else 0)
    assert r.rd("GPRC") == int(accepted)


def test_rx_can_receive_follows_free_descriptors():
    """can_receive is false when RDH == RDT (ring full) and true again once RDT moves."""
    r = rig()
    r.rx_ring(n=8, free=2)
    assert r.deliver(frame(MAC, 100)) and r.deliver(frame(MAC, 100))
    assert r.rd("RDH") == r.rd("RDT") == 2
    assert not r.dev.can_receive(100)
    flushes = r.port.flushes
    r.wr("RDT", 3)
    assert r.port.flushes == flushes + 1             # the backend is told to retry
    assert r.dev.can_receive(100)
    assert not r.dev.can_receive(2049)               # needs two 2048-byte buffers


def test_rx_disabled_cannot_receive():
    """With RCTL.EN clear or no ring the device takes nothing."""
    r = rig()
    r.rx_ring(rctl=0)
    assert not r.dev.can_receive(64)
    r.wr("RCTL", RX_ON)
    r.wr("RDLEN", 0)
    assert not r.dev.can_receive(64)


def test_rdtr_delays_rxt0():
    """RDTR delays RXT0 by RDTR x 1.024 us on the simulated clock."""
    r = rig()
    r.rx_ring()
    r.wr("IMS", s.ICR_RXT0)
    r.wr("RDTR", 10)
    assert r.deliver(frame(MAC))
    t0 = r.cpu.cursor
    assert r.irqs == [] and r.rd("RDH") == 1
    r.sim.run()
    assert r.sim.now == t0 + 10 * 1024
    assert r.irqs == [1]
    assert r.rd("ICR") & s.ICR_RXT0


def test_rdtr_restarts_on_each_packet():
    """SDM 3.2.7.1.1: a packet inside the RDTR window restarts the countdown."""
    r = rig()
    r.rx_ring()
    r.wr("IMS", s.ICR_RXT0)
    r.wr("RDTR", 10)
    assert r.deliver(frame(MAC))
    r.cpu.sync(r.cpu.cursor + 8000)
    assert r.deliver(frame(MAC))
    t1 = r.cpu.cursor
    r.sim.run()
    assert r.sim.now == t1 + 10 * 1024 and r.irqs == [1]


def test_radv_caps_the_restarted_rdtr():
    """SDM 3.2.7.1.2: RADV bounds the delay from the first held packet."""
    r = rig()
    r.rx_ring()
    r.wr("IMS", s.ICR_RXT0)
    r.wr("RDTR", 10)
    r.wr("RADV", 15)
    assert r.deliver(frame(MAC))
    t0 = r.cpu.cursor
    r.cpu.sync(t0 + 8000)
    assert r.deliver(frame(MAC))
    r.sim.run()
    assert r.sim.now == t0 + 15 * 1024 and r.irqs == [1]


# ---- hostile guest: TX ---------------------------------------------------------------
def test_tx_buffer_outside_memory_drops_that_frame_only():
    """A TX buffer beyond guest memory: frame dropped, counted, master abort; the ring goes on."""
    r = rig()
    r.tx_ring()
    good = [frame(OTHER, 100, seed=1), frame(OTHER, 200, seed=2)]
    r.tx_desc(0, good[0])
    r.tx_desc(1, frame(OTHER, 100), buf=MEM + 0x1000)
    r.tx_desc(2, good[1])
    assert not r.master_abort
    r.wr("TDT", 3)
    assert r.port.frames == good
    assert r.dev.errors["tx_buffer_fault"] == 1
    assert r.master_abort
    assert r.rd("TDH") == 3 and all(r.tx_status(i) & s.TXD_STAT_DD for i in range(3))


def test_tx_fault_mid_chain_drops_whole_frame():
    """A buffer fault inside a multi-descriptor frame drops the rest of it, not just one piece."""
    r = rig()
    r.tx_ring()
    r.tx_desc(0, frame(OTHER, 100)[:50], s.TXD_CMD_RS)
    r.tx_desc(1, bytes(50), s.TXD_CMD_RS, buf=MEM - 10)
    r.tx_desc(2, bytes(50))
    good = frame(OTHER, 80, seed=9)
    r.tx_desc(3, good)
    r.wr("TDT", 4)
    assert r.port.frames == [good]
    assert r.rd("TDH") == 4


def test_tx_ring_outside_memory_stops_tx():
    """TDBAL beyond guest memory: nothing sent, TDH stays, master abort, fault counted."""
    r = rig()
    r.tx_ring(base=MEM + 0x10000)
    r.wr("TDT", 3)
    assert r.port.frames == []
    assert r.rd("TDH") == 0
    assert r.dev.errors["tx_desc_fault"] == 1 and r.master_abort


@pytest.mark.parametrize("tdlen,tdh,tdt", [
    (128, 0, 100),           # TDT beyond the ring
    (128, 0xFFFF, 3),        # TDH beyond the ring
    (0, 0, 5),               # no ring at all
    (128, 9, 9),             # both beyond, equal
    (0xFFFFFFFF, 0, 0xFFFF), # TDLEN all ones (masked to 19:7)
])
def test_tx_bogus_ring_registers_terminate(tdlen, tdh, tdt):
    """Bogus TDLEN/TDH/TDT never crash or hang; at most one pass over the ring is sent."""
    r = rig()
    r.tx_ring()
    for i in range(8):
        r.tx_desc(i, frame(OTHER, 64, seed=i))
    r.wr("TDLEN", tdlen)
    r.wr("TDH", tdh)
    r.wr("TDT", tdt)
    assert len(r.port.frames) <= max(8, (tdlen & 0xFFF80) >> 4)
    r.wr("TDT", tdt)                                 # and again


@pytest.mark.parametrize("eop_at_end", [True, False])
def test_tx_oversize_chain_dropped(eop_at_end):
    """A chain of descriptors over 16384 bytes is dropped whole; the next frame still goes."""
    r = rig()
    r.tx_ring(n=16)
    for i in range(6):                               # 6 x 4000 = 24000 bytes
        last = eop_at_end and i == 5
        r.tx_desc(i, bytes([i]) * 4000, s.TXD_CMD_RS | (s.TXD_CMD_EOP if last else 0))
    r.wr("TDT", 6)
    assert r.port.frames == [] and r.dev.errors["tx_oversize"] >= 1
    if eop_at_end:
        good = frame(OTHER, 1514)
        r.tx_desc(6, good)
        r.wr("TDT", 7)
        assert r.port.frames == [good]


# ---- hostile guest: RX ---------------------------------------------------------------
def test_rx_buffer_outside_memory_dropped_and_counted():
    """An RX buffer beyond guest memory: frame dropped, MPC and fault counted, master abort."""
    r = rig()
    r.rx_ring(bufs=[MEM + 0x100] + [RX_BUFS + i * 2048 for i in range(1, 8)])
    before = bytes(r.mem.buf)
    assert r.deliver(frame(MAC, 200))
    assert bytes(r.mem.buf) == before
    assert r.rd("MPC") == 1 and r.rd("GPRC") == 0
    assert r.dev.errors["rx_fault"] == 1 and r.master_abort


def test_rx_ring_outside_memory_no_crash():
    """RDBAL beyond guest memory: frames are dropped, nothing crashes, memory untouched."""
    r = rig()
    r.rx_ring(base=MEM + 0x8000)
    before = bytes(r.mem.buf)
    for _ in range(3):
        r.deliver(frame(MAC))
    assert bytes(r.mem.buf) == before
    assert r.dev.errors["rx_fault"] == 3 and r.master_abort


# ---- hypothesis: hostile rings ---------------------------------------------------------
# Ring registers are drawn either as a coherent ring (aligned, in memory, head and tail
# inside) or field by field from plausible and arbitrary values; descriptors likewise.
# Both the working path and every fault path get exercised.
u32, u64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)


def ring_regs(lo: int, hi: int) -> st.SearchStrategy[tuple[int, int, int, int, int]]:
    """(base low, base high, length, head, tail) for a ring meant to lie in [lo, hi)."""
    coherent = st.integers(1, 8).flatmap(lambda k: st.tuples(
        st.integers(lo // 16, (hi - k * 128) // 16).map(lambda a: a * 16), st.just(0), st.just(k * 128),
        st.integers(0, k * 8 - 1), st.integers(0, k * 8 - 1)))
    index = st.one_of(st.integers(0, 130), u32)
    mixed = st.tuples(st.one_of(st.integers(lo, hi + 64), u32), st.one_of(st.just(0), u32),
                      st.one_of(st.integers(0, 16).map(lambda k: k * 128), u32), index, index)
    return st.one_of(coherent, mixed)


SMALL = 64 * 1024
tx_sane = st.tuples(st.integers(0, SMALL - 2048), st.integers(0, 1600), st.just(0),
                    st.sampled_from([s.TXD_CMD_EOP | s.TXD_CMD_RS, s.TXD_CMD_RS, s.TXD_CMD_EOP]),
                    st.just(0), st.just(0), st.just(0))
tx_wild = st.tuples(st.one_of(st.integers(SMALL - 64, SMALL + 64), u64), st.integers(0, 0xFFFF),
                    st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
                    st.integers(0, 0xFFFF))
tx_descs = st.lists(st.one_of(tx_sane, tx_sane, tx_wild), max_size=64)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regs=ring_regs(0, SMALL), tctl=u32, descs=tx_descs, junk=st.binary(max_size=256))
def test_random_tx_ring_touches_only_status_bytes(regs, tctl, descs, junk):
    """Random TX ring contents and registers: a TDT write never raises, ends, and writes
    nothing in guest memory but descriptor status bytes inside the ring."""
    base, bah, tdlen, tdh, tdt = regs
    r = rig(SMALL)
    ring = bah << 32 | base
    count = (tdlen & 0xFFF80) >> 4
    r.mem.buf[SMALL - len(junk):] = junk             # arbitrary bytes for buffers to point at
    for i, d in enumerate(descs[:count]):            # from the head slot on, where the device reads
        at = ring + 16 * ((tdh + i) % count)
        if at + 16 <= SMALL:
            s.TX_DESC.pack_into(r.mem.buf, at, *d)
    r.wr("TDBAL", base)
    r.wr("TDBAH", bah)
    r.wr("TDLEN", tdlen)
    r.wr("TDH", tdh)
    r.wr("TCTL", tctl | s.TCTL_EN)
    before = bytearray(r.mem.buf)
    r.wr("TDT", tdt)
    r.wr("TDT", tdt)
    after = bytearray(r.mem.buf)
    for i in range(count):                           # the only bytes the device may write
        at = ring + 16 * i + 12
        if at >= SMALL:
            break
        before[at] = after[at]
    assert before == after
    assert len(r.port.frames) <= 2 * count
    assert all(len(f) <= s.MAX_FRAME for f in r.port.frames)


RX_MEM = 256 * 1024
RX_BUF_TOP = 112 * 1024                              # buffers below, the ring at 128 KiB and up
rx_buf = st.one_of(st.integers(1, RX_BUF_TOP), st.integers(1, RX_BUF_TOP), st.just(0),
                   st.integers(RX_MEM, 2**64 - 1))
rx_rctl = st.one_of(st.integers(0, 3).map(lambda b: RX_ON | b << s.RCTL_BSIZE_SHIFT), u32.map(lambda v: v | s.RCTL_EN),
                    u32)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regs=ring_regs(128 * 1024, RX_MEM), rctl=rx_rctl,
       descs=st.lists(st.tuples(rx_buf, u64), max_size=64),
       frames=st.lists(st.tuples(st.sampled_from([MAC, MAC, BCAST, OTHER, MCAST]),
                                 st.one_of(st.binary(min_size=8, max_size=3000), st.binary(max_size=8))),
                       max_size=6))
def test_random_rx_ring_writes_only_ring_and_named_buffers(regs, rctl, descs, frames):
    """Random RX descriptors, registers and frames: never raises, and writes only inside the
    ring and the buffers its descriptors name (no more than the length it reports)."""
    base, bah, rdlen, rdh, rdt = regs
    r = rig(RX_MEM)
    ring = bah << 32 | base
    assume(ring >= 128 * 1024)                      # buffers (below 112 KiB + 16 KiB) never overlap it
    count = (rdlen & 0xFFF80) >> 4
    for i, (buf, rest) in enumerate(descs[:count]):  # from the head slot on, where the device writes
        at = ring + 16 * ((rdh + i) % count)
        if at + 16 <= RX_MEM:
            r.mem.buf[at : at + 16] = buf.to_bytes(8, "little") + rest.to_bytes(8, "little")
    for name, value in (("RDBAL", base), ("RDBAH", bah), ("RDLEN", rdlen), ("RDH", rdh), ("RCTL", rctl),
                        ("RDT", rdt)):
        r.wr(name, value)
    before = bytearray(r.mem.buf)
    for dst, payload in frames:
        r.deliver(dst + payload)
    after = bytearray(r.mem.buf)
    # Ring and buffers are disjoint and RDT never moves, so each slot is used at most once: a
    # slot written back may have had `length` bytes stored, any other at most one buffer's worth.
    bufsize = s.rx_buffer_size(r.rd("RCTL"))
    allowed = [(ring, ring + r.rd("RDLEN"))]
    for i in range(r.rd("RDLEN") >> 4):
        at = ring + 16 * i
        if at + 16 > RX_MEM:
            break
        buf = int.from_bytes(before[at : at + 8], "little")
        if after[at + 8 : at + 16] != before[at + 8 : at + 16]:
            length, _, status, _, _ = s.RX_WRITEBACK.unpack_from(after, at + 8)
            assert status & s.RXD_STAT_DD and length <= bufsize
            allowed.append((buf, buf + length) if buf else (0, 0))
        elif buf:
            allowed.append((buf, buf + bufsize))
    for lo, hi in allowed:
        lo, hi = min(lo, RX_MEM), min(hi, RX_MEM)
        before[lo:hi] = after[lo:hi]
    assert before == after


@pytest.mark.parametrize("bsex,bsize,size", [
    (0, 0, 2048), (0, 1, 1024), (0, 2, 512), (0, 3, 256), (1, 1, 16384), (1, 2, 8192), (1, 3, 4096),
])
def test_rx_buffer_size_table(bsex, bsize, size):
    """RCTL.BSIZE/BSEX decode per SDM table 13-67."""
    assert s.rx_buffer_size(bsex << 25 | bsize << 16) == size


# ---- costs follow the mechanism -------------------------------------------------------
def tx_cost(size: int) -> tuple[dict, float]:
    r = rig()
    r.tx_ring()
    r.tx_desc(0, frame(OTHER, size))
    before, busy = dict(r.ledger.accounts["cpu"]), r.cpu.busy_ns
    r.wr("TDT", 1)
    after = r.ledger.accounts["cpu"]
    return {k: after[k] - before.get(k, 0) for k in after}, r.cpu.busy_ns - busy


def test_tx_charges_copy_per_dma_on_executing_cpu():
    """One TX frame: descriptor fetch, buffer read and status write-back, each a copy on the cpu."""
    delta, _ = tx_cost(64)
    assert delta == {"copy": 3}


def test_tx_cost_grows_with_frame_size():
    """A 1500-byte frame costs more busy time than a 64-byte one, by the per-byte copy price."""
    _, small = tx_cost(64)
    _, big = tx_cost(1500)
    assert big > small
    assert big - small == pytest.approx(PROFILE.per_byte_ns["copy"] * (1500 - 64))


# ---- full stack -------------------------------------------------------------------------
def test_guest_boot_probes_e1000_through_traps():
    """Guest boot: PCI enumeration finds the e1000, the driver reads the MAC from the EEPROM,
    and all of it cost exits on the vCPU."""
    sim = Sim()
    ledger = Ledger(PROFILE)
    host = Host("host0", 2, sim, ledger)
    vm = VM("vm1", host, 64, 1)
    nic = EmulatedNic(vm, "e1000", MAC)
    guest = GuestKernel("vm1", vm.vcpus[0], vm.mem, sim)
    guest.boot()
    assert [d.mac for d in guest.netdevs] == [MAC]
    acct = ledger.accounts["vm1"]
    assert acct["vm_exit"] > 0 and acct["pio_emulate"] > 0 and acct["mmio_emulate"] > 0
    assert vm.vcpus[0].busy_ns > 0
    assert nic.device.mmio_read(vm.vcpus[0], s.REGS["RCTL"].offset, 4) & s.RCTL_EN
    assert nic.device.can_receive(1514)
