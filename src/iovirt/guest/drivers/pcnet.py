"""Guest driver for the Am79C970A, in the order Linux's pcnet32 does things
(drivers/net/ethernet/amd/pcnet32.c).  Probe: reset by reading RESET, word
I/O (CSR0 reads STOP after reset, RAP reads back), chip ID from CSR88/89, the
station address from CSR12-14 checked against the address PROM.  Open: 32-bit
software structures (BCR20 = 2), the initialization block and rings of 16 TX /
32 RX descriptors in guest memory, CSR1/CSR2, auto pad in CSR4, INIT, wait for
IDON, STRT|IENA.  TX fills a descriptor (negative BCNT, OWN|STP|ENP) and
writes CSR0 = IENA|TDMD.  The interrupt handler reads CSR0, acknowledges with
a write that also clears IENA, masks in CSR3 and schedules a NAPI poll that
receives, cleans TX, unmasks CSR3 and writes CSR0 = IENA.

Every CSR or BCR access is a RAP write then a data port access: two traps.
Interrupt moderation: none (the chip has no timer for it and pcnet32 none in
software); the NAPI poll, up to half the RX ring a pass, is the only batching."""

from __future__ import annotations

from ...spec import pcnet as s
from .base import NetDriver

TX_LOG2 = 4                         # PCNET32_LOG_TX_BUFFERS
RX_LOG2 = 5                         # PCNET32_LOG_RX_BUFFERS
TX_RING = 1 << TX_LOG2
RX_RING = 1 << RX_LOG2
PKT_BUF_SIZE = 1544                 # PKT_BUF_SKB less NET_IP_ALIGN (0 on x86)
NAPI_WEIGHT = RX_RING // 2          # netif_napi_add(..., lp->rx_ring_size / 2)
MAX_INTERRUPT_WORK = 2              # max_interrupt_work
IDON_POLLS = 100
TX_START = s.OWN | s.STP | s.ENP    # 0x8300: one buffer per frame
INTR_CAUSES = s.CSR0_ERR | s.CSR0_MERR | s.CSR0_RINT | s.CSR0_TINT | s.CSR0_IDON     # 0x8f00
ACK_CLEARS = s.CSR0_INIT | s.CSR0_STRT | s.CSR0_STOP | s.CSR0_TDMD | s.CSR0_IENA     # 0x004f
RX_STATUS_BITS = 0xFF00             # RMD1[31:24]: OWN ERR FRAM OFLO CRC BUFF STP ENP
_RX_UNPACK = s.RX_DESC.unpack_from
_TX_STATUS_UNPACK = s.TX_STATUS.unpack_from


class PCNetProbeError(RuntimeError):
    pass


def _valid_ether_addr(mac: bytes) -> bool:
    return not mac[0] & 1 and any(mac)


class PCNetDriver(NetDriver):
    VENDOR, DEVICE = s.VENDOR_ID, s.DEVICE_ID

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.io = info.bars[0][1]
        self._probe()
        self._open()

    # ---- register access: every one is a RAP write and a data port access ----
    def rd_csr(self, index: int) -> int:
        self.vcpu.pio_write(self.io + s.RAP, 2, index)
        return self.vcpu.pio_read(self.io + s.RDP, 2)

    def wr_csr(self, index: int, value: int) -> None:
        self.vcpu.pio_write(self.io + s.RAP, 2, index)
        self.vcpu.pio_write(self.io + s.RDP, 2, value)

    def rd_bcr(self, index: int) -> int:
        self.vcpu.pio_write(self.io + s.RAP, 2, index)
        return self.vcpu.pio_read(self.io + s.BDP, 2)

    def wr_bcr(self, index: int, value: int) -> None:
        self.vcpu.pio_write(self.io + s.RAP, 2, index)
        self.vcpu.pio_write(self.io + s.BDP, 2, value)

    def _reset(self) -> None:
        self.vcpu.pio_read(self.io + s.RESET, 2)             # pcnet32_wio_reset

    # ---- probe (pcnet32_probe1) ------------------------------------------------
    def _probe(self) -> None:
        self._reset()
        if self.rd_csr(0) != s.CSR0_STOP or not self._wio_check():
            raise PCNetProbeError(f"pcnet at {self.io:#x}: no access methods")
        chip = self.rd_csr(88) | self.rd_csr(89) << 16
        if chip & s.CHIP_ID_MASK != s.CHIP_ID:
            raise PCNetProbeError(f"pcnet at {self.io:#x}: chip ID {chip:#x} is not an Am79C970A")
        mac = b"".join(self.rd_csr(s.CSR_PADR + i).to_bytes(2, "little") for i in range(3))
        prom = bytes(self.vcpu.pio_read(self.io + s.APROM_MAC + i, 1) for i in range(6))
        if (prom != mac or not _valid_ether_addr(mac)) and _valid_ether_addr(prom):
            mac = prom
        self.mac = mac if _valid_ether_addr(mac) else bytes(6)
        self.init_block = self.dma_alloc(s.INIT_BLOCK.size, s.INIT_BLOCK_ALIGN)
        self.tx_ring = self.dma_alloc(TX_RING * s.DESC_SIZE, s.DESC_ALIGN)
        self.rx_ring = self.dma_alloc(RX_RING * s.DESC_SIZE, s.DESC_ALIGN)
        self.tx_bufs = [self.dma_alloc(PKT_BUF_SIZE, 64) for _ in range(TX_RING)]
        self.rx_bufs = [self.dma_alloc(PKT_BUF_SIZE, 64) for _ in range(RX_RING)]

    def _wio_check(self) -> bool:
        self.vcpu.pio_write(self.io + s.RAP, 2, 88)
        return self.vcpu.pio_read(self.io + s.RAP, 2) == 88

    # ---- open (pcnet32_open, pcnet32_init_ring) ------------------------------------
    def _open(self) -> None:
        self.kernel.request_irq(self.irq, self._intr)      # request_irq
        self._reset()
        self.wr_bcr(s.BCR_SWS, s.SWSTYLE_PCNET_PCI)
        self.wr_bcr(s.BCR_MC, self.rd_bcr(s.BCR_MC) | s.BCR2_ASEL)      # port autoselect
        self._init_ring()
        self.wr_csr(s.CSR_IADR_LOW, self.init_block & 0xFFFF)
        self.wr_csr(s.CSR_IADR_HIGH, self.init_block >> 16)
        self.wr_csr(4, s.CSR4_PCNET32)
        self.wr_csr(0, s.CSR0_INIT)
        for _ in range(IDON_POLLS):
            if self.rd_csr(0) & s.CSR0_IDON:
                break
        self.wr_csr(0, s.CSR0_STRT | s.CSR0_IENA)

    def _init_ring(self) -> None:
        mem = self.mem
        self.cur_rx = self.cur_tx = self.dirty_tx = 0
        for i, buf in enumerate(self.rx_bufs):
            mem.store(s.RX_DESC.struct, self.rx_ring + i * s.DESC_SIZE, buf, s.bcnt(PKT_BUF_SIZE), s.OWN, 0, 0)
        for i in range(TX_RING):
            mem.store(s.TX_DESC.struct, self.tx_ring + i * s.DESC_SIZE, 0, 0, 0, 0, 0)
        mem.store(s.INIT_BLOCK.struct, self.init_block, 0, RX_LOG2 << s.LEN_SHIFT, TX_LOG2 << s.LEN_SHIFT,
                  int.from_bytes(self.mac[:4], "little"), int.from_bytes(self.mac[4:], "little"), 0,
                  self.rx_ring, self.tx_ring)

    # ---- transmit (pcnet32_start_xmit) ------------------------------------------------
    def transmit(self, frame: bytes) -> bool:
        if self.tx_queue_stopped:
            return False
        entry = self.cur_tx % TX_RING
        buf = self.tx_bufs[entry]
        self.mem.write(buf, frame)
        self.vcpu.charge("ring_op")
        self.mem.store(s.TX_DESC.struct, self.tx_ring + entry * s.DESC_SIZE, buf, s.bcnt(len(frame)),
                       TX_START, 0, 0)
        self.cur_tx += 1
        self.wr_csr(0, s.CSR0_IENA | s.CSR0_TDMD)            # trigger an immediate send poll
        if self.cur_tx - self.dirty_tx == TX_RING:
            self.tx_queue_stopped = True                     # netif_stop_queue
        return True

    # ---- interrupt (pcnet32_interrupt) and NAPI poll (pcnet32_poll) ----------------------
    def _intr(self) -> None:
        csr0 = self.rd_csr(0)
        for _ in range(MAX_INTERRUPT_WORK):
            if not csr0 & INTR_CAUSES:
                break
            self.wr_csr(0, csr0 & ~ACK_CLEARS)               # acknowledge every source, IENA off
            if csr0 & s.CSR0_BABL:
                self.stats["tx_errors"] += 1
            if csr0 & s.CSR0_MISS:
                self.stats["rx_errors"] += 1
            if not self.poll_scheduled:                      # napi_schedule_prep
                self.wr_csr(3, self.rd_csr(3) | s.CSR3_MASKS)
                self.napi_schedule()
                break
            csr0 = self.rd_csr(0)
        self.vcpu.eoi(self.irq)

    def _poll(self) -> None:
        self.poll_scheduled = False
        done = self._rx(NAPI_WEIGHT)
        self._clean_tx()
        if done < NAPI_WEIGHT:
            self.wr_csr(3, self.rd_csr(3) & ~s.CSR3_MASKS)   # napi_complete: unmask
            self.wr_csr(0, s.CSR0_IENA)
        else:
            self.napi_schedule()

    def _rx(self, budget: int) -> int:
        buf, charge, mem = self.buf, self.vcpu.charge, self.mem
        done = 0
        while done < budget:
            addr = self.rx_ring + self.cur_rx * s.DESC_SIZE
            _, _, status, mcnt, _ = _RX_UNPACK(buf, addr)
            if status & s.OWN:
                break
            charge("ring_op")
            length = (mcnt & s.RMD2_MCNT) - s.FCS_LEN
            if status & RX_STATUS_BITS != s.STP | s.ENP or not s.ETH_MIN_FRAME <= length <= PKT_BUF_SIZE:
                self.stats["rx_errors"] += 1                 # errors, and frames over several buffers
            else:
                self.stack.receive(mem.read(self.rx_bufs[self.cur_rx], length))    # lp->rx_skbuff[entry]
            mem.store(s.MD1, addr + s.MD1_OFFSET, s.bcnt(PKT_BUF_SIZE), s.OWN)    # give the buffer back
            self.cur_rx = (self.cur_rx + 1) % RX_RING
            done += 1
        return done

    def _clean_tx(self) -> None:
        buf, charge = self.buf, self.vcpu.charge
        dirty = self.dirty_tx
        while dirty != self.cur_tx:
            status = _TX_STATUS_UNPACK(buf, self.tx_ring + dirty % TX_RING * s.DESC_SIZE + s.STATUS_OFFSET)[0]
            if status & s.OWN:
                break
            charge("ring_op")
            if status & s.ERR:
                self.stats["tx_errors"] += 1
            dirty += 1
        self.dirty_tx = dirty
        if self.cur_tx - dirty < TX_RING - 2:
            self.wake_queue()
