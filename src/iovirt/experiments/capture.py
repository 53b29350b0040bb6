"""Packet capture at a port a user names, written as pcapng (the format of
draft-ietf-opsawg-pcapng) with nanosecond timestamps (``if_tsresol`` 9) that
are the simulated time, through dpkt's block classes.

A capture wraps the methods frames pass through on the named objects only
(this VM's interfaces, its taps, this host's bridge, this port's link), so a
run without captures runs exactly the code it always did.  What each port
sees, and when:

- ``VM``: each of the guest's interfaces, as tcpdump in the guest sees them:
  a frame the stack hands its driver (and the driver takes), a frame the
  driver hands up; at the vCPU's time.
- ``HOST/VM/tap``: the VM's taps: frames from the device, at the sending
  thread's time, and frames to it, when the bridge queues them.
- ``HOST/bridge``: every frame handed to the bridge, at the forwarding
  thread's time.
- ``HOST/NIC``: the port's cable, both ways: each frame when its last bit
  arrives at the other end.

Frames of a migrated VM's new incarnation are not captured.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dpkt.pcapng import (PCAPNG_OPT_IF_NAME, PCAPNG_OPT_IF_TSRESOL, EnhancedPacketBlockLE,
                         InterfaceDescriptionBlockLE, PcapngOptionLE, SectionHeaderBlockLE)

from ..hypervisor.tap import TapPort
from .results import WIRE_PEERS
from .scenario import ScenarioError, capture_problem

TSRESOL_NS = 9          # if_tsresol: 10^-9 s per tick
SNAPLEN = 0             # no limit


class Frames(list):
    """Every frame seen at the ports it watches, in the order seen, kept in
    memory (for a script's own checks)."""

    def record(self, ns: float, frame: bytes, cpu=None) -> None:
        self.append(frame)


class Pcapng:
    """Frames seen at one port, written in time order when the run ends."""

    def __init__(self, port: str, path: Path) -> None:
        self.port = port
        self.path = path
        self.frames: list[tuple[int, int, bytes]] = []      # (ns, order seen, frame)

    def record(self, ns: float, frame: bytes, cpu=None) -> None:
        self.frames.append((round(ns), len(self.frames), bytes(frame)))

    def write(self) -> None:
        idb = InterfaceDescriptionBlockLE(snaplen=SNAPLEN, opts=[
            PcapngOptionLE(code=PCAPNG_OPT_IF_NAME, data=self.port.encode()),
            PcapngOptionLE(code=PCAPNG_OPT_IF_TSRESOL, data=bytes([TSRESOL_NS])),
            PcapngOptionLE()])
        with self.path.open("wb") as f:
            f.write(bytes(SectionHeaderBlockLE()))
            f.write(bytes(idb))
            for ns, _, frame in sorted(self.frames):
                f.write(bytes(EnhancedPacketBlockLE(ts_high=ns >> 32, ts_low=ns & 0xFFFFFFFF, caplen=len(frame),
                                                    pkt_len=len(frame), pkt_data=frame)))


def _hook(obj, method: str, sink, seen: Callable[..., tuple], refusable: bool = False) -> None:
    """Tell ``sink.record(time, frame, resource)`` what ``obj.method`` (this instance's only) is
    handed, as it is called: ``seen(*args)`` gives the three; ``sink`` hears of it before the
    places it passes the frame on to.  A ``refusable`` method (a driver's transmit) is told only
    once it did not answer False, so after those places, with the time it was called."""
    inner = getattr(obj, method)

    def hooked(*args):
        mark = seen(*args)
        if refusable:
            taken = inner(*args)
            if taken is not False:
                sink.record(*mark)
            return taken
        sink.record(*mark)
        return inner(*args)
    setattr(obj, method, hooked)


def watch(world, port: str, sink) -> None:
    """Tell ``sink`` every frame passing ``port`` of ``world`` (capture_ports), or the
    far ends' cables for ``WIRE_PEERS``."""
    parts = port.split("/")
    if port == WIRE_PEERS:
        for peer in world.peers.values():
            _wire(peer.link, sink)
    elif len(parts) == 1:                               # a VM's interfaces
        for stack in world.guests[port].interfaces.values():
            _stack(stack, sink)
    elif len(parts) == 3:                               # HOST/VM/tap
        host = world.hosts[parts[0]]
        for tap in [p for p in host.vswitch.ports if isinstance(p, TapPort) and p.vm.name == parts[1]]:
            _hook(tap, "send", sink, lambda cpu, frame: (cpu.cursor, frame, cpu))
            _hook(tap, "deliver", sink, lambda frame, at, t=tap: (at, frame, t.reader))
    elif parts[1] == "bridge":
        _hook(world.hosts[parts[0]].vswitch, "ingress", sink, lambda port, frame, cpu: (cpu.cursor, frame, cpu))
    else:                                               # HOST/NIC: the wire
        _wire(world.hosts[parts[0]].nics[parts[1]].link, sink)


def _wire(link, sink) -> None:
    """Both directions of a cable, as its last bit of each frame arrives."""
    _hook(link, "deliver_to_peer", sink, lambda frame: (link.sim.now, frame, link.to_peer))
    _hook(link, "deliver_to_nic", sink, lambda frame: (link.sim.now, frame, link.to_nic))


def _stack(stack, sink) -> None:
    _hook(stack, "receive", sink, lambda frame, *validated: (stack.cpu.cursor, frame, stack.cpu))
    _hook(stack.netdev, "transmit", sink, lambda frame: (stack.cpu.cursor, frame, stack.cpu), refusable=True)


def attach(world, port: str, path: Path) -> Pcapng:
    """Start capturing at ``port`` of ``world`` into ``path``."""
    problem = capture_problem(world.scenario, port)
    if problem:
        raise ScenarioError(f"--capture: {problem}")
    capture = Pcapng(port, path)
    watch(world, port, capture)
    return capture
