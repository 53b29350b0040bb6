"""virtio network device (virtio 1.1 section 5.1) on the PCI transport.

Queue 0 receives, queue 1 transmits.  Transmit runs as QEMU's tx bottom half
and vhost-net's handle_tx do: with kicks suppressed, drain the ring a burst
at a time, taking what the driver adds while the backend is still busy
without a kick; only a look that finds the ring empty asks for kicks again
and re-checks (2.6.7.1) so no buffer is missed.  Receive fills one or more
writable chains per frame (VIRTIO_NET_F_MRG_RXBUF, num_buffers) behind a
12-byte virtio_net_hdr.

With VIRTIO_NET_F_GUEST_TSO4 negotiated the host hands the device TCP
packets of up to 64 KB whole (the tap's TUNSETOFFLOAD TUN_F_TSO4, which
QEMU sets from the guest's features): the header says GSO_TCPV4 with its
gso_size and NEEDS_CSUM (the packet's checksum is partial, as the sending
guest or the host's GRO left it), 5.1.6.4.  Such a packet waits until the
ring holds enough writable bytes for it (QEMU's virtio_net_has_buffers,
vhost-net's get_rx_bufs); one that does not fit the chain it is given
without MRG_RXBUF is dropped and counted."""

from __future__ import annotations

from ..mem.dma import Dma, DmaFault
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import virtio as v
from ..spec.e1000 import CLASS_ETHERNET
from .discard import discard
from .offload import TCP_CHECK, TCP_MIN_MSS, complete_checksum, is_tcpv4
from .virtio_pci import TRANSPORT_STATE, VirtioPciDevice
from .virtqueue import VirtqueueError
from .registry import DeviceEntry
from .vmstate import Bytes, VmState

TX_BURST = 256                  # QEMU tx_burst / vhost-net VHOST_NET_PKT_WEIGHT
MAX_FRAME = 65550
_HDR = v.NET_HDR
_HDR_SIZE = _HDR.size
_RX_HDR = _HDR.pack(0, v.VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0, 1)
_RX_HDR_VALID = _HDR.pack(v.VIRTIO_NET_HDR_F_DATA_VALID, v.VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0, 1)
_MRG_RXBUF = v.VIRTIO_NET_F_MRG_RXBUF
_MTU_FRAME = 1514               # an untagged frame of a 1500-byte MTU: it fits the first buffer a driver posts
_NET_CONFIG = v.NET_CONFIG


class VirtioNet(VirtioPciDevice):
    NAME = "virtio-net"
    DEVICE_ID = v.DEVICE_ID_NET
    CLASS = CLASS_ETHERNET
    FEATURES = (VirtioPciDevice.FEATURES | 1 << v.VIRTIO_NET_F_MAC | 1 << v.VIRTIO_NET_F_MRG_RXBUF
                | 1 << v.VIRTIO_NET_F_STATUS | 1 << v.VIRTIO_NET_F_CSUM | 1 << v.VIRTIO_NET_F_HOST_TSO4
                | 1 << v.VIRTIO_NET_F_GUEST_CSUM | 1 << v.VIRTIO_NET_F_GUEST_TSO4)

    def __init__(self, sim: Sim, mac: bytes, dma: Dma, standby: bool = False, guest_tso4: bool = True) -> None:
        """``standby``: offer VIRTIO_NET_F_STANDBY (the NIC backs up a passed-through one with its MAC).
        ``guest_tso4`` False: do not offer VIRTIO_NET_F_GUEST_TSO4 (QEMU's guest_tso4=off)."""
        self.FEATURES = (VirtioNet.FEATURES | standby << v.VIRTIO_NET_F_STANDBY) & ~(
            (not guest_tso4) << v.VIRTIO_NET_F_GUEST_TSO4)
        self.mac = mac
        self.port = None
        self.polling = False                      # a poll-mode backend never wants kicks
        super().__init__(sim, dma, num_queues=2)
        self.config = bytearray(_NET_CONFIG.pack(v.VIRTIO_NET_S_LINK_UP, 1, 1500))
        self.config[v.NET_CONFIG_MAC : v.NET_CONFIG_MAC + 6] = mac

    @property
    def takes_gso(self) -> bool:
        """The guest takes TCP packets whole (GUEST_TSO4): the tap's TUN_F_TSO4."""
        return bool(self.driver_features >> v.VIRTIO_NET_F_GUEST_TSO4 & 1)

    @property
    def takes_csum(self) -> bool:
        """The guest takes TCP checksums partial (GUEST_CSUM): the tap's TUN_F_CSUM."""
        return bool(self.driver_features >> v.VIRTIO_NET_F_GUEST_CSUM & 1)

    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset : offset + size], "little") if offset + size <= len(self.config) else 0

    # ---- doorbells -------------------------------------------------------------
    def kick(self, cpu: Resource, queue: int) -> bool:
        """Handle a notification on ``queue``; True when the backend must look
        at the queue again once the work it just took is done (its kicks stay
        off meanwhile), False when it may sleep until the next kick."""
        if not self.live:
            return False
        if queue == v.TX_QUEUE:
            return self.handle_tx(cpu)
        if self.port is not None:
            self.port.flush(cpu)                  # RX buffers were added
        return False

    # ---- transmit --------------------------------------------------------------
    def handle_tx(self, cpu: Resource) -> bool:
        """Send what the driver has published, up to a burst.  The chains
        taken are done at ``cpu``'s cursor, not now: until then the backend is
        still running and kicks stay off (vhost_disable_notify; QEMU's tx
        bottom half), so it is called again then (True).  Only a call that
        finds the ring empty asks for kicks again and re-checks (2.6.7.1):
        False, the backend sleeps."""
        q, port = self.queues[v.TX_QUEUE], self.port
        try:
            q.want_kicks(False)
            sent = 0
            while sent < TX_BURST and (chain := q.pop(cpu)) is not None:
                head, readable, _ = chain
                got = self._gather(cpu, readable)
                if got is not None:
                    port.send(cpu, *got) if got[1] else port.send(cpu, got[0])
                q.push(head, 0)
                sent += 1
            if q.should_interrupt():
                self.notify_queue(cpu, q)
            if self.polling:
                return sent == TX_BURST
            if sent:
                return True
            q.want_kicks(True)
            return q.has_avail()                  # raced with the driver: go round again
        except VirtqueueError as err:
            self.needs_reset(cpu, f"tx: {err}")
            return False

    def _gather(self, cpu: Resource, segments: list[tuple[int, int]]) -> tuple[bytes, int] | None:
        """Read a chain's buffers: virtio_net_hdr then the frame; the frame
        and its gso_size, for a TCPv4 GSO packet the backend hands on whole
        (its segments' checksums are summed where it is segmented), else 0."""
        one = len(segments) == 1
        total = segments[0][1] if one else sum(length for _, length in segments)
        if total <= _HDR_SIZE or total > MAX_FRAME + _HDR_SIZE:
            discard(self, "tx_bad_length")
            return None
        try:
            if one:
                data = self.dma.read(cpu, segments[0][0], total)
            else:
                data = b"".join(self.dma.read(cpu, addr, length) for addr, length in segments)
        except DmaFault:
            discard(self, "tx_dma_fault")
            return None
        flags, gso_type, _, gso_size, csum_start, csum_offset, _ = _HDR.unpack_from(data)
        frame = data[_HDR_SIZE:]
        if gso_type == v.VIRTIO_NET_HDR_GSO_TCPV4 and self.driver_features >> v.VIRTIO_NET_F_HOST_TSO4 & 1:
            if gso_size < TCP_MIN_MSS or not is_tcpv4(frame):
                discard(self, "tx_bad_gso")
                return None
            return frame, gso_size
        if flags & v.VIRTIO_NET_HDR_F_NEEDS_CSUM:
            frame = complete_checksum(frame, csum_start, csum_start + csum_offset)   # 5.1.6.2
        return frame, 0

    # ---- receive ---------------------------------------------------------------
    def can_receive(self, size: int) -> bool:
        q = self.queues[v.RX_QUEUE]
        if not self.live or not q.enabled:
            return False
        try:
            if size > _MTU_FRAME and q.has_avail():
                return self._has_buffers(q, size)
            if (avail := q.has_avail()) or self.polling:
                return avail
            q.want_kicks(True)                    # out of buffers: kick me on refill
            return q.has_avail()
        except DmaFault:
            return False
        except VirtqueueError as err:
            self.needs_reset(self.port.reader, f"rx: {err}")
            return False

    def _has_buffers(self, q, size: int) -> bool:
        """virtio_net_has_buffers: with MRG_RXBUF, room for a packet larger
        than one MTU frame (a GSO packet) in the chains made available, else
        ask for a kick on refill (polling: look again next round); without,
        the next chain is tried (``_fill`` drops what does not fit it)."""
        if not self.driver_features >> _MRG_RXBUF & 1 or q.avail_bytes(_HDR_SIZE + size):
            return True
        if self.polling:
            return False
        q.want_kicks(True)
        return q.avail_bytes(_HDR_SIZE + size)   # raced with a refill

    def receive(self, cpu: Resource, frame: bytes) -> None:
        q = self.queues[v.RX_QUEUE]
        gso_size = getattr(frame, "gso_size", 0)
        if gso_size or getattr(frame, "csum_partial", False):     # 5.1.6.4: only from a tap with TUN_F_TSO4/CSUM
            l4 = 14 + (frame[14] & 0xF) * 4
            data = _HDR.pack(v.VIRTIO_NET_HDR_F_NEEDS_CSUM, v.VIRTIO_NET_HDR_GSO_TCPV4 if gso_size else 0,
                             l4 + (frame[l4 + 12] >> 4) * 4, gso_size, l4, TCP_CHECK, 1) + frame
        else:
            valid = getattr(frame, "csum_valid", False) and self.driver_features >> v.VIRTIO_NET_F_GUEST_CSUM & 1
            data = (_RX_HDR_VALID if valid else _RX_HDR) + frame   # 5.1.6.4: DATA_VALID with GUEST_CSUM
        try:
            self._fill(cpu, q, data)
            if q.should_interrupt():
                self.notify_queue(cpu, q)
        except VirtqueueError as err:
            self.needs_reset(cpu, f"rx: {err}")

    def _fill(self, cpu: Resource, q, data: bytes) -> None:
        """Spread ``data`` over as many chains as it needs (one without
        MRG_RXBUF), then set num_buffers in the first."""
        merge = self.driver_features >> _MRG_RXBUF & 1
        pos, used, first, size = 0, [], None, len(data)
        while pos < size:
            chain = q.pop(cpu)
            if chain is None:
                self.errors["rx_no_buffer"] += 1  # dropped: ran out mid-frame
                break
            head, _, writable = chain
            if not writable:                      # QEMU: "receive queue contains no in buffers"
                raise VirtqueueError(f"queue {q.index}: receive chain {head} has no writable buffer")
            written = self._scatter(cpu, writable, data, pos)
            if written is None:
                used.append((head, 0))
                break
            first = writable if first is None else first
            pos += written
            used.append((head, written))
            if not merge:
                break
        if pos < size:
            discard(self, "rx_dropped", data[_HDR_SIZE:])
        elif merge and len(used) > 1:             # through the first chain's buffers, as QEMU's iov_copy
            at = _HDR.offset("num_buffers")
            self._scatter(cpu, first, data[:at] + len(used).to_bytes(2, "little"), 0)
        for head, written in used:
            q.push(head, written if pos >= size else 0)

    VMSTATE = VmState("virtio-net", 1, (*TRANSPORT_STATE, Bytes("config")))

    def _scatter(self, cpu: Resource, segments, data: bytes, pos: int) -> int | None:
        start, size, write = pos, len(data), self.dma.write
        try:
            for addr, length in segments:
                if pos >= size:
                    break
                chunk = data if not pos and length >= size else data[pos : pos + length]
                write(cpu, addr, chunk)
                pos += len(chunk)
        except DmaFault:
            self.errors["rx_dma_fault"] += 1
            return None
        return pos - start


DEVICE = DeviceEntry(VirtioNet, "paravirt", "virtio 1.x network device", ("QEMU/KVM", "Firecracker"),
                     "virtio_net", (v.VENDOR_ID, v.DEVICE_ID_NET), backends=("qemu", "vhost-net", "vhost-user"),
                     hypervisor="kvm",
                     offloads=("rx-checksum", "tx-checksum-ip-generic", "tx-tcp-segmentation", "rx-gro-hw"))
