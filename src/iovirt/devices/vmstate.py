"""Device state for live migration, after QEMU's VMState (migration/vmstate.c).

Each migratable device class declares its state once, as a table::

    VMSTATE = VmState("e1000", 1, (Ints("r", 32), Flag("irq_asserted"), Instant("next_irq_ok"), ...,
                                   Nested("pci", PCI_FUNCTION)), post_load=post_load)

Fields name attributes (dotted paths reach sub-objects) and say how each is
encoded: unsigned ints of a width, int tables, byte strings, flags, choices
from a fixed set, sets of fixed-size byte strings, counters, sim-clock
instants, nested tables.  A field may carry a ``check`` of the decoded value
against the target device (its limits: a ring size, a vector count, the
configuration bits no guest can write) and the values staged before it; a
stream that decodes and passes every check loads without error, and the
device it gives is one the model can reach (QEMU's VMState ``.field_exists``
and ``post_load`` checks, as in virtio_load and get_pci_config_device).
No pickle: the stream holds values only, in
declaration order, little-endian::

    "IOVS" | u16 format | u8 len, device name | u16 version | u32 payload length | payload | u32 CRC-32

An instant (a pending timer's deadline) travels as time remaining relative to
``sim.now`` and lands relative to the target's ``sim.now``.  :func:`load_state`
checks the framing and CRC, then decodes every field into a staging dict
against the target's own tables (same lengths, same capabilities), and only
then assigns, so a bad stream raises :class:`StateError` and changes nothing.
After assigning, each table's ``post_load`` runs, nested ones first: the PCI
function re-announces its BARs, bus mastering, INTx line and pending MSI-X
messages to the new VM's wiring; device models re-arm their timers.

Every migratable model also has ``resume(cpu)``, which the wiring calls once
the restored VM runs (``cpu``: the backend's thread): it picks up work that
was pending at the save as the real device does at VM start (frames the
backend held; virtio buffers made available but not yet taken).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..pci.function import PciFunction

MAGIC = b"IOVS"
FORMAT = 1
_HEAD = struct.Struct("<4sHB")         # magic, format, name length
_TAIL = struct.Struct("<HI")           # version, payload length
_CRC = struct.Struct("<I")
_U8, _U16, _U32 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<I")
_F64 = struct.Struct("<d")
_CODES = {8: "B", 16: "H", 32: "I", 64: "Q"}

ASSIGNED_DEVICE = ("an assigned device cannot be live-migrated: its registers and queue state live in the "
                   "physical NIC, out of the hypervisor's reach, and its DMA writes to guest memory bypass "
                   "dirty-page logging")


Check = Callable[[Any, Any, dict], "str | None"]
"""(staged value, the table's object on the target, values staged before it
in the table) -> what is wrong with the value, or None."""


class StateError(ValueError):
    """A device state stream that cannot be loaded: tampered, truncated, for
    another device or another version."""


class _Bad(Exception):
    """A field that does not decode; ``path`` grows as it propagates up."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg
        self.path: list[str] = []


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise _Bad(f"stream ends {end - len(self.data)} bytes short")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def count(self) -> int:
        return self.unpack(_U32)[0]


# ---- fields ----------------------------------------------------------------------------------
class Field:
    """One named piece of state; ``path`` is an attribute, dotted for a sub-object's;
    ``check`` what a loaded value must satisfy."""

    def __init__(self, path: str, check: Check | None = None) -> None:
        self.path = path
        self.check = check
        *self._parents, self._attr = path.split(".")

    def _owner(self, obj: Any) -> Any:
        for name in self._parents:
            obj = getattr(obj, name)
        return obj

    def get(self, obj: Any) -> Any:
        return getattr(self._owner(obj), self._attr)

    def capture(self, obj: Any) -> Any:
        """The value to save (a copy of anything mutable)."""
        return self.get(obj)

    def put(self, obj: Any, value: Any) -> None:
        setattr(self._owner(obj), self._attr, value)

    def assign(self, obj: Any, value: Any, after: list[Callable[[], None]]) -> None:
        self.put(obj, value)

    def encode(self, value: Any, out: bytearray, now: float) -> None:
        raise NotImplementedError

    def decode(self, r: _Reader, current: Any, now: float) -> Any:
        """The staged value; ``current`` is the target's, for shape checks."""
        raise NotImplementedError


class UInt(Field):
    """An unsigned integer of ``bits`` (8, 16, 32 or 64)."""

    def __init__(self, path: str, bits: int, check: Check | None = None) -> None:
        super().__init__(path, check)
        self.st = struct.Struct("<" + _CODES[bits])

    def encode(self, value: int, out: bytearray, now: float) -> None:
        out += self.st.pack(value)

    def decode(self, r: _Reader, current: int, now: float) -> int:
        return r.unpack(self.st)[0]


class Flag(Field):
    """A bool, one byte."""

    def encode(self, value: bool, out: bytearray, now: float) -> None:
        out.append(1 if value else 0)

    def decode(self, r: _Reader, current: bool, now: float) -> bool:
        byte = r.unpack(_U8)[0]
        if byte > 1:
            raise _Bad(f"flag byte {byte:#x} is neither 0 nor 1")
        return bool(byte)


class Choice(Field):
    """One of a fixed tuple of values (a state machine's state), saved as its index."""

    def __init__(self, path: str, options: Iterable[Any], check: Check | None = None) -> None:
        super().__init__(path, check)
        self.options = tuple(options)

    def encode(self, value: Any, out: bytearray, now: float) -> None:
        out += _U8.pack(self.options.index(value))

    def decode(self, r: _Reader, current: Any, now: float) -> Any:
        index = r.unpack(_U8)[0]
        if index >= len(self.options):
            raise _Bad(f"choice {index} not among {len(self.options)} options")
        return self.options[index]


class Instant(Field):
    """A point on the sim clock (a timer's deadline, a counter's base): saved
    as its distance from ``sim.now``, restored at the same distance from the
    target's ``sim.now``; infinity (never) stays infinity where ``never`` says
    the field may hold it, and is refused elsewhere."""

    def __init__(self, path: str, never: bool = False, check: Check | None = None) -> None:
        super().__init__(path, check)
        self.never = never

    def encode(self, value: float, out: bytearray, now: float) -> None:
        out += _F64.pack(value - now)

    def decode(self, r: _Reader, current: float, now: float) -> float:
        delta = r.unpack(_F64)[0]
        if math.isnan(delta):
            raise _Bad("instant is NaN")
        if math.isinf(delta) and (delta < 0 or not self.never):
            raise _Bad(f"instant is {delta}, not a time on the clock")
        return now + delta


class _Sized(Field):
    """A sequence the target holds at a fixed size unless ``variable``."""

    def __init__(self, path: str, variable: bool = False, check: Check | None = None) -> None:
        super().__init__(path, check)
        self.variable = variable

    def _length(self, r: _Reader, current: Any) -> int:
        n = r.count()
        if not self.variable and n != len(current):
            raise _Bad(f"stream has {n} entries, the device {len(current)}")
        return n


class Ints(_Sized):
    """A list of unsigned ints of ``bits``, kept in place."""

    def __init__(self, path: str, bits: int, variable: bool = False, check: Check | None = None) -> None:
        super().__init__(path, variable, check)
        self.code = _CODES[bits]
        self.size = bits // 8

    def capture(self, obj: Any) -> list[int]:
        return list(self.get(obj))

    def encode(self, value: list[int], out: bytearray, now: float) -> None:
        out += _U32.pack(len(value)) + struct.pack(f"<{len(value)}{self.code}", *value)

    def decode(self, r: _Reader, current: list[int], now: float) -> list[int]:
        n = self._length(r, current)
        return list(struct.unpack(f"<{n}{self.code}", r.take(n * self.size)))

    def put(self, obj: Any, value: list[int]) -> None:
        self.get(obj)[:] = value


class Bytes(_Sized):
    """A byte string: a bytearray is refilled in place, bytes replaced."""

    def capture(self, obj: Any) -> bytes:
        return bytes(self.get(obj))

    def encode(self, value: bytes, out: bytearray, now: float) -> None:
        out += _U32.pack(len(value)) + value

    def decode(self, r: _Reader, current: bytes, now: float) -> bytes:
        return r.take(self._length(r, current))

    def put(self, obj: Any, value: bytes) -> None:
        current = self.get(obj)
        if isinstance(current, bytearray):
            current[:] = value
        else:
            super().put(obj, bytes(value))


class ByteSet(Field):
    """A frozenset of byte strings of one ``size`` (a perfect address filter)."""

    def __init__(self, path: str, size: int, check: Check | None = None) -> None:
        super().__init__(path, check)
        self.size = size

    def encode(self, value: frozenset[bytes], out: bytearray, now: float) -> None:
        out += _U32.pack(len(value)) + b"".join(sorted(value))

    def decode(self, r: _Reader, current: frozenset[bytes], now: float) -> frozenset[bytes]:
        data = r.take(r.count() * self.size)
        return frozenset(data[i:i + self.size] for i in range(0, len(data), self.size))


class Counts(Field):
    """A Counter of named events (a device's error counts), kept in place."""

    def capture(self, obj: Any) -> dict[str, int]:
        return dict(self.get(obj))

    def encode(self, value: dict[str, int], out: bytearray, now: float) -> None:
        out += _U32.pack(len(value))
        for name, n in sorted(value.items()):
            key = name.encode()
            out += _U8.pack(len(key)) + key + struct.pack("<Q", n)

    def decode(self, r: _Reader, current: Counter, now: float) -> dict[str, int]:
        counts = {}
        for _ in range(r.count()):
            raw = r.take(r.unpack(_U8)[0])
            try:
                name = raw.decode()
            except UnicodeDecodeError:
                raise _Bad(f"counter name {raw!r} is not UTF-8") from None
            counts[name] = struct.unpack("<Q", r.take(8))[0]
        return counts

    def put(self, obj: Any, value: dict[str, int]) -> None:
        counter = self.get(obj)
        counter.clear()
        counter.update(value)


class Nested(Field):
    """A sub-object with a table of its own (saved with its version); an
    ``optional`` one (a capability) must be present on both sides or neither."""

    def __init__(self, path: str, state: VmState, optional: bool = False, check: Check | None = None) -> None:
        super().__init__(path, check)
        self.state = state
        self.optional = optional

    def capture(self, obj: Any) -> dict | None:
        sub = self.get(obj)
        return None if sub is None else self.state.capture(sub)

    def encode(self, value: dict | None, out: bytearray, now: float) -> None:
        if self.optional:
            out.append(value is not None)
        if value is not None:
            out += _U16.pack(self.state.version)
            self.state.encode(value, out, now)

    def decode(self, r: _Reader, current: Any, now: float) -> dict | None:
        present = r.unpack(_U8)[0] if self.optional else 1
        if present > 1 or bool(present) != (current is not None):
            raise _Bad(f"{'present' if present else 'absent'} in the stream, "
                       f"{'absent' if current is None else 'present'} on the device")
        if current is None:
            return None
        self._version(r)
        return self.state.decode(r, current, now)

    def _version(self, r: _Reader) -> None:
        version = r.unpack(_U16)[0]
        if version != self.state.version:
            raise _Bad(f"{self.state.name} version {version} not supported (this build loads {self.state.version})")

    def assign(self, obj: Any, value: dict | None, after: list[Callable[[], None]]) -> None:
        if value is not None:
            self.state.assign(self.get(obj), value, after)


class NestedList(Nested):
    """A fixed list of sub-objects sharing one table (a device's virtqueues)."""

    def capture(self, obj: Any) -> list[dict]:
        return [self.state.capture(sub) for sub in self.get(obj)]

    def encode(self, value: list[dict], out: bytearray, now: float) -> None:
        out += _U16.pack(self.state.version) + _U32.pack(len(value))
        for item in value:
            self.state.encode(item, out, now)

    def decode(self, r: _Reader, current: list, now: float) -> list[dict]:
        self._version(r)
        n = r.count()
        if n != len(current):
            raise _Bad(f"stream has {n} entries, the device {len(current)}")
        return [self.state.decode(r, sub, now) for sub in current]

    def assign(self, obj: Any, value: list[dict], after: list[Callable[[], None]]) -> None:
        for sub, item in zip(self.get(obj), value):
            self.state.assign(sub, item, after)


# ---- tables ------------------------------------------------------------------------------------
class VmState:
    """A device's (or sub-object's) state, declared once."""

    def __init__(self, name: str, version: int, fields: Iterable[Field],
                 post_load: Callable[[Any], None] | None = None) -> None:
        self.name = name
        self.version = version
        self.fields = tuple(fields)
        self.post_load = post_load

    def capture(self, obj: Any) -> dict[str, Any]:
        """Every field's current value (instants absolute), nested as the table is."""
        return {f.path: f.capture(obj) for f in self.fields}

    def encode(self, values: dict[str, Any], out: bytearray, now: float) -> None:
        for f in self.fields:
            try:
                f.encode(values[f.path], out, now)
            except (struct.error, ValueError, TypeError) as err:
                raise StateError(f"{self.name}.{f.path}: cannot save: {err}") from None

    def decode(self, r: _Reader, obj: Any, now: float) -> dict[str, Any]:
        staged = {}
        for f in self.fields:
            try:
                value = staged[f.path] = f.decode(r, f.get(obj), now)
                problem = f.check(value, obj, staged) if f.check is not None else None
                if problem:
                    raise _Bad(problem)
            except _Bad as bad:
                bad.path.insert(0, f.path)
                raise
        return staged

    def assign(self, obj: Any, staged: dict[str, Any], after: list[Callable[[], None]]) -> None:
        """Store the staged values; queue each table's post_load, nested ones first."""
        for f in self.fields:
            f.assign(obj, staged[f.path], after)
        if self.post_load is not None:
            after.append(lambda: self.post_load(obj))


# ---- checks the device models share ----------------------------------------------------
def below(limit: int, what: str) -> Check:
    """The value is less than ``limit``."""
    return lambda value, obj, staged: None if value < limit else f"{value} is not below {limit} ({what})"


def masked(mask: int, what: str) -> Check:
    """The value has no bit outside ``mask`` (the bits a write can set)."""
    def check(value: int, obj: Any, staged: dict) -> str | None:
        return None if not value & ~mask else f"{value:#x} has bits outside {mask:#x} ({what})"
    return check


def length_at_most(limit: int, what: str) -> Check:
    return lambda value, obj, staged: None if len(value) <= limit else f"{len(value)} bytes, more than {limit} ({what})"


# ---- the PCI function every device model carries ------------------------------------------
MSIX_TABLE = VmState("msix", 1, (Bytes("table", check=lambda value, msix, staged: msix.table_problem(value)),
                                 Bytes("pba", check=lambda value, msix, staged: msix.pba_problem(value))))
PCI_FUNCTION = VmState("pci", 1, (Bytes("config.data", check=lambda value, fn, staged: fn.config_problem(value)),
                                  Nested("msix", MSIX_TABLE, optional=True)),
                       post_load=PciFunction.reload)


# ---- the API -------------------------------------------------------------------------------------
def _state(device: Any) -> VmState:
    state = getattr(type(device), "VMSTATE", None)
    if state is None:
        raise StateError(migration_blocker(device))
    return state


def migration_blocker(device: Any) -> str | None:
    """None when ``device`` can be saved and loaded, else why not."""
    cls = type(device)
    if getattr(cls, "VMSTATE", None) is not None:
        return None
    name = getattr(cls, "NAME", cls.__name__)
    return f"{name}: " + getattr(cls, "MIGRATION_BLOCKER", "the device model declares no VMState")


def save_state(device: Any) -> bytes:
    """The device model's state and its PCI function's, as one stream."""
    state = _state(device)
    payload = bytearray()
    state.encode(state.capture(device), payload, device.sim.now)
    name = state.name.encode()
    blob = _HEAD.pack(MAGIC, FORMAT, len(name)) + name + _TAIL.pack(state.version, len(payload)) + payload
    return blob + _CRC.pack(zlib.crc32(blob))


def load_state(device: Any, blob: bytes) -> None:
    """Restore ``device`` (a fresh one of the same class, wired into its new
    VM) from :func:`save_state`'s stream; all or nothing."""
    state, staged = _stage(device, blob)
    after: list[Callable[[], None]] = []
    state.assign(device, staged, after)
    for hook in after:
        hook()


def check_state(device: Any, blob: bytes) -> None:
    """Decode the stream against ``device``'s tables (or one like it) without
    loading it: what :func:`load_state` would refuse, refused now."""
    _stage(device, blob)


def _stage(device: Any, blob: bytes) -> tuple[VmState, dict]:
    state = _state(device)
    name, version, payload = _unframe(bytes(blob))
    if name != state.name:
        raise StateError(f"stream holds {name!r} state, the device is {state.name!r}")
    if version != state.version:
        raise StateError(f"{name} state version {version} not supported (this build loads version {state.version})")
    r = _Reader(payload)
    try:
        staged = state.decode(r, device, device.sim.now)
        if r.pos != len(payload):
            raise _Bad(f"{len(payload) - r.pos} bytes left after the last field")
    except _Bad as bad:
        raise StateError(".".join([name, *bad.path]) + ": " + bad.msg) from None
    return state, staged


def _unframe(blob: bytes) -> tuple[str, int, bytes]:
    """Check magic, format, framing and CRC; the device name, version, payload."""
    if len(blob) < _HEAD.size:
        raise StateError(f"truncated: {len(blob)} bytes, shorter than a stream header")
    magic, fmt, name_len = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise StateError(f"not a device state stream (magic {magic!r}, expected {MAGIC!r})")
    if fmt != FORMAT:
        raise StateError(f"stream format {fmt} not supported (this build reads format {FORMAT})")
    at = _HEAD.size + name_len
    if len(blob) < at + _TAIL.size:
        raise StateError(f"truncated: {len(blob)} bytes, the header alone needs {at + _TAIL.size}")
    version, length = _TAIL.unpack_from(blob, at)
    end = at + _TAIL.size + length
    if len(blob) < end + _CRC.size:
        raise StateError(f"truncated: {len(blob)} bytes, the stream says {end + _CRC.size}")
    if len(blob) > end + _CRC.size:
        raise StateError(f"{len(blob) - end - _CRC.size} trailing bytes after the CRC")
    stored, computed = _CRC.unpack_from(blob, end)[0], zlib.crc32(blob[:end])
    if stored != computed:
        raise StateError(f"CRC mismatch: stream corrupted (stored {stored:#010x}, computed {computed:#010x})")
    try:
        name = blob[_HEAD.size:at].decode()
    except UnicodeDecodeError:
        raise StateError(f"device name {blob[_HEAD.size:at]!r} is not UTF-8") from None
    return name, version, blob[at + _TAIL.size:end]
