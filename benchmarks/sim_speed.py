"""Simulator speed on the emulated e1000 UDP path: simulated frames per wall
second and wall time per simulated millisecond (one core)."""

from __future__ import annotations

import time

from iovirt import Scenario, run

DURATION_MS = 50


def scenario(packet_size: int) -> Scenario:
    return Scenario.from_dict({
        "name": f"e1000-udp-{packet_size}",
        "hosts": [{"name": "host0", "cores": 4}],
        "vms": [{"name": f"vm{i}", "host": "host0",
                 "nics": [{"model": "emulated", "device": "e1000",
                           "mac": f"52:54:00:00:00:0{i}", "ip": f"10.0.0.{i}/24"}]} for i in (1, 2)],
        "workloads": [{"type": "udp_stream", "src": "vm1", "dst": "vm2",
                       "packet_size": packet_size, "duration_ms": DURATION_MS}],
    })


if __name__ == "__main__":
    for size in (64, 1500):
        sc = scenario(size)
        wall = time.perf_counter()
        result = run(sc)
        wall = time.perf_counter() - wall
        flow = result.to_dict()["flows"][0]
        frames = flow["delivered"]
        print(f"e1000 udp_stream {size:5d} B: {frames:7d} frames in {wall:5.2f} s wall "
              f"= {frames / wall:8.0f} simulated frames/s, "
              f"{wall / result.to_dict()['sim_time_s']:6.1f} ms wall per simulated ms")
