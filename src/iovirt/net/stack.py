"""A guest kernel's IPv4 stack on one Ethernet interface: ARP, IPv4 without
fragmentation, ICMP echo, UDP sockets and TCP connections (``tcp.py``), GSO
and GRO, above a transmit queue and the device driver (``netdev``).

The driver contract: ``netdev.transmit(frame) -> bool`` takes the frame or
refuses it (ring full); after a refusal the driver calls ``tx_wake()`` once it
has freed descriptors, and hands every received frame to ``receive()``, with
whether its device validated the frame's TCP checksum.

Costs, on the vCPU ``cpu``: one ``guest_stack`` per packet sent or received and
one ``copy`` per byte of payload crossing the socket boundary; TCP's own are
in ``tcp.py``, GRO's ``gro_receive`` per frame it takes.

TCP needs timers and deferred work: ``sched`` is the machine's kernel
(``run_at(when, fn)``, ``run_soon(fn)``).  GSO (``gso``) and GRO (``gro``)
are software and on by default, as in Linux; a driver whose device
validated a received frame's TCP checksum says so with the frame
(CHECKSUM_UNNECESSARY), and the stack does not sum it again.  A driver whose device segments TCP packets itself and sums
their checksums lists ``tso`` and ``tx_csum`` in its ``offloads``; the stack
then hands it whole GSO packets (:class:`~iovirt.net.gso.GsoFrame`) and
leaves the checksums to it.
"""

from __future__ import annotations

from collections import Counter, deque
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, Callable, Protocol

from iovirt.sim.drops import Drops
from iovirt.sim.resource import Resource

from .headers import (
    AR_SHA, AR_THA, ARPHDR, ARPHRD_ETHER, ARPOP_REPLY, ARPOP_REQUEST, CHECK16, ETH_ALEN,
    ETH_BROADCAST, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETHHDR, H_DEST, H_PROTO, ICMP_CHECKSUM,
    ICMP_ECHO, ICMP_ECHOREPLY, ICMPHDR, IP_CHECK, IP_DF, IP_MF, IP_OFFSET, IPDEFTTL, IPHDR,
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPVERSION, TCPHDR, TCPHDR_ACK, TCPHDR_SYN,
    UDP_CHECK, UDPHDR, csum_fold, csum_partial, csum_reduced, pseudo_header_sum,
)
from .gso import Gro, GsoFrame, segment
from .tcp import TCP_HLEN, TcpListener, TcpSock, iss_for

TXQUEUELEN = 1000  # Linux default for Ethernet devices
UNRES_QLEN = 101  # Linux neigh/default/unres_qlen: datagrams held per unresolved neighbour
IP_HLEN = IPHDR.size
L4_HLEN = UDPHDR.size  # the ICMP echo header is as long
ZERO_MAC = bytes(ETH_ALEN)
_H_PROTO_IP = H_PROTO.pack(ETH_P_IP)
HEADER_CACHE = 256  # headers remembered per stack: one per (destination, protocol, length)

_ipv4_address = lru_cache(maxsize=1024)(IPv4Address)


@lru_cache(maxsize=1024)
def inet_aton(address: str | IPv4Address) -> int:
    return int(IPv4Address(address))


_NOT_OURS = frozenset({"eth_not_for_us", "ip_not_for_us"})     # a copy flooded here, not the flow's frame

class NetDevice(Protocol):
    """What the stack needs of a guest NIC driver."""

    def transmit(self, frame: bytes) -> bool: ...


class UdpSocket:
    """A bound UDP port.  ``on_datagram(payload, src_ip, src_port)`` receives;
    ``on_writable()`` is called once, then cleared, when room frees after a
    refused ``sendto``."""

    __slots__ = ("stack", "port", "on_datagram", "on_writable")

    def __init__(self, stack: IPv4Stack, port: int) -> None:
        self.stack = stack
        self.port = port
        self.on_datagram: Callable[[bytes, IPv4Address, int], Any] | None = None
        self.on_writable: Callable[[], Any] | None = None

    def sendto(self, payload: bytes, address: tuple[str | IPv4Address, int]) -> bool:
        """Queue one datagram; False (ENOBUFS) if it could not be queued."""
        return self.stack._udp_sendmsg(self, payload, address)

    def write_space(self) -> None:
        on_writable, self.on_writable = self.on_writable, None
        if on_writable is not None:
            on_writable()


class IPv4Stack:
    """One interface: ``mac``, address and subnet ``ip``, driver ``netdev``."""

    def __init__(
        self, cpu: Resource, mac: bytes, ip: IPv4Interface, netdev: NetDevice,
        *, mtu: int = 1500, txqueuelen: int = TXQUEUELEN, drops: Drops | None = None, place: str = "stack",
        sched: Any = None, gso: bool = True, gro: bool = True,
    ) -> None:
        """``drops``: the run's ledger, where what this stack discards is counted under ``place``."""
        if len(mac) != ETH_ALEN:
            raise ValueError(f"MAC address must be {ETH_ALEN} bytes, got {len(mac)}")
        self.cpu = cpu
        self.mac = bytes(mac)
        self.ip = ip
        self.netdev = netdev
        self.mtu = mtu
        self.txqueuelen = txqueuelen
        self.addr = int(ip.ip)
        self._addr_bytes = ip.ip.packed
        self.netmask = int(ip.netmask)
        self.stats: Counter[str] = Counter()
        self.drops, self.place = drops, place
        self._rx_frame = b""                    # the frame being received, for the drop ledger
        self._rx_valid = False                  # its TCP/UDP checksum validated by the device (skb->ip_summed)
        self._rx_segs = 1                       # the segments it stands for (a GSO packet's gso_segs)
        self.arp_table: dict[int, bytes] = {}
        self.arp_queue: dict[int, list[tuple[bytes, bytes, bytes]]] = {}
        self.qdisc: deque[bytes] = deque()
        self.udp_sockets: dict[int, UdpSocket] = {}
        self.echo_waiters: dict[tuple[int, int, int], Callable[[int, int, bytes], Any]] = {}
        self._write_waiters: dict[Any, None] = {}     # sockets to call back (write_space) when the qdisc has room
        self.sched = sched
        self.gso, self.gro = gso, gro and sched is not None
        offloads = getattr(netdev, "offloads", frozenset())
        self.tso, self.tx_csum = "tso" in offloads, "tx_csum" in offloads
        self.tcp_socks: dict[tuple[int, int, int], TcpSock] = {}     # (local port, remote address, remote port)
        self.tcp_listeners: dict[int, TcpListener] = {}
        self.tcp_sack = True                # net.ipv4.tcp_sack
        self._gro = Gro(sched, self._gro_up)
        self._ip_heads: dict[tuple[int, int, int], bytes] = {}
        self._udp_heads: dict[tuple[int, int, int, int], tuple[bytes, int]] = {}
        self._packet_type = {ETH_P_IP: self._ip_rcv, ETH_P_ARP: self._arp_rcv}
        self._inet_protos = {IPPROTO_UDP: self._udp_rcv, IPPROTO_ICMP: self._icmp_rcv, IPPROTO_TCP: self._tcp_rcv}

    # --- user API -------------------------------------------------------------

    def udp_socket(self, port: int) -> UdpSocket:
        """Bind ``port``; ValueError if it is taken (EADDRINUSE)."""
        if not 0 < port < 0x10000:
            raise ValueError(f"UDP port {port} out of range 1..65535")
        if port in self.udp_sockets:
            raise ValueError(f"UDP port {port} already bound")
        sock = self.udp_sockets[port] = UdpSocket(self, port)
        return sock

    def tcp_listen(self, port: int, on_accept: Callable[[TcpSock], Any], *, nodelay: bool = False,
                   counters: Any = None) -> TcpListener:
        """listen() on ``port``: ``on_accept(sock)`` for each connection established."""
        self._tcp_port(port)
        if port in self.tcp_listeners:
            raise ValueError(f"TCP port {port} already listening")
        listener = self.tcp_listeners[port] = TcpListener(self, port, on_accept, nodelay, counters)
        return listener

    def tcp_connect(self, dst_ip: str | IPv4Address, port: int, sport: int, *, nodelay: bool = False,
                    counters: Any = None) -> TcpSock:
        """connect() from ``sport`` to ``dst_ip``:``port``; the socket's
        ``on_connected`` runs once the handshake completes."""
        self._tcp_port(sport)
        if self.sched is None:
            raise ValueError("TCP needs the stack's kernel for its timers (sched)")
        daddr = int(dst_ip) if type(dst_ip) is IPv4Address else inet_aton(dst_ip)
        if (daddr ^ self.addr) & self.netmask:
            raise ValueError(f"no route to {dst_ip} from {self.ip} (no gateway)")
        key = (sport, daddr, port)
        if key in self.tcp_socks:
            raise ValueError(f"TCP port {sport} already connected to {dst_ip}:{port}")
        sock = self.tcp_socks[key] = TcpSock(self, sport, daddr, port, iss_for(self.addr, sport, daddr, port),
                                             nodelay, counters)
        sock.connect()
        return sock

    @staticmethod
    def _tcp_port(port: int) -> None:
        if not 0 < port < 0x10000:
            raise ValueError(f"TCP port {port} out of range 1..65535")

    def ping(self, dst_ip: str | IPv4Address, ident: int, seq: int, data: bytes,
             on_reply: Callable[[int, int, bytes], Any]) -> bool:
        """Send an echo request (RFC 792); ``on_reply(ident, seq, data)`` runs
        when the matching echo reply arrives.  False if it could not be queued."""
        daddr = self._sendmsg(dst_ip, data)
        key = (daddr, ident, seq)
        self.echo_waiters[key] = on_reply
        if self._icmp_send(daddr, ICMP_ECHO, ident, seq, data):
            return True
        del self.echo_waiters[key]
        return False

    def announce(self) -> bool:
        """Gratuitous ARP (a request for our own address, RFC 5227 2.4): peers
        update their caches, switches learn where our MAC now is."""
        return self._arp_send(ARPOP_REQUEST, ETH_BROADCAST, ZERO_MAC, self.addr)

    # --- driver API -----------------------------------------------------------

    def receive(self, frame: bytes, csum_valid: bool = False) -> None:
        """One received frame (napi_gro_receive, then netif_receive_skb).  A
        bad frame is counted in ``stats`` under the reason and dropped.
        ``csum_valid``: the device checked its TCP or UDP checksum and found it good
        (CHECKSUM_UNNECESSARY): the stack neither sums nor checks it.  A
        :class:`~iovirt.net.gso.GsoFrame` (a packet the host kept whole:
        virtio's GUEST_TSO4, Xen's feature-gso-tcpv4) goes up as one, past
        GRO, counting its segments."""
        self._rx_valid = csum_valid
        gro = self._gro
        if type(frame) is GsoFrame:     # dev_gro_receive: a GSO packet goes up as it came, after what GRO holds
            self._rx_segs = frame.gso_segs
            gro.flush()
        else:
            self._rx_segs = 1
            if gro.held or self.gro and frame[23:24] == b"\x06":
                if self.gro and frame[H_DEST] == self.mac and frame[30:34] == self._addr_bytes and gro.receive(
                        frame, csum_valid, self.cpu):
                    return
                gro.flush()             # whatever GRO holds goes up first: frames stay in order
        self.cpu.charge("guest_stack")
        self._rx_frame = frame
        if len(frame) < ETH_HLEN:
            return self._drop("eth_bad_length")
        dest = frame[H_DEST]
        if dest != self.mac and dest != ETH_BROADCAST:
            return self._drop("eth_not_for_us")
        handler = self._packet_type.get(ETHHDR.unpack_from(frame)[0])
        if handler is None:
            return self._drop("eth_unknown_proto")
        handler(frame)                  # the header past ETH_HLEN, in place (skb_pull, no copy)

    def tx_wake(self) -> None:
        """The driver freed TX descriptors (netif_wake_queue): drain the qdisc
        until the device refuses again, then wake refused senders."""
        qdisc = self.qdisc
        while qdisc and self.netdev.transmit(qdisc[0]):
            qdisc.popleft()
        self._write_space()

    # --- output ---------------------------------------------------------------

    def _sendmsg(self, address: str | IPv4Address, data: bytes) -> int:
        """Route ``address``, check ``data`` fits one frame, copy it in from
        the user; returns the destination address."""
        if len(data) > self.mtu - IP_HLEN - L4_HLEN:
            raise ValueError(f"{len(data)} B payload exceeds MTU {self.mtu} less headers (no fragmentation)")
        daddr = int(address) if type(address) is IPv4Address else inet_aton(address)
        if (daddr ^ self.addr) & self.netmask:
            raise ValueError(f"no route to {address} from {self.ip} (no gateway)")
        self.cpu.charge("copy_hot", nbytes=len(data))     # copy_from_user of the buffer the sender just wrote
        return daddr

    def _udp_sendmsg(self, sock: UdpSocket, payload: bytes, address: tuple[str | IPv4Address, int]) -> bool:
        daddr = self._sendmsg(address[0], payload)
        ulen = L4_HLEN + len(payload)
        key = (sock.port, address[1], ulen, daddr)
        head = self._udp_heads.get(key) or self._udp_head(key)
        check = csum_fold(head[1] + csum_reduced(payload)) or 0xFFFF  # RFC 768: zero is sent as all ones
        if self._ip_output(daddr, IPPROTO_UDP, head[0] + CHECK16.pack(check), payload):
            return True
        self._write_waiters[sock] = None
        return False

    def _udp_head(self, key: tuple[int, int, int, int]) -> tuple[bytes, int]:
        """The UDP header up to its checksum, and the sum of the pseudo-header
        and that header."""
        sport, dport, ulen, daddr = key
        udph = UDPHDR.pack(sport, dport, ulen, 0)
        if len(self._udp_heads) >= HEADER_CACHE:
            self._udp_heads.clear()
        head = self._udp_heads[key] = (udph[:UDP_CHECK], pseudo_header_sum(self.addr, daddr, IPPROTO_UDP, ulen)
                                       + csum_partial(udph))
        return head

    def _icmp_send(self, daddr: int, icmp_type: int, ident: int, seq: int, data: bytes) -> bool:
        icmph = bytearray(ICMPHDR.pack(icmp_type, 0, 0, ident, seq))
        CHECK16.pack_into(icmph, ICMP_CHECKSUM, csum_fold(csum_partial(icmph) + csum_partial(data)))
        return self._ip_output(daddr, IPPROTO_ICMP, icmph, data)

    def _ip_output(self, daddr: int, protocol: int, l4h: bytes, data: bytes) -> bool:
        self.cpu.charge("guest_stack")
        return self._ip_xmit(daddr, protocol, l4h, data)

    def _ip_xmit(self, daddr: int, protocol: int, l4h: bytes, data: bytes) -> bool:
        """One datagram to its neighbour: straight to the device, or behind the qdisc."""
        key = (daddr, protocol, IP_HLEN + len(l4h) + len(data))
        iph = self._ip_heads.get(key) or self._ip_header(key)
        lladdr = self.arp_table.get(daddr)
        if lladdr is None or self.qdisc:
            return self._neigh_output(daddr, (iph, l4h, data))
        # NOTE: _eth_output and _dev_queue_xmit inlined, once per datagram sent
        frame = b"".join((lladdr, self.mac, _H_PROTO_IP, iph, l4h, data))
        return self.netdev.transmit(frame) or self._enqueue(frame)

    def _tcp_xmit_gso(self, daddr: int, tcph: bytes, data: bytes, mss: int) -> int:
        """A TCP packet of several ``mss`` segments: whole to a device with
        TSO, else cut here (software GSO, every segment summed in software
        unless the device sums it); the segments it stands for, 0 if refused."""
        self.cpu.charge("guest_stack")
        lladdr = self.arp_table.get(daddr)
        room = self.txqueuelen - len(self.qdisc)
        if lladdr is None or room <= 0:
            return 0
        iph = self._ip_heads.get((daddr, IPPROTO_TCP, IP_HLEN + len(tcph) + len(data))) or self._ip_header(
            (daddr, IPPROTO_TCP, IP_HLEN + len(tcph) + len(data)))
        packet = GsoFrame.of(b"".join((lladdr, self.mac, _H_PROTO_IP, iph, tcph, data)), mss)
        if self.tso:
            return packet.gso_segs if self._dev_queue_xmit(packet) else 0
        frames = segment(packet, partial=self.tx_csum)
        cpu = self.cpu
        for frame in frames:
            cpu.charge("gso_segment")
            if not self.tx_csum:
                cpu.charge("csum", nbytes=len(frame) - ETH_HLEN - IP_HLEN)
            self._dev_queue_xmit(frame)
        return len(frames)

    def _ip_header(self, key: tuple[int, int, int]) -> bytes:
        """An atomic datagram: DF set, so ID 0 (RFC 6864 §4.1)."""
        daddr, protocol, tot_len = key
        iph = bytearray(IPHDR.pack(IPVERSION << 4 | IP_HLEN // 4, 0, tot_len, 0, IP_DF, IPDEFTTL,
                                   protocol, 0, self.addr, daddr))
        CHECK16.pack_into(iph, IP_CHECK, csum_fold(csum_partial(iph)))
        if len(self._ip_heads) >= HEADER_CACHE:
            self._ip_heads.clear()
        iph = self._ip_heads[key] = bytes(iph)
        return iph

    def _neigh_output(self, daddr: int, datagram: tuple[bytes, bytes, bytes]) -> bool:
        """Send to a resolved neighbour, or hold the datagram while one ARP
        request asks for it (RFC 1122 §2.3.2.2)."""
        lladdr = self.arp_table.get(daddr)
        if lladdr is not None:
            return self._dev_queue_xmit(b"".join((lladdr, self.mac, _H_PROTO_IP, *datagram)))
        queue = self.arp_queue.get(daddr)
        if queue is None:
            if not self._arp_send(ARPOP_REQUEST, ETH_BROADCAST, ZERO_MAC, daddr):
                return False
            queue = self.arp_queue[daddr] = []
        if len(queue) >= UNRES_QLEN:
            self._refused("arp_unresolved_dropped")
            return False
        queue.append(datagram)
        return True

    def _arp_send(self, op: int, dest: bytes, tha: bytes, tpa: int) -> bool:
        self.cpu.charge("guest_stack")
        arp = bytearray(ARPHDR.pack(ARPHRD_ETHER, ETH_P_IP, ETH_ALEN, 4, op, self.addr, tpa))
        arp[AR_SHA] = self.mac
        arp[AR_THA] = tha
        return self._eth_output(dest, ETH_P_ARP, arp)

    def _eth_output(self, dest: bytes, proto: int, *payload: bytes) -> bool:
        return self._dev_queue_xmit(b"".join((dest, self.mac, H_PROTO.pack(proto), *payload)))

    def _dev_queue_xmit(self, frame: bytes) -> bool:
        """pfifo_fast, every packet in one band (TOS 0): behind any frame
        already waiting, else straight to the device; ENOBUFS at txqueuelen."""
        if not self.qdisc and self.netdev.transmit(frame):
            return True
        return self._enqueue(frame)

    def _enqueue(self, frame: bytes) -> bool:
        """The device refused or others wait: queue behind them."""
        if len(self.qdisc) >= self.txqueuelen:
            self._refused("tx_dropped")
            return False
        self.qdisc.append(frame)
        return True

    def _write_space(self) -> None:
        """sk_write_space: the qdisc has room, call refused senders back once."""
        if not self._write_waiters or len(self.qdisc) >= self.txqueuelen:
            return
        waiters = list(self._write_waiters)
        self._write_waiters.clear()
        for sock in waiters:
            sock.write_space()

    def queued_frames(self) -> int:
        """Frames waiting in the qdisc."""
        return len(self.qdisc)

    def wait_for_room(self, sock: Any) -> None:
        """``sock.write_space()`` runs once the driver has freed descriptors."""
        self._write_waiters[sock] = None

    # --- input ----------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        """A received frame discarded; one meant for another host (a flooded
        copy) is no loss to the flow it belongs to."""
        self.stats[reason] += 1
        if self.drops is not None:
            self.drops.count(f"{self.place}/{reason}", None if reason in _NOT_OURS else self._rx_frame)

    def _refused(self, reason: str) -> None:
        """A send refused (ENOBUFS): the sender was told, nothing of its flow was lost."""
        self.stats[reason] += 1
        if self.drops is not None:
            self.drops.count(f"{self.place}/{reason}")

    def _arp_rcv(self, frame: bytes) -> None:
        """RFC 826, "Packet Reception"."""
        arp = frame[ETH_HLEN:]
        if len(arp) < ARPHDR.size:
            return self._drop("arp_bad_length")
        hrd, pro, hln, pln, op, spa, tpa = ARPHDR.unpack_from(arp)
        if hrd != ARPHRD_ETHER or pro != ETH_P_IP or hln != ETH_ALEN or pln != 4:
            return self._drop("arp_bad_header")
        sha = arp[AR_SHA]
        merge = spa in self.arp_table
        if merge:
            self._neigh_update(spa, sha)
        if tpa != self.addr:
            return self._drop("arp_not_for_us")
        if not merge:
            self._neigh_update(spa, sha)
        if op == ARPOP_REQUEST:
            self._arp_send(ARPOP_REPLY, sha, sha, spa)

    def _neigh_update(self, ip: int, lladdr: bytes) -> None:
        """Learn ``ip`` is at ``lladdr`` and flush the datagrams held for it."""
        self.arp_table[ip] = lladdr
        held = self.arp_queue.pop(ip, None)
        if held:
            for datagram in held:
                self._eth_output(lladdr, ETH_P_IP, *datagram)
            self._write_space()

    def _ip_rcv(self, frame: bytes) -> None:
        """RFC 1122 §3.2.1: validate the header, then demultiplex the datagram's
        payload (handed over as where it lies in ``frame``)."""
        if len(frame) < ETH_HLEN + IP_HLEN:
            return self._drop("ip_bad_length")
        version_ihl, _, tot_len, _, frag_off, _, protocol, _, saddr, daddr = IPHDR.unpack_from(frame, ETH_HLEN)
        ihl = (version_ihl & 0xF) * 4
        if version_ihl >> 4 != IPVERSION:
            return self._drop("ip_bad_version")
        if ihl < IP_HLEN:
            return self._drop("ip_bad_ihl")
        if not ihl <= tot_len <= len(frame) - ETH_HLEN:  # longer frames carry Ethernet padding (RFC 894)
            return self._drop("ip_bad_length")
        if csum_fold(csum_reduced(frame[ETH_HLEN:ETH_HLEN + ihl])):
            return self._drop("ip_bad_checksum")
        if daddr != self.addr:
            return self._drop("ip_not_for_us")
        if frag_off & (IP_MF | IP_OFFSET):
            return self._drop("ip_fragment")
        handler = self._inet_protos.get(protocol)
        if handler is None:
            return self._drop("ip_unknown_protocol")
        handler(saddr, frame, ETH_HLEN + ihl, ETH_HLEN + tot_len)

    def _udp_rcv(self, saddr: int, frame: bytes, start: int, end: int) -> None:
        if end - start < L4_HLEN:
            return self._drop("udp_bad_length")
        source, dest, ulen, check = UDPHDR.unpack_from(frame, start)
        if not L4_HLEN <= ulen <= end - start:
            return self._drop("udp_bad_length")
        payload = frame[start + L4_HLEN:start + ulen]
        # RFC 1122 §4.1.3.4; a zero checksum was not computed (RFC 768); one the
        # device checked is not summed again (udp4_csum_init, CHECKSUM_UNNECESSARY).
        # The pseudo-header's and header's words are summed as numbers (NOTE:
        # pseudo_header_sum inlined), the payload from its bytes.
        if check and not self._rx_valid and csum_fold(saddr + self.addr + IPPROTO_UDP + ulen
                               + source + dest + ulen + check + csum_reduced(payload)):
            return self._drop("udp_bad_checksum")
        sock = self.udp_sockets.get(dest)
        if sock is None:
            return self._drop("udp_no_port")  # no ICMP port unreachable (RFC 1122 §4.1.3.1 SHOULD)
        if sock.on_datagram is None:
            return self._drop("udp_no_reader")
        self.cpu.charge("copy", nbytes=len(payload))
        sock.on_datagram(payload, _ipv4_address(saddr), source)

    def _icmp_rcv(self, saddr: int, frame: bytes, start: int, end: int) -> None:
        msg = frame[start:end]
        if len(msg) < L4_HLEN:
            return self._drop("icmp_bad_length")
        if csum_fold(csum_partial(msg)):
            return self._drop("icmp_bad_checksum")
        icmp_type, _, _, ident, seq = ICMPHDR.unpack_from(msg)
        data = msg[L4_HLEN:]
        if icmp_type == ICMP_ECHO:  # RFC 1122 §3.2.2.6: the reply carries the request's data
            self._icmp_send(saddr, ICMP_ECHOREPLY, ident, seq, data)
        elif icmp_type == ICMP_ECHOREPLY:
            on_reply = self.echo_waiters.pop((saddr, ident, seq), None)
            if on_reply is None:
                return self._drop("icmp_unmatched_reply")
            self.cpu.charge("copy", nbytes=len(data))
            on_reply(ident, seq, data)
        else:
            self._drop("icmp_unknown_type")

    def _tcp_rcv(self, saddr: int, frame: bytes, start: int, end: int) -> None:
        """tcp_v4_rcv: checksum (RFC 9293 §3.1), then the connection, or a
        listener for a SYN; nothing else answers (no RST is sent)."""
        seg = frame[start:end]
        if len(seg) < TCP_HLEN:
            return self._drop("tcp_bad_length")
        doff = (seg[12] >> 4) * 4
        if not TCP_HLEN <= doff <= len(seg):
            return self._drop("tcp_bad_length")
        if not self._rx_valid:
            self.cpu.charge("csum", nbytes=len(seg))
            if csum_fold(pseudo_header_sum(saddr, self.addr, IPPROTO_TCP, len(seg)) + csum_reduced(seg)):
                return self._drop("tcp_bad_checksum")
        self._tcp_demux(saddr, seg[:doff], seg[doff:], self._rx_segs)

    def _tcp_demux(self, saddr: int, tcph: bytes, payload: bytes, segs: int) -> None:
        source, dest, seq, ack_seq, doff_flags, window, _, _ = TCPHDR.unpack_from(tcph)
        flags = doff_flags & 0xFF
        sock = self.tcp_socks.get((dest, saddr, source))
        if sock is not None:
            sock.segment(seq, ack_seq, flags, window, tcph[TCP_HLEN:], payload, segs)
            return
        listener = self.tcp_listeners.get(dest)
        if listener is not None and flags & (TCPHDR_SYN | TCPHDR_ACK) == TCPHDR_SYN:
            listener.syn(saddr, source, seq, window, tcph[TCP_HLEN:])
            return
        self._drop("tcp_no_socket")

    # --- GRO (net/gso.py Gro) ------------------------------------------------------------

    def _gro_up(self, head: bytes, payload: bytes, segs: int, mss: int) -> None:
        """A packet GRO merged goes up the stack as one."""
        self.cpu.charge("guest_stack")
        self._tcp_demux(int.from_bytes(head[26:30], "big"), head[ETH_HLEN + IP_HLEN:], payload, segs)
