"""Frames discarded, counted where it happens: by place (a tap's queue, a
qdisc, a NIC's packet buffer, a device's ring, a guest's stack) and, through
a classifier the experiment installs, by the flow the frame belonged to.
Nothing is inferred: a frame that is not counted here was not dropped."""

from __future__ import annotations

from collections import Counter
from typing import Callable, Optional

Classify = Callable[[bytes], Optional[int]]


class Drops:
    __slots__ = ("places", "flows", "classify")

    def __init__(self) -> None:
        self.places: Counter = Counter()
        self.flows: Counter = Counter()
        self.classify: Optional[Classify] = None

    def reset(self) -> None:
        self.places.clear()
        self.flows.clear()

    def count(self, place: str, frame: Optional[bytes] = None) -> None:
        """``frame`` went no further than ``place`` (None: discarded before it
        was whole, a TX chain the device could not read).  A GSO packet counts
        as the segments it stands for (``gso_segs``)."""
        n = getattr(frame, "gso_segs", 1)
        self.places[place] += n
        if frame is not None and self.classify is not None:
            flow = self.classify(frame)
            if flow is not None:
                self.flows[flow] += n
