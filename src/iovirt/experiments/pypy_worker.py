"""The ``pypy`` engine's side (:mod:`.engines`): read a call from stdin (a
function that builds a world and runs it, and its arguments: the scenario as
the caller validated it, ...), make it, and write what it returns to stdout as
JSON lines (``{"progress": f}`` as it goes, then ``{"value": ...}`` or
``{"error": ...}``).

pydantic does not run here (no PyPy build of pydantic-core), and need not:
the scenario arrives validated, so its classes are defined against stand-ins
that hold attributes only."""

from __future__ import annotations

import json
import sys
import types


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


def main() -> None:
    _stand_ins()
    from .engines import built, named, plain
    from .scenario import ScenarioError

    request = json.load(sys.stdin)

    def progress(fraction: float) -> None:
        print(json.dumps({"progress": fraction}), flush=True)

    try:
        value = named(request["call"])(*built(request["args"]), progress=progress if request["progress"] else None)
        out = {"value": plain(value)}
    except ScenarioError as exc:
        out = {"error": str(exc)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
