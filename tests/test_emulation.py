"""Emulated e1000 end to end: frames cross two guests intact, and what they
cost emerges from the driver's register accesses."""

from __future__ import annotations

from pathlib import Path

import yaml

import iovirt
from iovirt.experiments.world import World
from iovirt.spec import e1000 as s

EXAMPLE = Path(__file__).parent.parent / "examples" / "emulated-e1000.yaml"


def scenario(streams: int = 1, duration_ms: float = 2, packet_size: int = 1500, profile: str = "default"):
    vms = [{"name": f"vm{i}", "host": "host0",
            "nics": [{"model": "emulated", "device": "e1000", "mac": f"52:54:00:00:00:{i:02x}", "ip": f"10.0.0.{i}/24"}]}
           for i in range(1, 2 * streams + 1)]
    workloads = [{"type": "udp_stream", "src": f"vm{2 * k + 1}", "dst": f"vm{2 * k + 2}",
                  "packet_size": packet_size, "duration_ms": duration_ms} for k in range(streams)]
    return iovirt.Scenario.from_dict({"name": "t", "profile": profile, "hosts": [{"name": "host0", "cores": 8}],
                                      "vms": vms, "workloads": workloads})


def host_cpu_s(result) -> float:
    """Busy time of the host's cores: vCPUs, VMM threads and the bridge all run there."""
    cores = result.resources[result.resources["kind"] == "host_core"]
    return float(cores["busy_s"].sum())


def test_example_delivers_every_frame_intact_and_in_order():
    """The bundled example: every UDP frame arrives, intact and in order; every ping is answered."""
    flows = iovirt.run(iovirt.load_scenario(EXAMPLE)).to_dict()["flows"]
    ping, stream = flows
    assert ping["sent"] == ping["delivered"] > 0
    assert stream["sent"] == stream["delivered"] > 100
    assert stream["corrupted"] == stream["out_of_order"] == stream["dropped"] == 0
    assert stream["events_per_packet"]["vm_exit"] > 0
    assert ping["latency_us"]["p50"] > 0


def test_tdt_write_is_one_exit_and_descriptors_alone_cost_none():
    """Descriptors written without a register access send nothing and exit
    never; one TDT write then sends them all for exactly one exit."""
    world = World(scenario())
    world.settle()
    guest, vm = world.guests["vm1"], world.vms["vm1"]
    driver, vcpu = guest.netdevs[0], vm.vcpus[0]
    frame = bytes.fromhex("525400000002525400000001") + b"\x08\x00" + bytes(50)
    sent = []
    vm.nics[0].port.send = lambda cpu, f: sent.append(f)
    exits = vm.acct["vm_exit"]
    for slot in (driver.tx_use, driver.tx_use + 1):
        guest.mem.write(driver.tx_bufs[slot], frame)
        guest.mem.store(s.TX_DESC.struct, driver.tx_ring + slot * s.DESC_SIZE,
                        driver.tx_bufs[slot], len(frame), 0, s.TXD_CMD_EOP | s.TXD_CMD_RS, 0, 0, 0)
    assert vm.acct["vm_exit"] == exits and sent == []
    vcpu.mmio_write(driver.bar + s.REGS["TDT"].offset, 4, driver.tx_use + 2)
    assert vm.acct["vm_exit"] == exits + 1
    assert sent == [frame, frame]


def test_two_streams_use_more_host_cpu_than_one():
    """Two VM pairs streaming at once cost the host more CPU than one pair."""
    one, two = iovirt.run(scenario(streams=1)), iovirt.run(scenario(streams=2))
    assert host_cpu_s(two) > 1.5 * host_cpu_s(one)
    assert all(f["delivered"] == f["sent"] for f in two.to_dict()["flows"])


def test_cheaper_vm_exits_raise_throughput(tmp_path):
    """Halving vm_exit in a custom profile raises throughput and lowers CPU per frame."""
    profile = yaml.safe_load((Path(iovirt.__file__).parent / "profiles" / "default.yaml").read_text())
    profile["costs"]["vm_exit"]["value"] /= 2
    (tmp_path / "fast-exits.yaml").write_text(yaml.safe_dump(profile))
    base, fast = iovirt.run(scenario()), iovirt.run(scenario(profile=str(tmp_path / "fast-exits.yaml")))
    base_flow, fast_flow = base.to_dict()["flows"][0], fast.to_dict()["flows"][0]
    assert fast_flow["pps"] > base_flow["pps"]
    assert host_cpu_s(fast) / fast_flow["delivered"] < host_cpu_s(base) / base_flow["delivered"]


def test_small_frames_cost_fewer_copies_per_packet_but_not_fewer_exits():
    """Exits are per register access, copies per byte: 64-byte frames reach a
    higher packet rate than 1500-byte frames with the same exits per packet."""
    small = iovirt.run(scenario(packet_size=64)).to_dict()["flows"][0]
    large = iovirt.run(scenario(packet_size=1500)).to_dict()["flows"][0]
    assert small["pps"] > large["pps"]
    assert large["throughput_gbps"] > small["throughput_gbps"]
    ratio = small["events_per_packet"]["vm_exit"] / large["events_per_packet"]["vm_exit"]
    assert 0.5 < ratio < 2
