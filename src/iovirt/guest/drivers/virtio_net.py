"""Guest virtio-net driver over the modern virtio-pci transport, in the order
Linux's virtio_pci_modern.c and virtio_net.c do things: find the vendor
capabilities, reset, ACKNOWLEDGE, DRIVER, negotiate features, FEATURES_OK,
MSI-X vectors (config, rx, tx), queues, fill RX, DRIVER_OK.

TX adds one descriptor per frame (header inline, VIRTIO_F_VERSION_1) and
kicks only when the device asked (EVENT_IDX).  With VIRTIO_NET_F_CSUM the
header asks the device to complete TCP checksums (NEEDS_CSUM, csum_start,
csum_offset); with HOST_TSO4 too, a GSO packet of up to 64 KB goes as one
buffer with gso_type TCPV4 and gso_size (5.1.6.2); with GUEST_TSO4 (which
needs GUEST_CSUM, 5.1.3.1) the device may hand it such a packet in as many
mergeable buffers as it takes (5.1.6.4), which goes up the stack as one
packet of its gso_size, its checksum partial (virtio_net_hdr_to_skb).  Completed TX buffers are
reclaimed by transmit and by TX NAPI (Linux's default ``napi_tx=1``): each
transmit re-arms the TX interrupt for when 3/4 of the outstanding buffers are
used (virtqueue_enable_cb_delayed), and the interrupt schedules
virtnet_poll_tx.  RX runs in NAPI polls scheduled from the queue's MSI-X
interrupt with the queue's interrupts off."""

from __future__ import annotations

from ...net.gso import GsoFrame, headers_len
from ...net.headers import TCP_CHECK, l4_offset
from ...spec import virtio as v
from ...spec.pci import (
    PCI_CAP_ID_VNDR, PCI_CAP_LIST_NEXT, PCI_CAPABILITY_LIST,
)
from .base import NetDriver
from .virtio_ring import DriverQueue

C = v.COMMON
WANTED = (1 << v.VIRTIO_F_VERSION_1 | 1 << v.VIRTIO_NET_F_MAC | 1 << v.VIRTIO_NET_F_MRG_RXBUF
          | 1 << v.VIRTIO_RING_F_EVENT_IDX | 1 << v.VIRTIO_NET_F_CSUM | 1 << v.VIRTIO_NET_F_HOST_TSO4
          | 1 << v.VIRTIO_NET_F_GUEST_CSUM | 1 << v.VIRTIO_NET_F_GUEST_TSO4
          | 1 << v.VIRTIO_NET_F_STANDBY)
HDR_SIZE = v.NET_HDR.size
RX_BUFFER = HDR_SIZE + 1514
PAGE_SIZE = 4096                        # a mergeable buffer is at most a page (get_mergeable_buf_len)
GOOD_PACKET_LEN = 1518                  # ETH_HLEN + VLAN_HLEN + ETH_DATA_LEN: and at least this behind the header
EWMA_WEIGHT = 64                        # DECLARE_EWMA(pkt_len, 0, 64): the average packet that sizes them
L1_CACHE_BYTES = 64
GSO_BUFFER = HDR_SIZE + 65550           # a GSO packet's frame: up to 64 KB of IPv4 behind its Ethernet header
GSO_BUFFERS = 32                        # TX buffers that size (Linux gathers the skb's pages instead)
_BLANK_HDR = bytes(HDR_SIZE)
_NUM_BUFFERS = v.NET_HDR.field_struct("num_buffers").unpack_from
_NUM_BUFFERS_AT = v.NET_HDR.offset("num_buffers")
_GSO_TYPE_AT = v.NET_HDR.offset("gso_type")
NAPI_WEIGHT = 64
CONFIG_VECTOR, RX_VECTOR, TX_VECTOR = 0, 1, 2


class VirtioProbeError(RuntimeError):
    pass


class VirtioNetDriver(NetDriver):
    VENDOR, DEVICE = v.VENDOR_ID, v.DEVICE_ID_NET

    def __init__(self, kernel, info, features: int | None = None) -> None:
        super().__init__(kernel, info)
        self._find_caps()
        self._probe(WANTED if features is None else features)

    def rebind(self, vcpu, mem) -> None:
        super().rebind(vcpu, mem)
        self.rx.rebind(vcpu, mem)
        self.tx.rebind(vcpu, mem)

    @property
    def standby(self) -> bool:
        """VIRTIO_NET_F_STANDBY negotiated: the kernel puts a failover master over us."""
        return bool(self.features >> v.VIRTIO_NET_F_STANDBY & 1)

    # ---- transport --------------------------------------------------------------
    def _find_caps(self) -> None:
        """4.1.4: walk the capability list for the virtio structures."""
        pci, bdf = self.kernel.pci, self.info.bdf
        self.regions: dict[int, int] = {}
        at = pci.config_read(bdf, PCI_CAPABILITY_LIST, 1)
        for _ in range(48):
            if at < 0x40:
                break
            if pci.config_read(bdf, at, 1) == PCI_CAP_ID_VNDR:
                cfg_type = pci.config_read(bdf, at + v.PCI_CAP.offset("cfg_type"), 1)
                bar = pci.config_read(bdf, at + v.PCI_CAP.offset("bar"), 1)
                offset = pci.config_read(bdf, at + v.PCI_CAP.offset("offset"), 4)
                self.regions.setdefault(cfg_type, self.info.bars[bar][1] + offset)
                if cfg_type == v.VIRTIO_PCI_CAP_NOTIFY_CFG:
                    self.notify_multiplier = pci.config_read(bdf, at + v.NOTIFY_OFF_MULTIPLIER, 4)
            at = pci.config_read(bdf, at + PCI_CAP_LIST_NEXT, 1)
        needed = {v.VIRTIO_PCI_CAP_COMMON_CFG, v.VIRTIO_PCI_CAP_NOTIFY_CFG, v.VIRTIO_PCI_CAP_DEVICE_CFG}
        if not needed <= self.regions.keys():
            raise VirtioProbeError(f"virtio-pci {bdf}: missing capabilities {sorted(needed - self.regions.keys())}")
        self.common = self.regions[v.VIRTIO_PCI_CAP_COMMON_CFG]

    def cread(self, field: str) -> int:
        return self.vcpu.mmio_read(self.common + C[field], v.COMMON_CFG.widths[field])

    def cwrite(self, field: str, value: int) -> None:
        self.vcpu.mmio_write(self.common + C[field], v.COMMON_CFG.widths[field], value)

    def _status(self, bits: int) -> None:
        self.cwrite("device_status", self.cread("device_status") | bits)

    # ---- probe (3.1.1 driver initialization) --------------------------------------
    def _probe(self, wanted: int) -> None:
        self.cwrite("device_status", 0)
        self._status(v.ACKNOWLEDGE | v.DRIVER)
        offered = 0
        for word in (0, 1):
            self.cwrite("device_feature_select", word)
            offered |= self.cread("device_feature") << (32 * word)
        self.features = offered & wanted
        if not self.features >> v.VIRTIO_NET_F_GUEST_CSUM & 1 or not self.features >> v.VIRTIO_NET_F_MRG_RXBUF & 1:
            self.features &= ~(1 << v.VIRTIO_NET_F_GUEST_TSO4)   # 5.1.3.1: requires GUEST_CSUM; big packets not modelled
        self.mergeable = bool(self.features >> v.VIRTIO_NET_F_MRG_RXBUF & 1)
        self.rx_csum = bool(self.features >> v.VIRTIO_NET_F_GUEST_CSUM & 1)       # NETIF_F_RXCSUM
        for word in (0, 1):
            self.cwrite("driver_feature_select", word)
            self.cwrite("driver_feature", self.features >> (32 * word) & 0xFFFFFFFF)
        self._status(v.FEATURES_OK)
        if not self.cread("device_status") & v.FEATURES_OK:
            self._status(v.FAILED)
            raise VirtioProbeError(f"virtio-net {self.info.bdf}: device refused features {self.features:#x}")
        self._setup_msix()
        event_idx = bool(self.features >> v.VIRTIO_RING_F_EVENT_IDX & 1)
        self.rx = self._setup_queue(v.RX_QUEUE, RX_VECTOR, event_idx)
        self.tx = self._setup_queue(v.TX_QUEUE, TX_VECTOR, event_idx)
        dev = self.regions[v.VIRTIO_PCI_CAP_DEVICE_CFG]
        self.mac = bytes(self.vcpu.mmio_read(dev + v.NET_CONFIG_MAC + i, 1) for i in range(6))
        self.tx_bufs = [self.dma_alloc(RX_BUFFER, 64) for _ in range(self.tx.size)]
        self.tx_free = list(range(self.tx.size))
        self.offloads = frozenset(name for name, bits in (("tx_csum", 1 << v.VIRTIO_NET_F_CSUM), (
            "tso", 1 << v.VIRTIO_NET_F_CSUM | 1 << v.VIRTIO_NET_F_HOST_TSO4)) if self.features & bits == bits)
        if "tso" in self.offloads:
            self.tx_bufs += [self.dma_alloc(GSO_BUFFER, 64) for _ in range(GSO_BUFFERS)]
        self.gso_free = list(range(self.tx.size, len(self.tx_bufs)))
        self.tx_poll_scheduled = False
        self.avg_pkt_len = 0                                # rq->mrg_avg_pkt_len
        self.rx_len = self._mergeable_len() if self.mergeable else RX_BUFFER
        self.rx_bufs = [self.dma_alloc(PAGE_SIZE if self.mergeable else RX_BUFFER, 64) for _ in range(self.rx.size)]
        self.rx_posted = [0] * self.rx.size
        for i in range(self.rx.size):
            self._post(i)
        self.rx.kick()
        self._status(v.DRIVER_OK)

    def _setup_msix(self) -> None:
        self.vectors = self.setup_msix(self.info.bars[v.MSIX_BAR][1], [
            (CONFIG_VECTOR, self._config_intr), (RX_VECTOR, self._rx_intr), (TX_VECTOR, self._tx_intr)])
        self.cwrite("config_msix_vector", CONFIG_VECTOR)

    def _setup_queue(self, index: int, vector: int, event_idx: bool) -> DriverQueue:
        self.cwrite("queue_select", index)
        size = min(self.cread("queue_size"), v.QUEUE_SIZE_MAX)
        if not size:
            raise VirtioProbeError(f"virtio-net {self.info.bdf}: queue {index} unavailable")
        self.cwrite("queue_size", size)
        q = DriverQueue(self.kernel, index, size, event_idx, owner=self.info.bdf)
        for field, addr in (("queue_desc", q.desc), ("queue_driver", q.avail), ("queue_device", q.used)):
            self.vcpu.mmio_write(self.common + C[field], 4, addr & 0xFFFFFFFF)
            self.vcpu.mmio_write(self.common + C[field] + 4, 4, addr >> 32)
        self.cwrite("queue_msix_vector", vector)
        q.notify = self.regions[v.VIRTIO_PCI_CAP_NOTIFY_CFG] + self.cread("queue_notify_off") * self.notify_multiplier
        self.cwrite("queue_enable", 1)
        return q

    # ---- transmit ------------------------------------------------------------------
    def transmit(self, frame: bytes) -> bool:
        """start_xmit with TX NAPI: reclaim with the TX interrupt off, re-arm
        it delayed, add one buffer, kick if asked; stop the queue when full
        (TX NAPI wakes it)."""
        tx = self.tx
        tx.disable_cb()
        self._free_old_xmit()
        while not tx.enable_cb(delayed=True):      # buffers came back meanwhile
            tx.disable_cb()
            self._free_old_xmit()
        gso = len(frame) > RX_BUFFER - HDR_SIZE
        free = self.gso_free if gso else self.tx_free
        if not free or len(self.tx_free) + len(self.gso_free) <= len(self.tx_bufs) - tx.size:
            self.tx_queue_stopped = True        # out of buffers, or every descriptor in use
            return False
        slot = free.pop()
        buf = self.tx_bufs[slot]
        self.mem.write(buf, self._header(frame, gso) + frame)
        tx.add([(buf, HDR_SIZE + len(frame), False)], slot)
        tx.kick()
        return True

    def _header(self, frame: bytes, gso: bool) -> bytes:
        """virtio_net_hdr_from_skb: NEEDS_CSUM for a TCP/IPv4 frame the stack
        left for the device to sum (CHECKSUM_PARTIAL: its TX checksum is on),
        and a GSO packet's type and segment size."""
        if not getattr(self.stack, "tx_csum", False) or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            return _BLANK_HDR
        start, hdr_len = l4_offset(frame), headers_len(frame)
        gso_type, gso_size = (v.VIRTIO_NET_HDR_GSO_TCPV4, frame.gso_size) if gso else (v.VIRTIO_NET_HDR_GSO_NONE, 0)
        return v.NET_HDR.pack(v.VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, hdr_len, gso_size, start, TCP_CHECK, 0)

    def _free_old_xmit(self) -> None:
        tx, free, gso_free, small = self.tx, self.tx_free, self.gso_free, self.tx.size
        while (done := tx.get_used()) is not None:
            (free if done[0] < small else gso_free).append(done[0])

    def _tx_intr(self) -> None:
        """skb_xmit_done: interrupts off, schedule TX NAPI."""
        self.tx.disable_cb()
        self.vcpu.eoi(self.vectors[TX_VECTOR])
        if not self.tx_poll_scheduled:
            self.tx_poll_scheduled = True
            self.kernel.run_soon(self._poll_tx)

    def _poll_tx(self) -> None:
        """virtnet_poll_tx: reclaim, wake the queue, napi_complete with the
        interrupt back on; poll again if buffers raced in."""
        self.tx_poll_scheduled = False
        if self.napi_disabled:
            return
        self._free_old_xmit()
        if self.tx_free:
            self.wake_queue()
        if not self.tx.enable_cb():
            self.tx.disable_cb()
            self.tx_poll_scheduled = True
            self.kernel.run_soon(self._poll_tx)

    # ---- receive ---------------------------------------------------------------------
    def _rx_intr(self) -> None:
        """vring_interrupt -> skb_recv_done: interrupts off, schedule NAPI."""
        self.rx.disable_cb()
        self.vcpu.eoi(self.vectors[RX_VECTOR])
        self.napi_schedule()

    def _poll(self) -> None:
        self.poll_scheduled = False
        done = self._receive(NAPI_WEIGHT)
        if done < NAPI_WEIGHT and self.rx.enable_cb():
            return                                 # napi_complete_done
        self.rx.disable_cb()
        self.napi_schedule()

    def _receive(self, budget: int) -> int:
        done = 0
        rx, bufs, mem = self.rx, self.rx_bufs, self.mem
        while done < budget and (used := rx.get_used()) is not None:
            slot, length = used
            count = _NUM_BUFFERS(mem.buf, bufs[slot] + _NUM_BUFFERS_AT)[0] if self.mergeable else 1
            if count == 1 and HDR_SIZE < length <= self.rx_posted[slot] and not mem.buf[bufs[slot] + _GSO_TYPE_AT]:
                if self.mergeable:
                    self._average(length - HDR_SIZE)
                self.stack.receive(mem.read(bufs[slot] + HDR_SIZE, length - HDR_SIZE),
                                   self._trusted(mem.buf[bufs[slot]]))
                self._post(slot)
            else:
                self._receive_merged(slot, length, count)
            done += 1
        rx.kick()
        return done

    def _receive_merged(self, slot: int, length: int, count: int) -> None:
        """A frame spread over ``count`` buffers (MRG_RXBUF), or a bad length."""
        frames = [(slot, length)]
        while len(frames) < count and (more := self.rx.get_used()) is not None:
            frames.append(more)
        posted = self.rx_posted
        whole = len(frames) == count and all(n <= posted[s] for s, n in frames)   # else "len %u exceeds truesize"
        data = b"".join(self.mem.read(self.rx_bufs[s], n) for s, n in frames) if whole else b""
        if len(data) <= HDR_SIZE:
            self.kernel.dropped("rx_length_errors")
        else:
            self._average(len(data) - HDR_SIZE)
            if data[_GSO_TYPE_AT]:
                self._receive_gso(data)
            else:
                self.stack.receive(data[HDR_SIZE:], self._trusted(data[0]))
        for s, _ in frames:
            self._post(s)

    def _post(self, slot: int) -> None:
        """add_recvbuf_mergeable (add_recvbuf_small without MRG_RXBUF): the
        slot's buffer back on the ring, as long as buffers are now."""
        self.rx_posted[slot] = n = self.rx_len
        self.rx.add([(self.rx_bufs[slot], n, True)], slot)

    def _average(self, length: int) -> None:
        """ewma_pkt_len_add of a packet received in mergeable buffers."""
        avg = self.avg_pkt_len
        self.avg_pkt_len = (avg * (EWMA_WEIGHT - 1) + length) // EWMA_WEIGHT if avg else length
        self.rx_len = self._mergeable_len()

    def _mergeable_len(self) -> int:
        """get_mergeable_buf_len: the header and the average packet, at
        least GOOD_PACKET_LEN, at most a page, in whole cache lines."""
        wanted = HDR_SIZE + min(max(self.avg_pkt_len, GOOD_PACKET_LEN), PAGE_SIZE - HDR_SIZE)
        return -(-wanted // L1_CACHE_BYTES) * L1_CACHE_BYTES

    def _trusted(self, flags: int) -> bool:
        """Whether the stack may take a frame unsummed: NEEDS_CSUM
        (virtio_net_hdr_to_skb: CHECKSUM_PARTIAL), or DATA_VALID with
        NETIF_F_RXCSUM (``rx_csum``)."""
        return bool(flags & v.VIRTIO_NET_HDR_F_NEEDS_CSUM or self.rx_csum and flags & v.VIRTIO_NET_HDR_F_DATA_VALID)

    def _receive_gso(self, data: bytes) -> None:
        """virtio_net_hdr_to_skb: a TCP packet the host kept whole, up as one
        with its gso_size; NEEDS_CSUM makes it CHECKSUM_PARTIAL (not summed
        again).  A GSO type not negotiated, gso_size 0 or a frame that is not
        TCP/IPv4 is a frame error ("bad gso")."""
        flags, gso_type, _, gso_size, _, _, _ = v.NET_HDR.unpack_from(data)
        frame = data[HDR_SIZE:]
        if (not self.features >> v.VIRTIO_NET_F_GUEST_TSO4 & 1 or gso_type != v.VIRTIO_NET_HDR_GSO_TCPV4
                or not gso_size or len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6):
            self.kernel.dropped("rx_frame_errors")
            return
        self.stack.receive(GsoFrame.of(frame, gso_size), self._trusted(flags))

    def _config_intr(self) -> None:
        """A configuration change; DEVICE_NEEDS_RESET shows in the status."""
        self.stats["virtio_config_interrupts"] += 1
        if self.cread("device_status") & v.DEVICE_NEEDS_RESET:
            self.stats["virtio_device_needs_reset"] += 1
        self.vcpu.eoi(self.vectors[CONFIG_VECTOR])
