"""The package's layers: each imports only the layers below it, and importing
one layer loads nothing above it."""

import ast
import subprocess
import sys
from pathlib import Path

import iovirt

ROOT = Path(iovirt.__file__).parent


def _loaded_by(module: str) -> set[str]:
    """The iovirt (and pandas) modules a fresh interpreter holds after ``import module``."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith(('iovirt', 'pandas'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT.parent)}).stdout
    return set(out.split())


def test_a_spec_module_loads_only_spec():
    """import iovirt.spec.e1000: the package root, spec/ and nothing else."""
    loaded = _loaded_by("iovirt.spec.e1000")
    assert "iovirt.spec.e1000" in loaded
    assert {m for m in loaded if m != "iovirt" and not m.startswith("iovirt.spec")} == set()


def test_the_package_root_loads_its_names_on_use():
    """iovirt.run reaches the runner, which loads the layers it needs but not pandas (any engine runs it);
    a result's tables load pandas (so both checks can fail)."""
    loaded = _loaded_by("iovirt; iovirt.run")
    assert {"iovirt.experiments.runner", "iovirt.hypervisor.vm"} <= loaded
    assert "pandas" not in loaded
    tables = _loaded_by("iovirt.experiments.results as r; r.Result({'flows': [], 'resources': [], 'events': {}})")
    assert "pandas" in tables


# What each layer may import besides itself (docs/architecture.md, "Layers").
MAY_IMPORT = {
    "spec": set(),
    "sim": set(),
    "mem": {"sim"},
    "pci": {"spec", "sim"},
    "devices": {"spec", "sim", "mem", "pci"},
    "net": {"spec", "sim"},
    "hypervisor": {"spec", "sim", "mem", "pci", "devices", "net"},
    "guest": {"spec", "sim", "mem", "net"},
    "experiments": {"spec", "sim", "mem", "pci", "devices", "net", "hypervisor", "guest"},
    "cli": {"spec", "sim", "experiments"},
    "profiles": set(),
}


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """The iovirt layers ``path`` (a module under ``root``) imports, relative and absolute imports alike."""
    package = path.relative_to(root).parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = package[:len(package) - node.level + 1] + tuple((node.module or "").split("."))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iovirt."):
            target = tuple(node.module.split("."))[1:]
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("iovirt.")}
            continue
        else:
            continue
        if target and target[0]:
            out.add(target[0])
    return out


def test_layers_import_only_downwards():
    """Every module under a layer's folder imports its own layer and the ones MAY_IMPORT allows."""
    wrong = {}
    for path in ROOT.rglob("*.py"):
        layer = path.relative_to(ROOT).parts[0]
        if layer.endswith(".py"):
            continue
        bad = _imports(path) - MAY_IMPORT[layer] - {layer}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert wrong == {}


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """A device module importing the hypervisor is what the check above reports."""
    module = tmp_path / "devices" / "x.py"
    module.parent.mkdir()
    module.write_text("from ..hypervisor.vm import VM\nfrom iovirt.guest import kernel\nimport iovirt.cli.main\n")
    assert _imports(module, tmp_path) == {"hypervisor", "guest", "cli"}
