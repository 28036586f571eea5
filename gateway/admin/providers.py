"""What the console's home page shows about parts the notifications module owns: the system messages
in force (docs/notifications.md) and the outbox (7.2). Each reader returns None when that part is
not running in this process, and the page then says "not configured yet" instead of guessing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.web.resources import Services


@dataclass(frozen=True, slots=True)
class Message:
    text: str
    action: str  # what the operator should do
    since: str  # ISO 8601


@dataclass(frozen=True, slots=True)
class Outbox:
    pending: int
    given_up: int
    last_error: str | None


async def system_messages(services: Services) -> list[Message] | None:
    system = services.system_messages
    if system is None:
        return None
    return [
        Message(str(m["text"]), str(m.get("action") or ""), str(m["since"])) for m in system.shown()
    ]


async def outbox(services: Services) -> Outbox | None:
    if services.sender is None:
        return None
    stats = await services.store.outbox_stats()
    return Outbox(stats.pending, stats.failed, stats.last_error)
