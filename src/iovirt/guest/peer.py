"""The host at the far end of a physical link: a machine outside the
simulated hosts, with its own CPU and IPv4 stack, that sinks and sources the
traffic of workloads whose destination is ``wire``."""

from __future__ import annotations

from ipaddress import IPv4Interface

from ..hypervisor.wire import ETH_MIN_FRAME, Fabric, Link
from ..sim.resource import Resource
from .net.headers import ETH_P_ARP, ETH_P_IP, IPPROTO_ICMP, IPPROTO_UDP
from .net.stack import IPv4Stack

_ETH_P_ARP = ETH_P_ARP.to_bytes(2, "big")
_ETH_P_IP = ETH_P_IP.to_bytes(2, "big")


class WirePeer:
    """The host at the far end: transmits frames at given times, answers ARP
    and ICMP echo for its address through its own IPv4 stack (on its own CPU
    ``cpu``) and delivers UDP to sockets bound on ``stack``.  With ``record``
    it keeps every frame it receives with its arrival time."""

    def __init__(self, link: Link | Fabric, mac: bytes, address: str, record: bool = False,
                 name: str | None = None) -> None:
        self.link = link                    # a cable straight to one NIC, or the LAN
        self.sim = link.sim
        self.mac = bytes(mac)
        self.cpu = self.vcpu = Resource(name or f"{link.name}/peer", "peer", link.ledger)
        self.cpus: dict = {}                # a core per port it is reached through (RSS), by link
        self.stack = IPv4Stack(self.cpu, self.mac, IPv4Interface(address), self, drops=self.sim.drops,
                               place=f"{self.cpu.name}/stack")
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

    def serve(self, link: Link) -> None:
        """Frames that came off ``link`` are handled on a core of their own."""
        if link not in self.cpus:
            self.cpus[link] = self.cpu if not self.cpus else Resource(f"{link.name}/peer", "peer", link.ledger)

    def arrive(self, frame: bytes, via: Link | None = None) -> None:
        now = self.sim.now
        cpu = self.cpus.get(via)
        if cpu is not None and cpu is not self.cpu:
            self.cpu = self.vcpu = self.stack.cpu = cpu
        if self.record:
            self.received.append((now, frame))
        if self._for_stack(frame):
            if now > self.cpu.cursor:  # noqa: PLR1730 - NOTE: cpu.sync(now) inlined, once per frame
                self.cpu.cursor = now
            self.stack.receive(frame)

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
