"""virtio-net receive offload (VIRTIO_NET_F_GUEST_TSO4, virtio 1.1 5.1.6.3
and 5.1.6.4) and the host's receive side: a TCP packet of up to 64 KB
reaches the guest behind one virtio_net_hdr with its gso_size, spread over
mergeable buffers; the tap takes it whole only from a guest that took the
feature; the host's uplink merges the wire's segments (GRO) before the
bridge.  Device tests use the real driver-side rings; world tests run the
three backends, guest to guest and wire to guest."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_virtio_net import FEATURES, QSIZE, rig

import iovirt
from iovirt.devices.virtio_net import VirtioNet
from iovirt.experiments import runner
from iovirt.experiments.capture import Frames, watch
from iovirt.experiments.compare import Config, scenario
from iovirt.experiments.results import Result
from iovirt.experiments.scenario import Scenario
from iovirt.experiments.world import World
from iovirt.net.gso import Gro, GsoFrame, merged, partial_check, segment
from iovirt.net.headers import IPHDR, TCPHDR, TCPHDR_ACK, TCPHDR_PSH, csum_fold, csum_partial
from iovirt.spec import virtio as v

TSO4 = FEATURES | 1 << v.VIRTIO_NET_F_GUEST_CSUM | 1 << v.VIRTIO_NET_F_GUEST_TSO4
MSS = 1460
BACKENDS = ("qemu", "vhost-net", "vhost-user")


def gso_packet(payload: int, mss: int = MSS, flags: int = TCPHDR_ACK | TCPHDR_PSH) -> GsoFrame:
    """A TCP/IPv4 packet of ``payload`` bytes as a sender's stack hands it on
    (checksum partial), ``mss`` bytes a segment."""
    iph = bytearray(IPHDR.pack(0x45, 0, 40 + payload, 7, 0x4000, 64, 6, 0, 0x0A000001, 0x0A000002))
    iph[10:12] = csum_fold(csum_partial(bytes(iph))).to_bytes(2, "big")
    tcph = TCPHDR.pack(40000, 5001, 1000, 2000, 5 << 12 | flags, 512, 0, 0)
    data = bytes((i * 7 + 3) & 0xFF for i in range(payload))
    packet = bytearray(bytes.fromhex("525400123456" "020000000001" "0800") + iph + tcph + data)
    partial_check(packet)
    return GsoFrame.of(bytes(packet), mss)


def used(r) -> tuple[list[int], bytes]:
    """What the device returned, in order: each buffer's length, and the bytes written."""
    lengths, data = [], b""
    while (done := r.rx.get_used()) is not None:
        buf, n = done
        lengths.append(n)
        data += r.kernel.mem.read(buf, n) if n else b""
    return lengths, data


# ---- the device -------------------------------------------------------------------------------------------------
def test_a_64kb_packet_reaches_the_guest_behind_one_header_with_its_gso_size():
    """5.1.6.4: GSO_TCPV4, gso_size, NEEDS_CSUM at csum_start/csum_offset,
    hdr_len, and num_buffers counting the buffers the packet took."""
    r = rig()
    r.bring_up(TSO4)
    assert r.dev.takes_gso
    packet = gso_packet(44 * MSS)
    r.post_rx(*[9000] * QSIZE)
    assert r.deliver(packet)
    lengths, data = used(r)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers = v.NET_HDR.unpack_from(data)
    assert (gso_type, gso_size, hdr_len) == (v.VIRTIO_NET_HDR_GSO_TCPV4, MSS, 54)
    assert (flags, csum_start, csum_offset) == (v.VIRTIO_NET_HDR_F_NEEDS_CSUM, 34, 16)
    assert num_buffers == len(lengths) == -(-(len(packet) + v.NET_HDR.size) // 9000)
    assert data[v.NET_HDR.size:] == packet


def test_without_guest_tso4_the_tap_gets_no_gso_packet_for_the_guest():
    """A guest that did not take GUEST_TSO4 leaves the tap without
    TUN_F_TSO4; a device started with guest_tso4 off does not offer it."""
    r = rig()
    r.bring_up(TSO4 & ~(1 << v.VIRTIO_NET_F_GUEST_TSO4))
    assert not r.dev.takes_gso
    r.wr("device_feature_select", 0)
    assert r.rd("device_feature") >> v.VIRTIO_NET_F_GUEST_TSO4 & 1
    assert not VirtioNet(r.dev.sim, r.dev.mac, r.dev.dma, guest_tso4=False).FEATURES >> v.VIRTIO_NET_F_GUEST_TSO4 & 1


def test_a_gso_packet_waits_for_room_and_the_refill_kicks():
    """virtio_net_has_buffers: with too few bytes posted the device takes
    nothing and asks for a kick, which the driver's next refill gives."""
    r = rig()
    r.bring_up(TSO4)
    packet = gso_packet(30 * MSS)
    r.post_rx(2048, 2048)
    assert not r.deliver(packet)
    assert used(r)[0] == []
    for buf in [r.kernel.alloc.alloc(9000, 16) for _ in range(6)]:
        r.rx.add([(buf, 9000, True)], buf)
    assert r.rx.kick_prepare()                     # the device asked to hear of it
    assert r.deliver(packet)
    assert used(r)[1][v.NET_HDR.size:] == packet


@pytest.mark.parametrize("size, delivered", [(2048, False), (65562, True)])
def test_without_mergeable_buffers_a_gso_packet_needs_one_big_chain(size, delivered):
    """5.1.6.3: without MRG_RXBUF a guest taking GUEST_TSO4 should post
    buffers of 65562 bytes; one that does not fit its chain is dropped and
    counted, as QEMU drops a truncated non-mergeable packet."""
    r = rig(1 << 21)
    r.bring_up(TSO4 & ~(1 << v.VIRTIO_NET_F_MRG_RXBUF))
    packet = gso_packet(44 * MSS)
    r.post_rx(size)
    assert r.deliver(packet)
    lengths, data = used(r)
    assert (lengths[0] > 0) == delivered and r.dev.errors["rx_dropped"] == (not delivered)
    if delivered:
        assert data[v.NET_HDR.size:] == packet and v.NET_HDR.unpack_from(data)[6] == 1


BUFFER_SIZES = st.sampled_from([1, 4, 12, 64, 1526, 4096, 9000, 65562])
OUTSIDE = 1 << 40


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(BUFFER_SIZES, min_size=1, max_size=QSIZE), outside=st.lists(st.booleans(), max_size=QSIZE),
       segments=st.integers(2, 44), merge=st.booleans())
def test_whatever_buffers_the_guest_posts_a_gso_packet_is_whole_or_counted(sizes, outside, segments, merge):
    """Buffers of any size, some outside guest memory, with or without
    MRG_RXBUF: the device never raises and writes only into the buffers;
    the packet arrives whole (num_buffers right), waits for room, or is
    dropped and counted (rx_dropped, rx_no_buffer, rx_dma_fault, or the
    ring reported broken with DEVICE_NEEDS_RESET).  num_buffers is written
    through the first buffer, as QEMU does: a guest posting buffers shorter
    than the header (5.1.6.3 forbids it) may not find it there."""
    r = rig(1 << 21)
    r.bring_up(TSO4 if merge else TSO4 & ~(1 << v.VIRTIO_NET_F_MRG_RXBUF))
    bufs = [OUTSIDE if far else r.kernel.alloc.alloc(n, 16) for n, far in zip(sizes, outside + [False] * QSIZE)]
    for buf, n in zip(bufs, sizes):
        r.rx.add([(buf, n, True)], buf)
    r.rx.kick_prepare()
    packet = gso_packet(segments * MSS - 100)
    before = bytes(r.kernel.mem.buf)
    taken = r.deliver(packet)
    after = bytes(r.kernel.mem.buf)
    allowed = [range(b, b + n) for b, n in zip(bufs, sizes)] + [range(r.rx.used, r.rx.used + v.used_size(QSIZE))]
    assert all(any(i in span for span in allowed) for i in range(len(before)) if before[i] != after[i])
    errors = r.dev.errors
    lengths, data = used(r) if not r.needs_reset else ([], b"")
    whole = sum(lengths) == len(packet) + v.NET_HDR.size
    assert whole or not taken or errors["rx_dropped"] + errors["rx_no_buffer"] + errors["rx_dma_fault"] \
        + errors["needs_reset"] > 0
    if whole:
        assert data[v.NET_HDR.size:] == packet and v.NET_HDR.unpack_from(data)[:4] == (
            v.VIRTIO_NET_HDR_F_NEEDS_CSUM, v.VIRTIO_NET_HDR_GSO_TCPV4, 54, MSS)
        assert sizes[0] < v.NET_HDR.size or v.NET_HDR.unpack_from(data)[6] == (len(lengths) if merge else 1)


# ---- GRO and GSO, both ways ---------------------------------------------------------------------------------------
class Soon:
    """A NAPI context's deferred flush, run when the test says."""

    def __init__(self) -> None:
        self.due = []

    def run_soon(self, fn) -> None:
        self.due.append(fn)


class Cpu:
    def __init__(self) -> None:
        self.charged = []

    def charge(self, event: str, n: int = 1, nbytes: int = 0) -> None:
        self.charged.append(event)


@settings(max_examples=40, deadline=None)
@given(segments=st.integers(2, 40), tail=st.integers(1, 536), mss=st.sampled_from([536, 1448, 1460]),
       valid=st.booleans())
def test_gro_merges_what_gso_cut_back_into_the_same_packet(segments, tail, mss, valid):
    """The segments software GSO cuts from a packet, through GRO in one NAPI
    poll, come back as that packet: its bytes (checksum partial), gso_size
    and segments; ``gro_receive`` once per segment, ``csum`` per segment
    only when the NIC did not validate them."""
    packet = gso_packet((segments - 1) * mss + tail, mss)
    frames = segment(packet)
    out, cpu, soon = [], Cpu(), Soon()
    gro = Gro(soon, lambda *up: out.append(merged(*up) if up[2] > 1 else up[0] + up[1]))
    assert all(gro.receive(frame, valid, cpu) for frame in frames)
    for fn in soon.due:
        fn()
    assert len(out) == 1 and out[0] == packet
    assert out[0].gso_size == mss and out[0].gso_segs == packet.gso_segs == len(frames)
    assert cpu.charged.count("gro_receive") == len(frames) and cpu.charged.count("csum") == (0 if valid else len(frames))


def test_gro_leaves_a_damaged_segment_alone():
    """A segment whose TCP checksum is wrong is not merged (nor anything
    after it held with it): it goes up alone, for the stack to drop."""
    frames = segment(gso_packet(4 * MSS))
    bad = bytearray(frames[2])
    bad[-1] ^= 0xFF
    gro, cpu = Gro(Soon(), lambda *up: None), Cpu()
    assert gro.receive(frames[0], False, cpu) and gro.receive(frames[1], False, cpu)
    assert not gro.receive(bytes(bad), False, cpu)


# ---- whole worlds -------------------------------------------------------------------------------------------------
def guests(backend: str, gro_hw: bool = True, duration_ms: float = 4.0) -> dict:
    """Two VMs on one host, vm1 streaming TCP to vm2, both on ``backend``."""
    nic = {"model": "paravirt", "device": "virtio-net", "backend": backend, "offloads": {"gro_hw": gro_hw}}
    return {"name": f"guest-tso-{backend}", "profile": "default", "hosts": [{"name": "host0", "cores": 8}],
            "vms": [{"name": f"vm{i}", "host": "host0", "nics": [{**nic, "mac": f"52:54:00:00:00:{i:02x}",
                                                                 "ip": f"10.0.0.{i}/24"}]} for i in (1, 2)],
            "workloads": [{"type": "tcp_stream", "src": "vm1", "dst": "vm2", "duration_ms": duration_ms,
                           "warmup_ms": duration_ms / 4}]}


@functools.cache
def guest_to_guest(backend: str, gro_hw: bool) -> dict:
    return iovirt.run(Scenario.from_dict(guests(backend, gro_hw), source="test")).to_dict()


def cores_per_gbit(result: dict) -> float:
    busy = sum(r["busy_s"] for r in result["resources"] if r["kind"] == "host_core")
    return busy / result["sim_time_s"] / result["flows"][0]["throughput_gbps"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gro_hw", [True, False])
def test_guest_to_guest_the_receiver_gets_whole_packets_only_with_guest_tso4(backend, gro_hw):
    """HOST_TSO4 on the sender and GUEST_TSO4 on the receiver: the bridge
    hands the 64 KB packet to the receiver's tap whole and its stack takes
    it as one, of gso_size 1460; with ``gro_hw: false`` the bridge cuts it
    into MTU frames first, their checksums left partial for the receiver
    (GUEST_CSUM: TUN_F_CSUM).  The stream arrives intact either way."""
    world = World(Scenario.from_dict(guests(backend, gro_hw, 3.0), source="test"))
    tapped, got = Frames(), Frames()
    watch(world, "host0/vm2/tap", tapped)
    watch(world, "vm2", got)
    start, stop, flows = runner.begin(world)
    runner.run_to(world, stop)
    big = [f for f in got if len(f) > 1514]
    assert flows[0].delivered > 1000 and flows[0].corrupted == 0
    assert bool(big) == gro_hw and all(type(f) is GsoFrame and f.gso_size == MSS for f in big)
    assert (max(map(len, tapped)) > 1514) == gro_hw
    assert world.vms["vm2"].vcpus[0].acct["csum"] == 2      # the handshake's SYN and ACK: the data comes NEEDS_CSUM


@pytest.mark.parametrize("backend", BACKENDS)
def test_guest_to_guest_without_guest_tso4_costs_the_host_more_per_gbit(backend):
    """Cutting every packet into MTU frames before the receiver's ring (and
    the ring work, interrupts and stack runs per frame behind it) costs the
    host more cores per Gbit/s than handing it over whole."""
    on, off = guest_to_guest(backend, True), guest_to_guest(backend, False)
    assert on["flows"][0]["stream_errors"] == off["flows"][0]["stream_errors"] == 0
    assert cores_per_gbit(on) < 0.9 * cores_per_gbit(off)


@functools.cache
def wire_to_guest(host_gro: bool):
    """The far end streams TCP to vm0 (vhost-net) through the host's uplink
    and bridge; what the bridge, the cable and vm0's stack saw, the flow and
    the result."""
    doc = scenario(Config("paravirt", "virtio-net", "vhost-net"), 1, 16384, 3.0, 8, False, "default", "tcp_stream")
    doc["hosts"][0]["nics"][0]["gro"] = host_gro
    world = World(Scenario.from_dict(doc, source="test"))
    seen = {port: Frames() for port in ("host0/bridge", "host0/pnic0", "vm0")}
    for port, frames in seen.items():
        watch(world, port, frames)
    start, stop, flows = runner.begin_from_wire(world, "vm0", 3.0)
    result = Result.of(world.scenario, *runner.settle(world, start, stop, flows, 0.0)).to_dict()
    return seen, flows[0], world, result


@pytest.mark.parametrize("host_gro", [True, False])
def test_wire_to_guest_the_uplink_merges_and_the_wire_carries_mtu_frames(host_gro):
    """The host's ixgbe NAPI poll hands the wire's segments to GRO: the
    bridge forwards 64 KB packets and the guest (GUEST_TSO4) takes them
    whole; the cable carries MTU frames only.  With the host's GRO off
    (``gro: false`` on its NIC) the bridge and the guest see MTU frames."""
    seen, stats, world, result = wire_to_guest(host_gro)
    assert stats.delivered > 1000 and stats.corrupted == 0 and result["flows"][0]["stream_errors"] == 0
    assert max(map(len, seen["host0/pnic0"])) <= 1514
    assert (max(map(len, seen["host0/bridge"])) > 1514) == host_gro
    assert any(type(f) is GsoFrame for f in seen["vm0"]) == host_gro
    uplink_core = world.uplinks["host0"].cpu.acct
    assert (uplink_core["gro_receive"] > 0) == host_gro


def test_wire_to_guest_without_the_hosts_gro_costs_the_host_more_per_gbit():
    """Without GRO the bridge, the tap and the backend handle every MTU
    frame of the stream, and the guest's ring and stack too."""
    assert cores_per_gbit(wire_to_guest(True)[3]) < 0.8 * cores_per_gbit(wire_to_guest(False)[3])
