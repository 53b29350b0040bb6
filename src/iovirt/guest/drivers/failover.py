"""net_failover (Linux drivers/net/net_failover.c, net/core/failover.c) and
the netdev registration it hooks into.

A virtio-net that negotiated VIRTIO_NET_F_STANDBY gets a failover master, a
netdev with its MAC that the IPv4 stack sits on; the virtio-net is the
master's standby slave.  A PCI netdev with the same MAC is its primary slave,
whether it registers later (failover_slave_register, from the netdev
notifier) or was there first (failover_existing_slave_register); a second
standby or primary is refused and stays an ordinary netdev.

- Transmit (net_failover_start_xmit): through the primary while it is
  registered, else the standby; with neither, the frame is dropped and
  counted (net_failover_drop_xmit).  When the slave in use changes, the
  stack's queue is kicked so what waited for the old one goes to the new.
- Receive (net_failover_handle_frame): frames from the primary, and from the
  standby while there is no primary, go up as the master's; the standby's
  frames while a primary is registered are RX_HANDLER_EXACT: no protocol is
  bound to the standby itself, so they are dropped (counted).

``stats``: ``tx_primary``/``tx_standby``/``rx_primary``/``rx_standby`` frames,
``rx_standby_exact`` (dropped), ``tx_dropped``, ``failovers`` (TX moved from
the primary to the standby) and ``failbacks``.  The master's own work per
frame is a pointer swap next to the slave driver's and is not charged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class _Slave:
    """The master's rx_handler and queue-wake hook on one slave (its ``stack``)."""

    __slots__ = ("master", "role", "rx_key")

    def __init__(self, master: FailoverMaster, role: str) -> None:
        self.master, self.role, self.rx_key = master, role, f"rx_{role}"

    def receive(self, frame: bytes, csum_valid: bool = False) -> None:
        self.master.receive(self, frame, csum_valid)

    def tx_wake(self) -> None:
        if self.master.tx_role == self.role:
            self.master.wake()


class FailoverMaster:
    def __init__(self, standby) -> None:
        self.kernel = standby.kernel
        self.mac = standby.mac
        self.stack = None
        self.primary = self.standby = None
        self.tx_dev = self.tx_role = None
        self._tx_key = ""
        self.stats: Counter[str] = Counter()
        self.on_failback: Callable[[], None] | None = None     # told when a primary takes over again
        self.enslave(standby)

    # ---- slaves ---------------------------------------------------------------------------
    def enslave(self, netdev) -> bool:
        """net_failover_slave_register; False if that place is taken."""
        role = "standby" if netdev.standby else "primary"
        if getattr(self, role) is not None or netdev.mac != self.mac:
            return False
        setattr(self, role, netdev)
        netdev.stack = _Slave(self, role)
        self._select()
        return True

    def release(self, netdev) -> bool:
        """net_failover_slave_unregister; False if ``netdev`` is not a slave of ours."""
        role = "primary" if netdev is self.primary else "standby" if netdev is self.standby else None
        if role is None:
            return False
        setattr(self, role, None)
        self._select()
        return True

    def _select(self) -> None:
        """The slave TX goes through: the primary if registered, else the standby."""
        role = "primary" if self.primary is not None else "standby" if self.standby is not None else None
        if role == self.tx_role:
            return
        if self.stack is not None:          # while the interface is up (not the pairing at boot)
            if (self.tx_role, role) == ("primary", "standby"):
                self.stats["failovers"] += 1
            elif (self.tx_role, role) == ("standby", "primary"):
                self.stats["failbacks"] += 1
                if self.on_failback is not None:
                    self.on_failback()
        self.tx_role, self.tx_dev, self._tx_key = role, role and getattr(self, role), f"tx_{role}"
        if self.stack is not None:          # netdev_change_features: what a slave cannot do is off
            self.stack.tso = self.stack.tso and "tso" in self.offloads
            self.stack.tx_csum = self.stack.tx_csum and "tx_csum" in self.offloads
        self.wake()

    # ---- the netdev the stack sees ------------------------------------------------------------
    @property
    def offloads(self) -> frozenset[str]:
        """net_failover_compute_features: what every slave present can do."""
        slaves = [dev for dev in (self.primary, self.standby) if dev is not None]
        return frozenset.intersection(*(frozenset(getattr(dev, "offloads", ())) for dev in slaves)) \
            if slaves else frozenset()

    def transmit(self, frame: bytes) -> bool:
        dev = self.tx_dev
        if dev is None:
            self.kernel.dropped("tx_dropped", frame)
            return True
        if dev.transmit(frame):
            self.stats[self._tx_key] += 1
            return True
        return False

    def wake(self) -> None:
        if self.stack is not None:
            self.stack.tx_wake()

    def receive(self, slave: _Slave, frame: bytes, csum_valid: bool = False) -> None:
        if slave.role == "standby" and self.primary is not None:
            self.stats["rx_standby_exact"] += 1
            return
        self.stats[slave.rx_key] += 1
        if self.stack is not None:
            self.stack.receive(frame, csum_valid)

    def rebind(self, vcpu, mem) -> None:
        for dev in (self.primary, self.standby):
            if dev is not None:
                dev.rebind(vcpu, mem)

    def resume(self) -> None:
        for dev in (self.primary, self.standby):
            if dev is not None:
                dev.resume()


class NoDevice:
    """What an interface sends into once its only device has been removed:
    dropped and counted (``tx_no_device``), as dev_queue_xmit does for a
    device that is down."""

    def __init__(self, kernel) -> None:
        self.kernel = kernel

    def transmit(self, frame: bytes) -> bool:
        self.kernel.dropped("tx_no_device", frame)
        return True


def _master(kernel, mac: bytes) -> FailoverMaster | None:
    return next((n for n in kernel.netdevs if isinstance(n, FailoverMaster) and n.mac == mac), None)


def register_netdev(kernel, netdev) -> None:
    """A driver's netdev registers: a standby gets a master (which adopts a
    primary already there); a netdev with a master's MAC may become its slave;
    what stays visible is in ``kernel.netdevs``, where ``ifup`` looks.  An
    interface that lost its device gets the new one with its MAC (the network
    manager applies its configuration, matched by MAC, again)."""
    master = _master(kernel, netdev.mac)
    if master is None and netdev.standby:
        master = FailoverMaster(netdev)
        for other in [n for n in kernel.netdevs if n.mac == netdev.mac]:
            if master.enslave(other):
                kernel.netdevs.remove(other)
        kernel.netdevs.append(master)
    elif master is None or not master.enslave(netdev):
        kernel.netdevs.append(netdev)
        stack = kernel.interfaces.get(netdev.mac)
        if stack is not None and isinstance(stack.netdev, NoDevice):
            stack.netdev, netdev.stack = netdev, stack


def unregister_netdev(kernel, netdev) -> None:
    """A driver's netdev goes: a slave leaves its master; another leaves the
    list, and the interface on it, if any, has no device any more."""
    master = _master(kernel, netdev.mac)
    if master is not None and master.release(netdev):
        return
    if netdev in kernel.netdevs:
        kernel.netdevs.remove(netdev)
    if netdev.stack is not None:
        netdev.stack.netdev = NoDevice(kernel)
