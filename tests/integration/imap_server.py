"""A real IMAP server for tests: Debian's dovecot, run in the foreground on 127.0.0.1.

Plain authentication without TLS on the loopback only, users in a passwd-file, maildirs in a
private temporary folder. Messages go in with IMAP APPEND, exactly as another mail client
would put them. Tests skip with the reason when dovecot is not installed (CI installs
`dovecot-imapd`).
"""

from __future__ import annotations

import getpass
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest

from connectors.imap import ImapPoller

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USERS = 100  # mailboxes ar0..ar99: one fresh mailbox per test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dovecot_missing() -> str | None:
    """Why dovecot cannot run here, or None."""
    if not Path(DOVECOT).exists():
        return "dovecot is not installed (apt-get install dovecot-imapd)"
    return None


@dataclass
class ImapServer:
    port: int
    root: Path
    uid: int
    gid: int
    users: dict[str, str] = field(default_factory=dict)
    handed_out: int = 0

    def fresh_mailbox(self) -> str:
        """A mailbox no test used before (within this server's life)."""
        name = f"ar{self.handed_out}"
        assert name in self.users, "out of mailboxes: raise USERS"
        self.handed_out += 1
        return name

    def add_users(self, names: list[str], password: str = "secret") -> None:
        """Mailbox users, written before the server starts: dovecot notices later changes
        to the passwd-file only by its mtime (whole seconds), too coarse for tests."""
        for name in names:
            self.users[name] = password
        lines = [f"{u}:{{PLAIN}}{p}:{self.uid}:{self.gid}::{self.root / 'mail' / u}"
                 for u, p in self.users.items()]
        (self.root / "passwd").write_text("\n".join(lines) + "\n")

    def client(self, user: str) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(user, self.users[user])
        return conn

    def append(self, user: str, message: EmailMessage | bytes, *, folder: str = "INBOX") -> int:
        """APPEND a message; its UID."""
        raw = message if isinstance(message, bytes) else message.as_bytes()
        conn = self.client(user)
        try:
            if folder != "INBOX":
                conn.create(folder)  # NO when it exists: fine
            typ, data = conn.append(f'"{folder}"', None, None, raw)
            assert typ == "OK", data
            answer = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
            return int(answer.split("APPENDUID", 1)[1].split()[1].rstrip("]"))
        finally:
            conn.logout()

    def recreate(self, user: str, folder: str) -> None:
        """Delete and create a folder again: it gets a new UIDVALIDITY."""
        conn = self.client(user)
        try:
            conn.delete(f'"{folder}"')
            conn.create(f'"{folder}"')
        finally:
            conn.logout()

    def flags(self, user: str, uid: int, *, folder: str = "INBOX") -> str:
        conn = self.client(user)
        try:
            conn.select(f'"{folder}"', readonly=True)
            _typ, data = conn.uid("FETCH", str(uid), "(FLAGS)")
            return b" ".join(d for d in data if isinstance(d, bytes)).decode()
        finally:
            conn.logout()

    def poller(self, user: str, *, folder: str = "INBOX", password: str | None = None
               ) -> ImapPoller:
        return ImapPoller(host="127.0.0.1", port=self.port, username=user,
                          password=self.users.get(user, "") if password is None else password,
                          use_ssl=False, folder=folder, timeout=10, attempts=1)


def _config(root: Path, port: int, *, login_user: str, internal_user: str) -> str:
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
"""


@contextmanager
def dovecot() -> Iterator[ImapServer]:
    """Start dovecot on a free loopback port; stop it and remove its files afterwards."""
    reason = dovecot_missing()
    if reason:
        pytest.skip(reason)
    # Not under pytest's tmp_path: dovecot's mail processes never run as root, and the
    # unprivileged user must be able to reach the maildirs.
    root = Path(tempfile.mkdtemp(prefix="dunning-imap-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        mail_user = pwd.getpwnam("dovecot")
        uid, gid = mail_user.pw_uid, mail_user.pw_gid
        login_user, internal_user = "dovenull", "dovecot"
    else:
        uid, gid = os.getuid(), os.getgid()
        login_user = internal_user = getpass.getuser()
    (root / "mail").mkdir()
    os.chown(root / "mail", uid, gid)
    port = _free_port()
    (root / "dovecot.conf").write_text(_config(root, port, login_user=login_user,
                                                internal_user=internal_user))
    server = ImapServer(port=port, root=root, uid=uid, gid=gid)
    server.add_users([f"ar{i}" for i in range(USERS)])
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() \
                        else ""
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.skip(f"dovecot did not start: {(out + log).strip()[-500:]}")
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()
        shutil.rmtree(root, ignore_errors=True)


def reply_email(*, sender: str, subject: str, body: str, when: datetime,
                in_reply_to: str | None = None, references: tuple[str, ...] = (),
                html: str | None = None, message_id: str | None = None) -> EmailMessage:
    """A customer's email as their mail client would send it."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "ar@vendor.example"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = message_id or make_msgid(domain=sender.rsplit("@", 1)[-1].strip(">"))
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references or in_reply_to:
        msg["References"] = " ".join(references or (in_reply_to or "",))
    if html is not None and not body:
        msg.set_content(html, subtype="html")  # an HTML-only mail client
    else:
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    return msg
