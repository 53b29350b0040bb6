"""Reading a 93C46 serial EEPROM bit by bit through the register a NIC wires
its pins to (RTL8139 9346CR, Tulip CSR9), the way Linux's 8139too and tulip
drivers do (``read_eeprom`` / ``tulip_read_eeprom``): chip select, a start
bit, the READ opcode and a 6-bit address shifted in MSB first, then 16 data
bits clocked out (NM93C46 datasheet, READ instruction)."""

from __future__ import annotations

from dataclasses import dataclass

from .nic import Nic

READ_CMD = 0b110            # start bit, READ opcode
ADDR_BITS = 6
WORD_BITS = 16


@dataclass(frozen=True)
class EepromPins:
    """Where the pins sit in the register: ``enable`` is the mode bits that
    hand the pins to software (CS included), ``idle`` what the driver leaves
    there after a read, ``width`` the access size."""

    offset: int
    width: int
    enable: int
    idle: int
    cs: int
    sk: int
    di: int
    do: int


def read_word(nic: Nic, pins: EepromPins, word: int) -> int:
    def put(value: int) -> None:
        nic.write(pins.offset, value, pins.width)

    command = word | READ_CMD << ADDR_BITS
    put(pins.enable & ~pins.cs)
    put(pins.enable)
    for bit in range(ADDR_BITS + 4, -1, -1):
        di = pins.di if command >> bit & 1 else 0
        put(pins.enable | di)
        put(pins.enable | di | pins.sk)
    put(pins.enable)
    value = 0
    for _ in range(WORD_BITS):
        put(pins.enable | pins.sk)
        value = value << 1 | bool(nic.read(pins.offset, pins.width) & pins.do)
        put(pins.enable)
    put(pins.idle)
    return value
