"""Guest Xen support and netfront (Linux drivers/xen/{events,grant-table}.c,
drivers/net/xen-netfront.c), over the hypercall interface only.

:class:`XenPlatform` is what the guest kernel sets up once: the shared-info
page and the event-channel upcall vector, its grant table (v1 entries in
its own memory) and a handler per port.  :class:`XenNetfront` is one vif:
TX and RX rings in guest pages granted to the backend, an event channel,
the xenstore handshake (Initialising -> Initialised once the backend waits
in InitWait, Connected when the backend is), RX buffers as granted pages.
A frame goes out by granting its buffer read-only and pushing a request;
the event is sent only when RING_PUSH_REQUESTS_AND_CHECK_NOTIFY says the
backend asked.  The upcall reclaims TX slots and schedules a NAPI poll
that takes responses, refills RX and re-arms with
RING_FINAL_CHECK_FOR_RESPONSES.

Offloads (netif.h): TCP checksums are left to the backend
(NETTXF_csum_blank); with the backend's feature-sg and feature-gso-tcpv4
a GSO packet goes out as a request per page with a GSO extra-info slot
after the first.  The frontend writes feature-sg and feature-gso-tcpv4
itself, so packets may come in over several RX slots, a GSO packet with
its extra info, and go up the stack whole.

After a live migration the platform registers again with the target's Xen
(shared info, upcall vector, a fresh grant table: every grant and event
channel died with the old domain) and each netfront reconnects through the
target's xenstore as Linux's netfront_resume does: TX requests the old
backend never answered are lost, the handshake runs again and
talk_to_netback grants the (re-used) ring and buffer pages anew, binds a
new event channel and re-posts every RX buffer."""

from __future__ import annotations

from ...net.gso import GsoFrame
from ...spec import xen as x
from ...spec.ethernet import ETH_HLEN
from .base import wants_csum

NR_GRANT_FRAMES = 16
TX_BUFFER = x.PAGE_SIZE // 2        # two TX buffers per page: requests carry an offset
GSO_PAGES = -(-x.XEN_NETIF_MAX_TX_SIZE // x.PAGE_SIZE)        # pages of the largest GSO packet, a slot each
GSO_BUFFERS = x.NET_TX_RING_SIZE // (GSO_PAGES + 1)            # as many as the TX ring holds at once
NAPI_WEIGHT = 64
TX_MASK, RX_MASK = x.NET_TX_RING_SIZE - 1, x.NET_RX_RING_SIZE - 1
_TXREQ = x.NETIF_TX_REQUEST.struct
_RXREQ = x.NETIF_RX_REQUEST.struct
_EXTRA = x.NETIF_EXTRA_INFO
_U32 = x.U32.unpack_from


class XenPlatform:
    """The guest kernel's Xen layer, shared by its xenbus frontends."""

    def __init__(self, kernel, xen) -> None:
        self.xen = xen
        self.sim = kernel.sim
        self.vcpu = kernel.vcpu
        self.mem = kernel.mem
        self.handlers: dict[int, object] = {}
        self.shared_info = kernel.alloc.alloc(x.PAGE_SIZE)
        self.vector = kernel.alloc_vector()
        kernel.request_irq(self.vector, self._upcall)
        self.gnttab = kernel.alloc.alloc(NR_GRANT_FRAMES * x.PAGE_SIZE)
        self._register()
        self.free_refs = list(range(NR_GRANT_FRAMES * x.GRANT_ENTRIES_PER_FRAME - 1,
                                    x.GNTTAB_NR_RESERVED_ENTRIES - 1, -1))

    def _register(self) -> None:
        """The shared-info page, the upcall vector and the grant frames, as Xen must know them."""
        self.xen.set_shared_info(self.vcpu, self.shared_info)
        self.xen.set_upcall_vector(self.vcpu, self.vector)
        self.xen.setup_grant_table(self.vcpu, self.gnttab, NR_GRANT_FRAMES)

    def move_to(self, vcpu, mem, xen) -> None:
        """Live migration, as the suspend hypercall returns on the target
        (xen_hvm_post_suspend, gnttab_resume, xen_irq_resume): the same pages
        and vector registered with ``xen``; no port is bound any more.  The
        IDT entry came along with the vCPU state."""
        self.xen, self.vcpu, self.mem = xen, vcpu, mem
        self.handlers.clear()
        vcpu.sync(self.sim.now)
        self._register()

    def claim_ref(self) -> int:
        return self.free_refs.pop()

    def grant(self, ref: int, domid: int, gpa: int, readonly: bool) -> None:
        """gnttab_grant_foreign_access_ref: domid and frame first, then the
        flags that make the entry valid (after a write barrier)."""
        at = self.gnttab + ref * x.GRANT_ENTRY_V1.size
        self.mem.store(x.GRANT_ENTRY_V1.struct, at, 0, domid, gpa >> x.PAGE_SHIFT)
        self.mem.store(x.GRANT_ENTRY_FLAGS, at, x.GTF_permit_access | (x.GTF_readonly if readonly else 0))
        self.vcpu.charge("ring_op")

    def end_grant(self, ref: int) -> bool:
        """gnttab_end_foreign_access_ref: revoke unless the grantee is using it."""
        at = self.gnttab + ref * x.GRANT_ENTRY_V1.size
        self.vcpu.charge("ring_op")
        if x.GRANT_ENTRY_FLAGS.unpack_from(self.mem.buf, at)[0] & (x.GTF_reading | x.GTF_writing):
            return False
        self.mem.store(x.GRANT_ENTRY_FLAGS, at, 0)
        return True

    def _upcall(self) -> None:
        """The per-vCPU upcall vector: EOI, then every pending unmasked port."""
        self.vcpu.eoi(self.vector)
        ports = x.evtchn_2l_take(self.mem.buf, self.shared_info)
        self.mem.mark_dirty(self.shared_info, x.PAGE_SIZE)     # the CPU cleared pending bits
        for port in ports:
            handler = self.handlers.get(port)
            if handler is not None:
                handler()


def xenbus_probe(kernel, xen) -> None:
    """Find the vifs the toolstack gave this domain and bring each up as a netdev."""
    platform = kernel.xen_platform = XenPlatform(kernel, xen)
    for devid in xen.xs_directory(kernel.vcpu, "device/vif"):
        kernel.attach_netdev(XenNetfront(kernel, platform, f"device/vif/{devid}"))


class XenNetfront:
    rx_csum = True          # NETIF_F_RXCSUM (xennet_create_dev): trust the backend's data_validated

    def __init__(self, kernel, platform: XenPlatform, node: str) -> None:
        self.kernel = kernel
        self.platform = platform
        self.xen = platform.xen
        self.vcpu = kernel.vcpu
        self.mem = kernel.mem
        self.buf = kernel.mem.buf
        self.sim = kernel.sim
        self.stats = kernel.stats
        self.node = node
        self.stack = None
        self.tx_queue_stopped = self.poll_scheduled = self.connected = False
        self.broken = False                     # the backend broke the ring protocol: the device is dead
        self.state = x.XenbusStateInitialising
        self.backend, self.backend_id = None, 0
        self.tx_inflight: set[int] = set()
        # xennet_create_dev: TX checksum and TSO assumed until xennet_connect
        # learns what the backend offers (xennet_fix_features)
        self.offloads = frozenset(("tx_csum", "tso"))
        self.mac = bytes.fromhex(self.xen.xs_read(self.vcpu, f"{node}/mac").replace(":", ""))
        self._alloc()
        self._watch_otherend()

    # ---- live migration (xenbus_dev_resume, netfront_resume) -----------------------------------
    def rebind(self, vcpu, mem) -> None:
        """The same driver on the target's vCPU and memory; its hypercalls
        reach the Xen its platform now runs on."""
        self.vcpu, self.mem, self.buf, self.xen = vcpu, mem, mem.buf, self.platform.xen

    def resume(self) -> None:
        """netfront_resume: detach and xennet_disconnect_backend (TX requests
        not yet answered are released, lost with the old backend; RX
        buffers are reclaimed); then xenbus finds the backend again and
        watches it, and the handshake sets up new rings, grants and event
        channel.  No backend for this vif: it stays detached."""
        self.connected = False
        self.state = x.XenbusStateInitialising
        self.kernel.dropped("xennet_tx_released", n=len(self.tx_inflight))
        self.tx_inflight.clear()
        self._watch_otherend()

    def _watch_otherend(self) -> None:
        """talk_to_otherend + watch_otherend: the backend's path and domain, a watch on its state."""
        backend = self.xen.xs_read(self.vcpu, f"{self.node}/backend")
        backend_id = self.xen.xs_read(self.vcpu, f"{self.node}/backend-id")
        if backend is None or backend_id is None or not backend_id.isdigit():
            self.stats["xenbus_no_otherend"] += 1
            return
        self.backend, self.backend_id = backend, int(backend_id)
        self.xen.xs_watch(self.vcpu, f"{self.backend}/state", self._backend_changed)

    # ---- xenbus handshake ---------------------------------------------------------------------
    def _backend_changed(self, _path: str) -> None:
        self.vcpu.sync(self.sim.now)
        state = self.xen.xs_read(self.vcpu, f"{self.backend}/state")
        if state == str(x.XenbusStateInitWait) and self.state == x.XenbusStateInitialising:
            if self.xen.xs_read(self.vcpu, f"{self.backend}/feature-rx-copy") != "1":
                self.stats["xennet_backend_without_rx_copy"] += 1
                return
            self._setup()
            self._switch(x.XenbusStateInitialised)
        elif state == str(x.XenbusStateConnected) and self.state == x.XenbusStateInitialised:
            self._switch(x.XenbusStateConnected)
            self._fix_features()
            self.connected = True
            self._notify()                               # xennet_connect: kick the backend once
            self._wake_tx()
        elif state in (str(x.XenbusStateClosing), str(x.XenbusStateClosed)):
            self.connected = False

    def _fix_features(self) -> None:
        """xennet_fix_features at xennet_connect: scatter-gather only if the
        backend says feature-sg, TSO only with it and feature-gso-tcpv4;
        the stack keeps what ``ethtool -K`` asked of what is left."""
        def offered(key: str) -> bool:
            return self.xen.xs_read(self.vcpu, f"{self.backend}/{key}") == "1"

        tso = offered("feature-sg") and offered("feature-gso-tcpv4")
        self.offloads = frozenset(("tx_csum", "tso") if tso else ("tx_csum",))
        if self.stack is not None:
            self.stack.tso = self.stack.tso and tso

    def _switch(self, state: int) -> None:
        self.state = state
        self.xen.xs_write(self.vcpu, f"{self.node}/state", state)

    def _alloc(self) -> None:
        """The ring pages, TX buffers (two a page) and RX pages, and a grant
        reference for each; kept across reconnections."""
        alloc, platform = self.kernel.alloc, self.platform
        self.tx_ring, self.rx_ring = alloc.alloc(x.PAGE_SIZE), alloc.alloc(x.PAGE_SIZE)
        self.ring_refs = [platform.claim_ref(), platform.claim_ref()]
        pages = alloc.alloc(x.NET_TX_RING_SIZE * TX_BUFFER)
        self.tx_bufs = [pages + i * TX_BUFFER for i in range(x.NET_TX_RING_SIZE)]
        self.tx_refs = [platform.claim_ref() for _ in self.tx_bufs]
        size = GSO_PAGES * x.PAGE_SIZE
        pages = alloc.alloc(GSO_BUFFERS * size)
        self.gso_bufs = [pages + i * size for i in range(GSO_BUFFERS)]    # a GSO packet's pages (the skb's frags)
        pages = alloc.alloc(x.NET_RX_RING_SIZE * x.PAGE_SIZE)
        self.rx_pages = [pages + i * x.PAGE_SIZE for i in range(x.NET_RX_RING_SIZE)]
        self.rx_refs = [platform.claim_ref() for _ in self.rx_pages]

    def _setup(self) -> None:
        """setup_netfront + talk_to_netback: empty rings granted to the
        backend, an event channel, every RX buffer posted, then the keys the
        backend reads."""
        platform = self.platform
        for ring, ref in zip((self.tx_ring, self.rx_ring), self.ring_refs):
            x.shared_ring_init(self.buf, ring)
            self.mem.mark_dirty(ring, x.PAGE_SIZE)
            platform.grant(ref, self.backend_id, ring, readonly=False)
        self.port = self.xen.evtchn_alloc_unbound(self.vcpu, self.backend_id)
        platform.handlers[self.port] = self._interrupt
        self.broken = False                     # fresh rings
        self.tx_free = list(range(x.NET_TX_RING_SIZE - 1, -1, -1))
        self.tx_inflight.clear()
        self.tx_gso: dict[int, int] = {}        # TX id -> the GSO buffer its page belongs to
        self.gso_free = list(range(GSO_BUFFERS))
        self.gso_slots = [0] * GSO_BUFFERS      # slots of each GSO buffer's packet not yet answered
        self.tx_prod = self.tx_cons = 0
        self.rx_free = list(range(x.NET_RX_RING_SIZE - 1, -1, -1))
        self.rx_posted: set[int] = set()
        self.rx_ids = [0] * x.NET_RX_RING_SIZE  # the buffer posted at each ring index
        self.rx_prod = self.rx_cons = 0
        self._refill()
        for key, value in (("tx-ring-ref", self.ring_refs[0]), ("rx-ring-ref", self.ring_refs[1]),
                           ("event-channel", self.port), ("request-rx-copy", 1), ("feature-rx-notify", 1),
                           ("feature-sg", 1), ("feature-gso-tcpv4", 1)):
            self.xen.xs_write(self.vcpu, f"{self.node}/{key}", value)

    def _notify(self) -> None:
        self.xen.evtchn_send(self.vcpu, self.port)

    # ---- transmit ------------------------------------------------------------------------------
    def transmit(self, frame: bytes) -> bool:
        """xennet_start_xmit: grant the buffer read-only, push its request
        (a GSO packet: a request per page and its extra info), send the event
        only if the backend asked; reclaim what is done.  A frame whose TCP
        checksum the stack left (CHECKSUM_PARTIAL) says NETTXF_csum_blank
        and NETTXF_data_validated."""
        gso = getattr(frame, "gso_size", 0)
        if (self.broken or len(frame) > (x.XEN_NETIF_MAX_TX_SIZE if gso else TX_BUFFER)
                or gso and "tso" not in self.offloads):
            self.kernel.dropped("tx_dropped", frame)
            return True
        slots = -(-len(frame) // x.PAGE_SIZE) + 1 if gso else 1
        if (not self.connected or len(self.tx_free) < slots or gso and not self.gso_free
                or (self.tx_prod - self.tx_cons) & x.RING_IDX_MASK > x.NET_TX_RING_SIZE - slots):
            self.tx_queue_stopped = True
            return False
        if gso:
            self._queue_gso(frame, gso)
        else:
            slot = self.tx_free.pop()
            buf = self.tx_bufs[slot]
            self.mem.write(buf, frame)
            csum = x.NETTXF_csum_blank | x.NETTXF_data_validated if wants_csum(self.stack, frame) else 0
            self._tx_slot(slot, buf, csum, len(frame))
        self.mem.mark_dirty(self.tx_ring, 8)
        if x.push_and_check_notify(self.buf, self.tx_ring, x.REQ_PROD, x.REQ_EVENT, self.tx_prod):
            self._notify()
        self._tx_gc()
        return True

    def _tx_slot(self, slot: int, buf: int, flags: int, size: int) -> None:
        """Grant ``buf`` read-only under TX id ``slot`` and put its request at the producer."""
        self.platform.grant(self.tx_refs[slot], self.backend_id, buf, readonly=True)
        self.vcpu.charge("ring_op")
        self.mem.store(_TXREQ, self.tx_ring + x.RING_OFFSET + (self.tx_prod & TX_MASK) * x.TX_ENTRY,
                       self.tx_refs[slot], buf & (x.PAGE_SIZE - 1), flags, slot, size)
        self.tx_inflight.add(slot)
        self.tx_prod = (self.tx_prod + 1) & x.RING_IDX_MASK

    def _queue_gso(self, frame: bytes, gso_size: int) -> None:
        """A GSO packet in one of the GSO buffers, a slot a page: the first
        with the packet's size and NETTXF_extra_info, then the
        netif_extra_info slot (XEN_NETIF_EXTRA_TYPE_GSO: gso.size, TCPV4),
        then the rest, NETTXF_more_data on all but the last
        (xennet_make_txreqs)."""
        b = self.gso_free.pop()
        base = self.gso_bufs[b]
        self.mem.write(base, frame)
        pages = -(-len(frame) // x.PAGE_SIZE)
        self.gso_slots[b] = pages
        for i in range(pages):
            slot = self.tx_free.pop()
            self.tx_gso[slot] = b
            more = x.NETTXF_more_data if i + 1 < pages else 0
            if i:
                self._tx_slot(slot, base + i * x.PAGE_SIZE, more, min(x.PAGE_SIZE, len(frame) - i * x.PAGE_SIZE))
                continue
            self._tx_slot(slot, base, x.NETTXF_csum_blank | x.NETTXF_data_validated | x.NETTXF_extra_info | more,
                          len(frame))
            self.vcpu.charge("ring_op")
            self.mem.store(_EXTRA.struct, self.tx_ring + x.RING_OFFSET + (self.tx_prod & TX_MASK) * x.TX_ENTRY,
                           x.XEN_NETIF_EXTRA_TYPE_GSO, 0, gso_size, x.XEN_NETIF_GSO_TYPE_TCPV4, 0, 0)
            self.tx_prod = (self.tx_prod + 1) & x.RING_IDX_MASK

    def _tx_gc(self) -> None:
        """xennet_tx_buf_gc: take TX responses, end their grants, free the
        slots; re-arm rsp_event; wake the queue if it was stopped."""
        for _ in range(2):                        # once, and once more if responses raced the re-arm
            prod = _U32(self.buf, self.tx_ring + x.RSP_PROD)[0]
            if (prod - self.tx_cons) & x.RING_IDX_MASK > x.NET_TX_RING_SIZE:
                self._broke("xennet_bad_tx_rsp_prod")
                return
            while self.tx_cons != prod:
                self.vcpu.charge("ring_op")
                rid, status = x.TX_RESPONSE.unpack_from(self.buf, self.tx_ring + x.RING_OFFSET
                                                        + (self.tx_cons & TX_MASK) * x.TX_ENTRY)
                self.tx_cons = (self.tx_cons + 1) & x.RING_IDX_MASK
                if status == x.NETIF_RSP_NULL or rid not in self.tx_inflight:
                    continue
                self.tx_inflight.discard(rid)
                if not self.platform.end_grant(self.tx_refs[rid]):
                    self.stats["xennet_grant_still_in_use"] += 1
                    continue
                self.tx_free.append(rid)
                b = self.tx_gso.pop(rid, None)
                if b is not None:
                    self.gso_slots[b] -= 1
                    if not self.gso_slots[b]:       # the packet's last page answered: the skb is freed
                        self.gso_free.append(b)
                if status != x.NETIF_RSP_OKAY:
                    self.stats["tx_errors"] += 1
            self.mem.mark_dirty(self.tx_ring, 16)
            if not x.final_check(self.buf, self.tx_ring, x.RSP_PROD, x.RSP_EVENT, self.tx_cons):
                break
        self._wake_tx()

    def _wake_tx(self) -> None:
        if self.tx_queue_stopped and self.tx_free and self.connected:
            self.tx_queue_stopped = False
            self.stack.tx_wake()

    # ---- receive ----------------------------------------------------------------------------------
    def _interrupt(self) -> None:
        """xennet_interrupt: TX completions now, RX in a NAPI poll."""
        if not self.connected or self.broken:
            return
        self._tx_gc()
        if not self.poll_scheduled and _U32(self.buf, self.rx_ring + x.RSP_PROD)[0] != self.rx_cons:
            self.poll_scheduled = True
            self.kernel.run_soon(self._poll)

    def _poll(self) -> None:
        """xennet_poll: up to NAPI_WEIGHT responses, refill, complete or go on."""
        self.poll_scheduled = False
        if not self.connected or self.broken:
            return
        done = self._receive(NAPI_WEIGHT)
        if self.broken:
            return
        self._refill()
        self.mem.mark_dirty(self.rx_ring, 16)
        if done < NAPI_WEIGHT and not x.final_check(self.buf, self.rx_ring, x.RSP_PROD, x.RSP_EVENT, self.rx_cons):
            return
        self.poll_scheduled = True
        self.kernel.run_soon(self._poll)

    def _receive(self, budget: int) -> int:
        """Up to ``budget`` packets off the RX ring."""
        prod = _U32(self.buf, self.rx_ring + x.RSP_PROD)[0]
        if (prod - self.rx_cons) & x.RING_IDX_MASK > x.NET_RX_RING_SIZE:
            self._broke("xennet_bad_rx_rsp_prod")
            return 0
        done = 0
        while self.rx_cons != prod and done < budget:
            self._receive_packet(prod)
            done += 1
        return done

    def _receive_packet(self, prod: int) -> None:
        """xennet_get_responses: the first slot, its extra info
        (xennet_get_extras, NETRXF_extra_info), the rest while
        NETRXF_more_data (xennet_fill_frags); a bad slot, a chain past the
        producer or longer than XEN_NETIF_NR_SLOTS_MIN, or a bad GSO extra
        (xennet_set_skb_gso) drops the packet (rx_errors).  A GSO packet goes
        up whole with its gso_size; NETRXF_csum_blank is CHECKSUM_PARTIAL
        and NETRXF_data_validated CHECKSUM_UNNECESSARY, both unchecked."""
        flags, data = self._rx_slot()
        pieces, gso, ok = [data], 0, data is not None
        more = flags & x.NETRXF_extra_info
        while more:
            if self.rx_cons == prod:
                ok = more = False
                break
            kind, eflags, gso, gso_type, _, _ = self._rx_extra()
            ok = ok and kind == x.XEN_NETIF_EXTRA_TYPE_GSO and gso > 0 and gso_type == x.XEN_NETIF_GSO_TYPE_TCPV4
            more = eflags & x.XEN_NETIF_EXTRA_FLAG_MORE
        more = flags & x.NETRXF_more_data
        while more:
            if self.rx_cons == prod or len(pieces) >= x.XEN_NETIF_NR_SLOTS_MIN:
                ok = False
                break
            more, data = self._rx_slot()
            more &= x.NETRXF_more_data
            pieces.append(data)
            ok = ok and data is not None
        frame = pieces[0] if ok and len(pieces) == 1 else b"".join(pieces) if ok else b""
        if gso and ok and len(frame) > ETH_HLEN + 40 and frame[12:14] == b"\x08\x00" and frame[23] == 6:
            frame = GsoFrame.of(frame, gso)
        elif gso:
            ok = False
        if not ok:
            self.stats["rx_errors"] += 1
            return
        self.stack.receive(frame, bool(flags & x.NETRXF_csum_blank)
                           or self.rx_csum and bool(flags & x.NETRXF_data_validated))

    def _rx_slot(self) -> tuple[int, bytes | None]:
        """The response at the consumer: its buffer's grant ended and the
        buffer freed for the refill; its flags, and its data (None if the
        response is bad)."""
        self.vcpu.charge("ring_op")
        rid, offset, flags, status = x.RX_RESPONSE.unpack_from(
            self.buf, self.rx_ring + x.RING_OFFSET + (self.rx_cons & RX_MASK) * x.RX_ENTRY)
        self.rx_cons = (self.rx_cons + 1) & x.RING_IDX_MASK
        if rid not in self.rx_posted or not self.platform.end_grant(self.rx_refs[rid]):
            return flags, None
        self.rx_posted.discard(rid)
        self.rx_free.append(rid)
        if status <= 0 or offset + status > x.PAGE_SIZE:
            return flags, None
        return flags, self.mem.read(self.rx_pages[rid] + offset, status)

    def _rx_extra(self) -> tuple:
        """The netif_extra_info in the response at the consumer; the buffer
        posted at that index goes back (xennet_move_rx_slot)."""
        self.vcpu.charge("ring_op")
        index = self.rx_cons & RX_MASK
        extra = _EXTRA.unpack_from(self.buf, self.rx_ring + x.RING_OFFSET + index * x.RX_ENTRY)
        self.rx_cons = (self.rx_cons + 1) & x.RING_IDX_MASK
        rid = self.rx_ids[index]
        if rid in self.rx_posted and self.platform.end_grant(self.rx_refs[rid]):
            self.rx_posted.discard(rid)
            self.rx_free.append(rid)
        return extra

    def _broke(self, why: str) -> None:
        """RING_RESPONSE_PROD_OVERFLOW: "Illegal number of responses"; Linux
        marks the device broken and stops using it (no poll, no upcall work,
        transmits dropped) rather than trust the ring again."""
        self.stats[why] += 1
        self.broken = True

    def _refill(self) -> None:
        """xennet_alloc_rx_buffers: grant every free page writable, post it, push."""
        if not self.rx_free:
            return
        while self.rx_free:
            rid = self.rx_free.pop()
            self.platform.grant(self.rx_refs[rid], self.backend_id, self.rx_pages[rid], readonly=False)
            self.vcpu.charge("ring_op")
            self.mem.store(_RXREQ, self.rx_ring + x.RING_OFFSET + (self.rx_prod & RX_MASK) * x.RX_ENTRY,
                           rid, self.rx_refs[rid])
            self.rx_ids[self.rx_prod & RX_MASK] = rid
            self.rx_posted.add(rid)
            self.rx_prod = (self.rx_prod + 1) & x.RING_IDX_MASK
        self.mem.mark_dirty(self.rx_ring, 8)
        if x.push_and_check_notify(self.buf, self.rx_ring, x.REQ_PROD, x.REQ_EVENT, self.rx_prod) and self.connected:
            self._notify()
