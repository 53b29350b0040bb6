"""VMware ESXi: the device back-ends live in the vmkernel, not in a user
process.

- A guest access to an emulated or para-virtual device's BAR exits to the
  VMM, which decodes it and runs the device's handler in the same world
  (``vmm_handle`` then the emulation): no return to a user-space process, no
  tap syscall (VMware, "Performance Best Practices for VMware vSphere":
  the virtual devices are emulated in the VMM/vmkernel).
- The vNIC's port is on the vmkernel's vSwitch, which forwards each frame at
  its own price (``vmk_vswitch``).
- A VMXNET3 vNIC's interrupts are coalesced at ESXi's default rate.
- An assigned function's (DirectPath I/O, an SR-IOV VF) remapped interrupt
  is the vmkernel's: its handler, then a forward to the VM's monitor
  (``VMK_ASSIGNED_IRQ``), where KVM has VFIO's handler and an irqfd.
- Receive work and VMXNET3's and VMXNET's transmit run on a vmkernel world of the VM's
  (its NetWorld, the "transmit thread" of ``ethernetX.ctxPerDev``): a host
  thread that takes a core as KVM's vhost worker or QEMU's thread does.  A
  VMXNET3 TXPROD write (VMXNET's TX_ADDR read) exits, the VMM wakes the world and the vCPU goes back;
  the emulated devices (e1000, Vlance) transmit in the vCPU's context.
"""

from __future__ import annotations

from ..sim.resource import Resource
from .emulation import EmulatedNic
from .vm import VM

ESXI_MMIO = ("vm_exit", "vmm_handle", "mmio_emulate")
ESXI_PIO = ("vm_exit", "vmm_handle", "pio_emulate")
VMK_VSWITCH = "vmk_vswitch"
# Virtual interrupt coalescing of a VMXNET3 vNIC: on by default, rate-based ("rbc") at 4,000 interrupts/s
# (VMware vSphere Networking, "Low Throughput for UDP Workloads on Windows Virtual Machines":
# ethernetX.coalescingScheme rbc, ethernetX.coalescingParams, "The default interrupt rate is 4000")
RBC_DEFAULT_RATE = 4000
NETWORLD = "vmk-networld"
# DirectPath I/O and SR-IOV VFs: the IOMMU and the assignment are the same hardware as KVM's; a remapped interrupt
# is taken by the vmkernel's handler, which forwards it to the VM's monitor (instead of VFIO's irqfd)
VMK_ASSIGNED_IRQ = ("irq_entry", "vmk_intr_forward")


class EsxiNic(EmulatedNic):
    """An emulated or para-virtual vNIC of an ESXi VM, on the host's vSwitch."""

    def __init__(self, vm: VM, device: str, mac: bytes, slot: int | None = None, variant: str | None = None) -> None:
        self.world = vm.thread(NETWORLD)
        super().__init__(vm, device, mac, vmm=self.world, slot=slot, syscall=False, variant=variant)
        self.port.switch_event = VMK_VSWITCH
        self.tx_pending = False
        if hasattr(self.device, "kick_hook"):          # a para-virtual device: TX on the world
            self.device.kick_hook = self._kick
        if hasattr(self.device, "msi_hook"):           # VMXNET3: MSI-X, coalesced at ESXi's default rate
            self.device.msi_hook = self.msi
            self.device.coalesce_ns = 1e9 / RBC_DEFAULT_RATE

    def regions(self, index: int, kind: str, size: int) -> list[tuple[int, int, tuple[str, ...]]]:
        return [(0, size, ESXI_PIO if kind == "io" else ESXI_MMIO)]

    def _kick(self, cpu: Resource) -> None:
        """TXPROD: the NetWorld gets the ring (woken if it sleeps), once per batch."""
        if not self.tx_pending:
            self.tx_pending = True
            self.vm.sim.at(cpu.cursor, self._transmit)

    def _transmit(self) -> None:
        self.tx_pending = False
        if self.vm.paused:                       # the world stopped with the VM: the ring waits
            self.tx_pending = True
            self.vm.when_resumed(lambda: self.vm.sim.at(self.vm.sim.now, self._transmit))
            return
        world, now = self.world, self.vm.sim.now
        if world.cursor < now:
            world.sync(now)
            world.charge("wakeup")
        self.device.transmit(world)
