"""The fuzz campaign's short profile (the long one is ``make fuzz``): every
guest-facing surface attacked for some hundreds of examples with the host's
promises checked after each; and each check shown to catch what it is for."""

from __future__ import annotations

import random

import pytest
from fuzz_campaign import SURFACES, Arena, PciArena, Tally, _nic, run_batch

from iovirt.mem.guest_memory import PAGE_SIZE

SHORT = 300                                 # examples per surface, in two systems


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_a_short_campaign_breaks_no_promise(surface):
    tally = Tally()
    for seed in (1000, 1001):
        run_batch(surface, seed, SHORT // 2, tally)
    assert not tally.failures, "\n".join(map(str, tally.failures))
    assert tally.examples == SHORT


def attacked_by(monkeypatch, action) -> Tally:
    """A short e1000 campaign whose only guest action is ``action(arena, rng)``."""
    class Rigged(PciArena):
        def actions(self):
            return [lambda rng: action(self, rng) or "rigged"]
    monkeypatch.setitem(SURFACES, "rigged", lambda: Rigged(_nic("emulated", "e1000"), []))
    tally = Tally()
    run_batch("rigged", 0, 20, tally)
    return tally


def test_time_that_stands_still_is_a_stall(monkeypatch):
    def spin(arena: Arena, rng: random.Random) -> None:
        def again():
            arena.sim.at(arena.sim.now, again)
        arena.sim.at(arena.sim.now, again)
    assert [f.kind for f in attacked_by(monkeypatch, spin).failures] == ["stall"]


def test_a_write_into_a_bystander_outside_its_allocations_is_caught(monkeypatch):
    def stray(arena: Arena, rng: random.Random) -> None:
        arena.world.vms["vm2"].mem.write(PAGE_SIZE, b"\1")
    assert [f.kind for f in attacked_by(monkeypatch, stray).failures] == ["write"]


def test_a_canary_changed_behind_the_dirty_log_is_caught(monkeypatch):
    def hidden(arena: Arena, rng: random.Random) -> None:
        arena.world.vms["vm3"].mem.buf[arena.world.vms["vm3"].mem.size - 1] = 0
    failures = attacked_by(monkeypatch, hidden).failures
    assert [f.kind for f in failures] == ["write"] and "canary" in failures[0].detail


def test_a_corrupted_bystander_frame_is_caught(monkeypatch):
    def corrupt(arena: Arena, rng: random.Random) -> None:
        arena.victim.corrupted += 1
    assert [f.kind for f in attacked_by(monkeypatch, corrupt).failures] == ["victim"]


def test_an_exception_in_the_host_is_an_escape(monkeypatch):
    def crash(arena: Arena, rng: random.Random) -> None:
        arena.sim.at(arena.sim.now, lambda: 1 // 0)
    failures = attacked_by(monkeypatch, crash).failures
    assert [f.kind for f in failures] == ["escape"] and "ZeroDivisionError" in failures[0].detail
