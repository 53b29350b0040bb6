"""No virtualized model beats bare metal on the same workload and measuring
side: every model adds work to the bare-metal path (exits, injections, a
backend's copies, IOMMU lookups) and none takes any away, so throughput can
only fall and latency only grow, whatever the interrupt options."""

from __future__ import annotations

import pytest

from iovirt.experiments.compare import Config, run_point, scenario
from iovirt.experiments.runner import run
from iovirt.experiments.scenario import Scenario

TCP_MESSAGE, TCP_WINDOW_MS = 16384, 20.0
# a TCP stream's rate is taken between whole reads in the window; a read is at most a 64 KB GRO packet
TCP_RESOLUTION_GBPS = 65536 * 8 / (TCP_WINDOW_MS * 1e6)
MODELS = [Config("paravirt", "virtio-net", "vhost-net"), Config("paravirt", "virtio-net", "vhost-user"),
          Config("passthrough", "ixgbe"), Config("sriov", "ixgbevf"), Config("emulated", "e1000")]


def _stream(config: Config | None, size: int, posted: bool) -> dict:
    point = {"labels": {}, "scenario": scenario(config, 1, size, 2.0, 8, posted, "default")}
    return run_point(point)


def _tcp_stream(config: Config | None, offloads: bool) -> float:
    point = {"labels": {}, "scenario": scenario(config, 1, TCP_MESSAGE, TCP_WINDOW_MS, 8, True, "default", "tcp_stream",
                                                offloads)}
    return run_point(point)["throughput_gbps"]


def _latency(config: Config | None, workload: dict, posted: bool) -> float:
    doc = scenario(config, 1, 64, 1.0, 8, posted, "default")
    doc["workloads"] = [{"src": "vm0", "dst": "wire"} | workload]
    flow = run(Scenario.from_dict(doc, source=doc["name"])).to_dict()["flows"][0]
    assert flow["delivered"] > 0
    return flow["latency_us"]["p50"]


@pytest.mark.parametrize("posted", [False, True], ids=["no-posted", "posted"])
@pytest.mark.parametrize("size", [64, 1500])
def test_no_model_streams_faster_than_bare_metal(size, posted):
    bare = _stream(None, size, posted)
    for config in MODELS:
        row = _stream(config, size, posted)
        assert row["throughput_gbps"] <= bare["throughput_gbps"], config.label


@pytest.mark.parametrize("offloads", [True, False], ids=["offloads", "no-offloads"])
def test_no_model_streams_tcp_faster_than_bare_metal(offloads):
    """With offloads the bound is the link's goodput; without them the sender's CPU, and the ACKs it
    processes, which the far end's batching sets."""
    bare = _tcp_stream(None, offloads)
    for config in MODELS:
        assert _tcp_stream(config, offloads) <= bare + TCP_RESOLUTION_GBPS, config.label


@pytest.mark.parametrize("posted", [False, True], ids=["no-posted", "posted"])
@pytest.mark.parametrize("workload", [{"type": "ping", "count": 10},
                                      {"type": "request_response", "packet_size": 64, "duration_ms": 5},
                                      {"type": "tcp_rr", "request_size": 1, "response_size": 1, "duration_ms": 5}],
                         ids=["ping", "request_response", "tcp_rr"])
def test_no_model_answers_sooner_than_bare_metal(workload, posted):
    bare = _latency(None, workload, posted)
    for config in MODELS:
        assert _latency(config, workload, posted) >= bare, config.label


def test_posted_interrupts_never_slow_device_assignment_down():
    """Posting removes the exit and the EOI exit from each interrupt; it adds nothing."""
    for config in (Config("passthrough", "ixgbe"), Config("sriov", "ixgbevf")):
        ping = {"type": "ping", "count": 10}
        assert _latency(config, ping, True) <= _latency(config, ping, False), config.label
        assert _stream(config, 64, True)["throughput_gbps"] >= _stream(config, 64, False)["throughput_gbps"]
