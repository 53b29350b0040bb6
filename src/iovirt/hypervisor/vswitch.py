"""The host's software switch: a learning L2 bridge (Linux bridge semantics,
net/bridge/br_fdb.c) charging one ``vswitch`` event per forwarded frame on
the host core that processes the ingress port (or, for a userspace switch
port, on that switch's poll-mode thread)."""

from __future__ import annotations

from collections import Counter

BROADCAST = b"\xff\xff\xff\xff\xff\xff"


class Port:
    """Something plugged into the switch: a tap, a vhost port, an uplink."""

    port_no = -1
    acct: Counter[str] | None = None
    switch_core = None          # a userspace switch's own thread; None: the kernel's softirq core

    def deliver(self, frame: bytes, at: int) -> None:
        raise NotImplementedError


class VSwitch:
    def __init__(self, host) -> None:
        self.host = host
        self.ports: list[Port] = []
        self.fdb: dict[bytes, Port] = {}
        self.stats: Counter[str] = Counter()

    def attach(self, port: Port) -> None:
        port.port_no = len(self.ports)
        self.ports.append(port)

    def ingress(self, port: Port, frame: bytes) -> None:
        """Forward a frame that ``port`` handed to the switch at sim time now."""
        core = port.switch_core or self.host.core_for(port.port_no)
        core.sync(self.host.sim.now)
        core.charge("vswitch", acct=port.acct)
        if len(frame) < 14:
            self.stats["runt"] += 1
            return
        src, dst = frame[6:12], frame[:6]
        if not src[0] & 1:
            self.fdb[src] = port
        out = None if dst[0] & 1 else self.fdb.get(dst)
        at = core.cursor
        if out is not None:
            if out is not port:
                out.deliver(frame, at)
            return
        self.stats["flooded"] += 1
        for other in self.ports:
            if other is not port:
                other.deliver(frame, at)
