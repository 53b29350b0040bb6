"""A loaded data centre row: 4 hosts of 16 VMs (e1000, virtio vhost-net and
SR-IOV VFs mixed), 32 unthrottled 1500 B streams (to the wire and across
hosts), request/response pairs and pings, 20 ms.  Prints every frame's fate:
per flow, sent = delivered + corrupted + dropped + in flight, and the drops
by the place that counted them."""

from __future__ import annotations

import time
from collections import Counter

from iovirt import Scenario, run

HOSTS, PER_HOST = 4, 16
MODELS = [{"model": "emulated", "device": "e1000"},
          {"model": "paravirt", "device": "virtio-net", "backend": "vhost-net"},
          {"model": "sriov", "device": "ixgbevf", "uplink": "pnic0"}]


def scenario() -> dict:
    hosts = [{"name": f"host{h}", "cores": 32, "nics": [
        {"name": "pnic0", "kind": "x82599", "link_gbps": 10, "num_vfs": PER_HOST},
        {"name": "pnic1", "kind": "x82599", "link_gbps": 10}]} for h in range(HOSTS)]
    vms = [{"name": f"vm{n}", "host": f"host{n // PER_HOST}", "memory_mb": 64,
            "nics": [{**MODELS[n % 3], "mac": f"52:54:00:00:{n >> 8:02x}:{n & 0xFF:02x}", "ip": f"10.0.{n // 200}.{n % 200 + 1}/16"}]}
           for n in range(HOSTS * PER_HOST)]
    workloads = []
    for n in range(32):                       # half to the wire, half to a VM on the next host
        dst = "wire" if n % 2 else f"vm{(n + PER_HOST) % (HOSTS * PER_HOST)}"
        workloads.append({"type": "udp_stream", "src": f"vm{n}", "dst": dst, "duration_ms": 20})
    for n in range(32, 48):
        workloads.append({"type": "request_response", "src": f"vm{n}", "dst": f"vm{n + 8}", "packet_size": 64,
                          "duration_ms": 20})
    for n in range(56, 64):
        workloads.append({"type": "ping", "src": f"vm{n}", "dst": f"vm{n - 56}", "count": 20, "duration_ms": 20})
    return {"name": "load64", "hosts": hosts, "vms": vms, "workloads": workloads}


if __name__ == "__main__":
    wall = time.perf_counter()
    result = run(Scenario.from_dict(scenario())).to_dict()
    wall = time.perf_counter() - wall
    flows = result["flows"]
    total = Counter()
    for f in flows:
        for key in ("sent", "delivered", "corrupted", "dropped", "in_flight"):
            total[key] += f[key]
    print(f"{len(flows)} flows, {wall:.0f} s wall for {result['sim_time_s'] * 1e3:.0f} ms simulated")
    print(f"sent {total['sent']:,} = delivered {total['delivered']:,} + corrupted {total['corrupted']:,}"
          f" + dropped {total['dropped']:,} + in flight {total['in_flight']:,}")
    print(f"drops by place ({sum(result['drops'].values()):,} frames, non-flow frames included):")
    for place, count in result["drops"].items():
        print(f"  {place:48s} {count:8,}")
    if result["guest_faults"]:
        print("guest faults:", result["guest_faults"])
