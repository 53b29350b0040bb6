"""Wire formats of Ethernet II, ARP, IPv4, ICMP echo, UDP and TCP, and the
Internet checksum.  Field names follow Linux (``<linux/if_ether.h>``,
``<linux/ip.h>``, ``<linux/icmp.h>``, ``<linux/udp.h>``, ``<linux/tcp.h>``,
``<linux/if_arp.h>``).

``Layout`` fields are 1, 2, 4 or 8 bytes wide, so the 6-byte hardware addresses
are gaps in the tables, named by the slices beside them.
"""

from __future__ import annotations

import struct

from iovirt.spec.ethernet import ETH_ALEN, ETH_HLEN
from iovirt.spec.fields import Layout

# --- Ethernet II (RFC 894) ---------------------------------------------------

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_BROADCAST = b"\xff" * ETH_ALEN

ETHHDR = Layout("ethhdr", ETH_HLEN, [("h_proto", 12, 2)], order=">")
H_DEST = slice(0, 6)
H_SOURCE = slice(6, 12)
H_PROTO = ETHHDR.field_struct("h_proto")

# --- ARP for IPv4 over Ethernet (RFC 826) ------------------------------------

ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2

ARPHDR = Layout(
    "arphdr",
    28,
    [("ar_hrd", 0, 2), ("ar_pro", 2, 2), ("ar_hln", 4, 1), ("ar_pln", 5, 1),
     ("ar_op", 6, 2), ("ar_spa", 14, 4), ("ar_tpa", 24, 4)],
    order=">",
)
AR_SHA = slice(8, 14)
AR_THA = slice(18, 24)

# --- IPv4 (RFC 791 §3.1) -----------------------------------------------------

IPVERSION = 4
IPDEFTTL = 64
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET = 0x1FFF
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

IPHDR = Layout(
    "iphdr",
    20,
    [("version_ihl", 0, 1), ("tos", 1, 1), ("tot_len", 2, 2), ("id", 4, 2),
     ("frag_off", 6, 2), ("ttl", 8, 1), ("protocol", 9, 1), ("check", 10, 2),
     ("saddr", 12, 4), ("daddr", 16, 4)],
    order=">",
)
IP_CHECK = IPHDR.offset("check")

# --- ICMP echo (RFC 792) -----------------------------------------------------

ICMP_ECHOREPLY = 0
ICMP_ECHO = 8

ICMPHDR = Layout(
    "icmphdr",
    8,
    [("type", 0, 1), ("code", 1, 1), ("checksum", 2, 2), ("id", 4, 2), ("sequence", 6, 2)],
    order=">",
)
ICMP_CHECKSUM = ICMPHDR.offset("checksum")

# --- UDP (RFC 768) -----------------------------------------------------------

UDPHDR = Layout("udphdr", 8, [("source", 0, 2), ("dest", 2, 2), ("len", 4, 2), ("check", 6, 2)], order=">")
UDP_CHECK = UDPHDR.offset("check")

# --- TCP (RFC 9293 §3.1) ----------------------------------------------------

# doff_flags: data offset (32-bit words) in the top 4 bits, the flags in the low 8
TCPHDR = Layout(
    "tcphdr",
    20,
    [("source", 0, 2), ("dest", 2, 2), ("seq", 4, 4), ("ack_seq", 8, 4), ("doff_flags", 12, 2),
     ("window", 14, 2), ("check", 16, 2), ("urg_ptr", 18, 2)],
    order=">",
)
TCP_CHECK = TCPHDR.offset("check")
TCPHDR_FIN, TCPHDR_SYN, TCPHDR_RST, TCPHDR_PSH, TCPHDR_ACK, TCPHDR_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
TCPOPT_EOL, TCPOPT_NOP, TCPOPT_MSS, TCPOPT_WINDOW = 0, 1, 2, 3      # RFC 9293 §3.2, RFC 7323 §2.2
TCPOPT_SACK_PERM, TCPOPT_SACK = 4, 5                                 # RFC 2018 §2, §3
TCPOLEN_MSS, TCPOLEN_WINDOW, TCPOLEN_SACK_PERM, TCPOLEN_SACK_PERBLOCK = 4, 3, 2, 8
TCP_MAX_SACK = 4        # blocks in the 40 bytes of options, with two NOPs to align them

# --- Internet checksum (RFC 1071) --------------------------------------------

CHECK16 = struct.Struct(">H")  # the IPv4, ICMP, UDP and TCP checksum fields


def csum_partial(data: bytes) -> int:
    """The 16-bit big-endian word sum of ``data``, carries deferred (RFC 1071
    §2(C), (D)): the integer the bytes spell is congruent to that sum modulo
    0xFFFF because 2**16 ≡ 1.  An odd tail is padded with a zero byte.  Totals
    of pieces that start at even offsets add."""
    n = int.from_bytes(data, "big")
    return n << 8 if len(data) & 1 else n


_SUMS: dict[bytes, int] = {}
_SUMS_MAX = 4096
_HEAD = 64      # even, so that the sums of the head and of the rest add


def csum_reduced(data: bytes | bytearray) -> int:
    """``csum_partial(data)`` reduced modulo 0xFFFF, nonzero unless every byte
    is: interchangeable with it in any total given to :func:`csum_fold`.

    Past its first 64 bytes the sum of recent data is remembered: a
    datagram's payload is summed by its sender and again, byte for byte the
    same, by its receiver, and a stream's payloads repeat after their own
    headers."""
    if len(data) > _HEAD:
        rest = bytes(data[_HEAD:])                  # a key, whatever buffer it came in
        total = _SUMS.get(rest)
        if total is None:
            n = int.from_bytes(rest, "big")
            total = (n << 8 if len(rest) & 1 else n) % 0xFFFF or (0xFFFF if n else 0)
            if len(_SUMS) >= _SUMS_MAX:
                _SUMS.clear()
            _SUMS[rest] = total
        n = int.from_bytes(data[:_HEAD], "big") + total
    else:
        n = int.from_bytes(data, "big")
        if len(data) & 1:
            n <<= 8
    return n % 0xFFFF or (0xFFFF if n else 0)


def csum_fold(total: int) -> int:
    """The checksum field for a ``csum_partial`` total: the one's complement of
    its one's complement sum.  A sum of words that are not all zero is never +0
    but -0 (0xFFFF), so a correct message folds to 0."""
    ones = total % 0xFFFF
    if ones == 0 and total:
        ones = 0xFFFF
    return 0xFFFF - ones


def pseudo_header_sum(saddr: int, daddr: int, protocol: int, length: int) -> int:
    """``csum_partial`` of the UDP or TCP pseudo-header (RFC 768, RFC 9293 §3.1): each 32-bit address
    is congruent to the sum of its two 16-bit words."""
    return saddr + daddr + protocol + length


_ETH_P_IP_BYTES = ETH_P_IP.to_bytes(2, "big")


def l4_offset(frame: bytes) -> int:
    """Where an IPv4 frame's transport header starts (after its IHL)."""
    return ETH_HLEN + (frame[ETH_HLEN] & 0xF) * 4


def udp_dport(frame: bytes) -> int:
    """The destination port of a UDP/IPv4 frame, -1 for any other frame."""
    if frame[12:14] != _ETH_P_IP_BYTES or len(frame) < 34 or frame[23] != IPPROTO_UDP:
        return -1
    l4 = l4_offset(frame)
    return int.from_bytes(frame[l4 + 2:l4 + 4], "big")
