"""VMXNET3's offloads on an ESXi host: the SOP descriptor's OM_TSO and
OM_CSUM as vmxnet3_tq_xmit writes them (a TSO packet handed on whole with
its MSS, the segments it stands for), UPT1_F_RXCSUM and the completion's
checksum bits as vmxnet3_rx_csum reads them, txNumDeferred against the
device's txThreshold, and what a hostile guest gets for a bad request.  A
stream's TSO packets crossing the vSwitch whole: tests/test_tcp_workloads.py."""

from __future__ import annotations

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovirt.devices.vmxnet3 import MAX_TSO_FRAME
from iovirt.net.gso import GsoFrame, ValidatedFrame, segment
from iovirt.net.headers import pseudo_header_sum
from iovirt.spec import vmxnet3 as s
from test_ixgbe_offload import IP_DST, IP_SRC, checksums_ok, tcp_packet
from test_vmxnet3 import esxi, parts

_TXQ = s.TX_QUEUE_DESC.offsets


class Sent:
    """The vNIC's vSwitch port, recording what the device hands it and the MSS beside a TSO packet."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, int]] = []

    def send(self, cpu, frame: bytes, gso_size: int = 0) -> None:
        self.frames.append((bytes(frame), gso_size))

    def flush(self, cpu) -> None:
        pass


def rig(tx_csum: bool = True, tso: bool = True):
    w = esxi()
    dev, drv, vcpu = parts(w)
    dev.port = Sent()
    drv.stack.tx_csum, drv.stack.tso = tx_csum, tso
    return w, dev, drv


def settle(w) -> None:
    w.sim.run(until=w.sim.now + 1_000_000)


def sop(drv, slot: int) -> tuple[int, int, int, int]:
    """(om, hlen, msscof, length) of the descriptor at ``slot``."""
    _, dword2, dword3 = s.TX_DESC.unpack_from(drv.buf, drv.tx_ring + slot * s.DESC_SIZE)
    return (dword3 >> s.TXD_OM_SHIFT & s.TXD_OM_MASK, dword3 & s.TXD_HLEN_MASK, dword2 >> s.TXD_MSSCOF_SHIFT,
            dword2 & s.TXD_LEN_MASK)


def partial(packet: bytes) -> bytes:
    """The TCP checksum as the stack leaves it for the device (CHECKSUM_PARTIAL): the pseudo-header's sum."""
    seed = pseudo_header_sum(int.from_bytes(IP_SRC, "big"), int.from_bytes(IP_DST, "big"), 6, len(packet) - 34)
    return packet[:50] + (seed % 0xFFFF).to_bytes(2, "big") + packet[52:]


# ---- transmit ----------------------------------------------------------------------------------
def test_a_tso_packet_reaches_the_vswitch_whole_with_its_mss_and_cuts_into_valid_segments():
    """vmxnet3_tq_xmit: headers in the SOP descriptor with OM_TSO, hlen 54 and
    msscof the MSS, the payload in 16 KB descriptors; the device hands the
    packet on whole with its MSS, and the segments it stands for carry the
    payload in order with both checksums right."""
    w, dev, drv = rig()
    data = bytes(i * 7 & 0xFF for i in range(28 * 1460))         # 28 segments, 3 payload descriptors
    first = drv.tx_fill
    assert drv.transmit(GsoFrame.of(tcp_packet(data, flags=0x19), 1460))
    assert sop(drv, first) == (s.OM_TSO, 54, 1460, 54)
    assert (drv.tx_fill - first) % 512 == 4
    settle(w)
    [(packet, mss)] = dev.port.frames
    assert mss == 1460 and dev.tx_stats[0] == 1 and dev.tx_stats[1] == len(packet)    # TSOPktsTxOK, TSOBytesTxOK
    frames = segment(GsoFrame.of(packet, mss))
    assert len(frames) == 28 and all(checksums_ok(f) for f in frames)
    assert b"".join(dpkt.ethernet.Ethernet(f).data.data.data for f in frames) == data
    assert [dpkt.ethernet.Ethernet(f).data.data.flags for f in frames] == [0x10] * 27 + [0x19]
    assert drv.gso_free and len(drv.gso_free) == len(drv.gso_bufs)   # the completion gave its buffer back


@pytest.mark.parametrize("tx_csum", [True, False])
def test_om_csum_asks_the_device_to_complete_the_tcp_checksum_unless_tx_is_off(tx_csum):
    """CHECKSUM_PARTIAL: OM_CSUM with hlen the TCP header's offset and msscof
    its checksum field; the frame leaves with its checksum right.  With
    ``ethtool -K tx off`` the stack sums and the descriptor asks nothing."""
    w, dev, drv = rig(tx_csum=tx_csum)
    packet = tcp_packet(bytes(range(200)))
    first = drv.tx_fill
    drv.transmit(partial(packet) if tx_csum else packet)
    assert sop(drv, first)[:3] == ((s.OM_CSUM, 34, 50) if tx_csum else (s.OM_NONE, 0, 0))
    settle(w)
    assert dev.port.frames == [(packet, 0)] and checksums_ok(packet)


def post(drv, pieces: list[bytes], om: int, hlen: int, msscof: int) -> None:
    """Descriptors as a driver writes them, true or not: the SOP's om, hlen and msscof, EOP on the last, TXPROD."""
    for n, piece in enumerate(pieces):
        buf = drv.tx_bufs[drv.tx_fill]
        drv.mem.write(buf, piece)
        drv.mem.store(s.TX_DESC.struct, drv.tx_ring + drv.tx_fill * s.DESC_SIZE, buf,
                      len(piece) | drv.tx_gen << s.TXD_GEN_SHIFT | (0 if n else msscof << s.TXD_MSSCOF_SHIFT),
                      (0 if n else hlen | om << s.TXD_OM_SHIFT) | (s.TXD_EOP | s.TXD_CQ if n == len(pieces) - 1 else 0))
        drv._advance_tx()
    drv.wr0("TXPROD", drv.tx_fill)


PACKET = tcp_packet(bytes(range(250)) * 12)                      # 3,000 bytes of payload
NEXT = PACKET[:12] + b"\x88\xb5" + bytes(86)                       # a frame that asks for nothing


@pytest.mark.parametrize("pieces, om, hlen, msscof, why", [
    ([PACKET[:2000], PACKET[2000:]], s.OM_TSO, 54, 0, "tx_bad_tso"),           # MSS 0
    ([PACKET[:2000], PACKET[2000:]], s.OM_TSO, 54, 40, "tx_bad_tso"),          # below any TCP sender's MSS
    ([PACKET[:40], PACKET[40:2000], PACKET[2000:]], s.OM_TSO, 54, 1460, "tx_bad_tso"),   # headers past the first
    ([PACKET[:60]], s.OM_TSO, 1000, 1460, "tx_bad_tso"),                       # headers past the packet
    ([PACKET[:2000], PACKET[2000:]], s.OM_TSO, 60, 1460, "tx_bad_tso"),        # not the packet's headers
    ([PACKET[:200]], s.OM_CSUM, 34, 250, "tx_bad_csum"),                       # the field past the packet
    ([PACKET[:200]], s.OM_ENCAP, 54, 1460, "tx_bad_om"),                       # revision 4's mode
], ids=["mss0", "mss40", "hlen-past-first", "hlen-past-packet", "hlen-wrong", "csum-past", "encap"])
def test_a_bad_offload_request_is_dropped_counted_and_completed(pieces, om, hlen, msscof, why):
    """Nothing leaves, the reason and pktsTxError count it, the descriptors
    come back to the driver, and the next frame goes out."""
    w, dev, drv = rig()
    post(drv, pieces, om, hlen, msscof)
    settle(w)
    assert dev.port.frames == [] and dev.errors[why] == 1 and dev.tx_stats[8] == 1
    assert drv.tx_done == drv.tx_fill and not dev.stopped[0]
    drv.transmit(NEXT)
    settle(w)
    assert dev.port.frames == [(NEXT, 0)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(om=st.integers(0, 3), hlen=st.integers(0, s.TXD_HLEN_MASK), msscof=st.integers(0, 0x3FFF),
       cut=st.integers(1, len(PACKET) - 1), split=st.booleans())
def test_any_offload_fields_never_raise_and_the_next_frame_goes_out(om, hlen, msscof, cut, split):
    """Whatever om, hlen and msscof a guest writes: the device never raises,
    sends the packet or drops it with a count, never hands on a TSO packet
    whose MSS no TCP sender would use, and the next frame goes out."""
    w, dev, drv = rig()
    pieces = [PACKET[:min(cut, 2048)], PACKET[min(cut, 2048):]] if split else [PACKET[:min(cut, 2048)]]
    post(drv, pieces, om, hlen, msscof)
    settle(w)
    sent = dev.port.frames
    assert len(sent) + dev.tx_stats[8] == 1 and all(len(f) <= MAX_TSO_FRAME and (not m or m >= 88) for f, m in sent)
    drv.transmit(NEXT)
    settle(w)
    assert dev.port.frames[-1] == (NEXT, 0)


def test_the_driver_rings_txprod_when_the_deferred_packets_reach_the_devices_threshold():
    """txNumDeferred grows by the packets the device will send, a TSO
    packet's segments included: with a threshold of 4, two frames wait, a
    TSO packet of 3 segments after them makes 5 and rings TXPROD."""
    w, dev, drv = rig()
    threshold = drv.queue_desc + _TXQ["txThreshold"]
    drv.mem.store(s.TX_QUEUE_DESC.field_struct("txThreshold"), threshold, 4)   # as a device may set it
    for n in range(2):
        drv.transmit(NEXT)
    settle(w)
    deferred = s.TX_QUEUE_DESC.field_struct("txNumDeferred").unpack_from(drv.buf, drv.queue_desc)[0]
    assert dev.port.frames == [] and deferred == 2
    drv.transmit(GsoFrame.of(tcp_packet(bytes(3 * 1460)), 1460))
    settle(w)
    deferred = s.TX_QUEUE_DESC.field_struct("txNumDeferred").unpack_from(drv.buf, drv.queue_desc)[0]
    assert [m for _, m in dev.port.frames] == [0, 0, 1460] and deferred == 0


# ---- receive -------------------------------------------------------------------------------------
def received(validated: bool, rx: bool = True) -> tuple[int, bool, int]:
    """A TCP segment for the guest, validated by the host's NIC or not, with
    ``ethtool -K rx`` on or off: its completion's dword0 and dword3, and what the driver told the stack."""
    w = esxi()
    dev, drv, _ = parts(w)
    drv.rx_csum = rx
    told = []
    drv.stack.receive = lambda frame, csum_valid=False: told.append(csum_valid)
    packet = bytes(drv.mac) + tcp_packet(bytes(100))[6:]
    comp = drv.rx_comp + drv.rc_next * s.DESC_SIZE
    dev.receive(w.vms["vm1"].nics[0].world, ValidatedFrame(packet) if validated else packet)
    settle(w)
    dword0, _, _, dword3 = s.RX_COMP.unpack_from(drv.buf, comp)
    return dword0, told == [True], dword3


def test_a_frame_the_hosts_nic_validated_is_handed_up_checked():
    """UPT1_F_RXCSUM: cnc clear, v4, tcp, ipc, tuc set; the driver hands it up CHECKSUM_UNNECESSARY."""
    dword0, valid, dword3 = received(True)
    assert not dword0 & s.RCD_CNC and valid
    assert dword3 & 0xFF0000 == s.RCD_V4 | s.RCD_TCP | s.RCD_IPC | s.RCD_TUC | s.RCD_FCS


@pytest.mark.parametrize("validated, rx", [(False, True), (True, False)], ids=["unvalidated", "rx-off"])
def test_an_unvalidated_frame_or_rx_off_gets_cnc_and_is_summed_by_the_stack(validated, rx):
    """A frame nobody checked, or ``ethtool -K rx off`` (UPDATE_FEATURE
    without UPT1_F_RXCSUM): cnc, no checksum bits."""
    dword0, valid, dword3 = received(validated, rx)
    assert dword0 & s.RCD_CNC and not valid and not dword3 & 0xFF0000


def test_ethtool_rx_off_reaches_the_device_through_update_feature():
    w = esxi()
    dev, drv, _ = parts(w)
    assert dev.upt_features == s.UPT1_F_RXCSUM
    drv.rx_csum = False
    assert dev.upt_features == 0
    drv.rx_csum = True
    assert dev.upt_features == s.UPT1_F_RXCSUM

