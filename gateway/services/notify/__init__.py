"""Notifications (docs/notifications.md): the outbox's door (events), the sender task, the mail
it writes, the SMTP mailer and the system messages. See docs/notifications.md."""

from gateway.services.notify.events import Notifier, admin_emails, legal_emails
from gateway.services.notify.mailer import (
    Delivery,
    Mailer,
    MailPermanentError,
    MailTemporaryError,
    SmtpMailer,
)
from gateway.services.notify.sender import Sender
from gateway.services.notify.system import Condition, SystemMessages

__all__ = [
    "Condition",
    "Delivery",
    "MailPermanentError",
    "MailTemporaryError",
    "Mailer",
    "Notifier",
    "Sender",
    "SmtpMailer",
    "SystemMessages",
    "admin_emails",
    "legal_emails",
]
