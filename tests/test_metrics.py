"""GET /metrics scraped the way Prometheus does, read with prometheus_client's own parsers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from customify import records
from tests.conftest import LiveApp, eventually


def scrape(app: LiveApp, **headers: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} of one scrape."""
    response = app.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for key, v in samples.get(name, {}).items() if set(labels.items()) <= set(key))


def test_figures_move_when_designs_render(live: LiveApp) -> None:
    before = scrape(live)
    assert value(before, "customify_designs", status="published") == 0
    assert value(before, "customify_build_info") == 1
    # every stall rule has its gauge, quiet on a healthy app
    rules = {dict(k)["rule"]: v for k, v in before["customify_problem_active"].items()}
    assert rules == dict.fromkeys(
        (
            "no_live_worker",
            "not_consuming",
            "no_progress",
            "task_overrun",
            "consumer_stopped",
            "workers_paused",
            "stale_worker_process",
        ),
        0,
    )
    for _ in range(2):
        live.wait(live.design()["id"])
    live.wait(live.design(product="mug", color="#ffffff")["id"])
    after = eventually(
        lambda: (
            (s := scrape(live)) and value(s, "customify_deliveries_total", kind="mail", outcome="delivered") >= 3 and s
        )
    )
    assert value(after, "customify_designs", status="published") == 3
    render = {"task": "render_design_preview"}
    assert value(after, "customify_tasks_total", event="enqueued", **render) == 3
    assert value(after, "customify_tasks_total", event="succeeded", **render) == 3
    assert value(after, "customify_task_run_seconds_count", **render) == 3
    assert value(after, "customify_task_run_seconds_bucket", le="+Inf", **render) == 3
    assert value(after, "customify_task_wait_seconds_count", **render) == 3
    assert value(after, "customify_render_seconds_count", product="tshirt") == 2
    assert value(after, "customify_render_seconds_count", product="mug") == 1
    assert value(after, "customify_render_seconds_sum", product="mug") > 0
    assert value(after, "customify_render_helpers_total", event="started") >= 1  # pool = "process"
    threads = {dict(k)["state"]: v for k, v in after["customify_worker_threads"].items()}
    assert threads["busy"] + threads["idle"] == 2 and threads["stalled"] == 0
    assert value(after, "customify_http_requests_total", route="/api/v1/designs", method="POST", status="201") == 3
    assert value(after, "customify_http_request_duration_seconds_count", route="/api/v1/designs/{design_id}") >= 3
    # The queue drains (a periodic task may be in it for a moment on a busy machine).
    eventually(lambda: value(scrape(live), "customify_queue_tasks") == 0)


def test_openmetrics_when_asked(live: LiveApp) -> None:
    response = live.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    names = {f.name for f in parse_openmetrics(response.text)}
    assert {"customify_designs", "customify_build_info", "customify_problem_active"} <= names


def test_off_loopback_metrics_need_an_operator_key_or_the_token(make_live: Any) -> None:
    app = make_live(dev_mode="off", metrics_token="s3cret-scrape")
    assert app.client.get("/metrics").status_code == 401
    assert app.client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    with app.rt.transaction() as session:
        _, customer = records.create_user(session, "shop@example.com")
        _, operator = records.create_user(session, "ops@example.com", operator=True)
    denied = app.client.get("/metrics", headers={"Authorization": f"Bearer {customer}"})
    assert denied.status_code == 403 and "metrics_token" in denied.json()["detail"]
    assert app.client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"}).status_code == 200
    assert app.client.get("/metrics", headers={"Authorization": f"Bearer {operator}"}).status_code == 200


def test_an_api_process_exports_every_workers_figures(make_live: Any, tmp_path: Path) -> None:
    """Split deployment: a `customify worker` process renders; the API-only process exports its counters
    (from its heartbeat), labelled by that worker process."""
    api = make_live(consumer=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "customify", "worker", "--workers", "1", "--data-dir", str(tmp_path / "data")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        design = api.design()
        assert api.wait(design["id"], 20)["status"] == "published"
        label = f"{os.uname().nodename}:{worker.pid}"

        def rendered() -> Any:
            samples = scrape(api)
            count = value(samples, "customify_render_seconds_count", worker=label, product="tshirt")
            return samples if count == 1 else None

        samples = eventually(rendered, seconds=20)
        assert (
            value(samples, "customify_tasks_total", worker=label, task="render_design_preview", event="succeeded") == 1
        )
        assert (
            value(samples, "customify_worker_threads", worker=label, state="idle")
            + value(samples, "customify_worker_threads", worker=label, state="busy")
            == 1
        )
        assert value(samples, "customify_designs", status="published") == 1
        # the API enqueued the render: its own process label counts that
        assert (
            value(
                samples,
                "customify_tasks_total",
                worker=api.rt.observer.identity,
                task="render_design_preview",
                event="enqueued",
            )
            == 1
        )
    finally:
        worker.terminate()
        worker.wait(15)
