"""Output people read: tables folded to the terminal's width without cutting a
number, the comparison figure, and the HTML report rendered by headless
Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest
from rich.console import Console
from typer.testing import CliRunner

from iovirt.cli import render
from iovirt.cli.main import app
from iovirt.cli.plot import comparison_figure

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "emulated-e1000.yaml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not found: apt-get install chromium "
                                                             "(.ci/run does)")


def invoke(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, [str(a) for a in args])


def row(model, vms, size, gbps, p50, cpu, device="e1000", backend=None):
    return {"model": model, "device": device, "backend": backend, "vms": vms, "packet_size": size,
            "throughput_gbps": gbps * vms, "per_vm_gbps": gbps, "per_vm_min_gbps": gbps, "per_vm_max_gbps": gbps,
            "bare_metal_fraction": None, "host_cpu_cores": cpu, "cpu_per_gbps": cpu / gbps,
            "latency_us": {"p50": p50, "p99": p50 * 2}, "events_per_packet": {"vm_exit": 2.0}}


ROWS = [row(m, n, size, g / n ** 0.3 * size / 1500, p, c)
        for m, g, p, c in (("emulated", 1.2, 150.0, 1.0), ("passthrough", 9.0, 5.0, 0.2))
        for n in (1, 4, 16) for size in (64, 1500)]
ROWS += [row("bare-metal", 1, size, 9.5 * size / 1500, 4.0, 0.1, device="ixgbe") for size in (64, 1500)]


# ---- terminal width --------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 120])
def test_tables_fold_to_the_terminal_without_cutting_numbers(width):
    """The compare table (15 columns) and a run's tables at 80 and 120 columns: no line wider, no
    ellipsis, every number whole."""
    result = json.loads(invoke("run", EXAMPLE, "--json").stdout)
    tables = [render.compare_table(ROWS), *render.result_tables(result)]
    console = Console(width=width, record=True)
    console.print(*render.fit(tables, width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width and "…" not in text
    stream = result["flows"][1]
    for number in (f"{stream['pps']:,.0f}", f"{stream['throughput_gbps']:.3f}", f"{stream['latency_us']['p50']:.1f}",
                   f"{stream['latency_us']['p99']:.1f}", str(stream["sent"]), "9.000", f"{ROWS[0]['cpu_per_gbps']:.3f}"):
        assert number in text
    assert text.count("(continued)") >= 1


def test_a_table_that_fits_is_left_as_it_is():
    table = render.compare_table(ROWS[:1])
    assert render.fit([table], 1000) == [table]


# ---- the comparison figure -------------------------------------------------------------------------


def test_the_comparison_figure_reads_at_a_glance():
    """Both packet sizes drawn (a line style each), VM counts as plain numbers, latency on a log scale,
    throughput and CPU from zero, the legend outside every panel."""
    fig = comparison_figure(ROWS)
    per_vm, total, cpu, latency = fig.axes
    labels = [line.get_label() for line in per_vm.get_lines()]
    assert "emulated/e1000, 64 B" in labels and "emulated/e1000, 1500 B" in labels
    styles = {line.get_label().split(", ")[1]: line.get_linestyle() for line in per_vm.get_lines()}
    assert styles["64 B"] != styles["1500 B"]
    assert [t.get_text() for t in per_vm.get_xticklabels()] == ["1", "4", "16"]
    assert latency.get_yscale() == "log"
    assert per_vm.get_ylim()[0] == total.get_ylim()[0] == cpu.get_ylim()[0] == 0
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)


# ---- the report ------------------------------------------------------------------------------------


def chromium(*args, cwd):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={cwd / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=180, cwd=cwd)


def ink(pixels) -> float:
    """The share of pixels that are not (near) white."""
    return float((pixels[..., :3] < 0.9).any(axis=-1).mean())


def rendered(page: Path, tmp_path):
    """What headless Chromium shows: the DOM after rendering and a screenshot's pixels."""
    dom = chromium("--dump-dom", page.as_uri(), cwd=tmp_path).stdout
    shot = tmp_path / "shot.png"
    chromium("--window-size=1400,1600", f"--screenshot={shot}", page.as_uri(), cwd=tmp_path)
    return dom, matplotlib.image.imread(shot)


@needs_chromium
def test_a_run_report_renders_in_chromium(tmp_path):
    """run --json, then report: the page Chromium draws is not blank, holds the tables, the figure,
    what made the run and where each packet's time goes."""
    results = tmp_path / "r.json"
    results.write_text(invoke("run", EXAMPLE, "--json").stdout)
    page = tmp_path / "report.html"
    result = invoke("report", results, "-o", page)
    assert result.exit_code == 0, result.output
    assert not re.search(r"(src|href)=\"https?:", page.read_text())                 # nothing fetched
    dom, pixels = rendered(page, tmp_path)
    assert dom.count("<table>") >= 5 and "delivered" in dom and "vm1: ns of busy time" in dom
    assert "profile SHA-256" in dom and json.loads(results.read_text())["scenario_sha256"] in dom
    assert '<img alt="figure" src="data:image/png;base64,' in dom
    assert "profile default: " in dom and "SplitX" in dom                          # the costs, with sources
    assert pixels.shape[:2] == (1600, 1400) and 0.02 < ink(pixels) < 0.9


@needs_chromium
def test_a_compare_report_renders_in_chromium(tmp_path):
    results = tmp_path / "c.json"
    results.write_text(json.dumps(ROWS))
    page = tmp_path / "c.html"
    assert invoke("report", results, "-o", page).exit_code == 0
    dom, pixels = rendered(page, tmp_path)
    assert dom.count("<table>") == 1 and "cores/Gbit" in dom and "passthrough" in dom
    assert "These results name no profile." in dom and "SplitX" not in dom
    results.write_text(json.dumps([{**r, "profile": "default", "profile_sha256": "0" * 64} for r in ROWS]))
    assert invoke("report", results, "-o", page).exit_code == 0
    assert "this iovirt's copy differs from the one the run used" in page.read_text()
    assert ink(pixels) > 0.02


@needs_chromium
def test_a_blank_page_is_told_apart(tmp_path):
    """The other way for the screenshot check: an empty page has no ink and no table."""
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><body></body></html>")
    dom, pixels = rendered(page, tmp_path)
    assert ink(pixels) < 0.02 and "<table>" not in dom


@pytest.mark.parametrize("content, message", [
    ("not json", "expected the JSON of run --json or compare --json, got text that is not JSON"),
    ('{"scenario": "x"}', "expected the JSON of run --json (an object with flows and resources) or compare --json"),
    ("[]", "got neither"),
])
def test_report_refuses_what_is_not_results(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = invoke("report", bad, "-o", tmp_path / "r.html")
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "r.html").exists()
