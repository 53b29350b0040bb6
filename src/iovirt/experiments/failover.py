"""Live migration of a VM whose assigned NICs have a virtio-net standby
(net_failover, QEMU's failover=on): each assigned function is hot-unplugged
before pre-copy starts (device_del; pre-copy waits for the guest to eject the
last), a function of the same model is hot-plugged where the VM then runs,
and the guest's bond takes it as primary again once its driver has probed."""

from __future__ import annotations

from collections.abc import Callable

from ..guest.drivers.failover import FailoverMaster
from ..guest.kernel import GuestKernel
from ..hypervisor.migration import Migration, MigrationReport
from ..hypervisor.passthrough import AssignmentError
from ..hypervisor.vm import VM
from .scenario import ASSIGNED, backed_up


def with_standby(spec, vm: VM) -> list:
    """The assigned functions of ``vm`` (scenario entry ``spec``) whose MAC a virtio-net standby shares."""
    return [nic for nic in vm.nics if nic.spec is not None and nic.spec.model in ASSIGNED and backed_up(spec, nic.spec)]


def unplug(functions: list, migration: Migration) -> None:
    """device_del of every function; pre-copy starts once the guest has ejected the last."""
    sim = migration.vm.sim
    left = [len(functions)]
    migration.report.unplugged_ns = sim.now

    def ejected() -> None:
        left[0] -= 1
        if not left[0]:
            migration.start(sim.now)
            migration.report.started_ns = migration.report.unplugged_ns
    for function in functions:
        function.unplug(on_done=ejected)


def replug(spec, vm: VM, guest: GuestKernel, plug: Callable, report: MigrationReport) -> str | None:
    """A function of each assigned NIC's model is hot-plugged into ``vm``
    (``plug(vm, nic)``) and becomes primary again once the guest has probed it;
    None, or why the VM stays on its standby."""
    for nic in (n for n in spec.nics if n.model in ASSIGNED):
        try:
            plug(vm, nic)
        except (AssignmentError, MemoryError) as exc:
            return f"{spec.name} stays on its virtio-net standby: {exc}"
    _await_failback(guest, report)
    return None


def _await_failback(guest: GuestKernel, report: MigrationReport) -> None:
    """``report.failback_ns``: when the guest's bond next takes a primary (once its probe is done)."""
    for master in (n for n in guest.netdevs if isinstance(n, FailoverMaster)):
        def failback(master=master) -> None:
            report.failback_ns = guest.vcpu.cursor
            master.on_failback = None
        master.on_failback = failback
