"""Signed webhooks: endpoints, the delivery outbox, and delivery (Standard Webhooks signatures).

An event is written to the outbox (`queue_event`) in the same transaction as
the state change it announces, one row per matching endpoint; the row's id is
the `webhook-id` every attempt carries, so receivers dedupe on it. After the
commit the rows are enqueued (`install`); a queued task is only a hint, as for
renders: the sweeper re-drives rows whose task was lost. Delivery resolves the
receiver's name itself and connects to the address it checked (SSRF guard),
follows no redirects, reads a few kB of the answer, retries on
`webhooks.retry_schedule` with jitter, stops on a 2xx, and disables the
endpoint on 410 Gone or after failing for `webhooks.disable_after_seconds`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import ColumnElement, Exists, event, or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from customify.models import DEV_USER_ID, Design, User, WebhookDelivery, WebhookEndpoint, utcnow

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from huey.api import TaskWrapper
    from sqlalchemy.orm import sessionmaker

    from customify.config import Config
    from customify.events import EventHub
    from customify.metrics import WorkerMetrics

log = logging.getLogger("customify.webhooks")

EVENTS = ("design.created", "design.published", "design.failed", "design.deleted")
PING = "ping"
PAYLOAD_VERSION = 1
MAX_URL_LENGTH = 2000
STALE_SECONDS = 60.0  # a delivery claimed this long ago by a process that died is offered again
LOST_TASK_SECONDS = 30.0  # a due delivery with no attempt for this long lost its task: the sweeper re-enqueues
_PENDING_KEY = "customify.webhook_deliveries"


class DeliveryTask(Protocol):
    @property
    def deliver_webhook(self) -> TaskWrapper: ...


class WebhookRuntime(Protocol):
    """What delivery uses of its process (customify.runtime.Runtime is one; the tasks' TaskRuntime extends it)."""

    config: Config
    hub: EventHub
    metrics: WorkerMetrics
    sessions: sessionmaker[Session]

    @property
    def tasks(self) -> DeliveryTask: ...

    def transaction(self) -> AbstractContextManager[Session]: ...

    def crash_point(self, name: str) -> None: ...


# Endpoints -----------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def create_endpoint(
    session: Session, owner_id: str, url: str, events: list[str], description: str, all_users: bool
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        owner_id=owner_id,
        url=url,
        events=events,
        description=description,
        all_users=all_users,
        secret=new_secret(),
        enabled=True,
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def get_endpoint(session: Session, owner_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    endpoint = session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
    return endpoint if endpoint is not None and endpoint.owner_id == owner_id else None


def list_endpoints(session: Session, owner_id: str) -> list[WebhookEndpoint]:
    return list(
        session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.owner_id == owner_id).order_by(WebhookEndpoint.created_at)
        )
    )


def update_endpoint(
    session: Session, owner_id: str, endpoint_id: str, changes: dict[str, Any]
) -> WebhookEndpoint | None:
    endpoint = get_endpoint(session, owner_id, endpoint_id)
    if endpoint is None:
        return None
    for key, value in changes.items():
        setattr(endpoint, key, value)
    if changes.get("enabled"):
        endpoint.disabled_reason = None
        endpoint.failing_since = None
    endpoint.updated_at = utcnow()
    session.flush()
    return endpoint


def delete_endpoint(session: Session, owner_id: str, endpoint_id: str) -> bool:
    endpoint = get_endpoint(session, owner_id, endpoint_id)
    if endpoint is None:
        return False
    session.delete(endpoint)
    session.flush()
    return True


def rotate_secret(session: Session, owner_id: str, endpoint_id: str, overlap_seconds: float) -> WebhookEndpoint | None:
    """A new secret; the old one keeps signing (a second signature) for `overlap_seconds`."""
    endpoint = get_endpoint(session, owner_id, endpoint_id)
    if endpoint is None:
        return None
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = utcnow() + timedelta(seconds=overlap_seconds)
    endpoint.secret = new_secret()
    endpoint.updated_at = utcnow()
    session.flush()
    return endpoint


# The outbox ------------------------------------------------------------------------


def _payload(event_name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": event_name,
        "version": PAYLOAD_VERSION,
        "timestamp": utcnow().isoformat().replace("+00:00", "Z"),
        "data": data,
    }


def _add_delivery(session: Session, endpoint_id: str, event_name: str, payload: dict[str, Any]) -> str:
    delivery_id = "msg_" + uuid.uuid4().hex
    session.add(
        WebhookDelivery(
            id=delivery_id,
            endpoint_id=endpoint_id,
            event=event_name,
            payload=payload,
            status="pending",
            attempts=0,
            next_attempt_at=utcnow(),
        )
    )
    session.info.setdefault(_PENDING_KEY, []).append(delivery_id)
    return delivery_id


def _listening(owner_id: Any) -> tuple[ColumnElement[bool], ...]:
    """The endpoints (joined with their owners) that may want an event of `owner_id`'s design."""
    # all_users holds while its owner is an operator (the dev user is one on loopback).
    operator = User.operator.is_(True) | (User.id == DEV_USER_ID)
    return (
        WebhookEndpoint.enabled.is_(True),
        or_(WebhookEndpoint.owner_id == owner_id, WebhookEndpoint.all_users.is_(True) & operator),
    )


def anyone_listening(owner_id: Any) -> Exists:
    """Whether an endpoint may want an event of `owner_id`'s design, as a clause for a query that asks
    something else too (publishing asks it with the owner's address: no round trip of its own when, as
    usually, no endpoint is registered)."""
    query = select(WebhookEndpoint.id).join(User, User.id == WebhookEndpoint.owner_id).where(*_listening(owner_id))
    return query.correlate(None).exists()


def queue_event(session: Session, owner_id: str | None, event_name: str, data: dict[str, Any]) -> int:
    """Write one outbox row per enabled endpoint that wants this event of this owner's design (in the
    caller's transaction); they are enqueued after the commit. Returns how many."""
    if owner_id is None:
        return 0

    rows = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events)
        .join(User, User.id == WebhookEndpoint.owner_id)
        .where(*_listening(owner_id))
    ).all()
    wanted = [endpoint_id for endpoint_id, events in rows if event_name in (events or [])]
    if not wanted:
        return 0
    payload = _payload(event_name, {**data, "owner_id": owner_id})
    for endpoint_id in wanted:
        _add_delivery(session, endpoint_id, event_name, payload)
    return len(wanted)


def queue_ping(session: Session, endpoint: WebhookEndpoint) -> str:
    return _add_delivery(session, endpoint.id, PING, _payload(PING, {"endpoint_id": endpoint.id}))


def design_data(design: Design) -> dict[str, Any]:
    return {
        "id": design.id,
        "name": design.name,
        "product": design.product,
        "status": design.status,
        "version": design.version,
    }


def list_deliveries(session: Session, endpoint_id: str, limit: int) -> list[WebhookDelivery]:
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.created_at.desc())
            .limit(limit)
        )
    )


def redeliver(session: Session, endpoint_id: str, delivery_id: str) -> WebhookDelivery | None:
    """Send a delivery again, same `webhook-id`, with a fresh set of retries."""
    delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if delivery is None or delivery.endpoint_id != endpoint_id:
        return None
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, utcnow()
    delivery.claimed_at = None
    session.info.setdefault(_PENDING_KEY, []).append(delivery_id)
    session.flush()
    return delivery


def install(rt: WebhookRuntime) -> None:
    """Enqueue the deliveries a transaction wrote, once it has committed (never before: a worker could
    look for the row first). A failed enqueue is not lost: the sweeper re-drives due rows."""

    def after_commit(session: Session) -> None:
        for delivery_id in session.info.pop(_PENDING_KEY, []):
            try:
                rt.tasks.deliver_webhook(delivery_id)
            except Exception as exc:
                log.warning("could not enqueue webhook delivery %s (%s); the sweeper will", delivery_id, exc)

    def after_rollback(session: Session) -> None:
        session.info.pop(_PENDING_KEY, None)

    event.listen(rt.sessions, "after_commit", after_commit)
    event.listen(rt.sessions, "after_soft_rollback", lambda session, _tx: after_rollback(session))


def deliveries_to_redrive(session: Session, reclaim_all: bool = False, limit: int = 500) -> list[str]:
    """Due deliveries whose task was lost, and deliveries whose deliverer died mid-attempt."""
    now = utcnow()
    stale = now - timedelta(seconds=0 if reclaim_all else STALE_SECONDS)
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.status == "delivering", WebhookDelivery.claimed_at <= stale)
        .values(status="pending", next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    due = now - timedelta(seconds=0 if reclaim_all else LOST_TASK_SECONDS)
    return list(
        session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= due)
            .limit(limit)
        )
    )


# SSRF guard ----------------------------------------------------------------------------


class RefusedTarget(ValueError):
    """The URL may not be delivered to; the message names the rule."""


def address_rule(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Which rule refuses this address (None: a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"):
        return "metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private or ip.is_unspecified or ip.is_reserved or ip.is_multicast or not ip.is_global:
        return "private"
    return None


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable webhook URL; RefusedTarget naming the rule otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise RefusedTarget(f"url-length: the URL has {len(url)} characters; at most {MAX_URL_LENGTH}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedTarget(f"scheme: only http and https URLs are delivered to, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise RefusedTarget("host: the URL has no host name")
    if parts.username or parts.password:
        raise RefusedTarget("credentials: put no user or password in the URL; verify the signature instead")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RefusedTarget("port: the URL's port is not a number in 1-65535") from None
    return parts.scheme, parts.hostname, port


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to, after DNS; RefusedTarget when any address is refused (one refused
    address would let a rebinding name pick it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedTarget(f"dns: {host!r} does not resolve ({exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for ip in addresses:
        rule = address_rule(ip)
        if rule == "metadata":  # a cloud's instance credentials: never a receiver, not even in dev mode
            raise RefusedTarget(f"metadata: {host} resolves to {ip}, a cloud metadata address; never delivered to")
        if rule is not None and not allow_private:
            raise RefusedTarget(
                f"{rule}: {host} resolves to {ip}, a {rule} address; only public addresses "
                "are delivered to unless webhooks.allow_private_targets = true"
            )
    # IPv4 first when the name has both: a receiver that listens on one family most often listens there.
    return str(sorted(addresses, key=lambda ip: ip.version)[0])


def check_target(url: str, config: Config) -> None:
    """At creation and change: the URL's form and, resolved now, its addresses."""
    _, host, port = check_url(url)
    resolve(host, port, config.webhooks_may_reach_private)


# Delivery -------------------------------------------------------------------------------


def signature(endpoint: WebhookEndpoint, msg_id: str, at: datetime, body: str) -> str:
    """`v1,<base64>` per Standard Webhooks; two, space-separated, while a rotated secret overlaps."""
    sigs = [Webhook(endpoint.secret).sign(msg_id, at, body)]
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > utcnow():
        sigs.append(Webhook(endpoint.previous_secret).sign(msg_id, at, body))
    return " ".join(sigs)


def body_of(payload: dict[str, Any], base_url: str) -> str:
    """The JSON body; relative URLs in the data become absolute (the same bytes at every attempt)."""
    data = {
        k: (f"{base_url}{v}" if k.endswith("_url") and isinstance(v, str) and v.startswith("/") else v)
        for k, v in payload.get("data", {}).items()
    }
    return json.dumps({**payload, "data": data}, separators=(",", ":"), sort_keys=True)


class Attempt:
    def __init__(self) -> None:
        self.status_code: int | None = None
        self.error: str | None = None
        self.duration_ms = 0.0


def post(endpoint: WebhookEndpoint, delivery: WebhookDelivery, config: Config) -> Attempt:
    """One POST to the receiver, to the address the guard checked; no redirects; a few kB read."""
    attempt = Attempt()
    settings = config.webhooks
    started = time.perf_counter()
    try:
        scheme, host, port = check_url(endpoint.url)
        address = resolve(host, port, config.webhooks_may_reach_private)
        body = body_of(delivery.payload, config.base_url)
        now = utcnow()
        headers = {
            "content-type": "application/json",
            "user-agent": "Customify-Webhooks/1",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature(endpoint, delivery.id, now, body),
            "host": urlsplit(endpoint.url).netloc,
        }
        netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        pinned = urlunsplit(urlsplit(endpoint.url)._replace(netloc=netloc))
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream(
                "POST",
                pinned,
                content=body.encode(),
                headers=headers,
                extensions={"sni_hostname": host} if scheme == "https" else {},
            ) as response,
        ):
            attempt.status_code = response.status_code
            text = b""
            for chunk in response.iter_raw():
                text += chunk
                if len(text) >= settings.max_response_bytes:
                    break
            answer = text[: settings.max_response_bytes].decode("utf-8", "replace").strip()
            if not 200 <= response.status_code < 300:
                what = "a redirect (not followed)" if 300 <= response.status_code < 400 else "not a 2xx"
                attempt.error = f"HTTP {response.status_code}, {what}" + (f": {answer[:300]}" if answer else "")
    except RefusedTarget as exc:
        attempt.error = f"refused: {exc}"
    except httpx.TimeoutException as exc:
        attempt.error = f"timeout: {type(exc).__name__}"
    except httpx.HTTPError as exc:
        attempt.error = f"{type(exc).__name__}: {exc}"[:500]
    attempt.duration_ms = round((time.perf_counter() - started) * 1000, 2)
    return attempt


def claim(session: Session, delivery_id: str) -> tuple[WebhookDelivery, WebhookEndpoint] | None:
    """Claim a due pending delivery (a conditional update: duplicate tasks are no-ops)."""
    now = utcnow()
    result = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now + timedelta(seconds=1),
        )
        .values(status="delivering", claimed_at=now, attempts=WebhookDelivery.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    assert delivery is not None
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id, populate_existing=True)
    if endpoint is None:
        return None
    return delivery, endpoint


def run_delivery(rt: WebhookRuntime, delivery_id: str) -> None:
    """Deliver one outbox row once; schedule the next attempt, or end it (delivered, failed, disabled)."""
    with rt.transaction() as session:
        claimed = claim(session, delivery_id)
        if claimed is not None:
            delivery, endpoint = claimed
            session.expunge_all()  # keep the rows readable after the transaction
    if claimed is None:
        return
    if not endpoint.enabled:
        with rt.transaction() as session:
            _finish(
                session,
                delivery_id,
                "failed",
                None,
                0.0,
                f"endpoint disabled: {endpoint.disabled_reason or 'by its owner'}",
            )
        return
    rt.crash_point("before-webhook")
    attempt = post(endpoint, delivery, rt.config)
    settings = rt.config.webhooks
    ok = attempt.error is None
    rt.metrics.delivered("webhook", ok)
    next_delay: float | None = None
    with rt.transaction() as session:
        if ok:
            _finish(session, delivery_id, "delivered", attempt.status_code, attempt.duration_ms, None)
            session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint.id)
                .values(failing_since=None)
                .execution_options(synchronize_session=False)
            )
        else:
            reason = _disable_reason(endpoint, attempt, settings.disable_after_seconds)
            if reason is not None:
                session.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == endpoint.id)
                    .values(enabled=False, disabled_reason=reason, updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
            elif endpoint.failing_since is None:
                session.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == endpoint.id)
                    .values(failing_since=utcnow())
                    .execution_options(synchronize_session=False)
                )
            schedule = settings.retry_schedule
            if reason is None and delivery.attempts <= len(schedule):
                next_delay = schedule[delivery.attempts - 1] * random.uniform(0.8, 1.2)
                _finish(
                    session,
                    delivery_id,
                    "pending",
                    attempt.status_code,
                    attempt.duration_ms,
                    attempt.error,
                    next_at=utcnow() + timedelta(seconds=next_delay),
                )
            else:
                final = attempt.error if reason is None else f"{attempt.error}; endpoint disabled: {reason}"
                _finish(session, delivery_id, "failed", attempt.status_code, attempt.duration_ms, final)
    rt.hub.publish(
        "webhook.delivered" if ok else "webhook.failed",
        delivery_id=delivery_id,
        endpoint_id=endpoint.id,
        owner_id=endpoint.owner_id,
        event=delivery.event,
        attempt=delivery.attempts,
        status_code=attempt.status_code,
        duration_ms=attempt.duration_ms,
        error=attempt.error,
        next_attempt_s=None if next_delay is None else round(next_delay, 1),
    )
    if next_delay is not None:
        rt.tasks.deliver_webhook.schedule(args=(delivery_id,), delay=next_delay)


def _disable_reason(endpoint: WebhookEndpoint, attempt: Attempt, disable_after: float) -> str | None:
    if attempt.status_code == 410:
        return "the receiver answered 410 Gone"
    if endpoint.failing_since is not None:
        failing = (utcnow() - endpoint.failing_since).total_seconds()
        if failing > disable_after:
            return (
                f"deliveries have failed for {failing / 3600:.0f} h (webhooks.disable_after_seconds); "
                f"last error: {attempt.error}"
            )
    return None


def _finish(
    session: Session,
    delivery_id: str,
    status: str,
    status_code: int | None,
    duration_ms: float,
    error: str | None,
    next_at: datetime | None = None,
) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(
            status=status,
            status_code=status_code,
            duration_ms=duration_ms,
            error=error,
            next_attempt_at=next_at,
            claimed_at=None,
            delivered_at=utcnow() if status == "delivered" else None,
        )
        .execution_options(synchronize_session=False)
    )


def sweep(rt: WebhookRuntime, reclaim_all: bool = False) -> int:
    """Re-enqueue deliveries whose task was lost (a crash, a purge) or whose deliverer died."""
    with rt.transaction() as session:
        ids = deliveries_to_redrive(session, reclaim_all)
    for delivery_id in ids:
        rt.tasks.deliver_webhook(delivery_id)
    return len(ids)
