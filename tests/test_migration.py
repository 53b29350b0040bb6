"""Live migration end to end: pre-copy rounds against the dirty log, the
switch-over with device state, frames lost only while the VM is stopped,
orderings that follow from dirty rate and link speed, failures."""

from __future__ import annotations

import pytest

from iovirt.devices.registry import registry
from iovirt.devices.vmstate import StateError
from iovirt.experiments.migrate import matrix, migrate
from iovirt.experiments.runner import begin, finish
from iovirt.experiments.scenario import Scenario, ScenarioError
from iovirt.experiments.workloads import MemoryDirty
from iovirt.experiments.world import World
from iovirt.hypervisor.migration import MigrationLink


def scenario(device: str = "e1000", model: str = "emulated", backend: str | None = None, *, src: str = "vm1",
             dst: str = "vm2", rate_pps: float | None = 20_000, dirty: float | None = None, link_gbps: float = 10,
             duration_ms: float = 10, max_rounds: int = 30, fail_at_ms: float | None = None,
             target: str = "kvm", source: str = "kvm", vm2_host: str = "host0", resident_mb: int = 4,
             vcpus: int = 1) -> Scenario:
    """vm1 and vm2 on host0 (64 MiB each, ``resident_mb`` of it the booted
    system's); vm1 (``vcpus``) moves to host1 2 ms into the workloads."""
    nic = {"model": model, "device": device} | ({"backend": backend} if backend else {})
    if model == "passthrough":
        nic["uplink"] = "pnic1"
    stream = {"type": "udp_stream", "src": src, "dst": dst, "packet_size": 1500, "duration_ms": duration_ms}
    workloads = [stream | ({"rate_pps": rate_pps} if rate_pps else {})]
    if dirty:
        workloads.append({"type": "memory_dirty", "src": "vm1", "dirty_mib_s": dirty, "working_set_mb": 8,
                          "duration_ms": duration_ms})
    migration = {"vm": "vm1", "to": "host1", "at_ms": 2, "link_gbps": link_gbps, "downtime_ms": 1,
                 "max_rounds": max_rounds} | ({"fail_at_ms": fail_at_ms} if fail_at_ms is not None else {})
    vm2_nic = nic if model != "passthrough" else {"model": "emulated", "device": "e1000"}
    return Scenario.from_dict({
        "name": "migrate",
        "hosts": [{"name": "host0", "cores": 4, "hypervisor": source, "nics": [{"name": "pnic0"}, {"name": "pnic1"}]},
                  {"name": "host1", "cores": 4, "hypervisor": target, "nics": [{"name": "pnic0"}]}],
        "vms": [{"name": "vm1", "host": "host0", "memory_mb": 64, "resident_mb": resident_mb, "vcpus": vcpus,
                 "nics": [nic | {"mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24"}]},
                {"name": "vm2", "host": vm2_host, "memory_mb": 64, "resident_mb": resident_mb,
                 "nics": [vm2_nic | {"mac": "52:54:00:00:00:02", "ip": "10.0.0.2/24"}]}],
        "workloads": workloads, "migration": migration})


def _flow(outcome) -> dict:
    return outcome.to_dict()["flows"][0]


@pytest.mark.parametrize("device,model,backend", [
    *((name, "emulated", None) for name, entry in registry().items() if entry.kind == "emulated"),
    *(("virtio-net", "paravirt", backend) for backend in registry()["virtio-net"].backends)])
@pytest.mark.parametrize("direction", ["from", "to"])
def test_streaming_vm_moves_and_frames_are_lost_only_while_it_is_stopped(device, model, backend, direction):
    """Every model moves mid-stream: frames intact and in order; the only ones missing were in flight to it while stopped."""
    src, dst = ("vm1", "vm2") if direction == "from" else ("vm2", "vm1")
    outcome = migrate(scenario(device, model, backend, src=src, dst=dst, rate_pps=50_000, duration_ms=16))
    m, flow, report = outcome.to_dict(), _flow(outcome), outcome.report
    assert m["result"] == "ok", m["reason"]
    assert flow["corrupted"] == 0 and flow["out_of_order"] == 0
    assert flow["sent"] - flow["delivered"] == m["frames_lost"]
    if direction == "from":
        assert m["frames_lost"] == 0            # a stopped sender sends later, it loses nothing
    else:                                       # one run of frames, those that reached the source while it was stopped
        gaps = outcome.flows[0].gaps
        assert len(gaps) <= 1 and sum(n for _, n, _ in gaps) == m["frames_lost"]
        assert all(report.resumed_ns <= after for _, _, after in gaps)
    assert m["rounds"] >= 1 and m["pages_sent"] >= 64 << 8


@pytest.mark.parametrize("src,dst", [("vm1", "vm2"), ("vm2", "vm1")])
def test_a_xen_pv_guest_reconnects_on_the_target(src, dst):
    """Xen PV: netfront reconnects through the target's xenstore; frames lost only as one run while it was stopped."""
    outcome = migrate(scenario("xen-netfront", "paravirt", source="xen", target="xen", src=src, dst=dst,
                               rate_pps=50_000, duration_ms=16))
    m, flow = outcome.to_dict(), _flow(outcome)
    assert m["result"] == "ok" and flow["corrupted"] == flow["out_of_order"] == 0
    assert flow["delivered"] > flow["sent"] // 2 and len(outcome.flows[0].gaps) <= 1
    assert all(outcome.report.resumed_ns <= after for _, _, after in outcome.flows[0].gaps)


@pytest.mark.parametrize("device,model,backend,hypervisor", [
    ("virtio-net", "paravirt", "vhost-net", "kvm"), ("virtio-net", "paravirt", "vhost-user", "kvm"),
    ("e1000", "emulated", None, "kvm"), ("tulip", "emulated", None, "kvm"), ("xen-netfront", "paravirt", None, "xen")])
def test_the_target_memory_equals_the_source_at_the_switch_over(device, model, backend, hypervisor):
    """Dirty logging misses nothing: at the switch-over the incoming RAM is the stopped VM's RAM, byte for byte."""
    s = scenario(device, model, backend, src="vm2", dst="vm1", rate_pps=100_000, dirty=400, duration_ms=30,
                 source=hypervisor, target=hypervisor)
    world = World(s)
    start, stop, flows = begin(world)
    migration = world.migrate("vm1", "host1", MigrationLink(world.ledger, "mig", 10), start + 2e6,
                              downtime_ns=1e6, max_rounds=30)
    source, seen = world.vms["vm1"], []
    switch_over = migration.switch_over

    def compare(mem, states):
        seen.append(mem.buf[:] == source.mem.buf[:])
        switch_over(mem, states)
    migration.switch_over = compare
    finish(world, start, stop, flows, 0.0)
    assert migration.report.result == "ok" and migration.report.rounds >= 2
    assert seen == [True]


def test_a_memory_writer_finds_its_pages_on_the_target():
    """A guest rewriting its working set during the migration reads back exactly what it last wrote, on the target."""
    s = scenario(rate_pps=5_000, duration_ms=30)
    world = World(s)
    start, stop, flows = begin(world)
    writer = MemoryDirty(world.guests["vm1"], start, stop, 300, 4)
    writer.begin()
    world.migrate("vm1", "host1", MigrationLink(world.ledger, "mig", 10), start + 2e6, downtime_ns=1e6)
    finish(world, start, stop, flows, 0.0)
    vm = world.vms["vm1"]
    assert vm.host.name == "host1" and writer.written > writer.pages
    assert all(vm.mem.read(writer.base + (i << 12), 4096) == writer.expected(i) for i in range(writer.pages))


def _run(max_rounds: int = 5, **kwargs) -> dict:
    return migrate(scenario(rate_pps=2_000, duration_ms=60, max_rounds=max_rounds, **kwargs)).to_dict()


def test_a_higher_dirty_rate_takes_more_rounds_and_longer_downtime():
    """Pre-copy converges slower the faster the guest dirties memory."""
    low, high = _run(dirty=40), _run(dirty=2000)
    assert low["result"] == high["result"] == "ok"
    assert high["rounds"] > low["rounds"]
    assert high["downtime_ms"] > low["downtime_ms"]
    assert high["pages_sent"] > low["pages_sent"]


def test_a_faster_link_gives_shorter_downtime_and_total_time():
    """The same guest over 4 and 10 Gbit/s, one pre-copy round each (both stop while the guest still
    writes): the faster link finishes sooner, leaves less dirty and stops the VM for less time."""
    slow, fast = _run(dirty=300, link_gbps=4, max_rounds=1), _run(dirty=300, link_gbps=10, max_rounds=1)
    assert fast["total_time_ms"] < slow["total_time_ms"]
    assert fast["downtime_ms"] < slow["downtime_ms"]


@pytest.mark.parametrize("fail_at_ms", [3.0, 20.0])
def test_a_failed_link_aborts_and_the_source_keeps_running(fail_at_ms):
    """Link down mid-copy: result failed, the VM stays on its host losing nothing, no VM was built on the
    target (only its incoming thread worked there, and its time is counted)."""
    outcome = migrate(scenario(src="vm2", dst="vm1", rate_pps=20_000, dirty=2000, duration_ms=30,
                               fail_at_ms=fail_at_ms))
    m, flow = outcome.to_dict(), _flow(outcome)
    assert m["result"] == "failed" and "continues on host0" in m["reason"]
    assert flow["delivered"] == flow["sent"] and m["frames_lost"] == 0
    names = {r["name"] for r in outcome.result.to_dict()["resources"]}
    assert not any(name.startswith("host1/vm1/") for name in names) and "host1/vm1-incoming" in names


def test_a_target_that_cannot_reserve_the_memory_fails_the_migration(monkeypatch):
    """The target host refuses the mmap for the incoming RAM (ENOMEM): the migration fails with the
    reason, the VM runs on at its source and loses nothing."""
    from iovirt.hypervisor import migration

    def refuse(size):
        raise MemoryError(f"cannot reserve {size >> 20} MiB of guest memory: Cannot allocate memory")

    monkeypatch.setattr(migration, "GuestMemory", refuse)
    outcome = migrate(scenario())
    m, flow = outcome.to_dict(), _flow(outcome)
    assert m["result"] == "failed"
    assert m["reason"] == ("host1 cannot reserve 64 MiB of guest memory: Cannot allocate memory; "
                           "vm1 continues on host0")
    assert flow["delivered"] == flow["sent"] and m["frames_lost"] == 0


def test_a_device_state_that_cannot_be_saved_fails_the_migration(monkeypatch):
    """Should a device's state not encode at the stop (a value past its field's width), the migration
    fails with the reason and the VM runs on at its source."""
    from iovirt.hypervisor import migration

    def unsavable(device):
        raise StateError("e1000.errors: cannot save: 'Q' format requires 0 <= number <= 18446744073709551615")

    monkeypatch.setattr(migration, "save_state", unsavable)
    m = migrate(scenario()).to_dict()
    assert m["result"] == "failed" and m["reason"] == (
        "device state not saved: e1000.errors: cannot save: 'Q' format requires 0 <= number <= "
        "18446744073709551615; vm1 continues on host0")


def test_a_passed_through_vm_is_blocked_with_the_reason():
    """Pass-through: refused before anything is copied; its traffic is untouched."""
    outcome = migrate(scenario("ixgbe", "passthrough", dst="wire"))
    m = outcome.to_dict()
    assert m["result"] == "blocked" and "passed through" in m["reason"]
    assert m["pages_sent"] == 0 and m["frames_lost"] == 0


def test_an_e1000_vm_goes_from_kvm_to_xen_and_back():
    """The same device model and state format on both hypervisors: KVM -> Xen HVM -> KVM, frames intact."""
    s = scenario(rate_pps=20_000, duration_ms=40, target="xen", dst="vm2")
    world = World(s)
    start, stop, flows = begin(world)
    link = MigrationLink(world.ledger, "mig", 10)
    xen_host = world.hosts["host1"]
    threads_before = sum(xen_host._placed.values())
    there = world.migrate("vm1", "host1", link, start + 2e6, downtime_ns=1e6)
    world.sim.run(until=start + 20e6)
    assert there.report.result == "ok" and world.vms["vm1"].host.name == "host1"
    back = world.migrate("vm1", "host0", link, world.sim.now, downtime_ns=1e6)
    result = finish(world, start, stop, flows, 0.0).to_dict()
    assert back.report.result == "ok" and world.vms["vm1"].host.name == "host0"
    assert sum(xen_host._placed.values()) == threads_before      # its vCPU and dom0's QEMU for it left the cores
    flow = result["flows"][0]
    assert flow["delivered"] == flow["sent"] and flow["corrupted"] == 0 and flow["out_of_order"] == 0
    assert world.ledger.events["ioreq"] > 0          # it ran on Xen in between, its register accesses as ioreqs


def test_the_matrix_says_who_can_go_where():
    """--check: an emulated VM can go to Xen, virtio-net cannot, pass-through never."""
    emulated = {(r["vm"], r["to"]): r for r in matrix(scenario(target="xen"))}
    assert emulated["vm1", "host1"]["result"] == "ok"
    virtio = {(r["vm"], r["to"]): r for r in matrix(scenario("virtio-net", "paravirt", "vhost-net", target="xen"))}
    assert virtio["vm1", "host1"]["result"] == "blocked" and "needs a kvm host" in virtio["vm1", "host1"]["reason"]
    assigned = {(r["vm"], r["to"]): r for r in matrix(scenario("ixgbe", "passthrough", dst="wire"))}
    assert assigned["vm1", "host1"]["result"] == "blocked"


def test_a_vm_larger_than_an_hvm_domain_cannot_go_to_xen():
    """200 vCPUs run on KVM (KVM_MAX_VCPUS is 1024) but not as a Xen HVM domain (HVM_MAX_VCPUS is 128)."""
    s = scenario(target="xen")
    s.vms[0].vcpus = 200
    row = {(r["vm"], r["to"]): r for r in matrix(s)}["vm1", "host1"]
    assert row["result"] == "blocked"
    assert row["reason"] == ("vm1 has 200 vCPUs; a VM on host1 (xen) has at most 128 "
                             "(HVM_MAX_VCPUS: an HVM domain's limit)")


def test_bad_targets_are_one_line_errors():
    """An unknown VM, or the VM's own host, is refused before anything runs."""
    with pytest.raises(ScenarioError, match="--vm: expected one of the VMs"):
        migrate(scenario(), "vm9", "host1")
    with pytest.raises(ScenarioError, match="--to: expected a host other than vm1's"):
        migrate(scenario(), "vm1", "host0")


def sriov_scenario(standby: bool = True, target_vfs: int = 4) -> Scenario:
    """vm1 on a VF of host0's pnic0 (with a virtio-net standby of the same MAC) streams to the wire."""
    vf = {"model": "sriov", "device": "ixgbevf", "uplink": "pnic0", "mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24"}
    nics = [vf] + ([{"model": "paravirt", "device": "virtio-net", "backend": "vhost-net", "standby": True,
                     "mac": vf["mac"], "ip": vf["ip"]}] if standby else [])
    return Scenario.from_dict({
        "name": "failover",
        "hosts": [{"name": "host0", "cores": 4, "nics": [{"name": "pnic0", "num_vfs": 4}, {"name": "pnic1"}]},
                  {"name": "host1", "cores": 4, "nics": [{"name": "pnic0", "num_vfs": target_vfs}, {"name": "pnic1"}]}],
        "vms": [{"name": "vm1", "host": "host0", "memory_mb": 64, "resident_mb": 4, "nics": nics}],
        "workloads": [{"type": "udp_stream", "src": "vm1", "dst": "wire", "rate_pps": 50_000, "duration_ms": 40}],
        "migration": {"vm": "vm1", "to": "host1", "at_ms": 2, "downtime_ms": 1}})


def _failover(s: Scenario):
    world = World(s)
    start, stop, flows = begin(world)
    migration = world.migrate("vm1", "host1", MigrationLink(world.ledger, "mig", 10), start + 2e6, downtime_ns=1e6)
    finish(world, start, stop, flows, 0.0)
    return world, migration.report, flows[0]


def test_sriov_with_failover_moves_and_gets_a_vf_back():
    """The VF is unplugged, traffic fails over to virtio, the VM moves, a VF of the target's port becomes primary."""
    world, report, flow = _failover(sriov_scenario())
    assert report.result == "ok" and report.reason == ""
    assert report.unplugged_ns < report.started_ns + 1 < report.stopped_ns < report.resumed_ns < report.failback_ns
    assert report.failback_ns - report.resumed_ns > 10e6        # the new VF's probe: ixgbevf's mdelay(10) after reset
    # nothing lost; at the failback a frame on the VF may overtake one still on the longer virtio path
    assert flow.delivered == flow.sent and flow.corrupted == 0 and flow.out_of_order <= 4
    vm, bond = world.vms["vm1"], world.guests["vm1"].netdevs[0].stats
    assert vm.host.name == "host1" and {type(n).__name__ for n in vm.nics} == {"VirtioNic", "SriovNic"}
    assert bond["failovers"] >= 1 and bond["failbacks"] >= 1 and bond["tx_standby"] > 0
    assert world.sriov["host0", "pnic0"].free == [0, 1, 2, 3]        # the source's VF went back to its host


def test_sriov_with_failover_to_a_host_without_vfs_stays_on_virtio():
    """No VF to come back to: the move still succeeds and the VM keeps running on its standby."""
    world, report, flow = _failover(sriov_scenario(target_vfs=0))
    assert report.result == "ok" and "stays on its virtio-net standby" in report.reason
    assert flow.delivered == flow.sent
    assert [type(n).__name__ for n in world.vms["vm1"].nics] == ["VirtioNic"]


def test_a_vf_alone_blocks_migration():
    """Without a failover standby a VF cannot move; the check says why before anything runs."""
    world, report, flow = _failover(sriov_scenario(standby=False))
    assert report.result == "blocked" and "ixgbevf" in report.reason and report.pages_sent == 0
    assert flow.delivered == flow.sent and world.vms["vm1"].host.name == "host0"
    rows = {r["to"]: r for r in matrix(sriov_scenario(standby=False))}
    assert rows["host1"]["result"] == "blocked" and "no failover standby" in rows["host1"]["reason"]
    rows = {r["to"]: r for r in matrix(sriov_scenario(target_vfs=0))}
    assert rows["host1"]["result"] == "ok" and "stays on its virtio-net standby" in rows["host1"]["reason"]


def test_a_passed_through_nic_with_a_standby_is_unplugged_and_comes_back_on_the_target():
    """Pass-through unplugged first (failover to virtio), the VM moves, the target's port of that name is assigned."""
    s = scenario("ixgbe", "passthrough", dst="wire", duration_ms=40)
    data = s.model_dump(by_alias=True, mode="json")
    vm1 = data["vms"][0]
    vm1["nics"].append({"model": "paravirt", "device": "virtio-net", "backend": "vhost-net", "standby": True,
                        "mac": vm1["nics"][0]["mac"], "ip": vm1["nics"][0]["ip"]})
    data["hosts"][1]["nics"].append({"name": "pnic1"})
    world, report, flow = _failover(Scenario.from_dict(data))
    assert report.result == "ok" and report.reason == "" and report.failback_ns is not None
    assert flow.delivered == flow.sent and flow.corrupted == flow.out_of_order == 0
    vm = world.vms["vm1"]
    assert vm.host.name == "host1" and world.hosts["host1"].nics["pnic1"].owner == "vm1"
    assert world.hosts["host0"].nics["pnic1"].owner is None


@pytest.mark.parametrize("damage", [lambda blob: blob[:-5], lambda blob: blob[:40] + bytes([blob[40] ^ 1]) + blob[41:]],
                         ids=["truncated", "tampered"])
def test_a_damaged_device_state_stream_fails_the_migration_cleanly(monkeypatch, damage):
    """The target rejects a cut or altered device stream before building the VM; the source VM runs on."""
    import iovirt.hypervisor.migration as migration_module
    save = migration_module.save_state
    monkeypatch.setattr(migration_module, "save_state", lambda device: damage(save(device)))
    outcome = migrate(scenario(src="vm2", dst="vm1", rate_pps=20_000, duration_ms=20))
    m, flow = outcome.to_dict(), _flow(outcome)
    assert m["result"] == "failed" and "device state rejected" in m["reason"] and "continues on host0" in m["reason"]
    assert flow["delivered"] == flow["sent"] and flow["corrupted"] == 0
    names = {r["name"] for r in outcome.result.to_dict()["resources"]}
    assert not any(name.startswith("host1/vm1/") for name in names)


def test_a_refused_failover_vm_keeps_its_vf():
    """A move the target cannot take (virtio-net on Xen) is refused before the VF is unplugged."""
    data = sriov_scenario().model_dump(by_alias=True, mode="json")
    data["hosts"][1]["hypervisor"] = "xen"
    world, report, flow = _failover(Scenario.from_dict(data))
    assert report.result == "blocked" and "needs a kvm host" in report.reason and report.unplugged_ns is None
    assert {type(n).__name__ for n in world.vms["vm1"].nics} == {"SriovNic", "VirtioNic"}


def test_a_failover_vm_migrates_there_and_back():
    """The VF it got on the target is again unplugged for the way back, and a VF of the source port returns."""
    world = World(sriov_scenario())
    start, stop, flows = begin(world)
    link = MigrationLink(world.ledger, "mig", 10)
    there = world.migrate("vm1", "host1", link, start + 2e6, downtime_ns=1e6)
    while world.sim.now < min(stop, there.report.failback_ns or stop):    # back once the target's VF is primary
        world.sim.run(until=world.sim.now + 1e6)
    back = world.migrate("vm1", "host0", link, world.sim.now, downtime_ns=1e6)
    finish(world, start, stop, flows, 0.0)
    assert there.report.result == back.report.result == "ok" and back.report.failback_ns is not None
    assert world.vms["vm1"].host.name == "host0"
    assert world.sim.drops.flows[flows[0].index] == 0          # none lost: a frame not delivered is still in flight
    assert world.sriov["host1", "pnic0"].free == [0, 1, 2, 3]


def _reframed(blob: bytes) -> bytes:
    """The same stream one byte shorter inside, with its lengths and CRC made consistent again."""
    import struct
    import zlib
    name_len = blob[6]
    at = 7 + name_len
    version, length = struct.unpack_from("<HI", blob, at)
    body = blob[:at] + struct.pack("<HI", version, length - 1) + blob[at + 6:-5]
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_stream_that_decodes_wrong_is_refused_before_the_target_is_built(monkeypatch):
    """Framing and CRC fine, contents one byte short: every device stream is decoded before any is loaded."""
    import iovirt.hypervisor.migration as migration_module
    save = migration_module.save_state
    monkeypatch.setattr(migration_module, "save_state", lambda device: _reframed(save(device)))
    outcome = migrate(scenario("virtio-net", "paravirt", "vhost-net", src="vm2", dst="vm1", duration_ms=20))
    m = outcome.to_dict()
    assert m["result"] == "failed" and "device state rejected: virtio-net" in m["reason"]
    assert not any(r["name"].startswith("host1/vm1/") for r in outcome.result.to_dict()["resources"])


@pytest.mark.parametrize("pml,per_page", [(True, 512), (False, 1)])
def test_the_guest_pays_for_dirty_logging_device_writes_do_not(pml, per_page):
    """Pages the vCPU wrote cost a PML-full exit per 512, or without PML an exit per page it
    found write-protected, when the log is fetched (plus the kick); DMA writes cost none."""
    s = scenario()
    s.hosts[0].pml = pml
    world = World(s)
    vm = world.vms["vm1"]
    vm.take_dirty(charge=False)
    exits = vm.acct["vm_exit"]
    for pfn in range(1024, 2048):                       # 1024 pages by guest stores, 1024 by a device
        vm.cpu_mem.write(pfn << 12, b"\x01")
        vm.mem.write((pfn + 4096) << 12, b"\x02")
    pages = vm.take_dirty()
    assert len(pages) == 2048 and pages == sorted(pages)
    assert vm.acct["vm_exit"] - exits == 1024 // per_page + 1
    assert vm.take_dirty() == [] and vm.acct["vm_exit"] - exits == 1024 // per_page + 2


def test_without_pml_the_first_store_to_each_page_exits_when_it_happens():
    """Write protection: while the log is on, a store to a clean page exits at once, on the vCPU
    that stores; a page already written costs nothing until the log is fetched and it is
    protected again; with the log off nothing exits."""
    s = scenario()
    s.hosts[0].pml = False
    vm = World(s).vms["vm1"]
    vcpu = vm.vcpus[0]
    vm.take_dirty(charge=False)
    vm.log_dirty(True)
    exits, cursor = vm.acct["vm_exit"], vcpu.cursor
    vm.cpu_mem.write(1024 << 12, b"\x01" * 8192)                   # two clean pages
    assert vm.acct["vm_exit"] - exits == 2 and vcpu.cursor > cursor
    vm.cpu_mem.write(1024 << 12, b"\x02")
    assert vm.acct["vm_exit"] - exits == 2
    vm.take_dirty()                                                 # the kick; no page charged twice
    assert vm.acct["vm_exit"] - exits == 3
    vm.cpu_mem.write(1024 << 12, b"\x03")
    assert vm.acct["vm_exit"] - exits == 4
    vm.log_dirty(False)
    vm.cpu_mem.write(2048 << 12, b"\x04")
    assert vm.acct["vm_exit"] - exits == 4


def test_without_pml_a_dirtying_guest_takes_more_exits_during_migration():
    """The same writer moved from a host with PML and from one without: write protection
    costs the guest an exit per page it dirties in each round, PML one per 512."""
    exits = {}
    for pml in (True, False):
        s = scenario(rate_pps=2_000, duration_ms=30, max_rounds=8, dirty=300)
        s.hosts[0].pml = pml
        outcome = migrate(s)
        assert outcome.to_dict()["result"] == "ok"
        exits[pml] = outcome.result.to_dict()["events"]["vm_exit"]
    assert exits[False] > exits[True]



# ---- the state that crosses while the VM is stopped; the resident image ------------------------
MIGRATING = [("e1000", "emulated", None, "kvm"), ("rtl8139", "emulated", None, "kvm"), ("pcnet", "emulated", None, "kvm"),
             ("tulip", "emulated", None, "kvm"), ("virtio-net", "paravirt", "qemu", "kvm"),
             ("virtio-net", "paravirt", "vhost-net", "kvm"), ("virtio-net", "paravirt", "vhost-user", "kvm"),
             ("e1000", "emulated", None, "xen"), ("xen-netfront", "paravirt", None, "xen")]


def _quiet(device="e1000", model="emulated", backend=None, hypervisor="kvm", **kwargs) -> dict:
    """vm1 receives a trickle (1 kpps) and dirties nothing of its own: what stops it is its state."""
    return migrate(scenario(device, model, backend, src="vm2", dst="vm1", rate_pps=1_000, duration_ms=20,
                            source=hypervisor, target=hypervisor, **kwargs)).to_dict()


@pytest.mark.parametrize("device,model,backend,hypervisor", MIGRATING)
def test_every_model_stops_for_its_vcpu_state(device, model, backend, hypervisor):
    """Downtime is never zero: the vCPU and platform records cross while the VM is stopped, on KVM,
    on a Xen HVM domain and on a Xen PV one (which has no PCI device state at all)."""
    m = _quiet(device, model, backend, hypervisor)
    assert m["result"] == "ok", m["reason"]
    assert 0 < m["vcpu_state_bytes"] <= m["state_bytes"] and m["downtime_ms"] > 0
    assert m["bytes_sent"] > m["state_bytes"]


def test_a_failover_vm_stops_for_its_vcpu_state_too():
    world, report, flow = _failover(sriov_scenario())
    assert report.result == "ok" and report.vcpu_state_bytes > 0 and report.downtime_ns > 0


@pytest.mark.parametrize("device,model,backend,hypervisor", [
    ("e1000", "emulated", None, "kvm"), ("e1000", "emulated", None, "xen"), ("xen-netfront", "paravirt", None, "xen")])
def test_downtime_grows_with_the_vcpus(device, model, backend, hypervisor):
    """Each vCPU adds its records (and, on KVM and PV, the calls that fetch and load them) to the stop."""
    one, four = (_quiet(device, model, backend, hypervisor, vcpus=n) for n in (1, 4))
    assert one["result"] == four["result"] == "ok"
    assert four["vcpu_state_bytes"] > 3 * one["vcpu_state_bytes"] // 2
    assert four["downtime_ms"] > one["downtime_ms"]


@pytest.mark.parametrize("device,model,backend,hypervisor", [
    ("e1000", "emulated", None, "kvm"), ("virtio-net", "paravirt", "vhost-net", "kvm"),
    ("xen-netfront", "paravirt", None, "xen")])
def test_total_time_grows_with_the_resident_image(device, model, backend, hypervisor):
    """The booted system's pages are not zero pages: pre-copy moves each of them, so a VM with more
    resident memory sends more normal pages and takes longer; zero pages stay cheap."""
    small, large = (_quiet(device, model, backend, hypervisor, resident_mb=mb) for mb in (2, 24))
    assert small["result"] == large["result"] == "ok"
    normal = [m["pages_sent"] - m["zero_pages"] for m in (small, large)]
    assert normal[1] - normal[0] >= (24 - 2) << 8
    assert large["total_time_ms"] > small["total_time_ms"]
    assert large["bytes_sent"] - small["bytes_sent"] >= ((24 - 2) << 20)


def test_a_vm_without_resident_mb_boots_a_linux_sized_image():
    """Left out, resident_mb is a booted Linux's, as much as fits beside the kernel's DMA room: more
    pages to move than a VM that declares none."""
    data = scenario(rate_pps=1_000, duration_ms=20, resident_mb=0).model_dump(by_alias=True, mode="json")
    empty = migrate(Scenario.from_dict(data)).to_dict()
    for vm in data["vms"]:
        del vm["resident_mb"]
    booted = Scenario.from_dict(data)
    assert 0 < booted.vms[0].resident_mb <= 64 - 32
    default = migrate(booted).to_dict()
    assert default["pages_sent"] - default["zero_pages"] > empty["pages_sent"] - empty["zero_pages"]


def test_the_resident_image_arrives_intact():
    """Every page of the image holds non-zero bytes on the source, and the same bytes on the target."""
    world = World(scenario(rate_pps=1_000, duration_ms=20, resident_mb=8))
    start, stop, flows = begin(world)
    guest, source = world.guests["vm1"], world.vms["vm1"]
    image = bytes(source.mem.read(guest.image, 8 << 20))
    assert all(any(image[at:at + 4096]) for at in range(0, len(image), 4096))
    world.migrate("vm1", "host1", MigrationLink(world.ledger, "mig", 10), start + 2e6, downtime_ns=1e6)
    finish(world, start, stop, flows, 0.0)
    target = world.vms["vm1"]
    assert target is not source and target.host.name == "host1"
    assert bytes(target.mem.read(guest.image, 8 << 20)) == image


@pytest.mark.parametrize("resident,ok", [(64, False), (64 - 32 + 1, False), (64 - 32, True)])
def test_resident_mb_is_bounded_by_the_memory(resident, ok):
    data = scenario().model_dump(by_alias=True, mode="json")
    data["vms"][0]["resident_mb"] = resident
    if ok:
        assert Scenario.from_dict(data).vms[0].resident_mb == resident
        return
    with pytest.raises(ScenarioError, match=r"vms\[0\]\.resident_mb: expected at most 32 MiB: memory_mb \(64\)"):
        Scenario.from_dict(data)


def test_resident_mb_above_memory_mb_exits_2_from_the_cli(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from iovirt.cli.main import app
    data = scenario().model_dump(by_alias=True, mode="json")
    data["vms"][0]["resident_mb"] = 100
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["migrate", str(path), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {path}: vms[0].resident_mb: expected at most 32 MiB")
    assert result.stderr.count("\n") == 1


def test_a_working_set_must_fit_beside_the_resident_image():
    data = scenario(dirty=100).model_dump(by_alias=True, mode="json")
    data["vms"][0]["resident_mb"] = 28                      # 64 - 32 - 28 = 4 MiB left, the working set is 8
    with pytest.raises(ScenarioError, match=r"workloads\[1\]\.working_set_mb: expected at most 4 MiB"):
        Scenario.from_dict(data)


@pytest.mark.parametrize("damage", [lambda blob: blob[:-3], lambda blob: blob[:4] + b"\xff" + blob[5:]],
                         ids=["truncated", "wrong record"])
def test_a_damaged_vcpu_stream_fails_the_migration_cleanly(monkeypatch, damage):
    """The target decodes the vCPU records before it builds anything; the source VM runs on."""
    from iovirt.hypervisor import cpustate
    save = cpustate.save
    monkeypatch.setattr(cpustate, "save", lambda vm, platform: damage(save(vm, platform)))
    outcome = migrate(scenario(src="vm2", dst="vm1", rate_pps=20_000, duration_ms=20))
    m, flow = outcome.to_dict(), _flow(outcome)
    assert m["result"] == "failed" and "vCPU state rejected: kvm state" in m["reason"]
    assert "continues on host0" in m["reason"] and flow["delivered"] == flow["sent"]
    assert not any(r["name"].startswith("host1/vm1/") for r in outcome.result.to_dict()["resources"])


def test_a_default_working_set_that_does_not_fit_is_refused():
    """memory_dirty without working_set_mb takes 16 MiB: on a 32 MiB VM that is refused up front, not
    found out of guest memory mid-run."""
    data = scenario(dirty=100).model_dump(by_alias=True, mode="json")
    data["vms"][0]["memory_mb"], data["vms"][0]["resident_mb"] = 32, None
    del data["workloads"][1]["working_set_mb"]
    with pytest.raises(ScenarioError, match=r"workloads\[1\]\.working_set_mb: expected at most 0 MiB .* got 16 "
                                            r"\(the default\)"):
        Scenario.from_dict(data)
    data["vms"][0]["memory_mb"] = 48
    assert Scenario.from_dict(data).vms[0].resident_mb == 0       # the working set takes the room an image would
