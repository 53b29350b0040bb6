"""SR-IOV: one physical 82599 port shared by many VMs, each given a Virtual
Function of it the way pass-through gives a whole device.

The host side does what Linux does: the PF driver owns the port and the
administrator's per-VF policy (``ip link set PF vf N mac|vlan|rate|spoofchk|
trust``, answered through the PF/VF mailbox); writing NumVFs then VF Enable
in the PF's SR-IOV capability (``sriov_numvfs``) creates the VFs at their
routing IDs.  Each VF is then assigned like a pass-through device: its own
requester ID in the IOMMU, BAR0 direct, its MSI-X table trapped.  Frames
between VFs of the port are switched inside the NIC; everything else shares
the port's one engine and link.

A VF taken out of a VM (hot unplug) is reset and its administrative
settings cleared, as VFIO and libvirt do on release; the next VM to take it
(hot plug) brings its own (``VfConfig``: the MAC above all).

The PF driver (``ixgbe_pf``) answers the VFs' mailboxes from its interrupt.
A port that is also the host bridge's uplink keeps the host's own traffic in
the PF's default pool: the host kernel's driver of the PF moves its queues
there, and the bridged VMs' MACs are put in the NIC's filters for that pool
(``bridge fdb add MAC dev PF self``), so the NIC's switch delivers frames
from a VF to them, and theirs to a VF, without the wire.
"""

from __future__ import annotations

from ..devices.ixgbe import Ixgbe
from ..devices.ixgbe_vf import VirtualFunction
from ..mem.dma import Dma
from ..mem.guest_memory import GuestMemory
from ..pci.bus import PciBus
from ..pci.function import Bar, PciFunction
from ..pci.sriov import HostSriov, SriovParams, add_sriov
from ..spec import ixgbe as s
from ..spec import ixgbevf as vs
from ..spec.pci import PCI_CLASS_NETWORK_ETHERNET
from .ixgbe_pf import PfDriver, VfConfig
from .passthrough import VFIO_IRQ, AssignedFunction, AssignmentError, PhysicalNic
from .vm import VM

PF_HOST_MEMORY = 16 << 20           # the PF driver's own rings (when its pool carries no traffic)
VF_BAR_WINDOW = (0xE000_0000, 0xF000_0000)
FIRST_VF_OFFSET, VF_STRIDE = 0x80, 2  # 82599 with ARI: VFs at PF + 128 + 2n
VF_BARS = (Bar(0, vs.BAR0_SIZE, "mem64", True), Bar(vs.MSIX_BAR, vs.MSIX_BAR_SIZE, "mem64", True))


class SriovPort:
    """A host port with SR-IOV enabled and its VFs.  When it is also the
    host bridge's uplink (``uplink``: its ``pnic`` this one, ``pf`` the
    port's function, ``driver`` the host kernel's netdev on it, ``cpu``
    where that runs), the PF's traffic moves to its default pool and the
    MACs behind the bridge (``bridged``) are filtered into that pool."""

    def __init__(self, host, pnic: PhysicalNic, configs: list[VfConfig], uplink=None,
                 bridged: tuple[bytes, ...] = ()) -> None:
        self.num_vfs = num_vfs = len(configs)
        self.pnic = pnic
        shared = uplink is not None and uplink.pnic is pnic
        if shared:
            self.pf = uplink.pf
            uplink.driver.enable_vmdq(num_vfs)  # the PF's default pool: the first after the VFs' (VMDq offset)
        else:
            pnic.claim(f"{host.name}'s PF driver ({num_vfs} VFs)")
            self.pf = Ixgbe(host.sim, bytes([0x02, 0xFE, 0, 0, pnic.bdf.bus, 0]),
                            Dma(GuestMemory(PF_HOST_MEMORY), "dma"), pnic.engine, num_vfs=num_vfs,
                            rx_engine=pnic.rx_engine)
            self.pf.place = f"{host.name}/{pnic.name}"
            pnic.link.attach(self.pf)
        self.driver = PfDriver(self.pf, host.kernel_thread(f"{pnic.name}/pf-driver"), num_vfs, configs)
        self.driver.own_interrupt()
        self.driver.restore()
        for mac in bridged if shared else ():
            uplink.driver.fdb_add(mac)
        bus = PciBus(pnic.bdf.bus)
        bus.attach(self.pf.pci, pnic.bdf.device, pnic.bdf.function)
        self.vfs: dict[int, VirtualFunction] = {}
        self.cap = add_sriov(self.pf.pci, bus, self._make_vf,
                             SriovParams(vs.MAX_POOLS, vs.DEVICE_ID, FIRST_VF_OFFSET, VF_STRIDE, VF_BARS))
        self.free = list(range(num_vfs))
        HostSriov(self.pf.pci, pnic.bdf, VF_BAR_WINDOW).enable_vfs(num_vfs)

    def _make_vf(self, n: int) -> PciFunction:
        """VF n as the PF's capability creates it: the VF's own header (what the
        host sees); the function the guest sees is the VF model's.  A VF past
        those the PF driver set pools up for (NumVFs rewritten under it) is
        a header and nothing behind it."""
        if n < self.num_vfs:
            self._fresh_vf(n)
        return PciFunction(vs.VENDOR_ID, vs.DEVICE_ID, PCI_CLASS_NETWORK_ETHERNET << 8, interrupt_pin=0, bars=VF_BARS)

    def _fresh_vf(self, n: int) -> None:
        self.vfs[n] = VirtualFunction(self.pf.vt, n, Dma(GuestMemory(1 << 12), "dma"))

    def take(self, vm: str, config: VfConfig | None = None) -> int:
        """The lowest free VF for ``vm``; ``config``: the administrator's
        settings for it first (``ip link set PF vf N mac ...``)."""
        if not self.free:
            raise AssignmentError(f"{self.pnic.address} ({self.pnic.name}): every VF is assigned; none left for {vm}")
        n = self.free.pop(0)
        if config is not None:
            self._admin().set_vf(n, config)
        return n

    def release(self, n: int) -> None:
        """VF n comes back from its VM: reset (its queues stop, its interrupt
        block and mailbox clear: VFCTRL.RST, issued by the host; its
        configuration space back to reset: a fresh function), its settings
        cleared so its old MAC no longer steers frames to it; free again."""
        policy = self._admin()
        self.vfs[n].mmio_write(policy.host, vs.REGS["VFCTRL"].offset, 4, s.CTRL_RST)
        self._fresh_vf(n)
        policy.set_vf(n, VfConfig())
        self.free = sorted((*self.free, n))

    def _admin(self) -> PfDriver:
        """The PF driver, taking an administrator's request now."""
        self.driver.host.sync(self.pf.sim.now)
        return self.driver


class SriovNic(AssignedFunction):
    """One VF of a port, assigned to a VM: present at boot, or hot-plugged
    (``hotplug``) with the administrator's ``config`` for it, into ``slot``
    (the first free one if None)."""

    def __init__(self, vm: VM, port: SriovPort, posted: bool = False, config: VfConfig | None = None,
                 hotplug: bool = False, slot: int | None = None, irq_path: tuple[str, ...] = VFIO_IRQ) -> None:
        slot = self.slot_for(vm, slot)
        n = port.take(vm.name, config)
        vf = port.vfs[n]
        self.port, self.index = port, n
        try:
            super().__init__(vm, port.cap.vf_bdf(n), port.pnic.engine, vs.MSIX_BAR, vs.MSIX_VECTORS, posted,
                             irq_path)
        except (AssignmentError, MemoryError) as exc:   # no room for the VM's IOMMU tables or IRTEs: the VF goes back
            port.release(n)
            raise AssignmentError(f"{port.pnic.address} VF {n} for {vm.name}: {exc}") from None
        vf.dma = self.dma
        self.plug(vm, vf, hotplug, slot)

    def give_back(self) -> None:
        self.port.release(self.index)
