"""82599 (ixgbe) device model, the 10GbE wire and the native driver: reset,
registers, advanced TX/RX descriptors, RSS, MSI-X with EITR, packet buffers,
link timing, hostile guests, and the driver end to end over a VM whose NIC
registers do not trap.  Everything is real iovirt code."""

from __future__ import annotations

import ipaddress
import struct
from itertools import pairwise
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iovirt.devices.ixgbe import Ixgbe
from iovirt.guest.drivers.ixgbe import IxgbeDriver
from iovirt.guest.kernel import GuestKernel
from iovirt.net.headers import csum_fold, csum_partial, pseudo_header_sum
from iovirt.hypervisor.addrmap import Region
from iovirt.hypervisor.host import Host
from iovirt.hypervisor.vm import VM
from iovirt.net.peer import WirePeer
from iovirt.net.wire import Link
from iovirt.mem.dma import Dma
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import ixgbe as s
from iovirt.spec.pci import (
    PCI_CAP_ID_MSIX, PCI_MSIX_PBA, PCI_MSIX_TABLE, PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT,
    pci_base_address,
)

MAC = bytes.fromhex("001b21a0b0c0")
PEER_MAC = bytes.fromhex("001b21d0e0f0")
OTHER = bytes.fromhex("525400abcdef")
BCAST = b"\xff" * 6
MEM = 1 << 20
PROFILE = load_profile("default")
TX_RING, RX_RING = 0x1000, 0x4000
TX_BUFS, RX_BUFS = 0x10000, 0x40000
TXD = s.ADVTXD_DTYP_DATA | s.TXD_CMD_DEXT | s.TXD_CMD_IFCS
SRRCTL_2K = 2 | s.SRRCTL_DESCTYPE_ADV_ONEBUF
MS_KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")


@dataclass
class Rig:
    sim: Sim
    ledger: Ledger
    mem: GuestMemory
    cpu: Resource
    engine: Resource
    dev: Ixgbe
    link: Link
    peer: WirePeer
    irqs: list[tuple[float, int]] = field(default_factory=list)

    def rd(self, reg: str, size: int = 4) -> int:
        return self.dev.mmio_read(self.cpu, s.REGS[reg].offset, size)

    def wr(self, reg: str, value: int) -> None:
        self.dev.mmio_write(self.cpu, s.REGS[reg].offset, 4, value)

    @property
    def master_abort(self) -> bool:
        return bool(self.dev.pci.config_read(PCI_STATUS, 2) & PCI_STATUS_REC_MASTER_ABORT)

    # ---- TX ---------------------------------------------------------------
    def tx_ring(self, n: int = 8, q: int = 0, base: int = TX_RING) -> None:
        self.wr("DMATXCTL", s.DMATXCTL_TE)
        for reg, value in (("TDBAL", base & 0xFFFFFFFF), ("TDBAH", base >> 32), ("TDLEN", n * 16),
                           ("TDH", 0), ("TDT", 0), ("TXDCTL", s.TXDCTL_ENABLE)):
            self.wr(f"{reg}{q}", value)

    def tx_desc(self, i: int, data: bytes, cmd: int = s.TXD_CMD_EOP | s.TXD_CMD_RS, buf: int | None = None,
                base: int = TX_RING) -> None:
        buf = TX_BUFS + i * 0x1000 if buf is None else buf
        if buf + len(data) <= MEM:
            self.mem.write(buf, data)
        s.TX_DESC.pack_into(self.mem.buf, base + 16 * i, buf, TXD | cmd | len(data), len(data) << 14)

    def tx_status(self, i: int) -> int:
        return s.TX_WB.unpack_from(self.mem.buf, TX_RING + 16 * i)[2]

    # ---- RX ---------------------------------------------------------------
    def rx_ring(self, n: int = 8, q: int = 0, free: int | None = None, srrctl: int = SRRCTL_2K,
                base: int = RX_RING, bufsize: int = 2048) -> None:
        for i in range(n):
            s.RX_DESC.pack_into(self.mem.buf, base + 16 * i, RX_BUFS + (q * n + i) * bufsize, 0)
        for reg, value in (("RDBAL", base & 0xFFFFFFFF), ("RDBAH", base >> 32), ("RDLEN", n * 16), ("RDH", 0),
                           ("SRRCTL", srrctl), ("RXDCTL", s.RXDCTL_ENABLE), ("RDT", n - 1 if free is None else free)):
            self.wr(f"{reg}{q}", value)
        self.wr("FCTRL", s.FCTRL_BAM)
        self.wr("RXCTRL", s.RXCTRL_RXEN)

    def rx_wb(self, i: int, base: int = RX_RING) -> tuple:
        """(pkt_info, hdr_info, rss, status_error, length, vlan)."""
        return s.RX_WB.unpack_from(self.mem.buf, base + 16 * i)

    def msix(self, eitr_us: int = 0, auto_mask: bool = False) -> None:
        """MSI-X mode, queue 0 RX -> vector 3, TX -> vector 5."""
        self.dev.msi = lambda engine, vector: self.irqs.append((engine.cursor, vector))
        self.wr("GPIE", s.GPIE_MSIX_MODE | (s.GPIE_EIAME if auto_mask else 0))
        self.wr("IVAR0", (0x80 | 3) | (0x80 | 5) << 8)
        self.wr("EITR3", (eitr_us // 2) << 3)
        self.wr("EIAC", 0xFFFF)
        self.wr("EIAM_EX0", 0xFFFFFFFF if auto_mask else 0)
        self.wr("EIMS_EX0", 1 << 3 | 1 << 5)

    def run(self) -> None:
        self.sim.run()


def rig(mem_size: int = MEM, num_queues: int = s.NUM_QUEUES) -> Rig:
    sim = Sim()
    ledger = Ledger(PROFILE)
    mem = GuestMemory(mem_size)
    engine = Resource("nic0/engine", "nic", ledger)
    dev = Ixgbe(sim, MAC, Dma(mem, "dma"), engine, num_queues=num_queues)
    link = Link(sim, ledger, "wire0", 10)
    link.attach(dev)
    peer = WirePeer(link, PEER_MAC, "10.0.0.2/24", record=True)
    return Rig(sim, ledger, mem, Resource("cpu", "vcpu", ledger), engine, dev, link, peer)


def frame(dst: bytes = MAC, size: int = 64, seed: int = 0, src: bytes = PEER_MAC) -> bytes:
    body = bytes((seed + i * 7) & 0xFF for i in range(size - 14))
    return dst + src + b"\x88\xb5" + body


def udp_frame(src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes = b"x" * 18, dst: bytes = MAC) -> bytes:
    ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0x4000, 64, 17, 0,
                               ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed))
    ip[10:12] = csum_fold(csum_partial(ip)).to_bytes(2, "big")
    return dst + PEER_MAC + b"\x08\x00" + ip + struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def arrivals(r: Rig) -> list[bytes]:
    return [f for _, f in r.peer.received]


# ---- identity, reset, registers -------------------------------------------------------
def test_pci_identity_bars_and_msix_capability():
    """82599ES SFP+: 8086:10FB, BAR0 64-bit 128 KiB, BAR4 64-bit 16 KiB with the 64-entry
    MSI-X table at 0 and the PBA at 0x2000."""
    fn = rig().dev.pci
    assert fn.config_read(0, 2) == 0x8086 and fn.config_read(2, 2) == 0x10FB
    assert fn.bars[0].size == 0x20000 and fn.bars[0].kind == "mem64"
    assert fn.bars[4].size == 0x4000 and fn.bars[4].kind == "mem64"
    assert fn.config_read(pci_base_address(0), 4) & 0x6 == 0x4      # 64-bit memory BAR
    cap = fn.config.get(0x34, 1)
    while fn.config.get(cap, 1) != PCI_CAP_ID_MSIX:
        cap = fn.config.get(cap + 1, 1)
    assert fn.config_read(cap + 2, 2) & 0x7FF == 63
    assert fn.config_read(cap + PCI_MSIX_TABLE, 4) == 0x0000 | 4
    assert fn.config_read(cap + PCI_MSIX_PBA, 4) == 0x2000 | 4


@pytest.mark.parametrize("reg,value", [
    ("CTRL", 0), ("EIMS", 0), ("GPIE", 0), ("RXCTRL", 0), ("FCTRL", 0), ("MRQC", 0),
    ("RAL0", 0xA0211B00), ("RAH0", 0x8000C0B0),             # 00:1b:21:a0:b0:c0 with AV
    ("RAL1", 0), ("RAH1", 0),
    ("SRRCTL0", 0x402), ("SRRCTL64", 0x402),                # 2 KiB packet buffer, 256 B header
    ("RXDCTL0", 0), ("TXDCTL0", 0), ("DMATXCTL", 0x81000000), ("VLNCTRL", 0x8100),
    ("RXPBSIZE0", 512 << 10), ("TXPBSIZE0", 160 << 10), ("RDRXCTL", s.RDRXCTL_DMAIDONE),
    ("HLREG0", s.HLREG0_TXCRCEN | s.HLREG0_RXCRCSTRP | s.HLREG0_TXPADEN | s.HLREG0_RXLNGTHERREN),
])
def test_reset_value(reg, value):
    """Registers come out of reset with the datasheet defaults and the NVM's MAC in RAR[0]."""
    assert rig().rd(reg) == value


def test_status_and_links_follow_the_wire():
    """STATUS.LU and LINKS report 10 Gb/s link up once a wire is attached, down before."""
    r = rig()
    assert r.rd("STATUS") & s.STATUS_LU and r.rd("STATUS") & s.STATUS_GIO
    assert r.rd("LINKS") == s.LINKS_UP | s.LINKS_SPEED_10G
    r.dev.port = None
    assert not r.rd("STATUS") & s.STATUS_LU and r.rd("LINKS") == 0


def test_ctrl_rst_restores_defaults_and_self_clears():
    """CTRL.RST: registers back to reset values, RAR[0] reloaded, RST reads 0."""
    r = rig()
    r.wr("RAL0", 0x12345678)
    r.wr("FCTRL", s.FCTRL_UPE)
    r.wr("EIMS", 0xFFFF)
    r.wr("CTRL", s.CTRL_RST)
    assert r.rd("CTRL") == 0 and r.rd("FCTRL") == 0 and r.rd("EIMS") == 0
    assert r.rd("RAL0") == int.from_bytes(MAC[:4], "little")


@pytest.mark.parametrize("alias,reg", [(0x05818, "MRQC"), (0x05C04, "RETA1"), (0x05C80, "RSSRK0"),
                                       (0x02104, "SRRCTL1"), (0x05408, "RAL1"), (0x0540C, "RAH1")])
def test_82598_alias_addresses_reach_the_same_register(alias, reg):
    """The 82599 decodes the 82598 addresses Linux uses for these registers."""
    r = rig()
    r.dev.mmio_write(r.cpu, alias, 4, 0x8000_0A0B)
    assert r.rd(reg) == 0x8000_0A0B
    assert r.dev.mmio_read(r.cpu, alias, 4) == 0x8000_0A0B


def test_statistics_clear_on_read_and_unknown_offsets_read_zero():
    """GPTC counts a sent frame and clears when read; an unmapped offset reads 0 and ignores writes."""
    r = rig()
    r.tx_ring()
    r.tx_desc(0, frame(PEER_MAC))
    r.wr("TDT0", 1)
    assert r.rd("GPTC") == 1 and r.rd("GPTC") == 0
    r.dev.mmio_write(r.cpu, 0x1FFFC, 4, 0xFFFFFFFF)
    assert r.dev.mmio_read(r.cpu, 0x1FFFC, 4) == 0


# ---- transmit ---------------------------------------------------------------------------
def test_tx_frame_reaches_peer_byte_for_byte_with_dd_writeback():
    """One advanced data descriptor: the frame crosses the wire intact; DD is written back."""
    r = rig()
    r.tx_ring()
    data = frame(PEER_MAC, 1514, seed=3)
    r.tx_desc(0, data)
    r.wr("TDT0", 1)
    r.run()
    assert arrivals(r) == [data]
    assert r.tx_status(0) & s.TXD_STAT_DD and r.rd("TDH0") == 1
    assert r.rd("GOTCL") == 1514 + 4


def test_tx_multi_descriptor_frame_is_gathered():
    """Three data descriptors up to EOP make one frame; RS on the last one writes back only it."""
    r = rig()
    r.tx_ring()
    data = frame(PEER_MAC, 1000, seed=9)
    r.tx_desc(0, data[:14], cmd=0)
    r.tx_desc(1, data[14:500], cmd=0)
    r.tx_desc(2, data[500:], cmd=s.TXD_CMD_EOP | s.TXD_CMD_RS)
    r.wr("TDT0", 3)
    r.run()
    assert arrivals(r) == [data]
    assert [r.tx_status(i) & s.TXD_STAT_DD for i in range(3)] == [0, 0, 1]


def test_tx_head_wraps_around_the_ring():
    """TDH wraps from the last descriptor to 0; every frame goes out in order."""
    r = rig()
    r.tx_ring(n=8)
    sent = []
    for rnd in range(3):
        for i in range(5):
            slot = (rnd * 5 + i) % 8
            sent.append(frame(PEER_MAC, 100, seed=len(sent)))
            r.tx_desc(slot, sent[-1])
        r.wr("TDT0", (rnd * 5 + 5) % 8)
    r.run()
    assert arrivals(r) == sent and r.rd("TDH0") == 15 % 8


def test_tx_short_frame_padded_and_context_descriptor_skipped():
    """A context descriptor carries no data; a 42-byte frame leaves padded to 60 (HLREG0.TXPADEN)."""
    r = rig()
    r.tx_ring()
    s.TX_DESC.pack_into(r.mem.buf, TX_RING, 0, s.ADVTXD_DTYP_CTXT | s.TXD_CMD_DEXT, 0)
    r.tx_desc(1, frame(PEER_MAC, 42))
    r.wr("TDT0", 2)
    r.run()
    assert arrivals(r) == [frame(PEER_MAC, 42) + bytes(18)]


def test_tx_needs_te_and_queue_enable():
    """Without DMATXCTL.TE nothing is fetched; setting it sends what TDT announced."""
    r = rig()
    r.tx_ring()
    r.wr("DMATXCTL", 0)
    r.tx_desc(0, frame(PEER_MAC))
    r.wr("TDT0", 1)
    r.run()
    assert arrivals(r) == [] and r.rd("TDH0") == 0
    r.wr("DMATXCTL", s.DMATXCTL_TE)
    r.run()
    assert len(arrivals(r)) == 1


def test_tx_work_is_dma_on_the_engine_not_a_cpu():
    """TX charges 'dma' on the NIC engine (a burst descriptor read, the buffer, the write-back);
    the CPU that wrote TDT pays nothing."""
    r = rig()
    r.tx_ring()
    r.tx_desc(0, frame(PEER_MAC, 1500))
    r.wr("TDT0", 1)
    assert r.ledger.accounts["nic0/engine"]["dma"] == 3
    assert r.cpu.busy_ns == 0 and "dma" not in r.ledger.accounts["cpu"]


def test_rx_descriptors_are_prefetched_in_bursts():
    """The first frame costs a descriptor burst, the buffer and the write-back; the next ones
    find their descriptor prefetched and cost two transactions each, all on the engine."""
    r = rig()
    r.rx_ring(n=16)
    dma = r.ledger.accounts["nic0/engine"]
    r.peer.send(frame(MAC, 200))
    r.run()
    assert dma["dma"] == 3
    for i in range(4):
        r.peer.send(frame(MAC, 200, seed=i))
    r.run()
    assert dma["dma"] == 3 + 4 * 2 and r.rd("RDH0") == 5


def test_queues_beyond_num_queues_are_absent():
    """A device built with 8 queues ignores the registers of queue 8 and up."""
    r = rig(num_queues=8)
    r.wr("RDBAL7", 0x1000)
    r.wr("RDBAL8", 0x1000)
    r.wr("TDT100", 3)
    assert (r.rd("RDBAL7"), r.rd("RDBAL8"), r.rd("TDT100")) == (0x1000, 0, 0)


def test_tx_stops_fetching_while_the_packet_buffer_is_full():
    """A burst bigger than the TX buffer (TXPBSIZE0 set to 40 KiB): fetching pauses (TDH lags
    TDT) and resumes as the wire drains; every frame leaves, back to back at line rate."""
    r = rig()
    n = 200
    r.tx_ring(n=256)
    r.wr("TXPBSIZE0", 40 << 10)
    data = frame(PEER_MAC, 1500)
    for i in range(n):
        r.tx_desc(i, data, buf=TX_BUFS)
    r.wr("TDT0", n)
    assert r.rd("TDH0") < n
    r.run()
    times = [t for t, _ in r.peer.received]
    assert len(times) == n and r.rd("TDH0") == n
    gaps = {round(b - a, 6) for a, b in pairwise(times)}
    assert gaps == {round(r.link.frame_ns(1500), 6)}


# ---- link timing --------------------------------------------------------------------------
def test_back_to_back_1500_byte_frames_take_their_serialisation_time():
    """N 1500-byte frames from the NIC occupy the 10 Gbit/s wire N*(1500+4+20)*8/10 ns."""
    r = rig()
    n = 32
    r.tx_ring(n=64)
    for i in range(n):
        r.tx_desc(i, frame(PEER_MAC, 1500, seed=i))
    r.wr("TDT0", n)
    r.run()
    assert r.link.to_peer.busy_ns == pytest.approx(n * (1500 + 4 + 20) * 8 / 10)
    first, last = r.peer.received[0][0], r.peer.received[-1][0]
    assert last - first == pytest.approx((n - 1) * (1500 + 4 + 20) * 8 / 10)


@pytest.mark.parametrize("size,fps", [(60, 14_880_952), (1514, 812_743)])
def test_link_reaches_rfc5180_frame_rates(size, fps):
    """RFC 5180 A.1: 10GbE carries 14,880,952 64-byte and 812,743 1518-byte frames per second
    (sizes with FCS): frames sent back to back by the peer arrive at that rate."""
    r = rig()
    n = 1000
    for _ in range(n):
        r.peer.send(frame(MAC, size), at=0)
    assert int(n * 1e9 / r.link.to_nic.busy_ns) == fps
    assert int(1e9 / r.link.frame_ns(size)) == fps


def test_wire_drops_frames_the_nic_cannot_take():
    """No backpressure on a wire: frames arriving while RX is off are lost and counted."""
    r = rig()
    r.peer.send(frame(MAC))
    r.run()
    assert r.link.sim.drops.places[f"{r.link.name}/rx_dropped"] == 1


# ---- receive and RSS ----------------------------------------------------------------------
@pytest.mark.parametrize("src,sport,dst,dport,ipv4,ipv4_l4", [
    ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323E8FC2, 0x51CCC178),
    ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xD718262A, 0xC626B0EA),
    ("24.19.198.95", 12898, "12.22.207.184", 38024, 0xD2D0A5DE, 0x5C2B394A),
    ("38.27.205.30", 48228, "209.142.163.6", 2217, 0x82989176, 0xAFC7327F),
    ("153.39.163.191", 44251, "202.188.127.2", 1303, 0x5D1809C5, 0x10E828A2),
])
def test_toeplitz_matches_microsoft_rss_verification_suite(src, sport, dst, dport, ipv4, ipv4_l4):
    """The RSS hash of Microsoft's verification suite (IPv4 and IPv4 with ports) with its key."""
    tables = s.toeplitz_tables(MS_KEY, 12)
    addrs = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    assert s.toeplitz(tables, addrs) == ipv4
    assert s.toeplitz(tables, addrs + struct.pack(">HH", sport, dport)) == ipv4_l4


def rss_rig(queues: int = 4) -> Rig:
    r = rig()
    for q in range(queues):
        r.rx_ring(n=8, q=q, base=RX_RING + q * 0x100)
    for i in range(s.RSS_KEY_SIZE // 4):
        r.wr(f"RSSRK{i}", int.from_bytes(MS_KEY[4 * i:4 * i + 4], "little"))
    for i in range(32):                                     # entry e -> queue e % queues
        r.wr(f"RETA{i}", sum(((4 * i + j) % queues) << (8 * j) for j in range(4)))
    r.wr("MRQC", s.MRQC_RSSEN | s.MRQC_RSS_FIELD_IPV4 | s.MRQC_RSS_FIELD_IPV4_UDP)
    return r


def test_rss_steers_udp_flows_to_the_queue_reta_names():
    """Each UDP flow lands in queue RETA[hash & 127] with its hash, RSS type and DD|EOP written back
    (and IPCS: the IPv4 header checked; a UDP checksum of 0 is not checked)."""
    r = rss_rig()
    flows = [("66.9.149.187", 2794, "161.142.100.80", 1766), ("199.92.111.2", 14230, "65.69.140.83", 4739),
             ("24.19.198.95", 12898, "12.22.207.184", 38024), ("38.27.205.30", 48228, "209.142.163.6", 2217),
             ("153.39.163.191", 44251, "202.188.127.2", 1303)]
    tables = s.toeplitz_tables(MS_KEY, 12)
    used = set()
    for src, sport, dst, dport in flows:
        data = udp_frame(src, dst, sport, dport)
        h = s.toeplitz(tables, data[26:34] + data[34:38])
        q = (h & 127) % 4
        head = r.rd(f"RDH{q}")
        r.peer.send(data)
        r.run()
        info, _, rss, status, length, _ = r.rx_wb(head, RX_RING + q * 0x100)
        assert (rss, status, length) == (h, s.RXD_STAT_DD | s.RXD_STAT_EOP | s.RXD_STAT_IPCS, len(data))
        assert info & 0xF == s.RXDADV_RSSTYPE_IPV4_UDP
        assert bytes(r.mem.buf[RX_BUFS + (q * 8 + head) * 2048:][:len(data)]) == data
        used.add(q)
    assert len(used) > 1


def test_non_ip_frames_use_reta_entry_zero_without_hash():
    """A frame RSS cannot hash gets hash 0, RSS type none, and the queue in RETA[0]."""
    r = rss_rig()
    r.wr("RETA0", 2)
    r.peer.send(frame(MAC, 100))
    r.run()
    info, _, rss, status, length, _ = r.rx_wb(0, RX_RING + 2 * 0x100)
    assert (info, rss, status & s.RXD_STAT_DD, length) == (0, 0, 1, 100)


def test_rx_frame_spans_descriptors_with_small_buffers():
    """A 2500-byte frame with 1 KiB buffers takes three descriptors, EOP on the last."""
    r = rig()
    r.rx_ring(srrctl=1 | s.SRRCTL_DESCTYPE_ADV_ONEBUF, bufsize=1024)
    data = frame(MAC, 1514, seed=5)
    r.wr("HLREG0", r.rd("HLREG0") & ~s.HLREG0_RXCRCSTRP)      # keep the FCS: 1518 bytes
    r.peer.send(data)
    r.run()
    wbs = [r.rx_wb(i) for i in range(2)]
    assert [(w[3], w[4]) for w in wbs] == [(s.RXD_STAT_DD, 1024), (s.RXD_STAT_DD | s.RXD_STAT_EOP, 494)]
    stored = bytes(r.mem.buf[RX_BUFS:RX_BUFS + 1024]) + bytes(r.mem.buf[RX_BUFS + 1024:RX_BUFS + 1518])
    assert stored[:1514] == data and r.rd("RDH0") == 2


@pytest.mark.parametrize("dst,fctrl,mta,accepted", [
    (MAC, 0, 0, True), (OTHER, 0, 0, False), (OTHER, s.FCTRL_UPE, 0, True),
    (BCAST, s.FCTRL_BAM, 0, True), (BCAST, 0, 0, False),
    (bytes.fromhex("01005e000001"), 0, 0, False), (bytes.fromhex("01005e000001"), s.FCTRL_MPE, 0, True),
    (bytes.fromhex("01005e000001"), 0, 1, True),
])
def test_l2_filters(dst, fctrl, mta, accepted):
    """Exact unicast (RAR), promiscuous, broadcast accept and the multicast table decide."""
    r = rig()
    r.rx_ring()
    r.wr("FCTRL", fctrl)
    r.wr("MCSTCTRL", s.MCSTCTRL_MFE)
    bit = (dst[4] >> 4 | dst[5] << 4) & 0xFFF
    r.wr(f"MTA{bit >> 5}", mta << (bit & 31))
    r.peer.send(frame(dst))
    r.run()
    assert (r.rd("RDH0") == 1) == accepted


def test_frames_wait_in_the_packet_buffer_until_descriptors_come():
    """No free descriptor: RNBC counts, the frame waits in the RX buffer, and an RDT write
    posts it (in order, ahead of later frames)."""
    r = rig()
    r.rx_ring(free=0)
    first, second = frame(MAC, 80, seed=1), frame(MAC, 90, seed=2)
    r.peer.send(first)
    r.peer.send(second)
    r.run()
    assert r.rd("RNBC0") == 1 and r.rd("RDH0") == 0
    r.wr("RDT0", 2)
    r.run()                                             # written back once the DMA completes
    assert [r.rx_wb(i)[4] for i in range(2)] == [80, 90] and r.rd("MPC0") == 0


def test_drop_en_drops_instead_of_waiting():
    """SRRCTL.DROP_EN: a frame without descriptors is dropped at once (RNBC, QPRDC)."""
    r = rig()
    r.rx_ring(free=0, srrctl=SRRCTL_2K | s.SRRCTL_DROP_EN)
    r.peer.send(frame(MAC))
    r.run()
    r.wr("RDT0", 4)
    assert r.rd("RDH0") == 0 and r.rd("RNBC0") == 1 and r.rd("QPRDC0") == 1


def test_missed_packets_when_the_rx_buffer_overflows():
    """A full RX packet buffer misses frames: MPC counts and EICR.RX_MISS is raised."""
    r = rig()
    r.rx_ring(free=0)
    r.wr("RXPBSIZE0", 4 << 10)
    for i in range(5):
        r.peer.send(frame(MAC, 1500, seed=i))
    r.run()
    assert r.rd("MPC0") == 3 and r.rd("EICR") & s.EICR_RX_MISS


# ---- interrupts -----------------------------------------------------------------------------
def test_ivar_routes_queue_causes_to_vectors():
    """RX queue 0 signals vector 3, TX queue 0 vector 5, as IVAR0 says."""
    r = rig()
    r.rx_ring()
    r.tx_ring()
    r.msix()
    r.peer.send(frame(MAC))
    r.run()
    r.tx_desc(0, frame(PEER_MAC))
    r.wr("TDT0", 1)
    assert [v for _, v in r.irqs] == [3, 5]


def test_auto_mask_holds_further_interrupts_until_eims():
    """GPIE.EIAME with EIAM: the first interrupt masks its vector; the next cause waits
    until EIMS re-enables it, which signals it at once."""
    r = rig()
    r.rx_ring()
    r.msix(auto_mask=True)
    r.peer.send(frame(MAC, seed=1))
    r.peer.send(frame(MAC, seed=2))
    r.run()
    assert len(r.irqs) == 1 and not r.rd("EIMS_EX0") & 1 << 3
    r.wr("EIMS_EX0", 1 << 3)
    assert len(r.irqs) == 2


def test_eicr_read_clears_and_eics_sets():
    """EICS sets vector causes; EICR reads them and clears them."""
    r = rig()
    r.wr("EICS", 1 << 2)
    assert r.rd("EICR") == 1 << 2 and r.rd("EICR") == 0


@pytest.mark.parametrize("eitr_us", [20, 100])
def test_eitr_limits_interrupts_per_vector(eitr_us):
    """A line-rate stream of 1500-byte frames: with EITR at T us no two interrupts of the
    vector come closer than T (2.048 us units); without EITR every frame interrupts."""
    def interrupts(us: int) -> list[float]:
        r = rig()
        r.rx_ring(n=256)
        r.msix(eitr_us=us)
        for i in range(200):
            r.peer.send(frame(MAC, 1500), at=0)
        r.run()
        return [t for t, v in r.irqs if v == 3]

    throttled, free = interrupts(eitr_us), interrupts(0)
    assert len(free) == 200
    interval = (eitr_us // 2) * s.EITR_UNIT_NS
    assert all(b - a >= interval - 1e-6 for a, b in pairwise(throttled))
    span = 200 * (1500 + 24) * 0.8
    assert len(throttled) <= span / interval + 2


# ---- hostile guests ---------------------------------------------------------------------
def test_tx_buffer_outside_memory_drops_that_frame_only():
    """A data buffer beyond guest memory: DmaFault, frame dropped, counter, master abort; the next
    frame still goes."""
    r = rig()
    r.tx_ring()
    r.tx_desc(0, frame(PEER_MAC), buf=MEM + 0x1000)
    r.tx_desc(1, frame(PEER_MAC, seed=1))
    r.wr("TDT0", 2)
    r.run()
    assert arrivals(r) == [frame(PEER_MAC, seed=1)]
    assert r.dev.errors["tx_buffer_fault"] == 1 and r.master_abort


def test_tx_ring_beyond_memory_stops_without_raising():
    """A descriptor ring base beyond guest memory: nothing is sent, a fault is counted."""
    r = rig()
    r.tx_ring(base=1 << 40)
    r.wr("TDT0", 3)
    r.run()
    assert arrivals(r) == [] and r.dev.errors["tx_desc_fault"] == 1 and r.master_abort


def test_rx_buffer_outside_memory_drops_and_counts():
    """An RX descriptor naming memory the device cannot reach: frame dropped, counted, master abort."""
    r = rig()
    r.rx_ring()
    s.RX_DESC.pack_into(r.mem.buf, RX_RING, MEM + 4096, 0)
    r.peer.send(frame(MAC))
    r.run()
    assert r.dev.errors["rx_fault"] == 1 and r.rd("QPRDC0") == 1 and r.master_abort


def test_rx_ring_beyond_memory_no_crash():
    """An RX ring base beyond memory: frames are dropped with a fault, nothing raises."""
    r = rig()
    r.rx_ring(base=MEM, n=0)
    r.wr("RDLEN0", 8 * 16)
    r.wr("RDT0", 7)
    for i in range(3):
        r.peer.send(frame(MAC, seed=i))
    r.run()
    assert r.dev.errors["rx_fault"] == 3


SMALL = 64 * 1024
u32 = st.integers(0, 2**32 - 1)
tx_sane = st.tuples(st.integers(0, SMALL - 2048),
                    st.builds(lambda length, cmd: TXD | cmd | length, st.integers(0, 1600),
                              st.sampled_from([s.TXD_CMD_EOP | s.TXD_CMD_RS, s.TXD_CMD_RS, s.TXD_CMD_EOP, 0])))
tx_wild = st.tuples(st.one_of(st.integers(SMALL - 64, SMALL + 64), st.integers(0, 2**64 - 1)), u32)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ring=st.integers(0, SMALL // 16 - 1), tdlen=st.one_of(st.integers(0, 64).map(lambda k: k * 128), u32),
       tdh=st.integers(0, 0xFFFF), tdt=st.integers(0, 0xFFFF),
       descs=st.lists(st.one_of(tx_sane, tx_sane, tx_wild), max_size=64), olinfo=u32)
def test_random_tx_ring_never_raises_and_writes_only_status_dwords(ring, tdlen, tdh, tdt, descs, olinfo):
    """Random TX rings and registers: the device never raises, terminates, sends frames no larger
    than 15.5 KB, and writes nothing in guest memory but the status dwords of its ring."""
    r = rig(SMALL)
    base = ring * 16
    count = (tdlen & 0xFFF80) >> 4
    for i, (buf, cmd_type_len) in enumerate(descs[:count]):
        at = base + 16 * ((tdh + i) % count)
        if at + 16 <= SMALL:
            s.TX_DESC.pack_into(r.mem.buf, at, buf, cmd_type_len, olinfo)
    r.wr("DMATXCTL", s.DMATXCTL_TE)
    for reg, value in (("TDBAL0", base), ("TDBAH0", 0), ("TDLEN0", tdlen), ("TDH0", tdh),
                       ("TXDCTL0", s.TXDCTL_ENABLE)):
        r.wr(reg, value)
    before = bytearray(r.mem.buf)
    r.wr("TDT0", tdt)
    r.wr("TDT0", tdt)
    r.run()
    after = bytearray(r.mem.buf)
    for i in range(count):
        at = base + 16 * i + 12
        before[at:at + 4] = after[at:at + 4]
    assert before[:SMALL] == after[:SMALL]
    assert all(len(f) <= s.MAX_TX_FRAME for f in arrivals(r))


RX_MEM = 256 * 1024
rx_buf = st.one_of(st.integers(0, 96 * 1024), st.integers(RX_MEM - 100, 2**64 - 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ring=st.integers(8192, 16383), rdlen=st.one_of(st.integers(0, 32).map(lambda k: k * 128), u32),
       rdh=st.integers(0, 0xFFFF), rdt=st.integers(0, 0xFFFF), srrctl=st.one_of(st.integers(1, 4), u32),
       bufs=st.lists(rx_buf, max_size=64),
       frames=st.lists(st.tuples(st.sampled_from([MAC, BCAST, OTHER]), st.integers(0, 2000)), max_size=6))
def test_random_rx_ring_writes_only_ring_and_named_buffers(ring, rdlen, rdh, rdt, srrctl, bufs, frames):
    """Random RX rings, registers and frames: never raises, and writes only the ring and, per
    written-back descriptor, the length it reports into the buffer it named."""
    r = rig(RX_MEM)
    base = ring * 16
    count = (rdlen & 0xFFF80) >> 4
    for i, buf in enumerate(bufs[:count]):
        at = base + 16 * ((rdh + i) % count)
        if at + 16 <= RX_MEM:
            s.RX_DESC.pack_into(r.mem.buf, at, buf, 0)
    srr = srrctl if srrctl > 4 else srrctl | s.SRRCTL_DESCTYPE_ADV_ONEBUF
    for reg, value in (("RDBAL0", base), ("RDLEN0", rdlen), ("RDH0", rdh), ("SRRCTL0", srr),
                       ("RXDCTL0", s.RXDCTL_ENABLE), ("RDT0", rdt), ("FCTRL", s.FCTRL_BAM), ("RXCTRL", 1)):
        r.wr(reg, value)
    before = bytearray(r.mem.buf)
    for dst, size in frames:
        r.peer.send(frame(dst, max(size, 14)))
    r.run()
    after = bytearray(r.mem.buf)
    allowed = [(base, base + 16 * count)]
    for i in range(count):
        at = base + 16 * i
        if at + 16 <= RX_MEM and after[at:at + 16] != before[at:at + 16]:
            buf = int.from_bytes(before[at:at + 8], "little")
            allowed.append((buf, buf + s.RX_WB.unpack_from(after, at)[4]))
    for lo, hi in allowed:
        before[min(lo, RX_MEM):min(hi, RX_MEM)] = after[min(lo, RX_MEM):min(hi, RX_MEM)]
    assert before == after


# ---- the driver, end to end -------------------------------------------------------------
@dataclass
class Machine:
    sim: Sim
    ledger: Ledger
    vm: VM
    dev: Ixgbe
    guest: GuestKernel
    driver: IxgbeDriver
    peer: WirePeer


def bare_metal(vcpus: int = 1) -> Machine:
    """A VM whose NIC BARs are mapped with an empty trap path (what pass-through gives), MSI-X
    messages to its interrupt chip, the port on a 10GbE wire to a peer."""
    sim = Sim()
    ledger = Ledger(PROFILE)
    vm = VM("vm1", Host("host0", max(2, vcpus), sim, ledger), 64, vcpus)
    engine = Resource("host0/nic0/engine", "nic", ledger)
    dev = Ixgbe(sim, MAC, Dma(vm.mem, "dma"), engine)
    fn = dev.pci
    vm.pci.attach(fn, 3)

    def bar(index: int, kind: str, address: int | None, size: int) -> None:
        owner = f"ixgbe BAR{index}"
        vm.mmio.unmap(owner)
        if address is not None:
            vm.mmio.map(Region(address, size, *dev.bar_handlers(index), (), owner))

    def msi(cpu: Resource, vector: int) -> None:
        message = fn.notify(vector)
        if message is not None:
            vm.irqchip.msi(cpu, *message)

    fn.on_bar_change(bar)
    fn.on_msi(lambda address, data: vm.irqchip.msi(engine, address, data))
    dev.msi = msi
    link = Link(sim, ledger, "wire0", 10)
    link.attach(dev)
    peer = WirePeer(link, PEER_MAC, "10.0.0.2/24", record=True)
    guest = GuestKernel("vm1", vm.vcpus[0], vm.mem, sim)
    guest.boot()                                     # binds IxgbeDriver by vendor/device ID
    (driver,) = guest.netdevs
    assert isinstance(driver, IxgbeDriver)
    guest.ifup(MAC, "10.0.0.1/24")
    return Machine(sim, ledger, vm, dev, guest, driver, peer)


def test_driver_probes_through_untrapped_registers():
    """The driver resets the NIC, reads the NVM MAC from RAR[0], enables MSI-X and both
    queues; none of its register accesses exits (only PCI config cycles do)."""
    m = bare_metal()
    assert m.driver.mac == MAC
    acct = m.ledger.accounts["vm1"]
    assert acct["mmio_emulate"] == 0 and acct["vm_exit"] == acct["pio_emulate"]
    dev, cpu = m.dev, m.vm.vcpus[0]
    assert dev.mmio_read(cpu, s.REGS["RXDCTL0"].offset, 4) & s.RXDCTL_ENABLE
    assert dev.mmio_read(cpu, s.REGS["TXDCTL0"].offset, 4) & s.TXDCTL_ENABLE
    assert dev.mmio_read(cpu, s.REGS["RXCTRL"].offset, 4) & s.RXCTRL_RXEN
    assert dev.pci.interrupt_mode == "msix"


def test_udp_to_the_wire_peer_and_ping_reply_back():
    """A UDP datagram through IPv4Stack reaches the peer intact (after ARP), and a ping to the
    peer is answered through the RX ring and an MSI-X interrupt."""
    m = bare_metal()
    stack = m.guest.interfaces[MAC]
    stack.udp_socket(5000).sendto(b"over the wire", ("10.0.0.2", 9))
    replies = []
    stack.ping("10.0.0.2", 7, 1, b"abcdefgh", lambda ident, seq, data: replies.append((ident, seq, data)))
    m.sim.run(until=m.vm.vcpus[0].cursor + 1_000_000)
    udp = [f for _, f in m.peer.received if f[12:14] == b"\x08\x00" and f[23] == 17]
    assert len(udp) == 1 and udp[0][42:42 + 13] == b"over the wire"
    seg = udp[0][34:42 + 13]
    assert not csum_fold(pseudo_header_sum(int(stack.ip.ip), int(ipaddress.IPv4Address("10.0.0.2")), 17, len(seg))
                         + csum_partial(seg))
    assert replies == [(7, 1, b"abcdefgh")]
    assert m.vm.stats["interrupts"] >= 1 and m.ledger.accounts["vm1"]["mmio_emulate"] == 0


def test_driver_receives_a_stream_with_fewer_interrupts_than_frames():
    """800 UDP frames from the peer at line rate all reach the guest socket in order; NAPI with
    EITR and auto-mask takes far fewer interrupts than frames."""
    m = bare_metal()
    stack = m.guest.interfaces[MAC]
    got = []
    stack.udp_socket(7000).on_datagram = lambda payload, src, port: got.append(payload)
    start = m.vm.vcpus[0].cursor
    m.sim.run(until=start)
    frames = []
    for i in range(800):
        payload = i.to_bytes(4, "big") * 100
        data = udp_frame("10.0.0.2", "10.0.0.1", 9, 7000, payload)
        frames.append(payload)
        m.peer.send(data, at=start)
    m.sim.run(until=start + 5_000_000)
    assert got == frames
    assert m.vm.stats["interrupts"] < 800 // 4


def test_driver_streams_past_a_full_tx_ring_in_order():
    """1200 datagrams sent at once overrun the 512-descriptor ring: the queue stops, TX
    completions wake it, and every datagram the stack took reaches the peer, in order."""
    m = bare_metal()
    stack = m.guest.interfaces[MAC]
    sock = stack.udp_socket(5000)
    stack.arp_table[int(ipaddress.IPv4Address("10.0.0.2"))] = PEER_MAC
    taken = [i for i in range(1200) if sock.sendto(i.to_bytes(4, "big") * 10, ("10.0.0.2", 9))]
    m.sim.run()
    udp = [f[42:46] for _, f in m.peer.received if f[12:14] == b"\x08\x00" and f[23] == 17]
    assert m.driver.tx_queue_stopped is False and len(taken) > 512
    assert udp == [i.to_bytes(4, "big") for i in taken]


# ---- RSS across CPUs --------------------------------------------------------------------
@pytest.mark.parametrize("vcpus,queues", [(1, 1), (4, 4), (20, 16)])
def test_driver_brings_up_a_queue_pair_per_cpu_up_to_16(vcpus, queues):
    """ixgbe_set_rss_queues: min(CPUs, 16) RX and TX queues enabled on the port, no more."""
    m = bare_metal(vcpus)
    cpu = m.vm.vcpus[0]
    rx = [bool(m.dev.mmio_read(cpu, s.REGS[f"RXDCTL{q}"].offset, 4) & s.RXDCTL_ENABLE) for q in range(18)]
    tx = [bool(m.dev.mmio_read(cpu, s.REGS[f"TXDCTL{q}"].offset, 4) & s.TXDCTL_ENABLE) for q in range(18)]
    assert rx == tx == [q < queues for q in range(18)]


def rss_flows(m: Machine, flows: int) -> list[tuple[str, int]]:
    """``flows`` UDP flows from as many addresses to port 7000, each echoed by
    the machine; (source, CPU) of every datagram, in arrival order."""
    stack = m.guest.interfaces[MAC]
    sock = stack.udp_socket(7000)
    seen = []
    for i in range(flows):                   # ip neigh add: the sources sit behind the peer
        stack.arp_table[int(ipaddress.IPv4Address(f"10.0.0.{10 + i}"))] = PEER_MAC

    def echo(payload, src, sport):
        seen.append((str(src), m.guest.cpu.index))
        sock.sendto(payload, (src, sport))

    sock.on_datagram = echo
    for n in range(3):
        for i in range(flows):
            m.peer.send(udp_frame(f"10.0.0.{10 + i}", "10.0.0.1", 9000, 7000, bytes([n]) * 18))
    m.sim.run(until=m.sim.now + 2_000_000)
    return seen


def expected_queue(src: str, queues: int) -> int:
    """The device's RSS over the addresses (UDP ports are hashed only with ethtool -N), the
    driver's table round robin over the queues."""
    addrs = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address("10.0.0.1").packed
    return (s.toeplitz(s.toeplitz_tables(s.RSS_DEFAULT_KEY, 12), addrs) & (s.RETA_ENTRIES - 1)) % queues


def test_flows_spread_over_queues_and_each_runs_on_its_queues_cpu():
    """With 4 vCPUs, 16 flows land on the queue the hash names and are received, by
    interrupt, NAPI and socket, on that queue's vCPU; every vCPU takes interrupts."""
    m = bare_metal(4)
    seen = rss_flows(m, 16)
    assert len(seen) == 48
    assert all(cpu == expected_queue(src, 4) for src, cpu in seen)
    assert {cpu for _, cpu in seen} == {0, 1, 2, 3}
    assert all(vcpu.spent["irq_entry"] > 0 for vcpu in m.vm.vcpus)


def test_one_cpu_takes_every_flow():
    """The other way: one vCPU, one queue, every flow on vCPU 0."""
    m = bare_metal(1)
    seen = rss_flows(m, 16)
    assert len(seen) == 48 and {cpu for _, cpu in seen} == {0}


def test_replies_leave_on_the_queue_of_the_cpu_that_sends_them():
    """XPS: the echo sent from vCPU n's receive path goes out on TX queue n; the
    peer gets every reply."""
    m = bare_metal(4)
    seen = rss_flows(m, 16)
    cpu = m.vm.vcpus[0]
    sent = [m.dev.mmio_read(cpu, s.REGS[f"TDT{q}"].offset, 4) for q in range(4)]
    per_cpu = [sum(1 for _, c in seen if c == q) for q in range(4)]
    assert sent == per_cpu                   # one descriptor per reply
    replies = [f for _, f in m.peer.received if f[12:14] == b"\x08\x00" and f[23] == 17]
    assert len(replies) == 48
