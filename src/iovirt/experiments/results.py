"""Results of a run: per-flow figures, per-resource busy time and event
counts, as the JSON object of DESIGN.md and as pandas DataFrames."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from .workloads import FlowStats


def _percentile(sorted_ns: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile in µs, to the ns; None (JSON null) without samples."""
    if not sorted_ns:
        return None
    k = min(len(sorted_ns) - 1, max(0, int(round(q * (len(sorted_ns) - 1)))))
    return round(sorted_ns[k] / 1000.0, 3)


def _plain(value):
    """A JSON type for what json cannot write: numpy scalars as Python ones, the rest (addresses) as text."""
    return value.item() if hasattr(value, "item") else str(value)


@dataclass
class FlowResult:
    row: dict

    @classmethod
    def of(cls, f: FlowStats, model: tuple[str, str, str | None], events: Counter, packets: int, start: int,
           dropped: int) -> "FlowResult":
        """``dropped``: the flow's frames the run's drop ledger counted; what is
        neither delivered, corrupted nor dropped was still on its way at the end."""
        lat = sorted(f.latencies_ns)
        window = ((f.last_delivered or start) - (f.first_sent if f.first_sent is not None else start)) / 1e9
        pps = f.delivered / window if window > 0 else 0.0
        per_packet = {k: round(v / packets, 3) for k, v in sorted(events.items())} if packets else {}
        return cls({
            "workload": f.index, "type": f.type, "src": f.src, "dst": f.dst,
            "model": model[0], "device": model[1], "backend": model[2], "packet_size": f.packet_size,
            "sent": f.sent, "delivered": f.delivered, "dropped": dropped,
            "in_flight": f.sent - f.delivered - f.corrupted - dropped,
            "corrupted": f.corrupted, "out_of_order": f.out_of_order,
            "throughput_gbps": round(pps * f.packet_size * 8 / 1e9, 6), "pps": round(pps, 1),
            "latency_us": {"p50": _percentile(lat, 0.5), "p99": _percentile(lat, 0.99), "max": _percentile(lat, 1.0)},
            "events_per_packet": per_packet,
        })


class Result:
    def __init__(self, data: dict, spent: dict[str, tuple[str, dict[str, float]]] | None = None) -> None:
        # Strict JSON from here on: only JSON types, and NaN or infinity is an error.
        self.data = json.loads(json.dumps(data, default=_plain, allow_nan=False))
        self.spent = spent or {}              # resource -> (kind, {event: ns busy})
        self.flows = pd.json_normalize(data["flows"], sep=".") if data["flows"] else pd.DataFrame()
        self.resources = pd.DataFrame(data["resources"])
        self.events = data["events"]

    @classmethod
    def collect(cls, scenario, world, flows: list[FlowStats], start: float, stop: float,
                busy: dict[str, float], wall_s: float) -> "Result":
        """``busy``: each resource's busy time when the workloads stopped;
        utilization is over the workload window [start, stop]."""
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
            rows.append(FlowResult.of(f, world.models[f.src], +events, packets, start, world.sim.drops.flows[f.index]).row)
        # a resource born after the window (a migration's target, say) was not busy in it
        resources = [{"name": r.name, "kind": r.kind, "busy_s": round(busy.get(r.name, 0.0) / 1e9, 9),
                      "utilization": round(busy.get(r.name, 0.0) / window, 4)} for r in world.resources]
        events = dict(sorted((k, v) for k, v in world.ledger.events.items() if v))
        events["interrupt"] = sum(vm.stats["interrupts"] for vm in world.machines)
        return cls({"scenario": scenario.name, "profile": scenario.profile.name,
                    "sim_time_s": round(window / 1e9, 9), "wall_time_s": round(wall_s, 3),
                    "flows": rows, "resources": resources, "events": events, "drops": world.drops(), "device_errors": world.device_errors(),
                    "guest_faults": {name: g.fault for name, g in world.guests.items() if g.fault}},
                   {r.name: (r.kind, dict(r.spent)) for r in world.resources})

    def to_dict(self) -> dict:
        """The ``run --json`` object: JSON types only, missing latencies as None."""
        return self.data

    def breakdown(self) -> dict:
        """Where the time goes: ns of busy time per delivered packet, by event
        (the mechanism) and by the kind of resource that spent it."""
        packets = sum(f["delivered"] for f in self.data["flows"]) or 1
        table: dict[str, dict[str, float]] = {}
        for kind, spent in self.spent.values():
            for event, ns in spent.items():
                row = table.setdefault(event, {})
                row[kind] = row.get(kind, 0.0) + ns / packets
        order = sorted(table, key=lambda e: -sum(table[e].values()))
        return {"packets": packets,
                "ns_per_packet": {e: {k: round(v, 1) for k, v in sorted(table[e].items())} for e in order}}
