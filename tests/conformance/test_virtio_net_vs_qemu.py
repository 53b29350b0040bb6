"""virtio-net over modern virtio-pci against QEMU 7.2's virtio-net-pci
(``disable-legacy=on``): each script runs unchanged on QEMU (over qtest) and
on iovirt's model, and the two must agree.  The scripts are the driver: they
walk the vendor capabilities, negotiate through the common configuration,
lay out split virtqueues in guest memory with the spec's layouts and ring
the doorbell; interrupts are INTx with the ISR register.  Where the two
differ the virtio 1.1 spec (OASIS cs01) decides; those tests assert both
values and cite the section."""

from __future__ import annotations

import pytest

from iovirt.devices.virtio_net import VirtioNet
from iovirt.sim.engine import Sim
from iovirt.sim.resource import Resource
from iovirt.spec import virtio as v
from iovirt.spec.pci import (
    PCI_CAP_ID_MSIX, PCI_CAP_ID_VNDR, PCI_CLASS_REVISION, PCI_DEVICE_ID, PCI_INTERRUPT_PIN, PCI_MSIX_FLAGS,
    PCI_MSIX_FLAGS_QSIZE, PCI_SUBSYSTEM_VENDOR_ID, PCI_VENDOR_ID,
)

from .nic import MAC, Nic, NicModel, agree, bar_masks, capabilities, pair_fixture, run

KICK_ROUNDS = 16


def wired_virtio_net(sim: Sim, mac: bytes, dma, irq, timer_cpu: Resource) -> VirtioNet:
    """iovirt's device with the doorbell as the para-virt wiring has it: the
    write wakes the backend thread, which runs the queue until it is drained."""
    device = VirtioNet(sim, mac, dma)
    device.irq = irq

    def backend(queue: int) -> None:
        timer_cpu.sync(sim.now)
        for _ in range(KICK_ROUNDS):
            if not device.kick(timer_cpu, queue):
                return

    device.kick_hook = lambda cpu, queue: sim.at(cpu.cursor, backend, queue)
    return device


VIRTIO_NIC = NicModel("virtio-net-pci,disable-legacy=on,disable-modern=off", wired_virtio_net, bar=v.MODERN_BAR)
C = v.COMMON
SRC = bytes.fromhex("020000000001")
BCAST = b"\xff" * 6
ETHERTYPE = b"\x88\xb5"                 # IEEE 802 local experimental
QSIZE = 8
RING_BASE, RING_STRIDE = 0x200000, 0x10000     # above 1 MiB: clear of the pc machine's ROM shadows
AVAIL_AT, USED_AT = 0x1000, 0x2000
TX_BUFS, RX_BUFS, INDIRECT = 0x300000, 0x340000, 0x380000
BUF_STRIDE = 0x800
POISON = 0xAA
SETTLE_NS = 100_000
BASE = (1 << v.VIRTIO_F_VERSION_1 | 1 << v.VIRTIO_NET_F_MAC | 1 << v.VIRTIO_NET_F_STATUS
        | 1 << v.VIRTIO_NET_F_MRG_RXBUF | 1 << v.VIRTIO_RING_F_INDIRECT_DESC)
FEATURES = BASE | 1 << v.VIRTIO_RING_F_EVENT_IDX
HDR = v.NET_HDR.pack(0, v.VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0, 0)
NUM_BUFFERS = v.NET_HDR.offset("num_buffers")
# Feature bits QEMU offers and iovirt does not implement (5.1.3, 6): the
# control virtqueue and what rides on it, and virtio 1.2's queue reset.
VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX = 2, 17, 18
VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_GUEST_ANNOUNCE = 19, 20, 21
VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_RING_RESET = 23, 33, 40
QEMU_ONLY = (VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VLAN,
             VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_F_RING_RESET)


reset_nics = pair_fixture(VIRTIO_NIC, scope="module")   # for the tests that only read reset state
nics = pair_fixture(VIRTIO_NIC)


def bits(*numbers: int) -> int:
    return sum(1 << n for n in numbers)


def frame(dst: bytes = MAC, size: int = 64) -> bytes:
    return dst + SRC + ETHERTYPE + bytes((i * 7 + 1) & 0xFF for i in range(size - 14))


# ---- common configuration (4.1.4.3) -------------------------------------------------
def cread(nic: Nic, field: str) -> int:
    """A field at its natural width; 64-bit ones as two dwords (4.1.3.1)."""
    width, at = v.COMMON_CFG.widths[field], v.COMMON_OFFSET + C[field]
    if width == 8:
        return nic.read(at, 4) | nic.read(at + 4, 4) << 32
    return nic.read(at, width)


def cwrite(nic: Nic, field: str, value: int) -> None:
    width, at = v.COMMON_CFG.widths[field], v.COMMON_OFFSET + C[field]
    if width == 8:
        nic.write(at, value & 0xFFFFFFFF, 4)
        nic.write(at + 4, value >> 32, 4)
    else:
        nic.write(at, value, width)


def offered(nic: Nic) -> int:
    features = 0
    for word in (0, 1):
        cwrite(nic, "device_feature_select", word)
        features |= cread(nic, "device_feature") << (32 * word)
    return features


def negotiate(nic: Nic, features: int) -> int:
    """3.1.1 steps 1-5: reset, ACKNOWLEDGE|DRIVER, features, FEATURES_OK; the status read back."""
    cwrite(nic, "device_status", 0)
    cwrite(nic, "device_status", v.ACKNOWLEDGE | v.DRIVER)
    for word in (0, 1):
        cwrite(nic, "driver_feature_select", word)
        cwrite(nic, "driver_feature", features >> (32 * word) & 0xFFFFFFFF)
    cwrite(nic, "device_status", v.ACKNOWLEDGE | v.DRIVER | v.FEATURES_OK)
    return cread(nic, "device_status")


def isr(nic: Nic) -> tuple[bool, int, bool]:
    """INTx level, the ISR (reading it clears it, 4.1.4.5), the level after."""
    level = nic.irq_level()
    value = nic.read(v.ISR_OFFSET, 1)
    return level, value, nic.irq_level()


# ---- a split virtqueue in guest memory (2.6), the driver's side ------------------------
class Ring:
    def __init__(self, nic: Nic, index: int) -> None:
        self.nic, self.index = nic, index
        self.desc = RING_BASE + index * RING_STRIDE
        self.avail, self.used = self.desc + AVAIL_AT, self.desc + USED_AT
        self.next_desc = self.avail_idx = 0

    def setup(self) -> None:
        """4.1.5.1.3: select, size, the three addresses, enable."""
        cwrite(self.nic, "queue_select", self.index)
        cwrite(self.nic, "queue_size", QSIZE)
        for field, addr in (("queue_desc", self.desc), ("queue_driver", self.avail), ("queue_device", self.used)):
            cwrite(self.nic, field, addr)
        cwrite(self.nic, "queue_enable", 1)
        self.notify_off = cread(self.nic, "queue_notify_off")

    def _write_desc(self, table: int, slot: int, addr: int, length: int, flags: int, nxt: int) -> None:
        self.nic.mem_write(table + v.VIRTQ_DESC.size * slot, v.VIRTQ_DESC.pack(addr, length, flags, nxt))

    def _chain(self, table: int, first: int, segments: list[tuple[int, int, int]]) -> None:
        """(address, length, flags) segments in consecutive slots from ``first``, linked by NEXT."""
        for n, (addr, length, flags) in enumerate(segments):
            more = n < len(segments) - 1
            self._write_desc(table, first + n, addr, length, flags | (v.VIRTQ_DESC_F_NEXT if more else 0),
                             first + n + 1 if more else 0)

    def add(self, segments: list[tuple[int, int, int]]) -> int:
        head = self.next_desc
        self._chain(self.desc, head, segments)
        self.next_desc += len(segments)
        return self._offer(head)

    def add_indirect(self, segments: list[tuple[int, int, int]]) -> int:
        """One ring descriptor pointing at a table of ``segments`` (2.6.5.3)."""
        self._chain(INDIRECT, 0, segments)
        head = self.next_desc
        self._write_desc(self.desc, head, INDIRECT, v.VIRTQ_DESC.size * len(segments), v.VIRTQ_DESC_F_INDIRECT, 0)
        self.next_desc += 1
        return self._offer(head)

    def _offer(self, head: int) -> int:
        self.nic.mem_write(self.avail + v.VIRTQ_AVAIL_RING + 2 * (self.avail_idx % QSIZE), v.U16.pack(head))
        self.avail_idx += 1
        return head

    def publish(self) -> None:
        self.nic.mem_write(self.avail + v.VIRTQ_AVAIL_IDX, v.U16.pack(self.avail_idx))

    def kick(self) -> None:
        """4.1.4.4: the queue index, written at cap.offset + queue_notify_off * multiplier."""
        self.nic.write(v.NOTIFY_OFFSET + self.notify_off * v.NOTIFY_MULTIPLIER, self.index, 2)
        self.nic.step(SETTLE_NS)

    def set_avail_flags(self, flags: int) -> None:
        self.nic.mem_write(self.avail + v.VIRTQ_AVAIL_FLAGS, v.U16.pack(flags))

    def set_used_event(self, value: int) -> None:
        self.nic.mem_write(self.avail + v.used_event_offset(QSIZE), v.U16.pack(value))

    def u16(self, addr: int) -> int:
        return v.U16.unpack(self.nic.mem_read(addr, 2))[0]

    def avail_event(self) -> int:
        return self.u16(self.used + v.avail_event_offset(QSIZE))

    def used_ring(self) -> dict:
        """flags, idx and the (id, len) elements the device has written (2.6.8)."""
        flags, idx = self.u16(self.used + v.VIRTQ_USED_FLAGS), self.u16(self.used + v.VIRTQ_USED_IDX)
        raw = self.nic.mem_read(self.used + v.VIRTQ_USED_RING, v.VIRTQ_USED_ELEM.size * QSIZE)
        elems = [v.VIRTQ_USED_ELEM.unpack_from(raw, v.VIRTQ_USED_ELEM.size * i) for i in range(min(idx, QSIZE))]
        return {"flags": flags, "idx": idx, "elems": elems}


def start(nic: Nic, features: int = FEATURES) -> tuple[Ring, Ring]:
    """Negotiate, set up receiveq1 and transmitq1, DRIVER_OK (3.1.1)."""
    assert negotiate(nic, features) & v.FEATURES_OK
    rx, tx = Ring(nic, v.RX_QUEUE), Ring(nic, v.TX_QUEUE)
    rx.setup()
    tx.setup()
    cwrite(nic, "device_status", v.ACKNOWLEDGE | v.DRIVER | v.FEATURES_OK | v.DRIVER_OK)
    return rx, tx


def send(tx: Ring, frames: list[bytes]) -> None:
    """Each frame behind a zero virtio_net_hdr in one readable descriptor."""
    for data in frames:
        buf = TX_BUFS + tx.next_desc * BUF_STRIDE
        tx.nic.mem_write(buf, HDR + data)
        tx.add([(buf, len(HDR) + len(data), 0)])
    tx.publish()
    tx.kick()


def post_rx(rx: Ring, count: int, size: int = BUF_STRIDE) -> list[int]:
    """``count`` poisoned writable buffers of ``size`` bytes, published and kicked; their addresses."""
    bufs = []
    for _ in range(count):
        buf = RX_BUFS + rx.next_desc * BUF_STRIDE
        rx.nic.mem_write(buf, bytes([POISON]) * size)
        rx.add([(buf, size, v.VIRTQ_DESC_F_WRITE)])
        bufs.append(buf)
    rx.publish()
    rx.kick()
    return bufs


def receive(nic: Nic, frames: list[bytes], count: int = 4, size: int = BUF_STRIDE,
            features: int = FEATURES) -> dict:
    """Post ``count`` buffers, inject ``frames``: buffer contents, used ring, avail_event, ISR."""
    rx, _ = start(nic, features)
    bufs = post_rx(rx, count, size)
    for data in frames:
        nic.inject_frame(data)
    nic.step(SETTLE_NS)
    return {"bufs": [nic.mem_read(buf, size) for buf in bufs], "used": rx.used_ring(),
            "avail_event": rx.avail_event(), "isr": isr(nic)}


# ---- PCI identity and capabilities (4.1.2, 4.1.4) ----------------------------------------
def vendor_caps(nic: Nic) -> dict[int, dict]:
    """The virtio structures by cfg_type: bar, offset, length, cap_len, and the notify multiplier."""
    found = {}
    for at, cap_id in capabilities(nic):
        if cap_id != PCI_CAP_ID_VNDR:
            continue
        field = {name: nic.config_read(at + v.PCI_CAP.offset(name), v.PCI_CAP.widths[name])
                 for name in ("cap_len", "cfg_type", "bar", "offset", "length")}
        if field["cfg_type"] == v.VIRTIO_PCI_CAP_NOTIFY_CFG:
            field["notify_off_multiplier"] = nic.config_read(at + v.NOTIFY_OFF_MULTIPLIER, 4)
        found.setdefault(field.pop("cfg_type"), field)
    return found


def msix_table_size(nic: Nic) -> int:
    at = {cap_id: at for at, cap_id in capabilities(nic)}[PCI_CAP_ID_MSIX]
    return (nic.config_read(at + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE) + 1


def test_pci_identity_and_bars_agree(reset_nics):
    """Vendor/device 1AF4:1041, class, revision 1, INTA#, and the BARs: 4 KiB MSI-X BAR1, 16 KiB 64-bit BAR4."""
    ids = agree(reset_nics, lambda nic: (nic.config_read(PCI_VENDOR_ID, 2), nic.config_read(PCI_DEVICE_ID, 2),
                                         nic.config_read(PCI_CLASS_REVISION), nic.config_read(PCI_SUBSYSTEM_VENDOR_ID),
                                         nic.config_read(PCI_INTERRUPT_PIN, 1)))
    assert ids[:2] == (v.VENDOR_ID, v.DEVICE_ID_NET) and ids[2] & 0xFF == v.REVISION
    masks = agree(reset_nics, bar_masks)
    assert masks[v.MSIX_BAR] == (-v.MSIX_BAR_SIZE) & 0xFFFFFFF0
    assert masks[v.MODERN_BAR] & 0xFFFFFFF0 == (-v.MODERN_BAR_SIZE) & 0xFFFFFFF0


def test_vendor_capabilities_agree(reset_nics):
    """Common, notify, ISR and device cfg: same BAR, offset, length and notify_off_multiplier on both."""
    qemu, iovirt = run(reset_nics, vendor_caps)
    # 4.1.4.7.1: "The device MUST present at least one VIRTIO_PCI_CAP_PCI_CFG
    # capability" (a window onto the BARs through configuration space).
    # QEMU has it; iovirt does not: serving pci_cfg_data needs a read hook in
    # PciFunction (and a vCPU to charge the BAR access to), which iovirt
    # lacks; iovirt's guest driver, like Linux's, never uses it.  A known gap.
    assert v.VIRTIO_PCI_CAP_PCI_CFG in qemu and v.VIRTIO_PCI_CAP_PCI_CFG not in iovirt
    del qemu[v.VIRTIO_PCI_CAP_PCI_CFG]
    assert qemu == iovirt
    assert iovirt[v.VIRTIO_PCI_CAP_NOTIFY_CFG] == {"cap_len": v.PCI_CAP.size + 4, "bar": v.MODERN_BAR,
                                                   "offset": v.NOTIFY_OFFSET, "length": v.REGION_SIZE,
                                                   "notify_off_multiplier": v.NOTIFY_MULTIPLIER}


def test_msix_table_covers_every_queue_and_config(reset_nics):
    """The MSI-X table has one vector per queue plus one for config changes on both (QEMU 4, iovirt 3)."""
    qemu, iovirt = run(reset_nics, lambda nic: (msix_table_size(nic), cread(nic, "num_queues")))
    assert qemu[0] == qemu[1] + 1 and iovirt[0] == iovirt[1] + 1
    assert qemu[1] == 3 and iovirt[1] == 2      # see test_num_queues_and_control_queue


def test_device_config_mac_and_status(reset_nics):
    """virtio_net_config: the MAC byte by byte, status LINK_UP, config_generation 0 (5.1.4)."""
    def script(nic: Nic) -> tuple:
        mac = bytes(nic.read(v.DEVICE_OFFSET + v.NET_CONFIG_MAC + i, 1) for i in range(6))
        return mac, nic.read(v.DEVICE_OFFSET + v.NET_CONFIG.offset("status"), 2), cread(nic, "config_generation")
    assert agree(reset_nics, script) == (MAC, v.VIRTIO_NET_S_LINK_UP, 0)


# ---- feature negotiation (2.2, 3.1.1) --------------------------------------------------------
def test_device_features(reset_nics):
    """Both offer VERSION_1, MAC, STATUS, MRG_RXBUF, EVENT_IDX, INDIRECT_DESC; CSUM, GUEST_CSUM, HOST_TSO4 and
    GUEST_TSO4 are iovirt's, CTRL_* QEMU's."""
    qemu, iovirt = run(reset_nics, offered)
    assert qemu & BASE == iovirt & BASE == BASE and qemu & FEATURES == iovirt & FEATURES
    # 5.1.3: every offload is the device's choice.  QEMU drops CSUM and
    # GUEST_CSUM (and the TSO/UFO family, GUEST_TSO4 among them) because its
    # -netdev dgram peer carries no vnet header (virtio_net_get_features);
    # with a tap backend it offers them too, as iovirt's taps carry it.
    assert iovirt & ~qemu == bits(v.VIRTIO_NET_F_CSUM, v.VIRTIO_NET_F_HOST_TSO4, v.VIRTIO_NET_F_GUEST_CSUM,
                                  v.VIRTIO_NET_F_GUEST_TSO4)
    # iovirt has no control virtqueue (5.1.2 controlq exists only with
    # CTRL_VQ), hence none of the CTRL_* features (5.1.3.1), and no queue reset.
    assert qemu & ~iovirt == bits(*QEMU_ONLY)


@pytest.mark.parametrize("features", [FEATURES, BASE, bits(v.VIRTIO_F_VERSION_1)],
                         ids=["event-idx", "no-event-idx", "version-1-only"])
def test_features_ok_accepted_for_a_subset(nics, features):
    """A subset of the offered features with VERSION_1: FEATURES_OK reads back set, driver_feature as written."""
    def script(nic: Nic) -> tuple:
        status = negotiate(nic, features)
        words = []
        for word in (0, 1):
            cwrite(nic, "driver_feature_select", word)
            words.append(cread(nic, "driver_feature"))
        return status, words
    status, words = agree(nics, script)
    assert status == v.ACKNOWLEDGE | v.DRIVER | v.FEATURES_OK
    assert words == [features & 0xFFFFFFFF, features >> 32]


@pytest.mark.parametrize("features", [FEATURES & ~bits(v.VIRTIO_F_VERSION_1),
                                      FEATURES | bits(VIRTIO_F_ACCESS_PLATFORM)],
                         ids=["no-version-1", "unoffered-bit"])
def test_features_ok_refused(nics, features):
    """Without VERSION_1, or with a bit not offered: iovirt leaves FEATURES_OK clear, QEMU sets it."""
    qemu, iovirt = run(nics, lambda nic: negotiate(nic, features))
    # 6.2: "A device MAY fail to operate further if VIRTIO_F_VERSION_1 is not
    # accepted"; 2.2.2: a device that does not accept the driver's features
    # "MUST fail to set the FEATURES_OK device status bit", and 2.2.1 forbids
    # the driver to accept a feature not offered.  iovirt refuses both, so the
    # driver learns at FEATURES_OK (3.1.1 step 6); QEMU 7.2 takes the status
    # and silently drops unoffered bits (virtio_set_features_nocheck).  Both
    # conform; iovirt's is the stricter reading.
    assert iovirt == v.ACKNOWLEDGE | v.DRIVER
    assert qemu == iovirt | v.FEATURES_OK


# ---- queue configuration (4.1.4.3, 4.1.5.1.3) -----------------------------------------------
QUEUE_FIELDS = ("queue_size", "queue_msix_vector", "queue_enable", "queue_notify_off",
                "queue_desc", "queue_driver", "queue_device")


def queue_regs(nic: Nic, index: int) -> dict:
    cwrite(nic, "queue_select", index)
    return {field: cread(nic, field) for field in QUEUE_FIELDS}


def test_queue_setup_reads_back(nics):
    """After setup each queue reads back its size, ring addresses, enable and notify_off; reset clears them."""
    def script(nic: Nic) -> tuple:
        before = [queue_regs(nic, q) for q in (v.RX_QUEUE, v.TX_QUEUE)]
        start(nic)
        after = [queue_regs(nic, q) for q in (v.RX_QUEUE, v.TX_QUEUE)]
        cwrite(nic, "device_status", 0)
        return before, after, [queue_regs(nic, q) for q in (v.RX_QUEUE, v.TX_QUEUE)], cread(nic, "device_status")
    before, after, reset, status = agree(nics, script)
    assert before == reset and status == 0
    for q, regs in enumerate(after):
        desc = RING_BASE + q * RING_STRIDE
        assert regs == {"queue_size": QSIZE, "queue_msix_vector": v.VIRTIO_MSI_NO_VECTOR, "queue_enable": 1,
                        "queue_notify_off": q, "queue_desc": desc, "queue_driver": desc + AVAIL_AT,
                        "queue_device": desc + USED_AT}
    assert before[0]["queue_size"] == v.QUEUE_SIZE_MAX and before[0]["queue_enable"] == 0


def test_num_queues_and_control_queue(reset_nics):
    """receiveq1 and transmitq1 on both; QEMU also has its 64-entry controlq, iovirt nothing at index 2."""
    def script(nic: Nic) -> tuple:
        return cread(nic, "num_queues"), queue_regs(nic, 2)["queue_size"]
    qemu, iovirt = run(reset_nics, script)
    # 5.1.2: controlq (index 2N) exists only with VIRTIO_NET_F_CTRL_VQ, which
    # iovirt does not offer; 4.1.4.3: queue_size reads 0 for an unavailable queue.
    assert qemu == (3, 64) and iovirt == (2, 0)


def test_msix_vector_mapping(nics):
    """A vector inside the MSI-X table reads back; one beyond it reads NO_VECTOR (4.1.5.1.2.1)."""
    def script(nic: Nic) -> list[int]:
        out, size = [], msix_table_size(nic)
        for value in (1, size, 0x7FF, v.VIRTIO_MSI_NO_VECTOR):
            cwrite(nic, "config_msix_vector", value)
            cwrite(nic, "queue_select", v.TX_QUEUE)
            cwrite(nic, "queue_msix_vector", value)
            out += [cread(nic, "config_msix_vector"), cread(nic, "queue_msix_vector")]
        return out
    assert agree(nics, script) == [1, 1] + [v.VIRTIO_MSI_NO_VECTOR] * 6


# ---- transmit (5.1.6.2) ---------------------------------------------------------------------
def test_tx_frames_and_used_ring(nics):
    """Frames in one descriptor, a chain of three and an indirect table: same wire bytes, used ring, avail_event."""
    frames = [frame(BCAST, 60), frame(BCAST, 300), frame(size=1514)]
    def script(nic: Nic) -> dict:
        _, tx = start(nic)
        bufs = [TX_BUFS + i * BUF_STRIDE for i in range(4)]
        for buf, data in zip(bufs, (HDR + frames[0], HDR, frames[1], HDR + frames[2])):
            nic.mem_write(buf, data)
        tx.add([(bufs[0], len(HDR) + 60, 0)])
        tx.add([(bufs[1], len(HDR), 0), (bufs[2], 100, 0), (bufs[2] + 100, 200, 0)])
        tx.add_indirect([(bufs[3], len(HDR) + 14, 0), (bufs[3] + len(HDR) + 14, 1500, 0)])
        tx.publish()
        tx.kick()
        return {"frames": nic.sent_frames(), "used": tx.used_ring(), "avail_event": tx.avail_event(),
                "isr": isr(nic)}
    out = agree(nics, script)
    assert out["frames"] == frames
    assert out["used"] == {"flags": 0, "idx": 3, "elems": [(0, 0), (1, 0), (4, 0)]}
    assert out["avail_event"] == 3          # 2.6.10: kick me at the next buffer
    assert out["isr"] == (True, v.VIRTIO_PCI_ISR_QUEUE, False)


def test_tx_without_event_idx_leaves_used_flags_clear(nics):
    """Without EVENT_IDX both re-enable kicks (used flags 0) after the burst and interrupt."""
    def script(nic: Nic) -> dict:
        _, tx = start(nic, BASE)
        send(tx, [frame(BCAST, 80)])
        return {"frames": nic.sent_frames(), "used": tx.used_ring(), "isr": isr(nic)}
    out = agree(nics, script)
    assert out["used"] == {"flags": 0, "idx": 1, "elems": [(0, 0)]}
    assert out["isr"] == (True, v.VIRTIO_PCI_ISR_QUEUE, False)


# ---- interrupt suppression (2.6.7, 2.6.10) ---------------------------------------------------
def test_used_event_gates_interrupts(nics):
    """After a first interrupt, used_event far ahead suppresses the next; used_event = old used idx lets it through."""
    def script(nic: Nic) -> list:
        _, tx = start(nic)
        out = []
        for used_event in (0, 0x8000, 2):
            tx.set_used_event(used_event)
            send(tx, [frame(BCAST, 64)])
            out.append(isr(nic))
        return out + [tx.used_ring()["idx"]]
    intr, none = (True, v.VIRTIO_PCI_ISR_QUEUE, False), (False, 0, False)
    assert agree(nics, script) == [intr, none, intr, 3]


def test_first_interrupt_with_used_event_ahead(nics):
    """used_event far ahead from the start: iovirt raises nothing, QEMU interrupts once anyway."""
    def script(nic: Nic) -> tuple:
        _, tx = start(nic)
        tx.set_used_event(0x8000)
        send(tx, [frame(BCAST, 64)])
        return isr(nic), tx.used_ring()["idx"]
    qemu, iovirt = run(nics, script)
    # 2.6.7.2 (EVENT_IDX negotiated): the device MUST notify when the used idx
    # passes used_event, "Otherwise the device SHOULD NOT send a
    # notification."  QEMU notifies unconditionally the first time after
    # queue setup (virtio_split_should_notify: !signalled_used_valid).
    assert iovirt == ((False, 0, False), 1)
    assert qemu == ((True, v.VIRTIO_PCI_ISR_QUEUE, False), 1)


@pytest.mark.parametrize("flags,raised", [(v.VIRTQ_AVAIL_F_NO_INTERRUPT, False), (0, True)])
def test_avail_no_interrupt_flag(nics, flags, raised):
    """Without EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT suppresses the used-buffer interrupt on both (2.6.7.2)."""
    def script(nic: Nic) -> tuple:
        _, tx = start(nic, BASE)
        tx.set_avail_flags(flags)
        send(tx, [frame(BCAST, 64)])
        return isr(nic)
    assert agree(nics, script)[:2] == (raised, v.VIRTIO_PCI_ISR_QUEUE if raised else 0)


# ---- receive (5.1.6.3, 5.1.6.4) ---------------------------------------------------------------
def rx_header(num_buffers: int) -> bytes:
    return v.NET_HDR.pack(0, v.VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0, num_buffers)


def test_rx_frames(nics):
    """A 60- and a 1000-byte frame: each behind a 12-byte header with num_buffers 1, used len header + frame."""
    frames = [frame(size=60), frame(BCAST, 1000)]
    out = agree(nics, lambda nic: receive(nic, frames))
    for buf, data in zip(out["bufs"], frames):
        image = rx_header(1) + data
        assert buf == image + bytes([POISON]) * (BUF_STRIDE - len(image))
    assert out["used"] == {"flags": 0, "idx": 2, "elems": [(0, 72), (1, 1012)]}
    assert out["isr"] == (True, v.VIRTIO_PCI_ISR_QUEUE, False)


def test_rx_merges_buffers(nics):
    """A 600-byte frame over 256-byte buffers: three used entries, num_buffers 3 in the first (5.1.6.4)."""
    data = frame(size=600)
    out = agree(nics, lambda nic: receive(nic, [data], size=256))
    assert b"".join(out["bufs"][:3])[:612] == rx_header(3) + data
    assert out["used"]["elems"] == [(0, 256), (1, 256), (2, 100)] and out["used"]["idx"] == 3


def test_rx_num_buffers_without_mrg_rxbuf(nics):
    """MRG_RXBUF not negotiated: iovirt writes num_buffers 1, QEMU leaves those two bytes untouched."""
    data = frame(size=100)
    qemu, iovirt = run(nics, lambda nic: receive(nic, [data], features=FEATURES & ~bits(v.VIRTIO_NET_F_MRG_RXBUF)))
    # 5.1.6.4.1: "If VIRTIO_NET_F_MRG_RXBUF has not been negotiated, the
    # device MUST set num_buffers to 1."  QEMU 7.2 writes a 10-byte header
    # and skips num_buffers (receive_header; fixed in later QEMU).
    assert iovirt["bufs"][0][:112] == rx_header(1) + data
    assert qemu["bufs"][0][:112] == rx_header(1)[:NUM_BUFFERS] + bytes([POISON]) * 2 + data
    assert {**qemu, "bufs": None} == {**iovirt, "bufs": None}


def test_rx_avail_event_untouched_while_buffers_remain(nics):
    """A frame taken with buffers to spare: neither device writes avail_event (RX kicks stay off)."""
    # 2.6.10: avail_event is the device's request for a kick.  QEMU turns RX
    # notifications off while it has buffers (virtio_net_has_buffers), and
    # vring_set_avail_event writes nothing while they are off; iovirt, as
    # vhost-net, asks only once it runs out (test_rx_waits_for_buffers_then_lands).
    assert agree(nics, lambda nic: receive(nic, [frame()])["avail_event"]) == 0


def test_rx_waits_for_buffers_then_lands(nics):
    """Out of buffers: both set avail_event to the avail idx, hold the frame, and deliver it after refill and kick."""
    first, second = frame(size=70), frame(size=90)
    def script(nic: Nic) -> dict:
        rx, _ = start(nic)
        post_rx(rx, 1)
        nic.inject_frame(first)
        nic.inject_frame(second)
        nic.step(SETTLE_NS)
        held = {"used": rx.used_ring(), "avail_event": rx.avail_event(), "isr": isr(nic)}
        old = rx.avail_idx
        (buf,) = post_rx(rx, 1)
        kick_asked = v.vring_need_event(held["avail_event"], rx.avail_idx, old)
        return {**held, "kick_asked": kick_asked, "buf": nic.mem_read(buf, v.NET_HDR.size + len(second)),
                "used_after": rx.used_ring(), "isr_after": isr(nic)}
    out = agree(nics, script)
    assert out["used"]["idx"] == 1 and out["avail_event"] == 1 and out["kick_asked"]
    assert out["buf"] == rx_header(1) + second
    assert out["used_after"] == {"flags": 0, "idx": 2, "elems": [(0, 82), (1, 102)]}
