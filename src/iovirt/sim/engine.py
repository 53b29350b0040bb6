"""Discrete-event kernel with a nanosecond clock.

The heap holds ``(time_ns, priority, seq, callback, args)`` so that events due
at the same instant run in a deterministic order, URGENT before NORMAL (as in
SimPy's ``core.py``).  Plain tuples instead of event objects: measured at
0.22 us per event against 0.50 us for a SimPy timeout (benchmarks/sim_kernel.py).
"""

from __future__ import annotations

from heapq import heappop, heappush
from itertools import count
from typing import Any, Callable

URGENT = 0  # interrupt delivery, doorbell side effects
NORMAL = 1


class Sim:
    __slots__ = ("now", "_heap", "_seq")

    def __init__(self) -> None:
        self.now = 0
        self._heap: list[tuple] = []
        self._seq = count()

    def at(self, when: int, callback: Callable[..., Any], *args: Any, priority: int = NORMAL) -> None:
        """Run ``callback(*args)`` at absolute time ``when`` (never in the past)."""
        if when < self.now:
            when = self.now
        heappush(self._heap, (when, priority, next(self._seq), callback, args))

    def after(self, delay: int, callback: Callable[..., Any], *args: Any, priority: int = NORMAL) -> None:
        self.at(self.now + delay, callback, *args, priority=priority)

    def run(self, until: int | None = None) -> None:
        """Process events in time order; stop before the first one past ``until``."""
        heap = self._heap
        while heap:
            if until is not None and heap[0][0] > until:
                self.now = until
                return
            when, _, _, callback, args = heappop(heap)
            self.now = when
            callback(*args)
        if until is not None and until > self.now:
            self.now = until

    @property
    def pending(self) -> int:
        return len(self._heap)
