"""``iovirt report``: one self-contained HTML page from the JSON of a run
(``run --json``) or a comparison (``compare --json``): what made it (iovirt's
version, the profile and the scenario, with their SHA-256), the tables the
CLI prints, the figures, and for a run where each packet's time goes."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; } caption { text-align: left; font-weight: bold; padding: .3em 0; }
th, td { padding: .2em .7em; border-bottom: 1px solid #e4e4e4; } th { background: #f3f3f3; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; } img { max-width: 100%; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; } dt { font-weight: bold; }
"""


def report(
    results: Annotated[Path, typer.Argument(help="The JSON of run --json or compare --json.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The page to write, F.html.")] = Path("report.html"),
) -> None:
    """One HTML page from a run's or a comparison's JSON."""
    from iovirt.cli.main import _fail, _writable

    _writable(out, "--out", (".html",))
    try:
        data = json.loads(results.read_text())
    except OSError as exc:
        _fail(f"{results}: cannot read: {exc.strerror}")
    except (UnicodeDecodeError, ValueError) as exc:
        _fail(f"{results}: expected the JSON of run --json or compare --json, got text that is not JSON ({exc})")
    kind = _kind(data)
    if kind is None:
        _fail(f"{results}: expected the JSON of run --json (an object with flows and resources) or compare --json "
              f"(a list of rows with model, vms and packet_size), got neither")
    out.write_text(run_page(data) if kind == "run" else compare_page(data))
    typer.echo(f"wrote {out}")


def _kind(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("flows"), list) and isinstance(data.get("resources"), list):
        return "run"
    if isinstance(data, list) and data and all(isinstance(r, dict) and {"model", "vms", "packet_size"} <= r.keys()
                                               for r in data):
        return "compare"
    return None


def html_table(table) -> str:
    """A rich Table of cli/render.py as an HTML table: its title, headers and cells, numbers right-aligned."""
    cls = [' class="n"' if c.justify == "right" else "" for c in table.columns]
    head = "".join(f"<th{k}>{html.escape(str(c.header))}</th>" for k, c in zip(cls, table.columns))
    rows = "".join("<tr>" + "".join(f"<td{k}>{html.escape(_plain(cell))}</td>" for k, cell in zip(cls, row)) + "</tr>"
                   for row in zip(*(c._cells for c in table.columns)))
    return f"<table><caption>{html.escape(str(table.title or ''))}</caption><tr>{head}</tr>{rows}</table>"


def _plain(cell) -> str:
    """A cell's text without rich markup."""
    from rich.text import Text

    return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _made_by(meta: dict[str, Any]) -> str:
    rows = [("iovirt", meta.get("iovirt")), ("profile", meta.get("profile")),
            ("profile SHA-256", meta.get("profile_sha256")), ("scenario", meta.get("scenario")),
            ("scenario SHA-256", meta.get("scenario_sha256"))]
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{html.escape(str(v))}</dd>" for k, v in rows if v is not None) + "</dl>"


def _profile(meta: dict[str, Any]) -> list[str]:
    """The profile's costs, when it is a bundled one whose costs are still those the run used (same SHA-256)."""
    from iovirt.cli import render
    from iovirt.experiments.results import digest
    from iovirt.sim.profile import ProfileError, bundled_profiles, load_profile

    name = meta.get("profile")
    if name is None:
        return ["<p>These results name no profile.</p>"]
    if name not in bundled_profiles():
        return [f"<p>Profile {html.escape(str(name))}: not a bundled one; its SHA-256 above names its costs.</p>"]
    try:
        profile = load_profile(name)
    except ProfileError:
        return []
    if digest(profile.spec.model_dump(mode="json")) != meta.get("profile_sha256"):
        return [f"<p>Profile {html.escape(name)}: this iovirt's copy differs from the one the run used.</p>"]
    return [html_table(render.profile_table(profile))]


def _page(title: str, body: list[str]) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")


def run_page(data: dict[str, Any]) -> str:
    from iovirt.cli import render
    from iovirt.cli.plot import run_figure

    body = ["<h2>What made it</h2>", _made_by(data),
            "<p>Runs are deterministic: the same scenario and profile give the same figures.</p>",
            "<h2>Flows, resources, events</h2>", *(html_table(t) for t in render.result_tables(data)),
            "<h2>Figures</h2>", _png(run_figure(data))]
    if data.get("explain"):
        body.append("<h2>Where each packet's time goes</h2>")
        body += [html_table(render.breakdown_table(owner, b)) for owner, b in data["explain"].items()]
    if data.get("scenario_spec"):
        body += ["<h2>Scenario</h2>", f"<pre>{html.escape(yaml.safe_dump(data['scenario_spec'], sort_keys=False))}</pre>"]
    body += ["<h2>Cost profile</h2>", *_profile(data)]
    return _page(f"iovirt run: {data.get('scenario', '')}", body)


def compare_page(rows: list[dict[str, Any]]) -> str:
    from iovirt.cli import render
    from iovirt.cli.plot import comparison_figure

    body = ["<h2>What made it</h2>", _made_by({**rows[0], "scenario": "compare sweep", "scenario_sha256": None}),
            "<h2>Figures</h2>", _png(comparison_figure(rows)),
            "<h2>Every point</h2>", html_table(render.compare_table(rows)),
            "<h2>Cost profile</h2>", *_profile(rows[0])]
    return _page("iovirt compare", body)
