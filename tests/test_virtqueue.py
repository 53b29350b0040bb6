"""virtio split virtqueue (virtio 1.1 section 2.6): the guest's DriverQueue
and the device's Virtqueue over one guest memory; EVENT_IDX and flag-based
notification suppression; hostile rings.  Only the kernel around the driver
queue is scaffolding (memory, allocator, a vCPU resource)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovirt.devices.virtqueue import Virtqueue, VirtqueueError
from iovirt.guest.alloc import DmaAllocator
from iovirt.guest.drivers.virtio_ring import DriverQueue
from iovirt.mem.dma import Dma
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import virtio as v

MEM = 1 << 20
PROFILE = load_profile("default")
NEXT, WRITE, INDIRECT = v.VIRTQ_DESC_F_NEXT, v.VIRTQ_DESC_F_WRITE, v.VIRTQ_DESC_F_INDIRECT


class Kernel:
    """What a DriverQueue uses of a guest kernel: memory, a DMA allocator, a vCPU, deferred work."""

    def __init__(self, ledger: Ledger, size: int = MEM) -> None:
        self.sim = Sim()
        self.mem = GuestMemory(size)
        self.alloc = DmaAllocator(size, lambda gpa, n: self.mem.write(gpa, bytes(n)), base=0x1000)
        self.vcpu = Resource("vcpu", "vcpu", ledger)

    def run_at(self, when: float, fn) -> None:
        self.sim.at(when, fn)


@dataclass
class Pair:
    kernel: Kernel
    drv: DriverQueue
    dev: Virtqueue
    cpu: Resource

    def buffer(self, data: bytes = b"", size: int = 0) -> int:
        addr = self.kernel.alloc.alloc(max(size, len(data), 1), 16)
        self.kernel.mem.write(addr, data)
        return addr

    def desc(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0, table: int | None = None) -> None:
        """Write descriptor ``i`` of the ring's table (or of an indirect ``table``) as a driver would."""
        base = self.drv.desc if table is None else table
        self.kernel.mem.store(v.VIRTQ_DESC.struct, base + 16 * i, addr, length, flags, nxt)

    def offer(self, *heads: int, idx: int | None = None) -> None:
        """Put ``heads`` in the avail ring and publish (a raw driver, no DriverQueue bookkeeping)."""
        at = self.dev.last_avail
        for n, head in enumerate(heads):
            self.kernel.mem.store(v.U16, self.drv.avail + v.VIRTQ_AVAIL_RING + 2 * ((at + n) % self.drv.size), head)
        idx = at + len(heads) if idx is None else idx
        self.kernel.mem.store(v.U16, self.drv.avail + v.VIRTQ_AVAIL_IDX, idx & 0xFFFF)

    def u16(self, addr: int) -> int:
        return v.U16.unpack_from(self.kernel.mem.buf, addr)[0]


def pair(size: int = 8, event_idx: bool = False, indirect: bool = False) -> Pair:
    """A driver queue and the device queue the transport would configure on it."""
    ledger = Ledger(PROFILE)
    kernel = Kernel(ledger)
    drv = DriverQueue(kernel, 0, size, event_idx)
    dev = Virtqueue(0, Dma(kernel.mem), v.QUEUE_SIZE_MAX)
    dev.size, dev.desc, dev.avail, dev.used = size, drv.desc, drv.avail, drv.used
    dev.event_idx, dev.indirect, dev.enabled = event_idx, indirect, True
    return Pair(kernel, drv, dev, Resource("backend", "host_thread", ledger))


# ---- round trips --------------------------------------------------------------------
def test_round_trip_carries_bytes_both_ways():
    """A readable+writable chain reaches the device with the driver's bytes; the device's reply and length come back."""
    p = pair()
    out, into = p.buffer(b"request"), p.buffer(size=64)
    assert p.drv.add([(out, 7, False), (into, 64, True)], "tok")
    assert p.dev.pop(p.cpu) is None                       # added but not yet published
    p.drv.kick_prepare()
    head, readable, writable = p.dev.pop(p.cpu)
    assert readable == [(out, 7)] and writable == [(into, 64)]
    assert p.dev.dma.read(p.cpu, *readable[0]) == b"request"
    p.dev.dma.write(p.cpu, into, b"reply")
    assert p.drv.get_used() is None
    p.dev.push(head, 5)
    assert p.drv.get_used() == ("tok", 5)
    assert p.kernel.mem.read(into, 5) == b"reply"
    assert p.dev.pop(p.cpu) is None and p.drv.get_used() is None


def test_chain_of_readable_then_writable_segments_in_order():
    """Three readable then two writable segments arrive as two ordered lists, bytes intact."""
    p = pair()
    parts = [bytes([n]) * (10 + n) for n in range(3)]
    outs = [p.buffer(part) for part in parts]
    ins = [p.buffer(size=32), p.buffer(size=48)]
    p.drv.add([(a, len(d), False) for a, d in zip(outs, parts)] + [(ins[0], 32, True), (ins[1], 48, True)], 1)
    p.drv.kick_prepare()
    _, readable, writable = p.dev.pop(p.cpu)
    assert b"".join(p.dev.dma.read(p.cpu, a, n) for a, n in readable) == b"".join(parts)
    assert writable == [(ins[0], 32), (ins[1], 48)]


def test_full_ring_refuses_until_device_returns_out_of_order_chains():
    """A full ring refuses another chain; chains completed out of order free their descriptors for reuse."""
    p = pair(size=4)
    buf = p.buffer(size=16)
    assert all(p.drv.add([(buf, 8, False)], n) for n in range(4))
    assert not p.drv.add([(buf, 8, False)], 4) and p.drv.num_free == 0
    p.drv.kick_prepare()
    heads = [p.dev.pop(p.cpu)[0] for _ in range(4)]
    for head in reversed(heads):
        p.dev.push(head, 0)
    assert [p.drv.get_used()[0] for _ in range(4)] == [3, 2, 1, 0]
    assert p.drv.num_free == 4
    assert p.drv.add([(buf, 8, False), (buf, 8, True)], "again")


def test_indices_wrap_at_16_bits():
    """More than 65536 chains through a 4-entry queue: both sides' indices wrap and nothing is lost or reordered."""
    p = pair(size=4, event_idx=True)
    buf = p.buffer(bytes(range(8)))
    sent = 0
    while sent < 65536 + 12:
        for n in range(4):
            p.drv.add([(buf, 8, False)], sent + n)
        p.drv.kick_prepare()
        while (chain := p.dev.pop(p.cpu)) is not None:
            p.dev.push(chain[0], chain[1][0][1])
        assert [p.drv.get_used() for _ in range(4)] == [(sent + n, 8) for n in range(4)]
        sent += 4
    assert p.dev.last_avail == p.dev.used_idx == p.drv.last_used == sent & 0xFFFF == 12
    assert p.u16(p.drv.avail + v.VIRTQ_AVAIL_IDX) == p.u16(p.drv.used + v.VIRTQ_USED_IDX) == 12


def test_indirect_table_yields_its_segments():
    """With VIRTIO_RING_F_INDIRECT_DESC a single descriptor names a table whose chain the device walks."""
    p = pair(indirect=True)
    a, b, c = p.buffer(b"A" * 10), p.buffer(b"B" * 20), p.buffer(size=30)
    table = p.buffer(size=48)
    for i, (addr, n, flags) in enumerate(((a, 10, NEXT), (b, 20, NEXT), (c, 30, WRITE))):
        p.desc(i, addr, n, flags, i + 1, table=table)
    p.desc(5, table, 48, INDIRECT)
    p.offer(5)
    assert p.dev.pop(p.cpu) == (5, [(a, 10), (b, 20)], [(c, 30)])


# ---- notification suppression (2.6.7, 2.6.10) -------------------------------------------------
def in_window(event: int, new: int, old: int) -> bool:
    """2.6.10.2 in words: notify iff event_idx is one of the indices old .. new-1 (mod 2^16)."""
    return any((old + k) & 0xFFFF == event for k in range((new - old) & 0xFFFF))


@pytest.mark.parametrize("event,new,old,expected", [
    (0, 1, 0, True), (0, 2, 1, False), (1, 2, 0, True), (2, 2, 0, False), (5, 5, 5, False),
    (0xFFFF, 1, 0xFFFE, True), (0, 1, 0xFFFE, True), (1, 1, 0xFFFE, False), (0xFFFD, 1, 0xFFFE, False),
])
def test_vring_need_event_truth_table(event, new, old, expected):
    """vring_need_event matches the spec's window [old, new) including across the 16-bit wrap."""
    assert v.vring_need_event(event, new, old) is expected is in_window(event, new, old)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 40))
def test_vring_need_event_is_the_window(event, old, step):
    """For any indices, vring_need_event(event, old+step, old) says whether event is among the newly published."""
    new = (old + step) & 0xFFFF
    assert v.vring_need_event(event, new, old) == in_window(event, new, old)


def publish(p: Pair, n: int = 1) -> bool:
    buf = p.buffer(size=8)
    for _ in range(n):
        p.drv.add([(buf, 8, False)], None)
    return p.drv.kick_prepare()


def drain(p: Pair) -> None:
    while (chain := p.dev.pop(p.cpu)) is not None:
        p.dev.push(chain[0], 0)


def test_event_idx_kick_only_when_avail_event_is_crossed():
    """EVENT_IDX: the driver kicks only when its new buffers pass the avail_event the device wrote."""
    p = pair(event_idx=True)
    p.dev.want_kicks(True)
    assert publish(p)                                     # avail_event 0 in [0, 1)
    assert not publish(p, 2)                              # device has not re-armed: 0 not in [1, 3)
    drain(p)
    p.dev.want_kicks(False)                               # with EVENT_IDX: leave avail_event behind
    assert not publish(p)
    drain(p)
    p.dev.want_kicks(True)
    assert p.u16(p.drv.used + v.avail_event_offset(p.drv.size)) == p.dev.last_avail == 4
    assert publish(p, 3)
    assert not p.drv.kick_prepare()                       # nothing new, no kick


def test_event_idx_interrupt_only_when_used_event_is_crossed():
    """EVENT_IDX: the device interrupts only when its pushes pass used_event; delayed enable waits for 3/4."""
    p = pair(size=8, event_idx=True)
    assert not p.dev.should_interrupt()                   # nothing pushed
    p.drv.enable_cb()
    publish(p, 8)
    chains = [p.dev.pop(p.cpu)[0] for _ in range(8)]
    p.dev.push(chains[0], 0)
    assert p.dev.should_interrupt()                       # used_event 0 in [0, 1)
    p.dev.push(chains[1], 0)
    assert not p.dev.should_interrupt()                   # driver has not consumed: 0 not in [1, 2)
    p.drv.get_used()
    p.drv.get_used()
    p.drv.disable_cb()
    p.dev.push(chains[2], 0)
    assert not p.dev.should_interrupt()
    p.drv.get_used()
    assert p.drv.enable_cb(delayed=True)                  # 5 outstanding: used_event = 3 + 3
    for head in chains[3:6]:
        p.dev.push(head, 0)
        assert not p.dev.should_interrupt()
    p.dev.push(chains[6], 0)
    assert p.dev.should_interrupt()


def test_flags_suppress_kicks_and_interrupts_without_event_idx():
    """Without EVENT_IDX: VIRTQ_USED_F_NO_NOTIFY stops kicks, VIRTQ_AVAIL_F_NO_INTERRUPT stops interrupts."""
    p = pair(event_idx=False)
    p.dev.want_kicks(False)
    assert p.u16(p.drv.used + v.VIRTQ_USED_FLAGS) == v.VIRTQ_USED_F_NO_NOTIFY
    assert not publish(p)
    p.dev.want_kicks(True)
    assert publish(p) and publish(p)                      # every publish kicks while the flag is clear
    p.drv.disable_cb()
    p.dev.push(p.dev.pop(p.cpu)[0], 0)
    assert not p.dev.should_interrupt()
    assert not p.drv.enable_cb()                          # a buffer is already waiting: poll it
    p.dev.push(p.dev.pop(p.cpu)[0], 0)
    assert p.dev.should_interrupt()


# ---- hostile drivers --------------------------------------------------------------------------
def loop_back(p: Pair) -> None:
    p.desc(0, 0x8000, 8, NEXT, 1)
    p.desc(1, 0x8000, 8, NEXT, 0)
    p.offer(0)


def loop_self_writable(p: Pair) -> None:
    p.desc(3, 0x8000, 8, NEXT | WRITE, 3)
    p.offer(3)


def next_out_of_range(p: Pair) -> None:
    p.desc(0, 0x8000, 8, NEXT, p.drv.size)
    p.offer(0)


def head_out_of_range(p: Pair) -> None:
    p.offer(p.drv.size)


def avail_idx_jump(p: Pair) -> None:
    p.desc(0, 0x8000, 8)
    p.offer(0, idx=p.drv.size + 1)


def desc_table_outside_memory(p: Pair) -> None:
    p.dev.desc = MEM - 8
    p.offer(0)


def avail_ring_outside_memory(p: Pair) -> None:
    p.dev.avail = MEM - 2


def readable_after_writable(p: Pair) -> None:
    p.desc(0, 0x8000, 8, NEXT | WRITE, 1)
    p.desc(1, 0x9000, 8)
    p.offer(0)


def indirect(flags: int = INDIRECT, length: int = 32, inner: int = 0, table: int = 0x20000):
    def setup(p: Pair) -> None:
        p.desc(0, 0x8000, 8, inner, table=table)
        p.desc(1, 0x8000, 8, inner, table=table)
        p.desc(0, table, length, flags, 1)
        p.offer(0)
    return setup


def indirect_straddles_memory_end(p: Pair) -> None:
    p.desc(0, 0x8000, 8, NEXT, 1, table=MEM - 16)
    p.desc(0, MEM - 16, 32, INDIRECT)
    p.offer(0)


def indirect_loop(p: Pair) -> None:
    p.desc(0, 0x8000, 8, NEXT, 1, table=0x20000)
    p.desc(1, 0x8000, 8, NEXT, 0, table=0x20000)
    p.desc(0, 0x20000, 32, INDIRECT)
    p.offer(0)


HOSTILE = {
    "loop": (loop_back, "loops"), "self-loop": (loop_self_writable, "loops"),
    "next-out-of-range": (next_out_of_range, "next 8 outside"), "head-out-of-range": (head_out_of_range, "head 8"),
    "avail-idx-jump": (avail_idx_jump, "avail idx moved 9"),
    "desc-table-outside-memory": (desc_table_outside_memory, "outside guest memory"),
    "avail-outside-memory": (avail_ring_outside_memory, "outside guest memory"),
    "readable-after-writable": (readable_after_writable, "after a writable"),
    "indirect-with-next": (indirect(INDIRECT | NEXT), "bad indirect"),
    "indirect-in-indirect": (indirect(inner=INDIRECT), "bad indirect"),
    "indirect-length-24": (indirect(length=24), "bad indirect"),
    "indirect-length-0": (indirect(length=0), "bad indirect"),
    "indirect-straddles-memory-end": (indirect_straddles_memory_end, "outside guest memory"),
    "indirect-loop": (indirect_loop, "loops"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_chain_raises_virtqueue_error(name):
    """Each protocol violation a driver can write raises VirtqueueError from pop, for its reason, consuming nothing."""
    p = pair(indirect=True)
    setup, reason = HOSTILE[name]
    setup(p)
    with pytest.raises(VirtqueueError, match=reason):
        p.dev.pop(p.cpu)
    assert p.dev.last_avail == 0


def test_indirect_refused_unless_negotiated():
    """An indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC negotiated is a protocol error."""
    p = pair(indirect=False)
    indirect()(p)
    with pytest.raises(VirtqueueError):
        p.dev.pop(p.cpu)


@pytest.mark.parametrize("used", [MEM - 2, MEM - 8, MEM + 4096])
def test_used_ring_outside_memory_raises_virtqueue_error(used):
    """A used ring (partly) beyond guest memory: push and want_kicks raise VirtqueueError, writing nothing."""
    p = pair(event_idx=True)
    publish(p)
    head = p.dev.pop(p.cpu)[0]
    p.dev.used = used
    before = bytes(p.kernel.mem.buf)
    for action in (lambda: p.dev.push(head, 0), lambda: p.dev.want_kicks(True)):
        with pytest.raises(VirtqueueError):
            action()
    assert bytes(p.kernel.mem.buf) == before


def test_used_event_beyond_memory_raises_virtqueue_error():
    """An avail ring whose used_event lies past guest memory: should_interrupt raises VirtqueueError."""
    p = pair(event_idx=True)
    publish(p)
    p.dev.push(p.dev.pop(p.cpu)[0], 0)
    p.dev.avail = MEM - v.used_event_offset(p.drv.size)
    with pytest.raises(VirtqueueError):
        p.dev.should_interrupt()


# ---- property: random rings ------------------------------------------------------------------
SMALL = 0x10000
DESC_AT, AVAIL_AT, USED_AT, TABLE_AT = 0x1000, 0x2000, 0x3000, 0x4000
ADDRS = st.one_of(st.sampled_from([DESC_AT, TABLE_AT]), st.integers(0, SMALL // 16 - 1).map(lambda k: 16 * k),
                  st.integers(SMALL, 2**64 - 1))
LENS = st.one_of(st.sampled_from([0, 8, 16, 24, 32, 64, 256]), st.integers(0, 2**32 - 1))
FLAGS = st.one_of(st.integers(0, 7), st.integers(0, 7), st.integers(0, 0xFFFF))
NEXTS = st.one_of(st.integers(0, 8), st.integers(0, 3), st.integers(0, 0xFFFF))
DESCS = st.tuples(ADDRS, LENS, FLAGS, NEXTS)


def records(buf) -> set[tuple[int, int]]:
    """(addr, len) of every 16-byte-aligned descriptor-shaped record in memory."""
    return {(a, n) for a, n, _, _ in v.VIRTQ_DESC.struct.iter_unpack(bytes(buf))}


@settings(max_examples=150, deadline=None)
@given(size=st.sampled_from([1, 4, 8]), table=st.lists(DESCS, min_size=8, max_size=8),
       inner=st.lists(DESCS, min_size=8, max_size=8), heads=st.lists(NEXTS, min_size=8, max_size=8),
       idx=st.one_of(st.integers(0, 4), st.integers(0, 9), st.integers(0, 0xFFFF)), used_event=st.integers(0, 0xFFFF),
       used=st.one_of(st.just(USED_AT), st.integers(0, SMALL + 64)), indirect=st.booleans(), event_idx=st.booleans())
def test_random_rings_never_escape(size, table, inner, heads, idx, used_event, used, indirect, event_idx):
    """Random descriptors, avail entries and idx: pop returns only segments named by descriptor records or
    raises VirtqueueError; size+2 pops end; push, should_interrupt and want_kicks write only the used ring."""
    ledger = Ledger(PROFILE)
    mem = GuestMemory(SMALL)
    for at, descs in ((DESC_AT, table), (TABLE_AT, inner)):
        for i, d in enumerate(descs):
            v.VIRTQ_DESC.struct.pack_into(mem.buf, at + 16 * i, *d)
    for i, head in enumerate(heads[:size]):
        v.U16.pack_into(mem.buf, AVAIL_AT + v.VIRTQ_AVAIL_RING + 2 * i, head)
    v.U16.pack_into(mem.buf, AVAIL_AT + v.VIRTQ_AVAIL_IDX, idx)
    v.U16.pack_into(mem.buf, AVAIL_AT + v.used_event_offset(size), used_event)
    q = Virtqueue(0, Dma(mem), v.QUEUE_SIZE_MAX)
    q.size, q.desc, q.avail, q.used, q.enabled = size, DESC_AT, AVAIL_AT, used, True
    q.indirect, q.event_idx = indirect, event_idx
    cpu = Resource("backend", "host_thread", ledger)
    ring = slice(used, min(SMALL, used + v.used_size(size)))
    outside = bytes(mem.buf[: ring.start]) + bytes(mem.buf[ring.stop :])
    for _ in range(size + 2):
        try:
            chain = q.pop(cpu)
        except VirtqueueError:
            break
        if chain is None:
            break
        head, readable, writable = chain
        assert head < size and set(readable + writable) <= records(mem.buf)
        try:
            q.push(head, len(writable))
            q.should_interrupt()
            q.want_kicks(bool(head & 1))
        except VirtqueueError:
            pass
    assert bytes(mem.buf[: ring.start]) + bytes(mem.buf[ring.stop :]) == outside
