"""The host's PF driver for an 82599 port with SR-IOV, its SR-IOV part
(Linux ixgbe_sriov.c and ixgbe_mbx.c): the administrator's settings per VF
(:class:`VfConfig`, ``ip link set PF vf N ...``) programmed through the PF's
registers, the virtualisation set up for the VFs' pools and the PF's default
pool (ixgbe_configure_virtualization), and the mailbox task answering
VF_RESET, SET_MAC_ADDR, SET_MULTICAST, SET_VLAN and SET_LPE.

It touches the NIC through its registers only.  A VF's doorbell
(VFMailbox.REQ or ACK) sets the VF's bit in PFMBICR and the NIC raises
EICR.MAILBOX on the PF's "other causes" MSI-X vector (82599 datasheet
7.10.2.2, 7.3.1.2); the handler (ixgbe_msix_other) reads the causes, and for
MAILBOX runs :meth:`PfDriver.msg_task`: for each VF whose PFMBICR bit is set,
its message is read from PFMBMEM under PFMAILBOX.PFU and answered there.
Reading a message and writing the reply cost a ``ring_op`` each on the
driver's CPU.

The handler runs on the driver's host thread and pays ``irq_entry`` there
(:meth:`PfDriver.own_interrupt`); when the PF is also the host's network
interface (its queues in the PF's default pool), the causes other than
MAILBOX go on to that interface's driver, as one Linux driver does both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..devices.ixgbe import Ixgbe
from ..sim.resource import Resource
from ..spec import ixgbe as s
from ..spec import ixgbevf as vs
from ..spec.pci import PCI_MSIX_ENTRY_SIZE, PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE

_OFF = {r.name: r.offset for r in (*s.REGS, *vs.PF_REGS)}
_VFRE, _VFTE = ("PFVFRE0", "PFVFRE1"), ("PFVFTE0", "PFVFTE1")
OTHER_VECTOR = 1                    # MSI-X entries as ixgbe lays them out: the queue vectors, then "other"
OTHER_EITR = 0                      # not moderated: each VF message is answered as it arrives


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


class PfDriver:
    """The SR-IOV part of the PF driver of port ``pf`` with ``num_vfs`` VFs,
    running on ``cpu``; ``configs``: the administrator's settings of the
    first VFs (the rest: defaults).  The PF's own traffic, if any, is in its
    default pool ``pool``, the first after the VFs' (the VMDq offset).
    Counters per VF in ``stats``: ``ack``, ``nack``, ``malformed`` messages,
    ``locked`` (the VF held the buffer)."""

    def __init__(self, pf: Ixgbe, cpu: Resource, num_vfs: int, configs: Sequence[VfConfig] = ()) -> None:
        if len(configs) > num_vfs:
            raise ValueError(f"{len(configs)} VF configurations for {num_vfs} VFs")
        self.pf, self.host, self.pool = pf, cpu, num_vfs
        self.config = [*configs, *(VfConfig() for _ in range(num_vfs - len(configs)))]
        self.mac = [c.mac for c in self.config]
        self.stats = [Counter() for _ in self.config]
        self._handlers = {vs.VF_SET_MAC_ADDR: self._set_mac_msg, vs.VF_SET_MULTICAST: self._set_multicast_msg,
                          vs.VF_SET_VLAN: self._set_vlan_msg, vs.VF_SET_LPE: self._set_lpe_msg}
        self._next = None                   # the PF's interrupt handler before ours

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
        settings, EIMS.MAILBOX (ixgbe_irq_enable with VFs), then
        CTRL_EXT.PFRSTD: the VFs may talk to us."""
        pool = self.pool
        self._irq_setup()
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
        self.wr("EIMS", s.EICR_MAILBOX)
        self.wr("CTRL_EXT", self.rd("CTRL_EXT") | s.CTRL_EXT_PFRSTD)

    def reset_hw(self) -> None:
        """ixgbe_reset with VFs: CTRL.RST, then the SR-IOV configuration again
        (the VFs see RSTI until it is back)."""
        self.wr("CTRL", s.CTRL_RST)
        self.restore()

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

    # ---- the other-causes interrupt (ixgbe_configure_msix, ixgbe_msix_other) --------------------------
    def own_interrupt(self) -> None:
        """The PF's other-causes vector reaches the host's handler here, on
        ``cpu``: MAILBOX is ours; any other cause goes on to the handler the
        PF had (``pf.msi``: its netdev's, when it carries traffic).  Set up
        by :meth:`restore`."""
        pci = self.pf.pci
        flags = pci.msix.cap + PCI_MSIX_FLAGS
        pci.config_write(flags, 2, pci.config_read(flags, 2) | PCI_MSIX_FLAGS_ENABLE)
        self.pf.msix_write(self.host, s.MSIX_TABLE_OFFSET + OTHER_VECTOR * PCI_MSIX_ENTRY_SIZE
                           + PCI_MSIX_ENTRY_VECTOR_CTRL, 4, 0)
        self._next, self.pf.msi = self.pf.msi, self._msi

    def _irq_setup(self) -> None:
        self.wr("IVAR_MISC", (s.IVAR_ALLOC_VAL | OTHER_VECTOR) << s.IVAR_MISC_OTHER_SHIFT)
        self.wr(f"EITR{OTHER_VECTOR}", OTHER_EITR)
        self.wr("GPIE", self.rd("GPIE") | s.GPIE_MSIX_MODE | s.GPIE_PBA_SUPPORT | s.GPIE_OCD)

    def _msi(self, cpu: Resource, vector: int) -> None:
        """The PF's MSI-X message reaches the host."""
        if vector != OTHER_VECTOR or self.pf.pci.notify(vector) is None:
            if self._next is not None:
                self._next(cpu, vector)
            return
        host = self.host
        host.sync(cpu.cursor)
        host.charge("irq_entry")
        eicr = self.rd("EICS") & 0xFFFF0000
        if eicr & s.EICR_MAILBOX:
            self.wr("EICR", s.EICR_MAILBOX)
            self.msg_task()
        rest = eicr & ~s.EICR_MAILBOX
        if rest and self._next is not None:
            self._next(cpu, vector)
        elif rest:
            self.wr("EICR", rest)

    # ---- the mailbox task (ixgbe_msg_task) ---------------------------------------------------------
    def msg_task(self) -> None:
        """Each VF that rang: take its message, then its acknowledgement."""
        for vf in range(len(self.config)):
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
