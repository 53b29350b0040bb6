import json
import subprocess
import sys
from collections import Counter
from functools import reduce
from importlib.metadata import version
from ipaddress import ip_address
from operator import getitem
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
import yaml
from rich.console import Console
from typer.testing import CliRunner

import iovirt
from iovirt.cli import render
from iovirt.cli.main import app
from iovirt.experiments.catalog import devices_for
from iovirt.experiments.results import FlowResult, Result
from iovirt.experiments.workloads import FlowStats

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "emulated-e1000.yaml"
PROFILE = (Path(__file__).parent.parent / "src/iovirt/profiles/default.yaml").read_text().replace(
    "name: default", "name: tiny", 1)
RESULT = {  # a run --json object as the README documents it, before links and drops existed
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


def invoke(*args, columns=250):
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(app, [str(arg) for arg in args])


def strict_json(text):
    """json.loads that rejects NaN and Infinity, which are not JSON."""
    def reject(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=reject)


def assert_json_types(value):
    """Only dicts with string keys, lists, strings, numbers, booleans and None, all the way down."""
    if isinstance(value, dict):
        assert all(type(key) is str for key in value)
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            assert_json_types(item)
    else:
        assert type(value) in (str, int, float, bool, type(None)), type(value)


@pytest.fixture
def small(tmp_path):
    """The example scenario cut short: 2 pings and a 1 ms UDP stream between two e1000 VMs."""
    workloads = [{"type": "ping", "src": "vm1", "dst": "vm2", "count": 2, "duration_ms": 1},
                 {"type": "udp_stream", "src": "vm1", "dst": "vm2", "packet_size": 1500, "duration_ms": 1}]
    return write_scenario(tmp_path, lambda data: {**data, "profile": "default", "workloads": workloads})


@pytest.fixture
def small_json(small):
    """The ``run --json`` object of the small scenario, parsed as strict JSON."""
    result = invoke("run", small, "--json")
    assert result.exit_code == 0 and result.stdout.count("\n") == 1
    return strict_json(result.stdout)


EMULATED = ", ".join(devices_for("emulated"))          # as the catalogue lists them
BAD = [
    ("wrong key", put("hosts", 0, "corez", value=4),
     "hosts[0].corez: unknown key (expected one of name, cores, nics, posted_interrupts, iommu_page_kb, iotlb_entries, hypervisor, pml)"),
    ("wrong type", put("hosts", 0, "cores", value="many"), "hosts[0].cores: expected an integer, got 'many'"),
    ("unknown device", put("vms", 0, "nics", 0, "device", value="e1001"),
     f"vms[0].nics[0].device: expected one of {EMULATED} for model 'emulated', got 'e1001'"),
    ("device of another model", put("vms", 1, "nics", 0, "device", value="virtio-net"),
     f"vms[1].nics[0].device: expected one of {EMULATED} for model 'emulated', "
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
     "workloads[0].type: expected 'ping', 'udp_stream', 'request_response', 'tcp_stream', 'tcp_rr' or "
     "'memory_dirty', got 'pong'"),
    ("message size on a UDP stream", put("workloads", 1, "message_size", value=1000),
     "workloads[1].message_size: expected no message_size for a udp_stream workload (only tcp_stream takes one)"),
    ("TCP_RR request larger than one write", put("workloads", 1, value={"type": "tcp_rr", "src": "vm1", "dst": "vm2",
                                                                       "request_size": 70000}),
     "workloads[1].request_size: expected at most 65536 bytes (one write of the stream's pattern), got 70000"),
    ("a cable losing every frame", put("hosts", 0, "nics", value=[{"name": "eth0", "frame_error_rate": 1.0}]),
     "hosts[0].nics[0].frame_error_rate: expected a number < 1, got 1.0"),
    ("workload names missing VM", put("workloads", 1, "dst", value="vm3"),
     "workloads[1].dst: expected one of the VMs (vm1, vm2) or 'wire', got 'vm3'"),
    ("passthrough without uplink",
     put("vms", 0, "nics", 0, value={"model": "passthrough", "device": "ixgbe", "mac": "52:54:00:00:00:01",
                                     "ip": "10.0.0.1/24"}),
     "vms[0].nics[0].uplink: expected one of host0's physical NICs (none) for model 'passthrough', got nothing"),
    ("migration to an unknown host", put("migration", value={"vm": "vm1", "to": "host9"}),
     "migration.to: expected one of the hosts (host0), got 'host9'"),
    ("migration to its own host", put("migration", value={"vm": "vm1", "to": "host0"}),
     "migration.to: expected a host other than vm1's own (host0)"),
    ("migration link of 0 Gbit/s", put("migration", value={"link_gbps": 0}),
     "migration.link_gbps: expected a number > 0, got 0"),
    ("memory_dirty without a rate", put("workloads", 0, value={"type": "memory_dirty", "src": "vm1"}),
     "workloads[0].dirty_mib_s: expected the rate the guest dirties memory at, in MiB/s (missing)"),
    ("memory_dirty with a destination", put("workloads", 0, value={"type": "memory_dirty", "src": "vm1",
                                                                  "dst": "vm2", "dirty_mib_s": 10}),
     "workloads[0].dst: expected no dst for memory_dirty (the guest writes its own memory), got 'vm2'"),
    ("working set larger than the VM", put("workloads", 0, value={"type": "memory_dirty", "src": "vm1",
                                                                 "dirty_mib_s": 10, "working_set_mb": 500}),
     "workloads[0].working_set_mb: expected at most 224 MiB (vm1 has 256), got 500"),
    ("stream without a destination", put("workloads", 1, "dst", value=None),
     "workloads[1].dst: expected a destination VM or 'wire' (missing)"),
    ("unknown profile", put("profile", value="no-such-profile"), "profile: profile 'no-such-profile'"),
    ("YAML syntax error", raw("name: x\nhosts: [a\nvms: []\n"), "line 3, column 4: invalid YAML"),
    ("empty file", raw(""), "(top level): expected a scenario mapping, got an empty file"),
    ("top-level list", raw("- name: x\n- hosts: []\n"), "(top level): expected a mapping, got a list of 2"),
    ("lists nested 1000 deep", raw("name: x\nhosts: " + "[" * 1000 + "]" * 1000 + "\n"),
     "line 2, column 39: expected at most 32 levels of nested lists and mappings, got deeper"),
    ("mappings nested 1000 deep", raw("name: x\nvms:\n  - " + "{a: " * 1000 + "1" + "}" * 1000 + "\n"),
     "line 3, column 125: expected at most 32 levels of nested lists and mappings, got deeper"),
    ("more VM memory than a KVM memory slot", put("vms", 0, "memory_mb", value=1_000_000_000),
     "vms[0].memory_mb: expected at most 8388607 MiB (one KVM memory slot, KVM_MEM_MAX_NR_PAGES: 2^31 - 1 "
     "pages of 4 KiB), got 1000000000"),
    ("migration link failing before the migration",
     put("migration", value={"at_ms": 3, "fail_at_ms": 1}),
     "migration.fail_at_ms: expected a time at or after at_ms (3 ms): both count from the workloads' start, "
     "and the link cannot fail before the migration starts on it, got 1"),
]


@pytest.mark.parametrize("edit, expected", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_scenario_is_one_line_exit_2(tmp_path, edit, expected):
    """A bad scenario exits 2 with one stderr line naming the file, the path and the expectation."""
    path = write_scenario(tmp_path, edit)
    result = invoke("validate", path)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {path}: {expected}")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_deep_nesting_is_one_line_exit_2(tmp_path, command):
    """A document nested 100,000 levels deep is refused before the parser recurses, by validate and run alike."""
    path = write_scenario(tmp_path, raw("name: x\nworkloads: " + "[" * 100_000 + "]" * 100_000 + "\n"))
    result = invoke(command, path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {path}: line 2, column 43: expected at most 32 levels of nested")


def test_deeply_nested_profile_is_one_line_exit_2(tmp_path):
    """A cost profile nested thousands of levels deep, named by a scenario or shown, is refused in one line."""
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: deep\ncosts: " + "[" * 5000 + "]" * 5000 + "\n")
    path = write_scenario(tmp_path, put("profile", value="deep.yaml"))
    expected = f"{deep}: line 2, column 39: expected at most 32 levels of nested lists and mappings"
    result = invoke("validate", path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {path}: profile: {expected}")
    shown = invoke("profile", "show", deep)
    assert shown.exit_code == 2 and shown.stderr.startswith(f"error: {expected}")


def test_oversize_file_is_one_line_exit_2(tmp_path):
    """A file beyond 16 MiB is refused without being read in whole (or parsed)."""
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (16 << 20) + b"\n")
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert result.stderr == (f"error: {path}: (file): expected a scenario of at most 16 MiB "
                             f"(4096 VMs with 29 NICs each fit in less), got more\n")


@pytest.mark.parametrize("edit, expected", [
    (put("vms", 0, "memory_mb", value=1_000_000_000), "vms[0].memory_mb: expected at most 8388607 MiB"),
    (put("hosts", 0, "cores", value=2_147_483_648), "hosts[0].cores: expected at most 8192 cores"),
    (put("vms", 0, "vcpus", value=1_000_000), "vms[0].vcpus: expected at most 1024 vCPUs on a kvm host"),
    (put("workloads", 1, "duration_ms", value=65_536), "workloads[1].duration_ms: expected at most 10000 ms"),
])
def test_run_refuses_sizes_no_system_runs(tmp_path, edit, expected):
    """run refuses, before building anything, sizes that passed validation before and then ran out of
    memory or ran without end."""
    path = write_scenario(tmp_path, edit)
    result = invoke("run", path)
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {path}: {expected}")


def test_run_reports_guest_memory_it_cannot_reserve(tmp_path, monkeypatch):
    """When the host refuses the mmap of a VM's RAM (ENOMEM: overcommit), run names the VM, exit 2."""
    import errno
    import mmap as real_mmap

    from iovirt.mem import guest_memory

    class Refusing:
        def mmap(self, fileno, length, *args, **kwargs):
            if length >= 4 << 30:
                raise OSError(errno.ENOMEM, "Cannot allocate memory")
            return real_mmap.mmap(fileno, length, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(real_mmap, name)

    monkeypatch.setattr(guest_memory, "mmap", Refusing())
    path = write_scenario(tmp_path, put("vms", 1, "memory_mb", value=8192))
    result = invoke("run", path)
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr == (f"error: {path}: vms[1].memory_mb: cannot reserve 8192 MiB of guest memory for vm2 "
                             f"on host0 (its VMs so far: 256 MiB): Cannot allocate memory; give it less, or "
                             f"allow this machine more overcommit (vm.overcommit_memory)\n")


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
    assert len(devices) == 12


def test_devices_table_shows_status():
    """The devices table has a row per device with its status."""
    result = invoke("devices")
    rows = [line for line in result.stdout.splitlines() if line.split()[:1] in (["netvsc"], ["e1000"])]
    assert result.exit_code == 0 and len(rows) == 2 and all("implemented" in row for row in rows)


def test_help_lists_each_command_on_one_line():
    """iovirt --help gives every command a one-line description, fitting 80 columns, as does COMMAND --help."""
    commands = typer.main.get_command(app).commands
    assert {"validate", "devices", "run"} <= set(commands)
    top = invoke("--help", columns=80)
    assert top.exit_code == 0
    for name, command in commands.items():
        assert command.help and "\n" not in command.help
        assert any(line.split()[1:2] == [name] and command.help in line for line in top.stdout.splitlines())
        assert command.help in invoke(name, "--help").stdout


def test_version_prints_package_version():
    """iovirt --version prints the installed package's version."""
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"iovirt {version('iovirt')}\n"


def test_run_json_is_one_strict_json_object(small_json):
    """run --json prints one object with the documented keys, in JSON types only."""
    assert_json_types(small_json)
    assert set(RESULT) <= set(small_json) and small_json["scenario"] == "emulated-e1000"
    assert small_json["sim_time_s"] > 0 and small_json["wall_time_s"] >= 0
    assert [(f["workload"], f["type"]) for f in small_json["flows"]] == [(0, "ping"), (1, "udp_stream")]
    for flow in small_json["flows"]:
        assert set(RESULT["flows"][0]) <= set(flow) and set(flow["latency_us"]) == {"p50", "p99", "max"}
        assert (flow["src"], flow["dst"], flow["model"], flow["device"]) == ("vm1", "vm2", "emulated", "e1000")
    assert small_json["resources"] and all(set(r) == set(RESULT["resources"][0]) for r in small_json["resources"])
    assert small_json["events"]["vm_exit"] > 0


def test_run_udp_stream_delivers_every_datagram_intact(small_json):
    """The 1 ms UDP stream over emulated e1000 loses and corrupts nothing, and its figures are measured."""
    udp = small_json["flows"][1]
    assert udp["sent"] > 0 and udp["delivered"] == udp["sent"] and udp["corrupted"] == 0 and udp["dropped"] == 0
    assert udp["throughput_gbps"] > 0 and udp["pps"] > 0 and udp["events_per_packet"]["vm_exit"] > 0
    assert 0 < udp["latency_us"]["p50"] <= udp["latency_us"]["p99"] <= udp["latency_us"]["max"]


@pytest.mark.parametrize("suffix, read", [(".csv", pd.read_csv), (".parquet", pd.read_parquet)])
def test_run_out_writes_flows(tmp_path, small, suffix, read):
    """run --out writes the flows table as CSV or Parquet by extension, one row per flow of the JSON."""
    out = tmp_path / f"flows{suffix}"
    result = invoke("run", small, "--json", "--out", out)
    assert result.exit_code == 0
    flows, table = strict_json(result.stdout)["flows"], read(out)
    assert len(table) == len(flows) and table["delivered"].tolist() == [f["delivered"] for f in flows]


def test_run_out_bad_extension_exit_2(tmp_path, small):
    """run --out with an extension other than .parquet or .csv exits 2 with one line."""
    result = invoke("run", small, "--out", tmp_path / "flows.txt")
    assert result.exit_code == 2
    assert result.stderr == f"error: --out: expected a file ending in .parquet or .csv, got '{tmp_path}/flows.txt'\n"


def test_run_tables_show_flows_and_resources(small, small_json):
    """run without --json prints tables naming every flow and every resource of the run."""
    result = invoke("run", small)
    assert result.exit_code == 0
    for name in [f"{f['src']}→{f['dst']}" for f in small_json["flows"]] + [r["name"] for r in small_json["resources"]]:
        assert name in result.stdout


def test_python_api_matches_cli_json(small, small_json):
    """iovirt.run gives DataFrames and the same dict as run --json, bar the wall time."""
    result = iovirt.run(iovirt.load_scenario(small))
    assert isinstance(result.flows, pd.DataFrame) and isinstance(result.resources, pd.DataFrame)
    assert len(result.flows) == len(small_json["flows"]) and len(result.resources) == len(small_json["resources"])
    data = result.to_dict()
    assert_json_types(data)
    assert {**data, "wall_time_s": None} == {**small_json, "wall_time_s": None}


def test_flow_without_samples_has_null_latency():
    """A flow that delivered nothing has null latencies: strict JSON, and "-" in the table."""
    flow = FlowResult.of(FlowStats(0, "udp_stream", "vm1", "vm2", 1500), ("emulated", "e1000", None), Counter(), 0, 0)
    data = Result({**RESULT, "flows": [flow.row]}).to_dict()
    assert data["flows"][0]["latency_us"] == {"p50": None, "p99": None, "max": None}
    assert strict_json(json.dumps(data)) == data
    console = Console(record=True, width=250)
    console.print(render.flows_table(data))
    row = next(line for line in console.export_text().splitlines() if "vm1→vm2" in line)
    assert row.split()[-2:] == ["-", "-"]


def test_result_holds_json_types_only():
    """Result turns numpy scalars into numbers and addresses into text, and refuses NaN."""
    data = Result({**RESULT, "scenario": ip_address("10.0.0.1"), "events": {"vm_exit": np.int64(3)}}).to_dict()
    assert (data["scenario"], data["events"]) == ("10.0.0.1", {"vm_exit": 3})
    assert_json_types(data)
    with pytest.raises(ValueError):
        Result({**RESULT, "sim_time_s": float("nan")})


def test_render_tables_from_example_dict():
    """The render functions turn a minimal result dict into tables with its numbers."""
    console = Console(record=True, width=250)
    console.print(*render.result_tables(RESULT))
    text = console.export_text()
    for cell in ("emulated/e1000", "0.970", "81,200", "41.0", "88.0", "80.0%", "8.000", "vm_exit 2.10  copy 2.00"):
        assert cell in text


def test_explain_attributes_time_to_mechanisms_and_resources():
    """explain --json: ns per packet by event and resource kind; emulation's exits land on the vCPU,
    a pass-through VM's time is mostly guest stack, NIC DMA and wire."""
    emu = json.loads(invoke("explain", EXAMPLE, "--pooled", "--json").stdout)["ns_per_packet"]
    pt = json.loads(invoke("explain", EXAMPLE.parent / "passthrough-ixgbe.yaml", "--pooled", "--json").stdout)["ns_per_packet"]
    assert emu["vm_exit"]["vcpu"] > 0 and emu["mmio_emulate"]["vcpu"] > 0
    assert pt["wire_tx"]["wire"] > 0 and pt["dma"]["nic"] > 0
    assert pt.get("vm_exit", {}).get("vcpu", 0) < 0.05 * emu["vm_exit"]["vcpu"]
    assert sum(sum(r.values()) for r in pt.values()) < sum(sum(r.values()) for r in emu.values())


def test_profile_list_and_show():
    """profile list names the bundled profiles; profile show gives every cost with its source."""
    assert invoke("profile", "list").stdout.split() == ["amd-svm", "default"]
    shown = json.loads(invoke("profile", "show", "amd-svm", "--json").stdout)
    assert shown["name"] == "amd-svm" and all(c["source"] for c in shown["costs"].values())
    bad = invoke("profile", "show", "nope")
    assert bad.exit_code == 2 and "neither a bundled profile" in bad.stderr


def test_the_amd_profile_moves_time_between_mechanisms():
    """With the amd-svm profile each exit of an emulated packet takes less time (a cheaper VMRUN
    round trip) but the guest stack more (the same cycles at a slower clock) than with the default."""
    data = yaml.safe_load(EXAMPLE.read_text())
    per_exit, stack = {}, {}
    for profile in ("default", "amd-svm"):
        result = iovirt.run(iovirt.Scenario.from_dict(data | {"profile": profile}))
        spent = result.breakdown()["ns_per_packet"]
        exits = result.to_dict()["flows"][1]["events_per_packet"]["vm_exit"]
        per_exit[profile] = spent["vm_exit"]["vcpu"] / exits
        stack[profile] = spent["guest_stack"]["vcpu"]
    assert per_exit["amd-svm"] < per_exit["default"]
    assert stack["amd-svm"] > stack["default"]


MIGRATION = ROOT / "examples" / "migrate-e1000-kvm-to-xen.yaml"


def test_migrate_json_has_the_documented_keys():
    """migrate --json: the documented keys, a move that succeeded, frames lost counted from the flows."""
    result = invoke("migrate", MIGRATION, "--json")
    assert result.exit_code == 0, result.stderr
    m = strict_json(result.stdout)
    assert {"vm", "from", "to", "model", "result", "reason", "downtime_ms", "total_time_ms", "rounds",
            "pages_sent", "state_bytes", "vcpu_state_bytes", "frames_lost"} <= m.keys()
    assert (m["vm"], m["from"], m["to"], m["result"]) == ("vm1", "kvm0", "xen0", "ok")
    assert m["frames_lost"] == sum(f["sent"] - f["delivered"] for f in m["flows"])
    assert 0 < m["downtime_ms"] < m["total_time_ms"]


def test_migrate_check_prints_the_matrix():
    """--check runs nothing and lists every VM against every other host."""
    result = invoke("migrate", MIGRATION, "--check", "--json")
    assert result.exit_code == 0
    rows = strict_json(result.stdout)
    assert {(r["vm"], r["to"], r["result"]) for r in rows} == {("vm1", "xen0", "ok"), ("vm2", "xen0", "ok")}
    table = invoke("migrate", MIGRATION, "--check").stdout
    assert "why not" in table and "vm2" in table


@pytest.mark.parametrize("args, expected", [
    (("--vm", "vm9"), "migrate: --vm: expected one of the VMs (vm1, vm2), got 'vm9'"),
    (("--to", "kvm0"), "migrate: --to: expected a host other than vm1's (xen0), got 'kvm0'")])
def test_migrate_bad_target_is_one_line_exit_2(args, expected):
    """A VM or host the scenario does not have: one line, exit 2."""
    result = invoke("migrate", MIGRATION, *args)
    assert result.exit_code == 2 and result.stderr == f"error: {expected}\n"
