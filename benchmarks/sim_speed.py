"""Simulator speed per path: simulated frames per wall second and wall time
per simulated millisecond for a UDP stream (one core)."""

from __future__ import annotations

import time

from iovirt import Scenario, run

DURATION_MS = 50
PATHS = [("emulated", "e1000", None), ("paravirt", "virtio-net", "qemu"),
         ("paravirt", "virtio-net", "vhost-net"), ("paravirt", "virtio-net", "vhost-user"),
         ("passthrough", "ixgbe", None)]


def scenario(model: str, device: str, backend: str | None, packet_size: int) -> Scenario:
    """Two VMs on one host streaming one to the other; pass-through streams to the wire peer."""
    nic = {"model": model, "device": device} | ({"backend": backend} if backend else {})
    if model == "passthrough":
        nic["uplink"] = "pnic0"
    pairs = (1,) if model == "passthrough" else (1, 2)
    return Scenario.from_dict({
        "name": f"{device}-{backend or model}-{packet_size}",
        "hosts": [{"name": "host0", "cores": 4, "posted_interrupts": True,
                   "nics": [{"name": "pnic0", "kind": "x82599", "link_gbps": 10}]}],
        "vms": [{"name": f"vm{i}", "host": "host0",
                 "nics": [nic | {"mac": f"52:54:00:00:00:0{i}", "ip": f"10.0.0.{i}/24"}]} for i in pairs],
        "workloads": [{"type": "udp_stream", "src": "vm1", "dst": "wire" if model == "passthrough" else "vm2",
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
