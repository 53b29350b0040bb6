"""The ``pypy`` engine's side (:mod:`.engines`): read a scenario validated by
the caller from stdin, build its world, run it, and write what the run
measured to stdout as JSON lines (``{"progress": f}`` as it goes, then
``{"measured": ...}`` or ``{"error": ...}``).

pydantic does not run here (no PyPy build of pydantic-core), and need not:
the scenario arrives validated, so its classes are defined against stand-ins
that hold attributes only."""

from __future__ import annotations

import json
import sys
import types
from importlib import import_module
from ipaddress import IPv4Interface
from pathlib import Path


def _stand_ins() -> None:
    """``pydantic`` and ``pydantic_core`` for class definitions only: a field's
    default is its class attribute, validators and constraints are dropped."""
    class BaseModel:
        def __init__(self, **values) -> None:
            self.__dict__.update(values)

    class ValidationError(ValueError):
        pass

    pydantic = types.ModuleType("pydantic")
    pydantic.BaseModel, pydantic.ValidationError = BaseModel, ValidationError
    for name in ("AfterValidator", "BeforeValidator", "ConfigDict", "Field", "PrivateAttr"):
        setattr(pydantic, name, lambda *args, **_: args[0] if args else None)
    pydantic.model_validator = lambda **_: lambda f: f
    core = types.ModuleType("pydantic_core")
    core.PydanticCustomError = ValidationError
    sys.modules.update(pydantic=pydantic, pydantic_core=core)


def built(value):
    """The object :func:`engines.plain` wrote as ``value``."""
    if isinstance(value, list):
        return [built(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$class" in value:
        module, name = value["$class"].split(":")
        cls = getattr(import_module(module), name)
        obj = cls.__new__(cls)
        obj.__dict__.update(built(value["attrs"]))
        return obj
    if "$dict" in value:
        return {key: built(v) for key, v in value["$dict"].items()}
    if "$tuple" in value:
        return tuple(built(v) for v in value["$tuple"])
    if "$ipv4" in value:
        return IPv4Interface(value["$ipv4"])
    return Path(value["$path"])


def main() -> None:
    _stand_ins()
    from .runner import measured
    from .scenario import ScenarioError

    request = json.load(sys.stdin)

    def progress(fraction: float) -> None:
        print(json.dumps({"progress": fraction}), flush=True)

    try:
        out = {"measured": measured(built(request["scenario"]), progress if request["progress"] else None)}
    except ScenarioError as exc:
        out = {"error": str(exc)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
