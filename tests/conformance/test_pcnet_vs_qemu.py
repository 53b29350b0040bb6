"""PCnet-PCI II (Am79C970A) against QEMU's hw/net/pcnet.c, through the I/O
BAR in word I/O mode as pcnet32 drives it: the address PROM, CSR and BCR
reset values, INIT and STRT, one frame out, one frame in, and the interrupt
each raises.  The Am79C970A data sheet decides where the two differ."""

from __future__ import annotations

import zlib

import pytest

from iovirt.devices.pcnet import PCNet
from iovirt.spec import pcnet as s

from .nic import MAC, Nic, NicModel, agree, pair_fixture, run

PCNET_NIC = NicModel("pcnet", PCNet, bar=0)
SRC = bytes.fromhex("020000000001")
INIT_BLOCK, TX_RING, TX_BUF, RX_RING, RX_BUFS = 0x1F0000, 0x200000, 0x210000, 0x220000, 0x240000
RING_LOG2 = 3
RING = 1 << RING_LOG2
BUF_STRIDE = 0x800
RX_BUF_SIZE = 1544
POISON = 0xAA
RUN = s.CSR0_STRT | s.CSR0_IENA
SETTLE_NS = 100_000          # QEMU's pcnet runs its rings from a poll timer as well as on CSR0 writes

reset_nics = pair_fixture(PCNET_NIC, scope="module")
nics = pair_fixture(PCNET_NIC)


def csr(nic: Nic, index: int) -> int:
    nic.write(s.RAP, index, 2)
    return nic.read(s.RDP, 2)


def set_csr(nic: Nic, index: int, value: int) -> None:
    nic.write(s.RAP, index, 2)
    nic.write(s.RDP, value, 2)


def bcr(nic: Nic, index: int) -> int:
    nic.write(s.RAP, index, 2)
    return nic.read(s.BDP, 2)


def set_bcr(nic: Nic, index: int, value: int) -> None:
    nic.write(s.RAP, index, 2)
    nic.write(s.BDP, value, 2)


def frame(dst: bytes = MAC, size: int = 100) -> bytes:
    return dst + SRC + b"\x88\xb5" + bytes((i * 11 + 5) & 0xFF for i in range(size - 14))


def init(nic: Nic) -> tuple[int, int]:
    """pcnet32's bring-up: SWSTYLE 2, the init block, CSR1/2, CSR4, INIT, then
    STRT|IENA acknowledging IDON.  Returns CSR0 after INIT and after STRT."""
    nic.mem_write(INIT_BLOCK, s.INIT_BLOCK.pack(0, RING_LOG2 << s.LEN_SHIFT, RING_LOG2 << s.LEN_SHIFT,
                                                int.from_bytes(MAC[:4], "little"), int.from_bytes(MAC[4:], "little"),
                                                0, RX_RING, TX_RING))
    nic.mem_write(RX_BUFS, bytes([POISON]) * (RING * BUF_STRIDE))
    for i in range(RING):
        nic.mem_write(RX_RING + i * s.DESC_SIZE,
                      s.RX_DESC.pack(RX_BUFS + i * BUF_STRIDE, s.bcnt(RX_BUF_SIZE), s.OWN, 0, 0))
        nic.mem_write(TX_RING + i * s.DESC_SIZE, bytes(s.DESC_SIZE))
    set_bcr(nic, s.BCR_SWS, s.SWSTYLE_PCNET_PCI)
    set_csr(nic, s.CSR_IADR_LOW, INIT_BLOCK & 0xFFFF)
    set_csr(nic, s.CSR_IADR_HIGH, INIT_BLOCK >> 16)
    set_csr(nic, 4, s.CSR4_PCNET32)
    set_csr(nic, 0, s.CSR0_INIT)
    nic.step(SETTLE_NS)
    after_init = csr(nic, 0)
    set_csr(nic, 0, RUN | s.CSR0_IDON)
    nic.step(SETTLE_NS)
    return after_init, csr(nic, 0)


# ---- reset -----------------------------------------------------------------------------
def test_address_prom(reset_nics):
    """The 16-byte address PROM (MAC, checksum, "WW") reads the same on both."""
    prom = agree(reset_nics, lambda nic: bytes(nic.read(i, 1) for i in range(s.APROM_SIZE)))
    assert prom[:6] == MAC and prom[s.APROM_SIGNATURE:] == s.SIGNATURE


@pytest.mark.parametrize("index", [r.offset for r in s.CSRS if r.offset not in (s.CSR_RCVRL, s.CSR_XMTRL)])
def test_csr_reset_value_agrees(reset_nics, index):
    """CSRs read the same after reset: CSR0 STOP, CSR4, PADR from the PROM, the chip ID."""
    agree(reset_nics, lambda nic: csr(nic, index))


@pytest.mark.parametrize("index", [r.offset for r in s.BCRS])
def test_bcr_reset_value_agrees(reset_nics, index):
    """BCR2, BCR18 and BCR20 read the same after reset."""
    agree(reset_nics, lambda nic: bcr(nic, index))


# ---- initialization -----------------------------------------------------------------------
def test_init_then_start(nics):
    """INIT reads the init block (IDON, INTR); STRT|IENA with IDON acked runs TX and RX with INTx low."""
    after_init, running = agree(nics, init)
    assert after_init == s.CSR0_INIT | s.CSR0_IDON | s.CSR0_INTR
    assert running == s.CSR0_INIT | RUN | s.CSR0_TXON | s.CSR0_RXON
    assert agree(nics, lambda nic: nic.irq_level()) is False


def test_ring_lengths_after_init(nics):
    """CSR76/CSR78 after INIT with 8-entry rings: iovirt 0xFFF8, QEMU 8."""
    qemu, iovirt = run(nics, lambda nic: (init(nic), csr(nic, s.CSR_RCVRL), csr(nic, s.CSR_XMTRL))[1:])
    # Data sheet CSR76 RCVRL / CSR78 XMTRL: "the two's complement of the
    # receive (transmit) descriptor ring length", set from RLEN/TLEN at INIT.
    # QEMU stores the length itself.
    assert iovirt == (-RING & 0xFFFF, -RING & 0xFFFF)
    assert qemu == (RING, RING)


# ---- transmit -------------------------------------------------------------------------------
def transmit(nic: Nic, data: bytes) -> dict:
    init(nic)
    nic.mem_write(TX_BUF, data)
    nic.mem_write(TX_RING, s.TX_DESC.pack(TX_BUF, s.bcnt(len(data)), s.OWN | s.STP | s.ENP, 0, 0))
    set_csr(nic, 0, s.CSR0_TDMD | s.CSR0_IENA)
    nic.step(SETTLE_NS)
    _, length, status, misc, _ = s.TX_DESC.unpack_from(nic.mem_read(TX_RING, s.DESC_SIZE))
    return {"frames": nic.sent_frames(), "tmd": (length, status, misc), "CSR0": csr(nic, 0), "irq": nic.irq_level()}


def test_tx_one_frame(nics):
    """TDMD sends the OWN descriptor: the frame, OWN cleared (STP|ENP kept), CSR0 TINT|INTR, INTx up."""
    data = frame(b"\xff" * 6)
    qemu, iovirt = run(nics, lambda nic: transmit(nic, data))
    # Data sheet CSR0 bit 3 TDMD: "cleared by the BMU when it fetches a
    # Transmit Descriptor"; QEMU leaves it set.
    assert not iovirt["CSR0"] & s.CSR0_TDMD and qemu["CSR0"] & s.CSR0_TDMD
    assert qemu == {**iovirt, "CSR0": iovirt["CSR0"] | s.CSR0_TDMD}
    assert iovirt["frames"] == [data] and iovirt["tmd"] == (s.bcnt(len(data)), s.STP | s.ENP, 0)
    assert iovirt["CSR0"] & (s.CSR0_TINT | s.CSR0_INTR) == s.CSR0_TINT | s.CSR0_INTR and iovirt["irq"]


# ---- receive --------------------------------------------------------------------------------
def receive(nic: Nic, data: bytes) -> dict:
    init(nic)
    nic.inject_frame(data)
    nic.step(SETTLE_NS)
    _, length, status, mcnt, _ = s.RX_DESC.unpack_from(nic.mem_read(RX_RING, s.DESC_SIZE))
    stored = max(len(data), s.ETH_MIN_FRAME)
    return {"buf": nic.mem_read(RX_BUFS, stored), "fcs": nic.mem_read(RX_BUFS + stored, s.FCS_LEN),
            "rmd": (length, status, mcnt), "CSR0": csr(nic, 0), "irq": nic.irq_level()}


@pytest.mark.parametrize("size", [100, 42])
def test_rx_one_frame(nics, size):
    """A frame to our MAC: stored (padded to 60), OWN cleared, STP|ENP|PAM, MCNT with FCS, RINT|INTR, INTx up."""
    data = frame(size=size)
    qemu, iovirt = run(nics, lambda nic: receive(nic, data))
    assert {**qemu, "fcs": None} == {**iovirt, "fcs": None}
    assert iovirt["buf"] == data + bytes(max(0, s.ETH_MIN_FRAME - size))
    stored = max(size, s.ETH_MIN_FRAME)
    assert iovirt["rmd"][1:] == (s.STP | s.ENP | s.RMD1_PAM, stored + s.FCS_LEN)
    assert iovirt["CSR0"] & (s.CSR0_RINT | s.CSR0_INTR) == s.CSR0_RINT | s.CSR0_INTR and iovirt["irq"]
    # Data sheet, receive FCS handling: without CSR4.ASTRP_RCV the FCS is
    # stored after the frame and counted in MCNT.  QEMU counts it but
    # leaves zeros in its place.
    assert iovirt["fcs"] == zlib.crc32(iovirt["buf"]).to_bytes(4, "little")
    assert qemu["fcs"] == bytes(s.FCS_LEN)


def test_rx_other_unicast_dropped(nics):
    """A frame to another MAC (no PROM mode) leaves the ring untouched and raises nothing."""
    out = agree(nics, lambda nic: {**receive(nic, frame(bytes.fromhex("525400abcdef"))), "fcs": None})
    assert out["rmd"][1] == s.OWN and not out["CSR0"] & s.CSR0_RINT and not out["irq"]
