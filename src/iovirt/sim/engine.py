"""Discrete-event kernel with a nanosecond clock.

The heap holds ``(time_ns, priority, seq, callback, args)`` so that events due
at the same instant run in a deterministic order, URGENT before NORMAL (as in
SimPy's ``core.py``).  Plain tuples instead of event objects, and plain data
state (picklable, unlike SimPy's generators): see benchmarks/sim_kernel.py.
"""

from __future__ import annotations

from heapq import heappop, heappush
from itertools import count
from typing import Any, Callable

from .drops import Drops

URGENT = 0  # interrupt delivery, doorbell side effects
NORMAL = 1


class Sim:
    __slots__ = ("now", "_heap", "_seq", "drops")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple] = []
        self._seq = count()
        self.drops = Drops()              # frames discarded anywhere in this run

    def at(self, when: float, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` at absolute time ``when`` (never in the past)."""
        # NOTE: inlined push, this is called once per hand-off between resources.
        heappush(self._heap, (when if when > self.now else self.now, NORMAL, next(self._seq), callback, args))

    def urgent(self, when: float, callback: Callable[..., Any], *args: Any) -> None:
        """As :meth:`at`, ahead of NORMAL events due at the same instant."""
        heappush(self._heap, (when if when > self.now else self.now, URGENT, next(self._seq), callback, args))

    def after(self, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        heappush(self._heap, (self.now + delay, NORMAL, next(self._seq), callback, args))

    def run(self, until: float | None = None) -> None:
        """Process events in time order; stop before the first one past ``until``."""
        heap = self._heap
        limit = float("inf") if until is None else until
        while heap and heap[0][0] <= limit:
            when, _, _, callback, args = heappop(heap)
            self.now = when
            callback(*args)
        if until is not None and until > self.now:
            self.now = until

    def run_bounded(self, until: float, max_events: int) -> bool:
        """As :meth:`run` up to ``until``, but stop after ``max_events``
        events; False when events due by then remain (time stands still:
        a watchdog's view of a livelock)."""
        heap = self._heap
        for _ in range(max_events):
            if not heap or heap[0][0] > until:
                if until > self.now:
                    self.now = until
                return True
            when, _, _, callback, args = heappop(heap)
            self.now = when
            callback(*args)
        return not heap or heap[0][0] > until

    @property
    def pending(self) -> int:
        return len(self._heap)
