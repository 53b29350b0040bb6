"""virtio-net over modern virtio-pci (virtio 1.1 sections 2.1, 4.1, 5.1): the
transport as a guest sees it through configuration space and BAR4, the
device's TX and RX paths and DEVICE_NEEDS_RESET, then end to end on each
backend.  Device tests use the real driver-side rings; only the backend port
is a recorder."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_virtqueue import (
    ADDRS,
    FLAGS,
    LENS,
    NEXT,
    NEXTS,
    PROFILE,
    SMALL,
    WRITE,
    Kernel,
)

import iovirt
from iovirt.devices.virtio_net import VirtioNet
from iovirt.experiments import runner
from iovirt.experiments.world import World
from iovirt.guest import kernel as guest_kernel
from iovirt.guest.drivers import virtio_net as guest_virtio_net
from iovirt.guest.drivers.virtio_ring import DriverQueue
from iovirt.mem.dma import Dma
from iovirt.sim.engine import Sim
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import virtio as v
from iovirt.spec.pci import (
    PCI_CAP_ID_MSIX,
    PCI_CAP_ID_VNDR,
    PCI_CAP_LIST_NEXT,
    PCI_CAPABILITY_LIST,
    PCI_CLASS_DEVICE,
    PCI_DEVICE_ID,
    PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_ENABLE,
    PCI_MSIX_TABLE,
    PCI_REVISION_ID,
    PCI_VENDOR_ID,
)

C, W = v.COMMON, v.COMMON_CFG.widths
MAC = bytes.fromhex("525400123456")
FEATURES = (1 << v.VIRTIO_F_VERSION_1 | 1 << v.VIRTIO_RING_F_EVENT_IDX | 1 << v.VIRTIO_NET_F_MRG_RXBUF
            | 1 << v.VIRTIO_NET_F_MAC)
STARTED = v.ACKNOWLEDGE | v.DRIVER | v.FEATURES_OK | v.DRIVER_OK
CONFIG_VECTOR, RX_VECTOR, TX_VECTOR = 0, 1, 2
HDR = bytes(v.NET_HDR.size)
QSIZE = 8


class Port:
    """The backend boundary a tap would occupy: records what the device sends."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.gso_sizes: list[int] = []

    def send(self, cpu: Resource, frame: bytes, gso_size: int = 0) -> None:
        self.frames.append(bytes(frame))
        self.gso_sizes.append(gso_size)

    def flush(self, cpu: Resource) -> None:
        pass


@dataclass
class Rig:
    kernel: Kernel
    dev: VirtioNet
    port: Port
    backend: Resource
    msis: list[int] = field(default_factory=list)
    irqs: list[int] = field(default_factory=list)
    queues: list[DriverQueue] = field(default_factory=list)

    @property
    def cpu(self) -> Resource:
        return self.kernel.vcpu

    def rd(self, name: str) -> int:
        return self.dev.modern_read(self.cpu, v.COMMON_OFFSET + C[name], W[name])

    def wr(self, name: str, value: int) -> None:
        self.dev.modern_write(self.cpu, v.COMMON_OFFSET + C[name], W[name], value)

    def wr64(self, name: str, value: int) -> None:
        """A 64-bit common field as two dword writes, low first (4.1.3.1)."""
        self.dev.modern_write(self.cpu, v.COMMON_OFFSET + C[name], 4, value & 0xFFFFFFFF)
        self.dev.modern_write(self.cpu, v.COMMON_OFFSET + C[name] + 4, 4, value >> 32)

    def rd64(self, name: str) -> int:
        at = v.COMMON_OFFSET + C[name]
        return self.dev.modern_read(self.cpu, at, 4) | self.dev.modern_read(self.cpu, at + 4, 4) << 32

    def isr(self) -> int:
        return self.dev.modern_read(self.cpu, v.ISR_OFFSET, 1)

    def negotiate(self, features: int) -> int:
        """Reset, ACKNOWLEDGE | DRIVER, write ``features``, set FEATURES_OK; the status read back."""
        self.wr("device_status", 0)
        self.wr("device_status", v.ACKNOWLEDGE | v.DRIVER)
        for word in (0, 1):
            self.wr("driver_feature_select", word)
            self.wr("driver_feature", features >> (32 * word) & 0xFFFFFFFF)
        self.wr("device_status", v.ACKNOWLEDGE | v.DRIVER | v.FEATURES_OK)
        return self.rd("device_status")

    def bring_up(self, features: int = FEATURES, msix: bool = True) -> None:
        """3.1.1 driver initialization with real driver rings, MSI-X vectors config/rx/tx."""
        assert self.negotiate(features) & v.FEATURES_OK
        if msix:
            cap = caps(self.dev)[PCI_CAP_ID_MSIX][0]
            self.dev.pci.config_write(cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE)
            self.wr("config_msix_vector", CONFIG_VECTOR)
        self.queues = []
        for index, vector in ((v.RX_QUEUE, RX_VECTOR), (v.TX_QUEUE, TX_VECTOR)):
            self.wr("queue_select", index)
            self.wr("queue_size", QSIZE)
            q = DriverQueue(self.kernel, index, QSIZE, bool(features >> v.VIRTIO_RING_F_EVENT_IDX & 1))
            for name, addr in (("queue_desc", q.desc), ("queue_driver", q.avail), ("queue_device", q.used)):
                self.wr64(name, addr)
            self.wr("queue_msix_vector", vector)
            self.wr("queue_enable", 1)
            self.queues.append(q)
        self.wr("device_status", STARTED)

    @property
    def rx(self) -> DriverQueue:
        return self.queues[v.RX_QUEUE]

    @property
    def tx(self) -> DriverQueue:
        return self.queues[v.TX_QUEUE]

    def notify(self, q: DriverQueue) -> None:
        """The doorbell: a write to the queue's slot of the notification region."""
        self.wr("queue_select", q.index)
        at = v.NOTIFY_OFFSET + self.rd("queue_notify_off") * v.NOTIFY_MULTIPLIER
        self.dev.modern_write(self.cpu, at, 2, q.index)

    def transmit(self, *frames: bytes, hdr: bytes = HDR) -> bool:
        """Queue frames (header inline) and kick if the device asked; True if it did."""
        for data in frames:
            buf = self.kernel.alloc.alloc(len(hdr) + len(data), 16)
            self.kernel.mem.write(buf, hdr + data)
            assert self.tx.add([(buf, len(hdr) + len(data), False)], data)
        kick = self.tx.kick_prepare()
        if kick:
            self.notify(self.tx)
        return kick

    def post_rx(self, *sizes: int) -> list[int]:
        bufs = [self.kernel.alloc.alloc(n, 16) for n in sizes]
        for buf, n in zip(bufs, sizes):
            self.rx.add([(buf, n, True)], buf)
        self.rx.kick_prepare()
        return bufs

    def deliver(self, data: bytes) -> bool:
        """What the tap does: ask, then hand over."""
        if not self.dev.can_receive(len(data)):
            return False
        self.dev.receive(self.backend, data)
        return True

    @property
    def needs_reset(self) -> bool:
        return bool(self.rd("device_status") & v.DEVICE_NEEDS_RESET)


def serve(dev: VirtioNet, backend: Resource, queue: int) -> None:
    """The backend thread: it comes back to the queue until a look finds nothing and it sleeps."""
    for _ in range(64):
        if not dev.kick(backend, queue):
            return


def rig(mem_size: int = 1 << 20) -> Rig:
    ledger = Ledger(PROFILE)
    kernel = Kernel(ledger, mem_size)
    dev = VirtioNet(Sim(), MAC, Dma(kernel.mem))
    dev.port = Port()
    r = Rig(kernel, dev, dev.port, Resource("backend", "host_thread", ledger))
    dev.port.reader = r.backend                     # the thread that reads the tap asks can_receive
    dev.kick_hook = lambda cpu, queue: serve(dev, r.backend, queue)
    dev.msi_hook = lambda cpu, vector: r.msis.append(vector)
    dev.irq = lambda cpu, level: r.irqs.append(level)
    return r


def caps(dev: VirtioNet) -> dict[int, list[int]]:
    """Capability offsets by ID, walking the list as a guest does."""
    found: dict[int, list[int]] = {}
    at = dev.pci.config_read(PCI_CAPABILITY_LIST, 1)
    for _ in range(48):
        if at < 0x40:
            break
        found.setdefault(dev.pci.config_read(at, 1), []).append(at)
        at = dev.pci.config_read(at + PCI_CAP_LIST_NEXT, 1)
    return found


def frame(size: int = 60, seed: int = 0) -> bytes:
    return MAC + bytes.fromhex("020000000001") + b"\x08\x00" + bytes((seed + 7 * i) & 0xFF for i in range(size - 14))


# ---- PCI identity, capabilities, configuration (4.1.2, 4.1.4, 5.1.4) ----------------------------
def test_pci_identity_and_vendor_capabilities_point_into_bar4():
    """0x1AF4:0x1041 rev 1 Ethernet; common/notify/ISR/device capabilities name BAR4 regions; MSI-X table in BAR1."""
    r = rig()
    cfg = r.dev.pci.config_read
    assert (cfg(PCI_VENDOR_ID, 2), cfg(PCI_DEVICE_ID, 2), cfg(PCI_CLASS_DEVICE, 2)) == (0x1AF4, 0x1041, 0x0200)
    assert cfg(PCI_REVISION_ID, 1) >= 1
    found = {}
    for at in caps(r.dev)[PCI_CAP_ID_VNDR]:
        cap = {name: cfg(at + off, v.PCI_CAP.widths[name]) for name, off in v.PCI_CAP.offsets.items()}
        found[cap["cfg_type"]] = cap
        assert cap["bar"] == v.MODERN_BAR and cap["offset"] + cap["length"] <= v.MODERN_BAR_SIZE
        if cap["cfg_type"] == v.VIRTIO_PCI_CAP_NOTIFY_CFG:
            assert cap["cap_len"] >= 20 and cfg(at + v.NOTIFY_OFF_MULTIPLIER, 4) == v.NOTIFY_MULTIPLIER
    assert {t: c["offset"] for t, c in found.items()} == {
        v.VIRTIO_PCI_CAP_COMMON_CFG: v.COMMON_OFFSET, v.VIRTIO_PCI_CAP_ISR_CFG: v.ISR_OFFSET,
        v.VIRTIO_PCI_CAP_DEVICE_CFG: v.DEVICE_OFFSET, v.VIRTIO_PCI_CAP_NOTIFY_CFG: v.NOTIFY_OFFSET}
    assert found[v.VIRTIO_PCI_CAP_COMMON_CFG]["length"] >= v.COMMON_CFG.size
    msix = caps(r.dev)[PCI_CAP_ID_MSIX][0]
    assert cfg(msix + PCI_MSIX_TABLE, 4) & 7 == v.MSIX_BAR and cfg(msix + PCI_MSIX_FLAGS, 2) & 0x7FF == 2


def test_device_config_holds_mac_link_up_and_two_queues():
    """The device-specific region carries the MAC and VIRTIO_NET_S_LINK_UP; num_queues is receiveq1 + transmitq1."""
    r = rig()
    read = functools.partial(r.dev.modern_read, r.cpu)
    assert bytes(read(v.DEVICE_OFFSET + v.NET_CONFIG_MAC + i, 1) for i in range(6)) == MAC
    assert read(v.DEVICE_OFFSET + v.NET_CONFIG.offset("status"), 2) & v.VIRTIO_NET_S_LINK_UP
    assert r.rd("num_queues") == 2


# ---- status and features (2.1, 2.2) ---------------------------------------------------------------
def test_status_zero_resets_the_device():
    """Writing 0 to device_status resets status, features, vectors and every queue."""
    r = rig()
    r.bring_up()
    assert r.rd("device_status") == STARTED
    r.wr("device_status", 0)
    assert r.rd("device_status") == 0 and r.rd("driver_feature") == 0
    assert r.rd("config_msix_vector") == v.VIRTIO_MSI_NO_VECTOR
    for index in (v.RX_QUEUE, v.TX_QUEUE):
        r.wr("queue_select", index)
        assert (r.rd("queue_enable"), r.rd("queue_size"), r.rd64("queue_desc")) == (0, v.QUEUE_SIZE_MAX, 0)


def test_device_feature_select_windows():
    """device_feature shows bits 0-31 with select 0, 32-63 with select 1, nothing beyond."""
    r = rig()
    words = []
    for select in (0, 1, 2):
        r.wr("device_feature_select", select)
        words.append(r.rd("device_feature"))
    offered = words[0] | words[1] << 32
    for bit in (v.VIRTIO_F_VERSION_1, v.VIRTIO_RING_F_EVENT_IDX, v.VIRTIO_NET_F_MRG_RXBUF, v.VIRTIO_NET_F_MAC):
        assert offered >> bit & 1
    assert words[1] & 1 and words[2] == 0


@pytest.mark.parametrize("features", [
    FEATURES | 1 << v.VIRTIO_NET_F_GUEST_ECN,           # not offered
    FEATURES | 1 << 40,                                  # not offered, high word
    FEATURES & ~(1 << v.VIRTIO_F_VERSION_1),             # legacy driver on a modern-only device
])
def test_features_ok_refused(features):
    """FEATURES_OK does not stick for an unoffered feature or without VIRTIO_F_VERSION_1 (2.2.2)."""
    assert not rig().negotiate(features) & v.FEATURES_OK


def test_features_ok_fixes_features_and_ring_options():
    """Accepted features are frozen; EVENT_IDX and INDIRECT_DESC apply to every queue."""
    r = rig()
    wanted = FEATURES | 1 << v.VIRTIO_RING_F_INDIRECT_DESC
    assert r.negotiate(wanted) & v.FEATURES_OK
    r.wr("driver_feature_select", 0)
    r.wr("driver_feature", 0)                            # too late
    assert r.rd("driver_feature") == wanted & 0xFFFFFFFF
    r.wr("driver_feature_select", 1)
    assert r.rd("driver_feature") == wanted >> 32
    assert all(q.event_idx and q.indirect for q in r.dev.queues)


def test_queue_fields_writable_until_enabled():
    """Size (power of two <= max) and the 64-bit ring addresses change until queue_enable; the vector always."""
    r = rig()
    r.negotiate(FEATURES)
    r.wr("queue_select", v.TX_QUEUE)
    for bad in (0, 3, 2 * v.QUEUE_SIZE_MAX):
        r.wr("queue_size", bad)
    assert r.rd("queue_size") == v.QUEUE_SIZE_MAX
    r.wr("queue_size", 64)
    r.wr64("queue_desc", 0x1_2345_6000)
    r.wr64("queue_device", 0x7000)
    r.wr("queue_enable", 1)
    r.wr("queue_size", 32)
    r.wr64("queue_desc", 0x8000)
    r.wr("queue_msix_vector", 2)
    assert (r.rd("queue_size"), r.rd64("queue_desc"), r.rd64("queue_device")) == (64, 0x1_2345_6000, 0x7000)
    assert (r.rd("queue_enable"), r.rd("queue_msix_vector")) == (1, 2)
    r.wr("queue_select", v.RX_QUEUE)
    assert (r.rd("queue_size"), r.rd("queue_enable"), r.rd64("queue_desc")) == (v.QUEUE_SIZE_MAX, 0, 0)
    r.wr("queue_select", 7)                              # no such queue: reads 0, writes ignored
    r.wr("queue_size", 16)
    assert r.rd("queue_size") == 0


# ---- interrupts (4.1.4.5, 4.1.5.4) --------------------------------------------------------------
def test_isr_read_clears_and_lowers_intx():
    """Without MSI-X a used buffer sets ISR bit 0 and raises INTx; reading ISR returns and clears it, lowers INTx."""
    r = rig()
    r.bring_up(msix=False)
    r.irqs.clear()                                        # the reset during bring-up lowered the line
    r.post_rx(2048)
    assert r.deliver(frame())
    assert r.irqs == [1] and r.msis == []
    assert r.isr() == v.VIRTIO_PCI_ISR_QUEUE
    assert r.irqs == [1, 0] and r.isr() == 0


def test_msix_vector_per_queue():
    """With MSI-X each queue signals its own vector, ISR stays clear; VIRTIO_MSI_NO_VECTOR silences a queue."""
    r = rig()
    r.bring_up()
    r.post_rx(2048)
    r.deliver(frame())
    r.transmit(frame())
    assert r.msis == [RX_VECTOR, TX_VECTOR] and r.isr() == 0 and 1 not in r.irqs
    r.wr("queue_select", v.TX_QUEUE)
    r.wr("queue_msix_vector", v.VIRTIO_MSI_NO_VECTOR)
    r.tx.get_used()
    r.tx.enable_cb()
    r.transmit(frame())
    assert r.msis == [RX_VECTOR, TX_VECTOR] and len(r.port.frames) == 2


# ---- transmit ---------------------------------------------------------------------------------------
def test_tx_drains_per_doorbell_and_rearms_kicks():
    """One doorbell sends every published frame in order, header stripped; no kick while the backend has not run."""
    r = rig()
    r.bring_up()
    frames = [frame(60 + i, i) for i in range(5)]
    assert r.transmit(*frames[:3])
    assert r.port.frames == frames[:3]
    doorbells = []
    r.dev.kick_hook = lambda cpu, queue: doorbells.append(queue)      # backend thread not yet scheduled
    assert r.transmit(frames[3]) and not r.transmit(frames[4])
    assert doorbells == [v.TX_QUEUE] and r.port.frames == frames[:3]
    r.dev.kick(r.backend, v.TX_QUEUE)
    assert r.port.frames == frames


def test_tx_checksum_offload_completes_the_checksum():
    """VIRTIO_NET_HDR_F_NEEDS_CSUM: the device stores the checksum so the covered bytes sum to 0xFFFF."""
    r = rig()
    r.bring_up(FEATURES | 1 << v.VIRTIO_NET_F_CSUM)
    data = frame(101, 5)
    start, offset = 34, 6                                 # a UDP header after Ethernet + IPv4
    data = data[: start + offset] + b"\0\0" + data[start + offset + 2 :]
    r.transmit(data, hdr=v.NET_HDR.pack(v.VIRTIO_NET_HDR_F_NEEDS_CSUM, v.VIRTIO_NET_HDR_GSO_NONE, 0, 0, start, offset, 0))
    sent = r.port.frames[0]
    covered = sent[start:] + b"\0" * (len(sent[start:]) & 1)
    total = sum(int.from_bytes(covered[i : i + 2], "big") for i in range(0, len(covered), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF and sent[:start] == data[:start]


def tcp_packet(payload: int) -> bytes:
    """An Ethernet/IPv4/TCP frame with ``payload`` bytes of data."""
    ip = bytes([0x45, 0]) + (40 + payload).to_bytes(2, "big") + bytes(5) + b"\x06" + bytes(10)
    return bytes(12) + b"\x08\x00" + ip + bytes(12) + b"\x50\x10" + bytes(6) + bytes(range(256)) * (payload // 256) \
        + bytes(payload % 256)


@pytest.mark.parametrize("negotiated, gso_size, sent", [
    (True, 1460, [1460]),           # HOST_TSO4: one frame of 64 KB handed on with its segment size
    (True, 40, []),                 # below any TCP MSS: a bad header, dropped
    (False, 1460, [0]),             # not negotiated: the type is ignored, the frame goes as it is
])
def test_host_tso4_hands_a_gso_packet_on_whole(negotiated, gso_size, sent):
    r = rig(mem_size=1 << 21)
    r.bring_up(FEATURES | 1 << v.VIRTIO_NET_F_CSUM | (1 << v.VIRTIO_NET_F_HOST_TSO4 if negotiated else 0))
    data = tcp_packet(60000)
    r.transmit(data, hdr=v.NET_HDR.pack(v.VIRTIO_NET_HDR_F_NEEDS_CSUM if not negotiated else 0,
                                        v.VIRTIO_NET_HDR_GSO_TCPV4, 54, gso_size, 34, 16, 0))
    assert r.port.gso_sizes == sent
    assert (r.dev.errors["tx_bad_gso"] == 1) == (not sent)
    if sent:
        assert len(r.port.frames[0]) == len(data)


# ---- receive ----------------------------------------------------------------------------------------
def test_mergeable_rx_spreads_a_frame_and_counts_buffers():
    """MRG_RXBUF: a 1500-byte frame fills three 512-byte buffers behind one header with num_buffers = 3."""
    r = rig()
    r.bring_up()
    bufs = r.post_rx(*[512] * 8)
    data = frame(1500, 9)
    assert r.deliver(data)
    used = [r.rx.get_used() for _ in range(3)]
    assert [b for b, _ in used] == bufs[:3] and [n for _, n in used] == [512, 512, len(data) + 12 - 1024]
    got = b"".join(r.kernel.mem.read(b, n) for b, n in used)
    assert v.NET_HDR.unpack_from(got)[6] == 3 and got[12:] == data
    assert r.rx.get_used() is None and r.msis == [RX_VECTOR]


def test_num_buffers_goes_through_the_first_chains_segments():
    """A header split over the first chain's segments gets num_buffers where they put it, nothing past them."""
    r = rig()
    r.bring_up()
    small, rest = r.kernel.alloc.alloc(64, 16), r.kernel.alloc.alloc(512, 16)
    r.kernel.mem.write(small, b"\xee" * 64)
    r.rx.add([(small, 8, True), (rest, 120, True)], "first")
    r.post_rx(512, 512)
    data = frame(1000, 4)
    assert r.deliver(data)
    assert r.kernel.mem.read(small + 8, 56) == b"\xee" * 56
    assert r.kernel.mem.read(rest + 2, 2) == (3).to_bytes(2, "little")
    got = r.kernel.mem.read(small, 8) + r.kernel.mem.read(rest, 120)
    assert got[12:] == data[:116] and not r.needs_reset


def test_rx_without_mergeable_drops_a_frame_too_big_for_one_chain():
    """Without MRG_RXBUF a frame longer than its chain is dropped and the chain returned empty."""
    r = rig()
    r.bring_up(FEATURES & ~(1 << v.VIRTIO_NET_F_MRG_RXBUF))
    r.post_rx(512, 512)
    r.deliver(frame(1500))
    assert r.rx.get_used()[1] == 0 and r.dev.errors["rx_dropped"] == 1
    assert r.rx.get_used() is None and not r.needs_reset


# ---- DEVICE_NEEDS_RESET (2.1.2) ------------------------------------------------------------------------
def publish_loop(mem, q: DriverQueue, buf: int) -> None:
    """Add a one-buffer chain, rewrite its descriptor to point NEXT at itself, publish it."""
    writable = q.index == v.RX_QUEUE
    q.add([(buf, 64, writable)], "loop")
    head = v.U16.unpack_from(mem.buf, q.avail + v.VIRTQ_AVAIL_RING + 2 * ((q.avail_idx - 1) % q.size))[0]
    mem.store(v.VIRTQ_DESC.struct, q.desc + 16 * head, buf, 64, NEXT | (WRITE if writable else 0), head)
    q.kick_prepare()


def looping_chain(r: Rig, q: DriverQueue) -> None:
    publish_loop(r.kernel.mem, q, r.kernel.alloc.alloc(64, 16))


def avail_idx_jump(r: Rig, q: DriverQueue) -> None:
    r.kernel.mem.store(v.U16, q.avail + v.VIRTQ_AVAIL_IDX, (q.avail_idx + q.size + 1) & 0xFFFF)


def readable_rx_chain(r: Rig, q: DriverQueue) -> None:
    q.add([(r.kernel.alloc.alloc(2048, 16), 2048, False)], "readable")
    q.kick_prepare()


def check_needs_reset(r: Rig, msix: bool, generation: int) -> None:
    """DEVICE_NEEDS_RESET is set, config_generation moved, and a configuration interrupt went out."""
    assert r.needs_reset and r.rd("config_generation") != generation
    if msix:
        assert r.msis[-1] == CONFIG_VECTOR
    else:
        assert r.irqs[-1] == 1 and r.isr() == v.VIRTIO_PCI_ISR_CONFIG


@pytest.mark.parametrize("msix", [True, False])
@pytest.mark.parametrize("breaker", [looping_chain, avail_idx_jump])
def test_broken_tx_ring_needs_reset_and_stops_until_reset(breaker, msix):
    """A broken TX ring sets DEVICE_NEEDS_RESET with a config interrupt; nothing moves until the driver resets."""
    r = rig()
    r.bring_up(msix=msix)
    r.transmit(frame(seed=1))
    r.isr()
    generation = r.rd("config_generation")
    breaker(r, r.tx)
    r.notify(r.tx)
    check_needs_reset(r, msix, generation)
    r.wr("device_status", STARTED)                        # the driver's status writes keep the bit
    r.post_rx(2048)
    r.notify(r.tx)
    assert r.needs_reset and r.port.frames == [frame(seed=1)] and not r.deliver(frame())
    r.wr("device_status", 0)
    assert r.rd("device_status") == 0
    r.bring_up(msix=msix)
    r.transmit(frame(seed=2))
    assert r.port.frames == [frame(seed=1), frame(seed=2)]


@pytest.mark.parametrize("breaker", [looping_chain, avail_idx_jump, readable_rx_chain])
def test_broken_rx_ring_needs_reset(breaker):
    """A broken RX ring (loop, idx jump, no writable buffer) sets DEVICE_NEEDS_RESET; the device then takes no frame."""
    r = rig()
    r.bring_up()
    r.post_rx(2048)
    assert r.deliver(frame(seed=1))
    generation = r.rd("config_generation")
    breaker(r, r.rx)
    r.deliver(frame(seed=2))
    check_needs_reset(r, True, generation)
    r.post_rx(2048)
    assert not r.deliver(frame(seed=3)) and not r.dev.can_receive(60)


# ---- property: whatever the rings say ------------------------------------------------------------------------
BUFS_AT = 0x8000
MUTANT = st.one_of(ADDRS, LENS, FLAGS, NEXTS)


@pytest.mark.parametrize("queue", [v.RX_QUEUE, v.TX_QUEUE])
@settings(max_examples=80, deadline=None)
@given(lens=st.lists(st.sampled_from([4, 8, 12, 64, 512, 2048]), min_size=8, max_size=8),
       mutations=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3), MUTANT), max_size=3),
       heads=st.lists(st.integers(0, 8), min_size=8, max_size=8), idx=st.integers(0, 9),
       sizes=st.lists(st.integers(14, 3000), min_size=1, max_size=4), merge=st.booleans())
def test_random_ring_never_crashes_the_device_nor_writes_outside(queue, lens, mutations, heads, idx, sizes, merge):
    """A ring of plausible chains with random fields overwritten: doorbells and frames never raise out of the
    device, and it writes only the used rings and buffers named writable."""
    r = rig(SMALL)
    features = FEATURES | 1 << v.VIRTIO_RING_F_INDIRECT_DESC
    r.bring_up(features if merge else features & ~(1 << v.VIRTIO_NET_F_MRG_RXBUF))
    mem, q = r.kernel.mem, r.queues[queue]
    table = [[BUFS_AT + 0x800 * i, n, WRITE if queue == v.RX_QUEUE else 0, 0] for i, n in enumerate(lens)]
    for i, which, value in mutations:
        table[i][which] = value & (1 << 8 * (8, 4, 2, 2)[which]) - 1
    for i, d in enumerate(table):
        v.VIRTQ_DESC.struct.pack_into(mem.buf, q.desc + 16 * i, *d)
    for i, head in enumerate(heads):
        v.U16.pack_into(mem.buf, q.avail + v.VIRTQ_AVAIL_RING + 2 * i, head)
    v.U16.pack_into(mem.buf, q.avail + v.VIRTQ_AVAIL_IDX, idx)
    before = bytes(mem.buf)
    for size in sizes:
        r.notify(r.tx)
        r.deliver(frame(size))
    after = bytes(mem.buf)
    allowed = [range(q.used, q.used + v.used_size(q.size)) for q in r.queues]
    allowed += [range(a, a + n) for snap in (before, after)
                for a, n, f, _ in v.VIRTQ_DESC.struct.iter_unpack(snap) if f & WRITE]
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert all(any(i in span for span in allowed) for i in changed)
    assert all(len(f) <= 65550 for f in r.port.frames)


# ---- end to end ---------------------------------------------------------------------------------------------------
BACKENDS = ("qemu", "vhost-net", "vhost-user")
WORKLOADS = {
    "stream": {"type": "udp_stream", "src": "vm1", "dst": "vm2", "packet_size": 1500, "duration_ms": 2},
    "ping": {"type": "ping", "src": "vm1", "dst": "vm2", "count": 5, "duration_ms": 5},
}
EVENT_IDX_OFF = guest_virtio_net.WANTED & ~(1 << v.VIRTIO_RING_F_EVENT_IDX)


def scenario(backend: str, *workloads: dict, vms: int = 2) -> iovirt.Scenario:
    """``vms`` VMs on one host with one NIC each: e1000 emulated, or virtio-net on ``backend``."""
    nic = {"model": "emulated", "device": "e1000"} if backend == "e1000" else \
        {"model": "paravirt", "device": "virtio-net", "backend": backend}
    return iovirt.Scenario.from_dict({
        "name": f"virtio-{backend}", "profile": "default", "hosts": [{"name": "host0", "cores": 8}],
        "vms": [{"name": f"vm{i}", "host": "host0", "nics": [{**nic, "mac": f"52:54:00:00:00:{i:02x}",
                                                             "ip": f"10.0.0.{i}/24"}]} for i in range(1, vms + 1)],
        "workloads": list(workloads)})


@functools.cache
def run(backend: str, kind: str) -> dict:
    return iovirt.run(scenario(backend, WORKLOADS[kind])).to_dict()


def per_packet(result: dict, event: str) -> float:
    return result["flows"][0]["events_per_packet"].get(event, 0.0)


def host_cpu_per_frame(result: dict) -> float:
    """Busy time of the host's cores (every thread runs on one) in the window per frame delivered in it
    (a backend that is the bottleneck still delivers its backlog after the window)."""
    busy = sum(r["busy_s"] for r in result["resources"] if r["kind"] == "host_core")
    return busy / (result["flows"][0]["pps"] * result["sim_time_s"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_and_ping_arrive_intact_and_in_order(backend):
    """On each backend every UDP frame and every ping arrives, intact and in order."""
    for kind in WORKLOADS:
        flow = run(backend, kind)["flows"][0]
        assert flow["sent"] == flow["delivered"] > 0
        assert flow["corrupted"] == flow["out_of_order"] == flow["dropped"] == 0
    assert run(backend, "stream")["flows"][0]["delivered"] > 100


def test_virtio_takes_far_fewer_exits_per_frame_than_e1000():
    """Per 1500-byte frame each virtio backend exits less than 1/1.5 as often as emulated e1000."""
    e1000 = per_packet(run("e1000", "stream"), "vm_exit")
    for backend in BACKENDS:
        assert 1.5 * per_packet(run(backend, "stream"), "vm_exit") < e1000


def backend_cpu_per_frame(result: dict) -> float:
    """Busy time of the host's own threads (the backends, not the vCPUs) in the window per frame delivered."""
    busy = sum(r["busy_s"] for r in result["resources"] if r["kind"] == "host_thread")
    return busy / (result["flows"][0]["pps"] * result["sim_time_s"])


def test_vhost_net_costs_the_host_less_per_frame_than_qemu():
    """In-kernel vhost-net's backend spends less host CPU per delivered frame than QEMU's userspace
    backend (no tap syscalls), though it wakes and interrupts more often: it keeps up frame by frame."""
    assert backend_cpu_per_frame(run("vhost-net", "stream")) < backend_cpu_per_frame(run("qemu", "stream"))


def test_vhost_user_polls_a_full_core_instead_of_taking_kicks():
    """vhost-user: (almost) no ioeventfd per packet, even on a ping where QEMU's sleeping thread takes a kick
    for each frame (two a round trip); its PMD core is busy even when only a slow ping runs."""
    for kind in ("stream", "ping"):
        assert per_packet(run("vhost-user", kind), "ioeventfd") < 0.01
    assert per_packet(run("qemu", "ping"), "ioeventfd") == 2
    pmds = [r for r in run("vhost-user", "ping")["resources"] if r["name"].endswith("/vhost-user-pmd")]
    assert len(pmds) == 2 and all(r["utilization"] > 0.95 for r in pmds)


def test_vhost_user_pmd_switches_frames_at_its_own_price():
    """The vhost-user PMD is the user-space switch: one dpdk_switch per frame and no Linux-bridge vswitch;
    the kernel backends' frames still cross the bridge."""
    polled = run("vhost-user", "stream")
    assert per_packet(polled, "dpdk_switch") == pytest.approx(1, abs=0.01) and per_packet(polled, "vswitch") == 0
    for backend in ("qemu", "vhost-net"):
        bridged = run(backend, "stream")
        assert per_packet(bridged, "vswitch") == pytest.approx(1, abs=0.01)
        assert per_packet(bridged, "dpdk_switch") == 0


def test_ping_latency_lowest_with_vhost_user():
    """Median ping RTT: vhost-user (polled, no wake-ups) < vhost-net < qemu."""
    p50 = {b: run(b, "ping")["flows"][0]["latency_us"]["p50"] for b in BACKENDS}
    assert p50["vhost-user"] < p50["vhost-net"] < p50["qemu"]


@pytest.mark.parametrize("backend", ["qemu", "vhost-net"])
def test_without_event_idx_more_kicks_and_interrupts(backend, monkeypatch):
    """A driver loaded without VIRTIO_RING_F_EVENT_IDX takes at least as many kicks and interrupts per packet."""
    monkeypatch.setitem(guest_kernel.DRIVERS, (v.VENDOR_ID, v.DEVICE_ID_NET),
                        (functools.partial(guest_virtio_net.VirtioNetDriver, features=EVENT_IDX_OFF),))
    world = World(scenario(backend, WORKLOADS["stream"]))
    assert not any(nic.device.has(v.VIRTIO_RING_F_EVENT_IDX) for vm in world.vms.values() for nic in vm.nics)
    off, on = iovirt.run(scenario(backend, WORKLOADS["stream"])).to_dict(), run(backend, "stream")
    assert off["flows"][0]["delivered"] == off["flows"][0]["sent"] > 100
    for event in ("ioeventfd", "interrupt"):
        assert per_packet(off, event) >= per_packet(on, event)


def sender_backend(backend: str, workload: dict, monkeypatch) -> tuple[int, float, int]:
    """Run ``workload`` vm1 -> vm2: the kicks vm1's driver made, the wake-ups charged on vm1's backend
    thread (which only transmits) and the frames delivered."""
    worlds = []

    class Kept(World):
        def start_measuring(self, at: int) -> None:
            super().start_measuring(at)
            worlds.append(self)

    monkeypatch.setattr(runner, "World", Kept)
    flow = runner.run(scenario(backend, workload)).to_dict()["flows"][0]
    (world,) = worlds
    worker = world.vms["vm1"].nics[0].worker
    assert flow["sent"] == flow["delivered"] > 50
    return world.vms["vm1"].acct["ioeventfd"], worker.spent["wakeup"] / worker.ledger.fixed["wakeup"], \
        flow["delivered"]


@pytest.mark.parametrize("backend", ["qemu", "vhost-net"])
def test_a_running_backend_takes_work_without_kicks_or_wakeups(backend, monkeypatch):
    """While the backend thread works through the TX ring its kicks stay off and it picks up what the driver
    adds meanwhile: under a saturating stream only a sleeping thread is kicked, each kick wakes it once, and
    wake-ups per frame are far below one; frames 50 us apart find it asleep every time: a kick and a
    wake-up each."""
    kicks, wakeups, frames = sender_backend(backend, WORKLOADS["stream"], monkeypatch)
    assert kicks == pytest.approx(wakeups, abs=2)
    assert wakeups / frames < 0.25
    slow = {**WORKLOADS["stream"], "rate_pps": 20_000, "duration_ms": 5}
    kicks, wakeups, frames = sender_backend(backend, slow, monkeypatch)
    assert kicks / frames == pytest.approx(1, abs=0.02) and wakeups / frames == pytest.approx(1, abs=0.02)


def break_tx_ring(guest) -> None:
    """A hostile guest: publish a TX chain whose descriptor points NEXT at itself, then ring the doorbell."""
    driver = guest.netdevs[0]
    publish_loop(guest.mem, driver.tx, driver.tx_bufs[0])
    guest.vcpu.mmio_write(driver.tx.notify, 2, driver.tx.index)


def test_hostile_guest_breaks_only_its_own_device(monkeypatch):
    """vm1 loops its TX ring mid-run: its device sets DEVICE_NEEDS_RESET and tells it; vm3 -> vm4 loses nothing."""
    worlds = []

    class HostileWorld(World):
        def start_measuring(self, at: int) -> None:
            super().start_measuring(at)
            worlds.append(self)
            self.guests["vm1"].run_at(at + 500_000, lambda: break_tx_ring(self.guests["vm1"]))

    monkeypatch.setattr(runner, "World", HostileWorld)
    streams = [{**WORKLOADS["stream"], "src": f"vm{a}", "dst": f"vm{a + 1}"} for a in (1, 3)]
    flows = runner.run(scenario("qemu", *streams, vms=4)).to_dict()["flows"]
    (world,) = worlds
    device = world.vms["vm1"].nics[0].device
    assert device.status & v.DEVICE_NEEDS_RESET and device.errors["tx"] == 1
    assert world.guests["vm1"].stats["virtio_device_needs_reset"] == 1
    hostile, victim = flows
    assert 0 < hostile["delivered"] < victim["delivered"] and hostile["corrupted"] == 0
    assert victim["sent"] == victim["delivered"] > 100 and victim["corrupted"] == victim["out_of_order"] == 0
    assert not world.vms["vm3"].nics[0].device.errors and not world.vms["vm4"].nics[0].device.errors


@given(st.integers(0, 15), st.binary(min_size=40, max_size=3000), st.integers(0, 0xFFFF))
@settings(deadline=None, max_examples=200)
def test_any_gso_packet_a_guest_writes_is_refused_or_cut_without_a_fault(ihl, rest, gso_size):
    """Whatever IPv4 header length and bytes follow a TCPV4 GSO header, the
    device refuses the packet or hands it on, and cutting what it hands on
    never raises."""
    from iovirt.net.gso import GsoFrame, segment
    data = bytes(12) + b"\x08\x00" + bytes([0x40 | ihl]) + rest[:8] + b"\x06" + rest[8:]
    r = rig()
    r.bring_up(FEATURES | 1 << v.VIRTIO_NET_F_CSUM | 1 << v.VIRTIO_NET_F_HOST_TSO4)
    r.transmit(data, hdr=v.NET_HDR.pack(0, v.VIRTIO_NET_HDR_GSO_TCPV4, 54, gso_size, 34, 16, 0))
    for frame, size in zip(r.port.frames, r.port.gso_sizes):
        assert size >= 88
        for piece in segment(GsoFrame.of(frame, size)):
            assert len(piece) <= len(frame)
