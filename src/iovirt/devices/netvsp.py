"""netvsp: the synthetic NIC's provider in Hyper-V's root partition, the
virtual switch's end of one VMBus channel (the other end is the guest's
netvsc, Linux drivers/net/hyperv).

NVSP on the channel, in the order netvsc_connect_vsp sends it: INIT (a
version both support), the NDIS version and config, the receive buffer and
the send buffer as GPADLs (the host answers with the receive buffer's
sub-allocations and the send buffer's section size); then RNDIS messages
in send-buffer sections (SEND_RNDIS_PKT with the section's index), each
answered with SEND_RNDIS_PKT_COMPLETE.  RNDIS control (INITIALIZE, QUERY,
SET of the packet filter) is answered, and received frames are indicated,
through a receive-buffer sub-allocation named by a transfer-page packet
that the guest completes to give it back.

vRSS (NVSP 5): the guest queries OID_GEN_RECEIVE_SCALE_CAPABILITIES, asks
for sub-channels with NVSP_MSG5_TYPE_SUBCHANNEL, opens each offered one on a
vCPU of its own and sets OID_GEN_RECEIVE_SCALE_PARAMETERS (the Toeplitz key
and the indirection table of channel numbers); a received IPv4 frame then
goes to the channel its hash's table entry names, and the guest sends on
any of them.

Each channel's work runs on the root VP its event reaches: a poll takes up
to NAPI_WEIGHT packets with the guest's send ring's interrupts masked and
unmasks only when it finds the ring empty (hv_begin_read/hv_end_read).

A guest that breaks the ring (an index past it, a packet longer than what
it wrote) or sends a packet of a type NVSP does not use gets its channel
reset, with all its sub-channels; an NVSP message out of order, a
sub-channel count of none or past VRSS_CHANNEL_MAX, a section index or RNDIS
length past its buffer is rejected with NVSP_STAT_FAIL and counted, RSS
parameters whose table names a channel that is not open or whose key or
table lie outside the request fail the SET; nothing a guest writes raises
into the root."""

from __future__ import annotations

from collections import Counter, deque

from ..sim.resource import Resource
from ..spec import rndis as r
from ..spec import vmbus as v
from ..spec.ethernet import ETH_HLEN
from ..spec.rss import IPV4_L4_INPUT, toeplitz, toeplitz_tables
from .discard import discard
from .offload import GSO_MAX_SIZE, TCP_CHECK, TCP_MIN_MSS, complete_checksum, is_tcpv4, rx_checksums
from .registry import DeviceEntry

NAPI_WEIGHT = 64
VERSIONS = (r.NVSP_PROTOCOL_VERSION_61, r.NVSP_PROTOCOL_VERSION_6, r.NVSP_PROTOCOL_VERSION_5,
            r.NVSP_PROTOCOL_VERSION_4, r.NVSP_PROTOCOL_VERSION_2, r.NVSP_PROTOCOL_VERSION_1)
MAX_FRAME = 1514                    # RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE answered: a 1500-byte MTU
MAX_PAGE_BUFFERS = 32               # MAX_PAGE_BUFFER_COUNT: ranges a GPA-direct packet may list
MAX_MESSAGE = GSO_MAX_SIZE + 256    # an RNDIS message in page buffers: a GSO packet and its header and infos
VRSS_QUEUES = 16                    # receive queues a vNIC may have (Set-VMNetworkAdapter -VrssMaxQueuePairs 16)
BROADCAST = b"\xff" * 6
_MULTICAST = r.NDIS_PACKET_TYPE_MULTICAST | r.NDIS_PACKET_TYPE_ALL_MULTICAST
COMPLETION = v.VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED
_RNDIS_PACKET = r.RNDIS_PACKET.struct
_RECV_NEED = v.VMPACKET_DESCRIPTOR.size + v.XFER_PAGE_HEADER.size + r.NVSP_RNDIS_PKT.size + v.PREV_INDICES
_RSS_CAPS = r.NDIS_RECV_SCALE_CAP.pack(r.NDIS_OBJECT_TYPE_RSS_CAPABILITIES,
                                       r.NDIS_RECEIVE_SCALE_CAPABILITIES_REVISION_2, r.NDIS_RECV_SCALE_CAP.size,
                                       r.NDIS_RSS_CAPS_HASH_TYPE_TCP_IPV4, VRSS_QUEUES, VRSS_QUEUES, r.ITAB_NUM)


class VspChannel:
    """One of the NIC's channels (the primary, or a vRSS sub-channel) as
    netvsp serves it: the guest's send ring read on its root VP, completions
    and indications written to its receive ring behind any that wait."""

    def __init__(self, vsp: Netvsp, channel, cpu: Resource) -> None:
        self.vsp = vsp
        self.channel = channel
        self.cpu = cpu
        self.read = 0                       # private read index of the guest's send ring
        self.polling = False
        self.backlog: deque[list[bytes]] = deque()      # packets waiting for room in the receive ring

    @property
    def running(self) -> bool:
        return self.channel.open and self.vsp.running

    def interrupt(self) -> None:
        """The channel's event on its root VP: packets to take, or room in the receive ring."""
        if not self.polling:
            self.polling = True
            self.vsp.sim.at(self.cpu.cursor, self._poll)
        if self.vsp.port is not None:
            self.vsp.port.flush(self.cpu)

    def _poll(self) -> None:
        self.polling = False
        vsp = self.vsp
        if not self.running:
            return
        vm = vsp.port.vm
        if vm.paused:
            self.polling = True
            vm.when_resumed(lambda: vsp.sim.at(vsp.sim.now, self._poll))
            return
        cpu, ch = self.cpu, self.channel
        if cpu.cursor < vsp.sim.now:
            cpu.sync(vsp.sim.now)
            cpu.charge("wakeup", acct=vsp.acct)
        try:
            self._flush_backlog()
            v.begin_read(ch.outbound)
            done = self._take(NAPI_WEIGHT)
            more = self.running and (done == NAPI_WEIGHT or v.end_read(ch.outbound, ch.out_size, self.read))
        except v.RingError:
            vsp.reset("ring_broken")
            return
        if more:
            self.polling = True
            vsp.sim.at(cpu.cursor, self._poll)

    def _take(self, budget: int) -> int:
        vsp, ch, cpu = self.vsp, self.channel, self.cpu
        done, freed = 0, len(vsp.recv_free)
        while done < budget and self.running:
            got = v.ring_peek(ch.outbound, ch.out_size, self.read)
            if got is None:
                break
            desc, packet, self.read = got
            done += 1
            cpu.charge("ring_op", acct=vsp.acct)
            vsp.packet(self, desc, packet)
        if done and self.running and v.ring_commit_read(ch.outbound, ch.out_size, self.read):
            ch.signal(cpu)
        if len(vsp.recv_free) > freed and vsp.port is not None:
            vsp.port.flush(cpu)
        return done

    def write(self, cpu: Resource, parts: list[bytes]) -> bool:
        """A packet into the guest's receive ring, behind any that wait;
        signal the guest when it asked."""
        if self.backlog:
            self.backlog.append(parts)
            return True
        ch = self.channel
        cpu.charge("ring_op", acct=self.vsp.acct)
        try:
            written, signal = v.ring_write(ch.inbound, ch.in_size, parts)
        except v.RingError:
            self.vsp.reset("ring_broken")
            return False
        if not written:
            self.backlog.append(parts)
            self._wait_for_room(sum(map(len, parts)))
        elif signal:
            ch.signal(cpu)
        return True

    def _wait_for_room(self, size: int) -> None:
        """pending_send_sz: the guest signals once its reads make this much room."""
        self.channel.inbound.put32(v.PENDING_SEND_SZ, v.align8(size) + v.PREV_INDICES + 1)

    def _flush_backlog(self) -> None:
        ch = self.channel
        while self.backlog:
            written, signal = v.ring_write(ch.inbound, ch.in_size, self.backlog[0])
            if not written:
                return
            self.backlog.popleft()
            if signal:
                ch.signal(self.cpu)
        ch.inbound.put32(v.PENDING_SEND_SZ, 0)

    def has_room(self) -> bool:
        """Nothing waiting and room for one indication, else ask to be told of it."""
        if self.backlog:
            return False
        ch = self.channel
        room = v.bytes_to_write(*v.ring_indices(ch.inbound, ch.in_size), ch.in_size)
        if room <= _RECV_NEED:
            self._wait_for_room(_RECV_NEED)
            return False
        return True


class Netvsp:
    NAME = "netvsc"                 # the catalogue's name: the device the guest sees
    VMSTATE = None
    MIGRATION_BLOCKER = "netvsp's state is the root's, moved with the VM's VMBus state (HyperV.restore_partition)"

    def __init__(self, sim, mac: bytes, cpu: Resource, acct: Counter, place: str) -> None:
        self.sim = sim
        self.mac = mac
        self.cpu = cpu                      # the root VP the primary channel's work runs on
        self.acct = acct
        self.place = place
        self.port = None                    # the virtual switch port, attached by the hypervisor
        self.offer_subchannels = None       # the root's VMBus driver: offer n sub-channels
        self.errors: Counter[str] = Counter()
        self.queues: list[VspChannel | None] = []       # by sub-channel index, the primary first
        self._fresh()

    def _fresh(self) -> None:
        self.version = 0
        self.recv = self.send = None
        self.recv_handle = self.send_handle = 0
        self.recv_free: list[int] = []
        self.recv_busy: set[int] = set()
        self.send_sections = 0
        self.rndis_ready = False
        self.filter = 0
        self.rss: tuple | None = None       # (indirection table, Toeplitz tables, TCP ports hashed too)
        self.offload: frozenset[str] = frozenset()     # tx_csum, rx_csum, lso: OID_TCP_OFFLOAD_PARAMETERS

    # ---- the channels (opened and closed by the root's VMBus driver) ----------------------------
    @property
    def channel(self):
        return self.queues[0].channel if self.queues else None

    @property
    def running(self) -> bool:
        return bool(self.queues) and self.queues[0].channel.open

    def open(self, channel) -> None:
        """The primary opened starts the NIC afresh; a sub-channel joins it at its index."""
        if not channel.sub_index:
            self._fresh()
            self.queues = [VspChannel(self, channel, self.cpu)]
        elif channel.sub_index < len(self.queues):
            self.queues[channel.sub_index] = VspChannel(self, channel, channel.cpu)

    def close(self, channel) -> None:
        if not channel.sub_index:
            self.queues = []
        elif channel.sub_index < len(self.queues):
            self.queues[channel.sub_index] = None

    def _queue(self, channel) -> VspChannel | None:
        index = channel.sub_index
        queue = self.queues[index] if index < len(self.queues) else None
        return queue if queue is not None and queue.channel is channel else None

    def interrupt(self, channel) -> None:
        queue = self._queue(channel)
        if queue is not None:
            queue.interrupt()

    def adopt(self, source: Netvsp, channel) -> None:
        """A migration's target: ``source``'s state for ``channel`` (the same guest
        pages, mapped here), then a poll for what the guest queued meanwhile."""
        if not channel.sub_index:
            for key in ("version", "recv_handle", "send_handle", "recv_free", "recv_busy", "send_sections",
                        "rndis_ready", "filter", "rss", "offload"):
                setattr(self, key, getattr(source, key))
            self.recv, self.send = channel.buffer(self.recv_handle), channel.buffer(self.send_handle)
            self.queues = [None] * len(source.queues)
        old = source.queues[channel.sub_index]
        queue = self.queues[channel.sub_index] = VspChannel(self, channel, channel.cpu)
        queue.read, queue.backlog = old.read, old.backlog
        queue.interrupt()

    def reset(self, why: str) -> None:
        """The guest broke the protocol: the NIC's primary channel is reset (its sub-channels with it)."""
        self.errors[why] += 1
        self.queues[0].channel.reset(why)

    # ---- the guest's send ring ------------------------------------------------------------------
    def packet(self, q: VspChannel, desc: tuple, packet: bytes) -> None:
        ptype, offset8, _, flags, tid = desc
        body = packet[offset8 << 3:]
        if ptype == v.VM_PKT_COMP:
            self._recv_done(tid)
            return
        if ptype == v.VM_PKT_DATA_USING_GPA_DIRECT and len(body) >= r.NVSP_RNDIS_PKT.size \
                and r.NVSP_TYPE.unpack_from(body)[0] == r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT:
            self._gpa_direct(q, tid, packet, len(packet) - len(body), r.NVSP_RNDIS_PKT.unpack_from(body))
            return
        if ptype != v.VM_PKT_DATA_INBAND or len(body) < 4:
            self.reset("bad_packet_type")
            return
        handler = self._NVSP.get(r.NVSP_TYPE.unpack_from(body)[0])
        if handler is None or len(body) < handler[0].size:
            self.errors["nvsp_unknown_or_short"] += 1
            return
        handler[1](self, q, tid, handler[0].unpack_from(body))

    # ---- NVSP ---------------------------------------------------------------------------------------
    def _complete(self, q: VspChannel, tid: int, message: bytes) -> None:
        q.write(q.cpu, v.packet(v.VM_PKT_COMP, tid, message))

    def _reject(self, q: VspChannel, tid: int, why: str, layout, *fields) -> None:
        """Out of order or out of bounds: the request fails, the channel lives on."""
        self.errors[why] += 1
        self._complete(q, tid, layout.pack(*fields))

    def _init(self, q: VspChannel, tid: int, msg: tuple) -> None:
        _, low, high = msg
        version = next((ver for ver in VERSIONS if low <= ver <= high), 0)
        if self.version or not version:
            self._reject(q, tid, "nvsp_init_refused", r.NVSP_INIT_COMPLETE, r.NVSP_MSG_TYPE_INIT_COMPLETE, 0, 0,
                         r.NVSP_STAT_FAIL)
            return
        self.version = version
        self._complete(q, tid, r.NVSP_INIT_COMPLETE.pack(r.NVSP_MSG_TYPE_INIT_COMPLETE, version, 0,
                                                         r.NVSP_STAT_SUCCESS))

    def _ndis(self, q: VspChannel, tid: int, msg: tuple) -> None:
        """The NDIS version and config: no answer; before INIT they are out of order."""
        if not self.version:
            self.errors["nvsp_out_of_order"] += 1

    def _recv_buf(self, q: VspChannel, tid: int, msg: tuple) -> None:
        _, handle, buffer_id = msg
        view = q.channel.buffer(handle)
        fail = (r.NVSP_RECV_BUF_COMPLETE, r.NVSP_MSG1_TYPE_SEND_RECV_BUF_COMPLETE, r.NVSP_STAT_FAIL, 0, 0, 0, 0, 0)
        if not self.version or self.recv is not None:
            self._reject(q, tid, "nvsp_out_of_order", *fail)
            return
        sections = view.size // r.NETVSC_RECV_SECTION_SIZE if view is not None else 0
        if buffer_id != r.NETVSC_RECEIVE_BUFFER_ID or not sections:
            self._reject(q, tid, "nvsp_bad_recv_buf", *fail)
            return
        self.recv, self.recv_handle, self.recv_free = view, handle, list(range(sections - 1, -1, -1))
        self._complete(q, tid, r.NVSP_RECV_BUF_COMPLETE.pack(
            r.NVSP_MSG1_TYPE_SEND_RECV_BUF_COMPLETE, r.NVSP_STAT_SUCCESS, 1, 0, r.NETVSC_RECV_SECTION_SIZE,
            sections, sections * r.NETVSC_RECV_SECTION_SIZE))

    def _send_buf(self, q: VspChannel, tid: int, msg: tuple) -> None:
        _, handle, buffer_id = msg
        view = q.channel.buffer(handle)
        fail = (r.NVSP_SEND_BUF_COMPLETE, r.NVSP_MSG1_TYPE_SEND_SEND_BUF_COMPLETE, r.NVSP_STAT_FAIL, 0)
        if self.recv is None or self.send is not None:
            self._reject(q, tid, "nvsp_out_of_order", *fail)
            return
        sections = view.size // r.NETVSC_SEND_SECTION_SIZE if view is not None else 0
        if buffer_id != r.NETVSC_SEND_BUFFER_ID or not sections:
            self._reject(q, tid, "nvsp_bad_send_buf", *fail)
            return
        self.send, self.send_handle, self.send_sections = view, handle, sections
        self._complete(q, tid, r.NVSP_SEND_BUF_COMPLETE.pack(r.NVSP_MSG1_TYPE_SEND_SEND_BUF_COMPLETE,
                                                             r.NVSP_STAT_SUCCESS, r.NETVSC_SEND_SECTION_SIZE))

    def _rndis_pkt(self, q: VspChannel, tid: int, msg: tuple) -> None:
        """SEND_RNDIS_PKT: the RNDIS message in send-buffer section ``index``."""
        _, channel_type, index, size = msg
        message = None
        if self.send is None:
            self.errors["nvsp_out_of_order"] += 1
        elif index >= self.send_sections or not r.RNDIS_HEADER.size <= size <= r.NETVSC_SEND_SECTION_SIZE:
            self.errors["rndis_bad_section"] += 1
        else:
            message = self.send.read(index * r.NETVSC_SEND_SECTION_SIZE, size)
        self._rndis_done(q, tid, message, channel_type)

    def _gpa_direct(self, q: VspChannel, tid: int, packet: bytes, end: int, msg: tuple) -> None:
        """SEND_RNDIS_PKT naming no section: the RNDIS message in the guest pages the packet's ranges
        list (netvsc's page buffers, for what a section cannot hold), each inside one page of the guest."""
        _, channel_type, index, _ = msg
        count = v.GPA_DIRECT_HEADER.unpack_from(packet, v.VMPACKET_DESCRIPTOR.size)[1]
        first = v.VMPACKET_DESCRIPTOR.size + v.GPA_DIRECT_HEADER.size
        message = None
        if self.send is None:
            self.errors["nvsp_out_of_order"] += 1
        elif index != r.NETVSC_INVALID_INDEX or not 0 < count <= MAX_PAGE_BUFFERS \
                or first + count * v.HV_PAGE_BUFFER.size > end:
            self.errors["gpa_direct_bad_ranges"] += 1
        else:
            ranges = [v.HV_PAGE_BUFFER.unpack_from(packet, first + i * v.HV_PAGE_BUFFER.size) for i in range(count)]
            if sum(length for length, _, _ in ranges) <= MAX_MESSAGE:
                message = q.channel.read_pages(ranges)
            if message is None:
                self.errors["gpa_direct_bad_ranges"] += 1
        self._rndis_done(q, tid, message, channel_type)

    def _rndis_done(self, q: VspChannel, tid: int, message: bytes | None, channel_type: int) -> None:
        """The RNDIS message, if one could be read, then SEND_RNDIS_PKT_COMPLETE with how it went."""
        ok = message is not None and self._rndis(q, message, channel_type)
        status = r.NVSP_STAT_SUCCESS if ok else r.NVSP_STAT_FAIL
        if q.running:
            self._complete(q, tid, r.NVSP_RNDIS_PKT_COMPLETE.pack(r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE, status))

    def _subchannel(self, q: VspChannel, tid: int, msg: tuple) -> None:
        """NVSP_MSG5_TYPE_SUBCHANNEL on the primary, once, after RNDIS is up: up to
        VRSS_QUEUES - 1 sub-channels granted, then offered."""
        _, op, count = msg
        fail = (r.NVSP_SUBCHANNEL_COMPLETE, r.NVSP_MSG5_TYPE_SUBCHANNEL, r.NVSP_STAT_FAIL, 0)
        if q.channel.sub_index or self.version < r.NVSP_PROTOCOL_VERSION_5 or not self.rndis_ready \
                or len(self.queues) > 1:
            self._reject(q, tid, "nvsp_out_of_order", *fail)
            return
        if op != r.NVSP_SUBCHANNEL_ALLOCATE or not 0 < count < r.VRSS_CHANNEL_MAX:
            self._reject(q, tid, "nvsp_bad_subchannel", *fail)
            return
        granted = min(count, VRSS_QUEUES - 1)
        self.queues += [None] * granted
        self._complete(q, tid, r.NVSP_SUBCHANNEL_COMPLETE.pack(r.NVSP_MSG5_TYPE_SUBCHANNEL, r.NVSP_STAT_SUCCESS,
                                                               granted))
        self.offer_subchannels(granted)

    _NVSP = {
        r.NVSP_MSG_TYPE_INIT: (r.NVSP_INIT, _init),
        r.NVSP_MSG1_TYPE_SEND_NDIS_VER: (r.NVSP_NDIS_VER, _ndis),
        r.NVSP_MSG2_TYPE_SEND_NDIS_CONFIG: (r.NVSP_NDIS_CONFIG, _ndis),
        r.NVSP_MSG1_TYPE_SEND_RECV_BUF: (r.NVSP_SEND_BUF, _recv_buf),
        r.NVSP_MSG1_TYPE_SEND_SEND_BUF: (r.NVSP_SEND_BUF, _send_buf),
        r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT: (r.NVSP_RNDIS_PKT, _rndis_pkt),
        r.NVSP_MSG5_TYPE_SUBCHANNEL: (r.NVSP_SUBCHANNEL_REQUEST, _subchannel),
    }

    # ---- RNDIS ---------------------------------------------------------------------------------------
    def _rndis(self, q: VspChannel, message: bytes, channel_type: int) -> bool:
        """One RNDIS message; its msg_len must lie within what NVSP said it sent."""
        mtype, length = r.RNDIS_HEADER.unpack_from(message)
        if length > len(message) or length < r.RNDIS_HEADER.size:
            self.errors["rndis_bad_length"] += 1
            return False
        message = message[:length]
        if mtype == r.RNDIS_MSG_PACKET and channel_type == r.RNDIS_CHANNEL_DATA:
            return self._transmit(q, message)
        if mtype == r.RNDIS_MSG_INIT and length >= r.RNDIS_INIT_REQUEST.size:
            req_id = r.RNDIS_INIT_REQUEST.unpack_from(message)[2]
            self.rndis_ready = True
            return self._indicate(q, q.cpu, r.RNDIS_CHANNEL_CONTROL, r.RNDIS_INIT_COMPLETE.pack(
                r.RNDIS_MSG_INIT_C, r.RNDIS_INIT_COMPLETE.size, req_id, r.RNDIS_STATUS_SUCCESS,
                r.RNDIS_MAJOR_VERSION, r.RNDIS_MINOR_VERSION, 0, r.RNDIS_MEDIUM_802_3, 1,
                r.NETVSC_RECV_SECTION_SIZE, 0, 0, 0))
        if mtype in (r.RNDIS_MSG_QUERY, r.RNDIS_MSG_SET) and length >= r.RNDIS_OID_REQUEST.size and self.rndis_ready:
            return self._oid(q, mtype, message)
        self.errors["rndis_unexpected"] += 1
        return False

    def _oid(self, q: VspChannel, mtype: int, message: bytes) -> bool:
        _, length, req_id, oid, buflen, offset, _ = r.RNDIS_OID_REQUEST.unpack_from(message)
        start = r.RNDIS_BODY + offset
        if start + buflen > length or start < r.RNDIS_OID_REQUEST.size and buflen:
            self.errors["rndis_bad_length"] += 1
            status, info = r.RNDIS_STATUS_INVALID_LENGTH, b""
        elif mtype == r.RNDIS_MSG_QUERY:
            info = {r.RNDIS_OID_802_3_PERMANENT_ADDRESS: self.mac, r.RNDIS_OID_802_3_CURRENT_ADDRESS: self.mac,
                    r.RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE: v.U32.pack(MAX_FRAME),
                    r.RNDIS_OID_GEN_MEDIA_CONNECT_STATUS: v.U32.pack(r.NDIS_MEDIA_STATE_CONNECTED),
                    r.OID_GEN_RECEIVE_SCALE_CAPABILITIES:
                        _RSS_CAPS if self.version >= r.NVSP_PROTOCOL_VERSION_5 else None}.get(oid)
            status, info = (r.RNDIS_STATUS_SUCCESS, info) if info is not None else (r.RNDIS_STATUS_NOT_SUPPORTED, b"")
        elif oid == r.RNDIS_OID_GEN_CURRENT_PACKET_FILTER and buflen == 4:
            self.filter = v.U32.unpack_from(message, start)[0]
            status, info = r.RNDIS_STATUS_SUCCESS, b""
        elif oid == r.OID_GEN_RECEIVE_SCALE_PARAMETERS:
            status, info = self._rss_parameters(message[start:start + buflen]), b""
        elif oid == r.OID_TCP_OFFLOAD_PARAMETERS:
            status, info = self._offload_parameters(message[start:start + buflen]), b""
        else:
            status, info = r.RNDIS_STATUS_NOT_SUPPORTED, b""
        if mtype == r.RNDIS_MSG_SET:
            reply = r.RNDIS_SET_COMPLETE.pack(r.RNDIS_MSG_SET_C, r.RNDIS_SET_COMPLETE.size, req_id, status)
        else:
            size = r.RNDIS_QUERY_COMPLETE.size
            reply = r.RNDIS_QUERY_COMPLETE.pack(r.RNDIS_MSG_QUERY_C, size + len(info), req_id, status, len(info),
                                                size - r.RNDIS_BODY) + info
        return self._indicate(q, q.cpu, r.RNDIS_CHANNEL_CONTROL, reply)

    def _rss_parameters(self, info: bytes) -> int:
        """OID_GEN_RECEIVE_SCALE_PARAMETERS: the Toeplitz key and the indirection
        table, every entry an open channel, both inside the request; or RSS off."""
        if len(info) < r.NDIS_RECV_SCALE_PARAM.size:
            self.errors["rndis_bad_rss"] += 1
            return r.RNDIS_STATUS_INVALID_LENGTH
        kind, _, _, flag, hashinfo, tabsize, taboffset, keysize, keyoffset, *_ = \
            r.NDIS_RECV_SCALE_PARAM.unpack_from(info)
        if flag & r.NDIS_RSS_PARAM_FLAG_DISABLE_RSS:
            self.rss = None
            return r.RNDIS_STATUS_SUCCESS
        entries = tabsize // 4
        if (kind != r.NDIS_OBJECT_TYPE_RSS_PARAMETERS or not hashinfo & r.NDIS_HASH_FUNC_TOEPLITZ
                or tabsize != 4 * r.ITAB_NUM or taboffset + tabsize > len(info)
                or keysize != r.NETVSC_HASH_KEYLEN or keyoffset + keysize > len(info)):
            self.errors["rndis_bad_rss"] += 1
            return r.RNDIS_STATUS_INVALID_DATA
        table = tuple(v.U32.unpack_from(info, taboffset + 4 * i)[0] for i in range(entries))
        if any(n >= len(self.queues) or self.queues[n] is None for n in table):
            self.errors["rndis_bad_rss_table"] += 1
            return r.RNDIS_STATUS_INVALID_DATA
        key = info[keyoffset:keyoffset + keysize]
        self.rss = table, toeplitz_tables(key, IPV4_L4_INPUT), bool(hashinfo & r.NDIS_HASH_TCP_IPV4)
        return r.RNDIS_STATUS_SUCCESS

    def _offload_parameters(self, info: bytes) -> int:
        """OID_TCP_OFFLOAD_PARAMETERS: TCP/IPv4 checksum offload each way and LSOv2 for IPv4, on, off or as
        they were; any other value fails the SET."""
        if len(info) < r.NDIS_OFFLOAD_PARAMS.size:
            self.errors["rndis_bad_offload"] += 1
            return r.RNDIS_STATUS_INVALID_LENGTH
        layout = r.NDIS_OFFLOAD_PARAMS
        params = dict(zip((name for name, _, _ in layout.fields), layout.unpack_from(info)))
        kind, csum, lso = params["type"], params["tcp_ip_v4_csum"], params["lso_v2_ipv4"]
        ways = {r.NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED: (), r.NDIS_OFFLOAD_PARAMETERS_TX_RX_ENABLED: ("tx", "rx"),
                r.NDIS_OFFLOAD_PARAMETERS_TX_ENABLED_RX_DISABLED: ("tx",),
                r.NDIS_OFFLOAD_PARAMETERS_RX_ENABLED_TX_DISABLED: ("rx",)}
        lsos = {r.NDIS_OFFLOAD_PARAMETERS_LSOV2_DISABLED: False, r.NDIS_OFFLOAD_PARAMETERS_LSOV2_ENABLED: True}
        keep = r.NDIS_OFFLOAD_PARAMETERS_NO_CHANGE
        if kind != r.NDIS_OBJECT_TYPE_DEFAULT or csum not in ways and csum != keep or lso not in lsos and lso != keep:
            self.errors["rndis_bad_offload"] += 1
            return r.RNDIS_STATUS_INVALID_DATA
        on = set(self.offload)
        if csum != keep:
            on = {name for name in on if name == "lso"} | {f"{way}_csum" for way in ways[csum]}
        if lso != keep:
            on = on - {"lso"} | ({"lso"} if lsos[lso] else set())
        self.offload = frozenset(on)
        return r.RNDIS_STATUS_SUCCESS

    def _transmit(self, q: VspChannel, message: bytes) -> bool:
        """PACKET_MSG: the frame at data_offset, copied out of the guest's buffer into the switch; with
        per-packet info, its TCP checksum completed here, or handed on whole as a TCP segmentation request
        (LSOv2: the switch cuts it where it leaves for a port that cannot take it)."""
        _, length, offset, size, _, _, _, ppi_offset, ppi_len, _, _ = _RNDIS_PACKET.unpack_from(
            message.ljust(r.RNDIS_PACKET.size, b"\0"))
        start = r.RNDIS_BODY + offset
        if (length < r.RNDIS_PACKET.size or start < r.RNDIS_PACKET.size or start + size > length
                or size < ETH_HLEN or r.RNDIS_BODY + ppi_offset + ppi_len > length or not self.rndis_ready):
            discard(self, "rndis_bad_packet")
            return False
        info = r.per_packet_info(message, ppi_offset, ppi_len)
        if info is None:
            discard(self, "rndis_bad_ppi")
            return False
        frame = message[start:start + size]
        lso, csum = info.get(r.TCP_LARGESEND_PKTINFO), info.get(r.TCPIP_CHKSUM_PKTINFO, 0)
        cpu, gso = q.cpu, 0
        if lso is not None:
            gso = lso & r.NDIS_LSO2_MSS_MASK
            if ("lso" not in self.offload or not lso & r.NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE or gso < TCP_MIN_MSS
                    or not is_tcpv4(frame)):
                discard(self, "tx_bad_lso", frame)
                return False
        elif size > MAX_FRAME:
            discard(self, "tx_too_big", frame)
            return False
        elif csum & r.NDIS_TCPIP_CSUM_TX_TCP:
            at = csum >> r.NDIS_TCPIP_CSUM_TX_OFFSET_SHIFT & 0x3FF
            if "tx_csum" not in self.offload or not is_tcpv4(frame) or at != ETH_HLEN + (frame[ETH_HLEN] & 0xF) * 4:
                discard(self, "tx_bad_csum", frame)
                return False
            cpu.charge("csum", nbytes=size - at, acct=self.acct)
            frame = complete_checksum(frame, at, at + TCP_CHECK)
        cpu.charge("copy", nbytes=size, acct=self.acct)
        self.port.send(cpu, frame, gso)
        return True

    # ---- the guest's receive rings: indications -----------------------------------------------
    def _indicate(self, q: VspChannel, cpu: Resource, channel_type: int, message: bytes) -> bool:
        """An RNDIS message in a receive-buffer sub-allocation, named by a transfer-page packet on ``q``."""
        if not self.recv_free:
            self.errors["rx_no_recv_section"] += 1
            return False
        section = self.recv_free.pop()
        self.recv_busy.add(section)
        at = section * r.NETVSC_RECV_SECTION_SIZE
        self.recv.write(at, message)
        header = v.XFER_PAGE_HEADER.pack(r.NETVSC_RECEIVE_BUFFER_ID, 0, 1, len(message), at)
        nvsp = r.NVSP_RNDIS_PKT.pack(r.NVSP_MSG1_TYPE_SEND_RNDIS_PKT, channel_type, r.NETVSC_INVALID_INDEX, 0)
        return q.write(cpu, v.packet(v.VM_PKT_DATA_USING_XFER_PAGES, section, nvsp, COMPLETION, header))

    def _recv_done(self, tid: int) -> None:
        """The guest's completion of a transfer-page packet gives its sub-allocation back."""
        if tid not in self.recv_busy:
            self.errors["bad_recv_completion"] += 1
            return
        self.recv_busy.discard(tid)
        self.recv_free.append(tid)

    def _steer(self, frame: bytes) -> VspChannel:
        """vRSS: the channel the indirection table names for the frame's Toeplitz hash (the IPv4
        addresses, and the TCP ports when the hash type has them); the primary without RSS."""
        primary = self.queues[0]
        if self.rss is None or len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4:
            return primary
        table, tables, tcp = self.rss
        l4 = ETH_HLEN + (frame[14] & 0xF) * 4
        whole = not (frame[20] & 0x3F or frame[21]) and len(frame) >= l4 + 4       # not a fragment
        data = frame[26:34] + (frame[l4:l4 + 4] if tcp and whole and frame[23] == 6 else b"")
        queue = self.queues[table[toeplitz(tables, data) % r.ITAB_NUM]]
        return queue if queue is not None else primary

    # ---- the switch port ----------------------------------------------------------------------------
    def can_receive(self, size: int) -> bool:
        """A free sub-allocation, and room in every open channel's receive ring."""
        if not self.running or not self.recv_free or not self.filter:
            return False
        try:
            return all(q.has_room() for q in self.queues if q is not None)
        except v.RingError:
            self.reset("ring_broken")
            return False

    def receive(self, cpu: Resource, frame: bytes) -> None:
        """A frame from the switch, through the packet filter, into the guest's receive buffer."""
        dst, f = frame[:6], self.filter
        if not (f & r.NDIS_PACKET_TYPE_PROMISCUOUS or dst == self.mac and f & r.NDIS_PACKET_TYPE_DIRECTED
                or dst == BROADCAST and f & r.NDIS_PACKET_TYPE_BROADCAST or dst != BROADCAST and dst[0] & 1
                and f & _MULTICAST):
            discard(self, "rx_filtered", frame)
            return
        cpu.charge("copy", nbytes=len(frame), acct=self.acct)
        info = b""
        if "rx_csum" in self.offload and is_tcpv4(frame):         # the sums checked, the result told
            cpu.charge("csum", nbytes=len(frame) - ETH_HLEN, acct=self.acct)
            _, ip_ok, _, tcp_ok = rx_checksums(frame)
            info = r.ppi(r.TCPIP_CHKSUM_PKTINFO, (r.NDIS_TCPIP_CSUM_RX_IP_SUCCEEDED if ip_ok else 0) | (
                r.NDIS_TCPIP_CSUM_RX_TCP_SUCCEEDED if tcp_ok else r.NDIS_TCPIP_CSUM_RX_TCP_FAILED))
        header = _RNDIS_PACKET.pack(r.RNDIS_MSG_PACKET, r.RNDIS_PACKET.size + len(info) + len(frame),
                                    r.RNDIS_PACKET_HEADER + len(info), len(frame), 0, 0, 0,
                                    r.RNDIS_PACKET_HEADER if info else 0, len(info), 0, 0)
        if not self._indicate(self._steer(frame), cpu, r.RNDIS_CHANNEL_DATA, header + info + frame):
            discard(self, "rx_no_buffer", frame)


DEVICE = DeviceEntry(Netvsp, "paravirt", "Hyper-V synthetic NIC (netvsc/netvsp: NVSP and RNDIS over VMBus)",
                     ("Hyper-V",), "netvsc", hypervisor="hyperv",
                     offloads=("tx-checksum-ipv4", "tx-tcp-segmentation", "rx-checksum", "receive-hashing"))
