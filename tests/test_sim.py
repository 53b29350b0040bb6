"""The simulation core: event order, resource timelines, cost profiles."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from iovirt.sim.engine import Sim
from iovirt.sim.profile import EVENTS, ProfileError, bundled_profiles, load_profile
from iovirt.sim.resource import Ledger, Resource


def test_events_run_in_time_order_urgent_first_then_fifo():
    """Events run by time; at equal times URGENT before NORMAL, then in scheduling order."""
    sim, seen = Sim(), []
    sim.at(20, seen.append, "late")
    sim.at(10, seen.append, "n1")
    sim.at(10, seen.append, "n2")
    sim.urgent(10, seen.append, "u")
    sim.run()
    assert seen == ["u", "n1", "n2", "late"] and sim.now == 20


def test_run_until_stops_before_later_events_and_resumes():
    """run(until) leaves later events pending and sets the clock to until."""
    sim, seen = Sim(), []
    sim.at(5, seen.append, 5)
    sim.at(50, seen.append, 50)
    sim.run(until=10)
    assert seen == [5] and sim.now == 10 and sim.pending == 1
    sim.run()
    assert seen == [5, 50]


def test_events_scheduled_in_the_past_run_now():
    """A hand-off scheduled before the current time runs at the current time, not earlier."""
    sim, seen = Sim(), []
    sim.at(100, lambda: sim.at(40, lambda: seen.append(sim.now)))
    sim.run()
    assert seen == [100]


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=200))
def test_clock_never_goes_backwards(times):
    """Whatever the scheduling order, callbacks observe a non-decreasing clock."""
    sim, seen = Sim(), []
    for t in times:
        sim.at(t, lambda: seen.append(sim.now))
    sim.run()
    assert seen == sorted(seen) and len(seen) == len(times)


def ledger() -> Ledger:
    return Ledger(load_profile("default"))


def test_charges_queue_on_a_busy_resource():
    """Work ready while the resource is busy starts when it frees up; idle gaps are not busy time."""
    led = ledger()
    cpu = Resource("cpu", "vcpu", led)
    exit_ns = led.fixed["vm_exit"]
    cpu.sync(1000)
    done = cpu.charge("vm_exit")
    cpu.sync(500)                       # ready earlier than the cursor: waits
    assert cpu.charge("vm_exit") == pytest.approx(done + exit_ns)
    cpu.sync(10_000)                    # ready later: starts then
    assert cpu.charge("vm_exit") == pytest.approx(10_000 + exit_ns)
    assert cpu.busy_ns == pytest.approx(3 * exit_ns)
    assert led.events["vm_exit"] == 3


def test_copy_cost_grows_with_bytes():
    """A copy costs its fixed part plus a per-byte part from the profile's bandwidth."""
    led = ledger()
    cpu = Resource("cpu", "vcpu", led)
    small = cpu.charge("copy", nbytes=64)
    large = cpu.charge("copy", nbytes=1500) - small
    assert large - small == pytest.approx(led.per_byte["copy"] * (1500 - 64))


def test_charges_land_on_the_named_account():
    """Charges count on the resource's account unless another account is named."""
    led = ledger()
    core = Resource("core0", "host_core", led, led.account("host0"))
    core.charge("vswitch")
    core.charge("vswitch", acct=led.account("vm1"))
    assert led.accounts["host0"]["vswitch"] == 1 and led.accounts["vm1"]["vswitch"] == 1
    assert led.events["vswitch"] == 2


def test_cycles_convert_with_the_profile_clock():
    """A cost in cycles is cycles / GHz nanoseconds; a bandwidth becomes ns per byte."""
    profile = load_profile("default")
    spec = profile.spec.costs["vm_exit"]
    assert spec.unit == "cycles"
    assert profile.fixed_ns["vm_exit"] == pytest.approx(spec.value / profile.spec.cpu.ghz)
    assert profile.per_byte_ns["copy"] == pytest.approx(1 / profile.spec.costs["copy"].per_byte.value)


def test_bundled_profiles_price_every_event_with_a_source():
    """Every bundled profile has a cost, a unit and a non-empty source for every charged event."""
    for name in bundled_profiles():
        profile = load_profile(name)
        for event in EVENTS:
            assert profile.spec.costs[event].source.strip()


def test_profile_missing_an_event_is_one_clear_error(tmp_path):
    """A profile without a charged event's cost is refused, naming the event."""
    data = load_profile("default").spec.model_dump()
    del data["costs"]["eoi_exit"]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="missing eoi_exit"):
        load_profile(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["costs"]["vm_exit"].update(unit="parsecs"), "costs.vm_exit.unit"),
    (lambda d: d["costs"]["vm_exit"].pop("source"), "costs.vm_exit.source"),
    (lambda d: d["costs"]["vm_exit"].update(value=-1), "costs.vm_exit.value"),
    (lambda d: d.update(extra=1), "extra"),
])
def test_bad_profile_names_the_field(tmp_path, edit, message):
    """A malformed profile entry is reported with its path in the file."""
    data = load_profile("default").spec.model_dump()
    edit(data)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=message.replace(".", r"\.")):
        load_profile(path)
