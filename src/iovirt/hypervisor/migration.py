"""Live migration between two hosts: pre-copy, as QEMU's migration/ram.c.

1. Dirty logging starts; round 1 sends every page, each later round the
   pages dirtied meanwhile (``VM.take_dirty``: guest stores through the
   CPU's page-modification log, which the guest pays for in exits; device
   DMA and backend threads' writes through the VMM's log).
2. When a round ends and what is left would cross within the downtime
   limit at the bandwidth the round achieved (or the rounds run out), the
   VM stops; the last dirty pages, the vCPUs' and the platform's save
   records (``cpustate``) and every device's state (``devices.vmstate``)
   cross while nothing runs; ``switch_over`` then builds the target VM on
   that memory, loads the state and resumes the guest there.
3. A migration link that fails aborts it: the source VM runs on (resumed if
   it was stopped) and the target keeps nothing.

Zero pages cost their header only (``RAM_SAVE_FLAG_ZERO``).  The migration
thread on the source pays ``migration_page`` per page and a ``copy`` of each
normal page into the socket, the incoming thread on the target a ``copy`` out
of it.  The vCPU state is fetched record by record (a ``copy`` for each
ioctl on KVM; on Xen a ``hypercall`` and a ``copy`` for each domctl) and
loaded the same way on the target.  The link serialises the bytes at its
rate (``wire_tx``) while the sender prepares the next burst, so rounds,
downtime and total time follow from the dirty rate, the link and the
threads' cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..devices.vmstate import StateError, check_state, migration_blocker, save_state
from ..mem.guest_memory import PAGE_SHIFT, PAGE_SIZE, GuestMemory
from ..sim.resource import Ledger, Resource
from . import cpustate
from .vm import VM

PAGE_HEADER = 8             # be64 offset | RAM_SAVE_FLAG_* before each page
BURST_PAGES = 256           # pages per socket write; the guest runs between bursts
ZERO_PAGE = bytes(PAGE_SIZE)


@dataclass
class MigrationReport:
    vm: str
    source: str
    target: str
    model: str
    result: str = "running"             # then ok | blocked | failed
    reason: str = ""
    started_ns: float = 0.0
    stopped_ns: float | None = None     # the VM stopped on the source
    resumed_ns: float | None = None     # ... and ran again (on the target, or on the source after a failure)
    ended_ns: float | None = None
    unplugged_ns: float | None = None   # failover: the VF was asked to go (then the VM ran on its standby)
    failback_ns: float | None = None    # ... and a VF of the host it runs on was its primary again
    rounds: int = 0
    pages_sent: int = 0
    zero_pages: int = 0
    bytes_sent: int = 0
    state_bytes: int = 0                # sent while stopped besides pages: vCPU and platform records, devices
    vcpu_state_bytes: int = 0           # ... of which the vCPU and platform records

    @property
    def downtime_ns(self) -> float:
        if self.stopped_ns is None or self.resumed_ns is None:
            return 0.0
        return self.resumed_ns - self.stopped_ns

    @property
    def total_ns(self) -> float:
        return (self.ended_ns or self.started_ns) - self.started_ns


class MigrationLink:
    """The network the hosts migrate over: one TCP stream at ``gbps``; it
    goes down for good at ``fail_at`` (ns) if given."""

    def __init__(self, ledger: Ledger, name: str, gbps: float, fail_at: float | None = None) -> None:
        if gbps <= 0:
            raise ValueError(f"migration link {name}: rate {gbps} Gbit/s is not positive")
        self.wire = Resource(name, "wire", ledger)
        self.ns_per_byte = 8.0 / gbps
        self.fail_at = fail_at

    def up(self, at: float) -> bool:
        return self.fail_at is None or at < self.fail_at

    def send(self, ready: float, nbytes: int) -> float:
        """Bytes queued at ``ready``; returns when the last one has arrived."""
        self.wire.sync(ready)
        return self.wire.occupy("wire_tx", nbytes * self.ns_per_byte)


def blockers(vm: VM) -> list[str]:
    """Why each of ``vm``'s devices cannot migrate (empty: all can)."""
    return [f"{reason} (at {nic.bdf})" for nic in vm.nics if (reason := migration_blocker(nic.device)) is not None]


SwitchOver = Callable[[GuestMemory, list[bytes]], None]


class Migration:
    """Pre-copy of ``vm`` to host ``target`` over ``link``; ``platform``
    names the save records its vCPUs go in (``cpustate.LAYOUTS``)."""

    def __init__(self, vm: VM, target, link: MigrationLink, switch_over: SwitchOver, *, model: str = "",
                 platform: str = "kvm", downtime_ns: float = 300e6, max_rounds: int = 30,
                 on_done: Callable[[MigrationReport], None] | None = None) -> None:
        self.vm = vm
        self.platform = platform
        self.sim = vm.sim
        self.target = target
        self.link = link
        self.switch_over = switch_over
        self.downtime_ns = downtime_ns
        self.max_rounds = max_rounds
        self.on_done = on_done
        self.report = MigrationReport(vm.name, vm.host.name, target.name, model)
        self.incoming: GuestMemory | None = None
        self.pending: list[int] = []
        self.pos = 0
        self.refused: str | None = None
        self.round_start = 0.0
        self.round_bytes = 0
        self.queued = 0.0               # when the burst already on the socket has crossed
        self.threads: list[tuple] = []  # (host, thread) of the migration's own threads, while they run

    def refuse(self, reason: str) -> None:
        """The management layer already knows it cannot go (no such device on the target's hypervisor)."""
        self.refused = reason

    def start(self, at: float) -> None:
        self.report.started_ns = at
        self.sim.at(at, self._begin)

    def _begin(self) -> None:
        reasons = [self.refused] if self.refused else blockers(self.vm)
        if reasons:
            return self._finish("blocked", "; ".join(reasons))
        mem = self.vm.mem
        try:
            incoming = GuestMemory(mem.size)            # the target reserves the VM's RAM first
        except MemoryError as exc:
            return self._finish("failed", f"{self.target.name} {exc}; {self.vm.name} continues on {self.vm.host.name}")
        # QEMU's migration thread on the source, the incoming side's on the target: host work, not the VM's I/O
        self.sender = self.vm.host.kernel_thread(f"{self.vm.name}-migration")
        self.receiver = self.target.kernel_thread(f"{self.vm.name}-incoming")
        self.threads = [(self.vm.host, self.sender), (self.target, self.receiver)]
        self.incoming = incoming
        self.sent_data = bytearray(mem.size >> PAGE_SHIFT)     # pages whose target copy is not zero
        self.vm.take_dirty(charge=False)                         # the log starts now
        self.vm.log_dirty(True)
        self._round(list(range(mem.size >> PAGE_SHIFT)))

    # ---- pre-copy rounds -------------------------------------------------------------
    def _round(self, pages: list[int]) -> None:
        self.pending, self.pos = pages, 0
        self.round_start, self.round_bytes = self.sim.now, 0
        self._burst()

    def _burst(self) -> None:
        """One socket write; the thread prepares the next while the link
        carries this one (one burst of send buffer)."""
        now = self.sim.now
        if not self.link.up(now):
            return self._abort()
        batch = self.pending[self.pos:self.pos + BURST_PAGES]
        self.pos += len(batch)
        self.sender.sync(now)
        end = self._ship(batch)
        if self.pos < len(self.pending):
            ahead, self.queued = self.queued, end
            self.sim.at(max(self.sender.cursor, ahead), self._burst)
        else:
            self.queued = end
            self.sim.at(max(end, self.receiver.cursor), self._round_done)

    def _round_done(self) -> None:
        self.report.rounds += 1
        if not self.link.up(self.sim.now):
            return self._abort()
        dirty = self.vm.take_dirty()
        left_ns = len(dirty) * (PAGE_SIZE + PAGE_HEADER) * self._ns_per_byte()
        if left_ns <= self.downtime_ns or self.report.rounds >= self.max_rounds:
            self._stop_and_copy(dirty)
        else:
            self._round(dirty)

    def _ns_per_byte(self) -> float:
        """The bandwidth the last round achieved (migration_update_counters):
        CPU-bound rounds of zero pages move few bytes per second."""
        elapsed = self.sim.now - self.round_start
        if elapsed <= 0 or not self.round_bytes:
            return self.link.ns_per_byte
        return max(self.link.ns_per_byte, elapsed / self.round_bytes)

    def _ship(self, pages: list[int], extra: int = 0) -> float:
        """Copy ``pages`` into the incoming memory as they are now (and
        ``extra`` bytes of device state after them); returns when the
        receiver has them in place."""
        normal = self._copy(pages)
        nbytes = len(pages) * PAGE_HEADER + normal * PAGE_SIZE + extra
        self.sender.charge("migration_page", len(pages))
        if normal:
            self.sender.charge("copy", normal, nbytes=normal * PAGE_SIZE)
        arrived = self.link.send(self.sender.cursor, nbytes)
        if normal:
            self.receiver.sync(arrived)
            self.receiver.charge("copy", normal, nbytes=normal * PAGE_SIZE)
        self.report.bytes_sent += nbytes
        self.round_bytes += nbytes
        return arrived

    def _copy(self, pages: list[int]) -> int:
        """The pages' bytes as they are now; returns how many were not zero."""
        src, dst, sent_data = self.vm.mem.buf, self.incoming.buf, self.sent_data
        normal = 0
        for pfn in pages:
            at = pfn << PAGE_SHIFT
            page = src[at:at + PAGE_SIZE]
            if page == ZERO_PAGE:
                if sent_data[pfn]:
                    dst[at:at + PAGE_SIZE] = ZERO_PAGE
                    sent_data[pfn] = 0
            else:
                dst[at:at + PAGE_SIZE] = page
                sent_data[pfn] = 1
                normal += 1
        self.report.pages_sent += len(pages)
        self.report.zero_pages += len(pages) - normal
        return normal

    # ---- stop and copy ------------------------------------------------------------------
    def _stop_and_copy(self, dirty: list[int]) -> None:
        """The VM stops; the last pages go in bursts as before, the device state after them."""
        now = self.sim.now
        self.vm.pause()
        self.report.stopped_ns = now
        self.sender.sync(now)
        try:
            states = [save_state(nic.device) for nic in self.vm.nics]
        except StateError as exc:
            return self._abort(f"device state not saved: {exc}")
        cpu = cpustate.save(self.vm, self.platform)
        self._fetch(self.sender, len(cpu))
        self.report.vcpu_state_bytes = len(cpu)
        self.report.state_bytes = len(cpu) + sum(map(len, states))
        end = now
        for first in range(0, len(dirty), BURST_PAGES):
            end = self._ship(dirty[first:first + BURST_PAGES])
        end = self._ship([], self.report.state_bytes)
        self.receiver.sync(end)
        self._fetch(self.receiver, len(cpu))
        end = self.receiver.cursor
        if not self.link.up(end):
            self.sim.at(max(now, self.link.fail_at), self._abort)
        else:
            self.sim.at(end, self._switch, cpu, states)

    def _fetch(self, thread: Resource, nbytes: int) -> None:
        """KVM_GET_* / XEN_DOMCTL_get* on the source, their SET twins on the
        target: each call copies its record between the hypervisor and the
        migration thread."""
        calls = cpustate.calls(self.platform, len(self.vm.vcpus))
        if self.platform != "kvm":
            thread.charge("hypercall", calls)
        thread.charge("copy", calls, nbytes=nbytes)

    def _switch(self, cpu: bytes, states: list[bytes]) -> None:
        """The target decodes the vCPU records and every device stream
        (against a VM of the same shape) before it builds anything."""
        try:
            cpustate.check(self.vm, self.platform, cpu)
        except StateError as exc:
            return self._abort(f"vCPU state rejected: {exc}")
        try:
            for nic, blob in zip(self.vm.nics, states):
                check_state(nic.device, blob)
        except StateError as exc:
            return self._abort(f"device state rejected: {exc}")
        self.switch_over(self.incoming, states)
        self.report.resumed_ns = self.sim.now
        self._finish("ok")

    def _abort(self, why: str | None = None) -> None:
        """The stream broke: the target drops what it got, the source goes on."""
        self.incoming = None
        if self.vm.paused:
            self.vm.resume()
            self.report.resumed_ns = self.sim.now
        if why is None:
            why = f"migration link failed {(self.link.fail_at - self.report.started_ns) / 1e6:.3f} ms into it"
        self._finish("failed", f"{why}; {self.vm.name} continues on {self.vm.host.name}")

    def _finish(self, result: str, reason: str = "") -> None:
        """Done, whatever the result: the migration's threads exit (their time stays in the results)."""
        for host, thread in self.threads:
            host.unplace(thread)
        self.threads = []
        self.vm.log_dirty(False)
        self.report.result, self.report.reason = result, reason
        self.report.ended_ns = self.sim.now
        if self.on_done is not None:
            self.on_done(self.report)
