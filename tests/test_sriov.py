"""SR-IOV on the 82599: VFs on one port, the embedded switch (loopback,
steering by MAC and VLAN, replication), anti-spoofing, per-VF rate limiting,
the PF/VF mailbox and its policy, isolation between VFs under hostile
register writes and messages, and the ixgbevf driver end to end through a
VM whose VF registers do not trap.  Everything is real iovirt code."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovirt.devices.ixgbe import RX, TX, Ixgbe
from iovirt.devices.ixgbe_switch import SriovEngine
from iovirt.devices.ixgbe_vf import VirtualFunction
from iovirt.guest.drivers.ixgbevf import IxgbevfDriver
from iovirt.guest.kernel import GuestKernel
from iovirt.net.peer import WirePeer
from iovirt.hypervisor.host import Host
from iovirt.hypervisor.ixgbe_pf import PfDriver, VfConfig
from iovirt.hypervisor.pcinic import PciNic
from iovirt.hypervisor.vm import VM
from iovirt.net.wire import Link
from iovirt.mem.dma import Dma
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import ixgbe as s
from iovirt.spec import ixgbevf as vs
from iovirt.spec.pci import PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT

PROFILE = load_profile("default")
PF_MAC = bytes.fromhex("001b21a0b0c0")
PEER_MAC = bytes.fromhex("001b21d0e0f0")
MACS = [bytes.fromhex(f"5254000000{i + 1:02x}") for i in range(4)]
BCAST = b"\xff" * 6
MEM = 1 << 20
TX_RING, RX_RING, TX_BUFS, RX_BUFS = 0x10000, 0x30000, 0x40000, 0x80000
TXD = s.ADVTXD_DTYP_DATA | s.TXD_CMD_DEXT | s.TXD_CMD_IFCS | s.TXD_CMD_EOP | s.TXD_CMD_RS
VF_REG = {r.name: r.offset for r in vs.REGS}


@dataclass
class Port:
    sim: Sim
    ledger: Ledger
    engine: Resource
    host: Resource
    pf: Ixgbe
    sriov: SriovEngine
    policy: PfDriver
    link: Link
    peer: WirePeer
    vfs: list[VirtualFunction] = field(default_factory=list)
    cpus: list[Resource] = field(default_factory=list)
    rings: dict[int, int] = field(default_factory=dict)

    def rd(self, vf: int, reg: str) -> int:
        return self.vfs[vf].mmio_read(self.cpus[vf], VF_REG[reg], 4)

    def wr(self, vf: int, reg: str, value: int) -> None:
        self.vfs[vf].mmio_write(self.cpus[vf], VF_REG[reg], 4, value)

    def mem(self, vf: int) -> GuestMemory:
        return self.vfs[vf].dma.mem

    def mailbox(self, vf: int, words: list[int], count: int = vs.MAILBOX_SIZE) -> list[int]:
        """The VF's side of one request: buffer, message, REQ; wait for the
        PF's answer on its host core; read it and ACK."""
        self.wr(vf, "VFMAILBOX", vs.VFMAILBOX_VFU)
        for i, word in enumerate(words):
            self.wr(vf, f"VFMBMEM{i}", word)
        self.wr(vf, "VFMAILBOX", vs.VFMAILBOX_REQ)
        self.cpus[vf].sync(self.host.cursor)
        assert self.rd(vf, "VFMAILBOX") & vs.VFMAILBOX_PFSTS
        reply = [self.rd(vf, f"VFMBMEM{i}") for i in range(count)]
        self.wr(vf, "VFMAILBOX", vs.VFMAILBOX_ACK)
        return reply

    def up(self, vf: int, n: int = 16) -> list[int]:
        """VFCTRL.RST, VF_RESET through the mailbox, a TX and an RX ring of
        ``n`` descriptors in the VF's memory; returns the reset reply."""
        self.wr(vf, "VFCTRL", s.CTRL_RST)
        self.rd(vf, "VFMAILBOX")                            # consumes RSTD
        reply = self.mailbox(vf, [vs.VF_RESET], vs.PERMADDR_MSG_LEN)
        mem = self.mem(vf)
        for i in range(n):
            s.RX_DESC.pack_into(mem.buf, RX_RING + 16 * i, RX_BUFS + 2048 * i, 0)
        for reg, value in (("VFTDBAL0", TX_RING), ("VFTDLEN0", 16 * n), ("VFTXDCTL0", s.TXDCTL_ENABLE),
                           ("VFRDBAL0", RX_RING), ("VFRDLEN0", 16 * n),
                           ("VFSRRCTL0", 2 | s.SRRCTL_DESCTYPE_ADV_ONEBUF), ("VFRXDCTL0", s.RXDCTL_ENABLE),
                           ("VFRDT0", n - 1)):
            self.wr(vf, reg, value)
        self.rings[vf] = n
        return reply

    def send(self, vf: int, frames: list[bytes], buf: int | None = None) -> None:
        """Frames into the VF's TX ring (one descriptor each), then VFTDT."""
        n, mem = self.rings[vf], self.mem(vf)
        tail = self.rd(vf, "VFTDT0")
        for k, data in enumerate(frames):
            slot = (tail + k) % n
            at = TX_BUFS + 2048 * slot if buf is None else buf
            if at + len(data) <= mem.size:
                mem.write(at, data)
            s.TX_DESC.pack_into(mem.buf, TX_RING + 16 * slot, at, TXD | len(data), len(data) << 14)
        self.wr(vf, "VFTDT0", (tail + len(frames)) % n)

    def received(self, vf: int) -> list[bytes]:
        out, mem = [], self.mem(vf)
        for i in range(self.rings.get(vf, 0)):
            *_, status, length, _vlan = s.RX_WB.unpack_from(mem.buf, RX_RING + 16 * i)
            if status & s.RXD_STAT_DD:
                out.append(bytes(mem.buf[RX_BUFS + 2048 * i:RX_BUFS + 2048 * i + length]))
        return out

    def at_peer(self, src: bytes | None = None) -> list[bytes]:
        return [f for _, f in self.peer.received if src is None or f[6:12] == src]

    def config(self, vf: int):
        return self.sriov.pool_config(vf)


def port(configs: list[VfConfig] | None = None, num_vfs: int = 2) -> Port:
    sim = Sim()
    ledger = Ledger(PROFILE)
    engine = Resource("host0/pnic0/engine", "nic", ledger)
    pf = Ixgbe(sim, PF_MAC, Dma(GuestMemory(MEM), "dma"), engine, num_vfs=num_vfs)
    link = Link(sim, ledger, "wire0", 10)
    link.attach(pf)
    peer = WirePeer(link, PEER_MAC, "10.0.0.254/24", record=True)
    host = Resource("host0/core1", "host_core", ledger)
    configs = [VfConfig(mac=MACS[i]) for i in range(num_vfs)] if configs is None else configs
    policy = PfDriver(pf, host, num_vfs, configs)
    policy.own_interrupt()
    policy.restore()
    sriov = pf.vt
    r = Port(sim, ledger, engine, host, pf, sriov, policy, link, peer)
    for i in range(num_vfs):
        r.vfs.append(VirtualFunction(sriov, i, Dma(GuestMemory(MEM), "dma")))
        r.cpus.append(Resource(f"vm{i}/vcpu0", "vcpu", ledger))
    return r


def frame(dst: bytes, src: bytes, size: int = 100, seed: int = 0, kind: bytes = b"\x88\xb5") -> bytes:
    return dst + src + kind + bytes((seed + 7 * i) & 0xFF for i in range(size - 14))


def tagged(dst: bytes, src: bytes, vid: int, size: int = 100) -> bytes:
    plain = frame(dst, src, size)
    return plain[:12] + struct.pack(">HH", vs.VLAN_TPID, vid) + plain[12:]


def mac_msg(mac: bytes) -> list[int]:
    return list(struct.unpack("<3I", vs.MAC_MSG.pack(vs.VF_SET_MAC_ADDR, int.from_bytes(mac[:4], "little"),
                                                     int.from_bytes(mac[4:], "little"))))


# ---- identity ------------------------------------------------------------------------------
def test_vf_pci_identity_bars_and_three_msix_vectors():
    """A VF is 8086:10ED with a 16 KiB 64-bit BAR0, and MSI-X with 3 vectors in BAR3 (PBA at 0x2000)."""
    fn = port().vfs[0].pci
    assert fn.config_read(0, 2) == 0x8086 and fn.config_read(2, 2) == 0x10ED
    assert fn.bars[0].size == 0x4000 and fn.bars[0].kind == "mem64"
    assert fn.bars[3].size == 0x4000 and fn.msix.vectors == 3
    assert (fn.msix.table_bar, fn.msix.pba_bar, fn.msix.pba_offset) == (3, 3, 0x2000)


def test_vf_queue_registers_are_the_pf_queues_of_its_pool():
    """VF 1's VFTDBAL0 is the PF's TDBAL2 and VFRDBAL1 its RDBAL3; the PF owns pool 2 (the VMDq offset)."""
    r = port()
    r.wr(1, "VFTDBAL0", 0x1234_5680)
    r.wr(1, "VFRDBAL1", 0x0ABC_0000)
    assert r.pf.r[TX[2]] == 0x1234_5680 and r.pf.r[RX[3]] == 0x0ABC_0000
    assert r.policy.pool == 2 and r.config(2)["macs"] == [PF_MAC]


def test_the_switch_is_in_the_path_only_while_vt_mode_is_on():
    """Until the PF driver sets PFVTCTL.VT_ENA the port filters as a plain NIC (a frame for its own MAC
    goes to queue 0, here disabled); with VT on, the same frame goes by pool, and a MAC no pool owns
    is dropped by the switch."""
    sim, ledger = Sim(), Ledger(PROFILE)
    pf = Ixgbe(sim, PF_MAC, Dma(GuestMemory(MEM), "dma"), Resource("e", "nic", ledger), num_vfs=2)
    pf.mmio_write(pf.engine, s.REGS["RXCTRL"].offset, 4, s.RXCTRL_RXEN)
    pf.receive(pf.engine, frame(PF_MAC, PEER_MAC))
    assert pf.pools is None and dict(pf.errors) == {"rx_queue_disabled": 1}
    driver = PfDriver(pf, Resource("host", "host_core", ledger), 2, [VfConfig(mac=MACS[0]), VfConfig(mac=MACS[1])])
    driver.restore()
    pf.receive(pf.engine, frame(bytes.fromhex("525400abcdef"), PEER_MAC))
    assert pf.pools is pf.vt and pf.errors["rx_no_pool"] == 1


# ---- mailbox ----------------------------------------------------------------------------
def test_reset_waits_for_rstd_and_vf_reset_returns_the_mac():
    """After VFCTRL.RST the VF reads RSTD once (PF up), then VF_RESET is ACKed with its permanent MAC
    and the MTA filter type; the PF's work is charged on its host core."""
    r = port()
    r.wr(0, "VFCTRL", s.CTRL_RST)
    assert r.rd(0, "VFMAILBOX") & vs.VFMAILBOX_RSTD and not r.rd(0, "VFMAILBOX") & vs.VFMAILBOX_RSTI
    msg, lo, hi, mc = vs.RESET_REPLY.unpack_from(struct.pack("<4I", *r.mailbox(0, [vs.VF_RESET], 4)))
    assert msg == vs.VF_RESET | vs.VT_MSGTYPE_ACK and (lo | hi << 32).to_bytes(6, "little") == MACS[0]
    assert mc == 0 and r.config(0)["tx_en"] and r.config(0)["rx_en"]
    host = r.ledger.accounts["host0/core1"]
    assert host["irq_entry"] >= 1 and host["ring_op"] >= 2 and r.cpus[0].busy_ns == 0


def test_the_pf_reply_is_not_visible_before_the_pf_has_written_it():
    """Bits the PF posts appear to the VF only once the host core has done the work."""
    r = port()
    r.wr(0, "VFMAILBOX", vs.VFMAILBOX_VFU)
    r.wr(0, "VFMBMEM0", vs.VF_RESET)
    r.wr(0, "VFMAILBOX", vs.VFMAILBOX_REQ)
    assert r.host.cursor > r.cpus[0].cursor
    assert not r.rd(0, "VFMAILBOX") & (vs.VFMAILBOX_PFSTS | vs.VFMAILBOX_PFACK)
    r.cpus[0].sync(r.host.cursor)
    assert r.rd(0, "VFMAILBOX") & vs.VFMAILBOX_PFSTS


@pytest.mark.parametrize("masked", ["EIMC", "MSI-X"])
def test_the_pf_driver_answers_only_from_its_mailbox_interrupt(masked):
    """The NIC never calls the host: a VF's REQ sets its PFMBICR bit and raises EICR.MAILBOX; with
    that cause masked (EIMC) or the PF's MSI-X entry masked, nothing answers and the host core does
    no work; the PF driver's next pass over PFMBICR (its next interrupt) answers it."""
    r = port()
    r.wr(0, "VFCTRL", s.CTRL_RST)
    r.rd(0, "VFMAILBOX")
    if masked == "EIMC":
        r.pf.mmio_write(r.host, s.REGS["EIMC"].offset, 4, s.EICR_MAILBOX)
    else:
        r.pf.msix_write(r.host, s.MSIX_TABLE_OFFSET + 16 + 12, 4, 1)       # entry 1 (other causes): Mask Bit
    busy = r.host.busy_ns
    r.wr(0, "VFMAILBOX", vs.VFMAILBOX_VFU)
    r.wr(0, "VFMBMEM0", vs.VF_RESET)
    r.wr(0, "VFMAILBOX", vs.VFMAILBOX_REQ)
    r.cpus[0].sync(r.host.cursor)
    assert not r.rd(0, "VFMAILBOX") & vs.VFMAILBOX_PFSTS and r.host.busy_ns == busy
    assert r.pf.mmio_read(r.host, vs.PF_REGS["PFMBICR0"].offset, 4) == 1 << vs.PFMBICR_VFREQ_SHIFT
    r.policy.msg_task()
    r.cpus[0].sync(r.host.cursor)
    assert r.rd(0, "VFMAILBOX") & vs.VFMAILBOX_PFSTS and r.rd(0, "VFMBMEM0") == vs.VF_RESET | vs.VT_MSGTYPE_ACK
    assert r.pf.mmio_read(r.host, vs.PF_REGS["PFMBICR0"].offset, 4) == 0


def test_no_administrator_mac_is_a_nack_and_the_vf_may_pick_one():
    """Without an assigned MAC the reset reply is a NACK; the VF's own SET_MAC_ADDR is then accepted."""
    r = port([VfConfig(), VfConfig(mac=MACS[1])])
    assert r.up(0)[0] == vs.VF_RESET | vs.VT_MSGTYPE_NACK
    mine = bytes.fromhex("525400990001")
    assert r.mailbox(0, mac_msg(mine), 1)[0] == vs.VF_SET_MAC_ADDR | vs.VT_MSGTYPE_ACK | vs.VT_MSGTYPE_CTS
    assert r.config(0)["macs"] == [mine]


@pytest.mark.parametrize("trust,new,acked", [(False, MACS[2], False), (False, MACS[0], True),
                                             (True, MACS[2], True), (True, MACS[1], False),
                                             (True, PF_MAC, False), (True, BCAST, False)])
def test_set_mac_needs_trust_and_a_free_unicast_address(trust, new, acked):
    """An untrusted VF keeps the administrator's MAC; a trusted one may change it, never to a
    multicast address or one another function owns."""
    r = port([VfConfig(mac=MACS[0], trust=trust), VfConfig(mac=MACS[1])])
    r.up(0)
    reply = r.mailbox(0, mac_msg(new), 1)[0]
    result = vs.VT_MSGTYPE_ACK if acked else vs.VT_MSGTYPE_NACK
    assert reply == vs.VF_SET_MAC_ADDR | result | vs.VT_MSGTYPE_CTS
    assert r.config(0)["macs"] == [new if acked else MACS[0]] and r.config(1)["macs"] == [MACS[1]]


def test_requests_before_vf_reset_are_nacked_without_cts():
    """Until VF_RESET, the PF answers everything with a NACK and no CTS."""
    r = port()
    assert r.mailbox(0, mac_msg(MACS[0]), 1)[0] == vs.VF_SET_MAC_ADDR | vs.VT_MSGTYPE_NACK
    assert not r.config(0)["tx_en"]


@pytest.mark.parametrize("words", [[0x77], [vs.VF_RESET | vs.VT_MSGTYPE_ACK], [vs.VF_SET_VLAN | 5 << 16, 3],
                                   [vs.VF_SET_VLAN | 1 << 16, 0x1000], [vs.VF_SET_MULTICAST | 31 << 16],
                                   [vs.VF_SET_LPE, 10], [vs.VF_SET_MAC_ADDR | 1 << 16]])
def test_malformed_messages_are_nacked_and_counted(words):
    """Unknown IDs, result bits set by the VF, out-of-range fields and counts: NACK, counted."""
    r = port()
    r.up(0)
    assert r.mailbox(0, words, 1)[0] & vs.VT_MSGTYPE_NACK
    assert r.policy.stats[0]["malformed"] == 1


def test_set_vlan_joins_a_filter_unless_a_port_vlan_is_set():
    """SET_VLAN adds the pool to the VLAN's filter; under a port VLAN it is refused."""
    r = port([VfConfig(mac=MACS[0]), VfConfig(mac=MACS[1], vlan=100)])
    r.up(0)
    r.up(1)
    for vf in (0, 1):
        r.mailbox(vf, [vs.VF_SET_VLAN | 1 << vs.VT_MSGINFO_SHIFT, 42], 1)
    assert r.config(0)["vlans"] == [0, 42] and r.config(1)["vlans"] == [100]
    assert r.policy.stats[1]["nack"] == 1


def test_set_lpe_beyond_standard_frames_disables_the_vfs_receive_only():
    """An API 1.0 VF asking for jumbo frames is NACKed and its receive disabled, nobody else's."""
    r = port()
    r.up(0)
    r.up(1)
    assert r.mailbox(0, [vs.VF_SET_LPE, 1518], 1)[0] & vs.VT_MSGTYPE_ACK
    assert r.mailbox(0, [vs.VF_SET_LPE, 9000], 1)[0] & vs.VT_MSGTYPE_NACK
    assert not r.config(0)["rx_en"] and r.config(1)["rx_en"]


# ---- the switch ----------------------------------------------------------------------------
def test_vf_to_vf_frames_are_switched_inside_the_nic():
    """A frame from VF 0 to VF 1's MAC is DMA'd into VF 1's ring by the NIC engine: nothing on the
    wire, no CPU charged, per-VF counters move."""
    r = port()
    r.up(0)
    r.up(1)
    busy = r.host.busy_ns
    data = frame(MACS[1], MACS[0], 600, seed=3)
    r.send(0, [data])
    r.sim.run()
    assert r.received(1) == [data] and r.received(0) == []
    assert r.at_peer() == [] and r.link.to_peer.busy_ns == 0
    assert r.host.busy_ns == busy and all(cpu.busy_ns == 0 for cpu in r.cpus)
    assert r.ledger.accounts["host0/pnic0/engine"]["dma"] > 0
    assert (r.rd(0, "VFGPTC"), r.rd(1, "VFGPRC"), r.rd(1, "VFGORC_LSB")) == (1, 1, 604)


def test_unknown_unicast_goes_to_the_wire_and_frames_from_the_wire_are_steered_by_mac():
    """VF 0's frame for the peer leaves on the wire; the peer's frames reach only the VF they name."""
    r = port()
    r.up(0)
    r.up(1)
    out = frame(PEER_MAC, MACS[0], 300)
    r.send(0, [out])
    r.sim.run()
    assert r.at_peer() == [out]
    to0, to1 = frame(MACS[0], PEER_MAC, seed=1), frame(MACS[1], PEER_MAC, seed=2)
    r.peer.send(to0)
    r.peer.send(to1)
    r.peer.send(frame(MACS[3], PEER_MAC, seed=3))
    r.sim.run()
    assert r.received(0) == [to0] and r.received(1) == [to1]
    assert r.pf.errors["rx_no_pool"] == 1


def test_broadcast_is_replicated_to_every_pool_and_the_wire():
    """A VF's broadcast reaches the other VF and the peer, not itself; the peer's broadcast reaches both VFs."""
    r = port()
    r.up(0)
    r.up(1)
    bc = frame(BCAST, MACS[0], 80)
    r.send(0, [bc])
    r.sim.run()
    assert r.received(1) == [bc] and r.received(0) == [] and r.at_peer() == [bc]
    wire = frame(BCAST, PEER_MAC, 90)
    r.peer.send(wire)
    r.sim.run()
    assert r.received(0) == [wire] and r.received(1) == [bc, wire]


@pytest.mark.parametrize("spoofchk", [True, False])
def test_anti_spoofing_drops_and_counts_a_forged_source_mac(spoofchk):
    """With spoof checking, a frame from VF 0 carrying VF 1's MAC as source goes nowhere and is
    counted (SSVPC, per VF); without it, it leaves."""
    r = port([VfConfig(mac=MACS[0], spoofchk=spoofchk), VfConfig(mac=MACS[1])])
    r.up(0)
    r.up(1)
    forged = frame(PEER_MAC, MACS[1], 200)
    r.send(0, [forged, frame(PEER_MAC, MACS[0], 200)])
    r.sim.run()
    assert len(r.at_peer(MACS[1])) == (0 if spoofchk else 1) and len(r.at_peer(MACS[0])) == 1
    ssvpc = r.pf.mmio_read(r.host, vs.PF_REGS["SSVPC"].offset, 4)
    assert (ssvpc, r.sriov.spoofed[0], r.vfs[0].errors["tx_spoofed"]) == ((1, 1, 1) if spoofchk else (0, 0, 0))
    assert r.pf.mmio_read(r.host, vs.PF_REGS["SSVPC"].offset, 4) == 0


def test_port_vlan_is_inserted_on_transmit_and_filtered_and_stripped_on_receive():
    """A VF on port VLAN 100: its frames leave tagged 100; tagged-100 frames for it arrive untagged
    (RXDCTL.VME), untagged or other-VLAN frames do not arrive."""
    r = port([VfConfig(mac=MACS[0], vlan=100), VfConfig(mac=MACS[1])])
    r.up(0)
    r.wr(0, "VFRXDCTL0", s.RXDCTL_ENABLE | s.RXDCTL_VME)
    plain = frame(PEER_MAC, MACS[0], 200)
    r.send(0, [plain])
    r.sim.run()
    assert r.at_peer() == [tagged(PEER_MAC, MACS[0], 100, 200)]
    for vid in (100, 200):
        r.peer.send(tagged(MACS[0], PEER_MAC, vid))
    r.peer.send(frame(MACS[0], PEER_MAC))
    r.sim.run()
    assert r.received(0) == [frame(MACS[0], PEER_MAC)]


def test_a_rate_limited_vf_sends_no_faster_than_its_rate_and_the_other_takes_the_rest():
    """VF 0 limited to 1000 Mbit/s and VF 1 unlimited both send back to back: at the peer VF 0's
    frames arrive at no more than 1 Gbit/s (line bits with preamble and gap; no window holds more
    than one frame beyond it) and, once both are streaming, at that rate; VF 1 gets the rest of
    the 10 Gbit/s wire."""
    r = port([VfConfig(mac=MACS[0], rate_mbps=1000), VfConfig(mac=MACS[1])])
    r.up(0, n=256)
    r.up(1, n=2048)
    size = 1514
    r.send(0, [frame(PEER_MAC, MACS[0], size, seed=i) for i in range(150)], buf=TX_BUFS)
    r.send(1, [frame(PEER_MAC, MACS[1], size, seed=i) for i in range(1800)], buf=TX_BUFS)
    r.sim.run()
    bits = (size + 4 + 8 + 12) * 8
    slow = [t for t, f in r.peer.received if f[6:12] == MACS[0]]
    assert len(slow) == 150
    assert (len(slow) - 1) * bits / (slow[-1] - slow[0]) <= 1.0 + 1e-9
    steady = slow[10:]
    span = steady[-1] - steady[0]
    slow_gbps = (len(steady) - 1) * bits / span
    fast = [t for t, f in r.peer.received if f[6:12] == MACS[1] and steady[0] <= t < steady[-1]]
    fast_gbps = len(fast) * bits / span
    assert 0.95 < slow_gbps <= 1.0 + 1e-9
    assert 10 - slow_gbps - 0.3 < fast_gbps and slow_gbps + fast_gbps <= 10 + 1e-9
    period, ahead = bits / 1.0, float("-inf")         # ns per frame at 1 Gbit/s
    for i, t in enumerate(slow):                      # no window holds more than one frame over the rate
        assert t - i * period >= ahead - period - 1e-6
        ahead = max(ahead, t - i * period)
    assert r.ledger.accounts["host0/pnic0/engine"]["rate_limit"] == 150


def test_a_vf_transmits_nothing_before_the_pf_enables_it():
    """PFVFTE: until VF_RESET the VF's descriptors are not processed; then they are."""
    r = port()
    r.up(1)
    r.wr(0, "VFTDBAL0", TX_RING)
    r.wr(0, "VFTDLEN0", 16 * 16)
    r.wr(0, "VFTXDCTL0", s.TXDCTL_ENABLE)
    r.rings[0] = 16
    r.send(0, [frame(PEER_MAC, MACS[0])])
    r.sim.run()
    assert r.at_peer() == [] and r.rd(0, "VFTDH0") == 0
    r.mailbox(0, [vs.VF_RESET], 4)
    r.sim.run()
    assert len(r.at_peer()) == 1 and r.rd(0, "VFTDH0") == 1


def test_the_pf_pool_is_switched_like_any_other():
    """The PF's own queues (pool 2, after the VMDq offset) reach a VF inside the NIC, and a VF's
    frame for the PF's MAC lands in the PF pool's RX queue, not on the wire."""
    r = port()
    r.up(0)
    mem, q = r.pf.dma.mem, 2 * r.policy.pool
    s.RX_DESC.pack_into(mem.buf, RX_RING, RX_BUFS, 0)
    for reg, value in ((f"TDBAL{q}", TX_RING), (f"TDLEN{q}", 128), (f"TXDCTL{q}", s.TXDCTL_ENABLE),
                       (f"RDBAL{q}", RX_RING), (f"RDLEN{q}", 128), (f"SRRCTL{q}", 2 | s.SRRCTL_DESCTYPE_ADV_ONEBUF),
                       (f"RXDCTL{q}", s.RXDCTL_ENABLE), (f"RDT{q}", 7)):
        r.pf.mmio_write(r.host, s.REGS[reg].offset, 4, value)
    down = frame(MACS[0], PF_MAC, 120)
    mem.write(TX_BUFS, down)
    s.TX_DESC.pack_into(mem.buf, TX_RING, TX_BUFS, TXD | len(down), len(down) << 14)
    r.pf.mmio_write(r.host, s.REGS[f"TDT{q}"].offset, 4, 1)
    up = frame(PF_MAC, MACS[0], 130)
    r.send(0, [up])
    r.sim.run()
    assert r.received(0) == [down] and r.at_peer() == []
    assert bytes(mem.buf[RX_BUFS:RX_BUFS + len(up)]) == up and s.RX_WB.unpack_from(mem.buf, RX_RING)[4] == len(up)


def test_vf_interrupts_follow_vtivar_with_auto_clear_and_auto_mask():
    """RX queue 0 signals the vector VTIVAR0 names and the PF's mailbox reply the one VTIVAR_MISC
    names; VTEIAM masks a vector once it fired until VTEIMS re-enables it."""
    r = port()
    r.up(0)
    irqs = []
    r.vfs[0].msi = lambda engine, vector: irqs.append(vector)
    for reg, value in (("VTIVAR0", s.IVAR_ALLOC_VAL | 2), ("VTIVAR_MISC", s.IVAR_ALLOC_VAL | 1),
                       ("VTEIAC", 0b111), ("VTEIAM", 0b100), ("VTEIMS", 0b111)):
        r.wr(0, reg, value)
    for seed in (1, 2):
        r.peer.send(frame(MACS[0], PEER_MAC, seed=seed))
    r.sim.run()
    r.mailbox(0, [vs.VF_SET_LPE, 1518], 1)
    assert irqs == [2, 1, 1] and r.rd(0, "VTEIMS") == 0b011
    r.wr(0, "VTEICS", 0b100)
    assert irqs == [2, 1, 1]
    r.wr(0, "VTEIMS", 0b100)
    assert irqs == [2, 1, 1, 2]


def test_a_pf_reset_brings_the_vfs_back_through_reset():
    """CTRL.RST on the PF: its driver restores SR-IOV and signals RSTD; a VF may not transmit,
    nor talk, until it repeats VF_RESET."""
    r = port()
    r.up(0)
    r.policy.reset_hw()
    r.cpus[0].sync(r.host.cursor)
    assert r.rd(0, "VFMAILBOX") & vs.VFMAILBOX_RSTD and not r.config(0)["tx_en"]
    assert r.mailbox(0, mac_msg(MACS[0]), 1)[0] == vs.VF_SET_MAC_ADDR | vs.VT_MSGTYPE_NACK
    assert r.up(0)[0] == vs.VF_RESET | vs.VT_MSGTYPE_ACK and r.config(0)["tx_en"]
    r.send(0, [frame(PEER_MAC, MACS[0])])
    r.sim.run()
    assert r.at_peer() == [frame(PEER_MAC, MACS[0])]


# ---- isolation ----------------------------------------------------------------------------
def test_a_dma_fault_only_affects_the_faulting_vf():
    """VF 0's descriptor names memory it does not have: the fault is VF 0's (its counter, its PCI
    STATUS master abort); VF 1 and the PF carry on untouched."""
    r = port()
    r.up(0)
    r.up(1)
    r.send(0, [frame(PEER_MAC, MACS[0])], buf=MEM + 0x1000)
    good = frame(PEER_MAC, MACS[1], seed=4)
    r.send(1, [good])
    r.peer.send(frame(MACS[1], PEER_MAC, seed=5))
    r.sim.run()
    abort = [bool(fn.config_read(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT)
             for fn in (r.vfs[0].pci, r.vfs[1].pci, r.pf.pci)]
    assert abort == [True, False, False]
    assert r.vfs[0].errors["tx_buffer_fault"] == 1 and not r.vfs[1].errors
    assert r.at_peer() == [good] and r.received(1) == [frame(MACS[1], PEER_MAC, seed=5)]


def state(r: Port, vf: int) -> tuple:
    """Everything VF ``vf`` owns: its register file and interrupt state, its queues' registers,
    its mailbox, its pool's filters, its counters and PCI status."""
    fn, m = r.vfs[vf], r.sriov.mbx[vf]
    queues = [r.pf.r[base + k] for q in fn.queues for base in (RX[q], TX[q]) for k in range(16)]
    return (list(fn.r), fn.cause, fn.mask, queues, r.pf.r[fn.mbmem:fn.mbmem + vs.MAILBOX_SIZE],
            (m.vfu, m.pfu, m.rsti, dict(m.posted)), r.sriov.pool_config(vf), dict(fn.errors),
            fn.pci.config_read(PCI_STATUS, 2), dict(r.policy.stats[vf]), r.policy.cts[vf])


u32 = st.integers(0, 2**32 - 1)
message = st.lists(st.one_of(u32, st.integers(0, 16), st.sampled_from([1, 2, 3, 4, 5, 1 << 16 | 4])),
                   min_size=1, max_size=vs.MAILBOX_SIZE)
register_op = st.tuples(st.one_of(st.sampled_from(sorted(VF_REG.values())), st.integers(0, 0x3FFF)),
                        st.sampled_from([1, 2, 4]), u32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(message, max_size=8), ops=st.lists(register_op, max_size=40),
       trust=st.booleans())
def test_hostile_mailbox_and_registers_never_raise_nor_touch_another_vf(messages, ops, trust):
    """Random mailbox messages and random register writes (any offset, size, value) from VF 0:
    nothing raises, VF 1's state is unchanged and VF 1 still exchanges frames with the peer."""
    r = port([VfConfig(mac=MACS[0], trust=trust), VfConfig(mac=MACS[1])])
    r.up(0)
    r.up(1)
    before = state(r, 1)
    for words in messages:
        r.wr(0, "VFMAILBOX", vs.VFMAILBOX_VFU)
        for i, word in enumerate(words):
            r.wr(0, f"VFMBMEM{i}", word)
        r.wr(0, "VFMAILBOX", vs.VFMAILBOX_REQ)
        r.cpus[0].sync(r.host.cursor)
        r.rd(0, "VFMAILBOX")
    for offset, size, value in ops:
        offset -= offset % size
        r.vfs[0].mmio_write(r.cpus[0], offset, size, value & ((1 << 8 * size) - 1))
        r.vfs[0].mmio_read(r.cpus[0], offset, size)
    r.sim.run()
    assert state(r, 1) == before
    r.send(1, [frame(PEER_MAC, MACS[1], seed=9)])
    r.peer.send(frame(MACS[1], PEER_MAC, seed=8))
    r.sim.run()
    assert frame(PEER_MAC, MACS[1], seed=9) in r.at_peer() and frame(MACS[1], PEER_MAC, seed=8) in r.received(1)


# ---- the guest driver, end to end --------------------------------------------------------
class Untrapped(PciNic):
    """A VF's BARs mapped straight into the VM (what assignment gives), MSI-X to its irqchip."""

    def regions(self, index: int, kind: str, size: int):
        return [(0, size, ())]


@dataclass
class Machine:
    port: Port
    vm: VM
    guest: GuestKernel
    driver: IxgbevfDriver


def machine(configs: list[VfConfig] | None = None) -> Machine:
    """Port with two VFs; VF 0 plugged into a VM whose guest binds ixgbevf to it."""
    r = port(configs)
    vm = VM("vm1", Host("host0", 2, r.sim, r.ledger), 64, 1)
    vf = VirtualFunction(r.sriov, 0, Dma(vm.mem, "dma"))
    r.vfs[0] = vf
    vf.msi = Untrapped(vm, vf).msi
    guest = GuestKernel("vm1", vm.vcpus[0], vm.mem, r.sim)
    guest.boot()
    driver = next((d for d in guest.netdevs if isinstance(d, IxgbevfDriver)), None)
    if driver is None:                               # the kernel's DRIVERS registry may not list ixgbevf
        driver = IxgbevfDriver(guest, guest.pci.find(vs.VENDOR_ID, vs.DEVICE_ID))
        guest.netdevs.append(driver)
    guest.ifup(driver.mac, "10.0.0.1/24")
    return Machine(r, vm, guest, driver)


def test_ixgbevf_probes_learns_its_mac_from_the_pf_and_exchanges_udp_and_ping():
    """The driver resets the VF, gets its MAC from the PF over the mailbox, brings MSI-X and the
    rings up without a single trapped register access; UDP reaches the peer intact and a ping is
    answered through the VF's RX ring and interrupt."""
    m = machine()
    r, vcpu = m.port, m.vm.vcpus[0]
    assert m.driver.mac == MACS[0] and r.vfs[0].pci.interrupt_mode == "msix"
    assert m.vm.acct["mmio_emulate"] == 0 and r.policy.stats[0]["ack"] == 2      # VF_RESET, SET_LPE
    stack = m.guest.interfaces[MACS[0]]
    stack.udp_socket(5000).sendto(b"through a VF", ("10.0.0.254", 9))
    replies = []
    stack.ping("10.0.0.254", 7, 1, b"abcdefgh", lambda ident, seq, data: replies.append((ident, seq, data)))
    r.sim.run(until=vcpu.cursor + 2_000_000)
    udp = [f for f in r.at_peer(MACS[0]) if f[12:14] == b"\x08\x00" and f[23] == 17]
    assert len(udp) == 1 and udp[0][42:54] == b"through a VF"
    assert replies == [(7, 1, b"abcdefgh")] and m.vm.stats["interrupts"] >= 1
    assert m.vm.acct["mmio_emulate"] == 0


def test_ixgbevf_set_mac_follows_the_pf_policy():
    """The driver's set_mac returns what the PF answered: refused for an untrusted VF."""
    assert not machine().driver.set_mac(MACS[3])
    trusted = machine([VfConfig(mac=MACS[0], trust=True), VfConfig(mac=MACS[1])])
    assert trusted.driver.set_mac(MACS[3]) and trusted.port.config(0)["macs"] == [MACS[3]]


def test_ixgbevf_probe_fails_cleanly_without_an_assigned_mac():
    """A PF that assigned no MAC NACKs VF_RESET; the driver reports it instead of inventing one."""
    with pytest.raises(RuntimeError, match="assigned no MAC"):
        machine([VfConfig(), VfConfig(mac=MACS[1])])
