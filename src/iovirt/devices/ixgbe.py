"""Intel 82599 10 GbE controller: the physical NIC of pass-through and the
port SR-IOV shares.

Register semantics per the 82599 datasheet chapter 8; advanced descriptor
rings per 7.1 (receive) and 7.2 (transmit); MSI-X interrupts with IVAR
mapping, auto-clear/auto-mask and EITR moderation per 7.3.  Everything the
device does runs on its DMA ``engine`` (a hardware Resource): descriptor
fetches, buffer reads and writes and write-backs are ``Dma`` transactions
charged there, never on a CPU.

Hooks the platform sets: ``port`` (the wire: ``send(engine, frame)`` returns
when the frame's last bit leaves, or None; the port calls :meth:`can_receive`
then :meth:`receive` with the engine) and ``msi(engine, vector)`` (signals an
MSI-X vector; None: interrupts go nowhere).  The packet buffers are real:
TX stops fetching while the 160 KiB TX buffer is full, RX frames that find no
descriptor wait in the 512 KiB RX buffer (or are dropped with SRRCTL.DROP_EN)
and are missed (MPC) when it overflows.  Descriptors are read in bursts into
per-queue caches (TX up to TDT, RX prefetched up to RDT), one DMA
transaction per burst; buffers and write-backs are one transaction each.
Queues waiting for room in the TX buffer are served round robin, one
packet per turn.
Only MSI-X mode signals interrupts (INTx and MSI are not modelled).

A port built with ``num_vfs`` has its virtualisation block ``vt``
(``devices.ixgbe_switch``: the virtualisation registers it ``decode``s, the
mailboxes, and while VT mode is on, ``pools``: pool switching of what is
sent and received and the transmit rate gate); ``owner`` names per queue the function whose ``dma``
requester the queue's DMA goes through, whose ``queue_irq`` its causes raise
and whose ``dma_fault`` its faults report (the PF, or a VF of its pool).
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable

from ..mem.dma import Dma, DmaFault
from ..pci.function import Bar, PciFunction
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import ixgbe as s
from ..spec.ethernet import ETH_FCS_LEN as _FCS
from ..spec.pci import PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT
from .discard import discard
from .offload import rx_checksums, store_checksum, tso_segments
from .ixgbe_switch import SriovEngine
from .regs import add64, narrow, widen
from .registry import ASSIGNERS, DeviceEntry
from .vmstate import ASSIGNED_DEVICE

_IDX = {r.name: r.offset >> 2 for r in s.REGS}
_ALIAS = {off >> 2: _IDX[name] for off, name in s.ALIASES.items()}
CTRL, STATUS, LINKS, GPIE = _IDX["CTRL"], _IDX["STATUS"], _IDX["LINKS"], _IDX["GPIE"]
EICR, EICS, EIMS, EIMC, EIAC, EIAM = (_IDX[n] for n in ("EICR", "EICS", "EIMS", "EIMC", "EIAC", "EIAM"))
EICS_EX, EIMS_EX, EIMC_EX, EIAM_EX = (_IDX[f"{n}0"] for n in ("EICS_EX", "EIMS_EX", "EIMC_EX", "EIAM_EX"))
IVAR0, IVAR_MISC = _IDX["IVAR0"], _IDX["IVAR_MISC"]
RXCTRL, FCTRL, HLREG0, MAXFRS, MCSTCTRL, MRQC = (_IDX[n] for n in ("RXCTRL", "FCTRL", "HLREG0", "MAXFRS",
                                                                  "MCSTCTRL", "MRQC"))
DMATXCTL, TXPBSIZE0, RXPBSIZE0 = _IDX["DMATXCTL"], _IDX["TXPBSIZE0"], _IDX["RXPBSIZE0"]
RAL0, MTA0, RETA0, RSSRK0 = _IDX["RAL0"], _IDX["MTA0"], _IDX["RETA0"], _IDX["RSSRK0"]
GPRC, GPTC, TPR, TPT, BPRC, MPRC, BPTC, MPTC, ROC, RUC = (_IDX[n] for n in (
    "GPRC", "GPTC", "TPR", "TPT", "BPRC", "MPRC", "BPTC", "MPTC", "ROC", "RUC"))
GORCL, GOTCL, MPC0, RNBC0 = _IDX["GORCL"], _IDX["GOTCL"], _IDX["MPC0"], _IDX["RNBC0"]
EITR = [_IDX[f"EITR{n}"] for n in range(s.MSIX_VECTORS)]
RX, TX = s.RX_BLOCK, s.TX_BLOCK                             # per-queue register blocks (dword index)
QPRC = [_IDX[f"QPRC{n}"] for n in range(16)]
QPTC = [_IDX[f"QPTC{n}"] for n in range(16)]
QPRDC = [_IDX[f"QPRDC{n}"] for n in range(16)]
RSS_HASHES = 4096                   # hash inputs remembered (the simulator's, not the NIC's)
BAH, LEN, HEAD, SRRCTL, TAIL, DCTL, QBRC = (s.BLOCK_BAH, s.BLOCK_LEN, s.BLOCK_HEAD, s.BLOCK_SRRCTL, s.BLOCK_TAIL,
                                           s.BLOCK_DCTL, s.BLOCK_QBRC)
_READ_CLEAR = frozenset(r.offset >> 2 for r in s.REGS if r.access == "rc")
_READ_ONLY = frozenset(r.offset >> 2 for r in s.REGS if r.access == "ro")
_WRITE_ONLY = frozenset(r.offset >> 2 for r in s.REGS if r.access == "wo")
_KNOWN = frozenset(_IDX.values())
_FRESH = _WRITE_ONLY | {EICR}          # written values do not merge with the stored ones
_TX_UNPACK = s.TX_DESC.unpack_from
_RX_ITER = s.RX_DESC.struct.iter_unpack
_RX_WB = s.RX_WB.struct
_TX_STATUS = s.TX_STATUS
_TX_STATUS_OFF = s.TX_WB.offset("status")
_VECTOR_BITS = (1 << s.MSIX_VECTORS) - 1
_BCAST = b"\xff" * 6
_MO_SHIFT = (4, 3, 2, 0)
_TX_WHOLE_MASK = s.TXD_CMD_DEXT | s.ADVTXD_DTYP_MASK | s.TXD_CMD_EOP | s.ADVTXD_DCMD_TSE
_TX_OFFLOADS = s.ADVTXD_POPTS_IXSM | s.ADVTXD_POPTS_TXSM
_TSO_MAX = s.ADVTXD_PAYLEN_MAX + 255                                # payload and headers (MACLEN, IPLEN, L4LEN)
_TSO_FLAGS = (s.TSO_FLAGS_FIRST, s.TSO_FLAGS_MIDDLE, s.TSO_FLAGS_LAST)
_TX_WHOLE = s.TXD_CMD_DEXT | s.ADVTXD_DTYP_DATA | s.TXD_CMD_EOP      # a data descriptor holding a whole frame

Msi = Callable[[Resource, int], None]


class Ixgbe:
    """Device state and behaviour of one 82599 port (the PF)."""

    NAME = "ixgbe"
    VMSTATE = None
    MIGRATION_BLOCKER = ASSIGNED_DEVICE

    def __init__(self, sim: Sim, mac: bytes, dma: Dma, engine: Resource, num_queues: int = s.NUM_QUEUES,
                 num_vfs: int = 0, rx_engine: Resource | None = None) -> None:
        """``engine`` moves transmit DMA and runs the device, ``rx_engine``
        (by default the same) moves receive DMA."""
        if not 1 <= num_queues <= s.NUM_QUEUES:
            raise ValueError(f"ixgbe: {num_queues} queues, not in [1, {s.NUM_QUEUES}]")
        self.sim = sim
        self.mac = bytes(mac)
        self.dma = dma
        self.engine = engine
        self.rx_engine = rx_engine or engine
        self.num_queues = num_queues
        self.port = None                    # the wire, attached by the platform
        self.msi: Msi | None = None         # MSI-X signalling, set by the platform
        self.errors: Counter[str] = Counter()
        self.place = self.NAME                  # where its drops are counted (the wiring names it)
        self.vt: SriovEngine | None = None  # the virtualisation block, with VFs
        self.pools: SriovEngine | None = None   # the same, while VT mode is on (PFVTCTL.VT_ENA)
        self.owner = [self] * num_queues    # the function each queue works for
        self.pci = PciFunction(s.VENDOR_ID, s.DEVICE_ID, s.CLASS_ETHERNET, revision=s.REVISION,
                               subsystem_vendor_id=s.VENDOR_ID, subsystem_id=s.SUBSYSTEM_ID, interrupt_pin=1,
                               bars=(Bar(0, s.BAR0_SIZE, "mem64"), Bar(s.MSIX_BAR, s.MSIX_BAR_SIZE, "mem64")))
        self.pci.add_msix(s.MSIX_BAR, s.MSIX_TABLE_OFFSET, s.MSIX_BAR, s.MSIX_PBA_OFFSET, s.MSIX_VECTORS)
        self.pci.add_pcie_endpoint()
        self._read = {STATUS: self._r_status, LINKS: self._r_links, EICR: self._r_eicr, EICS: self._r_eics,
                      EIMS: self._r_eims, EIMS_EX: self._r_eims_ex, EIMS_EX + 1: self._r_eims_ex}
        self._write = {CTRL: self._w_ctrl, EICR: self._w_eicr, EICS: self._w_eics, EIMS: self._w_eims,
                       EIMC: self._w_eimc, RXCTRL: self._w_rxctrl, DMATXCTL: self._w_dmatxctl,
                       **{EICS_EX + i: self._w_eics_ex for i in range(2)},
                       **{EIMS_EX + i: self._w_eims_ex for i in range(2)},
                       **{EIMC_EX + i: self._w_eimc_ex for i in range(2)},
                       **{RAL0 + i: self._w_rar for i in range(256)},
                       **{RSSRK0 + i: self._w_rssrk for i in range(s.RSS_KEY_SIZE // 4)}}
        self._queue_of: dict[int, int] = {}
        for q in range(num_queues):
            for idx, handler in ((RX[q] + TAIL, self._w_rdt), (RX[q] + DCTL, self._w_rxdctl),
                                 (TX[q] + TAIL, self._w_tdt), (TX[q] + DCTL, self._w_txdctl),
                                 (RX[q] + LEN, self._w_len), (TX[q] + LEN, self._w_len)):
                self._write[idx] = handler
                self._queue_of[idx] = q
        inactive = {idx for q in range(num_queues, s.NUM_QUEUES) for base in (RX[q], TX[q])
                    for idx in range(base, base + 16)}
        self._readable = _KNOWN - _WRITE_ONLY - inactive
        self._writable = _KNOWN - _READ_ONLY - _READ_CLEAR - inactive
        self.epoch = 0
        self.reset()
        if num_vfs:
            self.vt = SriovEngine(self, num_vfs)

    # ---- reset -----------------------------------------------------------
    def reset(self) -> None:
        """CTRL.RST: registers to their defaults, the NVM's MAC into RAR[0]."""
        self.epoch += 1                     # timers armed before the reset do nothing
        self.r = r = [0] * (s.BAR0_SIZE >> 2)
        for reg in s.REGS:
            r[reg.offset >> 2] = reg.reset
        r[RAL0] = int.from_bytes(self.mac[:4], "little")
        r[RAL0 + 1] = int.from_bytes(self.mac[4:], "little") | s.RAH_AV
        self.uc_filter = {self.mac}
        self.vcause = self.vmask = 0        # per MSI-X vector (EICR/EIMS 15:0 and the _EX registers)
        self.other = self.omask = 0         # EICR/EIMS bits 31:16
        self.next_irq_ok = [0.0] * s.MSIX_VECTORS
        self.eitr_armed: set[int] = set()
        self.rss_tables = None
        self.rss_hashes: dict[bytes, int] = {}      # the Toeplitz hash of each hash input seen
        self.tx_parts: list[list[bytes]] = [[] for _ in range(self.num_queues)]
        self.tx_len = [0] * self.num_queues
        self.tx_discard = [False] * self.num_queues
        self.tx_first: list[tuple[int, int] | None] = [None] * self.num_queues    # the packet's first (cmd, olinfo)
        self.tx_ctx: list[list[tuple[int, int, int] | None]] = [[None] * s.ADVTXD_TSO_CONTEXTS
                                                               for _ in range(self.num_queues)]
        self.tx_cache: list[tuple | None] = [None] * self.num_queues    # ((base, count, head), descriptors, n)
        self.rx_cache: list[tuple | None] = [None] * self.num_queues    # (base << 32 | count, head, buffers)
        self.tx_fifo: deque[tuple[float, int]] = deque()   # (time the wire has sent it, bytes)
        self.tx_fifo_bytes = 0
        self.tx_stalled = False
        self.tx_waiting: set[int] = set()
        self.tx_rr = 0                      # the queue whose turn is next
        self.rx_fifo: deque[tuple[int, bytes, int, int]] = deque()
        self.rx_fifo_bytes = 0
        if self.vt is not None:
            self.vt.reset()

    def decode(self, registers, reads: dict, writes: dict) -> None:
        """Map more registers (dword indexes) into BAR0, with optional handlers:
        ``reads[idx](idx)``, ``writes[idx](cpu, idx, value)``."""
        self._read.update(reads)
        self._write.update(writes)
        self._readable = self._readable | set(registers)
        self._writable = self._writable | set(registers)

    # ---- register access ----------------------------------------------------
    def bar_handlers(self, index: int):
        return (self.mmio_read, self.mmio_write) if index == 0 else (self.msix_read, self.msix_write)

    def msix_read(self, cpu: Resource, offset: int, size: int) -> int:
        return self.pci.msix.read(s.MSIX_BAR, offset, size)

    def msix_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        self.pci.msix.write(s.MSIX_BAR, offset, size, value)

    def mmio_read(self, cpu: Resource, offset: int, size: int) -> int:
        idx = offset >> 2
        idx = _ALIAS.get(idx, idx)
        reader = self._read.get(idx)
        if reader is not None:
            return narrow(reader(idx), offset, size)
        if idx not in self._readable:
            return 0
        value = self.r[idx]
        if idx in _READ_CLEAR:
            self.r[idx] = 0
        return narrow(value, offset, size)

    def mmio_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        idx = offset >> 2
        idx = _ALIAS.get(idx, idx)
        if idx not in self._writable:
            return
        value = value & 0xFFFFFFFF if size == 4 else widen(0 if idx in _FRESH else self.r[idx], value, offset, size)
        handler = self._write.get(idx)
        if handler is None:
            self.r[idx] = value
        else:
            handler(cpu, idx, value)

    def _r_status(self, idx: int) -> int:
        gio = 0 if self.r[CTRL] & s.CTRL_GIO_DIS else s.STATUS_GIO
        return (self.r[STATUS] & ~s.STATUS_GIO) | gio | (s.STATUS_LU if self.port is not None else 0)

    def _r_links(self, idx: int) -> int:
        return s.LINKS_UP | s.LINKS_SPEED_10G if self.port is not None else 0

    def _w_ctrl(self, cpu: Resource, idx: int, value: int) -> None:
        if value & s.CTRL_RST:
            self.reset()                     # RST self-clears
        else:
            self.r[CTRL] = value & ~s.CTRL_LNK_RST

    def _w_len(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[idx] = value & 0xFFF80       # 128-byte multiples

    def _w_rar(self, cpu: Resource, idx: int, value: int) -> None:
        r = self.r
        r[idx] = value
        self.uc_filter = {(r[RAL0 + 2 * i] | (r[RAL0 + 2 * i + 1] & 0xFFFF) << 32).to_bytes(6, "little")
                          for i in range(128) if r[RAL0 + 2 * i + 1] & s.RAH_AV}

    def _w_rssrk(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[idx] = value
        self.rss_tables = None

    # ---- interrupts (7.3) -----------------------------------------------------
    def _r_eicr(self, idx: int) -> int:
        """Read clears; with GPIE.OCD the other causes stay until written."""
        value = self._r_eics(idx)
        self.vcause &= ~0xFFFF
        if not self.r[GPIE] & s.GPIE_OCD:
            self.other = 0
        return value

    def _r_eics(self, idx: int) -> int:
        return (self.vcause & 0xFFFF) | self.other

    def _r_eims(self, idx: int) -> int:
        return (self.vmask & 0xFFFF) | self.omask

    def _r_eims_ex(self, idx: int) -> int:
        return (self.vmask >> (32 * (idx - EIMS_EX))) & 0xFFFFFFFF

    def _w_eicr(self, cpu: Resource, idx: int, value: int) -> None:
        self.vcause &= ~(value & 0xFFFF)
        self.other &= ~(value & 0xFFFF0000)

    def _w_eics(self, cpu: Resource, idx: int, value: int) -> None:
        self.other |= value & 0xFFFF0000
        self._set_vectors(cpu, value & 0xFFFF)

    def _w_eics_ex(self, cpu: Resource, idx: int, value: int) -> None:
        self._set_vectors(cpu, value << (32 * (idx - EICS_EX)))

    def _w_eims(self, cpu: Resource, idx: int, value: int) -> None:
        self.omask |= value & 0xFFFF0000
        self._unmask(cpu, value & 0xFFFF)

    def _w_eims_ex(self, cpu: Resource, idx: int, value: int) -> None:
        self._unmask(cpu, value << (32 * (idx - EIMS_EX)))

    def _w_eimc(self, cpu: Resource, idx: int, value: int) -> None:
        self.omask &= ~(value & 0xFFFF0000)
        self.vmask &= ~(value & 0xFFFF)

    def _w_eimc_ex(self, cpu: Resource, idx: int, value: int) -> None:
        self.vmask &= ~(value << (32 * (idx - EIMC_EX)))

    def _set_vectors(self, cpu: Resource, bits: int) -> None:
        self.vcause |= bits & _VECTOR_BITS
        self._fire_pending(cpu)

    def _unmask(self, cpu: Resource, bits: int) -> None:
        self.vmask |= bits & _VECTOR_BITS
        self._fire_pending(cpu)

    def _fire_pending(self, cpu: Resource) -> None:
        ready = self.vcause & self.vmask
        if not ready:
            return
        engine = self.engine
        engine.sync(cpu.cursor)
        while ready:
            vector = (ready & -ready).bit_length() - 1
            ready &= ready - 1
            self._try_fire(engine, vector)

    def _queue_cause(self, engine: Resource, ivar: int) -> None:
        """A queue's cause, routed by its IVAR entry to a vector."""
        if ivar & s.IVAR_ALLOC_VAL:
            vector = ivar & s.IVAR_VECTOR_MASK
            self.vcause |= 1 << vector
            if self.vmask >> vector & 1:
                self._try_fire(engine, vector)

    def other_cause(self, engine: Resource, cause: int) -> None:
        """EICR bits 31:16, signalled on the vector IVAR_MISC names."""
        self.other |= cause
        misc = self.r[IVAR_MISC] >> s.IVAR_MISC_OTHER_SHIFT
        if cause & self.omask and misc & s.IVAR_ALLOC_VAL:
            vector = misc & s.IVAR_VECTOR_MASK
            self.vcause |= 1 << vector
            self._try_fire(engine, vector)

    def _try_fire(self, engine: Resource, vector: int) -> None:
        """EITR: at most one message per interval; a cause arriving inside it
        waits for the interval's end."""
        now = engine.cursor
        if now < self.next_irq_ok[vector]:
            if vector not in self.eitr_armed:
                self.eitr_armed.add(vector)
                self.sim.at(self.next_irq_ok[vector], self._eitr_expired, vector, self.epoch)
            return
        r = self.r
        interval = s.eitr_interval_ns(r[EITR[vector]])
        self.next_irq_ok[vector] = now + interval if interval else 0.0      # 0: not moderated
        bit = 1 << vector
        if vector >= 16 or r[EIAC] & bit:
            self.vcause &= ~bit             # auto-clear on MSI-X
        if r[GPIE] & s.GPIE_EIAME and ((r[EIAM_EX + 1] << 32 | r[EIAM_EX] | r[EIAM] & 0xFFFF) & bit):
            self.vmask &= ~bit              # auto-mask
        if r[GPIE] & s.GPIE_MSIX_MODE and self.msi is not None:
            self.msi(engine, vector)

    def _eitr_expired(self, vector: int, epoch: int) -> None:
        if epoch != self.epoch:
            return
        self.eitr_armed.discard(vector)
        if (self.vcause & self.vmask) >> vector & 1:
            engine = self.engine
            engine.sync(self.sim.now)
            self._try_fire(engine, vector)

    def queue_irq(self, engine: Resource, q: int, tx: int) -> None:
        """A queue's cause through its IVAR entry (8 bits per queue and direction)."""
        self._queue_cause(engine, self.r[IVAR0 + (q >> 1)] >> (16 * (q & 1) + 8 * tx) & 0xFF)

    # ---- transmit (7.2) -------------------------------------------------------
    def _w_tdt(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[idx] = value & 0xFFFF
        self.tx_kick(cpu, self._queue_of[idx])

    def _w_txdctl(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[idx] = value & ~s.TXDCTL_SWFLSH
        self.tx_kick(cpu, self._queue_of[idx])

    def _w_dmatxctl(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[idx] = value
        for q in range(self.num_queues):
            if self.r[TX[q] + HEAD] != self.r[TX[q] + TAIL]:
                self.tx_kick(cpu, q)

    def tx_kick(self, cpu: Resource, q: int) -> None:
        r = self.r
        if not (r[DMATXCTL] & s.DMATXCTL_TE and r[TX[q] + DCTL] & s.TXDCTL_ENABLE):
            return
        if self.tx_stalled:
            self.tx_waiting.add(q)
            return
        engine = self.engine
        engine.sync(cpu.cursor)
        self.tx_rr = q + 1                  # the round robin goes on after it
        self._xmit(engine, q)

    def _xmit(self, engine: Resource, q: int, one: bool = False) -> bool:
        """Fetch descriptors from TDH up to TDT (at most one ring's worth) in
        bursts of up to a descriptor cache's worth; descriptors fetched but not
        yet processed (the packet buffer filled, the queue's turn ended) stay
        cached for the next time.  ``one``: the turn is one packet; returns
        whether it ended with more descriptors to process."""
        r = self.r
        b = TX[q]
        base = r[b + BAH] << 32 | r[b]
        count = r[b + LEN] >> 4
        budget = count
        reported = more = False
        while budget > 0:
            head, tail = r[b + HEAD], r[b + TAIL]
            if head == tail or head >= count:
                break
            cached, self.tx_cache[q] = self.tx_cache[q], None
            if cached is not None and cached[0] == (base, count, head):
                _, burst, at, n = cached
            else:
                at, n = 0, min((min(tail, count) if tail > head else count) - head, s.TX_DESC_CACHE, budget)
                try:
                    burst = self.owner[q].dma.read(engine, base + (head << 4), n << 4)
                except DmaFault:
                    self.owner[q].dma_fault("tx_desc_fault")
                    break
            done, reported_now = self._tx_burst(engine, q, base, count, burst, at, n, one)
            reported |= reported_now
            if done < 0:                    # the turn's packet is out
                more = r[b + HEAD] != r[b + TAIL]
                break
            budget = budget - done if done == n else 0
        if reported:
            self.owner[q].queue_irq(engine, q, 1)
        return more

    def _tx_burst(self, engine: Resource, q: int, base: int, count: int, burst: bytes, at: int, n: int,
                  one: bool) -> tuple[int, bool]:
        """Process the ``n`` fetched descriptors from ``at`` in ``burst``;
        returns (how many, whether any reported status), how many being -1
        when ``one`` packet has ended the queue's turn."""
        r, owner = self.r, self.owner[q]
        dma = owner.dma
        b = TX[q]
        reported = False
        end = at + n
        for i in range(at, end):
            head = r[b + HEAD]
            if head == r[b + TAIL] or (not self.tx_parts[q] and not self.tx_discard[q]
                                       and not self._tx_room(engine, q)):
                self.tx_cache[q] = ((base, count, head), burst, i, end - i)
                return i - at, reported
            buf, cmd, olinfo = _TX_UNPACK(burst, i << 4)
            self._tx_desc(engine, q, buf, cmd, olinfo)
            if cmd & s.TXD_CMD_RS:
                try:
                    dma.store(engine, _TX_STATUS, base + (head << 4) + _TX_STATUS_OFF, s.TXD_STAT_DD)
                    reported = True
                except DmaFault:
                    owner.dma_fault("tx_writeback_fault")
            head = r[b + HEAD] = head + 1 if head + 1 < count else 0
            if one and cmd & s.TXD_CMD_EOP:
                if i + 1 < end:
                    self.tx_cache[q] = ((base, count, head), burst, i + 1, end - i - 1)
                return -1, reported
        return n, reported

    def _tx_desc(self, engine: Resource, q: int, buf: int, cmd: int, olinfo: int) -> None:
        length = cmd & s.ADVTXD_DTALEN_MASK
        if (cmd & _TX_WHOLE_MASK == _TX_WHOLE and 0 < length <= s.MAX_TX_FRAME and not self.tx_parts[q]
                and not self.tx_discard[q] and not olinfo & _TX_OFFLOADS):
            # NOTE: _tx_gather inlined for a frame in one descriptor without offloads
            try:
                frame = self.owner[q].dma.read(engine, buf, length)
            except DmaFault:
                self.owner[q].dma_fault("tx_buffer_fault")
                return
            self._transmit(engine, q, frame)
            return
        if not cmd & s.TXD_CMD_DEXT or cmd & s.ADVTXD_DTYP_MASK not in (s.ADVTXD_DTYP_DATA, s.ADVTXD_DTYP_CTXT):
            discard(self, "tx_unsupported_descriptor")
        elif cmd & s.ADVTXD_DTYP_MASK == s.ADVTXD_DTYP_CTXT:
            # 7.2.3.2.3: the context goes into its slot; no data, no EOP
            self.tx_ctx[q][olinfo >> s.ADVTXD_IDX_SHIFT & 1] = (buf & 0xFFFFFFFF, cmd, olinfo)
            return
        else:
            if self.tx_first[q] is None:
                self.tx_first[q] = (cmd, olinfo)            # the first descriptor's offload fields rule the packet
            if not self.tx_discard[q] and length:
                self._tx_gather(engine, q, buf, length)
        if cmd & s.TXD_CMD_EOP:
            parts = self.tx_parts[q]
            if parts:
                packet = parts[0] if len(parts) == 1 else b"".join(parts)
                first = self.tx_first[q]
                if first is not None and (first[0] & s.ADVTXD_DCMD_TSE or first[1] & _TX_OFFLOADS):
                    for frame in self._tx_offload(q, packet, *first):
                        self._transmit(engine, q, frame)
                else:
                    self._transmit(engine, q, packet)
                parts.clear()
            self.tx_len[q] = 0
            self.tx_discard[q] = False
            self.tx_first[q] = None

    def _tx_offload(self, q: int, packet: bytes, cmd: int, olinfo: int) -> list[bytes]:
        """7.2.4, 7.2.5: the packet's checksums inserted, or (TSE) the packet
        cut into segments of the context's MSS, by the context the first
        descriptor names (CC, IDX).  A packet whose context is missing or does
        not fit it (MSS 0, headers past its end, a payload other than PAYLEN)
        is dropped and counted."""
        ctx = self.tx_ctx[q][olinfo >> s.ADVTXD_IDX_SHIFT & 1] if olinfo & s.ADVTXD_CC else None
        if ctx is None:
            discard(self, "tx_no_context", packet)
            return []
        macip, tucmd, mss_l4len = ctx
        maclen = macip >> s.ADVTXD_MACLEN_SHIFT & s.ADVTXD_MACLEN_MASK
        iplen = macip & s.ADVTXD_IPLEN_MASK
        tucss = maclen + iplen
        ipcso = maclen + 10 if olinfo & s.ADVTXD_POPTS_IXSM and tucmd & s.ADVTXD_TUCMD_IPV4 else None
        tucso = (tucss + (16 if tucmd & s.ADVTXD_TUCMD_L4T_TCP else 6)) if olinfo & s.ADVTXD_POPTS_TXSM else None
        if not cmd & s.ADVTXD_DCMD_TSE:
            if tucss > len(packet) or any(at is not None and at + 2 > len(packet) for at in (ipcso, tucso)):
                discard(self, "tx_bad_context", packet)
                return []
            frame = bytearray(packet)
            if ipcso is not None:
                store_checksum(frame, maclen, tucss, ipcso)
            if tucso is not None:
                store_checksum(frame, tucss, len(frame), tucso)
            return [bytes(frame)]
        mss = mss_l4len >> s.ADVTXD_MSS_SHIFT
        hdrlen = tucss + (mss_l4len >> s.ADVTXD_L4LEN_SHIFT & 0xFF)
        if (not mss or not tucmd & s.ADVTXD_TUCMD_L4T_TCP or iplen < 20 or hdrlen - tucss < 20
                or hdrlen >= len(packet) or len(packet) - hdrlen != olinfo >> s.ADVTXD_PAYLEN_SHIFT
                or hdrlen + mss > s.MAX_TX_FRAME):
            discard(self, "tx_bad_tso", packet)
            return []
        return tso_segments(packet, hdrlen, mss, maclen, ipcso, tucss, tucss, tucso, _TSO_FLAGS)

    def _tx_gather(self, engine: Resource, q: int, buf: int, length: int) -> None:
        first = self.tx_first[q]
        if self.tx_len[q] + length > (_TSO_MAX if first is not None and first[0] & s.ADVTXD_DCMD_TSE
                                      else s.MAX_TX_FRAME):
            discard(self, "tx_oversize")
        else:
            try:
                self.tx_parts[q].append(self.owner[q].dma.read(engine, buf, length))
                self.tx_len[q] += length
                return
            except DmaFault:
                self.owner[q].dma_fault("tx_buffer_fault")
        self.tx_parts[q].clear()            # drop the rest of the packet, up to EOP
        self.tx_len[q] = 0
        self.tx_discard[q] = True

    def _transmit(self, engine: Resource, q: int, frame: bytes) -> None:
        r = self.r
        if len(frame) < s.ETH_MIN_FRAME and r[HLREG0] & s.HLREG0_TXPADEN:
            frame += bytes(s.ETH_MIN_FRAME - len(frame))
        if self.pools is not None:
            frame = self.pools.transmit(engine, q, frame)   # 7.10.3: anti-spoofing, VLAN insert, the VEB
            if frame is None:
                return
        size = len(frame)
        r[GPTC] += 1
        r[TPT] += 1
        add64(r, GOTCL, size + _FCS)
        if q < 16:
            r[QPTC[q]] += 1
        if frame[0] & 1:
            r[BPTC if frame[:6] == _BCAST else MPTC] += 1
        if self.port is None:
            return
        sent = self.port.send(engine, frame)
        if sent is not None:
            self.tx_fifo.append((sent, size))
            self.tx_fifo_bytes += size

    def _tx_room(self, engine: Resource, q: int) -> bool:
        """May queue ``q`` fetch its next packet?  Not while its rate or
        PFVFTE hold it, nor while the packet buffer is full."""
        if self.pools is not None and not self.pools.tx_ready(engine, q):
            return False                    # 7.7.2 rate limiter or PFVFTE: the engine resumes the queue
        if self._tx_full(engine):
            self.tx_waiting.add(q)
            return False
        return True

    def _tx_full(self, engine: Resource) -> bool:
        """The TX packet buffer must hold a largest packet before the next is
        fetched; otherwise fetching stops until the wire has drained it."""
        fifo = self.tx_fifo
        now = engine.cursor
        while fifo and fifo[0][0] <= now:
            self.tx_fifo_bytes -= fifo.popleft()[1]
        capacity = self.r[TXPBSIZE0] & 0xFFC00
        if not fifo or self.tx_fifo_bytes + s.MAX_TX_FRAME <= capacity:
            return False
        excess = self.tx_fifo_bytes + s.MAX_TX_FRAME - capacity
        for sent, size in fifo:
            excess -= size
            if excess <= 0:
                break
        self.tx_stalled = True
        self.sim.at(sent, self._tx_resume, self.epoch)
        return True

    def _tx_resume(self, epoch: int) -> None:
        if epoch != self.epoch:
            return
        self.tx_stalled = False
        engine = self.engine
        engine.sync(self.sim.now)
        self._tx_arbitrate(engine)

    def _tx_arbitrate(self, engine: Resource) -> None:
        """Serve the queues waiting for the packet buffer until it is full
        again: round robin, one packet per queue and turn, from the queue
        after the last one served (82599 datasheet 7.2.1.2 and 7.7: without
        DCB, RTTDCS.TDPAC and VMPAC clear, the descriptor plane and VM
        arbiters go round robin over the queues and pools with work).  A
        queue waiting alone is served until the buffer is full."""
        waiting = self.tx_waiting
        while waiting:
            if len(waiting) == 1:
                self.tx_kick(engine, waiting.pop())
                return
            order = sorted(waiting)
            k = len(order)
            first = bisect_left(order, self.tx_rr)
            for j in range(first, first + k):
                q = order[j % k]
                waiting.discard(q)
                if self._tx_turn(engine, q):
                    waiting.add(q)
                if self.tx_stalled:         # no room for its packet: its turn comes first
                    self.tx_rr = q
                    return
                self.tx_rr = q + 1
                if waiting and self._tx_full(engine):
                    return

    def _tx_turn(self, engine: Resource, q: int) -> bool:
        """One packet from queue ``q``, if it is enabled; whether it has more."""
        r = self.r
        if not (r[DMATXCTL] & s.DMATXCTL_TE and r[TX[q] + DCTL] & s.TXDCTL_ENABLE):
            return False
        return self._xmit(engine, q, True)

    # ---- receive (7.1) ----------------------------------------------------------
    def can_receive(self, size: int) -> bool:
        """The MAC takes every frame while the receiver is on; the packet
        buffer decides later what is missed."""
        return bool(self.r[RXCTRL] & s.RXCTRL_RXEN)

    def receive(self, engine: Resource, frame: bytes) -> None:
        """A frame from the wire (without FCS), on the DMA engine."""
        r = self.r
        size = len(frame)
        if size < 14:
            r[RUC] += 1
            return
        if size + _FCS > (r[MAXFRS] >> 16 if r[HLREG0] & s.HLREG0_JUMBOEN else 1518):
            r[ROC] += 1
            return
        if self.pools is not None:
            self.pools.receive(engine, frame)               # 7.10.3.3: pool selection and replication
        elif self._accept(frame):
            self.deliver(engine, frame, *self._steer(frame))

    def deliver(self, engine: Resource, frame: bytes, q: int, rss: int = 0, info: int = 0) -> None:
        """Count a frame the filters accepted and post it to RX queue ``q``,
        or hold it in the RX packet buffer."""
        r = self.r
        size = len(frame)
        r[GPRC] += 1
        r[TPR] += 1
        add64(r, GORCL, size + _FCS)
        if frame[0] & 1:
            r[BPRC if frame[:6] == _BCAST else MPRC] += 1
        if not r[HLREG0] & s.HLREG0_RXCRCSTRP:
            frame += zlib.crc32(frame).to_bytes(4, "little")
        if self.rx_fifo:
            self._rx_hold(engine, q, frame, rss, info)
        elif not self._rx_post(engine, q, frame, rss, info):
            r[RNBC0] += 1
            self._rx_hold(engine, q, frame, rss, info)

    def _accept(self, frame: bytes) -> bool:
        """7.1.1 L2 filtering: exact unicast (RAR), broadcast, multicast table."""
        r = self.r
        fctrl = r[FCTRL]
        dst = frame[:6]
        if not dst[0] & 1:
            return bool(fctrl & s.FCTRL_UPE) or dst in self.uc_filter
        if dst == _BCAST:
            return bool(fctrl & s.FCTRL_BAM)
        if fctrl & s.FCTRL_MPE:
            return True
        mcst = r[MCSTCTRL]
        if not mcst & s.MCSTCTRL_MFE:
            return False
        shift = _MO_SHIFT[mcst & s.MCSTCTRL_MO_MASK]      # MO selects address bits [47:36] .. [43:32]
        bit = (dst[4] >> shift | dst[5] << (8 - shift)) & 0xFFF
        return bool(r[MTA0 + (bit >> 5)] >> (bit & 31) & 1)

    def _steer(self, frame: bytes) -> tuple[int, int, int]:
        """7.1.2.8 RSS: (queue, hash, pkt_info) from the Toeplitz hash of the
        IPv4 addresses (and TCP/UDP ports when enabled) through RETA."""
        r = self.r
        mrqc = r[MRQC]
        if mrqc & s.MRQC_MRQE_MASK != s.MRQC_RSSEN:
            return 0, 0, 0
        rss, info = 0, 0
        parsed = _rss_input(frame, mrqc)
        if parsed is not None:
            info, data = parsed
            if self.rss_tables is None:
                key = b"".join(r[RSSRK0 + i].to_bytes(4, "little") for i in range(s.RSS_KEY_SIZE // 4))
                self.rss_tables, self.rss_hashes = s.toeplitz_tables(key, 12), {}
            rss = self.rss_hashes.get(data)
            if rss is None:                             # a flow's hash, once per key
                if len(self.rss_hashes) >= RSS_HASHES:
                    self.rss_hashes.clear()
                rss = self.rss_hashes[data] = s.toeplitz(self.rss_tables, data)
        entry = rss & (s.RETA_ENTRIES - 1)
        q = (r[RETA0 + (entry >> 2)] >> (8 * (entry & 3))) & s.RETA_QUEUE_MASK
        return q, rss, info

    def _rx_post(self, engine: Resource, q: int, frame: bytes, rss: int, info: int) -> bool:
        """DMA one frame into queue ``q``; False if it must wait for descriptors."""
        r = self.r
        b = RX[q]
        srrctl = r[b + SRRCTL]
        bsize = s.rx_buffer_size(srrctl)
        if (q >= self.num_queues or not r[b + DCTL] & s.RXDCTL_ENABLE or not bsize
                or srrctl & s.SRRCTL_DESCTYPE_MASK != s.SRRCTL_DESCTYPE_ADV_ONEBUF):
            self._rx_drop(q, "rx_queue_disabled", frame)
            return True
        count, head = r[b + LEN] >> 4, r[b + HEAD]
        need = -(-len(frame) // bsize)
        if not count or head >= count or (r[b + TAIL] - head) % count < need:
            if srrctl & s.SRRCTL_DROP_EN:
                r[RNBC0] += 1
                self._rx_drop(q, "rx_no_descriptor", frame)
                return True
            return False
        owner = self.owner[q]
        dma, base = owner.dma, r[b + BAH] << 32 | r[b]
        total, pos = len(frame), 0
        written = []
        try:
            bufs = self._rx_descriptors(engine, q, base, count, head, (r[b + TAIL] - head) % count, need)
            for buf in bufs:
                chunk = frame if need == 1 else frame[pos:pos + bsize]
                pos += len(chunk)
                dma.write(engine, buf, chunk)
                written.append((base + (head << 4), len(chunk), pos >= total))
                head = head + 1 if head + 1 < count else 0
                r[b + HEAD] = head
        except DmaFault:
            self.rx_cache[q] = None
            owner.dma_fault("rx_fault")
            self._rx_drop(q, "rx_dma_fault", frame)
            if written:                     # the buffers filled before the fault are reported, no cause
                self.sim.urgent(engine.cursor, self._rx_write_back, q, written, rss, info, None, self.epoch)
            return True
        if q < 16:
            r[QPRC[q]] += 1
            add64(r, b + QBRC, total)
        self.sim.urgent(engine.cursor, self._rx_write_back, q, written, rss, info, frame, self.epoch)
        return True

    def _rx_write_back(self, q: int, written: list, rss: int, info: int, frame: bytes | None,
                       epoch: int) -> None:
        """7.1.6.2: the descriptors are written back once the frame's data is
        in host memory (when the engine's DMA of it completes, not before a
        driver polling the ring may see DD), then the queue's cause; ``frame``
        None: what a DMA fault cut short, already counted, raises no cause."""
        if epoch != self.epoch:
            return
        engine, owner = self.rx_engine, self.owner[q]
        engine.sync(self.sim.now)
        checks = s.RXD_STAT_EOP | _rx_checksum_bits(frame) if frame is not None else s.RXD_STAT_EOP
        try:
            for addr, length, eop in written:
                owner.dma.store(engine, _RX_WB, addr, info, 0, rss,
                                s.RXD_STAT_DD | (checks if eop else 0), length, 0)
        except DmaFault:
            owner.dma_fault("rx_fault")
            if frame is not None:
                self._rx_drop(q, "rx_dma_fault", frame)
            return
        if frame is not None:
            owner.queue_irq(engine, q, 0)

    def _rx_descriptors(self, engine: Resource, q: int, base: int, count: int, head: int, free: int,
                        need: int) -> list[int]:
        """Buffer addresses of the ``need`` descriptors from RDH: from the
        queue's prefetched descriptors, fetching more in bursts of up to a
        cache's worth of the free ones (``need <= free``)."""
        cached, self.rx_cache[q] = self.rx_cache[q], None
        bufs = cached[2] if cached is not None and cached[:2] == (base << 32 | count, head) else []
        at, left = (head + len(bufs)) % count, free - len(bufs)
        while len(bufs) < need:
            n = min(count - at, s.RX_DESC_CACHE, left)
            burst = self.owner[q].dma.read(engine, base + (at << 4), n << 4)
            bufs += [desc[0] for desc in _RX_ITER(burst)]
            at, left = (at + n) % count, left - n
        self.rx_cache[q] = (base << 32 | count, (head + need) % count, bufs[need:])
        return bufs[:need]

    def _rx_drop(self, q: int, why: str, frame: bytes) -> None:
        discard(self, why, frame)
        if q < 16:
            self.r[QPRDC[q]] += 1

    def _rx_hold(self, engine: Resource, q: int, frame: bytes, rss: int, info: int) -> None:
        """No descriptor yet: wait in the RX packet buffer; missed when full."""
        if self.rx_fifo_bytes + len(frame) > self.r[RXPBSIZE0] & 0xFFC00:
            self.r[MPC0] += 1
            discard(self, "rx_missed", frame)
            self.other_cause(engine, s.EICR_RX_MISS)
            return
        self.rx_fifo.append((q, frame, rss, info))
        self.rx_fifo_bytes += len(frame)

    def _rx_drain(self, cpu: Resource) -> None:
        """Descriptors or queues came back: post held frames in order."""
        fifo = self.rx_fifo
        if not fifo or not self.r[RXCTRL] & s.RXCTRL_RXEN:
            return
        engine = self.rx_engine
        engine.sync(cpu.cursor)
        while fifo:
            q, frame, rss, info = fifo[0]
            if not self._rx_post(engine, q, frame, rss, info):
                return
            fifo.popleft()
            self.rx_fifo_bytes -= len(frame)

    def _w_rdt(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[idx] = value & 0xFFFF
        self._rx_drain(cpu)

    def _w_rxdctl(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[idx] = value & ~s.RXDCTL_SWFLSH
        self._rx_drain(cpu)

    def _w_rxctrl(self, cpu: Resource, idx: int, value: int) -> None:
        self.r[idx] = value
        self._rx_drain(cpu)

    def dma_fault(self, what: str) -> None:
        """The bus master's request got no completion: PCI 3.0 6.2.3 STATUS bit."""
        self.errors[what] += 1
        self.pci.config.set_bits(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT, True)


def _rx_checksum_bits(frame: bytes) -> int:
    """7.1.11: the last descriptor of an IPv4 frame says which checksums the
    82599 checked (IPCS, L4CS) and which it found wrong (IPE, TCPE)."""
    ip_checked, ip_ok, l4_checked, l4_ok = rx_checksums(frame)
    return ((s.RXD_STAT_IPCS if ip_checked else 0) | (0 if ip_ok or not ip_checked else s.RXDADV_ERR_IPE)
            | (s.RXD_STAT_L4CS if l4_checked else 0) | (0 if l4_ok or not l4_checked else s.RXDADV_ERR_TCPE))


def _rss_input(frame: bytes, mrqc: int) -> tuple[int, bytes] | None:
    """(pkt_info, hash input) for an IPv4 frame whose type MRQC enables."""
    if len(frame) < 34 or frame[12] != 0x08 or frame[13] != 0x00 or frame[14] >> 4 != 4:
        return None
    ihl = (frame[14] & 0xF) * 4
    proto = frame[23]
    l4 = 14 + ihl
    whole = not (frame[20] & 0x3F or frame[21]) and len(frame) >= l4 + 4     # not a fragment
    if whole and proto == 17 and mrqc & s.MRQC_RSS_FIELD_IPV4_UDP:
        return s.RXDADV_RSSTYPE_IPV4_UDP | s.RXDADV_PKTTYPE_IPV4 | s.RXDADV_PKTTYPE_UDP, frame[26:34] + frame[l4:l4 + 4]
    if whole and proto == 6 and mrqc & s.MRQC_RSS_FIELD_IPV4_TCP:
        return s.RXDADV_RSSTYPE_IPV4_TCP | s.RXDADV_PKTTYPE_IPV4 | s.RXDADV_PKTTYPE_TCP, frame[26:34] + frame[l4:l4 + 4]
    if mrqc & s.MRQC_RSS_FIELD_IPV4:
        return s.RXDADV_RSSTYPE_IPV4 | s.RXDADV_PKTTYPE_IPV4, frame[26:34]
    return None


DEVICE = DeviceEntry(Ixgbe, "passthrough", "Intel 82599 10 GbE physical function, assigned whole via the IOMMU",
                     ASSIGNERS, "ixgbe", (s.VENDOR_ID, s.DEVICE_ID),
                     offloads=("rx-checksum", "tx-checksum-ipv4", "tx-tcp-segmentation"))
