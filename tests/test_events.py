"""The event hub and GET /api/v1/events: live, many subscribers, Last-Event-ID replay, heartbeats."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from customify.api import events as events_api
from customify.events import EventHub
from tests.conftest import LiveApp


def read_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into dicts: {"id", "event", "data", "comment"}."""
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if current:
                yield current
            current = {}
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "":
            current["comment"] = value
        elif field == "data":
            current["data"] = json.loads(value)
        else:
            current[field] = value


def until(
    events: Iterator[dict[str, Any]], match: Callable[[dict[str, Any]], bool], limit: float = 10.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen = []
    deadline = time.monotonic() + limit
    for event in events:
        seen.append(event)
        if match(event):
            return event, seen
        assert time.monotonic() < deadline, f"no matching event in {limit} s: {seen[-5:]}"
    raise AssertionError(f"stream ended: {seen[-5:]}")


def stream(app: LiveApp, **headers: str) -> Any:
    return app.client.stream("GET", "/api/v1/events", headers=headers, timeout=httpx.Timeout(20, read=20))


def test_two_subscribers_see_a_design_through_to_published(live: LiveApp) -> None:
    with stream(live) as a, stream(live) as b:
        assert a.headers["content-type"].startswith("text/event-stream")
        ea, eb = read_events(a), read_events(b)
        hello, _ = until(ea, lambda e: e.get("event") == "hello")
        assert hello["data"]["missed"] is False and "id" not in hello
        until(eb, lambda e: e.get("event") == "hello")
        design = live.design()
        for events in (ea, eb):
            _, seen = until(
                events, lambda e: e.get("event") == "task.published" and e["data"]["design_id"] == design["id"]
            )
            kinds = [e.get("event") for e in seen if e.get("data", {}).get("design_id") == design["id"]]
            assert kinds.index("task.enqueued") < kinds.index("task.started") < kinds.index("task.published")
            assert ("design.status", "published") in [
                (e["event"], e["data"].get("status")) for e in seen if e.get("event") == "design.status"
            ]
            started = next(e for e in seen if e.get("event") == "task.started")
            assert started["data"]["worker"].startswith("Worker-") and started["data"]["wait_ms"] is not None
            ids = [int(e["id"]) for e in seen if "id" in e]
            assert ids == sorted(ids)


def test_queue_stats_once_a_second_while_someone_listens(live: LiveApp) -> None:
    with stream(live) as response:
        events = read_events(response)
        queue, _ = until(events, lambda e: e.get("event") == "queue", limit=5)
        data = queue["data"]
        assert data["pending"] == 0 and data["healthy"] is True and data["problems"] == []
        assert {t["name"] for t in data["threads"]} == {"Worker-1", "Worker-2"}
        assert set(data["windows"]) == {"1m", "1h"} and len(data["throughput"]) == 60
        assert data["subscribers"] >= 1


def test_reconnect_with_last_event_id_misses_nothing(live: LiveApp) -> None:
    with stream(live) as response:
        events = read_events(response)
        until(events, lambda e: e.get("event") == "hello")
        first = live.design(name="first")
        seen_first, _ = until(events, lambda e: e.get("event") == "task.enqueued")
        last_id = seen_first["id"]
    # Disconnected: these happen while nobody listens.
    second = live.design(name="second")
    assert live.wait(second["id"])["status"] == "published"
    with stream(live, **{"Last-Event-ID": last_id}) as response:
        events = read_events(response)
        hello, _ = until(events, lambda e: e.get("event") == "hello")
        assert hello["data"]["missed"] is False and hello["data"]["replay_from"] == int(last_id)
        _, replayed = until(
            events,
            lambda e: (
                e.get("event") == "design.status"
                and e["data"]["design_id"] == second["id"]
                and e["data"]["status"] == "published"
            ),
        )
    ids = [int(e["id"]) for e in replayed if "id" in e]
    assert ids and ids[0] == int(last_id) + 1, "the replay starts right after the last id seen"
    assert any(e["data"].get("design_id") == first["id"] for e in replayed if e.get("event") == "task.started")


def test_replay_older_than_the_buffer_says_missed(live: LiveApp) -> None:
    for _ in range(2100):
        live.rt.hub.publish("noise")
    with stream(live, **{"Last-Event-ID": "1"}) as response:
        hello, _ = until(read_events(response), lambda e: e.get("event") == "hello")
    assert hello["data"]["missed"] is True
    with stream(live, **{"Last-Event-ID": "999999999"}) as response:  # ids from before a restart
        hello, _ = until(read_events(response), lambda e: e.get("event") == "hello")
    assert hello["data"]["missed"] is True


def test_heartbeat_comments(live: LiveApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_api, "HEARTBEAT", 0.2)
    monkeypatch.setattr(events_api, "TICK", 3600.0)
    with stream(live) as response:
        comment, _ = until(read_events(response), lambda e: "comment" in e, limit=5)
    assert comment["comment"] == "heartbeat"


def test_server_closing_ends_streams(live: LiveApp) -> None:
    with stream(live) as response:
        events = read_events(response)
        until(events, lambda e: e.get("event") == "hello")
        live.rt.hub.close()
        until(events, lambda e: e.get("event") == "server.closing")
        assert list(events) == []  # the server ended the stream


def test_hub_replays_after_an_id_and_reports_a_gap() -> None:
    asyncio.run(_hub_replays())


async def _hub_replays() -> None:
    hub = EventHub(buffer_size=3)
    for i in range(5):
        hub.publish("n", i=i)
    assert hub.last_id() == 5
    assert hub.missed(1) and not hub.missed(2) and not hub.missed(5) and hub.missed(6)
    with hub.subscribe(after=3) as queue:
        assert [queue.get_nowait().id for _ in range(2)] == [4, 5]
        hub.publish("n", i=5)
        assert (await queue.get()).id == 6
    assert hub.subscriber_count() == 0


def test_a_subscriber_with_wants_is_woken_only_by_the_events_it_wants() -> None:
    async def run() -> None:
        hub = EventHub()
        hub.publish("design.status", design_id="a", status="rendering")
        with hub.subscribe(after=0, wants=lambda e: e.data.get("design_id") == "b") as mine:
            for design_id in ("a", "b", "a", "c"):
                hub.publish("design.status", design_id=design_id, status="published")
            await asyncio.sleep(0)  # the hub's wake-up runs on this loop
            got = await asyncio.wait_for(mine.get(), 5)
            assert got.data["design_id"] == "b" and mine.empty()

    asyncio.run(run())


def test_a_customer_stream_carries_only_their_own_designs(live: LiveApp) -> None:
    from customify import records

    with live.rt.transaction() as session:
        _, alice = records.create_user(session, "alice@example.com")
    as_alice = {"Authorization": f"Bearer {alice}"}
    with stream(live, **as_alice) as response, stream(live) as operator:
        events, everything = read_events(response), read_events(operator)
        until(events, lambda e: e.get("event") == "hello")
        until(everything, lambda e: e.get("event") == "hello")
        theirs = live.design(name="the dev user's")
        mine = live.client.post(
            "/api/v1/designs",
            json={"name": "alice's", "product": "mug", "color": "#ffffff", "layers": []},
            headers=as_alice,
        ).json()
        live.wait(theirs["id"])
        live.client.delete(f"/api/v1/designs/{mine['id']}", headers=as_alice)
        _, seen = until(events, lambda e: e.get("event") == "design.deleted")
        assert {e["data"]["design_id"] for e in seen if "data" in e} == {mine["id"]}
        assert {e.get("event") for e in seen} >= {"task.enqueued", "design.status", "design.deleted"}
        assert not [e for e in seen if e.get("event") in ("queue", "worker.state", "control")]
        _, seen_all = until(everything, lambda e: e.get("event") == "design.deleted")
        assert theirs["id"] in {e["data"].get("design_id") for e in seen_all if "data" in e}
        # The queue pictures it does not get still show up as keep-alive comments (a client's read
        # timeout must not take a quiet customer stream for a dead one).
        until(events, lambda e: e.get("comment") == "heartbeat", limit=events_api.KEEPALIVE + 3)
