"""iovirt claims: each claim of the seed is an experiment, and none fails."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from iovirt.cli.main import app
from iovirt.experiments.claims import check


def test_no_claim_fails_and_pending_ones_say_why():
    """Every modelled claim holds; a claim about something not modelled is pending with a reason."""
    claims = check(many=8, cores=4)
    assert {c.verdict for c in claims} <= {"holds", "pending"}
    assert sum(c.verdict == "holds" for c in claims) >= 7
    assert all(c.evidence for c in claims)


def test_claims_cli_json():
    """iovirt claims --json: one object per claim with model, claim, evidence, verdict."""
    result = CliRunner().invoke(app, ["claims", "--vms", "4", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert rows and all(set(r) == {"model", "claim", "evidence", "verdict"} for r in rows)
