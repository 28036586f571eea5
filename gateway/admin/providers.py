"""What the console's home page shows about parts other modules own, behind two small protocols.

The notifications module fills them (`services.console.messages`, `services.console.outbox`);
until it does, or in a deployment without it, the home page says "not configured yet" instead of
guessing. Both protocols are structural: an object with these methods and fields plugs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class SystemMessageLike(Protocol):
    key: str
    text: str
    since: float


class OutboxStatsLike(Protocol):
    pending: int
    failed: int  # given up
    last_error: str | None


class SystemMessages(Protocol):
    async def system_messages(self) -> list[SystemMessageLike]:
        """Conditions an operator must act on (PRODUCT.md 7.3), oldest first."""
        ...


class OutboxStatus(Protocol):
    async def outbox_stats(self) -> OutboxStatsLike:
        """Pending and given-up notifications and the newest delivery error (PRODUCT.md 7.2)."""
        ...


@dataclass
class ConsoleProviders:
    """Filled at start-up by whoever owns the data; None: not configured yet."""

    messages: SystemMessages | None = None
    outbox: OutboxStatus | None = None
