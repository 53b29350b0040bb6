"""Transmit arbitration on one 82599 port: queues with work are served round
robin, one packet per turn (82599 datasheet 7.2.1.2 and 7.7, no DCB), so
VFs streaming to the wire at once share it evenly, under the line rate; the
per-VF rate limiters still apply on top."""

from __future__ import annotations

import pytest
from test_ixgbe import PEER_MAC, TX_BUFS, TX_RING, arrivals, frame, rig

import iovirt

LINK_GBPS = 10


def scenario(vfs: int, ms: float = 2.0, rates: dict[int, int] | None = None) -> iovirt.Scenario:
    """``vfs`` VMs, each on its own VF of one 10 Gbit/s port, each streaming unthrottled to the wire."""
    rates = rates or {}
    vms = [{"name": f"vm{i}", "host": "host0", "nics": [
        {"model": "sriov", "device": "ixgbevf", "uplink": "pnic0", "mac": f"52:54:00:00:00:{i:02x}",
         "ip": f"10.0.0.{i}/24"} | ({"rate_mbps": rates[i]} if i in rates else {})]} for i in range(1, vfs + 1)]
    return iovirt.Scenario.from_dict({
        "name": f"{vfs}-vfs-to-the-wire",
        "hosts": [{"name": "host0", "cores": 8, "posted_interrupts": True,
                   "nics": [{"name": "pnic0", "kind": "x82599", "link_gbps": LINK_GBPS, "num_vfs": vfs}]}],
        "vms": vms,
        "workloads": [{"type": "udp_stream", "src": f"vm{i}", "dst": "wire", "duration_ms": ms}
                      for i in range(1, vfs + 1)]})


def spread(flows: list[dict], key: str) -> float:
    """The smallest share over the largest."""
    values = [f[key] for f in flows]
    return min(values) / max(values)


def wire_utilization(data: dict) -> float:
    return next(r["utilization"] for r in data["resources"] if r["name"] == "host0/pnic0/wire/tx")


@pytest.mark.parametrize("vfs", [4, 8])
def test_vfs_saturating_one_port_get_equal_shares(vfs):
    """4 and 8 VFs each offering more than the port can take: the wire is full, every VF
    gets the same share of it (within 10 %), and the shares add up to no more than the line rate."""
    data = iovirt.run(scenario(vfs)).to_dict()
    flows = data["flows"]
    assert all(f["delivered"] == f["sent"] > 0 and f["corrupted"] == f["out_of_order"] == 0 for f in flows)
    assert wire_utilization(data) >= 0.95                  # the port is the bottleneck: they do contend
    assert spread(flows, "throughput_gbps") >= 0.9
    assert spread(flows, "delivered") >= 0.9
    assert sum(f["throughput_gbps"] for f in flows) <= LINK_GBPS


def test_shares_stay_equal_over_a_longer_stream():
    """Over 5 ms the VFs' delivered counts stay within 10 % of each other (strict priority
    to the lowest queue gave VF0 twice what VF2 and VF3 got)."""
    flows = iovirt.run(scenario(4, ms=5)).to_dict()["flows"]
    assert spread(flows, "delivered") >= 0.9
    assert spread(flows, "throughput_gbps") >= 0.9


def test_a_vf_alone_still_streams_at_its_own_pace():
    """One VF with the port to itself is limited by its vCPU, not by the arbiter."""
    data = iovirt.run(scenario(1)).to_dict()
    (flow,) = data["flows"]
    assert flow["delivered"] == flow["sent"] > 0
    assert flow["throughput_gbps"] >= 0.75 * LINK_GBPS
    assert wire_utilization(data) <= 1.0


def test_a_rate_limited_vf_keeps_its_limit_and_the_others_share_the_rest():
    """The per-VF rate limiter acts on top of the round robin: the limited VF stays under its
    1000 Mbit/s, the three unlimited ones share the rest evenly."""
    flows = iovirt.run(scenario(4, ms=3, rates={1: 1000})).to_dict()["flows"]
    limited, *free = flows
    assert 0 < limited["throughput_gbps"] <= 1.0
    assert spread(free, "throughput_gbps") >= 0.9
    assert sum(f["throughput_gbps"] for f in flows) <= LINK_GBPS


def test_two_queues_behind_a_full_packet_buffer_alternate_packet_by_packet():
    """Queue 0 rings first and fills the TX packet buffer; queue 1 rings while it is full.
    From then on the engine takes one packet from each in turn until queue 0 runs dry."""
    r = rig()
    r.wr("TXPBSIZE0", 40 << 10)
    n = 100
    for q in (0, 1):
        base = TX_RING + q * 0x800
        r.tx_ring(n=128, q=q, base=base)
        for i in range(n):
            r.tx_desc(i, frame(PEER_MAC, 1500, seed=q), buf=TX_BUFS + q * 0x1000, base=base)
    r.wr("TDT0", n)
    assert r.rd("TDH0") < n                                 # the buffer filled first
    r.wr("TDT1", n)
    r.run()
    order = [f[14] for f in arrivals(r)]                    # the first payload byte names the queue
    assert sorted(order) == [0] * n + [1] * n
    first = order.index(1)
    rest = n - first                                        # queue 0's packets after queue 1's first
    assert rest > 0
    assert order[first:first + 2 * rest] == [1, 0] * rest
    assert r.rd("TDH0") == r.rd("TDH1") == n
