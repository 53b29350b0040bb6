"""The host's physical NIC as a port of its software switch: the host
kernel's own driver runs the NIC (natively, on a host core) and the bridge
forwards between it and the VMs' taps, as ``ip link set eth0 master br0``
does.  Frames from the wire reach the bridge from the driver's NAPI poll;
frames for the wire are handed to the driver's transmit on the same core;
a GSO packet goes to the driver whole when its NIC has TSO (the 82599 does),
as netif_skb_features lets it.  The driver's NAPI poll hands the wire's
frames to GRO first (napi_gro_receive, ``gro``: ethtool -K gro), so a TCP
flow's segments reach the bridge merged, one packet of up to 64 KB with its
checksum partial, until the poll ends."""

from __future__ import annotations

from collections import deque

from ..sim.resource import Resource
from .gso import Gro, ValidatedFrame, merged
from .vswitch import Port

TXQUEUELEN = 1000           # the qdisc in front of the NIC


class UplinkPort(Port):
    def __init__(self, host, cpu: Resource, driver, gro: bool = True) -> None:
        self.host = host
        self.sim = host.sim
        self.cpu = cpu
        self.acct = host.ledger.account(host.name)
        self.driver = driver
        self.queue: deque[bytes] = deque()
        self.place = f"{host.name}/uplink-qdisc"
        driver.stack = self
        self.gro = Gro(driver.kernel, self._gro_up) if gro else None
        self.takes_gso = "tso" in getattr(driver, "offloads", ())      # the NIC cuts GSO packets (TSO)
        driver.set_promiscuous()
        host.vswitch.attach(self)

    # the driver's upper layer (what an IPv4 stack would be)
    def receive(self, frame: bytes, csum_valid: bool = False) -> None:
        gro = self.gro
        if gro is not None and (gro.held or frame[23:24] == b"\x06"):
            if gro.receive(frame, csum_valid, self.cpu):
                return
            gro.flush()                 # what GRO holds goes first: frames stay in order
        self.host.vswitch.ingress(self, ValidatedFrame(frame) if csum_valid else frame, self.cpu)

    def _gro_up(self, head: bytes, payload: bytes, segs: int, mss: int) -> None:
        """What GRO took, checksum checked: alone as it came, or merged."""
        self.host.vswitch.ingress(self, ValidatedFrame(head + payload) if segs == 1 else merged(head, payload, segs, mss),
                                  self.cpu)

    def tx_wake(self) -> None:
        while self.queue and self.driver.transmit(self.queue[0]):
            self.queue.popleft()

    # the switch side
    def deliver(self, frame: bytes, at: float) -> None:
        self.sim.at(at, self._xmit, frame)

    def _xmit(self, frame: bytes) -> None:
        self.cpu.sync(self.sim.now)
        if self.queue or not self.driver.transmit(frame):
            if len(self.queue) >= TXQUEUELEN:
                self.sim.drops.count(self.place, frame)
            else:
                self.queue.append(frame)
