"""PCnet-PCI II (Am79C970A) device model: the address PROM, RAP/RDP/BDP
indirect access, the SWSTYLE 2 initialization block, CSR0 interrupts, TX and
RX descriptor rings in guest memory, hostile guests; then the pcnet32-style
guest driver end to end and what the RAP+RDP pairs cost against the e1000.
Everything is real iovirt code; only the backend port is a recorder."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.devices.pcnet import PCNet
from iovirt.experiments.world import World
from iovirt.mem.dma import Dma
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import pcnet as s
from iovirt.spec.pci import PCI_CLASS_REVISION, PCI_DEVICE_ID, PCI_VENDOR_ID
from recording import Port, RigState, deliver

EXAMPLE = Path(__file__).parent.parent / "examples" / "emulated-pcnet.yaml"
MAC = bytes.fromhex("525400123456")
OTHER = bytes.fromhex("525400abcdef")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")
SRC = bytes.fromhex("020000000001")
MEM = 1 << 20
PROFILE = load_profile("default")
IB = 0x100                                   # initialization block
TX_RING, RX_RING = 0x1000, 0x2000            # descriptor rings
TX_BUFS, RX_BUFS = 0x10000, 0x40000          # buffers, 0x1000 apart (TX) / 0x800 apart (RX)
RUN = s.CSR0_STRT | s.CSR0_IENA
FRAME_BITS = s.OWN | s.ERR | s.STP | s.ENP


@dataclass
class Rig(RigState):
    mem: GuestMemory
    ledger: Ledger
    cpu: Resource
    dev: PCNet
    port: Port
    irqs: list[int] = field(default_factory=list)

    # ---- the I/O resources, as a driver reaches them ---------------------
    def read(self, offset: int, size: int = 2) -> int:
        return self.dev.io_read(self.cpu, offset, size)

    def write(self, offset: int, value: int, size: int = 2) -> None:
        self.dev.io_write(self.cpu, offset, size, value)

    def csr(self, index: int) -> int:
        self.write(s.RAP, index)
        return self.read(s.RDP)

    def set_csr(self, index: int, value: int) -> None:
        self.write(s.RAP, index)
        self.write(s.RDP, value)

    def bcr(self, index: int) -> int:
        self.write(s.RAP, index)
        return self.read(s.BDP)

    def set_bcr(self, index: int, value: int) -> None:
        self.write(s.RAP, index)
        self.write(s.BDP, value)


    # ---- bring-up ----------------------------------------------------------
    def init(self, rx_log2: int = 3, tx_log2: int = 3, mode: int = 0, ladrf: int = 0, rdra: int = RX_RING,
             tdra: int = TX_RING, ib: int = IB, start: bool = True, csr4: int = s.CSR4_PCNET32) -> None:
        """pcnet32's order: SWSTYLE 2, init block, CSR1/CSR2, CSR4, INIT; then STRT|IENA and ack IDON."""
        if ib + s.INIT_BLOCK.size <= self.mem.size:
            s.INIT_BLOCK.pack_into(self.mem.buf, ib, mode, rx_log2 << s.LEN_SHIFT, tx_log2 << s.LEN_SHIFT,
                                   int.from_bytes(MAC[:4], "little"), int.from_bytes(MAC[4:], "little"),
                                   ladrf, rdra, tdra)
        self.set_bcr(s.BCR_SWS, s.SWSTYLE_PCNET_PCI)
        self.set_csr(s.CSR_IADR_LOW, ib & 0xFFFF)
        self.set_csr(s.CSR_IADR_HIGH, ib >> 16 & 0xFFFF)
        self.set_csr(4, csr4)
        self.set_csr(0, s.CSR0_INIT)
        if start:
            self.set_csr(0, RUN | s.CSR0_IDON)

    # ---- TX ring -------------------------------------------------------------
    def tx_desc(self, i: int, data: bytes, status: int = s.OWN | s.STP | s.ENP, buf: int | None = None,
                bcnt: int | None = None) -> int:
        buf = TX_BUFS + i * 0x1000 if buf is None else buf
        if buf + len(data) <= self.mem.size:
            self.mem.write(buf, data)
        s.TX_DESC.pack_into(self.mem.buf, TX_RING + i * s.DESC_SIZE, buf,
                            s.bcnt(len(data)) if bcnt is None else bcnt, status, 0, 0)
        return buf

    def tmd(self, i: int) -> tuple:
        """(tbadr, bcnt, status, misc, user)."""
        return s.TX_DESC.unpack_from(self.mem.buf, TX_RING + i * s.DESC_SIZE)

    # ---- RX ring -------------------------------------------------------------
    def rx_ring(self, n: int = 8, size: int = 1544, owned: int | None = None, bufs: list[int] | None = None) -> None:
        bufs = [RX_BUFS + i * 0x800 for i in range(n)] if bufs is None else bufs
        for i, buf in enumerate(bufs):
            own = s.OWN if owned is None or i < owned else 0
            s.RX_DESC.pack_into(self.mem.buf, RX_RING + i * s.DESC_SIZE, buf, s.bcnt(size), own, 0, 0)

    def rmd(self, i: int) -> tuple:
        """(rbadr, bcnt, status, mcnt, user)."""
        return s.RX_DESC.unpack_from(self.mem.buf, RX_RING + i * s.DESC_SIZE)

    def deliver(self, frame: bytes) -> bool:
        return deliver(self.dev, self.cpu, frame)


def rig(mem_size: int = MEM) -> Rig:
    ledger = Ledger(PROFILE)
    mem = GuestMemory(mem_size)
    irqs: list[int] = []
    dev = PCNet(Sim(), MAC, Dma(mem, "copy"), irq=lambda c, level: irqs.append(level),
                timer_cpu=Resource("timer", "host_thread", ledger))
    port = Port()
    dev.port = port
    return Rig(mem, ledger, Resource("cpu", "vcpu", ledger), dev, port, irqs)


def frame(dst: bytes = MAC, size: int = 64, seed: int = 0) -> bytes:
    body = bytes((seed + i * 7) & 0xFF for i in range(size - 14))
    return dst + SRC + b"\x08\x00" + body


def with_fcs(data: bytes) -> bytes:
    padded = data + bytes(max(0, 60 - len(data)))
    return padded + zlib.crc32(padded).to_bytes(4, "little")


# ---- PCI identity and the address PROM ---------------------------------------------
def test_pci_identity_and_bars():
    """Vendor 1022h, device 2000h, class Ethernet; BAR0 32 bytes of I/O, BAR1 the same 32 bytes of memory."""
    dev = rig().dev
    assert dev.pci.config_read(PCI_VENDOR_ID, 2) == 0x1022
    assert dev.pci.config_read(PCI_DEVICE_ID, 2) == 0x2000
    assert dev.pci.config_read(PCI_CLASS_REVISION, 4) >> 8 == 0x020000
    assert {i: (b.kind, b.size) for i, b in dev.pci.bars.items()} == {0: ("io", 32), 1: ("mem32", 32)}
    assert dev.bar_handlers(0) == dev.bar_handlers(1)


def test_aprom_holds_mac_checksum_and_signature():
    """APROM: MAC in bytes 0-5, 11h at 9, "WW" at 14, word 12 the sum of the rest; byte and word reads agree."""
    r = rig()
    prom = bytes(r.read(i, 1) for i in range(16))
    assert prom[:6] == MAC and prom[9] == 0x11 and prom[14:] == b"WW"
    assert int.from_bytes(prom[12:14], "little") == (sum(prom[:12]) + sum(prom[14:])) & 0xFFFF
    assert b"".join(r.read(i, 2).to_bytes(2, "little") for i in range(0, 16, 2)) == prom
    r.write(0, 0xFFFF)
    r.write(3, 0xFF, 1)
    assert bytes(r.read(i, 1) for i in range(16)) == prom             # read-only


# ---- RAP / RDP / BDP -------------------------------------------------------------------
def test_rap_selects_csr_for_rdp_and_bcr_for_bdp():
    """RAP reads back what was written (7 bits); RDP reaches the CSR it names, BDP the BCR."""
    r = rig()
    r.write(s.RAP, 88)
    assert r.read(s.RAP) == 88
    assert r.read(s.RDP) | r.csr(89) << 16 == s.CHIP_ID
    r.write(s.RAP, 0x1FF)
    assert r.read(s.RAP) == 0x7F
    assert (r.bcr(2), r.bcr(18), r.bcr(20)) == (0x0002, 0x9001, 0x0200)
    assert r.csr(0) == s.CSR0_STOP
    assert r.csr(12) | r.csr(13) << 16 | r.csr(14) << 32 == int.from_bytes(MAC, "little")   # PADR from the PROM


def test_dword_access_in_word_mode_is_ignored():
    """Only 16-bit accesses reach the ports in word I/O mode: a dword write changes nothing, a dword read floats."""
    r = rig()
    r.write(s.RAP, 3)
    r.dev.io_write(r.cpu, s.RDP, 4, 0x5F00)
    assert r.csr(3) == 0
    assert r.dev.io_read(r.cpu, s.RDP, 4) == 0xFFFFFFFF


@pytest.mark.parametrize("style,value", [(0, 0x0200), (1, 0x0101), (2, 0x0302), (3, 0x0303), (7, 0x0200)])
def test_swstyle_write_sets_ssize32_and_csrpcnet(style, value):
    """BCR20: writing SWSTYLE sets SSIZE32/CSRPCNET to match; CSR58 is the same register."""
    r = rig()
    r.set_bcr(s.BCR_SWS, style)
    assert r.bcr(s.BCR_SWS) == value == r.csr(s.CSR_SWS)


def test_swstyle_and_init_registers_only_writable_while_stopped():
    """BCR20, CSR1 and CSR15 ignore writes while the chip runs; CSR3 takes them always."""
    r = rig()
    r.rx_ring()
    r.init()
    before = (r.bcr(s.BCR_SWS), r.csr(1), r.csr(15))
    r.set_bcr(s.BCR_SWS, s.SWSTYLE_LANCE)
    r.set_csr(1, 0x1234)
    r.set_csr(15, s.CSR15_PROM)
    assert (r.bcr(s.BCR_SWS), r.csr(1), r.csr(15)) == before
    r.set_csr(3, s.CSR3_RINTM)
    assert r.csr(3) == s.CSR3_RINTM
    r.set_csr(0, s.CSR0_STOP)
    r.set_csr(15, s.CSR15_PROM)
    assert r.csr(15) == s.CSR15_PROM


def test_read_only_csrs_ignore_writes():
    """Chip ID and ring length CSRs cannot be written."""
    r = rig()
    for index in (76, 78, 88, 89):
        before = r.csr(index)
        r.set_csr(index, 0x5A5A)
        assert r.csr(index) == before


def test_reset_port_read_resets_the_chip():
    """A read of RESET: CSR0 back to STOP, masks and RAP cleared, rings forgotten, INTx lowered."""
    r = rig()
    r.rx_ring()
    r.init()
    r.set_csr(3, s.CSR3_TINTM)
    r.set_csr(0, s.CSR0_IENA | s.CSR0_TDMD)
    r.deliver(frame())
    assert r.level == 1
    assert r.read(s.RESET) == 0
    assert r.read(s.RAP) == 0 and r.csr(0) == s.CSR0_STOP and r.csr(3) == 0
    assert r.level == 0
    assert not r.dev.can_receive(64)
    assert r.bcr(s.BCR_SWS) == 0x0302                               # BCRs survive S_RESET


# ---- initialization block ------------------------------------------------------------
def test_init_reads_swstyle2_block_and_sets_idon():
    """INIT: MODE to CSR15, PADR to CSR12-14, LADRF to CSR8-11, ring lengths from RLEN/TLEN; IDON, STOP cleared."""
    r = rig()
    r.init(rx_log2=5, tx_log2=4, mode=s.CSR15_DRCVBC, ladrf=0x0123456789ABCDEF, start=False)
    csr0 = r.csr(0)
    assert csr0 & (s.CSR0_IDON | s.CSR0_INIT) == s.CSR0_IDON | s.CSR0_INIT
    assert not csr0 & (s.CSR0_STOP | s.CSR0_TXON | s.CSR0_RXON)
    assert csr0 & s.CSR0_INTR and r.level == 0                      # IDON pending, IENA off
    assert r.csr(15) == s.CSR15_DRCVBC
    assert [r.csr(8 + i) for i in range(4)] == [0xCDEF, 0x89AB, 0x4567, 0x0123]
    assert (r.csr(76), r.csr(78)) == (-32 & 0xFFFF, -16 & 0xFFFF)
    assert r.dev.errors == {}


@pytest.mark.parametrize("code,length", [(0, 1), (3, 8), (9, 512), (15, 512)])
def test_ring_length_codes(code, length):
    """RLEN/TLEN 0-9 give 2^n descriptors; larger codes mean 512."""
    r = rig()
    r.init(rx_log2=code, tx_log2=code, start=False)
    assert r.csr(76) == -length & 0xFFFF == r.csr(78)


def test_init_needs_swstyle2():
    """With 16-bit structures (SWSTYLE 0) INIT does not complete here: no IDON, counted."""
    r = rig()
    r.init(start=False)
    r.set_csr(0, s.CSR0_STOP)
    r.set_bcr(s.BCR_SWS, s.SWSTYLE_LANCE)
    r.set_csr(0, s.CSR0_INIT)
    assert not r.csr(0) & s.CSR0_IDON
    assert r.dev.errors["swstyle_unsupported"] == 1


def test_strt_turns_on_tx_and_rx_unless_mode_disables():
    """STRT sets TXON and RXON; DTX/DRX in MODE keep them off."""
    r = rig()
    r.init()
    assert r.csr(0) & (s.CSR0_TXON | s.CSR0_RXON | s.CSR0_STRT) == s.CSR0_TXON | s.CSR0_RXON | s.CSR0_STRT
    r2 = rig()
    r2.init(mode=s.CSR15_DTX | s.CSR15_DRX)
    assert not r2.csr(0) & (s.CSR0_TXON | s.CSR0_RXON)


def test_stop_clears_everything_else():
    """STOP: CSR0 reads STOP alone; INIT|STRT|STOP together is STOP."""
    r = rig()
    r.init()
    r.set_csr(0, s.CSR0_STOP)
    assert r.csr(0) == s.CSR0_STOP
    r.set_csr(0, s.CSR0_INIT | s.CSR0_STRT | s.CSR0_STOP)
    assert r.csr(0) == s.CSR0_STOP


# ---- CSR0 interrupts -----------------------------------------------------------------
def test_csr0_w1c_intr_and_iena_level():
    """Interrupt bits clear on a written 1; INTR is any unmasked one; INTx is INTR && IENA."""
    r = rig()
    r.init(start=False)
    assert r.csr(0) & s.CSR0_INTR and r.irqs == []
    r.set_csr(0, s.CSR0_IENA)
    assert r.irqs == [1]
    r.set_csr(3, s.CSR3_IDONM)                                      # masked: INTR and the line drop
    assert not r.csr(0) & s.CSR0_INTR and r.irqs == [1, 0]
    r.set_csr(3, 0)
    assert r.irqs == [1, 0, 1]
    r.set_csr(0, s.CSR0_IDON)                                       # W1C, and IENA written as 0
    assert r.irqs == [1, 0, 1, 0]
    assert not r.csr(0) & (s.CSR0_IDON | s.CSR0_INTR | s.CSR0_IENA)


def test_miss_sets_err_and_interrupts_until_cleared():
    """ERR reads set while MISS is; MISS raises INTR until a written 1 clears it."""
    r = rig()
    r.rx_ring(owned=0)
    r.init()
    r.dev.receive(r.cpu, frame())
    csr0 = r.csr(0)
    assert csr0 & (s.CSR0_MISS | s.CSR0_ERR | s.CSR0_INTR) == s.CSR0_MISS | s.CSR0_ERR | s.CSR0_INTR
    assert r.level == 1
    r.set_csr(0, s.CSR0_MISS | s.CSR0_IENA)
    assert not r.csr(0) & (s.CSR0_ERR | s.CSR0_INTR) and r.level == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 3]), st.integers(0, 0xFFFF)), max_size=30))
def test_interrupt_line_is_intr_and_iena(ops):
    """For any CSR0/CSR3 writes after INIT the line equals INTR && IENA, and INTR equals CSR0 & ~CSR3 & 5F00h."""
    r = rig()
    r.rx_ring()
    r.init(start=False)
    for index, value in ops:
        r.set_csr(index, value)
        csr0, csr3 = r.csr(0), r.csr(3)
        assert bool(csr0 & s.CSR0_INTR) == bool(csr0 & ~csr3 & 0x5F00)
        assert r.level == bool(csr0 & s.CSR0_INTR and csr0 & s.CSR0_IENA)
        assert all(a != b for a, b in zip(r.irqs, r.irqs[1:]))      # only edges are signalled


# ---- transmit -----------------------------------------------------------------------
def test_tx_descriptor_cycle():
    """TDMD: an owned STP|ENP descriptor with negative BCNT leaves byte-exact; OWN cleared, TINT, TDMD self-clears."""
    r = rig()
    r.init()
    data = frame(OTHER, 300)
    r.tx_desc(0, data)
    assert r.tmd(0)[1] == 0xF000 | (-300 & 0xFFF)
    r.set_csr(0, s.CSR0_TDMD | s.CSR0_IENA)
    assert r.port.frames == [data]
    assert r.tmd(0)[2] & FRAME_BITS == s.STP | s.ENP
    assert r.tmd(0)[3] == 0
    csr0 = r.csr(0)
    assert csr0 & s.CSR0_TINT and not csr0 & s.CSR0_TDMD
    assert r.level == 1


def test_tx_walks_ring_in_order_and_wraps():
    """Frames in descriptors 6, 7, 0, 1 of an 8-entry ring leave in that order; the next TDMD starts at 2."""
    r = rig()
    r.init()
    for i in range(6):                                              # move the chip to descriptor 6
        r.tx_desc(i, frame(OTHER, 60))
        r.set_csr(0, s.CSR0_TDMD)
    r.port.frames.clear()
    sent = [frame(OTHER, 100 + 50 * k, seed=k) for k in range(4)]
    for i, data in zip((6, 7, 0, 1), sent):
        r.tx_desc(i, data)
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames == sent
    later = frame(OTHER, 80, seed=9)
    r.tx_desc(2, later)
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames[-1] == later


def test_tx_multi_descriptor_frame():
    """STP on the first descriptor, ENP on the last: one frame of the buffers concatenated; every OWN cleared."""
    r = rig()
    r.init()
    whole = frame(OTHER, 1514)
    parts = [whole[:14], whole[14:700], whole[700:]]
    flags = [s.STP, 0, s.ENP]
    for i, (part, flag) in enumerate(zip(parts, flags)):
        r.tx_desc(i, part, s.OWN | flag)
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames == [whole]
    assert [r.tmd(i)[2] & FRAME_BITS for i in range(3)] == flags


def test_tx_stops_at_host_owned_descriptor():
    """The chip sends owned descriptors only: a host-owned one ends the walk, the next TDMD resumes there."""
    r = rig()
    r.init()
    r.tx_desc(0, frame(OTHER, 60, seed=1))
    r.tx_desc(1, frame(OTHER, 60, seed=2), s.STP | s.ENP)
    r.tx_desc(2, frame(OTHER, 60, seed=3))
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames == [frame(OTHER, 60, seed=1)]
    r.tx_desc(1, frame(OTHER, 60, seed=2))
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames[1:] == [frame(OTHER, 60, seed=2), frame(OTHER, 60, seed=3)]


@pytest.mark.parametrize("csr4,out", [(s.CSR4_PCNET32, 60), (s.CSR4_RESET, 20)])
def test_tx_auto_pad(csr4, out):
    """CSR4.APAD_XMT pads short frames to 60 bytes (64 with FCS); without it they leave as they are."""
    r = rig()
    r.init(csr4=csr4)
    data = frame(OTHER, 20)
    r.tx_desc(0, data)
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames == [data + bytes(out - 20)]


def test_tx_needs_txon():
    """Before STRT, or with DTX, TDMD moves nothing and self-clears."""
    for mode, start in ((0, False), (s.CSR15_DTX, True)):
        r = rig()
        r.init(mode=mode, start=start)
        r.tx_desc(0, frame(OTHER))
        r.set_csr(0, s.CSR0_TDMD)
        assert r.port.frames == [] and r.tmd(0)[2] & s.OWN
        assert not r.csr(0) & s.CSR0_TDMD


# ---- receive --------------------------------------------------------------------------
def test_rx_into_one_descriptor():
    """A frame lands in the owned buffer with its FCS; MCNT counts both; STP|ENP|PAM, OWN cleared, RINT and INTx."""
    r = rig()
    r.rx_ring()
    r.init()
    data = frame(MAC, 1000)
    assert r.deliver(data)
    rbadr, bcnt, status, mcnt, _ = r.rmd(0)
    assert r.mem.read(rbadr, 1004) == with_fcs(data)
    assert mcnt == 1004
    assert status == s.STP | s.ENP | s.RMD1_PAM
    assert bcnt == s.bcnt(1544)                                      # BCNT untouched
    assert r.rmd(1)[2] == s.OWN
    assert r.csr(0) & s.CSR0_RINT and r.level == 1


def test_rx_short_frame_padded_before_fcs():
    """A frame under 60 bytes is padded to 60, then the FCS follows: MCNT 64."""
    r = rig()
    r.rx_ring()
    r.init()
    data = frame(MAC, 42)
    assert r.deliver(data)
    assert r.rmd(0)[3] == 64
    assert r.mem.read(RX_BUFS, 64) == with_fcs(data)


def test_rx_spans_descriptors():
    """A frame larger than a buffer fills several: STP on the first, ENP and MCNT on the last only."""
    r = rig()
    r.rx_ring(size=256)
    r.init()
    data = frame(MAC, 600)
    assert r.deliver(data)
    descs = [r.rmd(i) for i in range(3)]
    assert [d[2] for d in descs] == [s.STP, 0, s.ENP | s.RMD1_PAM]
    assert descs[2][3] == 604 and descs[0][3] == descs[1][3] == 0
    assert b"".join(r.mem.read(d[0], 256) for d in descs)[:604] == with_fcs(data)
    assert r.rmd(3)[2] == s.OWN
    second = frame(MAC, 100, seed=5)
    assert r.deliver(second)
    assert r.rmd(3)[2] == s.STP | s.ENP | s.RMD1_PAM


def test_rx_miss_when_no_descriptor():
    """No owned descriptor: can_receive says no; a frame pushed anyway is dropped with MISS and MISSC counted."""
    r = rig()
    r.rx_ring(owned=0)
    r.init()
    before = bytes(r.mem.buf)
    assert not r.dev.can_receive(64)
    r.dev.receive(r.cpu, frame())
    r.dev.receive(r.cpu, frame())
    assert bytes(r.mem.buf) == before
    assert r.csr(0) & s.CSR0_MISS and r.csr(s.CSR_MISSC) == 2
    assert r.level == 1


def test_rx_buffers_run_out_mid_frame():
    """Buffers end before the frame does: the last one used gets ERR|BUFF, no ENP, no MCNT."""
    r = rig()
    r.rx_ring(size=256, owned=2)
    r.init()
    r.dev.receive(r.cpu, frame(MAC, 600))
    assert [r.rmd(i)[2] for i in range(3)] == [s.STP, s.ERR | s.RMD1_BUFF, 0]
    assert r.rmd(1)[3] == 0 and r.csr(0) & s.CSR0_RINT
    assert r.dev.errors["rx_buffer_error"] == 1


def test_can_receive_counts_owned_buffers_and_csr0_write_flushes():
    """can_receive needs owned buffers for the whole frame; a CSR0 write tells the backend to retry."""
    r = rig()
    r.rx_ring(size=256, owned=2)
    r.init()
    assert r.dev.can_receive(400) and not r.dev.can_receive(600)
    flushes = r.port.flushes
    r.set_csr(0, s.CSR0_IENA)
    assert r.port.flushes == flushes + 1
    r.set_csr(0, s.CSR0_STOP)
    assert not r.dev.can_receive(60)


def test_ladrf_bit_matches_linux_ether_crc_le():
    """The logical address filter index is the top 6 bits of the reflected CRC-32 (Linux ether_crc_le)."""
    def ether_crc_le(data: bytes) -> int:
        crc = 0xFFFFFFFF
        for byte in data:
            for _ in range(8):
                crc = crc >> 1 ^ (0xEDB88320 if (crc ^ byte) & 1 else 0)
                byte >>= 1
        return crc
    for mac in (MCAST, BCAST, bytes.fromhex("333300000001")):
        assert s.ladrf_bit(mac) == ether_crc_le(mac) >> 26


@pytest.mark.parametrize("dst,mode,ladrf,bit", [
    (MAC, 0, False, s.RMD1_PAM),
    (MAC, s.CSR15_DRCVPA, False, None),
    (OTHER, 0, False, None),
    (OTHER, s.CSR15_PROM, False, 0),
    (BCAST, 0, False, s.RMD1_BAM),
    (BCAST, s.CSR15_DRCVBC, False, None),
    (MCAST, 0, False, None),
    (MCAST, 0, True, s.RMD1_LAFM),
])
def test_rx_address_match(dst, mode, ladrf, bit):
    """Physical address (unless DRCVPA), broadcast (unless DRCVBC), LADRF hash for multicast, PROM takes all."""
    r = rig()
    r.rx_ring()
    r.init(mode=mode, ladrf=1 << s.ladrf_bit(dst) if ladrf else 0)
    assert r.deliver(frame(dst, 64))
    assert r.rmd(0)[2] == (s.OWN if bit is None else s.STP | s.ENP | bit)


# ---- hostile guest ----------------------------------------------------------------------
def test_init_block_outside_memory():
    """IADR beyond guest memory: no IDON, MERR, PCI master abort, counted."""
    r = rig()
    r.init(ib=MEM + 0x1000, start=False)
    csr0 = r.csr(0)
    assert not csr0 & s.CSR0_IDON and csr0 & (s.CSR0_MERR | s.CSR0_ERR) == s.CSR0_MERR | s.CSR0_ERR
    assert r.master_abort and r.dev.errors["init_block_fault"] == 1


def test_tx_ring_outside_memory():
    """TDRA beyond guest memory: nothing sent, MERR and master abort, counted; TDMD again is no worse."""
    r = rig()
    r.init(tdra=MEM - 8)
    r.set_csr(0, s.CSR0_TDMD)
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames == []
    assert r.csr(0) & s.CSR0_MERR and r.master_abort
    assert r.dev.errors["tx_desc_fault"] == 2


def test_rx_ring_outside_memory():
    """RDRA beyond guest memory: frames dropped with MERR, nothing in memory changes."""
    r = rig()
    r.init(rdra=MEM + 0x8000)
    before = bytes(r.mem.buf)
    for _ in range(3):
        assert r.deliver(frame())
    assert bytes(r.mem.buf) == before
    assert r.dev.errors["rx_fault"] == 3 and r.csr(0) & s.CSR0_MERR and r.master_abort


def test_buffers_outside_memory_drop_only_their_frame():
    """A TX or RX buffer beyond memory: that frame is dropped with MERR; the next one goes through."""
    r = rig()
    r.rx_ring(bufs=[MEM + 0x100] + [RX_BUFS + i * 0x800 for i in range(1, 8)])
    r.init()
    good = frame(OTHER, 100, seed=1)
    r.tx_desc(0, frame(OTHER, 100), buf=MEM - 50)
    r.tx_desc(1, good)
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames == [good]
    assert r.tmd(0)[2] & s.OWN == 0 and r.dev.errors["tx_buffer_fault"] == 1
    assert r.deliver(frame(MAC, 100))
    assert r.rmd(0)[2] == s.OWN and r.dev.errors["rx_fault"] == 1
    assert r.csr(0) & s.CSR0_MERR and r.master_abort


@pytest.mark.parametrize("bcnt,sent,babl", [
    (0x0000, 0, False),              # zero: a 4096-byte buffer, over the 4092-byte limit
    (0x0064, 3996, True),            # +100 instead of -100: 3996 bytes, babble
    (0xF000 | -1500 & 0xFFF, 1500, False),
])
def test_tx_bcnt_garbage(bcnt, sent, babl):
    """BCNT is read as the 12-bit two's complement it must be: zero or positive values mean huge buffers, no crash."""
    r = rig()
    r.init()
    r.mem.write(TX_BUFS, frame(OTHER, 1500))
    r.tx_desc(0, b"", bcnt=bcnt)
    r.set_csr(0, s.CSR0_TDMD)
    assert [len(f) for f in r.port.frames] == ([sent] if sent else [])
    assert bool(r.csr(0) & s.CSR0_BABL) == babl
    assert r.tmd(0)[2] & s.OWN == 0
    assert r.dev.errors["tx_oversize"] == (0 if sent else 1)


def test_tx_chain_without_enp_wrapping_the_ring_terminates():
    """All owned, STP on the first, no ENP anywhere: one pass, nothing sent, BUFF|UFLO|ERR on the last, TXON off."""
    r = rig()
    r.init(tx_log2=4)
    for i in range(16):
        r.tx_desc(i, bytes([i]) * 100, s.OWN | (s.STP if i == 0 else 0))
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames == []
    assert all(not r.tmd(i)[2] & s.OWN for i in range(16))
    assert r.tmd(15)[2] & s.ERR and r.tmd(15)[3] == s.TMD2_BUFF | s.TMD2_UFLO
    assert not r.csr(0) & s.CSR0_TXON and r.csr(0) & s.CSR0_TINT
    r.tx_desc(0, frame(OTHER))
    r.set_csr(0, s.CSR0_TDMD)                                       # transmitter stays off until restart
    assert r.port.frames == []


def test_tx_underflow_with_dxsuflo_keeps_going():
    """CSR3.DXSUFLO: after an underflow the chip goes on to the next frame."""
    r = rig()
    r.init()
    r.set_csr(3, s.CSR3_DXSUFLO)
    r.tx_desc(0, bytes(50), s.OWN | s.STP)
    good = frame(OTHER, 70)
    r.tx_desc(1, good)
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames == [good]
    assert r.tmd(0)[3] == s.TMD2_BUFF | s.TMD2_UFLO


def test_tx_without_stp_is_handed_back_unsent():
    """An owned descriptor that does not start a frame is returned without sending anything."""
    r = rig()
    r.init()
    r.tx_desc(0, frame(OTHER), s.OWN | s.ENP)
    r.set_csr(0, s.CSR0_TDMD)
    assert r.port.frames == [] and not r.tmd(0)[2] & s.OWN
    assert r.dev.errors["tx_no_stp"] == 1


# ---- hypothesis: hostile rings and registers -------------------------------------------------
SMALL = 64 * 1024
addr32 = st.one_of(st.integers(0, SMALL), st.integers(SMALL - 64, SMALL + 64), st.integers(0, 2**32 - 1))
tx_descs = st.lists(st.tuples(addr32, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
                              st.integers(0, 2**32 - 1)), max_size=24)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tdra=st.one_of(st.integers(0x1000, SMALL), st.integers(0, 2**32 - 1)), tx_log2=st.integers(0, 15),
       descs=tx_descs, csr3=st.integers(0, 0xFFFF), junk=st.binary(max_size=256))
def test_random_tx_ring_writes_only_descriptor_status(tdra, tx_log2, descs, csr3, junk):
    """Random TX descriptors: TDMD never raises, ends, and writes nothing but TMD1[31:16] and TMD2 inside the ring."""
    r = rig(SMALL)
    for i, d in enumerate(descs):
        if tdra + 16 * i + 16 <= SMALL:
            s.TX_DESC.pack_into(r.mem.buf, tdra + 16 * i, *d)
    r.mem.buf[SMALL - len(junk):] = junk
    r.init(tx_log2=tx_log2, tdra=tdra)
    r.set_csr(3, csr3)
    before = bytearray(r.mem.buf)
    r.set_csr(0, s.CSR0_TDMD)
    r.set_csr(0, s.CSR0_TDMD)
    after = bytearray(r.mem.buf)
    for i in range(s.ring_length(tx_log2)):
        at = tdra + 16 * i + s.STATUS_OFFSET
        before[at : at + 6] = after[at : at + 6]
    assert before[:SMALL] == after
    assert len(r.port.frames) <= 2 * s.ring_length(tx_log2)
    assert all(len(f) <= s.MAX_TX_FRAME for f in r.port.frames)


RX_MEM = 256 * 1024
rx_buf = st.one_of(st.integers(0, 112 * 1024), st.integers(RX_MEM - 300, 2**32 - 1))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rdra=st.one_of(st.integers(128 * 1024, RX_MEM), st.integers(0, 2**32 - 1)), rx_log2=st.integers(0, 15),
       descs=st.lists(st.tuples(rx_buf, st.one_of(st.integers(1, 700).map(s.bcnt), st.integers(0, 0xFFFF)),
                                st.one_of(st.just(s.OWN), st.integers(0, 0xFFFF)), st.integers(0, 2**64 - 1)),
                      max_size=40),
       mode=st.one_of(st.just(0), st.integers(0, 0xFFFF)),
       frames=st.lists(st.tuples(st.sampled_from([MAC, BCAST, OTHER, MCAST]), st.binary(max_size=3000)), max_size=6))
def test_random_rx_ring_writes_only_ring_and_named_buffers(rdra, rx_log2, descs, mode, frames):
    """Random RX descriptors and frames: never raises, writes only inside the ring and the buffers it names."""
    r = rig(RX_MEM)
    for i, (buf, bcnt, status, rest) in enumerate(descs):
        if rdra + 16 * i + 16 <= RX_MEM:
            s.RX_DESC.pack_into(r.mem.buf, rdra + 16 * i, buf, bcnt, status, rest & 0xFFFFFFFF, rest >> 32)
    r.init(rx_log2=rx_log2, rdra=rdra, mode=mode & ~(s.CSR15_DRX | s.CSR15_DTX))
    before = bytearray(r.mem.buf)
    allowed = allowed_rx(before, rdra, s.ring_length(rx_log2))
    for dst, payload in frames:
        r.deliver(dst + payload)
        r.dev.receive(r.cpu, dst + payload)                       # and regardless of can_receive
    assert_only_changed(before, bytearray(r.mem.buf), allowed)


def allowed_rx(mem: bytes, rdra: int, n: int) -> list[tuple[int, int]]:
    """The RX ring and every buffer its descriptors name."""
    allowed = [(rdra, rdra + n * s.DESC_SIZE)]
    for i in range(n):
        at = rdra + s.DESC_SIZE * i
        if at + s.DESC_SIZE > len(mem):
            break
        rbadr, bcnt = s.RX_DESC.unpack_from(mem, at)[:2]
        allowed.append((rbadr, rbadr + s.buffer_length(bcnt)))
    return allowed


def assert_only_changed(before: bytearray, after: bytearray, allowed: list[tuple[int, int]]) -> None:
    for lo, hi in allowed:
        lo, hi = min(lo, len(after)), min(hi, len(after))
        before[lo:hi] = after[lo:hi]
    assert before == after


io_ops = st.lists(st.one_of(
    st.tuples(st.just("csr"), st.sampled_from([0, 1, 2, 3, 4, 8, 15, 58, 76, 112, 127]), st.integers(0, 0xFFFF)),
    st.tuples(st.just("bcr"), st.sampled_from([2, 18, 20, 127]), st.integers(0, 0xFFFF)),
    st.tuples(st.just("io"), st.integers(0, 31), st.sampled_from([1, 2, 4]), st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("rx"), st.sampled_from([MAC, BCAST, OTHER]), st.integers(0, 2000)),
), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=io_ops, seed=st.integers(0, 2**32 - 1))
def test_random_register_writes_touch_only_rings_and_named_buffers(ops, seed):
    """Any sequence of port accesses, CSR/BCR writes and frames over random memory never raises, and
    the device writes only inside the rings some initialization block named and their RX buffers."""
    r = rig(SMALL)
    r.mem.buf[:] = random.Random(seed).randbytes(SMALL)
    r.rx_ring(n=4, size=256, bufs=[0x8000 + 0x100 * i for i in range(4)])
    r.init(rx_log2=2, tx_log2=2)
    for op in ops:
        before = bytearray(r.mem.buf)
        allowed = rings_of(r.dev, before)
        if op[0] == "csr":
            r.set_csr(op[1], op[2])
        elif op[0] == "bcr":
            r.set_bcr(op[1], op[2])
        elif op[0] == "io":
            r.read(op[1], op[2]) if op[3] & 1 else r.write(op[1], op[3], op[2])
        else:
            r.dev.receive(r.cpu, frame(op[1], 14 + op[2]))
        assert_only_changed(before, bytearray(r.mem.buf), allowed + rings_of(r.dev, before))


def rings_of(dev: PCNet, mem: bytes) -> list[tuple[int, int]]:
    """The rings the chip was last initialized with, and the RX buffers named in them."""
    return [(dev.tdra, dev.tdra + dev.tx_len * s.DESC_SIZE)] + allowed_rx(mem, dev.rdra, dev.rx_len)


# ---- costs follow the mechanism -----------------------------------------------------------
def test_tx_charges_copies_on_the_executing_cpu():
    """One TX frame: descriptor fetch, buffer read and status write-back, each a copy on the cpu that wrote TDMD."""
    r = rig()
    r.init()
    r.tx_desc(0, frame(OTHER, 64))
    before = dict(r.ledger.accounts["cpu"])
    r.dev.io_write(r.cpu, s.RDP, 2, s.CSR0_TDMD)                    # RAP is still 0 from init()
    after = r.ledger.accounts["cpu"]
    assert {k: after[k] - before.get(k, 0) for k in after} == {"copy": 4}    # + the next descriptor's OWN check


# ---- the guest driver, end to end ------------------------------------------------------------
def scenario(device: str = "pcnet", duration_ms: float = 2, packet_size: int = 1500):
    vms = [{"name": f"vm{i}", "host": "host0",
            "nics": [{"model": "emulated", "device": device, "mac": f"52:54:00:00:00:{i:02x}", "ip": f"10.0.0.{i}/24"}]}
           for i in (1, 2)]
    return iovirt.Scenario.from_dict({
        "name": "t", "profile": "default", "hosts": [{"name": "host0", "cores": 4}], "vms": vms,
        "workloads": [{"type": "ping", "src": "vm1", "dst": "vm2", "count": 5},
                      {"type": "udp_stream", "src": "vm1", "dst": "vm2", "packet_size": packet_size,
                       "duration_ms": duration_ms}]})


def test_two_vm_pcnet_delivers_every_frame_intact_in_order_and_answers_pings():
    """Two VMs on pcnet: every UDP frame arrives intact and in order, every ping is answered."""
    ping, stream = iovirt.run(scenario()).to_dict()["flows"]
    assert ping["sent"] == ping["delivered"] == 5
    assert stream["sent"] == stream["delivered"] > 50
    assert stream["corrupted"] == stream["out_of_order"] == stream["dropped"] == 0


def test_example_runs():
    """The bundled example: every frame delivered, pings answered."""
    ping, stream = iovirt.run(iovirt.load_scenario(EXAMPLE)).to_dict()["flows"]
    assert ping["sent"] == ping["delivered"] > 0
    assert stream["sent"] == stream["delivered"] > 100 and stream["corrupted"] == 0


def test_pcnet_takes_more_exits_per_packet_than_e1000():
    """Every CSR access is a RAP write plus an RDP access: per packet pcnet exits more than e1000 on the same stream."""
    pcnet = iovirt.run(scenario("pcnet")).to_dict()["flows"][1]
    e1000 = iovirt.run(scenario("e1000")).to_dict()["flows"][1]
    assert pcnet["events_per_packet"]["vm_exit"] > e1000["events_per_packet"]["vm_exit"]
    assert pcnet["events_per_packet"]["pio_emulate"] > 0 and "mmio_emulate" not in pcnet["events_per_packet"]
    assert pcnet["pps"] < e1000["pps"]


def test_guest_probe_and_csr_access_cost_two_exits():
    """The guest binds pcnet32-style through PIO only: MAC from the PROM, chip running; a CSR access is two exits."""
    world = World(scenario())
    world.settle()
    guest, vm = world.guests["vm1"], world.vms["vm1"]
    driver, nic = guest.netdevs[0], vm.nics[0]
    assert driver.mac == bytes.fromhex("525400000001")
    assert nic.device.csr[0] & (s.CSR0_TXON | s.CSR0_RXON | s.CSR0_IENA) == s.CSR0_TXON | s.CSR0_RXON | s.CSR0_IENA
    assert vm.acct["mmio_emulate"] == 0
    exits = vm.acct["vm_exit"]
    assert driver.rd_csr(88) == s.CHIP_ID & 0xFFFF
    assert vm.acct["vm_exit"] == exits + 2
    assert nic.device.can_receive(1514)


def test_transmit_is_one_csr0_write_and_descriptors_alone_cost_nothing():
    """A descriptor written without a register access sends nothing; transmit() costs exactly the RAP+RDP pair."""
    world = World(scenario())
    world.settle()
    guest, vm = world.guests["vm1"], world.vms["vm1"]
    driver = guest.netdevs[0]
    sent = []
    vm.nics[0].port.send = lambda cpu, f: sent.append(f)
    data = bytes.fromhex("525400000002525400000001") + b"\x08\x00" + bytes(50)
    exits = vm.acct["vm_exit"]
    entry = driver.cur_tx % 16
    guest.mem.write(driver.tx_bufs[entry], data)
    guest.mem.store(s.TX_DESC.struct, driver.tx_ring + entry * s.DESC_SIZE, driver.tx_bufs[entry],
                    s.bcnt(len(data)), s.OWN | s.STP | s.ENP, 0, 0)
    assert vm.acct["vm_exit"] == exits and sent == []
    driver.cur_tx += 1
    assert driver.transmit(data)
    assert vm.acct["vm_exit"] == exits + 2
    assert sent == [data, data]
