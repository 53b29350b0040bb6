"""VMware VMXNET, the device side of the vmxnet driver's protocol
(open-vm-tools ``vmxnet_def.h``, ``vmxnet2_def.h``): I/O ports for the
handshake and the doorbells, everything else in one shared area in guest
memory, ``Vmxnet2_DriverData``, with an RX ring, a second RX ring of body
buffers for frames longer than an RX buffer (jumbo frames), and a TX ring,
whose entries change hands by their ``ownership`` field.

- INIT_ADDR then INIT_LENGTH hand the area over; the device checks its magic,
  length and ring offsets, and reads STATUS_ENABLED back only if they hold.
- TX_ADDR (an ``inl``) asks for a transmit: every entry the NIC owns from its
  next one is gathered from its scatter-gather elements and sent, and handed
  back to the driver; an entry flagged TX_RING_LOW (the driver's ring is
  nearly full) has the device interrupt when it is done.
- A received frame takes the next RX entry the NIC owns: data at ``paddr``,
  ``actualLength`` and ownership back to the driver, INTx raised; the driver
  acknowledges with CMD_INTR_ACK.  What does not fit goes into the second
  ring's body buffers (NIC_FRAG to DRIVER_FRAG, RX_FRAG_EOP on the last),
  the head entry flagged RX_WITH_FRAG; a frame with too few of them is
  dropped.

:class:`VmxnetPorts` is that behaviour on ``self``, for two adapters:
:class:`Vmxnet2` here, a VMXNET function from power-on (Enhanced VMXNET: the
larger rings, TSO and jumbo frames in its features), and the Flexible
adapter (``flexible.py``), a Vlance that VMXNET's ports appear behind once
its driver morphs it.  No device source is public: the device's answers are
what the driver expects of them, and where the headers leave a value open
(the ring sizes GET_NUM_*_BUFFERS reports, ``txClusterLength``) the model
answers with the driver's defaults and leaves ``txClusterLength`` 0 (a
doorbell per frame).  Not modelled: TSO segmentation, checksum offload,
wake-on-LAN patterns."""

from __future__ import annotations

import struct
from collections import Counter
from typing import Callable

from ..mem.dma import Dma, DmaFault
from ..pci.function import Bar, PciFunction
from ..sim.engine import Sim
from ..sim.resource import Resource
from ..spec import vmxnet as s
from ..spec.ethernet import ETH_MIN_FRAME
from .discard import discard
from .registry import DeviceEntry
from .vmstate import PCI_FUNCTION, Bytes, Counts, Flag, Nested, UInt, VmState

Irq = Callable[[Resource, int], None]
_DD = s.DRIVER_DATA
_TX_LOAD, _RX_LOAD = s.TX_ENTRY, s.RX_ENTRY
_RX_DONE = s.RX_ENTRY_DONE.struct
_BROADCAST = b"\xff" * 6
_SAVED = struct.Struct("<III")                      # savedRxNICNext, savedRxNICNext2, savedTxNICNext
_LENGTH_PORTS = {s.INIT_ADDR, s.INIT_LENGTH, s.COMMAND_ADDR, s.INT_ENABLE_ADDR}


class VmxnetPorts:
    """VMXNET's ports and shared rings, on the adapter that mixes it in (its
    ``sim``, ``dma``, ``irq``, ``port``, ``errors``, ``kick_hook``)."""

    FEATURES = 0                            # GET_FEATURES
    CAPABILITIES = s.CAP_VMXNET_APROM       # GET_CAPABILITIES
    NUM_RX = s.DEFAULT_NUM_RX_BUFFERS       # GET_NUM_RX_BUFFERS
    NUM_TX = s.DEFAULT_NUM_TX_BUFFERS       # GET_NUM_TX_BUFFERS
    MAX_FRAME = 1518                        # without jumbo frames: a 1500-byte MTU, Ethernet header and VLAN tag
    sim: Sim
    dma: Dma
    irq: Irq
    port: object
    errors: Counter
    perm_mac: bytes
    timer_cpu: Resource                     # polls the RX ring for the backend
    kick_hook: Callable[[Resource], None] | None

    def vx_reset(self) -> None:
        self.vx_init_addr = 0
        self.vx_length = 0
        self.vx_enabled = False
        self.vx_int_enabled = True
        self.vx_asserted = False
        self.vx_command = 0
        self.vx_mac = bytes(self.perm_mac)
        self.vx_ifflags = 0
        self.vx_rx_ring = self.vx_rx_ring2 = self.vx_tx_ring = 0
        self.vx_rx_len = self.vx_rx_len2 = self.vx_tx_len = 0
        self.vx_rx_next = self.vx_rx_next2 = self.vx_tx_next = 0

    # ---- ports (vmxnet_def.h), offsets from VMXNET's base ------------------------------
    def vx_read(self, cpu: Resource, offset: int, size: int) -> int:
        if s.MAC_ADDR <= offset < s.MAC_ADDR + 6 and size == 1:
            return self.vx_mac[offset - s.MAC_ADDR]
        if s.APROM_ADDR <= offset < s.APROM_ADDR + 6 and size == 1:
            return self.perm_mac[offset - s.APROM_ADDR]
        if size != 4:
            return (1 << 8 * size) - 1
        if offset == s.TX_ADDR:
            self._vx_doorbell(cpu)
            return 0
        if offset == s.COMMAND_ADDR:
            return self._vx_answer(self.vx_command)
        if offset in (s.LOW_VERSION, s.HIGH_VERSION):
            return s.MAGIC
        if offset == s.STATUS_ADDR:
            return s.STATUS_CONNECTED | (s.STATUS_ENABLED if self.vx_enabled else 0)
        if offset == s.INIT_ADDR:
            return self.vx_init_addr
        if offset == s.INIT_LENGTH:
            return self.vx_length
        return 0

    def vx_write(self, cpu: Resource, offset: int, size: int, value: int) -> None:
        if s.MAC_ADDR <= offset < s.MAC_ADDR + 6 and size == 1:
            mac = bytearray(self.vx_mac)
            mac[offset - s.MAC_ADDR] = value & 0xFF
            self.vx_mac = bytes(mac)
        elif size == 4 and offset in _LENGTH_PORTS:
            if offset == s.INIT_ADDR:
                self._vx_disconnect(cpu)
                self.vx_init_addr = value
            elif offset == s.INIT_LENGTH:
                self._vx_init(cpu, value)
            elif offset == s.INT_ENABLE_ADDR:
                self.vx_int_enabled = bool(value)
                self._vx_irq(cpu)
            else:
                self._vx_command(cpu, value)

    def _vx_answer(self, command: int) -> int:
        """The value a GET command leaves in the command port."""
        return {s.CMD_GET_NUM_RX_BUFFERS: self.NUM_RX, s.CMD_GET_NUM_TX_BUFFERS: self.NUM_TX,
                s.CMD_GET_CAPABILITIES: self.CAPABILITIES, s.CMD_GET_FEATURES: self.FEATURES}.get(command, 0)

    def _vx_command(self, cpu: Resource, value: int) -> None:
        self.vx_command = value
        if value == s.CMD_INTR_ACK:
            self.vx_asserted = False
            self._vx_irq(cpu)
        elif value in (s.CMD_INTR_ENABLE, s.CMD_INTR_DISABLE):
            self.vx_int_enabled = value == s.CMD_INTR_ENABLE
            self._vx_irq(cpu)
        elif value == s.CMD_UPDATE_IFF and self.vx_enabled:
            self.vx_ifflags = self._vx_dd(cpu, "ifflags")
        elif value == s.CMD_CHECK_TX_DONE and self.vx_enabled:
            self.transmit(cpu)

    def _vx_dd(self, cpu: Resource, field: str) -> int:
        try:
            return self.dma.load(cpu, _DD.field_struct(field), self.vx_init_addr + s.DD[field])[0]
        except DmaFault:
            self.errors["dd_fault"] += 1
            return 0

    # ---- the shared area ------------------------------------------------------------------
    def _vx_disconnect(self, cpu: Resource) -> None:
        """A new INIT_ADDR (0 on vmxnet_close): the NIC's indices saved in the area it leaves, for a reconnect."""
        if self.vx_enabled:
            self.vx_enabled = False
            try:
                self.dma.store(cpu, _SAVED, self.vx_init_addr + s.DD["savedRxNICNext"], self.vx_rx_next,
                               self.vx_rx_next2, self.vx_tx_next)
            except DmaFault:
                self.errors["dd_fault"] += 1

    def _vx_init(self, cpu: Resource, length: int) -> None:
        """INIT_LENGTH: take the area at INIT_ADDR if it is one a driver of this protocol laid out."""
        self.vx_length = length
        self.vx_enabled = False
        if self._vx_area_problem(cpu, self.vx_init_addr, length):
            self.errors["init_error"] += 1
            return
        self.vx_enabled = True

    def _vx_area_problem(self, cpu: Resource, addr: int, length: int) -> str | None:
        if length < _DD.size:
            return f"length {length} is shorter than Vmxnet2_DriverData"
        try:
            self.dma.gpa(addr, length, True)
            dd = dict(zip((f for f, _, _ in _DD.fields), self.dma.load(cpu, _DD, addr)))
        except DmaFault:
            return "the area is outside guest memory"
        if dd["magic"] != s.MAGIC or dd["length"] != length:
            return f"magic {dd['magic']:#x} or length {dd['length']} is not this protocol's"
        rings = (("rxRingOffset", "rxRingLength", _RX_LOAD.size, s.ENHANCED_MAX_NUM_RX_BUFFERS),
                 ("rxRingOffset2", "rxRingLength2", _RX_LOAD.size, s.MAX_NUM_RX_BUFFERS2),
                 ("txRingOffset", "txRingLength", _TX_LOAD.size, s.MAX_NUM_TX_BUFFERS_TSO))
        for offset, count, entry, most in rings:
            if not 1 <= dd[count] <= most or dd[offset] < _DD.size or dd[offset] + dd[count] * entry > length:
                return f"{count} {dd[count]} at {offset} {dd[offset]} does not fit the area"
        saved = (("savedRxNICNext", "rxRingLength"), ("savedRxNICNext2", "rxRingLength2"),
                 ("savedTxNICNext", "txRingLength"))
        if any(dd[index] >= dd[count] for index, count in saved):
            return "a saved index is past its ring"
        self.vx_rx_ring, self.vx_rx_len = addr + dd["rxRingOffset"], dd["rxRingLength"]
        self.vx_rx_ring2, self.vx_rx_len2 = addr + dd["rxRingOffset2"], dd["rxRingLength2"]
        self.vx_tx_ring, self.vx_tx_len = addr + dd["txRingOffset"], dd["txRingLength"]
        self.vx_rx_next, self.vx_rx_next2, self.vx_tx_next = (dd[index] for index, _ in saved)
        self.vx_ifflags = dd["ifflags"]
        return None

    # ---- transmit (Vmxnet2_GetNextTx, Vmxnet2_IncNextTx) -------------------------------------
    def _vx_doorbell(self, cpu: Resource) -> None:
        if not self.vx_enabled:
            return
        if self.kick_hook is not None:
            self.kick_hook(cpu)
        else:
            self.transmit(cpu)

    def transmit(self, cpu: Resource) -> None:
        """Every entry the NIC owns from its next one, one pass over the ring at most."""
        if not self.vx_enabled:
            return
        interrupt = False
        for _ in range(self.vx_tx_len):
            addr = self.vx_tx_ring + self.vx_tx_next * _TX_LOAD.size
            try:
                entry = self.dma.load(cpu, _TX_LOAD, addr)
            except DmaFault:
                self.errors["tx_entry_fault"] += 1
                return
            if entry[1] != s.OWNERSHIP_NIC:
                break
            self._vx_send(cpu, entry)
            self.dma.store(cpu, s.TX_OWNERSHIP, addr + _TX_LOAD.offset("ownership"), s.OWNERSHIP_DRIVER)
            self.vx_tx_next = self.vx_tx_next + 1 if self.vx_tx_next + 1 < self.vx_tx_len else 0
            interrupt |= bool(entry[0] & s.TX_RING_LOW)
        if interrupt:
            self._vx_raise(cpu)

    def _vx_send(self, cpu: Resource, entry: tuple) -> None:
        elements = s.sg_elements(entry)
        if entry[4] != s.NET_SG_PHYS_ADDR or not elements or sum(n for _, n in elements) > self.MAX_FRAME:
            discard(self, "tx_bad_entry")
            return
        try:
            frame = b"".join(self.dma.read(cpu, a, n) for a, n in elements)
        except DmaFault:
            discard(self, "tx_buffer_fault")
            return
        if len(frame) < ETH_MIN_FRAME:
            frame += bytes(ETH_MIN_FRAME - len(frame))
        if self.port is not None:
            self.port.send(cpu, frame)

    # ---- receive (Vmxnet2_GetNextRx, Vmxnet2_PutRx; body buffers in the second ring) ------------
    def _vx_rx_entry(self, cpu: Resource) -> tuple[int, int, int] | None:
        """(entry address, buffer, its length) of ring 1's next entry, if the NIC owns it."""
        addr = self.vx_rx_ring + self.vx_rx_next * _RX_LOAD.size
        paddr, size, _, owner, _, _ = self.dma.load(cpu, _RX_LOAD, addr)
        return (addr, paddr, size) if owner == s.OWNERSHIP_NIC else None

    def _vx_frags(self, cpu: Resource, need: int) -> list[tuple[int, int, int]] | None:
        """Ring 2's body buffers the NIC owns from its next one, enough for ``need`` bytes (None: too few)."""
        frags, index = [], self.vx_rx_next2
        while need > 0 and len(frags) < self.vx_rx_len2:
            addr = self.vx_rx_ring2 + index * _RX_LOAD.size
            paddr, size, _, owner, _, _ = self.dma.load(cpu, _RX_LOAD, addr)
            if owner != s.OWNERSHIP_NIC_FRAG or size == 0:
                return None
            frags.append((addr, paddr, min(size, need)))
            need -= size
            index = index + 1 if index + 1 < self.vx_rx_len2 else 0
        return frags if need <= 0 else None

    def vx_can_receive(self, size: int) -> bool:
        if not self.vx_enabled:
            return False
        try:
            return self._vx_rx_entry(self.timer_cpu) is not None
        except DmaFault:
            return True                             # vx_receive meets the fault and counts it

    def vx_receive(self, cpu: Resource, frame: bytes) -> None:
        if not self.vx_enabled or not self._vx_accept(frame):
            return
        try:
            found = self._vx_rx_entry(cpu)
            if found is None:
                discard(self, "rx_no_buffer", frame)
                return
            addr, paddr, size = found
            frags = self._vx_frags(cpu, len(frame) - size) if len(frame) > size else []
            if frags is None:
                discard(self, "rx_oversize", frame)
                return
            self.dma.write(cpu, paddr, frame[:size])
            pos = size
            for n, (frag, buf, length) in enumerate(frags, 1):
                self.dma.write(cpu, buf, frame[pos : pos + length])
                self.dma.store(cpu, _RX_DONE, frag + s.RX_DONE_OFFSET, length, s.OWNERSHIP_DRIVER_FRAG,
                               s.RX_FRAG_EOP if n == len(frags) else 0)
                pos += length
            self.dma.store(cpu, _RX_DONE, addr + s.RX_DONE_OFFSET, min(size, len(frame)), s.OWNERSHIP_DRIVER,
                           s.RX_WITH_FRAG if frags else 0)
        except DmaFault:
            discard(self, "rx_fault", frame)
            return
        self.vx_rx_next = self.vx_rx_next + 1 if self.vx_rx_next + 1 < self.vx_rx_len else 0
        self.vx_rx_next2 = (self.vx_rx_next2 + len(frags)) % self.vx_rx_len2
        self._vx_raise(cpu)

    def _vx_accept(self, frame: bytes) -> bool:
        dst = frame[:6]
        flags = self.vx_ifflags
        return (flags & s.IFF_PROMISC or dst == self.vx_mac or dst == _BROADCAST and flags & s.IFF_BROADCAST
                or dst[0] & 1 and flags & s.IFF_MULTICAST) != 0

    # ---- the interrupt (INTx) -----------------------------------------------------------------
    def _vx_raise(self, cpu: Resource) -> None:
        self.vx_asserted = True
        self._vx_irq(cpu)

    def _vx_irq(self, cpu: Resource) -> None:
        self.irq(cpu, int(self.vx_asserted and self.vx_int_enabled))


def _index_problem(length: str):
    return lambda value, dev, staged: (None if value < max(staged[length], 1)
                                       else f"{value} is not below {staged[length]} (the ring's entries)")


# The VMXNET part's state, shared by every adapter that speaks it
VMXNET_FIELDS = (
    UInt("vx_init_addr", 32), UInt("vx_length", 32), Flag("vx_enabled"), Flag("vx_int_enabled"),
    Flag("vx_asserted"), UInt("vx_command", 32), Bytes("vx_mac"), UInt("vx_ifflags", 32),
    UInt("vx_rx_ring", 64), UInt("vx_rx_len", 16), UInt("vx_rx_ring2", 64), UInt("vx_rx_len2", 16),
    UInt("vx_tx_ring", 64), UInt("vx_tx_len", 16),
    UInt("vx_rx_next", 16, check=_index_problem("vx_rx_len")),
    UInt("vx_rx_next2", 16, check=_index_problem("vx_rx_len2")),
    UInt("vx_tx_next", 16, check=_index_problem("vx_tx_len")),
)


class Vmxnet2(VmxnetPorts):
    """An Enhanced VMXNET function: VMXNET's ports at the start of its I/O BAR from power-on."""

    NAME = "vmxnet2"
    FEATURES = s.FEATURE_ZERO_COPY_TX | s.FEATURE_TSO | s.FEATURE_JUMBO_FRAME
    CAPABILITIES = (s.CAP_SG | s.CAP_IP4_CSUM | s.CAP_TSO | s.CAP_VMXNET_APROM | s.CAP_TX_CHAIN
                    | s.CAP_RX_CHAIN)
    NUM_RX = s.ENHANCED_DEFAULT_NUM_RX_BUFFERS
    NUM_TX = s.DEFAULT_NUM_TX_BUFFERS_TSO
    MAX_FRAME = s.MAX_FRAME

    def __init__(self, sim: Sim, mac: bytes, dma: Dma, irq: Irq, timer_cpu: Resource) -> None:
        self.sim, self.perm_mac, self.dma, self.irq, self.timer_cpu = sim, mac, dma, irq, timer_cpu
        self.port = None
        self.kick_hook: Callable[[Resource], None] | None = None
        self.errors: Counter[str] = Counter()
        self.place = self.NAME
        self.pci = PciFunction(s.VENDOR_ID, s.DEVICE_ID, s.CLASS_ETHERNET, interrupt_pin=1,
                               bars=(Bar(0, s.VMXNET_CHIP_IO_RESV_SIZE, "io"),))
        self.vx_reset()

    def bar_handlers(self, index: int):
        return self.vx_read, self.vx_write

    def can_receive(self, size: int) -> bool:
        return self.vx_can_receive(size)

    def receive(self, cpu: Resource, frame: bytes) -> None:
        self.vx_receive(cpu, frame)

    def resume(self, cpu: Resource) -> None:
        """The VM runs after a load: the backend hands over frames it held."""
        if self.port is not None:
            self.port.flush(cpu)

    VMSTATE = VmState("vmxnet2", 1, (*VMXNET_FIELDS, Counts("errors"), Nested("pci", PCI_FUNCTION)))


DEVICE = DeviceEntry(Vmxnet2, "paravirt", "VMware Enhanced VMXNET (VMXNET2; vmxnet2_def.h)", ("VMware ESXi",),
                     "vmxnet", (s.VENDOR_ID, s.DEVICE_ID), hypervisor="esxi", offloads=("tx-tcp-segmentation",))
