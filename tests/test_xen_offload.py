"""Xen netif offloads: feature-sg and feature-gso-tcpv4 negotiated in
xenstore both ways, NETTXF_csum_blank, a GSO packet crossing the TX ring as
one chain with its extra-info slot and the wire in MTU frames, GSO packets
handed to a frontend over several RX slots, ``ethtool -K`` on netfront, and
what netback does with a frontend's bad chains and extra info."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovirt.devices.offload import rx_checksums
from iovirt.devices.xen_netback import LEGACY_SLOTS_MAX, XenNetback
from iovirt.experiments import runner
from iovirt.experiments.capture import Frames, watch
from iovirt.experiments.compare import Config, scenario as compare_scenario
from iovirt.experiments.scenario import Scenario
from iovirt.experiments.world import World
from iovirt.guest.drivers.xen_netfront import NR_GRANT_FRAMES, XenNetfront
from iovirt.net.gso import GsoFrame
from iovirt.spec import xen as x

from test_xen import PV, hostile_tx, scenario, tx_status, world

PAGE = x.PAGE_SIZE
XEN_PV = Config("paravirt", "xen-netfront")
MTU_FRAME = 1514


def to_the_wire(offloads: dict | None = None, workload: str = "tcp_stream", size: int = 16384,
                duration_ms: float = 4.0) -> World:
    """One PV guest streaming to the far end, its NIC's ``offloads`` (``ethtool -K``) as given."""
    doc = compare_scenario(XEN_PV, 1, size, duration_ms, 8, False, "default", workload)
    if offloads is not None:
        doc["vms"][0]["nics"][0]["offloads"] = offloads
    return World(Scenario.from_dict(doc, source="test"))


def run_world(w: World, *ports: str) -> tuple[list, list[Frames]]:
    """Run ``w``'s workloads with a sink on each port; the flows and the sinks."""
    sinks = [Frames() for _ in ports]
    for port, sink in zip(ports, sinks):
        watch(w, port, sink)
    _, stop, flows = runner.begin(w)
    runner.run_to(w, stop)
    return flows, sinks


def sizes(sink: Frames) -> list[int]:
    return [len(frame) for frame in sink]


# ---- negotiation ---------------------------------------------------------------------------------------
def test_both_ends_offer_sg_and_gso_and_netfront_takes_tso_with_them():
    w = world(PV)
    xs, front, vif = w.xen["host0"].xenstore, w.guests["vm1"].netdevs[0], w.xen["host0"].vifs[0]
    for node in (vif.path, xs.path(vif.frontend_domid, front.node)):
        assert xs.read(0, f"{node}/feature-sg") == xs.read(0, f"{node}/feature-gso-tcpv4") == "1"
    assert front.offloads == {"tx_csum", "tso"} and front.stack.tso and front.stack.tx_csum
    assert vif.rx_sg and vif.port.takes_gso


@pytest.mark.parametrize("key", ["feature-gso-tcpv4", "feature-sg"])
def test_a_backend_without_gso_or_sg_leaves_netfront_without_tso(key):
    """xennet_fix_features: TSO needs the backend's feature-gso-tcpv4 and its feature-sg."""
    w = World(scenario(PV))
    vif = w.xen["host0"].vifs[0]
    w.xen["host0"].xenstore.rm(f"{vif.path}/{key}", w.sim.now)
    w.settle()
    front = w.guests["vm1"].netdevs[0]
    assert front.connected and front.offloads == {"tx_csum"}
    assert not front.stack.tso and front.stack.tx_csum


# ---- TX: a GSO packet as one chain, MTU frames on the wire ---------------------------------------------------
def test_a_gso_packet_crosses_the_ring_as_one_chain_and_the_wire_in_mtu_frames(monkeypatch):
    """netfront puts a 64 KB packet on the ring as a request per page with a GSO extra-info slot
    after the first; netback sends it to the bridge whole, and the uplink's NIC cuts it."""
    chains = []
    submit = XenNetback._tx_submit

    def spy(self, cpu, packet, statuses):
        chains.append((len(packet[0]), packet[2], packet[4]))
        return submit(self, cpu, packet, statuses)
    monkeypatch.setattr(XenNetback, "_tx_submit", spy)
    w = to_the_wire()
    flows, (bridged, wired) = run_world(w, "host0/bridge", "host0/pnic0")
    big = [frame for frame in bridged if len(frame) > MTU_FRAME]
    assert flows[0].delivered > 1000 and big
    assert all(type(frame) is GsoFrame and frame.gso_size == 1460 for frame in big)
    longest = max(chains)
    assert longest[0] == -(-max(map(len, big)) // PAGE) > 2 and longest[1:] == (1, 1460)
    assert max(sizes(wired)) <= MTU_FRAME
    tcp = [frame for frame in wired if frame[23] == 6 and len(frame) > 100]
    assert tcp and all(rx_checksums(frame) == (True, True, True, True) for frame in tcp)


def test_a_64kb_packet_takes_a_slot_a_page_and_its_extra_info_after_the_first():
    """netif.h's wire format for a GSO packet of 64 KB, read back from the ring: the first request carries
    the packet's size with csum_blank, data_validated, extra_info and more_data; the next slot is
    the netif_extra_info (GSO, gso.size, TCPV4); then a request per page, more_data on all but the
    last.  netback hands the switch the packet whole and answers every slot."""
    w = world(PV, PV)
    front = w.guests["vm1"].netdevs[0]
    payload = (bytes(range(256)) * 256)[:x.XEN_NETIF_MAX_TX_SIZE - 54]       # the largest the wire format takes
    packet = GsoFrame.of(TCP_PACKET[:16] + (len(payload) + 40).to_bytes(2, "big") + TCP_PACKET[18:54] + payload, 1460)
    pages = -(-len(packet) // PAGE)
    bridged = Frames()
    watch(w, "host0/bridge", bridged)
    first = front.tx_prod
    assert front.transmit(packet)
    slots = [bytes(w.guests["vm1"].mem.read(front.tx_ring + x.RING_OFFSET + ((first + i) & (x.NET_TX_RING_SIZE - 1))
                                            * x.TX_ENTRY, x.TX_ENTRY)) for i in range(pages + 1)]
    reqs = [x.NETIF_TX_REQUEST.unpack_from(slot) for slot in slots]
    assert front.tx_prod - first == pages + 1 == 17
    assert reqs[0][2] == GSO_FIRST | x.NETTXF_more_data and reqs[0][4] == len(packet)
    assert x.NETIF_EXTRA_INFO.unpack_from(slots[1])[:4] == (x.XEN_NETIF_EXTRA_TYPE_GSO, 0, 1460,
                                                             x.XEN_NETIF_GSO_TYPE_TCPV4)
    assert [r[2] for r in reqs[2:]] == [x.NETTXF_more_data] * (pages - 2) + [0]
    assert sum(r[4] for r in reqs[2:]) == len(packet) - PAGE
    w.settle()
    (whole,) = list(bridged)
    assert whole == packet and type(whole) is GsoFrame and whole.gso_segs == 45
    assert [tx_status(w, "vm1", first + i) for i in range(pages + 1)] == [0, x.NETIF_RSP_NULL] + [0] * (pages - 1)
    too_big = GsoFrame.of(packet + b"x", 1460)
    assert front.transmit(too_big) and front.tx_prod == first + pages + 1      # dropped: no wire format for it


def test_tso_off_sends_no_gso_packets_and_offloads_off_is_slower():
    """``ethtool -K eth0 tso off``: the stack cuts every packet before netfront (software GSO), so only
    MTU frames cross the ring; with every offload off the stream is slower than with them."""
    flows, (bridged,) = run_world(to_the_wire({"tso": False}), "host0/bridge")
    assert flows[0].delivered > 1000 and max(sizes(bridged)) <= MTU_FRAME
    on, off = (run_world(to_the_wire(offloads))[0][0] for offloads in (None, {
        "gso": False, "gro": False, "tso": False, "tx": False, "rx": False}))
    assert off.delivered < 0.8 * on.delivered


def test_netback_fills_the_checksum_netfront_leaves_blank():
    """TCP_RR's 1-byte segments go out CHECKSUM_PARTIAL (NETTXF_csum_blank): the guest sums
    nothing, netback fills each checksum and the far end finds them good; with ``tx off`` the
    guest's stack sums them itself."""
    summed = {}
    for tx in (True, False):
        w = to_the_wire({"tx": tx}, "tcp_rr", 1)
        flows, (wired,) = run_world(w, "host0/pnic0")
        address = next(iter(w.guests["vm0"].interfaces.values())).ip.ip.packed
        out = [frame for frame in wired if frame[23] == 6 and frame[26:30] == address]
        assert flows[0].delivered > 10 and out
        assert all(rx_checksums(frame)[2:] == (True, True) for frame in out)
        summed[tx] = w.vms["vm0"].vcpus[0].acct["csum"]
    assert summed[True] < summed[False] / 4


# ---- RX: GSO packets over several slots ------------------------------------------------------------------
def guest_to_guest(monkeypatch, rx_gso: bool) -> tuple[list, Frames, World]:
    """vm1 streams TCP to vm2, both PV on one host; ``rx_gso`` False: vm2's netfront does not
    write feature-gso-tcpv4."""
    if not rx_gso:
        setup = XenNetfront._setup

        def without_rx_gso(self):
            setup(self)
            self.xen.xenstore.rm(f"/local/domain/2/{self.node}/feature-gso-tcpv4", self.sim.now) \
                if self.kernel.name == "vm2" else None
        monkeypatch.setattr(XenNetfront, "_setup", without_rx_gso)
    stream = {"type": "tcp_stream", "src": "vm1", "dst": "vm2", "duration_ms": 8, "warmup_ms": 4}
    w = World(scenario(PV, PV, workloads=[stream]))
    flows, (received,) = run_world(w, "vm2")
    return flows, received, w


@pytest.mark.parametrize("rx_gso", [True, False])
def test_a_frontend_that_takes_gso_receives_whole_packets_over_several_slots(monkeypatch, rx_gso):
    """With vm2's feature-gso-tcpv4 netback hands it vm1's GSO packets whole, a slot a page with
    NETRXF_more_data and the GSO extra info, and netfront gives its stack each as one packet;
    without it the bridge cuts them and vm2 receives MTU frames.  The byte stream is intact either way."""
    flows, received, w = guest_to_guest(monkeypatch, rx_gso)
    vif2 = w.xen["host0"].vifs[1]
    assert vif2.port.takes_gso == rx_gso
    assert flows[0].delivered > 500 and flows[0].corrupted == 0           # the byte stream checked at the reader
    big = [frame for frame in received if len(frame) > MTU_FRAME]
    assert bool(big) == rx_gso
    assert all(type(frame) is GsoFrame and frame.gso_segs > 1 for frame in big)
    assert w.guests["vm2"].netdevs[0].stats["rx_errors"] == 0


# ---- hostile frontends ----------------------------------------------------------------------------------
def extra(kind: int = x.XEN_NETIF_EXTRA_TYPE_GSO, size: int = 1460, gso_type: int = x.XEN_NETIF_GSO_TYPE_TCPV4,
          more: bool = False) -> tuple:
    """A netif_extra_info written in a TX request's slot, as the request's fields read it."""
    return (kind | (x.XEN_NETIF_EXTRA_FLAG_MORE if more else 0) << 8 | size << 16, gso_type, 0, 0, 0)


def granted_packet(w: World, vm: str, frame: bytes) -> list[int]:
    """``frame`` in pages of ``vm`` granted to dom0: the grant refs, a page each."""
    guest = w.guests[vm]
    plat = guest.netdevs[0].platform
    base = guest.alloc.alloc(-(-len(frame) // PAGE) * PAGE)
    guest.mem.write(base, frame)
    refs = [plat.claim_ref() for _ in range(-(-len(frame) // PAGE))]
    for i, ref in enumerate(refs):
        plat.grant(ref, 0, base + i * PAGE, readonly=True)
    return refs


def chain(refs: list[int], total: int, first_flags: int, extras: tuple = (), id0: int = 100) -> list[tuple]:
    """The requests of a packet of ``total`` bytes over ``refs``'s pages, ``extras`` after the first."""
    more = x.NETTXF_more_data
    reqs = [(refs[0], 0, first_flags | (more if len(refs) > 1 else 0), id0, total), *extras]
    for i, ref in enumerate(refs[1:], 1):
        reqs.append((ref, 0, more if i + 1 < len(refs) else 0, id0 + i, min(PAGE, total - i * PAGE)))
    return reqs


TCP_PACKET = (bytes.fromhex("00163e000002" "00163e000001" "0800") + bytes([0x45, 0]) + (20000 - 14).to_bytes(2, "big")
              + bytes(5) + b"\x06" + bytes(10) + bytes(12) + b"\x50\x10" + bytes(6) + bytes(20000 - 54))
GSO_FIRST = x.NETTXF_csum_blank | x.NETTXF_data_validated | x.NETTXF_extra_info


@pytest.mark.parametrize("case, reason", [
    ("unknown extra type", "tx_bad_extra_type"),
    ("gso size 0", "tx_gso_size_zero"),
    ("gso type not offered", "tx_bad_gso_type"),
    ("extra past the producer", "tx_missing_extra"),
    ("chain past the producer", "tx_bad_chain"),
])
def test_bad_extra_info_or_chain_disconnects_only_that_frontend(case, reason):
    """xenvif_fatal_tx_err: that vif is disabled; the other guest's vif carries frames on."""
    w = world(PV, PV)
    refs = granted_packet(w, "vm1", TCP_PACKET)
    bad = {"unknown extra type": (extra(kind=x.XEN_NETIF_EXTRA_TYPE_MAX),), "gso size 0": (extra(size=0),),
           "gso type not offered": (extra(gso_type=x.XEN_NETIF_GSO_TYPE_TCPV6),)}
    requests = chain(refs, len(TCP_PACKET), GSO_FIRST, bad.get(case, (extra(),)))
    if case == "extra past the producer":
        requests = requests[:1]
    elif case == "chain past the producer":
        requests = requests[:-1]
    hostile_tx(w, "vm1", *requests)
    vif1, vif2 = w.xen["host0"].vifs
    assert vif1.disabled and vif1.stats[reason] == vif1.stats["fatal_tx_err"] == 1
    assert vif2.running
    sent = vif2.stats["tx_frames"]
    assert w.guests["vm2"].netdevs[0].transmit(bytes.fromhex("ffffffffffff" "00163e000002" "0806") + bytes(50))
    w.settle()
    assert vif2.stats["tx_frames"] == sent + 1


@pytest.mark.parametrize("case, reason", [
    ("too many slots", "tx_too_many_slots"),
    ("slots longer than the packet", "tx_bad_size"),
    ("gso size below TCP's minimum", "tx_bad_gso"),
    ("gso packet not TCP", "tx_bad_gso"),
])
def test_a_bad_packet_is_dropped_and_counted_and_the_vif_goes_on(case, reason):
    """A chain of XEN_NETBK_LEGACY_SLOTS_MAX more slots or whose slots add up to more than the packet
    is answered with errors; a GSO packet netback cannot segment is taken and dropped; either way
    nothing leaves, the drop is counted and the vif carries the next frame."""
    w = world(PV, PV)
    frame = TCP_PACKET if case != "gso packet not TCP" else TCP_PACKET[:23] + b"\x11" + TCP_PACKET[24:]
    refs = granted_packet(w, "vm1", frame)
    total, extras = len(frame), (extra(size=40 if "minimum" in case else 1460),)
    if case == "too many slots":
        refs = refs[:1] * (LEGACY_SLOTS_MAX + 2)
        total, extras = 100 * len(refs), ()
    requests = chain(refs, total, GSO_FIRST if extras else 0, extras)
    if case == "too many slots":
        requests = [(ref, 0, flags, rid, 100) for ref, _, flags, rid, _ in requests]
    requests[0] = (*requests[0][:4], 5000 if case == "slots longer than the packet" else total)
    vif = w.xen["host0"].vifs[0]
    bridged = Frames()
    watch(w, "host0/bridge", bridged)
    index = hostile_tx(w, "vm1", *requests)
    assert vif.running and vif.stats[reason] == 1 and not list(bridged)
    statuses = [tx_status(w, "vm1", index + i) for i in range(len(requests))]
    expected = x.NETIF_RSP_OKAY if "gso" in case else x.NETIF_RSP_ERROR
    assert statuses == [expected if r[3] >= 100 else x.NETIF_RSP_NULL for r in requests]
    assert w.sim.drops.places[f"dom0/vif1/{reason}"] == 1
    assert w.guests["vm1"].netdevs[0].transmit(bytes.fromhex("00163e000002" "00163e000001" "0806") + bytes(50))
    w.settle()
    assert vif.stats["tx_frames"] == 1 and list(bridged)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slots=st.lists(st.one_of(
    st.tuples(st.just("req"), st.integers(0, 3), st.integers(0, 4200),
              st.sampled_from([0, x.NETTXF_more_data, x.NETTXF_extra_info, x.NETTXF_more_data | x.NETTXF_extra_info,
                               x.NETTXF_csum_blank | x.NETTXF_more_data | x.NETTXF_extra_info]),
              st.integers(0, 0xFFFF)),
    st.tuples(st.just("extra"), st.integers(0, 7), st.integers(0, 0xFFFF), st.integers(0, 3), st.booleans())),
    max_size=24))
def test_random_chains_and_extra_info_never_crash_and_write_only_the_ring(slots):
    """Whatever chains and extra-info slots a frontend writes, netback never raises, writes nothing of
    the guest but its TX ring page (and Xen's event bits), and answers every slot it took or has cut
    the frontend off; frames it sends are whole Ethernet frames or GSO packets it could cut."""
    w = world(PV, memory_mb=32)
    guest = w.guests["vm1"]
    front = guest.netdevs[0]
    refs = granted_packet(w, "vm1", TCP_PACKET[:4 * PAGE])
    requests = [(refs[s[1]], s[2], s[3], i, s[4]) if s[0] == "req" else extra(s[1], s[2], s[3], s[4])
                for i, s in enumerate(slots)]
    bridged = Frames()
    watch(w, "host0/bridge", bridged)
    before = bytearray(guest.mem.buf)
    hostile_tx(w, "vm1", *requests)
    after = bytearray(guest.mem.buf)
    for page in (front.tx_ring, front.platform.shared_info):
        before[page:page + PAGE] = after[page:page + PAGE]
    assert after == before
    vif = w.xen["host0"].vifs[0]
    assert vif.disabled or vif.tx_rsp == vif.tx_cons == front.tx_prod & x.RING_IDX_MASK
    for frame in bridged:
        assert len(frame) <= MTU_FRAME or type(frame) is GsoFrame and frame.gso_size >= 88



def writable_to_dom0(guest) -> set[int]:
    """The pages ``guest``'s grant table lets dom0 write (GTF_permit_access without GTF_readonly)."""
    plat = guest.netdevs[0].platform
    pages = set()
    for ref in range(NR_GRANT_FRAMES * x.GRANT_ENTRIES_PER_FRAME):
        flags, domid, frame = x.GRANT_ENTRY_V1.unpack_from(guest.mem.buf, plat.gnttab + ref * x.GRANT_ENTRY_V1.size)
        if flags & x.GTF_type_mask == x.GTF_permit_access and not flags & x.GTF_readonly and domid == 0:
            pages.add(frame)
    return pages


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, NR_GRANT_FRAMES * x.GRANT_ENTRIES_PER_FRAME + 8)),
                         max_size=20))
def test_a_gso_packet_into_random_rx_requests_lands_only_in_pages_granted_writable(requests):
    """The guest names any ids and grant refs in the RX requests a GSO packet's slots take: netback
    never raises, writes only pages the guest granted it writable (and the RX ring, and Xen's event
    bits), and netfront drops what it cannot put together."""
    w = world(PV, memory_mb=32)
    guest = w.guests["vm1"]
    front = guest.netdevs[0]
    for i, (rid, gref) in enumerate(requests):
        guest.mem.store(x.NETIF_RX_REQUEST.struct, front.rx_ring + x.RING_OFFSET
                        + ((front.rx_cons + i) & (x.NET_RX_RING_SIZE - 1)) * x.RX_ENTRY, rid, gref)
    writable = writable_to_dom0(guest)
    before = bytearray(guest.mem.buf)
    vif = w.xen["host0"].vifs[0]
    stack = guest.interfaces[front.mac]
    seen = front.stats["rx_errors"], sum(stack.stats.values())
    vif.port.deliver(GsoFrame.of(bytes.fromhex("00163e000001") + TCP_PACKET[6:26] + bytes([10, 0, 0, 1])
                                 + TCP_PACKET[30:], 1460), w.sim.now)
    w.settle()
    after = bytearray(guest.mem.buf)
    changed = {at >> x.PAGE_SHIFT for at in range(0, len(after), PAGE) if after[at:at + PAGE] != before[at:at + PAGE]}
    allowed = writable | {front.rx_ring >> x.PAGE_SHIFT, front.tx_ring >> x.PAGE_SHIFT,
                          front.platform.shared_info >> x.PAGE_SHIFT}
    assert changed <= allowed
    assert vif.running
    assert (front.stats["rx_errors"], sum(stack.stats.values())) != seen      # dropped by netfront, or up the stack
