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
from .scenario import ScenarioError, capture_problem

TSRESOL_NS = 9          # if_tsresol: 10^-9 s per tick
SNAPLEN = 0             # no limit


class Pcapng:
    """Frames seen at one port, written in time order when the run ends."""

    def __init__(self, port: str, path: Path) -> None:
        self.port = port
        self.path = path
        self.frames: list[tuple[int, int, bytes]] = []      # (ns, order seen, frame)

    def record(self, ns: float, frame: bytes) -> None:
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


def _hook(obj, method: str, capture: Pcapng, seen: Callable[..., tuple[float, bytes]]) -> None:
    """Record what ``obj.method`` (this instance's only) is handed: ``seen(*args)`` gives
    (time, frame); a call answered False (a driver refusing a frame) saw nothing."""
    inner = getattr(obj, method)

    def hooked(*args):
        at, frame = seen(*args)
        taken = inner(*args)
        if taken is not False:
            capture.record(at, frame)
        return taken
    setattr(obj, method, hooked)


def attach(world, port: str, path: Path) -> Pcapng:
    """Start capturing at ``port`` of ``world`` into ``path``."""
    problem = capture_problem(world.scenario, port)
    if problem:
        raise ScenarioError(f"--capture: {problem}")
    capture = Pcapng(port, path)
    parts = port.split("/")
    if len(parts) == 1:                                 # a VM's interfaces
        for stack in world.guests[port].interfaces.values():
            _hook(stack, "receive", capture, lambda frame, s=stack: (s.cpu.cursor, frame))
            _hook(stack.netdev, "transmit", capture, lambda frame, s=stack: (s.cpu.cursor, frame))
    elif len(parts) == 3:                               # HOST/VM/tap
        host = world.hosts[parts[0]]
        for tap in [p for p in host.vswitch.ports if isinstance(p, TapPort) and p.vm.name == parts[1]]:
            _hook(tap, "send", capture, lambda cpu, frame: (cpu.cursor, frame))
            _hook(tap, "deliver", capture, lambda frame, at: (at, frame))
    elif parts[1] == "bridge":
        _hook(world.hosts[parts[0]].vswitch, "ingress", capture, lambda port, frame, cpu: (cpu.cursor, frame))
    else:                                               # HOST/NIC: the wire
        link = world.hosts[parts[0]].nics[parts[1]].link
        for end in ("deliver_to_peer", "deliver_to_nic"):
            _hook(link, end, capture, lambda frame: (link.sim.now, frame))
    return capture
