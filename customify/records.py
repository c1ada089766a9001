"""The database records (designs, users, keys, tasks, mail, webhooks): plain sync functions over a Session.

Worker threads call them directly; async handlers run them in one thread hop
(`asyncio.to_thread(rt.read | rt.write, fn, …)`). Callers own the transaction (commit/rollback).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from customify import webhooks
from customify.config import Retention
from customify.models import DEV_USER_EMAIL, DEV_USER_ID, ApiKey, Asset, Design, Mail, TaskRun, User, new_id, utcnow

TERMINAL = ("published", "failed")
DESIGNS: Table = Design.__table__  # type: ignore[assignment]
MAILS: Table = Mail.__table__  # type: ignore[assignment]
USERS: Table = User.__table__  # type: ignore[assignment]


# Users and keys -------------------------------------------------------------


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEY_PREFIX_LENGTH = 12  # "cfy_" and 8 characters: shown in lists, enough to revoke by


def create_user(
    session: Session, email: str, operator: bool | None = None, key_name: str | None = None
) -> tuple[User, str]:
    """Create (or reuse) a user and issue a new API key; only its hash is stored.
    `operator` True/False grants or withdraws the operator role (None: unchanged, or not for a new user)."""
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(email=email, operator=bool(operator))
        session.add(user)
        session.flush()
    elif operator is not None:
        user.operator = operator
    return user, issue_key(session, user.id, key_name)


def set_operator(session: Session, email: str, operator: bool) -> User | None:
    """Grant or withdraw the operator role of an existing user (None: no such user); their keys stay."""
    user = user_by_email(session, email)
    if user is not None:
        user.operator = operator
    return user


def issue_key(session: Session, user_id: str, name: str | None = None) -> str:
    """A new API key for the user (they may hold several, each with a name); returns the key itself."""
    key = "cfy_" + secrets.token_urlsafe(32)
    session.add(ApiKey(user_id=user_id, key_hash=hash_key(key), prefix=key[:KEY_PREFIX_LENGTH], name=name))
    session.flush()
    return key


def user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email))


def list_users(session: Session) -> list[tuple[User, list[ApiKey]]]:
    """Every user with their keys, oldest first."""
    users = list(session.scalars(select(User).order_by(User.created_at, User.email)))
    keys: dict[str, list[ApiKey]] = {}
    for key in session.scalars(select(ApiKey).order_by(ApiKey.created_at)):
        keys.setdefault(key.user_id, []).append(key)
    return [(user, keys.get(user.id, [])) for user in users]


def keys_with_prefix(session: Session, prefix: str) -> list[tuple[ApiKey, str]]:
    """Keys whose shown prefix starts with `prefix` (or equals the start of it), with their user's email."""
    # Keys issued before 0005 show 10 characters; a longer prefix given for one of them still names it.
    rows = session.execute(
        select(ApiKey, User.email)
        .join(User, User.id == ApiKey.user_id)
        .where(
            or_(
                ApiKey.prefix.startswith(prefix, autoescape=True),
                ApiKey.prefix.in_([prefix[:10], prefix[:KEY_PREFIX_LENGTH]]),
            )
        )
    )
    return [(row[0], row[1]) for row in rows]


def revoke_key(session: Session, key_id: str) -> bool:
    """Delete a key: the next request with it is a 401 in every process (keys are looked up per request)."""
    result = session.execute(delete(ApiKey).where(ApiKey.id == key_id))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


class KeyViewer(NamedTuple):
    user_id: str
    operator: bool
    key_id: str
    last_used_at: datetime | None


def viewer_for_key(conn: Connection | Session, key: str) -> KeyViewer | None:
    """Who an API key belongs to (user id, is operator) and when it was last used."""
    row = conn.execute(
        select(User.id, User.operator, ApiKey.id, ApiKey.last_used_at)
        .join(ApiKey, ApiKey.user_id == User.id)
        .where(ApiKey.key_hash == hash_key(key))
    ).first()
    return KeyViewer(row[0], bool(row[1]), row[2], row[3]) if row is not None else None


def touch_key(session: Session, key_id: str) -> None:
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


def design_owner(conn: Connection | Session, design_id: str) -> str | None:
    return conn.scalar(select(Design.owner_id).where(Design.id == design_id))


def ensure_dev_user(session: Session) -> User:
    """The built-in dev user; safe when several processes start at once."""
    user = session.get(User, DEV_USER_ID)
    if user is None:
        try:
            with session.begin_nested():  # another process may insert it between our read and write
                session.add(User(id=DEV_USER_ID, email=DEV_USER_EMAIL))
        except IntegrityError:
            pass
        user = session.get(User, DEV_USER_ID, populate_existing=True)
    assert user is not None
    return user


# Designs --------------------------------------------------------------------


def create_design(
    session: Session,
    owner_id: str,
    spec: dict[str, Any],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> Design:
    design = Design(
        owner_id=owner_id,
        name=spec["name"],
        product=spec["product"],
        color=spec["color"],
        layers=spec["layers"],
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        enqueued_at=utcnow(),
    )
    session.add(design)
    session.flush()
    webhooks.queue_event(session, owner_id, "design.created", webhooks.design_data(design))  # same transaction
    return design


def design_by_idempotency_key(session: Session, owner_id: str, key: str) -> Design | None:
    return session.scalar(select(Design).where(Design.owner_id == owner_id, Design.idempotency_key == key))


def is_id(value: str) -> bool:
    """Ids are UUIDs: anything else names no row (and is not sent to the database)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class DesignView(Protocol):
    """What the API reads of a design to answer a GET: a `Design` or a row of `design_view`."""

    @property
    def id(self) -> str: ...
    @property
    def owner_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def product(self) -> str: ...
    @property
    def color(self) -> str: ...
    @property
    def layers(self) -> list[dict[str, Any]]: ...
    @property
    def status(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def error(self) -> str | None: ...
    @property
    def preview_version(self) -> int | None: ...
    @property
    def preview_key(self) -> str | None: ...
    @property
    def thumbnail_key(self) -> str | None: ...
    @property
    def render_ms(self) -> float | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def rendered_at(self) -> datetime | None: ...
    @property
    def attempts(self) -> int: ...


_DESIGN_BY_ID = select(Design.__table__).where(Design.__table__.c.id == bindparam("design_id"))


def design_view(conn: Connection, owner_id: str | None, design_id: str) -> DesignView | None:
    """One design as a row, for the API's GETs: a Core SELECT costs about a third of an ORM load's CPU
    (bench/RESULTS.md, "Garbage collection", the read itself); the same ownership rule as `get_design`."""
    if not is_id(design_id):
        return None
    return _seen_by(owner_id, conn.execute(_DESIGN_BY_ID, {"design_id": design_id}).one_or_none())


def _seen_by(owner_id: str | None, row: Any) -> DesignView | None:
    """The row if `owner_id` may see it (None: anyone may, an operator's or a worker's read)."""
    if row is None or (owner_id is not None and row.owner_id != owner_id):
        return None
    return cast(DesignView, row)


_DESIGNS_BY_ID = select(Design.__table__).where(Design.__table__.c.id.in_(bindparam("design_ids", expanding=True)))


def design_views(conn: Connection, reads: list[tuple[str | None, str]]) -> list[DesignView | None]:
    """`design_view` for many (owner, id) at once, in one query: the reader answers the GETs that came
    together this way (one round trip on Postgres instead of one a GET)."""
    ids = sorted({design_id for _, design_id in reads if is_id(design_id)})
    rows = {row.id: row for row in conn.execute(_DESIGNS_BY_ID, {"design_ids": ids})} if ids else {}
    return [_seen_by(owner_id, rows.get(design_id)) for owner_id, design_id in reads]


def get_design(session: Session, owner_id: str | None, design_id: str) -> Design | None:
    """One design; `owner_id=None` skips the ownership check (workers)."""
    if not is_id(design_id):
        return None
    design = session.get(Design, design_id, populate_existing=True)
    if design is None or (owner_id is not None and design.owner_id != owner_id):
        return None
    return design


def encode_cursor(design: DesignView) -> str:
    raw = f"{design.created_at.isoformat()}|{design.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raise ValueError for a cursor this API did not issue."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created, design_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|", 1)
    uuid.UUID(design_id)
    when = datetime.fromisoformat(created)
    try:  # in UTC here, not in the driver: 0001-01-01T00:00:00+01:00 has no UTC value (OverflowError)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC), design_id
    except OverflowError:
        raise ValueError(f"cursor time {created!r} is out of range") from None


def list_designs(
    conn: Connection | Session,
    owner_id: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
    search: str | None = None,
) -> tuple[list[DesignView], str | None]:
    """Newest first; returns the page (rows, not ORM objects: a page of 50 read as objects cost twice the
    CPU) and the cursor of the next one (None at the end).

    `owner_id=None` lists every user's designs (operators); `search` matches part of the name."""
    table = Design.__table__
    query = select(table)
    if owner_id is not None:
        query = query.where(table.c.owner_id == owner_id)
    if status:
        query = query.where(table.c.status == status)
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(table.c.name.ilike(f"%{escaped}%", escape="\\"))
    if cursor:
        created, design_id = decode_cursor(cursor)
        # `created_at <= created` first: a range Postgres can use on the (owner, created, id) index;
        # the OR alone is a filter there, so a deep page read every row above it (bench/scale.py).
        query = query.where(
            table.c.created_at <= created,
            or_(table.c.created_at < created, and_(table.c.created_at == created, table.c.id < design_id)),
        )
    rows: list[DesignView] = [
        cast(DesignView, row)
        for row in conn.execute(query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1))
    ]
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def update_design(session: Session, owner_id: str, design_id: str, changes: dict[str, Any]) -> Design | None:
    """Apply changes, bump the version and send the design back to draft for a re-render.

    The published preview (preview_version) stays until a newer render replaces it. The name is
    not drawn: a change of name alone keeps the version, the status and the preview (no render).
    """
    design = get_design(session, owner_id, design_id)
    if design is None:
        return None
    for key, value in changes.items():
        setattr(design, key, value)
    if set(changes) <= {"name"}:
        design.updated_at = utcnow()
        session.flush()
        return design
    design.version += 1
    _back_to_draft(design)
    session.flush()
    return design


def request_render(session: Session, owner_id: str, design_id: str) -> Design | None:
    """Render the current version again (after `failed`, or to refresh a preview)."""
    design = get_design(session, owner_id, design_id)
    if design is None:
        return None
    design.version += 1
    _back_to_draft(design)
    session.flush()
    return design


def _back_to_draft(design: Design) -> None:
    now = utcnow()
    design.status = "draft"
    design.error = None
    design.claim_token = None
    design.claimed_by = None
    design.claimed_at = None
    design.attempts = 0
    design.updated_at = now
    design.enqueued_at = now


def delete_design(session: Session, owner_id: str, design_id: str) -> Design | None:
    design = get_design(session, owner_id, design_id)
    if design is not None:
        session.delete(design)
        session.flush()
        webhooks.queue_event(session, owner_id, "design.deleted", {"id": design_id, "version": design.version})
    return design


def referenced_render_keys(session: Session, design_ids: list[str]) -> set[str]:
    """The preview and thumbnail keys the given designs publish (for the orphan sweep)."""
    keys: set[str] = set()
    for i in range(0, len(design_ids), 500):
        rows = session.execute(
            select(Design.preview_key, Design.thumbnail_key).where(Design.id.in_(design_ids[i : i + 500]))
        ).all()
        keys.update(key for row in rows for key in row if key)
    return keys


# The render lease -----------------------------------------------------------


class Claim(NamedTuple):
    """A claimed render: its token and the spec to draw (read by the claim itself)."""

    token: str
    spec: dict[str, Any]
    owner_id: str


# The render path's statements are built once: building a statement object cost
# about as much as executing it (SQLAlchemy's compile cache then keys on the shape).
_design = DESIGNS.c  # the design table's columns


def _in_flight(owner: Any, alias: str) -> Any:
    """How many live renders (claimed, lease not expired) `owner` has: a correlated count."""
    r = DESIGNS.alias(alias)
    return (
        select(func.count())
        .select_from(r)
        .where(r.c.owner_id == owner, r.c.status == "rendering", r.c.claimed_at >= bindparam("p_stale"))
        .scalar_subquery()
    )


# Fair sharing, decided in the claim (so on every queue backend): an owner with `p_cap` renders in
# flight waits while another owner, under the cap, has a draft waiting; with nobody else waiting,
# the workers are not left idle.
_others = DESIGNS.alias("o")
_FAIR_SHARE = or_(
    _in_flight(_design.owner_id, "r") < bindparam("p_cap"),
    ~select(_others.c.id)
    .where(
        _others.c.owner_id != _design.owner_id,
        _others.c.status == "draft",
        _in_flight(_others.c.owner_id, "r2") < bindparam("p_cap"),
    )
    .exists(),
)
_CLAIM = (
    update(DESIGNS)
    .where(
        _design.id == bindparam("p_id"),
        _design.version == bindparam("p_version"),
        _design.attempts < bindparam("p_max"),
        or_(_design.status == "draft", and_(_design.status == "rendering", _design.claimed_at < bindparam("p_stale"))),
        _FAIR_SHARE,
    )
    .values(
        status="rendering",
        claim_token=bindparam("p_token"),
        claimed_by=bindparam("p_holder"),
        claimed_at=bindparam("p_now", type_=_design.claimed_at.type),
        attempts=_design.attempts + 1,
        updated_at=bindparam("p_now", type_=_design.updated_at.type),
    )
    .returning(_design.name, _design.product, _design.color, _design.layers, _design.owner_id)
)
_OWNER_LOCK = text("select pg_advisory_xact_lock(hashtext(owner_id)) from designs where id = :p_id")
_PUBLISH = (
    update(DESIGNS)
    .where(
        _design.id == bindparam("p_id"),
        _design.version == bindparam("p_version"),
        _design.claim_token == bindparam("p_token"),
        _design.status == "rendering",
    )
    .values(
        status="published",
        preview_version=bindparam("p_version"),
        preview_key=bindparam("p_preview"),
        thumbnail_key=bindparam("p_thumbnail"),
        render_ms=bindparam("p_render_ms"),
        rendered_at=bindparam("p_now", type_=_design.rendered_at.type),
        updated_at=bindparam("p_now", type_=_design.updated_at.type),
        claim_token=None,
        claimed_by=None,
        claimed_at=None,
        error=None,
    )
    .returning(_design.owner_id)
)
# The owner's address and whether a webhook may want the event, in one round trip (SQLite's RETURNING
# cannot hold them: SQLAlchemy writes its subqueries' columns without their tables).
_OWNER_EMAIL = select(USERS.c.email, webhooks.anyone_listening(bindparam("p_owner"))).where(
    USERS.c.id == bindparam("p_owner")
)
_QUEUE_MAIL = insert(MAILS).values(
    id=bindparam("p_mail"),
    design_id=bindparam("p_id"),
    version=bindparam("p_version"),
    recipient=bindparam("p_recipient"),
    status="pending",
    attempts=0,
    created_at=bindparam("p_now", type_=MAILS.c.created_at.type),
)


def claim_render(
    session: Session,
    design_id: str,
    version: int,
    holder: str,
    lease_seconds: float,
    max_attempts: int = 1_000_000,
    per_owner: int = 1_000_000,
) -> Claim | None:
    """Claim a render of `version`: a conditional update that records a lease, counts the attempt
    and returns what to draw, in one statement.

    Succeeds for a draft with attempts left, or for a render whose lease expired
    (its worker died), unless its owner already has `per_owner` renders in flight while
    another owner's draft waits (see `waits_for_share`). Returns None when there is nothing to do.
    """
    now = utcnow()
    token = str(uuid.uuid4())
    conn = session.connection()
    if conn.dialect.name == "postgresql" and per_owner < 1_000_000:
        # Read committed: two workers claiming for one owner at once would both count the other's
        # claim as not yet made. One owner's claims take turns (SQLite has one writer anyway).
        conn.execute(_OWNER_LOCK, {"p_id": design_id})
    row = conn.execute(
        _CLAIM,
        {
            "p_id": design_id,
            "p_version": version,
            "p_max": max_attempts,
            "p_cap": per_owner,
            "p_stale": now - timedelta(seconds=lease_seconds),
            "p_token": token,
            "p_holder": holder,
            "p_now": now,
        },
    ).first()
    if row is None:
        return None
    name, product, color, layers, owner_id = row
    return Claim(token, {"name": name, "product": product, "color": color, "layers": layers}, owner_id)


def waits_for_share(session: Session, design_id: str, version: int, max_attempts: int) -> bool:
    """After a refused claim: True when the design is still a draft of `version` with attempts left,
    which means its owner is over its share (it is marked enqueued now, so the sweeper leaves it be)."""
    result = session.execute(
        update(DESIGNS)
        .where(
            _design.id == design_id,
            _design.version == version,
            _design.status == "draft",
            _design.attempts < max_attempts,
        )
        .values(enqueued_at=utcnow())
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def designs_created_since(session: Session, owner_id: str, since: datetime) -> list[datetime]:
    """Creation times of `owner_id`'s designs since `since`, oldest first (the create rate limit)."""
    return list(
        session.scalars(
            select(Design.created_at)
            .where(Design.owner_id == owner_id, Design.created_at >= since)
            .order_by(Design.created_at)
        )
    )


def renew_lease(session: Session, design_id: str, token: str) -> bool:
    """Extend the lease of a render still in progress (False: the claim was lost)."""
    d = DESIGNS.c
    result = session.execute(
        update(DESIGNS)
        .where(d.id == design_id, d.claim_token == token, d.status == "rendering")
        .values(claimed_at=utcnow())
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def fail_exhausted(session: Session, design_id: str, version: int, max_attempts: int) -> bool:
    """Fail a draft whose attempts are used up, keeping its last error as the reason."""
    design = session.get(Design, design_id, populate_existing=True)
    if design is None or design.version != version or design.status != "draft" or design.attempts < max_attempts:
        return False
    reason = design.error or "the worker stopped in the middle of the render"
    return mark_failed(
        session, design_id, version, None, f"gave up after {design.attempts} attempts; last error: {reason}"
    )


def release_claim(session: Session, design_id: str, token: str, error: str | None = None, refund: bool = False) -> bool:
    """Give a claim back (transient error): the design returns to draft for a retry, keeping the error.
    `refund`: the attempt does not count (the render was fine, the object store was away)."""
    result = session.execute(
        update(Design)
        .where(Design.id == design_id, Design.claim_token == token, Design.status == "rendering")
        .values(
            status="draft",
            claim_token=None,
            claimed_by=None,
            claimed_at=None,
            updated_at=utcnow(),
            error=error,
            attempts=Design.attempts - (1 if refund else 0),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def mark_published(
    session: Session,
    design_id: str,
    version: int,
    token: str,
    preview_key: str,
    thumbnail_key: str,
    render_ms: float,
) -> str | None:
    """Publish if this worker still holds the lease on this version; queue the mail in the same transaction.

    Returns the outbox row's id, or None when the claim was lost (the files are then the caller's to remove).
    """
    now = utcnow()
    conn = session.connection()
    owner_id = conn.execute(
        _PUBLISH,
        {
            "p_id": design_id,
            "p_version": version,
            "p_token": token,
            "p_preview": preview_key,
            "p_thumbnail": thumbnail_key,
            "p_render_ms": render_ms,
            "p_now": now,
        },
    ).scalar()
    if owner_id is None:
        return None
    owner_email, listening = conn.execute(_OWNER_EMAIL, {"p_owner": owner_id}).first() or (None, False)
    mail_id = new_id()
    conn.execute(
        _QUEUE_MAIL,
        {
            "p_mail": mail_id,
            "p_id": design_id,
            "p_version": version,
            "p_recipient": owner_email or DEV_USER_EMAIL,
            "p_now": now,
        },
    )
    if not listening:
        return mail_id
    url = f"/api/v1/designs/{design_id}"  # made absolute at delivery
    webhooks.queue_event(
        session,
        owner_id,
        "design.published",
        {
            "id": design_id,
            "status": "published",
            "version": version,
            "render_ms": render_ms,
            "preview_url": f"{url}/preview.png",
            "thumbnail_url": f"{url}/thumbnail",
        },
    )
    return mail_id


def mark_failed(session: Session, design_id: str, version: int, token: str | None, error: str) -> bool:
    """Fail the design with a message a person can act on (conditional on the lease when given)."""
    conditions = [Design.id == design_id, Design.version == version, Design.status.in_(("draft", "rendering"))]
    if token is not None:
        conditions.append(Design.claim_token == token)
    result = session.execute(
        update(Design)
        .where(*conditions)
        .values(status="failed", error=error, claim_token=None, claimed_by=None, claimed_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    webhooks.queue_event(
        session,
        design_owner(session, design_id),
        "design.failed",
        {"id": design_id, "status": "failed", "version": version, "error": error},
    )
    return True


def mark_enqueued(session: Session, design_ids: list[str]) -> None:
    session.execute(
        update(Design)
        .where(Design.id.in_(design_ids))
        .values(enqueued_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def designs_to_redrive(
    session: Session, lease_seconds: float, redrive_after: float, limit: int = 500, reclaim_all: bool = False
) -> list[tuple[str, int, int, str | None, str | None]]:
    """(id, version, attempts, last error, claim token) of drafts waiting too long and renders whose
    lease expired (a draft has no claim token).

    `reclaim_all` treats every `rendering` claim as orphaned: right after a
    single process restarts, no other process can hold one.
    """
    now = utcnow()
    waiting = and_(
        Design.status == "draft",
        or_(Design.enqueued_at.is_(None), Design.enqueued_at <= now - timedelta(seconds=redrive_after)),
    )
    expired = (
        and_(Design.status == "rendering", Design.claimed_at < now - timedelta(seconds=lease_seconds))
        if not reclaim_all
        else Design.status == "rendering"
    )
    # The IN term lets both databases read only the draft and rendering rows from the (status, claimed_at)
    # index: without it SQLite scanned every design at start-up (reclaim_all), 1 s at 1M (bench/scale.py).
    rows = session.execute(
        select(Design.id, Design.version, Design.attempts, Design.error, Design.claim_token)
        .where(Design.status.in_(("draft", "rendering")), or_(waiting, expired))
        .order_by(Design.created_at)
        .limit(limit)
    )
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def reset_orphan(session: Session, design_id: str, token: str) -> bool:
    """Put an orphaned render back to draft, so that the next claim succeeds at once.

    Conditional on the orphan's own claim token: if any worker claimed the design
    since the sweeper selected it, this does nothing.
    """
    d = DESIGNS.c
    result = session.execute(
        update(DESIGNS)
        .where(d.id == design_id, d.claim_token == token, d.status == "rendering")
        .values(status="draft", claim_token=None, claimed_by=None, claimed_at=None, enqueued_at=utcnow())
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def user_emails(session: Session, user_ids: list[str]) -> dict[str, str]:
    """Id → email, for an operator's view of every user's designs."""
    rows = session.execute(select(User.id, User.email).where(User.id.in_(set(user_ids))))
    return {user_id: email for user_id, email in rows}


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Design.status, func.count()).group_by(Design.status))
    return {status: count for status, count in rows}


# Assets ---------------------------------------------------------------------


def create_asset(
    session: Session, owner_id: str, sha256: str, fmt: str, width: int, height: int, size: int, filename: str | None
) -> Asset:
    """Store an upload's metadata once per owner and content hash."""
    existing = session.scalar(select(Asset).where(Asset.owner_id == owner_id, Asset.sha256 == sha256))
    if existing is not None:
        return existing
    asset = Asset(
        owner_id=owner_id, sha256=sha256, format=fmt, width=width, height=height, bytes=size, filename=filename
    )
    session.add(asset)
    session.flush()
    return asset


def get_asset(session: Session, owner_id: str | None, asset_id: str) -> Asset | None:
    if not is_id(asset_id):
        return None
    asset = session.get(Asset, asset_id)
    if asset is None or (owner_id is not None and asset.owner_id != owner_id):
        return None
    return asset


def asset_sizes(conn: Connection | Session, owner_id: str, asset_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(width, height) of the owner's assets among `asset_ids`: the render cost needs them, and an id
    missing here is not an upload of theirs."""
    if not asset_ids:
        return {}
    rows = conn.execute(
        select(Asset.id, Asset.width, Asset.height).where(Asset.owner_id == owner_id, Asset.id.in_(asset_ids))
    )
    return {row[0]: (row[1], row[2]) for row in rows}


# Task history ---------------------------------------------------------------


def record_task_runs(session: Session, starts: list[dict[str, Any]], ends: list[dict[str, Any]]) -> None:
    """Write a batch of task history: new runs, then the ends of runs (matched by task id and attempt)."""
    runs: Table = TaskRun.__table__  # type: ignore[assignment]
    if starts:
        session.execute(insert(runs), starts)
    for end in ends:
        session.execute(
            update(runs)
            .where(runs.c.task_id == end["task_id"], runs.c.attempt == end["attempt"])
            .values(state=end["state"], error=end["error"], finished_at=end["finished_at"])
        )


def recent_tasks(
    session: Session, limit: int, design_id: str | None = None, owner_id: str | None = None
) -> list[TaskRun]:
    """The newest task runs; with `owner_id`, only those of that user's designs."""
    query = select(TaskRun)
    if design_id:
        query = query.where(TaskRun.design_id == design_id)
    if owner_id is not None:
        query = query.join(Design, Design.id == TaskRun.design_id).where(Design.owner_id == owner_id)
    return list(session.scalars(query.order_by(TaskRun.id.desc()).limit(limit)))


PRUNE_BATCH = 5000  # rows per table per transaction: a SQLite writer never holds the lock for long


def prune_batch(session: Session, retention: Retention, limit: int = PRUNE_BATCH) -> dict[str, int]:
    """Delete up to `limit` rows per table past the retention (task history by age and by count,
    sent or cancelled mail by age). Call again while any count equals `limit`."""
    now = utcnow()
    doomed: list[Any] = []
    if retention.task_history_days:
        doomed += session.scalars(
            select(TaskRun.id)
            .where(TaskRun.started_at < now - timedelta(days=retention.task_history_days))
            .limit(limit)
        )
    if retention.task_history_rows and len(doomed) < limit:
        newest = session.scalar(
            select(TaskRun.id).order_by(TaskRun.id.desc()).offset(retention.task_history_rows).limit(1)
        )
        if newest is not None:
            doomed += session.scalars(
                select(TaskRun.id).where(TaskRun.id <= newest).order_by(TaskRun.id).limit(limit - len(doomed))
            )
    deleted = {"task_runs": 0, "mail_outbox": 0}
    if doomed:
        result = session.execute(
            delete(TaskRun).where(TaskRun.id.in_(set(doomed))).execution_options(synchronize_session=False)
        )
        deleted["task_runs"] = result.rowcount  # type: ignore[attr-defined]
    if retention.sent_mail_days:
        # claimed_at is when the send was last tried: for a sent or cancelled mail, its end.
        mails = list(
            session.scalars(
                select(Mail.id)
                .where(
                    Mail.status.in_(("sent", "cancelled")),
                    Mail.claimed_at < now - timedelta(days=retention.sent_mail_days),
                )
                .limit(limit)
            )
        )
        if mails:
            result = session.execute(
                delete(Mail).where(Mail.id.in_(mails)).execution_options(synchronize_session=False)
            )
            deleted["mail_outbox"] = result.rowcount  # type: ignore[attr-defined]
    return deleted


# Mail outbox ----------------------------------------------------------------


class MailJob(NamedTuple):
    """A claimed send: whom to, and the design it announces (name None: the design was deleted)."""

    recipient: str
    design_id: str
    design_name: str | None
    thumbnail_key: str | None


_m = MAILS.c
_CLAIM_MAIL = (
    update(MAILS)
    .where(
        _m.id == bindparam("p_id"),
        or_(_m.status == "pending", and_(_m.status == "sending", _m.claimed_at < bindparam("p_stale"))),
    )
    .values(status="sending", claimed_at=bindparam("p_now", type_=_m.claimed_at.type), attempts=_m.attempts + 1)
    .returning(_m.recipient, _m.design_id)
)
_MAIL_DESIGN = select(_design.name, _design.thumbnail_key).where(_design.id == bindparam("p_id"))


def claim_mail(session: Session, mail_id: str, stale_seconds: float) -> MailJob | None:
    """Claim a pending send (or a stale one whose sender died)."""
    now = utcnow()
    conn = session.connection()
    row = conn.execute(
        _CLAIM_MAIL, {"p_id": mail_id, "p_stale": now - timedelta(seconds=stale_seconds), "p_now": now}
    ).first()
    if row is None:
        return None
    recipient, design_id = row
    design = conn.execute(_MAIL_DESIGN, {"p_id": design_id}).first()
    return MailJob(recipient, design_id, design[0] if design else None, design[1] if design else None)


_MARK_MAIL = (
    update(MAILS)
    .where(_m.id == bindparam("p_id"))
    .values(
        status=bindparam("p_status"), error=bindparam("p_error"), sent_at=bindparam("p_sent", type_=_m.sent_at.type)
    )
)


def mark_mail(session: Session, mail_id: str, status: str, error: str | None = None) -> None:
    session.connection().execute(
        _MARK_MAIL,
        {"p_id": mail_id, "p_status": status, "p_error": error, "p_sent": utcnow() if status == "sent" else None},
    )


def reset_stale_sends(session: Session, stale_seconds: float) -> int:
    """Put sends whose sender died back to pending (before anyone bumps claimed_at again)."""
    result = session.execute(
        update(Mail)
        .where(Mail.status == "sending", Mail.claimed_at <= utcnow() - timedelta(seconds=stale_seconds))
        .values(status="pending")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount  # type: ignore[attr-defined,no-any-return]


def mails_to_redrive(session: Session, stale_seconds: float, limit: int = 200) -> list[str]:
    # claimed_at is the time of the last attempt: a pending mail whose send failed waits
    # `stale_seconds` before the sweeper offers it again (huey's own retries come sooner).
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    rows = session.scalars(
        select(Mail.id)
        .where(
            Mail.status == "pending",
            or_(
                and_(Mail.claimed_at.is_(None), Mail.created_at <= cutoff),
                Mail.claimed_at <= cutoff,
            ),
        )
        .limit(limit)
    )
    return list(rows)
