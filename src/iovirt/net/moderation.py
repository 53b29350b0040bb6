"""Linux ixgbe's adaptive interrupt moderation (dynamic mode, ixgbe_set_itr
and ixgbe_update_itr), which every 82599 host runs: the guests' ixgbe and
ixgbevf drivers and the host at the far end of the wire."""

from __future__ import annotations

NAPI_WEIGHT = 64                    # NAPI_POLL_WEIGHT
ITR_20K = 200                       # IXGBE_20K_ITR: EITR for 20,000 interrupts/s (50 us)
LOWEST, LOW, BULK = 0, 1, 2         # ixgbe's interrupt-rate ranges: lowest_latency, low_latency, bulk_latency
ITR_OF = {LOWEST: 40, LOW: ITR_20K, BULK: 336}   # IXGBE_100K_ITR, IXGBE_20K_ITR, IXGBE_12K_ITR (commit 8ac34f10)


def next_itr(itr: int, ranges: dict[str, int], work: dict[str, int]) -> int:
    """ixgbe_set_itr: each ring's bytes per microsecond of the current
    interval move it between the three ranges (``work`` is reset); the
    vector takes the busiest one's rate, smoothed exponentially."""
    for ring, done in work.items():
        if done:
            ranges[ring] = _next_range(ranges[ring], done // max(1, itr >> 2))
            work[ring] = 0
    new = ITR_OF[max(ranges.values())]
    return itr if new == itr else 10 * new * itr // (9 * new + itr)


def _next_range(current: int, bytes_per_us: int) -> int:
    """ixgbe_update_itr: 0-10 MB/s lowest, 10-20 MB/s low, above bulk, with hysteresis."""
    if current == LOWEST:
        return LOW if bytes_per_us > 10 else LOWEST
    if current == LOW:
        return BULK if bytes_per_us > 20 else LOWEST if bytes_per_us <= 10 else LOW
    return LOW if bytes_per_us <= 20 else BULK
