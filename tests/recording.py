"""Test scaffolding shared by the device suites: the backend boundary a tap
would occupy, recording what a device model sends."""

from __future__ import annotations

from iovirt.sim.resource import Resource


class Port:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.flushes = 0

    def send(self, cpu: Resource, frame: bytes) -> None:
        self.frames.append(bytes(frame))

    def flush(self, cpu: Resource) -> None:
        self.flushes += 1
