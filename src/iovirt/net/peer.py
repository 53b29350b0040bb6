"""The host at the far end of a physical link: a machine outside the
simulated hosts, with its own cores, NIC queues and IPv4 stack, that sinks
and sources the traffic of workloads whose destination is ``wire``."""

from __future__ import annotations

from collections import deque
from ipaddress import IPv4Interface

from ..sim.resource import Resource
from ..spec.ethernet import ETH_MIN_FRAME
from ..spec.ixgbe import RETA_ENTRIES, RSS_DEFAULT_KEY, toeplitz, toeplitz_tables
from .fabric import Fabric
from .headers import ETH_P_ARP, ETH_P_IP, IPPROTO_ICMP, IPPROTO_UDP
from .stack import IPv4Stack
from .wire import Link

_ETH_P_ARP = ETH_P_ARP.to_bytes(2, "big")
_ETH_P_IP = ETH_P_IP.to_bytes(2, "big")
_RSS_TABLES = toeplitz_tables(RSS_DEFAULT_KEY, 12)
RX_RING = 512                       # IXGBE_DEFAULT_RXD


class WirePeer:
    """The host at the far end: a machine with ``cores`` cores behind a
    multi-queue NIC.  Its NIC spreads received flows over one queue per core
    by the RSS hash of their addresses and ports (82599 datasheet 7.1.2.8,
    Microsoft's key, the redirection table filled round robin as Linux's
    ixgbe does); each queue's ring holds ``rx_ring`` frames, and a frame that
    arrives while its ring is full of frames its core has not taken yet is
    missed and counted (``rx_missed``, the NIC's MPC).  Each core runs the
    IPv4 stack for its queue's frames, which answers ARP and ICMP echo and
    delivers UDP to sockets bound on ``stack``.  With ``record`` it keeps
    every frame it receives with its arrival time."""

    def __init__(self, link: Link | Fabric, mac: bytes, address: str, record: bool = False,
                 name: str | None = None, cores: int = 1, rx_ring: int = RX_RING) -> None:
        self.link = link                    # a cable straight to one NIC, or the LAN
        self.sim = link.sim
        self.mac = bytes(mac)
        self.name = name or f"{link.name}/peer"
        self.cores = [Resource(f"{self.name}/core{i}", "peer", link.ledger) for i in range(cores)]
        self.cpu = self.vcpu = self.cores[0]
        self.rx_ring = rx_ring
        self._backlog = [deque() for _ in self.cores]     # per queue: when each frame it holds is taken
        self._queues: dict[bytes, int] = {}                # RSS result per (addresses, ports)
        self.stack = IPv4Stack(self.cpu, self.mac, IPv4Interface(address), self, drops=self.sim.drops,
                               place=f"{self.name}/stack")
        self.record = record
        self.received: list[tuple[float, bytes]] = []
        link.station(self)

    def send(self, frame: bytes, at: float | None = None) -> float:
        """Put ``frame`` on the wire at ``at`` (now, if absent or past), behind
        frames already sent; returns when it has left.  Short frames are padded."""
        if len(frame) < ETH_MIN_FRAME:
            frame += bytes(ETH_MIN_FRAME - len(frame))
        now = self.sim.now
        return self.link.transmit(frame, now if at is None or at < now else at, self)

    def transmit(self, frame: bytes) -> bool:
        """The stack's device driver contract: the wire always takes it."""
        self.send(frame, self.cpu.cursor)
        return True

    def arrive(self, frame: bytes, via: Link | None = None) -> None:
        now = self.sim.now
        if self.record:
            self.received.append((now, frame))
        if not self._for_stack(frame):
            return
        queue = self._queue(frame)
        backlog = self._backlog[queue]
        while backlog and backlog[0] <= now:
            backlog.popleft()
        if len(backlog) >= self.rx_ring:
            self.sim.drops.count(f"{self.name}/rx_missed", frame)
            return
        cpu = self.cores[queue]
        self.cpu = self.vcpu = self.stack.cpu = cpu
        cpu.sync(now)
        self.stack.receive(frame)
        backlog.append(cpu.cursor)

    def _queue(self, frame: bytes) -> int:
        """The RSS queue of an IPv4 frame: addresses, and ports for UDP (queue 0 for the rest)."""
        if len(self.cores) == 1 or frame[12:14] != _ETH_P_IP:
            return 0
        l4 = 14 + (frame[14] & 0xF) * 4
        key = frame[26:34] + (frame[l4:l4 + 4] if frame[23] == IPPROTO_UDP else b"")
        queue = self._queues.get(key)
        if queue is None:
            index = toeplitz(_RSS_TABLES, key) & (RETA_ENTRIES - 1)
            queue = self._queues[key] = index % len(self.cores)
        return queue

    def _for_stack(self, frame: bytes) -> bool:
        kind = frame[12:14]
        if kind == _ETH_P_ARP:
            return True
        if kind != _ETH_P_IP or len(frame) < 34:
            return False
        proto = frame[23]
        if proto == IPPROTO_UDP:
            l4 = 14 + (frame[14] & 0xF) * 4
            return int.from_bytes(frame[l4 + 2:l4 + 4], "big") in self.stack.udp_sockets
        return proto == IPPROTO_ICMP
