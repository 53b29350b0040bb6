"""Guest driver for the RTL8139 in C mode, in the order Linux's 8139too does
things (drivers/net/ethernet/realtek/8139too.c), through the memory BAR as
8139too does by default: identify the chip from TCR, soft reset (CR.RST,
polled), read the MAC from the 93C46 by bit-banging 9346CR (every clock edge
is a register write, every delay a register read), then rtl8139_hw_start.

TX copies each frame into one of four dword-aligned bounce buffers, then
writes that slot's TSAD and TSD: two register writes per frame (8139too
programs TSAD once and flushes the TSD write with a read-back instead: the
same two accesses).  The interrupt handler reads ISR, acks the non-RX causes,
masks RX and schedules a NAPI poll, and cleans TX by reading TSD of each slot
in flight.  The poll copies each frame out of the ring until CR.BUFE, writing
CAPR and acking ISR per frame, then unmasks.  Interrupt moderation: none
(8139too never programs the C+ IntrMitigate register); the NAPI poll, up to
64 frames a pass, is the only batching."""

from __future__ import annotations

from ...spec import rtl8139 as s
from .base import NetDriver

R = {r.name: (r.offset, r.width) for r in s.REGS}
RX_BUF_IDX = 2                          # 32K ring
RX_BUF_LEN = 8192 << RX_BUF_IDX
RX_BUF_WRAP_PAD = 2048                  # room for a packet running past the end (RCR.WRAP=1)
RX_BUF_TOT_LEN = RX_BUF_LEN + s.RX_RING_PAD + RX_BUF_WRAP_PAD
TX_BUF_SIZE = 1536                      # MAX_ETH_FRAME_SIZE: per-slot bounce buffer
MAX_ETH_FRAME_SIZE = 1536
NAPI_WEIGHT = 64
RESET_POLLS = 1000                      # rtl8139_chip_reset: 1000 x udelay(10)
TX_FIFO_THRESH = 256                    # bytes in the TX FIFO before transmission starts
TX_FLAG = (TX_FIFO_THRESH // 32) << s.TSD_ERTXTH_SHIFT
RX_CONFIG = (s.RCR_RBLEN_32K | s.RCR_WRAP | 7 << s.RCR_RXFTH_SHIFT | 7 << s.RCR_MXDMA_SHIFT
             | s.RCR_AB | s.RCR_APM)
TX_CONFIG = s.TCR_IFG96 | 6 << s.TCR_MXDMA_SHIFT | 8 << s.TCR_TXRR_SHIFT
RX_ACK_BITS = s.INT_FOVW | s.INT_RXOVW | s.INT_ROK
INTR_MASK = (s.INT_SERR | s.INT_TIMEOUT | s.INT_PUN | s.INT_RXOVW | s.INT_FOVW
             | s.INT_TER | s.INT_TOK | s.INT_RER | s.INT_ROK)
NORX_INTR_MASK = s.INT_SERR | s.INT_TIMEOUT | s.INT_PUN | s.INT_TER | s.INT_RER
WEIRD = s.INT_SERR | s.INT_TIMEOUT | s.INT_PUN | s.INT_RER
EE_ENB = s.EEM_PROGRAM | s.EECS
CFG9346_UNLOCK = s.EEM_CONFIG_WRITE
CFG9346_LOCK = s.EEM_NORMAL
ETH_ZLEN = s.ETH_MIN_FRAME
_HEADER = s.RX_HEADER.unpack_from


class ChipResetTimeout(RuntimeError):
    pass


class RTL8139Driver(NetDriver):
    VENDOR, DEVICE = s.VENDOR_ID, s.DEVICE_ID

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.bar = info.bars[1][1]
        self._probe()
        self._open()

    # ---- register access: every one is an MMIO instruction ---------------
    def rd(self, reg: str) -> int:
        offset, width = R[reg]
        return self.vcpu.mmio_read(self.bar + offset, width)

    def wr(self, reg: str, value: int, flush: bool = False) -> None:
        """RTL_W8/16/32, or the _F variants that read the register back."""
        offset, width = R[reg]
        self.vcpu.mmio_write(self.bar + offset, width, value)
        if flush:
            self.vcpu.mmio_read(self.bar + offset, width)

    def wr32_f(self, reg: str, value: int) -> None:
        """RTL_W32_F at a byte register (IDR0, IDR4, MAR0, MAR4)."""
        addr = self.bar + R[reg][0]
        self.vcpu.mmio_write(addr, 4, value)
        self.vcpu.mmio_read(addr, 4)

    # ---- probe (rtl8139_init_board, rtl8139_init_one) ----------------------
    def _probe(self) -> None:
        self.version = self.rd("TCR") & s.TCR_HWVERID_MASK
        self._chip_reset()
        addr_len = 8 if self._read_eeprom(s.EEPROM_ID, 8) == s.EEPROM_ID_CODE else s.EEPROM_ADDR_BITS
        words = [self._read_eeprom(s.EEPROM_MAC + i, addr_len) for i in range(3)]
        self.mac = b"".join(w.to_bytes(2, "little") for w in words)

    def _chip_reset(self) -> None:
        self.wr("CR", s.CR_RST)
        for _ in range(RESET_POLLS):
            if not self.rd("CR") & s.CR_RST:
                return
        raise ChipResetTimeout(f"rtl8139 at {self.bar:#x}: CR.RST never cleared")

    def _eeprom_delay(self) -> None:
        self.vcpu.mmio_read(self.bar + R["9346CR"][0], 4)     # eeprom_delay(): RTL_R32(Cfg9346)

    def _ee(self, value: int) -> None:
        self.wr("9346CR", value)
        self._eeprom_delay()

    def _read_eeprom(self, location: int, addr_len: int) -> int:
        """8139too read_eeprom(): select, shift the READ command out MSB
        first, then clock 16 data bits in from EEDO."""
        cmd = location | s.EE_READ_CMD << addr_len
        self.wr("9346CR", EE_ENB & ~s.EECS)
        self._ee(EE_ENB)
        for i in range(4 + addr_len, -1, -1):
            bit = s.EEDI if cmd >> i & 1 else 0
            self._ee(EE_ENB | bit)
            self._ee(EE_ENB | bit | s.EESK)
        self._ee(EE_ENB)
        value = 0
        for _ in range(16):
            self._ee(EE_ENB | s.EESK)
            value = value << 1 | (self.rd("9346CR") & s.EEDO)
            self._ee(EE_ENB)
        self._ee(~s.EECS & 0xFF)                 # terminate the access
        return value

    # ---- open (rtl8139_open, rtl8139_hw_start) ------------------------------
    def _open(self) -> None:
        self.tx_bufs = [self.dma_alloc(TX_BUF_SIZE, 32) for _ in range(s.NUM_TX_DESC)]
        self.rx_ring = self.dma_alloc(RX_BUF_TOT_LEN)
        self.cur_tx = self.dirty_tx = self.cur_rx = 0
        self.kernel.request_irq(self.irq, self._intr)
        self._chip_reset()
        self.wr("9346CR", CFG9346_UNLOCK, flush=True)
        self.wr32_f("IDR0", int.from_bytes(self.mac[:4], "little"))
        self.wr32_f("IDR4", int.from_bytes(self.mac[4:], "little"))
        self.wr("RBSTART", self.rx_ring, flush=True)
        self.wr("CR", s.CR_RE | s.CR_TE)                 # must precede the RCR/TCR thresholds
        self.wr("RCR", RX_CONFIG)
        self.wr("TCR", TX_CONFIG)
        self.wr("CONFIG3", self.rd("CONFIG3") & ~s.CONFIG3_MAGIC)
        self.wr("9346CR", CFG9346_LOCK)
        self.wr("MPC", 0)
        self.wr32_f("MAR0", 0)                           # __set_rx_mode: no multicast addresses
        self.wr32_f("MAR4", 0)
        self.wr("MULINT", self.rd("MULINT") & 0xF000)    # no early-RX interrupts
        cr = self.rd("CR")
        if not cr & s.CR_RE or not cr & s.CR_TE:
            self.wr("CR", s.CR_RE | s.CR_TE)
        self.wr("IMR", INTR_MASK)

    # ---- transmit (rtl8139_start_xmit) -----------------------------------------
    def transmit(self, frame: bytes) -> bool:
        if self.cur_tx - self.dirty_tx >= s.NUM_TX_DESC:
            self.tx_queue_stopped = True                 # netif_stop_queue
            return False
        length = len(frame)
        if length >= TX_BUF_SIZE:
            self.kernel.dropped("tx_dropped", frame)
            return True
        entry = self.cur_tx % s.NUM_TX_DESC
        if length < ETH_ZLEN:                            # the chip does not pad
            frame += bytes(ETH_ZLEN - length)
        self.mem.write(self.tx_bufs[entry], frame)
        self.vcpu.charge("copy_hot", nbytes=len(frame))  # skb_copy_and_csum_dev of the skb it just built
        self.wr(f"TSAD{entry}", self.tx_bufs[entry])
        self.wr(f"TSD{entry}", TX_FLAG | len(frame))
        self.cur_tx += 1
        return True

    # ---- interrupt (rtl8139_interrupt) ----------------------------------------
    def _intr(self) -> None:
        status = self.rd("ISR")
        if status & INTR_MASK:
            ackstat = status & ~(RX_ACK_BITS | s.INT_TER)
            if ackstat:
                self.wr("ISR", ackstat)
            if status & RX_ACK_BITS and not self.poll_scheduled:
                self.wr("IMR", NORX_INTR_MASK, flush=True)
                self.napi_schedule()
            if status & WEIRD:
                self._weird_interrupt()
            if status & (s.INT_TOK | s.INT_TER):
                self._tx_interrupt()
                if status & s.INT_TER:
                    self.wr("ISR", s.INT_TER)
        self.vcpu.eoi(self.irq)

    def _weird_interrupt(self) -> None:
        self.stats["rx_missed_errors"] += self.rd("MPC")
        self.wr("MPC", 0)

    def _tx_interrupt(self) -> None:
        dirty = self.dirty_tx
        while dirty != self.cur_tx:
            txstatus = self.rd(f"TSD{dirty % s.NUM_TX_DESC}")
            if not txstatus & (s.TSD_TOK | s.TSD_TUN | s.TSD_TABT):
                break                                    # not sent yet
            if txstatus & (s.TSD_OWC | s.TSD_TABT):
                self.stats["tx_errors"] += 1
                if txstatus & s.TSD_TABT:
                    self.wr("TCR", s.TCR_CLRABT)
                    self.wr("ISR", s.INT_TER)
            dirty += 1
        if dirty != self.dirty_tx:
            self.dirty_tx = dirty
            self.wake_queue()

    # ---- NAPI poll (rtl8139_poll, rtl8139_rx) -----------------------------------
    def _poll(self) -> None:
        self.poll_scheduled = False
        work = self._rx(NAPI_WEIGHT) if self.rd("ISR") & RX_ACK_BITS else 0
        if work < NAPI_WEIGHT:
            self.wr("IMR", INTR_MASK, flush=True)        # napi_complete, unmask RX
        else:
            self.napi_schedule()

    def _rx(self, budget: int) -> int:
        received = 0
        cur_rx = self.cur_rx
        while received < budget and not self.rd("CR") & s.CR_BUFE:
            offset = self.rx_ring + cur_rx
            status, rx_size = _HEADER(self.mem.buf, offset)
            self.vcpu.charge("ring_op")
            if rx_size > MAX_ETH_FRAME_SIZE + s.CRC_LEN or rx_size < 8 or not status & s.RSR_ROK:
                self._rx_err()
                return -1
            frame = self.mem.read(offset + 4, rx_size - s.CRC_LEN)
            self.vcpu.charge("copy", nbytes=len(frame))  # skb_copy_to_linear_data out of the ring
            self.stack.receive(frame)
            received += 1
            cur_rx = ((cur_rx + rx_size + 4 + 3) & ~3) % RX_BUF_LEN
            self.wr("CAPR", (cur_rx - s.RX_RING_PAD) & 0xFFFF)
            self._isr_ack()
        if not received:
            self._isr_ack()
        self.cur_rx = cur_rx
        return received

    def _isr_ack(self) -> None:
        status = self.rd("ISR") & RX_ACK_BITS
        if status:
            if status & (s.INT_FOVW | s.INT_RXOVW):
                self.stats["rx_errors"] += 1
            self.wr("ISR", RX_ACK_BITS, flush=True)

    def _rx_err(self) -> None:
        """Lost in the ring: restart the receiver at the ring start."""
        self.stats["rx_errors"] += 1
        cr = self.rd("CR")
        self.wr("CR", cr & ~s.CR_RE)
        self.wr("CR", cr)
        self.wr("RCR", RX_CONFIG)
        self.cur_rx = 0
