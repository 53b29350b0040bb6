"""A TCP/IPv4 packet larger than the MTU and what the kernel keeps beside it
(``skb_shinfo``: gso_size, gso_segs; CHECKSUM_PARTIAL's csum_start and
csum_offset), and its segmentation into MTU-sized frames as Linux's software
GSO does it (net/ipv4/tcp_offload.c tcp_gso_segment, af_inet.c
inet_gso_segment): each segment gets its own IPv4 total length, ID and
header checksum, TCP sequence number and checksum; FIN and PSH stay on the
last segment only, CWR on the first only.

The packet is the frame's bytes, so anything that forwards frames (a tap, a
bridge, a queue) carries it as one unit; what has to know it is one (a NIC
without TSO, a guest without GUEST_TSO4) segments it.

GRO (:class:`Gro`) is the way back: the segments of a flow a NAPI poll
receives merged into one packet, as a guest's stack and the host's uplink
driver take them."""

from __future__ import annotations

from typing import Any, Callable

from .headers import (
    CHECK16, ETH_HLEN, H_PROTO, IP_CHECK, IPHDR, IPPROTO_TCP, TCP_CHECK, TCPHDR, TCPHDR_ACK, TCPHDR_FIN,
    TCPHDR_PSH, csum_fold, csum_partial, csum_reduced, l4_offset, pseudo_header_sum,
)
from .tcp import GSO_MAX_SIZE

TCPHDR_CWR = 0x80
MAX_GRO_SKBS = 8        # net/core/gro.c: flows GRO holds at once
_IP_HLEN, _TCP_HLEN = IPHDR.size, TCPHDR.size
_L4 = ETH_HLEN + _IP_HLEN                   # GRO takes IPv4 headers without options only
_GRO_HLEN = _L4 + _TCP_HLEN
_H_PROTO_IP = H_PROTO.pack(0x0800)


class GsoFrame(bytes):
    """A TCP/IPv4 frame of more than one segment: ``gso_size`` bytes of payload a segment."""

    gso_size: int
    gso_segs: int

    @classmethod
    def of(cls, frame: bytes, gso_size: int) -> "GsoFrame":
        packet = cls(frame)
        payload = len(frame) - headers_len(frame)
        packet.gso_size = gso_size
        packet.gso_segs = -(-payload // gso_size)
        return packet


class ValidatedFrame(bytes):
    """A frame whose TCP or UDP checksum a NIC validated (skb->ip_summed
    CHECKSUM_UNNECESSARY), as the bridge and a tap carry it to the devices
    that can tell their guests (VIRTIO_NET_HDR_F_DATA_VALID, Xen's
    NETRXF_data_validated)."""

    csum_valid = True


class PartialFrame(bytes):
    """A segment software GSO cut for a port whose device sums TCP itself
    (NETIF_F_HW_CSUM: a tap with TUN_F_CSUM), its checksum left partial
    (CHECKSUM_PARTIAL), as the tap's vnet header then says (NEEDS_CSUM)."""

    csum_partial = True


def headers_len(frame: bytes) -> int:
    """Ethernet, IPv4 and TCP headers of a TCP/IPv4 frame."""
    l4 = l4_offset(frame)
    return l4 + (frame[l4 + 12] >> 4) * 4


def segment(packet: GsoFrame, partial: bool = False) -> list[bytes]:
    """The MTU-sized frames ``packet`` stands for, TCP checksums complete, or
    with ``partial`` seeded with the pseudo-header's sum for a device that
    completes them (CHECKSUM_PARTIAL)."""
    ihl = (packet[ETH_HLEN] & 0xF) * 4
    l4 = ETH_HLEN + ihl
    hlen = headers_len(packet)
    head, size = packet[:hlen], packet.gso_size
    seq = int.from_bytes(head[l4 + 4:l4 + 8], "big")
    ip_id = int.from_bytes(head[ETH_HLEN + 4:ETH_HLEN + 6], "big")
    flags = head[l4 + 13]
    saddr, daddr = int.from_bytes(head[ETH_HLEN + 12:ETH_HLEN + 16], "big"), int.from_bytes(
        head[ETH_HLEN + 16:ETH_HLEN + 20], "big")
    frames = []
    total = len(packet) - hlen
    for n, at in enumerate(range(0, total, size)):
        piece = packet[hlen + at:hlen + at + size]
        last = at + size >= total
        seg_flags = flags & ~((0 if last else TCPHDR_FIN | TCPHDR_PSH) | (TCPHDR_CWR if n else 0))
        iph = bytearray(head[ETH_HLEN:l4])
        iph[2:4] = (ihl + hlen - l4 + len(piece)).to_bytes(2, "big")
        iph[4:6] = ((ip_id + n) & 0xFFFF).to_bytes(2, "big")
        iph[IP_CHECK:IP_CHECK + 2] = b"\0\0"
        CHECK16.pack_into(iph, IP_CHECK, csum_fold(csum_partial(iph)))
        tcph = bytearray(head[l4:hlen])
        tcph[4:8] = ((seq + at) & 0xFFFFFFFF).to_bytes(4, "big")
        tcph[13] = seg_flags
        tcph[TCP_CHECK:TCP_CHECK + 2] = b"\0\0"
        pseudo = pseudo_header_sum(saddr, daddr, IPPROTO_TCP, len(tcph) + len(piece))
        CHECK16.pack_into(tcph, TCP_CHECK, 0xFFFF - csum_fold(pseudo) if partial else
                          csum_fold(pseudo + csum_partial(tcph) + csum_reduced(piece)))
        frames.append(b"".join((head[:ETH_HLEN], iph, tcph, piece)))
    return frames


def partial_check(packet: bytearray) -> None:
    """Seed a TCP/IPv4 packet's checksum with its pseudo-header's sum
    (CHECKSUM_PARTIAL, tcp_v4_check), for whoever completes it."""
    l4 = l4_offset(packet)
    saddr, daddr = int.from_bytes(packet[l4 - 8:l4 - 4], "big"), int.from_bytes(packet[l4 - 4:l4], "big")
    CHECK16.pack_into(packet, l4 + TCP_CHECK,
                      0xFFFF - csum_fold(pseudo_header_sum(saddr, daddr, IPPROTO_TCP, len(packet) - l4)))


class Gro:
    """napi_gro_receive for TCP/IPv4 (net/core/gro.c dev_gro_receive,
    net/ipv4/tcp_offload.c tcp_gro_receive): a plain data segment (ACK, PSH
    at most) that continues exactly the packet its flow holds, with the same
    ACK and options and no more payload than the first, is merged onto it.
    A held packet goes up (``complete(head, payload, segs, mss)``: the first
    segment's Ethernet, IPv4 and TCP headers, the last one's window and
    flags) on PSH or a short segment, when a segment does not continue it,
    when it would pass 64 KB, when MAX_GRO_SKBS flows are held, and at the
    end of the NAPI poll (napi_gro_flush, deferred with ``sched.run_soon``).
    ``gro_receive`` is charged per segment taken, ``csum`` per byte when the
    NIC did not validate it (skb_gro_checksum_validate), to the ``cpu``
    running the poll."""

    def __init__(self, sched: Any, complete: Callable[[bytes, bytes, int, int], None]) -> None:
        self.sched, self.complete = sched, complete
        self.held: dict[bytes, list] = {}
        self.flush_due = False

    def receive(self, frame: bytes, valid: bool, cpu: Any) -> bool:
        """Take ``frame`` on ``cpu``; False if GRO does not (the caller hands
        it up after ``flush()``, so frames stay in order)."""
        if (len(frame) < _GRO_HLEN or frame[12:14] != _H_PROTO_IP or frame[14] != 0x45 or frame[20] & 0x3F
                or frame[21] or type(frame) is GsoFrame):
            return False
        tot_len = int.from_bytes(frame[16:18], "big")
        if not _IP_HLEN + _TCP_HLEN <= tot_len <= len(frame) - ETH_HLEN:
            return False
        seg = frame[_L4:ETH_HLEN + tot_len]
        doff = (seg[12] >> 4) * 4
        flags = seg[13]
        if (flags & ~TCPHDR_PSH != TCPHDR_ACK or not _TCP_HLEN <= doff < len(seg)
                or csum_fold(csum_reduced(frame[ETH_HLEN:_L4]))):
            return False
        cpu.charge("gro_receive")
        if not valid:
            cpu.charge("csum", nbytes=len(seg))
            if csum_fold(pseudo_header_sum(int.from_bytes(frame[26:30], "big"), int.from_bytes(frame[30:34], "big"),
                                           IPPROTO_TCP, len(seg)) + csum_reduced(seg)):
                return False
        key = frame[:12] + frame[26:38]         # MAC header, addresses and ports (gro_list_prepare)
        payload = seg[doff:]
        seq = int.from_bytes(seg[4:8], "big")
        held = self.held.get(key)
        if held is not None:
            head, pieces, next_seq, mss, size, _ = held
            tcph = head[_L4:]
            if (seq == next_seq and seg[8:12] == tcph[8:12] and seg[20:doff] == tcph[20:]
                    and len(payload) <= mss and size + len(payload) <= GSO_MAX_SIZE - _IP_HLEN - doff):
                pieces.append(payload)
                held[2], held[4] = (seq + len(payload)) % (1 << 32), size + len(payload)
                held[5] = seg[:doff]                # the latest window and flags
                if len(payload) < mss or flags & TCPHDR_PSH:
                    self._complete(key)
                return True
            self._complete(key)
        if len(self.held) >= MAX_GRO_SKBS:
            self._complete(next(iter(self.held)))
        self.held[key] = [frame[:_L4 + doff], [payload], (seq + len(payload)) % (1 << 32), len(payload),
                          len(payload), seg[:doff]]
        if flags & TCPHDR_PSH:
            self._complete(key)
        elif not self.flush_due:
            self.flush_due = True
            self.sched.run_soon(self.flush)     # napi_gro_flush: once this poll is done
        return True

    def _complete(self, key: bytes) -> None:
        head, pieces, _, mss, _, last = self.held.pop(key)
        self.complete(head[:_L4 + 12] + last[12:], pieces[0] if len(pieces) == 1 else b"".join(pieces),
                      len(pieces), mss)

    def flush(self) -> None:
        """Every packet GRO holds goes up."""
        self.flush_due = False
        while self.held:
            self._complete(next(iter(self.held)))


def merged(head: bytes, payload: bytes, segs: int, mss: int) -> GsoFrame:
    """The packet GRO merged as the host forwards it (inet_gro_complete,
    tcp4_gro_complete): its IPv4 total length and checksum for the whole,
    its TCP checksum partial, ``mss`` its gso_size."""
    packet = bytearray(head + payload)
    packet[16:18] = (len(packet) - ETH_HLEN).to_bytes(2, "big")
    packet[ETH_HLEN + IP_CHECK:ETH_HLEN + IP_CHECK + 2] = b"\0\0"
    CHECK16.pack_into(packet, ETH_HLEN + IP_CHECK, csum_fold(csum_partial(packet[ETH_HLEN:_L4])))
    partial_check(packet)
    frame = GsoFrame(packet)
    frame.gso_size, frame.gso_segs = mss, segs
    return frame
