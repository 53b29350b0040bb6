"""netvsc, the guest's driver for Hyper-V's synthetic NIC (Linux
drivers/net/hyperv/netvsc.c, rndis_filter.c), on a VMBus channel.

Bring-up follows netvsc_device_add and rndis_filter_device_add: the ring
pair's GPADL and OPENCHANNEL; NVSP INIT from the highest version down until
the host accepts one, the NDIS version and config; the receive buffer and
the send buffer each as a GPADL sent to the host; RNDIS INITIALIZE, the
MAC by QUERY of RNDIS_OID_802_3_PERMANENT_ADDRESS; from NVSP 5 on, vRSS
(rndis_filter_device_add, rndis_set_subchannel): QUERY of
OID_GEN_RECEIVE_SCALE_CAPABILITIES, a channel per vCPU up to what the host
has and VRSS_CHANNEL_DEFAULT, NVSP_MSG5_TYPE_SUBCHANNEL for all but the
primary, each offered sub-channel opened with its events to a vCPU of its
own (channel n on vCPU n), then SET of OID_GEN_RECEIVE_SCALE_PARAMETERS
with the Toeplitz key and an indirection table over the open channels
(ethtool_rxfh_indir_default); the packet filter by SET last.  Only then
does the interface carry frames.

With its MAC known the netdev registers as the standby of a failover
master (net_failover's semantics, which Linux's netvsc keeps itself in
netvsc_vf_join and netvsc_start_xmit): a VF with the same MAC, present or
hot-plugged later, carries the traffic while it is there, and the synthetic
path while it is not.

A frame goes out as an RNDIS PACKET_MSG copied into a free send-buffer
section (netvsc_copy_to_send_buf) and an NVSP SEND_RNDIS_PKT naming the
section, on the channel of the sending vCPU; its completion frees the
section.  A channel's event, on its vCPU, masks its receive ring and
schedules NAPI: the poll takes completions and transfer-page packets (RNDIS
messages in the receive buffer, copied into an skb and completed back to
the host), commits the read index (signalling a host that waits for room),
unmasks and looks again.  What the host hands back is checked as Linux does:
a range outside the receive buffer or an RNDIS length past its message is
dropped; a broken ring ends the device."""

from __future__ import annotations

from collections import deque

from ...net.headers import l4_offset
from ...spec import rndis as r
from ...spec import vmbus as v
from ...spec.rss import RSS_DEFAULT_KEY
from .failover import register_netdev
from .vmbus import GuestChannel, Vmbus

RING_PAGES = 128                    # netvsc_ring_bytes: 128 pages for each direction
RECV_SECTIONS = 512                 # NETVSC_DEFAULT_RX
SEND_SECTIONS = 192                 # NETVSC_DEFAULT_TX
RECV_BYTES = RECV_SECTIONS * r.NETVSC_RECV_SECTION_SIZE
SEND_BYTES = SEND_SECTIONS * r.NETVSC_SEND_SECTION_SIZE
NAPI_WEIGHT = 64
TX_TAG = 1 << 32                    # an RNDIS send's transaction id: the tag and its section
GSO_TAG = 1 << 33                   # a page-buffer send's: the tag and its buffer
GSO_BUFFERS = 32                    # packets in page buffers at once (the skbs netvsc hands over whole)
GSO_BUFFER = 17 * v.PAGE_SIZE       # one: a 64 KB GSO packet, its RNDIS header and per-packet info
NETVSC_MTU_FRAME = 1514             # send_ndis_config.mtu: the MTU and the Ethernet header
FILTER = r.NDIS_PACKET_TYPE_DIRECTED | r.NDIS_PACKET_TYPE_BROADCAST | r.NDIS_PACKET_TYPE_ALL_MULTICAST
VERSIONS = (r.NVSP_PROTOCOL_VERSION_61, r.NVSP_PROTOCOL_VERSION_6, r.NVSP_PROTOCOL_VERSION_5,
            r.NVSP_PROTOCOL_VERSION_4, r.NVSP_PROTOCOL_VERSION_2, r.NVSP_PROTOCOL_VERSION_1)
COMPLETION = v.VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED
_RNDIS_PACKET = r.RNDIS_PACKET.struct
ONE_SEND = v.align8(v.VMPACKET_DESCRIPTOR.size + r.NVSP_RNDIS_PKT.size) + v.PREV_INDICES + 1   # pending_send_sz
RSS_HASHINFO = r.NDIS_HASH_FUNC_TOEPLITZ | r.NDIS_HASH_IPV4 | r.NDIS_HASH_TCP_IPV4


def vmbus_probe(kernel, hv, channels: dict[bytes, int] | None = None) -> None:
    """The VMBus driver, and a netvsc netdev for every synthetic NIC offered; ``channels``: the
    channel count set for a MAC (ethtool -L combined)."""
    def probe(channel: GuestChannel) -> Netvsc:
        netvsc = Netvsc(kernel, channel, channels or {})
        kernel.attach_netdev(netvsc)
        return netvsc
    kernel.vmbus = Vmbus(kernel, hv, probe)


class NetvscChannel:
    """One of the device's channels (struct netvsc_channel): its rings, its NAPI
    read position, the receive completions its send ring had no room for."""

    def __init__(self, channel: GuestChannel, ring: int) -> None:
        self.channel = channel
        self.ring = ring                    # the ring pair's pages
        self.read = 0
        self.poll_scheduled = False
        self.unsent: deque[list[bytes]] = deque()


class Netvsc:
    standby = True                  # a VF with its MAC becomes the primary path (netvsc_vf_join)

    def __init__(self, kernel, channel: GuestChannel, channels: dict[bytes, int]) -> None:
        self.kernel = kernel
        self.channels_set = channels
        self.channel = channel
        self.bus = channel.bus
        self.mem = kernel.mem
        self.stats = kernel.stats
        self.mac: bytes | None = None       # learnt from the host (RNDIS query)
        self.stack = None
        self.ready = self.broken = False
        self.failed: str | None = None      # why the device went down, if it did
        self.tx_queue_stopped = False
        alloc = kernel.alloc.alloc
        self.queues = [NetvscChannel(channel, alloc(2 * RING_PAGES * v.PAGE_SIZE))]   # by sub-channel index
        self.subchannels: int | None = None     # granted by the host, once it has answered
        self.opened_subchannels = 0
        self.version = 0
        self.recv_buf, self.send_buf = alloc(RECV_BYTES), alloc(SEND_BYTES)
        self.recv_size = RECV_BYTES
        self.section_size = r.NETVSC_SEND_SECTION_SIZE
        self.tx_free: list[int] = []
        self.offloads: frozenset[str] = frozenset()        # what the host took (OID_TCP_OFFLOAD_PARAMETERS)
        self.gso_bufs: list[int] = []
        self.gso_free: list[int] = []
        self.versions = list(VERSIONS)
        self.requests: dict[int, object] = {}        # NVSP request id -> what its completion continues with
        self.rndis_waiting: dict[int, object] = {}   # RNDIS request id -> continuation
        self.next_id = 1
        self._ring_up(self.queues[0], lambda status: self._step(status, "netvsc_open_failed", self._init))

    def _ring_up(self, q: NetvscChannel, opened) -> None:
        """A channel's ring pair as a GPADL, then OPENCHANNEL on it with its events to vCPU
        sub_index (netvsc_sc_open's target CPU); ``opened(status)``."""
        channel = q.channel
        channel.callback, channel.on_rescind = lambda: self._channel_cb(q), self._rescinded
        vp = channel.sub_index % len(self.kernel.vcpus)

        def created(status: int) -> None:
            if status:
                opened(status)
            else:
                channel.open(q.ring, 2 * RING_PAGES, handle, opened, vp)
        handle = self.bus.establish_gpadl(channel, q.ring, 2 * RING_PAGES * v.PAGE_SIZE, created)

    def _step(self, status: int, why: str, then, *args) -> None:
        """A set-up step answered: on to the next, or the device fails to come up."""
        if status:
            self._broke(why)
            return
        then(*args)

    # ---- NVSP (netvsc_connect_vsp) ---------------------------------------------------------------
    def _request(self, message: bytes, then) -> None:
        tid = self.next_id
        self.next_id += 1
        self.requests[tid] = then
        self._send(self.queues[0], v.packet(v.VM_PKT_DATA_INBAND, tid, message, COMPLETION))

    def _init(self) -> None:
        version = self.versions[0]
        self._request(r.NVSP_INIT.pack(r.NVSP_MSG_TYPE_INIT, version, version), self._init_done)

    def _init_done(self, body: bytes) -> None:
        _, version, _, status = r.NVSP_INIT_COMPLETE.unpack_from(body.ljust(r.NVSP_INIT_COMPLETE.size, b"\0"))
        if status != r.NVSP_STAT_SUCCESS or version != self.versions[0]:
            self.versions.pop(0)
            if self.versions:
                self._init()
            else:
                self._step(1, "netvsc_no_common_version", None)
            return
        self.version = version
        primary = self.queues[0]
        self._send(primary, v.packet(v.VM_PKT_DATA_INBAND, 0, r.NVSP_NDIS_VER.pack(r.NVSP_MSG1_TYPE_SEND_NDIS_VER,
                                                                                    *r.NDIS_VERSION_6_30)))
        if version >= r.NVSP_PROTOCOL_VERSION_2:
            self._send(primary, v.packet(v.VM_PKT_DATA_INBAND, 0, r.NVSP_NDIS_CONFIG.pack(
                r.NVSP_MSG2_TYPE_SEND_NDIS_CONFIG, NETVSC_MTU_FRAME, 0)))
        self._buffer(self.recv_buf, RECV_BYTES, r.NVSP_MSG1_TYPE_SEND_RECV_BUF, r.NETVSC_RECEIVE_BUFFER_ID,
                     self._recv_done)

    def _buffer(self, gpa: int, size: int, msg_type: int, buffer_id: int, then) -> None:
        """A buffer as a GPADL, then the NVSP message that hands it to the host."""
        def created(status: int) -> None:
            self._step(status, "netvsc_buffer_gpadl_failed", self._request,
                       r.NVSP_SEND_BUF.pack(msg_type, handle, buffer_id), then)
        handle = self.bus.establish_gpadl(self.channel, gpa, size, created)

    def _recv_done(self, body: bytes) -> None:
        """The host's receive buffer sections: one, inside the buffer (netvsc_init_buf's checks)."""
        _, status, sections, offset, sub_alloc, count, end = r.NVSP_RECV_BUF_COMPLETE.unpack_from(
            body.ljust(r.NVSP_RECV_BUF_COMPLETE.size, b"\0"))
        bad = status != r.NVSP_STAT_SUCCESS or sections != 1 or offset or not sub_alloc or end > RECV_BYTES
        self._step(bad, "netvsc_recv_buf_refused", self._buffer, self.send_buf, SEND_BYTES,
                   r.NVSP_MSG1_TYPE_SEND_SEND_BUF, r.NETVSC_SEND_BUFFER_ID, self._send_done)

    def _send_done(self, body: bytes) -> None:
        _, status, section = r.NVSP_SEND_BUF_COMPLETE.unpack_from(body.ljust(r.NVSP_SEND_BUF_COMPLETE.size, b"\0"))
        if status == r.NVSP_STAT_SUCCESS and section:
            self.section_size = section
            self.tx_free = list(range(SEND_BYTES // section - 1, -1, -1))
        self._step(not self.tx_free, "netvsc_send_buf_refused", self._rndis_request, r.RNDIS_INIT_REQUEST.pack(
            r.RNDIS_MSG_INIT, r.RNDIS_INIT_REQUEST.size, 0, r.RNDIS_MAJOR_VERSION, r.RNDIS_MINOR_VERSION,
            r.NETVSC_SEND_SECTION_SIZE), self._rndis_up)

    # ---- RNDIS (rndis_filter_device_add) ----------------------------------------------------------
    def _rndis_request(self, message: bytes, then) -> None:
        """An RNDIS control message with a request id of its own, in a send section."""
        req_id = self.next_id
        self.next_id += 1
        message = message[:8] + v.U32.pack(req_id) + message[12:]
        self.rndis_waiting[req_id] = then
        if not self._send_rndis(message, r.RNDIS_CHANNEL_CONTROL):
            self._step(1, "netvsc_rndis_send_failed", None)

    def _rndis_up(self, message: bytes) -> None:
        status = r.RNDIS_INIT_COMPLETE.unpack_from(message.ljust(r.RNDIS_INIT_COMPLETE.size, b"\0"))[3]
        self._step(status, "rndis_init_failed", self._rndis_request, r.RNDIS_OID_REQUEST.pack(
            r.RNDIS_MSG_QUERY, r.RNDIS_OID_REQUEST.size, 0, r.RNDIS_OID_802_3_PERMANENT_ADDRESS, 0, 0, 0),
            self._mac)

    def _mac(self, message: bytes) -> None:
        value = _query_value(message)
        bad = value is None or len(value) != 6
        if not bad:
            self.mac = value
        enable = r.NDIS_OFFLOAD_PARAMS.pack(
            r.NDIS_OBJECT_TYPE_DEFAULT, r.NDIS_OFFLOAD_PARAMETERS_REVISION_3, r.NDIS_OFFLOAD_PARAMS.size,
            r.NDIS_OFFLOAD_PARAMETERS_NO_CHANGE, r.NDIS_OFFLOAD_PARAMETERS_TX_RX_ENABLED, *[0] * 5,
            r.NDIS_OFFLOAD_PARAMETERS_LSOV2_ENABLED, 0, 0, 0, 0)
        self._step(bad, "rndis_query_mac_failed", self._rndis_request, r.RNDIS_OID_REQUEST.pack(
            r.RNDIS_MSG_SET, r.RNDIS_OID_REQUEST.size + len(enable), 0, r.OID_TCP_OFFLOAD_PARAMETERS, len(enable),
            r.RNDIS_OID_REQUEST.size - r.RNDIS_BODY, 0) + enable, self._offloads_set)

    def _offloads_set(self, message: bytes) -> None:
        """rndis_netdev_set_hwcaps: TCP/IPv4 checksums both ways and LSOv2 taken by the host, or none;
        then vRSS from NVSP 5 on, else the packet filter."""
        if r.RNDIS_SET_COMPLETE.unpack_from(message.ljust(r.RNDIS_SET_COMPLETE.size, b"\0"))[3]:
            self.stats["rndis_set_offload_failed"] += 1
        else:
            self.offloads = frozenset(("tx_csum", "rx_csum", "tso"))
            self.gso_bufs = [self.kernel.alloc.alloc(GSO_BUFFER) for _ in range(GSO_BUFFERS)]
            self.gso_free = list(range(GSO_BUFFERS - 1, -1, -1))
        if self.version < r.NVSP_PROTOCOL_VERSION_5:
            self._set_filter()
            return
        self._rndis_request(r.RNDIS_OID_REQUEST.pack(
            r.RNDIS_MSG_QUERY, r.RNDIS_OID_REQUEST.size, 0, r.OID_GEN_RECEIVE_SCALE_CAPABILITIES, 0, 0, 0),
            self._rss_caps)

    # ---- vRSS (rndis_filter_device_add, rndis_set_subchannel, rndis_filter_set_rss_param) ----------
    def _rss_caps(self, message: bytes) -> None:
        """A channel per vCPU, as many as the host has queues; one alone needs no sub-channels."""
        value = _query_value(message)
        queues = 1
        if value is not None and len(value) >= r.NDIS_RECV_SCALE_CAP.size:
            queues = r.NDIS_RECV_SCALE_CAP.unpack_from(value)[5]
        wanted = min(self.channels_set.get(self.mac) or min(r.VRSS_CHANNEL_DEFAULT, len(self.kernel.vcpus)), queues)
        if wanted < 2:
            self._set_filter()
            return
        self.channel.sc_create = self._sc_open
        self._request(r.NVSP_SUBCHANNEL_REQUEST.pack(r.NVSP_MSG5_TYPE_SUBCHANNEL, r.NVSP_SUBCHANNEL_ALLOCATE,
                                                     wanted - 1), self._subchannels_granted)

    def _subchannels_granted(self, body: bytes) -> None:
        _, status, granted = r.NVSP_SUBCHANNEL_COMPLETE.unpack_from(body.ljust(r.NVSP_SUBCHANNEL_COMPLETE.size, b"\0"))
        if status != r.NVSP_STAT_SUCCESS or not 0 < granted < r.VRSS_CHANNEL_MAX:
            self.stats["netvsc_subchannels_refused"] += 1
            granted = 0
        self.subchannels = granted
        self._subchannels_open()

    def _sc_open(self, channel: GuestChannel) -> None:
        """netvsc_sc_open: an offered sub-channel's rings, opened on its vCPU."""
        if not 0 < channel.sub_index < r.VRSS_CHANNEL_MAX or self.broken:
            self.stats["netvsc_bad_subchannel"] += 1
            return
        self.queues += [None] * (channel.sub_index + 1 - len(self.queues))
        q = NetvscChannel(channel, self.kernel.alloc.alloc(2 * RING_PAGES * v.PAGE_SIZE))

        def opened(status: int) -> None:
            if status:
                self.stats["netvsc_subchannel_open_failed"] += 1
            else:
                self.queues[channel.sub_index] = q
            self.opened_subchannels += 1
            self._subchannels_open()
        self._ring_up(q, opened)

    def _subchannels_open(self) -> None:
        """Every granted sub-channel answered: RSS over the open channels, then the packet filter."""
        if self.subchannels is None or self.opened_subchannels < self.subchannels:
            return
        self.subchannels = None
        channels = [n for n, q in enumerate(self.queues) if q is not None]
        table = b"".join(v.U32.pack(channels[i % len(channels)]) for i in range(r.ITAB_NUM))
        size = r.NDIS_RECV_SCALE_PARAM.size
        param = r.NDIS_RECV_SCALE_PARAM.pack(
            r.NDIS_OBJECT_TYPE_RSS_PARAMETERS, r.NDIS_RECEIVE_SCALE_PARAMETERS_REVISION_2, size, 0, RSS_HASHINFO,
            len(table), size, r.NETVSC_HASH_KEYLEN, size + len(table), 0, 0, 0) + table + RSS_DEFAULT_KEY
        self._rndis_request(r.RNDIS_OID_REQUEST.pack(
            r.RNDIS_MSG_SET, r.RNDIS_OID_REQUEST.size + len(param), 0, r.OID_GEN_RECEIVE_SCALE_PARAMETERS,
            len(param), r.RNDIS_OID_REQUEST.size - r.RNDIS_BODY, 0) + param, self._rss_set)

    def _rss_set(self, message: bytes) -> None:
        if r.RNDIS_SET_COMPLETE.unpack_from(message.ljust(r.RNDIS_SET_COMPLETE.size, b"\0"))[3]:
            self.stats["rndis_set_rss_failed"] += 1
        self._set_filter()

    def _set_filter(self) -> None:
        self._rndis_request(r.RNDIS_OID_REQUEST.pack(
            r.RNDIS_MSG_SET, r.RNDIS_OID_REQUEST.size + 4, 0, r.RNDIS_OID_GEN_CURRENT_PACKET_FILTER, 4,
            r.RNDIS_OID_REQUEST.size - r.RNDIS_BODY, 0) + v.U32.pack(FILTER), self._filter_set)

    def _filter_set(self, message: bytes) -> None:
        status = r.RNDIS_SET_COMPLETE.unpack_from(message.ljust(r.RNDIS_SET_COMPLETE.size, b"\0"))[3]
        self._step(status, "rndis_set_filter_failed", self._up)

    def _up(self) -> None:
        """Carrier on: registered with its MAC as the master of a VF with the same MAC, now or when one
        arrives (netvsc_register_vf: the transparent VF of accelerated networking)."""
        self.ready = True
        if self in self.kernel.netdevs:
            self.kernel.netdevs.remove(self)
        register_netdev(self.kernel, self)
        self._wake()

    # ---- the send rings -------------------------------------------------------------------------------
    def _send(self, q: NetvscChannel, parts: list[bytes]) -> bool:
        """vmbus_sendpacket: into the channel's send ring; signal when the host asked."""
        if self.broken:
            return False
        self.kernel.cpu.charge("ring_op")
        try:
            written, signal = v.ring_write(q.channel.send, q.channel.send.size, parts)
        except v.RingError:
            self._broke("netvsc_send_ring_broken")
            return False
        if signal:
            q.channel.signal()
        return written

    def _send_rndis(self, message: bytes, channel_type: int, q: NetvscChannel | None = None) -> bool:
        """An RNDIS message copied into a free send section, and SEND_RNDIS_PKT naming it on ``q``
        (the primary for control)."""
        if not self.tx_free:
            return False
        q = q or self.queues[0]
        section = self.tx_free.pop()
        self.mem.write(self.send_buf + section * self.section_size, message)
        nvsp = r.NVSP_RNDIS_PKT.pack(r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT, channel_type, section, len(message))
        if self._send(q, v.packet(v.VM_PKT_DATA_INBAND, TX_TAG | section, nvsp, COMPLETION)):
            return True
        self.tx_free.append(section)
        if not self.broken:             # hv_ringbuffer_write: no room; the host signals once there is
            q.channel.send.put32(v.PENDING_SEND_SZ, ONE_SEND)
        return False

    def transmit(self, frame: bytes) -> bool:
        """netvsc_start_xmit, on the sending vCPU's channel: an RNDIS PACKET_MSG with per-packet info for
        a GSO packet (LSOv2, its MSS) or a TCP checksum the stack left to the device; copied into a send
        section when it fits one, else handed over in its own pages (netvsc_build_page_buffer)."""
        gso = getattr(frame, "gso_size", 0)
        if self.broken or not gso and len(frame) + r.RNDIS_PACKET.size > self.section_size:
            self.kernel.dropped("tx_dropped", frame)
            return True
        info = self._tx_info(frame, gso)
        size = r.RNDIS_PACKET.size + len(info) + len(frame)
        fits = size <= self.section_size
        if not self.ready or not (self.tx_free if fits else self.gso_free):
            self.tx_queue_stopped = True
            return False
        cpu = self.kernel.cpu
        header = _RNDIS_PACKET.pack(r.RNDIS_MSG_PACKET, size, r.RNDIS_PACKET_HEADER + len(info), len(frame), 0, 0,
                                    0, r.RNDIS_PACKET_HEADER if info else 0, len(info), 0, 0)
        queues = self.queues
        q = queues[cpu.index % len(queues)] or queues[0]
        if fits:
            cpu.charge("copy_hot", nbytes=len(frame))
            sent = self._send_rndis(header + info + frame, r.RNDIS_CHANNEL_DATA, q)
        else:
            sent = self._send_pages(header + info + frame, q)
        if not sent:
            self.tx_queue_stopped = True
        return sent

    def _tx_info(self, frame: bytes, gso: int) -> bytes:
        """LSOv2 for a GSO packet, the checksum request for a TCP/IPv4 frame whose sum the interface's stack
        left partial (CHECKSUM_PARTIAL): each with the TCP header's offset."""
        stack = self.kernel.interfaces.get(self.mac)
        if not (gso or stack is not None and stack.tx_csum) or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            return b""
        l4 = l4_offset(frame)
        if gso:
            return r.ppi(r.TCP_LARGESEND_PKTINFO, r.NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE
                         | l4 << r.NDIS_LSO2_OFFSET_SHIFT | gso)
        return r.ppi(r.TCPIP_CHKSUM_PKTINFO, r.NDIS_TCPIP_CSUM_TX_IPV4 | r.NDIS_TCPIP_CSUM_TX_TCP
                     | l4 << r.NDIS_TCPIP_CSUM_TX_OFFSET_SHIFT)

    def _send_pages(self, message: bytes, q: NetvscChannel) -> bool:
        """vmbus_sendpacket_pagebuffer: the message in a page buffer of its own, its pages listed in a
        GPA-direct packet carrying SEND_RNDIS_PKT with no section."""
        slot = self.gso_free.pop()
        buf = self.gso_bufs[slot]
        self.mem.write(buf, message)
        ranges = b"".join(v.HV_PAGE_BUFFER.pack(min(len(message) - at, v.PAGE_SIZE), 0, (buf + at) >> v.PAGE_SHIFT)
                          for at in range(0, len(message), v.PAGE_SIZE))
        nvsp = r.NVSP_RNDIS_PKT.pack(r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT, r.RNDIS_CHANNEL_DATA, r.NETVSC_INVALID_INDEX, 0)
        header = v.GPA_DIRECT_HEADER.pack(0, len(ranges) // v.HV_PAGE_BUFFER.size) + ranges
        if self._send(q, v.packet(v.VM_PKT_DATA_USING_GPA_DIRECT, GSO_TAG | slot, nvsp, COMPLETION, header)):
            return True
        self.gso_free.append(slot)
        if not self.broken:
            q.channel.send.put32(v.PENDING_SEND_SZ, ONE_SEND + len(header))
        return False

    def _wake(self) -> None:
        if self.tx_queue_stopped and self.tx_free and self.ready and self.stack is not None:
            self.tx_queue_stopped = False
            for q in self.queues:
                if q is not None:
                    q.channel.send.put32(v.PENDING_SEND_SZ, 0)
            self.stack.tx_wake()

    # ---- the receive rings (netvsc_channel_cb, netvsc_poll), each on its channel's vCPU ---------------
    def _channel_cb(self, q: NetvscChannel) -> None:
        if self.broken or q.poll_scheduled:
            return
        q.channel.recv.put32(v.INTERRUPT_MASK, 1)          # hv_begin_read
        q.poll_scheduled = True
        self.kernel.run_soon(lambda: self._poll(q))

    def _poll(self, q: NetvscChannel) -> None:
        q.poll_scheduled = False
        if self.broken:
            return
        ring, size, cpu = q.channel.recv, q.channel.recv.size, self.kernel.cpu
        try:
            self._flush_unsent(q)
            done = 0
            while done < NAPI_WEIGHT and not self.broken:
                got = v.ring_peek(ring, size, q.read)
                if got is None:
                    break
                desc, packet, q.read = got
                done += 1
                cpu.charge("ring_op")
                self._packet(q, desc, packet)
            if done and v.ring_commit_read(ring, size, q.read):
                q.channel.signal()
            more = done == NAPI_WEIGHT or v.end_read(ring, size, q.read)
        except v.RingError:
            self._broke("netvsc_recv_ring_broken")
            return
        self._wake()
        if more and not self.broken:
            self._channel_cb(q)

    def _packet(self, q: NetvscChannel, desc: tuple, packet: bytes) -> None:
        ptype, offset8, _, _, tid = desc
        body = packet[offset8 << 3:]
        if ptype == v.VM_PKT_COMP:
            self._completion(tid, body)
        elif ptype == v.VM_PKT_DATA_USING_XFER_PAGES and len(packet) >= 32:
            self._xfer(q, tid, packet, body)
        else:
            self.stats["netvsc_unknown_packet"] += 1

    def _completion(self, tid: int, body: bytes) -> None:
        if tid & GSO_TAG:
            slot = tid & ~GSO_TAG
            if slot >= len(self.gso_bufs) or slot in self.gso_free:
                self.stats["netvsc_bad_tx_completion"] += 1
                return
            self.gso_free.append(slot)
            return
        if tid & TX_TAG:
            section = tid & ~TX_TAG
            if section * self.section_size >= SEND_BYTES or section in self.tx_free:
                self.stats["netvsc_bad_tx_completion"] += 1
                return
            self.tx_free.append(section)
            status = r.NVSP_RNDIS_PKT_COMPLETE.unpack_from(body.ljust(8, b"\0"))[1]
            if status != r.NVSP_STAT_SUCCESS:
                self.stats["tx_errors"] += 1
            return
        then = self.requests.pop(tid, None)
        if then is None:
            self.stats["netvsc_unexpected_completion"] += 1
            return
        then(body)

    def _xfer(self, q: NetvscChannel, tid: int, packet: bytes, body: bytes) -> None:
        """A transfer-page packet: the RNDIS message at its range of the receive buffer."""
        pageset, _, ranges, count, offset = v.XFER_PAGE_HEADER.unpack_from(packet, v.VMPACKET_DESCRIPTOR.size)
        channel_type = r.NVSP_RNDIS_PKT.unpack_from(body.ljust(r.NVSP_RNDIS_PKT.size, b"\0"))[1]
        if pageset != r.NETVSC_RECEIVE_BUFFER_ID or not ranges or offset > RECV_BYTES or count > RECV_BYTES - offset \
                or count < r.RNDIS_HEADER.size:
            self.stats["netvsc_bad_xfer_range"] += 1
        else:
            self._rndis(self.mem.read(self.recv_buf + offset, count), channel_type)
        self._complete(q, tid)

    def _rndis(self, message: bytes, channel_type: int) -> None:
        """rndis_filter_receive: data to the stack, a completion to its waiter."""
        mtype, length = r.RNDIS_HEADER.unpack_from(message)
        if length > len(message):
            self.stats["rx_errors"] += 1
            return
        if mtype == r.RNDIS_MSG_PACKET:
            _, _, offset, size, _, _, _, ppi_offset, ppi_len, _, _ = _RNDIS_PACKET.unpack_from(
                message.ljust(r.RNDIS_PACKET.size, b"\0"))
            start = r.RNDIS_BODY + offset
            info = r.per_packet_info(message[:length], ppi_offset, ppi_len)
            if start < r.RNDIS_PACKET.size or start + size > length or not size or info is None or self.stack is None:
                self.stats["rx_errors"] += 1
                return
            self.kernel.cpu.charge("copy", nbytes=size)           # into a new skb (netvsc_alloc_recv_skb)
            self._up_the_stack(message[start:start + size], info.get(r.TCPIP_CHKSUM_PKTINFO, 0))
            return
        req_id = v.U32.unpack_from(message, r.RNDIS_BODY)[0] if length >= r.RNDIS_BODY + 4 else 0
        then = self.rndis_waiting.pop(req_id, None)
        if mtype & r.RNDIS_MSG_COMPLETION and then is not None:
            then(message[:length])
        else:
            self.stats["rndis_unexpected"] += 1

    def _up_the_stack(self, frame: bytes, csum: int) -> None:
        """netvsc_alloc_recv_skb: CHECKSUM_UNNECESSARY when the host says the IP and TCP sums were right
        and receive checksum offload is on, so the stack does not sum the frame again."""
        self.stack.receive(frame, bool("rx_csum" in self.offloads and csum & r.NDIS_TCPIP_CSUM_RX_IP_SUCCEEDED
                                       and csum & r.NDIS_TCPIP_CSUM_RX_TCP_SUCCEEDED))

    def _complete(self, q: NetvscChannel, tid: int) -> None:
        """The receive completion, on the channel the packet came on, that gives the host its
        sub-allocation back."""
        parts = v.packet(v.VM_PKT_COMP, tid, r.NVSP_RNDIS_PKT_COMPLETE.pack(
            r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE, r.NVSP_STAT_SUCCESS))
        if q.unsent or not self._send(q, parts):
            q.unsent.append(parts)

    def _flush_unsent(self, q: NetvscChannel) -> None:
        while q.unsent and self._send(q, q.unsent[0]):
            q.unsent.popleft()

    def _broke(self, why: str) -> None:
        self.stats[why] += 1
        self.broken, self.failed = True, why

    def _rescinded(self) -> None:
        """The host took the channel back (it reset it): the device is gone."""
        self._broke("netvsc_rescinded")

    # ---- live migration: the channel's state moved with the VM ---------------------------------------
    def rebind(self, vcpu, mem) -> None:
        self.mem = mem

    def resume(self) -> None:
        """Running again on the target: look at the receive rings (what came while the VM was stopped)."""
        for q in self.queues:
            if q is not None:
                self._channel_cb(q)


def _query_value(message: bytes) -> bytes | None:
    """An RNDIS_QUERY_COMPLETE's information buffer, None if it failed or the
    buffer lies outside the message it names or the one received."""
    _, length, _, status, size, offset = r.RNDIS_QUERY_COMPLETE.unpack_from(
        message.ljust(r.RNDIS_QUERY_COMPLETE.size, b"\0"))
    start = r.RNDIS_BODY + offset
    if status or start + size > min(length, len(message)):
        return None
    return message[start:start + size]
