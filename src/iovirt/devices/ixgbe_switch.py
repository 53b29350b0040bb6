"""The 82599's virtualisation block: its pools, mailboxes and embedded
switch (82599 datasheet 7.10).

:class:`SriovEngine` belongs to one :class:`~iovirt.devices.ixgbe.Ixgbe`
port with VFs: 64 pools of 2 queue pairs, pool n's queues are 2n and 2n+1
(the VFs' pools first, the PF driver's default pool after them).  It decodes
the PF's virtualisation registers (mailboxes, PFMBICR, MPSAR, PFVML2FLT,
PFVLVF/B, PFVMVIR, PFVFSPOOF, PFVFRE/TE, PFVTCTL, PFDTXGSWC, PFQDE,
RTTDQSEL/RTTBCNRC) and is the embedded switch (VEB, 7.10.3): what any pool
sends is checked against anti-spoofing, tagged with the pool's default VLAN,
and looked up by destination MAC and VLAN; a frame for another pool is DMA'd
into that pool's RX queue by the NIC engine and never reaches the wire,
broadcast and multicast go to every accepting pool and the wire, anything
else to the wire.  Frames from the wire go to the pools owning their MAC
(and VLAN), broadcast to all accepting pools, unknown unicast to the default
pool (PFVTCTL.DEF_PL) when FCTRL.UPE is set.  Each TX queue with
RTTBCNRC.RS_ENA is paced by its own rate Resource (7.7.2): a frame may start
once the previous one's time at line rate times the rate factor has passed;
until then the queue is not fetched.

The mailboxes (7.10.2): a VF's VFMailbox.REQ or ACK sets its bit in
PFMBICR and raises the PF's EICR.MAILBOX, an "other" cause signalled on the
MSI-X vector IVAR_MISC names; whatever answers is the PF driver, through the
PF's registers.  Bits the PF sets in a VF's mailbox become visible to the VF
at the time of the PF's write.  The VFs themselves are
:class:`~iovirt.devices.ixgbe_vf.VirtualFunction`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sim.resource import Resource
from ..spec import ixgbe as s
from ..spec import ixgbevf as vs
from .discard import discard

if TYPE_CHECKING:
    from .ixgbe import Ixgbe
    from .ixgbe_vf import VirtualFunction

NQ = vs.MAX_POOLS * vs.QUEUES
OFF = {r.name: r.offset for r in (*s.REGS, *vs.PF_REGS)}
_P = {name: off >> 2 for name, off in OFF.items()}
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
RX, DCTL, SRRCTL = s.RX_BLOCK, s.BLOCK_DCTL, s.BLOCK_SRRCTL


def bits(mask: int):
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
    """The virtualisation block of 82599 port ``pf`` with ``num_vfs`` VFs."""

    def __init__(self, pf: Ixgbe, num_vfs: int) -> None:
        if not 1 <= num_vfs <= vs.MAX_VFS:
            raise ValueError(f"ixgbe SR-IOV: {num_vfs} VFs, not in [1, {vs.MAX_VFS}]")
        if pf.num_queues < NQ:
            raise ValueError(f"ixgbe SR-IOV: the PF has {pf.num_queues} queues, pools need {NQ}")
        self.pf = pf
        self.sim = pf.sim
        self.num_vfs = num_vfs
        self.functions: list[VirtualFunction | None] = [None] * vs.MAX_POOLS
        self.spoofed = [0] * vs.MAX_POOLS   # frames dropped by anti-spoofing, per pool
        self.shapers: dict[int, Resource] = {}
        self.epoch = 0
        reads = {PFMAILBOX0 + n: self._r_pfmailbox for n in range(vs.MAX_POOLS)}
        reads.update({RTTBCNRC: self._r_rttbcnrc, SSVPC: self._r_ssvpc})
        writes = {idx: self._w_pool_config for idx in _POOL_CONFIG}
        writes.update({PFMAILBOX0 + n: self._w_pfmailbox for n in range(vs.MAX_POOLS)})
        writes.update({PFMBICR0 + i: self._w_pfmbicr for i in range(4)})
        writes.update({PFQDE: self._w_pfqde, RTTBCNRC: self._w_rttbcnrc, SSVPC: self._w_ignore,
                       CTRL_EXT: self._w_ctrl_ext})
        pf.decode([r.offset >> 2 for r in vs.PF_REGS], reads, writes)
        self.reset()

    def reset(self) -> None:
        """The PF's CTRL.RST: the pool registers are back to 0 and every VF
        sees RSTI until the PF driver, having configured them again, sets
        CTRL_EXT.PFRSTD."""
        self.epoch += 1
        self.mbx = [_Mailbox() for _ in range(vs.MAX_POOLS)]
        self.bcnrc = [0] * NQ
        self.rate = [0.0] * NQ              # rate factor per TX queue, 0: not limited
        self.gate_at = [0.0] * NQ
        self.armed: set[int] = set()
        self.tx_en = 0
        self.qde = 0                        # queues whose drop enable the PF forces (PFQDE)
        self._build(None)

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
        self.pf.pools = self if vtctl & vs.PFVTCTL_VT_ENA else None    # VT off: the port's plain filters and RSS
        if cpu is not None:
            for pool in bits(self.tx_en & ~tx_en):      # PFVFTE newly set: fetch what waits
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
        """DMA a copy into each pool's first RX queue; RXDCTL.VME strips the tag.
        A frame looped back by the VEB is written once the transmit side has it."""
        pf = self.pf
        r = pf.r
        rx = pf.rx_engine
        if rx is not engine:
            rx.sync(engine.cursor)
            engine = rx
        for pool in bits(pools):
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
        set the VF's PFMBICR bit and raise EICR.MAILBOX at the time of the write."""
        m = self.mbx[vf]
        m.vfu = bool(value & _VFU) and not m.pfu
        for cmd, shift in ((vs.VFMAILBOX_REQ, vs.PFMBICR_VFREQ_SHIFT), (vs.VFMAILBOX_ACK, vs.PFMBICR_VFACK_SHIFT)):
            if value & cmd:
                self.pf.r[PFMBICR0 + vf // vs.VFS_PER_MBICR] |= 1 << (shift + vf % vs.VFS_PER_MBICR)
                self.pf.other_cause(cpu, s.EICR_MAILBOX)

    def vf_reset(self, vf: int) -> None:
        """VFCTRL.RST: the VF lets go of its mailbox and forgets what was posted."""
        m = self.mbx[vf]
        m.vfu = False
        m.posted.pop(vs.VFMAILBOX_PFSTS, None)
        m.posted.pop(vs.VFMAILBOX_PFACK, None)


