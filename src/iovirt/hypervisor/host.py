"""A physical host: its cores, its software switch and the VMs it runs."""

from __future__ import annotations

from ..net.vswitch import VSwitch
from ..sim.engine import Sim
from ..sim.resource import Ledger, Resource
from .passthrough import HostIommu


class Host:
    def __init__(self, name: str, cores: int, sim: Sim, ledger: Ledger, iommu_page: int = 2 << 20,
                 iotlb_entries: int = 64, pml: bool = True) -> None:
        """``pml``: the CPU logs guest writes (Intel PML); without, KVM
        write-protects pages to log them (AMD, Intel before Broadwell)."""
        self.name = name
        self.pml = pml
        self.iommu_page = iommu_page
        self.iotlb_entries = iotlb_entries
        self.sim = sim
        self.ledger = ledger
        acct = ledger.account(name)
        self.cores = [Resource(f"{name}/core{i}", "host_core", ledger, acct) for i in range(cores)]
        self.vswitch = VSwitch(self)
        self._placed: dict[str, int] = {}
        self._dedicated: set[str] = set()
        self.nics: dict = {}                # physical NICs by name
        self.threads: list[Resource] = []   # the host's own kernel threads
        self._iommu = None

    @property
    def iommu(self):
        """The host's VT-d unit, set up when the first device is assigned."""
        if self._iommu is None:
            self._iommu = HostIommu(self, self.iommu_page, self.iotlb_entries)
        return self._iommu

    def kernel_thread(self, role: str) -> Resource:
        """A thread of the host kernel (a PF driver's work, say), on a core."""
        thread = Resource(f"{self.name}/{role}", "host_thread", self.ledger, self.ledger.account(self.name))
        self.place(thread)
        self.threads.append(thread)
        return thread

    def unplace(self, thread: Resource) -> None:
        """``thread`` exited: its core no longer counts it, and a core kept
        for it alone is free to share again (the time it spent stays in the results)."""
        name = thread.core.name
        self._placed[name] -= 1
        if not self._placed[name]:
            self._dedicated.discard(name)

    def place(self, thread: Resource, dedicated: bool = False) -> None:
        """Run ``thread`` on the least-loaded core (by threads placed): with
        more threads than cores, they queue for their core.  A ``dedicated``
        thread (a poll-mode core, the NIC's softirq core) gets a core no later
        thread shares, while another is left."""
        shared = [c for c in self.cores if c.name not in self._dedicated] or self.cores
        core = min(shared, key=lambda c: (self._placed.get(c.name, 0), c.name))
        self._placed[core.name] = self._placed.get(core.name, 0) + 1
        if dedicated and len(shared) > 1:
            self._dedicated.add(core.name)
        thread.core = core
