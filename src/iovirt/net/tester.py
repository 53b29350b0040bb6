"""The far end's traffic tester: how a one-way stream is taken at the far
end of the wire.  An XDP program on the far end's NIC redirects the stream's
datagrams to an AF_XDP socket (XDP_REDIRECT into an XSKMAP), which the
tester reads as software testers such as TRex and MoonGen do: one descriptor
from the socket's RX ring each, no kernel stack; the rest pass to the stack
(XDP_PASS).  A datagram's one-way latency ends at its NIC receive timestamp
(RFC 2544 26.2: the tester's hardware timestamp), not after the far end's
interrupt moderation and polling, which are not the system measured."""

from __future__ import annotations

from ipaddress import IPv4Address

from .headers import l4_offset, udp_dport


class TesterSink:
    """The XDP program (``__call__``, run by the driver's RX poll) and the
    tester behind it, for the UDP ports in ``ports`` of ``stack``'s host."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.ports: set[int] = set()
        self._stamps: dict[bytes, float] = {}      # a datagram's head -> its NIC receive timestamp
        self.rx_stamp: float | None = None           # the timestamp of the datagram being handed over

    def stamp(self, frame: bytes, now: float) -> None:
        """The NIC timestamps a frame of the stream as its last bit arrives."""
        if udp_dport(frame) in self.ports:
            self._stamps[_head(frame)] = now

    def __call__(self, frame: bytes) -> bool:
        port = udp_dport(frame)
        if port not in self.ports:
            return False                                            # XDP_PASS
        stack = self.stack
        stack.cpu.charge("ring_op")                                 # the tester reads the XSK RX descriptor
        l4 = l4_offset(frame)
        end = 14 + int.from_bytes(frame[16:18], "big")
        self.rx_stamp = self._stamps.pop(_head(frame), stack.cpu.cursor)
        try:
            stack.udp_sockets[port].on_datagram(frame[l4 + 8:end], IPv4Address(frame[26:30]),
                                                int.from_bytes(frame[l4:l4 + 2], "big"))
        finally:
            self.rx_stamp = None
        return True


def _head(frame: bytes) -> bytes:
    """What tells one datagram of a stream from the others: its addresses, ports and first 16 bytes of payload."""
    l4 = l4_offset(frame)
    return frame[26:34] + frame[l4:l4 + 4] + frame[l4 + 8:l4 + 24]
