"""The LAN the hosts' ports are cabled to: a learning switch between links
(``wire.Link``) and the hosts outside the simulated ones plugged straight in."""

from __future__ import annotations

from ..sim.engine import Sim
from ..sim.resource import Ledger
from .wire import Link


class Fabric:
    """The LAN the hosts' ports are cabled to: a learning top-of-rack switch
    (cut-through, no cost of its own) with hosts outside the simulated ones
    (wire peers) plugged straight into it.  A frame off one link leaves on
    the link its destination was learnt on, or floods; a host that moves
    (live migration) is relearnt from its next frame (a gratuitous ARP)."""

    def __init__(self, sim: Sim, ledger: Ledger, name: str = "fabric", buffer_bytes: int = 1 << 62) -> None:
        self.sim = sim
        self.ledger = ledger
        self.name = name
        self.buffer_bytes = buffer_bytes       # per egress port: tail drop past it
        self.links: list[Link] = []
        self.stations: list = []
        self.fdb: dict[bytes, object] = {}      # MAC -> Link or station

    def connect(self, link: Link) -> None:
        self.links.append(link)
        link.peer = _Uplink(self, link)

    def station(self, peer) -> None:
        self.stations.append(peer)

    def transmit(self, frame: bytes, at: float, source=None) -> float:
        """A station sends; returns when the frame has left on its last link."""
        self._learn(frame, source)
        end = at
        for out in self._egress(frame, source):
            if isinstance(out, Link):
                end = max(end, self.forward(out, frame, at))
            else:
                out.arrive(frame)
        return end

    def forward(self, link: Link, frame: bytes, at: float) -> float:
        """Out of the port cabled to ``link``, behind what its buffer holds;
        a frame finding the buffer full is dropped (tail drop)."""
        if (link.to_nic.cursor - at) / link.ns_per_byte > self.buffer_bytes:
            self.sim.drops.count(f"{self.name}/{link.name}/egress-buffer", frame)
            return at
        return link.transmit(frame, at)

    def _learn(self, frame: bytes, port) -> None:
        src = frame[6:12]
        if port is not None and not src[0] & 1:
            self.fdb[src] = port

    def _egress(self, frame: bytes, source) -> list:
        dst = frame[:6]
        out = None if dst[0] & 1 else self.fdb.get(dst)
        if out is not None:
            return [] if out is source else [out]
        return [*(link for link in self.links if link is not source and link.nic is not None),
                *(station for station in self.stations if station is not source)]


class _Uplink:
    """A link's far end as the fabric sees it."""

    def __init__(self, fabric: Fabric, link: Link) -> None:
        self.fabric = fabric
        self.link = link

    def arrive(self, frame: bytes) -> None:
        fabric, link = self.fabric, self.link
        fabric._learn(frame, link)
        for out in fabric._egress(frame, link):
            if isinstance(out, Link):
                fabric.forward(out, frame, fabric.sim.now)
            else:
                out.arrive(frame, link)
