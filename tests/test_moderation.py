"""Interrupt moderation as the Linux drivers run it: ixgbe and ixgbevf adapt
EITR per vector (ixgbe_set_itr: 100K, 20K or 12K interrupts/s by bytes per
interval), e1000 in its default dynamic conservative mode (20,000/s, or
4,000/s for bulk); and interrupt delivery paid on top of the guest's own
entry, so no virtualized model outruns bare metal on a stream."""

from __future__ import annotations

import pytest

import iovirt
from iovirt.experiments import runner
from iovirt.experiments.world import World
from iovirt.guest.drivers.e1000 import BULK, LOW, LOWEST
from iovirt.guest.drivers.e1000 import _next_range as e1000_range
from iovirt.net.moderation import _next_range as ixgbe_range
from iovirt.spec import e1000 as e

NICS = {"ixgbe": {"model": "passthrough", "device": "ixgbe", "uplink": "pnic0"},
        "ixgbevf": {"model": "sriov", "device": "ixgbevf", "uplink": "pnic0"},
        "e1000": {"model": "emulated", "device": "e1000"}}


def world(nic: str, workload: dict, bare: bool = False, posted: bool = False) -> tuple[World, list]:
    pnic = {"name": "pnic0", **({"num_vfs": 1} if nic == "ixgbevf" else {})}
    vms = [{"name": "vm1", "host": "h", "bare_metal": bare,
            "nics": [{**NICS[nic], "mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24"}]}]
    if nic == "e1000":
        vms.append({"name": "vm2", "host": "h", "nics": [{**NICS[nic], "mac": "52:54:00:00:00:02", "ip": "10.0.0.2/24"}]})
    w = World(iovirt.Scenario.from_dict({"name": "itr", "hosts": [{"name": "h", "cores": 8, "posted_interrupts": posted,
                                                                   "nics": [pnic, {"name": "pnic1"}]}],
                                         "vms": vms, "workloads": [{"src": "vm1", **workload}]}))
    start, stop, flows = runner.begin(w)
    w.sim.run(until=stop)                   # the moderation as the workload ends, before queues drain
    return w, flows


PING = {"type": "ping", "dst": "wire", "count": 20, "duration_ms": 2}
STREAM = {"type": "udp_stream", "dst": "wire", "duration_ms": 2}


@pytest.mark.parametrize("nic", ["ixgbe", "ixgbevf"])
def test_ixgbe_moves_to_100k_when_idle_and_12k_under_a_stream(nic):
    idle, _ = world(nic, PING)
    bulk, _ = world(nic, STREAM)
    assert idle.guests["vm1"].netdevs[0].itr == 40                 # IXGBE_100K_ITR
    assert 300 < bulk.guests["vm1"].netdevs[0].itr <= 336          # smoothed on its way to IXGBE_12K_ITR


def test_e1000_conservative_mode_keeps_20k_when_idle_and_4k_for_a_bulk_receiver():
    idle, _ = world("e1000", {**PING, "dst": "vm2"})
    bulk, _ = world("e1000", {**STREAM, "dst": "vm2"})
    assert idle.guests["vm1"].netdevs[0].itr == 20000                 # lowest_latency counts as low
    assert bulk.guests["vm1"].netdevs[0].itr == 20000                 # the sender: a few frames an interrupt
    assert bulk.guests["vm2"].netdevs[0].itr == 4000                  # the receiver: bulk
    dev = bulk.vms["vm2"].nics[0].device
    assert dev.r[e.REGS["ITR"].offset >> 2] == 1_000_000_000 // (4000 * e.ITR_UNIT_NS)


def test_the_ranges_follow_linux_thresholds():
    assert ixgbe_range(0, 11) == 1 and ixgbe_range(1, 21) == 2 and ixgbe_range(1, 10) == 0 and ixgbe_range(2, 20) == 1
    assert e1000_range(LOW, 40, 60_000) == BULK and e1000_range(LOW, 2, 100) == LOWEST
    assert e1000_range(BULK, 40, 30_000) == LOW and e1000_range(BULK, 3, 5_000) == LOW
    assert e1000_range(LOWEST, 3, 1000) == LOW and e1000_range(LOW, 0, 0) == LOW


@pytest.mark.parametrize("nic", ["ixgbe", "ixgbevf"])
@pytest.mark.parametrize("size", [64, 1500])
def test_no_assigned_device_outruns_bare_metal(nic, size):
    """With or without posted interrupts, a pass-through or SR-IOV VM streams at most as fast as the same
    NIC and driver on bare metal: every delivery path adds to the guest's own interrupt entry."""
    load = {**STREAM, "packet_size": size, "warmup_ms": 1, "duration_ms": 3}
    _, (bare,) = world("ixgbe", load, bare=True)
    for posted in (False, True):
        _, (vm,) = world(nic, load, posted=posted)
        assert vm.window_frames <= bare.window_frames


def moderated(nic: str, setting, workload: dict) -> dict:
    nics = {**NICS[nic], "mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24", "interrupt_moderation": setting}
    pnic = {"name": "pnic0", **({"num_vfs": 1} if nic == "ixgbevf" else {})}
    doc = {"name": "itr", "hosts": [{"name": "h", "cores": 8, "nics": [pnic]}],
           "vms": [{"name": "vm1", "host": "h", "nics": [nics]}], "workloads": [{"src": "vm1", "dst": "wire", **workload}]}
    return iovirt.run(iovirt.Scenario.from_dict(doc)).to_dict()["flows"][0]


RR = {"type": "request_response", "packet_size": 64, "duration_ms": 10}


@pytest.mark.parametrize("nic", ["ixgbe", "ixgbevf", "e1000"])
def test_a_fixed_rate_bounds_interrupts_and_off_interrupts_at_every_cause(nic):
    """ethtool -C / InterruptThrottleRate: at a fixed 4,000 interrupts/s a request/response
    exchange waits out the interval (no more transactions than interrupts allow); with moderation
    off every cause interrupts at once, two interrupts a transaction, sooner than adaptive on a ping."""
    slow = moderated(nic, 4000, RR)
    assert slow["pps"] <= 4000 * 1.05 and slow["latency_us"]["p50"] >= 1e6 / 4000 * 0.95
    off, adaptive = moderated(nic, "off", RR), moderated(nic, "adaptive", RR)
    assert off["events_per_packet"]["interrupt"] >= 1.9 > adaptive["events_per_packet"]["interrupt"]
    ping = {"type": "ping", "count": 10}
    assert moderated(nic, "off", ping)["latency_us"]["p50"] < moderated(nic, "adaptive", ping)["latency_us"]["p50"]


def test_a_driver_without_moderation_refuses_a_setting_and_rates_are_bounded():
    base = {"name": "itr", "hosts": [{"name": "h", "cores": 2}], "workloads": []}
    nic = {"model": "emulated", "device": "rtl8139", "mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24"}
    with pytest.raises(iovirt.ScenarioError, match=r"vms\[0\]\.nics\[0\]\.interrupt_moderation: expected 'adaptive' for rtl8139"):
        iovirt.Scenario.from_dict(base | {"vms": [{"name": "vm1", "host": "h", "nics": [nic | {"interrupt_moderation": 20000}]}]})
    e1000 = nic | {"device": "e1000"}
    with pytest.raises(iovirt.ScenarioError, match="interrupt_moderation: expected 'adaptive', 'off' or 100-100000 interrupts/s"):
        iovirt.Scenario.from_dict(base | {"vms": [{"name": "vm1", "host": "h", "nics": [e1000 | {"interrupt_moderation": 50}]}]})
    assert iovirt.Scenario.from_dict(base | {"vms": [{"name": "vm1", "host": "h", "nics": [e1000 | {"interrupt_moderation": "off"}]}]})
    unquoted = iovirt.Scenario.from_dict(base | {"vms": [{"name": "vm1", "host": "h", "nics": [e1000 | {"interrupt_moderation": False}]}]})
    assert unquoted.vms[0].nics[0].interrupt_moderation == "off"          # YAML 1.1's reading of a bare off
