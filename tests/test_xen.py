"""Xen: grant tables, event channels and xenstore as guests and dom0 use
them; PV netfront/netback and HVM e1000 (QEMU in dom0) end to end; what
each costs; hostile frontends.  Worlds are built from scenarios; a hostile
guest is the test writing its own ring and grant entries in its memory."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.devices.e1000 import E1000
from iovirt.devices.xen_netback import XenNetback
from iovirt.experiments import runner
from iovirt.experiments.scenario import ScenarioError
from iovirt.experiments.world import World
from iovirt.hypervisor.xen import XEN_IOREQ, XenStore
from iovirt.spec import xen as x

EXAMPLE = Path(__file__).parent.parent / "examples" / "xen-pv.yaml"
PV = {"model": "paravirt", "device": "xen-netfront"}
E1000_NIC = {"model": "emulated", "device": "e1000"}
PAGE = x.PAGE_SIZE
STREAM = {"type": "udp_stream", "src": "vm1", "dst": "vm2", "duration_ms": 2}
PING = {"type": "ping", "src": "vm1", "dst": "vm2", "count": 10}


def scenario(*nics: dict, workloads=(), hypervisor: str = "xen", cores: int = 8, memory_mb: int = 256):
    """One host, VM i with NIC ``nics[i-1]`` at 10.0.0.i."""
    return iovirt.Scenario.from_dict({
        "name": "xen", "profile": "default", "hosts": [{"name": "host0", "cores": cores, "hypervisor": hypervisor}],
        "vms": [{"name": f"vm{i}", "host": "host0", "memory_mb": memory_mb,
                 "nics": [{**nic, "mac": f"00:16:3e:00:00:{i:02x}", "ip": f"10.0.0.{i}/24"}]}
                for i, nic in enumerate(nics, 1)],
        "workloads": list(workloads)})


def world(*nics: dict, **kw) -> World:
    w = World(scenario(*nics, **kw))
    w.settle()
    return w


def copy_ops(xen, *ops) -> list[int]:
    """GNTTABOP_copy issued by dom0 over ``ops`` ((ptr, domid, offset) source, dest, len, flags): the statuses."""
    kernel, size = xen.dom0_kernel, x.GNTTAB_COPY.size
    base = kernel.alloc(len(ops) * size)
    for i, (src, dst, length, flags) in enumerate(ops):
        kernel.vm.mem.store(x.GNTTAB_COPY.struct, base + i * size, *src, *dst, length, flags, 0)
    assert xen.grant_copy(kernel.vcpu, base, len(ops)) == 0
    return [x.I16.unpack_from(kernel.vm.mem.buf, base + i * size + x.GNTTAB_COPY_STATUS)[0] for i in range(len(ops))]


# ---- grant tables ------------------------------------------------------------------------------
def test_grant_copy_checks_every_grant_and_answers_xen_status_codes():
    """GNTTABOP_copy: a good read-only grant copies; write to it, a ref past the table, a grant to another
    domain, a revoked one, a frame outside the granter, an unknown domain, a foreign frame without a grant
    and a copy past the page each fail with their GNTST_* code and move nothing."""
    w = world(PV, PV)
    xen, guest = w.xen["host0"], w.guests["vm1"]
    plat = guest.netdevs[0].platform
    page = guest.alloc.alloc(PAGE)
    guest.mem.write(page, b"granted bytes" * 8)
    ro, other, revoked, wild = (plat.claim_ref() for _ in range(4))
    plat.grant(ro, 0, page, readonly=True)
    plat.grant(other, 2, page, readonly=False)
    plat.grant(revoked, 0, page, readonly=False)
    assert plat.end_grant(revoked)
    plat.grant(wild, 0, guest.mem.size + 5 * PAGE, readonly=False)
    dst = xen.dom0_kernel.alloc(PAGE)
    mine = (dst >> x.PAGE_SHIFT, x.DOMID_SELF, 0)
    src_gref, dst_gref = x.GNTCOPY_source_gref, x.GNTCOPY_dest_gref
    statuses = copy_ops(
        xen,
        ((ro, 1, 0), mine, 104, src_gref),
        (mine, (ro, 1, 0), 64, dst_gref),
        ((xen.domains[1].gnttab_entries, 1, 0), mine, 64, src_gref),
        ((other, 1, 0), mine, 64, src_gref),
        ((revoked, 1, 0), mine, 64, src_gref),
        ((wild, 1, 0), mine, 64, src_gref),
        ((ro, 77, 0), mine, 64, src_gref),
        ((page >> x.PAGE_SHIFT, 1, 0), mine, 64, 0),
        ((ro, 1, 4000), mine, 200, src_gref),
    )
    assert statuses == [x.GNTST_okay, x.GNTST_general_error, x.GNTST_bad_gntref, x.GNTST_general_error,
                        x.GNTST_general_error, x.GNTST_bad_page, x.GNTST_bad_domain, x.GNTST_permission_denied,
                        x.GNTST_bad_copy_arg]
    assert xen.dom0_kernel.vm.mem.read(dst, PAGE) == b"granted bytes" * 8 + bytes(PAGE - 104)
    assert guest.mem.read(page, 104) == b"granted bytes" * 8


def test_mapped_ring_grant_cannot_be_revoked():
    """netback maps the frontend's ring pages: Xen marks the grants in use, so the guest cannot end them."""
    w = world(PV)
    guest = w.guests["vm1"]
    xs = w.xen["host0"].xenstore
    for key in ("tx-ring-ref", "rx-ring-ref"):
        ref = int(xs.read(1, f"device/vif/0/{key}"))
        flags = x.GRANT_ENTRY_FLAGS.unpack_from(guest.mem.buf, guest.netdevs[0].platform.gnttab + 8 * ref)[0]
        assert flags & (x.GTF_reading | x.GTF_writing) == x.GTF_reading | x.GTF_writing
        assert not guest.netdevs[0].platform.end_grant(ref)


# ---- event channels ------------------------------------------------------------------------------
def test_event_channel_coalesces_while_pending_and_holds_masked_events():
    """Two sends before the upcall runs make one upcall; a masked port stays pending with no upcall
    until EVTCHNOP_unmask delivers it."""
    w = world(PV, PV)
    xen, g1, g2 = w.xen["host0"], w.guests["vm1"], w.guests["vm2"]
    port1 = xen.evtchn_alloc_unbound(g1.vcpu, 2)
    port2 = xen.evtchn_bind_interdomain(g2.vcpu, 1, port1)
    assert port1 > 0 and port2 > 0
    calls = []
    plat = g1.netdevs[0].platform
    plat.handlers[port1] = lambda: calls.append(port1)
    stats = xen.domains[1].stats
    before = Counter(stats)
    for _ in range(2):
        xen.evtchn_send(g2.vcpu, port2)
    assert stats["upcalls"] - before["upcalls"] == 1 and stats["evtchn_coalesced"] - before["evtchn_coalesced"] == 1
    w.settle()
    assert calls == [port1]
    word, bit = divmod(port1, x.BITS_PER_EVTCHN_WORD)
    mask = plat.shared_info + x.SHARED_INFO_EVTCHN_MASK + 8 * word
    g1.mem.store(x.U64, mask, 1 << bit)
    xen.evtchn_send(g2.vcpu, port2)
    w.settle()
    pending = x.U64.unpack_from(g1.mem.buf, plat.shared_info + x.SHARED_INFO_EVTCHN_PENDING + 8 * word)[0]
    assert calls == [port1] and stats["evtchn_masked"] == 1 and pending >> bit & 1
    assert xen.evtchn_unmask(g1.vcpu, port1) == 0
    w.settle()
    assert calls == [port1, port1]


def test_binding_checks_the_offer():
    """Only the domain an unbound port was offered to may bind it, once; sending on no port is refused."""
    w = world(PV, PV)
    xen, g1, g2 = w.xen["host0"], w.guests["vm1"], w.guests["vm2"]
    offered_to_dom0 = xen.evtchn_alloc_unbound(g1.vcpu, 0)
    assert xen.evtchn_bind_interdomain(g2.vcpu, 1, offered_to_dom0) < 0
    assert xen.evtchn_bind_interdomain(g2.vcpu, 9, 1) < 0
    port = xen.evtchn_alloc_unbound(g1.vcpu, 2)
    assert xen.evtchn_bind_interdomain(g2.vcpu, 1, port) > 0
    assert xen.evtchn_bind_interdomain(g2.vcpu, 1, port) < 0
    assert xen.evtchn_send(g2.vcpu, 999) < 0


# ---- xenstore ------------------------------------------------------------------------------------------
def test_xenbus_handshake_walks_the_states(monkeypatch):
    """Backend Initialising -> InitWait at probe; frontend Initialising -> Initialised (rings, event channel
    and keys published) -> Connected after the backend connects; the backend offers feature-rx-copy."""
    written: list[tuple[str, str]] = []
    write = XenStore.write

    def spy(self, domid, path, value, *args, **kw):
        written.append((self.path(domid, path), str(value)))
        return write(self, domid, path, value, *args, **kw)

    monkeypatch.setattr(XenStore, "write", spy)
    w = world(PV)
    front, back = "/local/domain/1/device/vif/0", "/local/domain/0/backend/vif/1/0"
    states = {end: [int(v) for p, v in written if p == f"{end}/state"] for end in (front, back)}
    assert states[back] == [x.XenbusStateInitialising, x.XenbusStateInitWait, x.XenbusStateConnected]
    assert states[front] == [x.XenbusStateInitialising, x.XenbusStateInitialised, x.XenbusStateConnected]
    keys = [p.rsplit("/", 1)[1] for p, _ in written if p.startswith(front + "/")]
    initialised = [i for i, key in enumerate(keys) if key == "state"][1]
    assert initialised > max(keys.index(k) for k in ("tx-ring-ref", "rx-ring-ref", "event-channel"))
    xs = w.xen["host0"].xenstore
    assert xs.read(0, f"{back}/feature-rx-copy") == "1" and xs.read(1, f"{front}/mac") == "00:16:3e:00:00:01"


def test_xenstore_permissions_keep_domains_to_their_nodes():
    """A guest cannot write its backend's nodes, another guest's or the tree outside its home, nor read
    another guest's; relative paths are under its own home."""
    w = world(PV, PV)
    xen, g1 = w.xen["host0"], w.guests["vm1"]
    assert xen.xs_write(g1.vcpu, "/local/domain/0/backend/vif/1/0/state", x.XenbusStateClosed) < 0
    assert xen.xs_read(g1.vcpu, "/local/domain/0/backend/vif/1/0/state") == str(x.XenbusStateConnected)
    assert xen.xs_read(g1.vcpu, "/local/domain/2/device/vif/0/mac") is None
    assert xen.xs_write(g1.vcpu, "/local/domain/2/device/vif/7/state", 1) < 0
    assert xen.xs_write(g1.vcpu, "/tool/anything", 1) < 0
    assert xen.xs_read(g1.vcpu, "domid") == "1" and xen.xs_write(g1.vcpu, "data/note", "mine") == 0


# ---- end to end ------------------------------------------------------------------------------------------
def test_example_pv_and_hvm_guests_deliver_every_frame_intact():
    """examples/xen-pv.yaml: pings and UDP streams PV->PV and PV->HVM(e1000) all arrive, intact and in order."""
    flows = iovirt.run(iovirt.load_scenario(EXAMPLE)).to_dict()["flows"]
    assert [f["type"] for f in flows] == ["ping", "ping", "udp_stream", "udp_stream"]
    for flow in flows:
        assert flow["sent"] == flow["delivered"] > 0
        assert flow["corrupted"] == flow["out_of_order"] == flow["dropped"] == 0
    assert all(f["delivered"] > 50 for f in flows[2:])      # pv2 also receives pv1's stream on its one vCPU


@functools.cache
def run(nics: tuple[str, ...], kind: str, hypervisor: str = "xen", rate_pps: float | None = None) -> dict:
    workload = {**(STREAM if kind == "stream" else PING)} | ({"rate_pps": rate_pps} if rate_pps else {})
    devices = {"pv": PV, "e1000": E1000_NIC}
    return iovirt.run(scenario(*(devices[n] for n in nics), workloads=[workload], hypervisor=hypervisor)).to_dict()


def per_frame(result: dict, *events: str) -> float:
    flow = result["flows"][0]
    frames = flow["delivered"] * (2 if flow["type"] == "ping" else 1)
    return sum(result["events"].get(e, 0) for e in events) / frames


@pytest.mark.parametrize("nics", [("pv", "pv"), ("e1000", "pv")])
def test_stream_from_an_hvm_guest_to_a_pv_guest_arrives_intact(nics):
    """UDP from vm1 to vm2 arrives whole and in order whichever end is PV or HVM."""
    flow = run(nics, "stream")["flows"][0]
    assert flow["sent"] == flow["delivered"] > 100 and flow["corrupted"] == flow["out_of_order"] == 0


def test_pv_costs_fewer_exits_and_hypercalls_per_frame_than_e1000_on_xen():
    """Per frame, netfront/netback takes under half the exits + hypercalls of the e1000 model behind ioreqs."""
    pv = per_frame(run(("pv", "pv"), "stream"), "vm_exit", "hypercall")
    e1000 = per_frame(run(("e1000", "e1000"), "stream"), "vm_exit", "hypercall")
    assert 0 < 2 * pv < e1000
    assert per_frame(run(("e1000", "e1000"), "stream"), "ioreq") > 0 == per_frame(run(("pv", "pv"), "stream"), "ioreq")


def test_event_suppression_cuts_notifications_per_frame_under_load():
    """req_event/rsp_event: a stream at full speed sends fewer events and hypercalls per frame than the
    same stream at a light rate, where every frame is notified; grant copies per frame stay two."""
    loaded, light = run(("pv", "pv"), "stream"), run(("pv", "pv"), "stream", rate_pps=20000)
    assert 1.5 * per_frame(loaded, "evtchn_send") < per_frame(light, "evtchn_send")
    assert per_frame(loaded, "hypercall") < per_frame(light, "hypercall")
    assert per_frame(loaded, "grant_copy") == pytest.approx(2, abs=0.05) == per_frame(light, "grant_copy")


def netback_tx(monkeypatch, rate_pps: float | None = None) -> dict[str, float]:
    """A vm1 -> vm2 stream; per frame delivered: the events vm1's netfront sent, the TX GNTTABOP_copy
    hypercalls netback made and every hypercall dom0's vCPUs made, from the start of the measurement."""
    worlds, tx_copies = [], []

    class Kept(World):
        def start_measuring(self, at: int) -> None:
            super().start_measuring(at)
            self.evtchn_before = self.xen["host0"].domain_of(self.vms["vm1"]).stats["evtchn_send"]
            worlds.append(self)

    copy = XenNetback._copy

    def counted(vif, cpu, first, count):
        if count and not first and worlds:            # TX ops start at 0, RX ops at NAPI_WEIGHT
            tx_copies.append(count)
        return copy(vif, cpu, first, count)

    monkeypatch.setattr(XenNetback, "_copy", counted)
    monkeypatch.setattr(runner, "World", Kept)
    workload = {**STREAM, "duration_ms": 4} | ({"rate_pps": rate_pps} if rate_pps else {})
    flow = runner.run(scenario(PV, PV, workloads=[workload])).to_dict()["flows"][0]
    (w,) = worlds
    frames = flow["delivered"]
    assert flow["sent"] == frames > 50
    dom0 = w.xen["host0"].dom0.vm.vcpus
    events = w.xen["host0"].domain_of(w.vms["vm1"]).stats["evtchn_send"] - w.evtchn_before
    return {"events": events / frames, "tx_copies": len(tx_copies) / frames, "ops": sum(tx_copies) / frames,
            "dom0_hypercalls": sum(v.spent["hypercall"] for v in dom0) / dom0[0].ledger.fixed["hypercall"] / frames}


def test_netback_takes_a_tx_round_without_events_and_copies_it_in_one_hypercall(monkeypatch):
    """NAPI re-arms req_event only when a poll finds the ring empty: a netfront kept busy by a stream sends
    almost no events while netback works, and netback copies each round's requests in one GNTTABOP_copy, so
    dom0 makes fewer hypercalls than frames; at a light rate every frame finds netback asleep: one event,
    one copy hypercall."""
    loaded = netback_tx(monkeypatch)
    assert loaded["events"] < 0.1
    assert loaded["ops"] == pytest.approx(1, abs=0.02) and loaded["tx_copies"] < 0.4
    assert loaded["dom0_hypercalls"] < 1
    light = netback_tx(monkeypatch, rate_pps=20_000)
    assert light["events"] == pytest.approx(1, abs=0.05) and light["tx_copies"] == pytest.approx(1, abs=0.05)


def dom0_busy(result: dict) -> float:
    return sum(r["busy_s"] for r in result["resources"] if "/host0-dom0/" in r["name"])


def test_dom0_cpu_grows_with_the_number_of_guests():
    """Each PV pair's frames are copied by dom0: with 1, 2, 4 pairs at the same rate dom0 is ever busier."""
    busy = []
    for pairs in (1, 2, 4):
        streams = [{**STREAM, "src": f"vm{2 * k + 1}", "dst": f"vm{2 * k + 2}", "rate_pps": 50000}
                   for k in range(pairs)]
        busy.append(dom0_busy(iovirt.run(scenario(*[PV] * 2 * pairs, workloads=streams, cores=16)).to_dict()))
    assert 0 < busy[0] < busy[1] < busy[2] and busy[2] > 2 * busy[0]


def test_the_same_e1000_model_serves_kvm_and_xen():
    """One E1000 class: on KVM its BARs trap to the VMM on the vCPU thread, on Xen they are ioreqs to a
    QEMU thread in dom0; both deliver a ping."""
    kvm, xen = (World(scenario(E1000_NIC, E1000_NIC, hypervisor=h)) for h in ("kvm", "xen"))
    for w in (kvm, xen):
        assert type(w.vms["vm1"].nics[0].device) is E1000
    bar = xen.guests["vm1"].netdevs[0].bar
    assert xen.vms["vm1"].mmio.lookup(bar).path == XEN_IOREQ != kvm.vms["vm1"].mmio.lookup(bar).path
    assert xen.vms["vm1"].nics[0].port.reader.name == "host0/host0-dom0/qemu-vm1"
    assert xen.vms["vm1"].acct["ioreq"] > 0 == kvm.vms["vm1"].acct["ioreq"]
    for hypervisor in ("kvm", "xen"):
        flow = run(("e1000", "e1000"), "ping", hypervisor)["flows"][0]
        assert flow["sent"] == flow["delivered"] == 10


def test_netfront_needs_a_xen_host():
    """xen-netfront on a KVM host is a one-line scenario error; so is virtio-net on a Xen host."""
    with pytest.raises(ScenarioError, match=r"vms\[0\].nics\[0\].device: .*needs hypervisor: xen"):
        scenario(PV, hypervisor="kvm")
    with pytest.raises(ScenarioError, match="needs hypervisor: kvm"):
        scenario({"model": "paravirt", "device": "virtio-net"})


# ---- hostile frontends -----------------------------------------------------------------------------------
def hostile_tx(w: World, vm: str, *requests: tuple, ahead: int = 0) -> int:
    """``vm``'s kernel gone rogue: raw TX requests at its producer, req_prod pushed (``ahead`` further),
    the event sent; returns the ring index of the first request."""
    guest = w.guests[vm]
    front = guest.netdevs[0]
    first = front.tx_prod
    for req in requests:
        guest.mem.store(x.NETIF_TX_REQUEST.struct, front.tx_ring + x.RING_OFFSET
                        + (front.tx_prod % x.NET_TX_RING_SIZE) * x.TX_ENTRY, *req)
        front.tx_prod += 1
    guest.mem.store(x.U32, front.tx_ring + x.REQ_PROD, (front.tx_prod + ahead) & x.RING_IDX_MASK)
    w.xen["host0"].evtchn_send(guest.vcpu, front.port)
    w.settle()
    return first


def tx_status(w: World, vm: str, index: int) -> int:
    front = w.guests[vm].netdevs[0]
    at = front.tx_ring + x.RING_OFFSET + (index % x.NET_TX_RING_SIZE) * x.TX_ENTRY
    return x.TX_RESPONSE.unpack_from(w.guests[vm].mem.buf, at)[1]


def secret_page(guest, to_domid: int, readonly: bool = True) -> tuple[int, int]:
    """A page of ``guest`` holding a secret, granted to ``to_domid``: (ref, gpa)."""
    plat = guest.netdevs[0].platform
    ref, page = plat.claim_ref(), guest.alloc.alloc(PAGE)
    guest.mem.write(page, b"SECRET" * 100)
    plat.grant(ref, to_domid, page, readonly)
    return ref, page


@pytest.mark.parametrize("case", ["ref past the table", "another domain's ref", "granted to another domain",
                                  "frame outside the guest", "runt"])
def test_bad_tx_request_is_answered_with_an_error_and_moves_nothing(case):
    """Each bad request gets NETIF_RSP_ERROR, no frame leaves, no secret reaches dom0, and the vif goes on."""
    w = world(PV, PV)
    g1, g2 = w.guests["vm1"], w.guests["vm2"]
    plat = g1.netdevs[0].platform
    size = 60
    if case == "ref past the table":
        gref = w.xen["host0"].domains[1].gnttab_entries + 3
    elif case == "another domain's ref":
        gref = secret_page(g2, 0)[0]                     # valid in vm2's table, free in vm1's
    elif case == "granted to another domain":
        gref = secret_page(g1, 2)[0]
    elif case == "frame outside the guest":
        gref = plat.claim_ref()
        plat.grant(gref, 0, g1.mem.size + 8 * PAGE, readonly=True)
    else:
        gref, size = secret_page(g1, 0)[0], 10
    vif = w.xen["host0"].vifs[0]
    sent = vif.stats["tx_frames"]
    index = hostile_tx(w, "vm1", (gref, 0, 0, 7, size))
    assert tx_status(w, "vm1", index) == x.NETIF_RSP_ERROR
    assert vif.stats["tx_frames"] == sent and vif.running
    assert b"SECRET" not in bytes(w.xen["host0"].dom0_kernel.vm.mem.buf[vif.pages[0]: vif.pages[0] + PAGE])
    frame = bytes.fromhex("00163e000002" "00163e000001" "0800") + bytes(50)
    assert g1.netdevs[0].transmit(frame)
    w.settle()
    assert vif.stats["tx_frames"] == sent + 1


@pytest.mark.parametrize("requests, ahead, reason", [
    ([(0, 4000, 0, 1, 200)], 0, "tx_cross_page"),
    ([], x.NET_TX_RING_SIZE + 1, "tx_impossible_requests"),
    ([(0, 0, x.NETTXF_more_data, i, 60) for i in range(25)], 0, "tx_bad_chain"),
])
def test_protocol_violation_disconnects_only_that_frontend(requests, ahead, reason):
    """A request crossing its page, a producer more than a ring ahead or an endless chain is fatal
    (xenvif_fatal_tx_err): that vif stops; the other guest's vif still carries frames."""
    w = world(PV, PV)
    hostile_tx(w, "vm1", *requests, ahead=ahead)
    vif1, vif2 = w.xen["host0"].vifs
    assert vif1.disabled and vif1.stats[reason] == vif1.stats["fatal_tx_err"] == 1
    assert vif2.running and not vif2.stats["fatal_tx_err"]
    received = vif2.stats["tx_frames"]
    assert w.guests["vm2"].netdevs[0].transmit(bytes.fromhex("ffffffffffff" "00163e000002" "0806") + bytes(50))
    w.settle()
    assert vif2.stats["tx_frames"] == received + 1


def test_hostile_frontend_mid_run_leaves_other_guests_unharmed(monkeypatch):
    """vm1 pushes its producer index past the ring mid-stream: its vif is cut off, vm3 -> vm4 loses nothing."""
    worlds = []

    class HostileWorld(World):
        def start_measuring(self, at: float) -> None:
            super().start_measuring(at)
            worlds.append(self)
            guest = self.guests["vm1"]

            def attack() -> None:
                front = guest.netdevs[0]
                front.tx_prod += 3 * x.NET_TX_RING_SIZE
                guest.mem.store(x.U32, front.tx_ring + x.REQ_PROD, front.tx_prod)
                self.xen["host0"].evtchn_send(guest.vcpu, front.port)
            guest.run_at(at + 500_000, attack)

    monkeypatch.setattr(runner, "World", HostileWorld)
    streams = [{**STREAM, "src": f"vm{a}", "dst": f"vm{a + 1}"} for a in (1, 3)]
    hostile, victim = runner.run(scenario(PV, PV, PV, PV, workloads=streams)).to_dict()["flows"]
    (w,) = worlds
    assert w.xen["host0"].vifs[0].disabled
    assert not any(v.disabled for v in w.xen["host0"].vifs[1:])
    assert 0 < hostile["delivered"] < victim["delivered"] and hostile["corrupted"] == 0
    assert victim["sent"] == victim["delivered"] > 100 and victim["corrupted"] == victim["out_of_order"] == 0


REQUEST = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
                    st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(st.one_of(REQUEST, st.tuples(st.sampled_from(range(4)), st.integers(0, 4200),
                                                      st.sampled_from([0, x.NETTXF_more_data]), st.integers(0, 300),
                                                      st.integers(0, 4200))), max_size=12),
       ahead=st.sampled_from([0, 0, 1, 200, x.NET_TX_RING_SIZE + 1, 2**32 - 5]))
def test_random_tx_requests_never_crash_and_write_only_the_ring(requests, ahead):
    """Whatever a frontend puts in its TX ring, netback never raises, writes nothing of the guest but its
    TX ring page (Xen alone writes the shared-info page), and either answers every request it took or has
    cut the frontend off."""
    w = world(PV, memory_mb=32)
    guest = w.guests["vm1"]
    front, plat = guest.netdevs[0], guest.netdevs[0].platform
    refs = [plat.claim_ref() for _ in range(4)]
    for ref, buf in zip(refs, front.tx_bufs):
        guest.mem.write(buf, bytes.fromhex("ffffffffffff" "00163e000001" "0800") + bytes(100))
        plat.grant(ref, 0, buf, readonly=bool(ref % 2))
    requests = [(refs[r[0]], *r[1:]) if r[0] < 4 else r for r in requests]
    before = bytearray(guest.mem.buf)
    hostile_tx(w, "vm1", *requests, ahead=ahead)
    after = bytearray(guest.mem.buf)
    for page in (front.tx_ring, plat.shared_info):                  # the ring, and Xen's event bits
        before[page : page + PAGE] = after[page : page + PAGE]
    assert after == before
    vif = w.xen["host0"].vifs[0]
    assert vif.disabled or vif.tx_rsp == vif.tx_cons == (front.tx_prod + ahead) & x.RING_IDX_MASK
