"""SR-IOV on the 82599: the PF's virtualisation engine and its Virtual
Functions (82599 datasheet 7.10, 8.3; Linux ixgbe_sriov.c for the PF
driver's side).

- :class:`SriovEngine` attaches to an :class:`~iovirt.devices.ixgbe.Ixgbe`
  port: 64 pools of 2 queue pairs, pools 0..n-1 for the VFs and pool n (the
  VMDq offset) for the PF.  It decodes the PF's virtualisation registers
  (mailboxes, MPSAR, PFVML2FLT, PFVLVF/B, PFVMVIR, PFVFSPOOF, PFVFRE/TE,
  PFVTCTL, PFDTXGSWC, PFQDE, RTTDQSEL/RTTBCNRC) and is the embedded switch
  (VEB): what any pool sends is checked against anti-spoofing, tagged with
  the pool's default VLAN, and looked up by destination MAC and VLAN; a frame
  for another pool is DMA'd into that pool's RX queue by the NIC engine and
  never reaches the wire, broadcast and multicast go to every accepting pool
  and the wire, anything else to the wire.  Frames from the wire go to the
  pool owning their MAC (and VLAN), broadcast to all accepting pools.  Each
  TX queue with RTTBCNRC.RS_ENA is paced by its own rate Resource: a frame
  may start once the previous one's time at line rate times the rate factor
  has passed (virtual finish time); until then the queue is not fetched.
- :class:`VirtualFunction` is one VF: its own PCI function (8086:10ED, BAR0
  16 KiB, MSI-X with 3 vectors in BAR3), its own DMA requester (``dma``: its
  IOMMU translator), its own interrupt block (VTEICR/VTEIMS/VTIVAR/VTEITR)
  signalled through ``msi(engine, vector)``, and a register file whose queue
  registers are the PF's physical queues of its pool.
- :class:`PfPolicy` is the PF driver's SR-IOV part: the administrator's
  settings per VF (:class:`VfConfig`) programmed through the PF's registers,
  and the mailbox task answering VF_RESET, SET_MAC_ADDR, SET_MULTICAST,
  SET_VLAN and SET_LPE.  It runs on the engine's ``host`` Resource: a VF's
  doorbell (VFMailbox.REQ/ACK) raises the PF's mailbox interrupt, paid there
  as ``irq_entry``, and reading a message and writing the reply cost a
  ``ring_op`` each.  Bits the PF sets in a VF's mailbox become visible to
  the VF at the host's time of the write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..mem.dma import Dma
from ..pci.function import Bar, PciFunction
from ..sim.resource import Resource
from ..spec import ixgbe as s
from ..spec import ixgbevf as vs
from ..spec.pci import PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT
from .ixgbe import DCTL, RX, SRRCTL, TX, Ixgbe
from .discard import discard
from .regs import add64, narrow, widen
from .registry import ASSIGNERS, DeviceEntry
from .vmstate import ASSIGNED_DEVICE

NQ = vs.MAX_POOLS * vs.QUEUES
_OFF = {r.name: r.offset for r in (*s.REGS, *vs.PF_REGS)}
_P = {name: off >> 2 for name, off in _OFF.items()}
PFMBICR0, PFMAILBOX0, PFQDE, RTTDQSEL, RTTBCNRC, SSVPC = (_P[n] for n in (
    "PFMBICR0", "PFMAILBOX0", "PFQDE", "RTTDQSEL", "RTTBCNRC", "SSVPC"))
PFVTCTL, PFVFRE0, PFVFTE0, PFVMVIR0, PFVFSPOOF0, PFDTXGSWC = (_P[n] for n in (
    "PFVTCTL", "PFVFRE0", "PFVFTE0", "PFVMVIR0", "PFVFSPOOF0", "PFDTXGSWC"))
MPSAR0, PFVML2FLT0, PFVLVF0, PFVLVFB0 = _P["MPSAR_LO0"], _P["PFVML2FLT0"], _P["PFVLVF0"], _P["PFVLVFB0"]
RAL0, CTRL_EXT, FCTRL, MCSTCTRL, MTA0 = _P["RAL0"], _P["CTRL_EXT"], _P["FCTRL"], _P["MCSTCTRL"], _P["MTA0"]
_POOL_CONFIG = ([RAL0 + i for i in range(256)] + [MPSAR0 + i for i in range(256)]
                + [PFVML2FLT0 + i for i in range(vs.MAX_POOLS)] + [PFVLVF0 + i for i in range(vs.VLVF_ENTRIES)]
                + [PFVLVFB0 + i for i in range(2 * vs.VLVF_ENTRIES)] + [PFVMVIR0 + i for i in range(vs.MAX_POOLS)]
                + [PFVFSPOOF0 + i for i in range(8)] + [PFVFRE0, PFVFRE0 + 1, PFVFTE0, PFVFTE0 + 1, PFVTCTL,
                                                       PFDTXGSWC])
_TPID = vs.VLAN_TPID.to_bytes(2, "big")
_BCAST = b"\xff" * 6
_MO_SHIFT = (4, 3, 2, 0)            # MCSTCTRL.MO: MTA hash from address bits [47:36] .. [43:32]
_PFU, _VFU = vs.PFMAILBOX_PFU, vs.VFMAILBOX_VFU

Msi = Callable[[Resource, int], None]


def _bits(mask: int):
    while mask:
        low = mask & -mask
        mask ^= low
        yield low.bit_length() - 1


class _Mailbox:
    """One VF's mailbox control state; ``posted`` maps a VFMailbox
    read-to-clear bit to the time it was set."""

    __slots__ = ("pfu", "posted", "rsti", "vfu")

    def __init__(self) -> None:
        self.vfu = self.pfu = False
        self.rsti = True
        self.posted: dict[int, float] = {}


class SriovEngine:
    """The virtualisation block of one 82599 port with ``num_vfs`` VFs; the
    PF driver's mailbox handling (``policy``) runs on ``host``."""

    def __init__(self, pf: Ixgbe, num_vfs: int, host: Resource, policy: PfPolicy | None = None) -> None:
        if not 1 <= num_vfs <= vs.MAX_VFS:
            raise ValueError(f"ixgbe SR-IOV: {num_vfs} VFs, not in [1, {vs.MAX_VFS}]")
        if pf.num_queues < NQ:
            raise ValueError(f"ixgbe SR-IOV: the PF has {pf.num_queues} queues, pools need {NQ}")
        self.pf = pf
        self.sim = pf.sim
        self.host = host
        self.num_vfs = num_vfs
        self.pf_pool = num_vfs              # Linux's VMDq offset: the first pool after the VFs
        self.functions: list[VirtualFunction | None] = [None] * vs.MAX_POOLS
        self.spoofed = [0] * vs.MAX_POOLS   # frames dropped by anti-spoofing, per pool
        self.shapers: dict[int, Resource] = {}
        self.policy = PfPolicy() if policy is None else policy
        self.epoch = 0
        reads = {PFMAILBOX0 + n: self._r_pfmailbox for n in range(vs.MAX_POOLS)}
        reads.update({RTTBCNRC: self._r_rttbcnrc, SSVPC: self._r_ssvpc})
        writes = {idx: self._w_pool_config for idx in _POOL_CONFIG}
        writes.update({PFMAILBOX0 + n: self._w_pfmailbox for n in range(vs.MAX_POOLS)})
        writes.update({PFMBICR0 + i: self._w_pfmbicr for i in range(4)})
        writes.update({PFQDE: self._w_pfqde, RTTBCNRC: self._w_rttbcnrc, SSVPC: self._w_ignore,
                       CTRL_EXT: self._w_ctrl_ext})
        pf.decode([r.offset >> 2 for r in vs.PF_REGS], reads, writes)
        pf.vt = self
        self.reset()
        self.policy.attach(self)

    def reset(self) -> None:
        """The PF's CTRL.RST: the pool registers are back to 0 and every VF
        sees RSTI until the PF driver sets CTRL_EXT.PFRSTD; the PF driver
        then restores its SR-IOV configuration (ixgbe_sriov_reinit)."""
        self.epoch += 1
        self.mbx = [_Mailbox() for _ in range(vs.MAX_POOLS)]
        self.bcnrc = [0] * NQ
        self.rate = [0.0] * NQ              # rate factor per TX queue, 0: not limited
        self.gate_at = [0.0] * NQ
        self.armed: set[int] = set()
        self.tx_en = 0
        self.qde = 0                        # queues whose drop enable the PF forces (PFQDE)
        self._build(None)
        if self.policy.engine is self:
            self.policy.restore()

    def attach(self, vf: VirtualFunction) -> None:
        """A VF function exists: its pool's queues work for it."""
        self.functions[vf.index] = vf
        for q in vf.queues:
            self.pf.owner[q] = vf

    # ---- pool configuration (7.10.3) --------------------------------------------------------
    def _w_pool_config(self, cpu: Resource, idx: int, value: int) -> None:
        self.pf.r[idx] = value
        self._build(cpu)

    def _build(self, cpu: Resource | None) -> None:
        """Derive the switch's lookup tables from the pool registers."""
        r = self.pf.r
        uc: dict[bytes, int] = {}
        for i in range(128):
            high = r[RAL0 + 2 * i + 1]
            if high & s.RAH_AV:
                mac = (r[RAL0 + 2 * i] | (high & 0xFFFF) << 32).to_bytes(6, "little")
                uc.setdefault(mac, r[MPSAR0 + 2 * i + 1] << 32 | r[MPSAR0 + 2 * i])
        vlans: dict[int, int] = {}
        for i in range(vs.VLVF_ENTRIES):
            if r[PFVLVF0 + i] & vs.PFVLVF_VI_EN:
                vid = r[PFVLVF0 + i] & vs.PFVLVF_VLANID_MASK
                vlans[vid] = vlans.get(vid, 0) | r[PFVLVFB0 + 2 * i + 1] << 32 | r[PFVLVFB0 + 2 * i]
        self.uc, self.vlans = uc, vlans
        l2 = [r[PFVML2FLT0 + p] for p in range(vs.MAX_POOLS)]
        self.aupe, self.bam, self.rompe, self.mpe = (sum(1 << p for p in range(vs.MAX_POOLS) if l2[p] & bit)
                                                     for bit in (vs.PFVML2FLT_AUPE, vs.PFVML2FLT_BAM,
                                                                 vs.PFVML2FLT_ROMPE, vs.PFVML2FLT_MPE))
        spoof = [r[PFVFSPOOF0 + i] for i in range(8)]
        self.mac_as = sum((spoof[i] >> vs.PFVFSPOOF_MACAS_SHIFT & 0xFF) << 8 * i for i in range(8))
        self.vlan_as = sum((spoof[i] >> vs.PFVFSPOOF_VLANAS_SHIFT & 0xFF) << 8 * i for i in range(8))
        self.insert = [(vs.VLAN_TPID << 16 | r[PFVMVIR0 + p] & vs.PFVMVIR_VLAN_TAG_MASK).to_bytes(4, "big")
                       if r[PFVMVIR0 + p] & vs.PFVMVIR_VLANA_DEFAULT else None for p in range(vs.MAX_POOLS)]
        self.rx_en = r[PFVFRE0 + 1] << 32 | r[PFVFRE0]
        tx_en, self.tx_en = self.tx_en, r[PFVFTE0 + 1] << 32 | r[PFVFTE0]
        self.lben = bool(r[PFDTXGSWC] & vs.PFDTXGSWC_LBEN)
        vtctl = r[PFVTCTL]
        self.def_pool = (0 if vtctl & vs.PFVTCTL_DIS_DEF_PL or not vtctl & vs.PFVTCTL_VT_ENA
                         else 1 << ((vtctl & vs.PFVTCTL_DEF_PL_MASK) >> vs.PFVTCTL_DEF_PL_SHIFT))
        if cpu is not None:
            for pool in _bits(self.tx_en & ~tx_en):      # PFVFTE newly set: fetch what waits
                for q in range(pool * vs.QUEUES, (pool + 1) * vs.QUEUES):
                    self.pf.tx_kick(cpu, q)

    def pool_config(self, pool: int) -> dict:
        """What the switch holds for ``pool``: its MACs and VLANs, accept
        modes, default VLAN, anti-spoofing, enables and queue rate factors."""
        bit = 1 << pool
        return {"macs": sorted(m for m, pools in self.uc.items() if pools & bit),
                "vlans": sorted(v for v, pools in self.vlans.items() if pools & bit),
                "accept": tuple(bool(m & bit) for m in (self.aupe, self.bam, self.rompe, self.mpe)),
                "insert": self.insert[pool], "spoofchk": (bool(self.mac_as & bit), bool(self.vlan_as & bit)),
                "rx_en": bool(self.rx_en & bit), "tx_en": bool(self.tx_en & bit),
                "rate": tuple(self.rate[pool * vs.QUEUES:(pool + 1) * vs.QUEUES])}

    def _w_pfqde(self, cpu: Resource, idx: int, value: int) -> None:
        """Indirect write of a queue's drop enable: its SRRCTL.DROP_EN, kept
        set whatever the VF writes there while QDE holds it."""
        if value & vs.PFQDE_WRITE:
            q = (value & vs.PFQDE_IDX_MASK) >> vs.PFQDE_IDX_SHIFT
            r, at = self.pf.r, RX[q] + SRRCTL
            if value & vs.PFQDE_QDE:
                self.qde |= 1 << q
                r[at] |= s.SRRCTL_DROP_EN
            else:
                self.qde &= ~(1 << q)
                r[at] &= ~s.SRRCTL_DROP_EN

    def _w_ignore(self, cpu: Resource, idx: int, value: int) -> None:
        """A read-only register."""

    def _r_ssvpc(self, idx: int) -> int:
        value, self.pf.r[idx] = self.pf.r[idx], 0
        return value

    # ---- transmit rate scheduler (7.7.2) -------------------------------------------------
    def _r_rttbcnrc(self, idx: int) -> int:
        return self.bcnrc[self.pf.r[RTTDQSEL] % NQ]

    def _w_rttbcnrc(self, cpu: Resource, idx: int, value: int) -> None:
        q = self.pf.r[RTTDQSEL] % NQ
        self.bcnrc[q] = value
        factor = (((value & vs.RTTBCNRC_RF_INT_MASK) >> vs.RTTBCNRC_RF_INT_SHIFT)
                  + (value & vs.RTTBCNRC_RF_DEC_MASK) / (1 << vs.RTTBCNRC_RF_INT_SHIFT))
        self.rate[q] = factor if value & vs.RTTBCNRC_RS_ENA else 0.0
        if self.rate[q] and q not in self.shapers:
            engine = self.pf.engine
            self.shapers[q] = Resource(f"{engine.name}/txq{q}/rate", engine.kind, engine.ledger, engine.acct)

    def tx_ready(self, engine: Resource, q: int) -> bool:
        """May queue ``q`` start its next frame?  Not while its pool's
        PFVFTE bit is clear, nor before its rate allows; the queue is
        resumed when it may."""
        if not self.tx_en >> (q >> 1) & 1:
            return False
        if not self.rate[q]:
            return True
        free_at = self.shapers[q].cursor
        if engine.cursor >= free_at:
            self.gate_at[q] = engine.cursor
            return True
        if q not in self.armed:
            self.armed.add(q)
            self.sim.at(free_at, self._rate_resume, q, self.epoch)
        return False

    def _rate_resume(self, q: int, epoch: int) -> None:
        if epoch != self.epoch:
            return
        self.armed.discard(q)
        engine = self.pf.engine
        engine.sync(self.sim.now)
        self.pf.tx_kick(engine, q)

    def _pace(self, q: int, size: int) -> None:
        """The frame holds the queue's rate for its line time times RF, from
        when the previous one's did end (a queue held up, by a full packet
        buffer say, keeps its schedule), but not from longer ago than one
        such time (an idle queue saves up no credit)."""
        link = getattr(self.pf.port, "link", None)
        if link is not None:
            shaper = self.shapers[q]
            cost = link.frame_ns(size) * self.rate[q]
            shaper.sync(self.gate_at[q] - cost)
            shaper.occupy("rate_limit", cost)

    # ---- the switch (7.10.3) ------------------------------------------------------------------
    def transmit(self, engine: Resource, q: int, frame: bytes) -> bytes | None:
        """A frame queue ``q`` sends: anti-spoofing, default VLAN insert,
        then loopback to other pools; returns what goes to the wire."""
        pool = q >> 1
        bit = 1 << pool
        tag = self.insert[pool]
        if tag is not None:
            frame = frame[:12] + tag + frame[12:]
        tagged = len(frame) >= 16 and frame[12:14] == _TPID
        vid = ((frame[14] & 0xF) << 8 | frame[15]) if tagged else 0
        if bit & (self.mac_as | self.vlan_as) and (
                bit & self.mac_as and not self.uc.get(frame[6:12], 0) & bit
                or bit & self.vlan_as and not self.vlans.get(vid, 0) & bit):
            return self._spoofed(pool, frame)
        if self.rate[q]:
            self._pace(q, len(frame))
        vf = self.functions[pool]
        if vf is not None:
            vf.count_tx(len(frame))
        if not self.lben or len(frame) < 14:
            return frame
        accept = (self.vlans.get(vid, 0) if tagged else self.aupe) & self.rx_en & ~bit
        dst = frame[:6]
        if dst[0] & 1:
            self._replicate(engine, self._multicast(dst) & accept, frame, tagged)
            return frame
        pools = self.uc.get(dst, 0) & accept
        if not pools:
            return frame
        self._replicate(engine, pools, frame, tagged)
        return None

    def _spoofed(self, pool: int, frame: bytes) -> None:
        self.pf.r[SSVPC] += 1
        self.spoofed[pool] += 1
        vf = self.functions[pool]
        discard(self.pf if vf is None else vf, "tx_spoofed", frame)

    def receive(self, engine: Resource, frame: bytes) -> None:
        """A frame from the wire: to the pools owning its MAC and VLAN."""
        tagged = len(frame) >= 16 and frame[12:14] == _TPID
        accept = (self.vlans.get((frame[14] & 0xF) << 8 | frame[15], 0) if tagged else self.aupe) & self.rx_en
        dst = frame[:6]
        if dst[0] & 1:
            pools = self._multicast(dst)
        else:
            pools = self.uc.get(dst, 0) or (self.def_pool if self.pf.r[FCTRL] & s.FCTRL_UPE else 0)
        pools &= accept
        if pools:
            self._replicate(engine, pools, frame, tagged)
        else:
            discard(self.pf, "rx_no_pool", frame)

    def _multicast(self, dst: bytes) -> int:
        if dst == _BCAST:
            return self.bam
        pools = self.mpe
        if self.rompe:
            r = self.pf.r
            shift = _MO_SHIFT[r[MCSTCTRL] & s.MCSTCTRL_MO_MASK]
            hashed = (dst[4] >> shift | dst[5] << (8 - shift)) & 0xFFF
            if r[MTA0 + (hashed >> 5)] >> (hashed & 31) & 1:
                pools |= self.rompe
        return pools

    def _replicate(self, engine: Resource, pools: int, frame: bytes, tagged: bool) -> None:
        """DMA a copy into each pool's first RX queue; RXDCTL.VME strips the tag."""
        pf = self.pf
        r = pf.r
        for pool in _bits(pools):
            q = pool * vs.QUEUES
            copy = frame[:12] + frame[16:] if tagged and r[RX[q] + DCTL] & s.RXDCTL_VME else frame
            vf = self.functions[pool]
            if vf is not None:
                vf.count_rx(copy)
            pf.deliver(engine, copy, q)

    # ---- mailboxes (7.10.2) --------------------------------------------------------------------
    def _r_pfmailbox(self, idx: int) -> int:
        m = self.mbx[idx - PFMAILBOX0]
        return (vs.PFMAILBOX_VFU if m.vfu else 0) | (_PFU if m.pfu else 0)

    def _w_pfmailbox(self, cpu: Resource, idx: int, value: int) -> None:
        vf = idx - PFMAILBOX0
        m = self.mbx[vf]
        if value & vs.PFMAILBOX_RVFU:
            m.vfu = False
        m.pfu = bool(value & _PFU) and not m.vfu
        for cmd, bit in ((vs.PFMAILBOX_STS, vs.VFMAILBOX_PFSTS), (vs.PFMAILBOX_ACK, vs.VFMAILBOX_PFACK)):
            if value & cmd:
                m.posted[bit] = cpu.cursor
                function = self.functions[vf] if vf < self.num_vfs else None
                if function is not None:
                    function.mailbox_irq(cpu)

    def _w_pfmbicr(self, cpu: Resource, idx: int, value: int) -> None:
        self.pf.r[idx] &= ~value

    def _w_ctrl_ext(self, cpu: Resource, idx: int, value: int) -> None:
        """CTRL_EXT.PFRSTD going to 1: the PF driver is up; VFs see RSTD."""
        r = self.pf.r
        rising = value & ~r[idx] & s.CTRL_EXT_PFRSTD
        r[idx] = value
        if rising:
            for m in self.mbx:
                m.rsti = False
                m.posted[vs.VFMAILBOX_RSTD] = cpu.cursor

    def vf_mailbox_read(self, vf: int, cpu: Resource) -> int:
        """VFMailbox: bits the PF posted up to ``cpu``'s time, cleared by this read."""
        m = self.mbx[vf]
        value = (_VFU if m.vfu else 0) | (vs.VFMAILBOX_PFU if m.pfu else 0) | (vs.VFMAILBOX_RSTI if m.rsti else 0)
        now = cpu.cursor
        for bit, at in list(m.posted.items()):
            if at <= now:
                value |= bit
                del m.posted[bit]
        return value

    def vf_mailbox_write(self, vf: int, cpu: Resource, value: int) -> None:
        """VFMailbox: VFU takes (or, clear, releases) the buffer; REQ and ACK
        interrupt the PF, whose driver answers on ``host``."""
        m = self.mbx[vf]
        m.vfu = bool(value & _VFU) and not m.pfu
        for cmd, shift in ((vs.VFMAILBOX_REQ, vs.PFMBICR_VFREQ_SHIFT), (vs.VFMAILBOX_ACK, vs.PFMBICR_VFACK_SHIFT)):
            if value & cmd:
                self.pf.r[PFMBICR0 + vf // vs.VFS_PER_MBICR] |= 1 << (shift + vf % vs.VFS_PER_MBICR)
                host = self.host
                host.sync(cpu.cursor)
                host.charge("irq_entry")        # EICR.MAILBOX: the PF driver's other-causes handler
                self.policy.msg_task(vf)

    def vf_reset(self, vf: int) -> None:
        """VFCTRL.RST: the VF lets go of its mailbox and forgets what was posted."""
        m = self.mbx[vf]
        m.vfu = False
        m.posted.pop(vs.VFMAILBOX_PFSTS, None)
        m.posted.pop(vs.VFMAILBOX_PFACK, None)


_V = {r.name: r.offset >> 2 for r in vs.REGS}
VFCTRL, VFSTATUS, VFLINKS, VFMAILBOX, VFMBMEM0 = (_V[n] for n in ("VFCTRL", "VFSTATUS", "VFLINKS", "VFMAILBOX",
                                                                  "VFMBMEM0"))
VTEICR, VTEICS, VTEIMS, VTEIMC, VTEIAC, VTEIAM = (_V[n] for n in ("VTEICR", "VTEICS", "VTEIMS", "VTEIMC",
                                                                  "VTEIAC", "VTEIAM"))
VTIVAR0, VTIVAR_MISC, VTEITR0 = _V["VTIVAR0"], _V["VTIVAR_MISC"], _V["VTEITR0"]
VFGPRC, VFGORC, VFMPRC, VFGPTC, VFGOTC = (_V[n] for n in ("VFGPRC", "VFGORC_LSB", "VFMPRC", "VFGPTC", "VFGOTC_LSB"))
_PLAIN = frozenset([VTEIAC, VTEIAM, VTIVAR0, VTIVAR_MISC, *range(VTEITR0, VTEITR0 + vs.MSIX_VECTORS)])
_RO = frozenset(r.offset >> 2 for r in vs.REGS if r.access == "ro") - {VFSTATUS, VFLINKS}
_MBMEM = range(VFMBMEM0, VFMBMEM0 + vs.MAILBOX_SIZE)
_STATUS, _LINKS = s.REGS["STATUS"].offset, s.REGS["LINKS"].offset
_FCS = 4


class VirtualFunction:
    """VF ``index`` of ``sriov``'s port, its DMA through ``dma``."""

    NAME = "ixgbevf"
    VMSTATE = None
    MIGRATION_BLOCKER = ASSIGNED_DEVICE

    def __init__(self, sriov: SriovEngine, index: int, dma: Dma) -> None:
        if not 0 <= index < sriov.num_vfs:
            raise ValueError(f"ixgbevf: VF {index} not in [0, {sriov.num_vfs})")
        self.sriov = sriov
        self.pf = pf = sriov.pf
        self.sim = pf.sim
        self.engine = pf.engine
        self.index = index
        self.dma = dma
        self.msi: Msi | None = None
        self.errors: Counter[str] = Counter()
        self.place = self.NAME                  # where its drops are counted (the wiring names it)
        self.queues = range(index * vs.QUEUES, (index + 1) * vs.QUEUES)
        self.pci = PciFunction(vs.VENDOR_ID, vs.DEVICE_ID, vs.CLASS_ETHERNET, revision=vs.REVISION,
                               subsystem_vendor_id=s.VENDOR_ID, subsystem_id=s.SUBSYSTEM_ID, interrupt_pin=0,
                               bars=(Bar(0, vs.BAR0_SIZE, "mem64", True),
                                     Bar(vs.MSIX_BAR, vs.MSIX_BAR_SIZE, "mem64", True)))
        self.pci.add_msix(vs.MSIX_BAR, vs.MSIX_TABLE_OFFSET, vs.MSIX_BAR, vs.MSIX_PBA_OFFSET, vs.MSIX_VECTORS)
        self.pci.add_pcie_endpoint()
        self._qmap = {_V[name]: _OFF[f"{pf_name}{self.queues[i]}"]
                      for name, (pf_name, i) in vs.QUEUE_REGS.items()}
        self._srrctl = {_V[f"VFSRRCTL{i}"]: q for i, q in enumerate(self.queues)}
        self.mbmem = vs.pfmbmem(index) >> 2
        self._read = {VFCTRL: lambda cpu: 0, VFSTATUS: lambda cpu: pf.mmio_read(cpu, _STATUS, 4),
                      VFLINKS: lambda cpu: pf.mmio_read(cpu, _LINKS, 4), VTEICR: self._r_eicr,
                      VTEIMS: lambda cpu: self.mask, VFMAILBOX: self._r_mailbox}
        self._write = {VFCTRL: self._w_ctrl, VTEICR: self._w_eicr, VTEICS: self._w_eics, VTEIMS: self._w_eims,
                       VTEIMC: self._w_eimc, VFMAILBOX: self._w_mailbox}
        self.r = [0] * (vs.BAR0_SIZE >> 2)
        self.epoch = 0
        self._reset_interrupts()
        sriov.attach(self)

    # ---- register access ------------------------------------------------------------------
    def bar_handlers(self, index: int):
        return (self.mmio_read, self.mmio_write) if index == 0 else (self.msix_read, self.msix_write)

    def msix_read(self, cpu: Resource, offset: int, size: int) -> int:
        return self.pci.msix.read(vs.MSIX_BAR, offset, size)

    def msix_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        self.pci.msix.write(vs.MSIX_BAR, offset, size, value)

    def mmio_read(self, cpu: Resource, offset: int, size: int) -> int:
        idx = offset >> 2
        pf_offset = self._qmap.get(idx)
        if pf_offset is not None:
            return self.pf.mmio_read(cpu, pf_offset | offset & 3, size)
        reader = self._read.get(idx)
        if reader is not None:
            value = reader(cpu)
        elif idx in _MBMEM:
            value = self.pf.r[self.mbmem + idx - VFMBMEM0]
        elif idx in _PLAIN or idx in _RO:
            value = self.r[idx]
        else:
            return 0
        return narrow(value, offset, size)

    def mmio_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        idx = offset >> 2
        pf_offset = self._qmap.get(idx)
        if pf_offset is not None:
            self.pf.mmio_write(cpu, pf_offset | offset & 3, size, value)
            q = self._srrctl.get(idx)
            if q is not None and self.sriov.qde >> q & 1:
                self.pf.r[RX[q] + SRRCTL] |= s.SRRCTL_DROP_EN
            return
        writer = self._write.get(idx)
        if writer is not None:
            writer(cpu, widen(0, value, offset, size))
        elif idx in _MBMEM:
            at = self.mbmem + idx - VFMBMEM0
            self.pf.r[at] = widen(self.pf.r[at], value, offset, size)
        elif idx in _PLAIN:
            self.r[idx] = widen(self.r[idx], value, offset, size)

    def _r_mailbox(self, cpu: Resource) -> int:
        return self.sriov.vf_mailbox_read(self.index, cpu)

    def _w_mailbox(self, cpu: Resource, value: int) -> None:
        self.sriov.vf_mailbox_write(self.index, cpu, value)

    def _w_ctrl(self, cpu: Resource, value: int) -> None:
        """VFCTRL.RST (self-clearing): the VF's queues stop, its interrupt
        registers and mailbox ownership are reset."""
        if not value & s.CTRL_RST:
            return
        pf_r = self.pf.r
        for q in self.queues:
            pf_r[RX[q] + DCTL] &= ~s.RXDCTL_ENABLE
            pf_r[TX[q] + DCTL] &= ~s.TXDCTL_ENABLE
        for idx in _PLAIN:
            self.r[idx] = 0
        self._reset_interrupts()
        self.sriov.vf_reset(self.index)

    # ---- interrupts (7.3 as the VF has them: MSI-X only, 3 vectors) ------------------------
    def _reset_interrupts(self) -> None:
        self.epoch += 1
        self.cause = self.mask = 0
        self.next_irq = [0.0] * vs.MSIX_VECTORS
        self.armed: set[int] = set()

    def _r_eicr(self, cpu: Resource) -> int:
        value, self.cause = self.cause, 0
        return value

    def _w_eicr(self, cpu: Resource, value: int) -> None:
        self.cause &= ~value

    def _w_eics(self, cpu: Resource, value: int) -> None:
        self.cause |= value & vs.VTEICR_MASK
        self._fire_pending(cpu)

    def _w_eims(self, cpu: Resource, value: int) -> None:
        self.mask |= value & vs.VTEICR_MASK
        self._fire_pending(cpu)

    def _w_eimc(self, cpu: Resource, value: int) -> None:
        self.mask &= ~value

    def _fire_pending(self, cpu: Resource) -> None:
        ready = self.cause & self.mask
        if ready:
            engine = self.engine
            engine.sync(cpu.cursor)
            for vector in _bits(ready):
                self._fire(engine, vector)

    def queue_irq(self, engine: Resource, q: int, tx: int) -> None:
        """A cause of PF queue ``q`` (one of ours), routed by VTIVAR."""
        self._cause(engine, self.r[VTIVAR0] >> (16 * (q - self.queues[0]) + 8 * tx) & 0xFF)

    def mailbox_irq(self, cpu: Resource) -> None:
        """The PF posted to our mailbox: the cause VTIVAR_MISC routes."""
        engine = self.engine
        engine.sync(cpu.cursor)
        self._cause(engine, self.r[VTIVAR_MISC] & 0xFF)

    def _cause(self, engine: Resource, ivar: int) -> None:
        vector = ivar & vs.VTIVAR_VECTOR_MASK
        if ivar & s.IVAR_ALLOC_VAL and vector < vs.MSIX_VECTORS:
            self.cause |= 1 << vector
            if self.mask >> vector & 1:
                self._fire(engine, vector)

    def _fire(self, engine: Resource, vector: int) -> None:
        """VTEITR: at most one message per interval; then VTEIAC auto-clears
        the cause and VTEIAM auto-masks the vector."""
        now = engine.cursor
        if now < self.next_irq[vector]:
            if vector not in self.armed:
                self.armed.add(vector)
                self.sim.at(self.next_irq[vector], self._eitr_expired, vector, self.epoch)
            return
        r = self.r
        self.next_irq[vector] = now + ((r[VTEITR0 + vector] & s.EITR_ITR_INT_MASK) >> 3) * s.EITR_UNIT_NS
        bit = 1 << vector
        if r[VTEIAC] & bit:
            self.cause &= ~bit
        if r[VTEIAM] & bit:
            self.mask &= ~bit
        if self.msi is not None:
            self.msi(engine, vector)

    def _eitr_expired(self, vector: int, epoch: int) -> None:
        if epoch != self.epoch:
            return
        self.armed.discard(vector)
        if (self.cause & self.mask) >> vector & 1:
            engine = self.engine
            engine.sync(self.sim.now)
            self._fire(engine, vector)

    # ---- what the PF's queue engine reports for our queues ---------------------------------
    def dma_fault(self, what: str) -> None:
        """Our request got no completion: our function's STATUS, not the PF's."""
        self.errors[what] += 1
        self.pci.config.set_bits(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT, True)

    def count_tx(self, size: int) -> None:
        r = self.r
        r[VFGPTC] = (r[VFGPTC] + 1) & 0xFFFFFFFF
        add64(r, VFGOTC, size + _FCS)

    def count_rx(self, frame: bytes) -> None:
        r = self.r
        r[VFGPRC] = (r[VFGPRC] + 1) & 0xFFFFFFFF
        add64(r, VFGORC, len(frame) + _FCS)
        if frame[0] & 1:
            r[VFMPRC] = (r[VFMPRC] + 1) & 0xFFFFFFFF


_VFRE, _VFTE = ("PFVFRE0", "PFVFRE1"), ("PFVFTE0", "PFVFTE1")


@dataclass
class VfConfig:
    """The administrator's settings for one VF (``ip link set PF vf N ...``):
    ``mac`` (None: the VF picks its own), port ``vlan`` (0: none),
    ``rate_mbps`` (max_tx_rate, 0: unlimited), ``spoofchk``, ``trust``."""

    mac: bytes | None = None
    vlan: int = 0
    rate_mbps: int = 0
    spoofchk: bool = True
    trust: bool = False

    def __post_init__(self) -> None:
        if self.mac is not None and (len(self.mac) != 6 or self.mac[0] & 1 or not any(self.mac)):
            raise ValueError(f"VF MAC {bytes(self.mac).hex(':')} is not a unicast address")
        if not 0 <= self.vlan <= vs.PFVLVF_VLANID_MASK:
            raise ValueError(f"VF VLAN {self.vlan} not in [0, 4095]")
        if self.rate_mbps and not 10 < self.rate_mbps <= 10000:
            raise ValueError(f"VF rate {self.rate_mbps} Mbit/s not in (10, 10000]")


class PfPolicy:
    """The PF driver's SR-IOV side (Linux ixgbe_sriov.c), with one
    :class:`VfConfig` per VF.  Counters per VF in ``stats``: ``ack``,
    ``nack``, ``malformed`` messages, ``locked`` (the VF held the buffer)."""

    def __init__(self, vfs: Sequence[VfConfig] = ()) -> None:
        self.config = list(vfs)
        self.engine: SriovEngine | None = None

    def attach(self, engine: SriovEngine) -> None:
        if len(self.config) > engine.num_vfs:
            raise ValueError(f"{len(self.config)} VF configurations for {engine.num_vfs} VFs")
        self.config += [VfConfig() for _ in range(engine.num_vfs - len(self.config))]
        self.engine, self.pf, self.host = engine, engine.pf, engine.host
        self.mac = [c.mac for c in self.config]
        self.stats = [Counter() for _ in self.config]
        self._handlers = {vs.VF_SET_MAC_ADDR: self._set_mac_msg, vs.VF_SET_MULTICAST: self._set_multicast_msg,
                          vs.VF_SET_VLAN: self._set_vlan_msg, vs.VF_SET_LPE: self._set_lpe_msg}
        self.restore()

    # ---- registers, through the PF's BAR0 on the host ------------------------------------------
    def rd(self, reg: str) -> int:
        return self.pf.mmio_read(self.host, _OFF[reg], 4)

    def wr(self, reg: str, value: int) -> None:
        self.pf.mmio_write(self.host, _OFF[reg], 4, value)

    def _set_bit(self, reg: str, bit: int, on: bool) -> None:
        value = self.rd(reg)
        new = value | bit if on else value & ~bit
        if new != value:
            self.wr(reg, new)

    # ---- configuration ---------------------------------------------------------------------------------
    def restore(self) -> None:
        """ixgbe_configure_virtualization and the VFs' administrative
        settings, then CTRL_EXT.PFRSTD: the VFs may talk to us."""
        pool = self.engine.pf_pool
        self.cts = [False] * len(self.config)
        self.wr("PFVTCTL", vs.PFVTCTL_VT_ENA | vs.PFVTCTL_RPL_EN | pool << vs.PFVTCTL_DEF_PL_SHIFT)
        self.wr("PFDTXGSWC", vs.PFDTXGSWC_LBEN)
        self._pool_bit(_VFRE, pool, True)
        self._pool_bit(_VFTE, pool, True)
        self._pool_bit(("MPSAR_LO0", "MPSAR_HI0"), pool, True)    # RAR[0], the PF's MAC, is the PF pool's
        self.wr(f"PFVML2FLT{pool}", vs.PFVML2FLT_AUPE | vs.PFVML2FLT_BAM | vs.PFVML2FLT_ROMPE)
        self._drop_enable(pool)
        self.wr("FCTRL", self.rd("FCTRL") | s.FCTRL_BAM)
        self.wr("DMATXCTL", self.rd("DMATXCTL") | s.DMATXCTL_TE)
        self.wr("RXCTRL", self.rd("RXCTRL") | s.RXCTRL_RXEN)
        self.wr("RTTBCNRM", vs.RTTBCNRM_82599)
        for vf, config in enumerate(self.config):
            self._set_mac(vf, self.mac[vf])
            self._reset_event(vf)
            self._set_rate(vf, config.rate_mbps)
        self.wr("CTRL_EXT", self.rd("CTRL_EXT") | s.CTRL_EXT_PFRSTD)

    def set_vf(self, vf: int, config: VfConfig) -> None:
        """The administrator's new settings for ``vf`` (ip link set PF vf N
        mac|vlan|rate|spoofchk|trust; all cleared when the VF is released):
        in force now, and what its next VF_RESET restores."""
        self.config[vf] = config
        self.mac[vf] = config.mac
        self._set_mac(vf, config.mac)
        self._reset_event(vf)
        self._set_rate(vf, config.rate_mbps)

    def _pool_bit(self, regs: tuple[str, str], pool: int, on: bool) -> None:
        """A pool's bit in a pair of registers covering pools 0-31 and 32-63."""
        self._set_bit(regs[pool // 32], 1 << pool % 32, on)

    def _drop_enable(self, pool: int) -> None:
        """ixgbe_write_qde: the pool's RX queues drop when out of descriptors."""
        for q in range(pool * vs.QUEUES, (pool + 1) * vs.QUEUES):
            self.wr("PFQDE", vs.PFQDE_WRITE | vs.PFQDE_QDE | q << vs.PFQDE_IDX_SHIFT)

    def _set_mac(self, vf: int, mac: bytes | None) -> None:
        """ixgbe_set_vf_mac: RAR[vf + 1] holds the VF's MAC for its pool."""
        rar = vf + 1
        if mac is None:
            self.wr(f"RAH{rar}", 0)
        else:
            self.wr(f"RAL{rar}", int.from_bytes(mac[:4], "little"))
            self.wr(f"RAH{rar}", int.from_bytes(mac[4:], "little") | s.RAH_AV)
        self.wr(f"MPSAR_LO{rar}", 1 << vf if vf < 32 else 0)
        self.wr(f"MPSAR_HI{rar}", 1 << vf - 32 if vf >= 32 else 0)

    def _reset_event(self, vf: int) -> None:
        """ixgbe_vf_reset_event: VLAN filters back to the port VLAN (or VLAN
        0), accept modes, default VLAN insert, anti-spoofing."""
        config = self.config[vf]
        for entry in range(vs.VLVF_ENTRIES):
            self._vlvf_leave(entry, vf)
        self._vlan(config.vlan, vf, True)
        self.wr(f"PFVML2FLT{vf}", vs.PFVML2FLT_BAM | (0 if config.vlan else vs.PFVML2FLT_AUPE))
        self.wr(f"PFVMVIR{vf}", vs.PFVMVIR_VLANA_DEFAULT | config.vlan if config.vlan else 0)
        spoof = 1 << vf % vs.POOLS_PER_SPOOF
        self._set_bit(f"PFVFSPOOF{vf // vs.POOLS_PER_SPOOF}",
                      spoof << vs.PFVFSPOOF_MACAS_SHIFT | spoof << vs.PFVFSPOOF_VLANAS_SHIFT, config.spoofchk)

    def _set_rate(self, vf: int, mbps: int) -> None:
        """ixgbe_set_vf_rate_limit: RF = link speed / rate on each of the pool's queues."""
        speed = {s.LINKS_SPEED_10G: 10000, 0x20000000: 1000, 0x10000000: 100}.get(
            self.rd("LINKS") & s.LINKS_SPEED_10G, 10000)
        value = 0
        if mbps:
            value = ((speed << vs.RTTBCNRC_RF_INT_SHIFT) // mbps
                     & (vs.RTTBCNRC_RF_INT_MASK | vs.RTTBCNRC_RF_DEC_MASK)) | vs.RTTBCNRC_RS_ENA
        for q in range(vf * vs.QUEUES, (vf + 1) * vs.QUEUES):
            self.wr("RTTDQSEL", q)
            self.wr("RTTBCNRC", value)

    def _vlan(self, vid: int, pool: int, add: bool) -> bool:
        """ixgbe_set_vfta for a pool: join (or leave) the PFVLVF entry of
        ``vid``, taking a free entry to join; False when none is free."""
        free = None
        for entry in range(vs.VLVF_ENTRIES):
            vlvf = self.rd(f"PFVLVF{entry}")
            if vlvf & vs.PFVLVF_VI_EN and vlvf & vs.PFVLVF_VLANID_MASK == vid:
                break
            if free is None and not vlvf & vs.PFVLVF_VI_EN:
                free = entry
        else:
            if not add:
                return True
            if free is None:
                return False
            entry = free
            self.wr(f"PFVLVF{entry}", vs.PFVLVF_VI_EN | vid)
        if add:
            self._set_bit(f"PFVLVFB{2 * entry + pool // 32}", 1 << pool % 32, True)
        else:
            self._vlvf_leave(entry, pool)
        return True

    def _vlvf_leave(self, entry: int, pool: int) -> None:
        """Drop ``pool`` from a PFVLVF entry, freeing the entry when no pool is left."""
        word, bit = f"PFVLVFB{2 * entry + pool // 32}", 1 << pool % 32
        bits = self.rd(word)
        if bits & bit:
            self.wr(word, bits & ~bit)
            if not self.rd(f"PFVLVFB{2 * entry}") | self.rd(f"PFVLVFB{2 * entry + 1}"):
                self.wr(f"PFVLVF{entry}", 0)

    # ---- the mailbox task (ixgbe_msg_task) ---------------------------------------------------------
    def msg_task(self, vf: int) -> None:
        """A VF rang: take its message, then its acknowledgement."""
        if vf >= len(self.config):
            return
        if self._check(vf, vs.PFMBICR_VFREQ_SHIFT):
            self._rcv_msg(vf)
        if self._check(vf, vs.PFMBICR_VFACK_SHIFT) and not self.cts[vf]:
            self._write_mbx(vf, [vs.VT_MSGTYPE_NACK])     # ixgbe_rcv_ack_from_vf

    def _check(self, vf: int, shift: int) -> bool:
        reg, bit = f"PFMBICR{vf // vs.VFS_PER_MBICR}", 1 << (shift + vf % vs.VFS_PER_MBICR)
        if not self.rd(reg) & bit:
            return False
        self.wr(reg, bit)
        return True

    def _lock(self, vf: int) -> bool:
        self.wr(f"PFMAILBOX{vf}", vs.PFMAILBOX_PFU)
        if self.rd(f"PFMAILBOX{vf}") & vs.PFMAILBOX_PFU:
            return True
        self.stats[vf]["locked"] += 1
        return False

    def _read_mbx(self, vf: int) -> list[int] | None:
        if not self._lock(vf):
            return None
        words = [self.rd(f"PFMBMEM{vf}_{i}") for i in range(vs.MAILBOX_SIZE)]
        self.wr(f"PFMAILBOX{vf}", vs.PFMAILBOX_ACK)
        self.host.charge("ring_op")
        return words

    def _write_mbx(self, vf: int, words: list[int]) -> None:
        if not self._lock(vf):
            return
        for i, word in enumerate(words):
            self.wr(f"PFMBMEM{vf}_{i}", word)
        self.wr(f"PFMAILBOX{vf}", vs.PFMAILBOX_STS)
        self.host.charge("ring_op")

    def _rcv_msg(self, vf: int) -> None:
        """ixgbe_rcv_msg_from_vf; malformed requests (results bits set,
        unknown IDs, bad fields) are NACKed and counted."""
        words = self._read_mbx(vf)
        if words is None:
            return
        msg = words[0]
        stats = self.stats[vf]
        if msg == vs.VF_RESET:
            self._reset_msg(vf)
            return
        if not self.cts[vf]:
            ok, cts = False, 0
        else:
            handler = self._handlers.get(msg & vs.VT_MSGID_MASK) if not msg & 0xFF000000 else None
            ok = handler(vf, words) if handler is not None else None
            cts = vs.VT_MSGTYPE_CTS
        if ok is None:
            stats["malformed"] += 1
        stats["ack" if ok else "nack"] += 1
        words[0] = msg | (vs.VT_MSGTYPE_ACK if ok else vs.VT_MSGTYPE_NACK) | cts
        self._write_mbx(vf, words)

    def _reset_msg(self, vf: int) -> None:
        """ixgbe_vf_reset_msg: filters back to the administrator's, the
        VF's queues drop when full, its TX and RX enabled; the reply carries
        the MAC (ACK) or says none is assigned (NACK)."""
        self._reset_event(vf)
        for i in range(vs.MAILBOX_SIZE):
            self.wr(f"PFMBMEM{vf}_{i}", 0)
        mac = self.mac[vf]
        self._set_mac(vf, mac)
        self._drop_enable(vf)
        self._pool_bit(_VFRE, vf, True)
        self._pool_bit(_VFTE, vf, True)
        self.cts[vf] = True
        ok = mac is not None and self.config[vf].mac is not None
        self.stats[vf]["ack" if ok else "nack"] += 1
        reply = bytearray(vs.RESET_REPLY.size)
        mac = mac or bytes(6)
        vs.RESET_REPLY.pack_into(reply, 0, vs.VF_RESET | (vs.VT_MSGTYPE_ACK if ok else vs.VT_MSGTYPE_NACK),
                                 int.from_bytes(mac[:4], "little"), int.from_bytes(mac[4:], "little"),
                                 self.rd("MCSTCTRL") & s.MCSTCTRL_MO_MASK)
        self._write_mbx(vf, [int.from_bytes(reply[i:i + 4], "little") for i in range(0, len(reply), 4)])

    @staticmethod
    def _info(words: list[int]) -> int:
        return (words[0] & vs.VT_MSGINFO_MASK) >> vs.VT_MSGINFO_SHIFT

    def _set_mac_msg(self, vf: int, words: list[int]) -> bool | None:
        """ixgbe_set_vf_mac_addr: an administrator's MAC binds an untrusted
        VF; a MAC another function owns is refused."""
        if self._info(words):
            return None
        mac = (words[1] | (words[2] & 0xFFFF) << 32).to_bytes(6, "little")
        admin = self.config[vf].mac
        taken = mac in self.mac[:vf] + self.mac[vf + 1:] or mac == (
            self.rd("RAL0") | (self.rd("RAH0") & 0xFFFF) << 32).to_bytes(6, "little")
        if mac[0] & 1 or not any(mac) or taken or (admin and not self.config[vf].trust and mac != admin):
            return False
        self.mac[vf] = mac
        self._set_mac(vf, mac)
        return True

    def _set_multicast_msg(self, vf: int, words: list[int]) -> bool | None:
        """ixgbe_set_vf_multicasts: the hashes into the MTA, PFVML2FLT.ROMPE."""
        count = self._info(words)
        if count > vs.MAX_VF_MC_ENTRIES:
            return None
        hashes = [words[1 + i // 2] >> 16 * (i % 2) & 0xFFF for i in range(count)]
        for h in hashes:
            self._set_bit(f"MTA{h >> 5 & 0x7F}", 1 << (h & 31), True)
        self._set_bit(f"PFVML2FLT{vf}", vs.PFVML2FLT_ROMPE, True)
        return True

    def _set_vlan_msg(self, vf: int, words: list[int]) -> bool | None:
        """ixgbe_set_vf_vlan_msg: refused under a port VLAN; VLAN 0 stays."""
        add, vid = self._info(words), words[1]
        if add > 1 or vid > vs.PFVLVF_VLANID_MASK:
            return None
        if self.config[vf].vlan:
            return False
        return True if not vid and not add else self._vlan(vid, vf, bool(add))

    def _set_lpe_msg(self, vf: int, words: list[int]) -> bool | None:
        """ixgbe_set_vf_lpe: an API 1.0 VF gets no jumbo frames on the
        82599 (its receive is disabled if it asks); MAXFRS grows to fit."""
        max_frame = words[1]
        if self._info(words) or not vs.MIN_FRAME <= max_frame <= vs.MAX_JUMBO_FRAME:
            return None
        if max_frame > vs.LEGACY_MAX_FRAME:
            self._pool_bit(_VFRE, vf, False)
            return False
        if self.rd("MAXFRS") >> 16 < max_frame:
            self.wr("MAXFRS", max_frame << 16)
        return True


DEVICE = DeviceEntry(VirtualFunction, "sriov", "Intel 82599 SR-IOV virtual function", ASSIGNERS, "ixgbevf",
                     (vs.VENDOR_ID, vs.DEVICE_ID))
