"""Guest driver for the 21143 "Tulip", in the order Linux's tulip driver
does things (drivers/net/ethernet/dec/tulip/tulip_core.c, eeprom.c and the
non-NAPI interrupt.c): probe reads the station address from the serial ROM
by bit-banging CSR9; open resets the chip through CSR0, lays out the RX and TX
rings in ring mode, queues a setup frame (broadcast and the station address)
at the head of the TX ring, starts the transmitter, enables interrupts and
starts the receiver.  TX writes a descriptor, hands it to the chip with OWN
and writes CSR1; the interrupt handler reads CSR5, acknowledges it by writing
it back, receives, refills and cleans TX until CSR5 shows nothing more.

CSRs are reached through BAR0 in I/O space, as Linux does unless built with
CONFIG_TULIP_MMIO.  Interrupt moderation: none; only the NAPI build
(CONFIG_TULIP_NAPI_HW_MITIGATION) programs CSR11's mitigation timers, so
every interrupt the chip raises is taken, batching only what its handler
finds in the rings (up to 64 frames a pass, tulip_rx's budget)."""

from __future__ import annotations

from ...spec import tulip as s
from .base import NetDriver

R = {r.name: r.offset for r in s.REGS}
TX_RING = 16                        # Linux 2.6 tulip.h TX_RING_SIZE / RX_RING_SIZE
RX_RING = 32
PKT_BUF_SZ = 1536 + 4               # tulip.h: +4 keeps a buffer end off a cache-line boundary
RX_BUDGET = 64
MAX_INTERRUPT_WORK = 25             # tulip_core.c max_interrupt_work
STOP_POLLS = 130                    # tulip_stop_rxtx: 1300 us in 10 us steps
ETH_FRAME_LEN_CRC = 1518
CSR6_RXTX = s.CSR6_SR | s.CSR6_ST
CSR5_ACK = 0x0001FFFF               # interrupt.c: "Acknowledge all of the current interrupt sources"
CSR5_TX_EVENTS = s.CSR5_TU | s.CSR5_TPS | s.CSR5_TI | s.CSR5_GTE
CSR5_RX_EVENTS = s.CSR5_RI | s.CSR5_RU
SUMMARY = s.CSR5_NIS | s.CSR5_AIS
CSR5_STATES = s.CSR5_STATE_MASK << s.CSR5_TS_SHIFT | s.CSR5_STATE_MASK << s.CSR5_RS_SHIFT
RX_LENGTH_OVER_2047 = 0x38000010    # tulip.h desc_status_bits
RX_ERRORS = RX_LENGTH_OVER_2047 | s.RDES0_DE | s.RDES0_RF | s.RDES0_CS | s.RDES0_CE
RX_WHOLE = s.RDES0_FS | s.RDES0_LS
EE_ENB = s.CSR9_RD | s.CSR9_SR | s.CSR9_SR_CS
LINUX_FAKE_ADDR = bytes.fromhex("004c696e7579")     # "\0Linux": used when no SROM answers
_DES0 = s.DES0


class TulipDriver(NetDriver):
    VENDOR, DEVICE = s.VENDOR_ID, s.DEVICE_ID

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.io = info.bars[0][1]
        self._probe()
        self._open()

    # ---- register access: every one is an IN/OUT instruction -------------------
    def rd(self, reg: str) -> int:
        return self.vcpu.pio_read(self.io + R[reg], 4)

    def wr(self, reg: str, value: int) -> None:
        self.vcpu.pio_write(self.io + R[reg], 4, value)

    # ---- probe: tulip_init_one ---------------------------------------------------
    def _probe(self) -> None:
        self._stop_rxtx()
        self.rd("CSR8")                                     # clear the missed-packet counter
        addr_len = 8 if self._srom_read(0xFF, 8) & 0x40000 else 6
        ee = bytearray()
        for i in range((1 << addr_len) - 1):
            ee += (self._srom_read(i, addr_len) & 0xFFFF).to_bytes(2, "little")
        sa_offset = s.SROM_MAC if ee[0:8] != ee[16:24] else 0   # early boards: address first
        mac = bytes(ee[sa_offset : sa_offset + 6])
        if sum(mac) in (0, 6 * 0xFF):
            self.stats["tulip_eeprom_missing"] += 1
            mac = LINUX_FAKE_ADDR
        self.mac = mac

    def _srom_read(self, location: int, addr_len: int) -> int:
        """eeprom.c tulip_read_eeprom: shift out start bit, READ and address,
        then clock in 16 data bits; returns the extra bits too, for size
        detection.  Each eeprom_delay() is a CSR9 read."""
        if location > (1 << addr_len) - 1:
            return 0
        cmd = location | s.SROM_CMD_READ << addr_len
        self.wr("CSR9", EE_ENB & ~s.CSR9_SR_CS)
        self.wr("CSR9", EE_ENB)
        value = 0
        for i in range(4 + addr_len, -1, -1):
            di = s.CSR9_SR_DI if cmd >> i & 1 else 0
            self.wr("CSR9", EE_ENB | di)
            self.rd("CSR9")
            self.wr("CSR9", EE_ENB | di | s.CSR9_SR_SK)
            self.rd("CSR9")
            value = value << 1 | bool(self.rd("CSR9") & s.CSR9_SR_DO)
        self.wr("CSR9", EE_ENB)
        self.rd("CSR9")
        for _ in range(16):
            self.wr("CSR9", EE_ENB | s.CSR9_SR_SK)
            self.rd("CSR9")
            value = value << 1 | bool(self.rd("CSR9") & s.CSR9_SR_DO)
            self.wr("CSR9", EE_ENB)
            self.rd("CSR9")
        self.wr("CSR9", EE_ENB & ~s.CSR9_SR_CS)
        return value

    def _stop_rxtx(self) -> None:
        """tulip.h tulip_stop_rxtx: clear SR/ST, wait for both processes to stop."""
        csr6 = self.rd("CSR6")
        if csr6 & CSR6_RXTX:
            self.wr("CSR6", csr6 & ~CSR6_RXTX)
            for _ in range(STOP_POLLS):
                if not self.rd("CSR5") & CSR5_STATES:
                    break

    # ---- open: tulip_init_ring + tulip_up ------------------------------------------
    def _open(self) -> None:
        self._init_ring()
        self.kernel.request_irq(self.irq, self._intr)    # request_irq
        self.wr("CSR0", s.CSR0_SWR)
        self.wr("CSR0", s.CSR0_DEFAULT_X86)
        self.wr("CSR3", self.rx_ring)
        self.wr("CSR4", self.tx_ring)
        self._queue_setup_frame()
        self._stop_rxtx()
        self.wr("CSR6", s.CSR6_ST)                         # the transmitter takes the setup frame
        self.wr("CSR5", s.CSR7_VALID_21143)
        self.wr("CSR7", s.CSR7_VALID_21143)
        self.wr("CSR6", CSR6_RXTX)                         # tulip_start_rxtx
        self.rd("CSR6")
        self.wr("CSR2", 0)                                 # receive poll demand

    def _init_ring(self) -> None:
        """RX and TX rings back to back; ring mode (RER/TER on the last entry)
        with buffer 2 holding the next descriptor, as Linux writes it."""
        self.rx_ring = self.dma_alloc((RX_RING + TX_RING) * s.DESC_SIZE, 16)
        self.tx_ring = self.rx_ring + RX_RING * s.DESC_SIZE
        self.rx_bufs = [self.dma_alloc(PKT_BUF_SZ, 16) for _ in range(RX_RING)]
        self.tx_bufs = [self.dma_alloc(PKT_BUF_SZ, 16) for _ in range(TX_RING)]
        self.setup_frame = self.dma_alloc(s.SETUP_FRAME_SIZE, 16)
        for i, buf in enumerate(self.rx_bufs):
            wrap = s.RDES1_RER if i == RX_RING - 1 else 0
            link = self.rx_ring + (i + 1) % RX_RING * s.DESC_SIZE
            self.mem.store(s.RX_DESC.struct, self.rx_ring + i * s.DESC_SIZE, s.DES0_OWN, PKT_BUF_SZ | wrap, buf, link)
        for i in range(TX_RING):
            link = self.tx_ring + (i + 1) % TX_RING * s.DESC_SIZE
            self.mem.store(s.TX_DESC.struct, self.tx_ring + i * s.DESC_SIZE, 0, 0, 0, link)
        self.cur_rx = self.dirty_rx = 0
        self.cur_tx = self.dirty_tx = 0
        self.tx_is_setup = [False] * TX_RING

    def _queue_setup_frame(self) -> None:
        """tulip_up: every entry broadcast ("21140 bug: you must add the
        broadcast address"), the last one the station address, each 16-bit
        half written twice."""
        frame = bytearray(b"\xff" * s.SETUP_FRAME_SIZE)
        last = (s.SETUP_ENTRIES - 1) * s.SETUP_ENTRY_SIZE
        for i in range(3):
            half = self.mac[2 * i : 2 * i + 2]
            frame[last + 4 * i : last + 4 * i + 4] = half + half
        self.mem.write(self.setup_frame, bytes(frame))
        self._post_tx(self.setup_frame, s.TDES1_SET | s.SETUP_FRAME_SIZE, setup=True)

    # ---- transmit: tulip_start_xmit ---------------------------------------------------
    def transmit(self, frame: bytes) -> bool:
        """One descriptor per frame, OWN, then a transmit poll demand."""
        if self.tx_queue_stopped:
            return False
        queued = self.cur_tx - self.dirty_tx
        flags = s.TDES1_FS | s.TDES1_LS
        if queued == TX_RING // 2 or queued >= TX_RING - 2:
            flags |= s.TDES1_IC                           # ask for a TX-done interrupt
        if queued >= TX_RING - 2:
            self.tx_queue_stopped = True                  # leave room for set_rx_mode()
        buf = self.tx_bufs[self.cur_tx % TX_RING]
        self.mem.write(buf, frame)
        self._post_tx(buf, flags | len(frame))
        self.wr("CSR1", 0)
        return True

    def _post_tx(self, buf: int, tdes1: int, setup: bool = False) -> None:
        entry = self.cur_tx % TX_RING
        if entry == TX_RING - 1:
            tdes1 |= s.TDES1_TER | (0 if setup else s.TDES1_IC)
        addr = self.tx_ring + entry * s.DESC_SIZE
        self.vcpu.charge("ring_op")
        self.mem.store(s.TX_DESC.struct, addr, 0, tdes1, buf, self.tx_ring + (entry + 1) % TX_RING * s.DESC_SIZE)
        self.mem.store(_DES0, addr, s.DES0_OWN)           # OWN last: the chip may look at any time
        self.tx_is_setup[entry] = setup
        self.cur_tx += 1

    # ---- interrupt: tulip_interrupt (non-NAPI) -------------------------------------------
    def _intr(self) -> None:
        csr5 = self.rd("CSR5")
        budget = RX_BUDGET
        for _ in range(MAX_INTERRUPT_WORK):
            if not csr5 & SUMMARY:
                break
            self.wr("CSR5", csr5 & CSR5_ACK)
            if csr5 & CSR5_RX_EVENTS:
                budget -= self._rx(budget)
                self._refill_rx()
            if csr5 & CSR5_TX_EVENTS:
                self._clean_tx()
            csr5 = self.rd("CSR5")
        self.vcpu.eoi(self.irq)

    def _rx(self, budget: int) -> int:
        """tulip_rx: hand up every frame whose descriptor the chip gave back,
        no further than the buffers given to it since (``rx_work_limit``: a
        descriptor not yet refilled still holds the status of the frame it
        carried)."""
        buf, charge, received = self.buf, self.vcpu.charge, 0
        while received < min(budget, self.dirty_rx + RX_RING - self.cur_rx):
            addr = self.rx_ring + self.cur_rx % RX_RING * s.DESC_SIZE
            status = _DES0.unpack_from(buf, addr)[0]
            if status & s.DES0_OWN:
                break
            charge("ring_op")
            pkt_len = (status >> s.RDES0_FL_SHIFT & 0x7FF) - s.CRC_SIZE
            if status & (RX_ERRORS | RX_WHOLE) != RX_WHOLE or not 0 <= pkt_len <= ETH_FRAME_LEN_CRC:
                self.stats["rx_errors"] += 1
            else:
                self.stack.receive(self.mem.read(self.rx_bufs[self.cur_rx % RX_RING], pkt_len))
            self.cur_rx += 1
            received += 1
        return received

    def _refill_rx(self) -> None:
        """tulip_refill_rx: give the buffers back to the chip."""
        n = self.cur_rx - self.dirty_rx
        for entry in range(self.dirty_rx, self.cur_rx):
            self.mem.store(_DES0, self.rx_ring + entry % RX_RING * s.DESC_SIZE, s.DES0_OWN)
        if n:
            self.vcpu.charge("ring_op", n)
        self.dirty_rx = self.cur_rx

    def _clean_tx(self) -> None:
        buf, charge = self.buf, self.vcpu.charge
        dirty = self.dirty_tx
        while self.cur_tx - dirty > 0:
            entry = dirty % TX_RING
            status = _DES0.unpack_from(buf, self.tx_ring + entry * s.DESC_SIZE)[0]
            if status & s.DES0_OWN:
                break
            charge("ring_op")
            if status & s.TDES0_ES and not self.tx_is_setup[entry]:
                self.stats["tx_errors"] += 1
            dirty += 1
        self.dirty_tx = dirty
        if self.cur_tx - dirty < TX_RING - 2:
            self.wake_queue()
