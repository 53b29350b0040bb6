"""The guest's IPv4 stack: ARP, IPv4, ICMP echo and UDP over one Ethernet
interface, driven by a guest NIC driver."""

from .stack import IPv4Stack, UdpSocket

__all__ = ["IPv4Stack", "UdpSocket"]
