"""The comparison as one figure (matplotlib, PNG): throughput per VM and in
aggregate against VM count, host CPU per Gbit/s, latency, and where each
model's packets spend their events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

def _label(r: dict[str, Any]) -> str:
    return "/".join(x for x in (r["model"], r["device"], r["backend"]) if x)


def comparison_png(rows: list[dict[str, Any]], path: Path) -> None:
    size = max(r["packet_size"] for r in rows)
    shown = [r for r in rows if r["packet_size"] == size and r["model"] != "bare-metal"]
    series: dict[str, list[dict]] = {}
    for r in shown:
        series.setdefault(_label(r), []).append(r)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (per_vm, total), (cpu, latency) = axes
    for name, points in series.items():
        points.sort(key=lambda r: r["vms"])
        x = [r["vms"] for r in points]
        per_vm.plot(x, [r["per_vm_gbps"] for r in points], marker="o", label=name)
        total.plot(x, [r["throughput_gbps"] for r in points], marker="o", label=name)
        cpu.plot(x, [r["cpu_per_gbps"] or 0 for r in points], marker="o", label=name)
        latency.plot(x, [r["latency_us"]["p50"] or 0 for r in points], marker="o", label=f"{name} p50")
    base = [r for r in rows if r["model"] == "bare-metal" and r["packet_size"] == size]
    if base:
        per_vm.axhline(base[0]["per_vm_gbps"], color="grey", linestyle="--", label="bare metal")
    for ax, title, unit in ((per_vm, "throughput per VM", "Gbit/s"), (total, "aggregate throughput", "Gbit/s"),
                            (cpu, "host CPU per Gbit/s", "cores per Gbit/s"), (latency, "one-way latency p50", "µs")):
        ax.set_title(f"{title}, {size}-byte packets")
        ax.set_xlabel("VMs")
        ax.set_ylabel(unit)
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
    per_vm.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
