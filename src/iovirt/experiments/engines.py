"""Engines: the interpreter a run's world runs on.  ``cpython`` runs it here;
``pypy`` runs the same code in a ``pypy3`` subprocess (:mod:`.pypy_worker`),
handing it the scenario as validated here and taking back what the run
measured, both as JSON; ``auto`` picks PyPy for runs long enough to repay its
JIT's warm-up.  Validation, results, DataFrames and plots stay here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import import_module
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Callable

ENGINES = ("cpython", "pypy", "auto")
PYPY = "pypy3"
# auto: PyPy from this much simulated time on (the longest workload's duration_ms).  Below it the
# subprocess and the JIT's warm-up (about a second of wall time) cost more than PyPy saves:
# `benchmarks/sim_speed.py --threshold` finds PyPy faster from 50 ms for the assigned NICs at 10GbE
# MTU, from 100-200 ms for virtio-net, from 500 ms for e1000 (fewer frames per simulated ms).
PYPY_MIN_SIM_MS = 200.0
# The engine's garbage collector: a 4 MB nursery (PyPy's default is 1 MB here) and no major collection
# below 256 MB of heap (the default starts them at a few MB).  Every frame's copies promoted out of a
# small nursery triggered a major collection every ~100 ms of run, each marking the whole heap: 30% of
# a pass-through run's CPU went to the collector, 10% with these (about 70 MB more RSS).  The caller's
# own PYPY_GC_* variables win.
PYPY_GC = {"PYPY_GC_NURSERY": "4MB", "PYPY_GC_MIN": "256MB"}


class EngineError(ValueError):
    pass


@dataclass(frozen=True)
class Engine:
    name: str         # the interpreter that ran the world: cpython or pypy
    why: str


def choose(scenario, engine: str) -> Engine:
    """The engine ``engine`` (one of :data:`ENGINES`) runs ``scenario`` on."""
    if engine not in ENGINES:
        raise EngineError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "cpython":
        return Engine("cpython", "asked for")
    installed = shutil.which(PYPY) is not None
    if engine == "pypy":
        if not installed:
            raise EngineError(f"--engine pypy: {PYPY} is not installed (Debian: apt-get install pypy3)")
        return Engine("pypy", "asked for")
    longest = max((w.duration_ms for w in scenario.workloads), default=0.0)
    if not installed:
        return Engine("cpython", f"{PYPY} is not installed")
    if longest < PYPY_MIN_SIM_MS:
        return Engine("cpython", f"{longest:g} ms simulated, below the {PYPY_MIN_SIM_MS:g} ms that repay "
                                 f"PyPy's warm-up")
    return Engine("pypy", f"{longest:g} ms simulated, at least {PYPY_MIN_SIM_MS:g} ms")


def plain(value):
    """``value`` (a validated scenario and its cost profile, or what a run measured) as JSON
    types, every object tagged with its class so that :func:`built` builds it again."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        attrs = {name: getattr(value, name) for name in type(value).model_fields}
        return {"$class": _qualified(value), "attrs": plain({**attrs, **(value.__pydantic_private__ or {})})}
    if isinstance(value, dict):
        return {"$dict": {key: plain(v) for key, v in value.items()}}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [plain(v) for v in value]}
    if isinstance(value, IPv4Interface):
        return {"$ipv4": str(value)}
    if isinstance(value, Path):
        return {"$path": str(value)}
    if value is None or isinstance(value, (str, int, float)):
        return value
    return {"$class": _qualified(value), "attrs": plain(vars(value))}


def _qualified(value) -> str:
    return f"{type(value).__module__}:{type(value).__qualname__}"


def built(value):
    """The object :func:`plain` wrote as ``value``."""
    if isinstance(value, list):
        return [built(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$class" in value:
        cls = named(value["$class"])
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


def named(qualified: str):
    module, name = qualified.split(":")
    return getattr(import_module(module), name)


def run_on(chosen: Engine, fn: Callable, scenario, *args, progress: Callable[[float], None] | None = None):
    """``fn(scenario, *args, progress=progress)`` run by the engine ``chosen``: here, or by ``pypy3``
    (``fn`` a module-level function, its arguments and what it returns as :func:`plain` writes them)."""
    if chosen.name == "cpython":
        return fn(scenario, *args, progress=progress)
    src = str(Path(__file__).resolve().parents[2])      # the folder holding the iovirt package
    env = {**PYPY_GC, **os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    request = {"call": f"{fn.__module__}:{fn.__qualname__}", "args": plain([scenario, *args]),
               "progress": progress is not None}
    with tempfile.TemporaryFile() as errors:
        worker = subprocess.Popen([shutil.which(PYPY) or PYPY, "-m", "iovirt.experiments.pypy_worker"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=env, text=True)
        worker.stdin.write(json.dumps(request))
        worker.stdin.close()
        last = None
        for line in worker.stdout:
            last = json.loads(line)
            if "progress" in last and progress:
                progress(last["progress"])
        worker.wait()
        errors.seek(0)
        if worker.returncode or last is None:
            sys.stderr.write(errors.read().decode(errors="replace"))
            raise RuntimeError(f"the {PYPY} engine stopped with exit status {worker.returncode}")
    if "error" in last:
        from .scenario import ScenarioError

        raise ScenarioError(last["error"])
    return built(last["value"])
