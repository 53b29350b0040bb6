"""The host's software switch: a learning L2 bridge (Linux bridge semantics,
net/bridge/br_fdb.c) charging one event per forwarded frame to the thread
that hands it the frame.  A frame from a tap or vhost socket is bridged by
the kernel in the softirq of the tap write or vhost send (netif_rx on the
sending CPU): ``vswitch``.  A frame from a vhost-user port is forwarded by
the user-space switch's poll-mode thread itself (OVS-DPDK's EMC lookup and
output batching, testpmd-style forwarding): ``dpdk_switch``, its own
per-packet price; the port says which (``switch_event``).  A TCP GSO packet
is forwarded as one frame and segmented in software on the forwarding
thread for each port that cannot take it whole (``takes_gso`` false:
validate_xmit_skb's skb_gso_segment on the way out of the bridge), every
segment summed there unless the port's device sums it (``takes_csum``:
the segments stay CHECKSUM_PARTIAL)."""

from __future__ import annotations

from collections import Counter

from .gso import GsoFrame, PartialFrame, segment

BROADCAST = b"\xff\xff\xff\xff\xff\xff"


class Port:
    """Something plugged into the switch: a tap, a vhost port, an uplink."""

    acct: Counter[str] | None = None
    switch_event = "vswitch"            # what forwarding a frame this port hands the switch costs
    takes_gso = False                   # whether a GSO packet may leave through it whole
    takes_csum = False                  # whether its segments may leave with their checksums partial

    def deliver(self, frame: bytes, at: float) -> None:
        raise NotImplementedError


class VSwitch:
    def __init__(self, host) -> None:
        self.host = host
        self.ports: list[Port] = []
        self.fdb: dict[bytes, Port] = {}
        self.stats: Counter[str] = Counter()

    def attach(self, port: Port) -> None:
        self.ports.append(port)

    def detach(self, port: Port) -> None:
        """br_del_if: the port leaves and its learnt addresses are flushed."""
        self.ports.remove(port)
        self.fdb = {mac: p for mac, p in self.fdb.items() if p is not port}

    def ingress(self, port: Port, frame: bytes, cpu) -> None:
        """Forward a frame ``port`` received, on ``cpu`` at its cursor."""
        cpu.charge(port.switch_event, acct=port.acct)
        if len(frame) < 14:
            self.host.sim.drops.count(f"{self.host.name}/bridge/runt", frame)
            return
        src, dst = frame[6:12], frame[:6]
        if not src[0] & 1:
            self.fdb[src] = port
        out = None if dst[0] & 1 else self.fdb.get(dst)
        outs = [out] if out is not None else [other for other in self.ports if other is not port]
        if out is None:
            self.stats["flooded"] += 1
        elif out is port:
            return
        segments: dict[bool, list[bytes]] = {}
        for other in outs:
            if type(frame) is GsoFrame and not other.takes_gso:
                partial = other.takes_csum
                if partial not in segments:
                    segments[partial] = self._segment(frame, cpu, partial)
                for one in segments[partial]:
                    other.deliver(one, cpu.cursor)
            else:
                other.deliver(frame, cpu.cursor)

    @staticmethod
    def _segment(packet: GsoFrame, cpu, partial: bool) -> list[bytes]:
        """Software GSO on the forwarding thread: each segment cut, and summed
        unless ``partial``."""
        frames = segment(packet, partial)
        for frame in frames:
            cpu.charge("gso_segment")
            if not partial:
                cpu.charge("csum", nbytes=len(frame) - 34)
        return [PartialFrame(frame) for frame in frames] if partial else frames
