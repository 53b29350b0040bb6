import json
import subprocess
import sys
import types
from functools import reduce
from operator import getitem
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from iovirt.cli import render
from iovirt.cli.main import app

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "emulated-e1000.yaml"
PROFILE = "{name: tiny, description: test, cpu: {model: test, ghz: 1.0, source: test}, costs: {}}"
RESULT = {  # the "run --json" example of DESIGN.md
    "scenario": "two-vms-e1000", "sim_time_s": 0.01, "wall_time_s": 0.8,
    "flows": [{"workload": 0, "type": "udp_stream", "src": "vm1", "dst": "vm2", "model": "emulated",
               "device": "e1000", "packet_size": 1500, "sent": 812, "delivered": 812, "dropped": 0,
               "corrupted": 0, "out_of_order": 0, "throughput_gbps": 0.97, "pps": 81200,
               "latency_us": {"p50": 41.0, "p99": 88.0, "max": 120.0},
               "events_per_packet": {"vm_exit": 2.1, "interrupt": 0.4, "copy": 2.0}}],
    "resources": [{"name": "host0/vm1/vcpu0", "kind": "vcpu", "busy_s": 0.008, "utilization": 0.8}],
    "events": {"vm_exit": 1705, "interrupt": 330},
}


def put(*path, value):
    """An edit that sets data[path[0]]...[path[-1]] = value; a string replaces the whole file."""
    def edit(data):
        reduce(getitem, path[:-1], data)[path[-1]] = value
        return data
    return edit


def raw(text):
    return lambda data: text


def write_scenario(tmp_path, edit=lambda data: data):
    """The example scenario, edited, next to a tiny profile it names by relative path."""
    (tmp_path / "tiny.yaml").write_text(PROFILE)
    data = edit({**yaml.safe_load(EXAMPLE.read_text()), "profile": "tiny.yaml"})
    path = tmp_path / "s.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def invoke(*args):
    return CliRunner(env={"COLUMNS": "250"}).invoke(app, [str(arg) for arg in args])


@pytest.fixture
def fake_runner(monkeypatch):
    """Stands in for iovirt.experiments.runner until the real one lands."""
    result = types.SimpleNamespace(to_dict=lambda: RESULT, flows=pd.DataFrame([{"workload": 0, "sent": 812}]))
    module = types.ModuleType("iovirt.experiments.runner")
    module.run = lambda scenario: result
    monkeypatch.setitem(sys.modules, "iovirt.experiments.runner", module)


BAD = [
    ("wrong key", put("hosts", 0, "corez", value=4),
     "hosts[0].corez: unknown key (expected one of name, cores, nics)"),
    ("wrong type", put("hosts", 0, "cores", value="many"), "hosts[0].cores: expected an integer, got 'many'"),
    ("unknown device", put("vms", 0, "nics", 0, "device", value="e1001"),
     "vms[0].nics[0].device: expected one of e1000, rtl8139, pcnet, tulip for model 'emulated', got 'e1001'"),
    ("device of another model", put("vms", 1, "nics", 0, "device", value="virtio-net"),
     "vms[1].nics[0].device: expected one of e1000, rtl8139, pcnet, tulip for model 'emulated', "
     "got 'virtio-net' (a paravirt device)"),
    ("VM on missing host", put("vms", 1, "host", value="host9"),
     "vms[1].host: expected one of the hosts (host0), got 'host9'"),
    ("duplicate MAC", put("vms", 1, "nics", 0, "mac", value="52:54:00:00:00:01"),
     "vms[1].nics[0].mac: expected a unique MAC, got '52:54:00:00:00:01' again (first at vms[0].nics[0].mac)"),
    ("malformed IP", put("vms", 0, "nics", 0, "ip", value="10.0.0.256/24"),
     "vms[0].nics[0].ip: expected an IPv4 address with prefix length, like 10.0.0.1/24, got '10.0.0.256/24'"),
    ("malformed MAC", put("vms", 0, "nics", 0, "mac", value="52:54:00:00:01"),
     "vms[0].nics[0].mac: expected a MAC address of 6 colon-separated hex octets"),
    ("unknown workload type", put("workloads", 0, "type", value="pong"),
     "workloads[0].type: expected 'ping', 'udp_stream' or 'request_response', got 'pong'"),
    ("workload names missing VM", put("workloads", 1, "dst", value="vm3"),
     "workloads[1].dst: expected one of the VMs (vm1, vm2) or 'wire', got 'vm3'"),
    ("passthrough without uplink",
     put("vms", 0, "nics", 0, value={"model": "passthrough", "device": "ixgbe", "mac": "52:54:00:00:00:01",
                                     "ip": "10.0.0.1/24"}),
     "vms[0].nics[0].uplink: expected one of host0's physical NICs (none) for model 'passthrough', got nothing"),
    ("unknown profile", put("profile", value="no-such-profile"), "profile: profile 'no-such-profile'"),
    ("YAML syntax error", raw("name: x\nhosts: [a\nvms: []\n"), "line 3, column 4: invalid YAML"),
    ("empty file", raw(""), "(top level): expected a scenario mapping, got an empty file"),
    ("top-level list", raw("- name: x\n- hosts: []\n"), "(top level): expected a mapping, got a list of 2"),
]


@pytest.mark.parametrize("edit, expected", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_scenario_is_one_line_exit_2(tmp_path, edit, expected):
    """A bad scenario exits 2 with one stderr line naming the file, the path and the expectation."""
    path = write_scenario(tmp_path, edit)
    result = invoke("validate", path)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {path}: {expected}")


def test_missing_file_is_one_line_exit_2(tmp_path):
    """A scenario path that does not exist says so, in one line, exit 2."""
    result = invoke("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.yaml'}: cannot read: No such file or directory\n"


def test_console_script_prints_no_traceback(tmp_path):
    """The installed iovirt script reports bad input in one line, without a traceback."""
    path = write_scenario(tmp_path, put("hosts", 0, "cores", value="many"))
    proc = subprocess.run([Path(sys.executable).parent / "iovirt", "validate", path], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {path}: hosts[0].cores: expected an integer, got 'many'\n"


def test_valid_scenario_validates(tmp_path):
    """The two-VM e1000 example validates and is summarised on one line."""
    result = invoke("validate", write_scenario(tmp_path))
    assert result.exit_code == 0
    assert result.stdout == "ok: emulated-e1000 (1 hosts, 2 VMs, 2 workloads)\n"


def test_devices_json_lists_e1000_implemented():
    """devices --json lists every device, e1000 implemented and virtio-net with its backends."""
    devices = {d["name"]: d for d in json.loads(invoke("devices", "--json").stdout)}
    assert devices["e1000"]["implemented"] and devices["e1000"]["model"] == "emulated"
    assert devices["virtio-net"]["backends"] == ["qemu", "vhost-net", "vhost-user"]
    assert len(devices) == 10


def test_devices_table_shows_status():
    """The devices table has a row per device with its status."""
    result = invoke("devices")
    assert result.exit_code == 0 and "implemented" in result.stdout and "planned" in result.stdout


def test_run_json_prints_result_dict(tmp_path, fake_runner):
    """run --json prints the runner's result as one JSON object."""
    result = invoke("run", write_scenario(tmp_path), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == RESULT


@pytest.mark.parametrize("suffix, read", [(".csv", pd.read_csv), (".parquet", pd.read_parquet)])
def test_run_out_writes_flows(tmp_path, fake_runner, suffix, read):
    """run --out writes the flows table as CSV or Parquet by extension."""
    out = tmp_path / f"flows{suffix}"
    result = invoke("run", write_scenario(tmp_path), "--out", out)
    assert result.exit_code == 0 and read(out).to_dict("records") == [{"workload": 0, "sent": 812}]


def test_run_out_bad_extension_exit_2(tmp_path, fake_runner):
    """run --out with an extension other than .parquet or .csv exits 2 with one line."""
    result = invoke("run", write_scenario(tmp_path), "--out", tmp_path / "flows.txt")
    assert result.exit_code == 2
    assert result.stderr == f"error: --out: expected a file ending in .parquet or .csv, got '{tmp_path}/flows.txt'\n"


def test_run_tables_render_design_example(tmp_path, fake_runner):
    """run without --json prints the flows, resources and events tables."""
    result = invoke("run", write_scenario(tmp_path))
    assert result.exit_code == 0 and "vm1→vm2" in result.stdout and "host0/vm1/vcpu0" in result.stdout


def test_render_tables_from_example_dict():
    """The render functions turn the DESIGN.md result dict into tables with its numbers."""
    console = Console(record=True, width=250)
    console.print(*render.result_tables(RESULT))
    text = console.export_text()
    for cell in ("emulated/e1000", "0.970", "81,200", "41.0", "88.0", "80.0%", "8.000", "vm_exit 2.10  copy 2.00"):
        assert cell in text
