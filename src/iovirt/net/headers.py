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
from iovirt.spec.inet import csum_fold, csum_partial, csum_reduced, pseudo_header_sum  # noqa: F401

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

# --- Internet checksum (RFC 1071; the sums are spec.inet's) -----------------

CHECK16 = struct.Struct(">H")  # the IPv4, ICMP, UDP and TCP checksum fields

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
