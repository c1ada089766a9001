"""Retention: task history, sent mail and dead workers' heartbeats do not grow without bound
(`retention.*`), and the list's deep cursor pages stay correct with their range condition."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from customify import heartbeats, records, tasks
from customify.config import ConfigError, load_config
from customify.models import Design, Mail, TaskRun, WorkerHeartbeat, utcnow
from customify.runtime import Runtime


def make_rt(tmp_path: Path, **retention: float) -> Runtime:
    config = load_config(None, {}, {"data_dir": str(tmp_path / "data"), "retention": retention})
    rt = Runtime(config)
    rt.prepare_database()
    return rt


def count(rt: Runtime, model: type) -> int:
    return int(rt.read(lambda s: s.scalar(select(func.count()).select_from(model))))


def test_prune_deletes_history_by_age_and_count_and_only_finished_old_mail(tmp_path: Path) -> None:
    rt = make_rt(tmp_path, task_history_days=7, task_history_rows=30, sent_mail_days=30)
    now = utcnow()
    try:
        with rt.transaction() as session:
            old = [
                {
                    "task_id": f"old{i}",
                    "task_name": "t",
                    "design_id": None,
                    "state": "succeeded",
                    "attempt": 1,
                    "worker": "w",
                    "enqueued_at": None,
                    "started_at": now - timedelta(days=8),
                }
                for i in range(20)
            ]
            new = [
                {
                    "task_id": f"new{i}",
                    "task_name": "t",
                    "design_id": None,
                    "state": "succeeded",
                    "attempt": 1,
                    "worker": "w",
                    "enqueued_at": None,
                    "started_at": now - timedelta(minutes=i),
                }
                for i in range(40)
            ]
            records.record_task_runs(session, old + new, [])
            for i, (status, age) in enumerate(
                [("sent", 40), ("cancelled", 40), ("sent", 2), ("pending", 40), ("sending", 40)]
            ):
                session.add(
                    Mail(
                        design_id=f"d{i}",
                        version=1,
                        recipient="a@b",
                        status=status,
                        claimed_at=now - timedelta(days=age),
                        created_at=now - timedelta(days=age),
                    )
                )
        deleted = tasks.prune(rt)
        # 20 past 7 days, then the 10 first written of the 40 recent ones past the 30-row cap.
        assert deleted == {"task_runs": 30, "mail_outbox": 2}
        kept = rt.read(lambda s: sorted(s.scalars(select(TaskRun.task_id))))
        assert kept == sorted(f"new{i}" for i in range(10, 40))
        statuses = rt.read(lambda s: sorted(s.scalars(select(Mail.status))))
        assert statuses == ["pending", "sending", "sent"]  # unsent mail is never pruned, however old
        assert tasks.prune(rt) == {"task_runs": 0, "mail_outbox": 0}
    finally:
        rt.close()


def test_prune_works_in_batches_and_zero_keeps_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "PRUNE_BATCH", 7)
    rt = make_rt(tmp_path, task_history_days=1, task_history_rows=0, sent_mail_days=0)
    now = utcnow()
    try:
        with rt.transaction() as session:
            records.record_task_runs(
                session,
                [
                    {
                        "task_id": f"t{i}",
                        "task_name": "t",
                        "design_id": None,
                        "state": "succeeded",
                        "attempt": 1,
                        "worker": "w",
                        "enqueued_at": None,
                        "started_at": now - timedelta(days=2),
                    }
                    for i in range(25)
                ],
                [],
            )
            session.add(
                Mail(
                    design_id="d",
                    version=1,
                    recipient="a@b",
                    status="sent",
                    claimed_at=now - timedelta(days=400),
                    created_at=now - timedelta(days=400),
                )
            )
        assert tasks.prune(rt) == {"task_runs": 25, "mail_outbox": 0}
        assert count(rt, TaskRun) == 0
        assert count(rt, Mail) == 1
    finally:
        rt.close()


def test_dead_workers_are_forgotten_after_the_configured_time(tmp_path: Path) -> None:
    rt = make_rt(tmp_path, worker_forget_seconds=60)
    now = utcnow()
    try:
        with rt.transaction() as session:
            for name, age in (("dead-long", 120), ("dead-recent", 30)):
                session.add(
                    WorkerHeartbeat(
                        id=name,
                        hostname="h",
                        pid=1,
                        started_at=now - timedelta(hours=1),
                        beat_at=now - timedelta(seconds=age),
                        report={},
                    )
                )
        publisher = heartbeats.HeartbeatPublisher(rt)
        publisher.beat()
        ids = rt.read(lambda s: sorted(s.scalars(select(WorkerHeartbeat.id))))
        assert ids == sorted(["dead-recent", rt.observer.identity])
    finally:
        rt.close()


@pytest.mark.parametrize("bad", [{"task_history_days": -1}, {"worker_forget_seconds": 5}])
def test_bad_retention_is_one_line_naming_the_key(tmp_path: Path, bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="retention"):
        load_config(None, {}, {"data_dir": str(tmp_path), "retention": bad})


def test_cursor_pages_walk_every_design_once_with_equal_timestamps(tmp_path: Path) -> None:
    rt = make_rt(tmp_path)
    same = utcnow() - timedelta(days=1)
    try:
        with rt.transaction() as session:
            owner = records.ensure_dev_user(session).id
            for i in range(23):  # a run of equal created_at, where the id breaks the tie
                session.add(
                    Design(
                        owner_id=owner,
                        name=f"d{i}",
                        product="tshirt",
                        color="#000000",
                        layers=[],
                        status="failed" if i % 3 else "published",
                        created_at=same if 5 <= i < 15 else same + timedelta(seconds=i),
                    )
                )
        for status in (None, "failed"):
            seen: list[str] = []
            cursor = None
            while True:
                page, cursor = rt.read(records.list_designs, owner, status, 4, cursor)
                seen += [d.id for d in page]
                if cursor is None:
                    break
            every = rt.read(
                lambda s, st=status: list(
                    s.scalars(
                        select(Design.id)
                        .where(Design.status == st if st else True)
                        .order_by(Design.created_at.desc(), Design.id.desc())
                    )
                )
            )
            assert seen == every
            assert len(every) == (23 if status is None else 15)
    finally:
        rt.close()
