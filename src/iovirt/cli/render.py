"""Rich tables for the CLI, built from plain dicts (the ``run --json`` object)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.table import Table

from iovirt.experiments.catalog import Device

TOP_EVENTS = 5
COLUMN_PADDING = 3          # box.SIMPLE_HEAD: a space each side of a cell, and the column edge
TABLE_EDGE = 1


def _table(title: str, text: Sequence[str], numbers: Sequence[str] = ()) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for header in text:
        table.add_column(header)
    for header in numbers:
        table.add_column(header, justify="right")
    return table


def _latency(us: float | None) -> str:
    return "-" if us is None else f"{us:.1f}"


def devices_table(devices: Iterable[Device]) -> Table:
    table = _table("devices", ["device", "model", "emulates", "used by", "status", "backends", "offloads"])
    for d in devices:
        table.add_row(d.name, d.model, d.emulates, ", ".join(d.used_by), d.status, ", ".join(d.backends) or "-",
                      ", ".join(d.offloads) or "-")
    return table


def flows_table(result: dict[str, Any]) -> Table:
    table = _table(f"{result['scenario']}: {result['sim_time_s']} s simulated in {result['wall_time_s']:.2f} s",
                   ["workload", "type", "src→dst", "model/device"],
                   ["size", "sent", "delivered", "dropped", "in flight", "corrupted", "out of order", "Gbit/s",
                    "pps", "p50 µs", "p99 µs", "bottleneck"])
    for f in result["flows"]:
        device = f"{f['model']}/{f['device']}" + (f" ({f['backend']})" if f.get("backend") else "")
        limit = f.get("bottleneck") or {}
        table.add_row(str(f["workload"]), f["type"], f"{f['src']}→{f['dst']}", device, str(f["packet_size"]),
                      *(str(f.get(key, "-")) for key in ("sent", "delivered", "dropped", "in_flight", "corrupted",
                                                         "out_of_order")),
                      f"{f['throughput_gbps']:.3f}", f"{f['pps']:,.0f}",
                      _latency(f["latency_us"]["p50"]), _latency(f["latency_us"]["p99"]),
                      f"{limit['resource']} {limit['utilization']:.0%}" if limit else "-")
    return table


def resources_table(result: dict[str, Any]) -> Table:
    table = _table("resources (the far end's idle cores left out)", ["resource", "kind"], ["busy ms", "utilization"])
    for r in result["resources"]:
        if r["kind"] == "peer" and not r["busy_s"]:
            continue
        table.add_row(r["name"], r["kind"], f"{r['busy_s'] * 1e3:.3f}", f"{r['utilization']:.1%}")
    return table


def events_table(result: dict[str, Any]) -> Table:
    table = _table("events", ["workload", f"top {TOP_EVENTS} events per packet"])
    for f in result["flows"]:
        top = sorted(f["events_per_packet"].items(), key=lambda item: -item[1])[:TOP_EVENTS]
        table.add_row(str(f["workload"]), "  ".join(f"{event} {count:.2f}" for event, count in top))
    return table


def drops_table(result: dict[str, Any]) -> Table:
    table = _table("frames lost, by where", ["where"], ["frames"])
    for where, count in result.get("drops", {}).items():
        table.add_row(where, str(count))
    return table


def links_table(result: dict[str, Any]) -> Table:
    table = _table("physical links in the window", ["link", "direction"], ["Gbit/s", "utilization", "frames lost"])
    for link in result.get("links", []):
        table.add_row(link["name"], link["direction"], f"{link['gbps']:g}", f"{link['utilization']:.1%}",
                      str(link["drops"]))
    return table


def faults_table(result: dict[str, Any]) -> Table:
    table = _table("guests stopped by a fault of their own", ["machine", "fault"])
    for machine, fault in result.get("guest_faults", {}).items():
        table.add_row(machine, fault)
    return table


def result_tables(result: dict[str, Any]) -> list[Table]:
    tables = [flows_table(result), resources_table(result), events_table(result)]
    tables += [links_table(result)] if result.get("links") else []
    tables += [drops_table(result)] if result.get("drops") else []
    return tables + [faults_table(result)] if result.get("guest_faults") else tables


def migration_table(m: dict[str, Any]) -> Table:
    table = _table(f"migrate {m['vm']}: {m['from']} → {m['to']} ({m['model']})", ["result", "reason"],
                   ["downtime ms", "total ms", "rounds", "pages sent", "zero pages", "MB sent", "state KB",
                    "frames lost", "on standby ms"])
    standby = "-" if m["standby_ms"] is None else f"{m['standby_ms']:.3f}"
    table.add_row(m["result"], m["reason"] or "-", f"{m['downtime_ms']:.3f}", f"{m['total_time_ms']:.3f}",
                  str(m["rounds"]), str(m["pages_sent"]), str(m["zero_pages"]), f"{m['bytes_sent'] / 1e6:.2f}",
                  f"{m['state_bytes'] / 1e3:.1f}", str(m["frames_lost"]), standby)
    return table


def matrix_table(name: str, rows: list[dict[str, Any]]) -> Table:
    table = _table(f"{name}: live migration", ["vm", "from", "to", "result", "why not"])
    for r in rows:
        table.add_row(r["vm"], r["from"], r["to"], r["result"], r["reason"] or "-")
    return table


_COMPARED = {None: "UDP streams", "exits_per_64kb": "TCP streams", "transactions_per_s": "TCP_RR transactions"}


def compare_table(rows: list[dict[str, Any]]) -> Table:
    """A TCP stream's rows add exits per 64 KB of payload, a TCP_RR's transactions per second; with
    --hypervisors, a column for them."""
    extra = next((key for key in ("exits_per_64kb", "transactions_per_s") if rows and key in rows[0]), None)
    hypervisors = any(r.get("hypervisor") for r in rows)
    table = _table(f"compare: {_COMPARED[extra]} from every VM to the wire peer",
                   ["model", "device", "backend", *(("hypervisor",) if hypervisors else ())],
                   ["VMs", "size", "Gbit/s", "per VM min", "median", "max", "of bare metal", "host cores", "cores/Gbit",
                    "p50 µs", "p99 µs", "exits/pkt"] + {None: [], "exits_per_64kb": ["exits/64KB"],
                                                        "transactions_per_s": ["trans/s"]}[extra])
    for r in rows:
        fraction = r.get("bare_metal_fraction")
        table.add_row(r["model"], r["device"], r["backend"] or "-",
                      *((r.get("hypervisor") or "-",) if hypervisors else ()), str(r["vms"]), str(r["packet_size"]),
                      f"{r['throughput_gbps']:.3f}", f"{r['per_vm_min_gbps']:.3f}", f"{r['per_vm_gbps']:.3f}",
                      f"{r['per_vm_max_gbps']:.3f}",
                      "-" if fraction is None else f"{fraction:.0%}", f"{r['host_cpu_cores']:.2f}",
                      "-" if r["cpu_per_gbps"] is None else f"{r['cpu_per_gbps']:.3f}",
                      _latency(r["latency_us"]["p50"]), _latency(r["latency_us"]["p99"]),
                      f"{r['events_per_packet'].get('vm_exit', 0):.2f}",
                      *([f"{r.get(extra, 0):,.1f}"] if extra else []))
    return table


def _pct(change: float | None) -> str:
    return "-" if change is None else f"{change:+.1f}"


def sensitivity_table(result: dict[str, Any]) -> list[Any]:
    """One row per cost and flow that moved, biggest change first; then the costs that moved nothing."""
    f = result["factor"]
    table = _table(f"{result['scenario']}: each cost of profile {result['profile']} at x{1 - f:g} / x{1 + f:g} "
                   "(% change of the flow's figure)", ["cost", "flow"],
                   ["base Gbit/s", "Gbit/s %", "base p50 µs", "p50 %", "base cores per Gbit/s", "cores/Gbit/s %"])
    for row in result["rows"]:
        cells = []
        for figure, digits in (("throughput_gbps", 3), ("p50_us", 1), ("cpu_per_gbps", 3)):
            v = row["figures"][figure]
            cells += ["-" if v["base"] is None else f"{v['base']:.{digits}f}",
                      f"{_pct(v['low_pct'])} / {_pct(v['high_pct'])}"]
        table.add_row(row["cost"], row["flow"], *cells)
    return [table, f"moved nothing: {', '.join(result['unaffected']) or '-'}"]


def breakdown_table(name: str, breakdown: dict[str, Any]) -> Table:
    packets = breakdown["packets"]
    rows = breakdown["ns_per_packet"] if packets else breakdown["ns"]
    kinds = sorted({kind for row in rows.values() for kind in row})
    what = (f"ns of busy time per delivered packet ({packets} packet{'s' * (packets != 1)})" if packets else
            "no packet delivered: ns of busy time in total")
    table = _table(f"{name}: {what}", ["event"], [*kinds, "total"])
    totals = dict.fromkeys(kinds, 0.0)
    for event, row in rows.items():
        for kind, ns in row.items():
            totals[kind] += ns
        table.add_row(event, *(f"{row.get(k, 0):,.0f}" for k in kinds), f"{sum(row.values()):,.0f}")
    table.add_row("total", *(f"{totals[k]:,.0f}" for k in kinds), f"{sum(totals.values()):,.0f}", style="bold")
    return table


def profile_table(profile) -> Table:
    spec = profile.spec
    table = _table(f"profile {spec.name}: {spec.cpu.model}, {spec.cpu.ghz} GHz", ["event", "value"],
                   ["ns", "ns/byte"])
    table.add_column("source", overflow="fold")
    for event, cost in spec.costs.items():
        value = f"{cost.value:g} {cost.unit}" + (f" + {cost.per_byte.value:g} {cost.per_byte.unit}" if cost.per_byte else "")
        per_byte = profile.per_byte_ns[event]
        table.add_row(event, value, f"{profile.fixed_ns[event]:.1f}", f"{per_byte:.3f}" if per_byte else "-",
                      cost.source)
    return table


def claims_table(claims) -> Table:
    table = _table("claims about the four models, tested", ["model", "claim", "verdict"])
    table.add_column("evidence", overflow="fold")
    styles = {"holds": "green", "fails": "red"}
    for c in claims:
        table.add_row(c.model, c.claim, f"[{styles[c.verdict]}]{c.verdict}[/]", c.evidence)
    return table


def _width(column) -> int:
    """What a column needs not to cut any cell: its widest cell, or its header (a number column's
    whole, a text column's longest word)."""
    header = str(column.header)
    words = [header] if column.justify == "right" else header.split()
    return max(cell_len(str(c)) for c in [*column._cells, *words]) + COLUMN_PADDING


def fit(renderables: Iterable[Any], width: int) -> list[Any]:
    """Tables folded to ``width`` columns: a table too wide is split into several, each repeating its
    text columns (the row's name) with as many of the number columns as fit, so no number is cut;
    anything else as it is."""
    out: list[Any] = []
    for r in renderables:
        if not isinstance(r, Table) or sum(_width(c) for c in r.columns) + TABLE_EDGE <= width:
            out.append(r)
            continue
        keys = [c for c in r.columns if c.justify != "right"]
        numbers = [c for c in r.columns if c.justify == "right"]
        room = max(1, width - TABLE_EDGE - sum(_width(c) for c in keys))
        parts: list[list] = [[]]
        for c in numbers:
            if parts[-1] and sum(_width(n) for n in parts[-1]) + _width(c) > room:
                parts.append([])
            parts[-1].append(c)
        for i, part in enumerate(parts):
            title = r.title if i == 0 else f"{r.title or ''} (continued)"
            table = Table(title=title, box=r.box)
            for c in [*keys, *part]:
                table.add_column(c.header, justify=c.justify, overflow="fold", no_wrap=c.justify == "right")
            for row in zip(*(c._cells for c in [*keys, *part])):
                table.add_row(*row)
            out.append(table)
    return out
