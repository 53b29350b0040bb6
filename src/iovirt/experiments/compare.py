"""Side by side: the same workload through each I/O model, as the number of
VMs and the packet size grow, and on each hypervisor asked for (the same VM
with the devices each offers: VMXNET3 on ESXi beside virtio-net on KVM).

Every VM on one host streams UDP (or runs ``tcp_stream`` or ``tcp_rr``) to
the host at the far end of the physical link (``dst: wire``): emulated and para-virtual VMs through the host's
bridge and its one 10 GbE port, SR-IOV VMs each on a VF of that one port,
pass-through VMs each on a port of their own (the model is exclusive).  A bare-metal machine with the same NIC and driver
is the baseline each row is compared with.  Every figure comes out of a full
run: nothing here is modelled per model.

A sweep point is plain data in and plain data out, so points run serially or
as tasks on a Dask cluster with identical results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from statistics import median

from .catalog import DEVICES
from .runner import run, run_all
from .scenario import Scenario
from .workloads import STREAM_CHUNK, TCP_MSS

LINK_GBPS = 10
WARMUP_MS = 15.0            # TX rings and qdiscs (512 + 1000 frames a VM) fill before the measured window opens
SUBNET = "10.0"
WORKLOADS = ("udp_stream", "tcp_stream", "tcp_rr")
DEFAULT_SIZES = {"udp_stream": "64,1500", "tcp_stream": "16384", "tcp_rr": "1"}
SIZE_KEY = {"udp_stream": "packet_size", "tcp_stream": "message_size", "tcp_rr": "request_size"}


@dataclass(frozen=True)
class Config:
    model: str
    device: str
    backend: str | None = None
    hypervisor: str | None = None           # the host's; None: the device's own, else KVM

    @property
    def label(self) -> str:
        return (f"{self.model}/{self.device}" + (f"/{self.backend}" if self.backend else "")
                + (f"@{self.hypervisor}" if self.hypervisor else ""))


def configs(models: Iterable[str], devices: Iterable[str] | None = None,
            hypervisors: Iterable[str] | None = None) -> list[Config]:
    """Every implemented device of ``models`` (or just ``devices``), each backend;
    with ``hypervisors``, on each of them that offers the device."""
    wanted = set(devices) if devices else None
    out = []
    for hypervisor in hypervisors or (None,):
        for model in models:
            for dev in DEVICES.values():
                if (dev.model == model and dev.implemented and (wanted is None or dev.name in wanted)
                        and (hypervisor is None or dev.offered_on(hypervisor))):
                    out += ([Config(model, dev.name, b, hypervisor) for b in dev.backends]
                            or [Config(model, dev.name, hypervisor=hypervisor)])
    return out


def _nic(config: Config, i: int, uplink: str | None) -> dict:
    nic = {"model": config.model, "device": config.device, "mac": f"52:54:00:00:{i >> 8:02x}:{i & 0xFF:02x}",
           "ip": f"{SUBNET}.{i // 250}.{i % 250 + 1}/16"}
    if config.backend:
        nic["backend"] = config.backend
    if uplink:
        nic["uplink"] = uplink
    return nic


def scenario(config: Config | None, vms: int, packet_size: int, duration_ms: float, cores: int,
             posted_interrupts: bool, profile: str, workload: str = "udp_stream", offloads: bool = True) -> dict:
    """The sweep point as a scenario document; ``config`` None is the bare-metal baseline.
    ``packet_size`` is the size ``workload`` takes: a UDP stream's packets, a TCP
    stream's messages, a TCP_RR's requests and responses.  ``offloads`` False:
    every NIC's GSO, GRO, TSO and TX and RX checksums off (``ethtool -K``)."""
    exclusive = config is None or config.model == "passthrough"
    shared_vfs = config is not None and config.model == "sriov"
    ports = vms if exclusive else 1
    host = {"name": "host0", "cores": cores, "posted_interrupts": posted_interrupts,
            "nics": [{"name": f"pnic{p}", "kind": "x82599", "link_gbps": LINK_GBPS} for p in range(ports)]}
    if shared_vfs:
        host["nics"][0]["num_vfs"] = vms
    hypervisor = config and (config.hypervisor or DEVICES[config.device].hypervisor)
    if hypervisor:
        host["hypervisor"] = hypervisor
    machines = []
    for i in range(vms):
        uplink = f"pnic{i}" if exclusive else "pnic0" if shared_vfs else None
        nic = _nic(config or Config("passthrough", "ixgbe"), i, uplink)
        if not offloads:
            nic["offloads"] = {"gso": False, "gro": False, "tso": False, "tx": False, "rx": False,
                              "gro_hw": False}
        machines.append({"name": f"vm{i}", "host": "host0", "nics": [nic]} | ({"bare_metal": True} if config is None else {}))
    sizes = {SIZE_KEY[workload]: packet_size} | ({"response_size": packet_size} if workload == "tcp_rr" else {})
    workloads = [{"type": workload, "src": f"vm{i}", "dst": "wire", **sizes,
                  "duration_ms": WARMUP_MS + duration_ms, "warmup_ms": WARMUP_MS} for i in range(vms)]
    tag = ("" if workload == "udp_stream" else f"-{workload}") + ("" if offloads else "-no-offloads")
    name = f"{config.label if config else 'bare-metal'}-{vms}vm-{packet_size}B{tag}".replace("/", "-").replace("@", "-")
    return {"name": name, "profile": profile, "hosts": [host], "vms": machines, "workloads": workloads}


def run_point(point: dict) -> dict:
    """One sweep point (a scenario document plus its labels, and the engine to run it on) to one result row."""
    result = run(Scenario.from_dict(point["scenario"], source=point["scenario"]["name"]), engine=point.get("engine", "cpython"))
    return row(point["labels"], result.to_dict())


def row(labels: dict, data: dict) -> dict:
    """A run's result (``Result.to_dict``) as a result row under ``labels``."""
    flows = data["flows"]
    delivered = sum(f["delivered"] for f in flows)
    seconds = data["sim_time_s"]
    # Streams share one window: the aggregate is the sum of what each delivered in it.
    gbps = sum(f["throughput_gbps"] for f in flows)
    per_vm = sorted(f["throughput_gbps"] for f in flows)
    busy = sum(r["busy_s"] for r in data["resources"] if r["kind"] == "host_core")
    cores = busy / seconds
    gbit = gbps * seconds
    events: dict[str, float] = {}
    for f in flows:
        for name, per in f["events_per_packet"].items():
            events[name] = events.get(name, 0.0) + per * f["delivered"]
    p50 = sorted(f["latency_us"]["p50"] for f in flows if f["latency_us"]["p50"] is not None)
    tcp = {}
    if any(f["type"] == "tcp_rr" for f in flows):
        tcp["transactions_per_s"] = round(sum(f.get("transactions_per_s", 0.0) for f in flows), 1)
    if any(f["type"] == "tcp_stream" for f in flows) and delivered:
        # data segments are full-sized (MSS 1460) but for a stream's last: exits per 64 KiB of payload
        tcp["exits_per_64kb"] = round(events.get("vm_exit", 0.0) / delivered * 65536 / TCP_MSS, 3)
    return labels | tcp | {
        "sent": sum(f["sent"] for f in flows), "delivered": delivered,
        "dropped": sum(f["dropped"] for f in flows),
        "throughput_gbps": round(gbps, 4), "per_vm_gbps": round(median(per_vm), 4),
        "per_vm_min_gbps": round(per_vm[0], 4), "per_vm_max_gbps": round(per_vm[-1], 4),
        "pps": round(sum(f["pps"] for f in flows), 1),
        "latency_us": {"p50": p50[len(p50) // 2] if p50 else None,
                       "p99": max((f["latency_us"]["p99"] or 0) for f in flows) or None},
        "host_cpu_cores": round(cores, 4),
        "cpu_per_gbps": round(busy / gbit, 4) if gbit else None,     # core-seconds per Gbit delivered
        "events_per_packet": {k: round(v / delivered, 3) for k, v in sorted(events.items())} if delivered else {},
        **{key: data[key] for key in ("profile", "iovirt", "profile_sha256", "scenario_sha256")},
    }


def points(configs: list[Config], vms: list[int], sizes: list[int], duration_ms: float, cores: int,
           posted_interrupts: bool, profile: str, engine: str = "cpython", workload: str = "udp_stream",
           offloads: bool = True) -> list[dict]:
    """Every (config, VM count, size) point, and one bare-metal baseline per size, each run on ``engine``."""
    out = []
    for size in sizes:
        out.append({"labels": {"model": "bare-metal", "device": "ixgbe", "backend": None, "hypervisor": None, "vms": 1,
                               "packet_size": size},
                    "scenario": scenario(None, 1, size, duration_ms, cores, posted_interrupts, profile, workload,
                                         offloads),
                    "engine": engine})
        for config in configs:
            for n in vms:
                labels = asdict(config) | {"vms": n, "packet_size": size}
                out.append({"labels": labels, "engine": engine,
                            "scenario": scenario(config, n, size, duration_ms, cores, posted_interrupts, profile,
                                                 workload, offloads)})
    return out


def sweep(todo: list[dict], client=None, progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every point, serially or on a Dask ``client``; rows in point order,
    each with its throughput as a fraction of bare metal at the same size.
    Every point's scenario is checked first: a bad one stops the sweep before any runs."""
    for point in todo:
        Scenario.from_dict(point["scenario"], source=point["scenario"]["name"])
    rows = run_all(run_point, todo, client, progress)
    baseline = {r["packet_size"]: r["per_vm_gbps"] for r in rows if r["model"] == "bare-metal"}
    for r in rows:
        base = baseline.get(r["packet_size"])
        r["bare_metal_fraction"] = round(r["per_vm_gbps"] / base, 4) if base else None
    return rows
