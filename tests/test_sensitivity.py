"""Which prices matter: the sensitivity sweep, the profile's brackets, and the
prices of copies and DMA that it exposes."""

from __future__ import annotations

import json

import pytest
import yaml

from iovirt.cli.main import app
from iovirt.experiments import sensitivity as sens
from iovirt.experiments.scenario import Scenario, ScenarioError
from iovirt.mem.dma import Dma, pcie_bytes
from iovirt.mem.guest_memory import GuestMemory
from iovirt.sim.profile import ProfileError, bundled_profiles, load_profile
from iovirt.sim.resource import Ledger, Resource

DURATION_MS = 0.5


def _stream(hypervisor: str, nic: dict) -> dict:
    return {"name": f"{hypervisor}-stream", "hosts": [{"name": "h", "cores": 4, "hypervisor": hypervisor,
                        "nics": [{"name": "pnic0", "kind": "x82599", "link_gbps": 10}]}],
            "vms": [{"name": "vm", "host": "h", "nics": [nic | {"mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24"}]}],
            "workloads": [{"type": "udp_stream", "src": "vm", "dst": "wire", "duration_ms": 5, "warmup_ms": 1}]}


KVM = _stream("kvm", {"model": "emulated", "device": "e1000"})
XEN = _stream("xen", {"model": "paravirt", "device": "xen-netfront"})


def _sensitivity(doc: dict, costs: list[str]) -> dict:
    return sens.sensitivity(Scenario.from_dict(doc), costs, 0.5, DURATION_MS)


def test_a_cost_on_the_path_moves_a_figure_and_one_off_it_moves_none():
    """On a KVM host an exit moves the e1000 stream's figures; Xen's grant copy, never charged there, moves nothing."""
    result = _sensitivity(KVM, ["vm_exit", "grant_copy", "evtchn_send"])
    moved = {row["cost"] for row in result["rows"]}
    assert moved == {"vm_exit"}
    assert set(result["unaffected"]) == {"grant_copy", "evtchn_send"}


def test_on_a_xen_host_the_grant_copy_moves_the_figures():
    """The same Xen cost on a Xen PV stream does move them: the verdict comes out the other way."""
    result = _sensitivity(XEN, ["grant_copy", "ioeventfd"])
    assert {row["cost"] for row in result["rows"]} == {"grant_copy"}
    assert result["unaffected"] == ["ioeventfd"]


def test_dearer_exits_cost_the_emulated_stream_throughput_and_cpu():
    """An exit at 1.5x its price gives no more throughput and no less host CPU per Gbit/s than at 0.5x."""
    row = next(r for r in _sensitivity(KVM, ["vm_exit"])["rows"])
    gbps, cpu = row["figures"]["throughput_gbps"], row["figures"]["cpu_per_gbps"]
    assert gbps["high"] < gbps["base"] < gbps["low"]
    assert cpu["high"] > cpu["base"] > cpu["low"]


def test_rows_come_biggest_change_first():
    """Each row's impact is the largest of its figures' changes, and rows are in falling impact."""
    rows = _sensitivity(KVM, ["vm_exit", "guest_stack", "irq_entry"])["rows"]
    for row in rows:
        changes = [abs(f[k]) for f in row["figures"].values() for k in ("low_pct", "high_pct") if f[k] is not None]
        assert row["impact_pct"] == max(changes)
    assert [r["impact_pct"] for r in rows] == sorted((r["impact_pct"] for r in rows), reverse=True)


def test_dask_and_serial_runs_are_identical():
    """The same costs on a Dask LocalCluster give the same table as a serial run."""
    from distributed import Client, LocalCluster

    scenario = Scenario.from_dict(XEN)
    serial = sens.sensitivity(scenario, ["grant_copy", "ioeventfd"], 0.5, DURATION_MS)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        parallel = sens.sensitivity(scenario, ["grant_copy", "ioeventfd"], 0.5, DURATION_MS, client)
    assert parallel == serial and parallel["rows"]


def test_every_non_zero_price_is_a_cost_per_byte_parts_apart():
    profile = load_profile("default")
    costs = sens.costs(profile)
    assert "copy" in costs and "copy/B" in costs and "dma/B" in costs and "vm_exit/B" not in costs
    assert all(profile.fixed_ns[c] for c in costs if "/" not in c)


def test_scaling_one_price_leaves_the_others():
    profile = load_profile("default")
    double = sens.scaled(profile, "copy/B", 2.0)
    assert double.per_byte_ns["copy"] == pytest.approx(2 * profile.per_byte_ns["copy"])
    assert double.fixed_ns == profile.fixed_ns
    assert {k: v for k, v in double.per_byte_ns.items() if k != "copy"} == \
        {k: v for k, v in profile.per_byte_ns.items() if k != "copy"}


@pytest.mark.parametrize("kwargs, expect", [
    ({"chosen": ["warp_drive"]}, "--costs: expected costs of profile 'default'"),
    ({"chosen": ["vm_exit/B"]}, "got vm_exit/B"),
    ({"factor": 0}, "--factor: expected a fraction in (0, 1], got 0"),
    ({"factor": 1.5}, "--factor"),
    ({"duration_ms": -1}, "--duration-ms: expected a positive number"),
])
def test_bad_arguments_are_refused_before_any_run(kwargs, expect):
    with pytest.raises(ScenarioError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        sens.points(Scenario.from_dict(KVM), **kwargs)


def test_duration_override_sets_every_measured_window():
    scenario = sens.measured_for(Scenario.from_dict(KVM), 0.25)
    assert [w.duration_ms for w in scenario.workloads] == [1.25]
    assert Scenario.from_dict(KVM).workloads[0].duration_ms == 5


def _cli(*args):
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_prints_json_and_a_table(tmp_path):
    path = tmp_path / "kvm.yaml"
    path.write_text(yaml.safe_dump(KVM))
    out = _cli("sensitivity", path, "--costs", "vm_exit,grant_copy", "--duration-ms", DURATION_MS, "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["unaffected"] == ["grant_copy"] and data["rows"][0]["cost"] == "vm_exit"
    table = _cli("sensitivity", path, "--costs", "grant_copy", "--duration-ms", DURATION_MS)
    assert table.exit_code == 0 and "moved nothing: grant_copy" in table.stdout


@pytest.mark.parametrize("args, expect", [
    (["--costs", "warp_drive"], "--costs: expected costs of profile 'default'"),
    (["--factor", "2"], "--factor: expected a fraction"),
    (["--duration-ms", "0"], "--duration-ms: expected a positive number"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, expect):
    path = tmp_path / "kvm.yaml"
    path.write_text(yaml.safe_dump(KVM))
    out = _cli("sensitivity", path, *args)
    assert out.exit_code == 2
    assert out.output.count("\n") == 1 and out.output.startswith("error: ") and expect in out.output


def test_cli_names_a_missing_scenario_file(tmp_path):
    out = _cli("sensitivity", tmp_path / "nope.yaml")
    assert out.exit_code == 2 and "nope.yaml: cannot read" in out.output


# --- the profile's brackets ------------------------------------------------------------


def test_every_bundled_bracket_holds_its_value():
    """A bracket bounds its figure: a bundled value outside its own bracket is a slip."""
    for name in bundled_profiles():
        for event, cost in load_profile(name).spec.costs.items():
            for priced in (cost, cost.per_byte):
                if priced is not None and priced.bracket is not None:
                    assert priced.bracket.low <= priced.value <= priced.bracket.high, (name, event)


def test_default_figures_not_measured_on_its_cpu_carry_a_bracket():
    """Every cost of the default profile that says it is derived or bracketed has a bracket with a source."""
    for event, cost in load_profile("default").spec.costs.items():
        if any(word in cost.source for word in ("derived, not measured", "bracket", "what-if", "granularity")):
            assert cost.bracket is not None and cost.bracket.source.strip(), event


def test_default_profile_has_no_figure_of_another_vendor():
    """The default profile is one Intel CPU: no AMD measurement (SVM, VMRUN, EPYC, the LKML 2020 thread) in it."""
    text = load_profile("default").spec.model_dump_json().lower()
    assert not [word for word in ("svm", "vmrun", "epyc", "2012.2/00527") if word in text]


def test_a_bracket_upside_down_is_refused(tmp_path):
    data = yaml.safe_load(load_profile("default").spec.model_dump_json())
    data["costs"]["vm_exit"]["bracket"] = {"low": 3000, "high": 1000, "source": "x"}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match="costs.vm_exit.bracket: Value error, expected low <= high, got 3000 > 1000"):
        load_profile(path)


# --- what the audit priced -------------------------------------------------------------


def _resources():
    ledger = Ledger(load_profile("default"))
    return ledger, Resource("vcpu0", "vcpu", ledger), Resource("qemu", "host_thread", ledger)


def test_a_read_by_the_thread_that_wrote_the_data_is_a_hot_copy():
    """The vCPU's own read of guest memory is copy_hot; another thread's read, or a write, is a copy."""
    ledger, vcpu, other = _resources()
    dma = Dma(GuestMemory(1 << 16), "copy", hot=frozenset({vcpu}))
    dma.read(vcpu, 0, 1500)
    dma.read(other, 0, 1500)
    dma.write(vcpu, 0, bytes(100))
    assert ledger.events["copy_hot"] == 1 and ledger.events["copy"] == 2
    assert vcpu.busy_ns < other.busy_ns


@pytest.mark.parametrize("addr, length, write, expect", [
    (0, 1514, True, 1514 + 6 * 24),        # ceil(1514 / 256) posted writes, 4 DW header + framing each
    (0, 1514, False, 1514 + 24 * 20),      # completions at the 64 B RCB, 3 DW header + framing each
    (32, 64, False, 64 + 2 * 20),          # an unaligned 64 B read crosses an RCB: two completions
    (0, 16, False, 16 + 20),               # a descriptor fetch
    (0, 16, True, 16 + 24),                # a descriptor write-back
])
def test_dma_is_priced_by_the_bytes_its_tlps_put_on_the_link(addr, length, write, expect):
    assert pcie_bytes(addr, length, write) == expect


def test_a_nic_dma_charges_its_tlp_bytes_a_cpu_copy_its_payload():
    ledger, vcpu, nic = _resources()
    mem = GuestMemory(1 << 16)
    Dma(mem, "dma").read(nic, 0, 1514)
    Dma(mem, "copy").read(vcpu, 0, 1514)
    per = ledger.per_byte
    assert nic.busy_ns == pytest.approx(ledger.fixed["dma"] + per["dma"] * pcie_bytes(0, 1514, False))
    assert vcpu.busy_ns == pytest.approx(ledger.fixed["copy"] + per["copy"] * 1514)
