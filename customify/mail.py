"""The "your design is ready" mail: composed here, delivered by SMTP or written to the outbox dir."""

from __future__ import annotations

import smtplib
from email.header import Header
from email.message import Message
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate
from urllib.parse import unquote, urlsplit

from customify.storage import Files


def message_id(mail_id: str) -> str:
    """Stable per outbox row, so a receiver can drop a duplicate of a retried send."""
    return f"<design-ready.{mail_id}@customify>"


def compose(
    mail_id: str,
    sender: str,
    recipient: str,
    design_name: str,
    design_url: str,
    preview_url: str,
    thumbnail: bytes | None,
    thumbnail_format: str,
) -> Message:
    """A plain-text mail with the thumbnail attached. Built with the compat32 MIME classes:
    `EmailMessage` (policy.default) takes more than twice the GIL-holding Python per mail,
    on the worker threads that also render (how much: bench/RESULTS.md, Core)."""
    body = MIMEText(
        f"Good news: your design \u201c{design_name}\u201d has been rendered.\n\n"
        f"Preview: {preview_url}\nDesign: {design_url}\n\n-- Customify\n",
        "plain",
        "utf-8",
    )
    if thumbnail:
        msg: Message = MIMEMultipart()
        msg.attach(body)
        subtype = "webp" if thumbnail_format == "webp" else "jpeg"
        image = MIMEImage(thumbnail, subtype)
        image.add_header(
            "Content-Disposition", "attachment", filename=f"thumbnail.{'webp' if subtype == 'webp' else 'jpg'}"
        )
        msg.attach(image)
    else:
        msg = body
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = Header(f"Your design \u201c{design_name}\u201d is ready", "utf-8").encode()
    msg["Message-ID"] = message_id(mail_id)
    msg["Date"] = formatdate(usegmt=True)
    return msg


def deliver(msg: Message, smtp_url: str, files: Files, mail_id: str, timeout: float = 10.0) -> str:
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
