"""Guest IPv4 stack: two stacks back to back over a test wire, frames checked
against dpkt (an independent parser), checksums and the RX path fuzzed."""

from __future__ import annotations

import math
from ipaddress import IPv4Address, IPv4Interface
from types import SimpleNamespace

import dpkt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iovirt.net.stack import IPv4Stack
from iovirt.net.headers import (
    ETH_BROADCAST,
    csum_fold,
    csum_partial,
    csum_reduced,
)
from iovirt.net.stack import UNRES_QLEN
from iovirt.sim.engine import Sim
from iovirt.sim.profile import CostProfile, ProfileFile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import inet

STACK_NS = 1000
COPY_NS_PER_B = 0.5
HOT_NS_PER_B = 0.125
PROFILE = CostProfile(
    ProfileFile.model_validate(
        {
            "name": "test",
            "description": "round numbers for unit tests",
            "cpu": {"model": "test", "ghz": 2.0, "source": "test"},
            "costs": {
                "guest_stack": {"value": STACK_NS, "unit": "ns", "source": "test"},
                "copy": {"value": 0, "unit": "ns", "per_byte": {"value": COPY_NS_PER_B, "unit": "ns/B"},
                         "source": "test"},
                "copy_hot": {"value": 0, "unit": "ns", "per_byte": {"value": HOT_NS_PER_B, "unit": "ns/B"},
                             "source": "test"},
            },
        }
    ),
    "test",
)
MAC_A = bytes.fromhex("525400000001")
MAC_B = bytes.fromhex("525400000002")
IP_A = "10.0.0.1"
IP_B = "10.0.0.2"


class Wire:
    """Test netdev: takes up to ``room`` frames, records them and hands each
    to the peer stack through the event queue."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.stack: IPv4Stack | None = None
        self.peer: IPv4Stack | None = None
        self.frames: list[bytes] = []
        self.room = math.inf

    def transmit(self, frame: bytes) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.frames.append(frame)
        if self.peer is not None:
            self.sim.after(0, self.peer.receive, frame)
        return True

    def complete(self, n: int) -> None:
        self.room += n
        self.stack.tx_wake()


def make_net(**stack_args) -> SimpleNamespace:
    sim, ledger = Sim(), Ledger(PROFILE)
    wire_a, wire_b = Wire(sim), Wire(sim)
    a = IPv4Stack(Resource("a/vcpu0", "vcpu", ledger), MAC_A, IPv4Interface(IP_A + "/24"), wire_a, **stack_args)
    b = IPv4Stack(Resource("b/vcpu0", "vcpu", ledger), MAC_B, IPv4Interface(IP_B + "/24"), wire_b, **stack_args)
    wire_a.stack, wire_a.peer = a, b
    wire_b.stack, wire_b.peer = b, a
    return SimpleNamespace(sim=sim, ledger=ledger, a=a, b=b, wire_a=wire_a, wire_b=wire_b)


def listen(stack: IPv4Stack, port: int) -> list:
    inbox: list = []
    stack.udp_socket(port).on_datagram = lambda payload, ip, sport: inbox.append((payload, ip, sport))
    return inbox


def resolved_net(**stack_args) -> SimpleNamespace:
    """A pair whose ARP tables already hold each other."""
    net = make_net(**stack_args)
    net.a.ping(IP_B, 1, 0, b"", lambda *reply: None)
    net.sim.run()
    net.wire_a.frames.clear()
    return net


def udp_frame(net: SimpleNamespace, payload: bytes) -> bytes:
    """The frame ``a`` puts on the wire for one datagram to ``b``:9."""
    net.a.udp_socket(5000).sendto(payload, (IP_B, 9))
    return net.wire_a.frames[-1]


def dpkt_frame(ip: dpkt.ip.IP) -> bytes:
    """A frame from ``a`` to ``b`` built by dpkt, checksums computed by dpkt."""
    ip.src, ip.dst = IPv4Address(IP_A).packed, IPv4Address(IP_B).packed
    return bytes(dpkt.ethernet.Ethernet(dst=MAC_B, src=MAC_A, type=dpkt.ethernet.ETH_TYPE_IP, data=ip))


# --- delivery -----------------------------------------------------------------


def test_arp_resolution_then_udp_delivery():
    """The first datagram waits for one broadcast ARP request; the reply flushes it, payload intact."""
    net = make_net()
    inbox = listen(net.b, 9)
    assert net.a.udp_socket(5000).sendto(b"hello, b", (IP_B, 9))
    arp = dpkt.ethernet.Ethernet(net.wire_a.frames[0])
    assert arp.dst == ETH_BROADCAST and arp.type == dpkt.ethernet.ETH_TYPE_ARP
    assert arp.arp.op == dpkt.arp.ARP_OP_REQUEST and arp.arp.tpa == IPv4Address(IP_B).packed
    net.sim.run()
    assert inbox == [(b"hello, b", IPv4Address(IP_A), 5000)]
    assert net.a.arp_table == {int(IPv4Address(IP_B)): MAC_B}
    assert net.b.arp_table == {int(IPv4Address(IP_A)): MAC_A}
    assert not net.a.arp_queue


def test_ping_gets_reply_with_same_id_seq_data():
    """An echo request is answered by the peer's stack; on_reply gets the same id, seq and data."""
    net = make_net()
    replies = []
    assert net.a.ping(IPv4Address(IP_B), 0x1234, 7, b"abc" * 20, lambda *r: replies.append(r))
    net.sim.run()
    assert replies == [(0x1234, 7, b"abc" * 20)]
    assert not net.a.echo_waiters


def test_arp_queue_holds_unres_qlen_datagrams_then_drops():
    """Up to unres_qlen datagrams wait for ARP, further ones are refused and counted, the held ones flush in order."""
    net = make_net()
    inbox = listen(net.b, 9)
    sock = net.a.udp_socket(5000)
    sent = [sock.sendto(bytes([i]), (IP_B, 9)) for i in range(UNRES_QLEN + 1)]
    assert sent == [True] * UNRES_QLEN + [False]
    assert net.a.stats["arp_unresolved_dropped"] == 1
    assert len(net.wire_a.frames) == 1
    net.sim.run()
    assert [p for p, _, _ in inbox] == [bytes([i]) for i in range(UNRES_QLEN)]


def test_arp_request_for_another_address_is_not_answered():
    """An ARP request whose target is not our address gets no reply and teaches us nothing."""
    net = make_net()
    request = dpkt.arp.ARP(sha=MAC_A, spa=IPv4Address(IP_A).packed, tha=bytes(6),
                           tpa=IPv4Address("10.0.0.3").packed, op=dpkt.arp.ARP_OP_REQUEST)
    net.b.receive(bytes(dpkt.ethernet.Ethernet(dst=ETH_BROADCAST, src=MAC_A,
                                               type=dpkt.ethernet.ETH_TYPE_ARP, data=request)))
    assert net.wire_b.frames == [] and net.b.arp_table == {}
    assert net.b.stats["arp_not_for_us"] == 1


def test_dpkt_built_datagram_with_ip_options_is_delivered():
    """A datagram built by dpkt, with IP options (IHL 6) and dpkt's checksums, is delivered."""
    net = make_net()
    inbox = listen(net.b, 9)
    udp = dpkt.udp.UDP(sport=53, dport=9, data=b"opts")
    udp.ulen = len(udp)
    net.b.receive(dpkt_frame(dpkt.ip.IP(hl=6, p=dpkt.ip.IP_PROTO_UDP, opts=b"\x01\x01\x01\x00", data=udp)))
    assert inbox == [(b"opts", IPv4Address(IP_A), 53)]


def test_udp_checksum_zero_means_none():
    """A UDP checksum of 0 was not computed by the sender (RFC 768) and is accepted."""
    net = resolved_net()
    inbox = listen(net.b, 9)
    frame = udp_frame(net, b"unchecked")
    net.b.receive(frame[:14 + 20 + 6] + b"\x00\x00" + frame[14 + 20 + 8:])
    assert [p for p, _, _ in inbox] == [b"unchecked"]


def test_udp_to_unbound_port_is_counted():
    """A datagram to a port nobody bound is dropped as udp_no_port."""
    net = resolved_net()
    net.a.udp_socket(5000).sendto(b"x", (IP_B, 4242))
    net.sim.run()
    assert net.b.stats["udp_no_port"] == 1


# --- frames against dpkt --------------------------------------------------------


def test_udp_frame_fields_and_checksums_match_dpkt():
    """dpkt parses our UDP frame to the right fields, and recomputing both checksums gives ours."""
    net = resolved_net()
    eth = dpkt.ethernet.Ethernet(udp_frame(net, b"payload of odd length"))
    ip, udp = eth.ip, eth.ip.udp
    assert (eth.dst, eth.src, eth.type) == (MAC_B, MAC_A, dpkt.ethernet.ETH_TYPE_IP)
    assert (ip.v, ip.hl, ip.len, ip.df, ip.ttl, ip.p) == (4, 5, 20 + 8 + 21, 1, 64, dpkt.ip.IP_PROTO_UDP)
    assert (ip.src, ip.dst) == (IPv4Address(IP_A).packed, IPv4Address(IP_B).packed)
    assert (udp.sport, udp.dport, udp.ulen, udp.data) == (5000, 9, 8 + 21, b"payload of odd length")
    ours = (ip.sum, udp.sum)
    ip.sum = udp.sum = 0
    bytes(ip)
    assert (ip.sum, udp.sum) == ours


def test_icmp_echo_frame_checksum_matches_dpkt():
    """dpkt parses our echo request and recomputes the same ICMP checksum."""
    net = resolved_net()
    net.a.ping(IP_B, 99, 3, b"ping data", lambda *r: None)
    icmp = dpkt.ethernet.Ethernet(net.wire_a.frames[-1]).ip.icmp
    assert (icmp.type, icmp.code, icmp.echo.id, icmp.echo.seq, icmp.echo.data) == (8, 0, 99, 3, b"ping data")
    ours, icmp.sum = icmp.sum, 0
    bytes(icmp)
    assert icmp.sum == ours


def test_arp_reply_fields_match_dpkt():
    """Our ARP reply is unicast to the requester, with the addresses swapped as RFC 826 says."""
    net = make_net()
    net.a.ping(IP_B, 1, 1, b"", lambda *r: None)
    net.sim.run()
    eth = dpkt.ethernet.Ethernet(net.wire_b.frames[0])
    assert (eth.dst, eth.src, eth.arp.op) == (MAC_A, MAC_B, dpkt.arp.ARP_OP_REPLY)
    assert (eth.arp.sha, eth.arp.spa) == (MAC_B, IPv4Address(IP_B).packed)
    assert (eth.arp.tha, eth.arp.tpa) == (MAC_A, IPv4Address(IP_A).packed)


# --- drops ------------------------------------------------------------------------


def test_corrupted_ip_header_is_dropped():
    """A flipped bit in the IP header fails the header checksum; nothing is delivered."""
    net = resolved_net()
    inbox = listen(net.b, 9)
    frame = bytearray(udp_frame(net, b"data"))
    frame[14 + 8] ^= 0x01  # TTL
    net.b.receive(bytes(frame))
    assert inbox == [] and net.b.stats["ip_bad_checksum"] == 1


def test_corrupted_udp_payload_is_dropped():
    """A flipped bit in the UDP payload fails the UDP checksum; nothing is delivered."""
    net = resolved_net()
    inbox = listen(net.b, 9)
    frame = bytearray(udp_frame(net, b"data"))
    frame[-1] ^= 0x80
    net.b.receive(bytes(frame))
    assert inbox == [] and net.b.stats["udp_bad_checksum"] == 1


def test_udp_checksum_the_device_validated_is_not_summed_again():
    """udp4_csum_init: with CHECKSUM_UNNECESSARY from the device the stack takes
    the datagram as the device vouched for it, even one whose sum is wrong;
    without it the same frame is dropped."""
    net = resolved_net()
    inbox = listen(net.b, 9)
    frame = bytearray(udp_frame(net, b"data"))
    frame[-1] ^= 0x80
    net.b.receive(bytes(frame), csum_valid=True)
    assert [data for data, *_ in inbox] == [bytes(frame[-4:])] and net.b.stats["udp_bad_checksum"] == 0
    net.b.receive(bytes(frame))
    assert len(inbox) == 1 and net.b.stats["udp_bad_checksum"] == 1


def test_truncated_ip_datagram_is_dropped():
    """A frame shorter than the IP total length is dropped as ip_bad_length."""
    net = resolved_net()
    net.b.receive(udp_frame(net, b"data")[:-1])
    assert net.b.stats["ip_bad_length"] == 1


def test_frame_for_another_mac_is_dropped():
    """The Ethernet filter drops a frame addressed to a MAC that is neither ours nor broadcast."""
    net = resolved_net()
    inbox = listen(net.b, 9)
    frame = udp_frame(net, b"data")
    net.b.receive(bytes.fromhex("525400000099") + frame[6:])
    assert inbox == [] and net.b.stats["eth_not_for_us"] == 1


# --- limits -----------------------------------------------------------------------


def test_payload_over_mtu_is_refused():
    """A payload longer than MTU - 28 raises ValueError; MTU - 28 fits, also with a jumbo MTU."""
    net = resolved_net()
    sock = net.a.udp_socket(5000)
    assert sock.sendto(bytes(1472), (IP_B, 9))
    with pytest.raises(ValueError, match="MTU"):
        sock.sendto(bytes(1473), (IP_B, 9))
    jumbo = resolved_net(mtu=9000)
    assert jumbo.a.udp_socket(5000).sendto(bytes(8972), (IP_B, 9))


def test_destination_off_subnet_has_no_route():
    """Sending outside the interface's subnet raises ValueError("no route ...")."""
    net = make_net()
    with pytest.raises(ValueError, match="no route to 10.0.1.2"):
        net.a.udp_socket(5000).sendto(b"x", ("10.0.1.2", 9))


def test_qdisc_backpressure_and_tx_wake():
    """A refusing device fills the qdisc; past txqueuelen sendto fails; tx_wake drains it and calls on_writable once."""
    net = resolved_net(txqueuelen=3)
    inbox = listen(net.b, 9)
    sock = net.a.udp_socket(5000)
    writable = []
    sock.on_writable = lambda: writable.append(True)
    net.wire_a.room = 0
    assert [sock.sendto(bytes([i]), (IP_B, 9)) for i in range(4)] == [True, True, True, False]
    assert len(net.a.qdisc) == 3 and net.a.stats["tx_dropped"] == 1 and writable == []
    net.wire_a.complete(2)
    assert len(net.a.qdisc) == 1 and writable == [True] and sock.on_writable is None
    net.wire_a.complete(5)
    net.sim.run()
    assert [p for p, _, _ in inbox] == [b"\x00", b"\x01", b"\x02"] and writable == [True]


# --- costs ------------------------------------------------------------------------


def test_each_packet_charges_guest_stack_and_payload_copy():
    """One datagram costs guest_stack + a hot copy of the sender's own buffer on the sender's vCPU,
    guest_stack + a copy of the received frame on the receiver's."""
    net = resolved_net()
    listen(net.b, 9)
    before = dict(net.ledger.events)
    busy = net.a.cpu.busy_ns, net.b.cpu.busy_ns
    udp_frame(net, bytes(100))
    net.sim.run()
    assert net.ledger.events["guest_stack"] - before["guest_stack"] == 2
    assert net.ledger.events["copy"] - before.get("copy", 0) == 1
    assert net.ledger.events["copy_hot"] - before.get("copy_hot", 0) == 1
    assert net.a.cpu.busy_ns - busy[0] == STACK_NS + 100 * HOT_NS_PER_B
    assert net.b.cpu.busy_ns - busy[1] == STACK_NS + 100 * COPY_NS_PER_B


# --- properties ---------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_checksum_equals_dpkt(data):
    """Our Internet checksum equals dpkt's word-by-word one on any data."""
    assert csum_fold(csum_partial(data)) == dpkt.in_cksum(data)


@pytest.mark.parametrize("word_sum", [inet._big_integer_sum, inet._word_array_sum])
@given(data=st.binary(max_size=2000), other=st.integers(0, 1 << 40))
def test_both_interpreters_sums_give_dpkts_checksum(word_sum, data, other):
    """The big-integer sum (CPython's) and the machine-word sum (PyPy's) fold to dpkt's checksum, alone
    and inside a larger total, and are zero only for all-zero data."""
    assert csum_fold(word_sum(data)) == dpkt.in_cksum(data)
    assert csum_fold(other + word_sum(data)) == csum_fold(other + csum_partial(data))
    assert (word_sum(data) == 0) == (not any(data))


@given(st.binary(max_size=2000), st.data())
def test_checksum_verifies_and_detects_one_flipped_bit(data, draw):
    """Data preceded by its checksum folds to 0; flipping any single bit makes it non-zero."""
    message = csum_fold(csum_partial(data)).to_bytes(2, "big") + data
    assert csum_fold(csum_partial(message)) == 0
    bit = draw.draw(st.integers(0, len(message) * 8 - 1))
    flipped = bytearray(message)
    flipped[bit // 8] ^= 1 << bit % 8
    assert csum_fold(csum_partial(flipped)) != 0


@pytest.mark.parametrize("reduce", [inet._remembered, inet._reduced])
@given(data=st.binary(max_size=2000), other=st.integers(0, 1 << 40), twice=st.booleans())
def test_reduced_sum_stands_in_for_the_partial_sum(reduce, data, other, twice):
    """A reduced sum (remembered or not, of bytes or a bytearray) gives every checksum total csum_partial's value."""
    if twice:
        reduce(bytearray(data))
    reduced = reduce(data)
    assert 0 <= reduced <= 0xFFFF and (reduced == 0) == (csum_partial(data) == 0)
    assert csum_fold(other + reduced) == csum_fold(other + csum_partial(data))


RX_NET = make_net()
FUZZ_FRAMES = {
    "raw": lambda body: body,
    "eth_ip": lambda body: MAC_B + MAC_A + b"\x08\x00" + body,
    "eth_arp": lambda body: ETH_BROADCAST + MAC_A + b"\x08\x06" + body,
    "ip_udp": lambda body: dpkt_frame(dpkt.ip.IP(p=dpkt.ip.IP_PROTO_UDP, data=body)),
    "ip_icmp": lambda body: dpkt_frame(dpkt.ip.IP(p=dpkt.ip.IP_PROTO_ICMP, data=body)),
}


@given(st.sampled_from(sorted(FUZZ_FRAMES)), st.binary(max_size=2000))
def test_receive_never_raises_on_arbitrary_bytes(kind, body):
    """Arbitrary bytes, raw or behind valid Ethernet or IPv4 headers for us, are dropped or taken, never raised."""
    RX_NET.b.receive(FUZZ_FRAMES[kind](body))
