"""iovirt: the four network I/O virtualization models (emulation,
para-virtualization, pass-through, SR-IOV) as working code, with the cost of
every mechanism accounted on a simulated clock.

The names below load on first use (PEP 562), so importing one layer (``import
iovirt.spec.e1000``) loads that layer and what it imports, nothing above it."""

from importlib import import_module

_EXPORTS = {"run": "experiments.runner", "Scenario": "experiments.scenario",
            "ScenarioError": "experiments.scenario", "load_scenario": "experiments.scenario"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'iovirt' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
