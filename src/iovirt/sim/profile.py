"""Cost profile: the price of every named event, each with its unit and source.

A profile is a YAML file (bundled ones live in ``iovirt/profiles/``)::

    cpu: {model: "Intel Xeon X5570", ghz: 2.93, source: "..."}
    costs:
      vm_exit: {value: 2000, unit: cycles, source: "..."}
      copy:    {value: 40, unit: ns, per_byte: {value: 8, unit: GB/s}, source: "..."}

Cycles are converted with the profile's CPU clock; ``per_byte`` is either a
bandwidth (GB/s, Gbit/s) or a time per byte (ns/B).  A figure not measured on
the profile's CPU carries a ``bracket``: published (or derived) bounds in the
cost's own unit, with their sources (a what-if may move the value outside).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import yamldoc

MAX_PROFILE_BYTES = 1 << 20    # the bundled profiles are about 7 KB

# The named events iovirt charges (docs/architecture.md, "Cost paths"); a profile prices each.
EVENTS = (
    "vm_exit", "kvm_handle", "user_exit", "mmio_emulate", "pio_emulate", "interrupt_inject", "eoi_exit",
    "wakeup", "tap", "copy", "copy_hot", "vswitch", "dpdk_switch", "ring_op", "guest_stack", "ioeventfd", "poll",
    "dma", "iotlb_hit", "iotlb_miss", "posted_interrupt", "irq_entry", "csum", "gso_segment", "gro_receive",
    "hypercall", "evtchn_send", "grant_copy", "ioreq", "migration_page", "vmm_handle", "vmk_vswitch", "vmk_intr_forward",
    "hv_post_message", "hv_signal_event", "hv_monitor_scan", "synic_msr", "hv_intercept", "vmswitch",
)

FixedUnit = Literal["ns", "us", "cycles"]
ByteUnit = Literal["GB/s", "Gbit/s", "ns/B"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Bracket(_Strict):
    low: float = Field(ge=0)
    high: float = Field(ge=0)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Bracket:
        if self.low > self.high:
            raise ValueError(f"expected low <= high, got {self.low:g} > {self.high:g}")
        return self


class _Priced(_Strict):
    value: float
    bracket: Bracket | None = None


class PerByte(_Priced):
    value: float = Field(gt=0)
    unit: ByteUnit


class Cost(_Priced):
    value: float = Field(ge=0)
    unit: FixedUnit
    per_byte: PerByte | None = None
    source: str = Field(min_length=1)
    note: str | None = None


class Cpu(_Strict):
    model: str
    ghz: float = Field(gt=0)
    source: str = Field(min_length=1)


class ProfileFile(_Strict):
    name: str
    description: str
    cpu: Cpu
    costs: dict[str, Cost]


class ProfileError(ValueError):
    pass


class CostProfile:
    """Costs resolved to nanoseconds: ``fixed_ns[event]`` per occurrence and
    ``per_byte_ns[event]`` per byte moved."""

    def __init__(self, spec: ProfileFile, origin: str) -> None:
        self.spec = spec
        self.origin = origin
        ghz = spec.cpu.ghz
        self.fixed_ns: dict[str, float] = {}
        self.per_byte_ns: dict[str, float] = {}
        for event, cost in spec.costs.items():
            self.fixed_ns[event] = _to_ns(cost.value, cost.unit, ghz)
            self.per_byte_ns[event] = _per_byte_ns(cost.per_byte) if cost.per_byte else 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    def scaled(self, event: str, factor: float, per_byte: bool = False) -> CostProfile:
        """This profile with one price times ``factor``: ``event``'s fixed
        part, or with ``per_byte`` its time per byte."""
        out = CostProfile(self.spec, self.origin)
        (out.per_byte_ns if per_byte else out.fixed_ns)[event] *= factor
        return out


def _to_ns(value: float, unit: str, ghz: float) -> float:
    if unit == "ns":
        return value
    if unit == "us":
        return value * 1000.0
    return value / ghz  # cycles


def _per_byte_ns(pb: PerByte) -> float:
    if pb.unit == "ns/B":
        return pb.value
    if pb.unit == "GB/s":
        return 1.0 / pb.value
    return 8.0 / pb.value  # Gbit/s


def bundled_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("iovirt.profiles").iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | Path, base: Path | None = None) -> CostProfile:
    """Load a bundled profile by name, or a profile file by path (relative to
    ``base`` when given)."""
    text, origin = _read(str(name_or_path), base)
    try:
        raw = yamldoc.load(text)
    except (yamldoc.TooDeep, yamldoc.Duplicate) as exc:
        mark = exc.problem_mark
        raise ProfileError(f"{origin}: line {mark.line + 1}, column {mark.column + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ProfileError(f"{origin}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    try:
        spec = ProfileFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise ProfileError(f"{origin}: {path}: {err['msg']}") from None
    missing = [e for e in EVENTS if e not in spec.costs]
    if missing:
        raise ProfileError(f"{origin}: costs: expected a cost for every event iovirt charges, missing {', '.join(missing)}")
    return CostProfile(spec, origin)


def _read(name: str, base: Path | None) -> tuple[str, str]:
    if name in bundled_profiles():
        return resources.files("iovirt.profiles").joinpath(f"{name}.yaml").read_text(), f"profile '{name}'"
    path = Path(name)
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise ProfileError(
            f"profile {name!r}: neither a bundled profile ({', '.join(bundled_profiles())}) nor a file"
        )
    try:
        return yamldoc.read(path, MAX_PROFILE_BYTES), str(path)
    except yamldoc.TooLarge:
        raise ProfileError(f"{path}: expected a profile of at most {MAX_PROFILE_BYTES >> 20} MiB, got more") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: expected UTF-8 text, got undecodable bytes") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from None
