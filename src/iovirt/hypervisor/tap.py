"""A tap device: the host end of a VM's NIC on the host switch.

From userspace (QEMU's net/tap.c) every frame is a read() or write() on the
tap fd: a ``tap`` syscall and a copy between user and kernel buffers on
the calling thread (``copy_hot`` for a write: the thread has just assembled
the frame).  From the kernel (vhost-net's socket calls) there is no
syscall and no extra copy: ``syscall=False``.  A poll-mode reader (a
vhost-user PMD) is never asleep, so frames cost it no wake-up:
``polled=True``; it is the user-space switch, and forwards the frames it
takes at that switch's price (``dpdk_switch``), not the kernel bridge's.
The sending thread also runs the switch for its frame.  A TCP GSO packet
from the device (its virtio_net_hdr's gso_size, which the tap's vnet
header carries, IFF_VNET_HDR) crosses the tap and the bridge as one unit;
it is segmented where it leaves them for a port that cannot take it
(``vswitch``): a tap takes it whole when the VMM set TUN_F_TSO4 on it
(TUNSETOFFLOAD), as QEMU does from its device's guest features
(virtio_net_apply_guest_offloads: GUEST_TSO4; GUEST_CSUM sets TUN_F_CSUM,
and the segments the bridge cuts for it stay partial), for its own reads and for
vhost-net's alike; a vhost-user port when its guest negotiated GUEST_TSO4
(DPDK's vhost library writes the GSO header, virtio_enqueue_offload)."""

from __future__ import annotations

from collections import deque

from ..net.gso import GsoFrame
from ..net.vswitch import Port
from ..sim.resource import Resource

TXQUEUELEN = 1000       # Linux tun default tx_queue_len: frames held for a slow reader
READ_BUDGET = 50        # net/tap.c tap_send(): frames read per main-loop wakeup


class TapPort(Port):
    def __init__(self, vm, device, reader: Resource, syscall: bool = True, polled: bool = False) -> None:
        self.vm = vm
        self.syscall = syscall
        self.polled = polled
        if polled:
            self.switch_event = "dpdk_switch"
        self.sim = vm.sim
        self.device = device
        self.reader = reader                 # the VMM thread that reads the tap
        self.acct = vm.acct
        self.queue: deque[bytes] = deque()
        self.place = f"{vm.host.name}/{vm.name}/tap"
        self.read_pending = False
        self.vswitch = vm.host.vswitch
        self.vswitch.attach(self)
        device.port = self

    @property
    def takes_gso(self) -> bool:
        """TUN_F_TSO4: the device's guest takes TCP packets whole."""
        return getattr(self.device, "takes_gso", False)

    @property
    def takes_csum(self) -> bool:
        """TUN_F_CSUM: the device's guest takes TCP checksums partial."""
        return getattr(self.device, "takes_csum", False)

    # device -> tap -> switch
    def send(self, cpu: Resource, frame: bytes, gso_size: int = 0) -> None:
        if gso_size:
            frame = GsoFrame.of(frame, gso_size)
        if self.syscall:
            cpu.charge("tap")
            cpu.charge("copy_hot", nbytes=len(frame))     # the frame the VMM thread has just assembled
        self.vswitch.ingress(self, frame, cpu)

    # switch -> tap queue -> VMM main loop -> device
    def deliver(self, frame: bytes, at: int) -> None:
        if len(self.queue) >= TXQUEUELEN:
            self.sim.drops.count(self.place, frame)
            return
        self.queue.append(frame)
        if not self.read_pending:                # NOTE: _schedule_read inlined, once per frame
            self.read_pending = True
            self.sim.at(at, self._read)

    def flush(self, cpu: Resource) -> None:
        """The device has room again (QEMU: qemu_flush_queued_packets)."""
        if self.queue:
            self._schedule_read(cpu.cursor)

    def flush_now(self) -> None:
        if self.queue:
            self._schedule_read(self.sim.now)

    def _schedule_read(self, at: int) -> None:
        if not self.read_pending:
            self.read_pending = True
            self.sim.at(at, self._read)

    def close(self) -> None:
        """The tap is deleted (its VM left this host): the bridge forgets it,
        frames still queued for the VM are freed with it."""
        self.vswitch.detach(self)
        while self.queue:
            self.sim.drops.count(f"{self.place}-closed", self.queue.popleft())

    def _read(self) -> None:
        self.read_pending = False
        cpu, queue, device = self.reader, self.queue, self.device
        now = self.sim.now
        if self.vm.paused:                       # a stopped VM's backend reads nothing
            self.vm.when_resumed(self.flush_now)
            return
        if cpu.cursor < now:
            cpu.sync(now)
            if not self.polled:
                cpu.charge("wakeup")         # poll() returns / the vhost worker is woken
        can_receive, receive, syscall = device.can_receive, device.receive, self.syscall
        for _ in range(READ_BUDGET):
            if not queue or not can_receive(len(queue[0])):
                return                           # reading resumes on flush()
            frame = queue.popleft()
            if syscall:
                cpu.charge("tap")
                cpu.charge("copy", nbytes=len(frame))
            receive(cpu, frame)
        if queue:
            self._schedule_read(cpu.cursor)
