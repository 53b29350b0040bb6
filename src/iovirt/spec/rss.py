"""Receive-side scaling's hash as Microsoft specifies it for every NDIS
miniport ("Verifying the RSS Hash Calculation", RSS hashing functions) and
NICs implement it (82599 datasheet 7.1.2.8.1): the Toeplitz hash of the
IPv4 addresses, and the TCP/UDP ports where the hash type includes them,
under a 40-byte secret key."""

from __future__ import annotations

# Microsoft's RSS verification key (also Linux's default before netdev_rss_key_fill)
RSS_DEFAULT_KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c"
                                "6a42b73bbeac01fa")
RSS_KEY_SIZE = 40
IPV4_L4_INPUT = 12                  # source and destination address, source and destination port


def toeplitz_tables(key: bytes, length: int) -> list[tuple[int, ...]]:
    """For each input byte position, the hash contribution of each of its
    256 values (XOR of the 32-bit key windows under its set bits), so a hash
    is one lookup per input byte."""
    k = int.from_bytes(key, "big")
    bits = len(key) * 8
    tables = []
    for pos in range(length):
        windows = [(k >> (bits - 32 - (pos * 8 + b))) & 0xFFFFFFFF for b in range(8)]   # MSB first
        table = [0] * 256
        for value in range(1, 256):
            low = value & -value
            table[value] = table[value ^ low] ^ windows[7 - (low.bit_length() - 1)]
        tables.append(tuple(table))
    return tables


def toeplitz(tables: list[tuple[int, ...]], data: bytes) -> int:
    h = 0
    for table, byte in zip(tables, data):
        h ^= table[byte]
    return h
