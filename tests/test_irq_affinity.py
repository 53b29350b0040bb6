"""Interrupts reach the vCPU the MSI address names (SDM 11.11.1), INTx goes
to vCPU 0, and the guest kernel runs what a handler defers on the vCPU that
took the interrupt."""

from __future__ import annotations

import ipaddress

import pytest

import iovirt
from iovirt.experiments.runner import begin, run_to
from iovirt.experiments.world import World
from iovirt.guest.kernel import GuestKernel
from iovirt.hypervisor.cpustate import APIC_ISR, _lapic_page
from iovirt.hypervisor.host import Host
from iovirt.hypervisor.vm import VM
from iovirt.sim.engine import Sim
from iovirt.sim.profile import load_profile
from iovirt.sim.resource import Ledger, Resource
from iovirt.spec import ixgbe as s
from iovirt.spec.apic import MSI_ADDR_BASE, msi_address, msi_destination

PROFILE = load_profile("default")
VECTOR = 0x41


def machine(vcpus: int, native: bool = True):
    sim = Sim()
    ledger = Ledger(PROFILE)
    vm = VM("vm1", Host("host0", 4, sim, ledger), 64, vcpus, native=native)
    guest = GuestKernel("vm1", vm.vcpus[0], vm.mem, sim)
    sender = Resource("host0/nic0/engine", "nic", ledger)
    return sim, vm, guest, sender


def test_msi_address_carries_the_destination_apic_id():
    assert msi_address(0) == MSI_ADDR_BASE
    assert [msi_destination(msi_address(i)) for i in (0, 1, 7, 255)] == [0, 1, 7, 255]


@pytest.mark.parametrize("target", [0, 1, 3])
def test_msi_runs_its_handler_and_deferred_work_on_the_named_vcpu(target):
    """The handler runs on the vCPU the address names; what it defers with
    run_soon runs there too; the other vCPUs stay idle."""
    sim, vm, guest, sender = machine(4)
    seen = []

    def deferred():
        seen.append(("softirq", guest.cpu.index))

    def handler():
        seen.append(("irq", guest.cpu.index))
        guest.cpu.eoi(VECTOR)
        guest.run_soon(deferred)

    guest.request_irq(VECTOR, handler)
    vm.irqchip.msi(sender, msi_address(target), VECTOR)
    sim.run()
    assert seen == [("irq", target), ("softirq", target)]
    busy = [vcpu.busy_ns for vcpu in vm.vcpus]
    assert busy[target] > 0 and not any(b for i, b in enumerate(busy) if i != target)
    assert guest.cpu is guest.vcpu                  # outside kernel code: the boot vCPU


def test_msi_naming_no_vcpu_is_lost_and_counted():
    sim, vm, guest, sender = machine(2)
    seen = []
    guest.request_irq(VECTOR, lambda: seen.append(guest.cpu.index))
    vm.irqchip.msi(sender, msi_address(2), VECTOR)
    vm.irqchip.msi(sender, msi_address(1), VECTOR)
    sim.run()
    assert seen == [1]
    assert vm.stats["msi_bad_destination"] == 1 and vm.stats["interrupts"] == 1


def test_intx_goes_to_vcpu0():
    sim, vm, guest, sender = machine(2)
    seen = []
    guest.request_irq(11, lambda: seen.append(guest.cpu.index))
    vm.irqchip.set_level(11, sender, 1)
    sim.run()
    assert seen == [0]


def test_a_second_message_while_in_service_waits_for_eoi_on_its_vcpu():
    """Edge-triggered: the second message to vCPU 1 waits in the IRR (and in
    vCPU 1's saved APIC page, not vCPU 0's) until vCPU 1 writes EOI."""
    sim, vm, guest, sender = machine(2)
    seen = []
    guest.request_irq(VECTOR, lambda: seen.append(guest.cpu.index))
    vm.irqchip.msi(sender, msi_address(1), VECTOR)
    sim.run()
    vm.irqchip.msi(sender, msi_address(1), VECTOR)
    sim.run()
    assert seen == [1] and VECTOR in vm.irqchip.irr
    word = APIC_ISR + (VECTOR >> 5) * 16
    assert _lapic_page(vm, 1)[word] != 0 and _lapic_page(vm, 0)[word] == 0
    vm.vcpus[1].eoi(VECTOR)
    sim.run()
    assert seen == [1, 1]


def test_work_parked_while_paused_runs_on_its_own_vcpu():
    sim, vm, guest, sender = machine(2)
    seen = []
    guest.request_irq(VECTOR, lambda: guest.run_soon(lambda: seen.append(guest.cpu.index)))
    vm.irqchip.msi(sender, msi_address(1), VECTOR)
    vm.pause()
    sim.run()
    assert seen == []
    vm.resume()
    guest.resume()
    sim.run()
    assert seen == [1]


def spread_scenario(bm_vcpus: int) -> dict:
    """Four VMs, each on a VF of host0's port, stream to a bare-metal machine on host1."""
    vms = [{"name": f"vm{i}", "host": "host0",
            "nics": [{"model": "sriov", "device": "ixgbevf", "uplink": "pnic0", "mac": f"52:54:00:00:00:0{i}",
                      "ip": f"10.0.0.{i}/24"}]} for i in range(1, 5)]
    vms.append({"name": "bm", "host": "host1", "bare_metal": True, "vcpus": bm_vcpus,
                "nics": [{"model": "passthrough", "device": "ixgbe", "uplink": "pnic0", "mac": "52:54:00:00:01:01",
                          "ip": "10.0.0.10/24"}]})
    return {"name": "spread", "profile": "default",
            "hosts": [{"name": "host0", "cores": 8, "nics": [{"name": "pnic0", "kind": "x82599", "link_gbps": 10,
                                                              "num_vfs": 4}]},
                      {"name": "host1", "cores": 4, "nics": [{"name": "pnic0", "kind": "x82599", "link_gbps": 10}]}],
            "vms": vms,
            "workloads": [{"type": "udp_stream", "src": f"vm{i}", "dst": "bm", "packet_size": 1500,
                           "duration_ms": 0.5, "rate_pps": 50_000} for i in range(1, 5)]}


@pytest.mark.parametrize("vcpus", [1, 4])
def test_a_bare_metal_receiver_takes_each_sender_on_the_cpu_its_hash_names(vcpus):
    """Through the whole world: each sender's stream is taken (interrupts,
    NAPI, socket) on the vCPU of the queue RSS gives its addresses."""
    world = World(iovirt.Scenario.from_dict(spread_scenario(vcpus)))
    _, stop, flows = begin(world)
    run_to(world, stop + 2_000_000)
    assert all(f.delivered > 0 for f in flows)
    tables = s.toeplitz_tables(s.RSS_DEFAULT_KEY, 12)
    dst = ipaddress.IPv4Address("10.0.0.10").packed
    want = {(s.toeplitz(tables, ipaddress.IPv4Address(f"10.0.0.{i}").packed + dst) & 127) % vcpus for i in range(1, 5)}
    took = {v.index for v in world.vms["bm"].vcpus if v.spent["guest_stack"]}
    assert took == want
    assert len(want) > 1 or vcpus == 1
