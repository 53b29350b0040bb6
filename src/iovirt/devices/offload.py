"""A NIC's checksum and TCP segmentation engine: what it does to a packet
its driver handed it, at the offsets the driver's descriptors give (the
82599's advanced context, the 8254x's TCP/IP context, virtio's csum_start).

The Internet checksum (RFC 1071) is summed over a range with the checksum
field as the driver left it (the pseudo-header's sum it seeded there, or
zero) and its complement stored in the field.  A TSO packet is one set of
headers and up to 256 KB of payload; each segment gets the headers with the
IPv4 total length and checksum, an IP ID one more than the last, the TCP
sequence number advanced by the payload before it, the flags its place
allows, and the TCP checksum over its own bytes and length (the driver
seeded the field with the pseudo-header's sum without the length)."""

from __future__ import annotations

from ..spec.inet import csum_partial, csum_reduced, pseudo_header_sum

TCP_MIN_MSS = 88                # include/net/tcp.h: no TCP sender cuts smaller segments
GSO_MAX_SIZE = 65536            # GSO_LEGACY_MAX_SIZE: the largest packet a stack hands a device whole
TCP_CHECK = 16                  # the TCP checksum's offset in its header (RFC 9293 §3.1)


def is_tcpv4(frame: bytes) -> bool:
    """An Ethernet II frame with a whole IPv4 header and a whole TCP header (data offset 5 or more) behind it."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4 or frame[14] & 0xF < 5 \
            or frame[23] != 6:
        return False
    l4 = 14 + (frame[14] & 0xF) * 4
    return l4 + 20 <= len(frame) and 20 <= (frame[l4 + 12] >> 4) * 4 <= len(frame) - l4


def store_checksum(packet: bytearray, start: int, end: int, at: int, add: int = 0) -> None:
    """The complement of the one's complement sum of ``packet[start:end]``
    (plus ``add``) into the 16-bit field at ``at``; never 0 (0 is 0xFFFF)."""
    packet[at:at + 2] = (0xFFFF - (csum_partial(packet[start:end]) + add) % 0xFFFF).to_bytes(2, "big")


def complete_checksum(frame: bytes, start: int, at: int) -> bytes:
    """The frame with the checksum from ``start`` to its end stored at ``at``
    (CHECKSUM_PARTIAL's csum_start and the field); as it was if either is
    past its end."""
    if at + 2 > len(frame) or start >= len(frame):
        return frame
    packet = bytearray(frame)
    store_checksum(packet, start, len(packet), at)
    return bytes(packet)


def tso_segments(packet: bytes, hdrlen: int, mss: int, ipcss: int, ipcso: int | None, ipcse: int,
                 tucss: int, tucso: int | None, flags: tuple[int, int, int]) -> list[bytes]:
    """The frames a TSO ``packet`` is cut into: ``hdrlen`` bytes of headers
    (IPv4 at ``ipcss``, TCP at ``tucss``) and payload in ``mss`` pieces; the
    IPv4 checksum from ``ipcss`` to ``ipcse`` stored at ``ipcso`` and the
    TCP checksum stored at ``tucso`` where they are not None; ``flags``: the
    masks of the TCP flags kept in the first, middle and last segment (a
    packet of one segment keeps them all).  The caller has checked that the
    headers are inside the packet and ``mss`` is not 0."""
    head = bytearray(packet[:hdrlen])
    ip_id = int.from_bytes(head[ipcss + 4:ipcss + 6], "big")
    seq = int.from_bytes(head[tucss + 4:tucss + 8], "big")
    tcp_flags = head[tucss + 13]
    total = len(packet) - hdrlen
    first, middle, last = flags
    frames = []
    for n, at in enumerate(range(0, total, mss)):
        end = at + mss >= total
        mask = 0xFF if n == 0 and end else last if end else first if n == 0 else middle
        segment = bytearray(head)
        segment += packet[hdrlen + at:hdrlen + at + mss]
        segment[ipcss + 2:ipcss + 4] = (len(segment) - ipcss).to_bytes(2, "big")
        segment[ipcss + 4:ipcss + 6] = ((ip_id + n) & 0xFFFF).to_bytes(2, "big")
        segment[tucss + 4:tucss + 8] = ((seq + at) & 0xFFFFFFFF).to_bytes(4, "big")
        segment[tucss + 13] = tcp_flags & mask
        if ipcso is not None:
            store_checksum(segment, ipcss, ipcse, ipcso)
        if tucso is not None:
            store_checksum(segment, tucss, len(segment), tucso, len(segment) - tucss)
        frames.append(bytes(segment))
    return frames


def _sums_to_zero(data: bytes, add: int = 0) -> bool:
    """Whether ``data`` with its checksum field (plus ``add``) sums to -0."""
    return (csum_reduced(data) + add) % 0xFFFF == 0


def rx_checksums(frame: bytes) -> tuple[bool, bool, bool, bool]:
    """What a receiver's checksum engine reports of an Ethernet II frame:
    (the IPv4 header checksum was checked, it is good, the TCP/UDP checksum
    was checked, it is good).  Fragments, other protocols and UDP without a
    checksum (0) leave the L4 one unchecked."""
    if len(frame) < 34 or frame[12] != 0x08 or frame[13] or frame[14] >> 4 != 4:
        return False, False, False, False
    ihl = (frame[14] & 0xF) * 4
    tot_len = frame[16] << 8 | frame[17]
    if ihl < 20 or not ihl <= tot_len <= len(frame) - 14:
        return False, False, False, False
    ip_ok = _sums_to_zero(frame[14:14 + ihl])
    protocol = frame[23]
    l4, seg_len = 14 + ihl, tot_len - ihl
    if (frame[20] & 0x3F or frame[21] or protocol not in (6, 17)
            or seg_len < (20 if protocol == 6 else 8) or protocol == 17 and not frame[l4 + 6] | frame[l4 + 7]):
        return True, ip_ok, False, False
    pseudo = pseudo_header_sum(int.from_bytes(frame[26:30], "big"), int.from_bytes(frame[30:34], "big"), protocol,
                               seg_len)
    return True, ip_ok, True, _sums_to_zero(frame[l4:14 + tot_len], pseudo)
