"""Engines: the world run by another interpreter gives the same result, byte for byte."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iovirt.cli.main import app
from iovirt.experiments import engines
from iovirt.experiments.runner import run
from iovirt.experiments.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PYPY = shutil.which("pypy3")
CORE = ("sim", "mem", "pci", "spec", "devices", "hypervisor", "guest", "net")
ENGINE_SIDE = ("world", "runner", "workloads", "results", "capture", "failover", "engines", "pypy_worker")
needs_pypy = pytest.mark.skipif(PYPY is None, reason="pypy3 is not installed")


def figures(result) -> str:
    data = dict(result.to_dict())
    data.pop("wall_time_s")
    return json.dumps(data)


@pytest.fixture
def worker_on_cpython(monkeypatch):
    """The pypy engine's exchange, with this interpreter standing in for pypy3."""
    monkeypatch.setattr(engines, "PYPY", sys.executable)


@needs_pypy
def test_core_compiles_and_imports_on_pypy(tmp_path):
    src = ROOT / "src" / "iovirt"
    subprocess.run([PYPY, "-m", "compileall", "-q", *(str(src / layer) for layer in CORE)], check=True,
                   capture_output=True, env={"PYTHONPYCACHEPREFIX": str(tmp_path)})     # the byte code goes there
    code = ("import importlib, pkgutil, iovirt\n"
            "from iovirt.experiments import pypy_worker\n"
            "pypy_worker._stand_ins()\n"
            f"for layer in {CORE!r}:\n"
            "    pkg = importlib.import_module('iovirt.' + layer)\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(m.name)\n"
            f"for name in {ENGINE_SIDE!r}:\n"
            "    importlib.import_module('iovirt.experiments.' + name)\n"
            "import sys; print(sorted(m for m in ('pandas', 'numpy') if m in sys.modules))\n")
    out = subprocess.run([PYPY, "-c", code], capture_output=True, text=True, cwd=ROOT / "src")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@needs_pypy
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_is_byte_identical_on_pypy(example):
    scenario = load_scenario(example)
    cpython, pypy = run(scenario, engine="cpython"), run(scenario, engine="pypy")
    assert (cpython.engine.name, pypy.engine.name) == ("cpython", "pypy")
    assert figures(pypy) == figures(cpython)


def test_the_exchange_keeps_every_figure(worker_on_cpython):
    scenario = load_scenario(ROOT / "examples" / "sriov-ixgbevf.yaml")
    seen = []
    across = run(scenario, seen.append, engine="pypy")
    assert figures(across) == figures(run(scenario))
    assert across.engine.name == "pypy"
    assert seen and seen[-1] == 1.0


def test_a_scaled_profile_crosses_over(worker_on_cpython):
    """The cost profile goes across as it is, a what-if's scaled price too."""
    scenario = load_scenario(ROOT / "examples" / "emulated-e1000.yaml")
    scaled = scenario.with_profile(scenario.profile.scaled("vm_exit", 3.0))
    assert figures(run(scaled, engine="pypy")) == figures(run(scaled))
    assert figures(run(scaled)) != figures(run(scenario))


def test_auto_takes_pypy_for_long_runs_only(worker_on_cpython):
    scenario = load_scenario(ROOT / "examples" / "emulated-e1000.yaml")
    long = scenario.model_copy(deep=True)
    for w in long.workloads:
        w.duration_ms = engines.PYPY_MIN_SIM_MS
    assert max(w.duration_ms for w in scenario.workloads) < engines.PYPY_MIN_SIM_MS
    assert engines.choose(scenario, "auto").name == "cpython"
    assert engines.choose(long, "auto").name == "pypy"
    assert engines.choose(long, "cpython").name == "cpython"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_without_pypy3_auto_runs_on_cpython_and_pypy_is_one_error(monkeypatch):
    monkeypatch.setattr(engines, "PYPY", "pypy3-not-installed-here")
    example = ROOT / "examples" / "emulated-e1000.yaml"
    asked = invoke("run", example, "--json", "--engine", "pypy")
    assert asked.exit_code == 2
    assert asked.stderr.splitlines() == ["error: --engine pypy: pypy3-not-installed-here is not installed "
                                         "(Debian: apt-get install pypy3)"]
    auto = invoke("run", example, "--json", "--engine", "auto")
    assert auto.exit_code == 0, auto.stderr
    assert auto.stderr.splitlines() == ["engine: cpython (pypy3-not-installed-here is not installed)"]
    assert json.loads(auto.stdout)["flows"]


def test_an_unknown_engine_is_one_error():
    out = invoke("run", ROOT / "examples" / "emulated-e1000.yaml", "--engine", "jython")
    assert out.exit_code == 2
    assert out.stderr.splitlines() == ["error: --engine: expected one of cpython, pypy, auto, got 'jython'"]


@needs_pypy
def test_a_sample_of_compare_points_is_identical_on_pypy():
    from iovirt.experiments import compare as cmp

    chosen = cmp.configs(["emulated", "paravirt", "sriov"], ["e1000", "virtio-net", "ixgbevf"])[:3]
    rows = {engine: cmp.sweep(cmp.points(chosen, [1, 4], [1500], 1.0, 8, False, "default", engine))
            for engine in ("cpython", "pypy")}
    assert len(rows["cpython"]) == 7
    assert json.dumps(rows["pypy"]) == json.dumps(rows["cpython"])


@needs_pypy
def test_claims_find_the_same_evidence_on_pypy():
    from iovirt.experiments import claims

    for claim in (claims.emulated_devices_carry_traffic, claims.passthrough_blocks_migration):
        assert claim("default", "pypy") == claim("default", "cpython"), claim.__name__


def test_claims_with_an_unknown_engine_is_one_error():
    out = invoke("claims", "--engine", "jython")
    assert out.exit_code == 2
    assert out.stderr.splitlines() == ["error: --engine: expected one of cpython, pypy, auto, got 'jython'"]


def test_compare_says_which_engine_auto_took(monkeypatch):
    monkeypatch.setattr(engines, "PYPY", "pypy3-not-installed-here")
    out = invoke("compare", "--models", "emulated", "--devices", "e1000", "--vms", "1", "--sizes", "1500",
                 "--json", "--engine", "auto")
    assert out.exit_code == 0, out.stderr
    assert [line for line in out.stderr.splitlines() if line] == [   # the sweep's progress ends in a blank line
        "engine: cpython (pypy3-not-installed-here is not installed)"]
    assert [r["model"] for r in json.loads(out.stdout)] == ["bare-metal", "emulated"]


def test_a_problem_found_running_is_the_same_error_on_either_engine(worker_on_cpython, tmp_path):
    from iovirt.experiments.scenario import Capture, ScenarioError

    scenario = load_scenario(ROOT / "examples" / "emulated-e1000.yaml")
    scenario.capture.append(Capture(port="no-such-port", file=str(tmp_path / "x.pcapng")))
    errors = []
    for engine in ("cpython", "pypy"):
        with pytest.raises(ScenarioError) as caught:
            run(scenario, engine=engine)
        errors.append(str(caught.value))
    assert errors[0].startswith("--capture: ")
    assert errors[1] == errors[0]


@needs_pypy
@pytest.mark.parametrize("example", [p for p in EXAMPLES if p.stem.startswith("migrate-")], ids=lambda p: p.stem)
def test_a_migration_is_identical_on_pypy(example):
    from iovirt.experiments.migrate import migrate

    scenario = load_scenario(example)
    cpython, pypy = migrate(scenario), migrate(scenario, engine="pypy")
    assert cpython.report.result == "ok"
    assert json.dumps(pypy.to_dict()) == json.dumps(cpython.to_dict())
    assert pypy.flows == cpython.flows
    assert figures(pypy.result) == figures(cpython.result)


def test_a_timeline_is_recorded_on_cpython_only(tmp_path):
    example = ROOT / "examples" / "emulated-e1000.yaml"
    refused = invoke("run", example, "--engine", "pypy", "--timeline", tmp_path / "t.json")
    assert refused.exit_code == 2
    assert refused.stderr.splitlines() == ["error: --timeline: the trace is recorded on the cpython engine only, "
                                           "got --engine pypy"]
    assert not (tmp_path / "t.json").exists()
    recorded = invoke("run", example, "--engine", "auto", "--timeline", tmp_path / "t.json")
    assert recorded.exit_code == 0, recorded.stderr
    assert json.loads((tmp_path / "t.json").read_text())
