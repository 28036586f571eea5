"""The outbox's coalescing rule, shared by every store implementation (pure)."""

from __future__ import annotations

OUTBOX_STATES = frozenset({"pending", "sent", "failed"})


def coalesced_not_before(last: float | None, at: float, window: float) -> float:
    """When a new row of a coalesce key falls due, given the latest due time of that key.

    - nothing recent: at once (the first failed sign-in is mailed immediately);
    - a batch is still waiting (due in the future): join it;
    - the last batch fell due less than `window` ago: wait for the window's end, where every
      row arriving meanwhile is due too and goes out as one digest.
    A brute force therefore sends one mail at once and then at most one per window.
    """
    if last is None or window <= 0:
        return at
    if last > at:
        return last
    if at < last + window:
        return last + window
    return at
