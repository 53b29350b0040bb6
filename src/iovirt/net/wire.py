"""A physical Ethernet link: the cable between a NIC's port and the far end.

Each direction is a :class:`~iovirt.sim.resource.Resource` that a frame
occupies for its serialisation time at the line rate (``wire_tx``): the frame
with its FCS, preamble and start delimiter, and the inter-packet gap after it
(IEEE 802.3 clauses 3 and 4; RFC 5180 appendix A.1 gives the resulting 10GbE
rates).  A frame is delivered when its last bit arrives.  A wire has no
backpressure: a frame the receiving NIC cannot take is lost and counted.  A
cable with ``frame_error_rate`` damages that fraction of the frames it
carries, drawn from a generator seeded by its name (runs repeat); the
receiving MAC finds the FCS wrong and discards the frame (``crc_errors``, the
82599's CRCERRS).

The NIC end is the device's backend port (``send`` / ``flush``, calling the
device's ``can_receive`` / ``receive`` with its DMA ``engine``).  The far end
is a host on the other side of the cable (``iovirt.net.peer.WirePeer``).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

from ..sim.engine import Sim
from ..sim.resource import Ledger, Resource
from ..spec.ethernet import ETH_FCS_LEN as FCS
from ..spec.ethernet import ETH_MIN_FRAME, IPG, PREAMBLE_SFD


class Link:
    """A full-duplex point-to-point link of ``gbps`` Gbit/s; ``delay_ns`` of
    propagation (about 5 ns per metre of fibre)."""

    def __init__(self, sim: Sim, ledger: Ledger, name: str, gbps: float, delay_ns: float = 0.0,
                 frame_error_rate: float = 0.0) -> None:
        if gbps <= 0:
            raise ValueError(f"link {name}: rate {gbps} Gbit/s is not positive")
        self.sim = sim
        self.ledger = ledger
        self.name = name
        self.gbps = gbps
        self.ns_per_byte = 8.0 / gbps
        self.delay_ns = delay_ns
        self.to_peer = Resource(f"{name}/tx", "wire", ledger)   # NIC -> far end
        self.to_nic = Resource(f"{name}/rx", "wire", ledger)    # far end -> NIC
        self.nic: NicPort | None = None
        self.peer = None                    # the far end: anything with arrive(frame)
        self.frame_error_rate = frame_error_rate
        self._errors = random.Random(zlib.crc32(name.encode()))

    @property
    def resources(self) -> list[Resource]:
        return [self.to_peer, self.to_nic]

    def frame_ns(self, size: int) -> float:
        """Time a frame of ``size`` bytes (without FCS) holds the wire."""
        return (max(size, ETH_MIN_FRAME) + FCS + PREAMBLE_SFD + IPG) * self.ns_per_byte

    def attach(self, device) -> NicPort:
        """Plug a NIC's port in: it becomes the device's backend."""
        self.nic = NicPort(self, device)
        device.port = self.nic
        return self.nic

    def carry(self, direction: Resource, ready: float, frame: bytes, deliver: Callable[[bytes], None]) -> float:
        """Serialise ``frame`` once the direction is free after ``ready``;
        returns when it has left (gap included)."""
        direction.sync(ready)
        end = direction.occupy("wire_tx", self.frame_ns(len(frame)))
        if self.frame_error_rate and self._errors.random() < self.frame_error_rate:
            self.sim.drops.count(f"{self.name}/crc_errors", frame)
            return end
        self.sim.at(end - IPG * self.ns_per_byte + self.delay_ns, deliver, frame)
        return end

    def station(self, peer) -> None:
        """Put a host on the far end of the cable."""
        self.peer = peer

    def transmit(self, frame: bytes, at: float, source=None) -> float:
        """The far end sends ``frame`` towards the NIC; returns when it has left."""
        return self.carry(self.to_nic, at, frame, self.deliver_to_nic)

    def deliver_to_peer(self, frame: bytes) -> None:
        if self.peer is None:
            self.sim.drops.count(f"{self.name}/lost_no_peer", frame)
        else:
            self.peer.arrive(frame)

    def deliver_to_nic(self, frame: bytes) -> None:
        if self.nic is None:
            self.sim.drops.count(f"{self.name}/lost_no_nic", frame)
        else:
            self.nic.arrive(frame)


class NicPort:
    """The NIC's side of the link, as the device's backend."""

    def __init__(self, link: Link, device) -> None:
        self.link = link
        self.device = device

    def send(self, cpu: Resource, frame: bytes) -> float:
        """The MAC starts the frame once ``cpu`` (the NIC's DMA engine) has it;
        returns when it has left the NIC."""
        link = self.link
        return link.carry(link.to_peer, cpu.cursor, frame, link.deliver_to_peer)

    def flush(self, cpu: Resource) -> None:
        """Nothing waits on a wire for the device to make room."""

    def arrive(self, frame: bytes) -> None:
        device, link = self.device, self.link
        engine = device.rx_engine
        engine.sync(link.sim.now)
        if device.can_receive(len(frame)):
            device.receive(engine, frame)
        else:
            link.sim.drops.count(f"{link.name}/rx_dropped", frame)    # the MAC's receiver is off
