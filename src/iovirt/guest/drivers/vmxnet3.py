"""Guest driver for VMXNET3, in the order Linux's vmxnet3 driver does things
(drivers/net/vmxnet3/vmxnet3_drv.c).  vmxnet3_probe: the revision and UPT
version handshakes (VRRS, UVRS), the shared area and queue descriptors
allocated, the MAC from MACL/MACH, the interrupt configuration
(GET_CONF_INTR; MSI-X if the function has it, one vector for the TX/RX
pair and one for events as VMXNET3_INTR_BUDDYSHARE does, else INTx), the
link (GET_LINK).
vmxnet3_open: the rings created and the RX rings filled, the shared area
written, DSAL/DSAH, ACTIVATE_DEV (its status read back), the RX producers,
the RX mode and multicast filters, the link, the interrupts unmasked.

TX (vmxnet3_tq_xmit): a frame in one descriptor; a TSO packet's headers in
the first (where vmxnet3_copy_hdr puts them) and its payload in buffers of at
most 16 KB behind it.  The SOP descriptor carries the offload: OM_TSO with
hlen the headers and msscof the MSS, or OM_CSUM with hlen where the checksum
starts and msscof its field; its gen is written last.  txNumDeferred grows
by the packets the device will send (a TSO packet's segments) and TXPROD is
written once it reaches the device's txThreshold; the driver has no other
flush (no xmit_more).  Features as vmxnet3_probe sets them: TX checksum and
TSO (the stack's ``tx_csum``/``tso``); UPT1_F_RXCSUM in uptFeatures, changed
by ``ethtool -K rx`` with UPDATE_FEATURE (vmxnet3_set_features); not LRO
(the device here does not merge) nor RXVLAN.  A completion without ``cnc``
whose v4, ipc and tuc are set is handed up CHECKSUM_UNNECESSARY
(vmxnet3_rx_csum).  The INTx handler reads ICR
(the MSI-X one needs not) and schedules NAPI; the poll handles events (ECR: a queue error is read
back with GET_QUEUE_STATUS), reaps TX completions, takes RX completions whose
gen is the ring's, gives each buffer back with the ring's gen, and writes
RXPROD only when the device asks (updateRxProd); then unmasks through IMR."""

from __future__ import annotations

import struct

from ...net.gso import headers_len
from ...net.headers import TCP_CHECK, l4_offset
from ...spec import vmxnet3 as s
from ...spec.pci import PCI_CAP_ID_MSIX
from .base import NetDriver, tso_headers, wants_csum

TX_RING = 512                       # VMXNET3_DEF_TX_RING_SIZE
RX_RING = 256                       # rx ring 1 (ethtool -G rx); Linux's default is 1024 (VMXNET3_DEF_RX_RING_SIZE)
RX_RING2 = 128                      # rx ring 2, body buffers (VMXNET3_DEF_RX_RING2_SIZE is 256)
RX_BUFFER = 2048                    # an skb for an MTU-1500 frame (head buffers)
BODY_BUFFER = 4096                  # a page (body buffers)
TX_BUFFER = 2048
GSO_BUFFER = 65550                  # a TSO packet's payload (Linux maps the skb's pages instead)
GSO_BUFFERS = 32
MTU = 1500
NAPI_WEIGHT = 64
QUEUE_VECTOR, EVENT_VECTOR = 0, 1   # MSI-X: the TX/RX pair's vector, then the events' (vmxnet3_request_irqs)
_TXD = s.TX_DESC.struct
_RXD = s.RX_DESC.struct
_RCD = s.RX_COMP.unpack_from
_TCD = s.TX_COMP.unpack_from
_U32, _U8 = struct.Struct("<I"), struct.Struct("<B")
_TXQ, _RXQ = s.TX_QUEUE_DESC.offsets, s.RX_QUEUE_DESC.offsets


class Vmxnet3Error(RuntimeError):
    """The probe or open failed as vmxnet3's does (dev_err and -EBUSY / -EINVAL)."""


class Vmxnet3Driver(NetDriver):
    VENDOR, DEVICE = s.VENDOR_ID, s.DEVICE_ID
    offloads = frozenset(("tx_csum", "tso"))    # NETIF_F_HW_CSUM and NETIF_F_TSO (vmxnet3_declare_features)

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.bar0 = info.bars[0][1]
        self.bar1 = info.bars[1][1]
        self.queue_errors = 0
        self.upt_features = s.UPT1_F_RXCSUM       # NETIF_F_RXCSUM on (vmxnet3_setup_driver_shared)
        self._probe()
        self._open()

    # ---- register access: every one is an MMIO instruction --------------------
    def rd1(self, reg: str) -> int:
        return self.vcpu.mmio_read(self.bar1 + s.R1[reg], 4)

    def wr1(self, reg: str, value: int) -> None:
        self.vcpu.mmio_write(self.bar1 + s.R1[reg], 4, value)

    def wr0(self, reg: str, value: int, index: int = 0) -> None:
        self.vcpu.mmio_write(self.bar0 + s.R0[reg] + index * s.REG_ALIGN, 4, value)

    def command(self, cmd: int) -> int:
        """A GET command: written to CMD, its answer read back (the cmd_lock section)."""
        self.wr1("CMD", cmd)
        return self.rd1("CMD")

    def _ds(self, field: str, value: int) -> None:
        self.mem.store(s.DRIVER_SHARED.field_struct(field), self.shared + s.DS[field], value)

    # ---- vmxnet3_probe ----------------------------------------------------------
    def _probe(self) -> None:
        if not self.rd1("VRRS") & 1:
            raise Vmxnet3Error(f"vmxnet3 at {self.bar1:#x}: Incompatible h/w version")
        self.wr1("VRRS", 1)
        if not self.rd1("UVRS") & 1:
            raise Vmxnet3Error(f"vmxnet3 at {self.bar1:#x}: Incompatible upt version")
        self.wr1("UVRS", 1)
        self.shared = self.dma_alloc(s.DRIVER_SHARED.size, 8)
        self.queue_desc = self.dma_alloc(s.TX_QUEUE_DESC.size + s.RX_QUEUE_DESC.size, s.QUEUE_DESC_ALIGN)
        self.mac = _mac(self.rd1("MACL"), self.rd1("MACH"))          # vmxnet3_read_mac_addr
        config = self.command(s.CMD_GET_CONF_INTR)                    # vmxnet3_alloc_intr_resources
        self.mask_mode = config >> 2 & 3
        self.msix = config & 3 in (s.IT_AUTO, s.IT_MSIX) and PCI_CAP_ID_MSIX in self.info.caps
        self.link_up = bool(self.command(s.CMD_GET_LINK) & s.LINK_UP)  # vmxnet3_check_link

    # ---- vmxnet3_open -------------------------------------------------------------
    def _open(self) -> None:
        self._create_queues()
        self._setup_driver_shared()
        if self.msix:                                                  # vmxnet3_request_irqs
            self.vectors = self.setup_msix(self.info.bars[s.MSIX_BAR][1], [
                (QUEUE_VECTOR, self._msix_queue), (EVENT_VECTOR, self._msix_event)])
        else:
            self.kernel.request_irq(self.irq, self._intr)
        self.wr1("DSAL", self.shared & 0xFFFFFFFF)
        self.wr1("DSAH", self.shared >> 32)
        status = self.command(s.CMD_ACTIVATE_DEV)
        if status:
            raise Vmxnet3Error(f"vmxnet3 at {self.bar1:#x}: Failed to activate dev: error {status}")
        self.wr0("RXPROD", self.rx_fill[0])
        self.wr0("RXPROD2", self.rx_fill[1])
        self._ds("rxMode", s.RXM_UCAST | s.RXM_BCAST)                 # vmxnet3_set_mc
        self.wr1("CMD", s.CMD_UPDATE_RX_MODE)
        self.wr1("CMD", s.CMD_UPDATE_MAC_FILTERS)
        self.link_up = bool(self.command(s.CMD_GET_LINK) & s.LINK_UP)
        self._enable_intrs()

    def _create_queues(self) -> None:
        """vmxnet3_create_queues: TX ring, TX completion ring, two RX rings, RX
        completion ring, each 512-byte aligned; the RX rings filled but one
        descriptor (vmxnet3_rq_init: rx_ring.size - 1 buffers)."""
        self.tx_ring = self.dma_alloc(TX_RING * s.DESC_SIZE, s.RING_BA_ALIGN)
        self.tx_comp = self.dma_alloc(TX_RING * s.DESC_SIZE, s.RING_BA_ALIGN)
        self.tx_bufs = [self.dma_alloc(TX_BUFFER, 64) for _ in range(TX_RING)]
        self.gso_bufs = [self.dma_alloc(GSO_BUFFER, 64) for _ in range(GSO_BUFFERS)]
        self.gso_free = list(range(GSO_BUFFERS))
        self.gso_eop: dict[int, int] = {}                              # a TSO packet's EOP slot -> its GSO buffer
        self.tx_fill = self.tx_done = self.tc_next = 0
        self.tx_gen = self.tc_gen = s.INIT_GEN
        sizes = (RX_RING, RX_RING2)
        self.rx_rings = [self.dma_alloc(n * s.DESC_SIZE, s.RING_BA_ALIGN) for n in sizes]
        self.rx_comp = self.dma_alloc(sum(sizes) * s.DESC_SIZE, s.RING_BA_ALIGN)
        self.rx_bufs = [[self.dma_alloc(size, 64) for _ in range(n)]
                        for n, size in zip(sizes, (RX_BUFFER, BODY_BUFFER))]
        self.rx_fill, self.rx_gen = [0, 0], [s.INIT_GEN, s.INIT_GEN]
        self.rc_next, self.rc_gen = 0, s.INIT_GEN
        for ring, n in enumerate(sizes):
            for _ in range(n - 1):
                self._give(ring, self.rx_fill[ring])

    def _setup_driver_shared(self) -> None:
        """vmxnet3_setup_driver_shared: maxNumRxSG is 1 + MAX_SKB_FRAGS; interrupts off until open ends."""
        q = self.queue_desc
        for field, value in (("magic", s.REV1_MAGIC), ("size", s.DRIVER_SHARED.size),
                             ("gos", s.GOS_BITS_64 | s.GOS_TYPE_LINUX << 2), ("vmxnet3RevSpt", 1), ("uptVerSpt", 1),
                             ("uptFeatures", self.upt_features), ("queueDescPA", q),
                             ("queueDescLen", 2 * s.TX_QUEUE_DESC.size),
                             ("mtu", MTU), ("maxNumRxSG", 18), ("numTxQueues", 1), ("numRxQueues", 1),
                             ("autoMask", int(self.mask_mode == s.IMM_AUTO)), ("numIntrs", 2 if self.msix else 1),
                             ("eventIntrIdx", EVENT_VECTOR if self.msix else 0),
                             ("intrCtrl", s.IC_DISABLE_ALL), ("rxMode", 0), ("ecr", 0)):
            self._ds(field, value)
        tq, rq = q, q + s.TX_QUEUE_DESC.size
        for field, value in (("txRingBasePA", self.tx_ring), ("compRingBasePA", self.tx_comp),
                             ("txRingSize", TX_RING), ("compRingSize", TX_RING), ("intrIdx", QUEUE_VECTOR)):
            self.mem.store(s.TX_QUEUE_DESC.field_struct(field), tq + _TXQ[field], value)
        for field, value in (("rxRingBasePA0", self.rx_rings[0]), ("rxRingBasePA1", self.rx_rings[1]),
                             ("compRingBasePA", self.rx_comp), ("rxRingSize0", RX_RING), ("rxRingSize1", RX_RING2),
                             ("compRingSize", RX_RING + RX_RING2), ("intrIdx", QUEUE_VECTOR)):
            self.mem.store(s.RX_QUEUE_DESC.field_struct(field), rq + _RXQ[field], value)

    def _enable_intrs(self) -> None:
        """vmxnet3_enable_all_intrs: every IMR 0, and intrCtrl's DISABLE_ALL cleared."""
        for index in range(2 if self.msix else 1):
            self.wr0("IMR", 0, index)
        self._ds("intrCtrl", 0)

    # ---- features (vmxnet3_set_features) -----------------------------------------------
    @property
    def rx_csum(self) -> bool:
        return bool(self.upt_features & s.UPT1_F_RXCSUM)

    @rx_csum.setter
    def rx_csum(self, on: bool) -> None:
        """ethtool -K rx: uptFeatures changed and UPDATE_FEATURE, only if it changes."""
        if on != self.rx_csum:
            self.upt_features ^= s.UPT1_F_RXCSUM
            self._ds("uptFeatures", self.upt_features)
            self.wr1("CMD", s.CMD_UPDATE_FEATURE)

    # ---- RX buffers ------------------------------------------------------------------
    def _give(self, ring: int, index: int) -> None:
        """The buffer of slot ``index`` to the device: written with the ring's gen (vmxnet3_rq_alloc_rx_buf)."""
        btype, size = (s.RXD_BTYPE_HEAD, RX_BUFFER) if ring == 0 else (s.RXD_BTYPE_BODY, BODY_BUFFER)
        self.mem.store(_RXD, self.rx_rings[ring] + index * s.DESC_SIZE, self.rx_bufs[ring][index],
                       size | btype << s.RXD_BTYPE_SHIFT | self.rx_gen[ring] << s.RXD_GEN_SHIFT, 0)
        nxt = index + 1
        if nxt == len(self.rx_bufs[ring]):
            nxt = 0
            self.rx_gen[ring] ^= 1
        self.rx_fill[ring] = nxt

    # ---- transmit (vmxnet3_tq_xmit) ---------------------------------------------------------
    def transmit(self, frame: bytes) -> bool:
        mss = getattr(frame, "gso_size", 0)
        hlen = headers_len(frame) if mss else 0
        pieces = 1 + -(-(len(frame) - hlen) // s.MAX_TX_BUF_SIZE) if mss else 1      # txd_estimate
        if pieces > (self.tx_done - self.tx_fill - 1) % TX_RING or mss and not self.gso_free:
            self.tx_queue_stopped = True                       # vmxnet3_cmd_ring_desc_avail() too small
            return False
        sop, sop_gen = self.tx_fill, self.tx_gen
        buf = self.tx_bufs[sop]
        if mss:
            frame = tso_headers(frame, zero_len=False)[0]      # vmxnet3_prepare_tso
            om, msscof, packets = s.OM_TSO, mss, -(-(len(frame) - hlen) // mss)
            gso = self.gso_free.pop()
            self.mem.write(buf, frame[:hlen])                  # vmxnet3_copy_hdr
            self.mem.write(self.gso_bufs[gso], frame[hlen:])
            body = self.gso_bufs[gso] - hlen
            bufs = [(buf, hlen)] + [(body + at, min(s.MAX_TX_BUF_SIZE, len(frame) - at))
                                    for at in range(hlen, len(frame), s.MAX_TX_BUF_SIZE)]
            self.gso_eop[(sop + len(bufs) - 1) % TX_RING] = gso
        else:
            self.mem.write(buf, frame)
            bufs, packets, om, hlen, msscof = [(buf, len(frame))], 1, s.OM_NONE, 0, 0
            if wants_csum(self.stack, frame):                  # CHECKSUM_PARTIAL
                om, hlen = s.OM_CSUM, l4_offset(frame)
                msscof = hlen + TCP_CHECK
        self.vcpu.charge("ring_op", len(bufs))
        end = len(bufs) - 1
        for n in range(1, len(bufs)):                          # vmxnet3_map_pkt; the SOP's gen last
            self._advance_tx()
            self.mem.store(_TXD, self.tx_ring + self.tx_fill * s.DESC_SIZE, bufs[n][0],
                           bufs[n][1] & s.TXD_LEN_MASK | self.tx_gen << s.TXD_GEN_SHIFT,
                           s.TXD_EOP | s.TXD_CQ if n == end else 0)
        self._advance_tx()
        self.mem.store(_TXD, self.tx_ring + sop * s.DESC_SIZE, buf,
                       bufs[0][1] | sop_gen << s.TXD_GEN_SHIFT | msscof << s.TXD_MSSCOF_SHIFT,
                       hlen | om << s.TXD_OM_SHIFT | (0 if end else s.TXD_EOP | s.TXD_CQ))
        tq = self.queue_desc
        deferred = _U32.unpack_from(self.buf, tq + _TXQ["txNumDeferred"])[0] + packets
        if deferred >= _U32.unpack_from(self.buf, tq + _TXQ["txThreshold"])[0]:
            deferred = 0
            self.wr0("TXPROD", self.tx_fill)
        self.mem.store(_U32, tq + _TXQ["txNumDeferred"], deferred)
        return True

    def _advance_tx(self) -> None:
        """vmxnet3_cmd_ring_adv_next2fill: the gen flips at each wrap."""
        self.tx_fill += 1
        if self.tx_fill == TX_RING:
            self.tx_fill = 0
            self.tx_gen ^= 1

    # ---- interrupt and NAPI poll --------------------------------------------------------------
    def _intr(self) -> None:
        icr = self.rd1("ICR")
        if icr and self.mask_mode == s.IMM_ACTIVE:
            self.wr0("IMR", 1)                                # vmxnet3_disable_all_intrs
        self.vcpu.eoi(self.irq)
        if icr:
            self.napi_schedule()

    def _msix_queue(self) -> None:
        """vmxnet3_msix_rx (buddy-shared with TX): NAPI; the device masked the vector itself (autoMask)."""
        if self.mask_mode == s.IMM_ACTIVE:
            self.wr0("IMR", 1, QUEUE_VECTOR)
        self.vcpu.eoi(self.vectors[QUEUE_VECTOR])
        self.napi_schedule()

    def _msix_event(self) -> None:
        """vmxnet3_msix_event: the events handled at once, the vector unmasked."""
        if self.mask_mode == s.IMM_ACTIVE:
            self.wr0("IMR", 1, EVENT_VECTOR)
        self.vcpu.eoi(self.vectors[EVENT_VECTOR])
        self._process_events()
        self.wr0("IMR", 0, EVENT_VECTOR)

    def _poll(self) -> None:
        """vmxnet3_poll: events (INTx shares its line with them), TX completions, RX; then unmask."""
        self.poll_scheduled = False
        if not self.msix:
            self._process_events()
        self._tx_complete()
        if self._rx_complete() < NAPI_WEIGHT:
            if self.msix:
                self.wr0("IMR", 0, QUEUE_VECTOR)                   # vmxnet3_enable_intr
            else:
                self._enable_intrs()
        else:
            self.napi_schedule()

    def _process_events(self) -> None:
        """vmxnet3_process_events: acknowledge ECR; a queue error is read back with GET_QUEUE_STATUS."""
        ecr = _U32.unpack_from(self.buf, self.shared + s.DS["ecr"])[0]
        if not ecr:
            return
        self.wr1("ECR", ecr)
        if ecr & (s.ECR_TQERR | s.ECR_RQERR):
            self.wr1("CMD", s.CMD_GET_QUEUE_STATUS)
            for base in (self.queue_desc, self.queue_desc + s.TX_QUEUE_DESC.size):
                if _U8.unpack_from(self.buf, base + s.QUEUE_STATUS)[0]:
                    self.queue_errors += 1
                    self.stats["rx_errors" if base != self.queue_desc else "tx_errors"] += 1

    def _tx_complete(self) -> None:
        """vmxnet3_tq_tx_complete: each completion frees the descriptors up to its txdIdx."""
        freed = False
        while True:
            dword0, _, _, dword3 = _TCD(self.buf, self.tx_comp + self.tc_next * s.DESC_SIZE)
            if dword3 >> s.TCD_GEN_SHIFT != self.tc_gen:
                break
            self.vcpu.charge("ring_op")
            eop = dword0 & s.TCD_TXIDX_MASK
            self.tx_done = (eop + 1) % TX_RING
            if eop in self.gso_eop:
                self.gso_free.append(self.gso_eop.pop(eop))
            freed = True
            self.tc_next += 1
            if self.tc_next == TX_RING:
                self.tc_next = 0
                self.tc_gen ^= 1
        if freed:
            self.wake_queue()

    def _rx_complete(self) -> int:
        """vmxnet3_rq_rx_complete: completions whose gen is the ring's; a
        frame is its SOP buffer and the bodies up to EOP; each buffer goes
        back (copied out, the same page given again)."""
        done, frame, size = 0, bytearray(), RX_RING + RX_RING2
        while done < NAPI_WEIGHT:
            dword0, _, dword2, dword3 = _RCD(self.buf, self.rx_comp + self.rc_next * s.DESC_SIZE)
            if dword3 >> s.RCD_GEN_SHIFT != self.rc_gen:
                break
            self.vcpu.charge("ring_op")
            self.rc_next += 1
            if self.rc_next == size:
                self.rc_next = 0
                self.rc_gen ^= 1
            ring, index, length = dword0 >> s.RCD_RQID_SHIFT & 1, dword0 & s.RCD_RXIDX_MASK, dword2 & s.RCD_LEN_MASK
            if index >= len(self.rx_bufs[ring]) or length > (RX_BUFFER, BODY_BUFFER)[ring]:
                self.stats["rx_errors"] += 1
                continue
            frame += self.mem.read(self.rx_bufs[ring][index], length)
            self._give(ring, self.rx_fill[ring])
            if dword0 & s.RCD_EOP:
                done += 1
                if dword2 & s.RCD_ERR:
                    self.stats["rx_errors"] += 1
                else:                                          # vmxnet3_rx_csum
                    self.stack.receive(bytes(frame), self.rx_csum and not dword0 & s.RCD_CNC
                                       and dword3 & (s.RCD_V4 | s.RCD_CSUM_OK) == s.RCD_V4 | s.RCD_CSUM_OK)
                frame = bytearray()
        rq = self.queue_desc + s.TX_QUEUE_DESC.size
        if _U8.unpack_from(self.buf, rq + _RXQ["updateRxProd"])[0]:
            self.wr0("RXPROD", self.rx_fill[0])
            self.wr0("RXPROD2", self.rx_fill[1])
        return done


def _mac(low: int, high: int) -> bytes:
    return low.to_bytes(4, "little") + (high & 0xFFFF).to_bytes(2, "little")
