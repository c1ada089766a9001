"""The "your design is ready" mail: composed here, delivered by SMTP or written to the outbox dir."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit

from customify.storage import FileStore


def message_id(mail_id: str) -> str:
    """Stable per outbox row, so a receiver can drop a duplicate of a retried send."""
    return f"<design-ready.{mail_id}@customify>"


def compose(mail_id: str, sender: str, recipient: str, design_name: str, design_url: str,
            preview_url: str, thumbnail: bytes | None, thumbnail_format: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = f"Your design \u201c{design_name}\u201d is ready"
    msg["Message-ID"] = message_id(mail_id)
    msg["Date"] = formatdate(usegmt=True)
    msg.set_content(
        f"Good news: your design \u201c{design_name}\u201d has been rendered.\n\n"
        f"Preview: {preview_url}\nDesign: {design_url}\n\n-- Customify\n"
    )
    if thumbnail:
        subtype = "webp" if thumbnail_format == "webp" else "jpeg"
        msg.add_attachment(thumbnail, maintype="image", subtype=subtype,
                           filename=f"thumbnail.{'webp' if subtype == 'webp' else 'jpg'}")
    return msg


def deliver(msg: EmailMessage, smtp_url: str, files: FileStore, mail_id: str, timeout: float = 10.0) -> str:
    """Send by SMTP when configured, else write outbox/<id>.eml. Returns where it went."""
    if not smtp_url:
        path = files.write(files.outbox / f"{mail_id}.eml", msg.as_bytes())
        return str(path)
    parts = urlsplit(smtp_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or (465 if parts.scheme == "smtps" else 25)
    client_cls = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    with client_cls(host, port, timeout=timeout) as client:
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(msg)
    return f"{host}:{port}"


def outbox_files(outbox: Path) -> list[Path]:
    return sorted(outbox.glob("*.eml"))
