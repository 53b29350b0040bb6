"""How simulator wall time grows with the number of VMs: every VM streams
to the wire peer (compare's sweep point), for each model; wall time per
simulated frame should stay flat (linear total)."""

from __future__ import annotations

import time

from iovirt import Scenario, run
from iovirt.experiments.compare import configs, scenario

MODELS = ["emulated", "paravirt", "passthrough", "sriov"]
DEVICES = ["e1000", "virtio-net", "ixgbe", "ixgbevf"]

if __name__ == "__main__":
    for config in configs(MODELS, DEVICES):
        if config.backend not in (None, "vhost-net"):
            continue
        for vms in (1, 4, 16):
            doc = scenario(config, vms, 1500, 2.0, 8, False, "default")
            wall = time.perf_counter()
            result = run(Scenario.from_dict(doc)).to_dict()
            wall = time.perf_counter() - wall
            frames = sum(f["delivered"] for f in result["flows"])
            print(f"{config.label:32s} {vms:3d} VMs: {frames:7d} frames in {wall:6.2f} s wall, "
                  f"{wall / frames * 1e6:6.1f} us wall per frame")
