"""VMware VMXNET3, the para-virtual NIC of ESXi, as the device side of
``vmxnet3_defs.h`` (Linux drivers/net/vmxnet3) with the answers QEMU's
hw/net/vmxnet3.c gives where the header is silent.

The guest hands the device one address (DSAL/DSAH): its driver shared area,
which points at the queue descriptors, which point at the rings.  A ring
entry belongs to whoever's generation bit it carries: the device consumes a
TX or RX descriptor whose gen equals the ring's current gen and writes
completions with its own gen, flipping it at each wrap.  One TX queue and one
RX queue (two RX rings: head buffers, body buffers); MSI-X with automask
(an interrupt masks its IMR as it fires) or INTx with ICR; commands through
CMD, events through the shared area's ecr.  The host may space a vNIC's
interrupts (``coalesce_ns``, ESXi's rate-based virtual interrupt
coalescing; 0 in QEMU, which has none).

A guest that lies gets the device's error behaviour, never an exception: a
shared area, queue descriptor or ring outside its memory fails ACTIVATE_DEV
(CMD reads back 1); a producer index past the ring size, a descriptor whose
buffer is outside memory, a chain longer than any frame stop the queue with the error
in its Vmxnet3_QueueStatus and ECR.TQERR/RQERR raised on the event interrupt.
A packet whose SOP descriptor asks for an offload it cannot have (TSO with an
MSS below any TCP sender's, or headers other than the packet's or past its
first buffer; a checksum field past the packet; the encapsulation mode of
revision 4) is dropped and counted in pktsTxError, its descriptors completed.

Offloads.  The SOP descriptor's ``om`` asks for them (vmxnet3_tq_xmit):
OM_CSUM with ``hlen`` where the checksum starts and ``msscof`` its field, which the
device completes; OM_TSO with ``hlen`` the headers and ``msscof`` the MSS: the
packet goes to the vSwitch whole with its MSS, as ESXi carries a TSO packet to
the uplink, whose NIC cuts it, or segments it in software for a port that
cannot take it.  On receive, with UPT1_F_RXCSUM in the driver's
``uptFeatures`` (read at ACTIVATE_DEV and UPDATE_FEATURE), a frame whose
checksums the host's NIC validated gets ``cnc`` clear and v4, tcp/udp, ipc,
tuc and fcs set in its completion (QEMU vmxnet3_rx_update_descr); any other
gets ``cnc``."""

from __future__ import annotations

import struct
from collections import Counter
from typing import Callable

from ..mem.dma import Dma, DmaFault
from ..pci.function import Bar, PciFunction
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import vmxnet3 as s
from ..spec.ethernet import ETH_MIN_FRAME
from .discard import discard
from .offload import GSO_MAX_SIZE, TCP_MIN_MSS, complete_checksum, is_tcpv4
from .registry import DeviceEntry
from .vmstate import PCI_FUNCTION, Bytes, Counts, Flag, Instant, Ints, Nested, UInt, VmState, below, length_at_most

Irq = Callable[[Resource, int], None]
TX, TXC, RX0, RX1, RXC = range(5)                 # the rings: TX, TX completion, RX 1 and 2, RX completion
_MAX_SIZE = (s.TX_RING_MAX_SIZE, s.TC_RING_MAX_SIZE, s.RX_RING_MAX_SIZE, s.RX_RING_MAX_SIZE, s.RC_RING_MAX_SIZE)
_TXQ, _RXQ = s.TX_QUEUE_DESC.offsets, s.RX_QUEUE_DESC.offsets
MAX_FRAME = s.MAX_MTU + 18                       # a jumbo frame with its Ethernet header and a VLAN tag
MAX_TSO_FRAME = 14 + GSO_MAX_SIZE                # a TSO packet: up to 64 KB of IPv4 behind its Ethernet header
LINK = s.LINK_UP | 10000 << s.LINK_SPEED_SHIFT   # ESXi reports 10 Gbit/s for a VMXNET3 vNIC
_U32, _U8 = struct.Struct("<I"), struct.Struct("<B")
_DS_FIELD = {name: s.DRIVER_SHARED.field_struct(name) for name in s.DS}


def _mac_lo(mac: bytes) -> int:
    return int.from_bytes(mac[:4], "little")


def _mac_hi(mac: bytes) -> int:
    return int.from_bytes(mac[4:6], "little")


class Vmxnet3:
    """Device state and behaviour of one VMXNET3 function."""

    NAME = "vmxnet3"

    def __init__(self, sim: Sim, mac: bytes, dma: Dma, irq: Irq, timer_cpu: Resource) -> None:
        self.sim = sim
        self.perm_mac = mac
        self.dma = dma
        self.irq = irq
        self.timer_cpu = timer_cpu          # runs the coalescing timer
        self.coalesce_ns = 0.0              # the host's rate-based coalescing: a vNIC's interrupts this far apart
        self.port = None
        self.kick_hook: Callable[[Resource], None] | None = None   # who runs TX after TXPROD (the wiring's)
        self.msi_hook: Callable[[Resource, int], None] | None = None   # signals an MSI-X vector (the wiring's)
        self.errors: Counter[str] = Counter()
        self.place = self.NAME
        self.pci = PciFunction(s.VENDOR_ID, s.DEVICE_ID, s.CLASS_ETHERNET, revision=s.REVISION,
                               subsystem_vendor_id=s.VENDOR_ID, subsystem_id=s.DEVICE_ID, interrupt_pin=1,
                               bars=(Bar(0, s.PT_REG_SIZE, "mem32"), Bar(1, s.VD_REG_SIZE, "mem32"),
                                     Bar(s.MSIX_BAR, s.MSIX_BAR_SIZE, "mem32")))
        self.pci.add_msix(s.MSIX_BAR, 0, s.MSIX_BAR, s.MSIX_PBA_OFFSET, s.MAX_INTRS)
        self.mac = mac
        self.temp_mac = 0
        self.reset()

    # ---- reset (QEMU vmxnet3_reset) ---------------------------------------------
    def reset(self) -> None:
        self.active = False
        self.shared = 0
        self.temp_dsal = 0
        self.last_cmd = 0
        self.masked = (1 << s.MAX_INTRS) - 1          # every interrupt masked until the driver unmasks
        self.pending = 0
        self.asserted = False
        self.ring_pa = [0] * 5
        self.ring_size = [0] * 5
        self.ring_next = [0] * 5
        self.ring_gen = [s.INIT_GEN] * 5
        self.queue_pa = [0, 0]                        # the TX and RX queue descriptors
        self.stopped = [0, 0]                         # each queue's error, 0 while it runs
        self.intr_idx = [0, 0, 0]                     # TX queue, RX queue, events
        self.auto_mask = False
        self.next_intr_ok = 0.0
        self.coalesce_armed = False
        self.held = 0                                 # interrupts the coalescing holds back
        self.rx_mode = 0
        self.max_rx_frags = 1
        self.mcast = b""
        self.tx_frame = bytearray()
        self.tx_sop = [s.OM_NONE, 0, 0, 0]            # the packet's SOP descriptor: om, hlen, msscof, its length
        self.upt_features = 0                         # what the driver enabled (devRead.misc.uptFeatures)
        self.tx_stats = [0] * 10
        self.rx_stats = [0] * 10

    # ---- register access --------------------------------------------------------
    def bar_handlers(self, index: int):
        if index == s.MSIX_BAR:
            return self.msix_read, self.msix_write
        return (self.bar0_read, self.bar0_write) if index == 0 else (self.bar1_read, self.bar1_write)

    def msix_read(self, cpu: Resource, offset: int, size: int) -> int:
        return self.pci.msix.read(s.MSIX_BAR, offset, size)

    def msix_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        self.pci.msix.write(s.MSIX_BAR, offset, size, value)

    def bar0_read(self, cpu: Resource, offset: int, size: int) -> int:
        """IMR reads back its mask; the producers read 0 (QEMU vmxnet3_io_bar0_read)."""
        index, reg = divmod(offset, s.REG_ALIGN)
        if reg == 0 and index < s.MAX_INTRS:
            return self.masked >> index & 1
        return 0

    def bar0_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        index, reg = divmod(offset, s.REG_ALIGN)
        if reg:
            return
        if index < s.MAX_INTRS:
            self._set_mask(cpu, index, value & 1)
        elif not self.active:
            return
        elif offset == s.R0["TXPROD"]:
            self._producer(cpu, 0, TX, value)
        elif offset in (s.R0["RXPROD"], s.R0["RXPROD2"]):
            self._producer(cpu, 1, RX0 if offset == s.R0["RXPROD"] else RX1, value)

    def bar1_read(self, cpu: Resource, offset: int, size: int) -> int:
        if offset == s.R1["VRRS"]:
            return 1                                  # revision 1 only (QEMU VMXNET3_DEVICE_REVISION)
        if offset == s.R1["UVRS"]:
            return 1
        if offset == s.R1["CMD"]:
            return self._command_status()
        if offset == s.R1["MACL"]:
            return _mac_lo(self.mac)
        if offset == s.R1["MACH"]:
            return _mac_hi(self.mac)
        if offset == s.R1["ICR"]:                     # INTx only: interrupt 0; reading acknowledges it
            if not self.asserted:
                return 0
            self.pending &= ~1
            self._update(cpu, 0)
            return 1
        return 0

    def bar1_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        if offset == s.R1["DSAL"]:                    # the low half first; a 0 deactivates
            if value == 0:
                self.active = False
            self.temp_dsal = value
            self.shared = 0
        elif offset == s.R1["DSAH"]:
            self.shared = self.temp_dsal | value << 32
        elif offset == s.R1["CMD"]:
            self._command(cpu, value)
        elif offset == s.R1["MACL"]:
            self.temp_mac = value
        elif offset == s.R1["MACH"]:
            self.mac = self.temp_mac.to_bytes(4, "little") + (value & 0xFFFF).to_bytes(2, "little")
        elif offset == s.R1["ECR"]:
            self._ecr(cpu, lambda ecr: ecr & ~value)

    # ---- interrupts (QEMU's per-index pending / masked / asserted) -------------------
    def _set_mask(self, cpu: Resource, index: int, masked: int) -> None:
        self.masked = self.masked & ~(1 << index) | masked << index
        self._update(cpu, index)

    def _trigger(self, cpu: Resource, index: int) -> None:
        """QEMU vmxnet3_trigger_interrupt: pending, then delivered unless masked."""
        self.pending |= 1 << index
        self._update(cpu, index)

    def _update(self, cpu: Resource, index: int) -> None:
        bit = 1 << index
        if not self.pending & bit and self.asserted and index == 0:
            self.asserted = False
            self.irq(cpu, 0)
        elif self.pending & bit and not self.masked & bit and not self.asserted:
            if cpu.cursor < self.next_intr_ok:          # the host's rate-based coalescing holds it
                self.held |= bit
                if not self.coalesce_armed:
                    self.coalesce_armed = True
                    self.sim.at(self.next_intr_ok, self._coalesce_timer)
                return
            self._deliver(cpu, index)
            self.next_intr_ok = cpu.cursor + self.coalesce_ns

    def _deliver(self, cpu: Resource, index: int) -> None:
        """INTx asserts the line; a message goes out and, with autoMask, masks its interrupt."""
        self.pending &= ~(1 << index)
        if self.pci.interrupt_mode != "msix":
            self.asserted = True
            self.irq(cpu, 1)
            return
        if self.msi_hook is not None:
            self.msi_hook(cpu, index)
        if self.auto_mask:
            self.masked |= 1 << index

    def _coalesce_timer(self) -> None:
        """The interval is over: what was held and is still wanted goes out together."""
        self.coalesce_armed = False
        held, self.held = self.held, 0
        cpu = self.timer_cpu
        cpu.sync(self.sim.now)
        for index in range(s.MAX_INTRS):
            bit = 1 << index
            if held & bit and self.pending & bit and not self.masked & bit and not self.asserted:
                self._deliver(cpu, index)
                self.next_intr_ok = cpu.cursor + self.coalesce_ns

    # ---- the shared area and commands -----------------------------------------------
    def _ds(self, cpu: Resource, field: str) -> int:
        return self.dma.load(cpu, _DS_FIELD[field], self.shared + s.DS[field])[0]

    def _ecr(self, cpu: Resource, change: Callable[[int], int]) -> None:
        try:
            ecr = self._ds(cpu, "ecr")
            self.dma.store(cpu, _U32, self.shared + s.DS["ecr"], change(ecr) & 0xFFFFFFFF)
        except DmaFault:
            self.errors["shared_area_fault"] += 1

    def _command(self, cpu: Resource, cmd: int) -> None:
        self.last_cmd = cmd
        try:
            if cmd == s.CMD_ACTIVATE_DEV:
                self._activate(cpu)
            elif cmd == s.CMD_QUIESCE_DEV:
                self.active = False
            elif cmd == s.CMD_RESET_DEV:
                asserted = self.asserted
                self.reset()
                if asserted:
                    self.irq(cpu, 0)
            elif cmd == s.CMD_UPDATE_RX_MODE:
                self.rx_mode = self._ds(cpu, "rxMode")
            elif cmd == s.CMD_UPDATE_FEATURE:
                self.upt_features = self._ds(cpu, "uptFeatures")
            elif cmd == s.CMD_UPDATE_MAC_FILTERS:
                length = self._ds(cpu, "mfTableLen")
                self.mcast = self.dma.read(cpu, self._ds(cpu, "mfTablePA"), length - length % 6) if length else b""
            elif cmd == s.CMD_GET_STATS and self.active:
                for q, stats in enumerate((self.tx_stats, self.rx_stats)):
                    self.dma.store(cpu, s.STATS.struct, self.queue_pa[q] + s.QUEUE_STATS, *stats)
            elif cmd == s.CMD_GET_QUEUE_STATUS and self.active:
                for q in (0, 1):
                    self._write_status(cpu, q)
        except DmaFault:
            self.errors["shared_area_fault"] += 1

    def _command_status(self) -> int:
        """What a CMD read returns after the last command (QEMU vmxnet3_get_command_status)."""
        cmd = self.last_cmd
        if cmd == s.CMD_ACTIVATE_DEV:
            return 0 if self.active else 1
        return {s.CMD_GET_LINK: LINK, s.CMD_GET_PERM_MAC_LO: _mac_lo(self.perm_mac),
                s.CMD_GET_PERM_MAC_HI: _mac_hi(self.perm_mac), s.CMD_GET_DID_LO: s.DEVICE_ID,
                s.CMD_GET_DID_HI: s.REVISION,
                s.CMD_GET_CONF_INTR: s.IT_AUTO | s.IMM_AUTO << 2}.get(cmd, 0)

    def _activate(self, cpu: Resource) -> None:
        """ACTIVATE_DEV: read the shared area, the queue descriptors and the
        rings they name; anything out of bounds leaves the device inactive."""
        if self.active:
            return
        problem = self._configure(cpu)
        if problem:
            self.errors[f"activate_{problem}"] += 1
            return
        self.mac = self.perm_mac                      # QEMU vmxnet3_reset_mac
        self.tx_frame.clear()
        self.active = True

    def _configure(self, cpu: Resource) -> str | None:
        load, dma = self.dma.load, self.dma
        try:
            ds = load(cpu, s.DRIVER_SHARED, self.shared)
        except DmaFault:
            return "bad_shared_area"
        f = dict(zip(s.DS, ds))
        if f["magic"] != s.REV1_MAGIC:
            return "bad_magic"
        if (f["numTxQueues"], f["numRxQueues"]) != (1, 1):
            return "queue_count"                       # one TX and one RX queue in this model
        if not s.MIN_MTU <= f["mtu"] <= s.MAX_MTU:
            return "mtu"
        try:
            tq = dict(zip(_TXQ, load(cpu, s.TX_QUEUE_DESC, f["queueDescPA"])))
            rq = dict(zip(_RXQ, load(cpu, s.RX_QUEUE_DESC, f["queueDescPA"] + s.TX_QUEUE_DESC.size)))
        except DmaFault:
            return "bad_queue_desc"
        intrs = (tq["intrIdx"], rq["intrIdx"], f["eventIntrIdx"])
        if max(intrs) >= (s.MAX_INTRS if self.pci.interrupt_mode == "msix" else 1):
            return "intr_idx"                          # INTx: interrupt 0 only
        rings = ((tq["txRingBasePA"], tq["txRingSize"]), (tq["compRingBasePA"], tq["compRingSize"]),
                 (rq["rxRingBasePA0"], rq["rxRingSize0"]), (rq["rxRingBasePA1"], rq["rxRingSize1"]),
                 (rq["compRingBasePA"], rq["compRingSize"]))
        for r, (pa, size) in enumerate(rings):
            if not 0 < size <= _MAX_SIZE[r]:
                return "ring_size"
            try:
                dma.gpa(pa, size * s.DESC_SIZE, True)
            except DmaFault:
                return "bad_ring"
        for r, (pa, size) in enumerate(rings):
            self.ring_pa[r], self.ring_size[r], self.ring_next[r], self.ring_gen[r] = pa, size, 0, s.INIT_GEN
        for r in (TXC, RXC):                           # the completion rings start zeroed (QEMU ring_init)
            dma.write(cpu, self.ring_pa[r], bytes(self.ring_size[r] * s.DESC_SIZE))
        self.queue_pa = [f["queueDescPA"], f["queueDescPA"] + s.TX_QUEUE_DESC.size]
        self.stopped = [0, 0]
        self.max_rx_frags = max(1, f["maxNumRxSG"])
        self.intr_idx, self.auto_mask = list(intrs), bool(f["autoMask"])
        self.rx_mode = f["rxMode"]
        self.upt_features = f["uptFeatures"]
        self.dma.store(cpu, _U32, self.queue_pa[0] + _TXQ["txThreshold"], 1)   # QEMU VMXNET3_DEF_TX_THRESHOLD
        return None

    # ---- queue errors -------------------------------------------------------------------
    def _queue_error(self, cpu: Resource, q: int, error: int, why: str) -> None:
        """Stop queue ``q`` with ``error`` in its status; raise TQERR/RQERR on the event interrupt."""
        self.errors[why] += 1
        self.stopped[q] = error
        try:
            self._write_status(cpu, q)
        except DmaFault:
            self.errors["shared_area_fault"] += 1
        self._ecr(cpu, lambda ecr: ecr | (s.ECR_TQERR if q == 0 else s.ECR_RQERR))
        self._trigger(cpu, self.intr_idx[2])

    def _write_status(self, cpu: Resource, q: int) -> None:
        base = self.queue_pa[q] + s.QUEUE_STATUS
        self.dma.store(cpu, _U8, base, 1 if self.stopped[q] else 0)
        self.dma.store(cpu, _U32, base + 4, self.stopped[q])

    def _producer(self, cpu: Resource, q: int, ring: int, value: int) -> None:
        if value >= self.ring_size[ring]:
            if not self.stopped[q]:
                self._queue_error(cpu, q, s.ERR_TXD_INVALID if q == 0 else s.ERR_DESC_NOT_SPT,
                                  "tx_prod_past_ring" if q == 0 else "rx_prod_past_ring")
            return
        if q == 1:
            if self.port is not None:
                self.port.flush(cpu)
        else:
            self._doorbell(cpu)

    def _doorbell(self, cpu: Resource) -> None:
        """TX work to do: the wiring's world takes it, or ``cpu`` does it now."""
        if self.kick_hook is not None:
            self.kick_hook(cpu)
        else:
            self.transmit(cpu)

    # ---- rings ----------------------------------------------------------------------
    def _advance(self, ring: int) -> None:
        nxt = self.ring_next[ring] + 1
        if nxt >= self.ring_size[ring]:
            nxt = 0
            self.ring_gen[ring] ^= 1
        self.ring_next[ring] = nxt

    def _slot(self, ring: int) -> int:
        return self.ring_pa[ring] + self.ring_next[ring] * s.DESC_SIZE

    # ---- transmit (QEMU vmxnet3_process_tx_queue) ------------------------------------------
    def transmit(self, cpu: Resource) -> None:
        """Take every TX descriptor the driver owns (its gen is the ring's); one
        completion per packet, at its EOP descriptor."""
        if not self.active or self.stopped[0]:
            return
        frame, load = self.tx_frame, self.dma.load
        for _ in range(self.ring_size[TX]):
            index = self.ring_next[TX]
            try:
                addr, dword2, dword3 = load(cpu, s.TX_DESC, self._slot(TX))
            except DmaFault:
                return self._queue_error(cpu, 0, s.ERR_TXD_INVALID, "tx_desc_fault")
            if dword2 >> s.TXD_GEN_SHIFT & 1 != self.ring_gen[TX]:
                break
            self._advance(TX)
            length = dword2 & s.TXD_LEN_MASK or s.MAX_TX_BUF_SIZE
            if not frame:                              # the SOP descriptor: what the packet asks for
                self.tx_sop = [dword3 >> s.TXD_OM_SHIFT & s.TXD_OM_MASK, dword3 & s.TXD_HLEN_MASK,
                               dword2 >> s.TXD_MSSCOF_SHIFT, length]
            if len(frame) + length > (MAX_TSO_FRAME if self.tx_sop[0] == s.OM_TSO else MAX_FRAME):
                return self._queue_error(cpu, 0, s.ERR_BIG_PKT, "tx_oversize")
            try:
                frame += self.dma.read(cpu, addr, length)
            except DmaFault:
                return self._queue_error(cpu, 0, s.ERR_TXD_INVALID, "tx_buffer_fault")
            if not dword3 & s.TXD_EOP:
                continue
            packet = self._offload(bytes(frame))
            frame.clear()
            if packet is not None:
                self._send(cpu, *packet)
            try:
                self.dma.store(cpu, s.TX_COMP.struct, self._slot(TXC), index, 0, 0,
                               s.CDTYPE_TXCOMP << s.TCD_TYPE_SHIFT | self.ring_gen[TXC] << s.TCD_GEN_SHIFT)
            except DmaFault:
                return self._queue_error(cpu, 0, s.ERR_TXD_INVALID, "tx_comp_fault")
            self._advance(TXC)
            self._trigger(cpu, self.intr_idx[0])

    def _offload(self, frame: bytes) -> tuple[bytes, int] | None:
        """What the SOP descriptor's ``om`` asks of the packet: the frame and
        its MSS (0: not TSO) to send, or None for a request no packet can
        satisfy, dropped and counted in pktsTxError."""
        om, hlen, msscof, first = self.tx_sop
        if om == s.OM_NONE:
            return frame, 0
        if om == s.OM_CSUM:
            if hlen < msscof <= s.MAX_CSUM_OFFSET and msscof + 2 <= len(frame):
                return complete_checksum(frame, hlen, msscof), 0
            why = "tx_bad_csum"
        elif om == s.OM_TSO:
            # the headers hlen names are the packet's own and lie in its first buffer (where
            # vmxnet3_copy_hdr puts them); no TCP sender cuts segments below TCP_MIN_MSS
            if msscof >= TCP_MIN_MSS and hlen <= first and is_tcpv4(frame) and hlen == _tcp_headers_end(frame):
                self.tx_stats[0] += 1                  # TSOPktsTxOK, TSOBytesTxOK
                self.tx_stats[1] += len(frame)
                return frame, msscof
            why = "tx_bad_tso"
        else:
            why = "tx_bad_om"                          # OM_ENCAP: revision 4's, not this revision 1 device's
        self.tx_stats[8] += 1                          # pktsTxError
        discard(self, why, frame)
        return None

    def _send(self, cpu: Resource, frame: bytes, mss: int) -> None:
        kind = 6 if frame[:6] == b"\xff" * 6 else 4 if frame[0] & 1 else 2     # bcast, mcast, ucast counters
        self.tx_stats[kind] += 1
        self.tx_stats[kind + 1] += len(frame)
        if self.port is None:
            return
        if mss:
            self.port.send(cpu, frame, mss)
        else:
            self.port.send(cpu, frame)

    # ---- receive (QEMU vmxnet3_receive / vmxnet3_indicate_packet) ----------------------------
    def _peek(self, ring: int) -> tuple[int, int] | None:
        """The (address, dword2) of the ring's next descriptor if the driver owns it (no DMA charged: a check)."""
        try:
            gpa = self.dma.gpa(self._slot(ring), s.DESC_SIZE, False)
        except DmaFault:
            return None
        addr, dword2, _ = s.RX_DESC.unpack_from(self.dma.buf, gpa)
        return (addr, dword2) if dword2 >> s.RXD_GEN_SHIFT == self.ring_gen[ring] else None

    def can_receive(self, size: int) -> bool:
        if not self.active or self.stopped[1]:
            return False
        head = self._peek(RX0)
        return head is not None and ((head[1] & s.RXD_LEN_MASK) >= size or self._peek(RX1) is not None)

    def _accept(self, frame: bytes) -> bool:
        mode, dst = self.rx_mode, frame[:6]
        if mode & s.RXM_PROMISC:
            return True
        if dst == b"\xff" * 6:
            return bool(mode & s.RXM_BCAST)
        if dst[0] & 1:
            return bool(mode & s.RXM_ALL_MULTI) or bool(mode & s.RXM_MCAST) and any(
                self.mcast[i:i + 6] == dst for i in range(0, len(self.mcast), 6))
        return bool(mode & s.RXM_UCAST) and dst == self.mac

    def receive(self, cpu: Resource, frame: bytes) -> None:
        if len(frame) < 14 or not self._accept(frame):
            return
        if len(frame) < ETH_MIN_FRAME:
            frame += bytes(ETH_MIN_FRAME - len(frame))
        try:
            self._indicate(cpu, frame)
        except DmaFault:
            self._queue_error(cpu, 1, s.ERR_DESC_NOT_SPT, "rx_fault")

    def _indicate(self, cpu: Resource, frame: bytes) -> None:
        """Fill a head buffer (ring 1), then body buffers (ring 2), one
        completion each; the last says EOP."""
        pos, total, frags, ring = 0, len(frame), 0, RX0
        csum = self._rx_csum(frame)
        while pos < total and frags < self.max_rx_frags:
            comp = self.dma.load(cpu, s.RX_COMP, self._slot(RXC))
            if comp[3] >> s.RCD_GEN_SHIFT == self.ring_gen[RXC]:
                break                                  # the completion ring is full
            desc = self._peek(ring)
            if desc is None:
                break
            index, addr, room = self.ring_next[ring], desc[0], desc[1] & s.RXD_LEN_MASK
            self._advance(ring)
            chunk = frame[pos:pos + room]
            self.dma.write(cpu, addr, chunk)
            pos += len(chunk)
            last = pos >= total
            dword0 = index | (s.RCD_SOP if not frags else 0) | (s.RCD_EOP if last else 0)
            dword0 |= (ring - RX0) << s.RCD_RQID_SHIFT | (0 if csum else s.RCD_CNC)
            self.dma.store(cpu, s.RX_COMP.struct, self._slot(RXC), dword0, 0, len(chunk),
                           csum | s.CDTYPE_RXCOMP << s.RCD_TYPE_SHIFT | self.ring_gen[RXC] << s.RCD_GEN_SHIFT)
            self._advance(RXC)
            frags += 1
            ring = RX1                                 # bodies come from ring 2 (Linux, no LRO)
        if pos < total:
            self.rx_stats[8] += 1                      # pktsRxOutOfBuf
            discard(self, "rx_out_of_buffers", frame)
        else:
            kind = 6 if frame[:6] == b"\xff" * 6 else 4 if frame[0] & 1 else 2
            self.rx_stats[kind] += 1
            self.rx_stats[kind + 1] += total
        if frags:
            self._trigger(cpu, self.intr_idx[1])

    def _rx_csum(self, frame: bytes) -> int:
        """A completion's checksum bits (QEMU vmxnet3_rx_update_descr): with
        UPT1_F_RXCSUM on, for a TCP or UDP over IPv4 frame whose checksums the
        host's NIC validated; 0 (the device sets ``cnc``) otherwise."""
        if not (self.upt_features & s.UPT1_F_RXCSUM and getattr(frame, "csum_valid", False)
                and frame[12:14] == b"\x08\x00" and frame[23] in (6, 17)):
            return 0
        return s.RCD_V4 | s.RCD_IPC | s.RCD_TUC | s.RCD_FCS | (s.RCD_TCP if frame[23] == 6 else s.RCD_UDP)

    # ---- live migration ---------------------------------------------------------------------
    def post_load(self) -> None:
        """Re-arm the coalescing timer pending at save."""
        if self.coalesce_armed:
            self.sim.at(self.next_intr_ok, self._coalesce_timer)

    def resume(self, cpu: Resource) -> None:
        """After a load: frames the backend held come in, descriptors the
        driver gave before the save go out."""
        if self.port is not None:
            self.port.flush(cpu)
        if self.active:
            self._doorbell(cpu)

    VMSTATE = VmState("vmxnet3", 2, (
        Flag("active"), UInt("shared", 64), UInt("temp_dsal", 32), UInt("last_cmd", 32),
        UInt("masked", 32, check=below(1 << s.MAX_INTRS, "one mask bit per interrupt")),
        UInt("pending", 32, check=below(1 << s.MAX_INTRS, "one pending bit per interrupt")), Flag("asserted"),
        Instant("next_intr_ok"), Flag("coalesce_armed"),
        UInt("held", 32, check=below(1 << s.MAX_INTRS, "one held bit per interrupt")),
        Ints("ring_pa", 64), Ints("ring_size", 32, check=lambda v, dev, staged: next(
            (f"ring {r} size {n} above {m}" for r, (n, m) in enumerate(zip(v, _MAX_SIZE)) if n > m), None)),
        Ints("ring_next", 32, check=lambda v, dev, staged: next(
            (f"ring {r} index {n} past its size {z}" for r, (n, z) in enumerate(zip(v, staged["ring_size"]))
             if n and n >= z), None)),
        Ints("ring_gen", 8, check=lambda v, dev, staged: None if all(g in (0, 1) for g in v) else "a gen is 0 or 1"),
        Ints("queue_pa", 64), Ints("stopped", 32),
        Ints("intr_idx", 8, check=lambda v, dev, staged: None if max(v) < s.MAX_INTRS else "an interrupt index "
             f"below {s.MAX_INTRS}"), Flag("auto_mask"), UInt("rx_mode", 32),
        UInt("max_rx_frags", 16), Bytes("mcast", variable=True), Bytes("mac"), UInt("temp_mac", 32),
        Bytes("tx_frame", variable=True, check=length_at_most(MAX_TSO_FRAME, "the largest VMXNET3 TSO packet")),
        Ints("tx_sop", 32), UInt("upt_features", 64),
        Ints("tx_stats", 64), Ints("rx_stats", 64), Counts("errors"), Nested("pci", PCI_FUNCTION)),
        post_load=post_load)


def _tcp_headers_end(frame: bytes) -> int:
    """Where a TCP/IPv4 frame's payload starts: Ethernet, IPv4 (IHL) and TCP (data offset) headers."""
    l4 = 14 + (frame[14] & 0xF) * 4
    return l4 + (frame[l4 + 12] >> 4) * 4


DEVICE = DeviceEntry(Vmxnet3, "paravirt", "VMware VMXNET3 paravirtual NIC (vmxnet3_defs.h)", ("VMware ESXi",),
                     "vmxnet3", (s.VENDOR_ID, s.DEVICE_ID), hypervisor="esxi",
                     offloads=("rx-checksum", "tx-checksum-ip-generic", "tx-tcp-segmentation"))
