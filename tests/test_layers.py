"""The package's layers: each imports only the layers below it, and importing
one layer loads nothing above it."""

import ast
import subprocess
import sys
from pathlib import Path

import iovirt

ROOT = Path(iovirt.__file__).parent


def _loaded_by(module: str) -> set[str]:
    """The iovirt modules a fresh interpreter holds after ``import module``."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('iovirt')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT.parent)}).stdout
    return set(out.split())


def test_a_spec_module_loads_only_spec():
    """import iovirt.spec.e1000: the package root, spec/ and nothing else."""
    loaded = _loaded_by("iovirt.spec.e1000")
    assert "iovirt.spec.e1000" in loaded
    assert {m for m in loaded if m != "iovirt" and not m.startswith("iovirt.spec")} == set()


def test_the_package_root_loads_its_names_on_use():
    """iovirt.run reaches the runner, which loads the layers it needs (so the check above can fail)."""
    loaded = _loaded_by("iovirt; iovirt.run")
    assert "iovirt.experiments.runner" in loaded and "iovirt.hypervisor.vm" in loaded
