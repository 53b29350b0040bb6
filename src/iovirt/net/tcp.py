"""TCP for the IPv4 stack (RFC 9293): the three-way handshake and close,
sequence and acknowledgment numbers, the receive window with window scaling
(RFC 7323 §2), NewReno congestion control (RFC 5681 slow start and
congestion avoidance), fast retransmit and recovery by the SACK scoreboard
(RFC 2018, RFC 6675; a retransmission lost again is found by send order, as
RACK does, RFC 8985), or by NewReno's partial ACKs (RFC 6582) with a peer
that does not offer SACK, the retransmission timer (RFC 6298) with Linux's
200 ms minimum, delayed and quick ACKs (RFC 1122 §4.2.3.2, Linux's 40 ms and
16) and Nagle's algorithm (off with ``nodelay``, TCP_NODELAY).  No
timestamps option.  Sequence numbers are kept as unbounded integers and put
on the wire modulo 2**32.

Costs, on the stack's CPU: ``guest_stack`` per segment handed to or taken
from IP (a GSO or GRO packet is one), ``gso_segment`` per segment software
GSO cuts, ``csum`` per byte the stack checksums itself (none when the device
sums them), ``copy_hot`` per byte written into the send buffer and ``copy``
per byte read from the receive queue.

``counters``, if given, is any object with integer ``sent`` and
``delivered``: every data segment put on the wire (retransmissions too: a
retransmission is a new send) and every data segment that reached this
socket's TCP (duplicates too), so that a flow's frames add up with the drop
ledger's."""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections import deque
from typing import Any, Callable

from .headers import (
    CHECK16, IPPROTO_TCP, TCP_CHECK, TCP_MAX_SACK, TCPHDR, TCPHDR_ACK, TCPHDR_FIN, TCPHDR_PSH, TCPHDR_RST,
    TCPHDR_SYN, TCPOLEN_MSS, TCPOLEN_SACK_PERBLOCK, TCPOLEN_SACK_PERM, TCPOLEN_WINDOW, TCPOPT_EOL, TCPOPT_MSS,
    TCPOPT_NOP, TCPOPT_SACK, TCPOPT_SACK_PERM, TCPOPT_WINDOW, csum_fold, csum_partial, csum_reduced,
    pseudo_header_sum,
)

SEQ_MOD = 1 << 32
TCP_HLEN = TCPHDR.size
TCP_MSS_DEFAULT = 536               # RFC 9293 §3.7.1: without the option
TCP_MIN_MSS = 88                    # include/net/tcp.h: the least MSS a peer's option can set
TCP_RTO_MIN = 200_000_000           # ns: include/net/tcp.h, HZ/5
TCP_RTO_MAX = 120_000_000_000       # ns: include/net/tcp.h, 120*HZ
TCP_TIMEOUT_INIT = 1_000_000_000    # ns: RFC 6298 §2.1
TCP_DELACK_MIN = 40_000_000         # ns: include/net/tcp.h, HZ/25
TCP_INIT_CWND = 10                  # segments: RFC 6928, include/net/tcp.h
TCP_MAX_QUICKACKS = 16              # include/net/tcp.h: segments ACKed at once in quick-ACK mode
TCP_RMEM = 131072                   # net.ipv4.tcp_rmem default: the receive buffer
TCP_RMEM_MAX = 6291456              # net.ipv4.tcp_rmem max: what the window scale is chosen for
TCP_WMEM = 16384                    # net.ipv4.tcp_wmem default: the send buffer before it grows
TCP_WMEM_MAX = 4194304              # net.ipv4.tcp_wmem max
TCP_MAX_WSCALE = 14                 # RFC 7323 §2.3
GSO_MAX_SIZE = 65536                # include/linux/netdevice.h: a GSO packet's IP datagram at most
FLIGHT_FRAMES_MAX = 2 * 64          # frames a socket lets wait in the qdisc (TCP Small Queues bounds them too)
TCP_TSO_WIN_DIVISOR = 3             # net.ipv4.tcp_tso_win_divisor default
TSO_DEFER_IDLE = 2_000_000          # ns: tcp_tso_should_defer sends at once if the last send was more than a jiffy ago

CLOSED, LISTEN, SYN_SENT, SYN_RECV, ESTABLISHED = "CLOSED", "LISTEN", "SYN_SENT", "SYN_RECV", "ESTABLISHED"
FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT = (
    "FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")
_SENDING = (ESTABLISHED, CLOSE_WAIT)
_SACK_BLOCK = struct.Struct(">II")
_SACK_HEAD = bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_SACK))


def rcv_wscale(space: int = TCP_RMEM_MAX) -> int:
    """tcp_select_initial_window: the smallest shift that lets ``space`` fit the 16-bit field."""
    wscale = 0
    while space > 0xFFFF and wscale < TCP_MAX_WSCALE:
        space >>= 1
        wscale += 1
    return wscale


def unwrap(seq32: int, near: int) -> int:
    """The unbounded sequence number closest to ``near`` that is ``seq32`` modulo 2**32."""
    delta = (seq32 - near) % SEQ_MOD
    return near + delta - SEQ_MOD if delta >= SEQ_MOD // 2 else near + delta


def _options(data: bytes) -> dict[int, bytes]:
    """The options of a SYN (RFC 9293 §3.2): kind -> value; malformed ends the list."""
    found, i = {}, 0
    while i < len(data):
        kind = data[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= len(data) or data[i + 1] < 2 or i + data[i + 1] > len(data):
            break
        found[kind] = data[i + 2:i + data[i + 1]]
        i += data[i + 1]
    return found


class Ranges:
    """Disjoint sequence ranges, sorted, merged where they meet: the data a
    receiver holds beyond a hole (``keep``: with its bytes), or what a
    sender's peer has SACKed.  ``items`` are ``[start, end, data]``."""

    __slots__ = ("starts", "items", "total", "keep")

    def __init__(self, keep: bool) -> None:
        self.starts: list[int] = []
        self.items: list[list] = []
        self.total = 0
        self.keep = keep

    def add(self, start: int, end: int, data: bytes = b"") -> int:
        """Cover [start, end); returns where the range now holding it starts."""
        starts, items = self.starts, self.items
        i = bisect_right(starts, start) - 1
        if i >= 0 and items[i][1] >= start:
            item = items[i]
            if item[1] >= end:
                return item[0]
            if self.keep:
                item[2] += data[item[1] - start:]
            self.total += end - item[1]
            item[1] = end
        else:
            i += 1
            item = [start, end, bytearray(data) if self.keep else None]
            items.insert(i, item)
            starts.insert(i, start)
            self.total += end - start
        while i + 1 < len(items) and items[i + 1][0] <= item[1]:
            nstart, nend, ndata = items.pop(i + 1)
            starts.pop(i + 1)
            self.total -= nend - nstart
            if nend > item[1]:
                if self.keep:
                    item[2] += ndata[item[1] - nstart:]
                self.total += nend - item[1]
                item[1] = nend
        return item[0]

    def pop_from(self, seq: int) -> list[list]:
        """Take out the ranges that start at or below ``seq``."""
        n = bisect_right(self.starts, seq)
        out = self.items[:n]
        del self.items[:n], self.starts[:n]
        self.total -= sum(end - start for start, end, _ in out)
        return out

    def trim(self, seq: int) -> None:
        """Forget what lies below ``seq``."""
        for start, end, _ in self.pop_from(seq):
            if end > seq:
                self.add(seq, end)

    def below(self, seq: int) -> int:
        """How many bytes of the ranges lie below ``seq``."""
        n = bisect_right(self.starts, seq)
        return sum(min(end, seq) - start for start, end, _ in self.items[:n])

    def gap(self, seq: int) -> tuple[int, int | None]:
        """The first byte at or after ``seq`` outside every range, and where the next range after it starts."""
        i = bisect_right(self.starts, seq) - 1
        if i >= 0 and self.items[i][1] > seq:
            seq = self.items[i][1]
        j = bisect_right(self.starts, seq)
        return seq, self.starts[j] if j < len(self.starts) else None


class Timer:
    """A kernel timer (mod_timer, del_timer) on the stack's scheduler: one
    event is pending for the earliest deadline set; one that comes due after
    the deadline moved later sleeps on to it."""

    __slots__ = ("stack", "fn", "due", "_event")

    def __init__(self, stack, fn: Callable[[], Any]) -> None:
        self.stack, self.fn = stack, fn
        self.due: float | None = None
        self._event: float | None = None

    def mod(self, due: float) -> None:
        self.due = due
        if self._event is None or due < self._event:
            self._event = due
            self.stack.sched.run_at(due, lambda: self._fired(due))

    def cancel(self) -> None:
        self.due = None

    def _fired(self, event: float) -> None:
        if event != self._event:
            return                                  # a later event was set up when the deadline moved earlier
        self._event = None
        if self.due is None:
            return
        if self.stack.cpu.cursor < self.due:
            self.mod(self.due)
            return
        self.due = None
        self.fn()


class TcpSock:
    """One connection.  The application sets ``on_connected()``,
    ``on_data(bytes)``, ``on_writable()`` (room in the send buffer after a
    short ``send``) and ``on_closed()``."""

    def __init__(self, stack, lport: int, daddr: int, dport: int, iss: int, nodelay: bool = False,
                 counters: Any = None) -> None:
        self.stack = stack
        self.lport, self.daddr, self.dport = lport, daddr, dport
        self.nodelay = nodelay
        self.counters = counters
        self.state = CLOSED
        self.phsum = pseudo_header_sum(stack.addr, daddr, IPPROTO_TCP, 0)
        self.mss = stack.mtu - 40           # what we announce; the peer's option lowers ours to send with
        self.snd_mss = TCP_MSS_DEFAULT
        # send side (RFC 9293 §3.3.1)
        self.iss = iss
        self.snd_una = self.snd_nxt = self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wscale = 0
        self.rcv_wscale = rcv_wscale()
        self.sndq = bytearray()             # data from snd_una on (after the SYN)
        self.sndbuf = TCP_WMEM
        self.fin_queued = False
        self.cwnd = 0
        self.ssthresh = 1 << 62             # RFC 5681 §3.1: arbitrarily high
        self.cwnd_cnt = 0
        self.dupacks = 0
        self.recover = iss                  # RFC 6582 §3.2
        self.in_recovery = False
        # RFC 6298
        self.srtt = 0.0
        self.rttvar = 0.0
        self.rto = TCP_TIMEOUT_INIT
        self.rtt_seq: int | None = None
        self.rtt_sent = 0.0
        self.sent_at: deque[list] = deque()  # [end, when last sent] per data send not yet acknowledged (skb tstamps)
        self.lsndtime = 0.0                 # when data was last sent
        self.rto_timer = Timer(stack, self._rto_fired)
        # receive side
        self.irs = self.rcv_nxt = 0
        self.rcvbuf = TCP_RMEM
        self.rcv_edge = 0                   # the right edge of the window last offered
        self.rcv_copied = 0                 # read since the buffer last grew
        self.ooo = Ranges(keep=True)        # data beyond a hole
        self.ooo_last = 0                   # where the range holding the latest of it starts (RFC 2018 §4)
        self.sack_ok = stack.tcp_sack       # offered in our SYN (net.ipv4.tcp_sack); the peer's SYN decides
        self.sacked = Ranges(keep=False)    # the scoreboard: what the peer SACKed above snd_una
        self.rexmit_next = iss              # recovery: where the next hole's retransmission starts
        self.rexmit_order: dict[int, tuple[int, int]] = {}   # recovery: each hole sent again: (order, snd_max then)
        self.relost: list[int] = []         # holes sent again and lost again, to send once more
        self.rexmit_seq = 0
        self.rcv_unacked = 0                # bytes received since the last ACK sent
        self.quickacks = TCP_MAX_QUICKACKS  # quick-ACK mode: from the start, and after data out of order
        self.delack_timer = Timer(stack, self.send_ack)
        self.fin_received = False
        self.fin_seq: int | None = None     # where the peer's FIN is, once seen (ahead of a hole, perhaps)
        self.on_connected: Callable[[], Any] | None = None
        self.on_data: Callable[[bytes], Any] | None = None
        self.on_writable: Callable[[], Any] | None = None
        self.on_closed: Callable[[], Any] | None = None

    # --- user API -------------------------------------------------------------

    def send(self, data: bytes) -> int:
        """Copy as much of ``data`` as the send buffer holds (tcp_sendmsg); the count taken."""
        if self.state not in _SENDING or self.fin_queued:
            raise ConnectionError(f"TCP port {self.lport}: cannot send in state {self.state}")
        n = min(len(data), self.sndbuf - len(self.sndq))
        if n <= 0:
            return 0
        self.stack.cpu.charge("copy_hot", nbytes=n)
        self.sndq += data[:n] if n < len(data) else data
        self.push()
        return n

    def close(self) -> None:
        """No more data: a FIN follows what is queued (RFC 9293 §3.10.4)."""
        if self.state in _SENDING and not self.fin_queued:
            self.fin_queued = True
            self.state = FIN_WAIT1 if self.state == ESTABLISHED else LAST_ACK
            self.push()

    def connect(self) -> None:
        self.state = SYN_SENT
        self.snd_nxt = self.snd_max = self.iss + 1
        self._send_syn(TCPHDR_SYN)

    # --- output ---------------------------------------------------------------

    def _window(self, syn: bool) -> int:
        """What the receive buffer can still take, in the window field's units
        (RFC 7323 §2.2: a SYN's is unscaled); never less than what was offered
        before (tcp_select_window: the right edge does not move back, RFC 9293
        §3.8.6.2.2), so duplicate ACKs carry the same window."""
        free = max(0, self.rcvbuf - self.ooo.total)
        if syn:
            return min(free, 0xFFFF)
        shift = self.rcv_wscale
        win = min(free >> shift, 0xFFFF)
        offered = self.rcv_edge - self.rcv_nxt
        if offered > win << shift:
            win = min(-(-offered >> shift), 0xFFFF)
        self.rcv_edge = self.rcv_nxt + (win << shift)
        return win

    def _header(self, seq: int, flags: int, options: bytes = b"") -> bytes:
        return TCPHDR.pack(self.lport, self.dport, seq % SEQ_MOD, self.rcv_nxt % SEQ_MOD,
                           (TCP_HLEN + len(options)) << 10 | flags, self._window(flags & TCPHDR_SYN), 0, 0) + options

    def _checksummed(self, tcph: bytes, data: bytes) -> bytes:
        """The header with its checksum over pseudo-header, header and data
        (RFC 9293 §3.1), summed in software; or, when the device sums it (TX
        checksum offload, CHECKSUM_PARTIAL), seeded with the pseudo-header's
        sum for the device to complete (tcp_v4_send_check)."""
        size = len(tcph) + len(data)
        if self.stack.tx_csum:
            check = 0xFFFF - csum_fold(self.phsum + size)
        else:
            self.stack.cpu.charge("csum", nbytes=size)
            check = csum_fold(self.phsum + size + csum_partial(tcph) + csum_reduced(data))
        return tcph[:TCP_CHECK] + CHECK16.pack(check) + tcph[TCP_CHECK + 2:]

    def _output(self, seq: int, flags: int, data: bytes = b"", options: bytes = b"") -> bool:
        """One segment to IP; an ACK in it acknowledges all received so far."""
        self.rcv_unacked = 0
        self.delack_timer.cancel()
        if self.ooo.items and self.sack_ok and not flags & TCPHDR_SYN:
            options = self._sack_option()
        tcph = self._checksummed(self._header(seq, flags, options), data)
        sent = self.stack._ip_output(self.daddr, IPPROTO_TCP, tcph, data)
        if sent and data and self.counters is not None:
            self.counters.sent += 1
        return sent

    def _sack_option(self) -> bytes:
        """SACK blocks (RFC 2018 §4): first the range the latest segment joined, then the highest others."""
        ooo = self.ooo
        i = bisect_left(ooo.starts, self.ooo_last)
        first = ooo.items[i] if i < len(ooo.items) and ooo.starts[i] == self.ooo_last else None
        blocks = [first] if first else []
        for item in reversed(ooo.items):
            if len(blocks) == TCP_MAX_SACK:
                break
            if item is not first:
                blocks.append(item)
        return _SACK_HEAD + bytes((2 + TCPOLEN_SACK_PERBLOCK * len(blocks),)) + b"".join(
            _SACK_BLOCK.pack(start % SEQ_MOD, end % SEQ_MOD) for start, end, _ in blocks)

    def _send_syn(self, flags: int) -> None:
        if self.rto == TCP_TIMEOUT_INIT and self.rtt_seq is None:      # the first: its answer is an RTT sample
            self.rtt_seq, self.rtt_sent = self.iss + 1, self.stack.cpu.cursor
        sack = bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM)) if self.sack_ok else b""
        options = bytes((TCPOPT_MSS, TCPOLEN_MSS)) + self.mss.to_bytes(2, "big") + sack + bytes(
            (TCPOPT_NOP, TCPOPT_WINDOW, TCPOLEN_WINDOW, self.rcv_wscale))
        self._output(self.iss, flags, options=options)
        self._arm_rto()

    def send_ack(self) -> None:
        self._output(self.snd_nxt, TCPHDR_ACK)

    def push(self) -> None:
        """tcp_write_xmit: send what the congestion and receive windows allow,
        a GSO packet of whole segments at a time; a short segment waits while
        data is in flight unless ``nodelay`` (Nagle, RFC 896)."""
        if self.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT1, LAST_ACK):
            return
        stack, mss = self.stack, self.snd_mss
        data_end = self.snd_una + len(self.sndq)
        while True:
            unsent = data_end - self.snd_nxt
            if unsent <= 0:
                break
            room = self.snd_una + min(self.cwnd, self.snd_wnd) - self.snd_nxt
            if self.in_recovery and self.sack_ok:           # RFC 6675 §5 NextSeg rule 2: new data as the pipe allows
                room = min(self.cwnd - self._pipe(), self.snd_una + self.snd_wnd - self.snd_nxt)
            frames = FLIGHT_FRAMES_MAX - stack.queued_frames()
            if room <= 0 or frames <= 0:
                break
            full = (GSO_MAX_SIZE - 40 - TCP_HLEN) // mss * mss if stack.gso else mss
            if unsent > mss and stack.gso and self._tso_should_defer(room, full):
                break
            size = min(unsent, room, full, frames * mss)
            if size < mss and size < unsent:
                break                           # sender-side silly window avoidance (RFC 9293 §3.8.6.2.1)
            if size < mss and self.snd_nxt > self.snd_una and not self.nodelay:
                break                           # Nagle
            if size > mss and size < unsent:
                size -= size % mss
            if not self._xmit_data(self.snd_nxt, size, self.snd_nxt + size == data_end):
                break
            self._sent(self.snd_nxt, self.snd_nxt + size)
            if self.rtt_seq is None and self.snd_nxt >= self.snd_max:
                self.rtt_seq, self.rtt_sent = self.snd_nxt + size, stack.cpu.cursor
            self.snd_nxt += size
            self.snd_max = max(self.snd_max, self.snd_nxt)
            self._arm_rto()
        if self.fin_queued and self.snd_nxt == data_end and self.snd_max <= data_end:
            if self._output(data_end, TCPHDR_FIN | TCPHDR_ACK):
                self.snd_nxt = self.snd_max = data_end + 1
                self._arm_rto()
        if not self._flight_room():
            stack.wait_for_room(self)

    def _tso_should_defer(self, room: int, full: int) -> bool:
        """tcp_tso_should_defer: hold back a GSO packet the windows would cut
        short while an ACK that opens them is due, so that packets leave
        nearer their full size; never in recovery, after an idle spell, with
        a third of the window open, or before half a round trip has passed
        since the oldest unacknowledged data left."""
        now = self.stack.cpu.cursor
        if self.in_recovery or not self.sent_at or now - self.lsndtime > TSO_DEFER_IDLE:
            return False
        if room >= full or room >= min(self.snd_wnd, self.cwnd) // TCP_TSO_WIN_DIVISOR:
            return False
        return now - self.sent_at[0][1] >= self.srtt / 2

    def _sent(self, seq: int, end: int) -> None:
        """Data from ``seq`` to ``end`` leaves now: its send time (the head's again if it is resent)."""
        now = self.lsndtime = self.stack.cpu.cursor
        if end > self.snd_max:
            self.sent_at.append([end, now])
        elif seq == self.snd_una and self.sent_at:
            self.sent_at[0][1] = now

    def _flight_room(self) -> bool:
        return self.stack.queued_frames() < FLIGHT_FRAMES_MAX

    def write_space(self) -> None:
        """Frames below the socket drained: send on."""
        self.push()

    def _xmit_data(self, seq: int, size: int, last: bool) -> bool:
        """``size`` bytes from ``seq``: one segment, or a GSO packet of
        ``snd_mss`` segments (PSH on the last only) that the device segments
        (TSO) or the stack cuts before it (software GSO)."""
        at = seq - self.snd_una
        data = bytes(self.sndq[at:at + size])
        flags = TCPHDR_ACK | (TCPHDR_PSH if last else 0)
        if size <= self.snd_mss:
            return self._output(seq, flags, data)
        self.rcv_unacked = 0
        self.delack_timer.cancel()
        segs = self.stack._tcp_xmit_gso(self.daddr, self._header(seq, flags), data, self.snd_mss)
        if segs and self.counters is not None:
            self.counters.sent += segs
        return bool(segs)

    def _retransmit_range(self, seq: int, end: int) -> bool:
        at = seq - self.snd_una
        last = end - self.snd_una == len(self.sndq)
        self.rtt_seq = None                     # Karn: no sample from a retransmitted segment
        self._sent(seq, end)
        return self._output(seq, TCPHDR_ACK | (TCPHDR_PSH if last else 0), bytes(self.sndq[at:end - self.snd_una]))

    def _retransmit(self) -> None:
        """The first unacknowledged segment again (a new send for the ledger)."""
        if self.state == SYN_SENT:
            self._send_syn(TCPHDR_SYN)
            return
        if self.state == SYN_RECV:
            self._send_syn(TCPHDR_SYN | TCPHDR_ACK)
            return
        size = min(self.snd_mss, len(self.sndq))
        if size:
            self._retransmit_range(self.snd_una, self.snd_una + size)
        elif self.fin_queued:
            self._output(self.snd_una, TCPHDR_FIN | TCPHDR_ACK)
            self.rtt_seq = None

    # --- timers ---------------------------------------------------------------

    def _arm_rto(self) -> None:
        """The retransmission timer runs while anything is unacknowledged (RFC 6298 §5.1)."""
        self.rto_timer.mod(self.stack.cpu.cursor + self.rto)

    def _rto_fired(self) -> None:
        if self.state == CLOSED:
            return
        # RFC 6298 §5.4-5.6, RFC 5681 §3.1 (7): back off, one segment, slow start again
        self.ssthresh = max((self.snd_max - self.snd_una) // 2, 2 * self.snd_mss)
        self.cwnd = self.snd_mss
        self.cwnd_cnt = self.dupacks = 0
        self._end_recovery()
        self.recover = self.snd_max
        self.sacked = Ranges(keep=False)        # all in flight is taken as lost, SACKed or not (tcp_enter_loss)
        self.rto = min(self.rto * 2, TCP_RTO_MAX)
        if self.state not in (SYN_SENT, SYN_RECV):
            self.snd_nxt = self.snd_una         # go back: all in flight is taken as lost
        self._retransmit()
        if self.state not in (SYN_SENT, SYN_RECV):
            self.snd_nxt = self.snd_una + (min(self.snd_mss, len(self.sndq)) if self.sndq else int(self.fin_queued))
        self._arm_rto()
        self.push()

    def _sampled(self, ack: int) -> bool:
        """Whether ``ack`` covers the timed segment: then its round trip is a sample."""
        if self.rtt_seq is None or ack < self.rtt_seq:
            return False
        self._rtt_sample(self.stack.cpu.cursor - self.rtt_sent)
        self.rtt_seq = None
        return True

    def _rtt_sample(self, rtt: float) -> None:
        """RFC 6298 §2.2-2.4, the RTO at least TCP_RTO_MIN."""
        if self.srtt == 0:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(max(self.srtt + 4 * self.rttvar, TCP_RTO_MIN), TCP_RTO_MAX)

    def _delack(self) -> None:
        if self.rcv_unacked >= 2 * self.mss or self.quickacks:
            self.quickacks = max(0, self.quickacks - 1)
            self.send_ack()                     # every second full-sized segment (RFC 5681 §4.2), or quick-ACK mode
            return
        if self.delack_timer.due is None:
            self.delack_timer.mod(self.stack.cpu.cursor + TCP_DELACK_MIN)

    # --- input ----------------------------------------------------------------

    def segment(self, seq32: int, ack32: int, flags: int, window: int, options: bytes, payload: bytes,
                segs: int = 1) -> None:
        """A segment (or a GRO packet of ``segs``) for this connection (RFC 9293 §3.10.7)."""
        if payload and self.counters is not None:
            self.counters.delivered += segs
        if flags & TCPHDR_RST:
            return self._closed()
        state = self.state
        if state == SYN_SENT:
            return self._syn_sent(seq32, ack32, flags, window, options)
        seq = unwrap(seq32, self.rcv_nxt)
        if flags & TCPHDR_SYN:
            if state == SYN_RECV and seq == self.irs:
                self._send_syn(TCPHDR_SYN | TCPHDR_ACK)     # our SYN-ACK was lost: again
            else:
                self.send_ack()
            return
        if not flags & TCPHDR_ACK:
            return
        ack = unwrap(ack32, self.snd_una)
        if state == SYN_RECV:
            if ack != self.iss + 1:
                return
            self._sampled(ack)
            self.snd_una = ack
            self.snd_wnd = window << self.snd_wscale
            self._established()
        if options and self.sack_ok:
            self._sack_update(options)
        self._ack(ack, window << self.snd_wscale, not payload and not flags & TCPHDR_FIN)
        if payload:
            self._data(seq, payload)
        if flags & TCPHDR_FIN:
            self._fin(seq + len(payload))
        elif payload and self.rcv_unacked and self.state != CLOSED:
            self._delack()

    def _syn_sent(self, seq32: int, ack32: int, flags: int, window: int, options: bytes) -> None:
        if flags & (TCPHDR_SYN | TCPHDR_ACK) != TCPHDR_SYN | TCPHDR_ACK or unwrap(ack32, self.iss) != self.iss + 1:
            return
        self._peer_options(options)
        self.irs = seq32
        self.rcv_nxt = seq32 + 1
        self._sampled(self.iss + 1)
        self.snd_una = self.iss + 1
        self.snd_wnd = window                   # RFC 7323 §2.2: a SYN's window is not scaled
        self._established()
        self.send_ack()

    def _peer_options(self, options: bytes) -> None:
        """MSS and window scale from the peer's SYN; without a scale option neither side scales (RFC 7323 §2.2)."""
        found = _options(options)
        mss = found.get(TCPOPT_MSS)
        self.snd_mss = min(self.mss, int.from_bytes(mss, "big")) if mss and len(mss) == 2 else TCP_MSS_DEFAULT
        self.snd_mss = max(self.snd_mss, TCP_MIN_MSS)
        self.sack_ok = self.stack.tcp_sack and TCPOPT_SACK_PERM in found
        wscale = found.get(TCPOPT_WINDOW)
        if wscale and len(wscale) == 1:
            self.snd_wscale = min(wscale[0], TCP_MAX_WSCALE)
        else:
            self.snd_wscale = self.rcv_wscale = 0

    def _established(self) -> None:
        self.state = ESTABLISHED
        self.cwnd = TCP_INIT_CWND * self.snd_mss
        self.rto_timer.cancel()
        if self.on_connected is not None:
            self.on_connected()

    def _ack(self, ack: int, wnd: int, pure: bool) -> None:
        """RFC 9293 §3.10.7.4 fifth check, RFC 5681 and RFC 6582."""
        if ack > self.snd_max or ack < self.snd_una:
            return
        mss = self.snd_mss
        flight = self.snd_max - self.snd_una
        if ack == self.snd_una:
            if pure and flight and wnd == self.snd_wnd:
                self._dupack(flight)
            self.snd_wnd = wnd
            self.push()
            return
        acked = ack - self.snd_una
        self.sacked.trim(ack)
        sent_at = self.sent_at
        while sent_at and sent_at[0][0] <= ack:
            sent_at.popleft()
        data_acked = min(acked, len(self.sndq))
        del self.sndq[:data_acked]
        fin_acked = self.fin_queued and acked > data_acked
        self.snd_una = ack
        self.snd_wnd = wnd
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        if not self._sampled(ack) and self.srtt:
            self.rto = min(max(self.srtt + 4 * self.rttvar, TCP_RTO_MIN), TCP_RTO_MAX)
        self.dupacks = 0
        if self.in_recovery:
            if ack >= self.recover:             # full ACK: cwnd down to ssthresh (tcp_end_cwnd_reduction)
                self._end_recovery()
                self.cwnd = self.ssthresh
            elif self.sack_ok:
                self._sack_recovery()
            else:                               # partial ACK: the next hole at once, deflate by what was acked
                self._retransmit()
                self.cwnd = max(self.cwnd - acked + mss, mss)
        elif self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + acked, self.ssthresh)       # slow start (RFC 5681 §3.1)
        else:
            self.cwnd_cnt += acked              # congestion avoidance: one segment per window acked
            if self.cwnd_cnt >= self.cwnd:
                self.cwnd_cnt -= self.cwnd
                self.cwnd += mss
        self.rto_timer.cancel()
        if self.snd_max > self.snd_una:
            self._arm_rto()
        if fin_acked:
            self._fin_acked()
        if data_acked and self.on_writable is not None and len(self.sndq) < self.sndbuf:
            on_writable, self.on_writable = self.on_writable, None
            on_writable()
        self._grow_sndbuf()
        self.push()

    def _grow_sndbuf(self) -> None:
        """tcp_sndbuf_expand: room for twice the congestion window, up to tcp_wmem's maximum."""
        want = min(2 * self.cwnd + GSO_MAX_SIZE, TCP_WMEM_MAX)
        if want > self.sndbuf:
            self.sndbuf = want

    def _dupack(self, flight: int) -> None:
        self.dupacks += 1
        mss = self.snd_mss
        if self.in_recovery:
            if self.sack_ok:
                self._sack_recovery()
            else:
                self.cwnd += mss                # RFC 5681 §3.2 step 4: inflate
        elif (self.dupacks == 3 or self.sacked.total >= 3 * mss) and self.snd_una >= self.recover:
            self.ssthresh = max(flight // 2, 2 * mss)           # RFC 5681 equation (4)
            self.recover = self.snd_max
            self.in_recovery = True
            self.rexmit_next = self.snd_una + min(mss, len(self.sndq))
            self._retransmit()
            self.rexmit_seq += 1
            self.rexmit_order[self.snd_una] = (self.rexmit_seq, self.snd_max)
            self.cwnd = self.ssthresh if self.sack_ok else self.ssthresh + 3 * mss

    def _sack_update(self, options: bytes) -> None:
        """The peer's SACK blocks onto the scoreboard; blocks outside what is in flight are ignored."""
        blocks = _options(options).get(TCPOPT_SACK)
        if not blocks:
            return
        una, top = self.snd_una, self.snd_max
        for at in range(0, len(blocks) - TCPOLEN_SACK_PERBLOCK + 1, TCPOLEN_SACK_PERBLOCK):
            left32, right32 = _SACK_BLOCK.unpack_from(blocks, at)
            left, right = unwrap(left32, una), unwrap(right32, una)
            if una < left < right <= top:
                before = self.sacked.total
                self.sacked.add(left, right)
                if self.rexmit_order and self.sacked.total > before:
                    self._lost_retransmits(left, right)

    def _end_recovery(self) -> None:
        self.in_recovery = False
        self.rexmit_order.clear()
        self.relost.clear()

    def _lost_retransmits(self, left: int, right: int) -> None:
        """Data sent after a hole's retransmission reached the peer (SACKed
        now: a later retransmission, or new data above what was sent then):
        the retransmission, still not SACKed, was lost again (RACK's rule by
        send order, RFC 8985; tcp_mark_lost_retrans)."""
        order = self.rexmit_order
        newest = max((n for seq, (n, _) in order.items() if left <= seq < right), default=0)
        sacked, relost = self.sacked, self.relost
        for seq, (n, top) in list(order.items()):
            if (n < newest or right > top) and seq >= self.snd_una and sacked.gap(seq)[0] == seq \
                    and seq not in relost:
                relost.append(seq)
        relost.sort()

    def _pipe(self) -> int:
        """RFC 6675 §4: what is in the network: the data above the highest
        SACK, and the holes below it that were sent again and not yet SACKed."""
        sacked = self.sacked
        high = sacked.items[-1][1] if sacked.items else self.snd_una
        again = max(0, self.rexmit_next - self.snd_una - sacked.below(self.rexmit_next))
        return max(0, self.snd_max - high) + again

    def _sack_recovery(self) -> None:
        """RFC 6675 §5 (NextSeg rule 1): while the pipe is below cwnd, send
        again the next hole below the highest SACKed byte, a segment at a time."""
        sacked, mss = self.sacked, self.snd_mss
        if not sacked.items:
            return
        high = sacked.items[-1][1]
        relost, order = self.relost, self.rexmit_order
        while self._pipe() < self.cwnd:
            again = False
            while relost and not again:
                seq = relost.pop(0)
                again = seq >= self.snd_una and sacked.gap(seq)[0] == seq
            if again:
                next_sacked = sacked.gap(seq)[1]
            else:
                seq, next_sacked = sacked.gap(max(self.rexmit_next, self.snd_una))
                if seq >= high:
                    return
            end = min(seq + mss, next_sacked if next_sacked is not None else high, self.snd_una + len(self.sndq))
            if not self._retransmit_range(seq, end):
                if again:
                    relost.insert(0, seq)
                return                          # the qdisc is full: on with the next ACK
            self.rexmit_seq += 1
            order[seq] = (self.rexmit_seq, self.snd_max)
            if not again:
                self.rexmit_next = end

    def _data(self, seq: int, payload: bytes) -> None:
        """In order: to the reader, then what the out-of-order queue now continues; ahead: held."""
        end = seq + len(payload)
        if end <= self.rcv_nxt:
            self.send_ack()                     # a duplicate: tell the sender where we are (RFC 9293 §3.10.7.4)
            return
        if seq > self.rcv_nxt:
            if end - self.rcv_nxt > self.rcvbuf or self.fin_received:
                self.send_ack()                 # beyond the window
                return
            self.ooo_last = self.ooo.add(seq, end, payload)
            self.quickacks = TCP_MAX_QUICKACKS  # tcp_data_queue_ofo: tcp_enter_quickack_mode
            self.send_ack()                     # a duplicate ACK at once (RFC 5681 §4.2)
            return
        data = payload[self.rcv_nxt - seq:]
        self.rcv_nxt = end
        filled = bool(self.ooo.items)
        for start, stop, held in self.ooo.pop_from(self.rcv_nxt):
            if stop > self.rcv_nxt:
                data += held[self.rcv_nxt - start:]
                self.rcv_nxt = stop
        self.rcv_unacked += len(data)
        self.stack.cpu.charge("copy", nbytes=len(data))
        self._rcv_space(len(data))
        if filled:
            self.send_ack()                     # a hole filled: ACK at once (RFC 5681 §4.2)
        if self.on_data is not None:
            self.on_data(data)
        if self.fin_seq == self.rcv_nxt:
            self._fin(self.fin_seq)

    def _rcv_space(self, copied: int) -> None:
        """tcp_rcv_space_adjust, simplified: the reader takes data as it comes,
        so each time it has read half the buffer the buffer doubles, up to
        tcp_rmem's maximum, as Linux's autotuning grows it for a bulk flow."""
        self.rcv_copied += copied
        if self.rcv_copied >= self.rcvbuf // 2 and self.rcvbuf < TCP_RMEM_MAX:
            self.rcv_copied = 0
            self.rcvbuf = min(2 * self.rcvbuf, TCP_RMEM_MAX)

    def _fin(self, seq: int) -> None:
        if seq != self.rcv_nxt or self.fin_received:
            if not self.fin_received and seq > self.rcv_nxt:
                self.fin_seq = seq              # it takes effect once the data before it is in
            self.send_ack()
            return
        self.fin_received = True
        self.rcv_nxt += 1
        self.send_ack()
        if self.state == ESTABLISHED:
            self.state = CLOSE_WAIT
        elif self.state == FIN_WAIT1:
            self.state = CLOSING
        elif self.state == FIN_WAIT2:
            self.state = TIME_WAIT
        if self.on_closed is not None:
            self.on_closed()

    def _fin_acked(self) -> None:
        self.rto_timer.cancel()
        if self.state == FIN_WAIT1:
            self.state = FIN_WAIT2
        elif self.state == CLOSING:
            self.state = TIME_WAIT              # 2MSL outlasts any run: the connection stays there
        elif self.state == LAST_ACK:
            self._closed()

    def _closed(self) -> None:
        self.state = CLOSED
        self.rto_timer.cancel()
        self.delack_timer.cancel()
        self.stack.tcp_socks.pop((self.lport, self.daddr, self.dport), None)


class TcpListener:
    """A listening port: ``on_accept(sock)`` gets each connection once its handshake completes."""

    def __init__(self, stack, port: int, on_accept: Callable[[TcpSock], Any], nodelay: bool,
                 counters: Any) -> None:
        self.stack, self.port, self.on_accept = stack, port, on_accept
        self.nodelay, self.counters = nodelay, counters

    def syn(self, saddr: int, sport: int, seq32: int, window: int, options: bytes) -> TcpSock:
        """A passive open (RFC 9293 §3.10.7.2): the SYN-ACK goes out."""
        sock = TcpSock(self.stack, self.port, saddr, sport, iss_for(self.stack.addr, self.port, saddr, sport),
                       self.nodelay, self.counters)
        sock._peer_options(options)
        sock.irs = seq32
        sock.rcv_nxt = seq32 + 1
        sock.snd_wnd = window
        sock.snd_nxt = sock.snd_max = sock.iss + 1
        sock.state = SYN_RECV
        accept = self.on_accept
        sock.on_connected = lambda: accept(sock)
        self.stack.tcp_socks[(self.port, saddr, sport)] = sock
        sock._send_syn(TCPHDR_SYN | TCPHDR_ACK)
        return sock


def iss_for(saddr: int, sport: int, daddr: int, dport: int) -> int:
    """An initial sequence number from the connection's addresses and ports
    (RFC 6528's function of the 4-tuple, with a fixed secret: runs repeat on any interpreter)."""
    return ((saddr ^ daddr * 0x9E3779B1) + (sport << 16 | dport) * 0x85EBCA6B) % SEQ_MOD
