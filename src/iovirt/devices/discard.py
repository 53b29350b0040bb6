"""A frame a device model discards: counted in the device's own error
counters (what ``ethtool -S`` shows) and in the run's ledger of drops, under
the device's place (``host/vm/device``, set by whoever wires it)."""

from __future__ import annotations


def discard(device, why: str, frame: bytes | None = None) -> None:
    """``frame``: what was dropped, or None when no whole frame ever existed."""
    device.errors[why] += 1
    device.sim.drops.count(f"{device.place}/{why}", frame)
