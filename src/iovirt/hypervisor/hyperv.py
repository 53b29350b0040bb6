"""Microsoft Hyper-V on one host: the hypervisor's SynIC and its two
inter-partition hypercalls, the root partition (which owns the physical NIC,
runs the virtual switch and the VSPs), each child's VMBus server in the root,
and the worker process that emulates a child's legacy devices.

- SynIC (TLFS 11.8): every VP has a message page and an event flags page in
  its partition's memory and sixteen SINTs, each an interrupt vector.  A
  message lands in its SINT's 256-byte slot when the slot is free, else it
  queues and the slot's msg_pending flag is set; the VP frees the slot
  (message_type 0) and, if msg_pending, writes EOM for the next one.  An
  event sets a bit of its SINT's flags and asserts the SINT unless the bit
  was set already.
- Hypercalls (TLFS 11.10): ``HvPostMessage`` copies a message from the
  caller's input page to the connection's port; ``HvSignalEvent`` sets the
  port's flag.  Each costs ``hypercall`` plus its own event.  Ports and
  connections are created by the root (HvCreatePort/HvConnectPort).
- VMBus (Linux drivers/hv/channel_mgmt.c from the guest's side): the server
  answers INITIATE_CONTACT, offers its channels, builds GPADLs from the
  guest's page lists (every page checked against the child's memory), opens
  a channel on a GPADL holding its two rings, and tears them down.  A VSP
  that finds the guest broke a ring resets its channel: the offer is
  rescinded and the VSP serves it no more.
- Monitored notification (TLFS "Monitored Notifications"): the child
  names two monitor pages at INITIATE_CONTACT; each synthetic NIC channel
  offered gets a monitor id, and the root writes the channel's connection
  and latency in the second page.  The child's send then sets a pending
  bit there instead of calling HvSignalEvent; the hypervisor scans the
  enabled trigger groups every group's latency and signals each pending
  bit's connection as HvSignalEvent would (``hv_monitor_scan``, then
  ``hv_signal_event``'s work without a hypercall).  The simulator runs the
  scan only at the ticks that find a bit set (an idle pass is not charged):
  the child's send tells the hypervisor a tick is due, the scan reads what
  the page holds.  Pages outside the child's memory leave its channels
  unmonitored; a pending bit whose parameter names no connection is counted.
- A legacy device's register access is an intercept the hypervisor forwards
  to the root, where the VM's worker process (``vmwp``) emulates it:
  ``vm_exit``, ``hv_intercept``, the trip to the root's user mode and back
  (``user_exit``), the emulation.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..devices.netvsp import Netvsp
from ..sim.resource import Resource
from ..spec import vmbus as v
from ..spec.apic import msi_address
from .emulation import EmulatedNic
from .tap import TapPort
from .vm import VM

HYPERV_MMIO = ("vm_exit", "hv_intercept", "user_exit", "mmio_emulate")
HYPERV_PIO = ("vm_exit", "hv_intercept", "user_exit", "pio_emulate")
SYNIC_MSR = ("vm_exit", "synic_msr")
VMSWITCH = "vmswitch"
WORKER = "vmwp"
ROOT_MB = 1024
ROOT_KERNEL_MB = 16
ROOT_VP_CORES = 4                   # a root VP per this many cores (a "minroot" configuration)
ROOT_SINT = 2                       # the root's SINT for its VSPs' messages and events
ROOT_VECTOR = 0x40                  # the root's SynIC vector on VP 0; VP n takes the n-th after it
ROOT_MAX_VPS = 64                   # (one vector each: an interrupt's destination is its vector's)
CHANNEL_FLAG_BASE = 64              # the root's event flags for VSP channels start here (one each)
STATUS_FAILED = 0xC0000001          # STATUS_UNSUCCESSFUL: a GPADL or an open refused


@dataclass
class Port:
    """A port of a partition (HvCreatePort): where messages or events for it land."""
    vm: VM
    vp: int
    sint: int
    base_flag: int = 0
    server: VmbusServer | None = None        # a message port of the root: the child it serves


class Synic:
    """One VP's synthetic interrupt controller."""

    def __init__(self, vp) -> None:
        self.vp = vp
        self.simp: int | None = None
        self.siefp: int | None = None
        self.sints = [v.HV_SYNIC_SINT_MASKED] * v.HV_SYNIC_SINT_COUNT
        self.queues = [deque() for _ in range(v.HV_SYNIC_SINT_COUNT)]


class GpadlView:
    """The root's mapping of a guest's GPADL: offsets into the described
    bytes translate page by page into the child's memory."""

    def __init__(self, mem, pfns: list[int], first: int = 0, pages: int | None = None) -> None:
        self.mem = mem
        self.pfns = pfns[first: None if pages is None else first + pages]
        self.size = len(self.pfns) << v.PAGE_SHIFT
        run = self.pfns and self.pfns == list(range(self.pfns[0], self.pfns[0] + len(self.pfns)))
        self.base = self.pfns[0] << v.PAGE_SHIFT if run else None     # contiguous: one slice

    def _spans(self, off: int, n: int):
        if self.base is not None:
            yield self.base + off, n
            return
        while n:
            page, inner = divmod(off, v.PAGE_SIZE)
            take = min(n, v.PAGE_SIZE - inner)
            yield (self.pfns[page] << v.PAGE_SHIFT) + inner, take
            off, n = off + take, n - take

    def read(self, off: int, n: int) -> bytes:
        return b"".join(self.mem.read(gpa, take) for gpa, take in self._spans(off, n))

    def write(self, off: int, data: bytes) -> None:
        done = 0
        for gpa, take in self._spans(off, len(data)):
            self.mem.write(gpa, data[done:done + take])
            done += take

    def get32(self, off: int) -> int:
        return v.U32.unpack(self.read(off, 4))[0]

    def put32(self, off: int, value: int) -> None:
        self.write(off, v.U32.pack(value))


@dataclass
class Gpadl:
    relid: int
    pages: int
    byte_count: int
    byte_offset: int
    pfns: list[int] = field(default_factory=list)
    created: bool = False


class Channel:
    """One offered channel as the root's VMBus driver keeps it: the child's
    connection to the VSP's event port, the root's connection back to the
    child's SINT, the rings once open."""

    def __init__(self, server: VmbusServer, relid: int, vsp, cpu, primary: Channel | None = None,
                 sub_index: int = 0) -> None:
        self.server = server
        self.relid = relid
        self.vsp = vsp
        self.cpu = cpu                           # the root VP the channel's events reach
        self.primary = primary                   # a sub-channel's primary channel (vRSS)
        self.sub_index = sub_index
        self.target_vp = 0                       # the child's VP this channel's events go to
        self.open = False
        self.rescinded = False
        self.gpadl = self.split = 0
        self.outbound = self.inbound = None      # the guest's send ring (host reads), its receive ring
        self.out_size = self.in_size = 0
        self.to_guest = 0                        # the root's connection to the child's SINT
        self.connection = 0                      # the child's connection to the VSP's event port

    def map(self, handle: int, split: int, target_vp: int) -> None:
        """The rings in GPADL ``handle``: the guest's send ring first, its receive ring from page ``split``;
        the root's connection to the SINT of the guest's VP ``target_vp`` for this channel's events."""
        server = self.server
        pfns, mem = server.gpadls[handle].pfns, server.child.mem
        self.outbound, self.inbound = GpadlView(mem, pfns, 0, split), GpadlView(mem, pfns, split)
        self.out_size, self.in_size = self.outbound.size - v.RING_DATA, self.inbound.size - v.RING_DATA
        self.open, self.gpadl, self.split, self.target_vp = True, handle, split, target_vp
        hv = server.hv
        self.to_guest = hv.connect(hv.root.vm, None, hv.create_port(server.child, target_vp, v.VMBUS_MESSAGE_SINT))

    def signal(self, cpu: Resource) -> None:
        """Tell the guest: its SINT's flag for this channel (the relid)."""
        self.server.hv.signal_event(cpu, self.to_guest | self.relid << v.HV_SIGNAL_FLAG_SHIFT, acct=self.vsp.acct)

    def buffer(self, handle: int) -> GpadlView | None:
        """A GPADL the guest created for this channel, as the root maps it."""
        gpadl = self.server.gpadls.get(handle)
        if gpadl is None or not gpadl.created or gpadl.relid != self.relid:
            return None
        return GpadlView(self.server.child.mem, gpadl.pfns)

    def read_pages(self, ranges: list[tuple[int, int, int]]) -> bytes | None:
        """A GPA-direct packet's page ranges (len, offset, pfn), read from the child's memory;
        None when one is empty, crosses its page or names no page of the child."""
        mem = self.server.child.mem
        limit = mem.size >> v.PAGE_SHIFT
        if any(not length or offset + length > v.PAGE_SIZE or pfn >= limit for length, offset, pfn in ranges):
            return None
        return b"".join(mem.read((pfn << v.PAGE_SHIFT) + offset, length) for length, offset, pfn in ranges)

    def reset(self, why: str) -> None:
        """The guest broke the channel's protocol: the VSP stops, the offer is rescinded."""
        self.server.stats[why] += 1
        self.server.rescind(self)


class Monitor:
    """The hypervisor's side of a child's monitor page (page 2: child to parent)."""

    def __init__(self, hv: HyperV, child: VM, page: int) -> None:
        self.hv = hv
        self.child = child
        self.page = page
        self.due: float | None = None            # the next scan, once a bit waits for one

    def kick(self) -> None:
        """A bit was set: the scan at the next tick of the lowest latency among the pending bits."""
        if self.due is not None:
            return
        mem, sim = self.child.mem, self.hv.sim
        pending = v.monitor_pending(mem, self.page)
        if not pending:
            return
        period = v.HV_MONITOR_LATENCY_UNIT_NS * max(1, min(v.monitor_parameter(mem, self.page, i)[2] for i in pending))
        self.due = (sim.now // period + 1) * period
        sim.at(self.due, self.scan)

    def scan(self) -> None:
        """Take every enabled group's pending bits and signal each one's connection, on the root's VP 0."""
        self.due = None
        hv = self.hv
        if hv.monitors.get(id(self.child)) is not self:          # the VM left this host
            return
        cpu, acct = hv.root.vm.vcpus[0], self.child.acct
        if cpu.cursor < hv.sim.now:
            cpu.sync(hv.sim.now)
        cpu.charge("hv_monitor_scan", acct=acct)
        for monitorid in v.monitor_pending(self.child.mem, self.page, take=True):
            connection, flag, _ = v.monitor_parameter(self.child.mem, self.page, monitorid)
            if hv.set_event(cpu, self.child, connection | flag << v.HV_SIGNAL_FLAG_SHIFT, acct) != v.HV_STATUS_SUCCESS:
                hv.stats["monitor_bad_parameter"] += 1


class VmbusServer:
    """The root's VMBus driver for one child partition."""

    def __init__(self, hv: HyperV, child: VM) -> None:
        self.hv = hv
        self.child = child
        self.cpu = hv.root.vm.vcpus[0]
        self.stats: Counter[str] = Counter()
        self.version = 0
        self.to_child = 0                        # connection to the child's message port
        self.channels: dict[int, Channel] = {}
        self.gpadls: dict[int, Gpadl] = {}
        self.monitor: int | None = None          # the child's monitor page 2, when both it named are its own
        port = hv.create_port(hv.root.vm, 0, ROOT_SINT, server=self)
        hv.connect(child, v.VMBUS_MESSAGE_CONNECTION_ID_4, port)

    def offer(self, vsp, cpu, primary: Channel | None = None, sub_index: int = 0) -> Channel:
        """A channel for ``vsp``: its event port on root VP ``cpu``, with a
        flag of its own there, and the child's connection to it."""
        relid = len(self.channels) + 1
        channel = self.channels[relid] = Channel(self, relid, vsp, cpu, primary, sub_index)
        hv = self.hv
        flag = hv.next_flag
        hv.next_flag += 1
        hv.root.handlers[cpu.index, flag] = lambda: vsp.interrupt(channel)
        channel.connection = hv.connect(self.child, None, hv.create_port(hv.root.vm, cpu.index, ROOT_SINT, flag))
        return channel

    def subchannel(self, primary: Channel, index: int) -> Channel:
        """vRSS: sub-channel ``index`` of ``primary``, on the root VP ``index`` after the primary's."""
        vps = self.hv.root.vm.vcpus
        return self.offer(primary.vsp, vps[(primary.cpu.index + index) % len(vps)], primary, index)

    def _offer_message(self, channel: Channel) -> bytes:
        """OFFERCHANNEL: the NIC's class, its instance (a sub-channel's is its primary's) and sub-channel index."""
        instance = (channel.primary or channel).relid
        monitorid = channel.relid - 1
        monitored = self.monitor is not None and monitorid < v.HV_MONITOR_IDS
        if monitored:
            v.monitor_arm(self.child.mem, self.monitor, monitorid, channel.connection, v.HV_MONITOR_DEFAULT_LATENCY)
        return v.OFFER_CHANNEL.pack(v.CHANNELMSG_OFFERCHANNEL, *v.HV_NIC_GUID, instance, 0, channel.sub_index,
                                    channel.relid, monitorid if monitored else 0, int(monitored), 1,
                                    channel.connection)

    def offer_subchannels(self, primary: Channel, count: int) -> None:
        for index in range(1, count + 1):
            self._send(self._offer_message(self.subchannel(primary, index)))

    # ---- messages from the child (the root's SINT handler) -------------------------------
    def handle(self, payload: bytes) -> None:
        if len(payload) < v.CHANNEL_HEADER.size:
            self.stats["vmbus_runt_message"] += 1
            return
        msgtype = v.CHANNEL_HEADER.unpack_from(payload)[0]
        handler = self._HANDLERS.get(msgtype)
        if handler is None or len(payload) < handler[0].size:
            self.stats["vmbus_bad_message"] += 1
            return
        handler[1](self, handler[0].unpack_from(payload), payload)

    def _contact(self, msg: tuple, _payload: bytes) -> None:
        """INITIATE_CONTACT: VERSION_WIN10_V5 only; the child's message port is its VP's SINT."""
        _, version, target_vcpu, sint, page1, page2 = msg
        ok = version == v.VERSION_WIN10_V5 and target_vcpu < len(self.child.vcpus) and sint < v.HV_SYNIC_SINT_COUNT
        if ok:
            self.version = version
            self.to_child = self.hv.connect(self.hv.root.vm, None, self.hv.create_port(self.child, target_vcpu, sint))
            self._monitor_pages(page1, page2)
        self._send(v.VERSION_RESPONSE.pack(v.CHANNELMSG_VERSION_RESPONSE, int(ok), 0, v.VMBUS_MESSAGE_CONNECTION_ID_4))

    def _monitor_pages(self, page1: int, page2: int) -> None:
        """The two monitor pages: page aligned, in the child's memory, else its channels go unmonitored."""
        size = self.child.mem.size
        if any(not page or page & (v.PAGE_SIZE - 1) or page + v.PAGE_SIZE > size for page in (page1, page2)):
            self.stats["monitor_page_outside_memory"] += 1
            return
        self.monitor = page2
        self.hv.monitors[id(self.child)] = Monitor(self.hv, self.child, page2)

    def _request_offers(self, _msg: tuple, _payload: bytes) -> None:
        for channel in self.channels.values():
            if not channel.rescinded:
                self._send(self._offer_message(channel))
        self._send(v.CHANNEL_HEADER.pack(v.CHANNELMSG_ALLOFFERS_DELIVERED))

    def _gpadl_header(self, msg: tuple, payload: bytes) -> None:
        """A GPADL's first message: one range, its pages counted from its byte count and offset."""
        _, relid, handle, buflen, ranges, count, offset = msg
        pages = (offset + count + v.PAGE_SIZE - 1) >> v.PAGE_SHIFT
        if (ranges != 1 or offset >= v.PAGE_SIZE or not count or not 0 < pages <= v.MAX_GPADL_PAGES
                or buflen != v.GPA_RANGE_HEADER + 8 * pages or handle in self.gpadls or relid not in self.channels):
            self.stats["gpadl_bad_header"] += 1
            self._send(v.GPADL_CREATED.pack(v.CHANNELMSG_GPADL_CREATED, relid, handle, STATUS_FAILED))
            return
        gpadl = self.gpadls[handle] = Gpadl(relid, pages, count, offset)
        self._take_pfns(handle, gpadl, payload[v.GPADL_HEADER.size:])

    def _gpadl_body(self, msg: tuple, payload: bytes) -> None:
        gpadl = self.gpadls.get(msg[2])
        if gpadl is None or gpadl.created:
            self.stats["gpadl_bad_body"] += 1
            return
        self._take_pfns(msg[2], gpadl, payload[v.GPADL_BODY.size:])

    def _take_pfns(self, handle: int, gpadl: Gpadl, data: bytes) -> None:
        """Append the message's page numbers; once all are in, check each names
        a page of the child's memory and answer GPADL_CREATED."""
        room = gpadl.pages - len(gpadl.pfns)
        gpadl.pfns += [v.U64.unpack_from(data, 8 * i)[0] for i in range(min(room, len(data) // 8))]
        if len(gpadl.pfns) < gpadl.pages:
            return
        limit = self.child.mem.size >> v.PAGE_SHIFT
        gpadl.created = all(pfn < limit for pfn in gpadl.pfns)
        if not gpadl.created:
            self.stats["gpadl_page_outside_memory"] += 1
            del self.gpadls[handle]
        self._send(v.GPADL_CREATED.pack(v.CHANNELMSG_GPADL_CREATED, gpadl.relid, handle,
                                        0 if gpadl.created else STATUS_FAILED))

    def _gpadl_teardown(self, msg: tuple, _payload: bytes) -> None:
        """GPADL_TEARDOWN: refused while an open channel's rings are in it."""
        _, relid, handle = msg
        if handle not in self.gpadls or any(c.open and c.gpadl == handle for c in self.channels.values()):
            self.stats["gpadl_teardown_refused"] += 1
            return
        del self.gpadls[handle]
        self._send(v.GPADL_TORNDOWN.pack(v.CHANNELMSG_GPADL_TORNDOWN, handle))

    def _open(self, msg: tuple, _payload: bytes) -> None:
        """OPENCHANNEL: the GPADL holds the outbound ring, then from
        ``downstream_ringbuffer_pageoffset`` the inbound one, each a header
        page and at least one data page."""
        _, relid, openid, handle, target_vp, split = msg
        channel, gpadl = self.channels.get(relid), self.gpadls.get(handle)
        ok = (channel is not None and not channel.open and not channel.rescinded and gpadl is not None
              and gpadl.created and gpadl.relid == relid and not gpadl.byte_offset
              and 2 <= split <= gpadl.pages - 2 and target_vp < len(self.child.vcpus))
        if ok:
            channel.map(handle, split, target_vp)
        else:
            self.stats["open_refused"] += 1
        self._send(v.OPEN_RESULT.pack(v.CHANNELMSG_OPENCHANNEL_RESULT, relid, openid, 0 if ok else STATUS_FAILED))
        if ok:
            channel.vsp.open(channel)

    def _close(self, msg: tuple, _payload: bytes) -> None:
        channel = self.channels.get(msg[1])
        if channel is None or not channel.open:
            self.stats["close_not_open"] += 1
            return
        channel.open = False
        channel.vsp.close(channel)

    _HANDLERS = {
        v.CHANNELMSG_INITIATE_CONTACT: (v.INITIATE_CONTACT, _contact),
        v.CHANNELMSG_REQUESTOFFERS: (v.CHANNEL_HEADER, _request_offers),
        v.CHANNELMSG_GPADL_HEADER: (v.GPADL_HEADER, _gpadl_header),
        v.CHANNELMSG_GPADL_BODY: (v.GPADL_BODY, _gpadl_body),
        v.CHANNELMSG_GPADL_TEARDOWN: (v.GPADL_TEARDOWN, _gpadl_teardown),
        v.CHANNELMSG_OPENCHANNEL: (v.OPEN_CHANNEL, _open),
        v.CHANNELMSG_CLOSECHANNEL: (v.CLOSE_CHANNEL, _close),
    }

    def rescind(self, channel: Channel) -> None:
        """RESCIND_CHANNELOFFER: the channel is gone for the guest, and a primary's sub-channels with it."""
        if channel.rescinded:
            return
        channel.rescinded, channel.open = True, False
        channel.vsp.close(channel)
        self._send(v.RESCIND_OFFER.pack(v.CHANNELMSG_RESCIND_CHANNELOFFER, channel.relid))
        for sub in list(self.channels.values()):
            if sub.primary is channel:
                self.rescind(sub)

    def _send(self, message: bytes) -> None:
        if not self.to_child:
            self.stats["vmbus_no_contact"] += 1
            return
        if self.hv.root.post(self.cpu, self.to_child, message) != v.HV_STATUS_SUCCESS:
            self.stats["vmbus_post_failed"] += 1


class RootKernel:
    """The root partition's kernel as its VSPs need it: memory, each VP's
    SynIC pages, the SINT handler and a handler per (VP, event flag)."""

    def __init__(self, hv: HyperV, vm: VM) -> None:
        self.hv = hv
        self.vm = vm
        self._next = ROOT_KERNEL_MB << 20
        self.handlers: dict[tuple[int, int], Callable[[], None]] = {}
        self.pages: dict[int, tuple[int, int]] = {}         # VP -> (message page, event flags page)
        self.input = self.alloc(v.PAGE_SIZE)                 # the hypercall input page
        for vp in vm.vcpus:
            simp, siefp = self.alloc(v.PAGE_SIZE), self.alloc(v.PAGE_SIZE)
            self.pages[vp.index] = simp, siefp
            vp.set_irq_handler(ROOT_VECTOR + vp.index, lambda vp=vp: self._isr(vp))
            hv.wrmsr(vp, v.HV_X64_MSR_SIMP, simp | v.HV_SYNIC_SIMP_ENABLE)
            hv.wrmsr(vp, v.HV_X64_MSR_SIEFP, siefp | v.HV_SYNIC_SIEFP_ENABLE)
            hv.wrmsr(vp, v.HV_X64_MSR_SINT0 + ROOT_SINT, ROOT_VECTOR + vp.index)

    def alloc(self, size: int) -> int:
        gpa, self._next = self._next, self._next + -(-size // v.PAGE_SIZE) * v.PAGE_SIZE
        if self._next > self.vm.mem.size:
            raise MemoryError(f"{self.vm.name}: out of memory for VSPs")
        return gpa

    def post(self, vp, connection: int, message: bytes) -> int:
        """HvPostMessage from the root's input page."""
        self.vm.mem.write(self.input, v.HV_INPUT_POST_MESSAGE.pack(connection, v.VMBUS_MESSAGE_TYPE, len(message))
                          + message)
        return self.hv.post_message(vp, self.input)

    def _isr(self, vp) -> None:
        vp.eoi(ROOT_VECTOR + vp.index)
        simp, siefp = self.pages[vp.index]
        eom = lambda: self.hv.wrmsr(vp, v.HV_X64_MSR_EOM, 0)     # noqa: E731
        for sender, payload in v.take_messages(self.vm.mem, simp, ROOT_SINT, eom):
            port = self.hv.ports.get(sender)
            if port is not None and port.server is not None:
                port.server.handle(payload)
        for flag in v.take_event_flags(self.vm.mem, siefp, ROOT_SINT):
            handler = self.handlers.get((vp.index, flag))
            if handler is not None:
                handler()


class HyperV:
    def __init__(self, host) -> None:
        self.host = host
        self.sim = host.sim
        self.synics: dict[int, Synic] = {}
        self.ports: dict[int, Port] = {}
        self.connections: dict[tuple[int, int], tuple[int, int]] = {}   # (partition, id) -> (port, flag)
        self.servers: dict[int, VmbusServer] = {}
        self.monitors: dict[int, Monitor] = {}
        self.stats: Counter[str] = Counter()
        self.vsps: list[Netvsp] = []
        self.next_flag = CHANNEL_FLAG_BASE
        vps = min(ROOT_MAX_VPS, max(1, len(host.cores) // ROOT_VP_CORES))
        self.root = RootKernel(self, VM(f"{host.name}-root", host, ROOT_MB, vps))

    # ---- partitions (the root's VID and VMMS) -------------------------------------------
    def create_partition(self, vm: VM) -> VmbusServer:
        server = self.servers[id(vm)] = VmbusServer(self, vm)
        return server

    def server(self, vm: VM) -> VmbusServer:
        return self.servers[id(vm)]

    def create_port(self, vm: VM, vp: int, sint: int, base_flag: int = 0, server=None) -> int:
        """HvCreatePort (by the root): a message or event port on ``vm``'s VP ``vp``."""
        port = len(self.ports) + 1
        self.ports[port] = Port(vm, vp, sint, base_flag, server)
        return port

    def connect(self, vm: VM, connection: int | None, port: int, flag: int = 0) -> int:
        """HvConnectPort (by the root): ``vm``'s connection to ``port``; an
        event connection sets the port's base flag plus ``flag``."""
        connection = connection or len(self.connections) + 0x10000
        self.connections[id(vm), connection] = port, flag
        return connection

    def add_netvsc(self, vm: VM, mac: bytes) -> Netvsp:
        """A synthetic NIC: netvsp on a root VP, offered on the child's VMBus,
        its port on the virtual switch."""
        root = self.root.vm
        cpu = root.vcpus[len(self.vsps) % len(root.vcpus)]
        vsp = Netvsp(self.sim, mac, cpu, vm.acct, f"{self.host.name}/{vm.name}/netvsp")
        server = self.server(vm)
        primary = server.offer(vsp, cpu)
        vsp.offer_subchannels = lambda count: server.offer_subchannels(primary, count)
        port = TapPort(vm, vsp, reader=cpu, syscall=False)
        port.switch_event = VMSWITCH
        self.vsps.append(vsp)
        return vsp

    # ---- live migration: a partition's VMBus and SynIC state move with it ---------------------------
    def destroy_partition(self, vm: VM) -> None:
        """The VM left this host: its VSPs stop and leave the switch, its VMBus server goes."""
        server = self.servers.pop(id(vm))
        self.monitors.pop(id(vm), None)
        for channel in server.channels.values():
            channel.vsp.close(channel)
            if channel.primary is None:
                channel.vsp.port.close()
                self.vsps.remove(channel.vsp)

    def restore_partition(self, vm: VM, origin: HyperV, was: VM) -> None:
        """The target's side of a migration of ``was`` from ``origin`` (``vm`` built here with its
        synthetic NICs offered in the source's order): each VP's SynIC pages, SINTs and queued
        messages, the server's version and GPADLs, and each channel's connection, rings and VSP state
        as they were; the guest sees nothing change but the time it was stopped."""
        source = origin.server(was)
        for vp, before in zip(vm.vcpus, was.vcpus):
            old = origin.synics.get(id(before)) or Synic(before)
            synic = self.synics[id(vp)] = Synic(vp)
            synic.simp, synic.siefp, synic.sints = old.simp, old.siefp, list(old.sints)
            synic.queues = [deque(q) for q in old.queues]
        server = self.server(vm)
        server.version, server.gpadls, server.monitor = source.version, dict(source.gpadls), source.monitor
        if source.monitor is not None:
            self.monitors[id(vm)] = Monitor(self, vm, source.monitor)
        if source.version:
            server.to_child = self.connect(self.root.vm, None, self.create_port(vm, 0, v.VMBUS_MESSAGE_SINT))
        for relid, old in source.channels.items():
            if relid not in server.channels:        # a sub-channel: made again behind its primary
                server.subchannel(server.channels[old.primary.relid], old.sub_index)
            channel = server.channels[relid]
            self.connections[id(vm), old.connection] = self.connections.pop((id(vm), channel.connection))
            channel.connection, channel.rescinded = old.connection, old.rescinded
            if old.open:
                channel.map(old.gpadl, old.split, old.target_vp)
                channel.vsp.adopt(old.vsp, channel)

    # ---- SynIC MSRs -------------------------------------------------------------------------
    def wrmsr(self, vp, msr: int, value: int) -> None:
        """A SynIC MSR write: intercepted and handled by the hypervisor; a
        page outside the partition's memory leaves the page disabled."""
        vp.charge_path(SYNIC_MSR)
        synic = self.synics.setdefault(id(vp), Synic(vp))
        page = value & ~(v.PAGE_SIZE - 1)
        enabled = value & 1 and page + v.PAGE_SIZE <= vp.vm.mem.size
        if msr == v.HV_X64_MSR_SIMP:
            synic.simp = page if enabled else None
        elif msr == v.HV_X64_MSR_SIEFP:
            synic.siefp = page if enabled else None
        elif v.HV_X64_MSR_SINT0 <= msr < v.HV_X64_MSR_SINT0 + v.HV_SYNIC_SINT_COUNT:
            synic.sints[msr - v.HV_X64_MSR_SINT0] = value & 0xFFFFFFFF
        if msr in (v.HV_X64_MSR_EOM, v.HV_X64_MSR_SIMP):
            for sint in range(v.HV_SYNIC_SINT_COUNT):
                self._fill_slot(synic, sint, vp)

    # ---- hypercalls ----------------------------------------------------------------------------
    def post_message(self, vp, gpa: int, acct=None) -> int:
        """HvPostMessage with its input at ``gpa`` in the caller's memory."""
        vp.charge("hypercall", acct=acct)
        vp.charge("hv_post_message", acct=acct)
        mem = vp.vm.mem
        if gpa & 7 or gpa < 0 or (gpa & (v.PAGE_SIZE - 1)) + v.HV_MESSAGE_SIZE > v.PAGE_SIZE \
                or gpa + v.HV_MESSAGE_SIZE > mem.size:
            return v.HV_STATUS_INVALID_ALIGNMENT
        connection, mtype, size = v.HV_INPUT_POST_MESSAGE.unpack_from(mem.buf, gpa)
        if size > v.HV_MESSAGE_PAYLOAD_BYTE_COUNT or not 0 < mtype < 0x80000000:
            return v.HV_STATUS_INVALID_PARAMETER
        target = self.connections.get((id(vp.vm), connection))
        if target is None or target[0] not in self.ports:
            return v.HV_STATUS_INVALID_CONNECTION_ID
        port = self.ports[target[0]]
        synic = self._synic(port)
        if synic is None or len(synic.queues[port.sint]) >= v.HV_MAX_QUEUED_MESSAGES:
            return v.HV_STATUS_INSUFFICIENT_BUFFERS
        synic.queues[port.sint].append((mtype, target[0], mem.read(gpa + v.HV_INPUT_POST_MESSAGE.size, size)))
        self._fill_slot(synic, port.sint, vp)
        return v.HV_STATUS_SUCCESS

    def signal_event(self, vp, value: int, acct=None) -> int:
        """HvSignalEvent (a fast hypercall): connection id and flag number in one register."""
        vp.charge("hypercall", acct=acct)
        return self.set_event(vp, vp.vm, value, acct)

    def monitor_kick(self, vm: VM) -> None:
        """The child set a bit of its monitor page: a scan is due (see the module's notes)."""
        monitor = self.monitors.get(id(vm))
        if monitor is not None:
            monitor.kick()

    def set_event(self, vp, partition: VM, value: int, acct=None) -> int:
        """HvSignalEvent's work for ``partition``'s connection, charged to ``vp``: the hypercall's or the scan's."""
        vp.charge("hv_signal_event", acct=acct)
        target = self.connections.get((id(partition), value & v.HV_CONNECTION_ID_MASK))
        if target is None:
            return v.HV_STATUS_INVALID_CONNECTION_ID
        port = self.ports[target[0]]
        flag = port.base_flag + target[1] + (value >> v.HV_SIGNAL_FLAG_SHIFT & 0xFFFF)
        if flag >= v.HV_EVENT_FLAGS_COUNT:
            return v.HV_STATUS_INVALID_PARAMETER
        synic = self._synic(port)
        if synic is None or synic.siefp is None:        # no event flags page: the event is lost
            self.stats["event_lost"] += 1
            return v.HV_STATUS_SUCCESS
        mem = port.vm.mem
        at = synic.siefp + port.sint * (v.HV_EVENT_FLAGS_COUNT // 8) + flag // 8
        bit = 1 << flag % 8
        if mem.buf[at] & bit:
            self.stats["event_coalesced"] += 1
            return v.HV_STATUS_SUCCESS
        mem.write(at, bytes([mem.buf[at] | bit]))
        self._assert(synic, port.sint, vp)
        return v.HV_STATUS_SUCCESS

    def _synic(self, port: Port) -> Synic | None:
        vp = port.vm.vcpus[port.vp] if port.vp < len(port.vm.vcpus) else None
        return None if vp is None else self.synics.setdefault(id(vp), Synic(vp))

    def _fill_slot(self, synic: Synic, sint: int, cpu) -> None:
        """A free slot takes the next queued message; a busy one learns one is pending."""
        queue = synic.queues[sint]
        if synic.simp is None or not queue:
            return
        mem = synic.vp.vm.mem
        slot = synic.simp + sint * v.HV_MESSAGE_SIZE
        if v.U32.unpack_from(mem.buf, slot)[0] != v.HVMSG_NONE:
            mem.write(slot + v.HV_MESSAGE_FLAGS, bytes([mem.buf[slot + v.HV_MESSAGE_FLAGS] | v.HV_MSG_PENDING]))
            return
        mtype, sender, payload = queue.popleft()
        flags = v.HV_MSG_PENDING if queue else 0
        mem.write(slot, v.HV_MESSAGE_HEADER.pack(mtype, len(payload), flags, sender) + payload)
        self._assert(synic, sint, cpu)

    def _assert(self, synic: Synic, sint: int, cpu) -> None:
        """The SINT's vector to its VP, unless masked."""
        reg = synic.sints[sint]
        if reg & v.HV_SYNIC_SINT_MASKED:
            self.stats["sint_masked"] += 1
            return
        synic.vp.vm.irqchip.msi(cpu, msi_address(synic.vp.index), reg & 0xFF)


class WorkerNic(EmulatedNic):
    """A legacy NIC of a Hyper-V VM: the device model in the VM's worker
    process in the root; every register access an intercept forwarded there;
    its frames reach the virtual switch through a user-to-kernel call."""

    def __init__(self, vm: VM, device: str, mac: bytes, slot: int | None = None) -> None:
        super().__init__(vm, device, mac, vmm=vm.thread(WORKER), slot=slot)
        self.port.switch_event = VMSWITCH

    def regions(self, index: int, kind: str, size: int) -> list[tuple[int, int, tuple[str, ...]]]:
        return [(0, size, HYPERV_PIO if kind == "io" else HYPERV_MMIO)]
