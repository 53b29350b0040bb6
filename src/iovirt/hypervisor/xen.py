"""Xen on one host: domains, hypercalls, grant tables, event channels, a
minimal xenstore, dom0 (the driver domain running netback and the HVM
guests' QEMUs) and the ioreq path of HVM device emulation.

Every hypercall is charged as ``hypercall`` on the calling vCPU (an HVM
guest's VMCALL round trip) plus the work of the operation: ``evtchn_send``
for EVTCHNOP_send, ``grant_copy`` per GNTTABOP_copy op and byte.  Guests
keep their shared-info page and grant table in their own memory: the guest
writes grant entries, Xen reads and checks them on every use; Xen writes
the event-channel pending bits, the guest masks and consumes them
(xen/common/grant_table.c, event_channel.c, event_2l.c)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count

from ..devices.xen_netback import XenNetback
from ..mem.guest_memory import GuestMemory
from ..sim.resource import Resource
from ..spec import xen as x
from ..spec.apic import MSI_ADDR_BASE
from .tap import TapPort
from .vm import VM

DOM0_MB = 1024
DOM0_KERNEL_MB = 16
DOM0_VCPU_CORES = 4                 # dom0_max_vcpus: one dom0 vCPU per this many host cores
MAX_GRANT_FRAMES = 32               # Xen's default max_grant_frames
MAX_EVTCHNS = 1024                  # per domain (default max_event_channels)
MAX_COPY_OPS = 512                  # ops one GNTTABOP_copy may carry here
DOM0_UPCALL_VECTOR = 0xF3           # Linux's HYPERVISOR_CALLBACK_VECTOR
ENOENT, ESRCH, EACCES, EFAULT, EINVAL, ENOSPC = 2, 3, 13, 14, 22, 28
# An HVM guest's access to an emulated device: the exit, Xen's decode and
# ioreq dispatch, and the event that wakes the ioreq server in dom0.
XEN_IOREQ = ("vm_exit", "ioreq", "evtchn_send")


@dataclass
class Channel:
    remote_domid: int
    remote_port: int = 0            # 0 while unbound
    bound: bool = False


@dataclass
class Domain:
    domid: int
    vm: VM
    shared_info: int | None = None
    upcall_vector: int | None = None
    gnttab: int | None = None       # guest-physical address of the grant frames
    gnttab_entries: int = 0
    ports: dict[int, Channel] = field(default_factory=dict)
    pins: Counter = field(default_factory=Counter)     # grant ref -> active mappings
    maps: list[ForeignPage] = field(default_factory=list)   # other domains' grants this one has mapped
    ioreq: IoreqServer | None = None
    stats: Counter = field(default_factory=Counter)

    @property
    def mem(self) -> GuestMemory:
        return self.vm.mem

    def home(self) -> str:
        return f"/local/domain/{self.domid}"


@dataclass(eq=False)
class ForeignPage:
    """A granted page mapped into the caller (GNTTABOP_map_grant_ref): its
    bytes are the granting domain's, reachable from ``base`` for one page."""
    granter: Domain
    ref: int
    base: int
    writable: bool

    @property
    def mem(self) -> GuestMemory:
        return self.granter.mem

    @property
    def buf(self):
        return self.granter.mem.buf


class XenStore:
    """A tree of string values with per-node owner and readers, and watches
    that fire as events (docs/misc/xenstore.txt).  A domain reads what it
    owns or was given; writes only what it owns; dom0 may do anything.
    Relative paths are under the caller's /local/domain/<domid>."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.nodes: dict[str, tuple[str, int, frozenset[int]]] = {"/local/domain": ("", 0, frozenset())}
        self.watches: list[tuple[str, Callable[[str], None], int]] = []     # (path, callback, watcher)

    def path(self, domid: int, path: str) -> str:
        return path if path.startswith("/") else f"/local/domain/{domid}/{path}"

    def read(self, domid: int, path: str) -> str | None:
        node = self.nodes.get(self.path(domid, path))
        if node is None or domid not in (0, node[1]) and domid not in node[2]:
            return None
        return node[0]

    def write(self, domid: int, path: str, value: str, at: float, owner: int | None = None,
              readers: frozenset[int] = frozenset()) -> int:
        path = self.path(domid, path)
        node = self.nodes.get(path) or self._inherited(path)
        if domid and (node is None or domid != node[1]):
            return -EACCES
        if owner is None:
            owner, readers = (node[1], node[2]) if node else (domid, readers)
        self.nodes[path] = (str(value), owner, readers)
        self._fire(path, at)
        return 0

    def rm(self, path: str, at: float) -> None:
        """XS_RM by the toolstack: ``path`` and every node under it go;
        watches on it, above it and below it fire."""
        gone = [p for p in self.nodes if p == path or p.startswith(path + "/")]
        for p in gone:
            del self.nodes[p]
        if gone:
            self._fire(path, at, recurse=True)

    def _fire(self, path: str, at: float, recurse: bool = False) -> None:
        """Queue an event for every watch on ``path`` or above it (and, for
        a removal, below it: that watch reports its own path)."""
        for watch in self.watches:
            watched = watch[0]
            if path == watched or path.startswith(watched + "/"):
                self.sim.at(at, self._deliver, watch, path)
            elif recurse and watched.startswith(path + "/"):
                self.sim.at(at, self._deliver, watch, watched)

    def _deliver(self, watch: tuple, path: str) -> None:
        """An event reaches its watcher unless the watch is gone by then."""
        if watch in self.watches:
            watch[1](path)

    def _inherited(self, path: str):
        """A new node takes its nearest existing ancestor's permissions."""
        while "/" in path.strip("/"):
            path = path.rsplit("/", 1)[0]
            if path in self.nodes:
                return self.nodes[path]
        return None

    def directory(self, domid: int, path: str) -> list[str]:
        prefix = self.path(domid, path) + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.nodes if p.startswith(prefix)
                       and self.read(domid, p) is not None})

    def watch(self, domid: int, path: str, callback: Callable[[str], None], at: float) -> None:
        """Register a watch; as xenstored does, it fires once at once."""
        watch = (self.path(domid, path), callback, domid)
        self.watches.append(watch)
        self.sim.at(at, self._deliver, watch, watch[0])

    def unwatch(self, domid: int, path: str, callback: Callable[[str], None]) -> int:
        """XS_UNWATCH: events not yet delivered are dropped with it."""
        watch = (self.path(domid, path), callback, domid)
        if watch not in self.watches:
            return -ENOENT
        self.watches.remove(watch)
        return 0

    def release(self, domid: int) -> None:
        """A dead domain's connection goes, and its watches with it."""
        self.watches = [w for w in self.watches if w[2] != domid]


class Dom0Kernel:
    """What dom0's Linux provides its backends: memory, the shared-info page,
    the upcall vector on vCPU 0 and a handler per bound port."""

    def __init__(self, xen: Xen, vm: VM) -> None:
        self.vm = vm
        self.vcpu = vm.vcpus[0]
        self._next = DOM0_KERNEL_MB << 20
        self.handlers: dict[int, Callable[[], None]] = {}
        self.shared_info = self.alloc(x.PAGE_SIZE)
        xen.set_shared_info(self.vcpu, self.shared_info)
        self.vcpu.set_irq_handler(DOM0_UPCALL_VECTOR, self._upcall)
        xen.set_upcall_vector(self.vcpu, DOM0_UPCALL_VECTOR)

    def alloc(self, size: int) -> int:
        """Pages of dom0 memory for a backend (above the kernel's own)."""
        gpa = self._next
        self._next += -(-size // x.PAGE_SIZE) * x.PAGE_SIZE
        if self._next > self.vm.mem.size:
            raise MemoryError(f"{self.vm.name}: out of memory for backends")
        return gpa

    def _upcall(self) -> None:
        self.vcpu.eoi(DOM0_UPCALL_VECTOR)
        for port in x.evtchn_2l_take(self.vm.mem.buf, self.shared_info):
            handler = self.handlers.get(port)
            if handler is not None:
                handler()


class IoreqServer:
    """QEMU in dom0 serving one HVM guest's emulated devices: an access
    exits to Xen, which posts an ioreq and signals QEMU's event channel; QEMU
    wakes, runs the device model, completes the ioreq with an event back
    (xenevtchn_notify, a hypercall), and the vCPU resumes only then."""

    def __init__(self, xen: Xen, vm: VM) -> None:
        dom0 = xen.dom0.vm
        self.thread = Resource(f"{xen.host.name}/{dom0.name}/qemu-{vm.name}", "host_thread", xen.host.ledger, vm.acct)
        xen.host.place(self.thread)
        dom0.resources.append(self.thread)

    def forward(self, handler, emulate: str):
        """``handler`` as the guest reaches it: run on QEMU's thread, the vCPU waiting."""
        def access(vcpu: Resource, offset: int, *args):
            qemu = self.thread
            if qemu.cursor < vcpu.cursor:
                qemu.sync(vcpu.cursor)
                qemu.charge("wakeup")
            qemu.charge(emulate)
            result = handler(qemu, offset, *args)
            qemu.charge("hypercall")
            qemu.charge("evtchn_send")
            vcpu.sync(qemu.cursor)
            return result
        return access


class Xen:
    def __init__(self, host) -> None:
        self.host = host
        self.sim = host.sim
        self.xenstore = XenStore(self.sim)
        self.domains: dict[int, Domain] = {}
        self._by_vm: dict[int, Domain] = {}
        self._domids = count()              # never reused while this Xen runs
        self.vifs: list[XenNetback] = []
        vcpus = max(1, len(host.cores) // DOM0_VCPU_CORES)
        self.dom0 = self.create_domain(VM(f"{host.name}-dom0", host, DOM0_MB, vcpus))
        self.dom0_kernel = Dom0Kernel(self, self.dom0.vm)

    # ---- toolstack (libxl) ------------------------------------------------------------
    def create_domain(self, vm: VM) -> Domain:
        dom = Domain(next(self._domids), vm)
        self.domains[dom.domid] = dom
        self._by_vm[id(vm)] = dom
        self.xenstore.write(0, dom.home(), "", self.sim.now, owner=dom.domid)
        self.xenstore.write(0, f"{dom.home()}/domid", str(dom.domid), self.sim.now)
        return dom

    def domain_of(self, vm: VM) -> Domain:
        return self._by_vm[id(vm)]

    def destroy_domain(self, vm: VM) -> None:
        """libxl's destroy and Xen's domain_kill: xenstored drops the dead
        domain's watches; each of its vifs is removed (netback_remove: rings
        unmapped, event channel closed, the vif's bridge port deleted); its
        own event channels close, its maps of others' grants are released
        (gnttab_release_mappings); its xenstore home and backend directories
        are removed, an HVM domain's QEMU in dom0 exits, and the domain goes."""
        dom = self.domain_of(vm)
        if dom is self.dom0:
            raise ValueError("dom0 cannot be destroyed")
        self.xenstore.release(dom.domid)
        for vif in [vif for vif in self.vifs if vif.frontend_domid == dom.domid]:
            vif.remove()
            self.vifs.remove(vif)
        for port in list(dom.ports):
            self._close(dom, port)
        for page in list(dom.maps):
            self._unmap(dom, page)
        for path in (dom.home(), f"{self.dom0.home()}/backend/vif/{dom.domid}"):
            self.xenstore.rm(path, self.sim.now)
        if dom.ioreq is not None:
            self.host.unplace(dom.ioreq.thread)       # its QEMU exits
        del self.domains[dom.domid], self._by_vm[id(vm)]

    def add_vif(self, vm: VM, mac: bytes) -> XenNetback:
        """libxl's vif creation: the frontend and backend xenstore directories,
        then netback's probe; its port on the host bridge."""
        front, back = self.domain_of(vm), self.dom0
        devid = sum(1 for vif in self.vifs if vif.frontend_domid == front.domid)
        fpath, bpath = f"{front.home()}/device/vif/{devid}", f"{back.home()}/backend/vif/{front.domid}/{devid}"
        mac_text = mac.hex(":")
        for path, owner, reader, keys in (
                (fpath, front.domid, back.domid, {"backend": bpath, "backend-id": back.domid}),
                (bpath, back.domid, front.domid, {"frontend": fpath, "frontend-id": front.domid})):
            self.xenstore.write(0, path, "", self.sim.now, owner=owner, readers=frozenset({reader}))
            for key, value in {**keys, "handle": devid, "mac": mac_text, "state": x.XenbusStateInitialising}.items():
                self.xenstore.write(0, f"{path}/{key}", str(value), self.sim.now)
        kernel = self.dom0_kernel
        cpu = kernel.vm.vcpus[len(self.vifs) % len(kernel.vm.vcpus)]
        vif = XenNetback(self, kernel, cpu, bpath, front.domid, vm.acct)
        TapPort(vm, vif, reader=cpu, syscall=False)
        self.vifs.append(vif)
        return vif

    def ioreq_server(self, vm: VM) -> IoreqServer:
        """The guest's QEMU in dom0, one per HVM domain."""
        dom = self.domain_of(vm)
        if dom.ioreq is None:
            dom.ioreq = IoreqServer(self, vm)
        return dom.ioreq

    # ---- hypercalls ---------------------------------------------------------------------
    def _call(self, vcpu: Resource, acct=None) -> Domain:
        vcpu.charge("hypercall", acct=acct)
        return self._by_vm[id(vcpu.vm)]

    def _page_in(self, dom: Domain, gpa: int, pages: int = 1) -> bool:
        return gpa >= 0 and not gpa % x.PAGE_SIZE and gpa + pages * x.PAGE_SIZE <= dom.mem.size

    def set_shared_info(self, vcpu: Resource, gpa: int) -> int:
        """XENMEM_add_to_physmap(XENMAPSPACE_shared_info): the page at ``gpa``
        becomes the shared-info page; every port starts unmasked, none pending."""
        dom = self._call(vcpu)
        if not self._page_in(dom, gpa):
            return -EINVAL
        dom.mem.write(gpa, bytes(x.PAGE_SIZE))
        dom.shared_info = gpa
        return 0

    def set_upcall_vector(self, vcpu: Resource, vector: int) -> int:
        """HVMOP_set_evtchn_upcall_vector: events arrive as this LAPIC vector."""
        dom = self._call(vcpu)
        if not 0x10 <= vector <= 0xFF:
            return -EINVAL
        dom.upcall_vector = vector
        return 0

    def setup_grant_table(self, vcpu: Resource, gpa: int, frames: int) -> int:
        """XENMEM_add_to_physmap(XENMAPSPACE_grant_table) for ``frames``
        consecutive frames at ``gpa``: the domain's v1 grant entries.  The
        frames are the domain's table wherever they appear: a table never
        shrinks (gnttab_grow_table) and mapping it elsewhere brings its
        entries, mapped grants' flags included, to the new place."""
        dom = self._call(vcpu)
        frames = max(frames, dom.gnttab_entries // x.GRANT_ENTRIES_PER_FRAME)
        if not 1 <= frames <= MAX_GRANT_FRAMES or not self._page_in(dom, gpa, frames):
            return -EINVAL
        if dom.gnttab is None:
            dom.mem.write(gpa, bytes(frames * x.PAGE_SIZE))     # a new domain's table: no entry valid
        elif gpa != dom.gnttab:
            dom.mem.write(gpa, dom.mem.read(dom.gnttab, dom.gnttab_entries * x.GRANT_ENTRY_V1.size))
        dom.gnttab, dom.gnttab_entries = gpa, frames * x.GRANT_ENTRIES_PER_FRAME
        return 0

    # ---- event channels -------------------------------------------------------------------
    def _new_port(self, dom: Domain, channel: Channel) -> int:
        port = next((p for p in range(1, MAX_EVTCHNS) if p not in dom.ports), None)
        if port is None:
            return -ENOSPC
        dom.ports[port] = channel
        return port

    def evtchn_alloc_unbound(self, vcpu: Resource, remote_domid: int) -> int:
        """EVTCHNOP_alloc_unbound: a port ``remote_domid`` may bind to."""
        dom = self._call(vcpu)
        if remote_domid not in self.domains:
            return -ESRCH
        return self._new_port(dom, Channel(remote_domid))

    def evtchn_bind_interdomain(self, vcpu: Resource, remote_domid: int, remote_port: int) -> int:
        """EVTCHNOP_bind_interdomain: connect a new local port to the remote's
        unbound one offered to us; the local port starts pending, as Xen
        does, for notifications the unbound port may have lost."""
        dom = self._call(vcpu)
        remote = self.domains.get(remote_domid)
        if remote is None:
            return -ESRCH
        other = remote.ports.get(remote_port)
        if other is None or other.bound or other.remote_domid != dom.domid:
            return -EINVAL
        port = self._new_port(dom, Channel(remote_domid, remote_port, True))
        if port > 0:
            other.remote_port, other.bound = port, True
            self._set_pending(dom, port, vcpu)
        return port

    def evtchn_send(self, vcpu: Resource, port: int, acct=None) -> int:
        """EVTCHNOP_send: mark the peer's port pending; an unbound port drops it."""
        dom = self._call(vcpu, acct)
        vcpu.charge("evtchn_send", acct=acct)
        channel = dom.ports.get(port)
        if channel is None:
            return -EINVAL
        dom.stats["evtchn_send"] += 1
        if channel.bound:
            self._set_pending(self.domains[channel.remote_domid], channel.remote_port, vcpu)
        return 0

    def evtchn_unmask(self, vcpu: Resource, port: int) -> int:
        """EVTCHNOP_unmask: clear the mask; a port that became pending meanwhile upcalls now."""
        dom = self._call(vcpu)
        if port not in dom.ports or dom.shared_info is None:
            return -EINVAL
        word, bit = divmod(port, x.BITS_PER_EVTCHN_WORD)
        mask = dom.shared_info + x.SHARED_INFO_EVTCHN_MASK + 8 * word
        dom.mem.store(x.U64, mask, x.U64.unpack_from(dom.mem.buf, mask)[0] & ~(1 << bit))
        if x.U64.unpack_from(dom.mem.buf, dom.shared_info + x.SHARED_INFO_EVTCHN_PENDING + 8 * word)[0] >> bit & 1:
            self._mark_events_pending(dom, word, vcpu)
        return 0

    def evtchn_close(self, vcpu: Resource, port: int) -> int:
        """EVTCHNOP_close: the peer's end goes back to unbound."""
        return self._close(self._call(vcpu), port)

    def _close(self, dom: Domain, port: int) -> int:
        channel = dom.ports.pop(port, None)
        if channel is None:
            return -EINVAL
        other = self.domains[channel.remote_domid].ports.get(channel.remote_port) if channel.bound else None
        if other is not None:
            other.remote_port, other.bound = 0, False
        return 0

    def _set_pending(self, dom: Domain, port: int, cpu: Resource) -> None:
        """evtchn_2l_set_pending: a port already pending coalesces, a masked one waits."""
        if dom.shared_info is None:
            dom.stats["evtchn_lost"] += 1
            return
        buf, word, bit = dom.mem.buf, *divmod(port, x.BITS_PER_EVTCHN_WORD)
        at = dom.shared_info + x.SHARED_INFO_EVTCHN_PENDING + 8 * word
        pending = x.U64.unpack_from(buf, at)[0]
        if pending >> bit & 1:
            dom.stats["evtchn_coalesced"] += 1
            return
        dom.mem.store(x.U64, at, pending | 1 << bit)
        if x.U64.unpack_from(buf, dom.shared_info + x.SHARED_INFO_EVTCHN_MASK + 8 * word)[0] >> bit & 1:
            dom.stats["evtchn_masked"] += 1
            return
        self._mark_events_pending(dom, word, cpu)

    def _mark_events_pending(self, dom: Domain, word: int, cpu: Resource) -> None:
        """Select the word, and upcall unless an upcall is already pending."""
        buf, info = dom.mem.buf, dom.shared_info
        sel = x.U64.unpack_from(buf, info + x.PENDING_SEL)[0]
        dom.mem.store(x.U64, info + x.PENDING_SEL, sel | 1 << word)
        if buf[info + x.UPCALL_PENDING]:
            return
        dom.mem.write(info + x.UPCALL_PENDING, b"\x01")
        if dom.upcall_vector is None:
            dom.stats["evtchn_no_upcall"] += 1
            return
        dom.stats["upcalls"] += 1
        dom.vm.irqchip.msi(cpu, MSI_ADDR_BASE, dom.upcall_vector)

    # ---- grant tables ----------------------------------------------------------------------
    def _grant(self, granter: Domain, ref: int, grantee: int, readonly: bool) -> tuple[int, int]:
        """Check grant ``ref`` of ``granter`` for ``grantee``: (GNTST status, page address)."""
        if granter.gnttab is None or not 0 <= ref < granter.gnttab_entries:
            return x.GNTST_bad_gntref, 0
        flags, domid, frame = x.GRANT_ENTRY_V1.unpack_from(granter.mem.buf, granter.gnttab + ref * x.GRANT_ENTRY_V1.size)
        if flags & x.GTF_type_mask != x.GTF_permit_access or domid != grantee:
            return x.GNTST_general_error, 0
        if not readonly and flags & x.GTF_readonly:
            return x.GNTST_general_error, 0
        if (frame + 1) << x.PAGE_SHIFT > granter.mem.size:
            return x.GNTST_bad_page, 0
        return x.GNTST_okay, frame << x.PAGE_SHIFT

    def _buffer(self, caller: Domain, domid: int, ptr: int, is_gref: bool, readonly: bool):
        """One side of a copy: (status, domain, page address) (gnttab_copy_claim_buf)."""
        dom = caller if domid in (x.DOMID_SELF, caller.domid) else self.domains.get(domid)
        if dom is None:
            return x.GNTST_bad_domain, None, 0
        if is_gref:
            status, page = self._grant(dom, ptr, caller.domid, readonly)
            return status, dom, page
        if dom is not caller:
            return x.GNTST_permission_denied, None, 0
        if (ptr + 1) << x.PAGE_SHIFT > dom.mem.size:
            return x.GNTST_bad_page, None, 0
        return x.GNTST_okay, dom, ptr << x.PAGE_SHIFT

    def grant_copy(self, vcpu: Resource, ops: int, count: int, acct=None) -> int:
        """GNTTABOP_copy over ``count`` struct gnttab_copy at ``ops`` in the
        caller's memory; each op's status is written back into it."""
        caller = self._call(vcpu, acct)
        if not 0 <= count <= MAX_COPY_OPS or ops < 0 or ops + count * x.GNTTAB_COPY.size > caller.mem.size:
            return -EFAULT
        for i in range(count):
            at = ops + i * x.GNTTAB_COPY.size
            status = self._copy_one(caller, x.GNTTAB_COPY.unpack_from(caller.mem.buf, at), vcpu, acct)
            caller.mem.store(x.I16, at + x.GNTTAB_COPY_STATUS, status)
            caller.stats["grant_copy_failed" if status else "grant_copy"] += 1
        return 0

    def _copy_one(self, caller: Domain, op: tuple, cpu: Resource, acct) -> int:
        s_ptr, s_dom, s_off, d_ptr, d_dom, d_off, length, flags, _ = op
        status, src, s_page = self._buffer(caller, s_dom, s_ptr, bool(flags & x.GNTCOPY_source_gref), True)
        if not status:
            status, dst, d_page = self._buffer(caller, d_dom, d_ptr, bool(flags & x.GNTCOPY_dest_gref), False)
        if not status and (s_off + length > x.PAGE_SIZE or d_off + length > x.PAGE_SIZE):
            status = x.GNTST_bad_copy_arg
        cpu.charge("grant_copy", nbytes=0 if status else length, acct=acct)
        if status:
            return status
        dst.mem.write(d_page + d_off, src.mem.buf[s_page + s_off : s_page + s_off + length])
        return x.GNTST_okay

    def grant_map(self, vcpu: Resource, domid: int, ref: int, readonly: bool) -> tuple[int, ForeignPage | None]:
        """GNTTABOP_map_grant_ref: map ``domid``'s granted page; Xen marks the
        entry GTF_reading (and GTF_writing) while it is mapped."""
        caller = self._call(vcpu)
        granter = self.domains.get(domid)
        if granter is None:
            return x.GNTST_bad_domain, None
        status, page = self._grant(granter, ref, caller.domid, readonly)
        if status:
            return status, None
        self._set_flags(granter, ref, x.GTF_reading | (0 if readonly else x.GTF_writing), True)
        granter.pins[ref] += 1
        mapped = ForeignPage(granter, ref, page, not readonly)
        caller.maps.append(mapped)
        return x.GNTST_okay, mapped

    def grant_unmap(self, vcpu: Resource, page: ForeignPage) -> int:
        """GNTTABOP_unmap_grant_ref of a map the caller holds: the last
        unmap of a ref clears GTF_reading/GTF_writing."""
        caller = self._call(vcpu)
        if page not in caller.maps:
            return x.GNTST_bad_handle
        self._unmap(caller, page)
        return x.GNTST_okay

    def _unmap(self, mapper: Domain, page: ForeignPage) -> None:
        mapper.maps.remove(page)
        granter = page.granter
        granter.pins[page.ref] -= 1
        if not granter.pins[page.ref]:
            self._set_flags(granter, page.ref, x.GTF_reading | x.GTF_writing, False)

    def _set_flags(self, dom: Domain, ref: int, bits: int, on: bool) -> None:
        at = dom.gnttab + ref * x.GRANT_ENTRY_V1.size
        flags = x.GRANT_ENTRY_FLAGS.unpack_from(dom.mem.buf, at)[0]
        dom.mem.store(x.GRANT_ENTRY_FLAGS, at, flags | bits if on else flags & ~bits)

    # ---- xenstore (through xenstored in dom0: a ring write and an event) --------------------
    def _xs(self, vcpu: Resource) -> Domain:
        dom = self._call(vcpu)
        vcpu.charge("evtchn_send")
        return dom

    def xs_read(self, vcpu: Resource, path: str) -> str | None:
        return self.xenstore.read(self._xs(vcpu).domid, path)

    def xs_write(self, vcpu: Resource, path: str, value) -> int:
        return self.xenstore.write(self._xs(vcpu).domid, path, str(value), vcpu.cursor)

    def xs_directory(self, vcpu: Resource, path: str) -> list[str]:
        return self.xenstore.directory(self._xs(vcpu).domid, path)

    def xs_watch(self, vcpu: Resource, path: str, callback: Callable[[str], None]) -> None:
        self.xenstore.watch(self._xs(vcpu).domid, path, callback, vcpu.cursor)

    def xs_unwatch(self, vcpu: Resource, path: str, callback: Callable[[str], None]) -> int:
        return self.xenstore.unwatch(self._xs(vcpu).domid, path, callback)
