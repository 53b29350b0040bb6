"""The 82599's offloads: advanced context descriptors with TSE, IXSM and
TXSM (the NIC cuts a TSO packet into MTU frames and inserts checksums),
the receive checksum status (IPCS, L4CS, IPE, TCPE), what a hostile driver
gets for a bad context, and the ixgbe driver using them under the guest's
TCP.  Segments are parsed and checked with dpkt."""

from __future__ import annotations

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovirt.net.headers import pseudo_header_sum
from iovirt.spec import ixgbe as s
from test_ixgbe import MAC, PEER_MAC, TX_BUFS, TX_RING, arrivals, bare_metal, frame, rig

IP_SRC, IP_DST = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
CTXT = s.ADVTXD_DTYP_CTXT | s.TXD_CMD_DEXT | s.ADVTXD_TUCMD_IPV4 | s.ADVTXD_TUCMD_L4T_TCP
DATA = s.ADVTXD_DTYP_DATA | s.TXD_CMD_DEXT | s.TXD_CMD_IFCS
LAST = s.TXD_CMD_EOP | s.TXD_CMD_RS


def tcp_packet(payload: bytes, seq: int = 1000, flags: int = 0x18, ip_id: int = 0, options: bytes = b"") -> bytes:
    tcph = dpkt.tcp.TCP(sport=5001, dport=80, seq=seq, ack=7, flags=flags, win=100, opts=options)
    tcph.off = (20 + len(options)) // 4
    tcph.data = payload
    ip = dpkt.ip.IP(src=IP_SRC, dst=IP_DST, p=6, id=ip_id, data=tcph)
    return bytes(dpkt.ethernet.Ethernet(dst=PEER_MAC, src=MAC, type=0x0800, data=ip))


def as_ixgbe_tso(packet: bytes) -> bytes:
    """What ixgbe_tso leaves in the headers: IPv4 total length and checksum
    zero, the TCP checksum seeded with the pseudo-header's sum without length."""
    ihl = (packet[14] & 0xF) * 4
    seed = pseudo_header_sum(int.from_bytes(IP_SRC, "big"), int.from_bytes(IP_DST, "big"), 6, 0) % 0xFFFF
    head = bytearray(packet)
    head[16:18] = head[24:26] = b"\0\0"
    head[14 + ihl + 16:14 + ihl + 18] = seed.to_bytes(2, "big")
    return bytes(head)


def post_tso(r, packet: bytes, mss: int, *, first: int = 0, chunk: int = 2048, l4len: int | None = None,
             iplen: int = 20, cc: int = s.ADVTXD_CC, paylen: int | None = None) -> int:
    """A context descriptor at ``first`` and the packet in data descriptors of
    ``chunk`` bytes after it, the first with TSE, IXSM, TXSM; the next free slot."""
    hdrlen = 14 + iplen + ((packet[14 + iplen + 12] >> 4) * 4 if l4len is None else l4len)
    l4 = hdrlen - 14 - iplen
    s.TX_CTXT.pack_into(r.mem.buf, TX_RING + 16 * first, 14 << s.ADVTXD_MACLEN_SHIFT | iplen, 0, CTXT,
                        mss << s.ADVTXD_MSS_SHIFT | l4 << s.ADVTXD_L4LEN_SHIFT)
    olinfo = cc | s.ADVTXD_POPTS_IXSM | s.ADVTXD_POPTS_TXSM | (
        len(packet) - hdrlen if paylen is None else paylen) << s.ADVTXD_PAYLEN_SHIFT
    slot = first + 1
    for at in range(0, len(packet), chunk):
        piece = packet[at:at + chunk]
        buf = TX_BUFS + at
        r.mem.write(buf, piece)
        last = LAST if at + chunk >= len(packet) else 0
        s.TX_DESC.pack_into(r.mem.buf, TX_RING + 16 * slot, buf, DATA | s.ADVTXD_DCMD_TSE | last | len(piece), olinfo)
        slot += 1
    return slot


def checksums_ok(frame_bytes: bytes) -> bool:
    """dpkt recomputes both checksums of a copy with them zeroed; they must equal the frame's."""
    ip = dpkt.ethernet.Ethernet(frame_bytes).data
    raw = bytes(ip)
    ip.sum, ip.data.sum = 0, 0
    again = bytes(dpkt.ip.IP(bytes(ip)))
    ihl = ip.hl * 4
    return again[10:12] == raw[10:12] and again[ihl + 16:ihl + 18] == raw[ihl + 16:ihl + 18]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(1, 24000), mss=st.sampled_from([88, 536, 1000, 1448, 1460]), seq=st.integers(0, 2**32 - 1),
       flags=st.sampled_from([0x10, 0x18, 0x19, 0x98, 0x99]), ip_id=st.integers(0, 0xFFFF),
       options=st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(8), bytes([1] * 40)]),
       chunk=st.sampled_from([54 + 40, 1000, 2048]))
def test_tso_segments_are_valid_tcp_frames(size, mss, seq, flags, ip_id, options, chunk):
    """Whatever the payload, MSS, options and descriptor split, the NIC puts
    MTU frames on the wire that dpkt parses with both checksums right: IP
    total length its own (short ones padded to 60 bytes), IP ID one more
    each, sequence numbers continuing, at most MSS of data (exactly MSS but
    the last), FIN and PSH on the last only, CWR on the first only, and the
    data joining up to the packet's."""
    r = rig()
    r.tx_ring(n=512)
    data = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(size))
    nxt = post_tso(r, as_ixgbe_tso(tcp_packet(data, seq, flags, ip_id, options)), mss, chunk=chunk)
    r.wr("TDT0", nxt)
    r.run()
    frames = arrivals(r)
    assert len(frames) == -(-size // mss) and r.dev.errors == {}
    joined = b""
    for n, got in enumerate(frames):
        assert checksums_ok(got)
        ip = dpkt.ethernet.Ethernet(got).data
        seg = ip.data
        last = n == len(frames) - 1
        assert ip.len == 20 + seg.off * 4 + len(seg.data) and len(got) == max(60, 14 + ip.len)
        assert ip.id == (ip_id + n) & 0xFFFF
        assert seg.seq == (seq + len(joined)) % (1 << 32) and seg.opts == options
        assert len(seg.data) == mss or last and 0 < len(seg.data) <= mss
        assert bool(seg.flags & 0x09) == (last and bool(flags & 0x09))
        assert bool(seg.flags & 0x80) == (n == 0 and bool(flags & 0x80))
        joined += seg.data
    assert joined == data
    assert r.rd("GPTC") == len(frames)


def test_a_tcp_checksum_seeded_wrong_comes_out_wrong():
    """The NIC sums what the driver seeded: a packet left with its software
    checksum (not the pseudo-header's sum) leaves with bad TCP checksums."""
    r = rig()
    r.tx_ring(n=16)
    packet = bytearray(as_ixgbe_tso(tcp_packet(bytes(3000))))
    packet[14 + 20 + 16:14 + 20 + 18] = b"\x12\x34"
    r.wr("TDT0", post_tso(r, bytes(packet), 1460))
    r.run()
    assert len(arrivals(r)) == 3 and not any(checksums_ok(f) for f in arrivals(r))


def test_txsm_alone_inserts_the_tcp_checksum_of_one_frame():
    """Without TSE a context with TXSM completes a checksum seeded with the
    pseudo-header's sum with the length (CHECKSUM_PARTIAL); without TXSM the
    frame leaves as it was."""
    r = rig()
    r.tx_ring(n=16)
    packet = bytearray(tcp_packet(bytes(range(200)) * 5))
    seed = pseudo_header_sum(int.from_bytes(IP_SRC, "big"), int.from_bytes(IP_DST, "big"), 6, len(packet) - 34)
    packet[50:52] = (seed % 0xFFFF).to_bytes(2, "big")
    s.TX_CTXT.pack_into(r.mem.buf, TX_RING, 14 << s.ADVTXD_MACLEN_SHIFT | 20, 0, CTXT, 0)
    for slot, popts in ((1, s.ADVTXD_POPTS_TXSM), (2, 0)):
        r.mem.write(TX_BUFS + slot * 0x1000, bytes(packet))
        s.TX_DESC.pack_into(r.mem.buf, TX_RING + 16 * slot, TX_BUFS + slot * 0x1000, DATA | LAST | len(packet),
                            s.ADVTXD_CC | popts | len(packet) << s.ADVTXD_PAYLEN_SHIFT)
    r.wr("TDT0", 3)
    r.run()
    done, untouched = arrivals(r)
    assert checksums_ok(done) and done[:50] == untouched[:50] and untouched == bytes(packet)


def bad(r, why: str) -> None:
    """The packet was dropped and counted; its descriptors were done; a good
    frame after it still goes out."""
    assert r.dev.errors[why] == 1 and arrivals(r) == []
    good = frame(PEER_MAC, 200, seed=5)
    head = r.rd("TDH0")
    r.tx_desc(head, good)
    r.wr("TDT0", head + 1)
    r.run()
    assert arrivals(r) == [good]


def test_mss_zero_is_dropped_and_counted():
    r = rig()
    r.tx_ring(n=16)
    r.wr("TDT0", post_tso(r, as_ixgbe_tso(tcp_packet(bytes(3000))), 0))
    r.run()
    bad(r, "tx_bad_tso")


@pytest.mark.parametrize("payload, descriptors, counter", [
    (100, {"l4len": 200, "paylen": 0}, "tx_bad_tso"),           # headers beyond the packet
    (3000, {"cc": 0}, "tx_no_context"),                         # TSO without a context
    (3000, {"paylen": 2000}, "tx_bad_tso"),                     # a payload other than PAYLEN
], ids=["headers-beyond-the-packet", "tso-without-a-context", "payload-other-than-paylen"])
def test_a_bad_tso_request_is_dropped_and_counted(payload, descriptors, counter):
    r = rig()
    r.tx_ring(n=16)
    r.wr("TDT0", post_tso(r, as_ixgbe_tso(tcp_packet(bytes(payload))), 1460, **descriptors))
    r.run()
    bad(r, counter)


def test_a_context_without_data_sends_nothing_and_is_used_by_the_next_packet():
    """Contexts alone put nothing on the wire; a later TSO packet naming the
    slot is cut by the MSS the last context there gave."""
    r = rig()
    r.tx_ring(n=16)
    for slot in range(3):
        s.TX_CTXT.pack_into(r.mem.buf, TX_RING + 16 * slot, 14 << s.ADVTXD_MACLEN_SHIFT | 20, 0, CTXT,
                            (500 + slot) << s.ADVTXD_MSS_SHIFT | 20 << s.ADVTXD_L4LEN_SHIFT)
    r.wr("TDT0", 3)
    r.run()
    assert arrivals(r) == []
    packet = as_ixgbe_tso(tcp_packet(bytes(1000)))
    r.mem.write(TX_BUFS, packet)
    s.TX_DESC.pack_into(r.mem.buf, TX_RING + 48, TX_BUFS, DATA | s.ADVTXD_DCMD_TSE | LAST | len(packet),
                        s.ADVTXD_CC | s.ADVTXD_POPTS_TXSM | s.ADVTXD_POPTS_IXSM | 1000 << s.ADVTXD_PAYLEN_SHIFT)
    r.wr("TDT0", 4)
    r.run()
    assert [len(dpkt.ethernet.Ethernet(f).data.data.data) for f in arrivals(r)] == [502, 498]


u32 = st.integers(0, 2**32 - 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(macip=u32, tucmd=u32, mss_l4len=u32, olinfo=u32, size=st.integers(0, 9000), tse=st.booleans())
def test_any_context_and_offload_fields_never_raise(macip, tucmd, mss_l4len, olinfo, size, tse):
    """Any context descriptor and data descriptor fields a guest writes: the
    NIC never raises, sends no frame over 15.5 KB, and the ring goes on."""
    r = rig()
    r.tx_ring(n=16)
    s.TX_CTXT.pack_into(r.mem.buf, TX_RING, macip, 0, tucmd | s.ADVTXD_DTYP_CTXT | s.TXD_CMD_DEXT, mss_l4len)
    packet = tcp_packet(bytes(size))
    r.mem.write(TX_BUFS, packet)
    s.TX_DESC.pack_into(r.mem.buf, TX_RING + 16, TX_BUFS, DATA | LAST | (s.ADVTXD_DCMD_TSE if tse else 0)
                        | len(packet) & 0xFFFF, olinfo)
    r.wr("TDT0", 2)
    r.run()
    assert all(len(f) <= s.MAX_TX_FRAME for f in arrivals(r))
    sent = len(arrivals(r))
    good = frame(PEER_MAC, 200, seed=5)
    r.tx_desc(2, good)
    r.wr("TDT0", 3)
    r.run()
    assert len(arrivals(r)) == sent + 1 and arrivals(r)[-1] == good


# ---- receive checksums ------------------------------------------------------------------
def rx_status(packet: bytes) -> int:
    r = rig()
    r.rx_ring()
    r.peer.send(packet)
    r.run()
    return r.rx_wb(0)[3]


def test_rx_reports_checked_checksums_and_flags_the_wrong_ones():
    """A good TCP frame: IPCS and L4CS, no error; a damaged payload: TCPE; a
    damaged IPv4 header checksum: IPE; a non-IP frame: nothing checked."""
    good = bytearray(tcp_packet(bytes(range(100)), ip_id=9))
    good[:6], good[6:12] = MAC, PEER_MAC
    checked = s.RXD_STAT_IPCS | s.RXD_STAT_L4CS
    errors = s.RXDADV_ERR_IPE | s.RXDADV_ERR_TCPE
    assert rx_status(bytes(good)) & (checked | errors) == checked
    damaged = bytearray(good)
    damaged[-1] ^= 0x20
    assert rx_status(bytes(damaged)) & (checked | errors) == checked | s.RXDADV_ERR_TCPE
    header = bytearray(good)
    header[24] ^= 0x01
    assert rx_status(bytes(header)) & s.RXDADV_ERR_IPE
    assert rx_status(frame(MAC, 100)) & (checked | errors) == 0


# ---- the driver -------------------------------------------------------------------------
def guest_receives(packet: bytes, rx: bool) -> tuple[int, dict]:
    """A TCP segment from the peer to a port of the guest with no socket:
    the times the guest's stack summed a checksum itself, and its drop counts."""
    m = bare_metal()
    m.guest.ethtool_features(MAC, gso=True, gro=False, tso=True, tx=True, rx=rx)
    acct = m.vm.vcpus[0].acct
    before = acct["csum"]
    m.peer.send(packet)
    m.sim.run(until=m.vm.vcpus[0].cursor + 1_000_000)
    return acct["csum"] - before, dict(m.guest.interfaces[MAC].stats)


def to_guest(payload: bytes, damage: bool = False) -> bytes:
    tcph = dpkt.tcp.TCP(sport=80, dport=5001, seq=1, ack=1, flags=0x18, win=100, data=payload)
    ip = dpkt.ip.IP(src=IP_DST, dst=IP_SRC, p=6, data=tcph)
    packet = bytearray(bytes(dpkt.ethernet.Ethernet(dst=MAC, src=PEER_MAC, type=0x0800, data=ip)))
    if damage:
        packet[-1] ^= 0x01
    return bytes(packet)


def test_the_driver_trusts_the_nics_rx_checksum_unless_told_not_to_or_it_found_an_error():
    """ixgbe_rx_checksum: with L4CS and no TCPE the stack neither sums nor
    checks the segment; with ``ethtool -K rx off`` it sums it; a segment the
    NIC flagged (TCPE) is summed by the stack and dropped."""
    summed_on, stats_on = guest_receives(to_guest(bytes(500)), rx=True)
    summed_off, stats_off = guest_receives(to_guest(bytes(500)), rx=False)
    summed_bad, stats_bad = guest_receives(to_guest(bytes(500), damage=True), rx=True)
    assert summed_on == 0 and stats_on.get("tcp_no_socket") == 1
    assert summed_off == 1 and stats_off.get("tcp_no_socket") == 1
    assert summed_bad == 1 and stats_bad.get("tcp_bad_checksum") == 1 and "tcp_no_socket" not in stats_bad


def test_ethtool_rx_off_reaches_every_queue_of_the_port():
    """ethtool -K rx off: no queue of a multi-queue port trusts the NIC any more."""
    m = bare_metal(vcpus=2)
    assert [ring.rx_csum for ring in m.driver.rings] == [True, True]
    m.guest.ethtool_features(MAC, gso=True, gro=True, tso=True, tx=True, rx=False)
    assert [ring.rx_csum for ring in m.driver.rings] == [False, False]
