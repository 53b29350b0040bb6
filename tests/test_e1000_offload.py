"""The 8254x's offloads: the TCP/IP context with TSE, IXSM and TXSM (the
NIC cuts a TSO packet and inserts checksums), what a hostile guest gets
for a bad context, and RXCSUM's receive checksum status."""

from __future__ import annotations

import dpkt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovirt.spec import e1000 as s
from test_e1000 import MAC, OTHER, TX_BUFS, TX_RING, frame, rig
from test_ixgbe_offload import IP_DST, IP_SRC, as_ixgbe_tso, checksums_ok, tcp_packet

DATA = s.TXD_DTYP_D << s.TXD_DTYP_SHIFT
TUCMD = s.TXD_CMD_IP | s.TXD_CMD_TCP | s.TXD_CMD_TSE


def post(r, packet: bytes, *, mss: int, hdr_len: int = 54, paylen: int | None = None, chunk: int = 2048,
         tse: bool = True) -> int:
    """A context descriptor as e1000_tso writes it, then the packet in data
    descriptors with TSE, IXSM and TXSM; the next free slot."""
    s.TX_CTXT.pack_into(r.mem.buf, TX_RING, 14, 24, 33, 34, 50, 0,
                        s.TX_CTXT_DEXT | TUCMD << 24 | (len(packet) - hdr_len if paylen is None else paylen) & 0xFFFFF,
                        0, hdr_len, mss)
    slot = 1
    for at in range(0, len(packet), chunk):
        piece = packet[at:at + chunk]
        r.mem.write(TX_BUFS + at, piece)
        cmd = s.TXD_CMD_DEXT | s.TXD_CMD_IFCS | (s.TXD_CMD_TSE if tse else 0)
        cmd |= s.TXD_CMD_EOP | s.TXD_CMD_RS if at + chunk >= len(packet) else 0
        s.TX_DESC.pack_into(r.mem.buf, TX_RING + 16 * slot, TX_BUFS + at, len(piece), DATA, cmd, 0,
                            s.TXD_POPTS_IXSM | s.TXD_POPTS_TXSM, 0)
        slot += 1
    return slot


def test_tso_packet_leaves_as_valid_mss_segments():
    """Segments of MSS bytes with both checksums right, FIN and PSH on the last only."""
    r = rig()
    r.tx_ring(n=64)
    data = bytes(range(256)) * 20
    r.wr("TDT", post(r, as_ixgbe_tso(tcp_packet(data, seq=77, flags=0x19)), mss=1460))
    frames = r.port.frames
    assert [len(dpkt.ethernet.Ethernet(f).data.data.data) for f in frames] == [1460] * 3 + [740]
    assert all(checksums_ok(f) for f in frames)
    assert b"".join(dpkt.ethernet.Ethernet(f).data.data.data for f in frames) == data
    assert [dpkt.ethernet.Ethernet(f).data.data.flags for f in frames] == [0x10] * 3 + [0x19]


def test_without_tse_txsm_completes_one_checksum():
    """IXSM and TXSM without TSE: both checksums of the one frame inserted."""
    r = rig()
    r.tx_ring(n=16)
    packet = bytearray(tcp_packet(bytes(range(200))))
    seed = sum(int.from_bytes(a[i:i + 2], "big") for a in (IP_SRC, IP_DST) for i in (0, 2)) + 6 + len(packet) - 34
    packet[50:52] = (seed % 0xFFFF).to_bytes(2, "big")
    packet[24:26] = b"\0\0"                # IXSM sums the header with its checksum field zeroed
    r.wr("TDT", post(r, bytes(packet), mss=0, tse=False))
    assert len(r.port.frames) == 1 and checksums_ok(r.port.frames[0])


def test_mss_zero_and_headers_past_the_packet_are_dropped_and_counted():
    for kwargs, packet in (({"mss": 0}, tcp_packet(bytes(3000))), ({"mss": 1460, "hdr_len": 200, "paylen": 0},
                                                                    tcp_packet(bytes(100)))):
        r = rig()
        r.tx_ring(n=16)
        r.wr("TDT", post(r, as_ixgbe_tso(packet), **kwargs))
        assert r.port.frames == [] and r.dev.errors["tx_bad_tso"] == 1
        r.tx_desc(8, frame(OTHER, 100))
        r.wr("TDT", 9)
        assert r.port.frames == [frame(OTHER, 100)]


u8, u16, u32 = st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctx=st.tuples(u8, u8, u16, u8, u8, u16, u32, u8, u8, u16), popts=u8, cmd=u8, size=st.integers(1, 9000))
def test_any_context_and_data_fields_never_raise(ctx, popts, cmd, size):
    """Any context and data descriptor a guest writes: the NIC never raises,
    no frame leaves larger than a TSO packet's headers and MSS allow, and a
    legacy frame after it goes out."""
    r = rig()
    r.tx_ring(n=16)
    s.TX_CTXT.pack_into(r.mem.buf, TX_RING, *ctx[:6], ctx[6] | s.TX_CTXT_DEXT, *ctx[7:])
    r.mem.write(TX_BUFS, tcp_packet(bytes(size)))
    s.TX_DESC.pack_into(r.mem.buf, TX_RING + 16, TX_BUFS, (size + 54) & 0xFFFF, DATA,
                        cmd | s.TXD_CMD_DEXT | s.TXD_CMD_EOP, 0, popts, 0)
    r.wr("TDT", 2)
    sent = len(r.port.frames)
    assert all(len(f) <= max(size + 54, 255 + 0xFFFF) for f in r.port.frames)
    r.tx_desc(2, frame(OTHER, 100))
    r.wr("TDT", 3)
    assert len(r.port.frames) == sent + 1 and r.port.frames[-1] == frame(OTHER, 100)


def test_rxcsum_tuofl_reports_tcpcs_and_tcpe():
    """RXCSUM off: no checksum indication; TUOFL: TCPCS, and TCPE for a damaged segment."""
    good = bytearray(tcp_packet(bytes(range(100))))
    good[:6] = MAC
    damaged = bytearray(good)
    damaged[-1] ^= 0x04
    out = {}
    for name, rxcsum, data in (("off", 0, good), ("good", s.RXCSUM_TUOFL, good), ("bad", s.RXCSUM_TUOFL, damaged)):
        r = rig()
        r.rx_ring()
        r.wr("RXCSUM", rxcsum)
        assert r.deliver(bytes(data))
        _, _, _, status, errors, _ = r.rx_desc(0)
        out[name] = (status & s.RXD_STAT_TCPCS, errors & s.RXD_ERR_TCPE)
    assert out == {"off": (0, 0), "good": (s.RXD_STAT_TCPCS, 0), "bad": (s.RXD_STAT_TCPCS, s.RXD_ERR_TCPE)}
