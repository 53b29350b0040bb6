"""The host's software switch: a learning L2 bridge (Linux bridge semantics,
net/bridge/br_fdb.c) charging one event per forwarded frame to the thread
that hands it the frame.  A frame from a tap or vhost socket is bridged by
the kernel in the softirq of the tap write or vhost send (netif_rx on the
sending CPU): ``vswitch``.  A frame from a vhost-user port is forwarded by
the user-space switch's poll-mode thread itself (OVS-DPDK's EMC lookup and
output batching, testpmd-style forwarding): ``dpdk_switch``, its own
per-packet price; the port says which (``switch_event``)."""

from __future__ import annotations

from collections import Counter

BROADCAST = b"\xff\xff\xff\xff\xff\xff"


class Port:
    """Something plugged into the switch: a tap, a vhost port, an uplink."""

    acct: Counter[str] | None = None
    switch_event = "vswitch"            # what forwarding a frame this port hands the switch costs

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
        at = cpu.cursor
        if out is not None:
            if out is not port:
                out.deliver(frame, at)
            return
        self.stats["flooded"] += 1
        for other in self.ports:
            if other is not port:
                other.deliver(frame, at)
