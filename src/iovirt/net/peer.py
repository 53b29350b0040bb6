"""A station at the far end of one cable, for a device's own tests: it puts
frames on the wire, keeps every frame it receives with its arrival time, and
answers ARP and ICMP echo from an IPv4 stack on one core.  A scenario's far
end is a whole bare-metal host instead (``experiments/world.py``)."""

from __future__ import annotations

from ipaddress import IPv4Interface

from ..sim.resource import Resource
from ..spec.ethernet import ETH_MIN_FRAME
from .fabric import Fabric
from .stack import IPv4Stack
from .wire import Link


class WirePeer:
    def __init__(self, link: Link | Fabric, mac: bytes, address: str, record: bool = False,
                 name: str | None = None) -> None:
        self.link = link
        self.sim = link.sim
        self.mac = bytes(mac)
        self.name = name or f"{link.name}/peer"
        self.cpu = Resource(f"{self.name}/core0", "peer", link.ledger)
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
        if self.record:
            self.received.append((self.sim.now, frame))
        self.cpu.sync(self.sim.now)
        self.stack.receive(frame)
