"""Email out over SMTP (STARTTLS when the server offers it, required when configured).

One message per approval, with the stable Message-ID the outbox gave it, so a customer's
reply threads under it and a re-delivery would be recognisable. Credentials come only
from settings and are never logged.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

from connectors.errors import AuthError, DataError, UnavailableError

SYSTEM = "smtp"


class EmailSender(Protocol):
    def send(self, message: EmailMessage) -> None: ...


def build_message(payload: dict[str, Any]) -> EmailMessage:
    """The email of an outbox payload: from, to, cc, subject, body, message_id."""
    msg = EmailMessage()
    msg["From"] = payload["from"]
    msg["To"] = ", ".join(payload["to"])
    if payload.get("cc"):
        msg["Cc"] = ", ".join(payload["cc"])
    msg["Subject"] = payload["subject"]
    msg["Message-ID"] = payload["message_id"]
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg.set_content(payload["body"])
    return msg


@dataclass(frozen=True)
class SmtpSender:
    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    require_tls: bool = False
    timeout: float = 20.0

    def send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                elif self.require_tls:
                    raise UnavailableError(SYSTEM, f"{self.host} does not offer STARTTLS")
                if self.username and self.password:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise AuthError(SYSTEM, "login refused: check SMTP_USERNAME and SMTP_PASSWORD") \
                from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise DataError(SYSTEM, "every recipient was refused: "
                            + ", ".join(exc.recipients)) from exc
        except smtplib.SMTPResponseException as exc:
            kind = DataError if exc.smtp_code >= 500 else UnavailableError
            raise kind(SYSTEM, f"server answered {exc.smtp_code}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise UnavailableError(SYSTEM, f"{exc.__class__.__name__}: {exc}") from exc
