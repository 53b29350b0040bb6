"""Run a scenario: build the world, warm up (ARP), measure the workloads,
collect flows, resources and event counts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from . import capture
from . import engines
from .results import Result, measure
from .scenario import DIRTY_SET_MB, WIRE, Scenario
from .workloads import KINDS, FlowStats, MemoryDirty, TcpStream, flow_of
from .world import World

DRAIN_NS = 50_000_000       # in-flight frames get at most this long after the last send
DRAIN_STEP_NS = 1_000_000
PROGRESS_STEPS = 100       # run_to reports progress this many times


def _machine(world: World, name: str, src: str):
    """The guest kernel, or for ``wire`` the peer on ``src``'s physical link."""
    return world.peer(src) if name == WIRE else world.guests[name]


def _interface(world: World, vm: str, peer: str):
    """The interface of ``vm`` on a subnet it shares with ``peer``."""
    theirs = [world.peer(vm).stack] if peer == WIRE else world.guests[peer].interfaces.values()
    for a in world.guests[vm].interfaces.values():
        for b in theirs:
            if b.ip.ip in a.ip.network:
                return a, b
    raise LookupError(f"{vm} and {peer} share no subnet")


def _warm_up(world: World) -> float:
    """Resolve every workload's neighbours, as a first packet would, outside
    the measurement (the wire peer learns from the requests it answers)."""
    for w in world.scenario.workloads:
        if w.dst is None:
            continue
        for a, b in ((w.src, w.dst), (w.dst, w.src)):
            if a == WIRE:
                continue
            src_if, dst_if = _interface(world, a, b)
            world.guests[a].run_soon(lambda s=src_if, d=dst_if: s.ping(d.ip.ip, 0, 0, b"arp", lambda *_: None))
    return world.settle() + 1000


def _drain(world: World, flows: list[FlowStats], stop: float) -> None:
    """Run on in steps until a step delivers nothing more."""
    delivered = -1
    t = stop
    while t < stop + DRAIN_NS and sum(f.delivered for f in flows) != delivered:
        delivered = sum(f.delivered for f in flows)
        t += DRAIN_STEP_NS
        world.sim.run(until=t)


def busy_until(world: World, at: float) -> dict[str, float]:
    """Each resource's busy time up to ``at`` (work charged before it but running past it belongs after)."""
    return {r.name: max(0.0, r.busy_ns - max(0.0, r.cursor - at)) for r in world.resources}


def _start(world: World, warmup_ms: float) -> tuple[float, float]:
    """Warm up and start measuring: when the workloads start, and when their
    throughput window opens (each resource's busy time is taken then)."""
    start = _warm_up(world)
    world.start_measuring(start)
    warm = start + warmup_ms * 1e6
    world.busy_before = {}
    if warm > start:
        world.sim.at(warm, lambda: world.busy_before.update(busy_until(world, warm)))
    return start, warm


def begin_from_wire(world: World, vm: str, duration_ms: float, warmup_ms: float = 0.0
                    ) -> tuple[float, float, list[FlowStats]]:
    """As :func:`begin`, for a TCP stream from the host at the far end of
    ``vm``'s physical link to ``vm`` (netperf on the far end, netserver in
    the VM) in place of the scenario's workloads: no scenario workload runs
    from the wire."""
    world.captures = []
    start, warm = _start(world, warmup_ms)
    stop = start + int(duration_ms * 1e6)
    world.sim.drops.classify = flow_of(1)
    vm_if, peer_if = _interface(world, vm, WIRE)
    stats = FlowStats(0, "tcp_stream", WIRE, vm, 1500, window=(warm, stop))
    TcpStream(stats, world.peer(vm).kernel, world.guests[vm], peer_if, vm_if, start, stop, None).begin()
    return warm, stop, [stats]


def begin(world: World) -> tuple[float, float, list[FlowStats]]:
    """Warm up, then start every workload; returns (start of the measured
    window: after the workloads' warm-up, stop, flows)."""
    world.captures = [capture.attach(world, c.port, Path(c.file)) for c in world.scenario.capture]
    start, warm = _start(world, min((w.warmup_ms for w in world.scenario.workloads if w.type != "memory_dirty"),
                                    default=0.0))
    world.sim.drops.classify = flow_of(len(world.scenario.workloads))
    flows = []
    stop = start
    for index, w in enumerate(world.scenario.workloads):
        end = start + int(w.duration_ms * 1e6)
        stop = max(stop, end)
        if w.type == "memory_dirty":
            MemoryDirty(world.guests[w.src], start, end, w.dirty_mib_s, w.working_set_mb or DIRTY_SET_MB).begin()
            continue
        src_if, dst_if = _interface(world, w.src, w.dst)
        stats = FlowStats(index, w.type, w.src, w.dst, w.packet_size, window=(start + w.warmup_ms * 1e6, end))
        extra = {"count": w.count or 5} if w.type == "ping" else {}
        extra.update((k, v) for k in ("message_size", "request_size", "response_size")
                     if (v := getattr(w, k)) is not None)
        workload = KINDS[w.type](stats, world.guests[w.src], _machine(world, w.dst, w.src), src_if, dst_if,
                                 start, end, w.rate_pps, **extra)
        if w.type == "udp_stream" and w.dst == WIRE and world.scenario.peer.receiver == "tester":
            world.peer(w.src).sink(workload.port)
        workload.begin()
        flows.append(stats)
    return warm, stop, flows


def run_to(world: World, stop: float, progress: Callable[[float], None] | None = None) -> None:
    """Run the simulation to ``stop``, telling ``progress`` the fraction done
    as it goes (the events run are the same either way)."""
    if progress is None:
        world.sim.run(until=stop)
        return
    begun = world.sim.now
    for step in range(1, PROGRESS_STEPS + 1):
        world.sim.run(until=begun + (stop - begun) * step / PROGRESS_STEPS)
        progress(step / PROGRESS_STEPS)


def finish(world: World, start: float, stop: float, flows: list[FlowStats], wall: float,
           progress: Callable[[float], None] | None = None) -> Result:
    """Run to ``stop``, let frames in flight land, collect."""
    return Result.of(world.scenario, *settle(world, start, stop, flows, wall, progress))


def settle(world: World, start: float, stop: float, flows: list[FlowStats], wall: float,
           progress: Callable[[float], None] | None = None) -> tuple:
    """Run to ``stop``, let frames in flight land; what :func:`measure` takes of the world."""
    run_to(world, stop, progress)
    busy = {name: ns - world.busy_before.get(name, 0.0) for name, ns in busy_until(world, stop).items()}
    _drain(world, flows, stop)
    for pcap in world.captures:
        pcap.write()
    return measure(world, flows, start, stop, busy, time.perf_counter() - wall)


def measured(scenario: Scenario, progress: Callable[[float], None] | None = None) -> tuple:
    """Build the world of ``scenario``, run it, and measure it (on the interpreter running this)."""
    wall = time.perf_counter()
    world = World(scenario)
    start, stop, flows = begin(world)
    return settle(world, start, stop, flows, wall, progress)


def run(scenario: Scenario, progress: Callable[[float], None] | None = None, engine: str = "cpython") -> Result:
    """Run ``scenario`` on ``engine`` (:data:`engines.ENGINES`): the world and its run on
    that interpreter, the result here; ``Result.engine`` names the engine that ran it."""
    chosen = engines.choose(scenario, engine)
    result = Result.of(scenario, *engines.run_on(chosen, measured, scenario, progress=progress))
    result.engine = chosen
    return result


def run_all(fn: Callable[[dict], dict], todo: list[dict], client=None,
            progress: Callable[[dict], None] | None = None) -> list[dict]:
    """``fn`` over every point, serially or as tasks on a Dask ``client``; results in point order."""
    if client is None:
        rows = []
        for point in todo:
            rows.append(fn(point))
            if progress:
                progress(rows[-1])
        return rows
    from distributed import as_completed

    futures = client.map(fn, todo, pure=False)
    for future in as_completed(futures):
        if progress:
            progress(future.result())
    return client.gather(futures)
