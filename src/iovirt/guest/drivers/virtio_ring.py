"""Driver side of a virtio split virtqueue, after Linux's virtio_ring.c:
a free list of descriptors, an available ring published by index, kicks and
interrupts suppressed with VIRTIO_RING_F_EVENT_IDX (or the flag bits)."""

from __future__ import annotations

from ...mem.guest_memory import PAGE_SHIFT
from ...spec import virtio as v

_DESC = v.VIRTQ_DESC.struct
_ELEM = v.VIRTQ_USED_ELEM.unpack_from
_U16 = v.U16
_F_NEXT, _F_WRITE = v.VIRTQ_DESC_F_NEXT, v.VIRTQ_DESC_F_WRITE
_USED_IDX, _USED_RING = v.VIRTQ_USED_IDX, v.VIRTQ_USED_RING
_AVAIL_IDX, _AVAIL_RING = v.VIRTQ_AVAIL_IDX, v.VIRTQ_AVAIL_RING


class DriverQueue:
    """The rings are the driver's own, allocated in guest memory: its stores
    to them go straight to the memory (marking the pages dirty, as any CPU
    store does), without the bounds check an arbitrary address needs."""

    def __init__(self, kernel, index: int, size: int, event_idx: bool, owner: object = None) -> None:
        self.index = index
        self.size = size
        self.event_idx = event_idx
        self.kernel = kernel
        self.notify = 0                             # the doorbell's guest-physical address, set by the transport
        self.rebind(kernel.vcpu, kernel.mem)
        alloc = kernel.alloc.alloc                  # ``owner``: the driver whose detach frees them
        self.desc = alloc(16 * size, 16, owner)
        self.avail = alloc(v.avail_size(size), 2, owner)
        self.used = alloc(v.used_size(size), 4, owner)
        for base, length in ((self.desc, 16 * size), (self.avail, v.avail_size(size)), (self.used, v.used_size(size))):
            kernel.mem.check(base, length)
        self.free = list(range(size - 1, -1, -1))
        self.tokens: dict[int, object] = {}
        self.avail_idx = 0
        self.published = 0
        self.last_used = 0

    def rebind(self, vcpu, mem) -> None:
        self.mem, self.buf, self.dirty, self.charge = mem, mem.buf, mem.dirty, vcpu.charge
        self.vcpu = vcpu

    @property
    def num_free(self) -> int:
        return len(self.free)

    def add(self, segments: list[tuple[int, int, bool]], token: object) -> bool:
        """Chain (address, length, device-writable) segments; False when full."""
        count, free, buf, dirty = len(segments), self.free, self.buf, self.dirty
        if count > len(free):
            return False
        if count == 1:                               # one buffer, the common chain
            heads = [free.pop()]
            addr, length, writable = segments[0]
            at = self.desc + 16 * heads[0]
            _DESC.pack_into(buf, at, addr, length, _F_WRITE if writable else 0, 0)
            dirty[at >> PAGE_SHIFT] = dirty[(at + 15) >> PAGE_SHIFT] = 1
        else:
            heads = self._chain(segments)
        self.charge("ring_op", count)
        head = heads[0]
        self.tokens[head] = (token, heads)
        at = self.avail + _AVAIL_RING + 2 * (self.avail_idx % self.size)
        _U16.pack_into(buf, at, head)
        dirty[at >> PAGE_SHIFT] = dirty[(at + 1) >> PAGE_SHIFT] = 1
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        return True

    def _chain(self, segments: list[tuple[int, int, bool]]) -> list[int]:
        """Descriptors for a chain of segments, linked by NEXT; their indexes."""
        free, buf, dirty = self.free, self.buf, self.dirty
        keep = len(free) - len(segments)
        heads = free[keep:][::-1]                    # popped from the end of the free list
        del free[keep:]
        last = len(segments) - 1
        for n, (addr, length, writable) in enumerate(segments):
            more = n < last
            flags = (_F_WRITE if writable else 0) | (_F_NEXT if more else 0)
            at = self.desc + 16 * heads[n]
            _DESC.pack_into(buf, at, addr, length, flags, heads[n + 1] if more else 0)
            dirty[at >> PAGE_SHIFT] = dirty[(at + 15) >> PAGE_SHIFT] = 1
        return heads

    def kick(self) -> None:
        """virtqueue_kick at the vCPU's time: publish what was added so far
        and ring the doorbell at ``notify`` (4.1.5.2) if the device asked.  A
        vCPU running ahead of the clock does both when it gets there: a
        backend polling the ring, or re-checking it before it sleeps, sees the
        store no sooner than the vCPU makes it, and the driver reads
        avail_event as it is then."""
        cursor, idx = self.vcpu.cursor, self.avail_idx
        if cursor > self.kernel.sim.now:
            self.kernel.run_at(cursor, lambda: self._kick(idx))    # a stopped vCPU gets there on resume
        else:
            self._kick(idx)

    def _kick(self, idx: int) -> None:
        if self.kick_prepare(idx):
            self.vcpu.mmio_write(self.notify, 2, self.index)

    def kick_prepare(self, new: int | None = None) -> bool:
        """Publish the avail idx (``new``, else all added); True if the device
        asked to be notified."""
        old = self.published
        if new is None:
            new = self.avail_idx
        at, dirty = self.avail + _AVAIL_IDX, self.dirty
        _U16.pack_into(self.buf, at, new)             # NOTE: _store16 inlined, once per frame
        dirty[at >> PAGE_SHIFT] = dirty[(at + 1) >> PAGE_SHIFT] = 1
        self.published = new
        if old == new:
            return False
        if self.event_idx:
            event = _U16.unpack_from(self.buf, self.used + _USED_RING + 8 * self.size)[0]   # avail_event
            return v.vring_need_event(event, new, old)
        return not _U16.unpack_from(self.buf, self.used + v.VIRTQ_USED_FLAGS)[0] & v.VIRTQ_USED_F_NO_NOTIFY

    def _store16(self, at: int, value: int) -> None:
        _U16.pack_into(self.buf, at, value)
        self.dirty[at >> PAGE_SHIFT] = self.dirty[(at + 1) >> PAGE_SHIFT] = 1

    def more_used(self) -> bool:
        return _U16.unpack_from(self.buf, self.used + _USED_IDX)[0] != self.last_used

    def get_used(self) -> tuple[object, int] | None:
        """The next buffer the device returned: (token, bytes written)."""
        buf, used, last_used = self.buf, self.used, self.last_used
        if _U16.unpack_from(buf, used + _USED_IDX)[0] == last_used:    # NOTE: more_used() inlined
            return None
        head, length = _ELEM(buf, used + _USED_RING + 8 * (last_used % self.size))
        self.last_used = (last_used + 1) & 0xFFFF
        self.charge("ring_op")
        entry = self.tokens.pop(head, None)
        if entry is None:
            return None                       # the device returned a head we never gave it
        token, heads = entry
        self.free.extend(reversed(heads))
        return token, length

    def disable_cb(self) -> None:
        """Interrupts off (virtqueue_disable_cb_split): with EVENT_IDX, park
        used_event behind last_used."""
        if self.event_idx:
            self._used_event((self.last_used - 1) & 0xFFFF)
        else:
            self._store16(self.avail + v.VIRTQ_AVAIL_FLAGS, v.VIRTQ_AVAIL_F_NO_INTERRUPT)

    def enable_cb(self, delayed: bool = False) -> bool:
        """Interrupts on; False when buffers are already waiting (poll again).
        ``delayed``: only once 3/4 of the outstanding buffers are used."""
        if self.event_idx:
            ahead = ((self.avail_idx - self.last_used) & 0xFFFF) * 3 // 4 if delayed else 0
            self._used_event((self.last_used + ahead) & 0xFFFF)
        else:
            self._store16(self.avail + v.VIRTQ_AVAIL_FLAGS, 0)
        return not self.more_used()

    def _used_event(self, value: int) -> None:
        self._store16(self.avail + _AVAIL_RING + 2 * self.size, value)
