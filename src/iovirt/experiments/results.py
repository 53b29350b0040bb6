"""Results of a run: per-flow figures, per-resource busy time and event
counts, as the ``run --json`` object (README, "CLI") and as pandas DataFrames."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version

from .scenario import WIRE
from .workloads import FlowStats

WIRE_PEERS = "wire peers"     # the far ends of the physical links, one owner for all


def _percentile(sorted_ns: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile in µs, to the ns; None (JSON null) without samples."""
    if not sorted_ns:
        return None
    k = min(len(sorted_ns) - 1, max(0, int(round(q * (len(sorted_ns) - 1)))))
    return round(sorted_ns[k] / 1000.0, 3)


def digest(data) -> str:
    """SHA-256 of ``data`` as canonical JSON: the same content has the same
    digest however its file was laid out (order of keys, comments, quoting)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(scenario) -> tuple[str, str]:
    """The digests a result records: of the cost profile and of the scenario (where frames are
    captured changes no figure, and is left out)."""
    return (digest(scenario.profile.spec.model_dump(mode="json")),
            digest(scenario.model_dump(mode="json", exclude={"capture"})))


def _plain(value):
    """A JSON type for what json cannot write: numpy scalars as Python ones, the rest (addresses) as text."""
    return value.item() if hasattr(value, "item") else str(value)


@dataclass
class FlowResult:
    row: dict

    @classmethod
    def of(cls, f: FlowStats, model: tuple[str, str, str | None], events: Counter, packets: int,
           dropped: int) -> "FlowResult":
        """``dropped``: the flow's frames the run's drop ledger counted; what is
        neither delivered, corrupted nor dropped was still on its way at the end."""
        lat = sorted(f.latencies_ns)
        window = (f.window[1] - f.window[0]) / 1e9
        per_packet = {k: round(v / packets, 3) for k, v in sorted(events.items())} if packets else {}
        return cls({
            "workload": f.index, "type": f.type, "src": f.src, "dst": f.dst,
            "model": model[0], "device": model[1], "backend": model[2], "packet_size": f.packet_size,
            "sent": f.sent, "delivered": f.delivered, "dropped": dropped,
            "in_flight": f.sent - f.delivered - f.corrupted - dropped,
            "corrupted": f.corrupted, "out_of_order": f.out_of_order,
            "throughput_gbps": round(f.window_bytes * 8 / window / 1e9, 6), "pps": round(f.window_frames / window, 1),
            "latency_us": {"p50": _percentile(lat, 0.5), "p99": _percentile(lat, 0.99), "max": _percentile(lat, 1.0)},
            "events_per_packet": per_packet,
            **(_tcp_figures(f, window, dropped) if f.type.startswith("tcp_") else {}),
        })


def _tcp_figures(f: FlowStats, window: float, dropped: int) -> dict:
    """A TCP flow's own: its frames in flight need no corrupted datagrams (TCP
    discards those as drops), reads whose bytes were wrong are
    ``stream_errors``; a tcp_rr flow's transactions per second."""
    out = {"in_flight": f.sent - f.delivered - dropped, "stream_errors": f.corrupted, "corrupted": 0}
    if f.type == "tcp_stream" and f.read_fit[3] > 0:
        # a stream is read in gulps of up to a 64 KB GRO packet: its rate is the slope of the least-squares
        # line through every read in the window (bytes read by then against when), not the bytes between
        # two reads, which a gulp at either end moves by up to 64 KB over the window
        out["throughput_gbps"] = round(f.read_fit[4] / f.read_fit[3] * 8, 6)
    if f.type == "tcp_rr":
        out["transactions"] = f.transactions
        out["transactions_per_s"] = round(f.window_transactions / window, 1)
    return out


def _links(world, busy: dict[str, float], window: float) -> list[dict]:
    """Each physical link, each direction: its rate, the bits it carried in
    the window (framing, preamble and gap included) and the frames lost on
    the way: out, with no far end to take them; in, at the switch port's
    buffer or the NIC that could not take them."""
    out = []
    places = world.sim.drops.places
    for host in world.hosts.values():
        for pnic in host.nics.values():
            link = pnic.link
            lost_out = places.get(f"{link.name}/lost_no_peer", 0)
            lost_in = sum(n for place, n in places.items()
                          if place.startswith((f"{link.name}/", f"{world.fabric.name}/{link.name}/"))) - lost_out
            for res, way, lost in ((link.to_peer, "out", lost_out), (link.to_nic, "in", lost_in)):
                share = busy.get(res.name, 0.0) / window
                out.append({"name": res.name, "direction": way, "gbps": link.gbps, "utilization": round(share, 4),
                            "gbits": round(share * link.gbps * window / 1e9, 6), "drops": lost})
    return out


def _bottleneck(world, f: FlowStats, resources: list[dict]) -> dict:
    """The busiest resource on the flow's path: its machines' vCPUs and
    threads, their hosts' cores, NICs and wires, and the far end if it is
    the wire; the model or the measuring side, whichever limits it.  A flow
    that lost frames at a full queue in front of a resource on its path (a
    switch port's buffer, the far end's rings) names that resource."""
    machines = [vm for name in (f.src, f.dst) if name in world.vms for vm in world.incarnations(name)]
    own = tuple(f"{vm.host.name}/{vm.name}/" for vm in machines)
    hosts = tuple(f"{vm.host.name}/" for vm in machines)
    on_path = [r for r in resources if r["name"].startswith(own)
               or r["kind"] in ("host_core", "nic", "wire") and r["name"].startswith(hosts)
               or r["kind"] == "peer" and f.dst == "wire"]
    if world.sim.drops.flows[f.index]:
        full = tuple(filter(None, map(_fed_by, world.sim.drops.places)))
        on_path = [r for r in on_path if r["name"].startswith(full)] or on_path
    top = max(on_path, key=lambda r: r["utilization"], default=None)
    return {"resource": top["name"], "utilization": top["utilization"]} if top else {}


def owners(world, flows: list[FlowStats]) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Whose each resource is: a scenario's VM (its vCPUs and threads), a
    host (its cores, NICs, wires, dom0) or the wire peers; and the flows each
    of them serves."""
    vms = {v.name: v.host for v in world.scenario.vms}
    owners = {r.name: WIRE_PEERS for peer in world.peers.values() for r in peer.resources}
    served = {}
    for r in world.resources:
        parts = r.name.split("/")
        owners.setdefault(r.name, parts[1] if len(parts) > 2 and parts[1] in vms else parts[0])
    for f in flows:
        machines = {f.src, f.dst} & vms.keys()
        for owner in machines | {vms[m] for m in machines} | ({WIRE_PEERS} if WIRE in (f.src, f.dst) else set()):
            served.setdefault(owner, []).append(f.index)
    return owners, served


def _fed_by(place: str) -> str:
    """The resource (name prefix) a queue that drops at ``place`` feeds: a
    switch port's buffer its link into the NIC, the far end's rings its cores."""
    if place.startswith("fabric/") and place.endswith("/egress-buffer"):
        return place[len("fabric/"):-len("egress-buffer")] + "rx"
    if place.endswith("/rx_missed") and place.startswith("peer-"):
        return place[:place.index("/") + 1]
    return ""


def measure(world, flows: list[FlowStats], start: float, stop: float, busy: dict[str, float],
            wall_s: float) -> tuple[dict, dict, dict[str, str], dict[str, list[int]]]:
    """What a run measured, in JSON types (the engine that ran it may be another interpreter):
    the figures, each resource's (kind, {event: ns busy}), its owner and the flows each owner
    serves.  ``busy``: each resource's busy time when the workloads stopped; utilization is
    over the workload window [start, stop]."""
    window = max(1.0, stop - start)
    accounts = world.ledger.accounts
    rows = []
    for f in flows:
        # A VM's events serve every flow it takes part in: per packet means
        # per packet delivered by all flows touching the pair.
        pair = {f.src, f.dst} & world.vms.keys()
        events = Counter()
        for vm in pair:
            events += accounts.get(vm, Counter())
            events["interrupt"] += sum(m.stats["interrupts"] for m in world.incarnations(vm))
        packets = sum(g.delivered for g in flows if pair & {g.src, g.dst})
        model = world.models[f.dst if f.src == WIRE else f.src]        # the VM's, for a stream from the wire
        rows.append(FlowResult.of(f, model, +events, packets, world.sim.drops.flows[f.index]).row)
    # a resource born after the window (a migration's target, say) was not busy in it
    resources = [{"name": r.name, "kind": r.kind, "busy_s": round(busy.get(r.name, 0.0) / 1e9, 9),
                  "utilization": round(busy.get(r.name, 0.0) / window, 4)} for r in world.resources]
    for row, f in zip(rows, flows):
        row["bottleneck"] = _bottleneck(world, f, resources)
    events = dict(sorted((k, v) for k, v in world.ledger.events.items() if v))
    events["interrupt"] = sum(vm.stats["interrupts"] for vm in world.machines)
    return ({"sim_time_s": round(window / 1e9, 9), "wall_time_s": round(wall_s, 3),
             "flows": rows, "resources": resources, "events": events, "links": _links(world, busy, window),
             "drops": world.drops(), "device_errors": world.device_errors(),
             "guest_faults": {name: g.fault for name, g in world.guests.items() if g.fault}},
            {r.name: (r.kind, dict(r.spent)) for r in world.resources}, *owners(world, flows))


class Result:
    def __init__(self, data: dict, spent: dict[str, tuple[str, dict[str, float]]] | None = None,
                 owners: dict[str, str] | None = None, served: dict[str, list[int]] | None = None) -> None:
        # Strict JSON from here on: only JSON types, and NaN or infinity is an error.
        self.data = json.loads(json.dumps(data, default=_plain, allow_nan=False))
        self.spent = spent or {}              # resource -> (kind, {event: ns busy})
        self.owners = owners or {}            # resource -> the VM, host or wire peers it belongs to
        self.served = served or {}            # VM, host or wire peers -> the flows (indices) it serves
        self.engine = None                    # the engine that ran it, when runner.run did (engines.Engine)
        if self.spent:
            self.data["explain"] = self.breakdowns()
        import pandas as pd     # here: the simulator (runner, any engine) imports this module, only results need it

        self.flows = pd.json_normalize(data["flows"], sep=".") if data["flows"] else pd.DataFrame()
        self.resources = pd.DataFrame(data["resources"])
        self.events = data["events"]

    @classmethod
    def of(cls, scenario, figures: dict, spent: dict, owners: dict[str, str],
           served: dict[str, list[int]]) -> "Result":
        """The result of a run of ``scenario`` from what :func:`measure` took of its world."""
        profile_sha256, scenario_sha256 = fingerprint(scenario)
        return cls({"scenario": scenario.name, "profile": scenario.profile.name, "iovirt": version("iovirt"),
                    "profile_sha256": profile_sha256, "scenario_sha256": scenario_sha256,
                    "scenario_spec": scenario.model_dump(mode="json", by_alias=True, exclude_defaults=True),
                    **figures}, spent, owners, served)

    def to_dict(self) -> dict:
        """The ``run --json`` object: JSON types only, missing latencies as None."""
        return self.data

    def breakdown(self, owner: str | None = None) -> dict:
        """Where the time goes: ns of busy time per delivered packet, by event
        (the mechanism) and by the kind of resource that spent it; of every
        resource (pooled), or of ``owner``'s (a VM, a host, the wire peers)
        per packet of the flows it serves.  With no packet delivered, ``ns``
        holds the busy time in total instead."""
        if owner is None:
            return _breakdown(self.spent.values(), self.data["flows"])
        return self.breakdowns().get(owner) or _breakdown([], [])

    def breakdowns(self) -> dict[str, dict]:
        """:meth:`breakdown` of each VM, host and the wire peers that spent any time, in one pass."""
        owned: dict[str, list] = {}
        for name, entry in self.spent.items():
            owned.setdefault(self.owners[name], []).append(entry)
        flows = self.data["flows"]
        return {owner: _breakdown(entries, [flows[i] for i in self.served.get(owner, [])])
                for owner, entries in owned.items() if any(any(spent.values()) for _, spent in entries)}


def _breakdown(spent, flows: list[dict]) -> dict:
    """``spent``: (kind, {event: ns}) of some resources, per packet ``flows`` delivered."""
    packets = sum(f["delivered"] for f in flows)
    table: dict[str, dict[str, float]] = {}
    for kind, events in spent:
        for event, ns in events.items():
            row = table.setdefault(event, {})
            row[kind] = row.get(kind, 0.0) + ns / (packets or 1)
    order = sorted(table, key=lambda e: -sum(table[e].values()))
    rows = {e: {k: round(v, 1) for k, v in sorted(table[e].items())} for e in order if sum(table[e].values())}
    return {"packets": packets, "ns_per_packet" if packets else "ns": rows}
