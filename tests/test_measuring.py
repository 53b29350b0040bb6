"""The measuring side is as real as the models: a far-end host with cores,
RSS queues and finite rings; a switch with finite buffers; throughput over a
stated window, which no set of flows can push past a link's rate; each flow
names the resource that limits it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.experiments.scenario import ScenarioError

PAYLOAD_SHARE = {1500: 1472 / 1538, 512: 484 / 550, 64: 36 / 84}      # UDP payload per byte on the wire
NICS = {"vhost-net": {"model": "paravirt", "device": "virtio-net", "backend": "vhost-net"},
        "vhost-user": {"model": "paravirt", "device": "virtio-net", "backend": "vhost-user"},
        "sriov": {"model": "sriov", "device": "ixgbevf", "uplink": "pnic0"},
        "e1000": {"model": "emulated", "device": "e1000"}}


def scenario(nic: dict, vms: int, size: int = 1500, warmup_ms: float = 0.0, duration_ms: float = 1.0,
             cores: int = 16, **extra) -> dict:
    return {"name": "measure", "hosts": [{"name": "host0", "cores": cores, "nics": [
        {"name": "pnic0", "kind": "x82599", "link_gbps": 10, **({"num_vfs": vms} if nic["model"] == "sriov" else {})},
        {"name": "pnic1", "kind": "x82599", "link_gbps": 10}]}],
        "vms": [{"name": f"vm{i}", "host": "host0", "nics": [
            {**nic, "mac": f"52:54:00:00:00:{i:02x}", "ip": f"10.0.0.{i}/24"}]} for i in range(1, vms + 1)],
        "workloads": [{"type": "udp_stream", "src": f"vm{i}", "dst": "wire", "packet_size": size,
                       "duration_ms": warmup_ms + duration_ms, "warmup_ms": warmup_ms} for i in range(1, vms + 1)],
        **extra}


def run(doc: dict) -> dict:
    return iovirt.run(iovirt.Scenario.from_dict(doc)).to_dict()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nic=st.sampled_from(sorted(NICS)), vms=st.integers(1, 6), size=st.sampled_from([64, 512, 1500]),
       warmup=st.sampled_from([0.0, 0.5]))
def test_flows_sharing_a_port_never_sum_above_its_rate(nic, vms, size, warmup):
    """Whatever the model, VM count and size, the streams leaving one 10 Gbit/s port deliver at most its
    rate in UDP payload (Ethernet framing, preamble and gap taken off), and no link reports more than 100%."""
    result = run(scenario(NICS[nic], vms, size, warmup))
    total = sum(f["throughput_gbps"] for f in result["flows"])
    edge = (size - 28) * 8 / 1e6                  # a frame straddling the window's start, in Gbit/s over 1 ms
    assert total <= 10 * PAYLOAD_SHARE[size] + edge
    assert all(link["utilization"] <= 1.0001 for link in result["links"])


def test_the_window_counts_what_arrives_in_it_only():
    """Deliveries after the window (queues draining) count for loss and latency but not for throughput:
    a longer drain leaves the rate unchanged while the frames delivered grow with what was queued."""
    result = run(scenario(NICS["sriov"], 4, duration_ms=1.0))
    for f in result["flows"]:
        assert f["pps"] * 1e-3 <= f["delivered"]
        assert f["sent"] == f["delivered"] + f["dropped"] + f["in_flight"] + f["corrupted"]


def test_a_one_core_far_end_with_short_rings_is_the_bottleneck_and_drops():
    """Made weak on purpose (one core whose stack takes every datagram, short rings), the far end misses
    frames at its NIC and every flow names its core."""
    result = run(scenario(NICS["sriov"], 4, peer={"cores": 1, "rx_ring": 64, "receiver": "socket"}))
    misses = {place: n for place, n in result["drops"].items() if place.endswith("/rx_missed")}
    assert misses and all(place.startswith("peer-") for place in misses)
    assert sum(f["dropped"] for f in result["flows"]) == sum(misses.values())
    assert all(f["bottleneck"]["resource"].startswith("peer-") for f in result["flows"])


def test_the_default_far_end_is_not_the_bottleneck_of_a_saturated_port():
    result = run(scenario(NICS["sriov"], 4))
    assert not any(place.startswith("peer-") for place in result["drops"])
    assert all(not f["bottleneck"]["resource"].startswith("peer-") for f in result["flows"])


def test_a_congested_switch_port_tail_drops_and_bounds_the_queue():
    """Two hosts stream at a VM on a third: its switch port takes 20 Gbit/s into 10; the excess is dropped at
    the port's buffer (counted there), and no frame waits longer than the buffer takes to drain."""
    hosts = [{"name": f"h{h}", "cores": 8, "nics": [{"name": "pnic0", "num_vfs": 1}]} for h in range(3)]
    vms = [{"name": f"vm{h}", "host": f"h{h}", "nics": [{**NICS["sriov"], "mac": f"52:54:00:00:00:0{h + 1}",
                                                        "ip": f"10.0.0.{h + 1}/24"}]} for h in range(3)]
    loads = [{"type": "udp_stream", "src": f"vm{h}", "dst": "vm2", "duration_ms": 1.0, "rate_pps": 800_000}
             for h in (0, 1)]
    result = run({"name": "incast", "hosts": hosts, "vms": vms, "workloads": loads, "fabric": {"buffer_kb": 64}})
    tail = {place: n for place, n in result["drops"].items() if place.endswith("/egress-buffer")}
    assert list(tail) == ["fabric/h2/pnic0/wire/egress-buffer"]
    assert sum(f["dropped"] for f in result["flows"]) == tail["fabric/h2/pnic0/wire/egress-buffer"] > 0
    losers = [f for f in result["flows"] if f["dropped"]]
    assert losers and all(f["bottleneck"]["resource"] == "h2/pnic0/wire/rx" for f in losers)
    into_h2 = next(link for link in result["links"] if link["name"] == "h2/pnic0/wire/rx")
    assert into_h2["drops"] == tail["fabric/h2/pnic0/wire/egress-buffer"]


def test_a_switch_port_holds_its_buffer_and_no_more():
    """Frames offered to a port at one instant: as many as its buffer holds (plus the one on the wire)
    are sent; the rest are dropped at the port, each counted."""
    from iovirt.net.fabric import Fabric
    from iovirt.net.wire import Link
    from iovirt.sim.engine import Sim
    from iovirt.sim.profile import load_profile
    from iovirt.sim.resource import Ledger

    sim, ledger = Sim(), Ledger(load_profile("default"))
    fabric, link = Fabric(sim, ledger, buffer_bytes=15_380), Link(sim, ledger, "l", 10)
    fabric.connect(link)
    for _ in range(20):
        fabric.forward(link, bytes(1514), 0.0)
    assert sim.drops.places["fabric/l/egress-buffer"] == 20 - 11


def test_a_warm_up_as_long_as_the_run_is_refused():
    try:
        iovirt.Scenario.from_dict(scenario(NICS["e1000"], 1, warmup_ms=1.0, duration_ms=0.0001)
                                  | {"workloads": [{"type": "udp_stream", "src": "vm1", "dst": "wire",
                                                    "duration_ms": 1.0, "warmup_ms": 1.0}]})
    except ScenarioError as err:
        assert "workloads[0].warmup_ms: expected less than duration_ms (1)" in str(err)
    else:
        raise AssertionError("accepted")
