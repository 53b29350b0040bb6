"""Para-virtualization: virtio-net over virtio-pci, the device logic wired to
one of the backend placements KVM uses.

The guest's doorbell (the notify region of BAR4) is an ioeventfd: the write
exits, KVM matches it in the kernel (``vm_exit`` + ``ioeventfd``) and the
vCPU goes straight back; the backend thread is signalled and does the ring
work.  Everything else in the BARs (common configuration, ISR, device
configuration, MSI-X table) traps to QEMU as emulation does.

- ``qemu``: QEMU's main-loop thread runs the device and reads/writes the tap
  with syscalls; interrupts by KVM_SIGNAL_MSI.
- ``vhost-net``: an in-kernel vhost worker thread runs the rings and talks to
  the tap socket without syscalls; interrupts through irqfd.
- ``vhost-user``: a poll-mode backend process (a DPDK switch) owns a core and
  polls the rings; it never asks for kicks, switches frames itself at its
  own per-packet price (``dpdk_switch``, not the Linux bridge's ``vswitch``)
  and interrupts through irqfd; its core is busy even when no frame moves.
"""

from __future__ import annotations

from ..devices.virtio_net import VirtioNet
from ..mem.dma import Dma
from ..sim.resource import Resource
from ..spec import virtio as v
from .pcinic import PciNic
from .tap import TapPort
from .vm import KVM_USER_MMIO, VM

IOEVENTFD = ("vm_exit", "ioeventfd")


class VirtioNic(PciNic):
    def __init__(self, vm: VM, device: str, mac: bytes, backend: str | None = "qemu", standby: bool = False,
                 slot: int | None = None, guest_tso4: bool = True) -> None:
        """``standby``: the device offers VIRTIO_NET_F_STANDBY (QEMU's failover=on); ``guest_tso4`` False:
        it does not offer VIRTIO_NET_F_GUEST_TSO4 (guest_tso4=off)."""
        backend = backend or "qemu"
        model = VirtioNet(vm.sim, mac, Dma(vm.mem, "copy", hot=frozenset(vm.vcpus)), standby, guest_tso4)
        super().__init__(vm, model, slot)
        self.backend = backend
        self.worker: Resource = {"qemu": vm.vmm_thread, "vhost-net": lambda: vm.thread("vhost"),
                                 "vhost-user": lambda: vm.thread("vhost-user-pmd", dedicated=True)}[backend]()
        model.kick_hook = self._kick
        model.msi_hook = self.msi
        model.irq = self.irq
        self.scheduled: set[int] = set()
        polled = backend == "vhost-user"
        self.port = TapPort(vm, model, reader=self.worker, syscall=backend == "qemu", polled=polled)
        if polled:
            model.polling = True
            vm.sim.at(0, self._pmd_round)

    def close(self) -> None:
        self.port.close()

    def regions(self, index: int, kind: str, size: int) -> list[tuple[int, int, tuple[str, ...]]]:
        if index != v.MODERN_BAR:
            return super().regions(index, kind, size)
        return [(0, v.NOTIFY_OFFSET, KVM_USER_MMIO), (v.NOTIFY_OFFSET, size - v.NOTIFY_OFFSET, IOEVENTFD)]

    def _kick(self, cpu: Resource, queue: int) -> None:
        """The doorbell's eventfd is signalled: the backend thread gets the
        work (and a wake-up only if it sleeps, see _run)."""
        self._schedule(queue, cpu.cursor)

    def _schedule(self, queue: int, at: float) -> None:
        if queue not in self.scheduled:
            self.scheduled.add(queue)
            self.vm.sim.at(at, self._run, queue)

    def _pmd_round(self) -> None:
        """One round of the poll-mode loop: burst from the guest's TX ring;
        rounds follow each other without sleeping."""
        if self.vm.paused:
            self.vm.when_resumed(self._pmd_round)
            return
        pmd = self.worker
        pmd.sync(self.vm.sim.now)
        pmd.charge("poll")
        self.device.kick(pmd, v.TX_QUEUE)
        self.port.flush(pmd)
        self.vm.sim.at(pmd.cursor, self._pmd_round)

    def _run(self, queue: int) -> None:
        """The backend thread services ``queue``: woken (``wakeup``) only if it
        was asleep when the work arrived; a running one just takes the work
        (vhost_work_queue on a busy worker, a main loop that has not slept).
        While the device says to look again (kicks still off) the thread
        comes back at its cursor, when what it took is done, without
        sleeping."""
        self.scheduled.discard(queue)
        worker, now = self.worker, self.vm.sim.now
        if self.vm.paused:                       # vhost stopped: the ring waits
            self.vm.when_resumed(lambda: self._schedule(queue, self.vm.sim.now))
            return
        if worker.cursor < now:
            worker.sync(now)
            worker.charge("wakeup")
        if self.device.kick(worker, queue):
            self._schedule(queue, worker.cursor)
