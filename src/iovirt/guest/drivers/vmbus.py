"""The guest's VMBus driver (Linux drivers/hv/vmbus_drv.c, connection.c,
channel_mgmt.c, channel.c), over the hypercall and MSR interface only.

At boot it enables every VP's SynIC (message page, event flags page, SINT2:
hv_synic_enable_regs on each CPU; each VP's SINT2 on a vector of its own,
as the simulator's MSI routing names one vCPU per vector), posts
INITIATE_CONTACT from the boot VP and, once the host answers,
REQUESTOFFERS; every offer becomes a channel, and once all are delivered
each synthetic NIC offer is probed.  An offer with a sub-channel index is
a sub-channel of the primary with the same instance, handed to the
primary's driver (vmbus_process_offer, the sc_create callback), which
opens it on a VP of its choice (target_vp).  Messages go out through
HvPostMessage from a hypercall input page, one after another: one the
host's queue cannot take yet is retried (vmbus_post_msg's back-off).  A
channel's GPADL is sent as a header and bodies of page numbers, its rings
are opened on it, and the host is signalled through HvSignalEvent on the
offer's connection, or, for a channel the host monitors (monitor_allocated),
by setting its bit in the second monitor page, which the hypervisor scans
(vmbus_setevent; the two pages are named at INITIATE_CONTACT)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ...spec import vmbus as v

POST_RETRY_NS = 1_000               # vmbus_post_msg: usleep(1) before posting again
FIRST_GPADL = 0xE1E10               # vmbus_connection.next_gpadl_handle's first value


class RingView:
    """A ring in the guest's own (contiguous) memory, as the spec's ring functions use it."""

    def __init__(self, mem, base: int, pages: int) -> None:
        self.mem, self.base = mem, base
        self.size = (pages << v.PAGE_SHIFT) - v.RING_DATA        # the data area

    def read(self, off: int, n: int) -> bytes:
        return self.mem.read(self.base + off, n)

    def write(self, off: int, data: bytes) -> None:
        self.mem.write(self.base + off, data)

    def get32(self, off: int) -> int:
        return v.U32.unpack_from(self.mem.buf, self.base + off)[0]

    def put32(self, off: int, value: int) -> None:
        self.mem.store(v.U32, self.base + off, value)


class GuestChannel:
    """An offer, and its rings once opened (vmbus_open)."""

    def __init__(self, bus: Vmbus, relid: int, connection: int, instance: tuple[int, int] = (0, 0),
                 sub_index: int = 0, monitorid: int | None = None) -> None:
        self.bus = bus
        self.relid = relid
        self.connection = connection
        self.monitorid = monitorid               # the offer's, when monitor_allocated
        self.instance = instance
        self.sub_index = sub_index
        self.callback: Callable[[], None] | None = None
        self.on_rescind: Callable[[], None] | None = None
        self.sc_create: Callable[[GuestChannel], None] | None = None     # a primary's: a sub-channel offered
        self.send = self.recv = None

    def open(self, gpa: int, pages: int, handle: int, done: Callable[[int], None], target_vp: int = 0) -> None:
        """OPENCHANNEL on a GPADL holding the send ring, then the receive ring,
        its events to VP ``target_vp``; the rings start empty with pending_send_sz supported."""
        half = pages // 2
        self.send, self.recv = RingView(self.bus.mem, gpa, half), RingView(self.bus.mem, gpa + (half << v.PAGE_SHIFT),
                                                                           pages - half)
        for ring in (self.send, self.recv):
            ring.write(0, bytes(v.RING_DATA))
            ring.put32(v.FEATURE_BITS, v.FEAT_PENDING_SEND_SZ)
        self.bus.waiting[v.CHANNELMSG_OPENCHANNEL_RESULT, self.relid] = done
        self.bus.post(v.OPEN_CHANNEL.pack(v.CHANNELMSG_OPENCHANNEL, self.relid, self.relid, handle, target_vp, half))

    def signal(self) -> None:
        """vmbus_setevent: a monitored channel's bit in monitor page 2's trigger group, else
        HvSignalEvent on the offer's connection (vmbus_set_event)."""
        bus = self.bus
        if self.monitorid is None:
            bus.hv.signal_event(bus.kernel.cpu, self.connection)
            return
        v.monitor_set_pending(bus.mem, bus.monitor_pages[1], self.monitorid)
        bus.hv.monitor_kick(bus.kernel.cpu.vm)


class Vmbus:
    def __init__(self, kernel, hv, probe: Callable[[GuestChannel], None]) -> None:
        self.kernel = kernel
        self.hv = hv
        self.mem = kernel.mem
        self.probe = probe
        self.stats = kernel.stats
        self.channels: dict[int, GuestChannel] = {}
        self.waiting: dict[tuple[int, int], Callable[[int], None]] = {}   # (reply type, key) -> continuation
        self.outbox: deque[bytes] = deque()
        self.drivers: list = []                     # what ``probe`` made of each offer
        self.offered = False                        # ALLOFFERS_DELIVERED has come
        self.next_gpadl = FIRST_GPADL
        alloc = kernel.alloc
        self.input = alloc.alloc(v.PAGE_SIZE)
        self.monitor_pages = [alloc.alloc(v.PAGE_SIZE), alloc.alloc(v.PAGE_SIZE)]     # parent to child, child to parent
        self.pages = [(alloc.alloc(v.PAGE_SIZE), alloc.alloc(v.PAGE_SIZE)) for _ in kernel.vcpus]   # per VP
        self.simp, self.siefp = self.pages[0]
        self.vectors = [kernel.alloc_vector() for _ in kernel.vcpus]
        self.vector = self.vectors[0]
        for vcpu, (simp, siefp), vector in zip(kernel.vcpus, self.pages, self.vectors):
            kernel.request_irq(vector, self._isr)
            hv.wrmsr(vcpu, v.HV_X64_MSR_SIMP, simp | v.HV_SYNIC_SIMP_ENABLE)
            hv.wrmsr(vcpu, v.HV_X64_MSR_SIEFP, siefp | v.HV_SYNIC_SIEFP_ENABLE)
            hv.wrmsr(vcpu, v.HV_X64_MSR_SINT0 + v.VMBUS_MESSAGE_SINT, vector)
        self.post(v.INITIATE_CONTACT.pack(v.CHANNELMSG_INITIATE_CONTACT, v.VERSION_WIN10_V5, 0,
                                          v.VMBUS_MESSAGE_SINT, *self.monitor_pages))

    def move_to(self, hv, mem) -> None:
        """Live migration: the same pages and channels, now on ``mem``, and the hypercalls reach ``hv``,
        the target's hypervisor, which restored the SynIC and VMBus state."""
        self.hv, self.mem = hv, mem
        for channel in self.channels.values():
            for ring in (channel.send, channel.recv):
                if ring is not None:
                    ring.mem = mem

    # ---- the message connection ---------------------------------------------------------------
    def post(self, message: bytes) -> None:
        self.outbox.append(message)
        if len(self.outbox) == 1:
            self._drain()

    def _drain(self) -> None:
        """Post what waits, in order; a full host queue is tried again a little later."""
        while self.outbox:
            message = self.outbox[0]
            self.mem.write(self.input, v.HV_INPUT_POST_MESSAGE.pack(v.VMBUS_MESSAGE_CONNECTION_ID_4,
                                                                    v.VMBUS_MESSAGE_TYPE, len(message)) + message)
            status = self.hv.post_message(self.kernel.cpu, self.input)
            if status == v.HV_STATUS_INSUFFICIENT_BUFFERS:
                self.stats["vmbus_post_retry"] += 1
                self.kernel.run_at(self.kernel.cpu.cursor + POST_RETRY_NS, self._drain)
                return
            if status != v.HV_STATUS_SUCCESS:
                self.stats["vmbus_post_failed"] += 1
            self.outbox.popleft()

    def _isr(self) -> None:
        """vmbus_isr on the VP interrupted: its message slot, then every channel whose flag it has set."""
        cpu = self.kernel.cpu
        cpu.eoi(self.vectors[cpu.index])
        simp, siefp = self.pages[cpu.index]
        eom = lambda: self.hv.wrmsr(cpu, v.HV_X64_MSR_EOM, 0)     # noqa: E731
        for _, payload in v.take_messages(self.mem, simp, v.VMBUS_MESSAGE_SINT, eom):
            self._message(payload)
        for relid in v.take_event_flags(self.mem, siefp, v.VMBUS_MESSAGE_SINT):
            channel = self.channels.get(relid)
            if channel is not None and channel.callback is not None:
                channel.callback()

    def _message(self, payload: bytes) -> None:
        if len(payload) < v.CHANNEL_HEADER.size:
            self.stats["vmbus_runt_message"] += 1
            return
        msgtype = v.CHANNEL_HEADER.unpack_from(payload)[0]
        if msgtype == v.CHANNELMSG_VERSION_RESPONSE and len(payload) >= v.VERSION_RESPONSE.size:
            if v.VERSION_RESPONSE.unpack_from(payload)[1]:
                self.post(v.CHANNEL_HEADER.pack(v.CHANNELMSG_REQUESTOFFERS))
            else:
                self.stats["vmbus_version_refused"] += 1
        elif msgtype == v.CHANNELMSG_OFFERCHANNEL and len(payload) >= v.OFFER_CHANNEL.size:
            self._offer(v.OFFER_CHANNEL.unpack_from(payload))
        elif msgtype == v.CHANNELMSG_ALLOFFERS_DELIVERED:
            self.offered = True
            self.drivers += [self.probe(channel) for channel in list(self.channels.values()) if not channel.sub_index]
        elif msgtype == v.CHANNELMSG_GPADL_CREATED and len(payload) >= v.GPADL_CREATED.size:
            _, _, handle, status = v.GPADL_CREATED.unpack_from(payload)
            self._answer(v.CHANNELMSG_GPADL_CREATED, handle, status)
        elif msgtype == v.CHANNELMSG_OPENCHANNEL_RESULT and len(payload) >= v.OPEN_RESULT.size:
            _, relid, _, status = v.OPEN_RESULT.unpack_from(payload)
            self._answer(v.CHANNELMSG_OPENCHANNEL_RESULT, relid, status)
        elif msgtype == v.CHANNELMSG_RESCIND_CHANNELOFFER and len(payload) >= v.RESCIND_OFFER.size:
            channel = self.channels.pop(v.RESCIND_OFFER.unpack_from(payload)[1], None)
            if channel is not None and channel.on_rescind is not None:
                channel.on_rescind()
        else:
            self.stats["vmbus_unexpected_message"] += 1

    def primaries(self) -> int:
        """The devices offered (channels that are no sub-channel)."""
        return sum(not channel.sub_index for channel in self.channels.values())

    def _offer(self, offer: tuple) -> None:
        """A synthetic NIC's channel; a sub-channel goes to its primary's driver."""
        _, type_lo, type_hi, inst_lo, inst_hi, sub_index, relid, monitorid, monitored, _, connection = offer
        if (type_lo, type_hi) != v.HV_NIC_GUID or relid in self.channels or monitorid >= v.HV_MONITOR_IDS:
            self.stats["vmbus_unexpected_offer"] += 1
            return
        channel = GuestChannel(self, relid, connection, (inst_lo, inst_hi), sub_index,
                               monitorid if monitored else None)
        if not sub_index:
            self.channels[relid] = channel
            return
        primary = next((c for c in self.channels.values() if c.instance == channel.instance and not c.sub_index
                        and c.sc_create is not None), None)
        if primary is None:
            self.stats["vmbus_unexpected_offer"] += 1
            return
        self.channels[relid] = channel
        primary.sc_create(channel)

    def _answer(self, reply: int, key: int, status: int) -> None:
        done = self.waiting.pop((reply, key), None)
        if done is None:
            self.stats["vmbus_unexpected_message"] += 1
            return
        done(status)

    # ---- GPADLs (vmbus_establish_gpadl) --------------------------------------------------------------
    def establish_gpadl(self, channel: GuestChannel, gpa: int, size: int, done: Callable[[int], None]) -> int:
        """Describe ``size`` bytes at ``gpa`` (page aligned) to the host: a header
        with the first page numbers, bodies with the rest; ``done(status)``."""
        handle = self.next_gpadl
        self.next_gpadl += 1
        pages = -(-size // v.PAGE_SIZE)
        pfns = [(gpa >> v.PAGE_SHIFT) + i for i in range(pages)]
        self.waiting[v.CHANNELMSG_GPADL_CREATED, handle] = done
        first = pfns[:v.PFNS_IN_HEADER]
        self.post(v.GPADL_HEADER.pack(v.CHANNELMSG_GPADL_HEADER, channel.relid, handle,
                                      v.GPA_RANGE_HEADER + 8 * pages, 1, size, 0) + _pfns(first))
        for n, at in enumerate(range(v.PFNS_IN_HEADER, pages, v.PFNS_IN_BODY)):
            self.post(v.GPADL_BODY.pack(v.CHANNELMSG_GPADL_BODY, n + 1, handle)
                      + _pfns(pfns[at:at + v.PFNS_IN_BODY]))
        return handle


def _pfns(pfns: list[int]) -> bytes:
    return b"".join(v.U64.pack(p) for p in pfns)
