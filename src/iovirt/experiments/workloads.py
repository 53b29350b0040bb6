"""Workloads: applications running in the guests, like ping, netperf
UDP_STREAM and UDP_RR, TCP_STREAM and TCP_RR.  Every datagram carries a probe
header (flow, sequence, send time) and a payload pattern derived from the
sequence number, checked byte for byte at the receiver: loss, corruption,
reordering and latency are measured from the frames themselves.  A TCP
connection's byte stream is a pattern of its offset, checked byte for byte
as it is read; its data segments are counted as TCP sends and receives them
(``sent``, ``delivered``), so that with the drop ledger they add up."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable

from ..guest.kernel import GuestKernel
from ..net.stack import IPv4Stack

PROBE = struct.Struct("!IIQ")          # flow, sequence, send time (ns)
PROBE_SIZE = PROBE.size
IP_UDP_HEADERS = 28
_PATTERN = bytes(range(256)) * 7       # longer than any payload + 255
_STREAM = bytes(range(256)) * 257      # a TCP stream's bytes: offset modulo 256; 64 KiB + 255
STREAM_CHUNK = 65536                   # the largest message a TCP workload writes at once
IPPROTO_TCP = 6
TCP_MSS = 1460                         # a 1500-byte MTU less the IPv4 and TCP headers
BASE_PORT = 5001
_TPID, _ETH_P_IP = b"\x81\x00", b"\x08\x00"
_PROBED = (1, 17)                       # IPPROTO_ICMP, IPPROTO_UDP


def payload_for(flow: int, seq: int, sent_at: int, size: int) -> bytes:
    """The datagram of ``size`` IPv4 bytes for (flow, seq)."""
    return PROBE.pack(flow, seq, int(sent_at)) + _pattern(seq & 0xFF, size - IP_UDP_HEADERS - PROBE_SIZE)


_PATTERNS: dict[int, bytes] = {}


def _pattern(start: int, length: int) -> bytes:
    """The ``length`` pattern bytes after a probe of sequence ``start`` (mod 256): made once,
    not per datagram."""
    key = start << 16 | length
    pattern = _PATTERNS.get(key)
    if pattern is None:
        pattern = _PATTERNS[key] = _PATTERN[start:start + length]
    return pattern


def _probe_at(frame: bytes) -> int | None:
    """Where the probe of ``frame``'s datagram starts (UDP, or ICMP echo data;
    VLAN-tagged or not), None if it carries no IPv4 UDP or ICMP."""
    at = 16 if frame[12:14] == _TPID else 12
    if frame[at : at + 2] != _ETH_P_IP or len(frame) < at + 22 or frame[at + 11] not in _PROBED:
        return None
    return at + 2 + (frame[at + 2] & 0xF) * 4 + 8          # past the IP header and the UDP / ICMP header


def _tcp_data_port(frame: bytes) -> int | None:
    """The lower port of a TCP/IPv4 frame carrying data (a workload's
    connection uses its port at both ends), None for any other frame."""
    at = 16 if frame[12:14] == _TPID else 12
    if frame[at : at + 2] != _ETH_P_IP or len(frame) < at + 22 or frame[at + 11] != IPPROTO_TCP:
        return None
    ip = at + 2
    l4 = ip + (frame[ip] & 0xF) * 4
    if len(frame) < l4 + 14:
        return None
    if int.from_bytes(frame[ip + 2 : ip + 4], "big") - (l4 - ip) - (frame[l4 + 12] >> 4) * 4 <= 0:
        return None
    return min(int.from_bytes(frame[l4 : l4 + 2], "big"), int.from_bytes(frame[l4 + 2 : l4 + 4], "big"))


def flow_of(flows: int) -> Callable[[bytes], int | None]:
    """What tells a frame's flow for the drop ledger: the probe its datagram
    carries, or the port of a TCP data segment, if it names one of the
    ``flows`` workloads."""
    def classify(frame: bytes) -> int | None:
        port = _tcp_data_port(frame)
        if port is not None:
            return port - BASE_PORT if 0 <= port - BASE_PORT < flows else None
        probe = _probe_at(frame)
        if probe is None:
            return None
        flow = int.from_bytes(frame[probe : probe + 4], "big") if len(frame) >= probe + 4 else flows
        return flow if flow < flows else None
    return classify


def probe_of(frame: bytes) -> tuple[int, int, int] | None:
    """The (flow, sequence, send time) ``frame`` carries, if any."""
    probe = _probe_at(frame)
    return None if probe is None or len(frame) < probe + PROBE_SIZE else PROBE.unpack_from(frame, probe)


@dataclass
class FlowStats:
    index: int
    type: str
    src: str
    dst: str
    packet_size: int
    sent: int = 0
    delivered: int = 0
    corrupted: int = 0
    out_of_order: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    first_sent: int | None = None
    last_delivered: int | None = None
    window: tuple[float, float] = (0.0, float("inf"))     # when deliveries count for throughput (ns)
    window_frames: int = 0
    window_bytes: int = 0                                  # payload (UDP or ICMP data) delivered in the window
    expect_seq: int = 0
    gaps: list[tuple[int, int, float]] = field(default_factory=list)   # (first missing seq, how many, when the next came)
    transactions: int = 0               # tcp_rr: request/response pairs completed
    window_transactions: int = 0
    read_fit: list[float] = field(default_factory=lambda: [0.0] * 5)   # tcp_stream: the reads in the window
                                                # (when, bytes read by then) as n, their means, and the sums
                                                # of squares and products about them (Welford)

    def fit_read(self, when: float, read: int) -> None:
        """One read into the least-squares line of bytes read against time."""
        fit = self.read_fit
        n = fit[0] = fit[0] + 1
        dt = when - fit[1]
        fit[1] += dt / n
        db = read - fit[2]
        fit[2] += db / n
        fit[3] += dt * (when - fit[1])
        fit[4] += dt * (read - fit[2])

    def check(self, payload: bytes, now: float) -> int | None:
        """Verify one received datagram; returns its sequence number if intact."""
        if len(payload) != self.packet_size - IP_UDP_HEADERS or len(payload) < PROBE_SIZE:
            self.corrupted += 1
            return None
        flow, seq, sent_at = PROBE.unpack_from(payload)
        # the probe header matches by construction; compare the pattern after it
        start = seq & 0xFF
        if flow != self.index or not payload.endswith(_pattern(start, len(payload) - PROBE_SIZE)):
            self.corrupted += 1
            return None
        if seq < self.expect_seq:
            self.out_of_order += 1
        else:
            if seq > self.expect_seq:
                self.gaps.append((self.expect_seq, seq - self.expect_seq, now))
            self.expect_seq = seq + 1
        self.delivered += 1
        if self.window[0] <= now < self.window[1]:
            self.window_frames += 1
            self.window_bytes += len(payload)
        self.latencies_ns.append(now - sent_at)
        self.last_delivered = now
        return seq


class Workload:
    """Common timing: sends start at ``start`` and stop at ``stop`` (ns)."""

    def __init__(self, stats: FlowStats, src: GuestKernel, dst: GuestKernel,
                 src_if: IPv4Stack, dst_if: IPv4Stack, start: int, stop: int, rate_pps: float | None) -> None:
        self.stats = stats
        self.src, self.dst = src, dst
        self.src_if, self.dst_if = src_if, dst_if
        self.start, self.stop = start, stop
        self.interval = int(1e9 / rate_pps) if rate_pps else 0
        self.port = BASE_PORT + stats.index

    def begin(self) -> None:
        self.src.run_at(self.start, self.step)

    def next_step(self) -> None:
        if self.interval:
            self.src.run_at(max(self.start + self.stats.sent * self.interval, self.src.vcpu.cursor), self.step)
        else:
            self.src.run_soon(self.step)

    def mark_sent(self, now: int) -> None:
        if self.stats.first_sent is None:
            self.stats.first_sent = now
        self.stats.sent += 1


class UdpStream(Workload):
    """netperf UDP_STREAM: send as fast as the path allows (or at rate_pps);
    a full socket buffer blocks the sender until the driver frees room."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tx = self.src_if.udp_socket(self.port)
        self.rx = self.dst_if.udp_socket(self.port)
        self.rx.on_datagram = self.received
        self.dst_addr = (self.dst_if.ip.ip, self.port)

    def step(self) -> None:
        now = self.src.vcpu.cursor
        if now >= self.stop:
            return
        payload = payload_for(self.stats.index, self.stats.sent, now, self.stats.packet_size)
        if self.tx.sendto(payload, self.dst_addr):
            self.mark_sent(now)
            self.next_step()
        else:
            self.tx.on_writable = self.step

    def received(self, payload: bytes, src_ip, src_port: int) -> None:
        self.stats.check(payload, self.dst.receive_time())


class RequestResponse(Workload):
    """netperf UDP_RR: one request in flight; the server echoes it; latency is
    the round trip."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.client = self.src_if.udp_socket(self.port)
        self.server = self.dst_if.udp_socket(self.port)
        self.server.on_datagram = self.serve
        self.client.on_datagram = self.answered
        self.dst_addr = (self.dst_if.ip.ip, self.port)

    def step(self) -> None:
        now = self.src.vcpu.cursor
        if now >= self.stop:
            return
        if self.client.sendto(payload_for(self.stats.index, self.stats.sent, now, self.stats.packet_size), self.dst_addr):
            self.mark_sent(now)

    def serve(self, payload: bytes, src_ip, src_port: int) -> None:
        self.server.sendto(payload, (src_ip, src_port))

    def answered(self, payload: bytes, src_ip, src_port: int) -> None:
        if self.stats.check(payload, self.src.vcpu.cursor) is not None:
            self.next_step()


class Ping(Workload):
    """ping -c COUNT: ICMP echo requests spread over the duration."""

    def __init__(self, *args, count: int = 5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.count = count
        self.interval = max(1, (self.stop - self.start) // count)

    def step(self) -> None:
        if self.stats.sent >= self.count:
            return
        now = self.src.vcpu.cursor
        seq = self.stats.sent
        data = payload_for(self.stats.index, seq, now, self.stats.packet_size)
        if self.src_if.ping(self.dst_if.ip.ip, self.port, seq & 0xFFFF, data, self.replied):
            self.mark_sent(now)                # iputils counts what it could send
        self.next_step()

    def replied(self, ident: int, seq: int, data: bytes) -> None:
        self.stats.check(data, self.src.vcpu.cursor)


class _Segments:
    """What a TCP socket counts (its ``counters``): data segments sent and
    delivered; those delivered while the flow's window is open also count
    for its packet rate."""

    __slots__ = ("stats", "clock")

    def __init__(self, stats: FlowStats, clock: Callable[[], float]) -> None:
        self.stats, self.clock = stats, clock

    @property
    def sent(self) -> int:
        return self.stats.sent

    @sent.setter
    def sent(self, value: int) -> None:
        if self.stats.first_sent is None:
            self.stats.first_sent = self.clock()
        self.stats.sent = value

    @property
    def delivered(self) -> int:
        return self.stats.delivered

    @delivered.setter
    def delivered(self, value: int) -> None:
        stats = self.stats
        if stats.window[0] <= self.clock() < stats.window[1]:
            stats.window_frames += value - stats.delivered
        stats.delivered = value


class TcpWorkload(Workload):
    """A connection from ``src`` to ``dst`` on the flow's port at both ends,
    set up when the workload starts."""

    NODELAY = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        counters = _Segments(self.stats, lambda: self.dst_if.cpu.cursor)
        self.dst_if.tcp_listen(self.port, self.accepted, nodelay=self.NODELAY, counters=counters)
        self.counters = counters
        self.sock = self.server = None

    def step(self) -> None:
        self.sock = self.src_if.tcp_connect(self.dst_if.ip.ip, self.port, self.port, nodelay=self.NODELAY,
                                            counters=self.counters)
        self.sock.on_connected = self.connected

    def check(self, offset: int, data: bytes) -> bool:
        """Whether ``data`` is the stream's bytes from ``offset`` on."""
        for at in range(0, len(data), STREAM_CHUNK):
            piece = data[at : at + STREAM_CHUNK]
            start = (offset + at) & 0xFF
            if piece != _STREAM[start : start + len(piece)]:
                return False
        return True


class TcpStream(TcpWorkload):
    """netperf TCP_STREAM: write ``message_size`` bytes at a time as fast as
    the socket takes them; the receiver reads and checks every byte."""

    def __init__(self, *args, message_size: int = 16384, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.message_size = message_size
        self.written = self.read = 0

    def connected(self) -> None:
        self.write()

    def write(self) -> None:
        sock, size = self.sock, self.message_size
        while self.src.vcpu.cursor < self.stop:
            start = self.written & 0xFF
            n = sock.send(_STREAM[start : start + size])
            self.written += n
            if n < size:
                sock.on_writable = self.write
                return

    def accepted(self, sock) -> None:
        self.server = sock
        sock.on_data = self.received

    def received(self, data: bytes) -> None:
        stats = self.stats
        if not self.check(self.read, data):
            stats.corrupted += 1
        self.read += len(data)
        now = self.dst.receive_time()
        if stats.window[0] <= now < stats.window[1]:
            stats.window_bytes += len(data)
            stats.fit_read(now, self.read)
        stats.last_delivered = now


class TcpRequestResponse(TcpWorkload):
    """netperf TCP_RR: one transaction at a time, ``request_size`` bytes to
    the server and ``response_size`` back, TCP_NODELAY on both; latency is
    the transaction's round trip."""

    NODELAY = True

    def __init__(self, *args, request_size: int = 1, response_size: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request_size, self.response_size = request_size, response_size
        self.asked = self.answered = 0          # bytes of the current request and response so far
        self.sent_at = 0.0
        self.offset = [0, 0]                    # stream offsets written: client to server, server to client
        self.read = [0, 0]                      # and read

    def connected(self) -> None:
        self.request()

    def request(self) -> None:
        now = self.src.vcpu.cursor
        if now >= self.stop:
            return
        self.sent_at = now
        self._send(self.sock, 0, self.request_size)

    def _send(self, sock, way: int, size: int) -> None:
        """``size`` bytes (at most STREAM_CHUNK) of direction ``way``'s stream."""
        start = self.offset[way] & 0xFF
        taken = sock.send(_STREAM[start : start + size])
        self.offset[way] += taken
        if taken < size:
            sock.on_writable = lambda: self._send(sock, way, size - taken)

    def accepted(self, sock) -> None:
        self.server = sock
        sock.on_data = self.serve

    def serve(self, data: bytes) -> None:
        if not self.check(self.read[0], data):
            self.stats.corrupted += 1
        self.read[0] += len(data)
        self.asked += len(data)
        if self.asked >= self.request_size:
            self.asked -= self.request_size
            self._send(self.server, 1, self.response_size)

    def connected_data(self, data: bytes) -> None:
        stats = self.stats
        if not self.check(self.read[1], data):
            stats.corrupted += 1
        self.read[1] += len(data)
        self.answered += len(data)
        if self.answered < self.response_size:
            return
        self.answered -= self.response_size
        now = self.src.vcpu.cursor
        stats.transactions += 1
        stats.latencies_ns.append(now - self.sent_at)
        if stats.window[0] <= now < stats.window[1]:
            stats.window_transactions += 1
            stats.window_bytes += self.response_size
        stats.last_delivered = now
        self.request()

    def step(self) -> None:
        super().step()
        self.sock.on_data = self.connected_data


KINDS = {"udp_stream": UdpStream, "request_response": RequestResponse, "ping": Ping, "tcp_stream": TcpStream,
         "tcp_rr": TcpRequestResponse}


class MemoryDirty:
    """A memory-bound application: it rewrites its working set page by page,
    round-robin, at ``rate_mib_s``, each page stamped with a write counter.
    The writes are CPU stores into guest memory (``copy`` on the vCPU), so
    they dirty pages for real; :meth:`expected` is what a page must hold."""

    TICK_NS = 100_000

    def __init__(self, guest: GuestKernel, start: int, stop: int, rate_mib_s: float, working_set_mb: int) -> None:
        self.guest = guest
        self.start, self.stop = start, stop
        self.pages = working_set_mb << 8
        self.base = guest.alloc.alloc(self.pages << 12, 4096)
        self.per_tick = rate_mib_s * (1 << 20) * self.TICK_NS / 1e9 / 4096
        self.credit = 0.0
        self.written = 0

    def begin(self) -> None:
        self.guest.run_at(self.start, self.step)

    def expected(self, index: int) -> bytes:
        """Page ``index`` of the working set after the writes so far."""
        laps, rest = divmod(self.written, self.pages)
        stamp = laps * self.pages + index if index < rest else (laps - 1) * self.pages + index
        return (stamp + 1).to_bytes(8, "little") * 512 if stamp >= 0 else bytes(4096)

    def step(self) -> None:
        vcpu = self.guest.vcpu
        now = vcpu.cursor
        if now >= self.stop:
            return
        self.credit += self.per_tick
        count, self.credit = int(self.credit), self.credit % 1
        mem, pages = self.guest.mem, self.pages
        for _ in range(count):
            index = self.written % pages
            self.written += 1
            mem.write(self.base + (index << 12), self.written.to_bytes(8, "little") * 512)
        if count:
            vcpu.charge("copy", count, nbytes=count << 12)
        self.guest.run_at(now + self.TICK_NS, self.step)
