"""One VM on one host, each model against bare metal with the same NIC,
driver and far end: idle ping p50, request/response (netperf UDP_RR, 64 B)
transactions per second and p50, and 64 B / 1500 B streams to the wire,
without and with posted interrupts (APICv and VT-d posting).  The
bare-metal row bounds every other: a model only adds work to its path."""

from __future__ import annotations

from iovirt import Scenario, run
from iovirt.experiments.compare import Config, run_point, scenario

CONFIGS = [None, Config("passthrough", "ixgbe"), Config("sriov", "ixgbevf"),
           Config("paravirt", "virtio-net", "vhost-user"), Config("paravirt", "virtio-net", "vhost-net"),
           Config("paravirt", "virtio-net", "qemu"), Config("paravirt", "xen-netfront"),
           Config("emulated", "e1000"), Config("emulated", "rtl8139"), Config("emulated", "pcnet"),
           Config("emulated", "tulip")]
PING = {"type": "ping", "count": 20}
RR = {"type": "request_response", "packet_size": 64, "duration_ms": 20}


def _flow(config: Config | None, workload: dict, posted: bool) -> dict:
    doc = scenario(config, 1, 64, 1.0, 8, posted, "default")
    doc["workloads"] = [{"src": "vm0", "dst": "wire"} | workload]
    return run(Scenario.from_dict(doc, source=doc["name"])).to_dict()["flows"][0]


def _stream(config: Config | None, size: int, posted: bool) -> dict:
    return run_point({"labels": {}, "scenario": scenario(config, 1, size, 2.0, 8, posted, "default")})


def row(config: Config | None, posted: bool) -> str:
    ping, rr = _flow(config, PING, posted), _flow(config, RR, posted)
    small, large = _stream(config, 64, posted), _stream(config, 1500, posted)
    label = config.label if config else "bare-metal/ixgbe"
    return (f"{label:30s} ping p50 {ping['latency_us']['p50']:7.2f} us   RR {rr['pps']:8.0f}/s p50 "
            f"{rr['latency_us']['p50']:7.2f} us   64 B {small['pps'] / 1e6:5.3f} Mpps   "
            f"1500 B {large['throughput_gbps']:6.3f} Gbit/s   exits/pkt {small['events_per_packet'].get('vm_exit', 0):5.2f}")


if __name__ == "__main__":
    for posted in (False, True):
        print("posted interrupts" if posted else "no posted interrupts")
        for config in CONFIGS:
            print("  " + row(config, posted), flush=True)
