"""iovirt: the four network I/O virtualization models (emulation,
para-virtualization, pass-through, SR-IOV) as working code, with the cost of
every mechanism accounted on a simulated clock."""

from .experiments.runner import run
from .experiments.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["Scenario", "ScenarioError", "load_scenario", "run"]
