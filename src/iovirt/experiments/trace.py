"""A run recorded: every charge on every resource (sim/record.py) and every
place a workload's frame was seen (the capture ports, and the far ends'
stacks), kept from the moment the workloads start.

From it, the life of one frame (:meth:`Trace.life`): from the moment its
workload built it to the moment it was last seen (delivered; for a ping, its
echo reply back at the sender), the places it passed and every charge made
meanwhile on the resources of its path, in time order.  While other frames
are in flight on the same path (a stream), some of that work is theirs:
:meth:`Trace.life` says how many passed meanwhile.

And the Chrome trace-event timeline (:meth:`Trace.timeline`, the JSON that
ui.perfetto.dev and chrome://tracing open): a process per host (and one for
the wire peers), a thread per resource, a complete event per charge (on the
thread that paid and on the core it ran on), flow arrows from place to place
along each frame's way.
"""

from __future__ import annotations

import time
from collections import defaultdict

from ..sim.record import Recorder
from .capture import watch
from .results import WIRE_PEERS, owners
from .runner import begin, finish
from .scenario import WIRE, Scenario, capture_ports
from .workloads import probe_of
from .world import World


class TraceError(LookupError):
    """No such flow or frame in the run; the message is one line."""


class Trace:
    def __init__(self, world: World) -> None:
        self.world = world
        self.recorder = Recorder()
        self.recorder.watch(world.resources)
        self.marks: list[tuple[float, tuple[int, int, int], str, object, int]] = []  # (ns, probe, port, resource, len)
        for port in [*capture_ports(world.scenario), WIRE_PEERS]:
            watch(world, port, _Marks(port, self.marks))
        self.owners, _ = owners(world, [])

    # ---- one frame ---------------------------------------------------------------------------------

    def life(self, flows: list, flow: int, frame: int) -> dict:
        """Frame ``frame`` of workload ``flow``: its places and the charges on its path, in time order."""
        f = next((f for f in flows if f.index == flow), None)
        if f is None:
            raise TraceError(f"--flow: expected a workload that sends frames ({', '.join(str(g.index) for g in flows)}"
                             f"), got {flow}")
        seen = sorted((m for m in self.marks if m[1][:2] == (flow, frame)), key=lambda m: m[0])
        if not seen:
            raise TraceError(f"--frame: workload {flow} sent {f.sent} frames, numbered from 0; frame {frame} was not "
                             f"seen")
        born, last = seen[0][1][2], seen[-1][0]
        path = self._path(f)
        steps = [{"t_ns": round(at, 1), "place": port, "resource": res.name, "bytes": size}
                 for at, _, port, res, size in seen]
        steps += [{"t_ns": round(start, 1), "resource": r.name, "kind": r.kind, "event": event,
                   "ns": round(end - start, 1)}
                  for r, event, start, end, _ in self.recorder.slices
                  if born <= start <= last and self.owners.get(r.name) in path]
        steps.sort(key=lambda s: (s["t_ns"], "place" not in s))
        others = {m[1][:2] for m in self.marks if born <= m[0] <= last and m[1][:2] != (flow, frame)}
        return {"flow": flow, "frame": frame, "type": f.type, "src": f.src, "dst": f.dst,
                "sent_ns": born, "last_seen_ns": round(last, 1), "others_in_flight": len(others), "steps": steps}

    def _path(self, f) -> set[str]:
        vms = {v.name: v.host for v in self.world.scenario.vms}
        machines = {f.src, f.dst} & vms.keys()
        return machines | {vms[m] for m in machines} | ({WIRE_PEERS} if WIRE in (f.src, f.dst) else set())

    # ---- the timeline ------------------------------------------------------------------------------

    def timeline(self) -> dict:
        """Chrome trace-event format (JSON object form): ts and dur in µs."""
        pids: dict[str, int] = {}
        tracks: dict[str, tuple[int, int]] = {}
        events: list[dict] = []

        def track(r) -> tuple[int, int]:
            if r.name not in tracks:
                owner = WIRE_PEERS if r.kind == "peer" else r.name.split("/")[0]
                if owner not in pids:
                    pids[owner] = len(pids) + 1
                    events.append({"ph": "M", "name": "process_name", "pid": pids[owner], "tid": 0,
                                   "args": {"name": owner}})
                tracks[r.name] = (pids[owner], len(tracks) + 1)
                events.append({"ph": "M", "name": "thread_name", "pid": pids[owner], "tid": tracks[r.name][1],
                               "args": {"name": r.name}})
            return tracks[r.name]

        for r, event, start, end, core in self.recorder.slices:
            for on, args in ((r, {"kind": r.kind}), (core, {"for": r.name})):
                if on is not None:
                    pid, tid = track(on)
                    events.append({"ph": "X", "name": event, "cat": r.kind, "pid": pid, "tid": tid,
                                   "ts": start / 1000, "dur": (end - start) / 1000, "args": args})
        by_frame = defaultdict(list)
        for at, probe, port, res, _ in sorted(self.marks, key=lambda m: m[0]):
            by_frame[probe[:2]].append((at, port, res))
        for n, ((flow, seq), seen) in enumerate(sorted(by_frame.items())):
            for i, (at, port, res) in enumerate(seen):
                pid, tid = track(res)
                phase = "s" if i == 0 else "f" if i == len(seen) - 1 else "t"
                events.append({"ph": phase, "name": f"flow {flow} frame {seq}", "cat": "frame", "id": n,
                               "pid": pid, "tid": tid, "ts": at / 1000, "bp": "e", "args": {"at": port}})
        return {"traceEvents": events, "displayTimeUnit": "ns",
                "otherData": {"scenario": self.world.scenario.name, "clock": "simulated time"}}


class _Marks:
    """A sink for capture.watch: where and when each probed frame was seen."""

    def __init__(self, port: str, out: list) -> None:
        self.port = port
        self.out = out

    def record(self, at: float, frame: bytes, cpu) -> None:
        probe = probe_of(frame)
        if probe is not None:
            self.out.append((at, probe, self.port, cpu, len(frame)))


def run_traced(scenario: Scenario):
    """Run ``scenario`` recording from the start of its workloads; returns (result, trace, flows)."""
    wall = time.perf_counter()
    world = World(scenario)
    start, stop, flows = begin(world)
    trace = Trace(world)
    return finish(world, start, stop, flows, wall), trace, flows
