"""SR-IOV end to end: VMs on VFs of one port, configured from the scenario,
assigned through the IOMMU, switched inside the NIC."""

from __future__ import annotations

import pytest

import iovirt
from iovirt.experiments.capture import Frames, watch
from iovirt.experiments.results import WIRE_PEERS
from iovirt.experiments.runner import run
from iovirt.experiments.world import World
from iovirt.spec import ixgbe as s

PNIC = {"name": "pnic0", "kind": "x82599", "link_gbps": 10}



def vf(i: int, **policy) -> dict:
    return {"name": f"vm{i}", "host": "host0", "nics": [
        {"model": "sriov", "device": "ixgbevf", "uplink": "pnic0", "mac": f"52:54:00:00:00:{i:02x}",
         "ip": f"10.0.0.{i}/24", **policy}]}


def scenario(vms: list[dict], workloads: list[dict], num_vfs: int = 8, posted: bool = True):
    return iovirt.Scenario.from_dict({
        "name": "sriov", "hosts": [{"name": "host0", "cores": 8, "posted_interrupts": posted,
                                    "nics": [PNIC | {"num_vfs": num_vfs}]}],
        "vms": vms, "workloads": workloads})


def stream(src: str, dst: str, ms: float = 2) -> dict:
    return {"type": "udp_stream", "src": src, "dst": dst, "duration_ms": ms}


def resource(result, name: str) -> dict:
    return result.resources.set_index("name").loc[name]


def test_eight_vms_share_one_port_every_frame_intact():
    """8 VMs on VFs of one port: 4 stream to the wire, 4 to each other; every frame to the wire
    arrives, one to a VM arrives or is dropped, counted, at its VF's empty ring (a receiver no
    faster than its sender), none is damaged or reordered; the aggregate to the wire stays
    under the line rate."""
    vms = [vf(i) for i in range(1, 9)]
    workloads = [stream(f"vm{i}", "wire") for i in (1, 2, 3, 4)] + [stream("vm5", "vm6"), stream("vm7", "vm8")]
    result = run(scenario(vms, workloads))
    data = result.to_dict()
    flows = data["flows"]
    assert all(f["sent"] > 0 and f["corrupted"] == f["out_of_order"] == f["in_flight"] == 0 for f in flows)
    assert all(f["delivered"] == f["sent"] for f in flows if f["dst"] == "wire")
    assert sum(f["dropped"] for f in flows) == data["drops"].get("host0/pnic0/rx_no_descriptor", 0)
    assert all(f["delivered"] + f["dropped"] == f["sent"] for f in flows)
    assert resource(result, "host0/pnic0/wire/tx")["utilization"] <= 1.0


def test_vm_to_vm_frames_are_switched_inside_the_nic():
    """Frames between two VFs of a port never touch the wire or a host thread."""
    result = run(scenario([vf(1), vf(2)], [stream("vm1", "vm2")]))
    flow = result.to_dict()["flows"][0]
    assert flow["delivered"] == flow["sent"] > 100
    assert resource(result, "host0/pnic0/wire/tx")["busy_s"] == 0
    assert resource(result, "host0/pnic0/engine")["busy_s"] > 0
    threads = result.resources[result.resources["kind"] == "host_thread"]["busy_s"].sum()
    assert threads < 0.001 * resource(result, "host0/pnic0/engine")["busy_s"]   # no host CPU on the data path
    assert flow["events_per_packet"].get("vm_exit", 0) < 0.2


def test_a_rate_limited_vf_gets_no_more_than_its_rate():
    """A VF limited to 1000 Mbit/s sends no faster than that while another VF takes the rest."""
    result = run(scenario([vf(1, rate_mbps=1000), vf(2)], [stream("vm1", "wire", 3), stream("vm2", "wire", 3)]))
    limited, free = result.to_dict()["flows"]
    assert limited["throughput_gbps"] <= 1.0
    assert free["throughput_gbps"] > 2 * limited["throughput_gbps"]


def test_spoofed_source_mac_is_dropped_and_counted():
    """A guest sending with a source MAC that is not its VF's: the NIC drops and counts it;
    the peer never sees it."""
    world = World(scenario([vf(1)], [stream("vm1", "wire")]))
    world.settle()
    peer = world.peer("vm1")
    seen = Frames()
    watch(world, WIRE_PEERS, seen)
    driver = world.guests["vm1"].netdevs[0]
    forged = peer.mac + bytes.fromhex("525400ffffff") + b"\x08\x00" + bytes(100)
    world.guests["vm1"].run_soon(lambda: driver.transmit(forged))
    world.sim.run(until=world.settle() + 200_000)
    port = world.sriov["host0", "pnic0"]
    assert port.pf.vt.spoofed[0] == 1
    assert all(frame[6:12] != bytes.fromhex("525400ffffff") for frame in seen)


@pytest.mark.parametrize("trust, acked", [(False, False), (True, True)])
def test_mac_change_through_the_mailbox_follows_trust(trust, acked):
    """An untrusted VF's MAC change is NACKed by the PF driver; a trusted one's is ACKed."""
    world = World(scenario([vf(1, trust=trust)], []))
    world.settle()
    driver = world.guests["vm1"].netdevs[0]
    result = []
    world.guests["vm1"].run_soon(lambda: result.append(driver.set_mac(bytes.fromhex("525400aaaaaa"))))
    world.sim.run(until=world.settle() + 5_000_000)
    assert result == [acked]


def test_more_vfs_than_the_pf_driver_supports_are_refused():
    """num_vfs beyond the driver's 63 is refused, naming the limit."""
    with pytest.raises(iovirt.ScenarioError, match="expected at most 63 VFs"):
        scenario([vf(1)], [], num_vfs=65)


def test_vf_dma_outside_the_vm_faults_only_that_vf():
    """A VF whose RX buffers point outside its VM: IOMMU faults for that VF's requester ID,
    the other VM's stream keeps flowing."""
    world = World(scenario([vf(1), vf(2), vf(3)], []))
    world.settle()
    bad = world.guests["vm1"].netdevs[0]
    for slot in range(len(bad.rx_bufs)):                 # every RX buffer aimed outside the VM
        world.guests["vm1"].mem.store(s.RX_DESC.struct, bad.rx_ring + s.DESC_SIZE * slot, 1 << 40, 0)
    peer = world.peer("vm1")
    peer.send(bytes.fromhex("525400000001") + peer.mac + b"\x08\x00" + bytes(100))
    world.sim.run(until=world.sim.now + 200_000)
    faults = world.hosts["host0"].iommu.unit.faults
    vf0 = world.sriov["host0", "pnic0"].cap.vf_bdf(0)
    assert faults and {f.sid for f in faults} == {vf0.bus << 8 | vf0.device << 3 | vf0.function}
    flow = run(scenario([vf(1), vf(2), vf(3)], [stream("vm2", "vm3", 1)])).to_dict()["flows"][0]
    assert flow["delivered"] == flow["sent"] > 0
