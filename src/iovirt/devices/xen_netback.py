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

A frontend that names a bad grant gets NETIF_RSP_ERROR for that request
(Xen refused the copy: nothing was touched); one whose producer runs more
than a ring ahead, or whose request crosses its page, is disconnected
(xenvif_fatal_tx_err) and served no more.  The port contract is the one a
tap device model has: ``can_receive``, ``receive``, ``port.send``/``flush``.
"""

from __future__ import annotations

from collections import Counter

from ..sim.resource import Resource
from ..spec import xen as x
from ..spec.ethernet import ETH_HLEN
from .registry import DeviceEntry

NAPI_WEIGHT = 64                    # XENVIF_NAPI_WEIGHT
RX_BATCH = 64                       # copy ops per RX flush (COPY_BATCH_SIZE)
FATAL_SKB_SLOTS = 20                # FATAL_SKB_SLOTS_DEFAULT: a longer chain is fatal
TX_MASK, RX_MASK = x.NET_TX_RING_SIZE - 1, x.NET_RX_RING_SIZE - 1
_TXREQ = x.NETIF_TX_REQUEST.unpack_from
_RXREQ = x.NETIF_RX_REQUEST.unpack_from
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
        self.rx_pending: list[tuple[int, int, int]] = []    # (request id, length, flags) awaiting the flush
        self.dom0_mem = kernel.vm.mem
        self.ops = kernel.alloc(2 * NAPI_WEIGHT * x.GNTTAB_COPY.size)
        self.pages = [kernel.alloc(x.PAGE_SIZE) for _ in range(NAPI_WEIGHT + RX_BATCH)]
        self._probe()

    # ---- xenbus (drivers/net/xen-netback/xenbus.c) ----------------------------------------
    def _probe(self) -> None:
        vcpu = self.kernel.vcpu
        self.frontend = self.xen.xs_read(vcpu, f"{self.path}/frontend")
        for key, value in (("feature-rx-copy", 1), ("feature-rx-flip", 0), ("state", x.XenbusStateInitWait)):
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
        """Build copy ops from up to ``budget`` requests, copy in one batch,
        send the frames, answer every request; returns the requests taken."""
        buf, base = self.tx.buf, self.tx.base
        prod = _U32(buf, base + x.REQ_PROD)[0]
        if (prod - self.tx_cons) & x.RING_IDX_MASK > x.NET_TX_RING_SIZE:
            self._fatal("tx_impossible_requests")
            return 0
        batch: list[tuple[int, int]] = []           # (request id, length) per copy op
        answers: list[tuple[int, int]] = []         # (request id, status) in ring order
        taken = 0
        while self.tx_cons != prod and taken < budget:
            req = self._tx_request(cpu, self.tx_cons)
            taken += 1
            if req[2] & (x.NETTXF_more_data | x.NETTXF_extra_info):
                chain = self._tx_chain(cpu, prod, req)
                if chain is None:
                    return taken
                answers += [(rid, x.NETIF_RSP_ERROR) for rid in chain]
                continue
            gref, offset, _, rid, size = req
            if offset + size > x.PAGE_SIZE:
                self._fatal("tx_cross_page")
                return taken
            if size < ETH_HLEN:
                self._drop("tx_bad_size")
                answers.append((rid, x.NETIF_RSP_ERROR))
                continue
            self._stage_copy(len(batch), (gref, self.frontend_domid, offset),
                             (self.pages[len(batch)] >> x.PAGE_SHIFT, x.DOMID_SELF, 0), size, x.GNTCOPY_source_gref)
            answers.append((rid, len(batch)))
            batch.append((rid, size))
        statuses = self._copy(cpu, 0, len(batch))
        for rid, op in answers:
            if op < 0:
                self._tx_respond(cpu, rid, op)
                continue
            status = statuses[op]
            if status == x.GNTST_okay:
                frame = self.dom0_mem.buf[self.pages[op] : self.pages[op] + batch[op][1]]
                self.port.send(cpu, frame)
                self.stats["tx_frames"] += 1
            else:
                self._drop("tx_grant_errors")
            self._tx_respond(cpu, rid, x.NETIF_RSP_OKAY if status == x.GNTST_okay else x.NETIF_RSP_ERROR)
        if answers:
            self._push(cpu, self.tx, self.tx_rsp)
        return taken

    def _tx_request(self, cpu: Resource, index: int) -> tuple:
        """RING_COPY_REQUEST: one read of the shared slot, then only the copy is used."""
        cpu.charge("ring_op", acct=self.acct)
        self.tx_cons = (index + 1) & x.RING_IDX_MASK
        return _TXREQ(self.tx.buf, self.tx.base + x.RING_OFFSET + (index & TX_MASK) * x.TX_ENTRY)

    def _tx_chain(self, cpu: Resource, prod: int, first: tuple) -> list[int] | None:
        """A multi-slot packet or extra info: scatter-gather and extras were
        not negotiated, so every slot is answered with an error; a chain past
        the producer or longer than FATAL_SKB_SLOTS is fatal."""
        ids, flags = [first[3]], first[2]
        while flags & (x.NETTXF_more_data | x.NETTXF_extra_info):
            if self.tx_cons == prod or len(ids) >= FATAL_SKB_SLOTS:
                self._fatal("tx_bad_chain")
                return None
            _, _, flags, rid, _ = self._tx_request(cpu, self.tx_cons)
            ids.append(rid)
        self._drop("tx_unsupported_chain")
        return ids

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
        """A posted RX request is waiting (else ask to be told of the next one)."""
        if not self.running or len(self.rx_pending) >= RX_BATCH:
            return False
        buf, base = self.rx.buf, self.rx.base
        prod = _U32(buf, base + x.REQ_PROD)[0]
        if (prod - self.rx_cons) & x.RING_IDX_MASK > x.NET_RX_RING_SIZE:
            self._fatal("rx_impossible_requests")
            return False
        return self._final_check(self.rx, self.rx_cons)

    def receive(self, cpu: Resource, frame: bytes) -> None:
        """Take the next RX request for ``frame``; the copy joins the batch
        flushed once this wake-up has taken what it can."""
        if len(frame) > x.PAGE_SIZE:
            self._drop("rx_oversize", frame)             # one slot per frame: no rx scatter-gather
            return
        cpu.charge("ring_op", acct=self.acct)
        rid, gref = _RXREQ(self.rx.buf, self.rx.base + x.RING_OFFSET + (self.rx_cons & RX_MASK) * x.RX_ENTRY)
        self.rx_cons = (self.rx_cons + 1) & x.RING_IDX_MASK
        i = len(self.rx_pending)
        page = self.pages[NAPI_WEIGHT + i]
        self.dom0_mem.buf[page : page + len(frame)] = frame          # the skb, already in dom0 memory
        self._stage_copy(NAPI_WEIGHT + i, (page >> x.PAGE_SHIFT, x.DOMID_SELF, 0),
                         (gref, self.frontend_domid, 0), len(frame), x.GNTCOPY_dest_gref)
        if not self.rx_pending:
            self.sim.at(cpu.cursor, self._rx_flush, cpu)
        # xenvif_rx_data_slot: a checksum the host validated is data_validated
        self.rx_pending.append((rid, len(frame), x.NETRXF_data_validated if getattr(frame, "csum_valid", False) else 0))

    def _rx_flush(self, cpu: Resource) -> None:
        if self._held(lambda: self._rx_flush(cpu)):
            return
        pending, self.rx_pending = self.rx_pending, []
        if not self.running:
            return
        cpu.sync(self.sim.now)
        for (rid, length, flags), status in zip(pending, self._copy(cpu, NAPI_WEIGHT, len(pending))):
            ok = status == x.GNTST_okay
            if ok:
                self.stats["rx_frames"] += 1
            else:
                self._drop("rx_grant_errors")
            cpu.charge("ring_op", acct=self.acct)
            at = self.rx.base + x.RING_OFFSET + (self.rx_rsp & RX_MASK) * x.RX_ENTRY
            self.rx.mem.store(x.RX_RESPONSE, at, rid, 0, flags, length if ok else x.NETIF_RSP_ERROR)
            self.rx_rsp = (self.rx_rsp + 1) & x.RING_IDX_MASK
        self._push(cpu, self.rx, self.rx_rsp)
        self.port.flush(cpu)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


DEVICE = DeviceEntry(XenNetback, "paravirt", "Xen PV netif (shared rings, grant tables, event channels)",
                     ("Xen",), "xen_netfront", hypervisor="xen")
