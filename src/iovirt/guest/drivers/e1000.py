"""Guest driver for the 82540EM and 82545EM, in the order Linux's e1000 driver does things
(drivers/net/ethernet/intel/e1000/e1000_main.c): reset, MAC from the EEPROM
through EERD, receive address and multicast table, TX and RX rings, ITR,
interrupts; TX writes a descriptor then TDT; the interrupt handler reads ICR,
masks with IMC and schedules a NAPI poll that cleans TX, receives, refills RX
(RDT every 16 buffers) and unmasks with IMS."""

from __future__ import annotations

from collections import deque

from ...net.headers import IP_CHECK, TCP_CHECK
from ...spec import e1000 as s
from ...spec.ethernet import ETH_HLEN
from .base import DescriptorRings, tso_headers, wants_csum

R = {r.name: r.offset for r in s.REGS}
TX_RING = 256                       # e1000 default TxDescriptors / RxDescriptors
RX_RING = 256
RX_BUFFER = 2048
RX_BUFFER_WRITE = 16                # e1000.h E1000_RX_BUFFER_WRITE
NAPI_WEIGHT = 64
INTERRUPTS_PER_S = 20000            # InterruptThrottleRate default (dynamic conservative, start)
LOWEST, LOW, BULK = 0, 1, 2         # e1000's latency ranges: lowest_latency, low_latency, bulk_latency
RATE_OF = {LOWEST: 70000, LOW: 20000, BULK: 4000}    # e1000_set_itr: interrupts/s per range
IMS_ENABLE_MASK = s.ICR_RXT0 | s.ICR_TXDW | s.ICR_RXDMT0 | s.ICR_RXSEQ | s.ICR_LSC
TXD_CMD = s.TXD_CMD_EOP | s.TXD_CMD_IFCS | s.TXD_CMD_RS
_TX = s.TX_DESC.struct
_CTXT = s.TX_CTXT.struct
_RX = s.RX_DESC.struct
_RX_UNPACK = s.RX_DESC.unpack_from
_CSUM_ERRORS = s.RXD_ERR_TCPE | s.RXD_ERR_IPE


class EepromChecksumError(RuntimeError):
    pass


class E1000Driver(DescriptorRings):
    VENDOR, DEVICE = s.VENDOR_ID, s.DEVICE_ID
    ID_TABLE = tuple((s.VENDOR_ID, device) for device in s.VARIANTS.values())   # e1000_pci_tbl: both chips
    REGS = R
    TX_RING, RX_RING, TX_WORK_LIMIT = TX_RING, RX_RING, TX_RING      # e1000_clean_tx_irq: at most the ring
    DESC_SIZE, TX_STATUS_OFF, TXD_STAT_DD = s.DESC_SIZE, s.TX_DESC.offset("status"), s.TXD_STAT_DD
    offloads = frozenset(("tx_csum", "tso"))     # NETIF_F_HW_CSUM and NETIF_F_TSO (e1000_probe, 82544 on)
    rx_csum = True                              # NETIF_F_RXCSUM: trust the NIC's receive checksums

    def __init__(self, kernel, info) -> None:
        super().__init__(kernel, info)
        self.bar = info.bars[0][1]
        self.itr = INTERRUPTS_PER_S                 # adapter->itr, interrupts/s
        self.adaptive = True                        # InterruptThrottleRate 3 (dynamic conservative)
        self.itr_range = {"tx": LOW, "rx": LOW}     # adapter->tx_itr / rx_itr
        self.work = {"tx": [0, 0], "rx": [0, 0]}    # total_{tx,rx}_packets and _bytes since the interrupt
        self._probe()

    # ---- register access: every one is an MMIO instruction ---------------
    def flush(self) -> None:
        self.rd("STATUS")                   # E1000_WRITE_FLUSH(): posted writes complete

    # ---- probe / open ------------------------------------------------------
    def _probe(self) -> None:
        self.wr("CTRL", self.rd("CTRL") | s.CTRL_RST)       # e1000_reset_hw
        self.wr("IMC", 0xFFFFFFFF)
        self.rd("ICR")
        words = [self._eeprom_read(i) for i in range(s.EEPROM_WORDS)]
        if sum(words) & 0xFFFF != s.EEPROM_SUM:              # e1000_validate_eeprom_checksum
            raise EepromChecksumError(f"e1000 at {self.bar:#x}: EEPROM checksum invalid")
        self.mac = b"".join(w.to_bytes(2, "little") for w in words[s.EEPROM_MAC : s.EEPROM_MAC + 3])
        self.wr("RAL0", int.from_bytes(self.mac[:4], "little"))
        self.wr("RAH0", int.from_bytes(self.mac[4:], "little") | s.RAH_AV)
        for i in range(128):
            self.wr(f"MTA{i}", 0)
        self._setup_tx()
        self._setup_rx()
        self.wr("ITR", 1_000_000_000 // (INTERRUPTS_PER_S * s.ITR_UNIT_NS))
        self.kernel.request_irq(self.irq, self._intr)
        self.wr("IMS", IMS_ENABLE_MASK)
        self.flush()

    def _eeprom_read(self, addr: int) -> int:
        self.wr("EERD", addr << s.EERD_ADDR_SHIFT | s.EERD_START)
        while not (value := self.rd("EERD")) & s.EERD_DONE:
            pass
        return value >> s.EERD_DATA_SHIFT

    def _setup_tx(self) -> None:
        self.tx_ring = self.dma_alloc(TX_RING * s.DESC_SIZE, 128)
        self.tx_bufs = [self.dma_alloc(RX_BUFFER, 64) for _ in range(TX_RING)]
        self.tx_use = self.tx_clean = 0
        self.tx_watch: deque[int] = deque()
        self.wr("TDBAL", self.tx_ring & 0xFFFFFFFF)
        self.wr("TDBAH", self.tx_ring >> 32)
        self.wr("TDLEN", TX_RING * s.DESC_SIZE)
        self.wr("TDH", 0)
        self.wr("TDT", 0)
        self.wr("TIPG", 8 | 8 << 10 | 6 << 20)               # DEFAULT_82543_TIPG_*
        self.wr("TCTL", s.TCTL_EN | s.TCTL_PSP | 0x0F << s.TCTL_CT_SHIFT | 0x40 << s.TCTL_COLD_SHIFT)

    def _setup_rx(self) -> None:
        self.rx_ring = self.dma_alloc(RX_RING * s.DESC_SIZE, 128)
        self.rx_bufs = [self.dma_alloc(RX_BUFFER, 64) for _ in range(RX_RING)]
        for i, buf in enumerate(self.rx_bufs):
            self.mem.store(_RX, self.rx_ring + i * s.DESC_SIZE, buf, 0, 0, 0, 0, 0)
        self.rx_clean = 0
        self.wr("RDBAL", self.rx_ring & 0xFFFFFFFF)
        self.wr("RDBAH", self.rx_ring >> 32)
        self.wr("RDLEN", RX_RING * s.DESC_SIZE)
        self.wr("RDH", 0)
        self.wr("RDTR", 0)
        self.wr("RXCSUM", self.rd("RXCSUM") | s.RXCSUM_TUOFL)  # e1000_configure_rx: rx_csum on
        self.wr("RCTL", s.RCTL_EN | s.RCTL_BAM | s.RCTL_SECRC)   # BSIZE 00 = 2048
        self.rx_tail = RX_RING - 1
        self._rdt = self.bar + R["RDT"]
        self.wr("RDT", self.rx_tail)

    # ---- transmit ------------------------------------------------------------
    def transmit(self, frame: bytes) -> bool:
        """e1000_xmit_frame: a TSO packet (e1000_tso) or a frame whose TCP
        checksum the NIC completes (e1000_tx_csum) takes a context
        descriptor and extended data descriptors, any other frame legacy
        ones; the frame in 2 KB buffers, a descriptor each, the last with EOP
        and RS; then TDT."""
        mss = getattr(frame, "gso_size", 0)
        offload = mss or wants_csum(self.stack, frame)
        use = self.tx_use
        if (self.tx_clean - use - 1) % TX_RING < -(-len(frame) // RX_BUFFER) + (1 if offload else 0):
            self.tx_queue_stopped = True                     # netif_stop_queue
            return False
        dtyp = cmd = popts = 0
        if offload:
            frame, popts = self._tx_context(use, frame, mss)
            use = use + 1 if use + 1 < TX_RING else 0
            dtyp, cmd = s.TXD_DTYP_D << s.TXD_DTYP_SHIFT, s.TXD_CMD_DEXT | (s.TXD_CMD_TSE if mss else 0)
        size = len(frame)
        for at in range(0, size, RX_BUFFER):
            piece = frame[at:at + RX_BUFFER] if size > RX_BUFFER else frame
            buf = self.tx_bufs[use]
            self.mem.write(buf, piece)
            self.vcpu.charge("ring_op")
            last = TXD_CMD if at + RX_BUFFER >= size else s.TXD_CMD_IFCS
            self.mem.store(_TX, self.tx_ring + use * s.DESC_SIZE, buf, len(piece), dtyp, cmd | last, 0, popts, 0)
            use = use + 1 if use + 1 < TX_RING else 0
        self.tx_use = use
        self.tx_watch.append(use)
        work = self.work["tx"]
        work[0] += 1
        work[1] += size
        self.wr("TDT", use)
        return True

    def _tx_context(self, use: int, frame: bytes, mss: int) -> tuple[bytes, int]:
        """e1000_tso / e1000_tx_csum: the context descriptor at ``use`` (where
        the IPv4 and TCP headers and their checksums are, for TSO the MSS,
        HDRLEN and PAYLEN); the frame as the NIC wants it and the data
        descriptors' POPTS."""
        self.vcpu.charge("ring_op")
        iplen = (frame[ETH_HLEN] & 0xF) * 4
        tucss = ETH_HLEN + iplen
        at = self.tx_ring + use * s.DESC_SIZE
        if not mss:
            self.mem.store(_CTXT, at, 0, 0, 0, tucss, tucss + TCP_CHECK, 0, s.TX_CTXT_DEXT | s.TXD_CMD_TCP << 24,
                           0, 0, 0)
            return frame, s.TXD_POPTS_TXSM
        frame, iplen, l4len = tso_headers(frame)
        hdr_len = tucss + l4len
        tucmd = s.TXD_CMD_IP | s.TXD_CMD_TCP | s.TXD_CMD_TSE
        self.mem.store(_CTXT, at, ETH_HLEN, ETH_HLEN + IP_CHECK, tucss - 1, tucss, tucss + TCP_CHECK, 0,
                       s.TX_CTXT_DEXT | tucmd << 24 | len(frame) - hdr_len, 0, hdr_len, mss)
        return frame, s.TXD_POPTS_TXSM | s.TXD_POPTS_IXSM

    # ---- interrupt and NAPI poll ----------------------------------------------
    def _intr(self) -> None:
        icr = self.rd("ICR")
        if icr:
            self.wr("IMC", 0xFFFFFFFF)
            self.flush()
        self.vcpu.eoi(self.irq)
        if icr:
            self.work = {"tx": [0, 0], "rx": [0, 0]}     # e1000_intr: the totals restart
            self.napi_schedule()

    def _poll(self) -> None:
        self.poll_scheduled = False
        self._clean_tx()
        if self._clean_rx() < NAPI_WEIGHT:
            if self.adaptive:
                self._set_itr()
            self.wr("IMS", IMS_ENABLE_MASK)                  # napi_complete + e1000_irq_enable
            self.flush()
        else:
            self.napi_schedule()

    def set_coalesce(self, rate: int | str) -> None:
        """e1000_set_coalesce / InterruptThrottleRate: ``off`` (0) lets every
        cause interrupt at once; a number fixes the rate (interrupts/s)."""
        self.adaptive = False
        self.itr = 0 if rate == "off" else int(rate)
        self.wr("ITR", 1_000_000_000 // (self.itr * s.ITR_UNIT_NS) if self.itr else 0)

    def _set_itr(self) -> None:
        """e1000_set_itr in dynamic conservative mode (InterruptThrottleRate=3,
        the default): each direction's packets and bytes since the interrupt
        move it between ranges, lowest_latency counting as low; rising rates
        step up a quarter at a time (biased towards bulk)."""
        for way, (packets, nbytes) in self.work.items():
            self.itr_range[way] = max(LOW, _next_range(self.itr_range[way], packets, nbytes))
        new = RATE_OF[max(self.itr_range.values())]
        if new != self.itr:
            self.itr = min(self.itr + (new >> 2), new) if new > self.itr else new
            self.wr("ITR", 1_000_000_000 // (self.itr * s.ITR_UNIT_NS))

    def _clean_rx(self) -> int:
        buf, ring, charge = self.buf, self.rx_ring, self.vcpu.charge
        done = cleaned = 0
        while done < NAPI_WEIGHT:
            i = self.rx_clean
            addr = ring + i * s.DESC_SIZE
            _, length, _, status, errors, _ = _RX_UNPACK(buf, addr)
            if not status & s.RXD_STAT_DD:
                break
            charge("ring_op")
            bufaddr = self.rx_bufs[i]                         # buffer_info->dma: the driver's own, not the descriptor's
            if status & s.RXD_STAT_EOP and not errors & ~_CSUM_ERRORS and length <= RX_BUFFER:
                work = self.work["rx"]
                work[0] += 1
                work[1] += length
                # e1000_rx_checksum: CHECKSUM_UNNECESSARY when TCPCS is set and TCPE is not
                self.stack.receive(self.mem.read(bufaddr, length),
                                   self.rx_csum and status & s.RXD_STAT_TCPCS and not errors & _CSUM_ERRORS)
            else:
                self.stats["rx_errors"] += 1                  # multi-descriptor frames: not used at MTU 1500
            self.mem.store(_RX, addr, bufaddr, 0, 0, 0, 0, 0)       # give the buffer back
            self.rx_clean = i + 1 if i + 1 < RX_RING else 0
            done += 1
            cleaned += 1
            if cleaned >= RX_BUFFER_WRITE:
                self._refill(cleaned)
                cleaned = 0
        if cleaned:
            self._refill(cleaned)
        return done


def _next_range(current: int, packets: int, nbytes: int) -> int:
    """e1000_update_itr: the range for a direction's work since the last interrupt."""
    if not packets:
        return current
    size = nbytes // packets
    if current == LOWEST:
        return BULK if size > 8000 else LOW if packets < 5 and nbytes > 512 else LOWEST
    if current == LOW:
        if nbytes > 10000:
            return BULK if size > 8000 or packets < 10 or size > 1200 else LOWEST if packets > 35 else LOW
        return BULK if size > 2000 else LOWEST if packets <= 2 and nbytes < 512 else LOW
    if nbytes > 25000:
        return LOW if packets > 35 else BULK
    return LOW if nbytes < 6000 else BULK
