"""Device side of a virtio split virtqueue (virtio 1.1 section 2.6): pop
descriptor chains the driver made available, push them to the used ring,
decide whether to interrupt, ask for (or suppress) kicks.

Everything here is guest-controlled: indices, descriptor addresses, lengths,
flags and next pointers are checked as the spec requires, and a violation
raises :class:`VirtqueueError` (the device then sets DEVICE_NEEDS_RESET,
2.1.2) rather than looping, reading outside guest memory or trusting a
length."""

from __future__ import annotations

from ..mem.dma import Dma, DmaFault
from ..sim.resource import Resource
from ..spec import virtio as v
from .vmstate import Flag, UInt, VmState

_DESC = v.VIRTQ_DESC.unpack_from
_ELEM = v.VIRTQ_USED_ELEM.struct
_U16 = v.U16
Segments = list[tuple[int, int]]


class VirtqueueError(Exception):
    """The driver broke the ring protocol."""


class Virtqueue:
    __slots__ = ("index", "dma", "size", "max_size", "desc", "avail", "used", "enabled", "msix_vector",
                 "notify_off", "event_idx", "indirect", "last_avail", "used_idx", "signalled_used", "buf")

    def __init__(self, index: int, dma: Dma, max_size: int) -> None:
        self.index = index
        self.dma = dma
        self.buf = dma.buf
        self.max_size = max_size
        self.notify_off = index
        self.event_idx = self.indirect = False
        self.reset()

    def reset(self) -> None:
        self.size = self.max_size
        self.desc = self.avail = self.used = 0
        self.enabled = False
        self.msix_vector = v.VIRTIO_MSI_NO_VECTOR
        self.last_avail = self.used_idx = self.signalled_used = 0

    # ---- guest memory access: translated and bounds-checked ---------------
    # NOTE: Dma.gpa inlined in _u16, several calls per frame.
    def _u16(self, addr: int) -> int:
        dma = self.dma
        gpa = dma.translate(addr, 2, False) if dma.translate else addr
        if gpa < 0 or gpa + 2 > dma.size:
            raise DmaFault(addr, 2, "outside guest memory")
        return _U16.unpack_from(self.buf, gpa)[0]

    def _put16(self, addr: int, value: int) -> None:
        gpa = self.dma.gpa(addr, 2, True)
        _U16.pack_into(self.buf, gpa, value)
        self.dma.mem.mark_dirty(gpa, 2)

    # ---- available ring -----------------------------------------------------
    def avail_idx(self) -> int:
        return self._u16(self.avail + v.VIRTQ_AVAIL_IDX)

    def has_avail(self) -> bool:
        return self.enabled and self.avail_idx() != self.last_avail

    def pop(self, cpu: Resource) -> tuple[int, Segments, Segments] | None:
        """Next available chain: (head, device-readable, device-writable)
        segments as (address, length), or None when the ring is empty."""
        try:
            idx = self.avail_idx()
            pending = (idx - self.last_avail) & 0xFFFF
            if not pending:
                return None
            if pending > self.size:
                raise VirtqueueError(f"queue {self.index}: avail idx moved {pending} past {self.size} entries")
            head = self._u16(self.avail + v.VIRTQ_AVAIL_RING + 2 * (self.last_avail % self.size))
            readable, writable = self._walk(head)
        except DmaFault as fault:
            raise VirtqueueError(f"queue {self.index}: ring access {fault}") from None
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        cpu.charge("ring_op")
        return head, readable, writable

    def _walk(self, head: int) -> tuple[Segments, Segments]:
        """2.6.5.3: follow NEXT, at most once through an indirect table; a
        chain longer than its table loops."""
        if head >= self.size:
            raise VirtqueueError(f"queue {self.index}: head {head} >= queue size {self.size}")
        readable: Segments = []
        writable: Segments = []
        table, limit, i, seen, indirect = self.desc, self.size, head, 0, False
        while True:
            if seen >= limit:
                raise VirtqueueError(f"queue {self.index}: descriptor chain from {head} loops")
            seen += 1
            addr, length, flags, nxt = _DESC(self.buf, self.dma.gpa(table + 16 * i, 16, False))
            if flags & v.VIRTQ_DESC_F_INDIRECT:
                if indirect or not self.indirect or flags & v.VIRTQ_DESC_F_NEXT or not length or length % 16:
                    raise VirtqueueError(f"queue {self.index}: bad indirect descriptor {i}")
                table, limit, i, seen, indirect = addr, length // 16, 0, 0, True
                continue
            if flags & v.VIRTQ_DESC_F_WRITE:
                writable.append((addr, length))
            elif writable:
                raise VirtqueueError(f"queue {self.index}: readable descriptor {i} after a writable one")
            else:
                readable.append((addr, length))
            if not flags & v.VIRTQ_DESC_F_NEXT:
                return readable, writable
            if nxt >= limit:
                raise VirtqueueError(f"queue {self.index}: next {nxt} outside its table of {limit}")
            i = nxt

    # ---- used ring ------------------------------------------------------------
    def push(self, head: int, written: int) -> None:
        """Return a chain to the driver (2.6.8): element first, then idx."""
        elem = self.used + v.VIRTQ_USED_RING + 8 * (self.used_idx % self.size)
        try:
            gpa = self.dma.gpa(elem, 8, True)
            _ELEM.pack_into(self.buf, gpa, head, written)
            self.dma.mem.mark_dirty(gpa, 8)
            self.used_idx = (self.used_idx + 1) & 0xFFFF
            self._put16(self.used + v.VIRTQ_USED_IDX, self.used_idx)
        except DmaFault as fault:
            raise VirtqueueError(f"queue {self.index}: used ring {fault}") from None

    def should_interrupt(self) -> bool:
        """2.6.7.2 / 2.6.10: interrupt for what was pushed since the last one?"""
        old, new = self.signalled_used, self.used_idx
        self.signalled_used = new
        if old == new:
            return False
        try:
            if self.event_idx:
                return v.vring_need_event(self._u16(self.avail + v.used_event_offset(self.size)), new, old)
            return not self._u16(self.avail + v.VIRTQ_AVAIL_FLAGS) & v.VIRTQ_AVAIL_F_NO_INTERRUPT
        except DmaFault as fault:
            raise VirtqueueError(f"queue {self.index}: avail ring {fault}") from None

    def want_kicks(self, on: bool) -> None:
        """Ask the driver to notify on its next buffer, or not (2.6.7.1):
        avail_event with EVENT_IDX, VIRTQ_USED_F_NO_NOTIFY without."""
        try:
            if self.event_idx:
                if on:
                    self._put16(self.used + v.avail_event_offset(self.size), self.last_avail)
            else:
                self._put16(self.used + v.VIRTQ_USED_FLAGS, 0 if on else v.VIRTQ_USED_F_NO_NOTIFY)
        except DmaFault as fault:
            raise VirtqueueError(f"queue {self.index}: used ring {fault}") from None

    # ---- live migration (QEMU vmstate_virtio: the ring addresses and indices) ----------
    VMSTATE = VmState("virtqueue", 1, (
        UInt("size", 16), UInt("desc", 64), UInt("avail", 64), UInt("used", 64), Flag("enabled"),
        UInt("msix_vector", 16), Flag("event_idx"), Flag("indirect"), UInt("last_avail", 16), UInt("used_idx", 16),
        UInt("signalled_used", 16)))
