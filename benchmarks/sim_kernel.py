"""Event-kernel cost: iovirt's heapq kernel against SimPy, on the pattern the
simulator uses (a callback scheduled after a delay, N times over, with a few
concurrent chains).  Prints microseconds per event."""

from __future__ import annotations

import time

import simpy

from iovirt.sim.engine import Sim

EVENTS = 200_000
CHAINS = 8


def heapq_kernel() -> float:
    sim = Sim()
    left = [EVENTS]

    def tick(chain: int) -> None:
        if left[0] > 0:
            left[0] -= 1
            sim.after(100 + chain, tick, chain)

    for c in range(CHAINS):
        sim.after(c, tick, c)
    t = time.perf_counter()
    sim.run()
    return time.perf_counter() - t


def simpy_kernel() -> float:
    env = simpy.Environment()
    left = [EVENTS]

    def chain(c: int):
        while left[0] > 0:
            left[0] -= 1
            yield env.timeout(100 + c)

    for c in range(CHAINS):
        env.process(chain(c))
    t = time.perf_counter()
    env.run()
    return time.perf_counter() - t


if __name__ == "__main__":
    for name, fn in (("heapq (iovirt.sim.engine)", heapq_kernel), ("SimPy process + timeout", simpy_kernel)):
        best = min(fn() for _ in range(3))
        print(f"{name:28s} {best / EVENTS * 1e6:6.3f} us/event")
