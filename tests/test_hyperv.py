"""Hyper-V: the SynIC and its hypercalls as partitions use them, VMBus
GPADLs and ring buffers, netvsc/netvsp end to end with what each costs, the
legacy tulip NIC in the worker process, and hostile guests.  A hostile
guest is the test writing its own rings, buffers and messages."""

from __future__ import annotations

import functools
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.devices.offload import rx_checksums
from iovirt.experiments import runner
from iovirt.experiments.capture import Frames, watch
from iovirt.experiments.compare import Config
from iovirt.experiments.compare import scenario as compare_scenario
from iovirt.experiments.runner import begin, run_to
from iovirt.experiments.scenario import ScenarioError, migration_problem
from iovirt.experiments.world import World
from iovirt.hypervisor.hyperv import HYPERV_MMIO, HYPERV_PIO, GpadlView
from iovirt.mem.guest_memory import GuestMemory
from iovirt.net.gso import GsoFrame, segment
from iovirt.spec import rndis as r
from iovirt.spec import vmbus as v
from iovirt.spec.rss import RSS_DEFAULT_KEY, toeplitz, toeplitz_tables

NETVSC = {"model": "paravirt", "device": "netvsc"}
TULIP = {"model": "emulated", "device": "tulip"}
STREAM = {"type": "udp_stream", "src": "vm1", "dst": "vm2", "duration_ms": 2}
PAGE = v.PAGE_SIZE


def scenario(*nics: dict, workloads=(), hypervisor: str = "hyperv", cores: int = 8, memory_mb: int = 256):
    """One host with a port, VM i with NIC ``nics[i-1]`` at 10.0.0.i."""
    return iovirt.Scenario.from_dict({
        "name": "hyperv", "profile": "default",
        "hosts": [{"name": "host0", "cores": cores, "hypervisor": hypervisor, "nics": [{"name": "pnic0"}]}],
        "vms": [{"name": f"vm{i}", "host": "host0", "memory_mb": memory_mb,
                 "nics": [{**nic, "mac": f"00:15:5d:00:00:{i:02x}", "ip": f"10.0.0.{i}/24"}]}
                for i, nic in enumerate(nics, 1)],
        "workloads": list(workloads)})


def netvsc_of(w: World, vm: str):
    """``vm``'s netvsc: the standby of the failover master its stack sits on."""
    return w.guests[vm].netdevs[0].standby


def world(*nics: dict, **kw) -> World:
    w = World(scenario(*nics, **kw))
    w.settle()
    return w


@functools.cache
def run(nics: tuple[str, ...], rate_pps: float | None = None) -> dict:
    devices = {"netvsc": NETVSC, "tulip": TULIP}
    workload = STREAM | ({"rate_pps": rate_pps} if rate_pps else {})
    return iovirt.run(scenario(*(devices[n] for n in nics), workloads=[workload])).to_dict()


def per_frame(result: dict, *events: str) -> float:
    return sum(result["events"].get(e, 0) for e in events) / result["flows"][0]["delivered"]


# ---- SynIC and the hypercalls ---------------------------------------------------------------------
def test_post_message_fills_the_slot_queues_behind_it_and_eom_delivers_the_next():
    """HvPostMessage: the first message lands in the SINT's slot with an interrupt; the next queues and sets
    msg_pending; freeing the slot and writing EOM brings it in.  A bad connection, a misaligned input and an
    oversized payload are refused with their TLFS status."""
    w = world(NETVSC)
    hv, guest = w.hyperv["host0"], w.guests["vm1"]
    bus, root = guest.vmbus, hv.root
    server = hv.server(w.vms["vm1"])
    slot = bus.simp + v.VMBUS_MESSAGE_SINT * v.HV_MESSAGE_SIZE
    vp = root.vm.vcpus[0]
    before = w.vms["vm1"].stats["interrupts"]
    for n in (1, 2):
        assert root.post(vp, server.to_child, v.RESCIND_OFFER.pack(v.CHANNELMSG_RESCIND_CHANNELOFFER, 100 + n)) == 0
    mtype, size, flags, _ = v.HV_MESSAGE_HEADER.unpack_from(guest.mem.buf, slot)
    assert (mtype, size, flags) == (v.VMBUS_MESSAGE_TYPE, v.RESCIND_OFFER.size, v.HV_MSG_PENDING)
    eoms = []
    taken = v.take_messages(guest.mem, bus.simp, v.VMBUS_MESSAGE_SINT, lambda: eoms.append(
        hv.wrmsr(guest.vcpu, v.HV_X64_MSR_EOM, 0)))
    assert [v.RESCIND_OFFER.unpack_from(p)[1] for _, p in taken] == [101, 102] and len(eoms) == 1
    assert v.U32.unpack_from(guest.mem.buf, slot)[0] == v.HVMSG_NONE
    w.settle()
    assert w.vms["vm1"].stats["interrupts"] > before
    mem = root.vm.mem
    mem.write(root.input, v.HV_INPUT_POST_MESSAGE.pack(0x777, 1, 8) + bytes(8))
    assert hv.post_message(vp, root.input) == v.HV_STATUS_INVALID_CONNECTION_ID
    assert hv.post_message(vp, root.input + 4) == v.HV_STATUS_INVALID_ALIGNMENT
    mem.write(root.input, v.HV_INPUT_POST_MESSAGE.pack(server.to_child, 1, 241))
    assert hv.post_message(vp, root.input) == v.HV_STATUS_INVALID_PARAMETER


def test_a_full_message_queue_refuses_and_the_guest_posts_again_later():
    """Past HV_MAX_QUEUED_MESSAGES behind a busy slot HvPostMessage answers INSUFFICIENT_BUFFERS; the
    guest's outbox keeps the message and posts it again (vmbus_post_msg's retry)."""
    w = world(NETVSC)
    root, server = w.hyperv["host0"].root, w.hyperv["host0"].server(w.vms["vm1"])
    statuses = [root.post(root.vm.vcpus[0], server.to_child, v.CHANNEL_HEADER.pack(99))
                for _ in range(v.HV_MAX_QUEUED_MESSAGES + 2)]
    assert statuses[:v.HV_MAX_QUEUED_MESSAGES + 1] == [0] * (v.HV_MAX_QUEUED_MESSAGES + 1)
    assert statuses[-1] == v.HV_STATUS_INSUFFICIENT_BUFFERS
    bus = w.guests["vm1"].vmbus
    for _ in range(v.HV_MAX_QUEUED_MESSAGES + 2):      # now the guest floods the root's queue the same way
        bus.post(v.CHANNEL_HEADER.pack(99))
    assert w.guests["vm1"].stats["vmbus_post_retry"] >= 1 and bus.outbox
    w.settle()
    assert not bus.outbox and server.stats["vmbus_bad_message"] >= v.HV_MAX_QUEUED_MESSAGES + 2


def test_signal_event_sets_the_flag_once_and_a_masked_sint_raises_nothing():
    """HvSignalEvent sets the channel's flag and interrupts; a second signal before the scan coalesces; an
    unknown connection is refused; with the SINT masked the flag is set but no interrupt comes."""
    w = world(NETVSC)
    hv, guest = w.hyperv["host0"], w.guests["vm1"]
    channel = hv.server(w.vms["vm1"]).channels[1]
    root_vp = channel.vsp.cpu
    flags_at = guest.vmbus.siefp + v.VMBUS_MESSAGE_SINT * (v.HV_EVENT_FLAGS_COUNT // 8)
    coalesced = hv.stats["event_coalesced"]
    for _ in range(2):
        assert hv.signal_event(root_vp, channel.to_guest | channel.relid << v.HV_SIGNAL_FLAG_SHIFT) == 0
    assert guest.mem.buf[flags_at] >> channel.relid & 1 and hv.stats["event_coalesced"] == coalesced + 1
    assert hv.signal_event(root_vp, 0xABCDE) == v.HV_STATUS_INVALID_CONNECTION_ID
    assert v.take_event_flags(guest.mem, guest.vmbus.siefp, v.VMBUS_MESSAGE_SINT) == [channel.relid]
    hv.wrmsr(guest.vcpu, v.HV_X64_MSR_SINT0 + v.VMBUS_MESSAGE_SINT, v.HV_SYNIC_SINT_MASKED | guest.vmbus.vector)
    masked = hv.stats["sint_masked"]
    hv.signal_event(root_vp, channel.to_guest | channel.relid << v.HV_SIGNAL_FLAG_SHIFT)
    assert hv.stats["sint_masked"] == masked + 1 and guest.mem.buf[flags_at] >> channel.relid & 1


# ---- GPADLs ---------------------------------------------------------------------------------------------
def gpadl(w: World, pfns: list[int], byte_count: int | None = None, ranges: int = 1, handle: int = 0x5000) -> int:
    """The guest posts a GPADL header (and bodies) naming ``pfns``; the status the host answers."""
    guest, bus = w.guests["vm1"], w.guests["vm1"].vmbus
    answers = []
    bus.waiting[v.CHANNELMSG_GPADL_CREATED, handle] = answers.append
    count = byte_count if byte_count is not None else len(pfns) * PAGE
    first = pfns[:v.PFNS_IN_HEADER]
    bus.post(v.GPADL_HEADER.pack(v.CHANNELMSG_GPADL_HEADER, 1, handle, v.GPA_RANGE_HEADER + 8 * len(pfns), ranges,
                                 count, 0) + b"".join(v.U64.pack(p) for p in first))
    for at in range(v.PFNS_IN_HEADER, len(pfns), v.PFNS_IN_BODY):
        bus.post(v.GPADL_BODY.pack(v.CHANNELMSG_GPADL_BODY, 1, handle)
                 + b"".join(v.U64.pack(p) for p in pfns[at:at + v.PFNS_IN_BODY]))
    w.settle()
    guest.vcpu.sync(w.sim.now)
    return answers[0] if answers else None


@pytest.mark.parametrize("case", ["good", "page past memory", "two ranges", "count too big for the pages"])
def test_gpadl_pages_are_checked_against_the_guests_memory(case):
    """A GPADL is created only when each page lies in the guest's memory and the range's byte count matches
    its pages; any other is refused with a failure status and maps nothing."""
    w = world(NETVSC, memory_mb=64)
    top = w.vms["vm1"].mem.size >> v.PAGE_SHIFT
    pfns = list(range(5000, 5040))
    kw = {"good": {}, "page past memory": {"pfns": pfns[:-1] + [top]}, "two ranges": {"ranges": 2},
          "count too big for the pages": {"byte_count": 41 * PAGE}}[case]
    status = gpadl(w, **({"pfns": pfns} | kw))
    server = w.hyperv["host0"].server(w.vms["vm1"])
    assert (status == 0) == (case == "good")
    assert (0x5000 in server.gpadls) == (case == "good")


def test_gpadl_view_reads_and_writes_through_scattered_pages():
    """The root's view of a GPADL maps each offset to its own page: across a page boundary the bytes go to
    the two named pages, wherever they are."""
    mem = GuestMemory(64 * PAGE)
    view = GpadlView(mem, [9, 3, 40])
    view.write(PAGE - 3, b"abcdef")
    assert mem.read(9 * PAGE + PAGE - 3, 3) == b"abc" and mem.read(3 * PAGE, 3) == b"def"
    assert view.read(PAGE - 3, 6) == b"abcdef" and view.size == 3 * PAGE and view.base is None


# ---- the ring buffer ------------------------------------------------------------------------------------
class Ring:
    """A ring in a buffer of its own: header page and ``data`` bytes."""

    def __init__(self, data: int = 1024) -> None:
        self.buf = bytearray(v.RING_DATA + data)
        self.size = data

    def read(self, off, n):
        return bytes(self.buf[off:off + n])

    def write(self, off, data):
        self.buf[off:off + len(data)] = data

    def get32(self, off):
        return v.U32.unpack_from(self.buf, off)[0]

    def put32(self, off, value):
        v.U32.pack_into(self.buf, off, value)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), max_size=40), reads=st.lists(st.booleans(), max_size=40))
def test_ring_packets_come_out_as_written_and_never_overrun(sizes, reads):
    """Whatever mix of writes and reads: every packet read is the next written, whole; a write that does not
    fit is refused (the ring never fills to the last byte); the reader never sees more than was written."""
    ring, written, pos = Ring(), [], 0
    for i, (size, read) in enumerate(zip(sizes, reads + [False] * len(sizes))):
        payload = bytes([i & 0xFF]) * size
        ok, _ = v.ring_write(ring, ring.size, v.packet(v.VM_PKT_DATA_INBAND, i, payload))
        write, rd = v.ring_indices(ring, ring.size)
        assert write != rd or not ok or not written
        if ok:
            written.append(payload)
        if read and written:
            desc, packet, pos = v.ring_peek(ring, ring.size, pos)
            assert packet[desc[1] << 3:][:len(written[0])] == written.pop(0)
            v.ring_commit_read(ring, ring.size, pos)
    while written:
        desc, packet, pos = v.ring_peek(ring, ring.size, pos)
        assert packet[desc[1] << 3:][:len(written[0])] == written.pop(0)
    assert v.ring_peek(ring, ring.size, pos) is None


@settings(max_examples=300, deadline=None)
@given(write=st.integers(0, 2**32 - 1), read=st.integers(0, 2**32 - 1), start=st.integers(0, 2048),
       desc=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
       mask=st.integers(0, 2**32 - 1), pending=st.integers(0, 2**32 - 1))
def test_any_guest_written_ring_state_is_read_or_refused(write, read, start, desc, mask, pending):
    """Whatever indices, descriptor, mask and pending size the other side leaves: reading gives a packet
    inside what was written, nothing, or RingError, and writing gives a result or RingError; never another
    exception, never a loop."""
    ring = Ring()
    for off, value in ((v.WRITE_INDEX, write), (v.READ_INDEX, read), (v.INTERRUPT_MASK, mask),
                       (v.PENDING_SEND_SZ, pending), (v.FEATURE_BITS, 1)):
        ring.put32(off, value)
    for at in range(0, ring.size, 16):
        v.VMPACKET_DESCRIPTOR.pack_into(ring.buf, v.RING_DATA + at, desc[0], desc[1], desc[2], 0, 0)
    try:
        got = v.ring_peek(ring, ring.size, start)
    except v.RingError:
        got = "refused"
    if got not in (None, "refused"):
        _, packet, after = got
        w = write % ring.size
        avail = (w - start) % ring.size
        assert len(packet) + v.PREV_INDICES <= avail and 0 <= after < ring.size
    try:
        v.ring_write(ring, ring.size, v.packet(v.VM_PKT_COMP, 1, b"x" * 40))
        v.ring_commit_read(ring, ring.size, start & ~7 & 1023)
    except v.RingError:
        pass
    assert write < ring.size and read < ring.size and not (write | read) & 7 or got == "refused"


def test_signalling_follows_the_interrupt_mask_and_pending_send_size():
    """A write signals only into an empty ring whose reader has not masked it; a read signals a writer
    waiting on pending_send_sz only when it crosses that size."""
    ring = Ring()
    assert v.ring_write(ring, ring.size, v.packet(6, 1, b"a" * 8)) == (True, True)
    assert v.ring_write(ring, ring.size, v.packet(6, 2, b"b" * 8)) == (True, False)
    v.begin_read(ring)
    _, _, pos = v.ring_peek(ring, ring.size, 0)
    _, _, pos = v.ring_peek(ring, ring.size, pos)
    assert not v.ring_commit_read(ring, ring.size, pos)
    assert not v.end_read(ring, ring.size, pos)
    v.begin_read(ring)
    assert v.ring_write(ring, ring.size, v.packet(6, 3, b"c" * 8)) == (True, False)   # masked: no signal
    ring.put32(v.FEATURE_BITS, v.FEAT_PENDING_SEND_SZ)
    free = v.bytes_to_write(*v.ring_indices(ring, ring.size), ring.size)
    ring.put32(v.PENDING_SEND_SZ, free + 1)
    _, _, pos = v.ring_peek(ring, ring.size, pos)
    assert v.ring_commit_read(ring, ring.size, pos)
    ring.put32(v.PENDING_SEND_SZ, 1)                  # already satisfied before the read: no signal
    assert not v.ring_commit_read(ring, ring.size, pos)


# ---- netvsc and netvsp end to end ---------------------------------------------------------------------
def test_netvsc_comes_up_through_nvsp_and_rndis():
    """After boot the guest knows its MAC from the host, the host has both buffers and the guest's filter,
    and the channel is open on its GPADL with the version both support."""
    w = world(NETVSC)
    netvsc, vsp = netvsc_of(w, "vm1"), w.hyperv["host0"].vsps[0]
    assert netvsc.ready and netvsc.mac == bytes.fromhex("00155d000001")
    assert vsp.version == r.NVSP_PROTOCOL_VERSION_61 and vsp.recv is not None and vsp.send is not None
    assert vsp.filter == r.NDIS_PACKET_TYPE_DIRECTED | r.NDIS_PACKET_TYPE_BROADCAST | r.NDIS_PACKET_TYPE_ALL_MULTICAST
    assert len(netvsc.tx_free) == vsp.send_sections and not vsp.errors


@pytest.mark.parametrize("nics", [("netvsc", "netvsc"), ("tulip", "netvsc")])
def test_stream_between_hyperv_guests_arrives_intact(nics):
    """UDP between guests on one Hyper-V host arrives whole and in order, synthetic or legacy at either end."""
    flow = run(nics)["flows"][0]
    assert flow["sent"] == flow["delivered"] > 50 and flow["corrupted"] == flow["out_of_order"] == 0


def test_ping_to_the_wire_through_the_vmswitch_and_the_roots_nic():
    """A netvsc guest pings the far end: the vmswitch forwards to the physical NIC the root drives."""
    result = iovirt.run(scenario(NETVSC, workloads=[{"type": "ping", "src": "vm1", "dst": "wire",
                                                     "count": 5}])).to_dict()
    flow = result["flows"][0]
    assert flow["delivered"] == flow["sent"] == 5 and result["events"]["vmswitch"] >= 10


def test_netvsc_costs_a_fraction_of_the_legacy_nics_intercepts_per_frame():
    """Per frame, the synthetic NIC takes no intercept at all and, with its exits and hypercalls together,
    under half the exits and intercepts the legacy NIC takes on its trips to the worker process."""
    netvsc, tulip = run(("netvsc", "netvsc")), run(("tulip", "tulip"))
    assert per_frame(netvsc, "hv_intercept") == 0 < 2 < per_frame(tulip, "hv_intercept")
    assert 0 < 2 * per_frame(netvsc, "vm_exit", "hypercall") < per_frame(tulip, "vm_exit", "hv_intercept")
    assert netvsc["flows"][0]["throughput_gbps"] > 3 * tulip["flows"][0]["throughput_gbps"]


def test_signals_per_frame_fall_as_the_load_rises():
    """At a light rate each frame finds the rings empty and signals; at full speed the pollers mask them."""
    loaded, light = run(("netvsc", "netvsc")), run(("netvsc", "netvsc"), rate_pps=20000)
    assert 2 * per_frame(loaded, "hv_signal_event") < per_frame(light, "hv_signal_event")


def test_tulip_registers_trap_to_the_worker_process():
    """The legacy NIC's BARs on a Hyper-V host take the intercept path to the worker's user mode: one
    register read costs the vCPU exactly that path, and the device model's timer runs on the worker."""
    w = world(TULIP)
    vm, nic = w.vms["vm1"], w.vms["vm1"].nics[0]
    index, bar = next((i, b) for i, b in nic.fn.bars.items() if nic.fn.bar_address(i))
    address, io = nic.fn.bar_address(index), bar.kind == "io"
    vcpu = vm.vcpus[0]
    before = dict(vcpu.acct)
    (vcpu.pio_read if io else vcpu.mmio_read)(address, 4)
    spent = {e: vcpu.acct[e] - before.get(e, 0) for e in vcpu.acct if vcpu.acct[e] != before.get(e, 0)}
    assert spent == dict.fromkeys(HYPERV_PIO if io else HYPERV_MMIO, 1)
    assert nic.port.reader.name.endswith("/vmwp") and nic.port.switch_event == "vmswitch"


# ---- scenarios ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nic, hypervisor, expected", [
    (NETVSC, "kvm", "needs hypervisor: hyperv"),
    ({"model": "emulated", "device": "e1000"}, "hyperv", "is offered by"),
    ({"model": "paravirt", "device": "virtio-net"}, "hyperv", "needs hypervisor: kvm"),
])
def test_devices_a_hyperv_host_does_not_offer_are_scenario_errors(nic, hypervisor, expected):
    with pytest.raises(ScenarioError, match=expected):
        scenario(nic, hypervisor=hypervisor)


def test_a_hyperv_vm_migrates_to_hyperv_hosts_only():
    """Hyper-V moves a VM between Hyper-V hosts; to or from another vendor's hypervisor it is refused."""
    two = iovirt.Scenario.from_dict({
        "name": "m", "hosts": [{"name": f"h{i}", "cores": 2, "hypervisor": hv, "nics": [{"name": "p"}]}
                               for i, hv in enumerate(("hyperv", "hyperv", "kvm"))],
        "vms": [{"name": "vm1", "host": "h0", "nics": [TULIP | {"mac": "00:15:5d:00:00:01", "ip": "10.0.0.1/24"}]}]})
    assert migration_problem(two, "vm1", "h1") is None
    assert "between Hyper-V hosts only" in migration_problem(two, "vm1", "h2")


# ---- hostile guests ---------------------------------------------------------------------------------------
def send_raw(w: World, vm: str, parts: list[bytes]) -> None:
    """The guest's driver bypassed: a packet straight into its send ring, and the signal."""
    netvsc = netvsc_of(w, vm)
    assert v.ring_write(netvsc.channel.send, netvsc.channel.send.size, parts)[0]
    netvsc.channel.signal()
    w.settle()


def test_nvsp_out_of_order_and_bad_sections_are_rejected_and_the_channel_lives():
    """A second INIT, a receive buffer offered again, a section index past the send buffer and an RNDIS
    message whose length runs past its section are each answered NVSP_STAT_FAIL and counted; the NIC
    still carries frames afterwards."""
    w = world(NETVSC, NETVSC)
    vsp = w.hyperv["host0"].vsps[0]
    sections = vsp.send_sections
    netvsc = netvsc_of(w, "vm1")
    bad_rndis = r.RNDIS_HEADER.pack(r.RNDIS_MSG_PACKET, 5000)
    netvsc.mem.write(netvsc.send_buf, bad_rndis)
    for message in (r.NVSP_INIT.pack(r.NVSP_MSG_TYPE_INIT, r.NVSP_PROTOCOL_VERSION_61, r.NVSP_PROTOCOL_VERSION_61),
                    r.NVSP_SEND_BUF.pack(r.NVSP_MSG1_TYPE_SEND_RECV_BUF, 1, r.NETVSC_RECEIVE_BUFFER_ID),
                    r.NVSP_RNDIS_PKT.pack(r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT, 0, sections + 3, 100),
                    r.NVSP_RNDIS_PKT.pack(r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT, 0, 0, 200)):
        send_raw(w, "vm1", v.packet(v.VM_PKT_DATA_INBAND, 7, message, 1))
    assert vsp.errors["nvsp_init_refused"] == vsp.errors["nvsp_out_of_order"] == 1
    assert vsp.errors["rndis_bad_section"] == vsp.errors["rndis_bad_length"] == 1
    assert vsp.running and w.guests["vm1"].stats["netvsc_unexpected_completion"] >= 4
    assert sends_through(w, "vm1", vsp)


def sends_through(w: World, vm: str, vsp) -> bool:
    """A broadcast from ``vm``'s netvsc reaches the switch through ``vsp`` (the switch learns its MAC there)."""
    netvsc = netvsc_of(w, vm)
    fdb = w.hosts["host0"].vswitch.fdb
    fdb.pop(netvsc.mac, None)
    assert netvsc.transmit(b"\xff" * 6 + netvsc.mac + bytes.fromhex("0806") + bytes(50))
    w.settle()
    return fdb.get(netvsc.mac) is vsp.port


@pytest.mark.parametrize("attack", ["write index past the ring", "packet longer than written",
                                    "unknown packet type"])
def test_a_broken_send_ring_resets_only_that_channel(attack):
    """The guest breaks its ring: netvsp resets the channel, the offer is rescinded and the guest's netvsc
    goes down; the other VM's channel is untouched and still carries frames."""
    w = world(NETVSC, NETVSC, NETVSC)
    netvsc = netvsc_of(w, "vm1")
    ring = netvsc.channel.send
    if attack == "write index past the ring":
        ring.put32(v.WRITE_INDEX, ring.size + 64)
        netvsc.channel.signal()
        w.settle()
    elif attack == "packet longer than written":
        send_raw(w, "vm1", [v.VMPACKET_DESCRIPTOR.pack(v.VM_PKT_DATA_INBAND, 2, 400, 0, 9), bytes(16)])
    else:
        send_raw(w, "vm1", v.packet(3, 9, bytes(16)))
    server = w.hyperv["host0"].server(w.vms["vm1"])
    assert server.channels[1].rescinded and not w.hyperv["host0"].vsps[0].running
    assert w.guests["vm1"].stats["netvsc_rescinded"] == 1
    assert w.hyperv["host0"].vsps[1].running and sends_through(w, "vm2", w.hyperv["host0"].vsps[1])
    assert not sends_through(w, "vm1", w.hyperv["host0"].vsps[0])


def test_hostile_guest_mid_run_leaves_other_guests_unharmed(monkeypatch):
    """vm1 pushes its send ring's write index past the ring mid-stream: its channel is reset, vm3 -> vm4
    loses nothing."""
    worlds = []

    class HostileWorld(World):
        def start_measuring(self, at: float) -> None:
            super().start_measuring(at)
            worlds.append(self)
            guest = self.guests["vm1"]

            def attack() -> None:
                netvsc = guest.netdevs[0].standby
                netvsc.channel.send.put32(v.WRITE_INDEX, 0xFFFFFFF8)
                netvsc.channel.signal()
            guest.run_at(at + 500_000, attack)

    monkeypatch.setattr(runner, "World", HostileWorld)
    streams = [{**STREAM, "src": f"vm{a}", "dst": f"vm{a + 1}"} for a in (1, 3)]
    hostile, victim = runner.run(scenario(NETVSC, NETVSC, NETVSC, NETVSC, workloads=streams)).to_dict()["flows"]
    (w,) = worlds
    vsps = w.hyperv["host0"].vsps
    assert not vsps[0].running and all(vsp.running for vsp in vsps[1:])
    assert hostile["delivered"] < victim["delivered"] and hostile["corrupted"] == 0
    assert victim["sent"] == victim["delivered"] > 50 and victim["corrupted"] == victim["out_of_order"] == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(st.sampled_from([1, 100, 101, 104, 107, 125, 999]),
                                   st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3),
                                   st.sampled_from([v.VM_PKT_DATA_INBAND, v.VM_PKT_COMP])), max_size=8),
       section=st.binary(max_size=64))
def test_random_nvsp_messages_never_crash_the_root_nor_touch_other_guests(messages, section):
    """Whatever NVSP messages and RNDIS bytes a guest sends, netvsp never raises into the root, and the other
    guest's memory is not written."""
    w = world(NETVSC, NETVSC, memory_mb=64)
    netvsc = netvsc_of(w, "vm1")
    netvsc.mem.write(netvsc.send_buf, section)
    other = w.vms["vm2"].mem
    before = bytes(other.buf)
    for msg_type, fields, ptype in messages:
        body = v.U32.pack(msg_type) + b"".join(v.U32.pack(f) for f in fields)
        if netvsc.broken or not w.hyperv["host0"].vsps[0].running:
            break
        send_raw(w, "vm1", v.packet(ptype, fields[0], body, 1))
    assert bytes(other.buf) == before


def test_a_synthetic_nic_that_cannot_come_up_is_one_clear_error(monkeypatch):
    """A guest whose netvsc cannot get its buffers stops the build with the guest's reason, not a crash."""
    from iovirt.guest.drivers import netvsc
    monkeypatch.setattr(netvsc, "RECV_BYTES", 20_000 * r.NETVSC_RECV_SECTION_SIZE)
    with pytest.raises(LookupError, match="vm1: its synthetic NIC did not come up .*no room"):
        World(scenario(NETVSC, memory_mb=32))


# ---- accelerated networking: a VF with the synthetic NIC as its fallback ---------------------------
MAC = "00:15:5d:00:00:01"


def accelerated(fallback: bool = True, rate_pps: float = 100_000, ms: float = 30) -> iovirt.Scenario:
    """One Hyper-V host whose 82599 port has VFs and carries the virtual switch too; vm1 has a VF and (with
    ``fallback``) a netvsc with its MAC, the one interface of accelerated networking, streaming to the wire."""
    nics = [{"model": "sriov", "device": "ixgbevf", "uplink": "pnic0", "mac": MAC, "ip": "10.0.0.1/24"}]
    nics += [{**NETVSC, "standby": True, "mac": MAC, "ip": "10.0.0.1/24"}] if fallback else []
    return iovirt.Scenario.from_dict({
        "name": "accelerated", "hosts": [{"name": "host0", "cores": 4, "hypervisor": "hyperv",
                                          "nics": [{"name": "pnic0", "num_vfs": 2}]}],
        "vms": [{"name": "vm1", "host": "host0", "memory_mb": 64, "nics": nics}],
        "workloads": [{"type": "udp_stream", "src": "vm1", "dst": "wire", "duration_ms": ms, "rate_pps": rate_pps}]})


def vf_outage(fallback: bool = True) -> tuple[World, dict, list[int]]:
    """The stream through the VF for 2 ms, the VF unplugged (device_del), 8 ms later a VF hot-plugged
    again; the world, the flow, and the frames the interface sent by then at each step."""
    from iovirt.experiments.runner import begin, finish
    from iovirt.hypervisor.ixgbe_pf import VfConfig
    from iovirt.hypervisor.passthrough import AssignedFunction
    from iovirt.hypervisor.sriov import SriovNic
    w = World(accelerated(fallback))
    start, stop, flows = begin(w)
    stack = w.guests["vm1"].interfaces[bytes.fromhex(MAC.replace(":", ""))]
    steps = []
    for at, then in ((2, lambda: next(n for n in w.vms["vm1"].nics if isinstance(n, AssignedFunction)).unplug()),
                     (10, lambda: SriovNic(w.vms["vm1"], w.sriov["host0", "pnic0"],
                                           config=VfConfig(bytes.fromhex(MAC.replace(":", ""))), hotplug=True)),
                     (30, lambda: None)):
        w.sim.run(until=start + at * 1e6)
        steps.append(flows[0].sent)
        then()
    assert stack is w.guests["vm1"].interfaces[bytes.fromhex(MAC.replace(":", ""))]
    return w, finish(w, start, stop, flows, 0.0).to_dict()["flows"][0], steps


def test_accelerated_networking_falls_back_to_vmbus_while_the_vf_is_away():
    """Hyper-V's transparent VF: the interface sends through the VF; once the VF is unplugged it goes on
    over netvsc, VMBus and the virtual switch to the same port; a hot-plugged VF takes it back.  Below the
    line rate no frame is lost, none corrupted or reordered."""
    w, flow, _ = vf_outage()
    master = w.guests["vm1"].netdevs[0]
    assert master.stats["failovers"] == master.stats["failbacks"] == 1
    assert master.stats["tx_primary"] > master.stats["tx_standby"] > 500
    assert w.hyperv["host0"].vsps[0].errors == {} and w.guests["vm1"].stats["tx_no_device"] == 0
    assert flow["delivered"] == flow["sent"] > 2000
    assert flow["corrupted"] == flow["out_of_order"] == 0


def test_without_the_synthetic_path_the_vf_outage_loses_what_was_sent_meanwhile():
    """The same outage with a VF alone: every frame sent while the interface has no device is dropped and
    counted, and only those."""
    w, flow, (_, unplugged, _) = vf_outage(fallback=False)
    lost = w.guests["vm1"].stats["tx_no_device"]
    assert lost > 500 and flow["sent"] - flow["delivered"] == lost
    assert flow["delivered"] > unplugged


def test_a_broken_receive_ring_resets_the_channel_when_a_frame_comes():
    """vm2 sets its receive ring's read index off the 8-byte grid: the next frame for it finds the ring
    broken, its channel is reset, and vm1's channel carries on."""
    w = world(NETVSC, NETVSC)
    netvsc_of(w, "vm2").channel.recv.put32(v.READ_INDEX, 12)
    vsps = w.hyperv["host0"].vsps
    mac2 = netvsc_of(w, "vm2").mac
    assert netvsc_of(w, "vm1").transmit(mac2 + netvsc_of(w, "vm1").mac + bytes.fromhex("0806") + bytes(50))
    w.settle()
    assert not vsps[1].running and vsps[1].errors["ring_broken"] == 1
    assert w.guests["vm2"].stats["netvsc_rescinded"] == 1 and vsps[0].running


# ---- live migration between Hyper-V hosts ---------------------------------------------------------
def moved(nics: list[dict], vfs: int = 0, vcpus: int = 1) -> tuple[dict, World]:
    """vm1 (``vcpus`` vCPUs) streams to the wire at 20,000 frames/s while it moves from host0 to host1 at 2 ms."""
    from iovirt.experiments import migrate as migrate_module
    worlds = []

    class Kept(World):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            worlds.append(self)
    hosts = [{"name": f"host{i}", "cores": 4, "hypervisor": "hyperv",
              "nics": [{"name": "pnic0"} | ({"num_vfs": vfs} if vfs else {})]} for i in (0, 1)]
    doc = {"name": "m", "hosts": hosts,
           "vms": [{"name": "vm1", "host": "host0", "memory_mb": 64, "vcpus": vcpus, "nics": nics}],
           "workloads": [{"type": "udp_stream", "src": "vm1", "dst": "wire", "rate_pps": 20_000, "duration_ms": 16}],
           "migration": {"vm": "vm1", "to": "host1", "at_ms": 2, "downtime_ms": 1}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(migrate_module, "World", Kept)
        report = migrate_module.migrate(iovirt.Scenario.from_dict(doc)).to_dict()
    return report, worlds[0]


@pytest.mark.parametrize("vcpus", [1, 2])
def test_netvsc_moves_with_its_vmbus_state_and_loses_nothing(vcpus):
    """A netvsc VM moves: the target's Hyper-V takes the SynIC, GPADLs and channels (vRSS sub-channels too)
    as they were, so the guest neither renegotiates nor loses a frame; the source's netvsp leaves its switch."""
    report, w = moved([NETVSC | {"mac": MAC, "ip": "10.0.0.1/24"}], vcpus=vcpus)
    flow = report["flows"][0]
    assert report["result"] == "ok" and report["frames_lost"] == 0
    assert flow["sent"] == flow["delivered"] > 250 and flow["corrupted"] == flow["out_of_order"] == 0
    source, target = w.hyperv["host0"], w.hyperv["host1"]
    assert not source.vsps and len(target.vsps) == 1 and target.vsps[0].running
    assert target.vsps[0].errors == {} and w.guests["vm1"].stats["netvsc_rescinded"] == 0
    assert [q.channel.sub_index for q in target.vsps[0].queues] == list(range(vcpus))
    assert w.hosts["host1"].vswitch.fdb[bytes.fromhex(MAC.replace(":", ""))] is target.vsps[0].port


def test_a_vf_leaves_before_the_move_and_vmbus_carries_the_vm_until_one_returns():
    """Accelerated networking across a migration: the VF is unplugged first, the stream goes on over netvsc
    through the move, a VF of the target's port takes it back; no frame is lost."""
    vf = {"model": "sriov", "device": "ixgbevf", "uplink": "pnic0", "mac": MAC, "ip": "10.0.0.1/24"}
    report, w = moved([vf, NETVSC | {"standby": True, "mac": MAC, "ip": "10.0.0.1/24"}], vfs=4)
    master = w.guests["vm1"].netdevs[0]
    assert report["result"] == "ok" and report["frames_lost"] == 0 and report["standby_ms"] > 0
    assert master.stats["failovers"] == 1 and master.stats["tx_standby"] > 0


# ---- negotiation and teardown -----------------------------------------------------------------------
def test_netvsc_steps_down_to_the_version_the_host_offers(monkeypatch):
    """NVSP INIT goes from the highest version down: a host that knows only version 2 gets it (and the
    guest comes up); one that knows none of the guest's leaves the NIC down with the reason."""
    from iovirt.devices import netvsp
    monkeypatch.setattr(netvsp, "VERSIONS", (r.NVSP_PROTOCOL_VERSION_2,))
    w = world(NETVSC)
    assert w.hyperv["host0"].vsps[0].version == r.NVSP_PROTOCOL_VERSION_2 and netvsc_of(w, "vm1").ready
    monkeypatch.setattr(netvsp, "VERSIONS", (0x70000,))
    with pytest.raises(LookupError, match="netvsc_no_common_version"):
        World(scenario(NETVSC))


def test_gpadl_teardown_waits_for_the_channel_to_close():
    """GPADL_TEARDOWN of the open channel's rings is refused; after CLOSECHANNEL netvsp stops and the same
    teardown is answered with GPADL_TORNDOWN."""
    w = world(NETVSC)
    server, netvsc = w.hyperv["host0"].server(w.vms["vm1"]), netvsc_of(w, "vm1")
    handle = server.channels[1].gpadl
    bus, torn = w.guests["vm1"].vmbus, []
    bus.waiting[v.CHANNELMSG_GPADL_TORNDOWN, handle] = torn.append
    teardown = v.GPADL_TEARDOWN.pack(v.CHANNELMSG_GPADL_TEARDOWN, 1, handle)
    bus.post(teardown)
    w.settle()
    assert server.stats["gpadl_teardown_refused"] == 1 and handle in server.gpadls
    bus.post(v.CLOSE_CHANNEL.pack(v.CHANNELMSG_CLOSECHANNEL, 1))
    bus.post(teardown)
    w.settle()
    assert not w.hyperv["host0"].vsps[0].running and handle not in server.gpadls
    assert w.guests["vm1"].stats["vmbus_unexpected_message"] == 1 and netvsc.channel.relid == 1


# ---- vRSS: sub-channels, each on a vCPU of its own --------------------------------------------------
def vrss(channels: int | None = None, vcpus: int = 4, ms: float = 1) -> iovirt.Scenario:
    """Four one-vCPU senders stream to vm5, a ``vcpus``-vCPU netvsc VM (``channels`` set, or by default)."""
    receiver = {**NETVSC, "mac": "00:15:5d:00:00:05", "ip": "10.0.0.5/24"} | (
        {"channels": channels} if channels else {})
    return iovirt.Scenario.from_dict({
        "name": "vrss", "profile": "default",
        "hosts": [{"name": "host0", "cores": 8, "hypervisor": "hyperv", "nics": [{"name": "pnic0"}]}],
        "vms": [{"name": f"vm{i}", "host": "host0",
                 "nics": [{**NETVSC, "mac": f"00:15:5d:00:00:{i:02x}", "ip": f"10.0.0.{i}/24"}]} for i in range(1, 5)]
        + [{"name": "vm5", "host": "host0", "vcpus": vcpus, "nics": [receiver]}],
        "workloads": [{**STREAM, "src": f"vm{i}", "dst": "vm5", "duration_ms": ms, "rate_pps": 40_000}
                      for i in range(1, 5)]})


def hashed_vcpus(channels: int) -> set[int]:
    """Where the indirection table (entry n: channel n mod ``channels``) sends each sender's
    Toeplitz hash of its and vm5's addresses (UDP: the addresses only)."""
    tables = toeplitz_tables(RSS_DEFAULT_KEY, 12)
    dst = ipaddress.IPv4Address("10.0.0.5").packed
    return {toeplitz(tables, ipaddress.IPv4Address(f"10.0.0.{i}").packed + dst) % r.ITAB_NUM % channels
            for i in range(1, 5)}


def test_vrss_opens_a_sub_channel_per_vcpu_each_signalled_on_its_own():
    """A four-vCPU netvsc asks for three sub-channels; the host offers them with their index under the
    primary's instance, the guest opens channel n with its events to vCPU n and sets the RSS key and table."""
    w = world_of(vrss())
    server, netvsc = w.hyperv["host0"].server(w.vms["vm5"]), netvsc_of(w, "vm5")
    subs = [c for c in server.channels.values() if c.primary is not None]
    assert [c.sub_index for c in subs] == [1, 2, 3] and all(c.open for c in subs)
    assert [c.target_vp for c in server.channels.values()] == [0, 1, 2, 3]
    vsp = subs[0].vsp
    assert vsp.rss is not None and vsp.rss[0] == tuple(n % 4 for n in range(r.ITAB_NUM))
    assert [q.channel.sub_index for q in netvsc.queues] == [0, 1, 2, 3] and netvsc.ready
    one = world_of(vrss(vcpus=1))
    assert len(netvsc_of(one, "vm5").queues) == 1 and one.hyperv["host0"].vsps[4].rss is None


def world_of(scenario: iovirt.Scenario) -> World:
    w = World(scenario)
    w.settle()
    return w


@pytest.mark.parametrize("channels", [None, 1])
def test_a_multi_vcpu_netvsc_takes_each_flow_on_the_vcpu_its_hash_names(channels):
    """Four flows into a four-vCPU VM: with vRSS each is taken (the channel's interrupt, NAPI, the stack) on
    the vCPU of the channel its hash names, several of them; with one channel all on vCPU 0."""
    world = World(vrss(channels))
    _, stop, flows = begin(world)
    run_to(world, stop + 2_000_000)
    assert all(f.delivered > 0 for f in flows)
    took = {vcpu.index for vcpu in world.vms["vm5"].vcpus if vcpu.spent["guest_stack"]}
    want = hashed_vcpus(channels or 4)
    assert took == want and (len(want) > 1) == (channels is None)


def rss_set(w: World, vm: str, param: bytes) -> int:
    """``vm``'s netvsc sets OID_GEN_RECEIVE_SCALE_PARAMETERS to ``param``: the status the host answers."""
    netvsc, answers = netvsc_of(w, vm), []
    netvsc._rndis_request(r.RNDIS_OID_REQUEST.pack(
        r.RNDIS_MSG_SET, r.RNDIS_OID_REQUEST.size + len(param), 0, r.OID_GEN_RECEIVE_SCALE_PARAMETERS, len(param),
        r.RNDIS_OID_REQUEST.size - r.RNDIS_BODY, 0) + param, answers.append)
    w.settle()
    return r.RNDIS_SET_COMPLETE.unpack_from(answers[0])[3]


def rss_param(table: list[int], key: bytes = RSS_DEFAULT_KEY, taboffset: int = r.NDIS_RECV_SCALE_PARAM.size,
              keysize: int = r.NETVSC_HASH_KEYLEN) -> bytes:
    size, tab = r.NDIS_RECV_SCALE_PARAM.size, b"".join(v.U32.pack(n) for n in table)
    return r.NDIS_RECV_SCALE_PARAM.pack(r.NDIS_OBJECT_TYPE_RSS_PARAMETERS, 2, size, 0,
                                        r.NDIS_HASH_FUNC_TOEPLITZ | r.NDIS_HASH_IPV4, len(tab), taboffset, keysize,
                                        size + len(tab), 0, 0, 0) + tab + key


def test_rss_tables_naming_no_open_channel_or_lying_outside_the_request_fail_the_set():
    """A table entry past the open channels, a table or key past the request: RNDIS_STATUS_INVALID_DATA,
    counted, RSS as it was; a table over open channels only is taken."""
    w = world_of(vrss(ms=0.1))
    vsp = w.hyperv["host0"].vsps[4]
    before = vsp.rss
    assert rss_set(w, "vm5", rss_param([n % 5 for n in range(r.ITAB_NUM)])) == r.RNDIS_STATUS_INVALID_DATA
    assert rss_set(w, "vm5", rss_param([0] * r.ITAB_NUM, taboffset=4000)) == r.RNDIS_STATUS_INVALID_DATA
    assert rss_set(w, "vm5", rss_param([0] * r.ITAB_NUM, keysize=64)) == r.RNDIS_STATUS_INVALID_DATA
    assert rss_set(w, "vm5", rss_param([0] * 4)) == r.RNDIS_STATUS_INVALID_DATA
    assert vsp.errors["rndis_bad_rss_table"] == 1 and vsp.errors["rndis_bad_rss"] == 3 and vsp.rss is before
    assert rss_set(w, "vm5", rss_param([2] * r.ITAB_NUM)) == r.RNDIS_STATUS_SUCCESS
    assert vsp.rss[0] == (2,) * r.ITAB_NUM


def test_bad_sub_channel_requests_are_refused_and_a_good_one_is_offered():
    """No sub-channels, as many as VRSS_CHANNEL_MAX, an operation other than ALLOCATE: each NVSP_STAT_FAIL and
    counted, nothing offered.  Then a request for two is granted and the two are offered (this one-vCPU
    guest's netvsc asked for none, so it counts them unexpected); a second request is out of order."""
    w = world_of(vrss(ms=0.1))
    server, vsp = w.hyperv["host0"].server(w.vms["vm1"]), w.hyperv["host0"].vsps[0]
    for op, count in ((r.NVSP_SUBCHANNEL_ALLOCATE, 0), (r.NVSP_SUBCHANNEL_ALLOCATE, r.VRSS_CHANNEL_MAX), (2, 1)):
        send_raw(w, "vm1", v.packet(v.VM_PKT_DATA_INBAND, 7, r.NVSP_SUBCHANNEL_REQUEST.pack(
            r.NVSP_MSG5_TYPE_SUBCHANNEL, op, count), 1))
    assert vsp.errors["nvsp_bad_subchannel"] == 3 and len(server.channels) == 1 and sends_through(w, "vm1", vsp)
    for _ in range(2):
        send_raw(w, "vm1", v.packet(v.VM_PKT_DATA_INBAND, 7, r.NVSP_SUBCHANNEL_REQUEST.pack(
            r.NVSP_MSG5_TYPE_SUBCHANNEL, r.NVSP_SUBCHANNEL_ALLOCATE, 2), 1))
    assert [c.sub_index for c in server.channels.values()] == [0, 1, 2] and vsp.errors["nvsp_out_of_order"] == 1
    assert w.guests["vm1"].stats["vmbus_unexpected_offer"] == 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=st.integers(0, 3), count=st.integers(0, 2**32 - 1),
       table=st.lists(st.integers(0, 2**32 - 1), max_size=r.ITAB_NUM + 8),
       fields=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF),
                        st.integers(0, 2**32 - 1)))
def test_any_sub_channel_request_and_rss_parameters_leave_the_root_and_other_guests_whole(op, count, table, fields):
    """Whatever sub-channel request and RSS parameters a guest sends, netvsp never raises, the table it keeps
    names only open channels, and the other guest's memory is not written."""
    w = world_of(vrss(ms=0.1, vcpus=2))
    other = w.vms["vm1"].mem
    before = bytes(other.buf)
    send_raw(w, "vm5", v.packet(v.VM_PKT_DATA_INBAND, 7, r.NVSP_SUBCHANNEL_REQUEST.pack(
        r.NVSP_MSG5_TYPE_SUBCHANNEL, op, count), 1))
    tabsize, taboffset, keysize, keyoffset = fields
    size = r.NDIS_RECV_SCALE_PARAM.size
    param = r.NDIS_RECV_SCALE_PARAM.pack(r.NDIS_OBJECT_TYPE_RSS_PARAMETERS, 2, size, 0, r.NDIS_HASH_FUNC_TOEPLITZ,
                                         tabsize, taboffset, keysize, keyoffset, 0, 0, 0)
    rss_set(w, "vm5", param + b"".join(v.U32.pack(n) for n in table) + RSS_DEFAULT_KEY)
    vsp = w.hyperv["host0"].vsps[4]
    assert vsp.rss is None or all(vsp.queues[n] is not None for n in vsp.rss[0])
    assert bytes(other.buf) == before


# ---- task offload: checksums and LSOv2 through RNDIS per-packet info ----------------------------------
def netvsc_stream(offloads: dict | None = None, workload: str = "tcp_stream", ms: float = 3.0) -> dict:
    doc = compare_scenario(Config("paravirt", "netvsc"), 1, 16384, ms, 8, False, "default", workload)
    if offloads is not None:
        doc["vms"][0]["nics"][0]["offloads"] = offloads
    return doc


@pytest.mark.parametrize("tso", [True, False])
def test_netvsc_lso_crosses_the_root_whole_and_the_wire_in_mtu_frames(tso):
    """With LSOv2 negotiated a netvsc hands netvsp packets of tens of KB (as large as the congestion window
    lets the stack build them) in page buffers (GPA direct), the vmswitch
    carries them whole to the uplink, whose NIC cuts them into frames of at most 1514 bytes; ethtool -K tso
    off sends MTU segments through send sections instead."""
    world = World(iovirt.Scenario.from_dict(netvsc_stream({"tso": tso}), source="test"))
    bridged, wired = Frames(), Frames()
    watch(world, "host0/bridge", bridged)
    watch(world, "host0/pnic0", wired)
    _, stop, flows = begin(world)
    run_to(world, stop)
    bridged, wired = list(map(len, bridged)), list(map(len, wired))
    netvsc, vsp = netvsc_of(world, "vm0"), world.hyperv["host0"].vsps[0]
    assert flows[0].delivered > 1000 and max(wired) <= 1514 and not vsp.errors
    assert (max(bridged) > 1514) == tso and netvsc.offloads == {"tx_csum", "rx_csum", "tso"}
    root = world.hyperv["host0"].root.vm.vcpus
    assert sum(vp.spent["gso_segment"] for vp in root) == 0       # the uplink's 82599 cuts them (its TSO)


def test_netvsc_checksum_offload_is_completed_by_netvsp_and_reported_on_receive():
    """TX checksum on, TSO off: each segment goes with TCPIP_CHKSUM_PKTINFO and netvsp completes the sum
    (the wire's frames are right); received segments come with the sums checked by the host, so the guest's
    stack sums nothing.  With tx off the guest sums every segment it sends."""
    def run_with(offloads: dict) -> tuple[World, list]:
        world = World(iovirt.Scenario.from_dict(netvsc_stream(offloads, ms=1.5), source="test"))
        wired = []
        link = world.hosts["host0"].nics["pnic0"].link
        deliver = link.deliver_to_peer
        link.deliver_to_peer = lambda frame: (wired.append(frame), deliver(frame))
        _, stop, flows = begin(world)
        run_to(world, stop)
        assert flows[0].delivered > 100
        return world, wired
    world, wired = run_with({"tso": False})
    data = [f for f in wired if len(f) > 1000]
    assert data and all(rx_checksums(f)[3] for f in data)
    guest = world.vms["vm0"].vcpus[0]
    assert guest.spent["csum"] == 0 and world.hyperv["host0"].vsps[0].errors == {}
    off, _ = run_with({"tso": False, "tx": False})
    assert off.vms["vm0"].vcpus[0].spent["csum"] > 0


def tcp_frame(dst: bytes, src: bytes, payload: int = 3000) -> bytes:
    """A TCP/IPv4 packet of ``payload`` bytes between vm1 and vm2, its sums right."""
    ip = bytearray(b"\x45\x00" + (40 + payload).to_bytes(2, "big") + b"\x00\x01\x40\x00\x40\x06\x00\x00"
                   + bytes([10, 0, 0, 1, 10, 0, 0, 2]))
    tcp = bytearray(20)
    tcp[12], tcp[13] = 0x50, 0x10
    packet = GsoFrame.of(dst + src + b"\x08\x00" + bytes(ip) + bytes(tcp) + bytes(payload), 1448)
    return b"".join(segment(GsoFrame.of(packet, payload)))


def rndis_packet(frame: bytes, info: bytes = b"", ppi_len: int | None = None) -> bytes:
    size = r.RNDIS_PACKET.size + len(info) + len(frame)
    return r.RNDIS_PACKET.pack(r.RNDIS_MSG_PACKET, size, r.RNDIS_PACKET_HEADER + len(info), len(frame), 0, 0, 0,
                               r.RNDIS_PACKET_HEADER, len(info) if ppi_len is None else ppi_len, 0, 0) + info + frame


def test_bad_per_packet_info_and_offload_requests_are_dropped_and_counted():
    """Per-packet info running past its area or its value past itself, LSO with MSS 0 or on a UDP frame, a
    checksum request at the wrong offset, page ranges outside the guest or across a page: each frame is
    dropped and counted, the send answered NVSP_STAT_FAIL; a right LSO request goes through whole."""
    w = world(NETVSC, NETVSC)
    netvsc, vsp, guest = netvsc_of(w, "vm1"), w.hyperv["host0"].vsps[0], w.guests["vm1"]
    frame = tcp_frame(netvsc_of(w, "vm2").mac, netvsc.mac)
    udp = frame[:23] + b"\x11" + frame[24:]
    lso = lambda mss: r.ppi(r.TCP_LARGESEND_PKTINFO, r.NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE | 34 << 20 | mss)  # noqa
    long_info = r.RNDIS_PER_PACKET_INFO.pack(64, r.TCPIP_CHKSUM_PKTINFO, 12) + bytes(4)
    past_itself = r.RNDIS_PER_PACKET_INFO.pack(16, r.TCPIP_CHKSUM_PKTINFO, 14) + bytes(4)
    csum_at_20 = r.ppi(r.TCPIP_CHKSUM_PKTINFO, r.NDIS_TCPIP_CSUM_TX_IPV4 | r.NDIS_TCPIP_CSUM_TX_TCP | 20 << 16)
    q = netvsc.queues[0]
    for message in (rndis_packet(frame[:1514], long_info), rndis_packet(frame[:1514], past_itself),
                    rndis_packet(frame[:1514], b"", ppi_len=5000), rndis_packet(frame[:1514], csum_at_20)):
        assert netvsc._send_rndis(message, r.RNDIS_CHANNEL_DATA, q)
    for message in (rndis_packet(frame, lso(0)), rndis_packet(udp, lso(1448))):
        assert netvsc._send_pages(message, q)
    w.settle()
    assert vsp.errors["rndis_bad_ppi"] == 2 and vsp.errors["rndis_bad_packet"] == 1
    assert vsp.errors["tx_bad_csum"] == 1 and vsp.errors["tx_bad_lso"] == 2
    assert guest.stats["tx_errors"] == 4
    for pfn, offset in ((w.vms["vm1"].mem.size >> v.PAGE_SHIFT, 0), (netvsc.gso_bufs[0] >> v.PAGE_SHIFT, 4000)):
        send_raw(w, "vm1", v.packet(v.VM_PKT_DATA_USING_GPA_DIRECT, 9, r.NVSP_RNDIS_PKT.pack(
            r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT, 0, r.NETVSC_INVALID_INDEX, 0), 1,
            v.GPA_DIRECT_HEADER.pack(0, 1) + v.HV_PAGE_BUFFER.pack(200, offset, pfn)))
    assert vsp.errors["gpa_direct_bad_ranges"] == 2 and vsp.running
    bridged = []
    vswitch = w.hosts["host0"].vswitch
    ingress = vswitch.ingress
    vswitch.ingress = lambda port, f, cpu: (bridged.append(len(f)), ingress(port, f, cpu))
    assert netvsc._send_pages(rndis_packet(frame, lso(1448)), q)
    w.settle()
    assert bridged == [len(frame)] and sum(vsp.errors.values()) == 8


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(info=st.binary(max_size=48), ppi_len=st.integers(0, 64), pages=st.booleans())
def test_any_per_packet_info_leaves_the_root_and_other_guests_whole(info, ppi_len, pages):
    """Whatever per-packet info bytes and length a guest puts before a frame (for no other guest), in a
    section or in page buffers, netvsp never raises and the other guest's memory is not written."""
    w = world(NETVSC, NETVSC, memory_mb=64)
    netvsc = netvsc_of(w, "vm1")
    other = w.vms["vm2"].mem
    before = bytes(other.buf)
    frame = tcp_frame(bytes.fromhex("020000000099"), netvsc.mac, 1000)     # to no guest here
    message = rndis_packet(frame, info, ppi_len)
    (netvsc._send_pages if pages else netvsc._send_rndis)(message, *(() if pages else (r.RNDIS_CHANNEL_DATA,)),
                                                          netvsc.queues[0])
    w.settle()
    assert w.hyperv["host0"].vsps[0].running and bytes(other.buf) == before
