"""The Internet checksum (RFC 1071), as the IPv4 stack and every NIC's
checksum engine compute it.

A sum here is any integer congruent modulo 0xFFFF to the 16-bit big-endian
word sum of the bytes (an odd tail padded with a zero byte), and zero only
when every byte is: 2**16 ≡ 1, so the integer the bytes spell is one
(RFC 1071 §2(C), (D)), and so is 256 times the little-endian word sum
(§2(B): byte order is a rotation by 8 bits).  CPython sums a packet fastest
as one big integer; PyPy as an array of machine words.  Both give the same
checksum to the bit."""

from __future__ import annotations

import sys
from array import array


def _big_integer_sum(data: bytes | bytearray) -> int:
    n = int.from_bytes(data, "big")
    return n << 8 if len(data) & 1 else n


_WORD_SHIFT = 8 if sys.byteorder == "little" else 0     # native words are big-endian ones rotated by 8 bits
assert array("I").itemsize == 4


def _word_array_sum(data: bytes | bytearray) -> int:
    """Native 32-bit words: each is congruent to the sum of its two 16-bit halves (2**16 ≡ 1)."""
    if len(data) & 3:
        data = bytes(data) + bytes(-len(data) & 3)
    total = 0
    for word in array("I", data):       # NOTE: not builtin sum(): PyPy's is one loop for every iterable summed anywhere
        total += word
    return total << _WORD_SHIFT


_PYPY = sys.implementation.name == "pypy"
csum_partial = _word_array_sum if _PYPY else _big_integer_sum
csum_partial.__doc__ = """The sum of ``data`` (see the module); totals of pieces that start at even offsets add."""

_SUMS: dict[bytes, int] = {}
_SUMS_MAX = 4096
_HEAD = 64      # even, so that the sums of the head and of the rest add


def _reduced(data: bytes | bytearray) -> int:
    n = csum_partial(data)
    return n % 0xFFFF or (0xFFFF if n else 0)


def _remembered(data: bytes | bytearray) -> int:
    if len(data) <= _HEAD:
        return _reduced(data)
    rest = bytes(data[_HEAD:])                  # a key, whatever buffer it came in
    total = _SUMS.get(rest)
    if total is None:
        total = _reduced(rest)
        if len(_SUMS) >= _SUMS_MAX:
            _SUMS.clear()
        _SUMS[rest] = total
    n = csum_partial(data[:_HEAD]) + total
    return n % 0xFFFF or (0xFFFF if n else 0)


csum_reduced = _reduced if _PYPY else _remembered
csum_reduced.__doc__ = """``csum_partial(data)`` reduced modulo 0xFFFF, nonzero unless every byte is:
interchangeable with it in any total given to :func:`csum_fold`.  On CPython the sum past the first
64 bytes of recent data is remembered (a datagram's payload is summed by its sender and again, byte
for byte the same, by its receiver, and a stream's payloads repeat after their own headers); on PyPy
summing is quicker than looking up."""


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
