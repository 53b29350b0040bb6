"""The host at the far end of a physical link: a machine outside the
simulated hosts, with its own CPU and IPv4 stack, that sinks and sources the
traffic of workloads whose destination is ``wire``."""

from __future__ import annotations

from ipaddress import IPv4Interface

from ..hypervisor.wire import ETH_MIN_FRAME, Link
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

    def __init__(self, link: Link, mac: bytes, address: str, record: bool = False) -> None:
        self.link = link
        self.sim = link.sim
        self.mac = bytes(mac)
        self.cpu = self.vcpu = Resource(f"{link.name}/peer", "peer", link.ledger)
        self.stack = IPv4Stack(self.cpu, self.mac, IPv4Interface(address), self)
        self.record = record
        self.received: list[tuple[float, bytes]] = []
        link.peer = self

    def send(self, frame: bytes, at: float | None = None) -> float:
        """Put ``frame`` on the wire at ``at`` (now, if absent or past), behind
        frames already sent; returns when it has left.  Short frames are padded."""
        if len(frame) < ETH_MIN_FRAME:
            frame += bytes(ETH_MIN_FRAME - len(frame))
        link, now = self.link, self.sim.now
        return link.carry(link.to_nic, now if at is None or at < now else at, frame, link.deliver_to_nic)

    def transmit(self, frame: bytes) -> bool:
        """The stack's device driver contract: the wire always takes it."""
        self.send(frame, self.cpu.cursor)
        return True

    def arrive(self, frame: bytes) -> None:
        now = self.sim.now
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
