"""Xen PV live migration: the source Xen destroys the domain and its dom0
forgets it; the guest's platform registers with the target Xen and its
netfront reconnects through the target's xenstore (new rings, grants and
event channel; TX in flight lost and counted; RX re-posted), after which
frames flow through the target dom0.  The switch-over is done by hand, as
the migration engine does it; the hosts share no network, so traffic after
the move goes to a VM on the target host."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.experiments.workloads import KINDS, FlowStats
from iovirt.experiments.world import World, mac_bytes
from iovirt.hypervisor.vm import VM
from iovirt.spec import xen as x

PV = {"model": "paravirt", "device": "xen-netfront"}
MEMORY_MB = 32
PLACES = {"vm1": "host0", "vm3": "host0", "vm2": "host1"}     # vm1 moves; vm3 stays behind; vm2 waits on host1
ETH_TEST = bytes.fromhex("ffffffffffff" "00163e000001" "88b5")     # IEEE local experimental ethertype


def world(places: dict[str, str] = PLACES) -> World:
    """Two Xen hosts, PV guest vmN at 10.0.0.N on the host ``places`` gives it."""
    w = World(iovirt.Scenario.from_dict({
        "name": "xen-migration", "profile": "default",
        "hosts": [{"name": h, "cores": 8, "hypervisor": "xen"} for h in ("host0", "host1")],
        "vms": [{"name": vm, "host": host, "memory_mb": MEMORY_MB,
                 "nics": [{**PV, "mac": f"00:16:3e:00:00:{int(vm[2:]):02x}", "ip": f"10.0.0.{vm[2:]}/24"}]}
                for vm, host in places.items()],
        "workloads": []}))
    w.settle()
    return w


def migrate(w: World, name: str, to: str, vifs: bool = True) -> VM:
    """The engine's switch-over: pause, a target domain with the same vifs
    (none if not ``vifs``), memory copied, the source domain destroyed, the
    guest moved onto the target and resumed."""
    source = w.vms[name]
    source_xen, target_xen = w.xen[source.host.name], w.xen[to]
    source.pause()
    target = VM(name, w.hosts[to], source.mem.size >> 20)
    target_xen.create_domain(target)
    spec = next(vm for vm in w.scenario.vms if vm.name == name)
    for nic in spec.nics if vifs else ():
        target_xen.add_vif(target, mac_bytes(nic.mac))
    target.mem.buf[:] = source.mem.buf[:]
    source_xen.destroy_domain(source)
    guest = w.guests[name]
    guest.move_to(target.vcpus[0], target.mem, xen=target_xen)
    guest.resume()
    w.vms[name] = target
    w.settle()
    return target


def stack(w: World, vm: str):
    return next(iter(w.guests[vm].interfaces.values()))


def traffic(w: World, kind: str, src: str, dst: str, index: int = 0, **kw) -> FlowStats:
    """A workload from ``src`` to ``dst`` for 1 ms, run to its end: its flow statistics."""
    stats = FlowStats(index, kind, src, dst, 1000)
    start = int(w.sim.now) + 1000
    KINDS[kind](stats, w.guests[src], w.guests[dst], stack(w, src), stack(w, dst), start, start + 1_000_000,
                None, **kw).begin()
    w.sim.run(until=start + 1_000_000)
    w.settle()
    return stats


def intact(stats: FlowStats) -> bool:
    return stats.sent == stats.delivered > 0 and stats.corrupted == stats.out_of_order == 0


def xs_state(xen, path: str) -> int:
    return int(xen.xenstore.read(0, f"{path}/state"))


# ---- after the move -------------------------------------------------------------------------------------
def test_migrated_guest_reconnects_on_the_target_and_streams_intact():
    """Before: vm1 pings vm3 on host0.  After the move: both xenbus ends Connected on host1 and a UDP
    stream vm1 -> vm2 and pings vm2 -> vm1 arrive whole and in order, through host1's dom0."""
    w = world()
    assert intact(traffic(w, "ping", "vm1", "vm3", count=5))
    target = migrate(w, "vm1", "host1")
    xen = w.xen["host1"]
    dom = xen.domain_of(target)
    front = f"{dom.home()}/device/vif/0"
    back = xen.xenstore.read(0, f"{front}/backend")
    assert back == f"/local/domain/0/backend/vif/{dom.domid}/0"
    assert xs_state(xen, front) == xs_state(xen, back) == x.XenbusStateConnected
    (vif,) = [v for v in xen.vifs if v.frontend_domid == dom.domid]
    assert vif.running and w.guests["vm1"].netdevs[0].connected
    sent = vif.stats["tx_frames"]
    assert intact(traffic(w, "udp_stream", "vm1", "vm2", index=1))
    assert intact(traffic(w, "ping", "vm2", "vm1", index=2, count=5))
    assert vif.stats["tx_frames"] - sent > 100 and vif.stats["rx_frames"] > 0
    assert w.hosts["host1"].vswitch.fdb[mac_bytes("00:16:3e:00:00:01")] is vif.port


def test_reconnection_uses_new_grants_rings_and_event_channel_on_the_target():
    """The target Xen holds the guest's ring grants mapped by its own netback and an event channel bound to
    it; the rings restart empty with every RX buffer posted again; the guest re-registered its platform."""
    w = world()
    hypercalls = Counter(w.vms["vm1"].acct)["hypercall"]
    target = migrate(w, "vm1", "host1")
    xen, netfront = w.xen["host1"], w.guests["vm1"].netdevs[0]
    dom, dom0 = xen.domain_of(target), xen.dom0
    assert target.acct["hypercall"] > hypercalls
    assert xen.xenstore.read(0, f"{dom.home()}/device/vif/0/event-channel") == str(netfront.port)
    channel = dom.ports[netfront.port]
    assert channel.bound and channel.remote_domid == 0 and dom0.ports[channel.remote_port].bound
    assert sorted(page.ref for page in dom0.maps if page.granter is dom) == sorted(netfront.ring_refs)
    assert dom.shared_info == netfront.platform.shared_info and dom.gnttab == netfront.platform.gnttab
    rx = x.U32.unpack_from(target.mem.buf, netfront.rx_ring + x.REQ_PROD)[0]
    assert rx == len(netfront.rx_posted) == x.NET_RX_RING_SIZE


def test_tx_requests_in_flight_at_the_switch_over_are_lost_and_counted():
    """Frames pushed to the TX ring just before the pause are never answered by the old backend: the
    netfront releases them on resume and counts them; they reach no bridge, and their grants, valid for
    dom0 on the source, grant nothing to the target's dom0; later frames go out."""
    w = world()
    netfront = w.guests["vm1"].netdevs[0]
    for _ in range(5):
        assert netfront.transmit(ETH_TEST + bytes(50))
    in_flight = len(netfront.tx_inflight)
    refs = [netfront.tx_refs[slot] for slot in netfront.tx_inflight]
    assert in_flight >= 5
    flooded = w.hosts["host0"].vswitch.stats["flooded"]
    target = migrate(w, "vm1", "host1")
    assert w.guests["vm1"].stats["xennet_tx_released"] == in_flight
    assert w.hosts["host0"].vswitch.stats["flooded"] == flooded
    xen = w.xen["host1"]
    domid = xen.domain_of(target).domid
    assert all(xen.grant_map(xen.dom0_kernel.vcpu, domid, ref, True)[0] != x.GNTST_okay for ref in refs)
    assert not netfront.tx_inflight and len(netfront.tx_free) == x.NET_TX_RING_SIZE
    assert intact(traffic(w, "ping", "vm1", "vm2", count=3))


def test_source_dom0_keeps_no_trace_of_the_migrated_domain():
    """The source Xen has no domain, vif, xenstore node, watch, event channel, grant map, handler or bridge
    port left for vm1; vm3 pinging vm1's old address gets nothing and nothing breaks."""
    w = world()
    assert intact(traffic(w, "ping", "vm3", "vm1", count=3))
    xen, source = w.xen["host0"], w.vms["vm1"]
    domid = xen.domain_of(source).domid
    old_vif = next(v for v in xen.vifs if v.frontend_domid == domid)
    migrate(w, "vm1", "host1")
    assert domid not in xen.domains and all(v.frontend_domid != domid for v in xen.vifs)
    homes = (f"/local/domain/{domid}", f"/local/domain/0/backend/vif/{domid}")
    assert not [p for p in xen.xenstore.nodes if p.startswith(homes)]
    assert not [watch for watch in xen.xenstore.watches if watch[2] == domid or watch[0].startswith(homes)]
    assert all(ch.remote_domid != domid or not ch.bound for d in xen.domains.values() for ch in d.ports.values())
    assert all(page.granter.domid != domid for d in xen.domains.values() for page in d.maps)
    assert old_vif.evtchn not in xen.dom0_kernel.handlers and not old_vif.connected
    vswitch = w.hosts["host0"].vswitch
    assert old_vif.port not in vswitch.ports and old_vif.port not in vswitch.fdb.values()
    assert traffic(w, "ping", "vm3", "vm1", index=1, count=3).delivered == 0


def test_a_guest_migrates_there_and_back_with_fresh_domain_ids():
    """host0 -> host1 -> host0: each arrival gets a domain id never used on that host; pings work each time."""
    w = world()
    first = w.xen["host0"].domain_of(w.vms["vm1"]).domid
    migrate(w, "vm1", "host1")
    assert intact(traffic(w, "ping", "vm1", "vm2", count=3))
    back = migrate(w, "vm1", "host0")
    assert w.xen["host0"].domain_of(back).domid > max(first, w.xen["host0"].domain_of(w.vms["vm3"]).domid)
    assert intact(traffic(w, "ping", "vm1", "vm3", index=1, count=3))
    assert w.guests["vm1"].stats["xenbus_no_otherend"] == 0


def test_netfront_without_a_vif_on_the_target_stays_detached_and_drops():
    """The target has no vif for vm1: the netfront finds no backend, stays disconnected without raising;
    its frames wait in the qdisc until it is full, then are dropped and counted; nothing reaches host1."""
    w = world()
    assert intact(traffic(w, "ping", "vm1", "vm3", count=1))
    vswitch, (vif2,) = w.hosts["host1"].vswitch, w.xen["host1"].vifs
    seen = vswitch.stats["flooded"], vif2.stats["rx_frames"]
    migrate(w, "vm1", "host1", vifs=False)
    guest, netfront = w.guests["vm1"], w.guests["vm1"].netdevs[0]
    assert not netfront.connected and guest.stats["xenbus_no_otherend"] == 1
    ip = stack(w, "vm1")
    sock = ip.udp_socket(7000)
    accepted = sum(sock.sendto(b"lost", ("10.0.0.3", 7000)) for _ in range(ip.txqueuelen + 50))
    w.settle()
    assert len(ip.qdisc) == ip.txqueuelen and ip.stats["tx_dropped"] == ip.txqueuelen + 50 - accepted > 0
    assert (vswitch.stats["flooded"], vif2.stats["rx_frames"]) == seen
    assert traffic(w, "ping", "vm2", "vm1", index=1, count=2).delivered == 0


# ---- a hostile guest's leftovers -----------------------------------------------------------------------
ACTIONS = st.lists(st.sampled_from(["offer_dom0", "offer_vm3", "bind_vm3", "map_vm3", "xs_node",
                                    "tx_in_flight", "ring_overrun"]), max_size=8)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS)
def test_destroying_a_domain_whatever_it_left_behind_never_raises_or_leaks(actions):
    """Whatever vm1 set up (ports offered or bound, another guest's grant mapped, xenstore nodes, TX in
    flight, a fatal ring), destroying it raises nothing, releases vm3's grant and keeps vm3's vif working."""
    w = world({"vm1": "host0", "vm3": "host0"})
    xen, g1, g3 = w.xen["host0"], w.guests["vm1"], w.guests["vm3"]
    dom1, dom3 = xen.domain_of(w.vms["vm1"]), xen.domain_of(w.vms["vm3"])
    plat3 = g3.netdevs[0].platform
    ref, page = plat3.claim_ref(), g3.alloc.alloc(x.PAGE_SIZE)
    plat3.grant(ref, dom1.domid, page, readonly=False)
    for action in actions:
        if action == "offer_dom0":
            xen.evtchn_alloc_unbound(g1.vcpu, 0)
        elif action == "offer_vm3":
            xen.evtchn_alloc_unbound(g1.vcpu, dom3.domid)
        elif action == "bind_vm3":
            xen.evtchn_bind_interdomain(g1.vcpu, dom3.domid, xen.evtchn_alloc_unbound(g3.vcpu, dom1.domid))
        elif action == "map_vm3":
            xen.grant_map(g1.vcpu, dom3.domid, ref, False)
        elif action == "xs_node":
            xen.xs_write(g1.vcpu, "data/leftover", "x")
        elif action == "tx_in_flight":
            g1.netdevs[0].transmit(ETH_TEST + bytes(50))
        else:
            front = g1.netdevs[0]
            g1.mem.store(x.U32, front.tx_ring + x.REQ_PROD, front.tx_prod + 3 * x.NET_TX_RING_SIZE)
            xen.evtchn_send(g1.vcpu, front.port)
    w.vms["vm1"].pause()
    xen.destroy_domain(w.vms["vm1"])
    w.settle()
    assert dom1.domid not in xen.domains and dom3.pins[ref] == 0
    flags = x.GRANT_ENTRY_FLAGS.unpack_from(g3.mem.buf, plat3.gnttab + ref * x.GRANT_ENTRY_V1.size)[0]
    assert not flags & (x.GTF_reading | x.GTF_writing)
    assert all(ch.remote_domid != dom1.domid or not ch.bound for ch in dom3.ports.values())
    assert not [p for p in xen.xenstore.nodes if p.startswith(dom1.home())]
    vif3 = next(v for v in xen.vifs if v.frontend_domid == dom3.domid)
    sent = vif3.stats["tx_frames"]
    assert g3.netdevs[0].transmit(ETH_TEST[:6] + bytes.fromhex("00163e000003") + ETH_TEST[12:] + bytes(50))
    w.settle()
    assert vif3.running and vif3.stats["tx_frames"] == sent + 1


# ---- what the migration engine sends for a PV domain while it is stopped -------------------------
def _engine(vcpus: int) -> dict:
    from iovirt.experiments.migrate import migrate as engine
    data = {"name": "xen-pv-migration", "profile": "default",
            "hosts": [{"name": h, "cores": 8, "hypervisor": "xen", "nics": [{"name": "pnic0"}]}
                      for h in ("host0", "host1")],
            "vms": [{"name": vm, "host": "host0", "memory_mb": MEMORY_MB, "vcpus": vcpus if vm == "vm1" else 1,
                     "nics": [{**PV, "mac": f"00:16:3e:00:00:{int(vm[2:]):02x}", "ip": f"10.0.0.{vm[2:]}/24"}]}
                    for vm in ("vm1", "vm2")],
            "workloads": [{"type": "udp_stream", "src": "vm2", "dst": "vm1", "rate_pps": 1000, "duration_ms": 10}],
            "migration": {"vm": "vm1", "to": "host1", "at_ms": 1, "downtime_ms": 1}}
    return engine(iovirt.Scenario.from_dict(data)).to_dict()


def test_a_pv_domain_is_stopped_while_its_vcpu_contexts_cross():
    """netfront has no PCI state to send, yet the domain stops: each vCPU's vcpu_guest_context and
    XSAVE area and the domain's shared info page cross meanwhile, more of them with more vCPUs."""
    one, two = _engine(1), _engine(2)
    assert one["result"] == two["result"] == "ok"
    assert 0 < one["vcpu_state_bytes"] == one["state_bytes"] < two["vcpu_state_bytes"]
    assert 0 < one["downtime_ms"] < two["downtime_ms"]


def test_pv_records_decode_only_against_a_domain_of_the_same_shape():
    from iovirt.devices.vmstate import StateError
    from iovirt.hypervisor import cpustate
    w = world({"vm1": "host0"})
    vm = w.vms["vm1"]
    blob = cpustate.save(vm, "xen-pv")
    cpustate.check(vm, "xen-pv", blob)
    bigger = VM("vm9", w.hosts["host1"], vm.mem.size >> 20, vcpus=2)
    for target, platform in ((bigger, "xen-pv"), (vm, "xen-hvm"), (vm, "kvm")):
        try:
            cpustate.check(target, platform, blob)
        except StateError:
            continue
        raise AssertionError(f"{platform} with {len(target.vcpus)} vCPUs took a 1-vCPU PV stream")


def test_the_lapic_page_carries_the_vectors_in_service_and_requested():
    """An HVM domain's LAPIC_REGS record holds ISR and IRR bits where the SDM puts them (0x100, 0x200)."""
    from iovirt.hypervisor import cpustate
    w = world({"vm1": "host0"})
    vm = w.vms["vm1"]
    vm.vcpus[0].in_service, vm.irqchip.irr = {0x31}, {0x45}
    blob = cpustate.save(vm, "xen-hvm")
    at = 0
    while True:
        code, instance, length = cpustate.DESCRIPTOR.unpack_from(blob, at)
        at += cpustate.DESCRIPTOR.size
        if code == 6:                                       # LAPIC_REGS
            page = blob[at:at + length]
            break
        at += length
    assert int.from_bytes(page[0x100 + 16:0x104 + 16], "little") == 1 << (0x31 - 32)
    assert int.from_bytes(page[0x200 + 32:0x204 + 32], "little") == 1 << (0x45 - 64)
    assert not any(page[0x100:0x100 + 16]) and not any(page[0x200:0x200 + 32])
