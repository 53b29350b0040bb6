"""virtio-net's receive offload (GUEST_TSO4) and the host's GRO: a TCP
stream guest to guest on one host, and from the host at the far end of the
wire to a guest through the host's uplink and bridge, on each virtio
backend, with GUEST_TSO4 on and off (``offloads: {gro_hw: false}``), and
from the wire with the host uplink's GRO off too.  Gbit/s of goodput, host
cores per Gbit/s, exits per 64 KB (both VMs' guest to guest).  compare's
tcp_stream point: 16 KB writes, 8 host cores, a 15 ms warm-up, then the
window (40 ms unless given)."""

from __future__ import annotations

import sys

from iovirt import Scenario, run
from iovirt.experiments import runner
from iovirt.experiments.compare import WARMUP_MS, Config, row, scenario
from iovirt.experiments.results import Result
from iovirt.experiments.world import World

BACKENDS = ("vhost-net", "qemu", "vhost-user")


def document(backend: str, vms: int, window_ms: float, gro_hw: bool) -> dict:
    doc = scenario(Config("paravirt", "virtio-net", backend), vms, 16384, window_ms, 8, False, "default", "tcp_stream")
    for vm in doc["vms"]:
        vm["nics"][0]["offloads"] = {"gro_hw": gro_hw}
    return doc


def guest_to_guest(backend: str, window_ms: float, gro_hw: bool) -> dict:
    doc = document(backend, 2, window_ms, gro_hw)
    doc["workloads"] = [doc["workloads"][0] | {"dst": "vm1"}]
    return row({}, run(Scenario.from_dict(doc, source=doc["name"])).to_dict())


def wire_to_guest(backend: str, window_ms: float, gro_hw: bool, host_gro: bool = True) -> dict:
    doc = document(backend, 1, window_ms, gro_hw)
    doc["hosts"][0]["nics"][0]["gro"] = host_gro
    world = World(Scenario.from_dict(doc, source=doc["name"]))
    start, stop, flows = runner.begin_from_wire(world, "vm0", WARMUP_MS + window_ms, WARMUP_MS)
    return row({}, Result.of(world.scenario, *runner.settle(world, start, stop, flows, 0.0)).to_dict())


def line(label: str, r: dict) -> str:
    return (f"{label:44s} {r['throughput_gbps']:6.2f} Gbit/s  {r['cpu_per_gbps']:.3f} cores per Gbit/s  "
            f"{r['exits_per_64kb']:5.2f} exits per 64 KB")


if __name__ == "__main__":
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
    for backend in BACKENDS:
        for on in (True, False):
            print(line(f"guest to guest {backend}, GUEST_TSO4 {'on' if on else 'off'}",
                       guest_to_guest(backend, window, on)), flush=True)
        for on, gro in ((True, True), (False, True), (True, False)):
            print(line(f"wire to guest {backend}, GUEST_TSO4 {'on' if on else 'off'}"
                       f"{'' if gro else ', host GRO off'}", wire_to_guest(backend, window, on, gro)), flush=True)
