"""tcp_stream and tcp_rr through whole worlds: the byte stream checked at
the reader, the segments adding up with the drop ledger, a lossy cable
recovered by TCP, and the guests' offload switches."""

from __future__ import annotations

import pytest

from iovirt.experiments.capture import Frames, watch
from iovirt.experiments.compare import Config, WORKLOADS, run_point, scenario
from iovirt.experiments.runner import run
from iovirt.experiments.scenario import Scenario
from iovirt.experiments.workloads import BASE_PORT, flow_of

PASSTHROUGH = Config("passthrough", "ixgbe")


def stream(config=PASSTHROUGH, duration_ms=6.0, frame_error_rate=0.0, offloads=True, workload="tcp_stream",
           size=16384) -> dict:
    doc = scenario(config, 1, size, duration_ms, 8, False, "default", workload, offloads)
    doc["hosts"][0]["nics"][0]["frame_error_rate"] = frame_error_rate
    return run(Scenario.from_dict(doc, source="test")).to_dict()


def test_a_stream_over_a_lossy_cable_arrives_intact_and_slower():
    """0.1% of frames damaged on the cable: each is discarded by its
    receiver (crc_errors), TCP sends it again, the reader gets every byte in
    order, the segments add up with the ledger, and throughput falls as
    TCP's does under loss (Mathis et al. 1997: as 1/sqrt(p))."""
    clean, lossy = stream(), stream(frame_error_rate=0.001)
    f = lossy["flows"][0]
    assert f["stream_errors"] == 0
    assert lossy["drops"].get("host0/pnic0/wire/crc_errors", 0) > 0 and f["dropped"] > 0
    assert f["sent"] == f["delivered"] + f["dropped"] + f["in_flight"] and f["in_flight"] >= 0
    assert clean["flows"][0]["dropped"] == 0
    assert f["throughput_gbps"] < 0.8 * clean["flows"][0]["throughput_gbps"]


def test_an_assigned_nic_streams_tcp_near_line_rate_and_slower_without_gso():
    """With GSO and GRO the guest's stack runs once per 64 KB; without, once per segment."""
    on, off = stream(), stream(offloads=False)
    goodput = on["flows"][0]["throughput_gbps"]
    assert goodput > 9.3                                # 1460 of every 1538 bytes on the wire at 10 Gbit/s
    assert goodput <= 10 * 1460 / 1538 * 1.001
    assert off["flows"][0]["throughput_gbps"] < 0.95 * goodput


def test_tcp_rr_counts_transactions_and_their_round_trips():
    data = stream(workload="tcp_rr", size=1)
    f = data["flows"][0]
    assert f["transactions"] > 10 and f["transactions_per_s"] > 0
    assert f["latency_us"]["p50"] is not None and f["latency_us"]["p50"] > 0
    assert f["stream_errors"] == 0 and f["sent"] == f["delivered"] + f["dropped"] + f["in_flight"]


@pytest.mark.parametrize("workload", WORKLOADS)
def test_compare_rows_for_each_workload(workload):
    """A compare point of each workload: a TCP stream's exits per 64 KB, a TCP_RR's transactions per second."""
    row = run_point({"labels": {}, "scenario": scenario(Config("paravirt", "virtio-net", "vhost-net"), 1,
                                                        1 if workload == "tcp_rr" else 1500, 2.0, 8, False,
                                                        "default", workload)})
    assert ("exits_per_64kb" in row) == (workload == "tcp_stream")
    assert ("transactions_per_s" in row) == (workload == "tcp_rr")
    assert row["delivered"] > 0


def test_the_drop_ledger_tells_tcp_data_segments_by_port_and_leaves_acks_out():
    classify = flow_of(2)
    head = bytes(12) + b"\x08\x00" + bytes([0x45, 0]) + (40).to_bytes(2, "big") + bytes(5) + b"\x06" + bytes(10)
    ports = (BASE_PORT + 1).to_bytes(2, "big") + (BASE_PORT + 1).to_bytes(2, "big")
    ack = head + ports + bytes(8) + b"\x50\x10" + bytes(6)
    data = head[:16] + (41).to_bytes(2, "big") + head[18:] + ports + bytes(8) + b"\x50\x18" + bytes(6) + b"x"
    assert classify(ack) is None
    assert classify(data) == 1
    other = data[:34] + (80).to_bytes(2, "big") + (81).to_bytes(2, "big") + data[38:]
    assert classify(other) is None


@pytest.mark.parametrize("tso", [True, False])
@pytest.mark.parametrize("config", [Config("paravirt", "virtio-net", "vhost-net"),
                                    Config("paravirt", "vmxnet3", hypervisor="esxi")])
def test_tso_crosses_the_host_whole_and_the_wire_in_mtu_frames(config, tso):
    """virtio's HOST_TSO4, VMXNET3's OM_TSO: the bridge (ESXi's vSwitch)
    forwards GSO packets whole, the wire carries
    frames of at most 1514 bytes (cut by the uplink's 82599: TSO), and the guest kicks far fewer times per byte; ethtool -K tso off
    sends segments from the guest instead."""
    from iovirt.experiments import runner
    from iovirt.experiments.world import World

    doc = scenario(config, 1, 16384, 3.0, 8, False, "default", "tcp_stream")
    doc["vms"][0]["nics"][0]["offloads"] = {"tso": tso}
    world = World(Scenario.from_dict(doc, source="test"))
    bridged, wired = Frames(), Frames()
    watch(world, "host0/bridge", bridged)
    watch(world, "host0/pnic0", wired)
    start, stop, flows = runner.begin(world)
    runner.run_to(world, stop)
    bridged, wired = list(map(len, bridged)), list(map(len, wired))
    assert flows[0].delivered > 1000 and max(wired) <= 1514
    assert (max(bridged) > 1514) == tso                               # packets of several segments


@pytest.mark.parametrize("config", [Config("paravirt", "virtio-net", "vhost-net"), Config("paravirt", "xen-netfront"),
                                    Config("paravirt", "vmxnet3", hypervisor="esxi")])
def test_acks_the_uplink_nic_validated_reach_the_guest_validated(config):
    """The uplink's 82599 validates the ACKs' checksums; the bridge and the
    backend carry that to the guest (virtio's DATA_VALID with GUEST_CSUM,
    Xen's NETRXF_data_validated, VMXNET3's completion without cnc under
    UPT1_F_RXCSUM), whose stack then does not sum them; with
    ``ethtool -K rx off`` it sums every one."""
    from iovirt.experiments import runner
    from iovirt.experiments.world import World

    summed = {}
    for rx in (True, False):
        doc = scenario(config, 1, 16384, 2.0, 8, False, "default", "tcp_stream")
        doc["vms"][0]["nics"][0]["offloads"] = {"rx": rx}
        world = World(Scenario.from_dict(doc, source="test"))
        start, stop, flows = runner.begin(world)
        runner.run_to(world, stop)
        assert flows[0].delivered > 100
        acct = world.vms["vm0"].vcpus[0].acct
        summed[rx] = acct["csum"], acct["guest_stack"]
    (on, _), (off, packets) = summed[True], summed[False]
    assert off - on > 50 and off >= packets // 4
