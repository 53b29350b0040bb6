"""Live migration figures: rounds, downtime and total time as the guest's
dirty rate and the migration link vary, with and without PML, and the
downtime of each model (a 256 MiB VM receiving a 5 kpps UDP stream while it moves)."""

from __future__ import annotations

import time

from iovirt import Scenario
from iovirt.experiments.migrate import migrate

MODELS = [("emulated", "e1000", None, "kvm"), ("emulated", "e1000", None, "xen"),
          ("paravirt", "virtio-net", "qemu", "kvm"), ("paravirt", "virtio-net", "vhost-net", "kvm"),
          ("paravirt", "virtio-net", "vhost-user", "kvm"), ("paravirt", "xen-netfront", None, "xen")]


def scenario(model: str, device: str, backend: str | None, target: str, *, dirty: float = 0,
             link_gbps: float = 10, memory_mb: int = 256, duration_ms: float = 1500) -> Scenario:
    source = "xen" if device == "xen-netfront" else "kvm"
    nic = {"model": model, "device": device} | ({"backend": backend} if backend else {})
    workloads = [{"type": "udp_stream", "src": "vm2", "dst": "vm1", "rate_pps": 5_000, "duration_ms": duration_ms}]
    if dirty:
        workloads.append({"type": "memory_dirty", "src": "vm1", "dirty_mib_s": dirty, "working_set_mb": 64,
                          "duration_ms": duration_ms})
    return Scenario.from_dict({
        "name": f"migrate-{device}-{backend or model}",
        "hosts": [{"name": "host0", "cores": 8, "hypervisor": source, "nics": [{"name": "pnic0"}]},
                  {"name": "host1", "cores": 8, "hypervisor": target, "nics": [{"name": "pnic0"}]}],
        "vms": [{"name": f"vm{i}", "host": "host0", "memory_mb": memory_mb,
                 "nics": [nic | {"mac": f"52:54:00:00:00:0{i}", "ip": f"10.0.0.{i}/24"}]} for i in (1, 2)],
        "workloads": workloads,
        "migration": {"vm": "vm1", "to": "host1", "at_ms": 5, "link_gbps": link_gbps, "downtime_ms": 2,
                      "max_rounds": 10}})


def row(label: str, m: dict, wall: float) -> None:
    print(f"{label:34s} {m['result']:7s} {m['rounds']:3d} rounds  downtime {m['downtime_ms']:7.3f} ms  "
          f"total {m['total_time_ms']:8.2f} ms  {m['pages_sent']:7d} pages  {m['bytes_sent'] / 2**20:7.1f} MiB  "
          f"lost {m['frames_lost']:4d}  ({wall:.1f} s wall)")


if __name__ == "__main__":
    print("e1000, 256 MiB, 64 MiB working set rewritten at R MiB/s; downtime limit 2 ms, at most 10 rounds")
    for link in (1, 10, 25):
        for dirty in (0, 100, 400, 1600):
            wall = time.perf_counter()
            m = migrate(scenario("emulated", "e1000", None, "kvm", dirty=dirty, link_gbps=link)).to_dict()
            row(f"{link:2d} Gbit/s, {dirty:4d} MiB/s", m, time.perf_counter() - wall)
    print("\ndirty logging, 10 Gbit/s: Intel PML, or write protection (pml: false); the source vCPU's busy time")
    for dirty in (400, 1600):
        for pml in (True, False):
            s = scenario("emulated", "e1000", None, "kvm", dirty=dirty)
            s.hosts[0].pml = pml
            wall = time.perf_counter()
            outcome = migrate(s)
            vcpu = next(r for r in outcome.result.to_dict()["resources"] if r["name"] == "host0/vm1/vcpu0")
            row(f"{dirty:4d} MiB/s, {'PML' if pml else 'write-protect':13s}", outcome.to_dict(),
                time.perf_counter() - wall)
            print(f"{'':34s} source vCPU busy {vcpu['busy_s'] * 1e3:6.1f} ms")
    print("\nper model, 10 Gbit/s, no memory writer")
    for model, device, backend, target in MODELS:
        wall = time.perf_counter()
        m = migrate(scenario(model, device, backend, target, duration_ms=100)).to_dict()
        row(f"{device}/{backend or model} -> {target}", m, time.perf_counter() - wall)
