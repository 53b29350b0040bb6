"""pcapng captures read back by Wireshark's own dissectors (tshark): frame
counts against the flows' counters, checksums, order, nanosecond simulated
timestamps; bad capture requests refused in one line."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from iovirt.cli.main import app
from iovirt.experiments.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).parents[1]
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not found: apt-get install tshark (.ci/run does)")
FLOW_PORT = 5001            # a workload's UDP port is 5001 + its index


def invoke(*args):
    return CliRunner(env={"COLUMNS": "250"}).invoke(app, [str(a) for a in args])


def fields(path, *names, display_filter=""):
    """One tuple per frame of ``path``: the named fields as tshark dissects them, checksums verified."""
    cmd = [TSHARK, "-n", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
           "-T", "fields", "-E", "separator=|", *[a for n in names for a in ("-e", n)]]
    if display_filter:
        cmd += ["-Y", display_filter]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [tuple(line.split("|")) for line in done.stdout.splitlines()]


def two_vms(tmp_path, capture):
    data = yaml.safe_load((ROOT / "examples" / "emulated-e1000.yaml").read_text())
    data["workloads"] = [{"type": "ping", "src": "vm1", "dst": "vm2", "count": 3},
                         {"type": "udp_stream", "src": "vm1", "dst": "vm2", "packet_size": 600, "duration_ms": 1}]
    data["capture"] = capture
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@needs_tshark
def test_captures_at_every_kind_of_software_port(tmp_path, monkeypatch):
    """The guests' interfaces, a tap and the bridge: tshark reads each file; the stream's frames at vm1
    are the frames it sent, at vm2 the frames it delivered, in sequence; every IPv4 and UDP checksum is
    good; timestamps are simulated ns, and a frame reaches vm2 after vm1 sent it."""
    monkeypatch.chdir(tmp_path)
    path = two_vms(tmp_path, [{"port": "vm1", "file": "vm1.pcapng"}, {"port": "host0/bridge", "file": "br.pcapng"}])
    result = invoke("run", path, "--json", "--capture", "vm2=vm2.pcapng", "--capture", "host0/vm1/tap=tap.pcapng")
    assert result.exit_code == 0, result.output
    stream = json.loads(result.stdout)["flows"][1]
    assert stream["delivered"] > 50 and stream["out_of_order"] == 0

    udp = f"udp.dstport == {FLOW_PORT + 1}"
    names = ("frame.interface_name", "frame.time_epoch", "ip.checksum.status", "udp.checksum.status", "data.data")
    sent, got = (fields(tmp_path / f"{vm}.pcapng", *names, display_filter=udp) for vm in ("vm1", "vm2"))
    assert len(sent) == stream["sent"] and len(got) == stream["delivered"]
    assert {row[0] for row in sent} == {"vm1"} and {row[0] for row in got} == {"vm2"}
    assert {row[2:4] for row in sent + got} == {("1", "1")}            # 1: Good
    seqs = [int(row[4][8:16], 16) for row in got]                      # the probe: flow, sequence, send time
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    sent_at = {int(row[4][8:16], 16): float(row[1]) for row in sent}
    assert all(float(row[1]) > sent_at[int(row[4][8:16], 16)] for row in got)
    # nanoseconds survive: stamps are not all whole microseconds
    assert any(round(float(row[1]) * 1e9) % 1000 for row in sent)

    for port, file in (("host0/bridge", "br.pcapng"), ("host0/vm1/tap", "tap.pcapng")):
        rows = fields(tmp_path / file, "frame.interface_name", "eth.src", "ip.checksum.status", display_filter=udp)
        assert len(rows) >= stream["delivered"] and {r[0] for r in rows} == {port}
        assert {r[2] for r in rows} == {"1"}
    echo = fields(tmp_path / "br.pcapng", "icmp.type", display_filter="icmp")
    assert {"8", "0"} <= {r[0] for r in echo}                          # requests and replies both crossed


@needs_tshark
def test_a_physical_port_captures_its_cable_both_ways(tmp_path, monkeypatch):
    """Pass-through to the wire: on host0/pnic0 every UDP frame the far end got left the NIC, and the far
    end's echo replies came back over it."""
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load((ROOT / "examples" / "passthrough-ixgbe.yaml").read_text())
    data["workloads"] = [{"type": "ping", "src": "vm1", "dst": "wire", "count": 3},
                         {"type": "udp_stream", "src": "vm1", "dst": "wire", "packet_size": 1500, "duration_ms": 1}]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    result = invoke("run", tmp_path / "p.yaml", "--json", "--capture", "host0/pnic0=wire.pcapng")
    assert result.exit_code == 0, result.output
    stream = json.loads(result.stdout)["flows"][1]
    udp = fields(tmp_path / "wire.pcapng", "udp.checksum.status", display_filter=f"udp.dstport == {FLOW_PORT + 1}")
    assert stream["delivered"] <= len(udp) <= stream["sent"] and {r[0] for r in udp} == {"1"}
    replies = fields(tmp_path / "wire.pcapng", "eth.dst", display_filter="icmp.type == 0")
    assert replies and {r[0] for r in replies} == {"52:54:00:00:00:01"}


def test_a_run_without_capture_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("run", two_vms(tmp_path, [])).exit_code == 0
    assert not list(tmp_path.glob("*.pcapng"))


@pytest.mark.parametrize("args, message", [
    (["--capture", "vm9=x.pcapng"], "--capture: expected a VM, HOST/VM/tap, HOST/bridge or HOST/NIC of this "
                                    "scenario (host0/bridge, vm1, host0/vm1/tap, vm2, host0/vm2/tap), got 'vm9'"),
    (["--capture", "vm1"], "--capture: expected PORT=FILE.pcapng, got 'vm1'"),
    (["--capture", "vm1=missing/x.pcapng"], "--capture: expected a file in an existing directory"),
    (["--capture", "vm1=x.pcap"], "--capture: expected a file ending in .pcapng, got 'x.pcap'"),
])
def test_bad_capture_requests_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", two_vms(tmp_path, []), *args)
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.output


def test_a_scenario_capture_names_a_port_it_has(tmp_path):
    """validate refuses a capture port the scenario lacks, and two captures into one file."""
    with pytest.raises(ScenarioError, match=r"capture\[0\]\.port: expected a VM, HOST/VM/tap"):
        load_scenario(two_vms(tmp_path, [{"port": "host0/pnic0", "file": "w.pcapng"}]))
    twice = [{"port": "vm1", "file": "a.pcapng"}, {"port": "vm2", "file": "a.pcapng"}]
    with pytest.raises(ScenarioError, match=r"capture\[1\]\.file: expected a unique capture file"):
        load_scenario(two_vms(tmp_path, twice))
    assert load_scenario(two_vms(tmp_path, twice[:1])).capture[0].port == "vm1"
