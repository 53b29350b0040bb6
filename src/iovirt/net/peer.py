"""The host at the far end of a physical link: a machine outside the
simulated hosts, with its own cores, NIC queues, interrupt moderation and
IPv4 stack, that sinks and sources the traffic of workloads whose
destination is ``wire``."""

from __future__ import annotations

from collections import deque
from ipaddress import IPv4Address, IPv4Interface

from ..sim.resource import Resource
from ..spec.ethernet import ETH_MIN_FRAME
from ..spec.ixgbe import RETA_ENTRIES, RSS_DEFAULT_KEY, eitr_interval_ns, toeplitz, toeplitz_tables
from .fabric import Fabric
from .headers import ETH_P_ARP, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
from .moderation import ITR_20K, LOWEST, NAPI_WEIGHT, next_itr
from .stack import IPv4Stack
from .wire import Link

_ETH_P_ARP = ETH_P_ARP.to_bytes(2, "big")
_ETH_P_IP = ETH_P_IP.to_bytes(2, "big")
_RSS_TABLES = toeplitz_tables(RSS_DEFAULT_KEY, 12)
RX_RING = 512                       # IXGBE_DEFAULT_RXD


class _RxQueue:
    """One RSS queue and the core whose vector it interrupts: the frames in
    its ring, when each frame taken from it is done with, and the vector's
    moderation (EITR, adaptive as ixgbe's dynamic mode) and NAPI state."""

    def __init__(self, core: Resource) -> None:
        self.core = core
        self.ring: deque[tuple[bytes, float]] = deque()      # with its RX timestamp
        self.taken: deque[float] = deque()
        self.polling = False            # interrupt masked, NAPI scheduled (ixgbe_msix_clean_rings)
        self.armed = False              # an interrupt waits for the EITR interval to end
        self.next_irq_ok = 0.0
        self.itr = ITR_20K
        self.ranges = {"rx": LOWEST}
        self.work = {"rx": 0}


class WirePeer:
    """The host at the far end: a machine with ``cores`` cores behind a
    multi-queue NIC.  Its NIC spreads received flows over one queue per core
    by the RSS hash of their addresses and ports (82599 datasheet 7.1.2.8,
    Microsoft's key, the redirection table filled round robin as Linux's
    ixgbe does); each queue's ring holds ``rx_ring`` frames, and a frame that
    arrives while its ring is full is missed and counted (``rx_missed``, the
    NIC's MPC).  A queue's frames reach its core as Linux's ixgbe takes them:
    an interrupt no sooner than EITR allows (adaptive, as on the hosts'
    NICs), then NAPI polls of up to 64 frames until the ring is empty.  Each
    core runs the IPv4 stack for its queue's frames, which answers ARP and
    ICMP echo, delivers UDP to sockets bound on ``stack`` and runs TCP (with
    GRO, and the checksums its NIC validated, RXCSUM).  With
    ``record`` it keeps every frame it receives with its arrival time."""

    def __init__(self, link: Link | Fabric, mac: bytes, address: str, record: bool = False,
                 name: str | None = None, cores: int = 1, rx_ring: int = RX_RING) -> None:
        self.link = link                    # a cable straight to one NIC, or the LAN
        self.sim = link.sim
        self.mac = bytes(mac)
        self.name = name or f"{link.name}/peer"
        self.cores = [Resource(f"{self.name}/core{i}", "peer", link.ledger) for i in range(cores)]
        self.cpu = self.vcpu = self.cores[0]
        self.rx_ring = rx_ring
        self.rx_stamp = 0.0
        self.sinks: set[int] = set()        # UDP ports taken as a tester takes them
        self._rx = [_RxQueue(core) for core in self.cores]
        self._queues: dict[bytes, int] = {}                # RSS result per (addresses, ports)
        self.stack = IPv4Stack(self.cpu, self.mac, IPv4Interface(address), self, drops=self.sim.drops,
                               place=f"{self.name}/stack", sched=self, rx_csum=True)
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

    def run_at(self, when: float, fn) -> None:
        """A timer of the stack's (TCP's): it runs on core 0."""
        self.sim.at(when, self._on_core, self.cores[0], fn)

    def run_soon(self, fn) -> None:
        """Work the stack defers (GRO's flush at the end of a poll), on the core running it."""
        self.sim.at(self.stack.cpu.cursor, self._on_core, self.stack.cpu, fn)

    def _on_core(self, core: Resource, fn) -> None:
        core.sync(self.sim.now)
        self.cpu = self.vcpu = self.stack.cpu = core
        fn()

    def arrive(self, frame: bytes, via: Link | None = None) -> None:
        now = self.sim.now
        if self.record:
            self.received.append((now, frame))
        if not self._for_stack(frame):
            return
        rx = self._rx[self._queue(frame)]
        taken = rx.taken
        while taken and taken[0] <= now:
            taken.popleft()
        if len(rx.ring) + len(taken) >= self.rx_ring:
            self.sim.drops.count(f"{self.name}/rx_missed", frame)
            return
        rx.ring.append((frame, now))
        if not rx.polling:
            self._cause(rx, now)

    def _cause(self, rx: _RxQueue, now: float) -> None:
        """The queue's RX cause: an interrupt now, or when EITR's interval ends."""
        if now >= rx.next_irq_ok:
            self._interrupt(rx)
        elif not rx.armed:
            rx.armed = True
            self.sim.at(rx.next_irq_ok, self._eitr_expired, rx)

    def _eitr_expired(self, rx: _RxQueue) -> None:
        rx.armed = False
        if rx.ring and not rx.polling:
            self._interrupt(rx)

    def _interrupt(self, rx: _RxQueue) -> None:
        """The vector fires (auto-masked): an idle core is woken, enters the
        handler, and polls."""
        now = self.sim.now
        rx.next_irq_ok = now + eitr_interval_ns(rx.itr)
        rx.polling = True
        core = rx.core
        if core.cursor < now:
            core.sync(now)
            core.charge("wakeup")
        core.charge("irq_entry")
        self._poll(rx)

    def _poll(self, rx: _RxQueue) -> None:
        """ixgbe_poll: up to NAPI_WEIGHT frames of the ring through the stack;
        the poll ends when its core is done with them."""
        core, ring, taken, stack = rx.core, rx.ring, rx.taken, self.stack
        self.cpu = self.vcpu = stack.cpu = core
        done = 0
        sinks = self.sinks
        while ring and done < NAPI_WEIGHT:
            frame, self.rx_stamp = ring.popleft()
            rx.work["rx"] += len(frame)
            port = _udp_dport(frame)
            if port in sinks:
                self._sink(core, frame, port)
            else:
                stack.receive(frame)
            taken.append(core.cursor)
            done += 1
        self.sim.at(core.cursor, self._poll_done, rx, done)

    def _poll_done(self, rx: _RxQueue, done: int) -> None:
        """A full budget polls again; otherwise napi_complete_done: the
        adaptive rate is updated and the vector unmasked."""
        if done == NAPI_WEIGHT and rx.ring:
            self._poll(rx)
            return
        rx.itr = next_itr(rx.itr, rx.ranges, rx.work)
        rx.polling = False
        if rx.ring:
            self._cause(rx, self.sim.now)

    def sink(self, port: int) -> None:
        """Take the datagrams of a one-way stream to ``port`` as a traffic
        tester does (a poll-mode receiver counting and timestamping what its
        NIC hands it, RFC 2544 26.1): a descriptor read each, no kernel stack,
        so one flow on one queue is not held back by the far end's stack."""
        self.sinks.add(port)

    def _sink(self, core: Resource, frame: bytes, port: int) -> None:
        core.charge("ring_op")
        l4, end = _l4(frame), 14 + int.from_bytes(frame[16:18], "big")
        sock = self.stack.udp_sockets[port]
        sock.on_datagram(frame[l4 + 8:end], IPv4Address(frame[26:30]), int.from_bytes(frame[l4:l4 + 2], "big"))

    def receive_time(self) -> float:
        """A one-way flow's latency ends at this host's NIC: the RX timestamp
        of the frame being delivered (82599 datasheet 7.9, as a hardware
        tester takes it, RFC 2544 26.2), not after its own moderation and
        stack, which are not the system measured."""
        return self.rx_stamp

    def _queue(self, frame: bytes) -> int:
        """The RSS queue of an IPv4 frame: addresses, and ports for UDP and TCP (queue 0 for the rest)."""
        if len(self.cores) == 1 or frame[12:14] != _ETH_P_IP:
            return 0
        l4 = _l4(frame)
        key = frame[26:34] + (frame[l4:l4 + 4] if frame[23] in (IPPROTO_UDP, IPPROTO_TCP) else b"")
        queue = self._queues.get(key)
        if queue is None:
            index = toeplitz(_RSS_TABLES, key) & (RETA_ENTRIES - 1)
            queue = self._queues[key] = index % len(self.cores)
        return queue

    def _for_stack(self, frame: bytes) -> bool:
        kind = frame[12:14]
        if kind == _ETH_P_ARP:
            return True
        if kind != _ETH_P_IP or len(frame) < 34:
            return False
        if frame[23] == IPPROTO_TCP:
            l4 = _l4(frame)
            port = int.from_bytes(frame[l4 + 2:l4 + 4], "big")
            return port in self.stack.tcp_listeners or any(key[0] == port for key in self.stack.tcp_socks)
        return frame[23] == IPPROTO_ICMP or _udp_dport(frame) in self.stack.udp_sockets


def _l4(frame: bytes) -> int:
    """Where an IPv4 frame's transport header starts (after its IHL)."""
    return 14 + (frame[14] & 0xF) * 4


def _udp_dport(frame: bytes) -> int:
    """The destination port of a UDP/IPv4 frame, -1 for any other frame."""
    if frame[12:14] != _ETH_P_IP or len(frame) < 34 or frame[23] != IPPROTO_UDP:
        return -1
    l4 = _l4(frame)
    return int.from_bytes(frame[l4 + 2:l4 + 4], "big")
