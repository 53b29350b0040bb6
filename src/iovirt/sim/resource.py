"""Resources that perform work on a timeline: a vCPU, a host thread, a vhost
worker, the NIC engine, the wire.

A charge is arithmetic, not an event: the resource's cursor moves to
``max(ready, cursor)`` and then forward by the cost of the named event taken
from the cost profile.  Only hand-offs between resources go through
:class:`~iovirt.sim.engine.Sim`.
"""

from __future__ import annotations

from collections import Counter

from .profile import CostProfile


class Ledger:
    """Per-event counters for the whole run, plus per-account counters (one per
    VM) so that results can be attributed to the flows a VM takes part in."""

    __slots__ = ("profile", "fixed", "per_byte", "events", "accounts")

    def __init__(self, profile: CostProfile) -> None:
        self.profile = profile
        self.fixed = profile.fixed_ns
        self.per_byte = profile.per_byte_ns
        self.events: Counter[str] = Counter()
        self.accounts: dict[str, Counter[str]] = {}

    def account(self, name: str) -> Counter[str]:
        return self.accounts.setdefault(name, Counter())

    def reset(self) -> None:
        self.events.clear()
        for acct in self.accounts.values():
            acct.clear()


class Resource:
    """One execution context.  ``cursor`` is the simulated time up to which it
    has work; ``busy_ns`` the total of charged work since the last reset."""

    __slots__ = ("name", "kind", "ledger", "cursor", "busy_ns", "acct", "_fixed", "_per_byte", "_events")

    def __init__(self, name: str, kind: str, ledger: Ledger, acct: Counter[str] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.ledger = ledger
        self.cursor = 0
        self.busy_ns = 0.0
        self.acct = acct
        self._fixed = ledger.fixed
        self._per_byte = ledger.per_byte
        self._events = ledger.events

    def sync(self, ready: int) -> int:
        """Start work that becomes ready at ``ready``; returns the start time."""
        if ready > self.cursor:
            self.cursor = ready
        return self.cursor

    def charge(self, event: str, n: int = 1, nbytes: int = 0, acct: Counter[str] | None = None) -> int:
        """Perform ``n`` occurrences of ``event`` moving ``nbytes`` bytes; returns
        the cursor (completion time, ns)."""
        cost = self._fixed[event] * n
        if nbytes:
            cost += self._per_byte[event] * nbytes
        self.busy_ns += cost
        self.cursor += int(cost + 0.5)
        self._events[event] += n
        acct = acct if acct is not None else self.acct
        if acct is not None:
            acct[event] += n
        return self.cursor

    @property
    def now(self) -> int:
        return self.cursor

    def reset(self, at: int) -> None:
        self.busy_ns = 0.0
        if self.cursor < at:
            self.cursor = at
