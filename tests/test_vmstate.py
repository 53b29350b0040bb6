"""Device state save/restore for live migration (devices/vmstate.py): every
migratable NIC model, driven by its real guest driver, is snapshotted (its
VMState stream plus the guest pages the dirty log names), restored into a
fresh VM, and both copies then carry the same next frames to the same end
state.  Broken streams are refused whole with StateError; assigned devices
report why they cannot move."""

from __future__ import annotations

import copy
import random
import struct
import zlib
from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iovirt.devices.ixgbe import Ixgbe
from iovirt.devices.ixgbe_vf import VirtualFunction
from iovirt.devices.registry import registry
from iovirt.devices.virtio_net import VirtioNet
from iovirt.devices.vmstate import (_U8, Nested, NestedList, StateError, _Reader, check_state, load_state,
                                   migration_blocker, save_state)
from iovirt.guest.kernel import GuestKernel
from iovirt.hypervisor.addrmap import pieces
from iovirt.hypervisor.emulation import EmulatedNic
from iovirt.hypervisor.host import Host
from iovirt.hypervisor.paravirt import VirtioNic
from iovirt.hypervisor.vm import VM
from iovirt.net.vswitch import Port
from iovirt.mem.dma import Dma
from iovirt.mem.guest_memory import PAGE_SIZE, GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import e1000 as e1000_spec
from iovirt.spec import pcnet as pcnet_spec
from iovirt.spec import rtl8139 as rtl8139_spec
from iovirt.spec import tulip as tulip_spec
from iovirt.spec import virtio as v

PROFILE = load_profile("default")
GUEST_MAC = bytes.fromhex("525400000001")
PEER_MAC = bytes.fromhex("5254000000fe")
ETHERTYPE = b"\x88\xb5"                # IEEE local experimental: no stack in the way
MEMORY_MB = 24
EMULATED = tuple(name for name, entry in registry().items() if entry.kind == "emulated")
MODELS = [("emulated", d, None) for d in EMULATED] + [("paravirt", "virtio-net", b) for b in ("qemu", "vhost-net")]
CLASSES = {name: registry()[name].model for name in EMULATED}


# ---- scaffolding: a peer on the host switch, and the stack above the driver ------------------
class Peer(Port):
    """A machine on the host's switch: records what reaches it, sends frames in."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.cpu = Resource(f"{host.name}/peer", "peer", host.ledger)
        self.frames: list[bytes] = []
        host.vswitch.attach(self)

    def deliver(self, frame: bytes, at: float) -> None:
        self.frames.append(bytes(frame))

    def send(self, frame: bytes) -> None:
        self.cpu.sync(self.host.sim.now)
        self.host.vswitch.ingress(self, frame, self.cpu)


class Stack:
    """What a NIC driver needs above it (IPv4Stack's driver API): frames up,
    and a transmit backlog restarted by tx_wake."""

    def __init__(self, netdev) -> None:
        self.netdev = netdev
        self.received: list[bytes] = []
        self.backlog: deque[bytes] = deque()

    def receive(self, frame: bytes, csum_valid: bool = False) -> None:
        self.received.append(bytes(frame))

    def send(self, frame: bytes) -> None:
        self.backlog.append(frame)
        self.tx_wake()

    def tx_wake(self) -> None:
        while self.backlog and self.netdev.transmit(self.backlog[0]):
            self.backlog.popleft()


@dataclass
class Machine:
    host: Host
    vm: VM
    nic: EmulatedNic | VirtioNic
    peer: Peer
    guest: GuestKernel | None = None

    @property
    def dev(self):
        return self.nic.device

    @property
    def stack(self) -> Stack:
        return self.guest.netdevs[0].stack

    def resources(self) -> list[Resource]:
        return [*self.host.cores, *self.vm.resources, self.peer.cpu]


def machine(sim: Sim, ledger: Ledger, name: str, model: tuple, boot: bool = True) -> Machine:
    """A host with a VM whose one NIC is ``model`` (wiring, device, backend) and a peer."""
    wiring, device, backend = model
    host = Host(f"{name}-host", 2, sim, ledger)
    vm = VM(name, host, MEMORY_MB, 1)
    nic = EmulatedNic(vm, device, GUEST_MAC) if wiring == "emulated" else VirtioNic(vm, device, GUEST_MAC, backend)
    m = Machine(host, vm, nic, Peer(host))
    if boot:
        m.guest = GuestKernel(name, vm.vcpus[0], vm.mem, sim)
        m.guest.boot()
        driver = m.guest.netdevs[0]
        driver.stack = Stack(driver)
    return m


def frame(dst: bytes, src: bytes, size: int, rng: random.Random) -> bytes:
    return dst + src + ETHERTYPE + rng.randbytes(size)


def exchange(m: Machine, outbound: list[bytes], inbound: list[bytes]) -> None:
    """The guest sends ``outbound`` (from its vCPU) while the peer sends ``inbound``."""
    stack = m.stack
    m.guest.run_soon(lambda: [stack.send(f) for f in outbound])
    for f in inbound:
        m.peer.send(f)


def settle(sim: Sim, machines: list[Machine]) -> None:
    """Run until nothing is pending and every resource is idle."""
    sim.run()
    sim.run(until=max(r.cursor for m in machines for r in m.resources()) + 1)


# ---- migration, as the test does it: state stream, dirty pages, guest objects ---------------------
def clone_guest(guest: GuestKernel, src: VM, dst: VM) -> GuestKernel:
    """The guest OS's objects (its RAM image and CPU state) continuing on
    ``dst``: a copy whose vCPU and memory references are ``dst``'s, with the
    IDT entries (interrupt handlers) it had programmed."""
    memo = {id(src.vcpus[0]): dst.vcpus[0], id(src.mem): dst.mem, id(src.mem.buf): dst.mem.buf,
            id(src.sim): dst.sim}
    clone = copy.deepcopy(guest, memo)
    dst.vcpus[0].irq_handlers = copy.deepcopy(src.vcpus[0].irq_handlers, memo)
    dst.vcpus[0].in_service = set(src.vcpus[0].in_service)
    return clone


def migrate_copy(src: Machine, ledger: Ledger, resume: bool = True) -> Machine:
    """A fresh VM and NIC restored from ``src`` at this instant; ``src`` runs on."""
    blob = save_state(src.dev)
    dst = machine(src.host.sim, ledger, "restored", _model(src), boot=False)
    for pfn in src.vm.mem.take_dirty():                    # only what dirty logging saw
        at = pfn * PAGE_SIZE
        dst.vm.mem.buf[at:at + PAGE_SIZE] = src.vm.mem.buf[at:at + PAGE_SIZE]
    load_state(dst.dev, blob)
    dst.guest = clone_guest(src.guest, src.vm, dst.vm)
    if resume:
        dst.dev.resume(dst.nic.port.reader)
    return dst


def _model(m: Machine) -> tuple:
    if isinstance(m.nic, VirtioNic):
        return "paravirt", "virtio-net", m.nic.backend
    return "emulated", m.dev.NAME, None


def state(dev) -> dict:
    return type(dev).VMSTATE.capture(dev)


def assert_same_state(a, b) -> None:
    """Every declared field equal; instants (floats) to rounding."""
    sa, sb = state(a), state(b)
    assert _floats_rounded(sa) == _floats_rounded(sb)


def _floats_rounded(value):
    if isinstance(value, dict):
        return {k: _floats_rounded(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_floats_rounded(x) for x in value]
    return round(value, 3) if isinstance(value, float) else value


def prefixes(got: list[bytes], sent: list[bytes]) -> list[bytes]:
    """What arrived, each cut to the length sent (a receiver may keep the FCS or padding)."""
    return [f[:len(g)] for f, g in zip(got, sent)] + got[len(sent):]


def booted(model: tuple, before: int = 0) -> tuple[Sim, Ledger, Machine]:
    sim, ledger = Sim(), Ledger(PROFILE)
    m = machine(sim, ledger, "vm1", model)
    rng = random.Random(before)
    exchange(m, [frame(PEER_MAC, GUEST_MAC, 100, rng) for _ in range(before)],
             [frame(GUEST_MAC, PEER_MAC, 100, rng) for _ in range(before)])
    settle(sim, [m])
    return sim, ledger, m


# ---- the round trip, for every model --------------------------------------------------------------
SIZES = st.lists(st.integers(46, 1500), max_size=6)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: "-".join(filter(None, m)))
@settings(max_examples=8, deadline=None)
@given(before_out=SIZES, before_in=SIZES, after_out=SIZES, after_in=SIZES, seed=st.integers(0, 2**16))
def test_restored_device_carries_the_next_frames_exactly_as_the_original(model, before_out, before_in, after_out,
                                                                         after_in, seed):
    """N frames each way through the real driver, snapshot, restore into a fresh VM: the next
    M frames each way reach the same ends with the same bytes, and both devices end in the same state."""
    sim, ledger = Sim(), Ledger(PROFILE)
    rng = random.Random(seed)
    src = machine(sim, ledger, "vm1", model)
    exchange(src, [frame(PEER_MAC, GUEST_MAC, n, rng) for n in before_out],
             [frame(GUEST_MAC, PEER_MAC, n, rng) for n in before_in])
    settle(sim, [src])
    assert len(src.peer.frames) == len(before_out) and len(src.stack.received) == len(before_in)
    dst = migrate_copy(src, ledger)
    for m in (src, dst):
        m.peer.frames.clear()
        m.stack.received.clear()
    out = [frame(PEER_MAC, GUEST_MAC, n, rng) for n in after_out]
    inb = [frame(GUEST_MAC, PEER_MAC, n, rng) for n in after_in]
    for m in (src, dst):
        exchange(m, out, inb)
    settle(sim, [src, dst])
    assert prefixes(src.peer.frames, out) == out and dst.peer.frames == src.peer.frames
    assert prefixes(src.stack.received, inb) == inb and dst.stack.received == src.stack.received
    assert_same_state(src.dev, dst.dev)
    assert dst.vm.stats["unassigned_access"] == 0


# ---- work pending at the save resumes after the load ------------------------------------------------
E1000 = ("emulated", "e1000", None)
_R = {r.name: r.offset for r in e1000_spec.REGS}


def run_until(sim: Sim, done, step: float = 50, limit: int = 20_000) -> None:
    """Advance the clock in small steps until ``done()``: a save at that instant."""
    for _ in range(limit):
        if done():
            return
        sim.run(until=sim.now + step)
    raise AssertionError("condition never reached")


def inbound(count: int, size: int = 200) -> list[bytes]:
    rng = random.Random(count)
    return [frame(GUEST_MAC, PEER_MAC, size, rng) for _ in range(count)]


def received_prefixes(m: Machine, frames: list[bytes]) -> list[bytes]:
    return prefixes(m.stack.received, frames)


def test_e1000_receive_delay_timer_pending_at_save_fires_on_the_target():
    """Frames held by the RDTR/RADV receive timers at the save: the target re-arms the timer
    for the time that remained, then interrupts, and the guest gets every frame."""
    sim, ledger, src = booted(E1000)
    bar, vcpu = src.guest.netdevs[0].bar, src.vm.vcpus[0]
    vcpu.mmio_write(bar + _R["RDTR"], 4, 200)             # 200 x 1.024 us, as RxIntDelay
    vcpu.mmio_write(bar + _R["RADV"], 4, 400)
    settle(sim, [src])
    frames = inbound(3)
    for f in frames:
        src.peer.send(f)
    run_until(sim, lambda: src.dev.r[_R["GPRC"] >> 2] == 3)
    assert src.dev.rx_timer_armed and not src.stack.received
    dst = migrate_copy(src, ledger)
    assert dst.dev.rx_timer_armed and dst.dev.rx_deadline == pytest.approx(src.dev.rx_deadline)
    sim.run(until=src.dev.rx_deadline - 1)
    assert dst.stack.received == []
    settle(sim, [src, dst])
    assert received_prefixes(dst, frames) == received_prefixes(src, frames) == frames
    assert_same_state(src.dev, dst.dev)


def test_e1000_statistics_stick_at_their_maximum():
    """A good-packets counter at 0xFFFFFFFF (as a stream may bring it) stays there when the next frame
    arrives (QEMU's e1000 inc_reg_if_not_full), so the device still saves."""
    sim, ledger, m = booted(E1000)
    for name in ("GPRC", "TPR", "GPTC", "TPT"):
        m.dev.r[_R[name] >> 2] = 0xFFFFFFFF
    (f,) = inbound(1)
    m.peer.send(f)
    exchange(m, [frame(PEER_MAC, GUEST_MAC, 100, random.Random(0))], [])
    settle(sim, [m])
    assert received_prefixes(m, [f]) == [f] and len(m.peer.frames) == 1
    assert all(m.dev.r[_R[name] >> 2] == 0xFFFFFFFF for name in ("GPRC", "TPR", "GPTC", "TPT"))
    load_state(bare("e1000"), save_state(m.dev))


def test_e1000_interrupt_held_by_itr_at_save_is_raised_on_the_target():
    """A cause held back by interrupt throttling (ITR) at the save is raised on the target
    when the interval ends, as on the source."""
    sim, ledger, src = booted(E1000)
    first, second = inbound(2)
    src.peer.send(first)
    run_until(sim, lambda: len(src.stack.received) == 1)
    src.peer.send(second)
    run_until(sim, lambda: src.dev.mit_timer_armed)
    dst = migrate_copy(src, ledger)
    assert dst.dev.mit_timer_armed and dst.dev.next_irq_ok == pytest.approx(src.dev.next_irq_ok)
    settle(sim, [src, dst])
    assert received_prefixes(dst, [first, second]) == received_prefixes(src, [first, second]) == [first, second]


def test_intx_line_high_at_save_is_raised_in_the_new_vm():
    """The device's INTx line asserted at the save comes up on the target's interrupt
    controller, so the guest's handler runs there and takes the frame."""
    sim, ledger, src = booted(E1000)
    (f,) = inbound(1)
    src.peer.send(f)
    run_until(sim, lambda: src.dev.irq_asserted, step=5)
    dst = migrate_copy(src, ledger)
    assert dst.vm.irqchip.level.get(dst.nic.gsi) == 1
    settle(sim, [src, dst])
    assert received_prefixes(dst, [f]) == received_prefixes(src, [f]) == [f]


@pytest.mark.parametrize("backend", ["qemu", "vhost-net"])
@pytest.mark.parametrize("resume", [True, False])
def test_virtio_buffers_made_available_before_the_save_are_sent_after_resume(backend, resume):
    """TX buffers the driver made available just before the save (the kick still in flight)
    are sent by the target once resume() rings the doorbells; without it they wait."""
    model = ("paravirt", "virtio-net", backend)
    sim, ledger, src = booted(model, before=2)
    src.vm.vcpus[0].sync(sim.now)
    rng = random.Random(5)
    frames = [frame(PEER_MAC, GUEST_MAC, 300, rng) for _ in range(3)]
    for f in frames:
        src.stack.send(f)                                  # guest code, on its vCPU, from this instant
    sim.run(until=src.vm.vcpus[0].cursor)                 # its ring stores land; the doorbell is in flight
    q = src.dev.queues[v.TX_QUEUE]
    assert (int.from_bytes(src.vm.mem.read(q.avail + 2, 2), 'little') - q.last_avail) & 0xFFFF == 3
    src.peer.frames.clear()
    dst = migrate_copy(src, ledger, resume=resume)
    settle(sim, [src, dst])
    assert src.peer.frames == frames
    assert dst.peer.frames == (frames if resume else [])


def test_bars_and_msix_come_back_where_the_guest_put_them():
    """The target maps every BAR at the address the guest programmed, MSI-X stays enabled,
    and a vector masked at the save (its message pending) is delivered when the guest unmasks it."""
    model = ("paravirt", "virtio-net", "qemu")
    sim, ledger, src = booted(model)
    driver = src.guest.netdevs[0]
    ctrl = driver.info.bars[v.MSIX_BAR][1] + 16 * 1 + 12  # RX vector's Vector Control
    src.vm.vcpus[0].mmio_write(ctrl, 4, 1)
    (f,) = inbound(1)
    src.peer.send(f)
    settle(sim, [src])
    assert src.nic.fn.msix.pending(1) and not src.stack.received
    dst = migrate_copy(src, ledger)
    for index, bar in src.nic.fn.bars.items():
        address = src.nic.fn.bar_address(index)
        space = dst.vm.pio if bar.kind == "io" else dst.vm.mmio
        assert dst.nic.fn.bar_address(index) == address and space.lookup(address) is not None
    assert dst.nic.fn.interrupt_mode == "msix" and dst.nic.fn.msix.pending(1)
    dst.vm.vcpus[0].sync(sim.now)
    dst.vm.vcpus[0].mmio_write(ctrl, 4, 0)
    settle(sim, [dst])
    assert received_prefixes(dst, [f]) == [f]


# ---- broken streams: refused whole -----------------------------------------------------------------
def bare(name: str, sim: Sim | None = None):
    """A device model on its own, not wired into a VM."""
    sim = sim or Sim()
    dma = Dma(GuestMemory(1 << 16))
    if name == "virtio-net":
        return VirtioNet(sim, GUEST_MAC, dma)
    return CLASSES[name](sim, GUEST_MAC, dma, lambda cpu, level: None, Resource("cpu", "vcpu", Ledger(PROFILE)))


def reframe(blob: bytes, version: int | None = None) -> bytes:
    """The same stream with its header's version replaced and the CRC recomputed."""
    at = 7 + blob[6]
    old, length = struct.unpack_from("<HI", blob, at)
    body = blob[:at] + struct.pack("<HI", old if version is None else version, length) + blob[at + 6:-4]
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("model", MODELS[:len(EMULATED) + 1], ids=lambda m: m[1])
def test_broken_streams_are_refused_and_leave_the_device_untouched(model):
    """A flipped byte, a cut, trailing bytes, a bumped version, another device's stream, no
    magic: each is a one-line StateError naming the fault, and the target is unchanged."""
    sim, ledger, src = booted(model, before=2)
    blob = save_state(src.dev)
    dst = machine(sim, ledger, "restored", model, boot=False)
    before = save_state(dst.dev)
    other = save_state(bare("tulip" if model[1] == "e1000" else "e1000", sim))
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x10
    cases = {"CRC mismatch": bytes(flipped), "truncated": blob[:-5], "trailing bytes": blob + b"\0",
             "version 2 not supported": reframe(blob, version=2), "stream holds": other,
             "not a device state stream": b"QEMU" + blob[4:], "format 9 not supported": blob[:4] + b"\x09\x00" + blob[6:]}
    for words, bad in cases.items():
        with pytest.raises(StateError, match=words) as err:
            load_state(dst.dev, bad)
        assert "\n" not in str(err.value)
        assert save_state(dst.dev) == before


def test_a_stream_that_does_not_fit_the_device_names_the_field():
    """A stream whose tables differ in shape from the target's (another config space size,
    queue count or capability set) is refused, naming the field."""
    e1000, target = bare("e1000"), bare("e1000")
    e1000.pci.config.data.append(0)
    with pytest.raises(StateError, match=r"^e1000\.pci\.config\.data: stream has 4097 entries, the device 4096$"):
        load_state(target, save_state(e1000))
    virtio, target = bare("virtio-net"), bare("virtio-net")
    virtio.queues.append(virtio.queues[0])
    with pytest.raises(StateError, match=r"^virtio-net\.queues: stream has 3 entries"):
        load_state(target, save_state(virtio))
    virtio.queues.pop()
    virtio.pci.msix = None
    with pytest.raises(StateError, match=r"^virtio-net\.pci\.msix: absent in the stream, present on the device$"):
        load_state(target, save_state(virtio))


_BLOBS: dict[str, bytes] = {}


def source_blob(name: str) -> bytes:
    """A state stream of a booted device that carried traffic (built once per model)."""
    if name not in _BLOBS:
        model = next(m for m in MODELS if m[1] == name)
        _BLOBS[name] = save_state(booted(model, before=3)[2].dev)
    return _BLOBS[name]


NAMES = [*EMULATED, "virtio-net"]


@st.composite
def mangled(draw) -> tuple[str, bytes]:
    """Random bytes, or a real stream cut, extended, overwritten or spliced, its CRC
    (and so its framing) fixed up or not."""
    name = draw(st.sampled_from(NAMES))
    if draw(st.booleans()) and draw(st.booleans()):
        return name, draw(st.binary(max_size=64))
    blob = bytearray(source_blob(name))
    at = draw(st.integers(0, len(blob) - 1))
    how = draw(st.sampled_from(["cut", "insert", "overwrite", "delete"]))
    chunk = draw(st.binary(min_size=1, max_size=8))
    if how == "cut":
        blob = blob[:at]
    elif how == "insert":
        blob[at:at] = chunk
    elif how == "overwrite":
        blob[at:at + len(chunk)] = chunk
    else:
        del blob[at:at + len(chunk)]
    if draw(st.booleans()) and len(blob) > 7 and len(blob) > 7 + blob[6] + 10:
        at = 7 + blob[6]
        body = bytes(blob[:at + 2]) + struct.pack("<I", len(blob) - at - 10) + bytes(blob[at + 6:-4])
        blob = bytearray(body + struct.pack("<I", zlib.crc32(body)))
    return name, bytes(blob)


@settings(max_examples=300, deadline=None)
@given(case=mangled())
def test_random_and_mangled_streams_raise_only_state_error(case):
    """Whatever the bytes, load_state either loads or raises StateError, and a refused
    stream leaves the device as it was."""
    name, blob = case
    dev = bare(name)
    before = save_state(dev)
    try:
        load_state(dev, blob)
    except StateError:
        assert save_state(dev) == before


def test_a_pending_bit_beyond_the_vectors_is_refused_before_loading():
    """A stream with a valid CRC whose MSI-X PBA has a bit past the function's vectors (virtio-net
    has 3) is refused by check_state, naming the field; it used to load and fail in post_load."""
    dev = bare("virtio-net")
    dev.pci.msix.pba[0] |= 1 << 5
    target = bare("virtio-net")
    with pytest.raises(StateError, match=r"^virtio-net\.pci\.msix\.pba: pending bit 5 set, the function has 3 "
                                         r"vectors$"):
        check_state(target, save_state(dev))


def _set(attr, value):
    """An edit of a device: ``attr`` (dotted) set to ``value``."""
    def edit(dev):
        *parents, last = attr.split(".")
        obj = dev
        for part in parents:
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        setattr(obj, last, value)
    return edit


def _reg(index, value):
    def edit(dev):
        dev.r[index] = value
    return edit


_E1000_R = {r.name: r.offset >> 2 for r in e1000_spec.REGS}
BEYOND_LIMITS = [   # a value the model can never hold, and the field and limit check_state names
    ("e1000", _set("ioaddr", 0x20000), r"e1000\.ioaddr: 0x20000 has bits outside 0x1fffc \(IOADDR selects a "
                                       r"dword of the 128 KiB register BAR\)"),
    ("e1000", _set("tx_frame", bytearray(65537)), r"e1000\.tx_frame: 65537 bytes, more than 65536"),
    ("e1000", _reg(_E1000_R["RDLEN"], 0x1234), r"e1000\.r: RDLEN 0x1234 has bits outside 0xfff80"),
    ("e1000", _reg(_E1000_R["TDT"], 0x10000), r"e1000\.r: TDT 0x10000 has bits outside 0xffff"),
    ("e1000", _set("rx_abs_deadline", float("-inf")), r"e1000\.rx_abs_deadline: instant is -inf, not a time on the "
                                                      r"clock"),
    ("e1000", _set("rx_deadline", float("inf")), r"e1000\.rx_deadline: instant is inf, not a time on the clock"),
    ("e1000", _set("pending_rx_cause", 1), r"e1000\.pending_rx_cause: 0x1 has bits outside 0x90"),
    ("rtl8139", _set("ring_size", 0), r"rtl8139\.ring_size: 0, the ring RCR.RBLEN selects is 8192 bytes"),
    ("rtl8139", _set("tx_next", 4), r"rtl8139\.tx_next: 4 is not below 4 \(transmit slots\)"),
    ("rtl8139", _set("rx_read", 8192), r"rtl8139\.rx_read: 8192 is not below 8192 \(the ring's bytes\)"),
    ("rtl8139", _set("rx_write", 6), r"rtl8139\.rx_write: 6 is not a dword offset"),
    ("rtl8139", _set("tctr_base", float("-inf")), r"rtl8139\.tctr_base: instant is -inf"),
    ("rtl8139", lambda dev: (_set("eeprom.state", 2)(dev), _set("eeprom.count", 8)(dev)),
     r"rtl8139\.eeprom\.count: 8 bits clocked in, a command has 8"),
    ("rtl8139", _set("eeprom.do", 2), r"rtl8139\.eeprom\.do: 2 is not below 2 \(a pin\)"),
    ("pcnet", _set("rap", 0x80), r"pcnet\.rap: 0x80 has bits outside 0x7f"),
    ("pcnet", _set("rx_len", 3), r"pcnet\.rx_len: 3 descriptors, not a ring length the chip takes"),
    ("pcnet", lambda dev: (_set("tx_len", 4)(dev), _set("tx_idx", 4)(dev)),
     r"pcnet\.tx_idx: 4 is not below 4 \(the ring's descriptors\)"),
    ("tulip", _set("tx_cur", 0x1002), r"tulip\.tx_cur: 0x1002 has bits outside 0xfffffffc"),
    ("tulip", _set("filter", frozenset(bytes([2, 0, 0, 0, 0, i]) for i in range(17))),
     r"tulip\.filter: 17 addresses, the perfect filter holds 16"),
    ("tulip", _set("tx_frame", bytearray(2049)), r"tulip\.tx_frame: 2049 bytes, more than 2048"),
    ("tulip", _set("srom.addr", 64), r"tulip\.srom\.addr: 64 is not below 64 \(SROM words\)"),
    ("tulip", _set("srom.left", 17), r"tulip\.srom\.left: 17 is not below 17"),
    ("tulip", lambda dev: (_set("srom.state", "command")(dev), _set("srom.count", 9)(dev)),
     r"tulip\.srom\.count: 9 bits clocked in, a command has 8"),
    ("virtio-net", _set("queues.0.size", 0), r"virtio-net\.queues: queue 0: size 0, not a power of two up to 256"),
    ("virtio-net", _set("queues.1.size", 96), r"virtio-net\.queues: queue 1: size 96, not a power of two"),
    ("virtio-net", _set("queues.1.msix_vector", 3), r"virtio-net\.queues: queue 1: MSI-X vector 3, the function "
                                                    r"has 3 \(or NO_VECTOR\)"),
    ("virtio-net", _set("config_msix_vector", 7), r"virtio-net\.config_msix_vector: MSI-X vector 7, the function "
                                                  r"has 3"),
    ("virtio-net", lambda dev: (_set("status", v.FEATURES_OK)(dev), _set("driver_features", 1 << 63)(dev)),
     r"virtio-net\.driver_features: 0x8000000000000000 accepted \(FEATURES_OK\) with bits the device does not "
     r"offer"),
    ("virtio-net", lambda dev: dev.pci.config.set(0x02, 2, 0x1234), r"virtio-net\.pci\.config\.data: byte 0x002 "
                                                                   r"is 0x34, the device's 0x41 in read-only bits"),
    ("virtio-net", lambda dev: dev.pci.msix.table.__setitem__(12, 0x3),
     r"virtio-net\.pci\.msix\.table: entry 0: Vector Control 0x3 has bits besides the Mask Bit"),
]


@pytest.mark.parametrize("name, edit, message", BEYOND_LIMITS,
                         ids=[c[2].split(":")[0].replace("\\", "") for c in BEYOND_LIMITS])
def test_a_value_beyond_the_device_limits_is_refused_naming_the_field(name, edit, message):
    """Each field is checked against the target device's limits, not only its length: a ring size of 0 (which
    divides), an index past its ring, an EEPROM clocking past its command, an instant at infinity, a vector
    past the MSI-X table, read-only configuration bits: StateError naming the field and the limit."""
    dev = bare(name)
    edit(dev)
    with pytest.raises(StateError, match=f"^{message}") as err:
        check_state(bare(name), save_state(dev))
    assert "\n" not in str(err.value)


def _leaves(state, r, obj, now, path=()):
    """(path, first byte, end) of every field the payload holds, as the reader meets them."""
    for f in state.fields:
        start, current = r.pos, f.get(obj)
        if isinstance(f, NestedList):
            f._version(r)
            r.count()
            for i, sub in enumerate(current):
                yield from _leaves(f.state, r, sub, now, (*path, f.path, str(i)))
        elif isinstance(f, Nested):
            present = r.unpack(_U8)[0] if f.optional else 1
            if present:
                f._version(r)
                yield from _leaves(f.state, r, current, now, (*path, f.path))
        else:
            f.decode(r, current, now)
        yield ".".join((*path, f.path)), start, r.pos


def payload_fields(name: str) -> tuple[int, list[tuple[str, int, int]]]:
    """Where the payload starts in the stream, and each field's bytes in it."""
    blob, dev = source_blob(name), bare(name)
    at = 7 + blob[6] + 6
    return at, [leaf for leaf in _leaves(type(dev).VMSTATE, _Reader(blob[at:-4]), dev, 0.0) if leaf[2] > leaf[1]]


SPECIAL = st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x80", b"\x01"])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_stream_that_passes_check_state_loads_without_error(name, data):
    """Payload bytes of a real stream overwritten, any field, the CRC made right again: either check_state
    refuses the stream with StateError, or load_state into a fresh device in a fresh VM raises nothing,
    and the device it gives then runs (a frame arrives, the guest reads and writes its registers, time
    passes) and saves again into a stream that loads."""
    at, fields = payload_fields(name)
    blob = bytearray(source_blob(name))
    for _ in range(data.draw(st.integers(1, 4))):
        field, start, end = data.draw(st.sampled_from(fields))
        where = at + data.draw(st.integers(start, end - 1))
        how = data.draw(st.sampled_from(["bytes", "byte", "value"]))
        if how == "bytes":
            size = data.draw(st.integers(1, min(8, at + end - where)))
            blob[where:where + size] = data.draw(st.binary(min_size=size, max_size=size))
        elif how == "byte" or end - start > 8:
            blob[where:where + 1] = data.draw(SPECIAL)
        else:                           # the whole field: an edge value of its width
            width = end - start
            value = data.draw(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 16, 17, 64, 255, 256, 4096, 8192, 1 << 63,
                                               (1 << 8 * width) - 1, (1 << 8 * width) - 2]))
            blob[at + start:at + end] = (value & (1 << 8 * width) - 1).to_bytes(width, "little")
    body = bytes(blob[:-4])
    stream = body + struct.pack("<I", zlib.crc32(body))
    model = next(m for m in MODELS if m[1] == name)
    sim = Sim()
    target = machine(sim, Ledger(PROFILE), "restored", model, boot=False)
    try:
        check_state(target.dev, stream)
    except StateError:
        return
    load_state(target.dev, stream)
    dev, cpu = target.dev, target.vm.vcpus[0]
    target.nic.resume()
    target.peer.send(frame(GUEST_MAC, PEER_MAC, 100, random.Random(0)))
    bars = sorted(dev.pci.bars.values(), key=lambda b: b.index)
    for _ in range(data.draw(st.integers(0, 12))):
        bar, offset = data.draw(st.sampled_from(bars)), data.draw(st.sampled_from(REGISTERS[name]))
        read, write = dev.bar_handlers(bar.index)
        cpu.sync(sim.now)
        if data.draw(st.booleans()):
            read(cpu, offset % bar.size & ~3, 4)
        else:
            write(cpu, offset % bar.size & ~3, 4, data.draw(st.integers(0, 0xFFFFFFFF)))
        sim.run(until=sim.now + 20_000)
    sim.run(until=sim.now + 1_000_000)
    load_state(bare(name), save_state(dev))


REGISTERS = {                           # where each model's registers are, to aim writes at them
    "e1000": [r.offset for r in e1000_spec.REGS], "rtl8139": [r.offset for r in rtl8139_spec.REGS],
    "pcnet": [pcnet_spec.RDP, pcnet_spec.RAP, pcnet_spec.BDP], "tulip": [r.offset for r in tulip_spec.REGS],
    "virtio-net": [v.COMMON_OFFSET + off for off in v.COMMON.values()] + [16 * i + 12 for i in range(3)],
}


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_whatever_the_guest_writes_the_state_saves_and_loads_exactly(name, data):
    """Random register and configuration writes of any width (a hostile guest), split as the bus
    splits them, leave a device whose state saves, and loads into a fresh one field for field."""
    sim = Sim()
    dev, cpu = bare(name, sim), Resource("vcpu", "vcpu", Ledger(PROFILE))
    bars = sorted(dev.pci.bars.values(), key=lambda b: b.index)
    offsets = st.one_of(st.sampled_from(REGISTERS.get(name, [0])), st.integers(0, 1 << 17))
    for _ in range(data.draw(st.integers(0, 40))):
        which, offset = data.draw(st.integers(0, len(bars))), data.draw(offsets)
        size = data.draw(st.sampled_from([1, 2, 4, 8]))
        value = data.draw(st.integers(0, (1 << 8 * size) - 1))
        if which == len(bars):
            dev.pci.config_write(offset % 4096 & ~3, min(size, 4), value)
        else:
            bar, write = bars[which], dev.bar_handlers(bars[which].index)[1]
            for at, n, shift in pieces(offset % bar.size & ~(size - 1), size):     # as the bus delivers it
                write(cpu, at, n, value >> shift & (1 << 8 * n) - 1)
    copy_ = bare(name, sim)
    load_state(copy_, save_state(dev))
    assert state(copy_) == state(dev)


# ---- what cannot move ---------------------------------------------------------------------------------
def test_assigned_devices_block_migration_and_software_models_do_not():
    """ixgbe (PF) and its VFs give the reason they cannot migrate, and saving one is a
    StateError with it; every software NIC model is migratable."""
    sim, ledger = Sim(), Ledger(PROFILE)
    engine = Resource("nic0/engine", "nic", ledger)
    pf = Ixgbe(sim, GUEST_MAC, Dma(GuestMemory(1 << 16), "dma"), engine, num_vfs=2)
    vf = VirtualFunction(pf.vt, 0, Dma(GuestMemory(1 << 16), "dma"))
    for dev, name in ((pf, "ixgbe"), (vf, "ixgbevf")):
        reason = migration_blocker(dev)
        assert reason.startswith(f"{name}: ") and "dirty" in reason and "\n" not in reason
        with pytest.raises(StateError, match=name):
            save_state(dev)
    assert [migration_blocker(bare(n)) for n in NAMES] == [None] * len(NAMES)
