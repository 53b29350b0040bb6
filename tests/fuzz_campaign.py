"""The standing fuzz campaign: a hostile guest against every surface it can
reach, with the host's promises checked after every step.

Each surface is attacked in batches.  A batch builds one system from a seed
(the attacker ``vm1`` with the surface's NIC, bystanders beside it: ``vm2``
and ``vm3`` exchange a paced stream, ``vm1`` sends to ``vm2`` and receives
from ``vm3`` so its device has work both ways), then runs ``examples``
examples.  An example is a few random guest actions — register accesses of
any width at the device's registers or anywhere in its BARs, configuration
space writes (BARs, command, capabilities), scribbles over the guest's own
rings and buffers, hypercalls on Xen — followed by 20 µs of simulated time.
After every example:

- nothing escapes into the host: any exception is a failure (a fault in the
  attacker's own kernel code is contained by the guest kernel and counted);
- simulated time advances: the step must finish within ``EVENTS_PER_NS``
  events per simulated nanosecond (a watchdog on a livelock);
- no byte outside the attacker's memory changes: the bystanders' pages
  outside their kernels' allocations stay unwritten (their dirty logs) and,
  at the end of the batch, still hold the canary they were filled with;
- the bystanders' stream delivers intact and in order, their kernels never
  fault, and it makes progress over the batch.

Surfaces that are host interfaces rather than a VM's (the IOMMU, device
state streams) run the same way on their own objects.

``python tests/fuzz_campaign.py --examples 100000`` runs the long profile
(``make fuzz``); ``tests/test_fuzz.py`` runs a short one in the test suite.
A failure prints its surface, batch seed and example: ``--surface NAME
--seed N`` replays the batch exactly.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import iovirt  # noqa: E402
from iovirt.devices.registry import registry  # noqa: E402
from iovirt.devices.vmstate import StateError, check_state, load_state, save_state  # noqa: E402
from iovirt.experiments import runner  # noqa: E402
from iovirt.experiments.world import World  # noqa: E402
from iovirt.hypervisor.iommu import Iommu  # noqa: E402
from iovirt.mem.dma import DmaFault  # noqa: E402
from iovirt.mem.guest_memory import PAGE_SHIFT, PAGE_SIZE, GuestMemory, GuestMemoryError  # noqa: E402
from iovirt.sim.profile import load_profile  # noqa: E402
from iovirt.sim.resource import Ledger, Resource  # noqa: E402
from iovirt.spec import e1000, ixgbe, ixgbevf, pcnet, rtl8139, tulip, vmxnet, vmxnet3, vtd  # noqa: E402
from iovirt.spec import virtio as v  # noqa: E402
from iovirt.spec import rndis  # noqa: E402
from iovirt.spec import vmbus as hv  # noqa: E402
from iovirt.spec import xen as x  # noqa: E402
from iovirt.spec.pci import PCI_SRIOV_CAP_REGS, Bdf  # noqa: E402

STEP_NS = 20_000
EVENTS_PER_NS = 10
CANARY = 0xA5
MEMORY_MB = 32
RATE_PPS = 20_000
ACTIONS = (1, 4)                     # guest actions per example, at least and at most


class Violation(Exception):
    """A broken promise: ``kind`` is escape, stall, write or victim."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


# ---- values a hostile guest likes ------------------------------------------------------------------
EDGES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def value(rng: random.Random, bits: int, addresses: Callable[[], int]) -> int:
    r = rng.random()
    if r < 0.25:
        out = rng.choice(EDGES)
    elif r < 0.5:
        out = addresses()
    elif r < 0.65:
        out = rng.randrange(4096)
    else:
        out = rng.getrandbits(bits)
    return out & ((1 << bits) - 1)


# ---- the system under attack ------------------------------------------------------------------------
PV = {"model": "paravirt", "device": "xen-netfront"}
E1000_NIC = {"model": "emulated", "device": "e1000"}
NETVSC = {"model": "paravirt", "device": "netvsc"}


def scenario(nic: dict, hypervisor: str, ports: int = 2) -> iovirt.Scenario:
    """``ports``: 1 puts the bridge on the port of an SR-IOV attacker (the PF's default pool)."""
    bystander = {"xen": PV, "hyperv": NETVSC}.get(hypervisor, E1000_NIC)
    ports = [{"name": "pnic0", "kind": "x82599", "link_gbps": 10, **({"num_vfs": 2} if nic["model"] == "sriov" else {})},
             {"name": "pnic1", "kind": "x82599", "link_gbps": 10}][:ports]
    flows = (("vm2", "vm3"), ("vm1", "vm2"), ("vm3", "vm1"))
    return iovirt.Scenario.from_dict({
        "name": "fuzz", "hosts": [{"name": "host0", "cores": 8, "hypervisor": hypervisor, "nics": ports}],
        "vms": [{"name": f"vm{i}", "host": "host0", "memory_mb": MEMORY_MB,
                 "nics": [{**n, "mac": f"52:54:00:00:00:0{i}", "ip": f"10.0.0.{i}/24"}]}
                for i, n in ((1, nic), (2, bystander), (3, bystander))],
        "workloads": [{"type": "udp_stream", "src": a, "dst": b, "packet_size": 512, "rate_pps": RATE_PPS,
                       "duration_ms": 1000} for a, b in flows]})


class Arena:
    """One system, the attacker's view of it, and the checks of the host's promises."""

    def __init__(self, nic: dict, hypervisor: str = "kvm", ports: int = 2) -> None:
        self.world = World(scenario(nic, hypervisor, ports))
        _, _, flows = runner.begin(self.world)
        self.victim = flows[0]
        self.sim = self.world.sim
        self.guest = self.world.guests["vm1"]
        self.mem = self.world.vms["vm1"].mem
        self.bystanders = [self._fence(name) for name in ("vm2", "vm3")]
        self.delivered = self.victim.delivered

    def _fence(self, name: str) -> tuple[str, object, int, int]:
        """A bystander's pages outside its kernel's allocations, filled with the canary."""
        kernel, mem = self.world.guests[name], self.world.vms[name].mem
        lo, hi = kernel.alloc.base >> PAGE_SHIFT, -(-kernel.alloc.next // PAGE_SIZE)
        for page in range(len(mem.dirty)):
            if mem.dirty[page] or kernel.mem.dirty[page]:
                assert lo <= page < hi, f"{name} wrote page {page} outside its allocations while booting"
        mem.buf[: lo << PAGE_SHIFT] = bytes([CANARY]) * (lo << PAGE_SHIFT)
        mem.buf[hi << PAGE_SHIFT :] = bytes([CANARY]) * (mem.size - (hi << PAGE_SHIFT))
        return name, mem, lo, hi

    # ---- the attacker's hands ---------------------------------------------------------------------
    def address(self, rng: random.Random) -> int:
        """A guest-physical address: in the driver's memory mostly, else at or past the end of RAM."""
        r = rng.random()
        if r < 0.7:
            return rng.randrange(self.guest.alloc.base, max(self.guest.alloc.base + 1, self.guest.alloc.next))
        if r < 0.85:
            return self.mem.size - rng.randrange(1, 64)
        return rng.choice((self.mem.size, self.mem.size + PAGE_SIZE, 1 << 32, 1 << 40, (1 << 64) - PAGE_SIZE))

    def scribble(self, rng: random.Random) -> str:
        """Overwrite a record in the guest's own DMA memory (a ring entry, a buffer header)."""
        width = rng.choice((2, 4, 8, 16))
        at = rng.randrange(self.guest.alloc.base, self.guest.alloc.next) & ~(width - 1)
        words = [value(rng, 64, lambda: self.address(rng)) for _ in range(max(1, width // 8))]
        data = b"".join(w.to_bytes(8, "little") for w in words)[:width]
        self.guest.mem.write(at, data)
        return f"ram[{at:#x}] = {data.hex()}"

    def sync(self) -> None:
        self.guest.vcpu.sync(self.sim.now)

    def actions(self) -> list[Callable[[random.Random], str]]:
        return [self.scribble]

    # ---- a step and its checks ---------------------------------------------------------------------
    def step(self, rng: random.Random, done: list[str]) -> None:
        for _ in range(rng.randint(*ACTIONS)):
            self.sync()
            done.append(rng.choice(self.actions())(rng))
        until = self.sim.now + STEP_NS
        if not self.sim.run_bounded(until, EVENTS_PER_NS * STEP_NS):
            raise Violation("stall", f"more than {EVENTS_PER_NS * STEP_NS} events before {until:.0f} ns")
        self.check()

    def check(self) -> None:
        f = self.victim
        if f.corrupted or f.out_of_order:
            raise Violation("victim", f"vm2 -> vm3: {f.corrupted} corrupted, {f.out_of_order} out of order")
        for name, mem, lo, hi in self.bystanders:
            if self.world.guests[name].fault:
                raise Violation("victim", f"{name} faulted: {self.world.guests[name].fault}")
            for log in (mem.dirty, self.world.guests[name].mem.dirty):
                if log.find(1, 0, lo) >= 0 or log.find(1, hi) >= 0:
                    raise Violation("write", f"a page of {name} outside its allocations was written")

    def finish(self) -> None:
        for name, mem, lo, hi in self.bystanders:
            for a, b in ((0, lo << PAGE_SHIFT), (hi << PAGE_SHIFT, mem.size)):
                if mem.buf[a:b].count(CANARY) != b - a:
                    raise Violation("write", f"{name}'s canary between {a:#x} and {b:#x} changed")
        if self.victim.delivered <= self.delivered:
            raise Violation("victim", "vm2 -> vm3 delivered nothing during the batch")

    def faults(self) -> int:
        return int(self.guest.fault is not None)


class PciArena(Arena):
    """The attacker's NIC is a PCI function: its BARs, its configuration space, its rings."""

    def __init__(self, nic: dict, registers: list[int], hypervisor: str = "kvm", ports: int = 2) -> None:
        super().__init__(nic, hypervisor, ports)
        self.info = next(i for i in self.guest.pci.devices if i.driver is not None)
        self.bars = sorted(self.info.bars.items())
        self.registers = registers
        self.config = [0x04, 0x06, 0x0C, 0x3C, *range(0x10, 0x28, 4),
                       *(cap + off for cap in self.info.caps.values() for off in range(0, 16, 2))]

    def actions(self) -> list[Callable[[random.Random], str]]:
        return [self.register, self.register, self.scribble, self.scribble, self.configure]

    def register(self, rng: random.Random) -> str:
        """One access of any width anywhere in a BAR (where the BAR was placed at boot)."""
        index, (kind, base, size) = rng.choice(self.bars)
        known = [r for r in self.registers if r < size]
        offset = rng.choice(known) if known and rng.random() < 0.7 else rng.randrange(size)
        width = rng.choice((1, 2, 4) if kind == "io" else (1, 2, 4, 4, 8))
        vcpu = self.guest.vcpu
        if rng.random() < 0.25:
            (vcpu.pio_read if kind == "io" else vcpu.mmio_read)(base + offset, width)
            return f"read BAR{index}+{offset:#x}/{width}"
        val = value(rng, 8 * width, lambda: self.address(rng))
        (vcpu.pio_write if kind == "io" else vcpu.mmio_write)(base + offset, width, val)
        return f"BAR{index}+{offset:#x}/{width} = {val:#x}"

    def configure(self, rng: random.Random) -> str:
        """A configuration write through 0xCF8/0xCFC: command, BARs, capabilities."""
        width = rng.choice((1, 2, 4))
        offset = (rng.choice(self.config) if rng.random() < 0.8 else rng.randrange(256)) & ~(width - 1)
        val = value(rng, 8 * width, lambda: self.address(rng))
        self.guest.pci.config_write(self.info.bdf, offset, width, val)
        return f"config[{offset:#x}]/{width} = {val:#x}"


class SriovArena(PciArena):
    """A VF's VM, while the host's PF driver (or a confused administrator) rewrites the PF's
    SR-IOV capability under it: NumVFs, VF Enable and Memory Space Enable, the VF BARs."""

    def __init__(self) -> None:
        super().__init__(_nic("sriov", "ixgbevf", uplink="pnic0"), _offsets(ixgbevf.REGS) + MSIX)
        port = self.world.sriov["host0", "pnic0"]
        self.pf, self.cap = port.pf.pci, port.cap.cap
        self.fields = [r.offset for r in PCI_SRIOV_CAP_REGS]

    def actions(self) -> list[Callable[[random.Random], str]]:
        return super().actions() + [self.capability]

    def capability(self, rng: random.Random) -> str:
        width = rng.choice((1, 2, 4))
        offset = self.cap + (rng.choice(self.fields) & ~(width - 1))
        val = rng.choice((0, 1, 2, 3, 8, 0x19, 0xFFFF, rng.getrandbits(8 * width))) & ((1 << 8 * width) - 1)
        self.pf.config_write(offset, width, val)
        return f"PF config[{offset:#x}]/{width} = {val:#x}"


class XenArena(Arena):
    """A PV guest: its shared rings and grant table in its memory, hypercalls, xenstore."""

    KEYS = ("state", "tx-ring-ref", "rx-ring-ref", "event-channel", "request-rx-copy", "feature-rx-notify")

    def __init__(self) -> None:
        super().__init__(PV, "xen")
        self.xen = self.world.xen["host0"]
        self.front = self.guest.netdevs[0]

    def actions(self) -> list[Callable[[random.Random], str]]:
        return [self.scribble, self.scribble, self.ring, self.hypercall, self.hypercall, self.xenstore]

    def ring(self, rng: random.Random) -> str:
        """A producer, consumer or event index of one of the shared rings, or an entry in it."""
        page = rng.choice((self.front.tx_ring, self.front.rx_ring))
        at = page + rng.choice((x.REQ_PROD, x.REQ_EVENT, x.RSP_PROD, x.RSP_EVENT,
                                x.RING_OFFSET + 8 * rng.randrange(512)))
        val = rng.choice((rng.getrandbits(32), 0, 0xFFFFFFFF, rng.randrange(600)))
        self.guest.mem.store(x.U32, at, val)
        if rng.random() < 0.5:
            self.xen.evtchn_send(self.guest.vcpu, getattr(self.front, "port", 1))
        return f"ring[{at:#x}] = {val:#x}"

    def hypercall(self, rng: random.Random) -> str:
        vcpu, xen = self.guest.vcpu, self.xen
        port, domid, ref = rng.randrange(-2, 12), rng.choice((0, 1, 2, 3, 7, x.DOMID_SELF)), rng.randrange(-1, 9000)
        gpa = self.address(rng) & ~(PAGE_SIZE - 1) if rng.random() < 0.8 else self.address(rng)
        calls = {
            "evtchn_send": lambda: xen.evtchn_send(vcpu, port),
            "evtchn_unmask": lambda: xen.evtchn_unmask(vcpu, port),
            "evtchn_close": lambda: xen.evtchn_close(vcpu, port),
            "evtchn_alloc_unbound": lambda: xen.evtchn_alloc_unbound(vcpu, domid),
            "evtchn_bind_interdomain": lambda: xen.evtchn_bind_interdomain(vcpu, domid, port),
            "grant_copy": lambda: self._grant_copy(rng),
            "grant_map": lambda: xen.grant_map(vcpu, domid, ref, rng.random() < 0.5),
            "grant_unmap": lambda: [xen.grant_unmap(vcpu, page) for page in list(xen.domains[1].maps)[:1]],
            "setup_grant_table": lambda: xen.setup_grant_table(vcpu, gpa, rng.randrange(-1, 40)),
            "set_shared_info": lambda: xen.set_shared_info(vcpu, gpa),
            "set_upcall_vector": lambda: xen.set_upcall_vector(vcpu, rng.randrange(-1, 300)),
        }
        name = rng.choice(sorted(calls))
        calls[name]()
        return f"{name}(port={port}, domid={domid}, ref={ref}, gpa={gpa:#x})"

    def _grant_copy(self, rng: random.Random) -> int:
        """GNTTABOP_copy over random ops written into the guest's memory."""
        count = rng.randrange(0, 5)
        ops = self.guest.alloc.base
        for i in range(count):
            fields = (rng.randrange(-1, 9000), rng.choice((0, 1, 2, x.DOMID_SELF)), rng.randrange(0, 5000),
                      rng.randrange(-1, 9000), rng.choice((0, 1, 2, x.DOMID_SELF)), rng.randrange(0, 5000),
                      rng.randrange(0, 5000), rng.randrange(0, 4), 0)
            self.guest.mem.store(x.GNTTAB_COPY.struct, ops + i * x.GNTTAB_COPY.size,
                                 *(f & mask for f, mask in zip(fields, _COPY_MASKS)))
        return self.xen.grant_copy(self.guest.vcpu, ops if rng.random() < 0.9 else self.address(rng), count)

    def xenstore(self, rng: random.Random) -> str:
        key = f"{self.front.node}/{rng.choice(self.KEYS)}"
        val = rng.choice((str(rng.randrange(-1, 9)), str(rng.getrandbits(32)), "", "x" * 40))
        self.xen.xs_write(self.guest.vcpu, key, val)
        return f"xenstore {key} = {val!r}"


_COPY_MASKS = tuple((1 << 8 * n) - 1 for n in x.GNTTAB_COPY.widths.values())


class HypervArena(Arena):
    """A Hyper-V guest: its VMBus rings, buffers and SynIC pages in its memory, its hypercalls and
    SynIC MSRs, NVSP and VMBus messages of its own making."""

    MSRS = (hv.HV_X64_MSR_SIMP, hv.HV_X64_MSR_SIEFP, hv.HV_X64_MSR_EOM, hv.HV_X64_MSR_SCONTROL,
            *(hv.HV_X64_MSR_SINT0 + i for i in (0, 2, 15)), 0x40000099)

    def __init__(self) -> None:
        super().__init__(NETVSC, "hyperv")
        self.hv = self.world.hyperv["host0"]
        self.netvsc = self.guest.netdevs[0].standby       # under its failover master

    def actions(self) -> list[Callable[[random.Random], str]]:
        return [self.scribble, self.ring, self.ring, self.packet, self.hypercall, self.message]

    def ring(self, rng: random.Random) -> str:
        """An index, mask or pending size of one of the channel's rings, or bytes in its data area."""
        ring = rng.choice((self.netvsc.channel.send, self.netvsc.channel.recv))
        off = rng.choice((hv.WRITE_INDEX, hv.READ_INDEX, hv.INTERRUPT_MASK, hv.PENDING_SEND_SZ,
                          hv.RING_DATA + 8 * rng.randrange(ring.size // 8)))
        val = rng.choice((rng.getrandbits(32), 0, 0xFFFFFFF8, ring.size, rng.randrange(0, ring.size, 8)))
        ring.put32(off, val)
        if rng.random() < 0.5:
            self.netvsc.channel.signal()
        return f"ring[{off:#x}] = {val:#x}"

    def packet(self, rng: random.Random) -> str:
        """A VMBus packet of the guest's own making: an NVSP message, a completion, or junk."""
        msg_type = rng.choice((1, 100, 101, 104, 107, 125, rng.getrandbits(32)))
        body = struct.pack("<4I", msg_type, *(value(rng, 32, lambda: self.address(rng)) for _ in range(3)))
        ptype = rng.choice((hv.VM_PKT_DATA_INBAND, hv.VM_PKT_COMP, rng.randrange(16)))
        if rng.random() < 0.3:
            section = rng.randrange(len(self.netvsc.tx_free) + 1)
            at = self.netvsc.send_buf + section * rndis.NETVSC_SEND_SECTION_SIZE
            self.guest.mem.write(at, struct.pack("<4I", rndis.RNDIS_MSG_PACKET, rng.getrandbits(16),
                                                 rng.getrandbits(16), rng.getrandbits(16)))
        ring = self.netvsc.channel.send
        try:
            hv.ring_write(ring, ring.size, hv.packet(ptype, rng.getrandbits(64), body, rng.randrange(2)))
        except hv.RingError:
            pass
        self.netvsc.channel.signal()
        return f"packet(type={ptype}, nvsp={msg_type:#x})"

    def hypercall(self, rng: random.Random) -> str:
        vcpu = self.guest.vcpu
        if rng.random() < 0.5:
            arg = rng.choice((rng.getrandbits(64), self.netvsc.channel.connection | rng.getrandbits(16) << 32))
            self.hv.signal_event(vcpu, arg)
            return f"HvSignalEvent({arg:#x})"
        msr, arg = rng.choice(self.MSRS), value(rng, 64, lambda: self.address(rng))
        self.hv.wrmsr(vcpu, msr, arg)
        return f"wrmsr({msr:#x}, {arg:#x})"

    def message(self, rng: random.Random) -> str:
        """HvPostMessage from a random input page, carrying a random VMBus message."""
        bus = self.guest.vmbus
        msgtype = rng.choice((5, 7, 8, 9, 11, 14, 3, rng.getrandbits(32)))
        payload = struct.pack("<II", msgtype, 0) + rng.randbytes(rng.randrange(0, 240))
        size = rng.choice((len(payload), rng.randrange(0, 300)))
        gpa = bus.input if rng.random() < 0.8 else self.address(rng)
        try:
            self.guest.mem.write(gpa, struct.pack("<IIII", rng.choice((4, rng.getrandbits(32))), 0,
                                                  rng.choice((1, 0, rng.getrandbits(32))), size) + payload)
        except GuestMemoryError:                # past the guest's RAM: the hypercall finds what is there
            pass
        status = self.hv.post_message(self.guest.vcpu, gpa)
        return f"HvPostMessage(type={msgtype:#x}, size={size}, gpa={gpa:#x}) = {status}"


# ---- host interfaces: the IOMMU and device state streams --------------------------------------------
class IommuArena:
    """DMA remapping as the host drives it and a device's DMA meets it: random maps, unmaps and
    invalidations of two domains, each followed by translations checked against a plain page
    dictionary (a stale IOTLB entry, a wrapped index or a refused but half-done map shows)."""

    DEVICES = {Bdf(3, 0, 0): 1, Bdf(4, 0, 0): 2}

    def __init__(self, levels: int) -> None:
        self.iommu = Iommu(GuestMemory(8 << 20), Resource("nic", "nic", Ledger(load_profile("default"))),
                           iotlb_entries=8, levels=levels)
        for bdf, domain in self.DEVICES.items():
            self.iommu.attach(bdf, domain)
        self.limit = 1 << vtd.agaw_bits(levels)
        self.pages: dict[tuple[int, int], tuple[int, bool]] = {}      # (domain, iova page) -> (hpa page, write)

    def iova(self, rng: random.Random) -> int:
        r = rng.random()
        if r < 0.8:
            return rng.randrange(0, 64) * PAGE_SIZE
        if r < 0.9:
            return self.limit - rng.randrange(1, 8) * PAGE_SIZE
        return rng.choice((-PAGE_SIZE, self.limit, 1 << 63, rng.randrange(0, 1 << 20)))

    def step(self, rng: random.Random, done: list[str]) -> None:
        domain = rng.choice((1, 2))
        iova, size = self.iova(rng), rng.choice((1, 1, 2, 3, 512)) * PAGE_SIZE
        op = rng.choice(("map", "map", "unmap", "invalidate"))
        try:
            if op == "map":
                hpa, write = rng.randrange(0, 256) * PAGE_SIZE, rng.random() < 0.7
                self.iommu.map(domain, iova, hpa, size, write, rng.choice((vtd.PAGE_4K, vtd.PAGE_2M)))
                for i in range(size // PAGE_SIZE):
                    self.pages[domain, iova // PAGE_SIZE + i] = (hpa // PAGE_SIZE + i, write)
            elif op == "unmap":
                self.iommu.unmap(domain, iova, size)
                for i in range(size // PAGE_SIZE):
                    self.pages.pop((domain, iova // PAGE_SIZE + i), None)
            else:
                self.iommu.invalidate(domain, iova, size)
        except ValueError:
            pass                            # refused as documented: nothing may have changed
        done.append(f"{op}(domain={domain}, iova={iova:#x}, size={size:#x})")
        for bdf, dom in self.DEVICES.items():
            for _ in range(4):
                self._translate(bdf, dom, rng.choice([p for (d, p) in self.pages if d == dom] or [0]) * PAGE_SIZE
                                + rng.randrange(0, PAGE_SIZE - 64), rng.random() < 0.5)

    def _translate(self, bdf: Bdf, domain: int, iova: int, is_write: bool) -> None:
        want = self.pages.get((domain, iova // PAGE_SIZE))
        try:
            got = self.iommu.translate(bdf, iova, 64, is_write)
        except DmaFault:
            got = None
        if want is None or is_write and not want[1]:
            if got is not None:
                raise Violation("write", f"domain {domain} IOVA {iova:#x} translated to {got:#x} but is not mapped"
                                         f"{' writable' if want else ''}")
        elif got != want[0] * PAGE_SIZE + iova % PAGE_SIZE:
            raise Violation("write", f"domain {domain} IOVA {iova:#x}: {got} instead of {want[0] * PAGE_SIZE:#x}")

    def finish(self) -> None:
        pass

    def faults(self) -> int:
        return 0


class StateArena:
    """Device state streams from a source that is buggy or hostile: a saved stream with random
    bytes changed and its CRC made right again; check_state refuses it, or load_state takes it
    without raising."""

    def __init__(self, nics: list[dict]) -> None:
        self.world = World(iovirt.Scenario.from_dict({
            "name": "fuzz-state", "hosts": [{"name": "host0", "cores": 8}],
            "vms": [{"name": f"vm{i}", "host": "host0", "memory_mb": MEMORY_MB,
                     "nics": [{**nic, "mac": f"52:54:00:00:00:{i:02x}", "ip": f"10.0.0.{i}/24"}]}
                    for i, nic in enumerate(nics, 1)], "workloads": []}))
        self.world.settle()
        self.devices = [vm.nics[0].device for name, vm in sorted(self.world.vms.items()) if vm.nics]
        self.streams = [save_state(d) for d in self.devices]

    def step(self, rng: random.Random, done: list[str]) -> None:
        i = rng.randrange(len(self.devices))
        blob = bytearray(self.streams[i])
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(blob) - 4)
            blob[at] = rng.choice((0, 0xFF, rng.getrandbits(8), blob[at] ^ 1 << rng.randrange(8)))
        blob[-4:] = struct.pack("<I", zlib.crc32(blob[:-4]))
        device = self.devices[i]
        done.append(f"{device.NAME}: {bytes(blob).hex()}")
        try:
            check_state(device, bytes(blob))
        except StateError:
            return
        load_state(device, bytes(blob))

    def finish(self) -> None:
        pass

    def faults(self) -> int:
        return 0


# ---- the surfaces --------------------------------------------------------------------------------------
def _offsets(*maps) -> list[int]:
    return sorted({r.offset for m in maps for r in m})


VIRTIO_REGS = ([v.COMMON_OFFSET + off for off in v.COMMON.values()] + [v.ISR_OFFSET]
               + [v.DEVICE_OFFSET + off for off in range(0, 12, 2)] + [v.NOTIFY_OFFSET + 4 * q for q in range(3)]
               + [16 * i + off for i in range(3) for off in range(0, 16, 4)])
MSIX = [16 * i + off for i in range(64) for off in range(0, 16, 4)]


def _nic(model: str, device: str, **kw) -> dict:
    return {"model": model, "device": device, **kw}


SURFACES: dict[str, Callable[[], object]] = {
    "e1000": lambda: PciArena(_nic("emulated", "e1000"), _offsets(e1000.REGS) + [0, 4]),
    "rtl8139": lambda: PciArena(_nic("emulated", "rtl8139"), _offsets(rtl8139.REGS)),
    "pcnet": lambda: PciArena(_nic("emulated", "pcnet"), [pcnet.RDP, pcnet.RAP, pcnet.RESET, pcnet.BDP, *range(16)]),
    "tulip": lambda: PciArena(_nic("emulated", "tulip"), _offsets(tulip.REGS)),
    "virtio-qemu": lambda: PciArena(_nic("paravirt", "virtio-net", backend="qemu"), VIRTIO_REGS),
    "virtio-vhost-net": lambda: PciArena(_nic("paravirt", "virtio-net", backend="vhost-net"), VIRTIO_REGS),
    "virtio-vhost-user": lambda: PciArena(_nic("paravirt", "virtio-net", backend="vhost-user"), VIRTIO_REGS),
    "ixgbe": lambda: PciArena(_nic("passthrough", "ixgbe", uplink="pnic0"), _offsets(ixgbe.REGS) + MSIX),
    "ixgbevf": lambda: PciArena(_nic("sriov", "ixgbevf", uplink="pnic0"), _offsets(ixgbevf.REGS) + MSIX),
    "ixgbevf-one-port": lambda: PciArena(_nic("sriov", "ixgbevf", uplink="pnic0"), _offsets(ixgbevf.REGS) + MSIX,
                                         ports=1),
    "sriov-capability": SriovArena,
    "esxi-vmxnet3": lambda: PciArena(_nic("paravirt", "vmxnet3"), _offsets(vmxnet3.BAR0, vmxnet3.BAR1), "esxi"),
    "esxi-flexible": lambda: PciArena(_nic("paravirt", "flexible"),
                                      [*range(0, vmxnet.FLEXIBLE_IO_SIZE, 2), vmxnet.MORPH_PORT], "esxi"),
    "esxi-vmxnet2": lambda: PciArena(_nic("paravirt", "vmxnet2"), list(range(0, vmxnet.VMXNET_CHIP_IO_RESV_SIZE, 4)),
                                     "esxi"),
    "xen-hvm-e1000": lambda: PciArena(_nic("emulated", "e1000"), _offsets(e1000.REGS), "xen"),
    "xen-pv": XenArena,
    "hyperv-netvsc": HypervArena,
    "hyperv-tulip": lambda: PciArena(_nic("emulated", "tulip"), _offsets(tulip.REGS), "hyperv"),
    "iommu": lambda: IommuArena(random.choice((3, 4))),
    "vmstate": lambda: StateArena([_nic("emulated", name) for name, entry in registry().items()
                                   if entry.kind == "emulated"] + [_nic("paravirt", "virtio-net")]),
}


# ---- running it -----------------------------------------------------------------------------------------
@dataclass
class Failure:
    surface: str
    seed: int
    example: int
    kind: str
    detail: str
    actions: list[str]

    def __str__(self) -> str:
        return (f"{self.surface} seed {self.seed} example {self.example}: {self.kind}: {self.detail}\n"
                f"  last actions: {'; '.join(self.actions)}\n"
                f"  replay: python tests/fuzz_campaign.py --surface {self.surface} --seed {self.seed}")


@dataclass
class Tally:
    examples: int = 0
    batches: int = 0
    guest_faults: int = 0
    failures: list[Failure] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def run_batch(surface: str, seed: int, examples: int, tally: Tally) -> None:
    """One system built for ``seed``, attacked ``examples`` times; the first broken promise ends it."""
    rng = random.Random(f"{surface}:{seed}")
    random.seed(f"{surface}:{seed}")              # surfaces that draw their shape (the IOMMU's levels)
    arena = None
    actions: list[str] = []
    i = 0
    try:
        arena = SURFACES[surface]()
        for i in range(examples):
            actions = []
            arena.step(rng, actions)
            tally.examples += 1
        arena.finish()
    except Violation as exc:
        tally.failures.append(Failure(surface, seed, i, exc.kind, str(exc).split(": ", 1)[1], actions))
        tally.kinds[exc.kind] += 1
    except Exception:                          # noqa: BLE001 - anything else escaped into the host
        tally.failures.append(Failure(surface, seed, i, "escape", traceback.format_exc(limit=-4), actions))
        tally.kinds["escape"] += 1
    tally.batches += 1
    tally.guest_faults += arena.faults() if arena is not None else 0


def campaign(surfaces: list[str], examples: int, batch: int, seed: int, budget_s: float | None = None,
             report: Callable[[str, Tally], None] | None = None) -> dict[str, Tally]:
    """``examples`` per surface in batches of ``batch`` (seeds from ``seed`` up), within ``budget_s`` each."""
    tallies = {}
    for surface in surfaces:
        tally = tallies[surface] = Tally()
        start, n = time.perf_counter(), 0
        while tally.examples < examples and (budget_s is None or time.perf_counter() - start < budget_s):
            run_batch(surface, seed + n, min(batch, examples - tally.examples), tally)
            n += 1
        tally.seconds = time.perf_counter() - start
        if report:
            report(surface, tally)
    return tallies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--surface", action="append", choices=sorted(SURFACES), help="(repeatable; default: all)")
    ap.add_argument("--examples", type=int, default=100_000, help="per surface")
    ap.add_argument("--batch", type=int, default=500, help="examples per system built")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=None, help="wall seconds per surface")
    args = ap.parse_args(argv)
    surfaces = args.surface or list(SURFACES)
    print(f"{'surface':<20}{'examples':>10}{'batches':>9}{'escapes':>9}{'stalls':>8}{'writes':>8}{'victims':>9}"
          f"{'guest oops':>12}{'seconds':>9}", flush=True)

    def report(surface: str, t: Tally) -> None:
        print(f"{surface:<20}{t.examples:>10}{t.batches:>9}{t.kinds['escape']:>9}{t.kinds['stall']:>8}"
              f"{t.kinds['write']:>8}{t.kinds['victim']:>9}{t.guest_faults:>12}{t.seconds:>9.0f}", flush=True)
        for failure in t.failures[:5]:
            print(failure, flush=True)
    tallies = campaign(surfaces, args.examples, args.batch, args.seed, args.budget_s, report)
    return 1 if any(t.failures for t in tallies.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
