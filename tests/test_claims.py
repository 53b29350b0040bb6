"""iovirt claims: each claim of the seed is an experiment, and none fails."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from iovirt.cli.main import app
from iovirt.experiments.claims import check


def test_every_claim_holds_with_its_evidence():
    """Every claim of the seed, migration included, is an experiment that holds, and says what it measured."""
    claims = check(many=8, cores=4)
    assert [c.verdict for c in claims] == ["holds"] * len(claims) and len(claims) == 14
    assert all(c.evidence for c in claims)
    assert sum("migrat" in c.claim for c in claims) == 4


def test_claims_cli_json():
    """iovirt claims --json: one object per claim with model, claim, evidence, verdict."""
    result = CliRunner().invoke(app, ["claims", "--vms", "4", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert rows and all(set(r) == {"model", "claim", "evidence", "verdict"} for r in rows)


def test_sriov_is_not_near_pass_through_when_the_port_is_shared_unfairly():
    """The verdict follows the figures: VFs starving each other on the shared port fail the claim."""
    from iovirt.experiments.claims import sriov_near_passthrough

    def row(gbps, lo, hi, cpu):
        return {"per_vm_gbps": gbps, "throughput_gbps": gbps, "per_vm_min_gbps": lo, "per_vm_max_gbps": hi,
                "cpu_per_gbps": cpu}
    rows = {("sriov", None, 1): row(7.2, 7.2, 7.2, 0.14), ("passthrough", None, 1): row(7.2, 7.2, 7.2, 0.14),
            ("passthrough", None, 8): row(27, 3.4, 3.4, 0.14), ("paravirt", "vhost-net", 8): row(8, 1, 1, 0.38)}
    fair = {**rows, ("sriov", None, 8): row(9.5, 1.18, 1.2, 0.2)}
    starved = {**rows, ("sriov", None, 8): row(9.5, 0.1, 8.9, 0.2)}
    assert sriov_near_passthrough(fair, 8).verdict == "holds"
    assert sriov_near_passthrough(starved, 8).verdict == "fails"


def test_vmxnet3_is_not_ahead_when_the_figures_say_otherwise():
    """The verdict follows the figures: a VMXNET3 that exits more per packet than the E1000 fails the claim."""
    from iovirt.experiments.claims import vmxnet3_ahead_on_esxi

    def row(gbps, exits):
        return {"throughput_gbps": gbps, "events_per_packet": {"vm_exit": exits}}
    measured = {"e1000": row(2.4, 1.5), "pcnet": row(0.8, 9.5), "vmxnet3": row(3.9, 1.0)}
    assert vmxnet3_ahead_on_esxi(measured).verdict == "holds"
    assert vmxnet3_ahead_on_esxi({**measured, "vmxnet3": row(3.9, 1.6)}).verdict == "fails"
    assert vmxnet3_ahead_on_esxi({**measured, "vmxnet3": row(2.0, 1.0)}).verdict == "fails"


def test_vmxnet3_is_ahead_of_e1000_and_vlance_on_esxi():
    from iovirt.experiments.claims import esxi_rows, vmxnet3_ahead_on_esxi

    rows = esxi_rows("default", 4)
    assert set(rows) == {"e1000", "pcnet", "vmxnet3"} and all(r["hypervisor"] == "esxi" for r in rows.values())
    assert vmxnet3_ahead_on_esxi(rows).verdict == "holds"
def _row(gbps: float, cpu: float, exits: float) -> dict:
    return {"throughput_gbps": gbps, "cpu_per_gbps": cpu, "events_per_packet": {"vm_exit": exits}}


def test_the_synthetic_nic_claim_follows_the_figures():
    """Measured, the synthetic NIC holds; with figures where it is no better than the legacy NIC, or an order
    of magnitude behind virtio-net, the claim fails."""
    from iovirt.experiments.claims import _hyperv_rows, hyperv_synthetic_nic
    measured = _hyperv_rows("default")
    assert hyperv_synthetic_nic(measured).verdict == "holds"
    rows = {"netvsc": _row(3.8, 0.5, 1.5), "tulip": _row(0.8, 1.3, 9), "virtio-net": _row(4.9, 0.4, 0.7),
            "xen-netfront": _row(7.7, 0.3, 0.1)}
    assert hyperv_synthetic_nic(rows).verdict == "holds"
    assert hyperv_synthetic_nic(rows | {"netvsc": _row(1.2, 0.5, 1.5)}).verdict == "fails"
    assert hyperv_synthetic_nic(rows | {"netvsc": _row(2.0, 0.5, 1.5)}).verdict == "fails"
    assert hyperv_synthetic_nic(rows | {"tulip": _row(0.8, 0.4, 9)}).verdict == "fails"
