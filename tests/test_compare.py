"""iovirt compare: the same workload through each model; the seed's claims
hold as orderings that come out of the mechanisms."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import iovirt
from iovirt.cli.main import app
from iovirt.experiments import compare as cmp

CONFIGS = cmp.configs(["emulated", "paravirt", "passthrough"], ["e1000", "virtio-net", "ixgbe"])


def sweep(profile: str = "default", vms=(1,), sizes=(1500,), client=None) -> list[dict]:
    return cmp.sweep(cmp.points(CONFIGS, list(vms), list(sizes), 1.0, 8, False, profile), client)


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    return {"/".join(x for x in (r["model"], r["device"], r["backend"]) if x): r for r in sweep()}


def test_every_model_delivers_every_frame(rows):
    """Each point's streams arrive whole: nothing dropped on any path."""
    assert set(rows) == {"bare-metal/ixgbe", "emulated/e1000", "paravirt/virtio-net/qemu",
                         "paravirt/virtio-net/vhost-net", "paravirt/virtio-net/vhost-user", "passthrough/ixgbe"}
    assert all(r["delivered"] == r["sent"] > 0 and r["dropped"] == 0 for r in rows.values())


def test_emulation_is_slowest_and_costs_most_cpu_per_gbit(rows):
    """Seed claim: emulation has the lowest throughput and the highest host CPU per Gbit/s."""
    emu = rows["emulated/e1000"]
    others = [r for k, r in rows.items() if k != "emulated/e1000"]
    assert all(emu["throughput_gbps"] < r["throughput_gbps"] for r in others)
    assert all(emu["cpu_per_gbps"] > r["cpu_per_gbps"] for r in others)


def test_paravirtualization_is_much_faster_than_emulation(rows):
    """Seed claim: para-virtualization is much faster (here: at least twice) than emulation,
    with far fewer exits per packet."""
    emu = rows["emulated/e1000"]
    for backend in ("qemu", "vhost-net", "vhost-user"):
        pv = rows[f"paravirt/virtio-net/{backend}"]
        assert pv["throughput_gbps"] > 2 * emu["throughput_gbps"]
        assert pv["events_per_packet"].get("vm_exit", 0) < emu["events_per_packet"]["vm_exit"]


def test_passthrough_is_close_to_bare_metal_with_least_cpu(rows):
    """Seed claim: pass-through performs best of the virtual models on CPU and is close to bare metal."""
    pt = rows["passthrough/ixgbe"]
    assert pt["bare_metal_fraction"] > 0.85
    assert all(pt["cpu_per_gbps"] <= r["cpu_per_gbps"] for k, r in rows.items() if k != "bare-metal/ixgbe")
    assert pt["events_per_packet"].get("vm_exit", 0) < 0.1


def test_cheaper_exits_narrow_the_emulation_gap(tmp_path, rows):
    """Halving vm_exit in the profile raises emulation's share of bare metal more than pass-through's."""
    profile = yaml.safe_load((Path(iovirt.__file__).parent / "profiles" / "default.yaml").read_text())
    profile["costs"]["vm_exit"]["value"] /= 2
    (tmp_path / "cheap-exits.yaml").write_text(yaml.safe_dump(profile))
    cheap = {(r["model"], r["backend"]): r for r in sweep(str(tmp_path / "cheap-exits.yaml"))}
    emu_gain = cheap[("emulated", None)]["bare_metal_fraction"] / rows["emulated/e1000"]["bare_metal_fraction"]
    pt_gain = cheap[("passthrough", None)]["bare_metal_fraction"] / rows["passthrough/ixgbe"]["bare_metal_fraction"]
    assert emu_gain > 1.05 and emu_gain > pt_gain


def test_dask_and_serial_sweeps_are_identical():
    """The same sweep on a Dask LocalCluster gives the same rows as a serial run."""
    from distributed import Client, LocalCluster

    serial = sweep(vms=(1, 2))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        parallel = sweep(vms=(1, 2), client=client)
    assert parallel == serial


def test_cli_compare_json_out_and_plot(tmp_path):
    """compare --json prints a row per point, --out writes them, --plot draws a PNG."""
    out, png = tmp_path / "rows.csv", tmp_path / "cmp.png"
    result = CliRunner().invoke(app, ["compare", "--models", "emulated,passthrough", "--devices", "e1000,ixgbe",
                                      "--vms", "1,2", "--sizes", "64", "--duration-ms", "0.5", "--json",
                                      "--out", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["model"], r["vms"]) for r in rows] == [("bare-metal", 1), ("emulated", 1), ("emulated", 2),
                                                     ("passthrough", 1), ("passthrough", 2)]
    for key in ("throughput_gbps", "pps", "latency_us", "host_cpu_cores", "cpu_per_gbps", "events_per_packet"):
        assert all(key in r for r in rows)
    assert len(pd.read_csv(out)) == len(rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--models", "emulation"], "--models: expected emulated, paravirt, passthrough or sriov, got emulation"),
    (["--vms", "1,x"], "--vms: expected comma-separated integers, got '1,x'"),
    (["--sizes", "0"], "--sizes: expected 44..1500 (IPv4 packets that fit one 1500-byte-MTU frame), got 0"),
    (["--sizes", "64,100000"], "--sizes: expected 44..1500 (IPv4 packets that fit one 1500-byte-MTU frame), "
                               "got 100000"),
    (["--profile", "nope"], "profile 'nope': neither a bundled profile"),
    (["--cores", "2147483648"], "--cores: expected 1..8192 (a host's cores), got 2147483648"),
    (["--cores", "0"], "--cores: expected 1..8192 (a host's cores), got 0"),
    (["--vms", "1,5000"], "--vms: expected 1..4096 (VMs one run holds), got 5000"),
    (["--models", "passthrough", "--vms", "1,300"], "passthrough-ixgbe-300vm-64B: hosts[0].nics: expected at most "
                                                    "253 physical NICs"),
    (["--duration-ms", "1e6"], "--duration-ms: expected more than 0 and at most 10000 ms of simulated time, "
                               "got 1e+06"),
    (["--out", "missing-dir/rows.csv"], "--out: expected a file in an existing directory, got 'missing-dir/rows.csv'"),
    (["--plot", "."], "--plot: expected a file ending in .png, got '.'"),
    (["--scheduler", "nonsense"], "--scheduler: cannot reach a Dask scheduler at 'nonsense'"),
])
def test_cli_compare_bad_input_is_one_line(args, message):
    """Bad compare options: one error line naming the option, exit 2."""
    result = CliRunner().invoke(app, ["compare", *args])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_a_sweep_checks_every_point_before_running_any(monkeypatch):
    """A point the schema refuses (5000 VMs) stops the sweep before its first point runs."""
    from iovirt.experiments.scenario import ScenarioError

    def run_point(point):
        raise AssertionError(f"{point['scenario']['name']} ran")

    monkeypatch.setattr(cmp, "run_point", run_point)
    todo = cmp.points(cmp.configs(["emulated"], ["e1000"]), [1, 5000], [64], 1.0, 4, False, "default")
    with pytest.raises(ScenarioError, match=r"^emulated-e1000-5000vm-64B: vms: expected at most 4096 VMs"):
        cmp.sweep(todo)


def test_configs_put_each_device_on_each_hypervisor_that_offers_it():
    labels = [c.label for c in cmp.configs(["emulated", "paravirt"], ("e1000", "virtio-net", "xen-netfront", "vmxnet3"),
                                           ["kvm", "xen", "esxi"])]
    assert labels == ["emulated/e1000@kvm", "paravirt/virtio-net/qemu@kvm", "paravirt/virtio-net/vhost-net@kvm",
                      "paravirt/virtio-net/vhost-user@kvm", "emulated/e1000@xen", "paravirt/xen-netfront@xen",
                      "emulated/e1000@esxi", "paravirt/vmxnet3@esxi"]


def test_cli_compare_sets_the_same_vm_on_each_hypervisor_side_by_side():
    """VMXNET3 on ESXi beside virtio-net on KVM: one row each, the host's hypervisor in the row and the table."""
    args = ["compare", "--models", "paravirt", "--devices", "virtio-net,vmxnet3", "--hypervisors", "kvm,esxi",
            "--vms", "1", "--sizes", "1500", "--duration-ms", "0.5"]
    rows = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert [(r["device"], r["backend"], r["hypervisor"]) for r in rows] == [
        ("ixgbe", None, None), ("virtio-net", "qemu", "kvm"), ("virtio-net", "vhost-net", "kvm"),
        ("virtio-net", "vhost-user", "kvm"), ("vmxnet3", None, "esxi")]
    assert rows[-1]["events_per_packet"]["vmm_handle"] > 0 and "vmm_handle" not in rows[2]["events_per_packet"]
    table = CliRunner().invoke(app, args, env={"COLUMNS": "250"}).stdout
    assert "hypervisor" in table and "esxi" in table


@pytest.mark.parametrize("args, message", [
    (["--hypervisors", "kvm,vmware"], "--hypervisors: expected kvm, xen, esxi, hyperv, got vmware"),
    (["--models", "paravirt", "--devices", "vmxnet3", "--hypervisors", "kvm"],
     "--models/--devices/--hypervisors: no implemented device among paravirt / vmxnet3 that kvm offers"),
])
def test_cli_compare_bad_hypervisors_is_one_line(args, message):
    result = CliRunner().invoke(app, ["compare", *args])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
