"""Simulator speed per path and engine: simulated frames per wall second,
simulated Gbit/s per wall second and wall seconds per simulated second for a
UDP stream at 10GbE MTU and a TCP stream (``--workload tcp_stream``) over one
simulated second, warm-up (and for PyPy its JIT's and the subprocess's)
included; the CPU seconds beside the wall seconds (this process's and the
PyPy engine's) are the figure to compare on a loaded machine; with --threshold, the shortest run PyPy is faster for, per path
(what ``--engine auto`` switches at)."""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import time

import pandas  # noqa: F401  (what a Result builds its tables with: imported before the clock starts)
from iovirt import Scenario, run
from iovirt.experiments.engines import PYPY, PYPY_MIN_SIM_MS

DURATION_MS = 1000
PACKET_SIZE = 1500
PATHS = [("emulated", "e1000", None), ("paravirt", "virtio-net", "qemu"),
         ("paravirt", "virtio-net", "vhost-net"), ("paravirt", "virtio-net", "vhost-user"),
         ("passthrough", "ixgbe", None), ("sriov", "ixgbevf", None)]
THRESHOLD_MS = (20, 50, 100, 200, 500, 1000)     # the runs --threshold tries, shortest first
WIRED = ("passthrough", "sriov")          # models whose stream goes to the wire peer through the physical NIC


def scenario(model: str, device: str, backend: str | None, packet_size: int, duration_ms: float,
             workload: str = "udp_stream") -> Scenario:
    """Two VMs on one host streaming one to the other; pass-through and SR-IOV stream to the wire peer."""
    nic = {"model": model, "device": device} | ({"backend": backend} if backend else {})
    if model in WIRED:
        nic["uplink"] = "pnic0"
    pairs = (1,) if model in WIRED else (1, 2)
    return Scenario.from_dict({
        "name": f"{device}-{backend or model}-{packet_size}",
        "hosts": [{"name": "host0", "cores": 4, "posted_interrupts": True,
                   "nics": [{"name": "pnic0", "kind": "x82599", "link_gbps": 10,
                             "num_vfs": 1 if model == "sriov" else 0}]}],
        "vms": [{"name": f"vm{i}", "host": "host0",
                 "nics": [nic | {"mac": f"52:54:00:00:00:0{i}", "ip": f"10.0.0.{i}/24"}]} for i in pairs],
        "workloads": [{"type": workload, "src": "vm1", "dst": "wire" if model in WIRED else "vm2",
                       "packet_size": packet_size, "duration_ms": duration_ms}],
    })


def cpu_seconds() -> float:
    """User and system time of this process and of the engine subprocesses it has waited for."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                          resource.RUSAGE_CHILDREN)))


def timed(sc: Scenario, engine: str) -> tuple[float, float, dict]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = run(sc, engine=engine).to_dict()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def label(device: str, backend: str | None) -> str:
    return f"{device}/{backend}" if backend else device


def speed(engines: list[str], duration_ms: float, workload: str, tries: int = 1) -> None:
    """Each path on each engine, ``tries`` times (interleaved); with more than one, the
    best and the median frames per CPU second after them: a shared machine's runs vary."""
    for model, device, backend in PATHS:
        sc = scenario(model, device, backend, PACKET_SIZE, duration_ms, workload)
        rates: dict[str, list[float]] = {engine: [] for engine in engines}
        for _ in range(tries):
            for engine in engines:
                wall, cpu, result = timed(sc, engine)
                flow = result["flows"][0]
                frames, gbits = flow["delivered"], flow["throughput_gbps"] * result["sim_time_s"]
                rates[engine].append(frames / cpu)
                print(f"{label(device, backend):22s} {workload:10s} {engine:7s}: {frames:7d} frames in "
                      f"{wall:6.2f} s wall = {frames / wall:8.0f} simulated frames/s, {gbits / wall:6.3f} simulated "
                      f"Gbit/s, {wall / result['sim_time_s']:6.1f} wall s per simulated s; {cpu:6.2f} CPU s = "
                      f"{frames / cpu:8.0f} frames/CPU s", flush=True)
        for engine, seen in rates.items():
            if tries > 1:
                print(f"{label(device, backend):22s} {workload:10s} {engine:7s}: best {max(seen):8.0f}, median "
                      f"{statistics.median(seen):8.0f} frames/CPU s over {tries} tries", flush=True)


def threshold() -> None:
    """Per path: the CPU time of each run length on both engines, and the shortest PyPy wins."""
    print(f"--engine auto takes pypy from {PYPY_MIN_SIM_MS:g} ms")
    for model, device, backend in PATHS:
        cpus = {ms: [timed(scenario(model, device, backend, PACKET_SIZE, ms), e)[1] for e in ("cpython", "pypy")]
                for ms in THRESHOLD_MS}
        wins = [ms for ms, (cpython, pypy) in cpus.items() if pypy < cpython]
        print(f"{label(device, backend):22s} " + "  ".join(f"{ms} ms: {c:.2f}/{p:.2f} s" for ms, (c, p) in cpus.items())
              + f"  -> pypy faster from {wins[0] if wins else '>' + str(THRESHOLD_MS[-1])} ms", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration-ms", type=float, default=DURATION_MS)
    parser.add_argument("--threshold", action="store_true", help="measure where --engine auto should switch")
    parser.add_argument("--workload", choices=("udp_stream", "tcp_stream"), default="udp_stream")
    parser.add_argument("--engines", default="cpython,pypy", help="the engines to run, comma-separated")
    parser.add_argument("--tries", type=int, default=1, help="runs of each path on each engine (best and median)")
    args = parser.parse_args()
    if args.threshold:
        threshold()
    else:
        found = shutil.which(PYPY) is not None
        if not found:
            print(f"{PYPY} is not installed: the cpython engine only")
        asked = args.engines.split(",")
        speed([e for e in asked if found or e != "pypy"], args.duration_ms, args.workload, args.tries)
