"""Renders in helper processes (render.pool = "process", the default): same pixels as in a thread,
a real timeout, and a helper that dies is replaced without losing the design."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import msgspec
import pytest

from customify.render import PRODUCTS, RenderError
from customify.render.pool import HEADER, RenderCrashed, RenderJob, RenderPool, RenderTimeout, run_job, serve
from tests.conftest import LiveApp, assert_color_near, eventually, open_image, png_bytes

SPEC: dict[str, Any] = {
    "product": "mug",
    "color": "#b91c1c",
    "layers": [
        {"type": "text", "text": "Pool", "size": 0.2, "color": "#ffffff", "x": 0.5, "y": 0.4},
        {"type": "shape", "shape": "ellipse", "x": 0.5, "y": 0.8, "width": 0.3, "height": 0.1, "fill": "#f59e0b"},
    ],
}


def job(spec: dict[str, Any] = SPEC, assets: dict[str, str] | None = None, out: Path | None = None) -> RenderJob:
    out = out or Path(tempfile.mkdtemp(prefix="pool-"))
    return RenderJob(spec, assets or {}, 1, 300, "webp", str(out / "p.png"), str(out / "t.webp"))


def files(made: RenderJob) -> tuple[bytes, bytes]:
    return Path(made.preview_path).read_bytes(), Path(made.thumb_path).read_bytes()


def no_renew() -> None:
    pass


@pytest.fixture
def pool() -> Iterator[RenderPool]:
    helpers = RenderPool("process")
    yield helpers
    helpers.close()


def draw(
    pool: RenderPool, made: RenderJob | None = None, seconds: float = 30, renew: Callable[[], None] = no_renew
) -> tuple[int, int]:
    return pool.render(made or job(), time.monotonic() + seconds, renew)


def test_a_helper_makes_the_same_bytes_as_a_thread(tmp_path: Any, pool: RenderPool) -> None:
    asset = tmp_path / "logo.png"
    asset.write_bytes(png_bytes((80, 40), (0, 200, 0, 255)))
    spec = dict(SPEC, layers=[*SPEC["layers"], {"type": "image", "asset_id": "a1", "x": 0.3, "y": 0.3, "width": 0.2}])
    jobs = [job(spec, {"a1": str(asset)}, tmp_path / name) for name in ("helper", "again", "thread")]
    size = draw(pool, jobs[0])
    assert draw(pool, jobs[1]) == size
    assert len(pool.pids()) == 1 and os.getpid() not in pool.pids()  # one helper, reused
    assert run_job(jobs[2]) == size
    assert files(jobs[0]) == files(jobs[1]) == files(jobs[2])
    preview, thumbnail = files(jobs[0])
    assert open_image(preview).size == size and max(open_image(thumbnail).size) == 300
    assert_color_near(open_image(preview).convert("RGB").getpixel((600, 1000)), (0xB9, 0x1C, 0x1C))  # the red mug


def test_a_spec_error_comes_back_as_render_error_and_the_helper_stays(pool: RenderPool) -> None:
    with pytest.raises(RenderError, match="unknown product 'kite'"):
        draw(pool, job(dict(SPEC, product="kite")))
    helper = pool.pids()
    draw(pool)
    assert pool.pids() == helper
    pool.close()
    assert pool.pids() == []


def test_a_stuck_helper_is_killed_at_the_deadline_and_replaced(pool: RenderPool) -> None:
    draw(pool)
    [stuck] = pool.pids()
    os.kill(stuck, signal.SIGSTOP)
    renewals: list[float] = []
    with pytest.raises(RenderTimeout):
        draw(pool, seconds=1.5, renew=lambda: renewals.append(time.monotonic()))
    assert renewals, "the claim was not renewed while waiting"
    assert pool.pids() == []
    with pytest.raises(ProcessLookupError):
        os.kill(stuck, 0)  # gone, not left behind
    assert draw(pool) == (1200, 1200)  # a new helper


def test_a_dead_helper_fails_the_render_with_the_cause(pool: RenderPool) -> None:
    draw(pool)
    [pid] = pool.pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RenderCrashed, match="signal 9"):
        draw(pool)
    assert draw(pool) == (1200, 1200)


def test_app_renders_in_helpers_and_survives_one_being_killed(live: LiveApp) -> None:
    assert live.rt.renderers.mode == "process"
    first = live.design()
    assert live.wait(first["id"])["status"] == "published"
    helpers = live.rt.renderers.pids()
    assert helpers and os.getpid() not in helpers
    status = live.client.get("/api/v1/system/worker-status").json()
    [me] = [w for w in status["workers"].values() if w["pid"] == os.getpid()]
    assert me["pool"] == {
        "implementation": "process",
        "processes": helpers,
        "max_renders": 1000,
        "max_memory_mb": 512,
        "asset_cache_mb": 64,
        "recycled": 0,
    }
    for pid in helpers:
        os.kill(pid, signal.SIGKILL)
    second = live.design(name="after the crash")
    done = live.wait(second["id"], 20)
    assert done["status"] == "published", done
    runs = live.client.get("/api/v1/system/tasks", params={"design_id": second["id"]}).json()
    failed = [r for r in runs if r["state"] == "retrying"]
    assert failed and "render process died" in failed[0]["error"], runs
    assert set(live.rt.renderers.pids()).isdisjoint(helpers)


def test_app_timeout_of_a_progressing_render_fails_the_design_with_its_advice(make_live: Any) -> None:
    # Twelve rotated text layers on the poster take ~0.9 s in a warm helper (~4× that under load):
    # progressing all along, but past the 0.25 s timeout whether the helper is cold or warm.
    app = make_live(workers=1, render={"timeout_seconds": 0.25, "stall_seconds": 0.2})
    layers = [{"type": "text", "text": f"HEAVY {i}", "size": 0.3, "rotation": 7 * i + 1} for i in range(12)]
    design = app.design(name="heavy", product="poster", color="#ffffff", layers=layers)
    done = app.wait(design["id"], 15)
    assert done["status"] == "failed" and "render.timeout_seconds (0.25 s)" in done["error"], done
    assert "simplify the design" in done["error"]
    assert app.rt.renderers.pids() == []  # the overrunning helper was killed


def test_app_frozen_helper_is_killed_replaced_and_the_render_retried(make_live: Any) -> None:
    app = make_live(workers=1, render={"stall_seconds": 1.0, "timeout_seconds": 60})
    warm = app.design()
    assert app.wait(warm["id"])["status"] == "published"
    [pid] = app.rt.renderers.pids()
    os.kill(pid, signal.SIGSTOP)
    design = app.design(name="not its fault")
    done = app.wait(design["id"], 30)
    assert done["status"] == "published", done
    assert pid not in app.rt.renderers.pids()
    runs = app.client.get("/api/v1/system/tasks", params={"design_id": design["id"]}).json()
    retried = [r for r in runs if r["state"] == "retrying"]
    assert retried and "the render process stopped responding" in retried[0]["error"], runs
    assert f"helper pid {pid}" in retried[0]["error"] and "simplify" not in retried[0]["error"]


# Helpers start with the consumer and warm themselves while idle ------------------------------------

WARM_STEPS = ("imports", "fonts", *(f"product {key}" for key in PRODUCTS), "done")


def warm_helpers(pool: RenderPool, count: int) -> dict[int, tuple[str, ...]]:
    """Waits until `count` helpers exist and each finished its warm-up; returns their steps by pid."""

    def done() -> dict[int, tuple[str, ...]] | None:
        found = pool.warmth()
        return found if len(found) == count and all(s[-1:] == ("done",) for s in found.values()) else None

    return cast(dict[int, tuple[str, ...]], eventually(done, seconds=60, interval=0.1, describe=pool.warmth))


def test_helpers_start_with_the_consumer_and_are_warm_before_the_first_design(make_live: Any) -> None:
    app = make_live(workers=2, render={"start_helpers": True})
    pool = app.rt.renderers
    eventually(lambda: len(pool.pids()) == 2, describe=pool.pids)  # one per worker thread, no design yet
    [me] = app.client.get("/api/v1/system/worker-status").json()["workers"].values()
    assert me["pool"]["processes"] == pool.pids()
    warm = warm_helpers(pool, 2)
    # Imports, fonts, the product designs use (none yet: the designer's first, the t-shirt).
    assert all(steps == ("imports", "fonts", "product tshirt", "done") for steps in warm.values()), warm
    design = app.design()
    assert app.wait(design["id"])["status"] == "published"
    assert set(pool.pids()) == set(warm) and pool.counts["started"] == 2  # the first design found a warm one


def test_with_start_helpers_off_a_helper_starts_on_its_threads_first_render(make_live: Any) -> None:
    app = make_live(workers=2, render={"start_helpers": False})
    assert app.rt.renderers.pids() == []
    assert app.wait(app.design()["id"])["status"] == "published"
    assert len(app.rt.renderers.pids()) == 1 and app.rt.renderers.counts["started"] == 1


def test_helpers_warm_the_products_recent_designs_used(make_live: Any) -> None:
    from customify.tasks import products_in_use

    app = make_live(workers=1)
    assert products_in_use(app.rt) == ("tshirt",)  # nothing rendered yet: the designer's first product
    for product, color in (("poster", "#ffffff"), ("mug", "#ffffff"), ("mug", "#111827")):
        design = app.design(product=product, color=color)
        assert app.wait(design["id"])["status"] == "published"
    app.rt.history.flush()
    assert products_in_use(app.rt) == ("mug", "poster")  # most rendered first
    helpers = RenderPool("process")
    helpers.open(1, warm=lambda: products_in_use(app.rt))
    try:
        [steps] = warm_helpers(helpers, 1).values()
        assert steps == ("imports", "fonts", "product mug", "product poster", "done")
    finally:
        helpers.close()


def test_a_job_that_arrives_during_the_warm_up_is_answered_before_the_next_step(tmp_path: Path) -> None:
    requests, to_helper = os.pipe()
    from_helper, replies = os.pipe()
    body = msgspec.msgpack.encode(job(out=tmp_path))
    events: list[str] = []

    def warm_up() -> Iterator[str]:
        events.append("step 1")
        os.write(to_helper, HEADER.pack(len(body)) + body)  # the render arrives in the middle of step 1
        yield "step 1"
        events.append("step 2")
        yield "step 2"

    class Replies:
        def write(self, data: bytes) -> None:
            events.append("reply")
            os.write(replies, data)

        def flush(self) -> None:
            pass

    helper = threading.Thread(target=serve, args=(requests, cast(IO[bytes], Replies()), warm_up()), daemon=True)
    helper.start()
    try:
        with os.fdopen(from_helper, "rb") as answers:
            size = HEADER.unpack(answers.read(HEADER.size))[0]
            reply = msgspec.msgpack.decode(answers.read(size))
            assert (reply["width"], reply["height"], reply.get("error")) == (1200, 1200, None)  # rendered
            eventually(lambda: "step 2" in events)  # the warm-up goes on once the render is answered
    finally:
        os.close(to_helper)  # EOF: the helper returns
        helper.join(10)
        os.close(requests)
        os.close(replies)
    assert not helper.is_alive()
    assert events == ["step 1", "reply", "step 2"]  # answered between the steps, not after the warm-up
    assert Path(tmp_path / "p.png").stat().st_size > 0


def test_a_warm_up_step_that_fails_leaves_the_helper_serving(tmp_path: Path) -> None:
    requests, to_helper = os.pipe()
    from_helper, replies = os.pipe()

    def warm_up() -> Iterator[str]:
        yield "imports"
        raise OSError("no such font")  # e.g. a codec or a file the warm-up wanted is missing

    with os.fdopen(replies, "wb", buffering=0) as reply_pipe, os.fdopen(from_helper, "rb") as answers:
        helper = threading.Thread(target=serve, args=(requests, reply_pipe, warm_up()), daemon=True)
        helper.start()
        body = msgspec.msgpack.encode(job(out=tmp_path))
        os.write(to_helper, HEADER.pack(len(body)) + body)
        size = HEADER.unpack(answers.read(HEADER.size))[0]
        assert msgspec.msgpack.decode(answers.read(size))["width"] == 1200  # rendered all the same
        os.close(to_helper)
        helper.join(10)
    assert not helper.is_alive()
    os.close(requests)


def test_a_helper_started_for_a_render_renders_first_then_warms_itself() -> None:
    helpers = RenderPool("process", warm=None)  # every product (the default warms only imports and fonts)
    helpers.open(1)
    try:
        assert draw(helpers) == (1200, 1200)  # sent while the helper is still starting
        assert list(warm_helpers(helpers, 1).values()) == [WARM_STEPS]
        assert helpers.counts["started"] == 1
    finally:
        helpers.close()
    assert helpers.pids() == []


def test_stopping_the_consumer_stops_the_helpers(make_live: Any) -> None:
    app = make_live()
    design = app.design()
    assert app.wait(design["id"])["status"] == "published"
    pids = app.rt.renderers.pids()
    assert pids
    app.rt.stop_consumer()
    assert app.rt.renderers.pids() == []
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left


def test_thread_pool_renders_in_this_process(make_live: Any) -> None:
    app = make_live(render={"pool": "thread"})
    design = app.design()
    assert app.wait(design["id"])["status"] == "published"
    assert app.rt.renderers.pids() == []
    [me] = app.client.get("/api/v1/system/worker-status").json()["workers"].values()
    assert me["pool"]["implementation"] == "thread" and me["pool"]["processes"] == []


def test_an_expected_task_failure_is_one_log_line_without_traceback() -> None:
    from customify.tasks import QuietExpectedFailures

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            return logging.LogRecord(
                "huey", logging.ERROR, __file__, 1, "Unhandled exception in task %s.", ("t1",), sys.exc_info()
            )

    crashed = record(RenderCrashed("the render process died (signal 9)"))
    assert QuietExpectedFailures().filter(crashed)
    assert crashed.exc_info is None and crashed.levelname == "WARNING"
    assert crashed.getMessage() == (
        "task t1 failed: RenderCrashed: the render process died (signal 9); retried while attempts remain"
    )
    bug = record(KeyError("layers"))
    assert QuietExpectedFailures().filter(bug)
    assert bug.exc_info is not None and bug.levelname == "ERROR"  # a bug keeps its traceback


def test_a_failure_the_render_task_logged_itself_is_not_logged_again_by_huey() -> None:
    from customify.tasks import QuietExpectedFailures, said

    exc = RenderCrashed("the render process stopped responding")
    said(exc)  # run_render logged "render of … failed (…); it will be retried" before raising
    try:
        raise exc
    except RenderCrashed:
        record = logging.LogRecord(
            "huey", logging.ERROR, __file__, 1, "Unhandled exception in task %s.", ("t1",), sys.exc_info()
        )
    assert QuietExpectedFailures().filter(record) is False


# Bounded memory: the decoded-asset cache in bytes, helpers recycled ---------------------------------


def test_the_asset_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    from customify.render.pool import AssetCache

    cache = AssetCache(10 << 20)
    paths = []
    for n in range(16):  # 16 distinct 4 MB images; a count-bounded cache of 32 would keep all 64 MB
        path = tmp_path / f"{n}.png"
        path.write_bytes(png_bytes((1000, 1000), (n, 0, 0, 255)))
        paths.append(str(path))
        assert cache.get(str(path)).getpixel((0, 0))[0] == n
        assert cache.bytes <= 10 << 20
    assert cache.get(paths[-1]) is cache.get(paths[-1])  # the newest is still there
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bytes((2000, 2000)))
    cache.get(str(huge))
    assert str(huge) not in cache._images and cache.bytes <= 10 << 20  # larger than the budget: not kept


def test_a_helper_is_replaced_after_max_renders() -> None:
    helpers = RenderPool("process", max_renders=2)
    try:
        draw(helpers)
        first = helpers.pids()
        draw(helpers)
        assert helpers.pids() == [] and helpers.describe()["recycled"] == 1  # gone between renders
        draw(helpers)
        assert helpers.pids() and helpers.pids() != first
        assert helpers.describe()["max_renders"] == 2
    finally:
        helpers.close()


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


@pytest.mark.slow  # eight 9-megapixel renders
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc")
def test_helper_memory_stays_under_the_ceiling_with_distinct_large_uploads(tmp_path: Path) -> None:
    """Today's lru_cache(32) kept every decoded upload: 8 × 36 MB here, ~100 MB per 25 MP upload."""
    ceiling = 200
    helpers = RenderPool("process", max_memory_mb=ceiling, asset_cache_mb=16)
    try:
        peak = 0.0
        for n in range(8):
            asset = tmp_path / f"big{n}.png"
            asset.write_bytes(png_bytes((3000, 3000), (n * 30, 200, 0, 255)))
            spec = dict(SPEC, layers=[{"type": "image", "asset_id": "a", "x": 0.5, "y": 0.5, "width": 0.4}])
            draw(helpers, job(spec, {"a": str(asset)}, tmp_path / f"out{n}"), seconds=120)
            peak = max([peak, *(resident_mb(pid) for pid in helpers.pids())])
            assert peak <= ceiling, f"helper at {peak:.0f} MB after {n + 1} distinct uploads"
        assert helpers.describe()["max_memory_mb"] == ceiling
    finally:
        helpers.close()


def test_a_helper_past_max_memory_is_replaced_before_the_next_render() -> None:
    helpers = RenderPool("process", max_memory_mb=1)  # every helper is past 1 MB after a render
    try:
        draw(helpers)
        assert helpers.pids() == [] and helpers.describe()["recycled"] == 1
        draw(helpers)
        assert helpers.describe()["recycled"] == 2
    finally:
        helpers.close()
