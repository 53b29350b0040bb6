"""Xen netback: one vif's backend in dom0 (Linux drivers/net/xen-netback).

It maps the frontend's granted TX and RX rings, binds the frontend's event
channel and bridges frames through a port on the host switch, all on a
dom0 vCPU (charged to the frontend's account).  TX: a NAPI-style poll
consumes requests, grant-copies the round's frames out of the frontend's
pages into dom0 in one GNTTABOP_copy batch, sends them on and answers; it
polls again once that work is done, and only a poll that finds the ring
empty re-arms req_event, so a frontend does not notify a running backend.
RX: frames from the switch are grant-copied into the buffers the frontend
posted, in one batch per wake-up.  Responses are pushed with
RING_PUSH_RESPONSES_AND_CHECK_NOTIFY; requests are re-armed with
RING_FINAL_CHECK_FOR_REQUESTS.

Offloads (netif.h, negotiated in xenstore): the backend offers
``feature-sg`` and ``feature-gso-tcpv4``, so a frontend may send a packet
as a chain of slots (NETTXF_more_data; the first slot's size is the
packet's) with a netif_extra_info slot of type GSO after the first
(NETTXF_extra_info): netback copies each slot's page and sends the packet
to the switch whole with its gso_size, to be segmented where it leaves.
NETTXF_csum_blank asks it to fill the TCP checksum.  A frontend that
writes ``feature-sg`` and ``feature-gso-tcpv4`` itself receives packets
over several slots (NETRXF_more_data) and GSO packets whole, with their
extra info; to any other the bridge hands MTU-sized frames.

A frontend that names a bad grant gets NETIF_RSP_ERROR for that request
(Xen refused the copy: nothing was touched), as does a packet of too many
slots or whose slots add up to more than it (dropped and counted); one
whose producer runs more than a ring ahead, whose request crosses its page,
whose chain runs past the producer or past FATAL_SKB_SLOTS, or whose extra
info has an unknown type, a GSO size of 0 or a GSO type not offered, is
disconnected (xenvif_fatal_tx_err) and served no more.  The port contract
is the one a tap device model has: ``can_receive``, ``receive``,
``port.send``/``flush``.
"""

from __future__ import annotations

from collections import Counter

from ..sim.resource import Resource
from ..spec import xen as x
from ..spec.ethernet import ETH_HLEN
from .offload import TCP_CHECK, TCP_MIN_MSS, complete_checksum, is_tcpv4
from .registry import DeviceEntry

NAPI_WEIGHT = 64                    # XENVIF_NAPI_WEIGHT
MAX_PENDING_REQS = 256              # TX slots in flight: the copy ops and dom0 pages of a round
RX_BATCH = 64                       # copy ops per RX flush (COPY_BATCH_SIZE)
FATAL_SKB_SLOTS = 20                # FATAL_SKB_SLOTS_DEFAULT: a longer chain is fatal
LEGACY_SLOTS_MAX = x.XEN_NETIF_NR_SLOTS_MIN     # XEN_NETBK_LEGACY_SLOTS_MAX: a longer chain is dropped
ETH_FRAME_LEN = ETH_HLEN + 1500     # the vif's MTU with its Ethernet header
TX_MASK, RX_MASK = x.NET_TX_RING_SIZE - 1, x.NET_RX_RING_SIZE - 1
_TXREQ = x.NETIF_TX_REQUEST.unpack_from
_RXREQ = x.NETIF_RX_REQUEST.unpack_from
_EXTRA = x.NETIF_EXTRA_INFO.unpack_from
_EXTRA_STRUCT = x.NETIF_EXTRA_INFO.struct
_U32 = x.U32.unpack_from
_I16 = x.I16.unpack_from


class XenNetback:
    NAME = "xen-netfront"               # the catalogue's name: the device the guest sees
    VMSTATE = None
    MIGRATION_BLOCKER = "netback keeps no state to move: the frontend reconnects to a new backend on the target"

    def __init__(self, xen, kernel, cpu: Resource, path: str, frontend_domid: int, acct: Counter) -> None:
        self.xen = xen
        self.kernel = kernel                # dom0's: memory, upcall dispatch
        self.cpu = cpu                      # the dom0 vCPU this vif's work runs on
        self.sim = xen.sim
        self.path = path
        self.frontend_domid = frontend_domid
        self.acct = acct
        self.port = None                    # the switch port, attached by the hypervisor
        self.stats: Counter[str] = Counter()
        self.place = f"dom0/vif{frontend_domid}"   # where its drops are counted
        self.connected = self.disabled = False
        self.tx_scheduled = False
        self.evtchn = 0
        self.tx = self.rx = None
        self.tx_cons = self.tx_rsp = self.rx_cons = self.rx_rsp = 0
        self.rx_pending: list[tuple[int, int, int, int]] = []    # (request id, op, length, flags) per slot
        self.rx_staged = 0                  # RX copy ops staged for the flush
        self.rx_sg = False                  # the frontend's feature-sg: a packet may take several RX slots
        self.takes_gso = False              # GSO packets handed over whole (its tap's TUN_F_TSO4)
        self.dom0_mem = kernel.vm.mem
        pages = MAX_PENDING_REQS + RX_BATCH         # TX staging, then RX staging: a page a copy op
        self.ops = kernel.alloc(pages * x.GNTTAB_COPY.size)
        base = kernel.alloc(pages * x.PAGE_SIZE)
        self.pages = [base + i * x.PAGE_SIZE for i in range(pages)]
        self._probe()

    # ---- xenbus (drivers/net/xen-netback/xenbus.c) ----------------------------------------
    def _probe(self) -> None:
        vcpu = self.kernel.vcpu
        self.frontend = self.xen.xs_read(vcpu, f"{self.path}/frontend")
        for key, value in (("feature-sg", 1), ("feature-gso-tcpv4", 1), ("feature-rx-copy", 1),
                           ("feature-rx-flip", 0), ("state", x.XenbusStateInitWait)):
            self.xen.xs_write(vcpu, f"{self.path}/{key}", value)
        self.xen.xs_watch(vcpu, f"{self.frontend}/state", self._frontend_changed)

    def _frontend_changed(self, _path: str) -> None:
        vcpu = self.kernel.vcpu
        vcpu.sync(self.sim.now)
        state = _int(self.xen.xs_read(vcpu, f"{self.frontend}/state"))
        if state in (x.XenbusStateInitialised, x.XenbusStateConnected) and not self.connected:
            self._connect(vcpu)
        elif state in (x.XenbusStateClosing, x.XenbusStateClosed) and self.connected:
            self._disconnect(vcpu)

    def _connect(self, vcpu: Resource) -> None:
        """Map the rings, bind the event channel, go Connected; any failure is
        xenbus_dev_fatal: the backend closes."""
        def read(key: str) -> int | None:
            return _int(self.xen.xs_read(vcpu, f"{self.frontend}/{key}"))

        refs = read("tx-ring-ref"), read("rx-ring-ref")
        maps = [self.xen.grant_map(vcpu, self.frontend_domid, ref, False) for ref in refs if ref is not None]
        port = self.xen.evtchn_bind_interdomain(vcpu, self.frontend_domid, read("event-channel") or 0)
        if len(maps) != 2 or any(status for status, _ in maps) or port < 0 or read("request-rx-copy") != 1:
            for status, page in maps:
                if not status:
                    self.xen.grant_unmap(vcpu, page)
            if port > 0:
                self.xen.evtchn_close(vcpu, port)
            self.stats["connect_failed"] += 1
            self.xen.xs_write(vcpu, f"{self.path}/state", x.XenbusStateClosing)
            return
        (_, self.tx), (_, self.rx) = maps
        # read_xenbus_vif_flags and xenvif_fix_features: RX slots per packet
        # with the frontend's feature-sg; GSO packets handed over whole only
        # with its feature-gso-tcpv4, SG and checksum offload (TSO needs both)
        self.rx_sg = read("feature-sg") == 1
        self.takes_gso = self.rx_sg and read("feature-gso-tcpv4") == 1 and read("feature-no-csum-offload") != 1
        self.evtchn = port
        self.kernel.handlers[port] = self._interrupt
        self.connected = True
        self.xen.xs_write(vcpu, f"{self.path}/state", x.XenbusStateConnected)

    def _disconnect(self, vcpu: Resource) -> None:
        self.connected = False
        self.kernel.handlers.pop(self.evtchn, None)
        self.xen.evtchn_close(vcpu, self.evtchn)
        for page in (self.tx, self.rx):
            self.xen.grant_unmap(vcpu, page)
        self.xen.xs_write(vcpu, f"{self.path}/state", x.XenbusStateClosed)

    def remove(self) -> None:
        """netback_remove, once the toolstack deletes the vif: stop watching
        the frontend, disconnect (rings unmapped, event channel closed) and
        unregister the interface, whose bridge port goes with it."""
        vcpu = self.kernel.vcpu
        vcpu.sync(self.sim.now)
        self.xen.xs_unwatch(vcpu, f"{self.frontend}/state", self._frontend_changed)
        if self.connected:
            self._disconnect(vcpu)
        self.port.close()

    def _drop(self, why: str, frame: bytes | None = None) -> None:
        self.stats[why] += 1
        self.sim.drops.count(f"{self.place}/{why}", frame)

    def _fatal(self, reason: str) -> None:
        """xenvif_fatal_tx_err: the frontend broke the protocol; carrier off for good."""
        self.stats[reason] += 1
        self.stats["fatal_tx_err"] += 1
        self.disabled = True

    @property
    def running(self) -> bool:
        return self.connected and not self.disabled

    # ---- events ----------------------------------------------------------------------------
    def _interrupt(self) -> None:
        """xenvif_interrupt (on dom0 vCPU 0): TX work for NAPI, RX room for the RX thread."""
        at = self.kernel.vcpu.cursor
        if not self.tx_scheduled:
            self.tx_scheduled = True
            self.sim.at(at, self._tx_poll)
        self.port.flush(self.kernel.vcpu)

    def _push(self, cpu: Resource, ring, prod: int) -> None:
        """RING_PUSH_RESPONSES_AND_CHECK_NOTIFY, and the event if the frontend asked."""
        notify = x.push_and_check_notify(ring.buf, ring.base, x.RSP_PROD, x.RSP_EVENT, prod)
        ring.mem.mark_dirty(ring.base + x.RSP_PROD, 4)     # a store into the frontend's page: dirty-logged
        if notify:
            self.xen.evtchn_send(cpu, self.evtchn, acct=self.acct)

    @staticmethod
    def _final_check(ring, cons: int) -> bool:
        """RING_FINAL_CHECK_FOR_REQUESTS; it may store req_event in the frontend's page."""
        more = x.final_check(ring.buf, ring.base, x.REQ_PROD, x.REQ_EVENT, cons)
        ring.mem.mark_dirty(ring.base + x.REQ_EVENT, 4)
        return more

    # ---- TX: frontend -> switch (netback.c xenvif_tx_action) ----------------------------------
    def _held(self, retry) -> bool:
        """The frontend's domain is paused (a migration's stop-and-copy): its
        rings wait, untouched, until it runs again."""
        vm = self.port.vm
        if vm.paused:
            vm.when_resumed(retry)
        return vm.paused

    def _tx_poll(self) -> None:
        self.tx_scheduled = False
        if self._held(self._tx_poll):
            return
        cpu = self.cpu
        if cpu.cursor < self.sim.now and cpu is not self.kernel.vcpu:
            cpu.sync(self.sim.now)
            cpu.charge("wakeup", acct=self.acct)
        cpu.sync(self.sim.now)
        if not self.running:
            return
        # The round's requests are done at the cursor, not now: NAPI polls
        # again then, and only a poll that finds the ring empty completes and
        # re-arms req_event (xenvif_poll: napi_complete_done, then
        # xenvif_napi_schedule_or_enable_events).  Until then the frontend
        # sends no event for what it adds: the next round takes it.
        done = self._tx_action(cpu, NAPI_WEIGHT)
        if self.running and (done or self._final_check(self.tx, self.tx_cons)):
            self.tx_scheduled = True
            self.sim.at(cpu.cursor, self._tx_poll)

    def _tx_action(self, cpu: Resource, budget: int) -> int:
        """xenvif_tx_build_gops, one GNTTABOP_copy for the round, then
        xenvif_tx_submit: up to ``budget`` packets, while the staging pages
        (MAX_PENDING_REQS) can take one more of the most slots; every slot
        is answered.  Returns the packets taken."""
        buf, base = self.tx.buf, self.tx.base
        prod = _U32(buf, base + x.REQ_PROD)[0]
        if (prod - self.tx_cons) & x.RING_IDX_MASK > x.NET_TX_RING_SIZE:
            self._fatal("tx_impossible_requests")
            return 0
        packets: list[tuple] = []
        ops = taken = 0
        while self.tx_cons != prod and taken < budget and ops + FATAL_SKB_SLOTS <= MAX_PENDING_REQS:
            taken += 1
            packet = self._tx_packet(cpu, prod, ops)
            if packet is None:
                break
            packets.append(packet)
            if packet[1] >= 0:
                ops += len(packet[0])
        statuses = self._copy(cpu, 0, ops)
        for packet in packets:
            self._tx_submit(cpu, packet, statuses)
        if packets:
            self._push(cpu, self.tx, self.tx_rsp)
        return taken

    def _tx_request(self, cpu: Resource, index: int, unpack=_TXREQ) -> tuple:
        """RING_COPY_REQUEST: one read of the shared slot (a request, or a
        netif_extra_info in its place), then only the copy is used."""
        cpu.charge("ring_op", acct=self.acct)
        self.tx_cons = (index + 1) & x.RING_IDX_MASK
        return unpack(self.tx.buf, self.tx.base + x.RING_OFFSET + (index & TX_MASK) * x.TX_ENTRY)

    def _tx_packet(self, cpu: Resource, prod: int, op: int) -> tuple | None:
        """One packet's slots (xenvif_tx_build_gops): the first request, its
        extra info, the rest of its chain; a copy op staged from ``op`` on
        for each slot, into a page of dom0's.  (requests, first op or -1 for
        a packet answered with errors, extra slots, first flags, gso_size);
        None once the frontend broke the protocol."""
        first = self._tx_request(cpu, self.tx_cons)
        extras: dict[int, tuple[int, int]] = {}
        if first[2] & x.NETTXF_extra_info and not self._tx_extras(cpu, prod, extras):
            return None
        chain = self._tx_chain(cpu, prod, first)
        if chain is None:
            return None
        rest, size, drop = chain
        gref, offset, flags, rid, _ = first
        reqs = [(gref, offset, flags, rid, size), *rest]
        if drop is None and size < ETH_HLEN:
            drop = "tx_bad_size"
        if drop is not None:
            self._drop(drop)
            return reqs, -1, len(extras), flags, 0
        if offset + size > x.PAGE_SIZE:
            self._fatal("tx_cross_page")
            return None
        gso_size, gso_type = extras.get(x.XEN_NETIF_EXTRA_TYPE_GSO, (0, x.XEN_NETIF_GSO_TYPE_TCPV4))
        if x.XEN_NETIF_EXTRA_TYPE_GSO in extras and not gso_size:       # xenvif_set_skb_gso
            self._fatal("tx_gso_size_zero")
            return None
        if gso_type != x.XEN_NETIF_GSO_TYPE_TCPV4:                       # the one type offered
            self._fatal("tx_bad_gso_type")
            return None
        for i, (gref, offset, _, _, length) in enumerate(reqs):
            self._stage_copy(op + i, (gref, self.frontend_domid, offset),
                             (self.pages[op + i] >> x.PAGE_SHIFT, x.DOMID_SELF, 0), length, x.GNTCOPY_source_gref)
        return reqs, op, len(extras), flags, gso_size

    def _tx_extras(self, cpu: Resource, prod: int, extras: dict) -> bool:
        """xenvif_get_extras: netif_extra_info slots while FLAG_MORE, each
        kept by its type (only GSO is acted on: multicast control and hashes
        were not offered); a missing slot or an unknown type is fatal."""
        more = True
        while more:
            if self.tx_cons == prod:
                self._fatal("tx_missing_extra")
                return False
            kind, eflags, gso_size, gso_type, _, _ = self._tx_request(cpu, self.tx_cons, _EXTRA)
            if not x.XEN_NETIF_EXTRA_TYPE_NONE < kind < x.XEN_NETIF_EXTRA_TYPE_MAX:
                self._fatal("tx_bad_extra_type")
                return False
            extras[kind] = (gso_size, gso_type)
            more = eflags & x.XEN_NETIF_EXTRA_FLAG_MORE
        return True

    def _tx_chain(self, cpu: Resource, prod: int, first: tuple) -> tuple[list, int, str | None] | None:
        """xenvif_count_requests: the requests after ``first`` while
        NETTXF_more_data, and what of the first's size (the packet's) is left
        for its own slot.  A chain past the producer, of FATAL_SKB_SLOTS more
        slots, or with a slot crossing its page is fatal (None); one of
        XEN_NETBK_LEGACY_SLOTS_MAX more, or whose slots add up to more than
        the packet, is taken to its end and dropped (the reason)."""
        rest: list[tuple] = []
        drop, size, flags = None, first[4], first[2]
        while flags & x.NETTXF_more_data:
            if self.tx_cons == prod or len(rest) >= FATAL_SKB_SLOTS:
                self._fatal("tx_bad_chain")
                return None
            if drop is None and len(rest) >= LEGACY_SLOTS_MAX:
                drop = "tx_too_many_slots"
            req = self._tx_request(cpu, self.tx_cons)
            if drop is None and req[4] > size:
                drop = "tx_bad_size"
            size = (size - req[4]) & 0xFFFF
            if req[1] + req[4] > x.PAGE_SIZE:
                self._fatal("tx_cross_page")
                return None
            rest.append(req)
            flags = req[2]
        return rest, size, drop

    def _tx_submit(self, cpu: Resource, packet: tuple, statuses: list[int]) -> None:
        """xenvif_tx_check_gop and xenvif_tx_submit: a slot whose copy
        failed fails its packet; otherwise the packet is put together from
        its pages and sent.  Every slot answered, an extra with NULL."""
        reqs, op, extras, flags, gso_size = packet
        status = x.NETIF_RSP_ERROR
        if op >= 0:
            if any(statuses[op + i] != x.GNTST_okay for i in range(len(reqs))):
                self._drop("tx_grant_errors")
            else:
                status = x.NETIF_RSP_OKAY
                buf = self.dom0_mem.buf
                frame = b"".join(buf[self.pages[op + i]:self.pages[op + i] + req[4]] for i, req in enumerate(reqs))
                self._tx_send(cpu, frame, flags, gso_size)
        self._tx_respond(cpu, reqs[0][3], status)
        for _ in range(extras):
            self._tx_respond(cpu, 0, x.NETIF_RSP_NULL)
        for req in reqs[1:]:
            self._tx_respond(cpu, req[3], status)

    def _tx_send(self, cpu: Resource, frame: bytes, flags: int, gso_size: int) -> None:
        """A GSO packet goes to the switch whole with its gso_size (skb_shinfo),
        segmented where it leaves; one with NETTXF_csum_blank gets its TCP
        checksum filled (checksum_setup: CHECKSUM_PARTIAL, completed by the
        NIC it leaves through, as virtio's NEEDS_CSUM is); a frame longer
        than the MTU without GSO is dropped as the bridge drops it
        (is_skb_forwardable)."""
        if gso_size:
            if gso_size < TCP_MIN_MSS or not is_tcpv4(frame):
                self._drop("tx_bad_gso", frame)
                return
            self.port.send(cpu, frame, gso_size)
        elif len(frame) > ETH_FRAME_LEN:
            self._drop("tx_oversize", frame)
            return
        else:
            if flags & x.NETTXF_csum_blank:
                if not is_tcpv4(frame):
                    self._drop("tx_bad_csum", frame)
                    return
                l4 = ETH_HLEN + (frame[ETH_HLEN] & 0xF) * 4
                frame = complete_checksum(frame, l4, l4 + TCP_CHECK)
            self.port.send(cpu, frame)
        self.stats["tx_frames"] += 1

    def _tx_respond(self, cpu: Resource, rid: int, status: int) -> None:
        cpu.charge("ring_op", acct=self.acct)
        at = self.tx.base + x.RING_OFFSET + (self.tx_rsp & TX_MASK) * x.TX_ENTRY
        self.tx.mem.store(x.TX_RESPONSE, at, rid, status)
        self.tx_rsp = (self.tx_rsp + 1) & x.RING_IDX_MASK

    # ---- grant copies ---------------------------------------------------------------------------
    def _stage_copy(self, i: int, source: tuple, dest: tuple, length: int, flags: int) -> None:
        """Write struct gnttab_copy ``i`` of the batch into dom0 memory."""
        self.dom0_mem.store(x.GNTTAB_COPY.struct, self.ops + i * x.GNTTAB_COPY.size,
                            *source, *dest, length, flags, 0)

    def _copy(self, cpu: Resource, first: int, count: int) -> list[int]:
        """One GNTTABOP_copy hypercall for ops first..first+count; their statuses."""
        if not count:
            return []
        ops, size = self.ops + first * x.GNTTAB_COPY.size, x.GNTTAB_COPY.size
        if self.xen.grant_copy(cpu, ops, count, acct=self.acct):
            return [x.GNTST_general_error] * count
        return [_I16(self.dom0_mem.buf, ops + i * size + x.GNTTAB_COPY_STATUS)[0] for i in range(count)]

    # ---- RX: switch -> frontend (netback/rx.c) --------------------------------------------------
    def can_receive(self, size: int) -> bool:
        """The frontend has posted the requests a frame of ``size`` takes
        (xenvif_rx_ring_slots_available: a slot a page, one more for a GSO
        packet's extra info; a frame longer than the MTU is one), and this
        wake-up's staging pages can take it; else ask to be told of the next
        request (req_event = prod + 1) and look again."""
        pages = -(-size // x.PAGE_SIZE)
        if not self.running or self.rx_staged + pages > RX_BATCH:
            return False
        buf, base = self.rx.buf, self.rx.base
        prod = _U32(buf, base + x.REQ_PROD)[0]
        if (prod - self.rx_cons) & x.RING_IDX_MASK > x.NET_RX_RING_SIZE:
            self._fatal("rx_impossible_requests")
            return False
        need = pages + (size > ETH_FRAME_LEN)
        if (prod - self.rx_cons) & x.RING_IDX_MASK >= need:
            return True
        self.rx.mem.store(x.U32, base + x.REQ_EVENT, (prod + 1) & x.RING_IDX_MASK)
        return (_U32(buf, base + x.REQ_PROD)[0] - self.rx_cons) & x.RING_IDX_MASK >= need

    def _rx_request(self, cpu: Resource) -> tuple[int, int]:
        """The frontend's next RX request: (id, gref)."""
        cpu.charge("ring_op", acct=self.acct)
        req = _RXREQ(self.rx.buf, self.rx.base + x.RING_OFFSET + (self.rx_cons & RX_MASK) * x.RX_ENTRY)
        self.rx_cons = (self.rx_cons + 1) & x.RING_IDX_MASK
        return req

    def receive(self, cpu: Resource, frame: bytes) -> None:
        """xenvif_rx_skb: ``frame`` a page a slot, each slot the frontend's
        next request (NETRXF_more_data on all but the last); a GSO packet's
        first slot says NETRXF_extra_info and the next one is its
        netif_extra_info (gso.size, TCPV4).  The copies join the batch
        flushed once this wake-up has taken what it can."""
        size = len(frame)
        if size > x.PAGE_SIZE and not self.rx_sg:
            self._drop("rx_oversize", frame)             # the frontend takes one slot a frame
            return
        if not self.rx_pending:
            self.sim.at(cpu.cursor, self._rx_flush, cpu)
        gso = getattr(frame, "gso_size", 0)
        # xenvif_rx_data_slot: a GSO packet is CHECKSUM_PARTIAL (csum_blank, its
        # data validated); a checksum the host's NIC validated is data_validated
        flags = (x.NETRXF_csum_blank | x.NETRXF_data_validated | x.NETRXF_extra_info if gso
                 else x.NETRXF_data_validated if getattr(frame, "csum_valid", False) else 0)
        for at in range(0, size, x.PAGE_SIZE):
            length = min(x.PAGE_SIZE, size - at)
            rid, gref = self._rx_request(cpu)
            op = self.rx_staged
            page = self.pages[MAX_PENDING_REQS + op]
            self.dom0_mem.buf[page : page + length] = frame[at : at + length]     # the skb, already in dom0 memory
            self._stage_copy(MAX_PENDING_REQS + op, (page >> x.PAGE_SHIFT, x.DOMID_SELF, 0),
                             (gref, self.frontend_domid, 0), length, x.GNTCOPY_dest_gref)
            self.rx_staged += 1
            self.rx_pending.append((rid, op, length, flags | (x.NETRXF_more_data if at + length < size else 0)))
            if gso and not at:
                self.rx_pending.append((self._rx_request(cpu)[0], -1, gso, 0))     # xenvif_rx_extra_slot
            flags = 0

    def _rx_flush(self, cpu: Resource) -> None:
        if self._held(lambda: self._rx_flush(cpu)):
            return
        pending, self.rx_pending = self.rx_pending, []
        staged, self.rx_staged = self.rx_staged, 0
        if not self.running:
            return
        cpu.sync(self.sim.now)
        statuses = self._copy(cpu, MAX_PENDING_REQS, staged)
        mem = self.rx.mem
        for rid, op, length, flags in pending:
            cpu.charge("ring_op", acct=self.acct)
            at = self.rx.base + x.RING_OFFSET + (self.rx_rsp & RX_MASK) * x.RX_ENTRY
            self.rx_rsp = (self.rx_rsp + 1) & x.RING_IDX_MASK
            if op < 0:
                mem.store(_EXTRA_STRUCT, at, x.XEN_NETIF_EXTRA_TYPE_GSO, 0, length, x.XEN_NETIF_GSO_TYPE_TCPV4, 0, 0)
                continue
            ok = statuses[op] == x.GNTST_okay
            if not ok:
                self._drop("rx_grant_errors")
            elif not flags & x.NETRXF_more_data:
                self.stats["rx_frames"] += 1
            mem.store(x.RX_RESPONSE, at, rid, 0, flags, length if ok else x.NETIF_RSP_ERROR)
        self._push(cpu, self.rx, self.rx_rsp)
        self.port.flush(cpu)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


DEVICE = DeviceEntry(XenNetback, "paravirt", "Xen PV netif (shared rings, grant tables, event channels)",
                     ("Xen",), "xen_netfront", hypervisor="xen",
                     offloads=("scatter-gather", "tx-checksum-ipv4", "tx-tcp-segmentation", "rx-checksum"))
