"""Guest driver for VMware VMXNET and Enhanced VMXNET, in the order
open-vm-tools' Linux vmxnet driver does things (modules/linux/vmxnet/vmxnet.c).

Probe (vmxnet_probe_device): a VMXNET function (0x15AD:0x0720) has its ports
at the start of BAR0; a Vlance (0x1022:0x2000) is taken only if its I/O BAR
holds the morph port and VMXNET's ports behind the Vlance's (else the probe
declines and pcnet32 gets it), and is morphed: the morph port must read
LANCE_CHIP or VMXNET_CHIP, VMXNET_CHIP is written and must read back.  Then
the version check (LOW/HIGH_VERSION around VMXNET2_MAGIC), GET_FEATURES and
GET_CAPABILITIES (TSO and jumbo frames make it Enhanced VMXNET: the larger
rings), the ring sizes, the MAC from the APROM written to the MAC port.
Open (vmxnet_open, vmxnet_init_ring): the shared area with the RX ring, the
second (jumbo) RX ring and the TX ring, every RX buffer given to the NIC,
INIT_ADDR and INIT_LENGTH.  TX (vmxnet_tx): one entry per frame, ownership to
the NIC, and an ``inl`` of TX_ADDR once ``txNumDeferred`` reaches the
device's ``txClusterLength`` or the ring runs low.  The interrupt
(vmxnet_interrupt): CMD_INTR_ACK, every RX entry the driver owns, the TX
entries handed back (check_tx_queue)."""

from __future__ import annotations

from ...spec import vmxnet as s
from ...spec.ethernet import ETH_MIN_FRAME
from .base import NetDriver

_DD = s.DD
_TX_SIZE, _RX_SIZE = s.TX_ENTRY.size, s.RX_ENTRY.size
_RX_UNPACK = s.RX_ENTRY.unpack_from
_U32 = s.DRIVER_DATA.field_struct("txNumDeferred")
_TX_OWNER_OFF = s.TX_ENTRY.offset("ownership")
_RX_OWNER_OFF = s.RX_ENTRY.offset("ownership")
RING_LOW_SLACK = 5                  # vmxnet_tx: RING_LOW once more than txRingLength - 5 are pending
JUMBO_RX2_FACTOR = 4                # numRxBuffers2 = numRxBuffers * 4 with jumbo frames
PAGE_BUFFER = 4096                  # the second ring's buffers: a page each
MORPH_OFFSET = s.LANCE_CHIP_IO_RESV_SIZE + s.MORPH_PORT_SIZE


class VmxnetProbeError(RuntimeError):
    pass


class VmxnetDriver(NetDriver):
    VENDOR, DEVICE = s.VENDOR_ID, s.DEVICE_ID
    ID_TABLE = ((s.VENDOR_ID, s.DEVICE_ID), (s.VLANCE_VENDOR_ID, s.VLANCE_DEVICE_ID))   # vmxnet_chips
    PROBE_ORDER = -1                # VMware Tools load vmxnet ahead of pcnet32 for a Flexible adapter

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.morphed = False
        self._probe()
        self._open()

    # ---- ports: every access is an IN or OUT instruction --------------------------------
    def inl(self, port: int) -> int:
        return self.vcpu.pio_read(self.io + port, 4)

    def outl(self, value: int, port: int) -> None:
        self.vcpu.pio_write(self.io + port, 4, value)

    def command(self, cmd: int) -> int:
        self.outl(cmd, s.COMMAND_ADDR)
        return self.inl(s.COMMAND_ADDR)

    # ---- probe (vmxnet_probe_device, vmxnet_probe_features) ----------------------------
    def _probe(self) -> None:
        _, base, size = self.info.bars[0]
        vlance = (self.info.vendor, self.info.device) == (s.VLANCE_VENDOR_ID, s.VLANCE_DEVICE_ID)
        need = MORPH_OFFSET + s.VMXNET_CHIP_IO_RESV_SIZE if vlance else s.VMXNET_CHIP_IO_RESV_SIZE
        if need > size:
            raise VmxnetProbeError(f"vmxnet: device {self.info.bdf} is not supported by this driver")
        self.io = base + MORPH_OFFSET if vlance else base
        if vlance:
            self._morph()
        low = self.inl(s.LOW_VERSION)
        if low & 0xFFFF0000 != s.MAGIC & 0xFFFF0000 or not low <= s.MAGIC <= self.inl(s.HIGH_VERSION):
            self._unmorph()
            raise VmxnetProbeError(f"vmxnet: driver version {s.MAGIC:#x} does not match {low:#x}")
        self.features = self.command(s.CMD_GET_FEATURES)
        self.capabilities = self.command(s.CMD_GET_CAPABILITIES)
        chain = self.capabilities & s.CAP_TX_CHAIN and self.capabilities & s.CAP_RX_CHAIN
        self.jumbo = bool(chain and self.features & s.FEATURE_JUMBO_FRAME)
        self.tso = bool(self.capabilities & s.CAP_TSO and chain and self.features & s.FEATURE_TSO)
        enhanced = self.features & s.FEATURE_TSO and self.features & s.FEATURE_JUMBO_FRAME
        rx_max, rx_default = ((s.ENHANCED_MAX_NUM_RX_BUFFERS, s.ENHANCED_DEFAULT_NUM_RX_BUFFERS) if enhanced
                              else (s.MAX_NUM_RX_BUFFERS, s.DEFAULT_NUM_RX_BUFFERS))
        self.num_rx = self._ring_size(s.CMD_GET_NUM_RX_BUFFERS, rx_max, rx_default)
        self.num_rx2 = min(self.num_rx * JUMBO_RX2_FACTOR, s.MAX_NUM_RX_BUFFERS2) if self.jumbo else 1
        tx_max, tx_default = ((s.MAX_NUM_TX_BUFFERS_TSO, s.DEFAULT_NUM_TX_BUFFERS_TSO) if self.tso or self.jumbo
                              else (s.MAX_NUM_TX_BUFFERS, s.DEFAULT_NUM_TX_BUFFERS))
        self.num_tx = self._ring_size(s.CMD_GET_NUM_TX_BUFFERS, tx_max, tx_default)
        if self.capabilities & s.CAP_VMXNET_APROM:
            self.mac = bytes(self.vcpu.pio_read(self.io + s.APROM_ADDR + i, 1) for i in range(6))
            for i, byte in enumerate(self.mac):
                self.vcpu.pio_write(self.io + s.MAC_ADDR + i, 1, byte)
        else:
            self.mac = bytes(self.vcpu.pio_read(self.io + s.MAC_ADDR + i, 1) for i in range(6))
        self.length = s.DRIVER_DATA.size + (self.num_rx + self.num_rx2) * _RX_SIZE + self.num_tx * _TX_SIZE
        self.dd = self.dma_alloc(self.length, 16)
        self.rx_bufs = [self.dma_alloc(s.PKT_BUF_SZ, 64) for _ in range(self.num_rx)]
        self.rx2_bufs = [self.dma_alloc(PAGE_BUFFER) for _ in range(self.num_rx2)] if self.jumbo else []
        self.tx_bufs = [self.dma_alloc(s.MAX_FRAME if self.jumbo else s.PKT_BUF_SZ, 64) for _ in range(self.num_tx)]

    def _morph(self) -> None:
        """vmxnet_morph_device: through the port just below VMXNET's."""
        port = self.io - s.MORPH_PORT_SIZE
        if self.vcpu.pio_read(port, 2) not in (s.LANCE_CHIP, s.VMXNET_CHIP):
            raise VmxnetProbeError("vmxnet: invalid magic in the morph port")
        self.vcpu.pio_write(port, 2, s.VMXNET_CHIP)
        self.morphed = True
        if self.vcpu.pio_read(port, 2) != s.VMXNET_CHIP:
            self._unmorph()
            raise VmxnetProbeError("vmxnet: could not morph the adapter")

    def _unmorph(self) -> None:
        if self.morphed:
            self.vcpu.pio_write(self.io - s.MORPH_PORT_SIZE, 2, s.LANCE_CHIP)
            self.morphed = False

    def _ring_size(self, cmd: int, most: int, default: int) -> int:
        n = self.command(cmd)
        return default if n == 0 or n > most else n

    # ---- open (vmxnet_open, vmxnet_init_ring) ---------------------------------------------
    def _open(self) -> None:
        self.kernel.request_irq(self.irq, self._intr)
        mem, dd = self.mem, self.dd
        self.rx_ring = dd + s.DRIVER_DATA.size
        self.rx_ring2 = self.rx_ring + self.num_rx * _RX_SIZE
        self.tx_ring = self.rx_ring2 + self.num_rx2 * _RX_SIZE
        for field, value in (("magic", s.MAGIC), ("length", self.length), ("rxRingLength", self.num_rx),
                             ("rxRingOffset", self.rx_ring - dd), ("rxRingLength2", self.num_rx2),
                             ("rxRingOffset2", self.rx_ring2 - dd), ("txRingLength", self.num_tx),
                             ("txRingOffset", self.tx_ring - dd), ("ifflags", s.IFF_BROADCAST | s.IFF_DIRECTED)):
            mem.store(_U32, dd + _DD[field], value)
        for i, buf in enumerate(self.rx_bufs):
            mem.store(s.RX_ENTRY.struct, self.rx_ring + i * _RX_SIZE, buf, s.PKT_BUF_SZ, 0, s.OWNERSHIP_NIC, 0, i)
        for i in range(self.num_rx2):            # a dummy entry the NIC never owns, or the jumbo pages
            buf, owner = (self.rx2_bufs[i], s.OWNERSHIP_NIC_FRAG) if self.jumbo else (0, s.OWNERSHIP_DRIVER)
            mem.store(s.RX_ENTRY.struct, self.rx_ring2 + i * _RX_SIZE, buf, PAGE_BUFFER if buf else 0, 0, owner, 0, i)
        for i in range(self.num_tx):
            mem.store(s.TX_ENTRY.struct, self.tx_ring + i * _TX_SIZE, *self._tx_entry(0, s.OWNERSHIP_DRIVER, 0, 0))
        self.rx_next = self.rx_next2 = self.tx_next = self.tx_cur = self.tx_pending = 0
        self.outl(self.dd, s.INIT_ADDR)
        self.outl(self.length, s.INIT_LENGTH)
        if not self.inl(s.STATUS_ADDR) & s.STATUS_ENABLED:
            raise VmxnetProbeError(f"vmxnet: the device did not take the shared area at {self.dd:#x}")

    @staticmethod
    def _tx_entry(flags: int, owner: int, addr: int, length: int) -> tuple:
        sg = [0] * 3 * s.SG_DEFAULT_LENGTH
        sg[:3] = (addr & 0xFFFFFFFF, addr >> 32, length)
        return (flags, owner, 0, 0, s.NET_SG_PHYS_ADDR, 1 if length else 0, *sg)

    # ---- transmit (vmxnet_start_tx, vmxnet_tx without zero copy) --------------------------------
    def transmit(self, frame: bytes) -> bool:
        if self.tx_queue_stopped:
            return False
        self._check_tx()
        if self.tx_pending == self.num_tx:
            self.tx_queue_stopped = True             # txStopped, netif_stop_queue
            self.mem.store(_U32, self.dd + _DD["txStopped"], 1)
            return False
        buf = self.tx_bufs[self.tx_next]
        self.mem.write(buf, frame)
        self.tx_pending += 1
        low = self.tx_pending > self.num_tx - RING_LOW_SLACK
        self.vcpu.charge("ring_op")
        self.mem.store(s.TX_ENTRY.struct, self.tx_ring + self.tx_next * _TX_SIZE,
                       *self._tx_entry(s.TX_CAN_KEEP | (s.TX_RING_LOW if low else 0), s.OWNERSHIP_NIC, buf, len(frame)))
        self.tx_next = (self.tx_next + 1) % self.num_tx
        deferred = self._dd_get("txNumDeferred") + 1
        call = low or deferred >= self._dd_get("txClusterLength")
        self.mem.store(_U32, self.dd + _DD["txNumDeferred"], 0 if call else deferred)
        if call:
            self.inl(s.TX_ADDR)
        return True

    def _dd_get(self, field: str) -> int:
        return _U32.unpack_from(self.buf, self.dd + _DD[field])[0]

    def _check_tx(self) -> None:
        """check_tx_queue: reclaim the entries the NIC handed back."""
        buf, charge = self.buf, self.vcpu.charge
        freed = 0
        while self.tx_pending and buf[self.tx_ring + self.tx_cur * _TX_SIZE + _TX_OWNER_OFF] == s.OWNERSHIP_DRIVER:
            charge("ring_op")
            self.tx_cur = (self.tx_cur + 1) % self.num_tx
            self.tx_pending -= 1
            freed += 1
        if freed and self.tx_queue_stopped:
            self.mem.store(_U32, self.dd + _DD["txStopped"], 0)
            self.wake_queue()

    # ---- interrupt (vmxnet_interrupt, vmxnet_rx) -----------------------------------------------
    def _intr(self) -> None:
        self.outl(s.CMD_INTR_ACK, s.COMMAND_ADDR)
        self._rx()
        if self.tx_pending:
            self._check_tx()
        self.vcpu.eoi(self.irq)

    def _rx(self) -> None:
        buf, charge, mem = self.buf, self.vcpu.charge, self.mem
        for _ in range(self.num_rx):
            addr = self.rx_ring + self.rx_next * _RX_SIZE
            _, _, length, owner, flags, _ = _RX_UNPACK(buf, addr)
            if owner != s.OWNERSHIP_DRIVER:
                break
            charge("ring_op")
            frame = mem.read(self.rx_bufs[self.rx_next], length)
            if flags & s.RX_WITH_FRAG and self.jumbo:
                frame += self._rx_frags()
            if len(frame) < ETH_MIN_FRAME - 4:       # a runt (one whose VLAN tag was stripped allowed)
                self.stats["rx_errors"] += 1
            else:
                self.stack.receive(frame)
            mem.store(s.RX_OWNERSHIP, addr + _RX_OWNER_OFF, s.OWNERSHIP_NIC)
            self.rx_next = (self.rx_next + 1) % self.num_rx

    def _rx_frags(self) -> bytes:
        """vmxnet_rx_frags: the body buffers from the second ring up to RX_FRAG_EOP, each given back."""
        buf, mem, data = self.buf, self.mem, b""
        for _ in range(self.num_rx2):
            addr = self.rx_ring2 + self.rx_next2 * _RX_SIZE
            _, _, length, owner, flags, _ = _RX_UNPACK(buf, addr)
            if owner != s.OWNERSHIP_DRIVER_FRAG:
                break
            self.vcpu.charge("ring_op")
            data += mem.read(self.rx2_bufs[self.rx_next2], length)
            mem.store(s.RX_OWNERSHIP, addr + _RX_OWNER_OFF, s.OWNERSHIP_NIC_FRAG)
            self.rx_next2 = (self.rx_next2 + 1) % self.num_rx2
            if flags & s.RX_FRAG_EOP:
                break
        return data
