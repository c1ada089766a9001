"""Shared helpers for the core benchmarks (issue 2): machine banner, the typical
design, a `customify run` subprocess, an in-process app, statistics.

Benchmarks only talk to 127.0.0.1 and stop by themselves (bounded counts and
deadlines). Run them with the project's Python, e.g.
`python bench/core_startup.py`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


# Machine ---------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return str(os.cpu_count())


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> str:
    return (
        f"machine: nproc={nproc()} cpu={cpu_model()!r} python={platform.python_version()} "
        f"pillow={_version('pillow')} huey={_version('huey')} litestar={_version('litestar')} "
        f"uvicorn={_version('uvicorn')} loadavg={loadavg()}"
    )


def banner(title: str) -> None:
    print(f"# {title}")
    print(f"# {machine()}")
    print(f"# command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    sys.stdout.flush()


def out(line: str = "") -> None:
    print(line)
    sys.stdout.flush()


# Statistics -------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def fmt(values: Sequence[float], unit: str = "ms") -> str:
    if not values:
        return "n=0"
    return (
        f"n={len(values)} p50={pct(values, 50):.2f}{unit} p95={pct(values, 95):.2f}{unit} "
        f"p99={pct(values, 99):.2f}{unit} min={min(values):.2f} max={max(values):.2f}"
    )


# The typical design (PERFORMANCE.md): 1200x1200 canvas, product silhouette,
# 3 text layers, one 400x400 RGBA image pasted, PNG preview + 300 px thumbnail.


def asset_png(size: int = 400, seed: int = 7) -> bytes:
    """A 400x400 RGBA logo-like image: gradient, shapes, soft alpha (not trivially compressible)."""
    rnd = random.Random(seed)
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    grad = Image.linear_gradient("L").resize((size, size))
    base = Image.merge("RGBA", (grad, grad.rotate(90), grad.rotate(180), Image.new("L", (size, size), 230)))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((10, 10, size - 10, size - 10), fill=255)
    img.paste(base, (0, 0), mask)
    draw = ImageDraw.Draw(img)
    for _ in range(25):
        x, y = rnd.randrange(size), rnd.randrange(size)
        r = rnd.randrange(8, 60)
        draw.ellipse(
            (x - r, y - r, x + r, y + r),
            fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256), rnd.randrange(80, 255)),
        )
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def typical_spec(asset_id: str, n: int = 0) -> dict[str, Any]:
    return {
        "name": f"bench design {n}",
        "product": "tshirt",
        "color": "#1e3a8a",
        "layers": [
            {
                "type": "text",
                "text": f"TEAM {n % 100}",
                "font": "DejaVu Sans",
                "weight": "bold",
                "size": 0.12,
                "color": "#ffffff",
                "x": 0.5,
                "y": 0.12,
            },
            {"type": "image", "asset_id": asset_id, "x": 0.5, "y": 0.5, "width": 0.9},
            {
                "type": "text",
                "text": "Customify 2025",
                "font": "DejaVu Serif",
                "size": 0.06,
                "color": "#f59e0b",
                "x": 0.5,
                "y": 0.85,
                "rotation": 0,
            },
            {
                "type": "text",
                "text": "limited edition",
                "font": "DejaVu Sans Mono",
                "size": 0.04,
                "color": "#ffffff",
                "x": 0.5,
                "y": 0.94,
                "rotation": 3,
            },
        ],
    }


# Ports, processes --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


HZ = os.sysconf("SC_CLK_TCK")


def cpu_totals() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / HZ, sum(fields[:8]) / HZ


def proc_cpu(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) of a process, or of one of its threads."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def busy_cores(window: float = 1.0) -> float:
    """CPU cores busy on the whole machine over `window` seconds."""
    b0, _ = cpu_totals()
    time.sleep(window)
    b1, _ = cpu_totals()
    return (b1 - b0) / window


def wait_quiet(threshold: float = 0.4, max_wait: float = 60.0, window: float = 1.0) -> float:
    """Wait (bounded) until the machine's busy CPU over `window` is below `threshold` cores,
    so a measurement does not start in the middle of someone else's test suite.
    Returns the last busy figure (the caller prints it with its result)."""
    deadline = time.monotonic() + max_wait
    busy = busy_cores(window)
    while busy > threshold and time.monotonic() < deadline:
        busy = busy_cores(window)
    return busy


class CpuWindow:
    """CPU used during a window: by a process, by this process's children (e.g. wrk), and by
    everything else on the machine ("foreign", other tenants), in cores."""

    def __init__(self, pid: int) -> None:
        import resource

        self.pid = pid
        self._res = resource
        self.busy0, _ = cpu_totals()
        self.proc0 = proc_cpu(pid)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.child0 = ru.ru_utime + ru.ru_stime
        self.self0 = time.process_time()
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        busy1, _ = cpu_totals()
        ru = self._res.getrusage(self._res.RUSAGE_CHILDREN)
        wall = time.perf_counter() - self.t0
        server = proc_cpu(self.pid) - self.proc0
        child = ru.ru_utime + ru.ru_stime - self.child0
        me = 0.0 if self.pid == os.getpid() else time.process_time() - self.self0
        foreign = (busy1 - self.busy0) - server - child - me
        return {"server_cores": server / wall, "loadgen_cores": child / wall, "foreign_cores": max(0.0, foreign / wall)}


@contextlib.contextmanager
def tempdir(prefix: str = "cfy-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class RunProcess:
    """`customify run --no-tui` as a subprocess on a loopback port, in its own data dir."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        extra: Sequence[str] = (),
        config_text: str | None = None,
        command: Sequence[str] = ("run", "--no-tui"),
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        args = [
            str(Path(sys.executable).parent / "customify"),
            *command,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            *extra,
        ]
        if config_text is not None:
            cfg = data_dir.parent / f"{data_dir.name}.toml"
            cfg.write_text(config_text)
            args += ["--config", str(cfg)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_") and k != "DATABASE_URL"}
        self.log = open(data_dir.parent / f"{data_dir.name}.{command[0]}.log", "w+b")  # noqa: SIM115
        self.started = time.perf_counter()
        # cwd: a neutral dir, so the repository's customify.toml is not picked up.
        self.proc = subprocess.Popen(args, cwd=str(data_dir.parent), env=env, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_healthy(self, timeout: float = 30.0, interval: float = 0.005) -> float:
        """Seconds from Popen to the first 200 of /api/v1/system/health."""
        import httpx

        deadline = time.perf_counter() + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"customify run exited with {self.proc.returncode}: {self.output()[-2000:]}")
                try:
                    if client.get("/api/v1/system/health").status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                time.sleep(interval)
        raise RuntimeError(f"customify run not healthy after {timeout}s: {self.output()[-2000:]}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> float:
        """SIGTERM, wait; SIGKILL after `timeout`. Returns the seconds it took to exit."""
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return time.perf_counter() - t0

    def __enter__(self) -> RunProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# In-process app (as tests/conftest.py's start_app, without pytest) ---------------


class LiveApp:
    def __init__(self, data_dir: Path, workers: int | None = None, **overrides: Any) -> None:
        import msgspec
        import uvicorn

        from customify.api import create_app
        from customify.config import load_config
        from customify.runtime import Runtime

        flags: dict[str, Any] = {"data_dir": str(data_dir), "port": 0, "host": HOST}
        if workers:
            flags["workers"] = workers
        flags.update(overrides)
        config = load_config(None, {}, flags)
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(512)
        config = msgspec.structs.replace(config, port=self.sock.getsockname()[1])
        self.rt = Runtime(config)
        app = create_app(config, consumer=True, runtime=self.rt)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.01)
        self.base_url = config.base_url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
        self.rt.close()


def upload_asset(client: Any, png: bytes | None = None) -> str:
    response = client.post("/api/v1/assets", files={"file": ("logo.png", png or asset_png(), "image/png")})
    response.raise_for_status()
    return str(response.json()["id"])
