"""The comparison as one figure (matplotlib, PNG): throughput per VM and in
aggregate against VM count, host CPU per Gbit/s, latency.  Each model is a
colour, each packet size a line style; VM counts are plain numbers on a
log-2 axis, latency is on a log scale, throughput and CPU axes start at
zero, and the legend stands outside the panels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

STYLES = ("-", "--", ":", "-.")             # one per packet size, in the order swept


def _label(r: dict[str, Any]) -> str:
    return "/".join(x for x in (r["model"], r["device"], r["backend"]) if x) + (f"@{r['hypervisor']}"
                                                                              if r.get("hypervisor") else "")


def comparison_figure(rows: list[dict[str, Any]]) -> Figure:
    sizes = sorted({r["packet_size"] for r in rows})
    models = list(dict.fromkeys(_label(r) for r in rows if r["model"] != "bare-metal"))
    colours = {name: f"C{i % 10}" for i, name in enumerate(models)}
    fig, axes = plt.subplots(2, 2, figsize=(15, 9), layout="constrained")
    (per_vm, total), (cpu, latency) = axes
    for size, style in zip(sizes, STYLES * len(sizes)):
        for name in models:
            points = sorted((r for r in rows if _label(r) == name and r["packet_size"] == size), key=lambda r: r["vms"])
            x = [r["vms"] for r in points]
            kw = {"marker": "o", "linestyle": style, "color": colours[name], "label": f"{name}, {size} B"}
            per_vm.plot(x, [r["per_vm_gbps"] for r in points], **kw)
            total.plot(x, [r["throughput_gbps"] for r in points], **kw)
            cpu.plot(x, [r["cpu_per_gbps"] or 0 for r in points], **kw)
            p50 = [(n, r["latency_us"]["p50"]) for n, r in zip(x, points) if r["latency_us"]["p50"]]
            latency.plot([n for n, _ in p50], [v for _, v in p50], **kw)
        base = [r for r in rows if r["model"] == "bare-metal" and r["packet_size"] == size]
        if base:
            per_vm.axhline(base[0]["per_vm_gbps"], color="grey", linestyle=style, label=f"bare metal, {size} B")
    vms = sorted({r["vms"] for r in rows})
    for ax, title, unit in ((per_vm, "throughput per VM", "Gbit/s"), (total, "aggregate throughput", "Gbit/s"),
                            (cpu, "host CPU per Gbit/s", "cores per Gbit/s"), (latency, "one-way latency p50", "µs")):
        ax.set_title(title)
        ax.set_xlabel("VMs")
        ax.set_ylabel(unit)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(vms))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(n) for n in vms])
        ax.grid(True, alpha=0.3)
        if ax is not latency:
            ax.set_ylim(bottom=0)
    latency.set_yscale("log")
    handles, labels = per_vm.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    return fig


def comparison_png(rows: list[dict[str, Any]], path: Path) -> None:
    fig = comparison_figure(rows)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def run_figure(result: dict[str, Any]) -> Figure:
    """A run at a glance: each flow's throughput and latency (p50 to p99, log scale), each busy
    resource's utilization (from zero)."""
    flows = result["flows"]
    busy = [r for r in result["resources"] if r["busy_s"]]
    fig, (tput, lat, util) = plt.subplots(1, 3, figsize=(16, max(3.0, 0.3 * len(busy) + 1.5)), layout="constrained")
    names = [f"{f['workload']} {f['type']} {f['src']}→{f['dst']}" for f in flows]
    tput.barh(names, [f["throughput_gbps"] for f in flows], color="C0")
    tput.set_title("throughput")
    tput.set_xlabel("Gbit/s")
    tput.set_xlim(left=0)
    tput.invert_yaxis()
    for y, f in enumerate(flows):
        p50, p99 = f["latency_us"]["p50"], f["latency_us"]["p99"]
        if p50:
            lat.plot([p50, p99 or p50], [y, y], color="C1", marker="|", markersize=12, linewidth=3)
            lat.plot([p50], [y], "o", color="C1")
    lat.set_yticks(range(len(flows)), names)
    lat.set_ylim(len(flows) - 0.5, -0.5)
    lat.set_xscale("log")
    lat.set_title("one-way latency, p50 (dot) to p99")
    lat.set_xlabel("µs")
    util.barh([r["name"] for r in busy], [100 * r["utilization"] for r in busy], color="C2")
    util.set_title("utilization")
    util.set_xlabel("% of the window")
    util.set_xlim(0, 100)
    util.invert_yaxis()
    for ax in (tput, lat, util):
        ax.grid(True, axis="x", alpha=0.3)
    return fig
