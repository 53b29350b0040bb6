"""VMs streaming 1500 B UDP to the host at the far end of one 10 GbE port,
through each shared model: the aggregate against the port's payload line
rate, each VM's share, the resource that limits the flows and how busy the
far end's busiest core is.  compare's sweep points: a 15 ms warm-up, then a
2 ms window."""

from __future__ import annotations

import sys

from iovirt import Scenario, run
from iovirt.experiments.compare import Config, scenario

LINE = 10 * 1472 / 1538
CONFIGS = [Config("paravirt", "virtio-net", "vhost-net"), Config("paravirt", "virtio-net", "vhost-user"),
           Config("sriov", "ixgbevf")]


def point(config: Config | None, vms: int, cores: int = 16) -> str:
    result = run(Scenario.from_dict(scenario(config, vms, 1500, 2.0, cores, False, "default"))).to_dict()
    shares = sorted(f["throughput_gbps"] for f in result["flows"])
    total = sum(shares)
    limits = sorted({f["bottleneck"]["resource"] for f in result["flows"]})
    peer = max((r["utilization"] for r in result["resources"] if r["kind"] == "peer"), default=0.0)
    label = config.label if config else "bare-metal/ixgbe"
    return (f"{label:28s} {vms:2d} VMs  {total:6.3f} Gbit/s ({total / LINE:4.0%} of line)  per VM "
            f"{shares[0]:.3f}-{shares[-1]:.3f} (min/max {shares[0] / shares[-1]:.2f})  bottleneck {', '.join(limits)}"
            f"  far end's busiest core {peer:.0%}  drops {sum(result['drops'].values())}")


if __name__ == "__main__":
    counts = [int(n) for n in sys.argv[1:]] or [1, 2, 4, 8]
    print(point(None, 1))
    for config in CONFIGS:
        for n in counts:
            print(point(config, n), flush=True)
