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
_U16_READ = _U16.unpack_from
_F_NEXT, _F_WRITE, _F_INDIRECT = v.VIRTQ_DESC_F_NEXT, v.VIRTQ_DESC_F_WRITE, v.VIRTQ_DESC_F_INDIRECT
_AVAIL_IDX, _AVAIL_RING = v.VIRTQ_AVAIL_IDX, v.VIRTQ_AVAIL_RING
_USED_IDX, _USED_RING = v.VIRTQ_USED_IDX, v.VIRTQ_USED_RING
Segments = list[tuple[int, int]]


class VirtqueueError(Exception):
    """The driver broke the ring protocol."""


class Virtqueue:
    __slots__ = ("index", "dma", "_size", "max_size", "desc", "_avail", "_used", "enabled", "msix_vector",
                 "notify_off", "event_idx", "indirect", "last_avail", "used_idx", "signalled_used", "buf",
                 "_avail_u16", "_used_put16", "_used_put_elem", "_desc_end")

    def __init__(self, index: int, dma: Dma, max_size: int) -> None:
        self.index = index
        self.dma = dma
        self.buf = dma.buf
        self.max_size = max_size
        self.notify_off = index
        self.event_idx = self.indirect = False
        self._size = self._avail = self._used = 0
        self._desc_end = dma.size - 16 if dma.translate is None else -1     # last untranslated descriptor address
        self.reset()

    # ---- ring geometry: where the driver put the rings ------------------------
    # A ring that lies untranslated and wholly inside guest memory is read and
    # written in place; any other through the checked accessors.  Which one is
    # decided whenever the driver moves or resizes a ring (``_place``).
    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, value: int) -> None:
        self._size = value
        self._place()

    @property
    def avail(self) -> int:
        return self._avail

    @avail.setter
    def avail(self, value: int) -> None:
        self._avail = value
        self._place()

    @property
    def used(self) -> int:
        return self._used

    @used.setter
    def used(self, value: int) -> None:
        self._used = value
        self._place()

    def _place(self) -> None:
        """The accessors of the avail ring (with used_event) and the used ring
        (with avail_event): in place when the ring lies untranslated inside
        guest memory, checked otherwise."""
        dma, size = self.dma, self._size
        plain = dma.translate is None
        avail_inside = plain and 0 <= self._avail and self._avail + _AVAIL_RING + 2 * size + 2 <= dma.size
        used_inside = plain and 0 <= self._used and self._used + _USED_RING + 8 * size + 2 <= dma.size
        self._avail_u16 = self._u16_inside if avail_inside else self._u16
        self._used_put16 = self._put16_inside if used_inside else self._put16
        self._used_put_elem = self._put_elem_inside if used_inside else self._put_elem

    def reset(self) -> None:
        self.size = self.max_size
        self.desc = self.avail = self.used = 0
        self.enabled = False
        self.msix_vector = v.VIRTIO_MSI_NO_VECTOR
        self.last_avail = self.used_idx = self.signalled_used = 0

    # ---- guest memory access: translated and bounds-checked ---------------
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

    def _put_elem(self, addr: int, head: int, written: int) -> None:
        gpa = self.dma.gpa(addr, 8, True)
        _ELEM.pack_into(self.buf, gpa, head, written)
        self.dma.mem.mark_dirty(gpa, 8)

    # ---- the same, in place (``_place`` found the ring inside guest memory) -----
    def _u16_inside(self, addr: int) -> int:
        return _U16_READ(self.buf, addr)[0]

    def _put16_inside(self, addr: int, value: int) -> None:
        _U16.pack_into(self.buf, addr, value)
        self.dma.mem.mark_dirty(addr, 2)

    def _put_elem_inside(self, addr: int, head: int, written: int) -> None:
        _ELEM.pack_into(self.buf, addr, head, written)
        self.dma.mem.mark_dirty(addr, 8)

    # ---- available ring -----------------------------------------------------
    def has_avail(self) -> bool:
        if not self.enabled:
            return False
        return self._avail_u16(self._avail + _AVAIL_IDX) != self.last_avail

    def pop(self, cpu: Resource) -> tuple[int, Segments, Segments] | None:
        """Next available chain: (head, device-readable, device-writable)
        segments as (address, length), or None when the ring is empty."""
        avail, last, size, buf = self._avail, self.last_avail, self._size, self.buf
        try:
            read = self._avail_u16
            idx = read(avail + _AVAIL_IDX)
            pending = (idx - last) & 0xFFFF
            if not pending:
                return None
            if pending > size:
                raise VirtqueueError(f"queue {self.index}: avail idx moved {pending} past {size} entries")
            at = avail + _AVAIL_RING + 2 * (last % size)
            head = read(at)
            at, flags = self.desc + 16 * head, _F_NEXT
            if head < size and 0 <= at <= self._desc_end:
                addr, length, flags, _ = _DESC(buf, at)
            if flags & (_F_NEXT | _F_INDIRECT):
                readable, writable = self._walk(head)
            else:                                   # NOTE: _walk inlined for a chain of one descriptor
                chain = [(addr, length)]
                readable, writable = ([], chain) if flags & _F_WRITE else (chain, [])
        except DmaFault as fault:
            raise VirtqueueError(f"queue {self.index}: ring access {fault}") from None
        self.last_avail = (last + 1) & 0xFFFF
        cpu.charge("ring_op")
        return head, readable, writable

    def avail_bytes(self, want: int) -> bool:
        """virtqueue_avail_bytes: do the chains made available hold ``want``
        device-writable bytes between them?  The chains are checked as
        ``pop`` checks them."""
        avail, last, size = self._avail, self.last_avail, self._size
        try:
            pending = (self._avail_u16(avail + _AVAIL_IDX) - last) & 0xFFFF
            if pending > size:
                raise VirtqueueError(f"queue {self.index}: avail idx moved {pending} past {size} entries")
            total = 0
            for n in range(pending):
                head = self._avail_u16(avail + _AVAIL_RING + 2 * ((last + n) % size))
                total += sum(length for _, length in self._walk(head)[1])
                if total >= want:
                    return True
        except DmaFault as fault:
            raise VirtqueueError(f"queue {self.index}: ring access {fault}") from None
        return False

    def _walk(self, head: int) -> tuple[Segments, Segments]:
        """2.6.5.3: follow NEXT, at most once through an indirect table; a
        chain longer than its table loops."""
        if head >= self._size:
            raise VirtqueueError(f"queue {self.index}: head {head} >= queue size {self._size}")
        readable: Segments = []
        writable: Segments = []
        table, limit, i, seen, indirect = self.desc, self._size, head, 0, False
        dma, buf, end = self.dma, self.buf, self._desc_end      # NOTE: Dma.gpa inlined when untranslated
        while True:
            if seen >= limit:
                raise VirtqueueError(f"queue {self.index}: descriptor chain from {head} loops")
            seen += 1
            at = table + 16 * i
            addr, length, flags, nxt = _DESC(buf, at if 0 <= at <= end else dma.gpa(at, 16, False))
            if flags & _F_INDIRECT:
                if indirect or not self.indirect or flags & _F_NEXT or not length or length % 16:
                    raise VirtqueueError(f"queue {self.index}: bad indirect descriptor {i}")
                table, limit, i, seen, indirect = addr, length // 16, 0, 0, True
                continue
            if flags & _F_WRITE:
                writable.append((addr, length))
            elif writable:
                raise VirtqueueError(f"queue {self.index}: readable descriptor {i} after a writable one")
            else:
                readable.append((addr, length))
            if not flags & _F_NEXT:
                return readable, writable
            if nxt >= limit:
                raise VirtqueueError(f"queue {self.index}: next {nxt} outside its table of {limit}")
            i = nxt

    # ---- used ring ------------------------------------------------------------
    def push(self, head: int, written: int) -> None:
        """Return a chain to the driver (2.6.8): element first, then idx."""
        used = self._used
        try:
            self._used_put_elem(used + _USED_RING + 8 * (self.used_idx % self._size), head, written)
            self.used_idx = idx = (self.used_idx + 1) & 0xFFFF
            self._used_put16(used + _USED_IDX, idx)
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
                at = self._avail + _AVAIL_RING + 2 * self._size        # used_event (2.6.10)
                return v.vring_need_event(self._avail_u16(at), new, old)
            return not self._u16(self.avail + v.VIRTQ_AVAIL_FLAGS) & v.VIRTQ_AVAIL_F_NO_INTERRUPT
        except DmaFault as fault:
            raise VirtqueueError(f"queue {self.index}: avail ring {fault}") from None

    def want_kicks(self, on: bool) -> None:
        """Ask the driver to notify on its next buffer, or not (2.6.7.1):
        avail_event with EVENT_IDX, VIRTQ_USED_F_NO_NOTIFY without."""
        try:
            if self.event_idx:
                if on:                            # avail_event (2.6.10) at the avail idx as it is now, as
                    at = self._avail_u16(self._avail + _AVAIL_IDX)    # QEMU and vhost do: a kick for what comes next
                    self._used_put16(self._used + _USED_RING + 8 * self._size, at)
            else:
                self._put16(self.used + v.VIRTQ_USED_FLAGS, 0 if on else v.VIRTQ_USED_F_NO_NOTIFY)
        except DmaFault as fault:
            raise VirtqueueError(f"queue {self.index}: used ring {fault}") from None

    # ---- live migration (QEMU vmstate_virtio: the ring addresses and indices) ----------
    VMSTATE = VmState("virtqueue", 1, (
        UInt("size", 16), UInt("desc", 64), UInt("avail", 64), UInt("used", 64), Flag("enabled"),
        UInt("msix_vector", 16), Flag("event_idx"), Flag("indirect"), UInt("last_avail", 16), UInt("used_idx", 16),
        UInt("signalled_used", 16)))
