"""One 82599 port shared by an SR-IOV VM and the host bridge: the PF, VT-aware,
carries the host's traffic in its default pool, so a VM on a VF and a virtio
VM reach the wire through one port and each other through the NIC's switch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iovirt.cli.main import app
from iovirt.experiments.capture import Frames, watch
from iovirt.experiments.results import WIRE_PEERS
from iovirt.experiments.runner import begin, finish, run
from iovirt.experiments.scenario import load_scenario
from iovirt.experiments.world import World, mac_bytes
from iovirt.guest.drivers.ixgbe import IxgbeDriver
from iovirt.spec import ixgbe as s

EXAMPLE = Path(__file__).parents[1] / "examples" / "sriov-and-virtio-one-port.yaml"
QPRC = [s.REGS[f"QPRC{n}"].offset >> 2 for n in range(16)]
GPTC = s.REGS["GPTC"].offset >> 2          # frames the port put on the wire (VEB loopback not counted)



def test_validate_accepts_the_example():
    """A software VM streaming to the wire on a host whose one port has VFs is no longer refused."""
    result = CliRunner().invoke(app, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output


def test_the_example_runs_every_flow_delivered():
    """vm1 (VF) and vm2 (virtio-net, vhost-net) both stream to the wire and to each other over one
    port: every frame arrives intact, the bridge's side runs on the host kernel's core."""
    result = run(load_scenario(EXAMPLE))
    flows = result.to_dict()["flows"]
    assert len(flows) == 5
    assert all(f["delivered"] == f["sent"] > 0 and f["corrupted"] == f["out_of_order"] == 0 for f in flows)
    busy = result.resources.set_index("name")["busy_s"]
    assert busy["host0/host0-kernel/vcpu0"] > 0 and busy["host0/pnic0/wire/tx"] > 0


def between_the_vms(fdb: bool, monkeypatch) -> tuple[World, list, list[bytes]]:
    """The example with only vm1 <-> vm2 streams; ``fdb``: the bridged MACs in the PF pool's filters.
    Returns the world, the flows and the frames the wire's far end saw."""
    if not fdb:
        monkeypatch.setattr(IxgbeDriver, "fdb_add", lambda self, mac: None)
    scenario = load_scenario(EXAMPLE)
    scenario.workloads = [w for w in scenario.workloads if w.dst != "wire" and w.type == "udp_stream"]
    world = World(scenario)
    world.peer("vm1")
    seen = Frames()
    watch(world, WIRE_PEERS, seen)
    start, stop, flows = begin(world)
    finish(world, start, stop, flows, time.perf_counter())
    return world, flows, seen


def test_frames_between_a_vf_and_a_virtio_vm_cross_the_nic_switch_not_the_wire(monkeypatch):
    """vm1 -> vm2 is looped by the VEB into the PF's default pool (its queue pair counts them) and
    bridged to vm2's tap; vm2 -> vm1 leaves the bridge through the PF pool and is looped into the
    VF's pool. None of it reaches the wire."""
    world, flows, wire = between_the_vms(True, monkeypatch)
    assert all(f.delivered == f.sent > 100 for f in flows)
    vms = {mac_bytes(n.mac) for vm in world.scenario.vms for n in vm.nics}
    assert not [f for f in wire if f[:6] in vms]
    port = world.sriov["host0", "pnic0"]
    assert port.pf.r[GPTC] < 10                                     # the ARP broadcasts, no more
    assert port.driver.pool == 4 and port.pf.r[QPRC[8]] >= flows[0].delivered      # pool 4: queues 8, 9
    assert port.pf.vt.pool_config(4)["macs"] == sorted([port.pf.mac, mac_bytes("52:54:00:00:00:02")])


def test_without_the_bridged_mac_in_the_pf_pool_vf_frames_for_the_virtio_vm_leave_on_the_wire(monkeypatch):
    """The other way round: the switch does not know vm2's MAC, so vm1's frames for it go out on
    the wire, and the fabric does not send them back where they came from: none arrive."""
    world, flows, _ = between_the_vms(False, monkeypatch)
    assert flows[0].sent > 100 and flows[0].delivered == 0
    assert flows[1].delivered == flows[1].sent > 100                  # vm2 -> vm1: its MAC is the VF pool's
    assert world.sriov["host0", "pnic0"].pf.r[GPTC] >= flows[0].sent


@pytest.mark.parametrize("num_vfs", [1, 7])
def test_the_pf_pool_follows_the_number_of_vfs(num_vfs):
    """The PF's default pool is the first after the VFs' (PFVTCTL.DEF_PL), whatever their number."""
    scenario = load_scenario(EXAMPLE)
    scenario.hosts[0].nics[0].num_vfs = num_vfs
    world = World(scenario)
    vt = world.sriov["host0", "pnic0"].pf.vt
    assert vt.def_pool == 1 << num_vfs and vt.pool_config(num_vfs)["rx_en"]
