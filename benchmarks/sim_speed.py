"""Simulator speed per path: simulated frames per wall second and wall time
per simulated millisecond for a 2-VM UDP stream (one core)."""

from __future__ import annotations

import time

from iovirt import Scenario, run

DURATION_MS = 50
PATHS = [("emulated", "e1000", None), ("paravirt", "virtio-net", "qemu"),
         ("paravirt", "virtio-net", "vhost-net"), ("paravirt", "virtio-net", "vhost-user")]


def scenario(model: str, device: str, backend: str | None, packet_size: int) -> Scenario:
    nic = {"model": model, "device": device} | ({"backend": backend} if backend else {})
    return Scenario.from_dict({
        "name": f"{device}-{backend or model}-{packet_size}",
        "hosts": [{"name": "host0", "cores": 4}],
        "vms": [{"name": f"vm{i}", "host": "host0",
                 "nics": [nic | {"mac": f"52:54:00:00:00:0{i}", "ip": f"10.0.0.{i}/24"}]} for i in (1, 2)],
        "workloads": [{"type": "udp_stream", "src": "vm1", "dst": "vm2",
                       "packet_size": packet_size, "duration_ms": DURATION_MS}],
    })


if __name__ == "__main__":
    for model, device, backend in PATHS:
        for size in (64, 1500):
            sc = scenario(model, device, backend, size)
            wall = time.perf_counter()
            result = run(sc).to_dict()
            wall = time.perf_counter() - wall
            frames = result["flows"][0]["delivered"]
            label = f"{device}/{backend}" if backend else device
            print(f"{label:22s} {size:5d} B: {frames:7d} frames in {wall:5.2f} s wall = "
                  f"{frames / wall:8.0f} simulated frames/s, {wall / result['sim_time_s']:6.1f} ms wall per simulated ms")
