"""iovirt trace: one frame's places and charges for each model; recording
complete and without effect on the run; the timeline in the Chrome
trace-event format, one non-overlapping track per resource."""

import json
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iovirt.cli.main import app
from iovirt.experiments.runner import run
from iovirt.experiments.scenario import load_scenario
from iovirt.experiments.trace import run_traced
from iovirt.sim.record import Recorder
from iovirt.sim.resource import Ledger, Resource

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "examples"


def invoke(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, [str(a) for a in args])


def life(example, *args):
    result = invoke("trace", EXAMPLES / example, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def places(steps):
    return [s["place"] for s in steps if "place" in s]


def charges(steps, resource_part=""):
    return [s["event"] for s in steps if "event" in s and resource_part in s["resource"]]


def test_an_emulated_ping_goes_through_taps_and_the_bridge_with_exits():
    """e1000: the request leaves vm1's stack, its tap, the bridge, vm2's tap, reaches vm2; the reply comes
    back the same way; vm1's vCPU exits to send it, vm2's QEMU thread injects its interrupt."""
    got = life("emulated-e1000.yaml", "--alone", "--frame", "2")
    assert got["others_in_flight"] == 0 and got["type"] == "ping"
    there = ["vm1", "host0/vm1/tap", "host0/bridge", "host0/vm2/tap", "vm2"]
    assert places(got["steps"]) == there + there[::-1]
    assert "vm_exit" in charges(got["steps"], "vm1/vcpu0")
    assert "interrupt_inject" in charges(got["steps"], "vm2/qemu")
    assert all(a["t_ns"] <= b["t_ns"] for a, b in zip(got["steps"], got["steps"][1:]))
    assert got["last_seen_ns"] > got["sent_ns"]


def test_a_passthrough_ping_crosses_the_cable_without_an_exit_to_send():
    """ixgbe passed through: vm1's stack, the cable, the far end and back; the doorbell costs no exit (the
    vCPU writes BAR0 itself), no access is emulated, the NIC's engine and the wire pay for the frame."""
    got = life("passthrough-ixgbe.yaml", "--alone")
    assert places(got["steps"]) == ["vm1", "host0/pnic0", "wire peers", "wire peers", "host0/pnic0", "vm1"]
    events = {(s["kind"], s["event"]) for s in got["steps"] if "event" in s}
    assert ("wire", "wire_tx") in events and ("nic", "dma") in events and ("peer", "guest_stack") in events
    assert not {"mmio_emulate", "user_exit", "tap", "vswitch"} & {e for _, e in events}
    first_wire = next(i for i, s in enumerate(got["steps"]) if s.get("place") == "host0/pnic0")
    assert "vm_exit" not in charges(got["steps"][:first_wire], "vm1/vcpu0")
    emulated = life("emulated-e1000.yaml", "--alone")
    to_tap = next(i for i, s in enumerate(emulated["steps"]) if s.get("place") == "host0/vm1/tap")
    assert "vm_exit" in charges(emulated["steps"][:to_tap], "vm1/vcpu0")      # the other way: e1000's TDT write


def test_a_virtio_ping_is_kicked_to_vhost():
    got = life("virtio-vhost-net.yaml", "--alone")
    assert places(got["steps"])[:3] == ["vm1", "host0/vm1/tap", "host0/bridge"]
    assert "ioeventfd" in charges(got["steps"], "vm1/vcpu0") and charges(got["steps"], "vm1/vhost")


@pytest.mark.parametrize("example, flow, vm", [("sriov-ixgbevf.yaml", 3, "vm4"), ("xen-pv.yaml", 0, "pv1")])
def test_every_model_traces_its_first_ping(example, flow, vm):
    """A ping leaves its VM and its reply comes back to it; the SR-IOV one between two VFs of one port
    turns in the NIC's switch and never reaches the cable."""
    got = life(example, "--alone", "--flow", flow)
    assert got["type"] == "ping" and places(got["steps"])[0] == vm and places(got["steps"])[-1] == vm
    assert "host0/pnic0" not in places(got["steps"])


def test_a_stream_frame_says_others_were_in_flight():
    """Frame 100 of the example's stream: earlier frames are still on the path, and trace says so."""
    got = life("emulated-e1000.yaml", "--flow", "1", "--frame", "100")
    assert got["others_in_flight"] > 0 and got["type"] == "udp_stream"
    tree = invoke("trace", EXAMPLES / "emulated-e1000.yaml", "--flow", "1", "--frame", "100").stdout
    assert "other frames passed its path meanwhile" in tree and "seen at host0/bridge" in tree


@pytest.mark.parametrize("args, message", [
    (["--flow", "7"], "--flow: expected a workload 0..1 of emulated-e1000, got 7"),
    (["--frame", "99999"], "--frame: workload 0 sent 5 frames, numbered from 0; frame 99999 was not seen"),
    (["--timeline", "missing/t.json"], "--timeline: expected a file in an existing directory"),
])
def test_bad_trace_requests_are_one_line(args, message):
    result = invoke("trace", EXAMPLES / "emulated-e1000.yaml", *args)
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.output


def test_recording_is_complete_and_changes_nothing():
    """Every ns of busy time a resource counted is in its recorded slices, and the figures are those of
    a run without recording."""
    scenario = load_scenario(EXAMPLES / "sriov-ixgbevf.yaml")
    traced, recorded, _ = run_traced(scenario)
    plain = run(load_scenario(EXAMPLES / "sriov-ixgbevf.yaml"))
    assert {**traced.to_dict(), "wall_time_s": 0} == {**plain.to_dict(), "wall_time_s": 0}
    total = defaultdict(float)
    for r, _, start, end, _ in recorded.recorder.slices:
        total[r.name] += end - start
    busy = {r.name: r.busy_ns for r in recorded.world.resources if r.kind != "host_core"}
    assert busy and all(total[name] == pytest.approx(ns, rel=1e-9, abs=1e-3) for name, ns in busy.items())


def test_an_unwatched_resource_keeps_its_plain_class():
    ledger = Ledger(load_scenario(EXAMPLES / "emulated-e1000.yaml").profile)
    watched, plain = Resource("a", "vcpu", ledger), Resource("b", "vcpu", ledger)
    recorder = Recorder()
    recorder.watch([watched])
    watched.charge("copy", nbytes=100)
    plain.charge("copy", nbytes=100)
    assert type(plain) is Resource and type(watched) is not Resource
    assert [(r.name, e) for r, e, *_ in recorder.slices] == [("a", "copy")]
    assert watched.cursor == plain.cursor > 0


# ---- the timeline ----------------------------------------------------------------------------------

PHASES = {"X", "M", "s", "t", "f"}


def check_trace_event_format(doc):
    """The JSON Object Format of the Trace Event Format: a traceEvents list of events, each with a phase;
    complete events (X) with name, pid, tid, ts and a non-negative dur in µs; metadata (M) naming
    processes and threads; flow events (s, t, f) sharing an id, s first and f last."""
    assert isinstance(doc["traceEvents"], list) and doc["displayTimeUnit"] in ("ms", "ns")
    names, flows = {}, defaultdict(list)
    for e in doc["traceEvents"]:
        assert e["ph"] in PHASES and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name") and isinstance(e["args"]["name"], str)
            names[(e["name"], e["pid"], e["tid"] if e["name"] == "thread_name" else 0)] = e["args"]["name"]
        elif e["ph"] == "X":
            assert isinstance(e["name"], str) and e["ts"] >= 0 and e["dur"] >= 0
        else:
            flows[e["id"]].append(e)
    for e in doc["traceEvents"]:
        if e["ph"] != "M":
            assert ("thread_name", e["pid"], e["tid"]) in names and ("process_name", e["pid"], 0) in names
    for chain in flows.values():
        assert [e["ph"] for e in chain][0] == "s" and chain[-1]["ph"] == "f" and len(chain) >= 2
        assert all(a["ts"] <= b["ts"] for a, b in zip(chain, chain[1:]))
    return names


def test_the_timeline_is_trace_event_json_with_a_track_per_resource(tmp_path):
    out = tmp_path / "t.json"
    result = invoke("run", EXAMPLES / "passthrough-ixgbe.yaml", "--timeline", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    names = check_trace_event_format(doc)
    threads = set(names.values())
    assert {"host0/vm1/vcpu0", "host0/pnic0/engine", "host0/pnic0/wire/tx", "host1/bm1/vcpu0"} <= threads
    kinds = {e["cat"] for e in doc["traceEvents"] if e["ph"] == "X"}
    assert {"vcpu", "nic", "wire", "peer"} <= kinds
    tracks = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append((e["ts"], e["dur"]))
    for slices in tracks.values():
        slices.sort()
        assert all(a + d <= b + 1e-6 for (a, d), (b, _) in zip(slices, slices[1:]))


def test_threads_sharing_a_core_show_on_its_track_one_after_another(tmp_path):
    """Emulation: vCPUs and QEMU threads on four cores; each core's track holds their slices, never two
    at once, each naming the thread it ran for."""
    out = tmp_path / "t.json"
    assert invoke("trace", EXAMPLES / "emulated-e1000.yaml", "--timeline", out).exit_code == 0
    doc = json.loads(out.read_text())
    names = check_trace_event_format(doc)
    cores = {(pid, tid) for (kind, pid, tid), name in names.items() if kind == "thread_name" and "/core" in name}
    on_cores = [e for e in doc["traceEvents"] if e["ph"] == "X" and (e["pid"], e["tid"]) in cores]
    assert {e["args"].get("for", "").split("/")[-1] for e in on_cores} >= {"vcpu0", "qemu"}
    by_core = defaultdict(list)
    for e in on_cores:
        by_core[(e["pid"], e["tid"])].append((e["ts"], e["dur"]))
    for slices in by_core.values():
        slices.sort()
        assert all(a + d <= b + 1e-6 for (a, d), (b, _) in zip(slices, slices[1:]))
