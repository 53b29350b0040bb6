"""A TCP/IPv4 packet larger than the MTU and what the kernel keeps beside it
(``skb_shinfo``: gso_size, gso_segs; CHECKSUM_PARTIAL's csum_start and
csum_offset), and its segmentation into MTU-sized frames as Linux's software
GSO does it (net/ipv4/tcp_offload.c tcp_gso_segment, af_inet.c
inet_gso_segment): each segment gets its own IPv4 total length, ID and
header checksum, TCP sequence number and checksum; FIN and PSH stay on the
last segment only, CWR on the first only.

The packet is the frame's bytes, so anything that forwards frames (a tap, a
bridge, a queue) carries it as one unit; what has to know it is one (a NIC
without TSO, a guest without GUEST_TSO4) segments it."""

from __future__ import annotations

from .headers import (
    CHECK16, ETH_HLEN, IP_CHECK, IPPROTO_TCP, TCP_CHECK, TCPHDR_FIN, TCPHDR_PSH, csum_fold, csum_partial,
    csum_reduced, l4_offset, pseudo_header_sum,
)

TCPHDR_CWR = 0x80


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
    """A frame whose TCP checksum a NIC validated (skb->ip_summed
    CHECKSUM_UNNECESSARY), as the bridge and a tap carry it to the devices
    that can tell their guests (VIRTIO_NET_HDR_F_DATA_VALID, Xen's
    NETRXF_data_validated)."""

    csum_valid = True


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
