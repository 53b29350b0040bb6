"""Resources that perform work on a timeline: a vCPU, a host thread, a vhost
worker, the NIC engine, the wire.

A charge is arithmetic, not an event: the resource's cursor moves to
``max(ready, cursor)`` and then forward by the cost of the named event taken
from the cost profile.  Only hand-offs between resources go through
:class:`~iovirt.sim.engine.Sim`.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from .profile import CostProfile

Account = dict[str, int]        # event -> occurrences


class Ledger:
    """Event counters per account (one per VM, one per host) so that results
    can be attributed to the flows a VM takes part in."""

    __slots__ = ("profile", "fixed", "per_byte", "accounts")

    def __init__(self, profile: CostProfile) -> None:
        self.profile = profile
        self.fixed = profile.fixed_ns
        self.per_byte = profile.per_byte_ns
        self.accounts: dict[str, Account] = {}

    def account(self, name: str) -> Account:
        # NOTE: defaultdict, not Counter: its C-level += is ~2.5x faster per charge.
        return self.accounts.setdefault(name, defaultdict(int))

    @property
    def events(self) -> Counter[str]:
        """Totals over all accounts."""
        total: Counter[str] = Counter()
        for acct in self.accounts.values():
            total.update(acct)
        return total

    def reset(self) -> None:
        for acct in self.accounts.values():
            acct.clear()


class Resource:
    """One execution context.  ``cursor`` is the simulated time (ns) up to
    which it has work; ``busy_ns`` the total of charged work since the last
    reset; ``acct`` the account (a VM's, or the host's) its events go to."""

    __slots__ = ("name", "kind", "ledger", "cursor", "busy_ns", "acct", "core", "spent", "_fixed", "_per_byte")

    def __init__(self, name: str, kind: str, ledger: Ledger, acct: Account | None = None) -> None:
        self.name = name
        self.kind = kind
        self.ledger = ledger
        self.cursor = 0.0
        self.busy_ns = 0.0
        self.acct = ledger.account(name) if acct is None else acct
        self.core: Resource | None = None       # the physical core a thread runs on
        self.spent: dict[str, float] = defaultdict(float)    # ns of busy time by event: where the time goes
        self._fixed = ledger.fixed
        self._per_byte = ledger.per_byte

    def sync(self, ready: float) -> float:
        """Start work that becomes ready at ``ready``; returns the start time."""
        if ready > self.cursor:
            self.cursor = ready
        return self.cursor

    def charge(self, event: str, n: int = 1, nbytes: int = 0, acct: Account | None = None) -> float:
        """Perform ``n`` occurrences of ``event`` moving ``nbytes`` bytes; returns
        the cursor (completion time, ns)."""
        cost = self._fixed[event] * n
        if nbytes:
            cost += self._per_byte[event] * nbytes
        if acct is None:
            acct = self.acct
        acct[event] += n
        self.spent[event] += cost
        # NOTE: _run inlined, this is the hottest call in the simulator.
        self.busy_ns += cost
        core = self.core
        if core is None:
            cursor = self.cursor + cost
        else:
            cursor = self.cursor
            if core.cursor >= cursor:
                cursor = core.cursor
            cursor += cost
            core.busy_ns += cost
            core.cursor = cursor
        self.cursor = cursor
        return cursor

    def occupy(self, event: str, ns: float) -> float:
        """Work whose duration follows from the hardware, not the profile
        (a frame's serialisation time at the link rate)."""
        self.acct[event] += 1
        self.spent[event] += ns
        if self.core is None:                   # NOTE: _run inlined for a resource of its own (a wire)
            self.busy_ns += ns
            self.cursor += ns
            return self.cursor
        return self._run(ns)

    def _run(self, cost: float) -> float:
        """Advance by ``cost``; a thread placed on a core also waits for and
        occupies that core (threads sharing a core run one after another)."""
        self.busy_ns += cost
        core = self.core
        if core is None:
            self.cursor += cost
            return self.cursor
        start = self.cursor if self.cursor > core.cursor else core.cursor
        core.busy_ns += cost
        self.cursor = core.cursor = start + cost
        return self.cursor

    def charge_path(self, path: tuple[str, ...]) -> float:
        """One occurrence of each event of ``path`` (an exit path, say)."""
        fixed, acct, spent = self._fixed, self.acct, self.spent
        cost = 0.0
        for event in path:
            ns = fixed[event]
            cost += ns
            acct[event] += 1
            spent[event] += ns
        return self._run(cost)

    def reset(self, at: float) -> None:
        self.busy_ns = 0.0
        self.spent.clear()
        if self.cursor < at:
            self.cursor = at
