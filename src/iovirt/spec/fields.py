"""Declarative layouts: a record in memory or a register file, written once as
a table of named fields (offset, width) and compiled to a single precompiled
``struct``: little-endian as PCI and the NICs use, or ``order=">"`` for
network headers.

Both device models and guest drivers import these tables; neither side owns
them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Layout:
    """A fixed record, e.g. a 16-byte descriptor.

    ``fields`` is a sequence of ``(name, offset, width)``; gaps become pad
    bytes.  ``unpack_from`` returns values in field order; ``pack_into`` takes
    them in the same order.
    """

    def __init__(self, name: str, size: int, fields: list[tuple[str, int, int]], order: str = "<") -> None:
        self.name = name
        self.size = size
        self.fields = tuple(fields)
        fmt, pos = order, 0
        for fname, off, width in self.fields:
            if off < pos:
                raise ValueError(f"{name}.{fname}: overlaps previous field")
            if width not in _FMT:
                raise ValueError(f"{name}.{fname}: width {width} not 1/2/4/8")
            fmt += "x" * (off - pos) + _FMT[width]
            pos = off + width
        if pos > size:
            raise ValueError(f"{name}: fields end at {pos}, past size {size}")
        fmt += "x" * (size - pos)
        self.struct = struct.Struct(fmt)
        self.unpack_from = self.struct.unpack_from
        self.pack_into = self.struct.pack_into
        self.pack = self.struct.pack
        self.offsets = {f: off for f, off, _ in self.fields}
        self.widths = {f: w for f, _, w in self.fields}
        self.order = order

    def offset(self, field: str) -> int:
        return self.offsets[field]

    def field_struct(self, field: str) -> struct.Struct:
        """A struct for one field alone (for a single-field write-back)."""
        return struct.Struct(self.order + _FMT[self.widths[field]])


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    width: int = 4
    reset: int = 0
    access: str = "rw"  # rw, ro, wo, rc (read clears), w1c (write one to clear), ws (write sets)
    doc: str = ""


class RegisterMap:
    """A register file: registers by offset and by name."""

    def __init__(self, name: str, registers: list[Register]) -> None:
        self.name = name
        self.registers = tuple(registers)
        self.by_offset = {r.offset: r for r in registers}
        self.by_name = {r.name: r for r in registers}
        if len(self.by_offset) != len(registers) or len(self.by_name) != len(registers):
            raise ValueError(f"{name}: duplicate register offset or name")

    def __getitem__(self, name: str) -> Register:
        return self.by_name[name]

    def __iter__(self):
        return iter(self.registers)

    def reset_values(self) -> dict[int, int]:
        return {r.offset: r.reset for r in self.registers}
