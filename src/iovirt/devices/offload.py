"""What a device does to a TCP/IPv4 frame its driver left for it to finish:
the checks before it takes a TCP segmentation request, the checksum it
completes from the pseudo-header sum the driver seeded (CHECKSUM_PARTIAL),
and the check of a received segment's sum it reports to the driver."""

from __future__ import annotations

TCP_MIN_MSS = 88                # include/net/tcp.h: no TCP sender cuts smaller segments
GSO_MAX_SIZE = 65536            # GSO_LEGACY_MAX_SIZE: the largest packet a stack hands a device whole


def is_tcpv4(frame: bytes) -> bool:
    """An Ethernet II frame with a whole IPv4 header and a whole TCP header (data offset 5 or more) behind it."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4 or frame[14] & 0xF < 5 \
            or frame[23] != 6:
        return False
    l4 = 14 + (frame[14] & 0xF) * 4
    return l4 + 20 <= len(frame) and 20 <= (frame[l4 + 12] >> 4) * 4 <= len(frame) - l4


def complete_checksum(frame: bytes, start: int, offset: int) -> bytes:
    """The checksum over the frame from ``start``, stored at ``start + offset``
    (the driver seeded it with the pseudo-header sum)."""
    at = start + offset
    if at + 2 > len(frame) or start >= len(frame):
        return frame
    total = int.from_bytes(frame[start:] + b"\0" * (len(frame[start:]) & 1), "big") % 0xFFFF
    csum = (~total & 0xFFFF) or 0xFFFF
    return frame[:at] + csum.to_bytes(2, "big") + frame[at + 2 :]


def _sums_to_all_ones(data: bytes) -> bool:
    """The 16-bit ones' complement sum of ``data`` (RFC 1071) is all ones (the big-endian number modulo
    0xFFFF is that sum with all ones as zero)."""
    return int.from_bytes(data + b"\0" * (len(data) & 1), "big") % 0xFFFF == 0 and any(data)


def csum_ok(header: bytes) -> bool:
    """An IPv4 header whose checksum is right."""
    return _sums_to_all_ones(header)


def tcpv4_checksum_ok(frame: bytes) -> bool:
    """A TCP/IPv4 frame's TCP checksum is right: over the pseudo-header and the segment (RFC 9293 3.1)."""
    l4 = 14 + (frame[14] & 0xF) * 4
    end = 14 + int.from_bytes(frame[16:18], "big")
    if not l4 < end <= len(frame):
        return False
    return _sums_to_all_ones(frame[26:34] + b"\0\x06" + (end - l4).to_bytes(2, "big") + frame[l4:end])
