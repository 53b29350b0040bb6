"""Each formula the hot paths use exists once: a resource's cursor moves only
inside ``sim/resource.py``; both sides of a virtqueue decide a notification
by ``vring_need_event``; a link holds its wire for ``frame_ns``.  Where a
copy stays inlined for speed (``NOTE: ... inlined``: Resource.charge's _run,
the Dma accessors' gpa, GuestMemory's mark_dirty), the checks below drive the
inlined copy and the reference side by side."""

import ast
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from test_virtqueue import in_window, pair

import iovirt
from iovirt.mem.dma import Dma, DmaFault
from iovirt.mem.guest_memory import PAGE_SIZE, GuestMemory
from iovirt.net.wire import Link
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import virtio as v

ROOT = Path(iovirt.__file__).parent


def _cursor_writers(root: Path) -> set[str]:
    """Modules under ``root`` that assign to some object's ``cursor``."""
    out = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute) and part.attr == "cursor":
                        out.add(str(path.relative_to(root)))
    return out


def test_only_a_resource_moves_its_cursor():
    """Resource.sync is the one copy of "start no earlier than ready": nobody else writes a cursor."""
    assert _cursor_writers(ROOT) == {"sim/resource.py"}


def test_the_cursor_check_sees_an_inlined_sync(tmp_path):
    (tmp_path / "tap.py").write_text("if now > cpu.cursor:\n    cpu.cursor = now\nself.a.cursor += 1\n")
    (tmp_path / "ok.py").write_text("start = cpu.cursor\ncpu.sync(now)\n")
    assert _cursor_writers(tmp_path) == {"tap.py"}


@settings(deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 40), st.booleans())
def test_both_ring_sides_notify_as_vring_need_event(event, old, step, translated):
    """The driver's kick and the device's interrupt, with EVENT_IDX, for any indices and an
    event index read in place or through the checked accessor: exactly when the event index
    lies among the newly published entries."""
    new = (old + step) & 0xFFFF
    p = pair(size=8, event_idx=True)
    if translated:                      # an IOMMU in the way: the device uses its checked accessors
        p.dev.dma.translate = lambda addr, length, is_write: addr
        p.dev.avail = p.dev.avail
    expected = in_window(event, new, old)
    p.kernel.mem.store(v.U16, p.drv.used + v.avail_event_offset(8), event)
    p.drv.published, p.drv.avail_idx = old, new
    assert p.drv.kick_prepare() is expected
    p.kernel.mem.store(v.U16, p.drv.avail + v.VIRTQ_AVAIL_RING + 2 * 8, event)        # used_event
    p.dev.signalled_used, p.dev.used_idx = old, new
    assert p.dev.should_interrupt() is expected


@settings(deadline=None)
@given(st.integers(1, 9000), st.sampled_from([1.0, 10.0, 25.0]), st.floats(0, 1e6))
def test_a_link_holds_the_wire_for_frame_ns(size, gbps, ready):
    """What a frame costs the wire when sent is the link's frame_ns of its size, from when it was ready."""
    link = Link(Sim(), Ledger(load_profile("default")), "l", gbps)
    end = link.carry(link.to_peer, ready, bytes(size), lambda frame: None)
    assert end == ready + link.frame_ns(size)
    assert link.to_peer.busy_ns == link.frame_ns(size)


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["vm_exit", "copy", "ring_op"]), st.integers(1, 3),
                          st.integers(0, 4000), st.floats(0, 5000)), max_size=20), st.booleans())
def test_charge_advances_as_run_does(work, on_a_core):
    """Resource.charge (with _run inlined) leaves the resource, and the core under it, where
    _run with the same price does, whatever the ready times and whether a thread shares its core."""
    ledger = Ledger(load_profile("default"))
    charged, ran = Resource("a", "host_thread", ledger), Resource("b", "host_thread", ledger)
    if on_a_core:
        charged.core, ran.core = Resource("c0", "core", ledger), Resource("c1", "core", ledger)
    for event, n, nbytes, ready in work:
        for r in (charged, ran):
            r.sync(ready)
            if r.core is not None:
                r.core.charge("vm_exit")                # another thread ran on the core meanwhile
        charged.charge(event, n, nbytes)
        ran._run(ledger.fixed[event] * n + (ledger.per_byte[event] * nbytes if nbytes else 0))
        assert (charged.cursor, charged.busy_ns) == (ran.cursor, ran.busy_ns)
        if on_a_core:
            assert (charged.core.cursor, charged.core.busy_ns) == (ran.core.cursor, ran.core.busy_ns)


SMALL = 3 * PAGE_SIZE


@settings(deadline=None)
@given(st.integers(-64, SMALL + 64), st.integers(0, 2 * PAGE_SIZE), st.booleans())
def test_dma_accesses_refuse_exactly_what_gpa_refuses(addr, length, translated):
    """Dma.read/write/load/store (each with gpa() inlined) fault exactly where Dma.gpa does,
    and a write dirties the pages GuestMemory.mark_dirty would."""
    mem, reference = GuestMemory(SMALL), GuestMemory(SMALL)
    dma = Dma(mem, "copy", (lambda a, n, w: a) if translated else None)
    cpu = Resource("engine", "nic", Ledger(load_profile("default")))
    record = struct.Struct(f"{length}s")
    try:
        gpa = dma.gpa(addr, length, True)
    except DmaFault:
        gpa = None
    for access in (lambda: dma.read(cpu, addr, length), lambda: dma.write(cpu, addr, bytes(length)),
                   lambda: dma.load(cpu, record, addr), lambda: dma.store(cpu, record, addr, bytes(length))):
        try:
            access()
            assert gpa is not None
        except DmaFault:
            assert gpa is None
    if gpa is not None:
        reference.mark_dirty(gpa, length)
    assert mem.dirty == reference.dirty


@settings(deadline=None)
@given(st.integers(0, SMALL - 1), st.integers(1, 2 * PAGE_SIZE))
def test_cpu_stores_dirty_what_mark_dirty_dirties(gpa, length):
    """GuestMemory.write (mark_dirty inlined) dirties exactly mark_dirty's pages; so does .store
    for what it stores, a record no longer than a page (it marks the first and last only)."""
    length = min(length, SMALL - gpa)
    record = min(length, PAGE_SIZE)
    written, stored = GuestMemory(SMALL), GuestMemory(SMALL)
    whole, first = GuestMemory(SMALL), GuestMemory(SMALL)
    written.write(gpa, bytes(length))
    stored.store(struct.Struct(f"{record}s"), gpa, bytes(record))
    whole.mark_dirty(gpa, length)
    first.mark_dirty(gpa, record)
    assert written.dirty == whole.dirty and stored.dirty == first.dirty
