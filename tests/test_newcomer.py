"""What a new user meets in the first hour: output paths checked before a run,
memory backed lazily, numbers in scientific notation, flags named as typed,
unreachable schedulers, refused migrations, runs that measure nothing,
explain per machine, duplicate keys, the conformance tests without QEMU, and
reproducible results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import iovirt
from iovirt.cli.main import app
from iovirt.experiments.results import fingerprint
from iovirt.experiments.runner import run
from iovirt.experiments.scenario import Scenario, ScenarioError, load_scenario
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.profile import ProfileError, load_profile

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "emulated-e1000.yaml"
SHORT = [{"type": "ping", "src": "vm1", "dst": "vm2", "count": 2},
         {"type": "udp_stream", "src": "vm1", "dst": "vm2", "packet_size": 1500, "duration_ms": 0.5}]


def invoke(*args):
    return CliRunner(env={"COLUMNS": "250"}).invoke(app, [str(a) for a in args])


def one_error_line(result, *parts):
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for part in parts:
        assert part in result.stderr, result.stderr


def scenario_file(tmp_path, edit=lambda d: d, name="s.yaml"):
    data = edit({**yaml.safe_load(EXAMPLE.read_text()), "workloads": SHORT})
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# ---- output paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("target, expected", [
    ("missing/flows.csv", "expected a file in an existing directory"),
    ("flows.txt", "expected a file ending in .parquet or .csv"),
    ("a-dir.csv", "expected a file this user can write"),
])
def test_run_out_is_checked_before_running(tmp_path, monkeypatch, target, expected):
    """run --out into a missing directory, a directory or an unknown kind of file: one line, exit 2,
    and the scenario never runs."""
    (tmp_path / "a-dir.csv").mkdir()
    monkeypatch.setattr("iovirt.experiments.runner.run", lambda *a: pytest.fail("the run started"))
    one_error_line(invoke("run", scenario_file(tmp_path), "--out", tmp_path / target), "--out:", expected)


def test_run_out_into_an_existing_directory_writes(tmp_path):
    """The other way: a writable place gets the table."""
    out = tmp_path / "flows.csv"
    assert invoke("run", scenario_file(tmp_path), "--out", out).exit_code == 0
    assert out.read_text().startswith("workload,")


# ---- memory --------------------------------------------------------------------------------------


def test_a_vm_larger_than_this_machine_runs(tmp_path):
    """32 GiB of guest RAM on a machine with less: reserved without backing, only touched pages cost."""
    big = GuestMemory(32 << 30)
    big.write(big.size - 4096, b"top")
    assert big.read(big.size - 4096, 3) == b"top"

    def edit(d):
        d["vms"][0]["memory_mb"] = 32768
        return d
    result = invoke("run", scenario_file(tmp_path, edit), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["flows"][1]["delivered"] > 0


# ---- YAML ----------------------------------------------------------------------------------------


def test_scientific_notation_is_a_number(tmp_path):
    """duration_ms: 2e3 is 2000 ms (YAML 1.2); a quoted "2e3" stays a string and is refused."""
    text = scenario_file(tmp_path).read_text()
    plain = tmp_path / "plain.yaml"
    plain.write_text(text.replace("duration_ms: 0.5", "duration_ms: 2e3"))
    assert load_scenario(plain).workloads[1].duration_ms == 2000.0
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text(text.replace("duration_ms: 0.5", "duration_ms: '2e3'"))
    with pytest.raises(ScenarioError, match=r"workloads\[1\]\.duration_ms: expected a number"):
        load_scenario(quoted)


def test_duplicate_keys_are_refused(tmp_path):
    """A key twice in one mapping: refused with its line; the same key in two mappings is fine."""
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nprofile: default\nname: b\nhosts: []\nvms: []\n")
    result = invoke("validate", path)
    one_error_line(result, f"{path}: line 3, column 1: expected each key once in a mapping, got 'name' again")
    nested = scenario_file(tmp_path, lambda d: yaml.safe_dump(d).replace("  name: vm2\n", "  name: vm2\n  host: x\n"))
    with pytest.raises(ScenarioError, match="got 'host' again"):
        load_scenario(nested)
    assert load_scenario(scenario_file(tmp_path)).vms[1].name == "vm2"


def test_duplicate_keys_in_a_profile_are_refused(tmp_path):
    text = (ROOT / "src/iovirt/profiles/default.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(text + "name: twice\n")
    with pytest.raises(ProfileError, match="expected each key once in a mapping, got 'name' again"):
        load_profile(path)


# ---- flags named as typed ------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--vms", "0"], "--vms: expected 2..4096 (the scaling claims compare 1 VM with this many), got 0"),
    (["--cores", "0"], "--cores: expected 1..8192 (a host's cores), got 0"),
])
def test_claims_names_the_flag(args, message):
    one_error_line(invoke("claims", *args), message)


def test_an_unreachable_scheduler_is_one_line():
    """Nothing listens at the address: a connect timeout, then one line naming --scheduler."""
    result = invoke("compare", "--models", "emulated", "--devices", "e1000", "--vms", "1", "--sizes", "64",
                    "--scheduler", "tcp://127.0.0.1:9")
    one_error_line(result, "--scheduler: cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'")


# ---- migrations ----------------------------------------------------------------------------------


def migration_file(tmp_path, standby: bool):
    data = yaml.safe_load((ROOT / "examples" / "migrate-sriov-failover.yaml").read_text())
    data["vms"][0]["nics"] = data["vms"][0]["nics"][:2 if standby else 1]
    data["workloads"][0]["duration_ms"] = 6
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("standby, status, outcome", [(False, 1, "blocked"), (True, 0, "ok")])
def test_migrate_exit_status_says_whether_it_moved(tmp_path, standby, status, outcome):
    """A VF with no failover standby cannot move: exit 1 after the report; with one it moves: exit 0."""
    result = invoke("migrate", migration_file(tmp_path, standby), "--json")
    assert result.exit_code == status, result.output
    assert json.loads(result.stdout)["result"] == outcome


# ---- runs that measure nothing, progress ---------------------------------------------------------


def crowd(tmp_path, duration_ms):
    n = 16
    data = {"name": "crowd", "profile": "default", "hosts": [{"name": "h", "cores": 1}],
            "vms": [{"name": f"vm{i}", "host": "h", "memory_mb": 32,
                     "nics": [{"model": "emulated", "device": "e1000", "mac": f"52:54:00:00:00:{i + 1:02x}",
                               "ip": f"10.0.0.{i + 1}/24"}]} for i in range(n)],
            "workloads": [{"type": "udp_stream", "src": f"vm{i}", "dst": f"vm{(i + 1) % n}",
                           "duration_ms": duration_ms} for i in range(n)]}
    path = tmp_path / "crowd.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_run_that_sends_nothing_warns(tmp_path):
    """Sixteen emulated VMs on one core for 20 µs: most never get to send, and run says which."""
    result = invoke("run", crowd(tmp_path, 0.02), "--json")
    flows = json.loads(result.stdout)["flows"]
    silent = [f for f in flows if not f["sent"]]
    assert silent and result.exit_code == 0
    for f in silent:
        assert (f"warning: workload {f['workload']} (udp_stream {f['src']}→{f['dst']}) sent nothing in 0.02 ms "
                f"of simulated time") in result.stderr


def test_a_run_that_delivers_warns_of_nothing(tmp_path):
    result = invoke("run", crowd(tmp_path, 2), "--json")
    assert all(f["delivered"] for f in json.loads(result.stdout)["flows"])
    assert "warning" not in result.stderr


def test_progress_is_told_and_changes_nothing():
    """run with a progress callback: fractions rising to 1, and the same figures as without."""
    data = {**yaml.safe_load(EXAMPLE.read_text()), "workloads": SHORT}
    told = []
    with_progress = run(Scenario.from_dict(data), told.append).to_dict()
    without = run(Scenario.from_dict(data)).to_dict()
    assert told == sorted(told) and told[-1] == 1.0 and len(told) > 10
    assert {**with_progress, "wall_time_s": 0} == {**without, "wall_time_s": 0}


# ---- explain -------------------------------------------------------------------------------------


def test_explain_is_per_machine_and_pooled_on_request():
    """The pass-through example: vm1's table holds its vCPU's work only, the far end's cores are the wire
    peers', the bare-metal machine has its own; --pooled adds them all up."""
    example = ROOT / "examples" / "passthrough-ixgbe.yaml"
    per = json.loads(invoke("explain", example, "--json").stdout)
    assert {"vm1", "bm1", "host0", "host1", "wire peers"} <= per.keys()
    kinds = {owner: {k for row in b["ns_per_packet"].values() for k in row} for owner, b in per.items()}
    assert kinds["vm1"] == {"vcpu"} and kinds["wire peers"] == {"peer", "nic", "wire"} and "nic" in kinds["host0"]
    pooled = json.loads(invoke("explain", example, "--pooled", "--json").stdout)
    assert pooled["packets"] == sum(b["packets"] for o, b in per.items() if o in ("vm1", "bm1"))
    vm1 = sum(sum(r.values()) for r in per["vm1"]["ns_per_packet"].values()) * per["vm1"]["packets"]
    everything = sum(sum(r.values()) for r in pooled["ns_per_packet"].values()) * pooled["packets"]
    assert 0 < vm1 < everything


def test_explain_with_nothing_delivered_says_so(tmp_path):
    """No packet delivered: no "1 packets" and no per-packet figures, the busy time in total instead."""
    result = invoke("explain", crowd(tmp_path, 0.02))
    assert "1 packets" not in result.stdout
    per = json.loads(invoke("explain", crowd(tmp_path, 0.02), "--json").stdout)
    silent = [b for b in per.values() if not b["packets"]]
    assert silent and all("ns" in b and "ns_per_packet" not in b for b in silent)
    assert "no packet delivered" in result.stdout


# ---- conformance tests without QEMU --------------------------------------------------------------


@pytest.mark.parametrize("required", [False, True])
def test_conformance_without_qemu(required):
    """Without QEMU on the PATH the conformance tests are skipped with one line saying how to run them;
    where they are required (CI), that is an error."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    env.pop("IOVIRT_CONFORMANCE", None)
    if required:
        env["IOVIRT_CONFORMANCE"] = "required"
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:xdist",
                           str(ROOT / "tests" / "conformance")], env=env, capture_output=True, text=True,
                          cwd=ROOT)
    line = "qemu-system-x86_64 not found; install QEMU (apt-get install qemu-system-x86) to run them"
    if required:
        assert done.returncode != 0 and f"conformance tests required: {line}" in done.stdout + done.stderr
    else:
        assert done.returncode == 0, done.stdout[-2000:]
        assert done.stdout.count(f"conformance tests skipped: {line}") == 1
        assert " skipped" in done.stdout and "error" not in done.stdout.lower()


# ---- words ---------------------------------------------------------------------------------------


def test_claims_say_what_they_are():
    """claims --help and the README say which claims, not "the seed's"."""
    help_text = " ".join(invoke("claims", "--help").stdout.split())
    assert "emulation is the slowest" in help_text and "seed" not in help_text
    assert "seed's claims" not in (ROOT / "README.md").read_text()


# ---- reproducibility -----------------------------------------------------------------------------


def test_results_are_reproducible_and_say_what_made_them(tmp_path):
    """Two runs of one scenario: the same figures; both name iovirt's version, the profile's and the
    scenario's SHA-256. A scenario laid out differently has the same digest, one with another figure
    or another profile cost a different one."""
    data = {**yaml.safe_load(EXAMPLE.read_text()), "workloads": SHORT}
    first, second = (iovirt.run(Scenario.from_dict(data)).to_dict() for _ in range(2))
    assert {**first, "wall_time_s": 0} == {**second, "wall_time_s": 0}
    assert first["iovirt"] == iovirt_version() and len(first["scenario_sha256"]) == 64

    reordered = scenario_file(tmp_path, lambda d: "# a comment\n" + yaml.safe_dump(dict(reversed(list(d.items())))))
    assert fingerprint(load_scenario(reordered)) == (first["profile_sha256"], first["scenario_sha256"])
    captured = Scenario.from_dict({**data, "capture": [{"port": "vm1", "file": "vm1.pcapng"}]})
    assert fingerprint(captured)[1] == first["scenario_sha256"]
    longer = Scenario.from_dict({**data, "workloads": [SHORT[0], {**SHORT[1], "duration_ms": 0.6}]})
    assert fingerprint(longer)[1] != first["scenario_sha256"]
    profile = (ROOT / "src/iovirt/profiles/default.yaml").read_text()
    (tmp_path / "p.yaml").write_text(profile.replace("value: ", "value: 1", 1))
    other = Scenario.from_dict({**data, "profile": "p.yaml"}, base=tmp_path)
    assert fingerprint(other)[0] != first["profile_sha256"]


def iovirt_version():
    from importlib.metadata import version
    return version("iovirt")
