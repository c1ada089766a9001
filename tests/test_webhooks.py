"""Signed webhooks against a real HTTP receiver on a loopback port, verified with `standardwebhooks`."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from customify import records, webhooks
from customify.models import DEV_USER_ID, WebhookDelivery
from tests.conftest import LiveApp, eventually, free_port
from tests.test_postgres import REDIS_URL, _reachable, pg_database, redis_queue_name
from tests.test_reliability import Process

FAST = {"retry_schedule": [0.2, 0.2, 0.2, 0.2]}


class Receiver:
    """Records every POST (headers, body) and answers from a script of status codes (then 200);
    `answer` may replace the body, `delay` hold the answer, `location` make a 3xx a redirect."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script: list[int] = []
        self.answer = b"ok"
        self.delay = 0.0
        self.location = ""
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.script.pop(0) if receiver.script else 200
                time.sleep(receiver.delay)
                self.send_response(status)
                if receiver.location:
                    self.send_header("location", receiver.location)
                self.send_header("content-length", str(len(receiver.answer)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client may have stopped reading
                    self.wfile.write(receiver.answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, secret: str) -> list[dict[str, Any]]:
        """Every request's payload, each verified with the library receivers use."""
        with self.lock:
            requests = list(self.requests)
        return [Webhook(secret).verify(body, headers) for headers, body in requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def endpoint(
    app: LiveApp, url: str, events: list[str], headers: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    response = app.client.post("/api/v1/webhooks", json={"url": url, "events": events, **extra}, headers=headers or {})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def deliveries(app: LiveApp, endpoint_id: str, **headers: str) -> list[dict[str, Any]]:
    response = app.client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_published_event_is_signed_and_verifies(make_live: Any, receiver: Receiver) -> None:
    app = make_live(webhooks=FAST)
    hook = endpoint(app, receiver.url, ["design.created", "design.published"], description="shop")
    assert hook["secret"].startswith("whsec_") and hook["enabled"]
    assert app.client.get(f"/api/v1/webhooks/{hook['id']}").json()["secret"] is None  # shown once
    design = app.design()
    assert app.wait(design["id"])["status"] == "published"
    events = eventually(lambda: len(receiver.requests) >= 2 and receiver.events(hook["secret"]))
    by_type = {e["type"]: e for e in events}
    assert set(by_type) == {"design.created", "design.published"}
    published = by_type["design.published"]
    assert published["version"] == 1 and published["data"]["id"] == design["id"]
    assert published["data"]["version"] == 1 and published["data"]["render_ms"] > 0
    assert published["data"]["preview_url"] == f"{app.base_url}/api/v1/designs/{design['id']}/preview.png"
    assert published["data"]["thumbnail_url"].endswith("/thumbnail")
    headers, body = receiver.requests[0]
    assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError):  # a different secret does not verify
        Webhook(webhooks.new_secret()).verify(body, headers)

    def all_delivered() -> list[dict[str, Any]] | None:
        log = deliveries(app, hook["id"])
        return log if len(log) == 2 and all(d["status"] == "delivered" for d in log) else None

    log = eventually(all_delivered)
    assert {d["event"] for d in log} == {"design.created", "design.published"}
    assert all(d["status_code"] == 200 and d["attempts"] == 1 for d in log)
    # the task log and the metrics show the deliveries too
    eventually(lambda: any(t["task"] == "deliver_webhook" for t in app.client.get("/api/v1/system/tasks").json()))
    metrics = app.client.get("/metrics").text
    assert 'customify_deliveries_total{kind="webhook",outcome="delivered"' in metrics


def test_500_three_times_then_200_is_four_attempts_with_one_webhook_id(make_live: Any, receiver: Receiver) -> None:
    app = make_live(webhooks=FAST)
    hook = endpoint(app, receiver.url, ["design.failed"])
    receiver.script = [500, 500, 500, 200]
    ping = app.client.post(f"/api/v1/webhooks/{hook['id']}/test")
    assert ping.status_code == 202 and ping.json()["event"] == "ping"
    eventually(lambda: len(receiver.requests) >= 4, seconds=20)
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert ids == {ping.json()["id"]}
    assert len(receiver.requests) == 4
    assert {e["type"] for e in receiver.events(hook["secret"])} == {"ping"}
    log = eventually(lambda: (d := deliveries(app, hook["id"])) and d[0]["status"] == "delivered" and d)
    assert log[0]["attempts"] == 4 and log[0]["status_code"] == 200 and log[0]["error"] is None
    # redeliver: the same webhook-id once more
    again = app.client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{ping.json()['id']}/redeliver")
    assert again.status_code == 202
    eventually(lambda: len(receiver.requests) == 5)
    assert receiver.requests[-1][0]["webhook-id"] == ping.json()["id"]


def test_410_gone_disables_the_endpoint(make_live: Any, receiver: Receiver) -> None:
    app = make_live(webhooks=FAST)
    hook = endpoint(app, receiver.url, ["design.published"])
    receiver.script = [410]
    app.client.post(f"/api/v1/webhooks/{hook['id']}/test")
    state = eventually(lambda: not (e := app.client.get(f"/api/v1/webhooks/{hook['id']}").json())["enabled"] and e)
    assert "410" in state["disabled_reason"]
    log = eventually(lambda: (d := deliveries(app, hook["id"])) and d[0]["status"] == "failed" and d)
    assert log[0]["status_code"] == 410 and log[0]["attempts"] == 1
    # a disabled endpoint is not offered new events; enabling it again clears the reason
    app.wait(app.design()["id"])
    assert len(receiver.requests) == 1
    enabled = app.client.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": True}).json()
    assert enabled["enabled"] and enabled["disabled_reason"] is None


def test_failing_too_long_disables_with_the_reason(make_live: Any, receiver: Receiver) -> None:
    app = make_live(webhooks={"retry_schedule": [0.2] * 20, "disable_after_seconds": 0.5})
    hook = endpoint(app, receiver.url, ["design.published"])
    receiver.script = [500] * 100
    app.client.post(f"/api/v1/webhooks/{hook['id']}/test")
    state = eventually(
        lambda: not (e := app.client.get(f"/api/v1/webhooks/{hook['id']}").json())["enabled"] and e, seconds=20
    )
    assert "webhooks.disable_after_seconds" in state["disabled_reason"] and "HTTP 500" in state["disabled_reason"]
    log = eventually(lambda: (d := deliveries(app, hook["id"])) and d[0]["status"] == "failed" and d)
    assert 2 <= log[0]["attempts"] < 20


def test_timeouts_redirects_and_long_answers(make_live: Any, receiver: Receiver) -> None:
    app = make_live(webhooks={"retry_schedule": [0.2], "read_timeout": 0.5, "max_response_bytes": 100})
    hook = endpoint(app, receiver.url, ["design.published"])
    elsewhere = Receiver()
    try:
        receiver.delay = 2.0  # slower than read_timeout
        app.client.post(f"/api/v1/webhooks/{hook['id']}/test")
        slow = eventually(lambda: (d := deliveries(app, hook["id"])) and d[0]["status"] == "failed" and d)
        assert slow[0]["error"].startswith("timeout") and slow[0]["attempts"] == 2
        receiver.delay = 0.0
        receiver.script, receiver.location = [302, 302], elsewhere.url
        app.client.post(f"/api/v1/webhooks/{hook['id']}/test")
        moved = eventually(lambda: (d := deliveries(app, hook["id"])) and d[0]["status"] == "failed" and d)
        assert "redirect (not followed)" in moved[0]["error"] and moved[0]["status_code"] == 302
        assert elsewhere.requests == []
        receiver.location, receiver.answer, receiver.script = "", b"x" * 1_000_000, [500, 500]
        app.client.post(f"/api/v1/webhooks/{hook['id']}/test")
        big = eventually(lambda: (d := deliveries(app, hook["id"])) and d[0]["status"] == "failed" and d)
        assert big[0]["error"] == "HTTP 500, not a 2xx: " + "x" * 100
    finally:
        elsewhere.close()


def test_rotated_secret_overlaps(make_live: Any, receiver: Receiver) -> None:
    app = make_live(webhooks=FAST)
    hook = endpoint(app, receiver.url, ["design.published"])
    rotated = app.client.post(f"/api/v1/webhooks/{hook['id']}/rotate-secret").json()
    assert rotated["secret"] != hook["secret"] and rotated["previous_secret_valid_until"]
    app.client.post(f"/api/v1/webhooks/{hook['id']}/test")
    eventually(lambda: receiver.requests)
    assert receiver.events(hook["secret"])[0]["type"] == "ping"  # old secret: still verifies
    assert receiver.events(rotated["secret"])[0]["type"] == "ping"


def test_each_endpoint_gets_its_owners_events_operators_may_ask_for_all(make_live: Any, receiver: Receiver) -> None:
    app = make_live(webhooks=FAST)
    with app.rt.transaction() as session:
        _, alice = records.create_user(session, "alice@example.com")
    as_alice = {"Authorization": f"Bearer {alice}"}
    other = Receiver()
    try:
        mine = endpoint(app, receiver.url, ["design.created"], headers=as_alice)
        everyone = endpoint(app, other.url, ["design.created"], all_users=True)  # the dev user is an operator
        denied = app.client.post(
            "/api/v1/webhooks",
            headers=as_alice,
            json={"url": receiver.url, "events": ["design.created"], "all_users": True},
        )
        assert denied.status_code == 403
        assert (
            app.client.post(
                "/api/v1/designs",
                headers=as_alice,
                json={"name": "A", "product": "mug", "color": "#ffffff", "layers": []},
            ).status_code
            == 201
        )
        app.design()  # the dev user's
        eventually(lambda: len(other.requests) == 2)
        eventually(lambda: len(receiver.requests) == 1)
        assert receiver.events(mine["secret"])[0]["data"]["name"] == "A"
        assert len(other.events(everyone["secret"])) == 2
        # alice cannot see the operator's endpoint
        assert app.client.get(f"/api/v1/webhooks/{everyone['id']}", headers=as_alice).status_code == 404
        assert [e["id"] for e in app.client.get("/api/v1/webhooks", headers=as_alice).json()] == [mine["id"]]
    finally:
        other.close()


def test_bad_input_names_the_rule(make_live: Any, receiver: Receiver) -> None:
    app = make_live(webhooks={"allow_private_targets": False})

    def refused(url: str, events: list[str] | None = None) -> str:
        response = app.client.post("/api/v1/webhooks", json={"url": url, "events": events or ["design.created"]})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        return str(response.json()["detail"])

    assert "scheme" in refused("ftp://example.com/x")
    assert "url-length" in refused("https://example.com/" + "a" * 2100)
    assert "loopback" in refused(receiver.url)
    assert "private" in refused("http://10.1.2.3/hook")
    assert "metadata" in refused("http://169.254.169.254/latest")
    assert "link-local" in refused("http://169.254.10.10/")
    dev = make_live()  # dev mode on loopback reaches private receivers, never a cloud's metadata service
    metadata = dev.client.post(
        "/api/v1/webhooks", json={"url": "http://169.254.169.254/latest", "events": ["design.created"]}
    )
    assert metadata.status_code == 422 and "metadata" in metadata.json()["detail"], metadata.text
    detail = refused("https://example.com/hook", ["design.exploded"])
    assert "design.exploded" in detail and all(name in detail for name in webhooks.EVENTS)
    assert app.client.post("/api/v1/webhooks", json={"url": "https://example.com", "events": []}).status_code == 422


def test_a_private_address_is_refused_at_delivery_too(make_live: Any, receiver: Receiver) -> None:
    """A name may resolve to a private address only later (DNS rebinding): delivery checks again."""
    app = make_live(webhooks={**FAST, "allow_private_targets": False})
    with app.rt.transaction() as session:  # as if it had passed the check at creation
        hook = webhooks.create_endpoint(session, DEV_USER_ID, receiver.url, ["design.created"], "", False)
        hook_id = hook.id
    app.client.post(f"/api/v1/webhooks/{hook_id}/test")
    log = eventually(lambda: (d := deliveries(app, hook_id)) and d[0]["attempts"] >= 1 and d[0]["error"] and d)
    assert "refused: loopback" in log[0]["error"]
    assert receiver.requests == []


@pytest.mark.slow
def test_sigkill_between_publish_and_delivery_still_delivers(tmp_path: Path, receiver: Receiver) -> None:
    """The process dies after the outbox row is committed and the delivery claimed, before the POST;
    once it is back, the event arrives."""
    proc = Process(tmp_path / "data", free_port(), None)
    proc.start(CUSTOMIFY_CRASH_AT="before-webhook")
    try:
        import httpx

        client = httpx.Client(base_url=proc.base, timeout=30)
        hook = client.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["design.published"]}).json()
        created = client.post("/api/v1/designs", json={"name": "K", "product": "mug", "color": "#ffffff", "layers": []})
        assert created.status_code == 201
        assert proc.wait(60) == 137  # killed at the crash point, nothing delivered
        assert receiver.requests == []
        proc.start()
        eventually(lambda: receiver.requests, seconds=30)
        event = receiver.events(hook["secret"])[0]
        assert event["type"] == "design.published" and event["data"]["id"] == created.json()["id"]
        with_db = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
        assert with_db[0]["id"] == receiver.requests[0][0]["webhook-id"]
        client.close()
    finally:
        proc.stop()


def test_outbox_row_is_written_with_the_state_change(live: LiveApp, receiver: Receiver) -> None:
    """A rolled-back transaction leaves no delivery behind (and enqueues nothing)."""
    hook = endpoint(live, receiver.url, ["design.created"])

    class Boom(Exception):
        pass

    with pytest.raises(Boom), live.rt.transaction() as session:
        records.create_design(session, DEV_USER_ID, {"name": "x", "product": "mug", "color": "#ffffff", "layers": []})
        raise Boom
    with live.rt.sessions() as session:
        assert session.query(WebhookDelivery).filter_by(endpoint_id=hook["id"]).count() == 0
    live.design()
    eventually(lambda: len(receiver.requests) == 1)
    assert json.loads(receiver.requests[0][1])["type"] == "design.created"


@pytest.mark.skipif(
    not (_reachable(5432) and _reachable(6379)) and not os.environ.get("CI"),
    reason="needs the Postgres and Redis of the test machine",
)
@pytest.mark.parametrize("queue", [pytest.param("postgres", marks=pytest.mark.slow), "redis"])  # a retry waited out
def test_retries_on_postgres_with_each_queue(make_live: Any, receiver: Receiver, queue: str) -> None:
    """The outbox, the after-commit enqueue and the scheduled retries on the scaled-out backends."""
    with pg_database() as url, redis_queue_name() as name:
        app = make_live(
            database_url=url, queue_url=url if queue == "postgres" else REDIS_URL, queue_name=name, webhooks=FAST
        )
        hook = endpoint(app, receiver.url, ["design.published"])
        receiver.script = [500, 200]
        design = app.design()
        assert app.wait(design["id"], 20)["status"] == "published"
        eventually(lambda: len(receiver.requests) == 2, seconds=20)
        assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 1
        event = receiver.events(hook["secret"])[1]
        assert event["type"] == "design.published" and event["data"]["id"] == design["id"]
        app.stop()


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.2", "private"),
        ("100.64.0.1", "private"),
        ("0.0.0.0", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_rules(address: str, rule: str | None) -> None:
    import ipaddress

    assert webhooks.address_rule(ipaddress.ip_address(address)) == rule


def test_deliveries_appear_in_the_event_stream_of_their_owner(make_live: Any, receiver: Receiver) -> None:
    from tests.test_events import read_events, stream, until

    app = make_live(webhooks=FAST)
    with app.rt.transaction() as session:
        _, alice = records.create_user(session, "alice@example.com")
        _, bob = records.create_user(session, "bob@example.com")
    hook = endpoint(app, receiver.url, ["design.created"], headers={"Authorization": f"Bearer {alice}"})
    receiver.script = [500]
    with stream(app, Authorization=f"Bearer {alice}") as mine, stream(app, Authorization=f"Bearer {bob}") as other:
        app.client.post(f"/api/v1/webhooks/{hook['id']}/test", headers={"Authorization": f"Bearer {alice}"})
        events = read_events(mine)
        failed, _ = until(events, lambda e: e.get("event") == "webhook.failed")
        assert failed["data"]["status_code"] == 500 and failed["data"]["next_attempt_s"] is not None
        delivered, _ = until(events, lambda e: e.get("event") == "webhook.delivered")
        assert delivered["data"]["attempt"] == 2 and delivered["data"]["endpoint_id"] == hook["id"]
        app.client.post(
            "/api/v1/designs",
            headers={"Authorization": f"Bearer {bob}"},
            json={"name": "B", "product": "mug", "color": "#ffffff", "layers": []},
        )
        # bob's stream, open all along, carried nothing of alice's deliveries before his own design's events
        _, seen = until(read_events(other), lambda e: e.get("event") in ("design.status", "task.enqueued"))
        assert not [e for e in seen if str(e.get("event", "")).startswith("webhook.")]
