"""Operator actions (/api/v1/control): pause/resume, live resize, revoke, purge, stacks, stats."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LiveApp, eventually, hold_renders


def test_pause_holds_work_and_resume_runs_it(live: LiveApp) -> None:
    assert live.client.post("/api/v1/control/pause").json() == {"paused": True}
    design = live.design()
    eventually(lambda: (live.client.get("/api/v1/control/stats").json()["oldest_pending_age_s"] or 0) > 0.5)
    assert live.client.get(f"/api/v1/designs/{design['id']}").json()["status"] == "draft"
    health = live.client.get("/api/v1/system/health")
    # A pause is the operator's decision, not a failure: a load balancer must keep the API in service.
    assert health.status_code == 200 and "consuming is paused" in health.json()["checks"]["consumer"]["detail"]
    assert health.json()["checks"]["consumer"]["paused"] is True
    stats = live.client.get("/api/v1/control/stats").json()
    assert stats["paused"] is True and stats["pending"] == 1 and stats["oldest_pending_age_s"] > 0.5
    assert live.client.post("/api/v1/control/resume").json() == {"paused": False}
    assert live.wait(design["id"])["status"] == "published"
    assert live.client.get("/api/v1/system/health").status_code == 200


def test_resize_worker_threads_live(live: LiveApp) -> None:
    response = live.client.put("/api/v1/control/workers", json={"threads": 4})
    assert response.json() == {"threads": 4, "previous": 2}
    names = eventually(
        lambda: (
            {t["name"] for t in live.client.get("/api/v1/control/stats").json()["threads"]}
            if len(live.client.get("/api/v1/control/stats").json()["threads"]) == 4
            else None
        )
    )
    assert names == {"Worker-1", "Worker-2", "Worker-3", "Worker-4"}
    assert live.client.put("/api/v1/control/workers", json={"threads": 1}).json()["previous"] == 4
    stats = live.client.get("/api/v1/control/stats").json()
    assert [t["name"] for t in stats["threads"]] == ["Worker-1"] and stats["concurrency"] == 1
    assert live.wait(live.design()["id"])["status"] == "published"
    bad = live.client.put("/api/v1/control/workers", json={"threads": 0})
    assert bad.status_code == 400 or bad.status_code == 422


def test_revoke_a_pending_render_and_purge(live: LiveApp) -> None:
    live.client.post("/api/v1/control/pause")
    designs = [live.design(name=f"d{i}") for i in range(3)]
    pending = live.client.get("/api/v1/control/pending").json()
    assert [p["design_id"] for p in pending] == [d["id"] for d in designs]
    revoked = live.client.post(f"/api/v1/control/pending/{pending[0]['task_id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["design_id"] == designs[0]["id"]
    assert live.client.post("/api/v1/control/pending/nope/revoke").status_code == 404
    listed = {t["task_id"]: t["revoked"] for t in live.client.get("/api/v1/control/pending").json()}
    assert listed[pending[0]["task_id"]] is True and list(listed.values()).count(True) == 1
    assert live.client.post("/api/v1/control/purge").json() == {"purged": 3}  # the revoked one still sits there
    assert live.client.get("/api/v1/control/pending").json() == []
    assert live.client.get("/api/v1/control/stats").json()["oldest_pending_age_s"] is None
    live.client.post("/api/v1/control/resume")
    assert live.wait(live.design(name="after")["id"])["status"] == "published"  # the workers consume again
    # The queue lost the hints; the rows are still the truth (the sweeper re-drives them later).
    assert {live.client.get(f"/api/v1/designs/{d['id']}").json()["status"] for d in designs} == {"draft"}


def test_stack_of_a_busy_worker(live: LiveApp, monkeypatch: pytest.MonkeyPatch) -> None:
    release, entered = hold_renders(monkeypatch, 20)
    design = live.design()
    assert entered.wait(5)
    busy = next(t for t in live.client.get("/api/v1/control/stats").json()["threads"] if t["state"] == "busy")
    stack = live.client.get(f"/api/v1/control/workers/{busy['name']}/stack").json()
    release.set()
    assert stack["design_id"] == design["id"] and stack["task"] == "render_design_preview"
    assert any("release.wait" in line for line in stack["stack"])
    assert live.client.get("/api/v1/control/workers/Worker-99/stack").status_code == 404


def test_actions_need_a_consumer(make_live: Any) -> None:
    app = make_live(consumer=False)
    response = app.client.post("/api/v1/control/pause")
    assert response.status_code == 409 and "runs no consumer" in response.json()["detail"]
    stack = app.client.get("/api/v1/control/workers/Worker-1/stack")  # its threads are in other processes
    assert stack.status_code == 409 and "runs no consumer" in stack.json()["detail"]


def test_actions_are_in_the_openapi(live: LiveApp) -> None:
    paths = live.client.get("/schema/openapi.json").json()["paths"]
    for path in (
        "/api/v1/control/pause",
        "/api/v1/control/resume",
        "/api/v1/control/workers",
        "/api/v1/control/pending",
        "/api/v1/control/pending/{task_id}/revoke",
        "/api/v1/control/purge",
        "/api/v1/control/workers/{name}/stack",
        "/api/v1/control/stats",
        "/api/v1/events",
    ):
        assert path in paths, path
        for operation in paths[path].values():
            assert operation.get("summary"), path


def test_control_is_for_the_operator_not_a_customer_key(live: LiveApp) -> None:
    from customify import records

    with live.rt.transaction() as session:
        _, key = records.create_user(session, "customer@example.com")
    headers = {"Authorization": f"Bearer {key}"}
    for method, path in (
        ("POST", "/api/v1/control/pause"),
        ("POST", "/api/v1/control/purge"),
        ("GET", "/api/v1/control/workers/Worker-1/stack"),
    ):
        response = live.client.request(method, path, headers=headers)
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    assert live.rt.consumer is not None and not live.rt.consumer.paused


def test_an_operator_key_may_do_what_the_loopback_operator_does_and_a_customer_may_not(live: LiveApp) -> None:
    from customify import records

    with live.rt.transaction() as session:
        _, customer = records.create_user(session, "shop@example.com")
        _, operator = records.create_user(session, "ops@example.com", operator=True)
    as_customer = {"Authorization": f"Bearer {customer}"}
    as_operator = {"Authorization": f"Bearer {operator}"}
    for method, path in (
        ("GET", "/api/v1/system/worker-status"),
        ("POST", "/api/v1/system/debug-task"),
        ("GET", "/api/v1/control/stats"),
    ):
        denied = live.client.request(method, path, headers=as_customer)
        assert denied.status_code == 403, (path, denied.text)
        assert "--operator" in denied.json()["detail"]
        assert live.client.request(method, path, headers=as_operator).status_code == 200, path
    assert live.client.post("/api/v1/control/pause", headers=as_operator).json() == {"paused": True}
    assert live.rt.consumer is not None and live.rt.consumer.paused
    assert live.client.post("/api/v1/control/resume", headers=as_operator).json() == {"paused": False}
    assert live.client.get("/api/v1/system/health", headers=as_customer).status_code == 200  # public


def test_a_customer_sees_only_the_task_history_of_their_own_designs(live: LiveApp) -> None:
    from customify import records

    with live.rt.transaction() as session:
        _, alice = records.create_user(session, "alice@example.com")
    as_alice = {"Authorization": f"Bearer {alice}"}
    theirs = live.design(name="the dev user's")
    mine = live.client.post(
        "/api/v1/designs",
        json={"name": "alice's", "product": "mug", "color": "#ffffff", "layers": []},
        headers=as_alice,
    ).json()
    live.wait(theirs["id"])
    assert (
        live.client.get(f"/api/v1/designs/{mine['id']}", params={"wait": 10}, headers=as_alice).json()["status"]
        == "published"
    )
    everything = {t["design_id"] for t in live.client.get("/api/v1/system/tasks").json()}
    assert {theirs["id"], mine["id"]} <= everything
    seen = {t["design_id"] for t in live.client.get("/api/v1/system/tasks", headers=as_alice).json()}
    assert seen == {mine["id"]}
    asked = live.client.get("/api/v1/system/tasks", params={"design_id": theirs["id"]}, headers=as_alice)
    assert asked.status_code == 200 and asked.json() == []
