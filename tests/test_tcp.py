"""TCP in the IPv4 stack: two stacks over a test path that can lose, delay,
reorder and corrupt frames; segments checked against dpkt (an independent
parser); the byte stream must arrive intact whatever the path does."""

from __future__ import annotations

from ipaddress import IPv4Interface
from types import SimpleNamespace

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovirt.net import tcp
from iovirt.net.stack import IPv4Stack
from iovirt.sim.engine import Sim
from iovirt.sim.profile import CostProfile, ProfileFile
from iovirt.sim.resource import Ledger, Resource

PROFILE = CostProfile(ProfileFile.model_validate({
    "name": "test", "description": "round numbers for unit tests",
    "cpu": {"model": "test", "ghz": 2.0, "source": "test"},
    "costs": {
        "guest_stack": {"value": 1000, "unit": "ns", "source": "test"},
        "gso_segment": {"value": 200, "unit": "ns", "source": "test"},
        "gro_receive": {"value": 100, "unit": "ns", "source": "test"},
        **{e: {"value": 0, "unit": "ns", "per_byte": {"value": 0.25, "unit": "ns/B"}, "source": "test"}
           for e in ("copy", "copy_hot", "csum")},
    },
}), "test")
MAC_A, MAC_B = bytes.fromhex("525400000001"), bytes.fromhex("525400000002")
IP_A, IP_B = "10.0.0.1", "10.0.0.2"
PORT = 5001
LINK_NS = 10_000            # one-way delay of the test path
FRAME_NS = 1_000            # each frame's time on it: back to back, frames keep their order


class Kernel:
    """What a stack needs of its machine: timers and deferred work on its CPU."""

    def __init__(self, sim: Sim, cpu: Resource) -> None:
        self.sim, self.cpu = sim, cpu

    def run_at(self, when: float, fn) -> None:
        self.sim.at(when, self._run, fn)

    def run_soon(self, fn) -> None:
        self.sim.at(self.cpu.cursor, self._run, fn)

    def _run(self, fn) -> None:
        self.cpu.sync(self.sim.now)
        fn()


class Path:
    """A one-way path: ``fate(n)`` says what happens to the n-th frame: None
    (delivered in order), "drop", "corrupt" (a payload byte flipped) or a
    delay in ns (it overtakes nothing sent before it was; later frames can
    overtake it)."""

    def __init__(self, sim: Sim, fate=lambda n: None) -> None:
        self.sim, self.fate = sim, fate
        self.peer: IPv4Stack | None = None
        self.frames: list[bytes] = []
        self.free_at = 0.0

    def transmit(self, frame: bytes) -> bool:
        n = len(self.frames)
        self.frames.append(frame)
        fate = self.fate(n)
        self.free_at = max(self.free_at, self.sim.now) + FRAME_NS
        if fate == "drop":
            return True
        if fate == "corrupt":
            frame = frame[:-1] + bytes([frame[-1] ^ 0x5A])
        delay = fate if isinstance(fate, int) else 0
        self.sim.at(self.free_at + LINK_NS + delay, self.arrive, frame)
        return True

    def arrive(self, frame: bytes) -> None:
        """The receiver's CPU takes the frame when it arrives (or when it is free)."""
        self.peer.cpu.sync(self.sim.now)
        self.peer.receive(frame)


def make_pair(fate_ab=lambda n: None, fate_ba=lambda n: None, **stack_args) -> SimpleNamespace:
    sim, ledger = Sim(), Ledger(PROFILE)
    cpu_a, cpu_b = Resource("a/vcpu0", "vcpu", ledger), Resource("b/vcpu0", "vcpu", ledger)
    ab, ba = Path(sim, fate_ab), Path(sim, fate_ba)
    a = IPv4Stack(cpu_a, MAC_A, IPv4Interface(IP_A + "/24"), ab, sched=Kernel(sim, cpu_a), **stack_args)
    b = IPv4Stack(cpu_b, MAC_B, IPv4Interface(IP_B + "/24"), ba, sched=Kernel(sim, cpu_b), **stack_args)
    ab.peer, ba.peer = b, a
    a.arp_table[b.addr], b.arp_table[a.addr] = MAC_B, MAC_A
    return SimpleNamespace(sim=sim, a=a, b=b, ab=ab, ba=ba)


def stream(net: SimpleNamespace, data: bytes, until: float = 60e9, counters=None) -> SimpleNamespace:
    """``a`` connects to ``b`` and writes ``data`` as fast as its socket takes it, then closes."""
    got = bytearray()
    out = SimpleNamespace(received=got, server=None, closed=False)

    def accept(sock):
        out.server = sock

        def read(chunk):
            got.extend(chunk)
            if len(got) == len(data):
                out.done_at = net.b.cpu.cursor
        sock.on_data = read

        def closed():
            out.closed = True
        sock.on_closed = closed
    net.b.tcp_listen(PORT, accept, counters=counters)
    client = net.a.tcp_connect(IP_B, PORT, PORT, counters=counters)
    sent = [0]

    def write():
        while sent[0] < len(data):
            n = client.send(data[sent[0]:sent[0] + 65536])
            if not n:
                client.on_writable = write
                return
            sent[0] += n
        client.close()
    client.on_connected = write
    net.sim.run(until=until)
    out.client = client
    return out


def pattern(size: int) -> bytes:
    return bytes((i * 7 + (i >> 8)) & 0xFF for i in range(size))


# --- the handshake and the segments on the wire ----------------------------------


def test_handshake_options_and_segments_parse_with_dpkt():
    """SYN carries MSS and window scale; every segment's checksum verifies
    with dpkt; data segments are at most the MSS (software GSO cut them)."""
    net = make_pair()
    data = pattern(200_000)
    out = stream(net, data)
    assert bytes(out.received) == data and out.closed
    segs = [dpkt.ethernet.Ethernet(f).data.data for f in net.ab.frames]
    syn = segs[0]
    assert syn.flags & dpkt.tcp.TH_SYN and not syn.flags & dpkt.tcp.TH_ACK
    opts = dict(dpkt.tcp.parse_opts(syn.opts))
    assert int.from_bytes(opts[dpkt.tcp.TCP_OPT_MSS], "big") == 1460
    assert opts[dpkt.tcp.TCP_OPT_WSCALE] == bytes([tcp.rcv_wscale()]) and tcp.rcv_wscale() == 7
    for frame in net.ab.frames + net.ba.frames:
        ip = dpkt.ethernet.Ethernet(frame).data
        raw = bytes(ip.data)
        ip.data.sum = 0
        ip.data = dpkt.tcp.TCP(bytes(ip.data))
        ip.sum = 0
        recomputed = dpkt.ip.IP(bytes(ip))       # dpkt fills in both checksums
        assert bytes(recomputed.data)[16:18] == raw[16:18]
    assert max(len(s.data) for s in segs) == 1460
    assert any(s.flags & dpkt.tcp.TH_FIN for s in segs)


def test_window_scale_is_honoured_by_the_sender():
    """ACKs stop after the first: the sender stops within a segment of the
    right edge that ACK offered, 1024 << 7 bytes past it (more than an
    unscaled field can say).  Without GSO: a GSO sender would hold the tail
    back for the ACK that never comes (tcp_tso_should_defer)."""
    net = make_pair(fate_ba=lambda n: "drop" if n >= 2 else None)      # SYN-ACK and one ACK get through
    net.a.gso = False
    net.b.tcp_listen(PORT, lambda s: None)
    client = net.a.tcp_connect(IP_B, PORT, PORT)

    def write():
        client.cwnd = client.ssthresh = client.sndbuf = 1 << 40        # the window alone limits
        client.send(pattern(1 << 20))
    client.on_connected = write
    net.sim.run(until=150e6)                            # before any retransmission
    acks = [dpkt.ethernet.Ethernet(f).data.data for f in net.ba.frames[:2]]
    right_edge = (acks[1].ack - client.iss) % (1 << 32) + (acks[1].win << 7)
    data_end = max((dpkt.ethernet.Ethernet(f).data.data.seq - client.iss) % (1 << 32)
                   + len(dpkt.ethernet.Ethernet(f).data.data.data) for f in net.ab.frames)
    assert client.snd_wscale == 7 and acks[1].win == tcp.TCP_RMEM >> 7
    assert right_edge - client.snd_mss < data_end <= right_edge       # no sub-MSS tail (SWS avoidance)
    assert data_end > 0xFFFF + 1


def test_nagle_holds_a_small_segment_while_data_is_unacknowledged_nodelay_does_not():
    for nodelay, expect_second_segment_now in ((False, False), (True, True)):
        net = make_pair()
        net.b.tcp_listen(PORT, lambda s: None)
        client = net.a.tcp_connect(IP_B, PORT, PORT, nodelay=nodelay)
        net.sim.run(until=1e6)
        before = len(net.ab.frames)
        client.send(b"x")
        client.send(b"y")               # the first is unacknowledged still
        sent = len(net.ab.frames) - before
        assert sent == (2 if expect_second_segment_now else 1)


def test_quick_acks_then_a_lone_segment_waits_40_ms_for_its_ack():
    """A new connection's receiver ACKs its first 16 segments at once (quick-ACK
    mode); after that a lone small segment is acknowledged by the delayed-ACK timer."""
    net = make_pair()
    net.b.tcp_listen(PORT, lambda s: None)
    client = net.a.tcp_connect(IP_B, PORT, PORT, nodelay=True)
    net.sim.run(until=1e6)
    for _ in range(tcp.TCP_MAX_QUICKACKS):
        acks_before = len(net.ba.frames)
        client.send(b"q")
        net.sim.run(until=net.sim.now + 1e6)
        assert len(net.ba.frames) == acks_before + 1
    acks_before = len(net.ba.frames)
    client.send(b"ping")
    net.sim.run(until=net.sim.now + 30e6)
    assert len(net.ba.frames) == acks_before          # not yet
    net.sim.run(until=net.sim.now + 20e6)
    assert len(net.ba.frames) == acks_before + 1


# --- loss and recovery ------------------------------------------------------------


def test_a_lost_segment_is_fast_retransmitted_not_waited_for():
    """One data segment lost: three duplicate ACKs, then it goes again well before the 200 ms RTO."""
    lost = 20
    net = make_pair(fate_ab=lambda n: "drop" if n == lost else None)
    data = pattern(300_000)
    out = stream(net, data, until=50e6)           # far less than TCP_RTO_MIN
    assert bytes(out.received) == data
    segs = [dpkt.ethernet.Ethernet(f).data.data for f in net.ab.frames]
    again = [i for i, s in enumerate(segs) if i > lost and s.seq == segs[lost].seq and s.data]
    assert again


def test_a_lost_tail_waits_for_the_retransmission_timer_of_at_least_200_ms():
    """The last segment lost, no duplicate ACKs can follow: the RTO, at least TCP_RTO_MIN, recovers it."""
    data = pattern(3000)
    net = make_pair(fate_ab=lambda n: "drop" if n == 3 else None)   # SYN, ACK, seg, [seg lost]
    out = stream(net, data, until=150e6)
    assert bytes(out.received) != data
    net.sim.run(until=400e6)
    assert bytes(out.received) == data


def test_sack_recovers_a_burst_of_losses_in_a_few_round_trips_newreno_one_a_round_trip():
    """Twenty segments of one window lost, every other one: with SACK every hole goes again
    within a few round trips; NewReno (SACK off, net.ipv4.tcp_sack=0) sends
    one hole per partial ACK, a round trip each."""
    took = {}
    for sack in (True, False):
        net = make_pair(fate_ab=lambda n: "drop" if 40 <= n < 80 and n % 2 else None)
        net.a.tcp_sack = net.b.tcp_sack = sack
        data = pattern(400_000)
        out = stream(net, data, until=150e6)            # before any RTO
        assert bytes(out.received) == data and out.client.sack_ok == sack
        took[sack] = out.done_at
    rtt = 2 * LINK_NS
    assert took[True] + 10 * rtt < took[False]


def test_a_retransmission_lost_again_is_sent_once_more_before_the_rto():
    """A segment lost, and its fast retransmission lost too: once the
    retransmissions sent after it are SACKed it goes again (RACK's rule),
    long before the 200 ms retransmission timer."""
    net = make_pair()
    offset, tries = 30 * 1460, []
    plain = net.ab.transmit

    def transmit(frame: bytes) -> bool:
        seg = dpkt.ethernet.Ethernet(frame).data.data
        if seg.data and not net_first:
            net_first.append(seg.seq)
        if seg.data and (seg.seq - net_first[0]) % (1 << 32) == offset and len(tries) < 2:
            tries.append(net.sim.now)
            net.ab.frames.append(frame)
            return True                         # lost on the way
        return plain(frame)
    net_first: list[int] = []
    net.ab.transmit = transmit
    data = pattern(600_000)
    out = stream(net, data, until=100e6)
    assert len(tries) == 2 and bytes(out.received) == data
    assert out.done_at < tcp.TCP_RTO_MIN / 10


def test_corrupted_segments_are_dropped_by_checksum_and_recovered():
    net = make_pair(fate_ab=lambda n: "corrupt" if n % 17 == 5 else None)
    data = pattern(100_000)
    out = stream(net, data)
    assert bytes(out.received) == data
    assert net.b.stats["tcp_bad_checksum"] + net.b.stats["ip_bad_checksum"] > 0


def test_congestion_window_halves_on_loss_and_grows_without():
    """NewReno: ssthresh is half the flight at a fast retransmit; with no loss cwnd only grows."""
    net = make_pair()
    out = stream(net, pattern(2_000_000))
    assert out.client.ssthresh > 1 << 60 and out.client.cwnd > tcp.TCP_INIT_CWND * 1460
    net = make_pair(fate_ab=lambda n: "drop" if n == 60 else None)
    out = stream(net, pattern(2_000_000))
    assert out.client.ssthresh < 1 << 60


class Counters:
    sent = delivered = 0


FATES = st.one_of(st.none(), st.just("drop"), st.just("corrupt"), st.integers(1, 3_000_000))


@settings(deadline=None, max_examples=40)
@given(st.lists(FATES, max_size=120), st.lists(FATES, max_size=60), st.integers(1, 120_000), st.booleans(),
       st.booleans())
def test_any_loss_reorder_or_corruption_delivers_the_stream_intact(ab, ba, size, gso, gro):
    """Whatever happens to the first frames either way (dropped, corrupted,
    delayed past others), the receiver reads exactly the bytes written; and
    the data segments add up: each one sent (retransmissions too) reached
    the receiver's TCP unless the path dropped or corrupted it."""
    counters = Counters()
    net = make_pair(lambda n: ab[n] if n < len(ab) else None, lambda n: ba[n] if n < len(ba) else None,
                    gso=gso, gro=gro)
    data = pattern(size)
    # 120 lost SYNs back off to RTO_MAX (120 s) each: long enough for all of them
    out = stream(net, data, until=20_000e9, counters=counters)
    assert bytes(out.received) == data
    assert out.closed
    carried = [bool(len(dpkt.ethernet.Ethernet(f).data.data.data)) for f in net.ab.frames]
    lost = sum(1 for n, has_data in enumerate(carried) if has_data and n < len(ab) and ab[n] in ("drop", "corrupt"))
    assert counters.sent == sum(carried)
    assert counters.delivered == counters.sent - lost


def test_gro_merges_a_train_into_one_packet_up_the_stack():
    """With GRO the receiver runs its stack once per train of segments, not once per segment."""
    runs = {}
    for gro in (False, True):
        net = make_pair(gro=gro)
        stream(net, pattern(500_000))
        runs[gro] = net.b.cpu.acct["guest_stack"]
    assert runs[True] * 4 < runs[False]


def test_gso_charges_the_stack_once_per_packet_and_a_segment_cost_per_frame():
    runs = {}
    for gso in (False, True):
        net = make_pair(gso=gso)
        stream(net, pattern(500_000))
        runs[gso] = (net.a.cpu.acct["guest_stack"], net.a.cpu.acct.get("gso_segment", 0))
    assert runs[False][1] == 0 and runs[True][1] > 300
    assert runs[True][0] * 4 < runs[False][0]


@pytest.mark.parametrize("seq, near, expect", [(5, (1 << 32) - 10, (1 << 32) + 5), ((1 << 32) - 1, 3, -1),
                                               (100, 50, 100)])
def test_unwrap_takes_the_nearest(seq, near, expect):
    assert tcp.unwrap(seq, near) == expect


@given(st.integers(1, 64000), st.sampled_from([536, 1448, 1460]), st.integers(0, 0xFFFFFFFF),
       st.sampled_from([0x10, 0x18, 0x19, 0x98]))
@settings(deadline=None, max_examples=30)
def test_software_gso_cuts_a_packet_into_valid_segments(payload, mss, seq, flags):
    """Every segment parses with dpkt with both checksums right, at most mss
    of data, sequence numbers continuing, FIN and PSH on the last only, CWR
    on the first only; the data joins up to the packet's."""
    from iovirt.net.gso import GsoFrame, segment
    data = pattern(payload)
    tcph = dpkt.tcp.TCP(sport=5001, dport=5001, seq=seq, ack=7, flags=flags, win=100)
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=6, data=tcph)
    tcph.data = data
    packet = GsoFrame.of(bytes(dpkt.ethernet.Ethernet(dst=MAC_B, src=MAC_A, type=0x0800, data=ip)), mss)
    frames = segment(packet)
    assert len(frames) == packet.gso_segs == -(-payload // mss)
    joined = b""
    for n, frame in enumerate(frames):
        got = dpkt.ethernet.Ethernet(frame).data
        seg = got.data
        raw = bytes(got)
        got.sum, seg.sum = 0, 0
        again = dpkt.ip.IP(bytes(got))
        assert bytes(again)[10:12] == raw[10:12] and bytes(again.data)[16:18] == raw[20 + 16:20 + 18]
        assert len(seg.data) <= mss and seg.seq == (seq + len(joined)) % (1 << 32)
        last = n == len(frames) - 1
        assert bool(seg.flags & 0x09) == (last and bool(flags & 0x09))
        assert bool(seg.flags & 0x80) == (n == 0 and bool(flags & 0x80))
        joined += seg.data
    assert joined == data


@settings(deadline=None, max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFF),
                          st.integers(0, 0xFFFF), st.binary(max_size=40), st.binary(max_size=3000),
                          st.sampled_from([PORT, PORT + 1])), max_size=30))
def test_any_segments_a_hostile_peer_sends_never_raise(segments):
    """Segments with any sequence and acknowledgment numbers, flags, window,
    options (SACK blocks, scales, lengths) and data, to a listener and to an
    established connection, are taken or dropped; the stack never raises."""
    net = make_pair()
    out = stream(net, pattern(20_000), until=5e6)
    for seq, ack, flags, window, options, payload, sport in segments:
        options = options[: len(options) // 4 * 4]
        tcph = (bytes([sport >> 8, sport & 0xFF, PORT >> 8, PORT & 0xFF]) + seq.to_bytes(4, "big")
                + ack.to_bytes(4, "big") + bytes([(5 + len(options) // 4) << 4, flags]) + window.to_bytes(2, "big")
                + bytes(4) + options)
        ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=6, data=dpkt.tcp.TCP(tcph + payload))
        ip.data.sum = 0
        frame = bytes(dpkt.ethernet.Ethernet(dst=MAC_B, src=MAC_A, type=0x0800, data=ip))
        net.b.receive(frame)
        net.sim.run(until=net.sim.now + 1e6)
    net.sim.run(until=net.sim.now + 1e9)
    assert out.server is not None


@pytest.mark.parametrize("change, defer", [
    ({}, True),
    ({"head_age": 40_000}, False),                   # the oldest data left less than half a round trip ago
    ({"room": 40_000}, False),                       # a third of the window is open
    ({"room": 65_000}, False),                       # a full GSO packet fits
    ({"idle": 3_000_000}, False),                    # nothing sent for more than a jiffy
    ({"in_recovery": True}, False),
])
def test_a_gso_sender_defers_a_short_packet_only_while_an_ack_is_due(change, defer):
    """tcp_tso_should_defer's rules, on an established connection."""
    net = make_pair()
    net.b.tcp_listen(PORT, lambda s: None)
    client = net.a.tcp_connect(IP_B, PORT, PORT)
    net.sim.run(until=1e6)
    now = net.a.cpu.cursor = 10e6
    client.srtt, client.snd_wnd, client.cwnd = 100_000, 100_000, 100_000
    client.in_recovery = change.get("in_recovery", False)
    client.lsndtime = now - change.get("idle", 0)
    client.sent_at.append([client.snd_una + 60_000, now - change.get("head_age", 60_000)])
    full = (tcp.GSO_MAX_SIZE - 40 - tcp.TCP_HLEN) // client.snd_mss * client.snd_mss
    assert client._tso_should_defer(change.get("room", 10_000), full) is defer
