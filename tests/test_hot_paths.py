"""Each formula the hot paths use exists once: a resource's cursor moves only
inside ``sim/resource.py``; both sides of a virtqueue decide a notification
by ``vring_need_event``; a link holds its wire for ``frame_ns``.  The checks
below drive the places that use them and compare with the reference."""

import ast
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from test_virtqueue import in_window, pair

import iovirt
from iovirt.net.wire import Link
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger
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
