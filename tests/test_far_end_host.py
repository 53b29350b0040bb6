"""The far end of the wire as a bare-metal host (``peer: {kind: host}``): an
82599 run by the ixgbe driver, a queue pair per core, the guest kernel's stack."""

from __future__ import annotations

import ipaddress

import pytest

import iovirt
from iovirt.experiments.scenario import ScenarioError
from iovirt.spec import ixgbe as s


def scenario(peer: dict | None) -> dict:
    doc = {"name": "far-end", "profile": "default",
           "hosts": [{"name": "host0", "cores": 4, "nics": [{"name": "pnic0", "kind": "x82599", "link_gbps": 10}]}],
           "vms": [{"name": "bm1", "host": "host0", "bare_metal": True,
                    "nics": [{"model": "passthrough", "device": "ixgbe", "uplink": "pnic0",
                              "mac": "52:54:00:00:01:01", "ip": "10.0.1.1/24"}]}],
           "workloads": [{"type": "ping", "src": "bm1", "dst": "wire", "count": 3},
                         {"type": "udp_stream", "src": "bm1", "dst": "wire", "packet_size": 1500,
                          "duration_ms": 1, "rate_pps": 100_000}]}
    return doc if peer is None else doc | {"peer": peer}


def far_end_busy(result: dict) -> dict[str, float]:
    return {r["name"]: r["busy_s"] for r in result["resources"] if r["kind"] == "peer" and r["busy_s"]}


def test_a_host_far_end_answers_and_takes_the_stream_on_the_cpu_rss_names():
    """Every ping is answered and every datagram delivered by the far end's own
    stack, on the one CPU whose queue the hash of the addresses names."""
    result = iovirt.run(iovirt.Scenario.from_dict(scenario({"kind": "host", "cores": 4}))).to_dict()
    ping, stream = result["flows"]
    assert ping["delivered"] == ping["sent"] == 3
    assert stream["delivered"] == stream["sent"] > 0
    addrs = ipaddress.IPv4Address("10.0.1.1").packed + ipaddress.IPv4Address("10.0.1.254").packed
    cpu = (s.toeplitz(s.toeplitz_tables(s.RSS_DEFAULT_KEY, 12), addrs) & (s.RETA_ENTRIES - 1)) % 4
    assert list(far_end_busy(result)) == [f"peer-host0-pnic0/host/vcpu{cpu}"]


def test_the_far_end_is_a_host_unless_told_otherwise():
    """Without a peer block the far end is the same bare-metal host: its vCPUs take the flows."""
    result = iovirt.run(iovirt.Scenario.from_dict(scenario(None))).to_dict()
    assert far_end_busy(result) and all("/host/vcpu" in name for name in far_end_busy(result))


@pytest.mark.parametrize("peer", [{"kind": "wire"}, {"receiver": "pktgen"}])
def test_an_unknown_far_end_is_refused(peer):
    with pytest.raises(ScenarioError) as err:
        iovirt.Scenario.from_dict(scenario(peer))
    assert f"peer.{next(iter(peer))}" in str(err.value)


def four_senders(cores: int) -> dict:
    """Four VMs, each on a VF of one port, stream 1500 B at full speed to a far-end host of ``cores`` cores."""
    vms = [{"name": f"vm{i}", "host": "host0",
            "nics": [{"model": "sriov", "device": "ixgbevf", "uplink": "pnic0", "mac": f"52:54:00:00:00:0{i}",
                      "ip": f"10.0.0.{i}/24"}]} for i in range(1, 5)]
    return {"name": "far-end-cores", "profile": "default",
            "hosts": [{"name": "host0", "cores": 8, "nics": [{"name": "pnic0", "kind": "x82599", "link_gbps": 10,
                                                              "num_vfs": 4}]}],
            "vms": vms, "peer": {"cores": cores, "rx_ring": 64, "receiver": "socket"},
            "workloads": [{"type": "udp_stream", "src": f"vm{i}", "dst": "wire", "packet_size": 1500,
                           "duration_ms": 2} for i in range(1, 5)]}


@pytest.mark.parametrize("cores", [1, 4])
def test_a_far_end_with_too_few_cores_drops_at_its_nic(cores):
    """One core cannot take four line-rate senders: its NIC's ring fills and
    the 82599 drops (rx_missed); with four cores RSS spreads the senders and
    nothing is lost."""
    result = iovirt.run(iovirt.Scenario.from_dict(four_senders(cores))).to_dict()
    missed = result["drops"].get("peer-host0-pnic0/host/ixgbe/rx_missed", 0)
    assert (missed > 0) == (cores == 1)
    assert len(far_end_busy(result)) == (1 if cores == 1 else 2)      # the senders' addresses hash to two queues


def test_a_tester_takes_on_one_core_what_its_stack_cannot():
    """The same four senders into one core: taken by the tester behind XDP (a
    descriptor read a frame, no stack), the ring never fills."""
    doc = four_senders(1)
    doc["peer"]["receiver"] = "tester"
    result = iovirt.run(iovirt.Scenario.from_dict(doc)).to_dict()
    assert not result["drops"]
    assert all(f["delivered"] == f["sent"] for f in result["flows"])


def far_end_irq_ns_per_packet(peer: dict | None, ping: bool) -> float:
    doc = scenario(peer)
    doc["workloads"] = [{"type": "tcp_stream", "src": "bm1", "dst": "wire", "duration_ms": 3}]
    if ping:
        doc["workloads"].append({"type": "ping", "src": "bm1", "dst": "wire", "count": 3})
    explain = iovirt.run(iovirt.Scenario.from_dict(doc)).to_dict()["explain"]
    return explain["wire peers"]["ns_per_packet"]["irq_entry"]["peer"]


def test_the_far_end_moderates_its_interrupts_unless_a_round_trip_is_timed_against_it():
    """A TCP stream alone: the far end's adaptive moderation batches its
    interrupts; a ping beside it turns moderation off (an interrupt a frame
    or two); a peer block's own setting holds either way."""
    stream = far_end_irq_ns_per_packet(None, ping=False)
    assert far_end_irq_ns_per_packet(None, ping=True) > 2 * stream
    assert far_end_irq_ns_per_packet({"interrupt_moderation": "off"}, ping=False) > 2 * stream
    assert far_end_irq_ns_per_packet({"interrupt_moderation": "adaptive"}, ping=True) < 1.5 * stream
