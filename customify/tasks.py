"""Huey tasks: ids in, the design row is the truth, the queued task only a hint.

`register_tasks(huey, rt)` binds the task functions to one Huey instance and
one Runtime (tests run several apps in one process). Task names are stable,
explicit strings: the API can only enqueue what is registered here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import random
import smtplib
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from huey import crontab
from huey.api import Task, TaskWrapper
from sqlalchemy.exc import DBAPIError, OperationalError

from customify import mail as mailer
from customify import records, webhooks
from customify.errors import described
from customify.models import utcnow
from customify.queue import DEBUG, DELIVER_WEBHOOK, PRUNE, RENDER, SEND_EMAIL, TASK_NAMES
from customify.render import RenderError
from customify.render.pool import STAGE_LOG, RenderCrashed, RenderJob, RenderTimeout
from customify.storage import StoreUnavailable, asset_key, render_keys

if TYPE_CHECKING:
    from huey import Huey

    from customify.history import HistoryWriter
    from customify.observer import Observer
    from customify.render.pool import RenderPool
    from customify.storage import Files

log = logging.getLogger("customify.tasks")

DEBUG_EXPIRES = 30  # seconds: an unanswered round trip (no consumer) is dropped, not run later
RENDER_PRIORITY = 10  # renders before mail, as the old high_priority queue intended
MAIL_PRIORITY = 0
WEBHOOK_PRIORITY = 5  # after renders, before mail
DEBUG_PRIORITY = 20  # the doctor's round trip goes first
REDRIVE_PRIORITY = 15  # a redriven render goes before new renders, after the debug task
FAIR_SHARE_DELAY = 1.0  # seconds before a render over its owner's share is offered again


class LeaseLost(Exception):
    pass


def _driver_transients() -> tuple[type[BaseException], ...]:
    """Connection errors of the Postgres and Redis drivers, when loaded (an error of theirs means they are)."""
    found: list[type[BaseException]] = []
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        found += [psycopg.OperationalError, psycopg.InterfaceError]
    redis = sys.modules.get("redis.exceptions")
    if redis is not None:
        found += [redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError]
    return tuple(found)


def is_transient(exc: BaseException) -> bool:
    """Errors worth a retry with backoff: database or queue server unreachable, mail server down, disk full,
    a render helper that died."""
    if isinstance(exc, OperationalError | smtplib.SMTPException | ConnectionError | TimeoutError | RenderCrashed):
        return True
    if isinstance(exc, _driver_transients()):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EIO, errno.EAGAIN)


SAID = "_customify_logged"  # set on an exception a task has logged before raising it for Huey's retry


def said(exc: BaseException) -> None:
    """Mark `exc` as logged already, so Huey's "Unhandled exception in task" line is not a second one."""
    with contextlib.suppress(AttributeError):  # an exception without a __dict__ is logged twice, no harm
        setattr(exc, SAID, True)


class QuietExpectedFailures(logging.Filter):
    """Huey logs every exception a task raises with its traceback. For the failures we expect and retry
    (is_transient) one line says it all; a traceback is kept for the unexpected ones (bugs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and getattr(exc, SAID, False):
            return False  # the task logged this failure itself, in its own words: one line, not two
        if exc is not None and is_transient(exc):
            what = record.getMessage().removeprefix("Unhandled exception in ").rstrip(".")
            record.msg, record.args = f"{what} failed: {described(exc)}; retried while attempts remain", None
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


@dataclass(frozen=True)
class Tasks:
    render: TaskWrapper
    send_email: TaskWrapper
    debug: TaskWrapper
    deliver_webhook: TaskWrapper
    names: tuple[str, ...] = TASK_NAMES


T = TypeVar("T")


class TaskRuntime(webhooks.WebhookRuntime, Protocol):
    """What the tasks use of the process that runs them (customify.runtime.Runtime is one)."""

    files: Files
    history: HistoryWriter
    huey: Huey
    observer: Observer
    renderers: RenderPool

    @property
    def tasks(self) -> Tasks: ...

    def read(self, fn: Callable[..., T], *args: Any) -> T: ...


def register_tasks(huey: Huey, rt: TaskRuntime) -> Tasks:
    huey_log = logging.getLogger("huey")
    if not any(isinstance(f, QuietExpectedFailures) for f in huey_log.filters):
        huey_log.addFilter(QuietExpectedFailures())

    @huey.task(name=RENDER, retries=3, retry_delay=1, retry_backoff=2, priority=RENDER_PRIORITY)
    def render_design_preview(design_id: str, version: int) -> None:
        run_render(rt, design_id, version)

    @huey.task(name=SEND_EMAIL, retries=6, retry_delay=2, retry_backoff=2, priority=MAIL_PRIORITY)
    def send_email(mail_id: str) -> None:
        run_send_email(rt, mail_id)

    @huey.task(name=DEBUG, priority=DEBUG_PRIORITY, expires=DEBUG_EXPIRES)
    def debug_task() -> dict[str, Any]:
        return {"pong": True, "worker": threading.current_thread().name, "at": time.time()}

    @huey.periodic_task(crontab(minute="*/5"), name=PRUNE)
    def prune_history() -> None:
        prune(rt)

    # Its own retries, on webhooks.retry_schedule with jitter (webhooks.run_delivery schedules them).
    @huey.task(name=DELIVER_WEBHOOK, priority=WEBHOOK_PRIORITY)
    def deliver_webhook(delivery_id: str) -> None:
        webhooks.run_delivery(rt, delivery_id)

    webhooks.install(rt)
    huey.pre_execute(name="history")(lambda task: _history_start(rt, task))
    huey.post_execute(name="history")(lambda task, value, exc: _history_end(rt, task, exc))
    return Tasks(render=render_design_preview, send_email=send_email, debug=debug_task, deliver_webhook=deliver_webhook)


# Task history (pre/post execute hooks, written in batches by rt.history) -----


def _attempt(task: Task) -> int:
    return int(task.default_retries - task.retries) + 1


def _history_start(rt: TaskRuntime, task: Task) -> None:
    name = type(task).__name__
    if name == PRUNE:
        return
    rt.history.started(
        task.id,
        name,
        task.args[0] if name == RENDER and task.args else None,
        _attempt(task),
        f"{rt.observer.identity}/{threading.current_thread().name}",
        rt.observer.enqueued_at(task.id),
        utcnow(),
    )


def _history_end(rt: TaskRuntime, task: Task, exc: BaseException | None) -> None:
    if exc is not None and task.retries and task.retry_delay:
        # Huey backs off exponentially (retry_backoff) but without jitter; spread the
        # retries of many tasks that failed together (database restart, SMTP down).
        # post_execute runs before huey schedules the retry, so this delay is the one used.
        task.retry_delay = task.retry_delay * random.uniform(0.75, 1.25)
    if type(task).__name__ == PRUNE:
        return
    # What happened to the design (run_render says), not only what Huey saw.
    outcome, reason = rt.observer.outcome_of()
    if exc is not None:
        outcome, reason = ("retrying" if task.retries else "failed"), described(exc)
    rt.history.finished(task.id, _attempt(task), outcome or "succeeded", reason, utcnow())


def prune(rt: TaskRuntime) -> dict[str, int]:
    """Delete task history and sent mail past `retention.*`, in short transactions; returns the counts."""
    deleted = {"task_runs": 0, "mail_outbox": 0}
    while True:
        with rt.transaction() as session:
            batch = records.prune_batch(session, rt.config.retention)
        for key, count in batch.items():
            deleted[key] += count
        if max(batch.values()) < records.PRUNE_BATCH:
            return deleted


# Render ---------------------------------------------------------------------

_stage_lock = threading.Lock()


def _mark(marks: dict[str, float] | None, stage: str) -> None:
    if marks is not None:
        marks[stage] = time.time()


WARM_SAMPLE = 500  # recent renders whose products the render helpers warm at start


def products_in_use(rt: TaskRuntime) -> tuple[str, ...]:
    """What the render helpers warm at start: the products of the last WARM_SAMPLE renders, most rendered
    first; with none rendered yet, the product the designer page and the API's example start with (the
    first of the catalogue). Each product's lighting is 7-17 MB and 65-180 ms of CPU per helper: a shop
    that sells t-shirts should not hold mugs and posters, nor should every test or demo instance build
    all six. Two indexed reads (task history by start, designs by id)."""
    from sqlalchemy import func, select

    from customify.models import Design, TaskRun
    from customify.render.products import PRODUCTS

    recent = (
        select(TaskRun.design_id)
        .where(TaskRun.task_name == RENDER)
        .order_by(TaskRun.started_at.desc())
        .limit(WARM_SAMPLE)
        .subquery()
    )
    query = (
        select(Design.product, func.count())
        .join(recent, recent.c.design_id == Design.id)
        .group_by(Design.product)
        .order_by(func.count().desc(), Design.product)
    )
    rows = rt.read(lambda session: session.execute(query).all())
    return tuple(product for product, _ in rows) or (next(iter(PRODUCTS)),)


def _log_stages(rt: TaskRuntime, design_id: str, marks: dict[str, float]) -> None:
    """One JSON line per published render in the file CUSTOMIFY_STAGE_LOG names (bench/stages.py):
    when it was enqueued, started, claimed, drawn in its helper, published, announced, done."""
    task_id, started = rt.observer.current_task()
    enqueued = rt.observer.enqueued_time(task_id) if task_id else None
    began, ended = rt.renderers.helper_times()
    line = {"design_id": design_id, "thread": threading.current_thread().name, "tid": threading.get_native_id()}
    line["enqueued"] = enqueued
    line.update(executing=started, **marks)
    line.update(helper_began=began or None, helper_ended=ended or None)
    with _stage_lock, open(STAGE_LOG, "a") as log_file:
        log_file.write(json.dumps(line) + "\n")


def run_render(rt: TaskRuntime, design_id: str, version: int) -> None:
    """Claim, draw, publish; says its outcome (published, failed, discarded, skipped) to the observer."""
    settings = rt.config.render
    marks: dict[str, float] | None = {} if STAGE_LOG else None  # bench/stages.py's timings, else None
    _mark(marks, "run")
    holder = f"{rt.observer.identity}/{threading.current_thread().name}"
    waiting = False
    exhausted = False
    with rt.transaction() as session:
        claim = records.claim_render(
            session,
            design_id,
            version,
            holder,
            settings.lease_seconds,
            settings.max_attempts,
            rt.config.renders_per_user,
        )
        if claim is None and records.fail_exhausted(session, design_id, version, settings.max_attempts):
            exhausted = True
        elif claim is None:
            waiting = records.waits_for_share(session, design_id, version, settings.max_attempts)
    if exhausted:  # after the commit: whoever the event wakes reads the failed row
        rt.hub.publish("design.status", design_id=design_id, status="failed", version=version)
    if waiting:
        # Its owner has their share of the workers while someone else's design waits: after them.
        rt.tasks.render.schedule((design_id, version), delay=FAIR_SHARE_DELAY)
        rt.observer.set_outcome(
            "skipped", f"its owner has their share of the workers: offered again in {FAIR_SHARE_DELAY:g} s"
        )
        return
    if claim is None:
        if exhausted:
            rt.observer.set_outcome("failed", f"gave up after {settings.max_attempts} attempts")
        else:
            rt.observer.set_outcome(*rt.read(_no_claim, design_id, version))
        return
    token, spec = claim.token, claim.spec
    _mark(marks, "claimed")
    rt.hub.publish("design.status", design_id=design_id, status="rendering", version=version)
    rt.crash_point("after-claim")
    started = renewed = time.perf_counter()
    deadline = time.monotonic() + settings.timeout_seconds

    def renew() -> None:
        """Keep the claim while the render runs (called between stages, or while waiting on a helper)."""
        nonlocal renewed
        now = time.perf_counter()
        if now - renewed > settings.lease_seconds / 3:
            with rt.transaction() as session:
                if not records.renew_lease(session, design_id, token):
                    raise LeaseLost(f"lost the claim on {design_id} v{version}")
            renewed = now

    ext = "webp" if settings.thumbnail_format == "webp" else "jpg"
    # Named by version and claim: these objects are ours alone until published.
    keys = render_keys(design_id, version, ext, token[:8])
    preview_path, thumb_path = (rt.files.staging_path(key) for key in keys)
    try:
        job = RenderJob(
            spec,
            _asset_paths(rt, spec, claim.owner_id),
            settings.png_compress_level,
            settings.thumbnail_size,
            settings.thumbnail_format,
            str(preview_path),
            str(thumb_path),
        )
        _mark(marks, "handoff")
        try:
            render_job(rt, job, deadline, renew)
        except RenderTimeout as exc:
            raise RenderTimeout(
                f"the render took longer than render.timeout_seconds "
                f"({settings.timeout_seconds:g} s), stopped {exc}; simplify the design"
            ) from None
        _mark(marks, "returned")
        rt.files.put_files(
            [(keys[0], preview_path), (keys[1], thumb_path)], between=lambda: rt.crash_point("mid-upload")
        )
    except LeaseLost:
        _discard(rt, keys)
        # Superseded or re-driven elsewhere; whoever holds the claim now publishes.
        rt.observer.set_outcome("discarded", f"v{version} lost its claim (a newer version or another worker)")
        return
    except (RenderError, RenderTimeout) as exc:
        _discard(rt, keys)  # a render stopped at its deadline may have written them
        with rt.transaction() as session:
            records.mark_failed(session, design_id, version, token, str(exc))
        rt.hub.publish("design.status", design_id=design_id, status="failed", version=version, error=str(exc))
        log.warning("render of %s v%s failed: %s", design_id, version, exc, extra={"design_id": design_id})
        rt.observer.set_outcome("failed", str(exc)[:500])
        return
    except Exception as exc:
        _discard(rt, keys)
        # Give the claim back so a retry (ours, or the sweeper's) can take it at once.
        log.warning(
            "render of %s v%s failed (%s); it will be retried",
            design_id,
            version,
            described(exc),
            extra={"design_id": design_id},
        )
        try:
            with rt.transaction() as session:
                # A store that is away costs no attempt: the design waits for it like for a database.
                records.release_claim(
                    session, design_id, token, described(exc), refund=isinstance(exc, StoreUnavailable)
                )
        except Exception:
            log.warning(
                "could not release the claim on %s; the sweeper will after the lease",
                design_id,
                extra={"design_id": design_id},
            )
        said(exc)
        raise
    render_ms = round((time.perf_counter() - started) * 1000, 2)
    _mark(marks, "stored")
    rt.crash_point("before-publish")
    with rt.transaction() as session:
        mail_id = records.mark_published(session, design_id, version, token, keys[0], keys[1], render_ms)
    _mark(marks, "published")
    if mail_id is None:
        _discard(rt, keys)  # lost the lease or superseded: never referenced
        rt.observer.set_outcome("discarded", f"v{version} was superseded while it rendered")
        return
    try:  # the previous version's objects (before the event: whoever waits for it sees them gone)
        rt.files.remove_renders(design_id, keep=set(keys))
    except Exception as exc:  # one left behind is the orphan sweep's
        log.warning("could not remove the old renders of %s (%s); the sweeper will", design_id, described(exc))
    rt.metrics.rendered(spec["product"], render_ms / 1000)
    _mark(marks, "cleaned")
    rt.hub.publish("design.status", design_id=design_id, status="published", version=version, render_ms=render_ms)
    _mark(marks, "announced")
    rt.crash_point("after-publish")
    rt.observer.set_outcome("published", None)
    rt.tasks.send_email(mail_id)
    if marks is not None:
        _mark(marks, "mailed")
        _log_stages(rt, design_id, marks)


def _discard(rt: TaskRuntime, keys: tuple[str, str]) -> None:
    """Remove what a render that will not be published made: staged files and uploaded objects."""
    for key in keys:
        rt.files.staging_path(key).unlink(missing_ok=True)
    try:
        rt.files.delete(list(keys))
    except Exception as exc:  # the store is away: the orphan sweep removes them after its grace period
        log.warning("could not remove unpublished renders %s (%s)", ", ".join(keys), described(exc))


def _no_claim(session: Any, design_id: str, version: int) -> tuple[str, str]:
    """Why a render task found nothing to claim, as (outcome, reason)."""
    design = records.get_design(session, None, design_id)
    if design is None:
        return "discarded", "the design was deleted"
    if design.version > version:
        return "discarded", f"v{version} fenced out by v{design.version}"
    if design.status == "published":
        return "skipped", f"v{version} is already published"
    if design.status == "rendering":
        return "skipped", f"v{version} is being rendered by {design.claimed_by or 'another worker'}"
    if design.status == "failed":
        return "skipped", f"v{version} has failed already: {design.error or 'no reason recorded'}"[:500]
    return "skipped", "no claim"


def render_job(rt: TaskRuntime, job: RenderJob, deadline: float, renew: Callable[[], None]) -> tuple[int, int]:
    """The files of one render, made where render.pool says (tests replace this to hold a render)."""
    return rt.renderers.render(job, deadline, renew)


# (data dir, owner, asset id) -> local file: assets are never changed or deleted, so the lookup is cached.
_asset_files: dict[tuple[str, str, str], str] = {}


def _asset_paths(rt: TaskRuntime, spec: dict[str, Any], owner_id: str) -> dict[str, str]:
    """The files of the images the spec uses; an unknown one is left out (the renderer names its layer)."""
    wanted = {layer["asset_id"] for layer in spec["layers"] if layer.get("type") == "image"}
    root = str(rt.files.root)
    files = {a: _asset_files.get((root, owner_id, a)) for a in wanted}
    unknown = [a for a, path in files.items() if path is None]
    if unknown:
        rows = rt.read(lambda session: {a: records.get_asset(session, owner_id, a) for a in unknown})
        for asset_id, row in rows.items():
            if row is None:
                continue
            try:
                found = str(rt.files.local_copy(asset_key(row.sha256, row.format)))
            except FileNotFoundError:
                continue  # the renderer names the layer whose image is gone
            files[asset_id] = found
            if len(_asset_files) > 4096:
                _asset_files.clear()
            _asset_files[root, owner_id, asset_id] = found
    return {a: path for a, path in files.items() if path is not None}


# Mail -----------------------------------------------------------------------

MAIL_STALE_SECONDS = 60.0


def run_send_email(rt: TaskRuntime, mail_id: str) -> None:
    with rt.transaction() as session:
        job = records.claim_mail(session, mail_id, MAIL_STALE_SECONDS)
    if job is None:
        rt.observer.set_outcome("skipped", "sent already, or another worker is sending it")
        return
    if job.design_name is None:
        with rt.transaction() as session:
            records.mark_mail(session, mail_id, "cancelled", "the design was deleted")
        rt.observer.set_outcome("discarded", "the design was deleted")
        return
    thumbnail = None
    if job.thumbnail_key:
        try:
            thumbnail = rt.files.read(job.thumbnail_key)
        except FileNotFoundError:
            thumbnail = None  # superseded by a newer render; the mail still links it
        except StoreUnavailable as exc:  # retried with its attachment once the store is back
            with rt.transaction() as session:
                records.mark_mail(session, mail_id, "pending", described(exc))
            raise
    design_url = f"{rt.config.base_url}/api/v1/designs/{job.design_id}"
    msg = mailer.compose(
        mail_id,
        rt.config.mail_from,
        job.recipient,
        job.design_name,
        design_url,
        f"{design_url}/preview.png",
        thumbnail,
        rt.config.render.thumbnail_format,
    )
    try:
        mailer.deliver(msg, rt.config.smtp_url, rt.files, mail_id)
    except Exception as exc:
        rt.metrics.delivered("mail", False)
        with rt.transaction() as session:
            records.mark_mail(session, mail_id, "pending", described(exc))
        raise
    rt.metrics.delivered("mail", True)
    # A crash between the server's acceptance and this mark resends once with the same Message-ID.
    rt.crash_point("after-send")
    with rt.transaction() as session:
        records.mark_mail(session, mail_id, "sent")
    rt.observer.set_outcome("sent", None)


# Sweeper --------------------------------------------------------------------


def sweep_stale_designs(rt: TaskRuntime, reclaim_all: bool = False) -> int:
    """Re-drive drafts that wait with no task and renders whose lease expired; cap attempts.

    A draft whose render task is still pending or scheduled (a backlog, a pause, a retry
    waiting its turn) is left alone: the queue holds only real work. Safe in several
    processes at once: every step is a conditional update and a duplicate render task
    (two sweepers racing) is a no-op.
    """
    settings = rt.config.render
    # Right after a single process restarts nothing of the old one is still running:
    # every draft, render and send it left is re-driven at once.
    # A draft's task may simply wait behind a backlog: re-drive it only after a lease's
    # worth of time (a duplicate task is harmless, but a queue full of them is not).
    redrive_after = 0.0 if reclaim_all else max(settings.lease_seconds, settings.sweep_interval * 2)
    mail_stale = 0.0 if reclaim_all else MAIL_STALE_SECONDS
    with rt.transaction() as session:
        rows = records.designs_to_redrive(session, settings.lease_seconds, redrive_after, reclaim_all=reclaim_all)
    queued = queued_designs(rt) if rows else set()
    redriven: list[tuple[str, int]] = []
    for design_id, version, attempts, error, token in rows:
        if token is None and design_id in queued:
            continue  # its task waits in the queue: not lost, only behind others
        if attempts >= settings.max_attempts:
            reason = error or "the worker stopped in the middle of the render"
            with rt.transaction() as session:
                gave_up = records.mark_failed(
                    session, design_id, version, None, f"gave up after {attempts} attempts; last error: {reason}"
                )
            if gave_up:  # after the commit: whoever the event wakes reads the failed row
                rt.hub.publish("design.status", design_id=design_id, status="failed", version=version)
            continue
        with rt.transaction() as session:
            if token is not None and not records.reset_orphan(session, design_id, token):
                continue  # claimed again since we looked: someone is rendering it
            records.mark_enqueued(session, [design_id])
        redriven.append((design_id, version))
    for design_id, version in redriven:
        # Ahead of fresh renders: an orphan has waited once already (and, after a restart,
        # would otherwise queue behind the whole backlog).
        rt.tasks.render(design_id, version, priority=REDRIVE_PRIORITY)
        log.debug("sweeper re-drove %s v%s", design_id, version)
    if redriven:
        log.info("sweeper re-drove %d design(s) whose task was lost or whose render stopped", len(redriven))
    _sweep_mail(rt, mail_stale)
    if time.monotonic() - _orphans_swept.get(rt, -1e9) >= min(rt.config.storage.orphan_grace_seconds / 2, 300):
        _orphans_swept[rt] = time.monotonic()
        sweep_orphans(rt)
    webhooks.sweep(rt, reclaim_all)
    return len(redriven)


def queued_designs(rt: TaskRuntime) -> set[str]:
    """Designs with a render task pending or scheduled (a revoked one does not count: a worker skips it)."""
    out: set[str] = set()
    for task in [*rt.huey.pending(), *rt.huey.scheduled()]:
        if type(task).__name__ == RENDER and task.args and not rt.huey.is_revoked(task, peek=True):
            out.add(str(task.args[0]))
    return out


def _sweep_mail(rt: TaskRuntime, mail_stale: float) -> None:
    with rt.transaction() as session:
        records.reset_stale_sends(session, mail_stale)
        mails = records.mails_to_redrive(session, mail_stale)
    for mail_id in mails:
        rt.tasks.send_email(mail_id)


_orphans_swept: weakref.WeakKeyDictionary[TaskRuntime, float] = weakref.WeakKeyDictionary()


def sweep_orphans(rt: TaskRuntime) -> int:
    """Delete render objects that no design references once they are older than storage.orphan_grace_seconds:
    a worker killed between upload and publish, or a delete that could not reach the store.

    Safe beside live renders: a render uploads its objects moments before it publishes them (within
    its lease), far inside the grace period. Returns how many objects went.
    """
    settings = rt.config.storage
    cutoff = time.time() - settings.orphan_grace_seconds
    # A staged file waits for its upload, which may retry for a while when the store is slow or away
    # (two PUTs, three tries each): only much older ones are left-overs of a killed render.
    rt.files.clean_staging(min(cutoff, time.time() - 6 * settings.timeout_seconds - 60))
    old: dict[str, list[str]] = {}
    for key, info in rt.files.list("renders/"):
        parts = key.split("/")
        if info.modified < cutoff and len(parts) == 3:
            old.setdefault(parts[1], []).append(key)
    if not old:
        return 0
    referenced = rt.read(records.referenced_render_keys, list(old))
    doomed = [key for keys in old.values() for key in keys if key not in referenced]
    if doomed:
        rt.files.delete(doomed)
        log.info("removed %d render object(s) no design references", len(doomed))
    return len(doomed)
