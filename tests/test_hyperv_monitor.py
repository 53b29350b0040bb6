"""Hyper-V's monitored notification facility as vmbus_drv uses it: the two
monitor pages the guest names at INITIATE_CONTACT, the host's monitored
offers, a monitored channel's send setting a pending bit instead of calling
HvSignalEvent, the hypervisor's scan at the trigger group's latency, and a
hostile guest's pages and page contents."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iovirt
from iovirt.experiments.world import World
from iovirt.guest.drivers.vmbus import Vmbus
from iovirt.spec import vmbus as v

NETVSC = {"model": "paravirt", "device": "netvsc", "mac": "00:15:5d:00:00:01", "ip": "10.0.0.1/24"}


def world() -> World:
    w = World(iovirt.Scenario.from_dict({
        "name": "monitor", "profile": "default",
        "hosts": [{"name": "host0", "cores": 8, "hypervisor": "hyperv", "nics": [{"name": "pnic0"}]}],
        "vms": [{"name": "vm1", "host": "host0", "memory_mb": 256, "nics": [NETVSC]}], "workloads": []}))
    w.settle()
    return w


def deliveries(w: World) -> list[float]:
    """The times netvsp's primary channel is interrupted on its root VP from now on."""
    channel = w.hyperv["host0"].server(w.vms["vm1"]).channels[1]
    times, interrupt = [], channel.vsp.interrupt
    channel.vsp.interrupt = lambda ch: (times.append(w.sim.now), interrupt(ch))
    return times


def test_the_monitor_page_is_laid_out_as_hyperv_h_declares_it():
    """struct hv_monitor_page: trigger groups at 8, latency[4][32] at 576, parameter[4][32] at 1088, and
    with the 1984 reserved bytes after the parameters exactly one page."""
    assert (v.MONITOR_TRIGGER_GROUPS, v.MONITOR_LATENCY, v.MONITOR_PARAMETERS) == (8, 576, 1088)
    assert v.MONITOR_PARAMETERS + v.HV_MONITOR_IDS * v.HV_MONITOR_PARAMETER.size + 1984 == v.PAGE_SIZE


def test_the_host_monitors_netvsc_channels_in_the_guests_second_page():
    """The offer carries monitor_allocated and a monitor id; the host wrote the channel's connection and the
    default latency at that id in page 2 and enabled its group; page 1 (parent to child) it left alone."""
    w = world()
    bus, server = w.guests["vm1"].vmbus, w.hyperv["host0"].server(w.vms["vm1"])
    channel = bus.channels[1]
    assert channel.monitorid is not None and server.monitor == bus.monitor_pages[1]
    connection, flag, latency = v.monitor_parameter(bus.mem, bus.monitor_pages[1], channel.monitorid)
    assert (connection, flag, latency) == (server.channels[1].connection, 0, v.HV_MONITOR_DEFAULT_LATENCY)
    assert v.U32.unpack_from(bus.mem.buf, bus.monitor_pages[1])[0] >> channel.monitorid // v.HV_MONITOR_BITS & 1
    assert not any(bus.mem.read(bus.monitor_pages[0], v.PAGE_SIZE))


def test_a_monitored_send_takes_no_hypercall_and_arrives_at_the_scan():
    """vmbus_setevent on a monitored channel sets the pending bit and nothing more: no hypercall, no event
    yet; the hypervisor's scan at the next tick of the latency takes the bit and interrupts netvsp."""
    w = world()
    guest, hv = w.guests["vm1"], w.hyperv["host0"]
    channel, times = guest.vmbus.channels[1], deliveries(w)
    calls, scans = guest.vcpu.acct["hypercall"], hv.root.vm.vcpus[0].spent["hv_monitor_scan"]
    start = w.sim.now
    channel.signal()
    assert guest.vcpu.acct["hypercall"] == calls and not times
    assert v.monitor_pending(guest.mem, guest.vmbus.monitor_pages[1]) == [channel.monitorid]
    period = v.HV_MONITOR_DEFAULT_LATENCY * v.HV_MONITOR_LATENCY_UNIT_NS
    w.sim.run(until=start + 2 * period)
    tick = (start // period + 1) * period
    assert times and tick <= times[0] < tick + period
    assert hv.root.vm.vcpus[0].spent["hv_monitor_scan"] > scans
    assert not v.monitor_pending(guest.mem, guest.vmbus.monitor_pages[1])


def test_an_unmonitored_channel_signals_with_the_hypercall_at_once():
    """A channel offered without monitor_allocated keeps HvSignalEvent: one hypercall, netvsp interrupted
    without waiting for a scan, nothing pending in page 2."""
    w = world()
    guest = w.guests["vm1"]
    channel, times = guest.vmbus.channels[1], deliveries(w)
    channel.monitorid = None
    calls, start = guest.vcpu.acct["hypercall"], w.sim.now
    channel.signal()
    assert guest.vcpu.acct["hypercall"] == calls + 1
    w.sim.run(until=start + v.HV_MONITOR_DEFAULT_LATENCY * v.HV_MONITOR_LATENCY_UNIT_NS)
    assert times and times[0] < start + 5_000
    assert not v.monitor_pending(guest.mem, guest.vmbus.monitor_pages[1])


@pytest.mark.parametrize("page", ["outside memory", "unaligned", "inside memory"])
def test_monitor_pages_the_guest_does_not_own_leave_its_channels_unmonitored(monkeypatch, page):
    """INITIATE_CONTACT naming a monitor page past the guest's memory or off the page grid: counted, the
    offers carry no monitor and the guest's sends go by HvSignalEvent; the NIC works either way."""
    post = Vmbus.post

    def contact(self, message: bytes) -> None:
        if v.CHANNEL_HEADER.unpack_from(message)[0] == v.CHANNELMSG_INITIATE_CONTACT and page != "inside memory":
            fields = list(v.INITIATE_CONTACT.unpack_from(message))
            fields[-1] = self.mem.size if page == "outside memory" else fields[-1] + 8
            message = v.INITIATE_CONTACT.pack(*fields)
        post(self, message)
    monkeypatch.setattr(Vmbus, "post", contact)
    w = world()
    server, guest = w.hyperv["host0"].server(w.vms["vm1"]), w.guests["vm1"]
    bad = page != "inside memory"
    assert server.stats["monitor_page_outside_memory"] == int(bad) and (server.monitor is None) == bad
    assert (guest.vmbus.channels[1].monitorid is None) == bad
    calls = guest.vcpu.acct["hypercall"]
    guest.vmbus.channels[1].signal()
    assert guest.vcpu.acct["hypercall"] == calls + int(bad)


_WORLD: list[World] = []


def _shared() -> World:
    if not _WORLD:
        _WORLD.append(world())
    return _WORLD[0]


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.integers(0, 2**32 - 1), pending=st.lists(st.integers(0, 2**32 - 1), min_size=4, max_size=4),
       latency=st.binary(min_size=256, max_size=256), parameters=st.binary(min_size=1024, max_size=1024))
def test_whatever_the_guest_writes_in_page_2_the_scan_takes_or_ignores_it(state, pending, latency, parameters):
    """Garbage in trigger_state, the pending words, the latencies and the parameters: the scan clears the
    enabled groups' pending words and leaves the others, a bit whose parameter names no connection of
    the guest (or a flag past its port's) is counted, nothing raises and the world goes quiet."""
    w = _shared()
    hv, guest = w.hyperv["host0"], w.guests["vm1"]
    page, mem = guest.vmbus.monitor_pages[1], guest.mem
    mem.store(v.U32, page + v.MONITOR_TRIGGER_STATE, state)
    for group, word in enumerate(pending):
        mem.store(v.U32, page + v.MONITOR_TRIGGER_GROUPS + group * v.HV_MONITOR_TRIGGER_GROUP.size, word)
    mem.write(page + v.MONITOR_LATENCY, latency)
    mem.write(page + v.MONITOR_PARAMETERS, parameters)
    taken = v.monitor_pending(mem, page)
    bad = hv.stats["monitor_bad_parameter"]
    hv.monitor_kick(w.vms["vm1"])
    assert w.sim.run_bounded(w.sim.now + 0x10000 * v.HV_MONITOR_LATENCY_UNIT_NS, 200_000)
    assert not v.monitor_pending(mem, page)
    assert hv.stats["monitor_bad_parameter"] - bad <= len(taken)
    for group, word in enumerate(pending):
        left = v.U32.unpack_from(mem.buf, page + v.MONITOR_TRIGGER_GROUPS + group * v.HV_MONITOR_TRIGGER_GROUP.size)[0]
        assert left == (0 if state >> group & 1 else word)


def test_a_pending_bit_naming_no_connection_is_counted_and_signals_nothing():
    """A guest that points a parameter at a connection it does not have: the scan counts it, no VSP runs."""
    w = world()
    hv, guest = w.hyperv["host0"], w.guests["vm1"]
    page, times = guest.vmbus.monitor_pages[1], deliveries(w)
    monitorid = guest.vmbus.channels[1].monitorid
    v.monitor_arm(guest.mem, page, monitorid, 0xABCDE, 1)
    v.monitor_set_pending(guest.mem, page, monitorid)
    hv.monitor_kick(w.vms["vm1"])
    w.sim.run(until=w.sim.now + 1_000)
    assert hv.stats["monitor_bad_parameter"] == 1 and not times
