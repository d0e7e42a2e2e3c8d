"""Customer replies in over IMAP: read new mail since a UID, never change the mailbox.

The mailbox is opened read-only (EXAMINE) and bodies are fetched with BODY.PEEK, so polling
neither marks mail seen nor moves nor deletes it: the AR team's own mail client sees the
inbox exactly as before. Which mail is new is decided by UID: a UID is only meaningful
together with the folder's UIDVALIDITY, so every batch says which UIDVALIDITY it belongs to
and the caller starts over (deduplicating by Message-ID) when that changes.

Every failure leaves as the connector hierarchy: a refused login is an AuthError (a person
must fix the password), a missing folder a DataError, and a connection or protocol failure
an UnavailableError (the next poll tries again). Credentials are never logged.
"""

from __future__ import annotations

import email
import hashlib
import imaplib
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any, Protocol

from connectors.base import retrying
from connectors.errors import AuthError, ConnectorError, DataError, UnavailableError

SYSTEM = "imap"
MAX_BODY = 20_000  # characters of a reply kept: enough for any human answer, bounded storage
_MSGID = re.compile(r"<[^<>\s]+>")
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_FETCH_UID = re.compile(rb"UID (\d+)")


@dataclass(frozen=True)
class InboundEmail:
    """One received email as the reply service needs it; no vendor or library objects.

    `uid` is 0 for a message that did not come from a mailbox (a test, a paste).
    `message_id` and the ids in `in_reply_to`/`references` keep their angle brackets, as
    our outbox stores them.
    """

    uid: int
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    sender: str | None  # the From address, lower case
    sender_name: str | None
    subject: str
    date: datetime | None  # aware UTC; None when the Date header is missing or unreadable
    body: str

    def fingerprint(self) -> str:
        """A stable id for a message without a Message-ID, so it is still stored once."""
        digest = hashlib.sha256("\x1f".join((
            self.sender or "", self.subject, self.date.isoformat() if self.date else "",
            self.body)).encode("utf-8", "replace")).hexdigest()
        return f"<{digest[:40]}@no-message-id.invalid>"


class Mailbox(Protocol):
    """An open folder: its UIDVALIDITY, the UIDs after a given one, and one message."""

    uidvalidity: int

    def uids_after(self, uid: int) -> list[int]: ...

    def fetch(self, uid: int) -> InboundEmail | None: ...


class MailSource(Protocol):
    """Where replies come from (IMAP in production)."""

    def open(self) -> AbstractContextManager[Mailbox]: ...


# --- parsing --------------------------------------------------------------------------------


class _TextOfHtml(HTMLParser):
    """HTML to readable text: block elements become line breaks, scripts/styles vanish."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                        "blockquote", "pre", "table", "ul", "ol", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _content(part: Message) -> str:
    """A text part's content, also when it names a charset Python does not know."""
    try:
        value = part.get_content() if isinstance(part, EmailMessage) else None
    except (LookupError, UnicodeError, KeyError):
        value = None
    if isinstance(value, str):
        return value
    raw = part.get_payload(decode=True)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""


def _body(msg: EmailMessage) -> str:
    """text/plain when the sender gave one (with words in it); else the HTML part as text."""
    for kind in ("plain", "html"):
        part = msg.get_body(preferencelist=(kind,))
        if part is None:
            continue
        text = _content(part)
        if kind == "html":
            text = html_to_text(text)
        # NUL bytes (broken mailers) are refused by PostgreSQL text columns: drop them.
        text = text.replace("\r\n", "\n").replace("\x00", "").strip()
        if text:
            return text[:MAX_BODY]
    return ""


def _header(msg: EmailMessage, name: str) -> str:
    """A header as one line of text; empty when absent or too broken to parse."""
    try:
        value = msg.get(name)
    except (ValueError, TypeError, IndexError, AttributeError):
        # A malformed header must not lose the message: the rest is still a reply.
        return ""
    return " ".join(str(value).replace("\x00", "").split()) if value is not None else ""


def _ids(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_MSGID.findall(text)))


def _date(text: str) -> datetime | None:
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(UTC)


def parse_email(raw: bytes, *, uid: int = 0) -> InboundEmail:
    """An RFC 5322 message (bytes as the server stored them) as an InboundEmail."""
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    sender_name, sender = None, None
    pairs = getaddresses([_header(msg, "From")])
    if pairs and "@" in pairs[0][1]:
        sender_name, sender = (pairs[0][0] or None), pairs[0][1].strip().lower()
    message_ids = _ids(_header(msg, "Message-ID"))
    in_reply_to = _ids(_header(msg, "In-Reply-To"))
    return InboundEmail(
        uid=uid,
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_ids(_header(msg, "References")),
        sender=sender, sender_name=sender_name,
        subject=_header(msg, "Subject")[:500],
        date=_date(_header(msg, "Date")),
        body=_body(msg),
    )


# --- IMAP -----------------------------------------------------------------------------------


def _check(typ: str, data: list[Any], what: str) -> list[Any]:
    if typ != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise DataError(SYSTEM, f"{what} refused: {detail[:200]}")
    return data


class _ImapMailbox:
    """A folder opened read-only on a logged-in connection."""

    def __init__(self, conn: imaplib.IMAP4, uidvalidity: int) -> None:
        self.conn = conn
        self.uidvalidity = uidvalidity

    def uids_after(self, uid: int) -> list[int]:
        # "n:*" always includes the newest message, even when its UID is below n: filter.
        data = _translated(lambda: _check(*self.conn.uid("SEARCH", "UID", f"{uid + 1}:*"),
                                          "UID SEARCH"))
        found = b" ".join(d for d in data if isinstance(d, bytes)).split()
        return sorted(u for u in (int(x) for x in found if x.isdigit()) if u > uid)

    def fetch(self, uid: int) -> InboundEmail | None:
        """The message with this UID, or None when it was expunged meanwhile."""
        data = _translated(lambda: _check(*self.conn.uid("FETCH", str(uid), "(BODY.PEEK[])"),
                                          "UID FETCH"))
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                head, raw = item
                got = _FETCH_UID.search(head) if isinstance(head, bytes) else None
                if got is not None and int(got.group(1)) != uid:
                    continue
                if isinstance(raw, bytes):
                    return parse_email(raw, uid=uid)
        return None


def _translated(call: Callable[[], list[Any]]) -> list[Any]:
    """Run an IMAP call, translating imaplib and socket errors into ConnectorErrors."""
    try:
        result = call()
    except ConnectorError:
        raise
    except imaplib.IMAP4.abort as exc:
        raise UnavailableError(SYSTEM, f"connection lost: {exc}") from exc
    except imaplib.IMAP4.error as exc:
        raise DataError(SYSTEM, f"server refused: {exc}") from exc
    except TimeoutError as exc:
        raise UnavailableError(SYSTEM, "timed out") from exc
    except OSError as exc:
        raise UnavailableError(SYSTEM, f"{exc.__class__.__name__}: {exc}") from exc
    return result


@dataclass(frozen=True)
class ImapPoller:
    """Reads one folder of one mailbox (settings: IMAP_HOST, IMAP_PORT, IMAP_USERNAME,
    IMAP_PASSWORD, IMAP_SSL, IMAP_FOLDER).

    `use_ssl`: implicit TLS (port 993). Without it the connection is plain and upgraded with
    STARTTLS whenever the server offers it; `require_tls` refuses a server that does not.
    """

    host: str
    port: int = 993
    username: str = ""
    password: str = field(default="", repr=False)  # never in a log line or a traceback
    use_ssl: bool = True
    folder: str = "INBOX"
    require_tls: bool = False
    timeout: float = 30.0
    attempts: int = 3
    system: str = SYSTEM

    def _connect(self) -> imaplib.IMAP4:
        conn: imaplib.IMAP4
        try:
            if self.use_ssl:
                conn = imaplib.IMAP4_SSL(self.host, self.port, timeout=self.timeout,
                                         ssl_context=ssl.create_default_context())
            else:
                conn = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
                if "STARTTLS" in conn.capabilities:
                    conn.starttls(ssl_context=ssl.create_default_context())
                elif self.require_tls:
                    conn.shutdown()
                    raise UnavailableError(SYSTEM, f"{self.host} does not offer STARTTLS")
        except ConnectorError:
            raise
        except (imaplib.IMAP4.error, OSError) as exc:
            raise UnavailableError(SYSTEM, f"cannot connect to {self.host}:{self.port}: "
                                   f"{exc.__class__.__name__}") from exc
        try:
            conn.login(self.username, self.password)
        except imaplib.IMAP4.abort as exc:
            _close(conn)
            raise UnavailableError(SYSTEM, "connection lost while logging in") from exc
        except imaplib.IMAP4.error as exc:
            _close(conn)
            raise AuthError(SYSTEM, "login refused: check IMAP_USERNAME and IMAP_PASSWORD") \
                from exc
        except OSError as exc:
            _close(conn)
            raise UnavailableError(SYSTEM, f"connection failed while logging in: "
                                   f"{exc.__class__.__name__}") from exc
        return conn

    def _examine(self, conn: imaplib.IMAP4) -> int:
        """Open the folder read-only; its UIDVALIDITY."""
        _translated(lambda: _check(*conn.select(_quoted(self.folder), readonly=True),
                                   f"opening folder {self.folder!r}"))
        data = _translated(lambda: list(conn.response("UIDVALIDITY")[1]))
        for item in data:
            if isinstance(item, bytes) and item.isdigit():
                return int(item)
        # Some servers only answer it to STATUS.
        status = _translated(lambda: _check(*conn.status(_quoted(self.folder),
                                                         "(UIDVALIDITY)"), "STATUS"))
        for item in status:
            got = _UIDVALIDITY.search(item) if isinstance(item, bytes) else None
            if got:
                return int(got.group(1))
        raise DataError(SYSTEM, f"folder {self.folder!r} has no UIDVALIDITY")

    @contextmanager
    def open(self) -> Iterator[Mailbox]:
        """Log in and open the folder read-only (retrying outages); log out at the end."""
        conn = retrying(SYSTEM, self._connect, attempts=self.attempts, initial_wait=0.5,
                        max_wait=5.0)
        try:
            yield _ImapMailbox(conn, self._examine(conn))
        finally:
            _close(conn)

    def check(self) -> str:
        """Log in and open the folder; a one-line description, or raise ConnectorError."""
        with self.open() as box:
            count = len(box.uids_after(0))
        return f"IMAP {self.host}:{self.port} folder {self.folder}: {count} message(s)"


def _quoted(folder: str) -> str:
    """A folder name as an IMAP astring (names with spaces must be quoted)."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _close(conn: imaplib.IMAP4) -> None:
    """Log out quietly: the poll's outcome is already decided."""
    with suppress(imaplib.IMAP4.error, OSError):
        conn.logout()
