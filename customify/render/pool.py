"""Where a render's pixels are made: in the worker thread, or in a helper process.

About a fifth of a render's CPU time holds the GIL (alpha compositing, FreeType,
the PNG filter: bench/RESULTS.md). In one process that time is taken from the
API's event loop, and two render threads take it from each other. With
`render.pool = "process"` (the default) each worker thread hands the pixel work
to a helper process of its own (`python -m customify.render.pool`, kept for the
next render) and waits on a pipe, GIL released. The
helper draws, encodes and writes the two files; the thread keeps the rest: the
claim, the lease, the publish, the mail. The helper runs at
`render.worker_nice`: a smaller share of the CPU when the API wants it (a share,
not a strict priority; bench/RESULTS.md measures what it buys).

The helpers start with the consumer (`open(helpers)`: one per worker thread, started
in the background, so start-up does not wait for them) and warm themselves in their
idle time: Pillow and the renderer's modules, the fonts, then each product's lighting
surfaces, one step at a time. Between steps a helper polls its stdin with a zero
timeout and answers a request first, so a warm-up never holds a render for longer
than the step in progress; the first design then finds a warm helper instead of
paying its start (interpreter, imports, the product's lighting: bench/RESULTS.md).
A helper started later (a crash, a recycle, a thread added) warms the same way.

The protocol is one request, one reply, each a 4-byte big-endian length and a
msgpack body: a RenderJob in (the spec, the asset files, where to write the
preview and thumbnail), a _Reply out (the image size, or the error). The files
are written where they are drawn, so no image crosses the pipe.
A helper that dies (killed, out of memory, a crash in a codec) is replaced on
the next render; the render it was doing fails with RenderCrashed and is
retried like any other transient error.

Progress, not the pipe, says a helper is alive: while its thread waits, it reads
the helper's CPU time (utime + stime in /proc/<pid>/stat) twice a second. A
stopped, deadlocked or swapped-out helper does not advance it. After
`stall_seconds` without progress the thread's state says so (customify.status
reports it); `stall_grace(stall_seconds)` later the helper is killed and the
render fails with RenderStalled, which is retried: the design was not at fault.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from customify.storage import write_atomic

if TYPE_CHECKING:
    from PIL import Image

# Pillow and the renderer are imported where they are used: a helper sets its niceness before it
# imports them (its warm-up), and the server's worker threads only hand jobs over.

log = logging.getLogger("customify.render")

POOLS = ("process", "thread")
# bench/stages.py sets it (a file for customify.tasks' per-render timings): the helpers then say when
# they read each job and answered it. Unset (always, outside that benchmark) nothing is timed.
STAGE_LOG = os.environ.get("CUSTOMIFY_STAGE_LOG", "")
HEADER = struct.Struct(">I")
STOP_GRACE = 2.0  # seconds a helper gets to exit on EOF before it is killed
SAMPLE = 0.5  # seconds between CPU-time samples of a busy helper
Progress = Callable[[str, "int | None"], None]  # (stage, helper pid): called as a render advances


def stall_grace(stall_seconds: float) -> float:
    """Seconds after a stall is reported before the helper is killed: long enough for a monitor to see
    it (and for a swapped-out helper to come back), short enough not to hold the thread."""
    return min(max(stall_seconds, 2.0), 10.0)


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process in clock ticks; None when it is gone or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()  # the name may hold spaces and parentheses
    return int(fields[11]) + int(fields[12])


class RenderJob(msgspec.Struct, frozen=True, tag="render"):
    spec: dict[str, Any]
    assets: dict[str, str]  # asset id -> file of the stored image (content-addressed)
    png_level: int
    thumb_size: int
    thumb_format: str
    preview_path: str  # where the preview PNG goes (written atomically)
    thumb_path: str  # where the thumbnail goes


class PreviewJob(msgspec.Struct, frozen=True, tag="preview"):
    """An instant preview: drawn at `size` on the long side, its bytes come back over the pipe."""

    spec: dict[str, Any]
    assets: dict[str, str]
    size: int
    format: str  # webp, png or jpeg
    png_level: int


class StatusJob(msgspec.Struct, frozen=True, tag="status"):
    """Asks a helper how far its warm-up went (answered between warm-up steps, like a render)."""


class _Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    width: int = 0
    height: int = 0
    error: str = ""  # a person-readable reason, when the render did not produce images
    kind: str = ""  # "" rendered, "render" a RenderError (the spec), "internal" anything else
    rss: int = 0  # the helper's resident bytes after the job (for render.helper_max_memory_mb)
    data: bytes = b""  # a preview's image
    warmed: tuple[str, ...] = ()  # the warm-up steps done so far (a StatusJob's answer)
    began: float = 0.0  # time.time() when the helper read the job and when it had answered it:
    ended: float = 0.0  # only with CUSTOMIFY_STAGE_LOG set (bench/stages.py), else 0


class RenderTimeout(Exception):
    """The render overran render.timeout_seconds."""


class RenderCrashed(RuntimeError):
    """The helper process died or answered nonsense; the render is retried."""


class RenderStalled(RenderCrashed):
    """The helper made no progress (no CPU time) for render.stall_seconds and a grace: it was killed;
    the render is retried (the machine, not the design, misbehaved)."""


# The pixel work, the same in a thread and in a helper ------------------------


class AssetCache:
    """Decoded uploads, least recently used first out, bounded in bytes (render.asset_cache_mb).

    Assets are content-addressed, so a decoded one never goes stale (the renderer only reads it).
    A count bound is not enough: 32 decoded 25-megapixel uploads are 3.2 GB.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._images: OrderedDict[str, tuple[Image.Image, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> Image.Image:
        with self._lock:
            found = self._images.get(path)
            if found is not None:
                self._images.move_to_end(path)
                return found[0]
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            image = img.copy()
        size = image.width * image.height * len(image.getbands())
        with self._lock:
            if size <= self.max_bytes and path not in self._images:
                self._images[path] = (image, size)
                self.bytes += size
                while self.bytes > self.max_bytes:
                    _, (_, dropped) = self._images.popitem(last=False)
                    self.bytes -= dropped
        return image

    def resize(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = max_bytes
            while self.bytes > self.max_bytes and self._images:
                _, (_, dropped) = self._images.popitem(last=False)
                self.bytes -= dropped


ASSETS = AssetCache(64 << 20)  # this process's (a helper's, or the worker threads' with pool = "thread")


def decoded_asset(path: str) -> Image.Image:
    return ASSETS.get(path)


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere the peak, which only over-states it)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def run_job(job: RenderJob, check: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Render and encode one design and write its two files; `check(stage)` is called between stages.
    Returns the preview's size."""
    from customify.render.compose import encode, render_design
    from customify.render.products import PRODUCTS

    assets: dict[str, Image.Image] = {}
    for asset_id, path in job.assets.items():
        with contextlib.suppress(FileNotFoundError):  # the renderer names the layer whose image is gone
            assets[asset_id] = decoded_asset(path)
    image = render_design(job.spec, assets, check)
    if check is not None:
        check("encoding")
    rendered = encode(image, PRODUCTS[job.spec["product"]], job.png_level, job.thumb_size, job.thumb_format)
    if check is not None:
        check("writing")
    write_atomic(Path(job.preview_path), rendered.preview)
    write_atomic(Path(job.thumb_path), rendered.thumbnail)
    return rendered.size


def run_preview(job: PreviewJob) -> bytes:
    """An instant preview's bytes (customify.render.preview)."""
    from customify.render.preview import draw_preview, encode_preview

    assets: dict[str, Image.Image] = {}
    for asset_id, path in job.assets.items():
        with contextlib.suppress(FileNotFoundError):
            assets[asset_id] = decoded_asset(path)
    image = draw_preview(job.spec, assets, job.size)
    return encode_preview(image, job.spec["product"], job.format, job.png_level)


# The pool ----------------------------------------------------------------------


class RenderPool:
    """Renders for the worker threads of one process: in the thread itself, or in helpers."""

    def __init__(
        self,
        mode: str = "process",
        nice: int = 0,
        *,
        max_renders: int = 0,
        max_memory_mb: int = 0,
        asset_cache_mb: int = 64,
        stall_seconds: float = 0.0,
        on_progress: Progress | None = None,
        warm: tuple[str, ...] | None = (),
    ) -> None:
        if mode not in POOLS:
            raise ValueError(f"render pool {mode!r}; use one of {', '.join(POOLS)}")
        self.mode = mode
        self.nice = nice
        # Recycling, as Celery's max_tasks_per_child and max_memory_per_child (0: no limit).
        self.max_renders = max_renders
        self.max_memory_mb = max_memory_mb
        self.asset_cache_mb = asset_cache_mb
        self.recycled = 0
        if mode == "thread":
            ASSETS.resize(asset_cache_mb << 20)
        self.stall_seconds = stall_seconds  # 0: no stall rule (only the deadline)
        self.on_progress: Progress = on_progress or (lambda stage, pid: None)
        # What a helper warms in its idle time: the products whose lighting it builds, in order
        # (None: every product; (), the default: only the imports and fonts, so a helper started by a
        # render builds no product beyond what its renders use). The consumer's pre-started helpers warm
        # the products recent designs used (`open(warm=...)`, customify.tasks.products_in_use).
        self.warm = warm
        self._idle: list[_Helper] = []
        self._all: set[_Helper] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a helper started in the background joined
        self._last = threading.local()  # this thread's last reply's (began, ended), for STAGE_LOG
        self._starting = 0  # helpers being started in the background
        self._wanted = 0  # helpers kept started (one per worker thread; 0: started on first use)
        self._warm_source: Callable[[], tuple[str, ...] | None] | None = None  # sets `warm` (open())
        self._closed = False
        self.counts = {"started": 0, "recycled": 0, "killed": 0}  # helper processes, for /metrics

    def render(self, job: RenderJob, deadline: float, renew: Callable[[], None]) -> tuple[int, int]:
        """Make the files of `job` by `deadline` (time.monotonic()); `renew()` keeps the claim while waiting.
        Returns the preview's size.

        Raises RenderError (the spec), RenderTimeout, RenderCrashed (RenderStalled), or whatever `renew` raises.
        """
        if self.mode == "thread":

            def check(stage: str) -> None:
                self.on_progress(stage, None)  # a stage reached is progress
                if time.monotonic() > deadline:
                    raise RenderTimeout(f"at {stage}")
                renew()

            check("start")
            return run_job(job, check)
        reply = self._ask(job, deadline, renew)
        return reply.width, reply.height

    def preview(self, job: PreviewJob, deadline: float) -> bytes:
        """An instant preview's bytes, made by `deadline` (time.monotonic())."""
        if self.mode == "thread":
            return run_preview(job)
        return self._ask(job, deadline, lambda: None).data

    def _ask(self, job: RenderJob | PreviewJob, deadline: float, renew: Callable[[], None]) -> _Reply:
        if time.monotonic() > deadline:
            raise RenderTimeout("before it started")
        helper = self._checkout()
        self.on_progress("drawing", helper.pid)
        try:
            reply = helper.run(job, deadline, renew, self.stall_seconds, self.on_progress)
        except BaseException:
            # Mid-render, out of step, or dead: its state is unknown, so it goes at once.
            self._discard(helper, kill=True)
            raise
        helper.renders += 1
        self._checkin(helper, reply.rss)
        if STAGE_LOG:
            self._last.times = (reply.began, reply.ended)
        if reply.kind == "render":
            from customify.render.compose import RenderError

            raise RenderError(reply.error)
        if reply.kind:
            raise RenderCrashed(f"the render process failed: {reply.error}")
        return reply

    def warmth(self, seconds: float = 30.0) -> dict[int, tuple[str, ...]]:
        """How far each idle helper's warm-up went (its steps done, by pid; "done" last when complete).
        Asks them over their pipes, between warm-up steps; for tests and benchmarks."""
        with self._lock:
            helpers, self._idle = self._idle, []
        found: dict[int, tuple[str, ...]] = {}
        for helper in helpers:
            try:
                reply = helper.run(StatusJob(), time.monotonic() + seconds, lambda: None)
            except Exception:  # dead or out of step: replaced like after a failed render
                self._discard(helper, kill=True)
                continue
            found[helper.pid] = reply.warmed
            self._checkin(helper)
        return found

    def helper_times(self) -> tuple[float, float]:
        """(began, ended) of this thread's last job in a helper, by the helper's clock (time.time());
        (0, 0) unless CUSTOMIFY_STAGE_LOG is set."""
        times: tuple[float, float] = getattr(self._last, "times", (0.0, 0.0))
        return times

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(h.pid for h in self._all)

    def describe(self) -> dict[str, Any]:
        """For worker-status (as Celery's `inspect stats` shows its pool): where renders run, and the
        helpers' process ids (started with the consumer, one per worker thread, in the background: a
        moment after start-up; replaced on the next render when one dies or is recycled)."""
        return {
            "implementation": self.mode,
            "processes": self.pids(),
            "max_renders": self.max_renders,
            "max_memory_mb": self.max_memory_mb,
            "asset_cache_mb": self.asset_cache_mb,
            "recycled": self.recycled,
        }

    def open(self, helpers: int = 0, warm: Callable[[], tuple[str, ...] | None] | None = None) -> None:
        """Take renders again; with `helpers`, start that many helpers now, in the background (one per
        worker thread: each warms itself while no render wants it). `warm()`, called on that background
        thread, names the products to warm (None: every product); it replaces the pool's `warm`."""
        with self._lock:
            self._closed = False
            self._wanted = helpers if self.mode == "process" else 0
            self._warm_source = warm
        self._top_up()

    def close(self) -> None:
        """Stop every helper: idle ones at once; busy ones as their threads finish or die."""
        with self._lock:
            self._closed = True
            self._wanted = 0
            helpers, self._idle = self._idle, []
        for helper in helpers:
            self._discard(helper)

    def _top_up(self) -> None:
        """Start helpers in a background thread until `_wanted` exist (counting those being started)."""
        with self._lock:
            missing = self._wanted - len(self._all) - self._starting
            if self._closed or missing <= 0:
                return
            self._starting += missing
        threading.Thread(target=self._start_helpers, args=(missing,), name="render-helpers", daemon=True).start()

    def _start_helpers(self, count: int) -> None:
        source, self._warm_source = self._warm_source, None
        if source is not None:
            try:
                self.warm = source()
            except Exception as exc:  # a database that does not answer yet: warm every product
                log.info("render helpers warm every product (which ones designs use is unknown: %s)", exc)
                self.warm = None
        for left in range(count, 0, -1):
            try:
                helper = self._new_helper()
            except RenderCrashed as exc:
                log.warning("render helper not started in advance (%s); renders start their own", exc)
                with self._changed:
                    self._starting -= left
                    self._changed.notify_all()
                return
            with self._changed:
                self._starting -= 1
                closed = self._closed
                if not closed:
                    self._idle.append(helper)
                self._changed.notify_all()
            if closed:
                self._discard(helper)

    def _new_helper(self) -> _Helper:
        helper = _Helper(self.nice, self.asset_cache_mb, self.warm)
        with self._lock:
            self._all.add(helper)
            self.counts["started"] += 1
        return helper

    def _checkout(self) -> _Helper:
        with self._changed:
            # One being started for us is a few milliseconds away (a spawn): wait rather than start another.
            while not self._idle and self._starting and not self._closed:
                self._changed.wait(STOP_GRACE)
            if self._idle:
                return self._idle.pop()
        return self._new_helper()

    def _checkin(self, helper: _Helper, rss: int = 0) -> None:
        """Back to the idle list, or replaced (between renders) once it did max_renders or grew past
        max_memory_mb: freed pixels do not always go back to the system, so a helper only grows."""
        worn = (0 < self.max_renders <= helper.renders) or (self.max_memory_mb > 0 and rss > self.max_memory_mb << 20)
        with self._lock:
            if not self._closed and not worn:
                self._idle.append(helper)
                return
            self.recycled += worn
            self.counts["recycled"] += worn
        self._discard(helper)
        self._top_up()  # a recycled helper's successor warms before the next render, not during it

    def _discard(self, helper: _Helper, kill: bool = False) -> None:
        with self._lock:
            self._all.discard(helper)
            self.counts["killed"] += kill
        helper.stop(kill)


class _Helper:
    """One helper process and its pipes; used by one thread at a time."""

    def __init__(self, nice: int, asset_cache_mb: int = 64, warm: tuple[str, ...] | None = None) -> None:
        self.renders = 0
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the helper; closed in stop())
        products = ALL if warm is None else ",".join(warm)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "customify.render.pool", str(nice), str(asset_cache_mb), products],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                start_new_session=True,  # Ctrl-C in a terminal is the parent's to handle, not the helper's
            )
        except OSError as exc:
            self._stderr.close()
            raise RenderCrashed(f"the render process did not start ({exc})") from None
        self.pid = self._proc.pid
        if nice:
            # At once, from here: the helper's own start (the interpreter, its imports) is then niced
            # too, not only what runs after its main() (which sets the same again). Its session is a
            # new autogroup, so the group's nice is what yields to the server (see main()).
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self.pid, nice)
            with contextlib.suppress(OSError):
                Path(f"/proc/{self.pid}/autogroup").write_text(str(nice))
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self._out = self._proc.stdout.fileno()
        # poll, not select: a busy server has file descriptors beyond select's 1024.
        self._poll = select.poll()
        self._poll.register(self._out, select.POLLIN)
        # Progress of the current render (set by run()).
        self._ticks: int | None = None
        self._progress_at = time.monotonic()
        self._stall = 0.0
        self._on_progress: Progress = lambda stage, pid: None

    def run(
        self,
        job: RenderJob | PreviewJob | StatusJob,
        deadline: float,
        renew: Callable[[], None],
        stall_seconds: float = 0.0,
        progress: Progress | None = None,
    ) -> _Reply:
        body = msgspec.msgpack.encode(job)
        try:
            self._stdin.write(HEADER.pack(len(body)) + body)
            self._stdin.flush()
        except (BrokenPipeError, OSError):
            raise RenderCrashed(self._died()) from None
        self._ticks = cpu_ticks(self.pid)
        self._progress_at = time.monotonic()
        self._stall = stall_seconds
        self._on_progress = progress or (lambda stage, pid: None)
        header = self._read(HEADER.size, deadline, renew)
        data = self._read(HEADER.unpack(header)[0], deadline, renew)
        try:
            return msgspec.msgpack.decode(data, type=_Reply)
        except msgspec.DecodeError as exc:
            raise RenderCrashed(f"the render process answered nonsense ({exc})") from None

    def _read(self, size: int, deadline: float, renew: Callable[[], None]) -> bytes:
        chunks: list[bytes] = []
        left = size
        while left:
            now = time.monotonic()
            wait = deadline - now
            if self._stall and now - self._progress_at > self._stall + stall_grace(self._stall):
                idle = now - self._progress_at
                log.warning("render helper pid %s made no progress for %.0f s: killed, to be replaced", self.pid, idle)
                raise RenderStalled(
                    f"the render process stopped responding (helper pid {self.pid} made no "
                    f"progress for {idle:.0f} s; killed and replaced, the render is retried)"
                )
            if wait <= 0:
                raise RenderTimeout("while it was drawing")
            if not self._poll.poll(min(wait, SAMPLE) * 1000):
                self._sample()
                renew()
                continue
            chunk = os.read(self._out, min(left, 1 << 20))
            if not chunk:
                raise RenderCrashed(self._died())
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _sample(self) -> None:
        """CPU time advanced since the last sample: the helper is working (or there is no /proc to say)."""
        ticks = cpu_ticks(self.pid)
        if ticks is None or ticks != self._ticks:
            if self._stall and time.monotonic() - self._progress_at > self._stall:
                log.info("render helper pid %s progresses again", self.pid)
            self._ticks = ticks
            self._progress_at = time.monotonic()
            self._on_progress("drawing", self.pid)

    def _died(self) -> str:
        try:
            code = self._proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            return "the render process stopped answering"
        self._stderr.seek(0)
        tail = self._stderr.read()[-400:].decode("utf-8", "replace").strip().splitlines()
        cause = f"signal {-code}" if code < 0 else f"exit code {code}"
        return f"the render process died ({cause}{'; ' + tail[-1] if tail else ''})"

    def stop(self, kill: bool = False) -> None:
        """End the helper (called between renders, or with `kill` when its state is unknown): EOF on its
        stdin and SIGTERM, so one in the middle of a warm-up step (only a cache) goes at once; one that
        does not go in time is killed."""
        if kill:
            self._proc.kill()
        with contextlib.suppress(OSError):
            self._stdin.close()
        with contextlib.suppress(OSError):
            self._proc.terminate()
        try:
            self._proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self._proc.stdout.close()  # type: ignore[union-attr]
        self._stderr.close()


# The helper process -----------------------------------------------------------

ALL = "*"  # the helper's argument for "warm every product"
WARM_IDLE = 0.03  # seconds without a job before a helper takes a product's warm-up step


def warm_up(products: tuple[str, ...] | None) -> Iterator[str]:
    """The helper's warm-up, one step per item: what a first render would otherwise pay for.

    Each step is short (the longest, a product's lighting surfaces, is 65-180 ms on the 2-vCPU
    bench machine); the helper answers a request that arrived before starting the next one.
    `products`: whose lighting to build, in order (None: all of them).
    """
    from PIL import Image, ImageDraw

    from customify.render import compose  # Pillow, the renderer's modules
    from customify.render import products as catalogue
    from customify.render.fonts import FONTS, load_font

    Image.preinit()  # the PNG and JPEG decoders an upload may need
    compose.encode_thumbnail(Image.new("RGB", (8, 8)), 8, "webp")  # the WebP encoder's library
    yield "imports"
    probe = ImageDraw.Draw(Image.new("L", (8, 8)))
    for family, weights in FONTS.items():
        for weight in weights:  # the font file read, FreeType's and the text layout's first use
            probe.textbbox((0, 0), "Ag", font=load_font(family, weight, 32))
    yield "fonts"
    for key in catalogue.PRODUCTS if products is None else products:
        if key in catalogue.PRODUCTS:
            catalogue.lighting(key)
            yield f"product {key}"
    _release_free_memory()  # the lighting builds' scratch images (2x supersampled) are free again
    yield "done"


def _release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc keeps them after large frees)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def serve(requests: int, replies: IO[bytes], warm: Iterator[str] | None = None) -> None:
    """Answer jobs read from file descriptor `requests` until EOF (the parent closed the pipe or died).

    While no job waits, take the next step of `warm` (polling `requests` with a zero timeout
    between steps: unbuffered reads, so a waiting job is always visible to the poll).
    """
    from customify.render.compose import RenderError

    ready = select.poll()
    ready.register(requests, select.POLLIN)
    warmed: list[str] = []
    while True:
        # A step starts only when no job waits; after the first two (needed by any render), only once
        # none came for WARM_IDLE either, so a stream of renders (a few ms apart) is not interleaved
        # with 100 ms steps. The poll returns at once when a job arrives: waiting never delays one.
        while warm is not None and not ready.poll(0 if len(warmed) < 2 else WARM_IDLE * 1000):
            try:
                step = next(warm, None)
            except Exception as exc:  # a warm-up is only a cache: the renders it was for still work
                print(f"warm-up stopped: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                step = None
            if step is None:
                warm = None
            else:
                warmed.append(step)
        header = _read_exact(requests, HEADER.size)
        if header is None:
            return
        body = _read_exact(requests, HEADER.unpack(header)[0])
        if body is None:
            return
        began = time.time() if STAGE_LOG else 0.0
        try:
            job = msgspec.msgpack.decode(body, type=RenderJob | PreviewJob | StatusJob)
            if isinstance(job, StatusJob):
                reply = _Reply(warmed=tuple(warmed))
            elif isinstance(job, PreviewJob):
                reply = _Reply(data=run_preview(job))
            else:
                width, height = run_job(job)
                reply = _Reply(width, height)
        except RenderError as exc:
            reply = _Reply(error=str(exc), kind="render")
        except Exception as exc:  # reported to the worker thread, which logs it and retries
            reply = _Reply(error=f"{type(exc).__name__}: {exc}", kind="internal")
        if began:
            reply = msgspec.structs.replace(reply, began=began, ended=time.time())
        data = msgspec.msgpack.encode(msgspec.structs.replace(reply, rss=resident_bytes()))
        try:
            replies.write(HEADER.pack(len(data)) + data)
            replies.flush()
        except BrokenPipeError:
            return


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a helper stops
    nice = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if nice:  # first: the imports and the warm-up run at this niceness too
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        # Where the kernel schedules by autogroup (sched_autogroup_enabled = 1, most desktop Linux),
        # this helper's session is a group of its own, weighted like the server's whole group, and a
        # process's nice only orders it inside its group: the group's nice is what yields to the API.
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(str(nice))
    if len(sys.argv) > 2:
        ASSETS.resize(int(sys.argv[2]) << 20)
    wanted = sys.argv[3] if len(sys.argv) > 3 else ALL
    products = None if wanted == ALL else tuple(key for key in wanted.split(",") if key)
    replies = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    serve(sys.stdin.fileno(), replies, warm_up(products))


if __name__ == "__main__":
    main()
