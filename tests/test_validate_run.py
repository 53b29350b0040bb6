"""What validates, runs: any scenario the schema and the wiring checks accept
runs to the end without an exception, and accounts for every frame."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.devices.registry import registry
from iovirt.experiments.scenario import ScenarioError

NICS = [("emulated", name, None) for name, entry in registry().items() if entry.kind == "emulated"] + \
       [("paravirt", "virtio-net", b) for b in ("qemu", "vhost-net", "vhost-user")] + \
       [("paravirt", "xen-netfront", None), ("passthrough", "ixgbe", None), ("sriov", "ixgbevf", None)]


@st.composite
def documents(draw) -> dict:
    hosts = [{"name": f"h{h}", "cores": draw(st.integers(1, 4)),
              "hypervisor": draw(st.sampled_from(["kvm", "kvm", "xen"])),
              "posted_interrupts": draw(st.booleans()), "iommu_page_kb": draw(st.sampled_from([4, 2048])),
              "pml": draw(st.booleans()),
              "nics": [{"name": f"p{i}", "link_gbps": draw(st.sampled_from([0.01, 1, 10, 100])),
                        "num_vfs": draw(st.integers(0, 3))} for i in range(draw(st.integers(0, 2)))]}
             for h in range(draw(st.integers(1, 2)))]
    vms = []
    for n in range(draw(st.integers(1, 3))):
        host = draw(st.sampled_from(hosts))
        xen = host["hypervisor"] == "xen"
        model, device, backend = draw(st.sampled_from([c for c in NICS if (c[1] == "xen-netfront") == xen
                                                       or c[0] == "emulated"]))
        nic = {"model": model, "device": device, "mac": f"52:54:00:00:00:{n + 1:02x}", "ip": f"10.0.0.{n + 1}/24"}
        if backend:
            nic["backend"] = backend
        if model in ("passthrough", "sriov"):
            nic["uplink"] = draw(st.sampled_from([p["name"] for p in host["nics"]] or ["p0"]))
        vms.append({"name": f"vm{n + 1}", "host": host["name"],
                    "memory_mb": draw(st.sampled_from([32, 64])), "vcpus": draw(st.integers(1, 2)),
                    "bare_metal": draw(st.booleans()) and draw(st.booleans()), "nics": [nic]})
    names = [vm["name"] for vm in vms]
    workloads = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["udp_stream", "request_response", "ping"]))
        src = draw(st.sampled_from(names))
        w = {"type": kind, "src": src, "dst": draw(st.sampled_from([n for n in names if n != src] + ["wire"])),
             "packet_size": draw(st.sampled_from([44, 64, 1499, 1500])),
             "duration_ms": draw(st.sampled_from([0.05, 0.2]))}
        if draw(st.booleans()):
            w["rate_pps"] = draw(st.sampled_from([0.1, 1000, 1e6, 1e9]))
        if kind == "ping":
            w["count"] = draw(st.integers(1, 4))
        workloads.append(w)
    return {"name": "random", "hosts": hosts, "vms": vms, "workloads": workloads}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_a_scenario_that_validates_runs_and_accounts_for_every_frame(doc):
    try:
        scenario = iovirt.Scenario.from_dict(doc)
    except ScenarioError:
        return
    result = iovirt.run(scenario).to_dict()
    for f in result["flows"]:
        assert f["sent"] == f["delivered"] + f["corrupted"] + f["dropped"] + f["in_flight"]
        assert f["dropped"] >= 0 and f["in_flight"] >= 0
