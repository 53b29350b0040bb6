"""Live migration figures: a 1 GiB VM of each model that migrates, at three
dirty rates and two sizes of resident image (downtime, total time, pages
sent); then rounds, downtime and total time of a 256 MiB e1000 VM as the
dirty rate and the migration link vary, with and without PML.  The moving
VM (vm1) receives a 5 kpps UDP stream from vm2 on the same host throughout;
a failover VM sends it instead (received frames would keep arriving at its
old port, which no longer has the VF, until the guest sends)."""

from __future__ import annotations

import time

from iovirt import Scenario
from iovirt.experiments.migrate import migrate
from iovirt.experiments.scenario import BOOTED_LINUX_RESIDENT_MB

E1000 = [{"model": "emulated", "device": "e1000"}]
# (label, vm1's NICs, source and target hypervisor)
MODELS = [("e1000 (KVM)", E1000, "kvm"), ("e1000 (Xen HVM)", E1000, "xen"),
          ("virtio-net vhost-net", [{"model": "paravirt", "device": "virtio-net", "backend": "vhost-net"}], "kvm"),
          ("Xen PV netfront", [{"model": "paravirt", "device": "xen-netfront"}], "xen"),
          ("SR-IOV VF + failover", [{"model": "sriov", "device": "ixgbevf", "uplink": "pnic0"},
                                    {"model": "paravirt", "device": "virtio-net", "backend": "vhost-net",
                                     "standby": True}], "kvm")]
DIRTY_RATES = (50, 200, 800)                        # MiB/s over a 64 MiB working set
RESIDENT = (BOOTED_LINUX_RESIDENT_MB, 512)


def scenario(nics: list[dict], hypervisor: str, *, dirty: float = 0, link_gbps: float = 10, memory_mb: int = 256,
             resident_mb: int | None = None, duration_ms: float = 1500) -> Scenario:
    addressed = [nic | {"mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24"} for nic in nics]
    peer = (nics if nics[0]["model"] != "sriov" else E1000)[0] | {"mac": "52:54:00:00:00:02", "ip": "10.0.0.2/24"}
    vfs = nics[0]["model"] == "sriov"
    src, dst = ("vm1", "vm2") if vfs else ("vm2", "vm1")
    workloads = [{"type": "udp_stream", "src": src, "dst": dst, "rate_pps": 5_000, "duration_ms": duration_ms}]
    if dirty:
        workloads.append({"type": "memory_dirty", "src": "vm1", "dirty_mib_s": dirty, "working_set_mb": 64,
                          "duration_ms": duration_ms})
    ports = [{"name": "pnic0", "num_vfs": 4}, {"name": "pnic1"}] if vfs else [{"name": "pnic0"}]
    resident = {} if resident_mb is None else {"resident_mb": resident_mb}
    return Scenario.from_dict({
        "name": "migrate",
        "hosts": [{"name": f"host{i}", "cores": 8, "hypervisor": hypervisor, "nics": ports} for i in (0, 1)],
        "vms": [{"name": "vm1", "host": "host0", "memory_mb": memory_mb, **resident, "nics": addressed},
                {"name": "vm2", "host": "host0", "memory_mb": 256, "nics": [peer]}],
        "workloads": workloads,
        "migration": {"vm": "vm1", "to": "host1", "at_ms": 5, "link_gbps": link_gbps, "downtime_ms": 2,
                      "max_rounds": 10}})


def row(label: str, m: dict, wall: float) -> None:
    print(f"{label:36s} {m['result']:7s} {m['rounds']:3d} rounds  downtime {m['downtime_ms']:7.3f} ms  "
          f"total {m['total_time_ms']:8.2f} ms  {m['pages_sent']:7d} pages ({m['pages_sent'] - m['zero_pages']:6d} "
          f"normal)  state {m['state_bytes'] / 1024:6.1f} KiB  lost {m['frames_lost']:4d}  ({wall:.1f} s wall)")


def run(label: str, s: Scenario) -> dict:
    wall = time.perf_counter()
    outcome = migrate(s)
    row(label, outcome.to_dict(), time.perf_counter() - wall)
    return outcome


if __name__ == "__main__":
    for resident in RESIDENT:
        print(f"1 GiB VM, resident_mb {resident}, 64 MiB working set rewritten at R MiB/s; 10 Gbit/s, "
              f"downtime limit 2 ms, at most 10 rounds")
        for label, nics, hypervisor in MODELS:
            for dirty in DIRTY_RATES:
                run(f"{label}, {dirty:3d} MiB/s", scenario(nics, hypervisor, dirty=dirty, memory_mb=1024,
                                                           resident_mb=resident))
        print()
    print("e1000, 256 MiB, 64 MiB working set rewritten at R MiB/s; downtime limit 2 ms, at most 10 rounds")
    for link in (1, 10, 25):
        for dirty in (0, 100, 400, 1600):
            run(f"{link:2d} Gbit/s, {dirty:4d} MiB/s", scenario(E1000, "kvm", dirty=dirty, link_gbps=link))
    print("\ndirty logging, 10 Gbit/s: Intel PML, or write protection (pml: false); the source vCPU's busy time")
    for dirty in (400, 1600):
        for pml in (True, False):
            s = scenario(E1000, "kvm", dirty=dirty)
            s.hosts[0].pml = pml
            outcome = run(f"{dirty:4d} MiB/s, {'PML' if pml else 'write-protect':13s}", s)
            vcpu = next(r for r in outcome.result.to_dict()["resources"] if r["name"] == "host0/vm1/vcpu0")
            print(f"{'':36s} source vCPU busy {vcpu['busy_s'] * 1e3:6.1f} ms")
