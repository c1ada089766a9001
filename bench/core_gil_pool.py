"""Would a render process pool give the API its throughput back? An experiment for figure 5.

One process serves a minimal Litestar GET (the lightest endpoint: the hardest case) on loopback
while the typical render (render_design + encode, as shipped) runs continuously (a) in 2 threads
at nice 10, as `customify run` does, or (b) in a 2-process forkserver pool at nice 10, fed by 2
threads that wait on the futures (the GIL is then not shared with the renders). wrk -t1 -c8 -d4s,
idle and busy alternated; prints throughput ratios and renders/s.

    python bench/core_gil_pool.py
"""

import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from _common import banner


def _render(n):
    from _common import asset_png, typical_spec
    from PIL import Image

    from customify.render import PRODUCTS, encode, render_design

    g = globals()
    if "_assets" not in g:
        img = Image.open(io.BytesIO(asset_png()))
        img.load()
        g["_assets"] = {"a": img}
        os.setpriority(os.PRIO_PROCESS, 0, 10)
    spec = typical_spec("a", n)
    im = render_design(spec, g["_assets"])
    r = encode(im, PRODUCTS[spec["product"]], 1, 300, "webp")
    return len(r.preview)


def _job(n):
    from _common import typical_spec

    from customify.render.pool import RenderJob

    out = load.tmp / f"{n % 8}"
    out.mkdir(exist_ok=True)
    return RenderJob(
        typical_spec("a", n),
        {"a": str(load.tmp / "asset.png")},
        1,
        300,
        "webp",
        str(out / "p.png"),
        str(out / "t.webp"),
    )


def serve(port):
    import uvicorn
    from litestar import Litestar, get

    @get("/p")
    async def p() -> dict:
        return {"k": [1, 2, 3], "s": "x" * 800}

    app = Litestar([p])
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind(("127.0.0.1", port))
    s.listen(512)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=srv.run, kwargs={"sockets": [s]}, daemon=True).start()
    time.sleep(1.5)


def wrk(port):
    out = subprocess.run(
        ["wrk", "-t1", "-c8", "-d4s", f"http://127.0.0.1:{port}/p"], capture_output=True, text=True
    ).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def load(mode, stop, counter):
    if mode == "threads":

        def w():
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            n = 0
            while not stop.is_set():
                _render(n)
                n += 1
                counter[0] += 1
    elif mode == "helpers":
        helpers = load.helpers

        def w():
            n = 0
            while not stop.is_set():
                helpers.render(_job(n), time.monotonic() + 30, lambda: None)
                n += 1
                counter[0] += 1
    else:
        pool = load.pool

        def w():
            n = 0
            while not stop.is_set():
                pool.submit(_render, n).result()
                n += 1
                counter[0] += 1

    ts = [threading.Thread(target=w, daemon=True) for _ in range(2)]
    for t in ts:
        t.start()
    return ts


if __name__ == "__main__":
    banner("core_gil_pool: API GET throughput with renders in threads vs in a process pool")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    serve(port)
    load.pool = ProcessPoolExecutor(2, mp_context=mp.get_context("forkserver"))
    list(load.pool.map(_render, range(4)))
    _render(0)
    import tempfile

    from _common import asset_png

    from customify.render.pool import RenderPool

    load.tmp = Path(tempfile.mkdtemp(prefix="gil-pool-"))
    (load.tmp / "asset.png").write_bytes(asset_png())
    load.helpers = RenderPool("process", 10)
    for rnd in range(2):
        idle = wrk(port)
        for mode in ("threads", "pool", "helpers"):
            stop = threading.Event()
            c = [0]
            ts = load(mode, stop, c)
            time.sleep(0.5)
            t0 = time.time()
            busy = wrk(port)
            dt = time.time() - t0
            stop.set()
            [t.join() for t in ts]
            print(
                f"round {rnd} {mode:8s} idle {idle:8.0f} busy {busy:8.0f} ratio {busy / idle:.2f}  renders/s {c[0] / dt:.1f}",
                flush=True,
            )
    load.helpers.close()
    load.pool.shutdown()
    import shutil

    shutil.rmtree(load.tmp, ignore_errors=True)
