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

from iovirt.devices.e1000 import E1000
from iovirt.devices.ixgbe import Ixgbe
from iovirt.devices.ixgbe_sriov import SriovEngine, VfConfig, VirtualFunction
from iovirt.devices.pcnet import PCNet
from iovirt.devices.rtl8139 import RTL8139
from iovirt.devices.tulip import Tulip
from iovirt.devices.virtio_net import VirtioNet
from iovirt.devices.vmstate import StateError, load_state, migration_blocker, save_state
from iovirt.guest.kernel import GuestKernel
from iovirt.hypervisor.emulation import EmulatedNic
from iovirt.hypervisor.host import Host
from iovirt.hypervisor.paravirt import VirtioNic
from iovirt.hypervisor.vm import VM
from iovirt.hypervisor.vswitch import Port
from iovirt.mem.dma import Dma
from iovirt.mem.guest_memory import PAGE_SIZE, GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import e1000 as e1000_spec
from iovirt.spec import virtio as v

PROFILE = load_profile("default")
GUEST_MAC = bytes.fromhex("525400000001")
PEER_MAC = bytes.fromhex("5254000000fe")
ETHERTYPE = b"\x88\xb5"                # IEEE local experimental: no stack in the way
MEMORY_MB = 24
EMULATED = ("e1000", "rtl8139", "pcnet", "tulip")
MODELS = [("emulated", d, None) for d in EMULATED] + [("paravirt", "virtio-net", b) for b in ("qemu", "vhost-net")]
CLASSES = {"e1000": E1000, "rtl8139": RTL8139, "pcnet": PCNet, "tulip": Tulip}


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

    def receive(self, frame: bytes) -> None:
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
@settings(max_examples=4, deadline=None)
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
    assert [f[:len(g)] for f, g in zip(src.peer.frames, out)] == out
    assert dst.peer.frames == src.peer.frames
    assert [f[:len(g)] for f, g in zip(src.stack.received, inb)] == inb
    assert dst.stack.received == src.stack.received
    assert_same_state(src.dev, dst.dev)
    assert dst.vm.stats["unassigned_access"] == 0
