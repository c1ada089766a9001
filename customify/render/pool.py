"""Where a render's pixels are made: in the worker thread, or in a helper process.

About a fifth of a render's CPU time holds the GIL (alpha compositing, FreeType,
the PNG filter: bench/RESULTS.md). In one process that time is taken from the
API's event loop, and two render threads take it from each other. With
`render.pool = "process"` (the default) each worker thread hands the pixel work
to a helper process of its own (`python -m customify.render.pool`, started on
first use, kept for the next render) and waits on a pipe, GIL released. The
helper draws, encodes and writes the two files; the thread keeps the rest: the
claim, the lease, the publish, the mail. The helper runs at
`render.worker_nice`: a smaller share of the CPU when the API wants it (a share,
not a strict priority; bench/RESULTS.md measures what it buys).

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
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import msgspec
from PIL import Image

from customify.render import PRODUCTS, RenderError, encode, render_design
from customify.storage import write_atomic

log = logging.getLogger("customify.render")

POOLS = ("process", "thread")
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


class _Reply(msgspec.Struct, frozen=True):
    width: int = 0
    height: int = 0
    error: str = ""  # a person-readable reason, when the render did not produce images
    kind: str = ""  # "" rendered, "render" a RenderError (the spec), "internal" anything else
    rss: int = 0  # the helper's resident bytes after the job (for render.helper_max_memory_mb)
    data: bytes = b""  # a preview's image


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
        self._idle: list[_Helper] = []
        self._all: set[_Helper] = set()
        self._lock = threading.Lock()
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
        if reply.kind == "render":
            raise RenderError(reply.error)
        if reply.kind:
            raise RenderCrashed(f"the render process failed: {reply.error}")
        return reply

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(h.pid for h in self._all)

    def describe(self) -> dict[str, Any]:
        """For worker-status (as Celery's `inspect stats` shows its pool): where renders run, and the
        helpers' process ids (started on first use, so none before the first render)."""
        return {
            "implementation": self.mode,
            "processes": self.pids(),
            "max_renders": self.max_renders,
            "max_memory_mb": self.max_memory_mb,
            "asset_cache_mb": self.asset_cache_mb,
            "recycled": self.recycled,
        }

    def open(self) -> None:
        with self._lock:
            self._closed = False

    def close(self) -> None:
        """Stop every helper: idle ones at once; busy ones as their threads finish or die."""
        with self._lock:
            self._closed = True
            helpers, self._idle = self._idle, []
        for helper in helpers:
            self._discard(helper)

    def _checkout(self) -> _Helper:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        helper = _Helper(self.nice, self.asset_cache_mb)
        with self._lock:
            self._all.add(helper)
            self.counts["started"] += 1
        return helper

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

    def _discard(self, helper: _Helper, kill: bool = False) -> None:
        with self._lock:
            self._all.discard(helper)
            self.counts["killed"] += kill
        helper.stop(kill)


class _Helper:
    """One helper process and its pipes; used by one thread at a time."""

    def __init__(self, nice: int, asset_cache_mb: int = 64) -> None:
        self.renders = 0
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the helper; closed in stop())
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "customify.render.pool", str(nice), str(asset_cache_mb)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                start_new_session=True,  # Ctrl-C in a terminal is the parent's to handle, not the helper's
            )
        except OSError as exc:
            self._stderr.close()
            raise RenderCrashed(f"the render process did not start ({exc})") from None
        self.pid = self._proc.pid
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
        job: RenderJob | PreviewJob,
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
        """EOF on its stdin ends the helper; one that does not go in time (or `kill`) is killed."""
        if kill:
            self._proc.kill()
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self._proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self._proc.stdout.close()  # type: ignore[union-attr]
        self._stderr.close()


# The helper process -----------------------------------------------------------


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """Answer jobs until EOF on `requests` (the parent closed the pipe or died)."""
    while True:
        header = _read_exact(requests, HEADER.size)
        if header is None:
            return
        body = _read_exact(requests, HEADER.unpack(header)[0])
        if body is None:
            return
        try:
            job = msgspec.msgpack.decode(body, type=RenderJob | PreviewJob)
            if isinstance(job, PreviewJob):
                reply = _Reply(data=run_preview(job))
            else:
                width, height = run_job(job)
                reply = _Reply(width, height)
        except RenderError as exc:
            reply = _Reply(error=str(exc), kind="render")
        except Exception as exc:  # reported to the worker thread, which logs it and retries
            reply = _Reply(error=f"{type(exc).__name__}: {exc}", kind="internal")
        data = msgspec.msgpack.encode(msgspec.structs.replace(reply, rss=resident_bytes()))
        try:
            replies.write(HEADER.pack(len(data)) + data)
            replies.flush()
        except BrokenPipeError:
            return


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a helper stops
    nice = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if len(sys.argv) > 2:
        ASSETS.resize(int(sys.argv[2]) << 20)
    if nice:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        # Where the kernel schedules by autogroup (sched_autogroup_enabled = 1, most desktop Linux),
        # this helper's session is a group of its own, weighted like the server's whole group, and a
        # process's nice only orders it inside its group: the group's nice is what yields to the API.
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(str(nice))
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    serve(requests, replies)


if __name__ == "__main__":
    main()
