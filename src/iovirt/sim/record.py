"""Recording every charge, for a trace or a timeline, at no cost to a run
that does not record.

:meth:`Recorder.watch` turns resources into instances of a subclass of
:class:`~iovirt.sim.resource.Resource` (same slots, so ``__class__`` can be
switched in place) whose ``charge``, ``occupy`` and ``charge_path`` call the
plain ones (those of the resource's own class, a vCPU's say) and then append one slice per event: ``(resource, event, start,
end, core)``, ``core`` being the physical core the work also occupied (None
for a resource of its own).  Resources never watched keep the plain class and
its code paths untouched.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .resource import Resource

Slice = Tuple[Resource, str, float, float, Optional[Resource]]


class _Recording(Resource):
    __slots__ = ()
    slices: List[Slice]             # set on each recorder's own subclass

    def _start(self) -> float:
        """Where the next piece of work starts (``Resource._run``'s rule)."""
        core = self.core
        return self.cursor if core is None or self.cursor > core.cursor else core.cursor

    def charge(self, event: str, n: int = 1, nbytes: int = 0, acct=None) -> float:
        start = self._start()
        end = super().charge(event, n, nbytes, acct)
        self.slices.append((self, event, start, end, self.core))
        return end

    def occupy(self, event: str, ns: float) -> float:
        start = self._start()
        end = super().occupy(event, ns)
        self.slices.append((self, event, start, end, self.core))
        return end

    def charge_path(self, path: Tuple[str, ...]) -> float:
        at = self._start()
        end = super().charge_path(path)
        for event in path:                  # one after another, as the path runs
            step = self._fixed[event]
            self.slices.append((self, event, at, min(at + step, end), self.core))
            at += step
        return end


class Recorder:
    def __init__(self) -> None:
        self.slices: List[Slice] = []
        self._classes: Dict[type, type] = {}       # a resource's class -> its recording subclass

    def watch(self, resources) -> None:
        """Record every charge of ``resources`` from now on."""
        for r in resources:
            base = type(r)
            if issubclass(base, _Recording):
                continue
            if base not in self._classes:
                self._classes[base] = type(f"Recording{base.__name__}", (_Recording, base),
                                           {"__slots__": (), "slices": self.slices})
            r.__class__ = self._classes[base]
