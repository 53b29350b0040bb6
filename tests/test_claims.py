"""iovirt claims: each claim of the seed is an experiment, and none fails."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from iovirt.cli.main import app
from iovirt.experiments.claims import check


def test_every_claim_holds_with_its_evidence():
    """Every claim of the seed, migration included, is an experiment that holds, and says what it measured."""
    claims = check(many=8, cores=4)
    assert [c.verdict for c in claims] == ["holds"] * len(claims) and len(claims) == 12
    assert all(c.evidence for c in claims)
    assert sum("migrat" in c.claim for c in claims) == 4


def test_claims_cli_json():
    """iovirt claims --json: one object per claim with model, claim, evidence, verdict."""
    result = CliRunner().invoke(app, ["claims", "--vms", "4", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert rows and all(set(r) == {"model", "claim", "evidence", "verdict"} for r in rows)
